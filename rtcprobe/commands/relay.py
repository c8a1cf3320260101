"""``rtcprobe relay``: forward UDP to an upstream (a TURN server) through a scenario's emulated link."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from . import EXIT_OK, parse_seed

NAME = "relay"
HELP = "forward UDP to an upstream (e.g. a TURN server) through a scenario's emulated link"
DESCRIPTION = """\
Forward UDP datagrams between clients and an upstream (normally a TURN server), applying a
scenario's network model to real traffic: the uplink to client→upstream datagrams, the downlink
to upstream→client ones, with the scenario's phases counted from the relay's start. Point WebRTC
clients at the relay as their TURN server (turn:HOST:PORT?transport=udp) and all their media
crosses the emulated link. Only UDP is relayed (TURN over TCP is not).

  rtcprobe relay --listen 127.0.0.1:3479 --upstream 127.0.0.1:3478 --scenario lossy-wifi
  rtcprobe relay --listen 127.0.0.1:3479 --upstream 127.0.0.1:3478 --scenario my.toml --pcap relay.pcap

Runs until Ctrl-C (or SIGTERM, or --duration), then prints its counters to stderr.
Exit codes: 0 stopped normally, 2 bad input (a scenario with a mistake, a bad address, a busy port).
"""


def _seconds(text: str) -> float:
    try:
        value = float(text.removesuffix("s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not 0 < value < 10**7:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", required=True, metavar="HOST:PORT",
                        help="where clients send (IPv4; port 0 picks a free one and prints it)")
    parser.add_argument("--upstream", required=True, metavar="HOST:PORT", help="the TURN server (or any UDP server)")
    parser.add_argument("--scenario", required=True, metavar="SCENARIO",
                        help="a scenario file (.toml) or a built-in scenario name (see: rtcprobe scenarios)")
    parser.add_argument("--seed", type=parse_seed, help="seed of the link's randomness (default: the scenario's)")
    parser.add_argument("--pcap", metavar="FILE", help="write every forwarded datagram to FILE (pcap)")
    parser.add_argument("--duration", type=_seconds, metavar="SECONDS",
                        help="stop after this long (default: run until stopped)")


def _unwrap(group: BaseExceptionGroup[Any]) -> BaseException:
    """The one exception a nursery wrapped (trio groups even a single error)."""
    while isinstance(group, BaseExceptionGroup) and len(group.exceptions) == 1:
        group = group.exceptions[0]
    return group


def run(args: argparse.Namespace) -> int:
    import trio

    from rtcprobe.core.errors import ConfigError
    from rtcprobe.netem.relay import ImpairmentRelay, parse_hostport
    from rtcprobe.scenarios import load

    listen = parse_hostport(args.listen, "--listen")
    upstream = parse_hostport(args.upstream, "--upstream")
    scenario = load(args.scenario)  # a bad file raises ScenarioError: one line, exit 2
    seed = scenario.seed if args.seed is None else args.seed
    stream = None
    if args.pcap:
        from rtcprobe.netem.pcap import PcapStream

        stream = PcapStream(args.pcap)
    relay = ImpairmentRelay.from_scenario(scenario, upstream, seed=seed, listen=listen, sink=stream)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(relay.serve)
            if stream is not None:
                stream.epoch = relay.epoch
            print(f"rtcprobe relay: listening on {host}:{port} (UDP), upstream {upstream[0]}:{upstream[1]}, "
                  f"scenario {scenario.name} (seed {seed}); Ctrl-C stops", file=sys.stderr, flush=True)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                with trio.move_on_after(args.duration if args.duration is not None else float("inf")):
                    async for _ in signals:
                        break
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    except BaseExceptionGroup as group:
        error = _unwrap(group)
        if isinstance(error, ConfigError):
            raise error from None
        raise
    finally:
        if stream is not None:
            stream.close()
    print(relay.summary(), file=sys.stderr)
    if stream is not None:
        print(f"pcap: {stream.count} datagrams written to {args.pcap}", file=sys.stderr)
    return EXIT_OK
