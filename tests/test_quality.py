"""Tests of the network quality scorer (core/quality.py).

Calibration cases, reference values (ITU-T G.107, Twilio, LiveKit, Jitsi), one pin per constant,
hypothesis properties (bounded, monotone in metrics and in demand, idle -> 5, reconnecting -> 0,
smoothing invariants) and the hysteresis timeline with ``now`` stepped explicitly.
"""

from __future__ import annotations

import ast
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rtcprobe.core.config import MediaDemand, VideoSpec
from rtcprobe.core.errors import ConfigError
from rtcprobe.core.quality import (
    DEFAULT_CONFIG,
    DIRECTIONS,
    LEVEL_BROKEN,
    LEVEL_MAX,
    LEVEL_MIN,
    MEDIA,
    VERBOSITY_DETAILED,
    VERBOSITY_MINIMAL,
    VERBOSITY_MODERATE,
    VERBOSITY_NONE,
    NetworkQualityScorer,
    NetworkQualityStats,
    QualityDemand,
    QualityInput,
    ScorerConfig,
    SideMetrics,
    bandwidth_level,
    bandwidth_score,
    build_stats,
    emodel_mos,
    emodel_r,
    fraction_lost_level,
    latency_level,
    latency_score,
    level_for_score,
    loss_score,
    mos_from_r,
    normalize_verbosity,
    raw_level,
    raw_level_or_none,
    twilio_voice_mos,
    twilio_voice_r,
    video_demand_bps,
)

SIDES = [(m, d) for m in MEDIA for d in DIRECTIONS]

AUDIO = QualityDemand(audio_send=True, audio_recv=True)
AUDIO_SEND = QualityDemand(audio_send=True)
CLEAN_AUDIO = SideMetrics(actual_bps=32_000.0, rtt=0.020, jitter=0.005, fraction_lost=0.0)


def both(metrics: SideMetrics | None, media: str = "audio", **extra: Any) -> QualityInput:
    """A sample with the same metrics on both directions of ``media``."""
    return QualityInput(**{f"{media}_send": metrics, f"{media}_recv": metrics}, **extra)


def audio_send(**kwargs: Any) -> QualityInput:
    return QualityInput(audio_send=SideMetrics(**kwargs))


def video(w: int, h: int, fps: float) -> QualityDemand:
    spec = VideoSpec(w, h, fps)
    return QualityDemand(video_send=spec, video_recv=spec)


# ---------------------------------------------------------------------------------------------
# Calibration targets
# ---------------------------------------------------------------------------------------------


def test_calibration_audio_clean_is_5() -> None:
    sample = both(SideMetrics(rtt=0.020, jitter=0.005, fraction_lost=0.0))
    assert raw_level(AUDIO, sample) == 5
    assert NetworkQualityScorer(AUDIO).update(0.0, sample) == 5


def test_calibration_audio_bad_is_at_most_2() -> None:
    sample = both(SideMetrics(rtt=0.400, jitter=0.030, fraction_lost=0.05))
    assert raw_level(AUDIO, sample) <= 2
    assert raw_level(AUDIO, sample) == 1  # latency R 59.8 -> 1; loss 100 - 4*5 = 80 -> 4
    assert NetworkQualityScorer(AUDIO).update(0.0, sample) <= 2


def test_calibration_same_link_hd_bad_low_res_good() -> None:
    link = SideMetrics(actual_bps=300_000.0, available_bps=300_000.0, rtt=0.030, jitter=0.005, fraction_lost=0.0)
    sample = both(link, "video")
    hd = raw_level(video(1280, 720, 30), sample)
    low = raw_level(video(320, 180, 15), sample)
    assert hd <= 2
    assert low >= 4
    assert (hd, low) == (2, 5)
    # The same holds when only one of the two bitrates is known.
    only_actual = both(SideMetrics(actual_bps=300_000.0), "video")
    only_available = both(SideMetrics(available_bps=300_000.0), "video")
    for s in (only_actual, only_available):
        assert raw_level(video(1280, 720, 30), s) <= 2
        assert raw_level(video(320, 180, 15), s) >= 4


def test_calibration_clean_network_actual_near_demand_is_5() -> None:
    demand = QualityDemand.symmetric(MediaDemand())  # audio + 640x480@30 both ways
    a = SideMetrics(actual_bps=0.95 * 32_000, available_bps=2e6, rtt=0.02, jitter=0.003, fraction_lost=0.0)
    v = SideMetrics(actual_bps=0.95 * 500_000, available_bps=2e6, rtt=0.02, jitter=0.003, fraction_lost=0.0)
    sample = QualityInput(audio_send=a, audio_recv=a, video_send=v, video_recv=v)
    assert raw_level(demand, sample) == 5
    scorer = NetworkQualityScorer(demand)
    assert [scorer.update(float(t), sample) for t in range(10)] == [5] * 10


def test_calibration_total_loss_is_1() -> None:
    for media in MEDIA:
        demand = AUDIO if media == "audio" else video(640, 480, 30)
        sample = both(SideMetrics(rtt=0.02, jitter=0.001, fraction_lost=1.0), media)
        assert raw_level(demand, sample) == 1


@pytest.mark.parametrize(
    ("media", "loss_pct", "level"),
    [
        ("video", 1.9, 5),  # LiveKit EXCELLENT (< 2 %)
        ("video", 3.0, 4),
        ("video", 5.0, 3),
        ("video", 7.0, 2),  # LiveKit POOR (< 8 %)
        ("video", 9.0, 1),  # the diagnostics app's "poor" (8 %)
        ("audio", 2.0, 5),  # Jitsi: <= 2 % -> 100
        ("audio", 4.0, 4),  # Jitsi: <= 4 % -> 70
        ("audio", 9.0, 2),  # Jitsi: <= 12 % -> 10 (of 100)
        ("audio", 12.0, 1),  # Jitsi: 10, and 0 beyond 12 %
    ],
)
def test_calibration_loss(media: str, loss_pct: float, level: int) -> None:
    demand = AUDIO if media == "audio" else video(640, 480, 30)
    metrics = SideMetrics(rtt=0.02, jitter=0.001, fraction_lost=loss_pct / 100)
    assert fraction_lost_level(metrics, media) == level  # type: ignore[arg-type]
    assert raw_level(demand, both(metrics, media)) == level
    assert NetworkQualityScorer(demand).update(0.0, both(metrics, media)) == level


def test_calibration_lossy_wifi_one_bad_sample_does_not_pin_the_test() -> None:
    """~2 % video loss with one 4.3 % sample: the level dips and is back at 5 within the 10 s."""
    demand = video(640, 480, 30)
    losses = [0.015, 0.021, 0.043, 0.019, 0.018, 0.020, 0.017, 0.019, 0.016, 0.018]
    scorer = NetworkQualityScorer(demand)
    levels = [scorer.update(float(t), both(SideMetrics(fraction_lost=x), "video")) for t, x in enumerate(losses)]
    assert levels == [5, 4, 3, 3, 3, 4, 4, 5, 5, 5]


# ---------------------------------------------------------------------------------------------
# Reference formulas (docs/references.md#quality-scoring)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rtt", "jitter", "loss", "mos", "r"),
    [
        (20, 5, 0, 4.42, 94.768 - 40 / 40),
        (200, 30, 3, 3.70, 94.768 - (270 - 120) / 10 - 2.5 * 3),
        (400, 30, 5, 2.43, 94.768 - (470 - 120) / 10 - 2.5 * 5),
    ],
)
def test_twilio_voice_reference_values(rtt: float, jitter: float, loss: float, mos: float, r: float) -> None:
    assert twilio_voice_mos(rtt, jitter, loss) == pytest.approx(mos, abs=0.005)
    assert twilio_voice_r(rtt, jitter, loss) == pytest.approx(r, abs=1e-9)


def test_twilio_voice_knee_and_limits() -> None:
    # Knee at EL 160 ms: EL 150 is on the shallow branch, EL 165 on the steep one.
    assert twilio_voice_r(140, 0, 0) == pytest.approx(94.768 - 150 / 40)
    assert twilio_voice_r(155, 0, 0) == pytest.approx(94.768 - (165 - 120) / 10)
    # The branches meet at the knee.
    assert twilio_voice_r(150, 0, 0) == pytest.approx(94.768 - 4)
    # EL >= 1000 ms: R is 0, floored at 6.52 with no loss.
    assert twilio_voice_r(985, 0, 0) == pytest.approx(94.768 - 87.5)
    assert twilio_voice_r(990, 0, 0) == 6.52
    # The floor under loss, and 0 once loss exceeds R/2.5.
    assert twilio_voice_r(980, 0, 0.8) == 6.52
    assert twilio_voice_r(980, 0, 0.4) == pytest.approx(94.768 - 87.0 - 1.0)
    assert twilio_voice_r(20, 5, 50) == 0.0
    assert twilio_voice_mos(20, 5, 50) == 1.0


@settings(deadline=None)  # timing varies on a loaded machine; never a wall-clock limit
@given(
    st.floats(0, 3000),
    st.floats(0, 500),
    st.floats(0, 100),
    st.floats(0, 500),
    st.sampled_from(["rtt", "jitter", "loss"]),
)
def test_twilio_voice_mos_bounded_and_never_rises(rtt: float, jitter: float, loss: float, d: float, which: str) -> None:
    mos = twilio_voice_mos(rtt, jitter, loss)
    assert 1.0 <= mos <= 4.5
    worse = {"rtt": (rtt + d, jitter, loss), "jitter": (rtt, jitter + d, loss), "loss": (rtt, jitter, loss + d)}
    assert twilio_voice_mos(*worse[which]) <= mos


@pytest.mark.parametrize(("r", "mos"), [(93.2, 4.41), (80, 4.02), (70, 3.60), (60, 3.10), (50, 2.58)])
def test_mos_from_r_reference_values(r: float, mos: float) -> None:
    assert mos_from_r(r) == pytest.approx(mos, abs=0.005)


def test_mos_from_r_clamped() -> None:
    assert mos_from_r(-5) == 1.0
    assert mos_from_r(3) == 1.0  # the cubic dips below 1 there
    assert mos_from_r(100) == 4.5
    assert mos_from_r(120) == 4.5


def test_emodel() -> None:
    assert emodel_r(0) == pytest.approx(93.2)
    assert emodel_mos(0) == pytest.approx(4.41, abs=0.005)
    assert emodel_r(100) == pytest.approx(93.2 - 2.4)
    assert emodel_r(277.3) == pytest.approx(93.2 - 0.024 * 277.3 - 0.11 * 100)
    # Ie_eff = 0 + 95 * 2 / (2 + 25.1) with the G.711+PLC default Bpl.
    assert emodel_r(0, 2.0) == pytest.approx(93.2 - 95 * 2 / 27.1)
    assert emodel_r(0, 2.0, ie=10, bpl=10, burst_r=2) == pytest.approx(93.2 - 10 - 85 * 2 / 11)


# ---------------------------------------------------------------------------------------------
# One pin per constant
# ---------------------------------------------------------------------------------------------


def test_default_config_values() -> None:
    c = ScorerConfig()
    assert c == DEFAULT_CONFIG
    assert c.level_thresholds == (90.0, 80.0, 70.0, 60.0)
    assert c.bandwidth_log_slope == 20.0
    assert c.audio_loss_weight == 4.0
    assert c.video_loss_weight == 5.0
    assert c.audio_demand_bps == 32_000.0
    assert c.video_bitrate_table == (
        (129_600, 200_000.0),
        (518_400, 500_000.0),
        (921_600, 1_500_000.0),
        (2_073_600, 3_000_000.0),
        (8_294_400, 6_000_000.0),
    )
    assert c.video_reference_fps == 30.0
    assert c.latency_window == 5.0
    assert c.rise_interval == 2.0
    assert (LEVEL_MAX, LEVEL_MIN, LEVEL_BROKEN) == (5, 1, 0)


@pytest.mark.parametrize(
    ("score", "level"),
    [(100, 5), (90, 5), (89.99, 4), (80, 4), (79.99, 3), (70, 3), (69.99, 2), (60, 2), (59.99, 1), (-math.inf, 1)],
)
def test_level_thresholds(score: float, level: int) -> None:
    assert level_for_score(score) == level


def test_bandwidth_log_slope() -> None:
    assert bandwidth_score(250.0, 500.0) == pytest.approx(100 - 20 * math.log(2))
    assert bandwidth_score(600.0, 500.0) == 100.0
    assert bandwidth_score(0.0, 500.0) == -math.inf
    # The level-5 edge is e^-0.5 = 60.65 % of the demand.
    assert bandwidth_level(SideMetrics(actual_bps=0.62 * 1000), 1000) == 5
    assert bandwidth_level(SideMetrics(actual_bps=0.60 * 1000), 1000) == 4
    assert bandwidth_level(SideMetrics(actual_bps=0.0), 1000) == 1
    # available and actual: the worse counts.
    assert bandwidth_level(SideMetrics(actual_bps=1000, available_bps=0.3 * 1000), 1000) == 3
    assert bandwidth_level(SideMetrics(actual_bps=0.3 * 1000, available_bps=1e9), 1000) == 3
    assert bandwidth_level(SideMetrics(), 1000) is None


def test_loss_weights() -> None:
    assert loss_score(0.05, "audio") == pytest.approx(80.0)  # 100 - 4 * 5
    assert loss_score(0.05, "video") == pytest.approx(75.0)  # 100 - 5 * 5
    assert loss_score(0.0, "video") == 100.0
    assert fraction_lost_level(SideMetrics(), "video") is None
    # The documented edges (inclusive): audio 2.5 / 5 / 7.5 / 10 %, video 2 / 4 / 6 / 8 %.
    for media, edges in (("audio", (2.5, 5.0, 7.5, 10.0)), ("video", (2.0, 4.0, 6.0, 8.0))):
        for level, edge in zip((5, 4, 3, 2), edges, strict=True):
            below = SideMetrics(fraction_lost=(edge - 0.01) / 100)
            above = SideMetrics(fraction_lost=(edge + 0.01) / 100)
            assert fraction_lost_level(below, media) == level, (media, edge)  # type: ignore[arg-type]
            assert fraction_lost_level(above, media) == level - 1, (media, edge)  # type: ignore[arg-type]


def test_latency_component() -> None:
    assert latency_score(0.020, 0.005) == pytest.approx(94.768 - 1.0)
    assert latency_score(None, 0.005) == pytest.approx(94.768 - 20 / 40)  # missing rtt counts as 0
    assert latency_score(0.020, None) == pytest.approx(94.768 - 30 / 40)
    assert latency_score(None, None) is None
    # rtt 100 ms -> 5, 150 -> 4, 250 -> 3, 350 -> 2, 450 -> 1 (jitter 5 ms).
    for rtt, level in [(0.1, 5), (0.15, 4), (0.25, 3), (0.35, 2), (0.45, 1)]:
        assert latency_level(SideMetrics(rtt=rtt, jitter=0.005)) == level
    # The documented edges in effective latency: 168 / 268 / 368 / 468 ms (rtt + 10 ms here).
    for el_ms, level in [(167, 5), (169, 4), (267, 4), (269, 3), (367, 3), (369, 2), (467, 2), (469, 1)]:
        assert latency_level(SideMetrics(rtt=(el_ms - 10) / 1000, jitter=0.0)) == level


def test_audio_demand() -> None:
    assert AUDIO.demanded_bps("audio", "send") == 32_000.0
    assert AUDIO.demanded_bps("audio", "recv") == 32_000.0
    assert AUDIO.demanded_bps("video", "send") == 0.0
    assert QualityDemand(audio_recv=True).demanded_bps("audio", "send") == 0.0
    # Bandwidth vs the audio demand: 20 kbit/s is 62.5 % of 32 (level 5), 19 kbit/s 59 % (level 4).
    assert raw_level(AUDIO_SEND, audio_send(actual_bps=20_000.0)) == 5
    assert raw_level(AUDIO_SEND, audio_send(actual_bps=19_000.0)) == 4


@pytest.mark.parametrize(
    ("w", "h", "bps"),
    [
        (320, 180, 200_000),
        (480, 270, 200_000),
        (481, 270, 500_000),
        (640, 480, 500_000),
        (960, 540, 500_000),
        (961, 540, 1_500_000),
        (1280, 720, 1_500_000),
        (1281, 720, 3_000_000),
        (1920, 1080, 3_000_000),
        (1921, 1080, 6_000_000),
        (3840, 2160, 6_000_000),
        (7680, 4320, 6_000_000),  # beyond the last row: its bitrate
    ],
)
def test_video_bitrate_table(w: int, h: int, bps: float) -> None:
    assert video_demand_bps(VideoSpec(w, h, 30)) == pytest.approx(bps)
    assert video(w, h, 30).demanded_bps("video", "send") == pytest.approx(bps)


def test_video_reference_fps() -> None:
    assert video_demand_bps(VideoSpec(640, 480, 15)) == pytest.approx(250_000)
    assert video_demand_bps(VideoSpec(640, 480, 60)) == pytest.approx(1_000_000)
    assert video_demand_bps(VideoSpec(320, 180, 15)) == pytest.approx(100_000)


def test_latency_window_edge() -> None:
    """An rtt observation counts while now - t < latency_window (5 s), and no longer."""
    scorer = NetworkQualityScorer(AUDIO_SEND)
    assert scorer.update(0.0, audio_send(rtt=1.0, fraction_lost=0.0)) == 1
    for t in (1.0, 2.0, 3.0, 4.0, 4.9):
        scorer.update(t, audio_send(fraction_lost=0.0))
        stats = scorer.stats().audio
        assert stats is not None and stats.send_stats is not None
        assert stats.send_stats.latency.rtt == 1.0
        assert scorer.raw == 1
    scorer.update(5.0, audio_send(fraction_lost=0.0))
    stats = scorer.stats().audio
    assert stats is not None and stats.send_stats is not None
    assert stats.send_stats.latency.rtt is None
    assert scorer.raw == 5


def test_latency_window_single_spike_ignored_sustained_rise_shows_on_third_sample() -> None:
    scorer = NetworkQualityScorer(AUDIO_SEND)
    rtts = [0.02, 0.02, 0.02, 2.0, 0.02, 0.02, 0.02, 0.02, 1.0, 1.0, 1.0]
    levels = [scorer.update(float(t), audio_send(rtt=r, jitter=0.005)) for t, r in enumerate(rtts)]
    assert levels == [5] * 10 + [1]


def test_latency_window_lower_median() -> None:
    """With two observations the lower one counts (a rise must be the majority)."""
    scorer = NetworkQualityScorer(AUDIO_SEND)
    assert scorer.update(0.0, audio_send(rtt=0.02)) == 5
    assert scorer.update(1.0, audio_send(rtt=1.0)) == 5
    assert scorer.update(2.0, audio_send(rtt=1.0)) == 1


BAD = audio_send(fraction_lost=0.09)  # 100 - 4*9 = 64: raw 2
GOOD = audio_send(fraction_lost=0.0)  # raw 5
NO_DATA = QualityInput()


def test_rise_interval_exact_timeline() -> None:
    scorer = NetworkQualityScorer(AUDIO_SEND)
    assert scorer.level == 5
    assert scorer.update(0.0, GOOD) == 5
    assert scorer.update(1.0, BAD) == 2  # drops show at once
    assert scorer.raw == 2
    timeline = {float(t): scorer.update(float(t), GOOD) for t in range(2, 12)}
    assert timeline == {
        **{t: 2 for t in (2.0, 3.0)},  # the clock starts at 2
        **{t: 3 for t in (4.0, 5.0)},
        **{t: 4 for t in (6.0, 7.0)},
        **{t: 5 for t in (8.0, 9.0, 10.0, 11.0)},
    }
    assert scorer.rise_deadline is None


def test_rise_interval_edge_and_deadline() -> None:
    scorer = NetworkQualityScorer(AUDIO_SEND)
    scorer.update(0.0, BAD)
    assert scorer.rise_deadline is None
    scorer.update(2.0, GOOD)
    assert scorer.rise_deadline == 4.0
    assert scorer.update(3.999, GOOD) == 2
    assert scorer.update(4.0, GOOD) == 3
    assert scorer.rise_deadline == 6.0


def test_rise_is_one_level_even_after_a_long_gap() -> None:
    scorer = NetworkQualityScorer(AUDIO_SEND)
    scorer.update(0.0, BAD)
    scorer.update(2.0, GOOD)
    assert scorer.update(100.0, GOOD) == 3
    assert scorer.update(101.999, GOOD) == 3
    assert scorer.update(102.0, GOOD) == 4


def test_rise_never_overshoots_raw() -> None:
    scorer = NetworkQualityScorer(AUDIO_SEND)
    scorer.update(0.0, BAD)  # 2
    fair = audio_send(fraction_lost=0.06)  # 100 - 24 = 76 -> 3
    assert [scorer.update(float(t), fair) for t in range(1, 20)] == [2] * 2 + [3] * 17
    assert scorer.rise_deadline is None


def test_equal_or_lower_raw_restarts_the_rise_clock() -> None:
    scorer = NetworkQualityScorer(AUDIO_SEND)
    scorer.update(0.0, BAD)
    scorer.update(1.0, GOOD)
    scorer.update(2.0, BAD)  # equal to the level: clock restarts
    assert scorer.rise_deadline is None
    assert scorer.update(3.0, GOOD) == 2  # 2 s after the first GOOD, but the clock restarted
    assert scorer.update(4.999, GOOD) == 2
    assert scorer.update(5.0, GOOD) == 3


def test_no_data_changes_nothing() -> None:
    scorer = NetworkQualityScorer(AUDIO_SEND)
    assert scorer.update(0.0, NO_DATA) == 5  # no stats yet: not red
    assert scorer.raw is None
    scorer.update(1.0, BAD)
    for t in range(2, 30):
        assert scorer.update(float(t), NO_DATA) == 2
    # ... and does not reset a rise in progress.
    scorer.update(30.0, GOOD)
    scorer.update(31.0, NO_DATA)
    assert scorer.update(31.999, GOOD) == 2
    assert scorer.update(32.0, GOOD) == 3


def test_unknown_media_is_not_scored() -> None:
    demand = QualityDemand.symmetric(MediaDemand())
    sample = both(CLEAN_AUDIO)  # video carries demand but has no stats yet
    assert raw_level(demand, sample) == 5
    assert raw_level_or_none(demand, QualityInput()) is None
    assert raw_level(demand, QualityInput()) == 5
    stats = build_stats(5, demand, sample)
    assert stats.video is not None and stats.video.send is None and stats.video.recv is None
    assert stats.audio is not None and stats.audio.send == 5


def test_oscillation_around_a_threshold_does_not_flap() -> None:
    # Loss alternating 2.4 % / 2.6 % every second: raw 5, 4, 5, 4, ...
    scorer = NetworkQualityScorer(AUDIO_SEND)
    levels = [scorer.update(float(t), audio_send(fraction_lost=0.024 if t % 2 else 0.026)) for t in range(120)]
    changes = sum(a != b for a, b in zip([5, *levels], levels, strict=False))
    assert changes == 1
    assert levels[-1] == 4
    # rtt alternating across the 4/5 edge every second: the window median holds it steady too.
    scorer = NetworkQualityScorer(AUDIO_SEND)
    levels = [scorer.update(float(t), audio_send(rtt=0.12 if t % 2 else 0.17, jitter=0.0)) for t in range(120)]
    changes = sum(a != b for a, b in zip([5, *levels], levels, strict=False))
    assert changes <= 1


@pytest.mark.parametrize(("good_run", "rises"), [(1, False), (2, False), (3, True)])
def test_better_runs_shorter_than_rise_interval_never_rise(good_run: int, rises: bool) -> None:
    """Runs of ``good_run`` good one-second samples between bad ones: 3 samples span the 2 s."""
    scorer = NetworkQualityScorer(AUDIO_SEND)
    t = 0.0
    levels = []
    for _ in range(10):
        levels.append(scorer.update(t, BAD))
        t += 1
        for _ in range(good_run):
            levels.append(scorer.update(t, GOOD))
            t += 1
    assert (max(levels) > 2) is rises


def test_reconnecting_is_0_and_recovery_is_rate_limited() -> None:
    scorer = NetworkQualityScorer(AUDIO)
    assert scorer.update(0.0, both(CLEAN_AUDIO)) == 5
    assert scorer.update(1.0, both(CLEAN_AUDIO, reconnecting=True)) == 0
    # 0 -> 5 in 5 rise intervals: 10 s after the first clean sample, one preflight duration.
    levels = [scorer.update(float(t), both(CLEAN_AUDIO)) for t in range(2, 13)]
    assert levels == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5]


def test_metrics_seen_while_reconnecting_are_not_recorded() -> None:
    scorer = NetworkQualityScorer(AUDIO_SEND)
    assert scorer.update(0.0, QualityInput(audio_send=SideMetrics(rtt=2.0), reconnecting=True)) == 0
    assert scorer.update(1.0, GOOD) == 0
    assert scorer.raw == 5  # the stale 2 s rtt did not enter the window
    audio = scorer.stats().audio
    assert audio is not None and audio.send_stats is not None and audio.send_stats.latency.rtt is None


def test_now_must_not_go_backwards() -> None:
    scorer = NetworkQualityScorer(AUDIO_SEND)
    scorer.update(5.0, GOOD)
    scorer.update(5.0, GOOD)  # equal is fine
    with pytest.raises(ValueError, match="backwards"):
        scorer.update(4.999, GOOD)
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError):
            scorer.update(bad, GOOD)
    with pytest.raises(TypeError):
        scorer.update(6.0, GOOD.audio_send)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Output shape and verbosity
# ---------------------------------------------------------------------------------------------

SIDE_KEYS = {"bandwidth", "latency", "fractionLost"}


def _full_scorer() -> NetworkQualityScorer:
    demand = QualityDemand(audio_send=True, audio_recv=True, video_send=VideoSpec(640, 480, 30))
    scorer = NetworkQualityScorer(demand)
    v = SideMetrics(actual_bps=250_000.0, available_bps=400_000.0, rtt=0.05, jitter=0.004, fraction_lost=0.02)
    scorer.update(0.0, QualityInput(audio_send=CLEAN_AUDIO, audio_recv=CLEAN_AUDIO, video_send=v))
    return scorer


def test_verbosity_3_detailed_shape_and_units() -> None:
    d = _full_scorer().stats(3).to_dict()
    assert set(d) == {"level", "audio", "video"}
    assert d["level"] == 4  # video: 50 % of 500 kbit/s -> 86 -> 4; 2 % video loss -> 90 -> 5
    assert set(d["audio"]) == {"send", "recv", "sendStats", "recvStats"}
    assert d["audio"]["send"] == 5 and d["audio"]["recv"] == 5
    assert set(d["audio"]["sendStats"]) == SIDE_KEYS
    assert d["video"]["send"] == 4 and d["video"]["recv"] is None and d["video"]["recvStats"] is None
    vs = d["video"]["sendStats"]
    assert vs == {
        "bandwidth": {"actual": 250_000.0, "available": 400_000.0, "level": 4},
        "latency": {"jitter": 0.004, "rtt": 0.05, "level": 5},  # seconds, as Twilio Video reports them
        "fractionLost": {"fractionLost": 0.02, "level": 5},
    }


def test_verbosity_2_moderate_levels_only() -> None:
    d = _full_scorer().stats(2).to_dict()
    assert d == {
        "level": 4,
        "audio": {"send": 5, "recv": 5, "sendStats": None, "recvStats": None},
        "video": {"send": 4, "recv": None, "sendStats": None, "recvStats": None},
    }


@pytest.mark.parametrize("verbosity", [0, 1])
def test_verbosity_0_and_1_level_only(verbosity: int) -> None:
    assert _full_scorer().stats(verbosity).to_dict() == {"level": 4, "audio": None, "video": None}


def test_stats_default_is_detailed_and_media_without_demand_is_null() -> None:
    scorer = NetworkQualityScorer(AUDIO)
    scorer.update(0.0, both(CLEAN_AUDIO))
    stats = scorer.stats()
    assert isinstance(stats, NetworkQualityStats)
    assert stats.video is None
    assert stats.audio is not None and stats.audio.send_stats is not None
    assert NetworkQualityScorer(QualityDemand()).stats().to_dict() == {"level": 5, "audio": None, "video": None}


@pytest.mark.parametrize("verbosity", [-1, 4, 10, True, 2.0, "3", None])
def test_verbosity_out_of_range_raises(verbosity: Any) -> None:
    with pytest.raises(ConfigError):
        _full_scorer().stats(verbosity)


def test_verbosity_constants() -> None:
    assert (VERBOSITY_NONE, VERBOSITY_MINIMAL, VERBOSITY_MODERATE, VERBOSITY_DETAILED) == (0, 1, 2, 3)


@pytest.mark.parametrize(
    ("value", "local", "expected"),
    [
        (1, True, 1),
        (2, True, 2),
        (3, True, 3),
        (0, True, 1),
        (4, True, 1),
        (-1, True, 1),
        (None, True, 1),
        ("2", True, 1),
        (True, True, 1),
        (2.0, True, 1),
        (0, False, 0),
        (1, False, 1),
        (3, False, 3),
        (4, False, 0),
        (-1, False, 0),
        (None, False, 0),
    ],
)
def test_normalize_verbosity(value: object, local: bool, expected: int) -> None:
    assert normalize_verbosity(value, local=local) == expected


# ---------------------------------------------------------------------------------------------
# Demand, inputs and config validation
# ---------------------------------------------------------------------------------------------


def test_symmetric_demand() -> None:
    spec = VideoSpec(1280, 720, 30)
    d = QualityDemand.symmetric(MediaDemand(audio=True, video=spec))
    assert d == QualityDemand(audio_send=True, audio_recv=True, video_send=spec, video_recv=spec)
    d = QualityDemand.symmetric(MediaDemand(audio=False, video=None))
    assert d.idle
    assert not QualityDemand(video_recv=spec).idle
    with pytest.raises(ConfigError):
        QualityDemand().demanded_bps("data", "send")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        QualityInput().side("audio", "up")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rtt": -0.001},
        {"jitter": math.nan},
        {"actual_bps": math.inf},
        {"available_bps": -1.0},
        {"fraction_lost": 1.01},
        {"fraction_lost": -0.1},
        {"rtt": "1"},
        {"rtt": True},
    ],
)
def test_side_metrics_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        SideMetrics(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"level_thresholds": (90.0, 80.0, 80.0, 60.0)},
        {"level_thresholds": (60.0, 70.0, 80.0, 90.0)},
        {"level_thresholds": (101.0, 80.0, 70.0, 60.0)},
        {"level_thresholds": (90.0, 80.0, 70.0)},
        {"level_thresholds": [90.0, 80.0, 70.0, 60.0]},
        {"bandwidth_log_slope": 0.0},
        {"audio_loss_weight": -8.0},
        {"video_loss_weight": math.nan},
        {"audio_demand_bps": 0},
        {"video_reference_fps": math.inf},
        {"latency_window": 0.0},
        {"rise_interval": -1.0},
        {"video_bitrate_table": ()},
        {"video_bitrate_table": ((100, 2.0), (50, 3.0))},
        {"video_bitrate_table": ((100, 3.0), (200, 2.0))},
        {"video_bitrate_table": ((100, 3.0, 1),)},
        {"video_bitrate_table": ((100.5, 3.0),)},
        {"video_bitrate_table": ((100, 0.0),)},
    ],
)
def test_config_validation(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        ScorerConfig(**kwargs)


def test_config_from_dict() -> None:
    c = ScorerConfig.from_dict(
        {"level_thresholds": [95, 85, 75, 65], "video_bitrate_table": [[100, 1000.0]], "rise_interval": 3.0}
    )
    assert c.level_thresholds == (95, 85, 75, 65)
    assert c.video_bitrate_table == ((100, 1000.0),)
    assert c.rise_interval == 3.0
    with pytest.raises(ConfigError, match="unknown"):
        ScorerConfig.from_dict({"rise": 2.0})


def test_scorer_rejects_bad_arguments() -> None:
    with pytest.raises(ConfigError):
        NetworkQualityScorer(MediaDemand())  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        NetworkQualityScorer(AUDIO, {"rise_interval": 1.0})  # type: ignore[arg-type]


def test_custom_config_is_used() -> None:
    config = ScorerConfig(rise_interval=3.0, audio_loss_weight=1.0)
    scorer = NetworkQualityScorer(AUDIO_SEND, config)
    assert scorer.update(0.0, BAD) == 5  # 9 % loss with weight 1 -> 91
    assert scorer.update(1.0, audio_send(fraction_lost=0.25)) == 3  # 75
    scorer.update(2.0, GOOD)
    assert scorer.update(4.0, GOOD) == 3  # the default 2 s would have risen here
    assert scorer.update(5.0, GOOD) == 4


def test_importing_quality_pulls_in_no_randomness_or_clock() -> None:
    code = (
        "import sys; import numpy, attrs; base = set(sys.modules); import rtcprobe.core.quality; "
        "print(','.join(sorted(m for m in ('random', 'time', 'datetime', 'socket', 'asyncio') "
        "if m in sys.modules and m not in base)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_core_purity_of_quality_module() -> None:
    source = Path(__file__).resolve().parents[1] / "core" / "quality.py"
    tree = ast.parse(source.read_text())
    forbidden = {"asyncio", "trio", "aiortc", "aiohttp", "socket", "time", "random", "os", "threading"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level > 0:
                assert node.module in {"config", "errors"}
                continue
            names = [(node.module or "").split(".")[0]]
        else:
            continue
        for name in names:
            assert name not in forbidden
            assert name in {"attrs", "numpy"} or name in sys.stdlib_module_names, name


# ---------------------------------------------------------------------------------------------
# Hypothesis properties
# ---------------------------------------------------------------------------------------------


def _opt(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | s


bps_values = st.floats(0, 1e8)
seconds = st.floats(0, 3)
fractions = st.floats(0, 1)
side_metrics = st.builds(
    SideMetrics,
    actual_bps=_opt(bps_values),
    available_bps=_opt(bps_values),
    rtt=_opt(seconds),
    jitter=_opt(seconds),
    fraction_lost=_opt(fractions),
)
samples = st.builds(
    QualityInput,
    audio_send=_opt(side_metrics),
    audio_recv=_opt(side_metrics),
    video_send=_opt(side_metrics),
    video_recv=_opt(side_metrics),
    reconnecting=st.booleans(),
)
connected_samples = samples.map(lambda s: attrs.evolve(s, reconnecting=False))
video_specs = st.builds(VideoSpec, width=st.integers(1, 4000), height=st.integers(1, 2400), fps=st.floats(1, 120))
demands = st.builds(
    QualityDemand,
    audio_send=st.booleans(),
    audio_recv=st.booleans(),
    video_send=_opt(video_specs),
    video_recv=_opt(video_specs),
)
positive = st.floats(0.01, 1000)


@st.composite
def configs(draw: st.DrawFn) -> ScorerConfig:
    thresholds = draw(st.lists(st.floats(0.5, 100), min_size=4, max_size=4, unique=True))
    n = draw(st.integers(1, 6))
    pixels = sorted(draw(st.lists(st.integers(1, 10**8), min_size=n, max_size=n, unique=True)))
    rates = sorted(draw(st.lists(st.floats(1e3, 1e8), min_size=n, max_size=n)))
    return ScorerConfig(
        level_thresholds=tuple(sorted(thresholds, reverse=True)),  # type: ignore[arg-type]
        bandwidth_log_slope=draw(positive),
        audio_loss_weight=draw(positive),
        video_loss_weight=draw(positive),
        audio_demand_bps=draw(st.floats(1e3, 1e6)),
        video_bitrate_table=tuple(zip(pixels, rates, strict=True)),
        video_reference_fps=draw(st.floats(1, 120)),
        latency_window=draw(st.floats(0.1, 30)),
        rise_interval=draw(st.floats(0.1, 30)),
    )


any_config = st.just(DEFAULT_CONFIG) | configs()


@settings(deadline=None)  # timing varies on a loaded machine; never a wall-clock limit
@given(demands, samples, any_config)
def test_raw_level_bounded(demand: QualityDemand, sample: QualityInput, config: ScorerConfig) -> None:
    assert 0 <= raw_level(demand, sample, config) <= 5
    if not sample.reconnecting:
        assert raw_level(demand, sample, config) >= 1


@settings(deadline=None)  # timing varies on a loaded machine; never a wall-clock limit
@given(samples, any_config)
def test_idle_is_5(sample: QualityInput, config: ScorerConfig) -> None:
    sample = attrs.evolve(sample, reconnecting=False)
    assert raw_level(QualityDemand(), sample, config) == 5
    scorer = NetworkQualityScorer(QualityDemand(), config)
    assert scorer.update(0.0, sample) == 5


@settings(deadline=None)  # timing varies on a loaded machine; never a wall-clock limit
@given(demands, samples, any_config, st.lists(samples, max_size=5))
def test_reconnecting_is_0(
    demand: QualityDemand, sample: QualityInput, config: ScorerConfig, history: list[QualityInput]
) -> None:
    broken = attrs.evolve(sample, reconnecting=True)
    assert raw_level(demand, broken, config) == 0
    scorer = NetworkQualityScorer(demand, config)
    for t, s in enumerate(history):
        scorer.update(float(t), s)
    assert scorer.update(float(len(history)), broken) == 0


METRICS = ["rtt", "jitter", "fraction_lost", "actual_bps", "available_bps"]


@settings(deadline=None)  # timing varies on a loaded machine; never a wall-clock limit
@given(demands, connected_samples, any_config, st.sampled_from(SIDES), st.sampled_from(METRICS), st.data())
def test_worse_metric_is_never_better(
    demand: QualityDemand,
    sample: QualityInput,
    config: ScorerConfig,
    side: tuple[str, str],
    metric: str,
    data: st.DataObject,
) -> None:
    good, bad = _worsen(sample, side, metric, data)
    assert raw_level(demand, bad, config) <= raw_level(demand, good, config)


def _worsen(
    sample: QualityInput, side: tuple[str, str], metric: str, data: st.DataObject
) -> tuple[QualityInput, QualityInput]:
    """(good, bad): ``sample`` with ``metric`` of ``side`` set to some value, and made worse."""
    name = f"{side[0]}_{side[1]}"
    metrics = getattr(sample, name) or SideMetrics()
    base = getattr(metrics, metric)
    if metric in ("rtt", "jitter"):
        base = data.draw(seconds) if base is None else base
        worse = base + data.draw(st.floats(0, 3))
    elif metric == "fraction_lost":
        base = data.draw(fractions) if base is None else base
        worse = min(1.0, base + (1.0 - base) * data.draw(fractions))
    else:
        base = data.draw(bps_values) if base is None else base
        worse = base * data.draw(fractions)
    good = attrs.evolve(sample, **{name: attrs.evolve(metrics, **{metric: base})})
    bad = attrs.evolve(sample, **{name: attrs.evolve(metrics, **{metric: worse})})
    return good, bad


@settings(max_examples=200, deadline=None)
@given(demands, any_config, st.lists(st.tuples(st.floats(0, 10), samples), max_size=30), st.data())
def test_smoothed_level_never_better_on_a_worse_history(
    demand: QualityDemand, config: ScorerConfig, steps: list[tuple[float, QualityInput]], data: st.DataObject
) -> None:
    """Two scorers, one fed each sample made worse in one metric (or left alone): at every step
    its smoothed level is no better than the other's (the window and hysteresis keep the order)."""
    better, worse = NetworkQualityScorer(demand, config), NetworkQualityScorer(demand, config)
    now = 0.0
    for dt, sample in steps:
        now += dt
        good, bad = sample, sample
        if data.draw(st.booleans()):
            good, bad = _worsen(sample, data.draw(st.sampled_from(SIDES)), data.draw(st.sampled_from(METRICS)), data)
        assert worse.update(now, bad) <= better.update(now, good)


@st.composite
def demand_raises(draw: st.DrawFn) -> tuple[QualityDemand, QualityDemand]:
    low = draw(demands)
    kind = draw(st.sampled_from(["audio_send", "audio_recv", "video_send", "video_recv"]))
    if kind.startswith("audio"):
        return low, attrs.evolve(low, **{kind: True})
    spec: VideoSpec | None = getattr(low, kind)
    if spec is None:
        return low, attrs.evolve(low, **{kind: draw(video_specs)})
    bigger = VideoSpec(
        spec.width + draw(st.integers(0, 2000)),
        spec.height + draw(st.integers(0, 2000)),
        spec.fps + draw(st.floats(0, 60)),
    )
    return low, attrs.evolve(low, **{kind: bigger})


@settings(deadline=None)  # timing varies on a loaded machine; never a wall-clock limit
@given(demand_raises(), samples, any_config)
def test_more_demand_is_never_better(
    pair: tuple[QualityDemand, QualityDemand], sample: QualityInput, config: ScorerConfig
) -> None:
    low, high = pair
    for media in MEDIA:
        for direction in DIRECTIONS:
            assert high.demanded_bps(media, direction, config) >= low.demanded_bps(media, direction, config)
    assert raw_level(high, sample, config) <= raw_level(low, sample, config)


@settings(max_examples=200, deadline=None)
@given(demands, any_config, st.lists(st.tuples(st.floats(0, 10), samples), max_size=40))
def test_smoothing_invariants(
    demand: QualityDemand, config: ScorerConfig, steps: list[tuple[float, QualityInput]]
) -> None:
    scorer = NetworkQualityScorer(demand, config)
    now, prev, last_change = 0.0, scorer.level, -math.inf
    assert prev == 5
    for dt, sample in steps:
        now += dt
        level = scorer.update(now, sample)
        raw = scorer.raw
        assert 0 <= level <= 5
        assert level <= prev + 1  # rises one level at a time
        if raw is None:
            assert level == prev  # no data: no change
        else:
            assert level <= raw  # drops show at once, rises never overshoot
        if sample.reconnecting:
            assert level == 0
        if level > prev:
            assert now - last_change >= config.rise_interval  # rises are rate-limited
        if level != prev:
            last_change = now
        prev = level


def _without_latency(sample: QualityInput) -> QualityInput:
    sides = {}
    for media, direction in SIDES:
        m = sample.side(media, direction)  # type: ignore[arg-type]
        sides[f"{media}_{direction}"] = None if m is None else attrs.evolve(m, rtt=None, jitter=None)
    return attrs.evolve(sample, **sides)


@settings(deadline=None)  # timing varies on a loaded machine; never a wall-clock limit
@given(demands, connected_samples, connected_samples, any_config)
def test_alternating_samples_change_at_most_twice(
    demand: QualityDemand, a: QualityInput, b: QualityInput, config: ScorerConfig
) -> None:
    """Two samples alternating every half rise_interval: the level only ever drops.

    (rtt and jitter are left out: their window mixes the two samples, tested separately.)"""
    a, b = _without_latency(a), _without_latency(b)
    scorer = NetworkQualityScorer(demand, config)
    step = config.rise_interval / 2
    levels = [scorer.update(i * step, a if i % 2 == 0 else b) for i in range(40)]
    changes = sum(x != y for x, y in zip([5, *levels], levels, strict=False))
    assert changes <= 2
    assert all(x >= y for x, y in zip([5, *levels], levels, strict=False))


def _as_scored(stats: NetworkQualityStats, reconnecting: bool) -> QualityInput:
    """The sample a detailed NetworkQualityStats shows (its sides that carry demand)."""
    sides: dict[str, SideMetrics | None] = {}
    for media in ("audio", "video"):
        m = getattr(stats, media)
        for direction in ("send", "recv"):
            s = None if m is None else getattr(m, f"{direction}_stats")
            sides[f"{media}_{direction}"] = None if s is None else SideMetrics(
                s.bandwidth.actual, s.bandwidth.available, s.latency.rtt, s.latency.jitter,
                s.fraction_lost.fraction_lost,
            )
    return QualityInput(**sides, reconnecting=reconnecting)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(demands, any_config, st.lists(st.tuples(st.floats(0, 10), samples), max_size=20))
def test_raw_level_is_that_of_the_sample_scored(
    demand: QualityDemand, config: ScorerConfig, steps: list[tuple[float, QualityInput]]
) -> None:
    # The scorer works its raw level out in a loop of its own (the worst score of the windowed
    # sample, one lookup): it must be raw_level_or_none of the sample its stats show.
    scorer = NetworkQualityScorer(demand, config)
    now = 0.0
    for dt, sample in steps:
        now += dt
        scorer.update(now, sample)
        scored = _as_scored(scorer.stats(VERBOSITY_DETAILED), sample.reconnecting)
        assert scorer.raw == raw_level_or_none(demand, scored, config)
