"""Re-scoring a sweep from its stored scorer inputs: the default constants give back every stored
level exactly, other constants move the levels they should; scorer config files are validated
(file, key, problem)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import attrs
import pytest
from rtcprobe.core.errors import ConfigError
from rtcprobe.core.quality import ScorerConfig
from rtcprobe.netem.scenario import ScenarioError
from rtcprobe.netem.scorer_config import load_scorer_config, scorer_config_from_dict

from rtcprobe.cli import main
from rtcprobe.sweep import Where, load, run_sweep
from rtcprobe.sweep_rescore import rescore_rows
from rtcprobe.sweep_table import read_table

# Outages of 3 s (the level dips and recovers) and 9 s (the connection goes "disconnected": the
# scorer is also fed reconnection changes between samples), with and without loss.
SPEC = """
base = "base.toml"
seeds = [1, 2]
[axes]
"network.outages" = [[], [[4.0, 7.0]], [[4.0, 13.0]]]
"network.loss" = [0.0, 0.03]
"""
BASE = 'duration = 12\n[network]\ndelay_ms = 15\njitter_ms = 2\nbandwidth_kbps = 20000\n'
POINT = ("network.outages", "network.loss", "seed")


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("rescore")
    (tmp / "base.toml").write_text(BASE)
    (tmp / "sweep.toml").write_text(textwrap.dedent(SPEC))
    out = tmp / "results.parquet"
    run_sweep(load(tmp / "sweep.toml"), out, Where.serial())
    table, _ = read_table(out)
    return out, table.to_pylist()


def test_the_sweep_covers_reconnections(rows: tuple[Path, list[dict[str, Any]]]) -> None:
    _, table = rows
    extra = [r for r in table if r["sample_input_index"] != list(range(len(r["sample_level"])))]
    assert extra, "some run fed its scorer more inputs than it has samples (reconnecting)"
    assert all(r["outcome"] == "completed" for r in table)


def test_default_constants_reproduce_every_stored_level(rows: tuple[Path, list[dict[str, Any]]]) -> None:
    _, table = rows
    outcome = rescore_rows(table, ScorerConfig(), POINT)
    assert outcome.changes == ()
    for old, new in zip(table, outcome.rows, strict=True):
        assert new == old  # every column, including sample_level
    assert outcome.level_deltas == {0: len(table)}


def test_stricter_loss_weights_lower_only_lossy_runs(rows: tuple[Path, list[dict[str, Any]]]) -> None:
    _, table = rows
    strict = attrs.evolve(ScorerConfig(), audio_loss_weight=20.0, video_loss_weight=20.0)
    outcome = rescore_rows(table, strict, POINT)
    moved = {(c.point["network.outages"], c.point["network.loss"], c.point["seed"]) for c in outcome.changes}
    assert moved and all(loss == 0.03 for _, loss, _ in moved)
    for old, new in zip(table, outcome.rows, strict=True):
        assert all(n <= o for n, o in zip(new["sample_level"], old["sample_level"], strict=True))
        assert new["level"] <= old["level"]
        if old["network.loss"] == 0.0:
            assert new == old
    assert all(c.delta is not None and c.delta <= 0 for c in outcome.changes)


def test_a_shorter_rise_interval_recovers_sooner(rows: tuple[Path, list[dict[str, Any]]]) -> None:
    _, table = rows
    outcome = rescore_rows(table, attrs.evolve(ScorerConfig(), rise_interval=0.5), POINT)
    after_outage = [c for c in outcome.changes if c.point["network.outages"] != "[]"]
    # Each run it changes ends higher or spends more of its samples higher (under loss the final
    # level may be the loss's, whatever the rise rate).
    assert after_outage and any(c.delta is not None and c.delta > 0 for c in after_outage)
    assert all(c.level[1] > c.level[0] or c.level_median[1] > c.level_median[0] for c in after_outage)
    for old, new in zip(table, outcome.rows, strict=True):
        assert new["level"] >= old["level"]
        assert new["level_min"] == old["level_min"]  # drops show at once, whatever the rise rate


def test_rescore_cli(rows: tuple[Path, list[dict[str, Any]]], tmp_path: Path,
                     capsys: pytest.CaptureFixture[str]) -> None:
    results, table = rows
    assert main(["rescore", str(results)]) == 0
    assert "final level moved in 0 of 12 runs" in capsys.readouterr().out
    config = tmp_path / "strict.toml"
    config.write_text("video_loss_weight = 20\naudio_loss_weight = 20\n")
    out = tmp_path / "strict.parquet"
    assert main(["rescore", str(results), "--scorer-config", str(config), "--out", str(out), "--json"]) == 0
    import json

    summary = json.loads(capsys.readouterr().out)
    assert summary["runs"] == 12 and summary["level_moved"] > 0
    assert sum(summary["level_deltas"].values()) == 12
    assert all(int(k) <= 0 for k in summary["level_deltas"])
    first = summary["changes"][0]
    assert first["point"]["network.loss"] == 0.03 and first["level"][1] - first["level"][0] == first["delta"]
    rescored, meta = read_table(out)
    assert meta["scorer_config"] == {"audio_loss_weight": 20.0, "video_loss_weight": 20.0}
    by_key = {r["point_key"]: r for r in rescored.to_pylist()}
    for c in summary["changes"]:
        row = next(r for r in table if all(r[k] == v for k, v in c["point"].items()))
        assert by_key[row["point_key"]]["level"] == c["level"][1]
    # bad input: exit 2, one line naming the file, the key and the problem
    config.write_text("video_los_weight = 20\n")
    assert main(["rescore", str(results), "--scorer-config", str(config)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"rtcprobe rescore: error: {config}: video_los_weight: unknown key (did you mean 'video_loss_weight'?)")
    assert main(["rescore", str(config)]) == 2
    assert "not a Parquet file" in capsys.readouterr().err


def test_scorer_config_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(textwrap.dedent("""
        level_thresholds = [92, 84, 76, 68]
        video_loss_weight = 10
        rise_interval = 3
        video_bitrate_table = [[129600, 250000], [518400, 600000.5]]
    """))
    config = load_scorer_config(path)
    assert config == attrs.evolve(ScorerConfig(), level_thresholds=(92.0, 84.0, 76.0, 68.0), video_loss_weight=10.0,
                                  rise_interval=3.0, video_bitrate_table=((129600, 250000.0), (518400, 600000.5)))


BAD_CONFIG = [
    ("rise_intervall = 3", "rise_intervall", "unknown key (did you mean 'rise_interval'?)"),
    ("colour = 3", "colour", "unknown key (known keys: level_thresholds, "),
    ("rise_interval = 0", "rise_interval", "must be greater than 0, got 0"),
    ("rise_interval = true", "rise_interval", "must be a number, got a boolean (true)"),
    ("latency_window = 'long'", "latency_window", "must be a number, got a string ('long')"),
    ("level_thresholds = [90, 80, 70]", "level_thresholds", "must be an array of 4 scores"),
    ("level_thresholds = 90", "level_thresholds", "must be an array of 4 scores"),
    ("level_thresholds = [90, 80, 'x', 60]", "level_thresholds[2]", "must be a number, got a string ('x')"),
    ("level_thresholds = [190, 80, 70, 60]", "level_thresholds[0]", "must be between 0 and 100, got 190"),
    ("level_thresholds = [90, 80, 70, 0]", "level_thresholds[3]", "must be greater than 0"),
    ("level_thresholds = [90, 80, 80, 60]", "level_thresholds[2]", "must be lower than level_thresholds[1] (80)"),
    ("video_bitrate_table = []", "video_bitrate_table", "must be a non-empty array of [max_pixels, bps] rows"),
    ("video_bitrate_table = [[1, 2, 3]]", "video_bitrate_table[0]", "must be a row [max_pixels, bps]"),
    ("video_bitrate_table = [[1.5, 2]]", "video_bitrate_table[0][0]", "must be an integer, got a number (1.5)"),
    ("video_bitrate_table = [[100, 0]]", "video_bitrate_table[0][1]", "must be greater than 0, got 0"),
    ("video_bitrate_table = [[100, 5], [100, 6]]", "video_bitrate_table[1][0]", "max_pixels must increase"),
    ("video_bitrate_table = [[100, 5], [200, 4]]", "video_bitrate_table[1][1]", "bps must not decrease"),
]


@pytest.mark.parametrize(("text", "key", "problem"), BAD_CONFIG, ids=[b[1] for b in BAD_CONFIG])
def test_bad_scorer_config_names_file_key_and_problem(tmp_path: Path, text: str, key: str, problem: str) -> None:
    path = tmp_path / "scorer.toml"
    path.write_text(text + "\n")
    with pytest.raises(ScenarioError) as info:
        load_scorer_config(path)
    assert (info.value.source, info.value.key) == (str(path), key)
    assert problem in info.value.problem
    assert str(info.value) == f"{path}: {key}: {info.value.problem}"


def test_scorer_config_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="file not found"):
        load_scorer_config(tmp_path / "none.toml")
    (tmp_path / "e.toml").write_text("# nothing\n")
    with pytest.raises(ScenarioError, match="empty scorer config"):
        load_scorer_config(tmp_path / "e.toml")
    with pytest.raises(ConfigError):
        scorer_config_from_dict([1, 2])  # type: ignore[arg-type]
