"""Scorer constants from TOML: a file whose keys are the fields of the core's ``ScorerConfig``.

    # strict.toml: every key optional, the others keep their defaults
    level_thresholds = [92, 84, 76, 68]
    video_loss_weight = 10
    rise_interval = 3
    video_bitrate_table = [[129600, 250000], [518400, 600000], [921600, 1800000]]

Each problem is one :class:`ScenarioError` naming the file, the key and the problem (unknown keys
get a did-you-mean). The meaning of every field is documented on ``ScorerConfig`` in
``rtcprobe.core.quality``; ``rtcprobe rescore`` reads these files.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from ..core.errors import ConfigError
from ..core.quality import LEVEL_MAX, LEVEL_MIN, ScorerConfig
from .models import ScenarioError, TableReader, describe
from .scenario import read_toml

__all__ = ["SCORER_KEYS", "load_scorer_config", "scorer_config_from_dict"]

SCORER_KEYS: Final[tuple[str, ...]] = tuple(f.name for f in attrs.fields(ScorerConfig))
_THRESHOLDS: Final = LEVEL_MAX - LEVEL_MIN


def load_scorer_config(path: str | Path) -> ScorerConfig:
    """Read and validate a scorer config file."""
    return scorer_config_from_dict(read_toml(path, "scorer config"), source=str(path))


def scorer_config_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> ScorerConfig:
    """Validate plain data (as tomllib returns it) into a ScorerConfig."""
    r = TableReader(data, source, "", SCORER_KEYS)
    kwargs: dict[str, Any] = {}
    for key in r.data:
        if key == "level_thresholds":
            kwargs[key] = _thresholds(r)
        elif key == "video_bitrate_table":
            kwargs[key] = _bitrate_table(r)
        else:
            kwargs[key] = r.number(key, lo=0.0, strict_lo=True)
    try:
        return ScorerConfig(**kwargs)
    except ConfigError as exc:  # a rule across fields the checks above do not see
        raise ScenarioError(source, "", str(exc)) from None


def _thresholds(r: TableReader) -> tuple[float, ...]:
    value = r.data["level_thresholds"]
    if not isinstance(value, list) or len(value) != _THRESHOLDS:
        raise r.error("level_thresholds", f"must be an array of {_THRESHOLDS} scores (the lowest of levels "
                      f"{LEVEL_MAX}..{LEVEL_MIN + 1}), got {describe(value)}")
    out: list[float] = []
    for i, x in enumerate(value):
        item = TableReader({"x": x}, r.source, "", ("x",))
        try:
            out.append(item.number("x", lo=0.0, hi=100.0))
        except ScenarioError as exc:
            raise r.error(f"level_thresholds[{i}]", exc.problem) from None
        if x == 0:
            raise r.error(f"level_thresholds[{i}]", "must be greater than 0, got 0")
    for i, (a, b) in enumerate(itertools.pairwise(out), start=1):
        if not a > b:
            raise r.error(f"level_thresholds[{i}]",
                          f"must be lower than level_thresholds[{i - 1}] ({a:g}): scores strictly decrease, got {b:g}")
    return tuple(out)


def _bitrate_table(r: TableReader) -> tuple[tuple[int, float], ...]:
    value = r.data["video_bitrate_table"]
    if not isinstance(value, list) or not value:
        raise r.error("video_bitrate_table",
                      f"must be a non-empty array of [max_pixels, bps] rows, got {describe(value)}")
    rows: list[tuple[int, float]] = []
    for i, row in enumerate(value):
        key = f"video_bitrate_table[{i}]"
        if not isinstance(row, list) or len(row) != 2:
            raise r.error(key, f"must be a row [max_pixels, bps], got {describe(row)}")
        cells = TableReader({"max_pixels": row[0], "bps": row[1]}, r.source, key, ("max_pixels", "bps"))
        try:
            pixels = cells.integer("max_pixels", lo=1)
            bps = cells.number("bps", lo=0.0, strict_lo=True)
        except ScenarioError as exc:
            index = 0 if exc.key.endswith("max_pixels") else 1
            raise r.error(f"{key}[{index}]", exc.problem) from None
        if rows and pixels <= rows[-1][0]:
            raise r.error(f"{key}[0]", f"max_pixels must increase from row to row ({rows[-1][0]} then {pixels})")
        if rows and bps < rows[-1][1]:
            raise r.error(f"{key}[1]", f"bps must not decrease from row to row ({rows[-1][1]:g} then {bps:g})")
        rows.append((pixels, bps))
    return tuple(rows)
