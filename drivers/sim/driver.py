"""The simulated-network driver: a preflight over a scenario's links, on a virtual clock.

Theory of operation
-------------------
:class:`SimDriver` plays everything the preflight involves — the client's two peer connections,
the signaling server and the TURN server — and feeds the core's :class:`PreflightMachine` exactly
the observations the real aiortc driver produces, at the virtual times they would happen. The
topology is Twilio Video's preflight, as the aiortc client runs it (drivers/aiortc/driver.py):
the signaling server only hands out TURN credentials; the client's sender (relay-only) and
receiver connect to each other through the TURN server, so every packet between them crosses the
scenario's uplink (client→TURN) and then its downlink (TURN→client)
:class:`~rtcprobe.netem.Link`: media sender → TURN → receiver; RTCP receiver reports and REMB
receiver → TURN → sender; ICE checks, consent and DTLS both ways. Nothing else is on the path
(the signaling and TURN servers sit at the far end, 192.0.2.0/24 TEST-NET addresses).

What follows from the loop: the rtt the sender measures from the receiver's reports is the
loop's, about twice the client↔TURN round trip; the report keeps it as ``stats.rtt`` (as Twilio
Video's preflight reports it) and the samples say ``loopback=True``, so the core feeds the
network-quality scorer half of it. Loss anywhere on the two links is a gap at the receiver; the
receiver's bandwidth estimate (REMB) sees the whole loop. Candidates and the selected pair are
the receiver's view, as the aiortc driver reports them (drivers/aiortc/candidates.py): its host
and relayed candidates, the sender's relayed one, the pair (receiver host, sender relay),
transport ``subscriber``.

Time order on a link is the one invariant. The driver runs the event loop (:mod:`._net`) and the
core's timer side by side, answers the core's actions, and samples stats; the work is done by:

* :mod:`._handshakes` — signaling, TURN, ICE and consent, DTLS, event by event;
* :mod:`._pipeline` — media and RTCP event by event, until every stream started playing;
* :mod:`._steady` — then media and RTCP one interval at a time, one batch per link, as soon as
  nothing event-driven can put a packet on a link any more (:meth:`SimDriver._maybe_steady`);
* :mod:`._streams` and :mod:`._rtcp` — the streams' state both modes share and the RTCP rules
  both apply; :mod:`._media` and :mod:`._timeline` — sources, receiver statistics, REMB.

Media, by the scenario's ``[media] stack``. The default, ``"libwebrtc"``, is a browser's endpoint
(paced VP8 in 1200-byte packets, Google congestion control from 300 kbit/s, NACK/RTX, Opus at
32 kbit/s: :mod:`._libwebrtc`). ``"aiortc"`` is aiortc's: Opus 96 kbit/s in 20 ms packets; VP8
frames packetized at aiortc's 1300-byte limit and sent back to back (aiortc has no pacer); the
receiver's REMB drives the sender's encoder; no NACK/RTX (its reports have no ``run.stack``, so
they are byte for byte what they were before the default changed). Either way TURN forwards RTP
as it came (the receiver's sequence numbers are the sender's). Not modelled: processing time on
either end (encoding aside), TURN refreshes. The handshakes (ICE pacing, DTLS timers) are the
aiortc client's for both models (benchmarks/README.md, bench_calibration.py: Chromium's time to
media differs). See docs/architecture.md#the-simulator.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

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

from ._handshakes import Handshakes, Peer
from ._libwebrtc import LIBWEBRTC, MODELS, NackRtx
from ._media import AUDIO, KIND_NAMES, VIDEO
from ._net import DOWN, UP, EventLoop, PacketRecord, Path, Pending, Tag
from ._pipeline import Pipeline
from ._seeds import Seeds, generator, remember
from ._steady import TAKEN_OVER, SteadyState
from ._streams import Streams

# Pending events that do not keep the driver from switching to batches.
HARMLESS = frozenset({Tag.WATCH, Tag.OBSERVE, Tag.FINE_TICK, Tag.MAYBE_STEADY})


def _dropped_at_the_switch(p: Pending) -> bool:
    """Taken over by the steady state, or moot once in it (the event pipeline's ticks, the
    switch's own retries, retries of finished transactions)."""
    tag = p.tag
    return (tag in TAKEN_OVER or tag is Tag.FINE_TICK or tag is Tag.MAYBE_STEADY
            or (tag is Tag.RETRY and p.args[0].done))


_FINAL = (Completed, Failed)  # (a tuple: ``Completed | Failed`` would build a union at every check)

# The observations that depend on nothing but a media kind, made once (frozen: safe to share).
_MEDIA_STARTED = tuple(MediaStarted(name) for name in KIND_NAMES)  # by the pipeline's kind number
_ACQUIRED: dict[tuple[str, ...], MediaAcquired] = {}

STREAMS = 5  # random streams spawned from the seed: links, media, RTCP, consent, addresses


# The ports are all their stream ever draws, so a function of the seed: kept per process, as the
# seeding is (._seeds), and drawn again only for a seed not seen before (bounded).
_PORTS: dict[tuple[int, tuple[int, ...]], list[int]] = {}


def _ports(addr: Seeds) -> list[int]:
    """The six ports a run's addresses take, from the address stream ``addr``."""
    key = (addr.entropy, addr.spawn_key)
    known = _PORTS.get(key)
    if known is None:
        known = remember(_PORTS, key, generator(addr).integers(49152, 65536, size=6).tolist())
    return list(known)


def link_seed(seed: int) -> np.random.SeedSequence:
    """What the simulator's links draw from for ``seed`` (losses, jitter): an impairment relay
    built from it draws the same, packet for packet (``rtcprobe run --driver aiortc``)."""
    return np.random.SeedSequence(seed).spawn(STREAMS)[0]


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


class _Back:
    """The driver's callbacks as the parts it does not own hold them (the steady state, the
    receiver's bandwidth estimator): through this, not as its bound methods, so that the driver
    can cut them after the run (:meth:`SimDriver._release`)."""

    __slots__ = ("driver",)

    def __init__(self, driver: SimDriver) -> None:
        self.driver = driver

    def media_started(self, kind: int, t: float) -> None:
        self.driver._media_started(kind, t)

    def end_hint(self) -> float:
        return self.driver._end_hint

    def bottleneck_bps(self, t: float) -> float:
        return self.driver._bottleneck_bps(t)


class SimDriver:
    """Runs one preflight over a scenario (:meth:`run`, once). Use :func:`run_simulation`.

    For tests and tools, besides :func:`run_simulation`'s options:

    * ``on_observation(now, observation)`` sees every observation as the core gets it;
    * ``early_batches=True`` switches to batches as soon as the handshakes are done instead of
      once media started (cheaper; media start is then read off the batches, keyframe requests
      wait for an interval boundary; the libwebrtc endpoint model always does, for its NACK);
    * after the run, :attr:`steady_at` is when the driver switched to batches (None: never),
      :attr:`pcs` the two peer connections by role and :attr:`path` the links (the parts' state
      stays readable; their callbacks are cut, see :meth:`_release`).
    """

    def __init__(self, scenario: Scenario, seed: int, *, packet_log: bool = False,
                 stop_at: float | None = None, on_event: Callable[[Event], None] | None = None,
                 version: str = "0", early_batches: bool = False,
                 on_observation: Callable[[float, Observation], None] | None = None) -> None:
        self.scenario = scenario
        self.seed = seed
        # default_rng(seed).spawn(STREAMS), seeded at a third of numpy's cost (the same draws: ._seeds)
        link_s, media_s, rtcp_s, consent_s, addr_s = Seeds(seed).spawn(STREAMS)
        media_rng, self._rtcp_rng, consent_rng = map(generator, (media_s, rtcp_s, consent_s))
        uplink, downlink = scenario.build_links(link_s)  # (seeds: no generators made only to spawn)
        self.path = Path(uplink, downlink, log=packet_log)
        self.loop = EventLoop()
        self.config = PreflightConfig(duration=scenario.duration, media=scenario.media, relay_only=True)
        # (the aiortc model's reports keep their bytes: no stack key, see RunInfo)
        stack = None if scenario.stack == "aiortc" else scenario.stack
        self.core = PreflightMachine(self.config, run=RunInfo("sim", version, scenario.name, seed, stack))
        self.on_event = on_event
        self.on_observation = on_observation
        self.events: list[Event] = []
        self.stop_at = stop_at
        self.early_batches = early_batches
        self.done = False
        self.pcs: dict[Role, Peer] = {}  # (filled by the handshakes, read by the pipeline)
        media = scenario.media
        self.model = MODELS[scenario.stack]
        self._back = _Back(self)
        self.streams = Streams([k for k, on in ((AUDIO, media.audio), (VIDEO, media.video is not None)) if on],
                               self.model.estimator(self._back.bottleneck_bps))

        def reorders(link: str) -> bool:
            return any(c.reorder for c in (getattr(scenario, link), *(c for _, c in getattr(scenario.phases, link))))

        self.pipeline = Pipeline(self.loop, self.path, self.streams, self.pcs, media=media, media_rng=media_rng,
                                 rtcp_rng=self._rtcp_rng, reorders={UP: reorders(UP), DOWN: reorders(DOWN)},
                                 started=self._media_started, progress=self._maybe_steady, model=self.model)
        # The handshakes put their packets on the wire through the pipeline (which first brings
        # media up to now) directly: one call less per control packet.
        self.handshakes = Handshakes(
            self.loop, self.pipeline.send, self._observe,
            ports=_ports(addr_s),
            tracks=self.config.media.kinds, consent_rng=consent_rng, sender_up=self._sender_up,
            receiver_up=self._receiver_up, progress=self._maybe_steady, last_heard=self._last_heard, pcs=self.pcs)
        self.steady: SteadyState | None = None
        self.steady_at: float | None = None
        self._core_touched = True
        self._end_hint = math.inf  # when the last stats sample falls, once known
        # The receiver's candidates and selected pair as the last sample had them, with what they
        # were made from: (remote list, selected, its length, candidates, pair).
        self._candidates: tuple[list[IceCandidateStats], tuple[IceCandidateStats, IceCandidateStats] | None, int,
                                tuple[IceCandidateStats, ...], SelectedCandidatePair | None] | None = None

    @property
    def now(self) -> float:
        return self.loop.now

    def _bottleneck_bps(self, t: float) -> float:
        """The path's narrowest configured rate at ``t`` (what a probe cluster would measure; a
        trace or no limit: unknown, inf)."""
        rates = [link.config_at(t).bandwidth_kbps for link in self.path.links.values()]
        return min([r * 1000.0 for r in rates if r is not None], default=math.inf)

    # --- main loop -------------------------------------------------------------------------------

    def run(self) -> SimResult:
        core, loop = self.core, self.loop
        core.start(0.0, epoch_ms=0.0)
        self._pump()
        if self.stop_at is not None:
            loop.at(self.stop_at, self._observe, StopRequested(), tag=Tag.OBSERVE)
        tc: float | None = None
        heap, pop = loop.heap, heapq.heappop
        # Stops right after the event that finished the core: nothing scheduled runs after that.
        while not self.done:
            if self._core_touched:  # the core's report and deadline only change when it is fed
                if core.report is not None:
                    break
                self._core_touched = False
                tc = core.get_timer()
            if heap and (tc is None or heap[0][0] <= tc):  # (EventLoop.run_due, inline: once per event)
                t, _, fn, args, _ = pop(heap)
                loop.now = t
                fn(*args)
                continue
            if tc is not None:
                loop.now = tc
                core.handle_timer(tc)
                self._core_touched = True
                self._pump()
            else:  # nothing can happen any more (cannot occur: every step has a timeout)
                break
        report = core.report
        assert report is not None, "the core always ends with a report"
        up, down = self.path.links[UP].counters, self.path.links[DOWN].counters
        result = SimResult(report, tuple(self.events), attrs.evolve(up), attrs.evolve(down),
                           self.path.packets, loop.now, tuple(self.path.records()), self.core.scorer_inputs)
        self._release()
        return result

    def _release(self) -> None:
        """The run is over: cut what ties its objects to each other and back to the driver (the
        pending events, the parts' callbacks), so that reference counting frees the whole run as
        soon as the caller lets go of the driver. Otherwise every run leaves ~600 objects in
        reference cycles for the cycle collector, which then runs about once a run and costs
        ~0.2 ms a run on average in a loop of runs. What a caller reads after the run stays."""
        self.loop.heap.clear()
        del self._back.driver
        self.pipeline.release()
        self.handshakes.release()
        if self.steady is not None:
            self.steady.release()

    def _observe(self, obs: Observation) -> None:
        if self.done:
            return
        now = self.loop.now
        if self.on_observation is not None:
            self.on_observation(now, obs)
        self.core.handle(obs, now)
        self._core_touched = True
        self._pump()

    def _pump(self) -> None:
        core = self.core
        while True:
            action = core.next_action()
            if action is None:
                break
            match action:  # (the most frequent first: one class check per case)
                case SampleStats(index=index, total=total):
                    self._end_hint = self.loop.now + (total - index) * self.config.sample_interval + 1e-6
                    self._observe(StatsObserved(self._sample()))
                case AcquireMedia(media=media):
                    # Synthetic tracks cost no simulated time.
                    acquired = _ACQUIRED.get(media.kinds)
                    if acquired is None:
                        acquired = _ACQUIRED[media.kinds] = MediaAcquired(media.kinds)
                    self._observe(acquired)
                case ConnectSignaling():
                    self.handshakes.connect_signaling()
                case OpenPeerConnections(relay_only=relay_only):
                    self.handshakes.open_peer_connections(relay_only)
                case TearDown():
                    self.done = True
        while (event := core.next_event()) is not None:
            self.events.append(event)
            if self.on_event is not None:
                self.on_event(event)
            if isinstance(event, _FINAL):
                self.done = True

    # --- between the parts -------------------------------------------------------------------------

    def _sender_up(self, peer: Peer) -> None:
        self.pipeline.sender_up(peer)

    def _receiver_up(self, peer: Peer) -> None:
        self.pipeline.receiver_up(peer)

    def _last_heard(self, peer: Peer) -> float:
        return self.pipeline.last_heard(peer) if self.steady is None else self.steady.last_heard(peer)

    def _media_started(self, kind: int, t: float) -> None:
        self.loop.at(t, self._observe, _MEDIA_STARTED[kind], tag=Tag.OBSERVE)
        if self.streams.all_started:
            self.loop.at(t, self._maybe_steady, tag=Tag.MAYBE_STEADY)  # (also tried at every RTCP timer)

    # --- the switch to batches -----------------------------------------------------------------------

    def _maybe_steady(self) -> None:
        """Switch to interval batches once nothing event-driven can put a packet on a link any more:
        both peer connections' DTLS up, media started, and every pending event one the steady
        state takes over (RTCP and REMB timers, packets in flight between the peers, consent
        checks due) or harmless."""
        if self.steady is not None or self.done or self.pipeline.busy or not self.pipeline.sources:
            return
        if len(self.pcs) < 2 or not (self.early_batches or self.model.early_batches or self.streams.all_started):
            return
        pub, sub = self.handshakes.sender, self.handshakes.receiver
        if not (pub.up and sub.up) or self.streams.sub_accept_at == math.inf:
            return
        for _, _, _, args, tag in self.loop.heap:  # (what EventLoop.pending yields, without the tuples)
            if tag is Tag.RETRY:
                if not args[0].done:
                    return
            elif tag not in TAKEN_OVER and tag not in HARMLESS:
                return
        self._enter_steady()

    def _enter_steady(self) -> None:
        sources, turn_q, sub_q = self.pipeline.hand_over()
        self.handshakes.consent_in_loop = False
        self.steady_at = self.loop.now
        taken = [p for p in self.loop.remove(_dropped_at_the_switch) if p.tag in TAKEN_OVER]
        self.steady = SteadyState(
            self.loop, self.path, self.streams, self.handshakes, sources=sources, turn_q=turn_q,
            sub_q=sub_q, sub_last_rx=self.pipeline.sub_last_rx, taken=taken,
            rtcp_rng=self._rtcp_rng, audio_horizon=self.config.step_timeout, end_hint=self._back.end_hint,
            started=self._back.media_started,
            nack=NackRtx(self.streams.sub_stats[VIDEO].max_seq)
            if self.model is LIBWEBRTC and VIDEO in self.streams.kinds else None)
        self.steady.tick()

    # --- stats ---------------------------------------------------------------------------------------

    def _sample(self) -> StatsSample:
        out: dict[int, OutboundStats]
        inb: dict[int, InboundStats | None]
        if self.steady is not None:
            out, inb = self.steady.stream_stats()
        else:
            out, inb = self.pipeline.stream_stats()
        # The receiving peer connection's view (Twilio reads both from it; drivers/aiortc/candidates.py),
        # made again only when it changed (the handshakes replace a peer's lists, never edit them).
        candidates: tuple[IceCandidateStats, ...] = ()
        pair = None
        if len(self.pcs) == 2:
            sub = self.handshakes.receiver
            view = self._candidates
            if view is None or view[0] is not sub.remote or view[1] is not sub.selected or view[2] != len(sub.remote):
                selected = None if sub.selected is None else SelectedCandidatePair(*sub.selected)
                view = self._candidates = (sub.remote, sub.selected, len(sub.remote), (*sub.local, *sub.remote),
                                           selected)
            candidates, pair = view[3], view[4]
        # (positional, in the class's field order: audio_out, video_out, audio_in, video_in,
        # candidate_pair_rtt, ice_candidates, selected_pair, loopback)
        return StatsSample(
            out.get(AUDIO), out.get(VIDEO), inb.get(AUDIO), inb.get(VIDEO),
            # aiortc has no candidate-pair stats (docs/references.md#aiortc-and-aioice)
            None,
            candidates, pair,
            # sender and receiver are both this client's: every round trip is the loop's
            True,
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
