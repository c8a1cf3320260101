"""The preflight test as a sans-I/O state machine (docs/architecture.md#the-sans-io-contract,
docs/architecture.md#the-step-table).

Theory of operation
-------------------
The driver owns every socket and clock. It calls :meth:`PreflightMachine.start`, feeds what it
observes to :meth:`~PreflightMachine.handle`, calls :meth:`~PreflightMachine.handle_timer` when the
deadline from :meth:`~PreflightMachine.get_timer` passes, and after every call drains
:meth:`~PreflightMachine.next_action` (things to do) and :meth:`~PreflightMachine.next_event` (things
to tell the user). Time is only ever the ``now`` the driver passes, in seconds of a monotonic clock
of its choice (as aioquic's connections take it).

:class:`PreflightMachine` holds no transition logic: it looks observations up in the rule table
and steps up in the step table (:mod:`rtcprobe.core._state`) and executes the effects they list.
What executing an effect means is here: facts, progress events, the connection timers, the
actions queued for the driver, and the stats step (sample requests on the sample interval; each
answer measured by :mod:`rtcprobe.core.sampling` and fed to the network-quality scorer). When the
test ends, :func:`rtcprobe.core.report.build_report` turns what was recorded into the report.

Nothing the network does makes it raise: an observation is either accepted by the current state
or ignored and counted (:attr:`~PreflightMachine.ignored`), and odd stats values are not measured.
Nor does a driver's clock: a ``now`` earlier than one already seen is taken as that latest time
(and counted in :attr:`~PreflightMachine.clock_regressions`), so durations never go negative and the
scorer, which requires monotonic time, never sees time run backwards. Misuse raises at once
(:class:`~rtcprobe.core.errors.UsageError`): starting twice, or a ``now`` that is not a finite
number.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable
from typing import Final

import attrs

from . import sampling
from ._state import (
    RULES,
    STEPS,
    TERMINAL,
    Effects,
    Emit,
    Facts,
    Fail,
    FailAsTold,
    Lap,
    LearnIceServers,
    Reconnecting,
    Record,
    RequestMedia,
    RequestPeerConnections,
    RequestSignaling,
    StartSampling,
    StartTimer,
    State,
    StopTimer,
    TakeSample,
)
from .config import PreflightConfig
from .errors import PreflightErrorInfo, UsageError
from .observations import (
    AcquireMedia,
    Action,
    Completed,
    ConnectSignaling,
    Event,
    Failed,
    IceServer,
    NetworkQualityLevelChanged,
    Observation,
    OpenPeerConnections,
    Progress,
    ProgressName,
    Role,
    SampleRecorded,
    SampleStats,
    SignalingConnected,
    StatsObserved,
    StatsSample,
    StopRequested,
    TearDown,
    TransportError,
)
from .quality import VERBOSITY_DETAILED, NetworkQualityScorer, QualityDemand, QualityInput
from .report import (
    IceCandidateStats,
    PreflightReport,
    ProgressEvent,
    RunInfo,
    Sample,
    SelectedCandidatePair,
    TimerName,
    Timing,
    build_report,
)

_IDLE: Final = TERMINAL | {State.NEW}  # no timer runs: not started, or ended


class PreflightMachine:
    """One preflight run. Not reusable: create a new one per test."""

    def __init__(self, config: PreflightConfig | None = None, *, run: RunInfo | None = None) -> None:
        self.config = config if config is not None else PreflightConfig()
        self.run = run
        self.state = State.NEW
        self.ignored = 0  # observations that arrived where no state accepts them
        self.clock_regressions = 0  # calls whose `now` was earlier than one already seen
        self._actions: collections.deque[Action] = collections.deque()
        self._events: collections.deque[Event] = collections.deque()
        self._t0 = 0.0
        self._epoch_ms = 0.0
        self._now: float | None = None  # the latest `now` seen
        self._deadline: float | None = None
        # The config's derived values, once: they are read on every call of the stats step.
        self._sample_count, self._sample_interval = self.config.sample_count, self.config.sample_interval
        self._facts = Facts(published=self.config.media.kinds, samples_wanted=self._sample_count)
        self._progress: list[ProgressEvent] = []
        self._emitted: set[str] = set()
        self._timers: dict[TimerName, Timing] = {}  # monotonic seconds; epoch ms only in the report
        self._reconnecting: set[Role] = set()
        # Stats step.
        self._stats_t0 = 0.0
        self._requested = 0
        self._last_sample: tuple[float, StatsSample] | None = None
        self._candidates: tuple[IceCandidateStats, ...] = ()
        self._selected_pair: SelectedCandidatePair | None = None
        self._samples: list[Sample] = []
        self._scorer = NetworkQualityScorer(QualityDemand.symmetric(self.config.media))
        self._scorer_inputs: list[tuple[float, QualityInput]] = []
        self._level: int | None = None
        self._error: PreflightErrorInfo | None = None
        self._report: PreflightReport | None = None

    # --- public API ----------------------------------------------------------------------------

    def start(self, now: float, *, epoch_ms: float = 0.0) -> None:
        """Begin the test. ``epoch_ms`` is the wall-clock time (ms) that ``now`` corresponds to."""
        _check_now(now)
        if self.state is not State.NEW:
            raise UsageError("a PreflightMachine can only be started once")
        self._now = self._t0 = now
        self._epoch_ms = epoch_ms
        self._enter(State.ACQUIRING_MEDIA, now)

    def handle(self, observation: Observation, now: float) -> None:
        """Feed one observation. Never raises for anything the network does."""
        if type(now) is not float or now - now != 0.0:  # the usual finite float: no call (inf - inf is NaN)
            _check_now(now)
        rule = RULES.get(type(observation))
        if rule is None or self.state not in rule.accepted_in:
            self.ignored += 1
            return
        if self._now is not None and now < self._now:  # _monotonic, inline: every call comes here
            self.clock_regressions += 1
            now = self._now
        else:
            self._now = now
        facts = self._facts
        self._run(rule.effects_for(observation), observation, now)
        # A step's condition reads the facts alone, and every call leaves the machine where its
        # step's condition does not hold: with the same facts there is no step to leave.
        if self._facts is not facts:
            self._advance(now)

    def stop(self, now: float) -> None:
        """Stop promptly, in any step: emits ``Failed`` with the partial report."""
        self.handle(StopRequested(), now)

    def get_timer(self) -> float | None:
        """The next absolute deadline, or None when nothing is pending."""
        if self.state in _IDLE:
            return None
        deadline, sample_at = self._deadline, self._next_sample_at()
        if deadline is None or sample_at is None:
            return sample_at if deadline is None else deadline
        return min(deadline, sample_at)

    def handle_timer(self, now: float) -> None:
        """Fire whatever is due at ``now`` (a sample request and/or a step timeout)."""
        if type(now) is not float or now - now != 0.0:  # as in handle
            _check_now(now)
        if self.state in _IDLE:
            return
        now = self._monotonic(now)
        while (at := self._next_sample_at()) is not None and now >= at:
            self._requested += 1
            self._actions.append(SampleStats(self._requested, self._sample_count))
        if self._deadline is not None and now >= self._deadline:
            self._finish(now, STEPS[self.state].timed_out(self.config.step_timeout))

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

    # --- the interpreter -----------------------------------------------------------------------

    def _monotonic(self, now: float) -> float:
        """``now``, or the latest time already seen if the driver's clock went backwards."""
        if self._now is not None and now < self._now:
            self.clock_regressions += 1
            return self._now
        self._now = now
        return now

    def _enter(self, state: State, now: float) -> None:
        self.state = state
        step = STEPS[state]
        self._deadline = now + self.config.step_timeout
        self._run(step.on_entry, None, now)

    def _advance(self, now: float) -> None:
        """Leave every step whose condition holds, in order."""
        while self.state not in TERMINAL and STEPS[self.state].done(self._facts):
            step = STEPS[self.state]
            self._run(step.on_exit, None, now)
            if step.next is State.COMPLETED:
                self._finish(now, None)
            elif self.state not in TERMINAL:
                self._enter(step.next, now)

    def _run(self, effects: Effects, observation: Observation | None, now: float) -> None:
        for effect in effects:
            if self.state in TERMINAL:
                return
            match effect:  # (the cases are disjoint: the most frequent first, a stats sample)
                case TakeSample() if isinstance(observation, StatsObserved):
                    if self._facts.samples_taken < self._requested:
                        self._on_sample(observation.sample, now)
                    else:
                        self.ignored += 1  # unsolicited: keeps the sample count exact
                case Record(fact=fact):
                    self._facts = self._facts.with_fact(fact)
                case LearnIceServers() if isinstance(observation, SignalingConnected):
                    self._facts = attrs.evolve(self._facts, ice_servers=observation.ice_servers)
                case Emit(name=name):
                    self._emit_progress(name, now)
                case StartTimer(name=name):
                    if name not in self._timers:
                        self._timers[name] = Timing(now)
                case StopTimer(name=name):
                    self._stop_timer(name, now)
                case Lap(name=name):
                    if name not in self._timers:
                        self._timers[name] = Timing(self._timers["media"].start if "media" in self._timers else now)
                    self._stop_timer(name, now)
                case Reconnecting(role=role, on=on):
                    self._set_reconnecting(role, on, now)
                case Fail(error=error):
                    self._finish(now, error)
                case FailAsTold() if isinstance(observation, TransportError):
                    self._finish(now, observation.error)
                case RequestMedia():
                    self._actions.append(AcquireMedia(self.config.media))
                case RequestSignaling():
                    self._actions.append(ConnectSignaling(self.config.region))
                case RequestPeerConnections():
                    servers = self._facts.ice_servers or ()
                    self._actions.append(OpenPeerConnections(servers, self._relay_only(servers)))
                case StartSampling():
                    self._stats_t0 = now
                case _:
                    raise AssertionError(f"the table pairs {effect!r} with {observation!r}")

    def _finish(self, now: float, error: PreflightErrorInfo | None) -> None:
        self.state = State.FAILED if error is not None else State.COMPLETED
        self._error = error
        self._deadline = None
        self._report = build_report(
            start=self._t0,
            end=now,
            epoch_ms=self._epoch_ms,
            timers=self._timers,
            progress=self._progress,
            samples=self._samples,
            candidates=self._candidates,
            selected_pair=self._selected_pair,
            level=self._level,
            quality_stats=self._scorer.stats(VERBOSITY_DETAILED).to_dict() if self._level is not None else None,
            run=self.run,
            error=error,
        )
        self._actions.append(TearDown())
        self._events.append(Completed(self._report) if error is None else Failed(error, self._report))

    # --- what the effects act on ---------------------------------------------------------------

    def _emit_progress(self, name: ProgressName, now: float) -> None:
        if name in self._emitted:
            return
        self._emitted.add(name)
        event = ProgressEvent(name, (now - self._t0) * 1000)
        self._progress.append(event)
        self._events.append(Progress(name, event.duration))

    def _stop_timer(self, name: TimerName, now: float) -> None:
        t = self._timers.get(name)
        if t is not None and t.end is None:
            self._timers[name] = t.stopped(now)

    def _relay_only(self, servers: tuple[IceServer, ...]) -> bool:
        if self.config.relay_only is not None:
            return self.config.relay_only
        return any(url.lower().startswith(("turn:", "turns:")) for s in servers for url in s.urls)

    def _next_sample_at(self) -> float | None:
        if self.state is not State.COLLECTING_STATS or self._requested >= self._sample_count:
            return None
        return self._stats_t0 + (self._requested + 1) * self._sample_interval

    def _set_reconnecting(self, role: Role, on: bool, now: float) -> None:
        before = bool(self._reconnecting)
        (self._reconnecting.add if on else self._reconnecting.discard)(role)
        if self.state is State.COLLECTING_STATS and before != bool(self._reconnecting):
            self._score(now, QualityInput(reconnecting=bool(self._reconnecting)))

    def _on_sample(self, sample: StatsSample, now: float) -> None:
        prev, self._last_sample = self._last_sample, (now, sample)
        self._facts = self._facts.with_sample()
        if sample.ice_candidates or sample.selected_pair:  # the report keeps the latest
            self._candidates, self._selected_pair = sample.ice_candidates, sample.selected_pair
        m = sampling.measure(sample, now, prev, reconnecting=bool(self._reconnecting))
        self._score(now, m.quality)
        self._samples.append(Sample.measured(
            elapsed=now - self._t0, jitter=m.jitter, rtt=m.rtt, loss=m.loss,
            outgoing_bps=m.outgoing_bps, incoming_bps=m.incoming_bps, level=self._level,
        ))
        self._events.append(SampleRecorded(self._facts.samples_taken, self._sample_count, self._level))

    def _score(self, now: float, quality: QualityInput) -> None:
        self._scorer_inputs.append((now, quality))
        level = self._scorer.update(now, quality)
        if level != self._level:
            self._level = level
            stats = self._scorer.stats(self.config.network_quality_verbosity).to_dict()
            self._events.append(NetworkQualityLevelChanged(level, stats))


def _check_now(now: object) -> None:
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        raise UsageError(f"now must be a finite number of seconds, got {now!r}")
