"""LinkConfig / GilbertElliott validation: caller misuse raises ConfigError at construction."""

from __future__ import annotations

from typing import Any

import pytest
from rtcprobe.core.errors import ConfigError
from rtcprobe.netem import GilbertElliott, LinkConfig, LinkCounters, Trace


@pytest.mark.parametrize(
    "kwargs",
    [
        {"delay_ms": -1}, {"delay_ms": float("inf")}, {"delay_ms": True}, {"delay_ms": "5"},
        {"jitter_ms": -0.1}, {"jitter_distribution": "gaussian"}, {"reorder": 1},
        {"loss": 1.5}, {"loss": -0.1}, {"loss": True},
        {"loss_model": 0.1}, {"loss": 0.1, "loss_model": GilbertElliott(0.1)},
        {"bandwidth_kbps": 0}, {"bandwidth_kbps": -5}, {"bandwidth_kbps": 100, "trace": Trace([1])},
        {"queue_packets": 0}, {"queue_packets": 2.5}, {"queue_packets": True}, {"queue_bytes": 0},
        {"overhead_bytes": -1}, {"overhead_bytes": 1.5}, {"trace": [1, 2]}, {"outage": "yes"},
        {"outages": [(2, 1)]}, {"outages": [(-1, 1)]}, {"outages": [(1,)]}, {"outages": 5},
    ],
)
def test_bad_link_config_raises_config_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        LinkConfig(**kwargs)


@pytest.mark.parametrize("kwargs", [{"p": 1.1}, {"p": 0.1, "r": -1}, {"p": 0.1, "h": 2}, {"p": True}])
def test_bad_gilbert_elliott(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        GilbertElliott(**kwargs)


def test_gilbert_elliott_netem_defaults_and_mean_loss() -> None:
    ge = GilbertElliott(p=0.1)
    assert (ge.r, ge.h, ge.k) == (0.9, 0.0, 1.0)
    assert ge.mean_loss == pytest.approx(0.1)  # r = 1 - p: memoryless, loss = p
    assert GilbertElliott(p=0.0, r=0.0, k=0.7).mean_loss == pytest.approx(0.3)  # stuck in good
    assert LinkConfig(loss_model=GilbertElliott(0.01, 0.3)).mean_loss == pytest.approx(0.01 / 0.31)
    assert LinkConfig(loss=0.2).mean_loss == 0.2


def test_outages_are_sorted_and_with_changes_clears_the_exclusive_partner() -> None:
    cfg = LinkConfig(outages=[[5, 6], (1, 2.5)], loss=0.1, bandwidth_kbps=100)
    assert cfg.outages == ((1.0, 2.5), (5.0, 6.0))
    ge = cfg.with_changes(loss_model=GilbertElliott(0.2))
    assert ge.loss == 0 and ge.loss_model is not None
    assert ge.with_changes(loss=0.3).loss_model is None
    tr = cfg.with_changes(trace=Trace([1]))
    assert tr.bandwidth_kbps is None
    assert tr.with_changes(bandwidth_kbps=50).trace is None


def test_counters() -> None:
    c = LinkCounters(sent=10, delivered=6, dropped_loss=1, dropped_queue=2, dropped_outage=1, total_added_delay=0.3)
    assert c.dropped == 4
    assert c.mean_added_delay == pytest.approx(0.05)
    assert LinkCounters().mean_added_delay == 0.0
