"""The core's events as the server sends them in core mode, back into the core's event objects.

The inverse of :func:`rtcprobe.core.codec.encode_event` for the five events
(docs/signaling.md#core-mode-browsers): what the page receives on its WebSocket is decoded here so
the rest of rtcprobe (the progress reporter, the CLI's summary, the replay) sees the same events
an in-process core emits. A report is a :class:`WireReport`: the decoded report, which gives back
the very object the server sent as its ``to_dict()``, so its JSON is the one the server's core
built, byte for byte (:meth:`PreflightReport.from_dict` alone is not a lossless inverse: a
timer's ``duration`` is recomputed from the rounded ``start`` and ``end``, and may differ in its
last digit).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, cast

import attrs
from rtcprobe.core.errors import PreflightErrorInfo
from rtcprobe.core.observations import (
    PROGRESS_NAMES,
    Completed,
    Event,
    Failed,
    NetworkQualityLevelChanged,
    Progress,
    ProgressName,
    SampleRecorded,
)
from rtcprobe.core.report import PreflightReport


class EventError(ValueError):
    """A server event that does not decode (a server speaking another protocol, or a bug)."""


def _int(d: Mapping[str, Any], key: str, *, optional: bool = False) -> Any:
    value = d.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise EventError(f"event {d.get('kind')!r}: {key!r} must be an integer, got {value!r}")
    return value


def _obj(d: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = d.get(key)
    if not isinstance(value, Mapping):
        raise EventError(f"event {d.get('kind')!r}: {key!r} must be an object")
    return value


@attrs.frozen(eq=True, hash=False)
class WireReport(PreflightReport):
    """A report decoded from the JSON object a server sent: its fields are the decoded ones, its
    :meth:`to_dict` (and so ``to_json``) that object itself, so whatever prints or stores it
    prints what the server's core built."""

    wire: Mapping[str, Any] = attrs.field(factory=dict, kw_only=True, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(dict(self.wire))


def report_of(value: Mapping[str, Any]) -> WireReport:
    """A report object (``PreflightReport.to_dict()``'s shape) as the core's report."""
    try:
        decoded = PreflightReport.from_dict(value)
        return WireReport(**attrs.asdict(decoded, recurse=False), wire=copy.deepcopy(dict(value)))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise EventError(f"the report does not decode: {type(exc).__name__}: {exc}") from None


def error_of(value: Mapping[str, Any]) -> PreflightErrorInfo:
    code, name, message = value.get("code"), value.get("name"), value.get("message")
    if isinstance(code, bool) or not isinstance(code, int) or not isinstance(name, str) or not isinstance(message, str):
        raise EventError(f"a failure's error must have an integer code, a name and a message, got {dict(value)!r}")
    return PreflightErrorInfo(code, name, message)


def decode_event(value: Any) -> Event:
    """The core event an ``event`` message's ``event`` object carries; EventError if it does not."""
    if not isinstance(value, Mapping):
        raise EventError("an event must be an object")
    kind = value.get("kind")
    if kind == "progress":
        name, duration = value.get("name"), value.get("duration")
        if name not in PROGRESS_NAMES:
            raise EventError(f"event 'progress': unknown step {name!r}")
        if isinstance(duration, bool) or not isinstance(duration, int | float):
            raise EventError(f"event 'progress': 'duration' must be a number, got {duration!r}")
        return Progress(cast(ProgressName, name), float(duration))
    if kind == "networkQualityLevelChanged":
        return NetworkQualityLevelChanged(_int(value, "level"), dict(_obj(value, "stats")))
    if kind == "sampleRecorded":
        return SampleRecorded(_int(value, "index"), _int(value, "total"), _int(value, "level", optional=True))
    if kind == "completed":
        return Completed(report_of(_obj(value, "report")))
    if kind == "failed":
        return Failed(error_of(_obj(value, "error")), report_of(_obj(value, "report")))
    raise EventError(f"unknown event kind {kind!r}")


__all__ = ["EventError", "WireReport", "decode_event", "error_of", "report_of"]
