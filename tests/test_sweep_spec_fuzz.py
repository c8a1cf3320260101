"""Fuzzing the sweep spec parser (hypothesis), as the scenario parser is: whatever the input, the
result is a valid sweep whose every point parses, or one ScenarioError naming the spec file and
a key — never another exception, never a traceback from deep inside."""

from __future__ import annotations

import datetime
import tomllib
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rtcprobe.netem.scenario import ScenarioError
from rtcprobe.netem.sweep import SCHEMA, Sweep, load_sweep, sweep_from_dict
from rtcprobe.scenarios import path_of

HERE = Path(__file__).resolve().parent
SOURCE = "fuzz.toml"
BASE = 'duration = 3\n[network]\ndelay_ms = 10\n[network.downlink]\ntrace = "t.down"\n[[phase]]\nat = 1\nloss = 0.1\n'


def known_paths(node: object, prefix: str = "") -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else key
            out.append(path)
            out.extend(known_paths(value, path))
    elif isinstance(node, list):
        out.extend(known_paths(node[0], f"{prefix}[0]"))
    return out


PATHS = known_paths(SCHEMA)
# Real keys, their near misses, and keys a sweep refuses or cannot index.
paths = st.one_of(
    st.sampled_from(PATHS),
    st.sampled_from(PATHS).map(lambda p: p.replace("[0]", "[1]")),
    st.sampled_from(PATHS).map(lambda p: p[:-1]),
    st.sampled_from(["seed", "name", "expect.level", "network.loss[0]", "phase.at", "", ".", "a..b", "phase[9].at"]),
    st.text(max_size=12),
)
scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-5, 300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(0, 1),
    st.text(max_size=10),
    st.sampled_from(["uniform", "gilbert-elliott", "random", "t.down", "missing.down", "no\x00pe"]),
    st.just(datetime.date(2024, 1, 1)),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.sampled_from(["width", "height", "fps", "kind", "p", "at", "x"]),
                                            inner, max_size=3)),
    max_leaves=6,
)
# Values most scenario keys accept, so that many generated sweeps are valid and get expanded.
plausible = st.one_of(
    st.floats(0, 1), st.integers(1, 500), st.booleans(),
    st.fixed_dictionaries({"width": st.integers(16, 2000), "height": st.integers(16, 2000),
                           "fps": st.integers(1, 60)}),
)
axes = st.dictionaries(
    paths,
    st.one_of(st.lists(plausible, min_size=1, max_size=3, unique_by=repr), st.lists(values, max_size=3), values),
    max_size=3,
)


def mostly(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``common`` four times in five: most generated specs get past the first check."""
    return st.integers(0, 4).flatmap(lambda i: rare if i == 0 else common)


specs = st.fixed_dictionaries(
    {"base": mostly(st.sampled_from(["base.toml", "clean-broadband"]), st.sampled_from(["nope", "", "dir/x.toml"]))},
    optional={
        "seeds": mostly(st.lists(st.integers(0, 9), min_size=1, max_size=3, unique=True),
                        st.one_of(st.lists(st.integers(-3, 2**64), max_size=3), scalars)),
        "axes": mostly(axes, scalars),
        "set": mostly(st.dictionaries(st.sampled_from(PATHS), plausible, max_size=2),
                      st.one_of(st.dictionaries(paths, values, max_size=2), scalars)),
        "description": st.text(max_size=5),
    },
)


def check(result: Sweep | ScenarioError) -> None:
    if isinstance(result, ScenarioError):
        assert result.source == SOURCE
        assert str(result).startswith(f"{SOURCE}: ")
        assert result.__cause__ is None
        return
    assert result.total == len(result.points()) >= 1
    for point in result.points()[: 1 + 24 // len(result.seeds)]:
        result.scenario(point.data)  # valid, as promised


def parse(data: Any, base_dir: Path) -> Sweep | ScenarioError:
    try:
        return sweep_from_dict(data, source=SOURCE, base_dir=base_dir, find_builtin=path_of)
    except ScenarioError as exc:
        return exc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs)
def test_any_spec_data_is_a_sweep_or_one_clean_error(tmp_path: Path, spec: dict[str, Any]) -> None:
    (tmp_path / "t.down").write_text("1\n")
    (tmp_path / "base.toml").write_text(BASE)
    check(parse(spec, tmp_path))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs, st.sampled_from(["base", "description"]), scalars.filter(lambda v: not isinstance(v, str)))
def test_spec_strings_of_other_types_are_named(tmp_path: Path, spec: dict[str, Any], key: str, value: Any) -> None:
    (tmp_path / "base.toml").write_text(BASE)
    result = parse({**spec, key: value}, tmp_path)
    assert isinstance(result, ScenarioError) and result.key == key and "must be a string" in result.problem


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs, st.sampled_from(["sedes", "axis", "Base", "set.x"]), scalars)
def test_unknown_spec_keys_are_named(tmp_path: Path, spec: dict[str, Any], key: str, value: Any) -> None:
    (tmp_path / "base.toml").write_text(BASE)
    result = parse({**spec, key: value}, tmp_path)
    assert isinstance(result, ScenarioError) and result.key == key and "unknown key" in result.problem


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=200),
                 st.sampled_from(['base = "base.toml"\n[axes]\n', 'base = "base.toml"\n[set]\n']).flatmap(
                     lambda head: st.text(max_size=80).map(lambda tail: head + tail))))
def test_any_spec_text_is_a_sweep_or_one_clean_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "t.down").write_text("1\n")
    (tmp_path / "base.toml").write_text(BASE)
    path = tmp_path / SOURCE
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        result: Sweep | ScenarioError = load_sweep(path, find_builtin=path_of)
    except ScenarioError as exc:
        assert exc.source == str(path)
        return
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # pragma: no cover - a parse of invalid TOML is a bug
        raise AssertionError("invalid TOML was accepted") from exc
    assert isinstance(result, Sweep)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(PATHS), mostly(st.lists(plausible, min_size=1, max_size=2, unique_by=repr),
                                                          st.lists(values, min_size=1, max_size=2))), max_size=3))
def test_axes_over_real_keys_either_validate_every_point_or_name_one(
        tmp_path: Path, pairs: list[tuple[str, list[Any]]]) -> None:
    (tmp_path / "t.down").write_text("1\n")
    (tmp_path / "base.toml").write_text(BASE)
    result = parse({"base": "base.toml", "seeds": [1], "axes": dict(pairs)}, tmp_path)
    check(result)
    if isinstance(result, ScenarioError):
        assert result.key.startswith(("axes", "base")), str(result)


# Strings built from characters that trouble paths and parsers (NUL, separators, newlines).
awkward_text = st.lists(st.sampled_from(["\x00", "a", "/", ".", "..", "é", "\n", " ", "t.down"]),
                        max_size=4).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(PATHS), st.one_of(values, awkward_text))
def test_any_value_at_any_scenario_key_is_a_scenario_or_one_clean_error(tmp_path: Path, path: str, value: Any) -> None:
    """The scenario parser under the sweep: one key of a scenario set to anything."""
    from rtcprobe.netem.scenario import Scenario
    from rtcprobe.netem.sweep import apply_path, check_path

    (tmp_path / "t.down").write_text("1\n")
    data: dict[str, Any] = {"phase": [{"at": 1.0}]}
    if check_path(path, data) is not None:
        return
    apply_path(data, path, value)
    try:
        Scenario.from_dict(data, source=SOURCE, base_dir=tmp_path)
    except ScenarioError as exc:
        assert exc.source == SOURCE and exc.key, str(exc)
        assert exc.__cause__ is None
