"""The simulator's steady state: interval batches and receive statistics as functions of time."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from rtcprobe.core.observations import IceStateChanged, MediaStarted, Observation
from rtcprobe.drivers.sim import SimDriver, SimResult, run_simulation
from rtcprobe.drivers.sim._media import PACKET, VIDEO, AudioSource, ReceiverStats, RembEstimator
from rtcprobe.drivers.sim._timeline import AudioLog, SendLog, Timeline, extend_pair, jitter_path
from rtcprobe.netem.scenario import Scenario


def naive_path(j: float, d: list[float]) -> list[float]:
    out = [j]
    for x in d:
        j += (abs(x) - j) / 16.0
        out.append(j)
    return out


def test_jitter_path_is_the_rfc_recursion_after_every_update() -> None:
    rng = np.random.default_rng(1)
    for n in (0, 1, 7, 255, 256, 257, 1500):
        d = rng.normal(0, 700, n)
        assert jitter_path(2.5, d) == pytest.approx(naive_path(2.5, d.tolist()), rel=1e-9, abs=1e-9)


def one_by_one(stats: ReceiverStats, arrival: np.ndarray, seq: np.ndarray, ts: np.ndarray,
               payload: np.ndarray) -> None:
    """Feed packet by packet: the reference the batched paths must agree with."""
    for i in range(len(arrival)):
        stats.add(arrival[i:i + 1], seq[i:i + 1], ts[i:i + 1], payload[i:i + 1])


def _stream(rng: np.random.Generator, n: int, shuffled: bool) -> tuple[np.ndarray, ...]:
    seq = np.arange(n, dtype=np.int64) + 5
    if shuffled:  # late and duplicated packets: they count, but move neither max_seq nor jitter
        i = rng.integers(0, n, size=n // 8)
        seq[i] = seq[np.maximum(i - 3, 0)]
    ts = (seq // 3) * 3000  # three packets per frame share a timestamp
    arrival = np.sort(rng.uniform(0, 2, n)) + 1
    return arrival, seq, ts, rng.integers(100, 1200, n)


@pytest.mark.parametrize("shuffled", [False, True])
def test_timeline_answers_as_the_packet_by_packet_statistics_would_at_any_time(shuffled: bool) -> None:
    rng = np.random.default_rng(7)
    for trial in range(40):
        n = int(rng.integers(1, 300))
        arrival, seq, ts, payload = _stream(rng, n, shuffled)
        before = (np.array([0.5]), np.array([2]), np.array([0]), np.array([10]))
        stats = ReceiverStats(90_000)
        if trial % 2:
            stats.add(*before)
        timeline = Timeline(stats, None)
        cuts = sorted(rng.integers(0, n, 3).tolist())
        for lo, hi in zip([0, *cuts], [*cuts, n], strict=True):
            timeline.extend(arrival[lo:hi], seq[lo:hi], ts[lo:hi], payload[lo:hi])
        for q in np.sort(rng.uniform(0.9, 3.1, 12)):
            k = int(np.searchsorted(arrival, q, side="right"))
            ref = ReceiverStats(90_000)
            if trial % 2:
                ref.add(*before)
            one_by_one(ref, arrival[:k], seq[:k], ts[:k], payload[:k])
            received, nbytes, max_seq, jitter, base = timeline.at(float(q))
            assert (received, nbytes, max_seq) == (ref.received, ref.bytes, ref.max_seq)
            assert base == ref.base_seq
            assert jitter == pytest.approx(ref.jitter_units, rel=1e-9, abs=1e-9)
        # ... and leaves the packet-by-packet object where feeding it everything would.
        whole = ReceiverStats(90_000)
        if trial % 2:
            whole.add(*before)
        one_by_one(whole, arrival, seq, ts, payload)
        assert (stats.received, stats.bytes, stats.max_seq) == (whole.received, whole.bytes, whole.max_seq)
        assert stats.jitter_units == pytest.approx(whole.jitter_units, rel=1e-9, abs=1e-9)


def test_a_timeline_of_one_timestamp_per_packet_skips_the_lookup_but_not_the_numbers() -> None:
    rng = np.random.default_rng(12)
    n = 500
    seq = np.arange(n, dtype=np.int64) + 3
    ts = seq * 960  # audio: every packet its own timestamp
    arrival = np.maximum.accumulate(seq * 0.02 + 0.03 + rng.uniform(0, 0.01, n))
    payload = np.full(n, 240, dtype=np.int64)
    general, audio = Timeline(ReceiverStats(48_000), None), Timeline(ReceiverStats(48_000), None, own_timestamps=True)
    for lo, hi in ((0, 1), (1, 40), (40, 41), (41, 300), (300, n)):
        for timeline in (general, audio):
            timeline.extend(arrival[lo:hi], seq[lo:hi], ts[lo:hi], payload[lo:hi])
    for q in np.sort(rng.uniform(0, 11, 30)):
        assert general.at(float(q)) == audio.at(float(q))
        k = int(np.searchsorted(arrival, q, side="right"))
        ref = ReceiverStats(48_000)
        one_by_one(ref, arrival[:k], seq[:k], ts[:k], payload[:k])
        assert audio.at(float(q)).received == ref.received
        assert audio.at(float(q)).jitter_units == pytest.approx(ref.jitter_units, rel=1e-9, abs=1e-9)
    assert general.stats.jitter_units == audio.stats.jitter_units > 0


def test_timeline_remb_matches_the_estimator_fed_packet_by_packet() -> None:
    rng = np.random.default_rng(3)
    n = 600
    sent = np.arange(n) * 0.01
    arrival = np.maximum.accumulate(sent + 0.03 + np.linspace(0, 0.2, n) + rng.uniform(0, 0.005, n))
    keep = rng.random(n) > 0.03
    seq = np.arange(n, dtype=np.int64)[keep]
    arrival, sent = arrival[keep], sent[keep]
    size = rng.integers(800, 1300, len(seq))
    ref, est = RembEstimator(), RembEstimator()
    timeline = Timeline(ReceiverStats(90_000), est)
    timeline.extend(arrival, seq, seq, size, sent, size)
    for t in np.arange(0.5, 6.5, 0.5):
        mine = (arrival > t - 0.5) & (arrival <= t)
        ref.add(arrival[mine], sent[mine], seq[mine], size[mine])
        expected = ref.update(float(t))
        got = timeline.remb(float(t))
        assert (got is None) == (expected is None)
        if expected is not None:
            assert got == pytest.approx(expected, rel=1e-9)


def _pair(first: float) -> tuple[Timeline, Timeline]:
    audio, video = ReceiverStats(48_000), ReceiverStats(90_000)
    audio.add(np.array([first]), np.array([0]), np.array([0]), np.array([240]))
    video.add(np.array([first]), np.array([0]), np.array([0]), np.array([1000]))
    return Timeline(audio, None, own_timestamps=True), Timeline(video, RembEstimator())


def test_both_streams_extended_together_answer_exactly_as_one_by_one() -> None:
    rng = np.random.default_rng(5)
    shared, alone = _pair(0.01), _pair(0.01)
    fused = 0
    t0 = 0.05
    for interval in range(12):
        na, nv = int(rng.integers(1, 60)), int(rng.integers(1, 120))
        rec = np.zeros(na + nv, dtype=PACKET)
        rec["kind"][na:] = VIDEO
        for lo, n in ((0, na), (na, nv)):
            seq = np.cumsum(rng.integers(1, 3, n)) + (interval * 500 if lo == 0 else interval * 1000)
            rec["seq"][lo : lo + n] = seq
            rec["ts"][lo : lo + n] = seq * 960 if lo == 0 else (seq // 3) * 3000  # video: 3 packets a frame
            rec["t"][lo : lo + n] = np.sort(rng.uniform(t0, t0 + 1, n))
            rec["sent"][lo : lo + n] = rec["t"][lo : lo + n] - rng.uniform(0.02, 0.05, n)
            rec["payload"][lo : lo + n] = rng.integers(100, 1200, n)
            rec["size"][lo : lo + n] = rec["payload"][lo : lo + n] + 66
        if interval == 5:  # a late packet: the shared path declines, one by one takes over
            rec["seq"][na + nv // 2] = rec["seq"][na]
        t0 += 1
        if extend_pair(*shared, rec, na):
            fused += 1
        else:
            for timeline, part in zip(shared, (rec[:na], rec[na:]), strict=True):
                timeline.extend(part["t"], part["seq"], part["ts"], part["payload"], part["sent"], part["size"])
        for timeline, part in zip(alone, (rec[:na], rec[na:]), strict=True):
            timeline.extend(part["t"], part["seq"], part["ts"], part["payload"], part["sent"], part["size"])
        for q in [*rng.uniform(t0 - 1.5, t0, 5).tolist(), t0]:
            for mine, theirs in zip(shared, alone, strict=True):
                assert mine.at(q) == theirs.at(q)
        assert shared[1].remb(t0) == alone[1].remb(t0)
    assert fused == 11


def test_send_log_counts_what_left_by_any_time() -> None:
    log = SendLog(3, 300)
    log.extend(np.array([1.0, 1.5, 2.0]), np.array([10, 20, 30]))
    log.extend(np.array([2.5]), np.array([40]))
    assert log.at(0.5) == (3, 300)
    assert log.at(1.5) == (5, 330)
    assert log.at(2.2) == (6, 360)
    assert log.at(9.0) == (7, 400)
    # retransmissions sent in between the interval's packets: counted by time all the same
    log.extend(np.array([3.0, 3.5, 4.0]), np.array([1, 2, 4]), (np.array([3.2, 3.9]), np.array([8, 16])))
    assert log.at(2.9) == (7, 400)
    assert log.at(3.2) == (9, 409)
    assert log.at(3.95) == (11, 427)
    assert log.at(4.0) == log.at(9.0) == (12, 431)
    log.extend(np.array([]), np.array([], dtype=np.int64), (np.array([5.0]), np.array([32])))  # only those
    assert log.at(4.5) == (12, 431)
    assert log.at(5.0) == (13, 463)


def test_audio_log_counts_what_left_of_what_was_handed_out() -> None:
    source = AudioSource(start=1.0, wire_extra=0)
    source.seq = 5  # five packets went out before the log starts
    log = AudioLog(source, 5, 5 * 240)
    source.generate(3.0)  # planned ahead: packets 5 to 100 (1.1 s to 3.0 s)
    assert log.at(9.0) == (5, 1200)  # nothing handed out yet
    log.next = 15  # ten handed to the link (1.1 s to 1.28 s)
    assert log.at(1.0) == (5, 1200)
    assert log.at(1.15) == (8, 8 * 240)  # 1.1, 1.12, 1.14 by then
    assert log.at(9.0) == (15, 15 * 240)
    assert log.at(1.2) == log.at(math.nextafter(1.2, 2.0)) == (11, 11 * 240)


def _run(data: dict[str, Any], seed: int = 0, **kw: Any) -> tuple[SimDriver, SimResult, list[float]]:
    """Run a scenario; also returns when each stream started playing at the subscriber."""
    started: list[float] = []

    def seen(now: float, obs: Observation) -> None:
        if isinstance(obs, MediaStarted):
            started.append(now)

    driver = SimDriver(Scenario.from_dict(data), seed, on_observation=seen, **kw)
    return driver, driver.run(), started


def test_the_steady_state_moves_each_interval_in_one_batch_per_link() -> None:
    driver, result, _ = _run(
        {"name": "s", "duration": 10, "network": {"delay_ms": 20, "loss": 0.01, "bandwidth_kbps": 3000}})
    assert driver.steady_at is not None
    assert result.report.error is None
    # ~11 s simulated, 1 s intervals, two links: about 22 batches (plus a few in the handshakes).
    assert 2 * (result.sim_time - driver.steady_at) - 2 <= driver.path.batches <= 2 * 13 + 6, driver.path.batches


def test_the_steady_state_does_not_start_before_media_started() -> None:
    # (aiortc's model; the libwebrtc model always batches from the end of the handshakes)
    driver, _, started = _run({"name": "s", "duration": 3, "network": {"delay_ms": 20},
                               "media": {"stack": "aiortc"}})
    assert len(started) == 2  # audio and video
    assert driver.steady_at is not None and driver.steady_at >= max(started)


def test_batches_from_the_end_of_the_handshakes_read_media_start_off_the_arrays() -> None:
    # (aiortc's model: the libwebrtc model always batches from the end of the handshakes)
    data = {"name": "s", "duration": 4, "network": {"delay_ms": 20, "loss": 0.03}, "media": {"stack": "aiortc"}}
    exact, exact_result, _ = _run(data, 1)
    early, early_result, early_started = _run(data, 1, early_batches=True)
    assert early.steady_at is not None and early_started
    assert early.steady_at < min(early_started)  # before any media reached the subscriber
    assert exact.steady_at is not None and exact.steady_at > early.steady_at
    reports = [exact_result.report, early_result.report]
    assert all(r.error is None for r in reports)
    names = [[e.name for e in r.progress_events] for r in reports]
    assert names[0] == names[1] and "mediaStarted" in names[1]


def test_consent_checks_through_turn_stay_answered_once_media_is_batched() -> None:
    # A consent check crosses the access link four times (to TURN and back, then the answer the
    # same way); in the steady state the answer leaves with the next interval, its outcome
    # counting that wait out. On a clean link none may fail, however long the run.
    seen: list[str] = []

    def spy(now: float, obs: Observation) -> None:
        if isinstance(obs, IceStateChanged):
            seen.append(obs.state)

    driver = SimDriver(Scenario.from_dict({"name": "s", "duration": 60, "network": {"delay_ms": 15}}), 2,
                       on_observation=spy)
    result = driver.run()
    assert result.report.error is None and driver.steady_at is not None and driver.steady_at < 2
    assert "disconnected" not in seen and "failed" not in seen
    assert [pc.consent_failures for pc in driver.pcs.values()] == [0, 0]
    # ... and a lossy one does not lose ICE to six "failures" in a row.
    lossy = {"delay_ms": 15, "jitter_ms": 8, "jitter_distribution": "normal", "loss": 0.01}
    assert run_simulation(Scenario.from_dict({"name": "s", "duration": 60, "network": lossy, "seed": 2})
                          ).report.error is None
