"""The preflight report: frozen types, how a run's recorded facts become one, and canonical JSON.

Keys and units are those of Twilio Video's preflight report (docs/references.md#twilio-video-preflight,
docs/architecture.md#the-report-and-its-units): timings in ms (epoch ms; the simulator's epoch is
0), jitter in seconds, rtt in ms, packetLoss in percent. Our extensions live under keys of their
own (``networkQuality``, ``bitrate``, ``samples``, ``run``, ``error``) and never change Twilio's.

:func:`build_report` is the one place a run becomes a report: the machine
(:class:`rtcprobe.core.PreflightMachine`) records facts in its own terms (monotonic seconds,
per-sample rows) and hands them over when the test ends; the conversion to epoch ms, the
aggregates and the rule "a failed run reports no stats and no candidates" live here.

Canonical serialization: the same report gives the same bytes. Floats are rounded to a fixed
number of decimals (``_DECIMALS``) so that harmless last-bit differences do not leak into the
JSON, keys are sorted, and NaN/inf never appear (they become null).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring_ascii
from typing import Any, Final, Literal, get_args

import attrs

from .errors import PreflightErrorInfo

_DECIMALS = 6  # µs resolution for ms values, µs·1e-3 for seconds: far below anything measured


def _num(x: float | None) -> float | int | None:
    if x is None or not math.isfinite(x):
        return None
    r = round(float(x), _DECIMALS)
    return 0.0 if r == 0 else r  # no "-0.0" in canonical output


@attrs.frozen
class Stat:
    """``{min, max, average}`` of a series (twilio-video.js's ``makeStat``)."""

    min: float
    max: float
    average: float

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Stat | None:
        """Aggregate the finite values; None for an empty series (twilio-video.js returns null)."""
        vals = [float(v) for v in values if v is not None and math.isfinite(v)]
        if not vals:
            return None
        n, lo, hi = len(vals), min(vals), max(vals)
        # Summing v/n rather than dividing the sum keeps huge (finite) values from overflowing.
        try:
            average = math.fsum([v / n for v in vals])
        except OverflowError:  # fsum's partials can still overflow near the largest float
            average = math.nan
        if not lo <= average <= hi:  # that, or v/n underflowing to 0 for the tiniest values
            scale = max(abs(lo), abs(hi))
            average = min(hi, max(lo, math.fsum(v / scale for v in vals) / n * scale))
        return cls(lo, hi, average)

    def to_dict(self) -> dict[str, Any]:
        return {"min": _num(self.min), "max": _num(self.max), "average": _num(self.average)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Stat | None:
        return None if d is None else cls(d["min"], d["max"], d["average"])


@attrs.frozen
class Timing:
    """A timer: ``end``/``duration`` stay undefined (absent in JSON) until it is stopped."""

    start: float
    end: float | None = None

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start

    def stopped(self, end: float) -> Timing:
        return Timing(self.start, end)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"start": _num(self.start)}
        if self.end is not None:
            d["end"] = _num(self.end)
            d["duration"] = _num(self.duration)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Timing:
        return cls(d["start"], d.get("end"))


#: The connection timers of ``networkTiming``, in the report's order.
TimerName = Literal["connect", "media", "dtls", "ice", "peerConnection"]
NETWORK_TIMERS: Final[tuple[TimerName, ...]] = get_args(TimerName)


@attrs.frozen
class IceCandidateStats:
    """One ICE candidate as Twilio's report has it (RTCIceCandidateStats subset)."""

    transport_id: str
    candidate_type: str  # host | srflx | prflx | relay
    port: int
    address: str
    priority: int
    protocol: str  # udp | tcp
    url: str | None = None  # the STUN/TURN URL a srflx/relay candidate came from
    relay_protocol: str | None = None  # udp | tcp | tls, relay candidates only

    def to_dict(self) -> dict[str, Any]:
        return {
            "transportId": self.transport_id,
            "candidateType": self.candidate_type,
            "port": self.port,
            "address": self.address,
            "priority": self.priority,
            "protocol": self.protocol,
            "url": self.url,
            "relayProtocol": self.relay_protocol,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> IceCandidateStats:
        return cls(
            d["transportId"], d["candidateType"], d["port"], d["address"], d["priority"], d["protocol"],
            d.get("url"), d.get("relayProtocol"),
        )


@attrs.frozen
class SelectedCandidatePair:
    local_candidate: IceCandidateStats
    remote_candidate: IceCandidateStats

    def to_dict(self) -> dict[str, Any]:
        return {"localCandidate": self.local_candidate.to_dict(), "remoteCandidate": self.remote_candidate.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> SelectedCandidatePair | None:
        if d is None:
            return None
        return cls(IceCandidateStats.from_dict(d["localCandidate"]), IceCandidateStats.from_dict(d["remoteCandidate"]))


@attrs.frozen
class ProgressEvent:
    """``{name, duration}``: ms since the test started."""

    name: str
    duration: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "duration": _num(self.duration)}


@attrs.frozen
class ReportStats:
    jitter: Stat | None  # seconds
    rtt: Stat | None  # ms
    packet_loss: Stat | None  # percent

    def to_dict(self) -> dict[str, Any]:
        return {
            "jitter": None if self.jitter is None else self.jitter.to_dict(),
            "rtt": None if self.rtt is None else self.rtt.to_dict(),
            "packetLoss": None if self.packet_loss is None else self.packet_loss.to_dict(),
        }


@attrs.frozen
class Sample:
    """One stats sample (our extension): time in ms since the test started, report units."""

    time: float
    jitter: float | None  # s
    rtt: float | None  # ms
    packet_loss: float | None  # %
    outgoing_bitrate: float | None  # kbps
    incoming_bitrate: float | None  # kbps
    level: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": _num(self.time),
            "jitter": _num(self.jitter),
            "rtt": _num(self.rtt),
            "packetLoss": _num(self.packet_loss),
            "outgoingBitrate": _num(self.outgoing_bitrate),
            "incomingBitrate": _num(self.incoming_bitrate),
            "level": self.level,
        }

    @classmethod
    def measured(
        cls,
        *,
        elapsed: float,
        jitter: float | None,
        rtt: float | None,
        loss: float | None,
        outgoing_bps: float | None,
        incoming_bps: float | None,
        level: int | None,
    ) -> Sample:
        """A row from SI measurements (seconds since the start, rtt in s, loss a fraction, bps)."""
        return cls(  # time, jitter, rtt, packet_loss, outgoing_bitrate, incoming_bitrate, level
            elapsed * 1000,
            jitter,
            None if rtt is None else rtt * 1000,
            None if loss is None else 100.0 * loss,
            None if outgoing_bps is None else outgoing_bps / 1000,
            None if incoming_bps is None else incoming_bps / 1000,
            level,
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Sample:
        return cls(
            d["time"], d["jitter"], d["rtt"], d["packetLoss"], d["outgoingBitrate"], d["incomingBitrate"], d["level"]
        )


@attrs.frozen
class RunInfo:
    """Where a report came from (our extension).

    ``stack`` is the simulator's endpoint model when it is not aiortc's (``"libwebrtc"``); it is
    left out of the report otherwise, so the aiortc model's reports keep the bytes they had before
    the key existed (the golden hashes pin them): a ``driver = "sim"`` report without it is the
    aiortc model's. The real drivers run their own stack and leave it out too.
    """

    driver: str
    version: str
    scenario: str | None = None
    seed: int | None = None
    stack: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"driver": self.driver, "scenario": self.scenario, "seed": self.seed, "version": self.version}
        if self.stack is not None:
            out["stack"] = self.stack
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> RunInfo | None:
        return None if d is None else cls(d["driver"], d["version"], d.get("scenario"), d.get("seed"),
                                          d.get("stack"))


def canonical_json(obj: Any, *, indent: int | None = 2) -> str:
    """``json.dumps(obj, sort_keys=True, indent=indent, allow_nan=False)`` with the separators
    ``(",", ": ")`` when indented and ``(",", ":")`` when not, byte for byte.

    The indented form is what a person reads and what the golden reports hash; the stdlib
    builds it with its pure-Python encoder (its C encoder does not indent), which took a third of
    the core's time in a simulated preflight. :func:`_indented` writes the same bytes from a
    direct recursion (the tests compare the two on arbitrary JSON trees); a tree it does not
    handle (a key that is not a string) goes to ``json.dumps`` unchanged.
    """
    if indent is None:
        return json.dumps(obj, sort_keys=True, allow_nan=False, separators=(",", ":"))
    out: list[str] = []
    try:
        _indented(obj, out, "\n", " " * indent)
    except _Unhandled:
        return json.dumps(obj, sort_keys=True, indent=indent, allow_nan=False, separators=(",", ": "))
    return "".join(out)


class _Unhandled(Exception):
    """A value :func:`_indented` leaves to ``json.dumps``."""


def _indented(o: Any, out: list[str], newline: str, step: str) -> None:
    # The scalar cases follow json.encoder's: bool before int, float.__repr__, no NaN/inf.
    if isinstance(o, str):
        out.append(encode_basestring_ascii(o))
    elif o is None:
        out.append("null")
    elif o is True:
        out.append("true")
    elif o is False:
        out.append("false")
    elif isinstance(o, float):
        if o != o or o == math.inf or o == -math.inf:
            raise ValueError(f"Out of range float values are not JSON compliant: {o!r}")
        out.append(float.__repr__(o))
    elif isinstance(o, int):
        out.append(int.__repr__(o))
    elif isinstance(o, dict):
        if not o:
            out.append("{}")
            return
        inner = newline + step
        sep = "{" + inner
        for key in sorted(o):
            if not isinstance(key, str):
                raise _Unhandled
            out.append(sep)
            out.append(encode_basestring_ascii(key))
            out.append(": ")
            _indented(o[key], out, inner, step)
            sep = "," + inner
        out.append(newline + "}")
    elif isinstance(o, list | tuple):
        if not o:
            out.append("[]")
            return
        inner = newline + step
        sep = "[" + inner
        for item in o:
            out.append(sep)
            _indented(item, out, inner, step)
            sep = "," + inner
        out.append(newline + "]")
    else:
        raise _Unhandled


def _round_tree(x: Any) -> Any:
    if isinstance(x, float):
        return _num(x)
    if isinstance(x, Mapping):
        return {str(k): _round_tree(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_round_tree(v) for v in x]
    return x


@attrs.frozen(eq=True, hash=False)
class PreflightReport:
    """The whole report; a failure's partial report is the same type with ``error`` set."""

    test_timing: Timing
    network_timing: Mapping[str, Timing] = attrs.field(factory=dict)
    stats: ReportStats | None = None
    ice_candidate_stats: tuple[IceCandidateStats, ...] = ()
    selected_ice_candidate_pair_stats: SelectedCandidatePair | None = None
    progress_events: tuple[ProgressEvent, ...] = ()
    # Extensions.
    network_quality_level: int | None = None
    network_quality_stats: Mapping[str, Any] | None = None  # NetworkQualityStats at verbosity 3
    bitrate_outgoing: Stat | None = None  # kbps
    bitrate_incoming: Stat | None = None  # kbps
    samples: tuple[Sample, ...] = ()
    run: RunInfo | None = None
    error: PreflightErrorInfo | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "testTiming": self.test_timing.to_dict(),
            "networkTiming": {k: t.to_dict() for k, t in self.network_timing.items()},
            "stats": None if self.stats is None else self.stats.to_dict(),
            "iceCandidateStats": [c.to_dict() for c in self.ice_candidate_stats],
            "selectedIceCandidatePairStats": (
                None if self.selected_ice_candidate_pair_stats is None
                else self.selected_ice_candidate_pair_stats.to_dict()
            ),
            "progressEvents": [e.to_dict() for e in self.progress_events],
            "networkQuality": (
                None if self.network_quality_level is None and self.network_quality_stats is None
                else {"level": self.network_quality_level, "stats": _round_tree(self.network_quality_stats)}
            ),
            "bitrate": (
                None if self.bitrate_outgoing is None and self.bitrate_incoming is None
                else {
                    "outgoing": None if self.bitrate_outgoing is None else self.bitrate_outgoing.to_dict(),
                    "incoming": None if self.bitrate_incoming is None else self.bitrate_incoming.to_dict(),
                }
            ),
            "samples": [s.to_dict() for s in self.samples],
            "run": None if self.run is None else self.run.to_dict(),
        }
        if self.error is not None:
            d["error"] = self.error.to_dict()
        return d

    def to_json(self, *, indent: int | None = 2) -> str:
        """Canonical JSON: sorted keys, rounded floats, no NaN; same report → same bytes."""
        if indent == 2 and type(indent) is int:
            try:
                return _report_json(self)
            except (_Unhandled, TypeError, ValueError):
                pass  # not plain data, or an error to raise: the general path decides, as always
        return canonical_json(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PreflightReport:
        stats = d.get("stats")
        nq = d.get("networkQuality")
        bitrate = d.get("bitrate") or {}
        err = d.get("error")
        return cls(
            test_timing=Timing.from_dict(d["testTiming"]),
            network_timing={k: Timing.from_dict(v) for k, v in d.get("networkTiming", {}).items()},
            stats=None if stats is None else ReportStats(
                Stat.from_dict(stats["jitter"]), Stat.from_dict(stats["rtt"]), Stat.from_dict(stats["packetLoss"])
            ),
            ice_candidate_stats=tuple(IceCandidateStats.from_dict(c) for c in d.get("iceCandidateStats", [])),
            selected_ice_candidate_pair_stats=SelectedCandidatePair.from_dict(d.get("selectedIceCandidatePairStats")),
            progress_events=tuple(ProgressEvent(e["name"], e["duration"]) for e in d.get("progressEvents", [])),
            network_quality_level=None if nq is None else nq.get("level"),
            network_quality_stats=None if nq is None else nq.get("stats"),
            bitrate_outgoing=Stat.from_dict(bitrate.get("outgoing")),
            bitrate_incoming=Stat.from_dict(bitrate.get("incoming")),
            samples=tuple(Sample.from_dict(s) for s in d.get("samples", [])),
            run=RunInfo.from_dict(d.get("run")),
            error=None if err is None else PreflightErrorInfo(err["code"], err["name"], err["message"]),
        )

    @classmethod
    def from_json(cls, text: str) -> PreflightReport:
        return cls.from_dict(json.loads(text))


def build_report(
    *,
    start: float,
    end: float,
    epoch_ms: float,
    timers: Mapping[TimerName, Timing],
    progress: Sequence[ProgressEvent],
    samples: Sequence[Sample],
    candidates: tuple[IceCandidateStats, ...],
    selected_pair: SelectedCandidatePair | None,
    level: int | None,
    quality_stats: Mapping[str, Any] | None,
    run: RunInfo | None,
    error: PreflightErrorInfo | None,
) -> PreflightReport:
    """The report of a run that started at monotonic ``start`` (wall clock ``epoch_ms``) and ended
    at ``end`` (seconds), from what the machine recorded.

    ``timers`` are in monotonic seconds and become epoch ms here, in the report's order.
    ``candidates`` and ``selected_pair`` are those of the latest stats sample that carried any.
    A failed run (``error`` set) keeps its progress, timers, samples and quality, but reports no
    stats and no candidates, as Twilio Video's preflight does.
    """

    def epoch(t: float) -> float:
        return epoch_ms + (t - start) * 1000

    network_timing: dict[str, Timing] = {
        name: Timing(epoch(t.start), None if t.end is None else epoch(t.end))
        for name in NETWORK_TIMERS
        if (t := timers.get(name)) is not None
    }
    rows = tuple(samples)
    stats = None
    if error is None:
        stats = ReportStats(
            jitter=Stat.of([s.jitter for s in rows]),
            rtt=Stat.of([s.rtt for s in rows]),
            packet_loss=Stat.of([s.packet_loss for s in rows]),
        )
    else:
        candidates, selected_pair = (), None
    return PreflightReport(
        test_timing=Timing(epoch_ms, epoch(end)),
        network_timing=network_timing,
        stats=stats,
        ice_candidate_stats=candidates,
        selected_ice_candidate_pair_stats=selected_pair,
        progress_events=tuple(progress),
        network_quality_level=level,
        network_quality_stats=quality_stats,
        bitrate_outgoing=Stat.of([s.outgoing_bitrate for s in rows]),
        bitrate_incoming=Stat.of([s.incoming_bitrate for s in rows]),
        samples=rows,
        run=run,
        error=error,
    )


# --- The report's indented JSON, written directly ------------------------------------------------
# ``canonical_json(report.to_dict())`` builds a tree of ~260 nodes and then walks it: two thirds of
# the time a simulated preflight spends on its report. _report_json writes the same bytes from the
# report's objects in one pass: each object's keys in sorted order, each number rounded as _num
# rounds it. It handles plain data only (exactly these classes, str/int/float/bool/None and dicts
# with str keys, lists and tuples of them) and raises _Unhandled for anything else, which
# PreflightReport.to_json hands to the general path; a ValueError or TypeError goes there too, to
# be raised (or not) exactly as before. The tests compare both paths on arbitrary reports.

_float_repr = float.__repr__
_int_repr = int.__repr__
_isfinite = math.isfinite


def _jnum(x: float | None) -> str:
    """The JSON of ``_num(x)``.

    For a float in 1e-4 <= |x| < 1e9 it is x printed with six decimals, trailing zeros dropped (twice as fast
    as round + repr): round(x, 6) is the float nearest to the decimal that "{x:.6f}" prints (both are
    dtoa's correctly rounded six decimals), and that decimal has at most 15 significant digits,
    so it is the only one of its length or shorter that reads back as that float: repr's digits.
    repr prints such a value in fixed notation (1e-4 <= |r| < 1e16), with ".0" when whole.
    """
    if type(x) is float and (1e-4 <= x < 1e9 or -1e9 < x <= -1e-4):  # (a float: str.format is float's)
        s = f"{x:.6f}".rstrip("0")
        return s + "0" if s[-1] == "." else s
    if x is None or not _isfinite(x):
        return "null"
    r = round(float(x), _DECIMALS)
    return "0.0" if r == 0 else _float_repr(r)


def _plain(o: Any, newline: str) -> str:
    """``canonical_json(o)`` indented by two spaces, its first line at ``newline``'s depth."""
    t = type(o)
    if t is str:
        return encode_basestring_ascii(o)
    if o is None:
        return "null"
    if t is float:
        if o != o or o == math.inf or o == -math.inf:
            raise ValueError(f"Out of range float values are not JSON compliant: {o!r}")
        return _float_repr(o)
    if t is int:
        return _int_repr(o)
    if o is True:
        return "true"
    if o is False:
        return "false"
    if t is dict:
        if not o:
            return "{}"
        inner = newline + "  "
        parts = []
        for key in sorted(o):
            if type(key) is not str:
                raise _Unhandled
            parts.append(encode_basestring_ascii(key) + ": " + _plain(o[key], inner))
        return "{" + inner + ("," + inner).join(parts) + newline + "}"
    if t is list or t is tuple:
        if not o:
            return "[]"
        inner = newline + "  "
        return "[" + inner + ("," + inner).join([_plain(v, inner) for v in o]) + newline + "]"
    raise _Unhandled


def _rounded(o: Any, newline: str) -> str:
    """``_plain(_round_tree(o), newline)``: floats rounded as _num rounds them."""
    t = type(o)
    if t is float:
        return _jnum(o)
    if t is dict:
        if not o:
            return "{}"
        inner = newline + "  "
        parts = []
        for key in sorted(o):
            if type(key) is not str:
                raise _Unhandled
            v = o[key]  # the usual leaves inline: a call per node is most of the cost
            if v is None:
                parts.append(encode_basestring_ascii(key) + ": null")
            elif type(v) is int:
                parts.append(encode_basestring_ascii(key) + ": " + _int_repr(v))
            elif type(v) is float:
                parts.append(encode_basestring_ascii(key) + ": " + _jnum(v))
            else:
                parts.append(encode_basestring_ascii(key) + ": " + _rounded(v, inner))
        return "{" + inner + ("," + inner).join(parts) + newline + "}"
    if t is list or t is tuple:
        if not o:
            return "[]"
        inner = newline + "  "
        return "[" + inner + ("," + inner).join([_rounded(v, inner) for v in o]) + newline + "]"
    return _plain(o, newline)


def _object(newline: str, *items: str) -> str:
    """A JSON object from its ``"key": value`` items, in sorted-key order, at ``newline``'s depth."""
    inner = newline + "  "
    return "{" + inner + ("," + inner).join(items) + newline + "}"


def _stat_json(s: Stat | None, newline: str) -> str:
    if s is None:
        return "null"
    if type(s) is not Stat:
        raise _Unhandled
    return _object(newline, '"average": ' + _jnum(s.average), '"max": ' + _jnum(s.max), '"min": ' + _jnum(s.min))


def _timing_json(t: Timing, newline: str) -> str:
    if type(t) is not Timing:
        raise _Unhandled
    if t.end is None:
        return _object(newline, '"start": ' + _jnum(t.start))
    return _object(
        newline, '"duration": ' + _jnum(t.duration), '"end": ' + _jnum(t.end), '"start": ' + _jnum(t.start)
    )


def _candidate_json(c: IceCandidateStats, newline: str) -> str:
    if type(c) is not IceCandidateStats:
        raise _Unhandled
    inner = newline + "  "
    return _object(
        newline,
        '"address": ' + _plain(c.address, inner),
        '"candidateType": ' + _plain(c.candidate_type, inner),
        '"port": ' + _plain(c.port, inner),
        '"priority": ' + _plain(c.priority, inner),
        '"protocol": ' + _plain(c.protocol, inner),
        '"relayProtocol": ' + _plain(c.relay_protocol, inner),
        '"transportId": ' + _plain(c.transport_id, inner),
        '"url": ' + _plain(c.url, inner),
    )


def _sample_json(s: Sample, newline: str) -> str:
    if type(s) is not Sample:
        raise _Unhandled
    return _object(
        newline,
        '"incomingBitrate": ' + _jnum(s.incoming_bitrate),
        '"jitter": ' + _jnum(s.jitter),
        '"level": ' + _plain(s.level, newline + "  "),
        '"outgoingBitrate": ' + _jnum(s.outgoing_bitrate),
        '"packetLoss": ' + _jnum(s.packet_loss),
        '"rtt": ' + _jnum(s.rtt),
        '"time": ' + _jnum(s.time),
    )


def _list_json(items: Sequence[Any], write: Any, newline: str) -> str:
    if type(items) is not tuple:
        raise _Unhandled
    if not items:
        return "[]"
    inner = newline + "  "
    return "[" + inner + ("," + inner).join([write(x, inner) for x in items]) + newline + "]"


def _report_json(r: PreflightReport) -> str:
    """``canonical_json(r.to_dict())`` (indent 2) for a report of plain data; else _Unhandled."""
    n1, n2 = "\n  ", "\n    "
    items = []
    if r.bitrate_outgoing is None and r.bitrate_incoming is None:
        items.append('"bitrate": null')
    else:
        items.append('"bitrate": ' + _object(
            n1, '"incoming": ' + _stat_json(r.bitrate_incoming, n2), '"outgoing": ' + _stat_json(r.bitrate_outgoing, n2)
        ))
    if r.error is not None:
        if type(r.error) is not PreflightErrorInfo:
            raise _Unhandled
        items.append('"error": ' + _plain(r.error.to_dict(), n1))
    items.append('"iceCandidateStats": ' + _list_json(r.ice_candidate_stats, _candidate_json, n1))
    if r.network_quality_level is None and r.network_quality_stats is None:
        items.append('"networkQuality": null')
    else:
        items.append('"networkQuality": ' + _object(
            n1, '"level": ' + _plain(r.network_quality_level, n2), '"stats": ' + _rounded(r.network_quality_stats, n2)
        ))
    timing = r.network_timing
    if type(timing) is not dict:
        raise _Unhandled
    if not timing:
        items.append('"networkTiming": {}')
    else:
        parts = []
        for name in sorted(timing):
            if type(name) is not str:
                raise _Unhandled
            parts.append(encode_basestring_ascii(name) + ": " + _timing_json(timing[name], n2))
        items.append('"networkTiming": ' + _object(n1, *parts))
    items.append('"progressEvents": ' + _list_json(r.progress_events, _progress_json, n1))
    if r.run is None:
        items.append('"run": null')
    else:
        if type(r.run) is not RunInfo:
            raise _Unhandled
        items.append('"run": ' + _plain(r.run.to_dict(), n1))
    items.append('"samples": ' + _list_json(r.samples, _sample_json, n1))
    pair = r.selected_ice_candidate_pair_stats
    if pair is None:
        items.append('"selectedIceCandidatePairStats": null')
    else:
        if type(pair) is not SelectedCandidatePair:
            raise _Unhandled
        items.append('"selectedIceCandidatePairStats": ' + _object(
            n1,
            '"localCandidate": ' + _candidate_json(pair.local_candidate, n2),
            '"remoteCandidate": ' + _candidate_json(pair.remote_candidate, n2),
        ))
    stats = r.stats
    if stats is None:
        items.append('"stats": null')
    else:
        if type(stats) is not ReportStats:
            raise _Unhandled
        items.append('"stats": ' + _object(
            n1,
            '"jitter": ' + _stat_json(stats.jitter, n2),
            '"packetLoss": ' + _stat_json(stats.packet_loss, n2),
            '"rtt": ' + _stat_json(stats.rtt, n2),
        ))
    items.append('"testTiming": ' + _timing_json(r.test_timing, n1))
    return "{" + n1 + ("," + n1).join(items) + "\n}"


def _progress_json(e: ProgressEvent, newline: str) -> str:
    if type(e) is not ProgressEvent:
        raise _Unhandled
    return _object(newline, '"duration": ' + _jnum(e.duration), '"name": ' + _plain(e.name, newline + "  "))
