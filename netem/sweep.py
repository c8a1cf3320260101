"""Sweep specs: a base scenario, axes over its keys and seeds, expanded into validated points.

The format is documented in ``scenarios/SWEEPS.md``. This module is pure data, like the scenario
parser beside it: it reads the spec and the base scenario file and checks every point by parsing
it with :meth:`Scenario.from_dict`, so each rule and error message is the scenario's own. Running
the points (the simulator, a process pool, Dask) is the top layer's job (``rtcprobe.sweep``).

Every problem is one :class:`ScenarioError` naming the spec file, the key and the problem:

    sweep.toml: axes."network.los": unknown scenario key (did you mean 'network.loss'?)
    sweep.toml: axes."network.loss"[2]: makes point 7 of 18 invalid (network.loss = 1.5, seed = 1):
        network.loss: must be between 0 and 1, got 1.5
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from .models import ScenarioError, TableReader, describe
from .scenario import LINK_KEYS, Scenario, read_toml

__all__ = [
    "SPEC_KEYS",
    "Axis",
    "Sweep",
    "SweepPoint",
    "apply_path",
    "canonical_json",
    "format_value",
    "load_sweep",
    "sweep_from_dict",
]

SPEC_KEYS: Final = ("base", "description", "seeds", "set", "axes")
SEED_MAX: Final = 2**63 - 1

# The scenario keys an axis (or [set]) may name, as a tree: a dict is a table, None a leaf, a
# one-element list an array of tables (only [[phase]]). name/description/seed/expect are left
# out on purpose, with the reasons in _NOT_SWEEPABLE.
_LOSS_MODEL: Final = {k: None for k in ("kind", "p", "r", "h", "k")}
_LINK: Final[dict[str, Any]] = {k: (dict(_LOSS_MODEL) if k == "loss_model" else None) for k in LINK_KEYS}
_PHASE_LINK: Final[dict[str, Any]] = {k: v for k, v in _LINK.items() if k != "outages"}
SCHEMA: Final[dict[str, Any]] = {
    "duration": None,
    "media": {"audio": None, "video": {"width": None, "height": None, "fps": None}, "stack": None},
    "network": {**_LINK, "uplink": dict(_LINK), "downlink": dict(_LINK)},
    "phase": [{"at": None, "reset": None, **_PHASE_LINK, "uplink": dict(_PHASE_LINK),
               "downlink": dict(_PHASE_LINK)}],
}
_NOT_SWEEPABLE: Final = {
    "seed": "the seeds have their own key: seeds = [1, 2, 3]",
    "name": "the name does not change a run (the results name the base scenario)",
    "description": "the description does not change a run",
    "expect": "a sweep does not check expectations (it records every outcome instead)",
}
_SEGMENT: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)(?:\[(\d+)\])?")


def canonical_json(value: object) -> str:
    """One text per value: sorted keys, no spaces (identifies a point, fills a JSON column)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def format_value(value: object) -> str:
    """A value as it reads in a message or a plot label (TOML-ish; a video spec as 320x180@15)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}" if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        if set(value) == {"width", "height", "fps"}:
            return f"{value['width']}x{value['height']}@{format_value(value['fps'])}"
        return "{ " + ", ".join(f"{k} = {format_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return json.dumps(value) if isinstance(value, str) else str(value)


def _normalized(value: object) -> str:
    """Equal for values the scenario parser reads the same (1 and 1.0): duplicates in an axis."""
    def norm(v: object) -> object:
        if isinstance(v, bool) or not isinstance(v, int | float):
            if isinstance(v, Mapping):
                return {k: norm(x) for k, x in v.items()}
            return [norm(x) for x in v] if isinstance(v, list) else v
        return float(v)

    return canonical_json(norm(value))


@attrs.frozen
class Axis:
    """One swept key: its dotted path and the values it takes, in spec order."""

    path: str
    values: tuple[Any, ...]


@attrs.frozen(eq=False)
class SweepPoint:
    """One run: a value per axis, a seed, and the scenario data they make."""

    index: int  # position in the cartesian product (axes in spec order, then seeds): the row order
    values: tuple[Any, ...]  # one per axis
    seed: int
    data: dict[str, Any]  # the scenario's raw tables (base + [set] + these values), valid

    @property
    def key(self) -> str:
        """Identifies the point across runs of the same sweep (resume matches on it)."""
        return canonical_json([*self.values, self.seed])


@attrs.frozen(eq=False)
class Sweep:
    """A validated sweep spec. :meth:`points` is the cartesian product, every point valid."""

    source: str  # the spec file
    base: str  # as written in the spec: a built-in name or a path relative to the spec
    base_path: Path
    base_name: str  # the base scenario's name (its file stem unless it sets one)
    description: str
    seeds: tuple[int, ...]
    axes: tuple[Axis, ...]
    settings: tuple[tuple[str, Any], ...]  # [set]: (path, value) merged into the base first
    base_data: dict[str, Any]  # the base scenario's tables after [set]

    @property
    def total(self) -> int:
        return math.prod(len(a.values) for a in self.axes) * len(self.seeds)

    @property
    def columns(self) -> tuple[str, ...]:
        """The axis paths, then ``seed``: the results table's leading columns."""
        return (*(a.path for a in self.axes), "seed")

    def fingerprint(self, version: str) -> str:
        """What makes stored results comparable: the base after [set], the axis paths and the
        rtcprobe version (values and seeds may grow between runs; points are matched by key)."""
        text = canonical_json({"base": self.base_data, "axes": [a.path for a in self.axes], "version": version})
        return hashlib.sha256(text.encode()).hexdigest()

    def combos(self) -> Iterator[tuple[int, tuple[Any, ...], dict[str, Any]]]:
        """(combo index, axis values, scenario data) for every combination of axis values."""
        for i, values in enumerate(itertools.product(*(a.values for a in self.axes))):
            data = copy.deepcopy(self.base_data)
            for axis, value in zip(self.axes, values, strict=True):
                apply_path(data, axis.path, copy.deepcopy(value))
            yield i, values, data

    def points(self) -> list[SweepPoint]:
        n = len(self.seeds)
        return [
            SweepPoint(index=i * n + j, values=values, seed=seed, data=data)
            for i, values, data in self.combos()
            for j, seed in enumerate(self.seeds)
        ]

    def scenario(self, data: Mapping[str, Any]) -> Scenario:
        """Parse one point's data as the base file would be (its name, its folder for traces)."""
        return Scenario.from_dict(data, source=str(self.base_path), base_dir=self.base_path.parent,
                                  default_name=self.base_path.stem)

    def describe_point(self, values: tuple[Any, ...], seed: int | None = None) -> str:
        parts = [f"{a.path} = {format_value(v)}" for a, v in zip(self.axes, values, strict=True)]
        if seed is not None:
            parts.append(f"seed = {seed}")
        return "(" + ", ".join(parts) + ")"


# --------------------------------------------------------------------------------------------
# Dotted paths
# --------------------------------------------------------------------------------------------


def _segments(path: str) -> list[tuple[str, int | None]] | None:
    out: list[tuple[str, int | None]] = []
    for part in path.split("."):
        m = _SEGMENT.fullmatch(part)
        if m is None:
            return None
        out.append((m.group(1), None if m.group(2) is None else int(m.group(2))))
    return out


def _known_paths(node: object, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            p = f"{prefix}.{k}" if prefix else k
            yield p
            yield from _known_paths(v, p)
    elif isinstance(node, list):
        yield from _known_paths(node[0], f"{prefix}[0]")


def _suggest(path: str) -> str:
    close = difflib.get_close_matches(path, list(_known_paths(SCHEMA)), n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (scenario keys: {', '.join(SCHEMA)}; see scenarios/README.md)"


def check_path(path: str, base: Mapping[str, Any]) -> str | None:
    """The problem with ``path`` as a swept key of ``base`` (None when it is fine)."""
    segs = _segments(path)
    if not path or segs is None:
        return "not a dotted key path (like network.loss, media.video or phase[0].at)"
    if segs[0][0] in _NOT_SWEEPABLE:
        return f"not a sweepable key: {_NOT_SWEEPABLE[segs[0][0]]}"
    node: object = SCHEMA
    data: object = base
    walked = ""
    for name, index in segs:
        here = f"{walked}.{name}" if walked else name
        if not isinstance(node, dict):
            return f"{walked} is not a table: {here} is not a scenario key"
        if name not in node:
            return f"unknown scenario key{_suggest(path)}"
        node = node[name]
        data = data.get(name) if isinstance(data, Mapping) else None
        if isinstance(node, list):
            if index is None:
                if here != path:
                    return f"{here} is an array of tables: give the index, e.g. {here}[0]{path[len(here):]}"
            else:
                count = len(data) if isinstance(data, list) else 0
                if index >= count:
                    have = f"{count} ({here}[0]..{here}[{count - 1}])" if count else "none"
                    return f"the base scenario has no {here}[{index}]: its [[{here}]] entries: {have}"
                data = data[index] if isinstance(data, list) else None
                node = node[0]
            here = f"{here}[{index}]" if index is not None else here
        elif index is not None:
            return f"{here} is not an array: remove [{index}]"
        walked = here
    return None


def apply_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set ``path`` (valid, see :func:`check_path`) to ``value`` in ``data``, in place.

    Missing tables on the way are created, and a non-table on the way (``media.video = true``)
    becomes a table, so ``media.video.width`` can be set whatever the base says about video.
    """
    segs = _segments(path)
    if segs is None:
        raise ValueError(f"not a dotted key path: {path!r}")
    node: Any = data
    for name, index in segs[:-1]:
        if index is not None:
            node = node[name][index]
            continue
        if not isinstance(node.get(name), dict):
            node[name] = {}
        node = node[name]
    name, index = segs[-1]
    if index is not None:
        node[name][index] = value
    else:
        node[name] = value


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


def _flatten(table: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``{"network": {"loss": [...]}}`` (TOML dotted keys, [axes.network]) -> ("network.loss", [...])."""
    for key, value in table.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping):
            yield from _flatten(value, path)
        else:
            yield path, value


def _quoted(path: str) -> str:
    return path if re.fullmatch(r"[A-Za-z0-9_-]+", path) else json.dumps(path)


def load_sweep(path: str | Path, find_builtin: Callable[[str], Path] | None = None) -> Sweep:
    """Read and validate a sweep spec file; ``find_builtin`` maps a built-in scenario name to its
    file (the scenario library lives above this layer, so the caller passes it in)."""
    p = Path(path)
    return sweep_from_dict(read_toml(p, "sweep spec"), source=str(path), base_dir=p.parent,
                           find_builtin=find_builtin)


def sweep_from_dict(
    data: Mapping[str, Any],
    source: str = "<dict>",
    base_dir: str | Path | None = None,
    *,
    find_builtin: Callable[[str], Path] | None = None,
) -> Sweep:
    """Validate a spec given as plain data (as tomllib returns it); a relative ``base`` path
    resolves against ``base_dir`` (the current directory when None)."""
    folder = Path(base_dir) if base_dir is not None else Path.cwd()
    r = TableReader(data, source, "", SPEC_KEYS)
    base = r.string("base")
    description = r.string("description", default="")
    base_path = _resolve_base(r, base, folder, find_builtin)
    try:
        raw = read_toml(base_path)
    except ScenarioError as exc:
        raise r.error("base", str(exc)) from None
    try:
        parsed = Scenario.from_dict(raw, source=str(base_path), base_dir=base_path.parent,
                                    default_name=base_path.stem)
    except ScenarioError as exc:
        raise r.error("base", str(exc)) from None
    seeds = _seeds(r, parsed.seed)

    settings: list[tuple[str, Any]] = []
    base_data = copy.deepcopy(raw)
    if "set" in r:
        table = r.data["set"]
        if not isinstance(table, Mapping):
            raise r.error("set", f"must be a table of scenario keys and values, got {describe(table)}")
        for key, value in _flatten(table):
            where = f"set.{_quoted(key)}"
            problem = check_path(key, base_data)
            if problem:
                raise ScenarioError(source, where, problem)
            for other, _ in settings:
                if _overlap(key, other):
                    raise ScenarioError(source, where, f"overlaps set.{_quoted(other)}: one would overwrite the other")
            settings.append((key, value))
            apply_path(base_data, key, copy.deepcopy(value))

    axes = _axes(r, base_data)
    _check_overlaps(source, settings, axes)
    sweep = Sweep(source=source, base=base, base_path=base_path, base_name=parsed.name, description=description,
                  seeds=seeds, axes=tuple(axes), settings=tuple(settings), base_data=base_data)
    _validate(sweep)
    return sweep


def _resolve_base(r: TableReader, base: str, folder: Path, find_builtin: Callable[[str], Path] | None) -> Path:
    if not base.strip():
        raise r.error("base", "must name a built-in scenario or a scenario file (relative to the spec)")
    if "\0" in base:
        raise r.error("base", f"must be a built-in scenario name or a path, got a NUL byte in {base!r}")
    candidate = folder / base
    looks_like_path = base.endswith(".toml") or "/" in base or "\\" in base
    if looks_like_path or find_builtin is None or candidate.is_file():
        if candidate.is_file():
            return candidate
        raise r.error("base", f"scenario file {base!r} not found (looked for {candidate})")
    try:
        return find_builtin(base)
    except ScenarioError as exc:
        raise r.error("base", exc.problem) from None


def _seeds(r: TableReader, default: int) -> tuple[int, ...]:
    if "seeds" not in r:
        return (default,)
    value = r.data["seeds"]
    if not isinstance(value, list) or not value:
        raise r.error("seeds", f"must be a non-empty array of integers >= 0, got {describe(value)}")
    seen: dict[int, int] = {}
    for i, s in enumerate(value):
        if isinstance(s, bool) or not isinstance(s, int):
            raise r.error(f"seeds[{i}]", f"must be an integer >= 0, got {describe(s)}")
        if not 0 <= s <= SEED_MAX:
            raise r.error(f"seeds[{i}]", f"must be between 0 and 2**63 - 1, got {s}")
        if s in seen:
            raise r.error(f"seeds[{i}]", f"seed {s} is given twice (also seeds[{seen[s]}])")
        seen[s] = i
    return tuple(value)


def _axes(r: TableReader, base: Mapping[str, Any]) -> list[Axis]:
    if "axes" not in r:
        return []
    table = r.data["axes"]
    if not isinstance(table, Mapping):
        raise r.error("axes", f"must be a table of scenario keys and arrays of values, got {describe(table)}")
    axes: list[Axis] = []
    seen: set[str] = set()
    for path, values in _flatten(table):
        key = f"axes.{_quoted(path)}"
        if path in seen:
            raise ScenarioError(r.source, key, "given twice (as a dotted key and as a table)")
        seen.add(path)
        problem = check_path(path, base)
        if problem:
            raise ScenarioError(r.source, key, problem)
        if not isinstance(values, list) or not values:
            raise ScenarioError(r.source, key, f"must be a non-empty array of values, got {describe(values)}")
        firsts: dict[str, int] = {}
        for i, v in enumerate(values):
            norm = _normalized(v)
            if norm in firsts:
                raise ScenarioError(r.source, f"{key}[{i}]",
                                    f"the value {format_value(v)} is given twice (also [{firsts[norm]}])")
            firsts[norm] = i
        axes.append(Axis(path, tuple(values)))
    return axes


def _overlap(a: str, b: str) -> bool:
    return a == b or b.startswith(a + ".") or b.startswith(a + "[") or a.startswith(b + ".") or a.startswith(b + "[")


def _check_overlaps(source: str, settings: list[tuple[str, Any]], axes: list[Axis]) -> None:
    for i, axis in enumerate(axes):
        for other in axes[:i]:
            if _overlap(axis.path, other.path):
                raise ScenarioError(source, f"axes.{_quoted(axis.path)}",
                                    f"overlaps the axis {other.path!r}: one would overwrite the other")
        for key, _ in settings:
            if _overlap(axis.path, key):
                raise ScenarioError(source, f"axes.{_quoted(axis.path)}",
                                    f"overlaps set.{_quoted(key)}: an axis value would overwrite it, or it the axis")


def _validate(sweep: Sweep) -> None:
    """Parse the base after [set], then every combination of axis values, as the run will."""
    try:
        sweep.scenario(sweep.base_data)
    except ScenarioError as exc:
        blamed = [k for k, _ in sweep.settings if exc.key and _overlap(k, exc.key)]
        key = f"set.{_quoted(blamed[0])}" if blamed else "base"
        raise ScenarioError(sweep.source, key, f"makes the base scenario invalid: {_inner(exc)}") from None
    first: tuple[int, tuple[Any, ...], ScenarioError] | None = None
    invalid = 0
    combos = 0
    for i, values, data in sweep.combos():
        combos += 1
        try:
            sweep.scenario(data)
        except ScenarioError as exc:
            invalid += 1
            if first is None:
                first = (i, values, exc)
    if first is None:
        return
    i, values, error = first
    key = "axes"
    for axis, value in zip(sweep.axes, values, strict=True):
        if error.key and _overlap(axis.path, error.key):
            key = f"axes.{_quoted(axis.path)}[{axis.values.index(value)}]"
            break
    n = len(sweep.seeds)
    more = f" ({invalid} of {combos} combinations are invalid)" if invalid > 1 else ""
    raise ScenarioError(
        sweep.source, key,
        f"makes point {i * n + 1} of {sweep.total} invalid {sweep.describe_point(values)}: {_inner(error)}{more}",
    )


def _inner(exc: ScenarioError) -> str:
    """The scenario parser's message without its source (that is the base file, named by `base`)."""
    return f"{exc.key}: {exc.problem}" if exc.key else exc.problem
