"""Every built-in scenario runs and meets its own [expect] block."""

from __future__ import annotations

import attrs
import pytest
from rtcprobe.drivers.sim import simulate
from rtcprobe.netem.scenario import STACKS, ScenarioError
from rtcprobe.scenarios import builtin_names, load, path_of

NAMES = builtin_names()


def test_the_library_has_the_scenarios_users_reach_for() -> None:
    assert len(NAMES) >= 10
    for name in ("clean-broadband", "lossy-wifi", "bursty-loss", "congested-uplink", "satellite",
                 "cellular-trace", "short-outage", "signaling-unreachable", "long-outage",
                 "hd-constrained", "small-video-constrained", "nepal-india", "audio-only-poor"):
        assert name in NAMES


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("name", NAMES)
def test_builtin_scenario_meets_its_expectations(name: str, stack: str) -> None:
    """With either endpoint model: the expectations hold for the default (libwebrtc) and were
    re-pinned, where a browser's sender honestly differs, to hold for aiortc's as well."""
    sc = attrs.evolve(load(name), stack=stack)
    assert sc.name == name and sc.description
    assert sc.expect is not None, f"{name} has no [expect] block"
    rep = simulate(sc)
    assert sc.expect.check(rep.to_dict()) == []
    assert rep.run is not None and rep.run.scenario == name and rep.run.driver == "sim"


def test_demand_relativity_pair_shares_the_link_and_scores_differently() -> None:
    hd, small = load("hd-constrained"), load("small-video-constrained")
    assert (hd.uplink, hd.downlink, hd.seed) == (small.uplink, small.downlink, small.seed)
    assert hd.media != small.media
    hd_level = simulate(hd).network_quality_level
    small_level = simulate(small).network_quality_level
    assert hd_level is not None and small_level is not None and hd_level < small_level


def test_cellular_scenario_is_trace_driven() -> None:
    sc = load("cellular-trace")
    assert sc.uplink.trace is not None and sc.downlink.trace is not None


def test_load_takes_a_path_too(tmp_path: object) -> None:
    assert load(path_of("satellite")) == load("satellite")
    assert load(str(path_of("satellite"))).name == "satellite"


def test_unknown_name_is_a_clear_error() -> None:
    with pytest.raises(ScenarioError, match="did you mean 'satellite'"):
        load("satelite")
    with pytest.raises(ScenarioError, match="built-in scenarios: "):
        load("no-such-thing-at-all")
