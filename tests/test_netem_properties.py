"""Property tests (hypothesis) of the link models: conservation, order, minimum delay, capacity
bounds of bandwidth and trace links, and the drop-tail queue bound."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from rtcprobe.netem import MTU_BYTES, GilbertElliott, Link, LinkConfig, Trace

# Per-test settings (not a global profile, which would leak into other modules' tests).
SETTINGS = settings(max_examples=150, deadline=None)

traces = st.lists(st.integers(0, 40), min_size=1, max_size=12).map(sorted).filter(lambda x: x[-1] > 0).map(Trace)
loss_models = st.one_of(
    st.none(),
    st.builds(GilbertElliott, p=st.floats(0, 1), r=st.floats(0, 1), h=st.floats(0, 1), k=st.floats(0, 1)),
)
windows = st.lists(
    st.tuples(st.floats(0, 2), st.floats(0.001, 1)).map(lambda w: (w[0], w[0] + w[1])), max_size=3
)


@st.composite
def configs(draw: Any, *, delay_free: bool = False, lossless: bool = False) -> LinkConfig:
    bottleneck = draw(st.sampled_from(["none", "rate", "trace"]))
    model = None if lossless else draw(loss_models)
    return LinkConfig(
        delay_ms=0.0 if delay_free else draw(st.floats(0, 200)),
        jitter_ms=0.0 if delay_free else draw(st.sampled_from([0.0, 1.0, 15.0])),
        jitter_distribution=draw(st.sampled_from(["uniform", "normal", "pareto"])),
        reorder=False if delay_free else draw(st.booleans()),
        loss=0.0 if (lossless or model is not None) else draw(st.sampled_from([0.0, 0.1, 0.5])),
        loss_model=model,
        bandwidth_kbps=draw(st.floats(50, 50_000)) if bottleneck == "rate" else None,
        trace=draw(traces) if bottleneck == "trace" else None,
        queue_packets=draw(st.one_of(st.none(), st.integers(1, 20))),
        queue_bytes=draw(st.one_of(st.none(), st.integers(1, 40_000))),
        overhead_bytes=draw(st.sampled_from([0, 28, 48])),
        outages=() if lossless else draw(windows),
    )


@st.composite
def packets(draw: Any) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(1, 150))
    gaps = draw(st.lists(st.sampled_from([0.0, 0.0001, 0.001, 0.0037, 0.01, 0.05]), min_size=n, max_size=n))
    sizes = draw(st.lists(st.integers(1, 4000), min_size=n, max_size=n))
    start = draw(st.floats(0, 1))
    return start + np.cumsum(gaps), np.array(sizes, dtype=np.int64)


def run(cfg: LinkConfig, t: np.ndarray, s: np.ndarray, seed: int, batch: bool) -> tuple[np.ndarray, Link]:
    link = Link(cfg, np.random.default_rng(seed))
    if batch:
        return link.send_batch(t, s), link
    out = [link.send(float(a), int(b)) for a, b in zip(t, s, strict=True)]
    return np.array([np.nan if d is None else d for d in out]), link


@SETTINGS
@given(configs(), packets(), st.integers(0, 2**32), st.booleans())
def test_conservation_every_packet_delivered_or_dropped_once(
    cfg: LinkConfig, pk: tuple[np.ndarray, np.ndarray], seed: int, batch: bool
) -> None:
    t, s = pk
    d, link = run(cfg, t, s, seed, batch)
    c = link.counters
    ok = ~np.isnan(d)
    assert c.sent == len(t)
    assert c.delivered + c.dropped_loss + c.dropped_queue + c.dropped_outage == c.sent
    assert c.delivered == ok.sum()
    assert c.bytes_sent == s.sum() and c.bytes_delivered == s[ok].sum()
    assert np.isclose(c.total_added_delay, float((d[ok] - t[ok]).sum()), atol=1e-6)


@SETTINGS
@given(configs(), packets(), st.integers(0, 2**32), st.booleans())
def test_order_kept_and_never_before_send_plus_delay(
    cfg: LinkConfig, pk: tuple[np.ndarray, np.ndarray], seed: int, batch: bool
) -> None:
    t, s = pk
    d, _ = run(cfg, t, s, seed, batch)
    ok = ~np.isnan(d)
    if not cfg.reorder:
        assert np.all(np.diff(d[ok]) >= 0)
    # netem's jitter is symmetric: uniform never takes more than `jitter` off the delay; a
    # standardized pareto (α = 3) at most 0.578·jitter; normal is unbounded but clamped at 0.
    slack = {"uniform": 1.0, "pareto": 0.578, "normal": np.inf}[cfg.jitter_distribution]
    floor = max(0.0, cfg.delay_ms - slack * cfg.jitter_ms) / 1000.0
    assert np.all(d[ok] >= t[ok] + floor)
    if cfg.jitter_ms == 0:
        assert np.all(d[ok] >= t[ok] + cfg.delay_ms / 1000.0)


@SETTINGS
@given(traces, packets(), st.integers(0, 2**32), st.booleans(),
       st.one_of(st.none(), st.integers(1, 20)), st.sampled_from([0, 40]))
def test_trace_link_never_exceeds_the_trace_capacity(
    trace: Trace, pk: tuple[np.ndarray, np.ndarray], seed: int, batch: bool, qp: int | None, overhead: int
) -> None:
    t, s = pk
    d, _ = run(LinkConfig(trace=trace, queue_packets=qp, overhead_bytes=overhead), t, s, seed, batch)
    ok = ~np.isnan(d)
    order = np.argsort(d[ok], kind="stable")
    times, wire = d[ok][order], (s[ok] + overhead)[order]
    delivered = np.cumsum(wire)
    # Per-byte accounting: the bytes out by time T never exceed 1504 per opportunity up to T
    # (not even "plus one packet": a packet leaves with the opportunity that carries its last byte).
    for when, total in zip(times, delivered, strict=True):
        assert total <= trace.opportunities_until(when) * MTU_BYTES


@SETTINGS
@given(st.floats(50, 50_000), packets(), st.booleans(), st.one_of(st.none(), st.integers(1, 20)))
def test_bandwidth_link_throughput_never_exceeds_the_rate(
    kbps: float, pk: tuple[np.ndarray, np.ndarray], batch: bool, qp: int | None
) -> None:
    t, s = pk
    d, _ = run(LinkConfig(bandwidth_kbps=kbps, queue_packets=qp), t, s, 0, batch)
    ok = ~np.isnan(d)
    dd, ww = d[ok], s[ok]
    bytes_per_s = kbps * 1000 / 8
    # Bytes leaving in (d_i, d_j] were all served inside that interval (FIFO, one server).
    served = np.cumsum(ww)
    span = dd[None, :] - dd[:, None]
    moved = served[None, :] - served[:, None]
    later = np.triu(np.ones_like(span, dtype=bool), 1)
    assert np.all(moved[later] <= bytes_per_s * span[later] * (1 + 1e-9) + 1e-6)


@SETTINGS
@given(st.floats(50, 20_000), packets(), st.booleans(), st.integers(1, 15),
       st.one_of(st.none(), st.integers(1, 20_000)), st.sampled_from([0, 28]))
def test_drop_tail_queue_bound_respected_and_only_drops_when_full(
    kbps: float, pk: tuple[np.ndarray, np.ndarray], batch: bool, qp: int, qb: int | None, overhead: int
) -> None:
    t, s = pk
    cfg = LinkConfig(bandwidth_kbps=kbps, queue_packets=qp, queue_bytes=qb, overhead_bytes=overhead)
    d, _ = run(cfg, t, s, 0, batch)
    ok = ~np.isnan(d)
    wire = s + overhead
    start = d - wire * 8 / (kbps * 1000)  # service start of each accepted packet
    eps = 1e-9
    for i in range(len(t)):
        earlier = np.flatnonzero(ok[:i])
        # Waiting at a_i: accepted before i, service not started (tolerance both ways for rounding).
        surely = earlier[start[earlier] > t[i] + eps]
        maybe = earlier[start[earlier] > t[i] - eps]
        if ok[i]:
            assert len(surely) + 1 <= qp
            assert qb is None or wire[surely].sum() + wire[i] <= qb
        else:
            assert len(maybe) + 1 > qp or (qb is not None and wire[maybe].sum() + wire[i] > qb)


@SETTINGS
@given(configs(), packets(), st.integers(0, 2**32))
def test_send_and_send_batch_agree(cfg: LinkConfig, pk: tuple[np.ndarray, np.ndarray], seed: int) -> None:
    t, s = pk
    a, _ = run(cfg, t, s, seed, True)
    b, _ = run(cfg, t, s, seed, False)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)


@st.composite
def phased(draw: Any) -> tuple[LinkConfig, tuple[tuple[float, LinkConfig], ...]]:
    base = draw(configs())
    gaps = draw(st.lists(st.sampled_from([0.0005, 0.01, 0.05, 0.2]), max_size=4))
    at, phases = 0.0, []
    for gap in gaps:
        at += gap
        # Equal-but-distinct traces must behave like the same trace (the byte position carries over).
        cfg = draw(st.one_of(configs(), st.just(base), st.just(attrs.evolve(base, delay_ms=1.0))))
        if cfg.trace is not None and draw(st.booleans()):
            cfg = attrs.evolve(cfg, trace=Trace(cfg.trace.timestamps_ms))
        phases.append((at, cfg))
    return base, tuple(phases)


@SETTINGS
@given(phased(), packets(), st.integers(0, 2**32))
def test_phase_changes_keep_conservation_order_and_agreement(
    ph: tuple[LinkConfig, tuple[tuple[float, LinkConfig], ...]], pk: tuple[np.ndarray, np.ndarray], seed: int
) -> None:
    base, phases = ph
    t, s = pk
    a = Link(base, np.random.default_rng(seed), phases)
    b = Link(base, np.random.default_rng(seed), phases)
    da = a.send_batch(t, s)
    out = [b.send(float(x), int(y)) for x, y in zip(t, s, strict=True)]
    db = np.array([np.nan if d is None else d for d in out])
    np.testing.assert_array_equal(np.isnan(da), np.isnan(db))
    np.testing.assert_allclose(da, db, rtol=0, atol=1e-9)
    c = a.counters
    assert c.delivered + c.dropped == c.sent == len(t)
    if not base.reorder and not any(cfg.reorder for _, cfg in phases):
        assert np.all(np.diff(da[~np.isnan(da)]) >= 0)
    assert np.all(da[~np.isnan(da)] >= t[~np.isnan(da)])  # never delivered before it was sent
