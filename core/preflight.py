"""The preflight test as a sans-I/O state machine (DESIGN.md sections 2 and 3).

The driver owns every socket and clock. It calls :meth:`PreflightMachine.start`, feeds what it
observes to :meth:`~PreflightMachine.handle`, calls :meth:`~PreflightMachine.handle_timer` when the
deadline from :meth:`~PreflightMachine.get_timer` passes, and after every call drains
:meth:`~PreflightMachine.next_action` (things to do) and :meth:`~PreflightMachine.next_event` (things
to tell the user). The step logic is in :mod:`rtcprobe.core._state`.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Any

from . import errors
from ._state import ACCEPTS, STEPS, TERMINAL, State
from .config import PreflightConfig
from .errors import PreflightErrorInfo, UsageError
from .observations import (
    AcquireMedia,
    Action,
    Completed,
    ConnectionStateChanged,
    ConnectSignaling,
    DtlsStateChanged,
    Event,
    Failed,
    IceServer,
    IceStateChanged,
    MediaAcquired,
    MediaStarted,
    NetworkQualityLevelChanged,
    Observation,
    OpenPeerConnections,
    Progress,
    Role,
    SampleRecorded,
    SampleStats,
    SignalingConnected,
    StatsObserved,
    StatsSample,
    StepUnobservable,
    StopRequested,
    TearDown,
    TrackSubscribed,
    TransportError,
)
from .quality import NetworkQualityScorer, QualityDemand, QualityInput, SideMetrics
from .report import (
    NETWORK_TIMERS,
    PreflightReport,
    ProgressEvent,
    ReportStats,
    RunInfo,
    Sample,
    Stat,
    Timing,
)


class PreflightMachine:
    """One preflight run. Not reusable: create a new one per test."""

    def __init__(self, config: PreflightConfig | None = None, *, run: RunInfo | None = None) -> None:
        self.config = config if config is not None else PreflightConfig()
        self.run = run
        self.state = State.NEW
        self.ignored = 0  # observations that arrived where no state accepts them
        self._actions: collections.deque[Action] = collections.deque()
        self._events: collections.deque[Event] = collections.deque()
        self._t0 = 0.0
        self._epoch_ms = 0.0
        self._deadline: float | None = None
        self._progress: list[ProgressEvent] = []
        self._timers: dict[str, Timing] = {}  # monotonic seconds; epoch ms only in the report
        # Facts gathered from observations.
        self._ice_connected = self._dtls_connected = self._pc_connected = False
        self._unobservable: set[str] = set()
        self._subscribed: set[str] = set()
        self._started: set[str] = set()
        self._reconnecting: set[Role] = set()
        # Stats step.
        self._stats_t0 = 0.0
        self._requested = 0
        self._received: list[tuple[float, StatsSample]] = []
        self._samples: list[Sample] = []
        self._scorer = NetworkQualityScorer(QualityDemand.symmetric(self.config.media))
        self._scorer_inputs: list[tuple[float, QualityInput]] = []
        self._level: int | None = None
        self._error: PreflightErrorInfo | None = None
        self._report: PreflightReport | None = None

    # --- public API ----------------------------------------------------------------------------

    def start(self, now: float, *, epoch_ms: float = 0.0) -> None:
        """Begin the test. ``epoch_ms`` is the wall-clock time (ms) that ``now`` corresponds to."""
        if self.state is not State.NEW:
            raise UsageError("a PreflightMachine can only be started once")
        self._t0, self._epoch_ms = now, epoch_ms
        self._enter(State.ACQUIRING_MEDIA, now)
        self._actions.append(AcquireMedia(self.config.media))

    def handle(self, observation: Observation, now: float) -> None:
        """Feed one observation. Never raises for anything the network does."""
        if self.state not in ACCEPTS.get(type(observation), frozenset()):
            self.ignored += 1
            return
        match observation:
            case StopRequested():
                self._fail(errors.STOPPED, now)
            case TransportError(error=error):
                self._fail(error, now)
            case MediaAcquired():
                self._emit_progress("mediaAcquired", now)
            case SignalingConnected(ice_servers=servers):
                self._stop_timer("connect", now)
                self._emit_progress("connected", now)
                self._start_timer("media", now)
                self._actions.append(OpenPeerConnections(servers, self._relay_only(servers)))
            case IceStateChanged():
                self._on_ice(observation, now)
            case DtlsStateChanged():
                self._on_dtls(observation, now)
            case ConnectionStateChanged():
                self._on_connection(observation, now)
            case TrackSubscribed(kind=kind):
                self._subscribed.add(kind)
            case MediaStarted(kind=kind):
                self._started.add(kind)
            case StepUnobservable(name=name):
                self._unobservable.add(name)
            case StatsObserved(sample=sample):
                if len(self._received) < self._requested:
                    self._on_sample(sample, now)
                else:
                    self.ignored += 1  # unsolicited: keeps the sample count exact
        if self.state not in TERMINAL:
            self._advance(now)

    def stop(self, now: float) -> None:
        """Stop promptly, in any step: emits ``Failed`` with the partial report."""
        self.handle(StopRequested(), now)

    def get_timer(self) -> float | None:
        """The next absolute deadline, or None when nothing is pending."""
        if self.state in TERMINAL or self.state is State.NEW:
            return None
        deadlines = [d for d in (self._deadline, self._next_sample_at()) if d is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Fire whatever is due at ``now`` (a sample request and/or a step timeout)."""
        if self.state in TERMINAL or self.state is State.NEW:
            return
        total = self.config.sample_count
        while (at := self._next_sample_at()) is not None and now >= at:
            self._requested += 1
            self._actions.append(SampleStats(self._requested, total))
        if self._deadline is not None and now >= self._deadline:
            step = STEPS[self.state]
            self._fail(step.timeout_error.with_message(
                f"{step.timeout_error.message} (timed out after {self.config.step_timeout:g} s "
                f"waiting for: {step.condition})"), now)

    def next_action(self) -> Action | None:
        return self._actions.popleft() if self._actions else None

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def actions(self) -> Iterable[Action]:
        while self._actions:
            yield self._actions.popleft()

    def events(self) -> Iterable[Event]:
        while self._events:
            yield self._events.popleft()

    @property
    def network_quality_level(self) -> int | None:
        """The current level (None until the first stats sample)."""
        return self._level

    @property
    def report(self) -> PreflightReport | None:
        """The final (or partial, on failure) report once the test has ended."""
        return self._report

    @property
    def scorer_inputs(self) -> tuple[tuple[float, QualityInput], ...]:
        """Every input the network-quality scorer was given, with its ``now``, in order: replaying
        them through another scorer re-scores the test without running it again."""
        return tuple(self._scorer_inputs)

    @property
    def error(self) -> PreflightErrorInfo | None:
        return self._error

    @property
    def progress_events(self) -> tuple[ProgressEvent, ...]:
        return tuple(self._progress)

    # --- steps ---------------------------------------------------------------------------------

    def _enter(self, state: State, now: float) -> None:
        self.state = state
        self._deadline = now + self.config.step_timeout if state in STEPS else None
        if state is State.CONNECTING_SIGNALING:
            self._start_timer("connect", now)
            self._actions.append(ConnectSignaling(self.config.region))
        elif state is State.COLLECTING_STATS:
            self._stats_t0 = now

    def _step_done(self, now: float) -> bool:
        kinds = self.config.media.kinds
        match self.state:
            case State.ACQUIRING_MEDIA:
                return "mediaAcquired" in self._names()
            case State.CONNECTING_SIGNALING:
                return "connected" in self._names()
            case State.CONNECTING_MEDIA:
                return (
                    self._ice_connected
                    and (self._dtls_connected or "dtlsConnected" in self._unobservable)
                    and (self._pc_connected or "peerConnectionConnected" in self._unobservable)
                )
            case State.SUBSCRIBING:
                if self._subscribed.issuperset(kinds):
                    self._emit_progress("mediaSubscribed", now)
                    return True
                return False
            case State.STARTING_MEDIA:
                wanted = "video" if "video" in kinds else "audio"
                if wanted in self._started:
                    self._stop_timer("media", now)
                    self._emit_progress("mediaStarted", now)
                    return True
                return False
            case State.COLLECTING_STATS:
                return len(self._received) >= self.config.sample_count
        return False

    def _advance(self, now: float) -> None:
        while self.state in STEPS and self._step_done(now):
            nxt = STEPS[self.state].next
            if nxt is State.COMPLETED:
                self._complete(now)
                return
            self._enter(nxt, now)

    def _relay_only(self, servers: tuple[IceServer, ...]) -> bool:
        if self.config.relay_only is not None:
            return self.config.relay_only
        return any(url.lower().startswith(("turn:", "turns:")) for s in servers for url in s.urls)

    def _next_sample_at(self) -> float | None:
        if self.state is not State.COLLECTING_STATS or self._requested >= self.config.sample_count:
            return None
        return self._stats_t0 + (self._requested + 1) * self.config.sample_interval

    # --- observations --------------------------------------------------------------------------

    def _on_ice(self, obs: IceStateChanged, now: float) -> None:
        if obs.state in ("failed", "closed"):
            self._fail(errors.MEDIA_CONNECTION.with_message(
                f"ICE {obs.state} on the {obs.role.value} connection"), now)
        elif obs.state == "disconnected":
            self._set_reconnecting(obs.role, True, now)
        elif obs.state == "checking" and obs.role is Role.PUBLISHER:
            self._start_timer("ice", now)
        elif obs.state in ("connected", "completed"):
            self._set_reconnecting(obs.role, False, now)
            if obs.role is Role.PUBLISHER and not self._ice_connected:
                self._ice_connected = True
                self._lap("ice", now)
                self._emit_progress("iceConnected", now)

    def _on_dtls(self, obs: DtlsStateChanged, now: float) -> None:
        if obs.state == "failed":
            self._fail(errors.MEDIA_DTLS_FAILED.with_message(
                f"DTLS handshake failed on the {obs.role.value} connection"), now)
        elif obs.state == "closed":
            self._fail(errors.MEDIA_CONNECTION.with_message(
                f"DTLS transport closed on the {obs.role.value} connection"), now)
        elif obs.role is not Role.PUBLISHER:
            return
        elif obs.state == "connecting":
            self._start_timer("dtls", now)
        elif obs.state == "connected" and not self._dtls_connected:
            self._dtls_connected = True
            self._lap("dtls", now)
            self._emit_progress("dtlsConnected", now)

    def _on_connection(self, obs: ConnectionStateChanged, now: float) -> None:
        if obs.state in ("failed", "closed"):
            self._fail(errors.MEDIA_CONNECTION.with_message(
                f"peer connection {obs.state} ({obs.role.value})"), now)
        elif obs.state == "disconnected":
            self._set_reconnecting(obs.role, True, now)
        elif obs.role is not Role.PUBLISHER:
            if obs.state == "connected":
                self._set_reconnecting(obs.role, False, now)
        elif obs.state == "connecting":
            self._start_timer("peerConnection", now)
        elif obs.state == "connected":
            self._set_reconnecting(obs.role, False, now)
            if not self._pc_connected:
                self._pc_connected = True
                self._lap("peerConnection", now)
                self._emit_progress("peerConnectionConnected", now)

    def _set_reconnecting(self, role: Role, on: bool, now: float) -> None:
        before = bool(self._reconnecting)
        (self._reconnecting.add if on else self._reconnecting.discard)(role)
        if self.state is State.COLLECTING_STATS and before != bool(self._reconnecting):
            self._score(now, QualityInput(reconnecting=bool(self._reconnecting)))

    def _on_sample(self, sample: StatsSample, now: float) -> None:
        prev = self._received[-1] if self._received else None
        self._received.append((now, sample))
        jitter = _audio_or_video(sample.audio_in, sample.video_in, lambda s: s.jitter)
        rtt_s = sample.candidate_pair_rtt
        if rtt_s is None:
            rtts = [o.remote_rtt for o in (sample.audio_out, sample.video_out) if o and o.remote_rtt is not None]
            rtt_s = max(rtts) if rtts else None
        loss_pct = out_kbps = in_kbps = None
        quality = QualityInput(reconnecting=bool(self._reconnecting))
        if prev is not None and now > prev[0]:
            p_now, p = prev
            dt = now - p_now
            loss = _path_loss(sample, p)
            loss_pct = None if loss is None else 100.0 * loss
            out_kbps = 8 * _delta_bytes(sample, p, "out") / dt / 1000
            in_kbps = 8 * _delta_bytes(sample, p, "in") / dt / 1000
            quality = _quality_input(sample, p, dt, rtt_s, bool(self._reconnecting))
        self._score(now, quality)
        self._samples.append(Sample(
            time=(now - self._t0) * 1000, jitter=jitter, rtt=None if rtt_s is None else rtt_s * 1000,
            packet_loss=loss_pct, outgoing_bitrate=out_kbps, incoming_bitrate=in_kbps, level=self._level,
        ))
        self._events.append(SampleRecorded(len(self._received), self.config.sample_count, self._level))

    def _score(self, now: float, quality: QualityInput) -> None:
        self._scorer_inputs.append((now, quality))
        self._set_level(self._scorer.update(now, quality))

    def _set_level(self, level: int) -> None:
        if level != self._level:
            self._level = level
            stats = self._scorer.stats(self.config.network_quality_verbosity).to_dict()
            self._events.append(NetworkQualityLevelChanged(level, stats))

    # --- bookkeeping ---------------------------------------------------------------------------

    def _ms(self, now: float) -> float:
        return (now - self._t0) * 1000

    def _epoch(self, now: float) -> float:
        return self._epoch_ms + self._ms(now)

    def _names(self) -> set[str]:
        return {e.name for e in self._progress}

    def _emit_progress(self, name: str, now: float) -> None:
        if name in self._names():
            return
        event = ProgressEvent(name, self._ms(now))
        self._progress.append(event)
        self._events.append(Progress(event.name, event.duration))

    def _start_timer(self, name: str, now: float) -> None:
        if name not in self._timers:
            self._timers[name] = Timing(now)

    def _stop_timer(self, name: str, now: float) -> None:
        t = self._timers.get(name)
        if t is not None and t.end is None:
            self._timers[name] = t.stopped(now)

    def _lap(self, name: str, now: float) -> None:
        """Stop a connection timer; a driver that never saw its start state (ICE 'checking', DTLS
        'connecting') gets it timed from when the peer connections were opened."""
        if name not in self._timers:
            self._timers[name] = Timing(self._timers["media"].start if "media" in self._timers else now)
        self._stop_timer(name, now)

    def _fail(self, error: PreflightErrorInfo, now: float) -> None:
        self._error = error
        self.state = State.FAILED
        self._deadline = None
        self._report = self._build_report(now, error)
        self._actions.append(TearDown())
        self._events.append(Failed(error, self._report))

    def _complete(self, now: float) -> None:
        self.state = State.COMPLETED
        self._deadline = None
        self._report = self._build_report(now, None)
        self._actions.append(TearDown())
        self._events.append(Completed(self._report))

    def _build_report(self, now: float, error: PreflightErrorInfo | None) -> PreflightReport:
        timers = {
            k: Timing(self._epoch(t.start), None if t.end is None else self._epoch(t.end))
            for k in NETWORK_TIMERS
            if (t := self._timers.get(k)) is not None
        }
        samples = tuple(self._samples)
        stats = None
        candidates: tuple[Any, ...] = ()
        pair = None
        if error is None:
            stats = ReportStats(
                jitter=Stat.of([s.jitter for s in samples]),
                rtt=Stat.of([s.rtt for s in samples]),
                packet_loss=Stat.of([s.packet_loss for s in samples]),
            )
            for _, sample in reversed(self._received):
                if sample.ice_candidates or sample.selected_pair:
                    candidates, pair = sample.ice_candidates, sample.selected_pair
                    break
        return PreflightReport(
            test_timing=Timing(self._epoch_ms, self._epoch(now)),
            network_timing=timers,
            stats=stats,
            ice_candidate_stats=candidates,
            selected_ice_candidate_pair_stats=pair,
            progress_events=tuple(self._progress),
            network_quality_level=self._level,
            network_quality_stats=self._scorer.stats(3).to_dict() if self._level is not None else None,
            bitrate_outgoing=Stat.of([s.outgoing_bitrate for s in samples]),
            bitrate_incoming=Stat.of([s.incoming_bitrate for s in samples]),
            samples=samples,
            run=self.run,
            error=error,
        )


# --- pure helpers for the stats step -----------------------------------------------------------


def _audio_or_video(audio: Any, video: Any, get: Any) -> float | None:
    """The anchor reads audio jitter; with no audio published we fall back to video's."""
    for s in (audio, video):
        if s is not None and get(s) is not None:
            return float(get(s))
    return None


def _delta_sum(cur: StatsSample, prev: StatsSample, field: str) -> int:
    total = 0
    for kind in ("audio_in", "video_in"):
        c, p = getattr(cur, kind), getattr(prev, kind)
        if c is not None:
            total += getattr(c, field) - (getattr(p, field) if p is not None else 0)
    return total


def _path_loss(cur: StatsSample, prev: StatsSample) -> float | None:
    """Loss fraction of the publisher → subscriber media path between two samples.

    The anchor's packetLoss is Δlost/Δ(lost+received) at the receiver, whose media crossed the
    whole path. When the far end terminates media instead (``inbound_includes_uplink`` False),
    the uplink's loss comes from the publisher's receiver reports and is combined with the
    subscriber's: the path delivers a packet only if both hops do.
    """
    lost = _delta_sum(cur, prev, "packets_lost")
    recv = _delta_sum(cur, prev, "packets_received")
    down = None if lost + recv <= 0 else min(1.0, max(0.0, lost / (lost + recv)))
    if cur.inbound_includes_uplink or down is None:
        return down
    up = _uplink_loss(cur, prev)
    return down if up is None else 1.0 - (1.0 - up) * (1.0 - down)


def _uplink_loss(cur: StatsSample, prev: StatsSample) -> float | None:
    """Δlost / Δ(lost + received) over the publisher's receiver reports (both counts from the
    same report, so a report arriving late never inflates it). A stream is counted only once it
    has a baseline in the previous sample: a first report's cumulative count is not one
    interval's loss."""
    up_lost = up_total = 0
    for kind in ("audio_out", "video_out"):
        c, p = getattr(cur, kind), getattr(prev, kind)
        if c is None or p is None or c.remote_packets_lost is None or p.remote_packets_lost is None:
            continue
        d_lost = c.remote_packets_lost - p.remote_packets_lost
        if c.remote_packets_received is not None and p.remote_packets_received is not None:
            d_total = d_lost + c.remote_packets_received - p.remote_packets_received
        else:  # a driver without the far end's received count: what we sent stands in for it
            d_total = c.packets_sent - p.packets_sent
        up_lost += d_lost
        up_total += d_total
    if up_total <= 0:
        return None
    return min(1.0, max(0.0, up_lost / up_total))


def _delta_bytes(cur: StatsSample, prev: StatsSample, side: str) -> int:
    field = "bytes_sent" if side == "out" else "bytes_received"
    total = 0
    for kind in ("audio_" + side, "video_" + side):
        c, p = getattr(cur, kind), getattr(prev, kind)
        if c is not None:
            total += max(0, getattr(c, field) - (getattr(p, field) if p is not None else 0))
    return total


def _quality_input(
    cur: StatsSample, prev: StatsSample, dt: float, rtt: float | None, reconnecting: bool
) -> QualityInput:
    def send(kind: str) -> SideMetrics | None:
        c, p = getattr(cur, kind + "_out"), getattr(prev, kind + "_out")
        if c is None:
            return None
        sent = c.bytes_sent - (p.bytes_sent if p is not None else 0)
        return SideMetrics(
            actual_bps=max(0.0, 8 * sent / dt),
            available_bps=c.available_bps,
            rtt=c.remote_rtt if c.remote_rtt is not None else rtt,
            jitter=c.remote_jitter,
            fraction_lost=c.remote_fraction_lost,
        )

    def recv(kind: str) -> SideMetrics | None:
        c, p = getattr(cur, kind + "_in"), getattr(prev, kind + "_in")
        if c is None:
            return None
        got = c.bytes_received - (p.bytes_received if p is not None else 0)
        lost = c.packets_lost - (p.packets_lost if p is not None else 0)
        rcvd = c.packets_received - (p.packets_received if p is not None else 0)
        fraction = None if lost + rcvd <= 0 else min(1.0, max(0.0, lost / (lost + rcvd)))
        return SideMetrics(actual_bps=max(0.0, 8 * got / dt), rtt=rtt, jitter=c.jitter, fraction_lost=fraction)

    return QualityInput(
        audio_send=send("audio"), audio_recv=recv("audio"),
        video_send=send("video"), video_recv=recv("video"),
        reconnecting=reconnecting,
    )
