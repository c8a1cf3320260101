"""The sweep commands: rtcprobe sweep / sweep-plot / rescore, their help, output and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rtcprobe.cli import main

SPEC = """
base = "clean-broadband"
seeds = [1, 2]
[set]
duration = 3
[axes]
"network.loss" = [0.0, 0.05]
"network.delay_ms" = [10, 150]
"""

PNG = b"\x89PNG\r\n\x1a\n"


def spec(tmp_path: Path, text: str = SPEC) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("command", ["sweep", "rescore", "sweep-plot"])
def test_help_has_examples_and_exit_codes(command: str) -> None:
    r = subprocess.run([sys.executable, "-m", "rtcprobe", command, "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"usage: rtcprobe {command}" in r.stdout
    assert f"  rtcprobe {command} " in r.stdout  # an example command line
    assert "Exit codes:" in r.stdout


def test_sweep_json_summary_plot_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, plot = tmp_path / "results.parquet", tmp_path / "heat.png"
    args = ["sweep", str(spec(tmp_path)), "--out", str(out), "--json", "--plot", str(plot)]
    assert main(args) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert (summary["points"], summary["ran"], summary["resumed"], summary["rows"]) == (8, 8, 0, 8)
    assert summary["axes"] == ["network.loss", "network.delay_ms"] and summary["crashed"] == []
    assert summary["outcomes"] == {"completed": 8} and summary["where"].startswith("a local pool of")
    assert sum(summary["levels"].values()) == 8
    assert "8/8 runs" in captured.err and "ETA" in captured.err  # the progress, on stderr
    assert plot.read_bytes().startswith(PNG)
    assert pq.read_table(out).num_rows == 8
    first = out.read_bytes()

    assert main([*args[:-2], "--workers", "2"]) == 0  # resumed: nothing left to run
    summary = json.loads(capsys.readouterr().out)
    assert (summary["resumed"], summary["ran"]) == (8, 0)
    assert summary["where"] == "a Dask LocalCluster of 2 workers"
    assert out.read_bytes() == first

    assert main(["sweep", str(spec(tmp_path)), "--out", str(out)]) == 0  # the text summary
    text = capsys.readouterr().out
    assert "8 points of clean-broadband (network.loss, network.delay_ms, seed)" in text
    assert f"wrote {out} (8 rows)" in text


def test_sweep_plot_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results.parquet"
    assert main(["sweep", str(spec(tmp_path)), "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    png = tmp_path / "rtt.png"
    assert main(["sweep-plot", str(out), "--x", "network.delay_ms", "--y", "seed", "--metric", "rtt_avg",
                 "--panel", "network.loss", "--out", str(png)]) == 0
    assert png.read_bytes().startswith(PNG)
    assert "rtt_avg over network.delay_ms x seed, a panel per network.loss" in capsys.readouterr().out
    for bad, message in (
        (["--metric", "levle"], "--metric 'levle': not a column of this sweep (did you mean 'level'?)"),
        (["--x", "network.los"], "--x 'network.los': not a column of this sweep (did you mean 'network.loss'?)"),
        (["--x", "seed", "--y", "seed"], "--x, --y and --panel must be different columns"),
    ):
        assert main(["sweep-plot", str(out), "--out", str(png), *bad]) == 2
        assert message in capsys.readouterr().err
    assert main(["sweep-plot", str(tmp_path / "none.parquet"), "--out", str(png)]) == 2
    assert "file not found" in capsys.readouterr().err


def test_bad_input_exits_2_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results.parquet"
    bad = spec(tmp_path, SPEC.replace('"network.delay_ms"', '"network.dealy_ms"'))
    assert main(["sweep", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f'rtcprobe sweep: error: {bad}: axes."network.dealy_ms": unknown scenario key '
                   "(did you mean 'network.delay_ms'?)")
    bad = spec(tmp_path, SPEC.replace("[0.0, 0.05]", "[0.0, 1.05]"))
    assert main(["sweep", str(bad), "--out", str(out)]) == 2
    assert 'axes."network.loss"[1]: makes point 5 of 8 invalid' in capsys.readouterr().err
    only_seeds = spec(tmp_path, 'base = "clean-broadband"\nseeds = [1, 2]\n')
    assert main(["sweep", str(only_seeds), "--out", str(out), "--plot", str(tmp_path / "p.png")]) == 2
    assert "a heatmap needs an axis" in capsys.readouterr().err
    assert main(["sweep", str(spec(tmp_path)), "--out", str(tmp_path / "no" / "such.parquet")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()
    # results of another sweep
    (tmp_path / "other.toml").write_text(textwrap.dedent(SPEC).replace("duration = 3", "duration = 2"))
    assert main(["sweep", str(tmp_path / "other.toml"), "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    assert main(["sweep", str(spec(tmp_path)), "--out", str(out)]) == 2
    assert "holds the results of another sweep" in capsys.readouterr().err


def test_workers_and_scheduler_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["sweep", str(spec(tmp_path)), "--out", "x.parquet", "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        main(["sweep", str(spec(tmp_path)), "--out", "x.parquet", "--workers", "0"])


@pytest.mark.slow
def test_ctrl_c_saves_what_ran_and_the_rerun_resumes(tmp_path: Path) -> None:
    import signal

    from rtcprobe.sweep import Where, load, run_sweep

    path = spec(tmp_path, """
        base = "lossy-wifi"
        seeds = [1, 2, 3, 4]
        [axes]
        "network.loss" = [0.0, 0.01, 0.02, 0.05]
        "network.delay_ms" = [10, 50, 100, 200]
    """)
    reference = tmp_path / "reference.parquet"
    run_sweep(load(path), reference, Where.serial())
    out = tmp_path / "results.parquet"
    proc = subprocess.Popen([sys.executable, "-m", "rtcprobe", "sweep", str(path), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:  # progress lines, one per tenth of the sweep when not on a terminal
        if "/64 runs" in line and not line.startswith("sweep [....."):
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted; the runs done so far are in" in err
    saved = pq.read_table(out).num_rows
    assert 0 < saved < 64
    assert main(["sweep", str(path), "--out", str(out), "--json"]) == 0
    assert out.read_bytes() == reference.read_bytes()


def test_scheduler_runs_on_an_existing_dask_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from distributed import LocalCluster

    from rtcprobe.sweep import Where, load, run_sweep

    path = spec(tmp_path)
    reference = tmp_path / "reference.parquet"
    run_sweep(load(path), reference, Where.serial())
    out = tmp_path / "results.parquet"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster:
        assert main(["sweep", str(path), "--out", str(out), "--scheduler", cluster.scheduler_address, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["where"] == f"the Dask cluster at {cluster.scheduler_address}" and summary["ran"] == 8
    assert out.read_bytes() == reference.read_bytes()
