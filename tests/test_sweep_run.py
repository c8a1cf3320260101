"""Sweeps through the simulator: the table does not depend on where or in what order the points
ran (this process, a local process pool, a real Dask LocalCluster), and an interrupted sweep
resumes to the very same file."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from rtcprobe.core.errors import ConfigError
from rtcprobe.drivers.sim import run_simulation
from rtcprobe.netem.scenario import ScenarioError

from rtcprobe.sweep import Where, load, run_sweep
from rtcprobe.sweep_table import ResultsError, read_table

SPEC = """
base = "clean-broadband"
seeds = [1, 2]
[set]
duration = 3
[axes]
"network.loss" = [0.0, 0.04]
"network.delay_ms" = [10, 120]
"media.video" = [{ width = 320, height = 180, fps = 15 }, { width = 1280, height = 720, fps = 30 }]
"""


def write_spec(tmp_path: Path, text: str = SPEC, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The spec and its table, every point run in this process (the reference)."""
    tmp = tmp_path_factory.mktemp("serial")
    spec = write_spec(tmp)
    out = tmp / "serial.parquet"
    outcome = run_sweep(load(spec), out, Where.serial())
    assert (outcome.total, outcome.ran, outcome.resumed, outcome.crashed) == (16, 16, 0, ())
    return spec, out


def test_rows_are_the_simulator_reports_in_spec_order(serial: tuple[Path, Path]) -> None:
    spec, out = serial
    table, meta = read_table(out)
    rows = table.to_pylist()
    sweep = load(spec)
    assert table.column_names[:4] == ["network.loss", "network.delay_ms", "media.video", "seed"]
    assert [a["path"] for a in meta["axes"]] == ["network.loss", "network.delay_ms", "media.video"]
    # The cartesian product in spec order, seeds innermost.
    assert [(r["network.loss"], r["network.delay_ms"], r["seed"]) for r in rows[:4]] == [
        (0.0, 10, 1), (0.0, 10, 2), (0.0, 10, 1), (0.0, 10, 2)]
    assert [json.loads(r["media.video"])["width"] for r in rows[:4]] == [320, 320, 1280, 1280]
    # Each row is exactly what the simulator reports for its point.
    for point, row in zip(sweep.points(), rows, strict=True):
        report = run_simulation(sweep.scenario(point.data), seed=point.seed).report
        d = report.to_dict()
        assert row["report"] == report.to_json(indent=None)
        assert row["level"] == d["networkQuality"]["level"]
        assert row["rtt_avg"] == d["stats"]["rtt"]["average"]  # ms, as in the report
        assert row["jitter_avg"] == d["stats"]["jitter"]["average"]  # seconds, as in the report
        assert row["packet_loss_avg"] == d["stats"]["packetLoss"]["average"]  # percent
        assert row["sample_level"] == [s["level"] for s in d["samples"]]
        assert row["sample_rtt"] == [s["rtt"] for s in d["samples"]]
        assert row["level_min"] == min(row["sample_level"])
        assert row["outcome"] == "completed" and row["error_code"] is None
    # The sweep says something: 4 % loss costs levels that 0 % loss does not. (Clean, the small
    # video scores 5; 720p may score 4 with a browser's sender, which starts at 300 kbit/s.)
    clean = [r["level"] for r in rows if r["network.loss"] == 0.0 and r["network.delay_ms"] == 10]
    lossy = [r["level"] for r in rows if r["network.loss"] == 0.04]
    assert clean[:2] == [5, 5] and max(lossy) < min(clean)


def test_local_pool_and_dask_local_cluster_write_the_same_bytes(serial: tuple[Path, Path], tmp_path: Path) -> None:
    spec, reference = serial
    sweep = load(spec)
    pool = tmp_path / "pool.parquet"
    run_sweep(sweep, pool, Where.pool(2), batch_size=3)
    dask = tmp_path / "dask.parquet"
    outcome = run_sweep(sweep, dask, Where.dask_local(2), batch_size=1)  # 16 tasks, any order
    assert outcome.ran == 16 and not outcome.crashed
    assert pool.read_bytes() == reference.read_bytes()
    assert dask.read_bytes() == reference.read_bytes()


def test_interrupted_sweep_resumes_to_the_same_table(serial: tuple[Path, Path], tmp_path: Path) -> None:
    spec, reference = serial
    sweep = load(spec)
    out = tmp_path / "resumed.parquet"
    seen: list[dict[str, Any]] = []

    def interrupt_after_five(row: dict[str, Any]) -> None:
        seen.append(row)
        if len(seen) == 5:
            raise KeyboardInterrupt  # what Ctrl-C does in the middle of a sweep

    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, out, Where.dask_local(2), batch_size=2, on_row=interrupt_after_five)
    partial = pq.read_table(out)
    assert partial.num_rows == 5  # what ran was saved on the way out
    assert sorted(partial.column("point_key").to_pylist()) == sorted(r["point_key"] for r in seen)

    outcome = run_sweep(sweep, out, Where.pool(2))
    assert (outcome.resumed, outcome.ran) == (5, 11)
    assert out.read_bytes() == reference.read_bytes()
    again = run_sweep(sweep, out, Where.serial())  # complete: nothing left to run, file untouched
    assert (again.resumed, again.ran) == (16, 0)
    assert out.read_bytes() == reference.read_bytes()


def test_a_grown_spec_runs_only_the_new_points(serial: tuple[Path, Path], tmp_path: Path) -> None:
    spec, reference = serial
    out = tmp_path / "grown.parquet"
    out.write_bytes(reference.read_bytes())
    grown = write_spec(tmp_path, SPEC.replace("seeds = [1, 2]", "seeds = [1, 2, 3]"))
    outcome = run_sweep(load(grown), out, Where.serial())
    assert (outcome.resumed, outcome.ran, outcome.dropped) == (16, 8, 0)
    fresh = tmp_path / "fresh.parquet"
    run_sweep(load(grown), fresh, Where.serial())
    assert out.read_bytes() == fresh.read_bytes()
    # Shrinking drops the rows that are no longer points of the spec.
    outcome = run_sweep(load(spec), out, Where.serial())
    assert (outcome.resumed, outcome.ran, outcome.dropped) == (16, 0, 8)
    assert out.read_bytes() == reference.read_bytes()


def test_results_of_another_sweep_are_not_mixed_in(serial: tuple[Path, Path], tmp_path: Path) -> None:
    _, reference = serial
    out = tmp_path / "other.parquet"
    out.write_bytes(reference.read_bytes())
    other = write_spec(tmp_path, SPEC.replace("duration = 3", "duration = 4"))  # another base after [set]
    with pytest.raises(ResultsError, match="holds the results of another sweep"):
        run_sweep(load(other), out, Where.serial())
    assert out.read_bytes() == reference.read_bytes()
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(ResultsError, match="not a Parquet file"):
        run_sweep(load(other), junk, Where.serial())


def test_a_run_that_raises_is_reported_and_not_stored(tmp_path: Path) -> None:
    (tmp_path / "up.trace").write_text("1\n")
    (tmp_path / "base.toml").write_text('duration = 2\n[network.uplink]\ntrace = "up.trace"\n')
    spec = write_spec(tmp_path, 'base = "base.toml"\n[axes]\n"network.delay_ms" = [5, 10]\n')
    sweep = load(spec)  # valid: the trace exists now
    (tmp_path / "up.trace").unlink()  # ... and is gone when the worker parses the point
    out = tmp_path / "out.parquet"
    outcome = run_sweep(sweep, out, Where.serial())
    assert outcome.ran == 0 and len(outcome.crashed) == 2
    assert "trace file 'up.trace' not found" in outcome.crashed[0].error
    assert outcome.crashed[0].point == "(network.delay_ms = 5, seed = 0)"
    assert pq.read_table(out).num_rows == 0
    (tmp_path / "up.trace").write_text("1\n")  # fixed: the next run retries them
    outcome = run_sweep(sweep, out, Where.serial())
    assert (outcome.ran, outcome.crashed) == (2, ())


def test_failed_preflights_are_rows_with_their_error(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, """
        base = "long-outage"
        [axes]
        "network.delay_ms" = [20, 40]
    """)
    outcome = run_sweep(load(spec), None, Where.serial())
    assert [r["outcome"] for r in outcome.rows] == ["failed", "failed"]
    assert [r["error_code"] for r in outcome.rows] == [53405, 53405]
    assert outcome.rows[0]["level"] is None and outcome.rows[0]["scorer_inputs"] == "[]"


def test_unreachable_scheduler_is_bad_input(serial: tuple[Path, Path], tmp_path: Path) -> None:
    spec, _ = serial
    out = tmp_path / "never.parquet"
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler"):
        run_sweep(load(spec), out, Where.dask("tcp://127.0.0.1:9", connect_timeout=1.0))
    assert not out.exists()  # nothing ran: no empty table left behind


def test_load_errors_are_scenario_errors(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, 'base = "clean-broadbnd"\n')
    with pytest.raises(ScenarioError) as info:
        load(spec)
    assert str(info.value) == f"{spec}: base: no such scenario file or built-in scenario " \
        "(did you mean 'clean-broadband'?)"
