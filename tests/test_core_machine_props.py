"""Hypothesis: every state × every observation ends in a legal state or a clean failure, and
random observation sequences never make the machine raise."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from rtcprobe.core import (
    PROGRESS_NAMES,
    Completed,
    ConnectionStateChanged,
    DtlsStateChanged,
    Failed,
    IceStateChanged,
    InboundStats,
    MediaAcquired,
    MediaStarted,
    OutboundStats,
    PreflightConfig,
    PreflightMachine,
    Role,
    SampleStats,
    SignalingConnected,
    State,
    StatsObserved,
    StatsSample,
    StepUnobservable,
    StopRequested,
    TrackSubscribed,
    TransportError,
    errors,
)
from rtcprobe.core.observations import CONNECTION_STATES, DTLS_STATES, ICE_STATES
from test_core_machine import STEP_FEEDS, harness_in

roles = st.sampled_from(list(Role))
counters = st.integers(min_value=0, max_value=10**6)
maybe_s = st.none() | st.floats(min_value=0, max_value=5, allow_nan=False)
samples = st.builds(
    StatsSample,
    audio_out=st.none() | st.builds(OutboundStats, packets_sent=counters, bytes_sent=counters, remote_rtt=maybe_s,
                                    remote_jitter=maybe_s, remote_fraction_lost=st.none() | st.floats(0, 1)),
    video_out=st.none() | st.builds(OutboundStats, packets_sent=counters, bytes_sent=counters),
    audio_in=st.none() | st.builds(InboundStats, packets_received=counters, packets_lost=st.integers(-5, 1000),
                                   bytes_received=counters, jitter=maybe_s),
    video_in=st.none() | st.builds(InboundStats, packets_received=counters, packets_lost=counters,
                                   bytes_received=counters, jitter=maybe_s),
    candidate_pair_rtt=maybe_s,
)
observations = st.one_of(
    st.builds(MediaAcquired),
    st.builds(SignalingConnected),
    st.builds(IceStateChanged, roles, st.sampled_from(sorted(ICE_STATES))),
    st.builds(DtlsStateChanged, roles, st.sampled_from(sorted(DTLS_STATES))),
    st.builds(ConnectionStateChanged, roles, st.sampled_from(sorted(CONNECTION_STATES))),
    st.builds(TrackSubscribed, st.sampled_from(["audio", "video"])),
    st.builds(MediaStarted, st.sampled_from(["audio", "video"])),
    st.builds(StepUnobservable, st.sampled_from(["dtlsConnected", "peerConnectionConnected"])),
    st.builds(StatsObserved, samples),
    st.builds(TransportError, st.sampled_from(sorted(errors.ERRORS.values(), key=lambda e: e.code))),
    st.builds(StopRequested),
)

LIVE_STATES = list(STEP_FEEDS)


def check_clean(t: PreflightMachine, events: list[object]) -> None:
    assert t.state in set(State)
    terminal = [e for e in events if isinstance(e, Completed | Failed)]
    assert len(terminal) <= 1
    if t.state is State.FAILED:
        assert len(terminal) == 1 and isinstance(terminal[0], Failed)
        assert t.report is not None and t.report.error is not None and t.report.stats is None
        assert t.report.ice_candidate_stats == ()
        t.report.to_json()  # serializable
    if t.state is State.COMPLETED:
        assert isinstance(terminal[0], Completed)


@settings(max_examples=300, deadline=None)
@given(state=st.sampled_from(LIVE_STATES), obs=observations, dt=st.floats(0, 30))
def test_every_state_times_every_observation(state: State, obs: object, dt: float) -> None:
    h = harness_in(state)
    h.feed(obs, dt)
    h.advance(0.0)
    check_clean(h.test, h.events)


class RandomObservations(RuleBasedStateMachine):
    """A driver that fires every timer when it is due, feeds random observations, and whose clock
    sometimes runs backwards (``self.now`` is the latest time it has reported)."""

    def __init__(self) -> None:
        super().__init__()
        self.t = PreflightMachine(PreflightConfig(duration=2.0))
        self.now = 0.0
        self.t.start(self.now)
        self.events: list[object] = []
        self.backwards_calls = 0

    def drain(self) -> None:
        list(self.t.actions())
        self.events.extend(self.t.events())

    def advance_to(self, target: float) -> None:
        while (deadline := self.t.get_timer()) is not None and deadline <= target:
            self.now = max(self.now, deadline)
            self.t.handle_timer(self.now)
            self.drain()
            self.pending_deadlines_are_in_the_future()  # else this loop would never end
        self.now = target

    @rule(obs=observations, dt=st.floats(0, 3))
    def observe(self, obs: object, dt: float) -> None:
        self.advance_to(self.now + dt)
        self.t.handle(obs, self.now)  # type: ignore[arg-type]
        self.drain()

    @rule(obs=observations, back=st.floats(min_value=1e-9, max_value=5))
    def observe_with_a_clock_that_went_backwards(self, obs: object, back: float) -> None:
        self.backwards_calls += 1
        self.t.handle(obs, self.now - back)  # type: ignore[arg-type]
        self.drain()

    @precondition(lambda self: self.t.get_timer() is not None)
    @rule(late=st.booleans())
    def fire_timer(self, late: bool) -> None:
        deadline = self.t.get_timer()
        assert deadline is not None
        self.advance_to(max(self.now, deadline))
        if late:  # a second call for the same deadline, from a clock that went backwards
            self.backwards_calls += 1
            self.t.handle_timer(self.now - 1.0)
            self.drain()

    @invariant()
    def clean(self) -> None:
        check_clean(self.t, self.events)

    @invariant()
    def progress_is_unique_known_and_ordered(self) -> None:
        names = [e.name for e in self.t.progress_events]
        assert len(names) == len(set(names))
        assert set(names) <= set(PROGRESS_NAMES)
        durations = [e.duration for e in self.t.progress_events]
        assert durations == sorted(durations)

    @invariant()
    def time_never_runs_backwards_inside(self) -> None:
        times = [now for now, _ in self.t.scorer_inputs]
        assert times == sorted(times)
        assert self.t.clock_regressions <= self.backwards_calls

    @invariant()
    def pending_deadlines_are_in_the_future(self) -> None:
        # Every due timer has been fired, so what is left is strictly later than now, and a
        # terminal machine has nothing left at all.
        deadline = self.t.get_timer()
        assert deadline is None or deadline > self.now
        if self.t.state in (State.COMPLETED, State.FAILED):
            assert deadline is None


RandomObservations.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestRandomObservations = RandomObservations.TestCase

# --- The stats step under an odd clock and odd stats ---------------------------------------------

wild = st.floats(allow_nan=True, allow_infinity=True)
maybe_wild = st.none() | wild
odd_samples = st.builds(
    StatsSample,
    audio_out=st.none() | st.builds(OutboundStats, packets_sent=counters, bytes_sent=counters, remote_rtt=maybe_wild,
                                    remote_jitter=maybe_wild, remote_fraction_lost=maybe_wild,
                                    remote_packets_lost=st.none() | counters, available_bps=maybe_wild),
    video_out=st.none() | st.builds(OutboundStats, packets_sent=counters, bytes_sent=counters, remote_rtt=maybe_wild,
                                    remote_jitter=maybe_wild, remote_fraction_lost=maybe_wild,
                                    available_bps=maybe_wild),
    audio_in=st.none() | st.builds(InboundStats, packets_received=counters, packets_lost=st.integers(-10**6, 10**6),
                                   bytes_received=counters, jitter=maybe_wild),
    video_in=st.none() | st.builds(InboundStats, packets_received=counters, packets_lost=counters,
                                   bytes_received=counters, jitter=maybe_wild),
    candidate_pair_rtt=maybe_wild,
    loopback=st.booleans(),
)
# One driver call during the stats step: (what, how far its clock moved since the latest time).
stats_calls = st.lists(
    st.tuples(st.sampled_from(["timer", "disconnect", "reconnect"]), st.floats(-3, 1.5)), min_size=1, max_size=30
)


@settings(max_examples=200, deadline=None)
@given(calls=stats_calls, sample=odd_samples)
def test_a_clock_going_backwards_never_reaches_the_scorer(calls: list[tuple[str, float]], sample: StatsSample) -> None:
    h = harness_in(State.COLLECTING_STATS, PreflightConfig(duration=5.0))
    latest = h.now
    backwards = 0  # machine calls made with a `now` earlier than the latest
    for what, dt in calls:
        now = latest + dt
        latest = max(latest, now)
        if what == "timer":
            backwards += dt < 0
            h.test.handle_timer(now)
            for action in h.test.actions():
                h.actions.append(action)
                if isinstance(action, SampleStats):
                    backwards += dt < 0
                    h.test.handle(StatsObserved(sample), now)
        else:
            backwards += dt < 0
            h.test.handle(IceStateChanged(Role.PUBLISHER, "disconnected" if what == "disconnect" else "completed"), now)
        h.pump()
    times = [now for now, _ in h.test.scorer_inputs]
    assert times == sorted(times)
    assert h.test.clock_regressions <= backwards
    if h.test.report is not None:
        rows = [s.time for s in h.test.report.samples]
        assert rows == sorted(rows)
        h.test.report.to_json()


@settings(max_examples=200, deadline=None)
@given(answers=st.lists(odd_samples, min_size=3, max_size=3), dts=st.lists(st.floats(1e-300, 0.5), min_size=3,
                                                                          max_size=3))
def test_odd_stats_values_never_raise_and_complete_the_test(answers: list[StatsSample], dts: list[float]) -> None:
    h = harness_in(State.COLLECTING_STATS, PreflightConfig(duration=3.0))
    for sample, dt in zip(answers, dts, strict=True):
        deadline = h.test.get_timer()
        assert deadline is not None
        h.now = deadline
        h.test.handle_timer(h.now)
        h.pump()
        h.feed(StatsObserved(sample), dt)  # answered within the interval, possibly almost at once
    assert h.test.state is State.COMPLETED
    report = h.test.report
    assert report is not None and len(report.samples) == 3
    for row in report.samples:
        for value in (row.jitter, row.rtt, row.packet_loss, row.outgoing_bitrate, row.incoming_bitrate):
            assert value is None or value >= 0  # never NaN, never negative (huge may overflow to inf)
    report.to_json()
