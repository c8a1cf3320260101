"""The scorer's inputs are recorded, so a finished test can be re-scored without running it again."""

from __future__ import annotations

import attrs
import pytest
from rtcprobe.core.quality import NetworkQualityScorer, QualityDemand, ScorerConfig
from rtcprobe.drivers.sim import run_simulation
from rtcprobe.scenarios import load


def _replay(name: str, config: ScorerConfig) -> tuple[list[int], list[int | None]]:
    scenario = load(name)
    result = run_simulation(scenario)
    assert result.scorer_inputs, "a completed test fed its scorer"
    scorer = NetworkQualityScorer(QualityDemand.symmetric(scenario.media), config)
    calls = [(now, scorer.update(now, quality)) for now, quality in result.scorer_inputs]
    # One scorer call per sample, and one more where a connection starts or stops reconnecting
    # (short-outage's outage may do that): a sample reports the level of its own call.
    levels = [next(level for now, level in reversed(calls) if abs(1000 * now - s.time) < 1e-3)
              for s in result.report.samples]
    reported = [s.level for s in result.report.samples]
    return levels, reported


@pytest.mark.parametrize("name", ["lossy-wifi", "short-outage", "hd-constrained"])
def test_replaying_inputs_with_the_same_config_reproduces_every_level(name: str) -> None:
    levels, reported = _replay(name, ScorerConfig())
    assert levels == reported


def test_replaying_with_another_config_changes_levels() -> None:
    stricter = attrs.evolve(ScorerConfig(), video_loss_weight=20.0, audio_loss_weight=20.0)
    levels, reported = _replay("lossy-wifi", stricter)
    assert levels != reported
    assert all(a <= b for a, b in zip(levels, reported, strict=True) if b is not None)
