"""A scenario replayed over real WebRTC traffic: ``rtcprobe run SCENARIO --driver aiortc`` (or
``--driver chromium``: the same replay with rtcprobe.js in a headless Chromium, both of its peer
connections relay-only too; :mod:`rtcprobe.drivers.chromium`).

Theory of operation
-------------------
The preflight's own topology (Twilio Video's ``runPreflight``, as the aiortc driver runs it): the
client's sender and receiver peer connections connect to each other through the TURN server, and
the impairment relay sits between the client and the TURN server. All on 127.0.0.1::

    client                         impairment relay                 coturn (TURN)
    sender   (relay-only) ──UDP──▶  uplink   (client → TURN) ──UDP──▶ allocation A ──┐
                                                                                     │ relayed
    receiver (relay-only) ◀──UDP──  downlink (TURN → client) ◀──UDP── allocation B ◀─┘ inside coturn

    (and back: receiver → uplink → B → A → downlink → sender)

* Each peer connection's TURN traffic reaches the relay from its own socket, so the relay sees two
  clients and opens one upstream socket each; it maps directions by who sent a datagram, not by
  which peer connection: client → coturn is the **uplink**, coturn → client the **downlink**, for
  both. So every packet between the two peer connections crosses both emulated links, as in the
  simulator: media sender → TURN on the uplink and TURN → receiver on the downlink; RTCP (the
  receiver's reports and REMB) receiver → TURN on the uplink and TURN → sender on the downlink;
  ICE checks, consent and DTLS the same, each way. The hop between the two allocations is inside
  coturn (loopback, never impaired): the TURN server's side of the path. The rtt the report
  shows is therefore the loop's, about twice the emulated link's round trip (``stats.rtt``; the
  network-quality scorer is fed half, see core/sampling.py).
* Both peer connections are relay-only here (``subscriber_relay_only``): the preflight's receiver
  is unrestricted, but a host candidate of it would carry the media, and coturn sends to a host
  address from the relayed one straight over loopback, bypassing the downlink. The simulator
  models the preflight's receiver (host candidate paired with the sender's relayed one). What that
  leaves different: the report's selected pair (relay ↔ relay here), 4 bytes of ChannelData per
  packet on the downlink, and the time to connect — the aiortc driver holds the sender's relayed
  candidates back from the receiver until the sender's check opened the TURN permission
  (drivers/aiortc/holdback.py), which the receiver's own allocation cannot use (it holds no
  permission for the sender's relayed address), so ICE waits for the release timeout (1 s) and a
  STUN retransmission (benchmarks/README.md).
* coturn is started on free ports (:class:`~rtcprobe.server.coturn.CoturnServer`) unless
  ``turn`` names one already running.
* The impairment relay (:mod:`rtcprobe.netem.relay`, trio) runs in a process of its own (see
  :class:`_RelayProcess` for why not a thread), its upstream being coturn's UDP port; its clock
  is restarted when the preflight starts, so the scenario's phases and outage windows count
  from the same moment as in the simulator, and its links draw from the simulator's random
  streams for the seed (:func:`~rtcprobe.drivers.sim.link_seed`): the n-th packet on a link meets
  the same loss and jitter draws in both. It writes the ``pcap`` capture, if asked.
* The embedded signaling server hands out TURN credentials for the **relay's** address, so every
  TURN packet of the client (allocations, ICE checks, DTLS, RTP, RTCP) crosses the emulated link.
* Once the preflight has its result the relay is bypassed, so tear-down traffic is not impaired
  (a TURN deallocation lost in an outage would otherwise hold the close until the driver gives
  it up).
* The preflight is the aiortc driver's, started by :func:`~rtcprobe.live.run_preflight` with the
  scenario's duration and media, so the report has the simulator's shape; its ``run`` says
  ``driver = "aiortc"`` with the scenario's name and the seed. With ``driver="chromium"`` it is
  rtcprobe.js's in a headless Chromium instead, the core in the embedded server, which stamps
  ``driver = "chromium"`` (and the scenario and seed) on the report; its two peer connections are
  relay-only too (rtcprobe.js's ``receiverRelayOnly``), so the loop is the same. Chromium's own
  video (its canvas pattern, its encoder's rate control) is not the simulator's: the replay's
  seed governs the links only (benchmarks/bench_drivers.py compares the three drivers).

This module starts servers (coturn, the relay, the embedded signaling server), which is why it
sits in the top layer and not in the driver (docs/architecture.md#layers).

What the replay cannot emulate: signaling (a WebSocket over TCP to the embedded server) does not
cross the relay, so scenarios about an unreachable signaling server or slow signaling only affect
the TURN/media part (and ``connected`` comes after a few loopback milliseconds); TURN over TCP or
TLS is not relayed (the relay forwards UDP datagrams; a TCP stream would need re-framing).
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import select
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

import attrs

from rtcprobe.core._version import __version__
from rtcprobe.core.errors import ConfigError, PreflightError
from rtcprobe.core.observations import Event
from rtcprobe.core.report import PreflightReport, RunInfo
from rtcprobe.drivers.aiortc.turn_client import parse_turn_url
from rtcprobe.drivers.sim import link_seed
from rtcprobe.netem.relay import DirectionCounters
from rtcprobe.netem.scenario import Scenario

from .live import DRIVERS, run_preflight
from .server.coturn import CoturnServer

__all__ = ["ReplayResult", "run_replay", "run_scenario"]

RELAY_HOST = "127.0.0.1"
PROCESS_TIMEOUT = 15.0  # s for the relay process to start (a fresh interpreter) or to stop
TEARDOWN_POLL = 0.02  # s between looks at whether the preflight has ended


@attrs.frozen
class ReplayResult:
    """A replayed run: its report and what the relay counted per direction."""

    report: PreflightReport
    uplink: DirectionCounters
    downlink: DirectionCounters
    relay_summary: str
    relay_url: str  # the TURN URL the client was given: the relay's address
    pcap_packets: int | None = None


def _resolve(scenario: Scenario | str | Path) -> Scenario:
    if isinstance(scenario, Scenario):
        return scenario
    from rtcprobe.scenarios import load

    return load(scenario)


class _RelayProcess:
    """The trio impairment relay in a process of its own (``python -m rtcprobe.netem.relay``).

    In a thread its timers would compete for the GIL with aiortc's encoders and decoders and fire
    late, adding jitter the scenario did not ask for (measured at 50 ms each way: the report's
    jitter was 4.3 ms with the relay in a thread, 1.1 ms with it in its own process).
    """

    def __init__(self, scenario: Scenario, upstream: tuple[str, int], seed: int, pcap: str | None) -> None:
        # The simulator's link streams for this seed: the relay draws the same losses and jitter,
        # packet for packet, so a replay and a simulation of one scenario and seed differ by what
        # the drivers do, not by the luck of two draws.
        self._args = (scenario, upstream, link_seed(seed), (RELAY_HOST, 0), pcap)
        self._proc: subprocess.Popen[bytes] | None = None
        self.result: tuple[DirectionCounters, DirectionCounters, str, int | None] | None = None

    def start(self) -> tuple[str, int]:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "rtcprobe.netem.relay"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        pickle.dump(self._args, self._proc.stdin)
        self._proc.stdin.flush()
        ready = _readline(self._proc.stdout, PROCESS_TIMEOUT).split()
        if len(ready) != 3 or ready[0] != b"ready":
            self.stop()
            raise ConfigError(f"the impairment relay could not start (it said {b' '.join(ready)!r})")
        return ready[1].decode(), int(ready[2])

    def command(self, name: str) -> None:
        if self._proc is not None and self._proc.stdin is not None and not self._proc.stdin.closed:
            with contextlib.suppress(OSError):
                self._proc.stdin.write(name.encode() + b"\n")
                self._proc.stdin.flush()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            out, _ = proc.communicate(b"stop\n", timeout=PROCESS_TIMEOUT)
            if proc.returncode == 0 and out:
                self.result = pickle.loads(out)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _readline(stream: IO[bytes], timeout: float) -> bytes:
    """One line from a child's stdout, or b"" if none comes within ``timeout`` s."""
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else b""


def _upstream_of(turn: tuple[str, str]) -> tuple[tuple[str, int], str]:
    url, secret = turn
    parsed = parse_turn_url(url)
    if parsed.scheme != "turn" or parsed.transport != "udp":
        raise ConfigError(f"the replay relays UDP only: the TURN URL must be turn:HOST:PORT?transport=udp, got {url!r}")
    if not secret:
        raise ConfigError("the TURN server's shared secret must not be empty")
    return (parsed.host, parsed.port), secret


def run_replay(
    scenario: Scenario | str | Path,
    *,
    seed: int | None = None,
    pcap: str | Path | None = None,
    turn: tuple[str, str] | None = None,
    on_progress: Callable[[Event], None] | None = None,
    driver: str = "aiortc",
) -> ReplayResult:
    """Replay ``scenario`` over real aiortc traffic (blocking; see the module docstring), or with
    ``driver="chromium"`` over a headless Chromium's (the report's ``run.driver`` says which).

    ``turn`` is ``(turn:HOST:PORT?transport=udp URL, REST shared secret)`` of a running TURN
    server; None starts coturn for the run. ``pcap`` captures every datagram the relay forwarded.
    ``on_progress`` is called with each core event as it happens (the simulator's ``on_event``;
    e.g. a :class:`rtcprobe.progress.ProgressReporter`).
    Bad input (a bad scenario, coturn missing, a bad TURN URL) raises ConfigError.
    """
    if driver not in DRIVERS:
        raise ConfigError(f"the replay's driver is one of {', '.join(DRIVERS)}, got {driver!r}")
    if driver == "chromium":
        from rtcprobe.drivers.chromium import check_available

        check_available()  # before anything starts: what to install
    sc = _resolve(scenario)
    seed = sc.seed if seed is None else seed
    upstream_turn = _upstream_of(turn) if turn is not None else None
    if pcap is not None:
        from rtcprobe.netem.pcap import check_writable

        check_writable(pcap)  # bad input fails here, before anything starts

    with contextlib.ExitStack() as stack:
        if upstream_turn is None:
            coturn = stack.enter_context(CoturnServer())
            upstream, secret = coturn.address, coturn.secret
        else:
            upstream, secret = upstream_turn
        relay = _RelayProcess(sc, upstream, seed, None if pcap is None else str(pcap))
        host, port = relay.start()
        stack.callback(relay.stop)
        relay_url = f"turn:{host}:{port}?transport=udp"

        async def main() -> PreflightReport:
            test = run_preflight(
                duration=sc.duration, media=sc.media, turn_urls=[relay_url], turn_secret=secret, video_seed=seed,
                run=RunInfo(driver, __version__, sc.name, seed), subscriber_relay_only=True, driver=driver,
            )
            if on_progress is not None:
                test.on("event", on_progress)

            async def bypass_when_over() -> None:
                # The core has its report the moment the test ends; closing the peer connections
                # (TURN deallocation, DTLS close alerts) then crosses an unimpaired relay, or a
                # scenario still in an outage would hold the tear-down in retransmissions.
                while test.report is None:
                    await asyncio.sleep(TEARDOWN_POLL)
                relay.command("bypass")

            watcher = asyncio.create_task(bypass_when_over())
            try:
                return await test.wait()
            except PreflightError as exc:
                assert isinstance(exc.report, PreflightReport)
                return exc.report
            finally:
                watcher.cancel()

        # The preflight's clock starts when its task first runs, right after this command.
        relay.command("clock")
        report = asyncio.run(main())
        relay.stop()
    if relay.result is None:
        raise RuntimeError("the impairment relay ended without its counters")
    uplink, downlink, summary, packets = relay.result
    return ReplayResult(
        report=report, uplink=uplink, downlink=downlink, relay_summary=summary, relay_url=relay_url,
        pcap_packets=packets,
    )


def run_scenario(
    scenario: Scenario | str | Path,
    *,
    seed: int | None = None,
    pcap: str | Path | None = None,
    turn: tuple[str, str] | None = None,
    on_progress: Callable[[Event], None] | None = None,
    driver: str = "aiortc",
) -> PreflightReport:
    """The report of :func:`run_replay` (what ``rtcprobe run SCENARIO --driver aiortc|chromium`` prints)."""
    return run_replay(scenario, seed=seed, pcap=pcap, turn=turn, on_progress=on_progress, driver=driver).report
