"""The preflight state machine driven step by step with explicit ``now``."""

from __future__ import annotations

import math

import pytest
from core_harness import EPOCH_MS, T0, CounterSource, Harness, answer_with, to_stats_phase
from rtcprobe.core import (
    AcquireMedia,
    Completed,
    ConfigError,
    ConnectionStateChanged,
    ConnectSignaling,
    DtlsStateChanged,
    Failed,
    IceServer,
    IceStateChanged,
    MediaAcquired,
    MediaDemand,
    MediaStarted,
    NetworkQualityLevelChanged,
    OpenPeerConnections,
    PreflightConfig,
    PreflightMachine,
    Role,
    SampleRecorded,
    SampleStats,
    SignalingConnected,
    State,
    StatsObserved,
    StepUnobservable,
    StopRequested,
    TearDown,
    TrackSubscribed,
    TransportError,
    UsageError,
    errors,
)

SEVEN = ["mediaAcquired", "connected", "iceConnected", "dtlsConnected", "peerConnectionConnected",
         "mediaSubscribed", "mediaStarted"]


def run_to_completion(config: PreflightConfig | None = None, source: CounterSource | None = None) -> Harness:
    h = to_stats_phase(config)
    src = source or CounterSource()
    h.advance(h.test.config.duration + 0.5, on_sample=answer_with(h, src))
    return h


def test_normal_run_event_order_and_exact_durations() -> None:
    h = run_to_completion()
    assert h.progress() == SEVEN
    durations = {e.name: e.duration for e in h.test.progress_events}
    # Durations are ms since start, from the `now` values the harness fed.
    assert durations["mediaAcquired"] == pytest.approx(10.0)
    assert durations["connected"] == pytest.approx(60.0)
    assert durations["iceConnected"] == pytest.approx(100.0)
    assert durations["dtlsConnected"] == pytest.approx(121.0)
    assert durations["peerConnectionConnected"] == pytest.approx(122.0)
    # mediaSubscribed is reported when the subscribe step is reached (tracks came early).
    assert durations["mediaSubscribed"] == pytest.approx(122.0)
    assert durations["mediaStarted"] == pytest.approx(182.0)
    assert isinstance(h.events[-1], Completed)
    assert h.test.state is State.COMPLETED
    assert [type(a) for a in h.actions[:3]] == [AcquireMedia, ConnectSignaling, OpenPeerConnections]
    assert isinstance(h.actions[-1], TearDown)
    assert h.test.get_timer() is None


def test_actions_carry_config() -> None:
    cfg = PreflightConfig(duration=2, region="de1", relay_only=True)
    h = Harness(cfg).start()
    h.feed(MediaAcquired(), 0.01)
    servers = (IceServer(("turn:192.0.2.1:3478?transport=udp",), "1:u", "pw"),)
    h.feed(SignalingConnected(servers), 0.01)
    assert h.actions[1] == ConnectSignaling("de1")
    assert h.actions[2] == OpenPeerConnections(servers, relay_only=True)


def test_step_deadline_is_exact_and_rearmed_per_step() -> None:
    h = Harness(PreflightConfig(duration=3.0)).start()
    assert h.test.get_timer() == T0 + 13.0
    h.feed(MediaAcquired(), 2.0)
    assert h.test.get_timer() == T0 + 2.0 + 13.0


def test_stats_cadence_and_report_values() -> None:
    h = to_stats_phase(PreflightConfig(duration=3.0))
    stats_t0 = h.now
    assert h.test.get_timer() == pytest.approx(stats_t0 + 1.0)
    src = CounterSource(loss_every=50, rtt=0.04, jitter=0.002)  # 2 % video loss
    samples: list[SampleStats] = []

    def on_sample(a: SampleStats) -> None:
        samples.append(a)
        answer_with(h, src)(a)

    h.advance(3.5, on_sample=on_sample)
    assert [(s.index, s.total) for s in samples] == [(1, 3), (2, 3), (3, 3)]
    report = h.test.report
    assert report is not None and report.error is None
    assert report.stats is not None
    assert report.stats.rtt is not None and report.stats.rtt.average == pytest.approx(40.0)  # ms
    assert report.stats.jitter is not None and report.stats.jitter.max == pytest.approx(0.002)  # s, audio
    # loss: Δlost/Δ(lost+received) over audio+video; first sample skipped → 2 values.
    assert report.stats.packet_loss is not None
    assert report.stats.packet_loss.average == pytest.approx(100 * 2 / 150)
    assert len(report.samples) == 3 and report.samples[0].packet_loss is None
    assert report.samples[1].outgoing_bitrate == pytest.approx(8 * (50 * 120 + 100 * 1000) / 1000)
    assert [type(e) for e in h.events].count(SampleRecorded) == 3
    assert report.test_timing.start == EPOCH_MS
    assert report.test_timing.duration == pytest.approx((h.test.progress_events[-1].duration) + 3000.0)


def test_sample_interval_is_min_1s_duration() -> None:
    h = to_stats_phase(PreflightConfig(duration=0.5))
    t = h.now
    assert h.test.get_timer() == pytest.approx(t + 0.5)
    h.advance(0.6, on_sample=answer_with(h, CounterSource()))
    assert isinstance(h.events[-1], Completed)


def test_network_timing_keys() -> None:
    h = run_to_completion()
    report = h.test.report
    assert report is not None
    assert set(report.network_timing) == {"connect", "media", "dtls", "ice", "peerConnection"}
    for t in report.network_timing.values():
        assert t.duration is not None and t.duration >= 0
    assert report.network_timing["connect"].duration == pytest.approx(50.0)
    assert report.network_timing["ice"].duration == pytest.approx(30.0)  # checking → completed


# --- Timeouts -----------------------------------------------------------------------------------

STEP_FEEDS = {
    State.ACQUIRING_MEDIA: [],
    State.CONNECTING_SIGNALING: [MediaAcquired()],
    State.CONNECTING_MEDIA: [MediaAcquired(), SignalingConnected(())],
    State.SUBSCRIBING: [MediaAcquired(), SignalingConnected(()), IceStateChanged(Role.PUBLISHER, "completed"),
                        DtlsStateChanged(Role.PUBLISHER, "connected"),
                        ConnectionStateChanged(Role.PUBLISHER, "connected")],
}
STEP_FEEDS[State.STARTING_MEDIA] = [*STEP_FEEDS[State.SUBSCRIBING], TrackSubscribed("audio"), TrackSubscribed("video")]
STEP_FEEDS[State.COLLECTING_STATS] = [*STEP_FEEDS[State.STARTING_MEDIA], MediaStarted("video")]


def harness_in(state: State, config: PreflightConfig | None = None) -> Harness:
    h = Harness(config or PreflightConfig(duration=3.0)).start()
    for obs in STEP_FEEDS[state]:
        h.feed(obs, 0.01)
    assert h.test.state is state
    return h


TIMEOUT_CODES = {
    State.ACQUIRING_MEDIA: 53405,
    State.CONNECTING_SIGNALING: 53002,
    State.CONNECTING_MEDIA: 53405,
    State.SUBSCRIBING: 53405,
    State.STARTING_MEDIA: 53405,
    State.COLLECTING_STATS: 53405,
}


@pytest.mark.parametrize("state", list(TIMEOUT_CODES))
def test_each_step_times_out_with_its_code_at_exactly_duration_plus_10s(state: State) -> None:
    h = harness_in(state)
    entered = h.now
    # Stats requests are never answered here, so the stats step times out too.
    h.advance(13.0 - 1e-6)
    assert h.test.state is state
    h.advance(1e-6)
    assert h.test.state is State.FAILED
    failed = h.events[-1]
    assert isinstance(failed, Failed) and failed.error.code == TIMEOUT_CODES[state]
    assert "timed out after 13 s" in failed.error.message
    assert h.test.report is not None and h.test.report.test_timing.duration == pytest.approx(
        (h.now - T0) * 1000)
    assert h.now - entered == pytest.approx(13.0)


# --- Stop and transport errors at every step ----------------------------------------------------


@pytest.mark.parametrize("state", list(TIMEOUT_CODES))
def test_stop_at_every_step_gives_failed_with_partial_report(state: State) -> None:
    h = harness_in(state)
    if state is State.COLLECTING_STATS:  # in the middle of the stats step, after one sample
        h.advance(1.5, on_sample=answer_with(h, CounterSource()))
    before = [e.name for e in h.test.progress_events]
    h.test.stop(h.now)
    h.pump()
    failed = h.events[-1]
    assert isinstance(failed, Failed) and failed.error == errors.STOPPED
    d = failed.report.to_dict()
    assert d["stats"] is None
    assert d["iceCandidateStats"] == []
    assert d["selectedIceCandidatePairStats"] is None
    assert [e["name"] for e in d["progressEvents"]] == before
    assert d["error"]["code"] == 99000
    assert d["testTiming"]["end"] == pytest.approx(EPOCH_MS + (h.now - T0) * 1000)
    assert isinstance(h.actions[-1], TearDown)
    # Terminal: nothing more happens.
    n = len(h.events)
    h.test.stop(h.now + 1)
    h.test.handle_timer(h.now + 100)
    h.pump()
    assert len(h.events) == n and h.test.get_timer() is None


@pytest.mark.parametrize("state", list(TIMEOUT_CODES))
@pytest.mark.parametrize("code", [53000, 53001, 20101, 20104])
def test_transport_error_at_every_step(state: State, code: int) -> None:
    h = harness_in(state)
    h.feed(TransportError(errors.error_for_code(code)), 0.01)
    failed = h.events[-1]
    assert isinstance(failed, Failed) and failed.error.code == code
    assert failed.report.stats is None


@pytest.mark.parametrize(
    ("obs", "code"),
    [
        (IceStateChanged(Role.PUBLISHER, "failed"), 53405),
        (IceStateChanged(Role.SUBSCRIBER, "failed"), 53405),
        (ConnectionStateChanged(Role.PUBLISHER, "failed"), 53405),
        (DtlsStateChanged(Role.PUBLISHER, "failed"), 53407),
        (DtlsStateChanged(Role.SUBSCRIBER, "failed"), 53407),
    ],
)
def test_media_failures_map_to_codes(obs: object, code: int) -> None:
    h = harness_in(State.CONNECTING_MEDIA)
    h.feed(obs, 0.01)
    assert h.test.state is State.FAILED and h.test.error is not None and h.test.error.code == code


def test_unobservable_steps_are_skipped_never_invented() -> None:
    h = harness_in(State.CONNECTING_MEDIA)
    h.feed(StepUnobservable("dtlsConnected"))
    h.feed(StepUnobservable("peerConnectionConnected"))
    h.feed(IceStateChanged(Role.PUBLISHER, "completed"), 0.02)
    assert h.test.state is State.SUBSCRIBING
    assert "dtlsConnected" not in h.progress() and "peerConnectionConnected" not in h.progress()


def test_audio_only_starts_on_audio() -> None:
    cfg = PreflightConfig(duration=1.0, media=MediaDemand(audio=True, video=None))
    h = harness_in(State.SUBSCRIBING, cfg)
    h.feed(TrackSubscribed("audio"))
    assert h.test.state is State.STARTING_MEDIA
    h.feed(MediaStarted("audio"), 0.01)
    assert h.test.state is State.COLLECTING_STATS


def test_reconnecting_during_stats_drops_level_to_zero_and_recovers() -> None:
    h = to_stats_phase()
    src = CounterSource()
    h.advance(1.0, on_sample=answer_with(h, src))
    assert h.test.network_quality_level == 5
    h.feed(IceStateChanged(Role.PUBLISHER, "disconnected"), 0.2)
    assert h.test.network_quality_level == 0
    levels = [e for e in h.events if isinstance(e, NetworkQualityLevelChanged)]
    assert levels[-1].level == 0
    h.feed(IceStateChanged(Role.PUBLISHER, "completed"), 0.2)
    h.advance(2.0, on_sample=answer_with(h, src))
    assert h.test.state is State.COMPLETED
    assert min(s.level for s in h.test.report.samples if s.level is not None) >= 0  # type: ignore[union-attr]


def test_unsolicited_stats_are_ignored() -> None:
    h = to_stats_phase()
    h.feed(StatsObserved(CounterSource().sample()))
    assert h.test.report is None and h.test.ignored == 1
    assert h.test.state is State.COLLECTING_STATS


def test_observations_before_start_and_out_of_order_are_ignored() -> None:
    t = PreflightMachine()
    t.handle(SignalingConnected(()), 1.0)
    t.handle(StopRequested(), 1.0)
    assert t.state is State.NEW and t.ignored == 2
    h = Harness().start()
    h.feed(MediaStarted("video"))  # far too early
    h.feed(SignalingConnected(()))  # before media acquired
    assert h.test.state is State.ACQUIRING_MEDIA and h.test.ignored == 2


def test_misuse_raises() -> None:
    t = PreflightMachine()
    t.start(0.0)
    with pytest.raises(UsageError):
        t.start(1.0)


def test_completed_report_has_quality_and_bitrate() -> None:
    h = run_to_completion()
    d = h.test.report.to_dict()  # type: ignore[union-attr]
    assert d["networkQuality"]["level"] == h.test.network_quality_level == 5
    assert set(d["networkQuality"]["stats"]) >= {"level", "audio", "video"}
    assert d["bitrate"]["outgoing"]["average"] > 0
    assert all(math.isfinite(s["time"]) for s in d["samples"])


@pytest.mark.parametrize(
    ("relay_only", "urls", "expected"),
    [
        (None, ("turn:192.0.2.1:3478?transport=udp",), True),
        (None, ("turns:192.0.2.1:5349",), True),
        (None, ("stun:192.0.2.1:3478",), False),
        (None, (), False),
        (False, ("turn:192.0.2.1:3478",), False),
        (True, (), True),
    ],
)
def test_relay_only_is_decided_by_the_core(relay_only: bool | None, urls: tuple[str, ...], expected: bool) -> None:
    h = Harness(PreflightConfig(duration=1, relay_only=relay_only)).start()
    h.feed(MediaAcquired(), 0.01)
    servers = (IceServer(urls, "u", "p"),) if urls else ()
    h.feed(SignalingConnected(servers), 0.01)
    assert h.actions[2] == OpenPeerConnections(servers, relay_only=expected)


def test_packet_loss_is_the_subscribers_over_the_whole_path() -> None:
    # 100 video packets/s sent; 10 lost on the uplink and 5 on the downlink are all sequence
    # gaps at the subscriber (both ends forward RTP as it came): 15 %. The publisher's receiver
    # reports (which say the same) are not folded in a second time.
    from rtcprobe.core import InboundStats, OutboundStats, StatsSample

    class Source(CounterSource):
        def sample(self) -> StatsSample:
            self.n += 1
            n = self.n
            return StatsSample(
                video_out=OutboundStats(packets_sent=100 * n, bytes_sent=100_000 * n, remote_rtt=0.04,
                                        remote_packets_lost=15 * n),
                video_in=InboundStats(packets_received=85 * n, packets_lost=15 * n, bytes_received=90_000 * n,
                                      jitter=0.002),
            )

    h = to_stats_phase(PreflightConfig(duration=3.0, media=MediaDemand(audio=False)))
    h.advance(3.5, on_sample=answer_with(h, Source()))
    report = h.test.report
    assert report is not None and report.stats is not None and report.stats.packet_loss is not None
    assert report.stats.packet_loss.average == pytest.approx(15.0)


# --- The driver's clock ---------------------------------------------------------------------------


def test_a_now_earlier_than_one_seen_is_taken_as_the_latest_and_counted() -> None:
    h = Harness().start()
    h.feed(MediaAcquired(), 1.0)
    h.test.handle(SignalingConnected(()), h.now - 0.5)  # the driver's clock went back 0.5 s
    h.pump()
    durations = {e.name: e.duration for e in h.test.progress_events}
    assert durations["connected"] == durations["mediaAcquired"] == pytest.approx(1000.0)
    assert h.test.clock_regressions == 1
    assert h.test.get_timer() == pytest.approx(h.now + 13.0)  # the step was entered at the latest time
    # Ignored observations and calls before start or after the end change nothing, not even the count.
    h.test.handle(MediaAcquired(), h.now - 1.0)
    assert h.test.ignored == 1 and h.test.clock_regressions == 1


def test_a_clock_going_backwards_in_the_stats_step_is_scored_at_the_latest_time() -> None:
    h = to_stats_phase()
    src = CounterSource()
    h.advance(1.0, on_sample=answer_with(h, src))
    h.test.handle(IceStateChanged(Role.PUBLISHER, "disconnected"), h.now - 0.25)
    h.pump()
    assert h.test.network_quality_level == 0
    times = [now for now, _ in h.test.scorer_inputs]
    assert times == [h.now, h.now] and h.test.clock_regressions == 1


@pytest.mark.parametrize("now", [math.nan, math.inf, -math.inf, "1.0", None, True])
def test_a_now_that_is_not_a_finite_number_is_misuse(now: object) -> None:
    t = PreflightMachine()
    with pytest.raises(UsageError):
        t.start(now)  # type: ignore[arg-type]
    t.start(0.0)
    with pytest.raises(UsageError):
        t.handle(MediaAcquired(), now)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        t.handle_timer(now)  # type: ignore[arg-type]
    assert t.state is State.ACQUIRING_MEDIA and t.ignored == 0


# --- Observations: typed states, checked at construction -----------------------------------------


@pytest.mark.parametrize(
    ("make", "bad"),
    [
        (lambda v: IceStateChanged(Role.PUBLISHER, v), "connecting"),  # a DTLS state, not an ICE one
        (lambda v: DtlsStateChanged(Role.PUBLISHER, v), "checking"),
        (lambda v: ConnectionStateChanged(Role.PUBLISHER, v), "completed"),
        (lambda v: TrackSubscribed(v), "screen"),
        (lambda v: MediaStarted(v), "Video"),
        (lambda v: StepUnobservable(v), "iceConnected"),
        (lambda v: IceStateChanged(v, "new"), "publisher"),  # a role is a Role, not its value
    ],
)
def test_an_unknown_state_raises_config_error_at_construction(make: object, bad: str) -> None:
    with pytest.raises(ConfigError):
        make(bad)  # type: ignore[operator]
    with pytest.raises(ValueError):  # ConfigError is a ValueError, as attrs' own check raised
        make(bad)  # type: ignore[operator]


def test_every_state_aiortc_reports_is_accepted() -> None:
    # aiortc's RTCIceTransport / RTCDtlsTransport / RTCPeerConnection states, as plain str.
    aiortc_ice = ["new", "checking", "completed", "failed", "closed"]
    aiortc_dtls = ["new", "connecting", "connected", "closed", "failed"]
    aiortc_connection = ["new", "connecting", "connected", "closed", "failed"]
    for role in Role:
        for s in aiortc_ice:
            assert IceStateChanged(role, s).state == s  # type: ignore[arg-type]
        for s in aiortc_dtls:
            assert DtlsStateChanged(role, s).state == s  # type: ignore[arg-type]
        for s in aiortc_connection:
            assert ConnectionStateChanged(role, s).state == s  # type: ignore[arg-type]
