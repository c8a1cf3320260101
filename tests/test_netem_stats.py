"""Statistical behaviour of the random impairments, with fixed seeds (deterministic, not flaky)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from rtcprobe.netem import GilbertElliott, Link, LinkConfig


def offer(cfg: LinkConfig, n: int, seed: int = 1, gap: float = 0.001, batch: bool = True) -> np.ndarray:
    link = Link(cfg, np.random.default_rng(seed))
    t = np.arange(n) * gap
    s = np.full(n, 200)
    if batch:
        return link.send_batch(t, s)
    out = [link.send(float(a), 200) for a in t]
    return np.array([np.nan if d is None else d for d in out])


@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("p", [0.01, 0.05, 0.3])
def test_random_loss_rate_within_tolerance(p: float, batch: bool) -> None:
    n = 20_000
    lost = np.isnan(offer(LinkConfig(loss=p), n, batch=batch)).mean()
    assert abs(lost - p) < 4 * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize(
    "model",
    [
        GilbertElliott(p=0.01, r=0.25),  # simple Gilbert: bad state loses everything
        GilbertElliott(p=0.02, r=0.25, h=0.1, k=0.99),
        GilbertElliott(p=0.1, r=0.4, h=0.5, k=0.95),
        GilbertElliott(p=0.05),  # netem default r = 1 - p: no memory
    ],
)
def test_gilbert_elliott_stationary_loss(model: GilbertElliott, batch: bool) -> None:
    expected = model.p / (model.p + model.r) * (1 - model.h) + model.r / (model.p + model.r) * (1 - model.k)
    assert model.mean_loss == pytest.approx(expected)
    n = 200_000 if batch else 40_000
    lost = np.isnan(offer(LinkConfig(loss_model=model), n, seed=3, batch=batch)).mean()
    assert lost == pytest.approx(expected, rel=0.12)


def test_gilbert_losses_come_in_bursts_of_mean_length_one_over_r() -> None:
    lost = np.isnan(offer(LinkConfig(loss_model=GilbertElliott(p=0.01, r=0.25)), 200_000, seed=4))
    edges = np.diff(np.concatenate(([0], lost.astype(np.int8), [0])))
    runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    assert runs.mean() == pytest.approx(1 / 0.25, rel=0.1)
    # Random loss at the same mean rate has runs of about 1 / (1 - p).
    rnd = np.isnan(offer(LinkConfig(loss=lost.mean()), 200_000, seed=4))
    edges = np.diff(np.concatenate(([0], rnd.astype(np.int8), [0])))
    assert (np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).mean() < 1.2


def delays(dist: str, jitter_ms: float, n: int = 50_000) -> np.ndarray:
    cfg = LinkConfig(delay_ms=100, jitter_ms=jitter_ms, jitter_distribution=dist, reorder=True)  # type: ignore[arg-type]
    d = offer(cfg, n, seed=5)
    return (d - np.arange(n) * 0.001) * 1000 - 100  # jitter draws, in ms


def test_uniform_jitter_spread() -> None:
    j = delays("uniform", 10)
    assert j.min() >= -10 and j.max() <= 10
    assert j.mean() == pytest.approx(0, abs=0.15)
    assert j.std() == pytest.approx(10 / math.sqrt(3), rel=0.02)


def test_normal_jitter_spread() -> None:
    j = delays("normal", 10)
    assert j.mean() == pytest.approx(0, abs=0.15)
    assert j.std() == pytest.approx(10, rel=0.02)


def test_pareto_jitter_spread() -> None:
    j = delays("pareto", 10)
    # netem's pareto table: Pareto α = 3 standardized to mean 0, sd 1, then scaled by jitter.
    # Its variance estimate converges slowly (infinite fourth moment), so check quantiles.
    def q(p: float) -> float:
        return 10 * ((1 - p) ** (-1 / 3) - 1.5) / math.sqrt(0.75)

    assert j.min() >= q(0.0) - 1e-9
    for p in (0.25, 0.5, 0.75, 0.95):
        assert np.quantile(j, p) == pytest.approx(q(p), abs=0.15)
    assert j.mean() == pytest.approx(0, abs=0.3)


def test_keeping_order_only_ever_adds_delay() -> None:
    cfg = LinkConfig(delay_ms=100, jitter_ms=10)
    kept = offer(cfg, 20_000, seed=6)
    free = offer(cfg.with_changes(reorder=True), 20_000, seed=6)
    assert np.all(kept >= free)
    assert np.all(np.diff(kept) >= 0)
