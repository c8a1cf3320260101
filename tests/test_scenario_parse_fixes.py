"""Scenario files that used to slip through: an empty (truncated) file is an error, not the
perfect default network; a NUL byte in a trace path is a ScenarioError, not a bare ValueError."""

from __future__ import annotations

from pathlib import Path

import pytest
from rtcprobe.netem.scenario import Scenario, ScenarioError
from rtcprobe.scenarios import load


@pytest.mark.parametrize("text", ["", "\n", "   \n\t\n", "# a header comment, then the file was cut\n"])
def test_a_file_without_keys_is_an_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "cut.toml"
    path.write_text(text)
    for read in (Scenario.from_toml, load):
        with pytest.raises(ScenarioError) as info:
            read(path)
        assert (info.value.source, info.value.key) == (str(path), "")
        assert str(info.value) == f"{path}: empty scenario file (no keys: truncated?)"


def test_one_key_is_enough(tmp_path: Path) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text("duration = 3\n")
    assert Scenario.from_toml(path).duration == 3.0
    assert Scenario.from_dict({}).name == "scenario"  # plain data has no file to be truncated


@pytest.mark.parametrize("where", ["[network]", "[network.downlink]", "[[phase]]\nat = 1"])
def test_nul_byte_in_a_trace_path_names_file_and_key(tmp_path: Path, where: str) -> None:
    path = tmp_path / "nul.toml"
    path.write_text(f'{where}\ntrace = "traces/up\\u0000.down"\n')
    with pytest.raises(ScenarioError) as info:
        Scenario.from_toml(path)
    key = {"[network]": "network", "[network.downlink]": "network.downlink"}.get(where, "phase[0]") + ".trace"
    assert (info.value.source, info.value.key) == (str(path), key)
    assert "NUL byte" in info.value.problem
    assert info.value.__cause__ is None
