"""Expectations a scenario states about its own report (``[expect]``), checked by ``--check``.

The report is the JSON dict of docs/architecture.md#the-report-and-its-units. Units follow the
report, except that the jitter range is written in milliseconds like every other delay in a
scenario: the report's ``stats.jitter`` is in *seconds* (as in Twilio Video's preflight report,
docs/references.md#twilio-video-preflight), so the check multiplies it by 1000.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
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


# The report's stats an [expect] range applies to: path, factor to the range's unit, wording.
_STATS: Final[dict[str, tuple[tuple[str, ...], float, str, str]]] = {
    "rtt_ms": (("stats", "rtt", "average"), 1.0, "average rtt", "ms"),
    "jitter_ms": (("stats", "jitter", "average"), 1000.0, "average jitter", "ms"),
    "packet_loss": (("stats", "packetLoss", "average"), 1.0, "average packet loss", "%"),
}


def _show(value: object) -> str:
    """An expected value as the CLI lists it: ``completed``, ``53002``, ``[15, 30]``, ``[a, b]``."""
    if isinstance(value, tuple):
        return "[" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) + "]"
    return str(value)


@attrs.frozen
class ExpectationResult:
    """How a report fared against one stated expectation."""

    key: str  # the [expect] key, e.g. "rtt_ms"
    expected: str  # the expected value as written back, e.g. "[15, 30]"
    failures: tuple[str, ...]  # why it is unmet, one line each; empty when met

    @property
    def met(self) -> bool:
        return not self.failures


@attrs.frozen
class Expect:
    """What a run of the scenario must produce; :meth:`check` lists what it did not, :meth:`results`
    how each stated expectation fared."""

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

    def results(self, report: Mapping[str, Any]) -> list[ExpectationResult]:
        """One result per stated expectation, in the order of EXPECT_KEYS: met or not, and the value
        expected. ``outcome`` is left out when ``error_code`` is stated: the code implies
        ``outcome = "failed"`` and is unmet whenever that is."""
        return [r for r in self._results(report) if not (r.key == "outcome" and self.error_code is not None)]

    def check(self, report: Mapping[str, Any]) -> list[str]:
        """Human-readable failures, one per unmet expectation; empty when all are met."""
        return [failure for result in self._results(report) for failure in result.failures]

    def _results(self, report: Mapping[str, Any]) -> list[ExpectationResult]:
        names = _event_names(report)
        checks: dict[str, Callable[[], list[str]]] = {
            "outcome": lambda: self._outcome(report),
            "error_code": lambda: self._error_code(report),
            "events": lambda: self._events(names),
            "absent_events": lambda: [f"absent_events: {n!r} occurred" for n in self.absent_events if n in names],
            "rtt_ms": lambda: _stat("rtt_ms", self.rtt_ms, report),
            "jitter_ms": lambda: _stat("jitter_ms", self.jitter_ms, report),
            "packet_loss": lambda: _stat("packet_loss", self.packet_loss, report),
            "level": lambda: _level(self.level, report),
            "min_level": lambda: _min_level(self.min_level, report),
        }
        return [
            ExpectationResult(key, _show(expected), tuple(checks[key]()))
            for key in EXPECT_KEYS
            if (expected := getattr(self, key)) != _DEFAULTS[key]  # not stated
        ]

    def _outcome(self, report: Mapping[str, Any]) -> list[str]:
        error = report.get("error")
        if not isinstance(error, Mapping):
            return [] if self.outcome == "completed" else [f"outcome: expected {self.outcome!r}, got 'completed'"]
        if self.outcome == "failed":
            return []
        detail = f"{error.get('code')} {error.get('name')}: {error.get('message')}"
        return [f"outcome: expected {self.outcome!r}, got 'failed' ({detail})"]

    def _error_code(self, report: Mapping[str, Any]) -> list[str]:
        error = report.get("error")
        if not isinstance(error, Mapping):
            return [f"error_code: expected {self.error_code}, got no error (the test completed)"]
        if error.get("code") == self.error_code:
            return []
        return [f"error_code: expected {self.error_code}, got {error.get('code')} ({error.get('name')})"]

    def _events(self, names: list[str]) -> list[str]:
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


_DEFAULTS: Final[dict[str, object]] = {key: getattr(Expect(), key) for key in EXPECT_KEYS}


def _stat(key: str, rng: Range | None, report: Mapping[str, Any]) -> list[str]:
    assert rng is not None
    path, scale, what, unit = _STATS[key]
    value = _number(_get(report, *path))
    if value is None:
        return [f"{key}: the report has no {'.'.join(path)} (stats are null: did the test fail?)"]
    if not rng[0] <= value * scale <= rng[1]:
        return [f"{key}: {what} {_fmt(value * scale)} {unit} is outside {_range(rng)}"]
    return []


def _level(rng: Range | None, report: Mapping[str, Any]) -> list[str]:
    assert rng is not None
    level = _number(_get(report, "networkQuality", "level"))
    if level is None:
        return ["level: the report has no networkQuality.level"]
    if not rng[0] <= level <= rng[1]:
        return [f"level: final network quality level {_fmt(level)} is outside {_range(rng)}"]
    return []


def _min_level(rng: Range | None, report: Mapping[str, Any]) -> list[str]:
    assert rng is not None
    samples = report.get("samples")
    levels = [
        v for s in (samples if isinstance(samples, Sequence) else ())
        if isinstance(s, Mapping) and (v := _number(s.get("level"))) is not None
    ]
    if not levels:
        return ["min_level: the report has no samples with a level"]
    if not rng[0] <= min(levels) <= rng[1]:
        return [f"min_level: lowest level over {len(levels)} samples {_fmt(min(levels))} is outside {_range(rng)}"]
    return []


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


__all__ = ["PROGRESS_EVENTS", "Expect", "ExpectationResult", "ScenarioError"]
