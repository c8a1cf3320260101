"""Re-scoring a sweep: every level recomputed from the stored scorer inputs with other constants.

No run is simulated again: each row keeps every (now, QualityInput) its scorer was fed and the
media demand, so a new ``ScorerConfig`` only replays the scorer (microseconds per run). With the
default constants the stored levels come back exactly (the sweep checks that when it stores a
row, and the tests check it again).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from rtcprobe.core.quality import ScorerConfig

from .sweep_table import decode_demand, decode_inputs, level_summary, replay_levels

__all__ = ["Change", "RescoreOutcome", "rescore_row", "rescore_rows"]


@attrs.frozen
class Change:
    """One run whose levels moved."""

    point: dict[str, Any]  # its axis values and seed, as in the table
    level: tuple[int | None, int | None]  # (stored, re-scored) final level
    level_min: tuple[int | None, int | None]
    level_median: tuple[float | None, float | None]

    @property
    def delta(self) -> int | None:
        """How far the final level moved (None when a run has no level: failed before scoring)."""
        old, new = self.level
        return None if old is None or new is None else new - old


@attrs.frozen
class RescoreOutcome:
    rows: tuple[dict[str, Any], ...]  # the table's rows with re-scored level columns
    changes: tuple[Change, ...]  # runs where any level column moved, in table order

    @property
    def level_deltas(self) -> dict[int, int]:
        """How many runs' final level moved by how much (0 = unchanged), sorted by delta."""
        counts = Counter(0 for _ in self.rows)
        for c in self.changes:
            if c.delta:
                counts[0] -= 1
                counts[c.delta] += 1
        return dict(sorted((k, v) for k, v in counts.items() if v))

    def moved(self, column: str) -> int:
        return sum(1 for c in self.changes if getattr(c, column)[0] != getattr(c, column)[1])


def rescore_row(row: Mapping[str, Any], config: ScorerConfig) -> dict[str, Any]:
    """The row with ``level``, ``level_min``, ``level_median`` and ``sample_level`` recomputed."""
    inputs = decode_inputs(row["scorer_inputs"])
    levels = replay_levels(decode_demand(row["demand"]), inputs, config)
    samples: list[int | None] = [levels[i] for i in row["sample_input_index"]]
    new = dict(row)
    new["level"] = levels[-1] if levels else row["level"]
    new["sample_level"] = samples
    new["level_min"], new["level_median"] = level_summary(samples)
    return new


def rescore_rows(rows: Sequence[Mapping[str, Any]], config: ScorerConfig, point_columns: Sequence[str]
                 ) -> RescoreOutcome:
    out: list[dict[str, Any]] = []
    changes: list[Change] = []
    for row in rows:
        new = rescore_row(row, config)
        out.append(new)
        pairs = {c: (row[c], new[c]) for c in ("level", "level_min", "level_median")}
        if any(a != b for a, b in pairs.values()):
            changes.append(Change(point={c: row[c] for c in point_columns}, **pairs))
    return RescoreOutcome(tuple(out), tuple(changes))
