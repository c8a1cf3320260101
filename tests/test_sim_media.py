"""The simulator's media building blocks: RFC 3550 jitter, receiver statistics, sources, REMB."""

from __future__ import annotations

import numpy as np
import pytest
from rtcprobe.core.config import VideoSpec
from rtcprobe.drivers.sim._media import (
    AUDIO,
    FRAME_SIZE_SPREAD,
    KEYFRAME_FACTOR,
    OPUS_FRAME_S,
    VIDEO,
    VP8_DESCRIPTOR,
    VP8_MAX_BPS,
    VP8_MIN_BPS,
    VP8_PACKET_MAX,
    AudioSource,
    Packets,
    PlayoutStart,
    ReceiverStats,
    RembEstimator,
    VideoSource,
    initial_video_target,
    rfc3550_jitter,
)
from rtcprobe.drivers.sim._streams import Queue


def naive_jitter(j: float, d: list[float]) -> float:
    for x in d:
        j += (abs(x) - j) / 16.0
    return j


def test_vectorized_jitter_equals_the_rfc_recursion() -> None:
    rng = np.random.default_rng(1)
    for n in (0, 1, 5, 255, 256, 257, 2000):
        d = rng.normal(0, 500, n)
        assert rfc3550_jitter(3.0, d) == pytest.approx(naive_jitter(3.0, d.tolist()), rel=1e-9, abs=1e-9)


def _stream(rng: np.random.Generator, n: int, clock: int) -> tuple[np.ndarray, ...]:
    t = np.arange(n) * 0.02
    arrival = np.maximum.accumulate(t + 0.05 + rng.uniform(0, 0.01, n))
    seq = np.arange(n, dtype=np.int64)
    keep = rng.random(n) > 0.05
    ts = (seq * int(clock * 0.02)).astype(np.int64)
    return arrival[keep], seq[keep], ts[keep], np.full(int(keep.sum()), 200, dtype=np.int64)


def test_receiver_stats_batch_and_packet_paths_agree() -> None:
    arrival, seq, ts, payload = _stream(np.random.default_rng(2), 400, 48_000)
    whole, pieces = ReceiverStats(48_000), ReceiverStats(48_000)
    whole.add(arrival, seq, ts, payload)
    for i in range(0, len(arrival), 7):  # small batches take the pure-Python path
        pieces.add(arrival[i:i + 7], seq[i:i + 7], ts[i:i + 7], payload[i:i + 7])
    assert (whole.received, whole.lost, whole.bytes, whole.expected) == (
        pieces.received, pieces.lost, pieces.bytes, pieces.expected)
    assert whole.jitter_units == pytest.approx(pieces.jitter_units)
    assert whole.lost == 400 - whole.received - (399 - int(seq[-1]))  # trailing losses are not seen yet


def test_receiver_stats_measure_jitter_in_clock_units() -> None:
    n = 500
    t = np.arange(n) * 0.02
    rng = np.random.default_rng(3)
    arrival = t + 0.03 + rng.uniform(-0.005, 0.005, n)  # ±5 ms uniform: E|D| = 2·5/3 ms
    stats = ReceiverStats(48_000)
    stats.add(np.maximum.accumulate(arrival), np.arange(n), np.arange(n) * 960, np.ones(n, dtype=np.int64))
    assert 2.0 < stats.jitter_units / 48 < 4.5  # ms


def test_audio_source_sends_one_opus_packet_per_20_ms_up_to_the_horizon() -> None:
    src = AudioSource(1.0, wire_extra=0)
    first = src.generate(1.1)
    assert first.t.tolist() == pytest.approx([1.0 + i * OPUS_FRAME_S for i in range(6)])
    second = src.generate(1.1)
    assert len(second) == 0 and src.next_send > 1.1
    assert (src.generate(2.0).seq[0], len(src.generate(2.0))) == (6, 0)


@pytest.mark.parametrize("start", [0.0, 0.5, 1.0 / 3.0, 7.123456789])
def test_audio_source_records_are_its_generated_packets(start: float) -> None:
    # the event-driven phase takes records, the steady state arrays: the same packets, bit for bit
    arrays, records = AudioSource(start, wire_extra=36), AudioSource(start, wire_extra=36)
    for until in (start - 0.01, start, start + 0.019, start + 0.02, start + 0.5, start + 0.5, start + 3.0):
        assert records.records(until) == arrays.generate(until).a.tolist()
        assert records.next_send == arrays.next_send


def test_video_target_follows_resolution_clamped_like_aiortc() -> None:
    assert initial_video_target(VideoSpec()) == 500_000
    assert initial_video_target(VideoSpec(1280, 720, 30)) == VP8_MAX_BPS
    assert initial_video_target(VideoSpec(320, 180, 15)) == VP8_MIN_BPS


def test_video_frames_are_packetized_and_keyframes_are_bigger() -> None:
    src = VideoSource(VideoSpec(), 0.0, 0, np.random.default_rng(4))
    p = src.generate(1.0)
    assert int(p.payload.max()) <= VP8_PACKET_MAX
    frames = np.unique(p.frame)
    assert len(frames) == 30
    sizes = np.bincount(p.frame, weights=p.payload)
    assert p.key[p.frame == 0].all() and not p.key[p.frame > 0].any()
    assert sizes[0] > 3 * np.median(sizes[1:])
    assert 8 * sizes[1:].sum() == pytest.approx(500_000 * 29 / 30, rel=0.1)  # the encoder's rate
    # Packets of a frame leave together; each knows how many its frame has.
    for f in frames[:3]:
        mine = p.frame == f
        assert len(set(p.t[mine].tolist())) == 1 and (p.npk[mine] == mine.sum()).all()


def test_a_target_change_over_ten_percent_recreates_the_encoder_with_a_keyframe() -> None:
    src = VideoSource(VideoSpec(), 0.0, 0, np.random.default_rng(5))
    src.generate(0.5)
    src.set_target(520_000)  # +4 %: aiortc keeps its encoder
    assert not src.generate(1.0).key.any()
    src.set_target(300_000)
    p = src.generate(1.5)
    assert p.key[p.frame == p.frame[0]].all() and src.codec_rate == 300_000
    src.set_target(10_000)
    assert src.target == VP8_MIN_BPS


def test_encoder_changes_planned_in_one_call_give_what_one_call_per_change_gives() -> None:
    # generate(until, changes) draws every frame size at once; the packets must be exactly those
    # of generate(cut) before each change, the change, then generate(until).
    changes = [(0.37, 320_000.0), (None, None), (0.41, None), (0.90, 900_000.0), (0.95, 880_000.0)]
    one = VideoSource(VideoSpec(), 0.1, 4, np.random.default_rng(8))
    step = VideoSource(VideoSpec(), 0.1, 4, np.random.default_rng(8))
    one.generate(0.3)
    step.generate(0.3)
    joined = one.generate(1.2, changes)
    parts = []
    for cut, bps in changes:
        if cut is not None:
            parts.append(step.generate(cut))
        if bps is None:
            step.force_key = True
        else:
            step.set_target(bps)
    parts.append(step.generate(1.2))
    expected = Packets.concat(parts)
    assert joined.a.tobytes() == expected.a.tobytes() and len(joined) > 0
    assert (one.frame, one.seq, one.keyframes, one.codec_rate, one.force_key) == (
        step.frame, step.seq, step.keyframes, step.codec_rate, step.force_key)
    assert joined.key.any()


def test_frame_sizes_follow_the_draws_whatever_the_calls() -> None:
    # Each frame's size is max(1, rint(mean x its factor)) (a keyframe's mean x KEYFRAME_FACTOR),
    # the factors drawn in frame order, whether frames come a few or many a call, with keyframes
    # requested on the way (repeated calls at one mean reuse work: it must not shift a frame).
    src = VideoSource(VideoSpec(), 0.0, 4, np.random.default_rng(11))
    mean = src.rate / 8.0 / 30.0
    parts, until, keys = [], 0.0, []
    for i, span in enumerate([0.02, 1.0, 0.1, 0.5, 3.0, 0.04, 1.0, 2.5, 0.3, 4.0]):
        until += span
        if i in (3, 4, 7):
            src.force_key = True
            keys.append(src.frame)
        parts.append(src.generate(until))
    p = Packets.concat(parts)
    assert src.codec_rate == initial_video_target(VideoSpec())  # (one mean throughout)
    npk = np.bincount(p.frame)
    sizes = np.bincount(p.frame, weights=p.payload).astype(np.int64) - npk * VP8_DESCRIPTOR
    factors = np.random.default_rng(11).uniform(1 - FRAME_SIZE_SPREAD, 1 + FRAME_SIZE_SPREAD, len(sizes))
    expected = np.maximum(1.0, np.rint(mean * factors))
    expected[[0, *keys]] = round(mean * KEYFRAME_FACTOR)
    assert len(sizes) > 300 and sizes.tolist() == expected.astype(np.int64).tolist()
    assert (p.npk == npk[p.frame]).all() and (np.diff(p.seq) == 1).all()
    assert set(np.unique(p.frame[p.key]).tolist()) == {0, *keys}


def test_remb_estimator_backs_off_on_a_growing_queue_and_probes_up_otherwise() -> None:
    est = RembEstimator()
    t, rate = 0.0, 500_000
    seq = 0
    for _ in range(6):  # steady: no queue
        times = t + np.arange(50) * 0.01
        est.add(times + 0.02, times, np.arange(seq, seq + 50), np.full(50, rate // 8 // 100))
        seq += 50
        t += 0.5
        value = est.update(t)
    assert value is not None and value > rate
    times = t + np.arange(50) * 0.01
    est.add(times + 0.02 + np.linspace(0, 0.3, 50), times, np.arange(seq, seq + 50), np.full(50, 625))
    backed_off = est.update(t + 0.5)
    assert backed_off is not None and backed_off < value
    assert est.update(t + 1.0) is None  # nothing arrived: no REMB


def test_playout_starts_on_the_first_audio_packet_and_the_first_complete_keyframe() -> None:
    video = VideoSource(VideoSpec(), 0.0, 0, np.random.default_rng(6)).generate(0.1)
    keyframe = video.take(video.key)
    assert len(keyframe) > 2
    playout = PlayoutStart()
    # The keyframe's packets arrive over two batches, its last one out of order.
    n = len(keyframe)
    first, rest = keyframe.take(slice(0, n - 2)), keyframe.take(np.array([n - 1, n - 2]))
    assert playout.arrived(VIDEO, first) is None and VIDEO not in playout.started
    assert playout.arrived(VIDEO, rest) == pytest.approx(float(rest.t[-1])) and VIDEO in playout.started
    audio = AudioSource(0.5, wire_extra=0).generate(0.6)
    assert playout.arrived(AUDIO, audio) == 0.5 and playout.started == {AUDIO, VIDEO}


def test_a_queue_keeps_what_the_link_delivered_in_arrival_order() -> None:
    sent = AudioSource(0.0, wire_extra=0).generate(0.1)  # 6 packets
    queue = Queue(reorder=True)
    queue.arrive(sent, np.array([0.30, np.nan, 0.20, 0.25, np.nan, 0.40]))
    assert queue.min == 0.20
    got = queue.pop_until(0.3, accept_at=0.21)  # what came before the end could decrypt it is lost
    assert got.t.tolist() == [0.25, 0.30] and got.seq.tolist() == [3, 0]
    assert queue.pop_until(1.0, accept_at=0.0).seq.tolist() == [5]
