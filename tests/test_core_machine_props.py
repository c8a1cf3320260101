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
    def __init__(self) -> None:
        super().__init__()
        self.t = PreflightMachine(PreflightConfig(duration=2.0))
        self.now = 0.0
        self.t.start(self.now)
        self.events: list[object] = []
        self.last_progress = -1.0

    def drain(self) -> None:
        list(self.t.actions())
        self.events.extend(self.t.events())

    @rule(obs=observations, dt=st.floats(0, 3))
    def observe(self, obs: object, dt: float) -> None:
        self.now += dt
        self.t.handle(obs, self.now)  # type: ignore[arg-type]
        self.drain()

    @precondition(lambda self: self.t.get_timer() is not None)
    @rule()
    def fire_timer(self) -> None:
        deadline = self.t.get_timer()
        assert deadline is not None
        self.now = max(self.now, deadline)
        self.t.handle_timer(self.now)
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
    def timer_never_in_the_past_after_handling(self) -> None:
        deadline = self.t.get_timer()
        # A deadline may equal `now` only if it has just become due; handle_timer clears it.
        assert deadline is None or deadline >= self.now or self.t.state not in (State.COMPLETED, State.FAILED)


RandomObservations.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestRandomObservations = RandomObservations.TestCase
