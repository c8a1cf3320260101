"""Exact behaviour of rtcprobe.netem.Link: delay, FIFO bandwidth, drop-tail queue, Mahimahi traces,
outages, phases, send/send_batch agreement and determinism."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from rtcprobe.netem import GilbertElliott, Link, LinkConfig, Trace

NAN = float("nan")


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def scalar(link: Link, times: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    out = [link.send(float(t), int(s)) for t, s in zip(times, sizes, strict=True)]
    return np.array([NAN if d is None else d for d in out])


def both(cfg: LinkConfig, times: list[float] | np.ndarray, sizes: list[int] | np.ndarray, seed: int = 0,
         phases: tuple[tuple[float, LinkConfig], ...] = ()) -> tuple[np.ndarray, Link, Link]:
    """Run the same input through send_batch and send; assert they agree; return the batch result."""
    t = np.asarray(times, dtype=np.float64)
    s = np.asarray(sizes, dtype=np.int64)
    a, b = Link(cfg, rng(seed), phases), Link(cfg, rng(seed), phases)
    batch = a.send_batch(t, s)
    one = scalar(b, t, s)
    np.testing.assert_array_equal(np.isnan(batch), np.isnan(one))
    np.testing.assert_allclose(batch, one, rtol=0, atol=1e-9)
    assert a.counters.sent == b.counters.sent
    for field in ("delivered", "dropped_loss", "dropped_queue", "dropped_outage", "bytes_delivered"):
        assert getattr(a.counters, field) == getattr(b.counters, field), field
    assert a.counters.total_added_delay == pytest.approx(b.counters.total_added_delay, abs=1e-6)
    return batch, a, b


# -- delay, bandwidth, queue -------------------------------------------------------------------

def test_fixed_delay_only() -> None:
    d, *_ = both(LinkConfig(delay_ms=25), [0.0, 0.1, 0.1, 2.5], [100, 1500, 1, 9000])
    np.testing.assert_allclose(d, [0.025, 0.125, 0.125, 2.525])


def test_bandwidth_serializes_fifo() -> None:
    # 1250 bytes at 1000 kbit/s = 10 ms each; the third arrives after the queue drained.
    cfg = LinkConfig(bandwidth_kbps=1000, delay_ms=5)
    d, link, _ = both(cfg, [0.0, 0.0, 0.5], [1250, 1250, 1250])
    np.testing.assert_allclose(d, [0.015, 0.025, 0.515])
    assert link.counters.total_added_delay == pytest.approx(0.015 + 0.025 + 0.015)


def test_overhead_counts_on_the_wire_but_not_in_bytes() -> None:
    d, link, _ = both(LinkConfig(bandwidth_kbps=1000, overhead_bytes=1250), [0.0], [1250])
    assert d[0] == pytest.approx(0.02)
    assert link.counters.bytes_delivered == 1250


def test_drop_tail_queue_in_packets_excludes_the_packet_in_service() -> None:
    cfg = LinkConfig(bandwidth_kbps=1000, queue_packets=2)
    d, link, _ = both(cfg, [0.0] * 5 + [0.035], [1250] * 6)
    # #1 in service, #2 and #3 wait, #4 and #5 find the queue full; by 35 ms the queue has room.
    np.testing.assert_allclose(d, [0.01, 0.02, 0.03, NAN, NAN, 0.045])
    assert link.counters.dropped_queue == 2


def test_drop_tail_queue_in_bytes() -> None:
    cfg = LinkConfig(bandwidth_kbps=1000, queue_bytes=2000)
    d, link, _ = both(cfg, [0.0] * 4, [1250, 1000, 1000, 900])
    # waiting after #2: 1000 bytes; #3 would make 2000 (fits); #4 would make 2900 (refused).
    np.testing.assert_allclose(d, [0.01, 0.018, 0.026, NAN])
    assert link.counters.dropped_queue == 1


def test_unlimited_link_without_queue_limits_keeps_everything() -> None:
    d, link, _ = both(LinkConfig(), np.linspace(0, 1, 50), [1200] * 50)
    np.testing.assert_allclose(d, np.linspace(0, 1, 50))
    assert link.counters.delivered == 50


# -- Mahimahi trace semantics -------------------------------------------------------------------

def test_trace_of_one_is_12_mbit() -> None:
    trace = Trace([1])
    assert trace.mean_kbps == pytest.approx(12032.0)
    # MTU-sized packets all offered at 0 leave one per millisecond, at 1, 2, 3, ... ms.
    d, *_ = both(LinkConfig(trace=trace), [0.0] * 1000, [1504] * 1000)
    np.testing.assert_allclose(d, np.arange(1, 1001) / 1000.0)
    # Offered 20 Mbit/s of 1500-byte packets for 2 s: about 12.03 Mbit/s come out.
    n = 2 * 20_000_000 // (1500 * 8)
    t = np.arange(n) * (1500 * 8 / 20e6)
    d, *_ = both(LinkConfig(trace=trace), t, np.full(n, 1500))
    bits = 1500 * 8 * np.sum(d <= 2.0)
    assert bits / 2.0 == pytest.approx(12.032e6, rel=0.002)


def test_trace_wraps_around_with_the_last_timestamp_as_period() -> None:
    trace = Trace([5, 10])  # opportunities at 5, 10, 15, 20, 25, ... ms
    d, *_ = both(LinkConfig(trace=trace), [0.0, 0.0, 0.0, 0.0, 0.0125, 0.031], [1504] * 6)
    np.testing.assert_allclose(d, [0.005, 0.010, 0.015, 0.020, 0.025, 0.035])
    assert trace.opportunity_time(5) == pytest.approx(0.030)
    assert trace.opportunities_until(0.030) == 6


def test_trace_per_byte_accounting_small_packets_share_an_opportunity() -> None:
    trace = Trace([10])
    d, *_ = both(LinkConfig(trace=trace), [0.0] * 5, [376] * 5)  # 4 × 376 = 1504
    np.testing.assert_allclose(d, [0.01, 0.01, 0.01, 0.01, 0.02])


def test_trace_big_packet_spans_opportunities_and_leftover_is_shared() -> None:
    trace = Trace([10])
    # 3000 bytes fill opportunity 1 and 1496 bytes of opportunity 2; 8 bytes fit in the rest.
    d, *_ = both(LinkConfig(trace=trace), [0.0, 0.0, 0.0], [3000, 8, 1])
    np.testing.assert_allclose(d, [0.02, 0.02, 0.03])


def test_trace_unused_opportunities_and_leftovers_are_wasted() -> None:
    trace = Trace([10])
    d, *_ = both(LinkConfig(trace=trace), [0.0, 0.0105, 0.0455], [100, 100, 100])
    # the 2nd cannot use the 1404 bytes left at 10 ms (it arrived after); idle 20-40 ms is lost.
    np.testing.assert_allclose(d, [0.01, 0.02, 0.05])


def test_trace_opportunity_at_the_arrival_instant_is_not_usable() -> None:
    d, *_ = both(LinkConfig(trace=Trace([10])), [0.010], [100])
    assert d[0] == pytest.approx(0.02)


def test_trace_repeated_timestamps_are_several_opportunities() -> None:
    d, *_ = both(LinkConfig(trace=Trace([5, 5, 10])), [0.0] * 4, [1504] * 4)
    np.testing.assert_allclose(d, [0.005, 0.005, 0.010, 0.015])


def test_trace_with_queue_limit() -> None:
    cfg = LinkConfig(trace=Trace([10]), queue_packets=1)
    d, link, _ = both(cfg, [0.0, 0.0, 0.0, 0.011], [1504] * 4)
    # at 0 nothing is in service yet (the first opportunity is at 10 ms): 1 slot, so 2 are dropped.
    np.testing.assert_allclose(d, [0.01, NAN, NAN, 0.02])
    assert link.counters.dropped_queue == 2


# -- outages, loss, jitter order ----------------------------------------------------------------

def test_outage_windows_drop_everything_inside() -> None:
    cfg = LinkConfig(delay_ms=10, outages=((1.0, 2.0), (1.5, 2.5), (4.0, 4.5)))
    d, link, _ = both(cfg, [0.5, 1.0, 1.7, 2.49, 2.5, 4.2, 5.0], [100] * 7)
    np.testing.assert_allclose(d, [0.51, NAN, NAN, NAN, 2.51, NAN, 5.01])
    assert link.counters.dropped_outage == 4


def test_total_loss_and_no_loss() -> None:
    d, link, _ = both(LinkConfig(loss=1.0), np.arange(100) / 100, [100] * 100)
    assert np.isnan(d).all() and link.counters.dropped_loss == 100
    d, link, _ = both(LinkConfig(loss=0.0), np.arange(100) / 100, [100] * 100)
    assert not np.isnan(d).any()


def test_jitter_keeps_order_unless_reorder() -> None:
    t = np.arange(2000) * 0.001
    kept, *_ = both(LinkConfig(delay_ms=50, jitter_ms=20), t, [200] * 2000, seed=3)
    assert np.all(np.diff(kept) >= 0)
    mixed, *_ = both(LinkConfig(delay_ms=50, jitter_ms=20, reorder=True), t, [200] * 2000, seed=3)
    assert np.sum(np.diff(mixed) < 0) > 100


def test_total_delay_is_clamped_at_zero() -> None:
    d, *_ = both(LinkConfig(delay_ms=1, jitter_ms=50, jitter_distribution="normal", reorder=True),
                 np.arange(500) * 0.01, [100] * 500)
    assert np.all(d >= np.arange(500) * 0.01)


# -- phases -------------------------------------------------------------------------------------

def test_phases_apply_from_their_start_time() -> None:
    base = LinkConfig(delay_ms=10)
    phases = ((1.0, base.with_changes(delay_ms=50)), (2.0, base.with_changes(outage=True)),
              (3.0, base))
    d, link, _ = both(base, [0.5, 0.999, 1.0, 1.5, 2.0, 2.9, 3.0], [100] * 7, phases=phases)
    np.testing.assert_allclose(d, [0.51, 1.009, 1.05, 1.55, NAN, NAN, 3.01])
    assert link.config_at(2.5).outage and not link.config_at(3.0).outage


def test_phase_switching_between_rate_and_trace_keeps_fifo() -> None:
    base = LinkConfig(bandwidth_kbps=1000, queue_packets=50)
    phases = ((0.05, LinkConfig(trace=Trace([2]), queue_packets=50)), (0.2, base))
    t = np.arange(300) * 0.001
    d, *_ = both(base, t, np.full(300, 1000), phases=phases)
    got = d[~np.isnan(d)]
    assert np.all(np.diff(got) >= 0)


def test_phase_order_kept_across_a_delay_drop() -> None:
    base = LinkConfig(delay_ms=100)
    d, *_ = both(base, [0.99, 1.0], [100, 100], phases=((1.0, LinkConfig(delay_ms=10)),))
    np.testing.assert_allclose(d, [1.09, 1.09])  # the second may not overtake the first


# -- agreement, determinism, misuse ---------------------------------------------------------------

CONFIGS = [
    LinkConfig(delay_ms=20, bandwidth_kbps=800, queue_packets=8),
    LinkConfig(bandwidth_kbps=3000, queue_bytes=15000, overhead_bytes=28),
    LinkConfig(trace=Trace([1, 1, 3, 7, 7, 7, 12]), queue_packets=5, delay_ms=3),
    LinkConfig(trace=Trace([4, 9, 20]), queue_bytes=6000),
    LinkConfig(delay_ms=5, outages=((0.3, 0.6),), bandwidth_kbps=2000),
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_send_and_send_batch_agree_on_deterministic_links(cfg: LinkConfig) -> None:
    g = rng(42)
    n = 20_000
    t = np.cumsum(g.exponential(0.0012, n))  # bursty Poisson arrivals: queues overflow and drain
    s = g.integers(40, 3000, n)
    _, link, _ = both(cfg, t, s)
    assert link.counters.sent == n
    assert 0 < link.counters.delivered <= n


def test_send_and_send_batch_agree_with_randomness_too() -> None:
    # Each random stage draws from its own stream in packet order, so even random links agree.
    cfg = LinkConfig(delay_ms=30, jitter_ms=8, jitter_distribution="pareto",
                     loss_model=GilbertElliott(p=0.05, r=0.3, h=0.2, k=0.98),
                     bandwidth_kbps=4000, queue_packets=20)
    phases = ((3.0, cfg.with_changes(loss=0.1, jitter_distribution="normal", reorder=True)),)
    g = rng(1)
    t = np.cumsum(g.exponential(0.001, 10_000))
    both(cfg, t, g.integers(60, 1400, 10_000), seed=9, phases=phases)


def test_batches_can_be_split_and_mixed_with_send() -> None:
    cfg = LinkConfig(trace=Trace([1, 2, 2, 5]), queue_packets=10, jitter_ms=2, delay_ms=4)
    g = rng(5)
    t = np.cumsum(g.exponential(0.0005, 5000))
    s = g.integers(100, 2000, 5000)
    whole = Link(cfg, rng(8)).send_batch(t, s)
    parts = Link(cfg, rng(8))
    pieces = [parts.send_batch(t[:1000], s[:1000]), scalar(parts, t[1000:1200], s[1000:1200]),
              parts.send_batch(t[1200:], s[1200:])]
    np.testing.assert_allclose(np.concatenate(pieces), whole, rtol=0, atol=1e-9)


def test_scalar_sends_mixed_with_batches_draw_the_same_randomness() -> None:
    # The scalar path draws loss and uniform jitter ahead in blocks: any mix of send and
    # send_batch must still use each stream's values in packet order, exactly.
    cfg = LinkConfig(delay_ms=20, jitter_ms=6, loss=0.1, bandwidth_kbps=3000, queue_packets=50)
    g = rng(11)
    t = np.cumsum(g.exponential(0.002, 3000))
    s = g.integers(60, 1400, 3000)
    whole = Link(cfg, rng(4)).send_batch(t, s)
    mixed = Link(cfg, rng(4))
    cuts = [0, 5, 6, 300, 333, 334, 1200, 1240, 3000]
    pieces = [scalar(mixed, t[lo:hi], s[lo:hi]) if i % 2 else mixed.send_batch(t[lo:hi], s[lo:hi])
              for i, (lo, hi) in enumerate(itertools.pairwise(cuts))]
    np.testing.assert_array_equal(np.isnan(np.concatenate(pieces)), np.isnan(whole))
    np.testing.assert_allclose(np.concatenate(pieces), whole, rtol=0, atol=1e-9)


def test_send_sorted_is_send_batch_without_the_checks() -> None:
    cfg = LinkConfig(delay_ms=15, jitter_ms=3, loss=0.02, bandwidth_kbps=1500, queue_packets=30)
    t = np.cumsum(rng(2).exponential(0.003, 2000))
    s = rng(3).integers(60, 1400, 2000)
    checked, unchecked = Link(cfg, rng(6)), Link(cfg, rng(6))
    for lo, hi in ((0, 700), (700, 701), (701, 2000)):
        np.testing.assert_array_equal(checked.send_batch(t[lo:hi], s[lo:hi]), unchecked.send_sorted(t[lo:hi], s[lo:hi]))
    assert checked.counters == unchecked.counters


def test_batches_of_big_and_tiny_packets_near_a_full_queue_agree_with_send() -> None:
    # Video-like batches (keyframe bursts of full packets, a few tiny RTCP ones): the batch path
    # decides from a bound whether the queue can refuse anything; near the limit it must still
    # refuse exactly what send refuses.
    cfg = LinkConfig(delay_ms=10, bandwidth_kbps=2000, queue_packets=40)
    g = rng(12)
    batched, single = Link(cfg, rng(1)), Link(cfg, rng(1))
    t0 = 0.0
    for _ in range(60):
        n = int(g.integers(60, 140))
        t = t0 + np.sort(g.uniform(0, 0.25, n))
        s = np.where(g.random(n) < 0.05, 70, 1300).astype(np.int64)
        burst = int(g.integers(0, 60))
        t[:burst] = t[0]  # a keyframe's packets leave at once
        got, expected = batched.send_sorted(t, s), scalar(single, t, s)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)  # (running sums' rounding)
        t0 = float(t[-1]) + float(g.uniform(0, 0.3))
    refused = batched.counters.dropped_queue
    assert refused == single.counters.dropped_queue and 0 < refused < batched.counters.sent // 4


def test_send_trusted_is_send_without_the_checks() -> None:
    cfg = LinkConfig(delay_ms=15, jitter_ms=3, loss=0.05, bandwidth_kbps=1500, queue_packets=5)
    t = np.cumsum(rng(2).exponential(0.002, 500)).tolist()
    s = rng(3).integers(60, 1400, 500).tolist()
    checked, trusted = Link(cfg, rng(6)), Link(cfg, rng(6))
    assert [checked.send(ti, si) for ti, si in zip(t, s, strict=True)] == [
        trusted.send_trusted(ti, si) for ti, si in zip(t, s, strict=True)]
    assert checked.counters == trusted.counters and trusted.counters.dropped_queue > 0


def test_a_link_made_from_a_seed_sequence_draws_what_one_from_its_generator_does() -> None:
    cfg = LinkConfig(delay_ms=15, jitter_ms=3, loss=0.1)
    t = np.arange(2000) * 0.001
    s = np.full(2000, 500)
    from_generator = Link(cfg, np.random.default_rng(np.random.SeedSequence(5))).send_batch(t, s)
    from_seeds = Link(cfg, np.random.SeedSequence(5)).send_batch(t, s)
    np.testing.assert_array_equal(from_generator, from_seeds)
    other = Link(cfg, np.random.SeedSequence(6)).send_batch(t, s)
    assert not np.array_equal(np.isnan(from_seeds), np.isnan(other))


def test_same_seed_same_output_different_seed_different() -> None:
    cfg = LinkConfig(delay_ms=40, jitter_ms=10, loss=0.05)
    t = np.arange(3000) * 0.002
    s = np.full(3000, 500)
    a = Link(cfg, rng(7)).send_batch(t, s)
    b = Link(cfg, rng(7)).send_batch(t, s)
    c = Link(cfg, rng(8)).send_batch(t, s)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(np.isnan(a), np.isnan(c))


def test_send_time_going_backwards_is_misuse() -> None:
    link = Link(LinkConfig(), rng())
    link.send(1.0, 100)
    with pytest.raises(ValueError, match="backwards"):
        link.send(0.5, 100)
    with pytest.raises(ValueError):
        link.send_batch(np.array([0.9]), np.array([100]))
    with pytest.raises(ValueError):
        link.send_batch(np.array([2.0, 1.5]), np.array([100, 100]))
    with pytest.raises(ValueError):
        link.send(math.nan, 100)


@pytest.mark.parametrize("size", [0, -5, 1.5, True])
def test_bad_sizes_are_misuse(size: object) -> None:
    link = Link(LinkConfig(), rng())
    with pytest.raises(ValueError):
        link.send(0.0, size)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        link.send_batch(np.array([0.0]), np.array([size]))


def test_empty_batch_and_bad_shapes() -> None:
    link = Link(LinkConfig(), rng())
    assert link.send_batch(np.array([]), np.array([], dtype=np.int64)).shape == (0,)
    with pytest.raises(ValueError):
        link.send_batch(np.array([0.0, 1.0]), np.array([100]))


def test_phases_must_be_increasing() -> None:
    with pytest.raises(ValueError):
        Link(LinkConfig(), rng(), [(2.0, LinkConfig()), (1.0, LinkConfig())])
    with pytest.raises(ValueError):
        Link(LinkConfig(), rng(), [(-1.0, LinkConfig())])


def test_trace_millisecond_boundaries_survive_float_noise() -> None:
    # 1.005 * 1000 == 1004.9999999999999 in floating point: still the opportunity at 1005 ms.
    trace = Trace([15])
    assert trace.opportunities_until(1.005) == 67
    d, *_ = both(LinkConfig(trace=trace), [1.0049, 1.005], [100, 100])
    np.testing.assert_allclose(d, [1.005, 1.020])  # the second arrives at 1005 ms: too late for it


@pytest.mark.parametrize("cfg", [
    LinkConfig(delay_ms=25, jitter_ms=5, loss=0.01, bandwidth_kbps=800, queue_packets=12),
    LinkConfig(delay_ms=10, jitter_ms=2, bandwidth_kbps=600, queue_bytes=9000, overhead_bytes=28),
])
def test_bursty_batches_queueing_across_batches_agree_with_packet_by_packet(cfg: LinkConfig) -> None:
    # Bursts that sometimes fill the queue, sent in interval-sized batches (the simulator's steady
    # state): the queue left over from one batch decides refusals in the next, and a batch whose
    # queue cannot fill takes a shortcut that must refuse exactly what the packet-by-packet model does.
    g = rng(21)
    bursts = np.repeat(np.arange(400) * 0.05, g.integers(1, 25, 400))
    t = np.sort(bursts + g.uniform(0, 0.002, len(bursts)))
    s = g.choice([120, 320, 1362], len(t))
    batched = Link(cfg, rng(9))
    got = np.concatenate([batched.send_batch(t[lo : lo + 130], s[lo : lo + 130]) for lo in range(0, len(t), 130)])
    one_by_one = scalar(Link(cfg, rng(9)), t, s)
    assert np.isnan(one_by_one).any() and not np.isnan(one_by_one).all()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(one_by_one))
    np.testing.assert_allclose(got, one_by_one, rtol=0, atol=1e-9)
