"""Sweep specs: axes and [set] over scenario keys by dotted path, seeds, and one clear error
(spec file, key, problem) for every kind of bad input — before anything runs."""

from __future__ import annotations

import re
import textwrap
import tomllib
from pathlib import Path

import pytest
from rtcprobe.core.errors import ConfigError
from rtcprobe.netem.scenario import ScenarioError
from rtcprobe.netem.sweep import load_sweep, sweep_from_dict
from rtcprobe.scenarios import path_of

from rtcprobe.sweep import load

BASE = """
name = "base-net"
duration = 5
seed = 4
[network]
delay_ms = 20
loss = 0.01
[network.downlink]
trace = "traces/t.down"
[[phase]]
at = 2.0
loss = 0.2
[[phase]]
at = 4.0
reset = true
"""


def write(tmp_path: Path, spec: str, name: str = "sweep.toml") -> Path:
    (tmp_path / "traces").mkdir(exist_ok=True)
    (tmp_path / "traces" / "t.down").write_text("1\n2\n")
    (tmp_path / "base.toml").write_text(textwrap.dedent(BASE))
    path = tmp_path / name
    path.write_text(textwrap.dedent(spec))
    return path


def test_the_example_of_the_issue(tmp_path: Path) -> None:
    sweep = load(write(tmp_path, """
        base = "clean-broadband"            # a built-in name, or a path relative to this file
        seeds = [1, 2, 3]
        [axes]
        "network.loss" = [0.0, 0.02, 0.05]
        "network.delay_ms" = [10, 75, 150]
        "media.video" = [{ width = 320, height = 180, fps = 15 }, { width = 1280, height = 720, fps = 30 }]
    """))
    assert sweep.base_path == path_of("clean-broadband") and sweep.base_name == "clean-broadband"
    assert sweep.columns == ("network.loss", "network.delay_ms", "media.video", "seed")
    assert sweep.total == 54
    points = sweep.points()
    assert [p.index for p in points] == list(range(54))
    last = points[-1]
    assert (last.values[:2], last.seed) == ((0.05, 150), 3)
    sc = sweep.scenario(last.data)
    assert (sc.uplink.loss, sc.uplink.delay_ms, sc.downlink.loss) == (0.05, 150.0, 0.05)
    assert sc.media.video is not None and (sc.media.video.width, sc.media.video.fps) == (1280, 30.0)
    assert sc.uplink.bandwidth_kbps == 50000  # the rest of the base is kept
    assert sc.name == "clean-broadband"


def test_the_endpoint_model_can_be_set_or_swept(tmp_path: Path) -> None:
    sweep = load(write(tmp_path, """
        base = "base.toml"
        [set]
        "media.stack" = "aiortc"
    """))
    assert [sweep.scenario(p.data).stack for p in sweep.points()] == ["aiortc"]
    sweep = load(write(tmp_path, """
        base = "base.toml"
        [axes]
        "media.stack" = ["aiortc", "libwebrtc"]
    """))
    assert [sweep.scenario(p.data).stack for p in sweep.points()] == ["aiortc", "libwebrtc"]
    with pytest.raises(ScenarioError, match="stack"):
        load(write(tmp_path, """
            base = "base.toml"
            [axes]
            "media.stack" = ["aiortc", "chrome"]
        """))


def test_paths_into_directions_phases_and_loss_models(tmp_path: Path) -> None:
    sweep = load_sweep(write(tmp_path, """
        base = "base.toml"
        [set]
        "network.downlink.loss_model" = { kind = "gilbert-elliott", p = 0.01 }
        [axes]
        "network.uplink.bandwidth_kbps" = [500, 2000]
        "phase[0].at" = [1.0, 3.0]
        "phase[1].downlink.delay_ms" = [100]
        "network.downlink.loss_model.r" = [0.25]
    """))
    assert sweep.seeds == (4,)  # no seeds: the base scenario's own
    by_values = {p.values: sweep.scenario(p.data) for p in sweep.points()}
    sc = by_values[(2000, 3.0, 100, 0.25)]
    assert sc.uplink.bandwidth_kbps == 2000 and sc.downlink.bandwidth_kbps is None  # downlink has a trace
    assert [at for at, _ in sc.phases.uplink] == [3.0, 4.0]
    assert sc.phases.downlink[1][1].delay_ms == 100
    assert sc.downlink.loss_model is not None
    assert (sc.downlink.loss_model.p, sc.downlink.loss_model.r) == (0.01, 0.25)
    assert sc.downlink.trace is not None  # relative to the base file, as the base says


def test_dotted_keys_tables_and_set(tmp_path: Path) -> None:
    sweep = load_sweep(write(tmp_path, """
        base = "base.toml"
        seeds = [7, 8]
        [set]
        duration = 2
        media.video = { width = 320 }     # merged: the rest of the video spec keeps its defaults
        [axes.network]                    # the same as "network.loss" = [...]
        loss = [0.0, 0.1]
    """))
    assert [a.path for a in sweep.axes] == ["network.loss"]
    assert sweep.settings == (("duration", 2), ("media.video.width", 320))
    sc = sweep.scenario(sweep.points()[0].data)
    assert sc.duration == 2 and sc.media.video is not None
    assert (sc.media.video.width, sc.media.video.height) == (320, 480)


def test_swept_tables_replace_and_booleans_become_tables(tmp_path: Path) -> None:
    (tmp_path / "b.toml").write_text("[media]\nvideo = false\n")
    sweep = load_sweep(write(tmp_path, """
        base = "b.toml"
        [axes]
        "media.video.fps" = [10, 20]
    """))
    sc = sweep.scenario(sweep.points()[1].data)
    assert sc.media.video is not None and sc.media.video.fps == 20  # setting a video key publishes video


def test_fingerprint_follows_base_set_and_axes_not_values(tmp_path: Path) -> None:
    def fp(spec: str) -> str:
        return load_sweep(write(tmp_path, spec)).fingerprint("1.0")

    one = fp('base = "base.toml"\nseeds = [1]\n[axes]\n"network.loss" = [0.1]\n')
    assert one == fp('base = "base.toml"\nseeds = [1, 2]\n[axes]\n"network.loss" = [0.1, 0.2]\n')
    assert one != fp('base = "base.toml"\n[set]\nduration = 3\n[axes]\n"network.loss" = [0.1]\n')
    assert one != fp('base = "base.toml"\n[axes]\n"network.delay_ms" = [1]\n')


BAD = [
    # the spec's own keys
    ('base = "base.toml"\nseed = [1]', "seed", "unknown key (did you mean 'seeds'?)"),
    ('seeds = [1]', "base", "is required"),
    ('base = 5', "base", "must be a string, got an integer (5)"),
    ('base = ""', "base", "must name a built-in scenario or a scenario file"),
    ('base = "clean-broadbnd"', "base", "no such scenario file or built-in scenario (did you mean 'clean-broadband'?)"),
    ('base = "nets/missing.toml"', "base", "scenario file 'nets/missing.toml' not found"),
    ('base = "bad.toml"', "base", "bad.toml: network.loss: must be between 0 and 1, got 2"),
    ('base = "empty.toml"', "base", "empty scenario file"),
    ('base = "base.toml"\nseeds = 3', "seeds", "must be a non-empty array of integers >= 0, got an integer (3)"),
    ('base = "base.toml"\nseeds = []', "seeds", "must be a non-empty array"),
    ('base = "base.toml"\nseeds = [1, -2]', "seeds[1]", "must be between 0 and 2**63 - 1, got -2"),
    ('base = "base.toml"\nseeds = [1, 1.5]', "seeds[1]", "must be an integer >= 0, got a number (1.5)"),
    ('base = "base.toml"\nseeds = [1, 2, 1]', "seeds[2]", "seed 1 is given twice (also seeds[0])"),
    ('base = "base.toml"\naxes = 3', "axes", "must be a table of scenario keys and arrays of values"),
    ('base = "base.toml"\nset = [1]', "set", "must be a table of scenario keys and values"),
    # axis keys
    ('base = "base.toml"\n[axes]\n"network.los" = [0.1]', 'axes."network.los"',
     "unknown scenario key (did you mean 'network.loss'?)"),
    ('base = "base.toml"\n[axes]\n"netwrok.delay_ms" = [1]', 'axes."netwrok.delay_ms"',
     "unknown scenario key (did you mean 'network.delay_ms'?)"),
    ('base = "base.toml"\n[axes]\n"network.uplink.bandwith_kbps" = [1]', 'axes."network.uplink.bandwith_kbps"',
     "did you mean 'network.uplink.bandwidth_kbps'?"),
    ('base = "base.toml"\n[axes]\nseed = [1, 2]', "axes.seed", "not a sweepable key: the seeds have their own key"),
    ('base = "base.toml"\n[axes]\n"expect.level" = [[1, 5]]', 'axes."expect.level"', "a sweep does not check"),
    ('base = "base.toml"\n[axes]\nname = ["a", "b"]', "axes.name", "not a sweepable key"),
    ('base = "base.toml"\n[axes]\n"phase[2].at" = [1]', 'axes."phase[2].at"',
     "the base scenario has no phase[2]: its [[phase]] entries: 2 (phase[0]..phase[1])"),
    ('base = "clean-broadband"\n[axes]\n"phase[0].at" = [1]', 'axes."phase[0].at"', "entries: none"),
    ('base = "base.toml"\n[axes]\n"phase.at" = [1]', 'axes."phase.at"', "give the index, e.g. phase[0].at"),
    ('base = "base.toml"\n[axes]\n"network[0].loss" = [1]', 'axes."network[0].loss"', "network is not an array"),
    ('base = "base.toml"\n[axes]\n"network.loss.p" = [1]', 'axes."network.loss.p"', "network.loss is not a table"),
    ('base = "base.toml"\n[axes]\n"network..loss" = [1]', 'axes."network..loss"', "not a dotted key path"),
    ('base = "base.toml"\n[axes]\n"network.loss" = [0.1]\n[axes.network]\nloss = [0.2]', 'axes."network.loss"',
     "given twice (as a dotted key and as a table)"),
    ('base = "base.toml"\n[axes]\n"network" = [{ loss = 0.1 }]\n"network.delay_ms" = [5]',
     'axes."network.delay_ms"', "overlaps the axis 'network': one would overwrite the other"),
    ('base = "base.toml"\n[set]\n"network.loss" = 0.1\n[axes]\n"network" = [{}]', "axes.network",
     'overlaps set."network.loss"'),
    ('base = "base.toml"\n[set]\nphase = []\n"phase[0].at" = 1', 'set."phase[0].at"', "has no phase[0]"),
    ('base = "base.toml"\n[set]\n"netwrk.loss" = 0.1', 'set."netwrk.loss"', "did you mean 'network.loss'?"),
    # axis values
    ('base = "base.toml"\n[axes]\n"network.loss" = 0.1', 'axes."network.loss"',
     "must be a non-empty array of values, got a number (0.1)"),
    ('base = "base.toml"\n[axes]\n"network.loss" = []', 'axes."network.loss"', "must be a non-empty array"),
    ('base = "base.toml"\n[axes]\n"network.loss" = [0.1, 0.2, 0.1]', 'axes."network.loss"[2]',
     "the value 0.1 is given twice (also [0])"),
    ('base = "base.toml"\n[axes]\n"network.delay_ms" = [10, 10.0]', 'axes."network.delay_ms"[1]', "given twice"),
    # values that make an invalid scenario: the point and the scenario's own message
    ('base = "base.toml"\nseeds = [1, 2]\n[axes]\n"network.delay_ms" = [5, 10]\n"network.loss" = [0.1, 1.5]',
     'axes."network.loss"[1]',
     "makes point 3 of 8 invalid (network.delay_ms = 5, network.loss = 1.5): network.loss: must be between 0 and 1, "
     "got 1.5 (2 of 4 combinations are invalid)"),
    ('base = "base.toml"\n[axes]\n"media.video" = [{ width = 320, heigth = 180 }]', 'axes."media.video"[0]',
     "media.video.heigth: unknown key (did you mean 'height'?)"),
    ('base = "base.toml"\n[axes]\n"phase[1].at" = [3, 1]', 'axes."phase[1].at"[1]',
     "phase[1].at: must be greater than phase[0].at (2), got 1 (phases must be in time order)"),
    ('base = "base.toml"\n[axes]\n"network.loss_model" = [{ kind = "random", p = 0.1 }]',
     'axes."network.loss_model"[0]',
     "network.loss_model: set either loss (random loss) or loss_model, not both"),
    ('base = "base.toml"\n[axes]\n"network.downlink.bandwidth_kbps" = [100]', "axes",
     "set either bandwidth_kbps or trace, not both"),
    ('base = "base.toml"\n[set]\nduration = 0', "set.duration", "makes the base scenario invalid: duration: must be "
     "greater than 0, got 0"),
    ('base = "base.toml"\n[axes]\n"network.trace" = ["no\\u0000such"]', 'axes."network.trace"[0]',
     "network.trace: must be a path to a Mahimahi trace file, got a NUL byte"),
]


@pytest.mark.parametrize(("text", "key", "problem"), BAD, ids=[f"{b[1]}:{b[2][:30]}" for b in BAD])
def test_bad_spec_names_file_key_and_problem(tmp_path: Path, text: str, key: str, problem: str) -> None:
    (tmp_path / "bad.toml").write_text("[network]\nloss = 2\n")
    (tmp_path / "empty.toml").write_text("\n  \n")
    path = write(tmp_path, text + "\n")
    with pytest.raises(ScenarioError) as info:
        load(path)
    err = info.value
    assert (err.source, err.key) == (str(path), key), str(err)
    assert problem in err.problem
    assert str(err) == f"{path}: {key}: {err.problem}"
    assert isinstance(err, ConfigError)
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


def test_spec_file_problems(tmp_path: Path) -> None:
    for text, problem in (("", "empty sweep spec"), ("# nothing yet\n", "empty sweep spec"),
                          ("base = [", "invalid TOML")):
        path = write(tmp_path, text)
        with pytest.raises(ScenarioError) as info:
            load(path)
        assert info.value.key == "" and problem in info.value.problem
    with pytest.raises(ScenarioError, match="file not found"):
        load(tmp_path / "nope.toml")


def test_without_a_library_a_bare_name_is_a_path(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="scenario file 'clean-broadband' not found"):
        sweep_from_dict({"base": "clean-broadband"}, source="s.toml", base_dir=tmp_path)


SWEEPS = Path(__file__).resolve().parents[1] / "scenarios" / "SWEEPS.md"
EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "sweep-loss-delay.toml"


def test_the_docs_examples_are_valid() -> None:
    """The spec and the scorer config in SWEEPS.md, and the spec of its figure: no drift."""
    from rtcprobe.netem.scorer_config import scorer_config_from_dict

    blocks = [tomllib.loads(b) for b in re.findall(r"```toml\n(.*?)```", SWEEPS.read_text(), re.S)]
    specs = [b for b in blocks if "base" in b]
    configs = [b for b in blocks if "level_thresholds" in b]
    assert len(specs) == 1 and len(configs) == 1
    sweep = sweep_from_dict(specs[0], source="SWEEPS.md", base_dir=SWEEPS.parent, find_builtin=path_of)
    assert sweep.total == 54 and [a.path for a in sweep.axes] == ["network.loss", "network.delay_ms", "media.video"]
    assert scorer_config_from_dict(configs[0], source="SWEEPS.md").video_loss_weight == 10
    figure = load(EXAMPLE)
    assert figure.total == 7 * 6 * 2 * 3
