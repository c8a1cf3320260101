"""A scenario replayed over real WebRTC traffic: ``rtcprobe run SCENARIO --driver aiortc``.

Theory of operation
-------------------
The pieces, all on 127.0.0.1::

    aiortc client ──UDP──▶ impairment relay ──UDP──▶ coturn ──UDP──▶ aiortc server peers
       (publisher and       (the scenario's           (TURN)          (embedded signaling
        subscriber,          uplink / downlink)                        server, host-only)
        relay-only)

* coturn is started on free ports (:class:`~rtcprobe.drivers.aiortc.turn.CoturnServer`) unless
  ``turn`` names one already running.
* The impairment relay (:mod:`rtcprobe.netem.relay`, trio) runs in a thread of its own, its
  upstream being coturn's UDP port; its clock is restarted when the preflight starts, so the
  scenario's phases and outage windows count from the same moment as in the simulator.
* The embedded signaling server hands out TURN credentials for the **relay's** address, so every
  TURN packet of the client (allocations, ICE checks, DTLS, RTP, RTCP) crosses the emulated link.
  Both client peer connections are relay-only here: the simulator puts the subscriber's traffic
  on the downlink too, and with a host candidate it would bypass the relay over loopback.
* Once the preflight has its result the relay is bypassed, so tear-down traffic is not impaired
  (aiortc's close waits for its TURN deallocation, retransmitted for a minute in an outage).
* The preflight is the aiortc driver's (:func:`~rtcprobe.drivers.aiortc.client.run_preflight`),
  with the scenario's duration and media, so the report has the simulator's shape; ``run`` says
  ``driver = "aiortc"`` with the scenario's name and the seed.

What the replay cannot emulate: signaling (a WebSocket over TCP to the embedded server) does not
cross the relay, so scenarios about an unreachable signaling server or slow signaling only
affect the TURN/media part; TURN over TCP is not relayed; coturn ↔ server traffic is loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import trio
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from rtcprobe.core.errors import ConfigError, PreflightError
from rtcprobe.core.report import PreflightReport, RunInfo
from rtcprobe.netem.relay import DirectionCounters, ImpairmentRelay, RelayRecord
from rtcprobe.netem.scenario import Scenario

import rtcprobe

from . import client
from .credentials import parse_turn_url
from .turn import CoturnServer

__all__ = ["ReplayResult", "run_replay", "run_scenario"]

RELAY_HOST = "127.0.0.1"
THREAD_START_TIMEOUT = 10.0  # s for the relay thread to bind its socket
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
    from rtcprobe.scenarios import load  # the library sits above drivers: imported lazily

    return load(scenario)


class _RelayThread:
    """The trio impairment relay in a thread, controlled from the asyncio side."""

    def __init__(self, relay: ImpairmentRelay, on_clock: Callable[[], None] | None = None) -> None:
        self.relay = relay
        self._on_clock = on_clock
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="rtcprobe-relay", daemon=True)

    def start(self) -> tuple[str, int]:
        self._thread.start()
        if not self._ready.wait(THREAD_START_TIMEOUT) or self._error is not None:
            self.stop()
            raise ConfigError(f"the impairment relay could not start: {self._error!r}")
        return self.relay.address

    def _main(self) -> None:
        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            with trio.CancelScope() as scope:
                self._scope = scope
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.relay.serve)
                    self._ready.set()

        try:
            trio.run(main)
        except BaseException as exc:  # reported to start(); the thread must never die silently
            self._error = exc
        finally:
            self._ready.set()

    def restart_clock(self) -> None:
        """Align the relay's t = 0 with now (the preflight's start)."""

        def restart() -> None:
            self.relay.restart_clock()
            if self._on_clock is not None:
                self._on_clock()

        if self._token is not None:
            trio.from_thread.run_sync(restart, trio_token=self._token)

    def bypass(self) -> None:
        """Stop impairing: the run is over, its tear-down should not wait out an outage."""
        if self._token is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self.relay.bypass, trio_token=self._token)

    def stop(self) -> None:
        if self._token is not None and self._scope is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        if self._thread.is_alive():
            self._thread.join(timeout=10)


@contextlib.contextmanager
def _client_peers_relay_only() -> Iterator[None]:
    """Make both of the client's peer connections relay-only (see the module docstring).

    The client driver makes only the publisher relay-only; until it offers the option, its
    module's ``RTCConfiguration`` is wrapped for the length of the run. The server's peers build
    their configuration in their own module and are unaffected.
    """
    original = getattr(client, "RTCConfiguration")  # noqa: B009 -- patched below, by name

    def relay_only(*args: Any, **kwargs: Any) -> Any:
        kwargs["iceTransportPolicy"] = RTCIceTransportPolicy.RELAY
        return original(*args, **kwargs)

    setattr(client, "RTCConfiguration", relay_only)  # noqa: B010
    try:
        yield
    finally:
        setattr(client, "RTCConfiguration", original)  # noqa: B010


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
    on_progress: Callable[[str], None] | None = None,
) -> ReplayResult:
    """Replay ``scenario`` over real aiortc traffic (blocking; see the module docstring).

    ``turn`` is ``(turn:HOST:PORT?transport=udp URL, REST shared secret)`` of a running TURN
    server; None starts coturn for the run. ``pcap`` captures every datagram the relay forwarded.
    Bad input (a bad scenario, coturn missing, a bad TURN URL) raises ConfigError.
    """
    sc = _resolve(scenario)
    seed = sc.seed if seed is None else seed
    upstream_turn = _upstream_of(turn) if turn is not None else None
    stream = None
    if pcap is not None:
        from rtcprobe.netem.pcap import PcapStream

        stream = PcapStream(pcap)

    with contextlib.ExitStack() as stack:
        if stream is not None:
            stack.callback(stream.close)
        if upstream_turn is None:
            coturn = stack.enter_context(CoturnServer())
            upstream, secret = coturn.address, coturn.secret
        else:
            upstream, secret = upstream_turn
        sink: Callable[[RelayRecord], None] | None = stream
        relay = ImpairmentRelay.from_scenario(sc, upstream, seed=seed, listen=(RELAY_HOST, 0), sink=sink)

        def align_capture() -> None:
            if stream is not None:
                stream.epoch = relay.epoch

        thread = _RelayThread(relay, on_clock=align_capture)
        host, port = thread.start()
        stack.callback(thread.stop)
        relay_url = f"turn:{host}:{port}?transport=udp"

        async def main() -> PreflightReport:
            test = client.run_preflight(
                duration=sc.duration, media=sc.media, turn_urls=[relay_url], turn_secret=secret, video_seed=seed,
            )
            if on_progress is not None:
                test.on("progress", on_progress)

            async def bypass_when_over() -> None:
                # The core has its report the moment the test ends; closing the peer connections
                # (TURN deallocation, DTLS close alerts) then crosses an unimpaired relay, or a
                # scenario still in an outage would hold the tear-down in retransmissions.
                while test.core.report is None:
                    await asyncio.sleep(TEARDOWN_POLL)
                thread.bypass()

            watcher = asyncio.create_task(bypass_when_over())
            try:
                return await test.wait()
            except PreflightError as exc:
                assert isinstance(exc.report, PreflightReport)
                return exc.report
            finally:
                watcher.cancel()

        with _client_peers_relay_only():
            # The preflight's clock starts when its task first runs, right after this call.
            thread.restart_clock()
            report = asyncio.run(main())
        thread.stop()
    report = attrs.evolve(report, run=RunInfo("aiortc", rtcprobe.__version__, sc.name, seed))
    return ReplayResult(
        report=report,
        uplink=relay.counters["uplink"],
        downlink=relay.counters["downlink"],
        relay_summary=relay.summary(),
        relay_url=relay_url,
        pcap_packets=None if stream is None else stream.count,
    )


def run_scenario(
    scenario: Scenario | str | Path,
    *,
    seed: int | None = None,
    pcap: str | Path | None = None,
    turn: tuple[str, str] | None = None,
) -> PreflightReport:
    """The report of :func:`run_replay` (what ``rtcprobe run SCENARIO --driver aiortc`` prints)."""
    return run_replay(scenario, seed=seed, pcap=pcap, turn=turn).report
