"""Scenario files: a full example, layering and phases, and one clear error (file, key path,
problem) for every kind of bad input."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
from rtcprobe.core.errors import ConfigError
from rtcprobe.netem import GilbertElliott, Link, LinkConfig
from rtcprobe.netem.expect import Expect
from rtcprobe.netem.scenario import MediaDemand, Scenario, ScenarioError, ScenarioPhases, VideoSpec

FULL = """
name = "lossy-wifi"
description = "Wi-Fi with bursty uplink loss, a cellular-like downlink and a 2 s outage"
duration = 10
seed = 7

[media]
audio = true
video = { width = 320, height = 240, fps = 15 }

[network]
delay_ms = 20
jitter_ms = 5
jitter_distribution = "normal"
loss = 0.01
bandwidth_kbps = 5000
queue_packets = 100
outages = [[8.0, 9.0]]

[network.uplink]
loss_model = { kind = "gilbert-elliott", p = 0.01, r = 0.3, h = 0.0, k = 1.0 }
queue_bytes = 60000

[network.downlink]
trace = "traces/t.down"
reorder = true

[[phase]]
at = 4.0
loss = 1.0

[[phase]]
at = 6.0
reset = true
[phase.uplink]
delay_ms = 80

[[phase]]
at = 7.5
outage = true
[phase.downlink]
jitter_ms = 0

[expect]
outcome = "completed"
events = ["mediaAcquired", "connected", "mediaStarted"]
rtt_ms = [40, 200]
jitter_ms = [0, 30]
packet_loss = [0, 50]
min_level = [0, 5]
"""


def write(tmp_path: Path, text: str, name: str = "lossy.toml") -> Path:
    (tmp_path / "traces").mkdir(exist_ok=True)
    (tmp_path / "traces" / "t.down").write_text("1\n2\n2\n4\n")
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_full_example(tmp_path: Path) -> None:
    sc = Scenario.from_toml(write(tmp_path, FULL))
    assert (sc.name, sc.duration, sc.seed) == ("lossy-wifi", 10.0, 7)
    assert sc.description.startswith("Wi-Fi")
    assert sc.source == str(tmp_path / "lossy.toml")
    assert sc.media == MediaDemand(audio=True, video=VideoSpec(width=320, height=240, fps=15))

    up, down = sc.uplink, sc.downlink
    assert up.delay_ms == 20 and up.jitter_ms == 5 and up.jitter_distribution == "normal"
    assert up.loss == 0 and up.loss_model == GilbertElliott(p=0.01, r=0.3, h=0.0, k=1.0)
    assert up.bandwidth_kbps == 5000 and up.queue_packets == 100 and up.queue_bytes == 60000
    assert up.outages == ((8.0, 9.0),) and down.outages == ((8.0, 9.0),)
    assert down.loss == 0.01 and down.loss_model is None
    assert down.trace is not None and down.trace.timestamps_ms == (1, 2, 2, 4)
    assert down.bandwidth_kbps is None  # a trace replaces the network-wide bandwidth
    assert down.reorder and not up.reorder

    # Phases: cumulative changes, `reset` goes back to the un-phased config first.
    assert [at for at, _ in sc.phases.uplink] == [4.0, 6.0, 7.5]
    assert [at for at, _ in sc.phases.downlink] == [4.0, 6.0, 7.5]
    (_, up4), (_, up6), (_, up75) = sc.phases.uplink
    assert up4.loss == 1.0 and up4.loss_model is None  # `loss` replaces the Gilbert-Elliott model
    assert up6 == up.with_changes(delay_ms=80)
    assert up75 == up6.with_changes(outage=True)
    (_, down4), (_, down6), (_, down75) = sc.phases.downlink
    assert down4.loss == 1.0
    assert down6 == down
    assert down75 == down.with_changes(outage=True, jitter_ms=0.0)

    assert sc.expect == Expect(
        outcome="completed", events=("mediaAcquired", "connected", "mediaStarted"),
        rtt_ms=(40, 200), jitter_ms=(0, 30), packet_loss=(0, 50), min_level=(0, 5),
    )


def test_build_links_is_deterministic_and_applies_phases(tmp_path: Path) -> None:
    sc = Scenario.from_toml(write(tmp_path, FULL))
    t = np.arange(0, 10, 0.002)
    s = np.full(len(t), 300)

    def run() -> tuple[np.ndarray, np.ndarray]:
        up, down = sc.build_links(np.random.default_rng(sc.seed))
        assert isinstance(up, Link) and isinstance(down, Link)
        return up.send_batch(t, s), down.send_batch(t, s)

    (u1, d1), (u2, d2) = run(), run()
    np.testing.assert_array_equal(u1, u2)
    np.testing.assert_array_equal(d1, d2)
    assert np.isnan(u1[(t >= 4) & (t < 6)]).all()  # phase at 4: loss = 1
    assert np.isnan(d1[(t >= 7.5)]).all()  # phase at 7.5: outage
    assert not np.array_equal(np.isnan(u1), np.isnan(d1))  # independent streams per direction
    up, _ = sc.build_links()  # seeded from the scenario when no generator is given
    assert isinstance(up, Link)


def test_minimal_scenario_gets_defaults() -> None:
    sc = Scenario.from_dict({})
    assert sc.name == "scenario" and sc.duration == 10 and sc.seed == 0
    assert sc.uplink == LinkConfig() and sc.downlink == LinkConfig()
    assert sc.media == MediaDemand() and sc.expect is None and sc.source == "<dict>"
    assert Scenario.from_dict({"media": {"video": False}}).media == MediaDemand(audio=True, video=None)


def test_name_defaults_to_the_file_stem(tmp_path: Path) -> None:
    assert Scenario.from_toml(write(tmp_path, "duration = 3\n", "flaky-link.toml")).name == "flaky-link"


def test_direction_overrides_and_switching_features_off(tmp_path: Path) -> None:
    sc = Scenario.from_dict({
        "network": {
            "bandwidth_kbps": 800, "queue_packets": 20,
            "loss_model": {"kind": "gilbert-elliott", "p": 0.1},
            "uplink": {"bandwidth_kbps": False, "queue_packets": False, "loss": 0.2},
            "downlink": {"loss_model": False},
        },
        "phase": [{"at": 1, "downlink": {"loss_model": {"kind": "random", "p": 0.3}}}],
    })
    assert sc.uplink.bandwidth_kbps is None and sc.uplink.queue_packets is None
    assert sc.uplink.loss == 0.2 and sc.uplink.loss_model is None
    assert sc.downlink.loss_model is None and sc.downlink.loss == 0 and sc.downlink.bandwidth_kbps == 800
    assert sc.phases.uplink == ()
    assert sc.phases.downlink == ((1.0, sc.downlink.with_changes(loss=0.3)),)
    gm = Scenario.from_dict({"network": {"loss_model": {"kind": "gilbert-elliott", "p": 0.2}}}).uplink.loss_model
    assert gm == GilbertElliott(p=0.2, r=0.8, h=0.0, k=1.0)  # netem defaults


def test_trace_paths_resolve_against_base_dir(tmp_path: Path) -> None:
    write(tmp_path, "")
    sc = Scenario.from_dict({"network": {"trace": "traces/t.down"}}, source="x", base_dir=tmp_path)
    assert sc.uplink.trace is sc.downlink.trace  # parsed once, shared


# -- bad input: one ScenarioError naming the file, the key path and the problem ------------------

BAD = [
    # unknown keys, with a suggestion
    ("dration = 10", "dration", "unknown key (did you mean 'duration'?)"),
    ("[network]\nuplink = { dealy_ms = 5 }", "network.uplink.dealy_ms", "did you mean 'delay_ms'?"),
    ("[network.uplink]\nloss_model = { kind = 'gilbert-elliott', p = 0.1, q = 0.2 }",
     "network.uplink.loss_model.q", "unknown key"),
    ("[[phase]]\nat = 1\n[phase.downlink]\nbandwith_kbps = 5", "phase[0].downlink.bandwith_kbps",
     "did you mean 'bandwidth_kbps'?"),
    ("[expect]\nrtt = [1, 2]", "expect.rtt", "did you mean 'rtt_ms'?"),
    ("[media]\nvideo = { width = 320, heigth = 240 }", "media.video.heigth", "did you mean 'height'?"),
    ("[netwrok]\ndelay_ms = 5", "netwrok", "did you mean 'network'?"),
    # wrong types (a boolean is not a number)
    ("[network]\nloss = true", "network.loss", "must be a number, got a boolean (true)"),
    ("[network]\ndelay_ms = '20'", "network.delay_ms", "must be a number, got a string ('20')"),
    ("[network]\nqueue_packets = true", "network.queue_packets", "must be an integer, got a boolean"),
    ("[network]\nqueue_packets = 10.5", "network.queue_packets", "must be an integer, got a number (10.5)"),
    ("seed = 1.5", "seed", "must be an integer"),
    ("name = 5", "name", "must be a string, got an integer (5)"),
    ("[network]\nreorder = 1", "network.reorder", "must be true or false, got an integer (1)"),
    ("network = 5", "network", "must be a table, got an integer (5)"),
    ("[network]\nuplink = 5", "network.uplink", "must be a table"),
    ("phase = 5", "phase", "must be an array of tables"),
    ("[network]\nbandwidth_kbps = true", "network.bandwidth_kbps", "must be a number, got a boolean (true)"),
    ("[media]\nvideo = 'hd'", "media.video", "must be true, false or a table"),
    ("[network]\nloss_model = 0.1", "network.loss_model", "must be a table"),
    # out of range
    ("[network.uplink]\nloss = 1.5", "network.uplink.loss", "must be between 0 and 1, got 1.5"),
    ("[network]\ndelay_ms = -5", "network.delay_ms", "must be at least 0, got -5"),
    ("duration = 0", "duration", "must be greater than 0, got 0"),
    ("duration = -3.5", "duration", "must be greater than 0"),
    ("seed = -1", "seed", "must be at least 0"),
    ("[network]\nqueue_packets = 0", "network.queue_packets", "must be at least 1, got 0"),
    ("[network]\nbandwidth_kbps = 0", "network.bandwidth_kbps", "must be greater than 0"),
    ("[network.uplink]\nloss_model = { kind = 'gilbert-elliott', p = 1.5 }", "network.uplink.loss_model.p",
     "must be between 0 and 1, got 1.5"),
    ("[network]\nloss_model = { kind = 'gilbert-elliott', p = 0.1, h = -0.1 }", "network.loss_model.h",
     "must be between 0 and 1"),
    ("[network]\njitter_distribution = 'gaussian'", "network.jitter_distribution",
     "must be one of 'uniform', 'normal', 'pareto', got 'gaussian'"),
    ("[network]\nloss_model = { p = 0.1 }", "network.loss_model.kind", "is required"),
    ("[network]\nloss_model = { kind = 'markov', p = 0.1 }", "network.loss_model.kind", "must be one of"),
    ("[network]\nloss_model = { kind = 'random', p = 0.1, r = 0.5 }", "network.loss_model.r", "unknown key"),
    ("[media]\nvideo = { width = 0 }", "media.video.width", "must be between 16 and 7680, got 0"),
    ("[media]\nvideo = { fps = 0 }", "media.video.fps", "must be greater than 0"),
    ("[media]\naudio = false\nvideo = false", "media", "must publish audio, video or both"),
    ("[network]\noutages = [[5, 4]]", "network.outages[0]", "needs 0 <= start < end, got [5, 4]"),
    ("[network.uplink]\noutages = [[1, 2], [3]]", "network.uplink.outages[1]", "must be [start, end]"),
    ("[network]\noutages = 3", "network.outages", "must be an array"),
    # contradictions
    ("[network]\nloss = 0.1\nloss_model = { kind = 'gilbert-elliott', p = 0.1 }", "network.loss_model",
     "set either loss (random loss) or loss_model, not both"),
    ("[network]\nbandwidth_kbps = 100\ntrace = 'traces/t.down'", "network.trace",
     "set either bandwidth_kbps or trace, not both"),
    # traces
    ("[network.uplink]\ntrace = 'traces/missing.up'", "network.uplink.trace",
     "trace file 'traces/missing.up' not found"),
    ("[network.downlink]\ntrace = 'traces/bad.down'", "network.downlink.trace",
     "traces/bad.down: line 3: expected an integer millisecond timestamp, got 'x7'"),
    ("[network.downlink]\ntrace = 'traces/unsorted.down'", "network.downlink.trace",
     "line 2: timestamps must not decrease (2 after 9)"),
    ("[network]\ntrace = ''", "network.trace", "must be a path"),
    # phases
    ("[[phase]]\nat = 2\n[[phase]]\nat = 5\n[[phase]]\nat = 3", "phase[2].at",
     "must be greater than phase[1].at (5), got 3 (phases must be in time order)"),
    ("[[phase]]\nat = 2\n[[phase]]\nat = 2", "phase[1].at", "must be greater than phase[0].at"),
    ("[[phase]]\nloss = 0.5", "phase[0].at", "is required"),
    ("[[phase]]\nat = -1", "phase[0].at", "must be at least 0"),
    ("[[phase]]\nat = 1\noutages = [[1, 2]]", "phase[0].outages", "outage windows are absolute times"),
    ("[[phase]]\nat = 1\nreset = 'yes'", "phase[0].reset", "must be true or false"),
    # expectations
    ("[expect]\nrtt_ms = [100, 10]", "expect.rtt_ms", "low must not exceed high"),
    ("[expect]\nrtt_ms = 100", "expect.rtt_ms", "must be an array [low, high]"),
    ("[expect]\npacket_loss = [0, 150]", "expect.packet_loss[1]", "must be between 0 and 100, got 150"),
    ("[expect]\nlevel = [2.5, 5]", "expect.level[0]", "must be an integer"),
    ("[expect]\nlevel = [0, 6]", "expect.level[1]", "must be between 0 and 5"),
    ("[expect]\nevents = ['mediaAcquired', 'iceConected']", "expect.events[1]",
     "unknown progress event 'iceConected' (did you mean 'iceConnected'?)"),
    ("[expect]\noutcome = 'passed'", "expect.outcome", "must be one of 'completed', 'failed'"),
    ("[expect]\noutcome = 'completed'\nerror_code = 53405", "expect.error_code", "contradicts outcome"),
    ("[expect]\nerror_code = true", "expect.error_code", "must be an integer, got a boolean"),
    ("expect = 3", "expect", "must be a table"),
]


@pytest.mark.parametrize(("text", "key", "problem"), BAD, ids=[b[1] + ":" + b[2][:30] for b in BAD])
def test_bad_input_names_file_key_and_problem(tmp_path: Path, text: str, key: str, problem: str) -> None:
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "t.down").write_text("1\n")
    (tmp_path / "traces" / "bad.down").write_text("1\n2\nx7\n")
    (tmp_path / "traces" / "unsorted.down").write_text("9\n2\n")
    path = tmp_path / "lossy.toml"
    path.write_text(text + "\n")
    with pytest.raises(ScenarioError) as info:
        Scenario.from_toml(path)
    err = info.value
    assert err.source == str(path)
    assert err.key == key
    assert problem in err.problem
    assert str(err) == f"{path}: {key}: {err.problem}"
    assert isinstance(err, ConfigError)
    # one clean error: no chained traceback from deep inside
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


def test_exact_message_format(tmp_path: Path) -> None:
    path = tmp_path / "lossy.toml"
    path.write_text("[network.uplink]\nloss = 1.5\n")
    with pytest.raises(ScenarioError) as info:
        Scenario.from_toml(path)
    assert str(info.value) == f"{path}: network.uplink.loss: must be between 0 and 1, got 1.5"
    assert Path(info.value.source).name == "lossy.toml"


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('name = "x"\nduration = 10\n[network\ndelay_ms = 5\n')
    with pytest.raises(ScenarioError) as info:
        Scenario.from_toml(path)
    assert info.value.key == ""
    assert "invalid TOML" in info.value.problem and "line 3" in info.value.problem
    assert str(info.value).startswith(f"{path}: invalid TOML")


def test_not_utf8_and_missing_file_and_directory(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(ScenarioError, match="not UTF-8"):
        Scenario.from_toml(path)
    with pytest.raises(ScenarioError) as info:
        Scenario.from_toml(tmp_path / "nope.toml")
    assert info.value.problem == "file not found" and info.value.key == ""
    assert str(info.value) == f"{tmp_path / 'nope.toml'}: file not found"
    with pytest.raises(ScenarioError, match="is a directory"):
        Scenario.from_toml(tmp_path)


def test_from_dict_errors_name_the_given_source() -> None:
    with pytest.raises(ScenarioError) as info:
        Scenario.from_dict({"network": {"loss": 2}}, source="api")
    assert str(info.value) == "api: network.loss: must be between 0 and 1, got 2"


def test_scenario_error_pickles() -> None:
    import pickle

    err = pickle.loads(pickle.dumps(ScenarioError("a.toml", "seed", "bad")))
    assert (err.source, err.key, err.problem, str(err)) == ("a.toml", "seed", "bad", "a.toml: seed: bad")


def test_direct_construction_is_validated() -> None:
    cfg = LinkConfig()
    Scenario(name="x", phases=ScenarioPhases(uplink=((1.0, cfg), (2.0, cfg))))
    for bad in (
        {"name": 5}, {"name": "x", "duration": 0}, {"name": "x", "duration": True}, {"name": "x", "seed": -1},
        {"name": "x", "media": None}, {"name": "x", "uplink": {}}, {"name": "x", "expect": {}},
    ):
        with pytest.raises(ConfigError):
            Scenario(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        ScenarioPhases(uplink=((2.0, cfg), (1.0, cfg)))
    with pytest.raises(ConfigError):
        ScenarioPhases(downlink=((1.0, None),))  # type: ignore[arg-type]
