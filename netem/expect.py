"""Expectations a scenario states about its own report (``[expect]``), checked by ``--check``.

The report is the JSON dict of DESIGN.md section 3. Units follow the report, except that the
jitter range is written in milliseconds like every other delay in a scenario: the report's
``stats.jitter`` is in *seconds* (as the anchor's is), so the check multiplies it by 1000.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

import attrs

from ..core.observations import PROGRESS_NAMES
from .models import ScenarioError, TableReader, describe

PROGRESS_EVENTS: Final[tuple[str, ...]] = PROGRESS_NAMES  # the core's list, in run order
EXPECT_KEYS: Final[tuple[str, ...]] = (
    "outcome", "error_code", "events", "absent_events", "rtt_ms", "jitter_ms", "packet_loss", "level",
    "min_level",
)

Range = tuple[float, float]


def _fmt(x: float) -> str:
    return f"{x:g}" if x == int(x) else f"{x:.4g}"


def _range(r: Range) -> str:
    return f"[{_fmt(r[0])}, {_fmt(r[1])}]"


def _get(report: Mapping[str, Any], *keys: str) -> Any:
    node: Any = report
    for k in keys:
        if not isinstance(node, Mapping):
            return None
        node = node.get(k)
    return node


def _number(x: object) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


@attrs.frozen
class Expect:
    """What a run of the scenario must produce; :meth:`check` lists what it did not."""

    outcome: Literal["completed", "failed"] | None = None
    error_code: int | None = None
    events: tuple[str, ...] = ()  # must appear, in this order (others may come between)
    absent_events: tuple[str, ...] = ()  # must not appear
    rtt_ms: Range | None = None  # stats.rtt.average, ms
    jitter_ms: Range | None = None  # stats.jitter.average × 1000 (the report has seconds)
    packet_loss: Range | None = None  # stats.packetLoss.average, percent
    level: Range | None = None  # networkQuality.level (final)
    min_level: Range | None = None  # lowest samples[].level

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>", key: str = "expect") -> Expect:
        """Validate an ``[expect]`` table; problems raise ScenarioError naming ``key.<name>``."""
        r = TableReader(data, source, key, EXPECT_KEYS)
        kw: dict[str, Any] = {}
        if "outcome" in r:
            kw["outcome"] = r.string("outcome", choices=("completed", "failed"))
        if "error_code" in r:
            kw["error_code"] = r.integer("error_code", lo=1)
            if kw.get("outcome") == "completed":
                raise r.error("error_code", 'contradicts outcome = "completed" (an error code means failed)')
            kw["outcome"] = "failed"
        for name in ("events", "absent_events"):
            if name in r:
                kw[name] = _event_list(r, name)
        both = set(kw.get("events", ())) & set(kw.get("absent_events", ()))
        if both:
            raise r.error("absent_events", f"{sorted(both)[0]!r} is also listed in events")
        for name, hi in (("rtt_ms", None), ("jitter_ms", None), ("packet_loss", 100.0)):
            if name in r:
                kw[name] = r.range_pair(name, lo=0.0, hi=hi)
        for name in ("level", "min_level"):
            if name in r:
                kw[name] = r.range_pair(name, lo=0, hi=5, integer=True)
        return cls(**kw)

    def check(self, report: Mapping[str, Any]) -> list[str]:
        """Human-readable failures, one per unmet expectation; empty when all are met."""
        failures: list[str] = []
        error = report.get("error")
        failed = isinstance(error, Mapping)
        err_desc = (
            f"{error.get('code')} {error.get('name')}: {error.get('message')}" if isinstance(error, Mapping) else ""
        )
        if self.outcome is not None:
            got = "failed" if failed else "completed"
            if got != self.outcome:
                detail = f" ({err_desc})" if failed else ""
                failures.append(f"outcome: expected {self.outcome!r}, got {got!r}{detail}")
        if self.error_code is not None:
            code = error.get("code") if isinstance(error, Mapping) else None
            if code != self.error_code:
                name = error.get("name") if isinstance(error, Mapping) else None
                got_code = f"{code} ({name})" if failed else "no error (the test completed)"
                failures.append(f"error_code: expected {self.error_code}, got {got_code}")
        names = _event_names(report)
        failures.extend(self._check_events(names))
        for name in self.absent_events:
            if name in names:
                failures.append(f"absent_events: {name!r} occurred")
        stats = [
            ("rtt_ms", self.rtt_ms, ("stats", "rtt", "average"), 1.0, "average rtt", "ms"),
            ("jitter_ms", self.jitter_ms, ("stats", "jitter", "average"), 1000.0, "average jitter", "ms"),
            ("packet_loss", self.packet_loss, ("stats", "packetLoss", "average"), 1.0, "average packet loss", "%"),
        ]
        for key, rng, path, scale, what, unit in stats:
            if rng is None:
                continue
            value = _number(_get(report, *path))
            if value is None:
                failures.append(f"{key}: the report has no {'.'.join(path)} (stats are null: did the test fail?)")
            elif not rng[0] <= value * scale <= rng[1]:
                failures.append(f"{key}: {what} {_fmt(value * scale)} {unit} is outside {_range(rng)}")
        if self.level is not None:
            level = _number(_get(report, "networkQuality", "level"))
            if level is None:
                failures.append("level: the report has no networkQuality.level")
            elif not self.level[0] <= level <= self.level[1]:
                failures.append(f"level: final network quality level {_fmt(level)} is outside {_range(self.level)}")
        if self.min_level is not None:
            samples = report.get("samples")
            levels = [
                v for s in (samples if isinstance(samples, Sequence) else ())
                if isinstance(s, Mapping) and (v := _number(s.get("level"))) is not None
            ]
            if not levels:
                failures.append("min_level: the report has no samples with a level")
            elif not self.min_level[0] <= min(levels) <= self.min_level[1]:
                failures.append(
                    f"min_level: lowest level over {len(levels)} samples {_fmt(min(levels))} "
                    f"is outside {_range(self.min_level)}"
                )
        return failures

    def _check_events(self, names: list[str]) -> list[str]:
        failures: list[str] = []
        pos = 0
        prev: str | None = None
        for name in self.events:
            try:
                pos = names.index(name, pos) + 1
            except ValueError:
                if name in names:
                    failures.append(f"events: {name!r} came before {prev!r}, expected after it")
                else:
                    got = ", ".join(names) or "none"
                    failures.append(f"events: {name!r} did not occur (got: {got})")
                continue
            prev = name
        return failures


def _event_names(report: Mapping[str, Any]) -> list[str]:
    events = report.get("progressEvents")
    if not isinstance(events, Sequence):
        return []
    return [str(e.get("name")) for e in events if isinstance(e, Mapping)]


def _event_list(r: TableReader, name: str) -> tuple[str, ...]:
    value = r.data[name]
    if not isinstance(value, list):
        raise r.error(name, f"must be an array of event names, got {describe(value)}")
    out: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise r.error(f"{name}[{i}]", f"must be an event name, got {describe(item)}")
        if item not in PROGRESS_EVENTS:
            close = difflib.get_close_matches(item, PROGRESS_EVENTS, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(PROGRESS_EVENTS)})"
            raise r.error(f"{name}[{i}]", f"unknown progress event {item!r}{hint}")
        if item in out:
            raise r.error(f"{name}[{i}]", f"{item!r} is listed twice")
        out.append(item)
    return tuple(out)


__all__ = ["PROGRESS_EVENTS", "Expect", "ScenarioError"]
