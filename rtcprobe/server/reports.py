"""Reports sent by clients: checked against the report's schema, then appended to the operator's file.

A report comes from the client, so nothing in it is trusted. :func:`validate_report` checks every
field the core's parser (:meth:`rtcprobe.core.report.PreflightReport.from_dict`) reads — its type,
finiteness, the level's range — and only then hands the object to that parser; whatever is wrong
becomes one :class:`ReportError` naming the field, never another exception (a property test
feeds it hostile input). Keys the parser does not read are ignored, as everywhere in the protocol.

:class:`ReportLog` appends one canonical JSON line per accepted report: the server's own fields
(``receivedAt``, ``identity`` from the token, ``client`` address) and the report as the client
sent it under ``report``. Each line is one ``write(2)`` on a file opened with ``O_APPEND`` from
the event loop, so lines from concurrent sessions (and from several server processes sharing
the file) never interleave; the file is reopened for every line, so a log rotation that moves it
away is followed at once.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from rtcprobe.core.errors import ConfigError
from rtcprobe.core.report import NETWORK_TIMERS, PreflightReport
from rtcprobe.drivers.aiortc.protocol import json_type

MAX_LEVEL: Final = 5
MAX_DEPTH: Final = 32  # levels of nesting; a real report has about 5


class ReportError(ValueError):
    """A report does not have the report's shape; the message names the first bad field."""


# --- validation --------------------------------------------------------------------------------


def _bad(path: str, want: str, value: Any) -> ReportError:
    return ReportError(f"{path} must be {want}, got {json_type(value)}")


def _obj(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(path, "an object", value)
    return value


def _opt_obj(value: Any, path: str) -> dict[str, Any] | None:
    return None if value is None else _obj(value, path)


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise _bad(path, "an array", value)
    return value


def _str(value: Any, path: str, *, nullable: bool = False) -> None:
    if not (isinstance(value, str) or (nullable and value is None)):
        raise _bad(path, "a string or null" if nullable else "a string", value)


def _int(value: Any, path: str, *, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(path, "an integer or null" if nullable else "an integer", value)


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond any float (JSON allows 1 followed by 400 zeros)
        return False


def _num(value: Any, path: str, *, nullable: bool = True) -> None:
    """A finite number (JSON has no NaN; ``1e999`` parses to infinity and is refused here)."""
    if value is None and nullable:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
        raise _bad(path, "a finite number or null" if nullable else "a finite number", value)


def _check_tree(value: Any) -> None:
    """Everywhere, also where the parser reads nothing (``networkQuality.stats``, extra keys): no
    infinite float (the report is stored as sent, as JSON, which has none) and at most
    ``MAX_DEPTH`` levels of nesting (what reads the report later may recurse). Iterative: a deep
    tree costs no stack here."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ReportError("the report holds a number too large for JSON (an infinity)")
        if isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise ReportError(f"the report nests deeper than {MAX_DEPTH} levels")
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))


def _get(obj: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in obj:
        raise ReportError(f"{path} is missing the '{key}' field")
    return obj[key]


def _timing(value: Any, path: str) -> None:
    d = _obj(value, path)
    _num(_get(d, "start", path), f"{path}.start", nullable=False)
    _num(d.get("end"), f"{path}.end")


def _stat(value: Any, path: str) -> None:
    d = _opt_obj(value, path)
    if d is not None:
        for key in ("min", "max", "average"):
            _num(_get(d, key, path), f"{path}.{key}")


def _candidate(value: Any, path: str) -> None:
    d = _obj(value, path)
    for key in ("transportId", "candidateType", "address", "protocol"):
        _str(_get(d, key, path), f"{path}.{key}")
    for key in ("port", "priority"):
        _int(_get(d, key, path), f"{path}.{key}")
    for key in ("url", "relayProtocol"):
        _str(d.get(key), f"{path}.{key}", nullable=True)


def _level(value: Any, path: str) -> None:
    _int(value, path, nullable=True)
    if value is not None and not 0 <= value <= MAX_LEVEL:
        raise ReportError(f"{path} must be 0..{MAX_LEVEL} or null, got {value}")


def _check(d: dict[str, Any]) -> None:
    _timing(_get(d, "testTiming", "report"), "report.testTiming")
    timers = _obj(d.get("networkTiming", {}), "report.networkTiming")
    for name, timing in timers.items():
        if name not in NETWORK_TIMERS:
            raise ReportError(f"report.networkTiming has an unknown timer {name[:40]!r}")
        _timing(timing, f"report.networkTiming.{name}")
    stats = _opt_obj(d.get("stats"), "report.stats")
    if stats is not None:
        for key in ("jitter", "rtt", "packetLoss"):
            _stat(_get(stats, key, "report.stats"), f"report.stats.{key}")
    for i, c in enumerate(_list(d.get("iceCandidateStats", []), "report.iceCandidateStats")):
        _candidate(c, f"report.iceCandidateStats[{i}]")
    pair = _opt_obj(d.get("selectedIceCandidatePairStats"), "report.selectedIceCandidatePairStats")
    if pair is not None:
        for key in ("localCandidate", "remoteCandidate"):
            path = f"report.selectedIceCandidatePairStats.{key}"
            _candidate(_get(pair, key, "report.selectedIceCandidatePairStats"), path)
    for i, e in enumerate(_list(d.get("progressEvents", []), "report.progressEvents")):
        path = f"report.progressEvents[{i}]"
        event = _obj(e, path)
        _str(_get(event, "name", path), f"{path}.name")
        _num(_get(event, "duration", path), f"{path}.duration")
    nq = _opt_obj(d.get("networkQuality"), "report.networkQuality")
    if nq is not None:
        _level(nq.get("level"), "report.networkQuality.level")
        _opt_obj(nq.get("stats"), "report.networkQuality.stats")
    bitrate = _opt_obj(d.get("bitrate"), "report.bitrate")
    if bitrate is not None:
        for key in ("outgoing", "incoming"):
            _stat(bitrate.get(key), f"report.bitrate.{key}")
    for i, s in enumerate(_list(d.get("samples", []), "report.samples")):
        path = f"report.samples[{i}]"
        sample = _obj(s, path)
        for key in ("time", "jitter", "rtt", "packetLoss", "outgoingBitrate", "incomingBitrate"):
            _num(_get(sample, key, path), f"{path}.{key}")
        _level(_get(sample, "level", path), f"{path}.level")
    run = _opt_obj(d.get("run"), "report.run")
    if run is not None:
        _str(_get(run, "driver", "report.run"), "report.run.driver")
        _str(_get(run, "version", "report.run"), "report.run.version")
        _str(run.get("scenario"), "report.run.scenario", nullable=True)
        _int(run.get("seed"), "report.run.seed", nullable=True)
        _str(run.get("stack"), "report.run.stack", nullable=True)
    error = _opt_obj(d.get("error"), "report.error")
    if error is not None:
        _int(_get(error, "code", "report.error"), "report.error.code")
        _str(_get(error, "name", "report.error"), "report.error.name")
        _str(_get(error, "message", "report.error"), "report.error.message")


def validate_report(value: Any) -> PreflightReport:
    """The report ``value`` (a parsed JSON value) holds; :class:`ReportError` for anything else."""
    d = _obj(value, "report")
    _check(d)  # first: it names the field (it reads fixed paths only, so depth costs it nothing)
    _check_tree(d)
    try:
        return PreflightReport.from_dict(d)
    except Exception as exc:  # a field the checks above missed: still the client's fault, one error
        raise ReportError(f"report rejected by the report parser: {type(exc).__name__}") from None


# --- the operator's file -----------------------------------------------------------------------


def report_line(*, report: Mapping[str, Any], received_at: float, identity: str, client: str) -> bytes:
    """One canonical JSON line: sorted keys, no spaces, no NaN, ASCII, ending in a newline.

    ``received_at`` is unix seconds, written as epoch milliseconds like the report's own times.
    """
    record = {"receivedAt": round(received_at * 1000, 3), "identity": identity, "client": client,
              "report": report}
    # ASCII only: a lone surrogate a client put in a string stays an escape, never invalid UTF-8.
    return (json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n").encode("ascii")


class ReportLog:
    """Appends report lines to ``path`` (created with mode 0640 when missing)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:  # fail at start-up, not at the first report
            os.close(self._open())
        except OSError as exc:
            raise ConfigError(f"cannot append to the reports file {self.path}: {exc.strerror}") from None

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o640)

    def append(self, line: bytes) -> None:
        """Write ``line`` with one ``write(2)`` (a short write, rare on a regular file, is finished
        with more). Raises OSError (full disk, file made unwritable)."""
        fd = self._open()
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)


__all__ = ["MAX_DEPTH", "MAX_LEVEL", "ReportError", "ReportLog", "report_line", "validate_report"]
