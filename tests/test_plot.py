"""Plots of a report: a PNG with the samples, and a clear error without matplotlib."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from rtcprobe.core.errors import ConfigError
from rtcprobe.drivers.sim import simulate
from rtcprobe.netem.scenario import Scenario

from rtcprobe.plot import INSTALL_HINT, PlotUnavailable, plot_report

PNG = b"\x89PNG\r\n\x1a\n"


def test_plot_of_a_completed_run(tmp_path: Path) -> None:
    report = simulate(Scenario.from_dict({"name": "p", "duration": 3, "network": {"delay_ms": 20, "loss": 0.03}}))
    out = plot_report(report, tmp_path / "r.png")
    data = out.read_bytes()
    assert data[:8] == PNG and len(data) > 10_000


def test_plot_of_a_failed_run_and_of_plain_json(tmp_path: Path) -> None:
    report = simulate(Scenario.from_dict({"name": "dead", "duration": 1, "network": {"outage": True}}))
    assert report.error is not None
    assert plot_report(report.to_dict(), tmp_path / "f.png").read_bytes()[:8] == PNG


def test_missing_matplotlib_is_a_clear_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    report = simulate(Scenario.from_dict({"name": "p", "duration": 1}))
    with pytest.raises(PlotUnavailable, match=r"pip install 'rtcprobe\[plot\]'") as exc:
        plot_report(report, tmp_path / "x.png")
    assert isinstance(exc.value, ConfigError) and str(exc.value) == INSTALL_HINT
    assert not (tmp_path / "x.png").exists()


def test_cli_plot_without_matplotlib_exits_2_before_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from rtcprobe.cli import main

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["run", "clean-broadband", "--plot", str(tmp_path / "x.png")]) == 2
    captured = capsys.readouterr()
    assert "pip install 'rtcprobe[plot]'" in captured.err and "mediaStarted" not in captured.err
