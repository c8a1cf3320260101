"""The simulated-network driver: a preflight over a scenario's links, on a virtual clock.

Theory of operation
-------------------
:class:`SimDriver` plays both ends of a preflight — the client (publisher + subscriber peer
connections) and the server (signaling, TURN, and an SFU-style peer that forwards the
publisher's RTP to the subscriber) — and feeds the core's :class:`PreflightMachine` exactly the
observations a real aiortc driver produces, at the virtual times they would happen. Every packet
the real stack would send crosses the scenario's uplink (client→server) or downlink
(server→client) :class:`~rtcprobe.netem.Link`; nothing else is on the path (the TURN server and
the SFU sit together on the server side, 192.0.2.0/24 TEST-NET addresses).

Time order on a link is the one invariant. The driver runs the event loop (:mod:`._net`) and the
core's timer side by side, answers the core's actions, and samples stats; the work is done by:

* :mod:`._handshakes` — signaling, TURN, ICE and consent, DTLS, event by event;
* :mod:`._pipeline` — media and RTCP event by event, until every stream started playing;
* :mod:`._steady` — then media and RTCP one interval at a time, one batch per link, as soon as
  nothing event-driven can put a packet on a link any more (:meth:`SimDriver._maybe_steady`);
* :mod:`._streams` and :mod:`._rtcp` — the streams' state both modes share and the RTCP rules
  both apply; :mod:`._media` and :mod:`._timeline` — sources, receiver statistics, REMB.

Media: Opus 96 kbit/s in 20 ms packets; VP8 frames packetized at aiortc's 1300-byte limit and
sent back to back (aiortc has no pacer). The SFU forwards RTP with its sequence numbers (aiortc's
own server decodes and re-encodes instead — a documented difference); REMB: the server's estimate
of the uplink, capped by the subscriber's estimate of the downlink, drives the publisher's
encoder. Not modelled: processing time on either end, NACK/RTX, TURN refreshes, server-side
consent. See docs/architecture.md#the-simulator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np
from rtcprobe.core.config import PreflightConfig
from rtcprobe.core.observations import (
    AcquireMedia,
    Completed,
    ConnectSignaling,
    Event,
    Failed,
    InboundStats,
    MediaAcquired,
    MediaStarted,
    Observation,
    OpenPeerConnections,
    OutboundStats,
    Role,
    SampleStats,
    StatsObserved,
    StatsSample,
    StopRequested,
    TearDown,
)
from rtcprobe.core.preflight import PreflightMachine
from rtcprobe.core.quality import QualityInput
from rtcprobe.core.report import IceCandidateStats, PreflightReport, RunInfo, SelectedCandidatePair
from rtcprobe.netem.models import LinkCounters
from rtcprobe.netem.scenario import Scenario

from ._handshakes import Handshakes, PeerConnection
from ._media import AUDIO, KIND_NAMES, VIDEO
from ._net import DOWN, UP, EventLoop, PacketRecord, Path, Pending, Tag
from ._pipeline import Pipeline
from ._steady import TAKEN_OVER, SteadyState
from ._streams import Streams

# Pending events that do not keep the driver from switching to batches.
HARMLESS = frozenset({Tag.WATCH, Tag.OBSERVE, Tag.FINE_TICK, Tag.MAYBE_STEADY})


def _dropped_at_the_switch(p: Pending) -> bool:
    """Taken over by the steady state, or moot once in it (the event pipeline's ticks, the
    switch's own retries, retries of finished transactions)."""
    return (p.tag in TAKEN_OVER or p.tag is Tag.FINE_TICK or p.tag is Tag.MAYBE_STEADY
            or (p.tag is Tag.RETRY and p.args[0].done))


@attrs.frozen
class SimResult:
    """What one simulated run produced."""

    report: PreflightReport
    events: tuple[Event, ...]  # the core's events, in order
    uplink: LinkCounters
    downlink: LinkCounters
    packets: int  # packets offered to the two links
    sim_time: float  # virtual seconds simulated
    packet_log: tuple[PacketRecord, ...] = ()  # only with packet_log=True
    # What the core's network-quality scorer was fed, (now, input) in order: enough to re-score.
    scorer_inputs: tuple[tuple[float, QualityInput], ...] = ()


class SimDriver:
    """Runs one preflight over a scenario (:meth:`run`, once). Use :func:`run_simulation`.

    For tests and tools, besides :func:`run_simulation`'s options:

    * ``on_observation(now, observation)`` sees every observation as the core gets it;
    * ``early_batches=True`` switches to batches as soon as the handshakes are done instead of
      once media started (cheaper; media start is then read off the batches, keyframe requests
      wait for an interval boundary);
    * after the run, :attr:`steady_at` is when the driver switched to batches (None: never),
      :attr:`pcs` the peer connections and :attr:`path` the links.
    """

    def __init__(self, scenario: Scenario, seed: int, *, packet_log: bool = False,
                 stop_at: float | None = None, on_event: Callable[[Event], None] | None = None,
                 version: str = "0", early_batches: bool = False,
                 on_observation: Callable[[float, Observation], None] | None = None) -> None:
        self.scenario = scenario
        self.seed = seed
        root = np.random.default_rng(seed)
        link_rng, media_rng, self._rtcp_rng, consent_rng, addr_rng = root.spawn(5)
        uplink, downlink = scenario.build_links(link_rng)
        self.path = Path(uplink, downlink, log=packet_log)
        self.loop = EventLoop()
        self.config = PreflightConfig(duration=scenario.duration, media=scenario.media, relay_only=True)
        self.core = PreflightMachine(self.config, run=RunInfo("sim", version, scenario.name, seed))
        self.on_event = on_event
        self.on_observation = on_observation
        self.events: list[Event] = []
        self.stop_at = stop_at
        self.early_batches = early_batches
        self.done = False
        self.handshakes = Handshakes(
            self.loop, self._send, self._observe,
            ports=[int(p) for p in addr_rng.integers(49152, 65536, size=6)],
            tracks=self.config.media.kinds, consent_rng=consent_rng, client_up=self._client_up,
            server_up=self._server_up, progress=self._maybe_steady, last_heard=self._last_heard)
        self.pcs = self.handshakes.pcs
        media = scenario.media
        self.streams = Streams([k for k, on in ((AUDIO, media.audio), (VIDEO, media.video is not None)) if on])

        def reorders(link: str) -> bool:
            return any(c.reorder for c in (getattr(scenario, link), *(c for _, c in getattr(scenario.phases, link))))

        self.pipeline = Pipeline(self.loop, self.path, self.streams, self.pcs, media=media, media_rng=media_rng,
                                 rtcp_rng=self._rtcp_rng, reorders={UP: reorders(UP), DOWN: reorders(DOWN)},
                                 started=self._media_started, progress=self._maybe_steady)
        self.steady: SteadyState | None = None
        self.steady_at: float | None = None
        self._core_touched = True
        self._end_hint = math.inf  # when the last stats sample falls, once known

    @property
    def now(self) -> float:
        return self.loop.now

    # --- main loop -------------------------------------------------------------------------------

    def run(self) -> SimResult:
        core, loop = self.core, self.loop
        core.start(0.0, epoch_ms=0.0)
        self._pump()
        if self.stop_at is not None:
            loop.at(self.stop_at, self._observe, StopRequested(), tag=Tag.OBSERVE)
        tc: float | None = None
        # Stops right after the event that finished the core: nothing scheduled runs after that.
        while not self.done and core.report is None:
            if self._core_touched:  # the core's deadline only moves when the core is fed
                self._core_touched = False
                tc = core.get_timer()
            te = loop.peek()
            if te is not None and (tc is None or te <= tc):
                loop.run_next()
            elif tc is not None:
                loop.now = tc
                core.handle_timer(tc)
                self._core_touched = True
                self._pump()
            else:  # nothing can happen any more (cannot occur: every step has a timeout)
                break
        report = core.report
        assert report is not None, "the core always ends with a report"
        up, down = self.path.links[UP].counters, self.path.links[DOWN].counters
        return SimResult(report, tuple(self.events), attrs.evolve(up), attrs.evolve(down),
                         self.path.packets, loop.now, tuple(self.path.records()), self.core.scorer_inputs)

    def _observe(self, obs: Observation) -> None:
        if self.done:
            return
        if self.on_observation is not None:
            self.on_observation(self.now, obs)
        self.core.handle(obs, self.now)
        self._core_touched = True
        self._pump()

    def _pump(self) -> None:
        core = self.core
        while True:
            action = core.next_action()
            if action is None:
                break
            match action:
                case AcquireMedia(media=media):
                    # Synthetic tracks cost no simulated time.
                    self._observe(MediaAcquired(media.kinds))
                case ConnectSignaling():
                    self.handshakes.connect_signaling()
                case OpenPeerConnections(relay_only=relay_only):
                    self.handshakes.open_peer_connections(relay_only)
                case SampleStats(index=index, total=total):
                    self._end_hint = self.now + (total - index) * self.config.sample_interval + 1e-6
                    self._observe(StatsObserved(self._sample()))
                case TearDown():
                    self.done = True
        while (event := core.next_event()) is not None:
            self.events.append(event)
            if self.on_event is not None:
                self.on_event(event)
            if isinstance(event, Completed | Failed):
                self.done = True

    # --- between the parts -------------------------------------------------------------------------

    def _send(self, direction: str, size: int, kind: str, then: Callable[..., None] | None = None,
              *args: Any, tag: Tag = Tag.HANDSHAKE) -> None:
        self.pipeline.send(direction, size, kind, then, *args, tag=tag)

    def _client_up(self, pc: PeerConnection) -> None:
        self.pipeline.client_up(pc)

    def _server_up(self, pc: PeerConnection) -> None:
        self.pipeline.server_up(pc)

    def _last_heard(self, pc: PeerConnection) -> float:
        return self.pipeline.last_heard(pc) if self.steady is None else self.steady.last_heard(pc)

    def _media_started(self, kind: int, t: float) -> None:
        self.loop.at(t, self._observe, MediaStarted(KIND_NAMES[kind]), tag=Tag.OBSERVE)
        if self.streams.all_started:
            self.loop.at(t, self._maybe_steady, tag=Tag.MAYBE_STEADY)  # (also tried at every RTCP timer)

    # --- the switch to batches -----------------------------------------------------------------------

    def _maybe_steady(self) -> None:
        """Switch to interval batches once nothing event-driven can put a packet on a link any more:
        both peer connections up at both ends, media started, and every pending event one the
        steady state takes over (RTCP and REMB timers and arrivals, consent checks) or harmless."""
        if self.steady is not None or self.done or self.pipeline.busy or not self.pipeline.sources:
            return
        pub, sub = self.pcs.get(Role.PUBLISHER), self.pcs.get(Role.SUBSCRIBER)
        if pub is None or sub is None or not (self.early_batches or self.streams.all_started):
            return
        streams = self.streams
        if not (pub.up and sub.up) or math.inf in (streams.srv_accept_at, streams.forward_at, streams.sub_accept_at):
            return
        for p in self.loop.pending():
            if p.tag is Tag.RETRY:
                if not p.args[0].done:
                    return
            elif p.tag not in TAKEN_OVER and p.tag not in HARMLESS:
                return
        self._enter_steady()

    def _enter_steady(self) -> None:
        sources = self.pipeline.hand_over()
        self.handshakes.consent_in_loop = False
        self.steady_at = self.now
        taken = [p for p in self.loop.remove(_dropped_at_the_switch) if p.tag in TAKEN_OVER]
        self.steady = SteadyState(
            self.loop, self.path, self.streams, self.handshakes, sources=sources, srv_q=self.pipeline.srv_q,
            sub_q=self.pipeline.sub_q, sub_last_rx=self.pipeline.sub_last_rx, taken=taken,
            rtcp_rng=self._rtcp_rng, audio_horizon=self.config.step_timeout, end_hint=lambda: self._end_hint,
            started=self._media_started)
        self.steady.tick()

    # --- stats ---------------------------------------------------------------------------------------

    def _sample(self) -> StatsSample:
        out: dict[int, OutboundStats]
        inb: dict[int, InboundStats | None]
        if self.steady is not None:
            out, inb = self.steady.stream_stats()
        else:
            out, inb = self.pipeline.stream_stats()
        candidates: list[IceCandidateStats] = []
        for pc in self.pcs.values():
            candidates.extend(pc.local)
            candidates.append(pc.remote)
        pub = self.pcs.get(Role.PUBLISHER)
        pair = None
        if pub is not None and pub.selected is not None:
            pair = SelectedCandidatePair(pub.selected, pub.remote)
        return StatsSample(
            audio_out=out.get(AUDIO), video_out=out.get(VIDEO), audio_in=inb.get(AUDIO), video_in=inb.get(VIDEO),
            # aiortc has no candidate-pair stats (docs/references.md#aiortc-and-aioice)
            candidate_pair_rtt=None,
            ice_candidates=tuple(candidates), selected_pair=pair,
        )


def run_simulation(scenario: Scenario, *, seed: int | None = None, packet_log: bool = False,
                   stop_at: float | None = None, on_event: Callable[[Event], None] | None = None) -> SimResult:
    """Simulate one preflight over ``scenario`` (seed: the scenario's own when None).

    ``packet_log`` keeps a :class:`PacketRecord` per packet offered to a link (for pcap export);
    ``stop_at`` (virtual seconds) asks the test to stop then; ``on_event`` sees each core event
    as it happens (progress output).
    """
    from rtcprobe.core._version import __version__

    chosen = scenario.seed if seed is None else seed
    driver = SimDriver(scenario, chosen, packet_log=packet_log, stop_at=stop_at, on_event=on_event,
                       version=__version__)
    return driver.run()
