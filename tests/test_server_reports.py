"""Reports sent by clients: the schema check in front of the core's parser (real reports pass,
hostile input only ever raises ReportError), the canonical line, and the append-only file shared
by concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rtcprobe.core.report import PreflightReport
from rtcprobe.drivers.aiortc.protocol import Report, encode, parse_message
from test_server_support import completed_report, failed_report

from rtcprobe.server.metrics import ServerMetrics
from rtcprobe.server.reports import ReportError, ReportLog, report_line, validate_report

JSON_SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=10**300, max_value=10**320)
                | st.floats(allow_nan=False) | st.text(max_size=8))
JSON = st.recursive(JSON_SCALARS,
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                    max_leaves=10)


def _accepts_fully(value: Any) -> None:
    """validate_report either refuses ``value`` with ReportError or accepts it; what it accepts
    goes through everything the server does next without raising."""
    try:
        report = validate_report(value)
    except ReportError as exc:
        assert str(exc)
        return
    assert isinstance(report, PreflightReport)
    report.to_json()
    ServerMetrics().report_accepted(report)
    json.loads(report_line(report=value, received_at=1.5, identity="i", client="c"))


def test_reports_a_client_builds_are_accepted() -> None:
    for report in (completed_report(), failed_report(), completed_report(level=0, samples=0)):
        assert validate_report(json.loads(report.to_json())) == report


@pytest.mark.parametrize("scenario", ["clean-broadband", "signaling-unreachable"])
def test_simulated_reports_are_accepted(scenario: str) -> None:
    # Reports the core really built (the simulator's, completed and failed), as JSON on the wire.
    import rtcprobe

    report = rtcprobe.simulate(scenario, seed=1)
    sent = parse_message(encode(Report(report=json.loads(report.to_json()))))
    assert isinstance(sent, Report)
    # (equal to the core's own parse of that JSON: its floats are rounded, so not to ``report`` itself)
    assert validate_report(sent.report) == PreflightReport.from_json(report.to_json())


def test_the_smallest_report_is_a_test_timing() -> None:
    assert validate_report({"testTiming": {"start": 0}}) == PreflightReport.from_dict({"testTiming": {"start": 0}})


@pytest.mark.parametrize(("value", "fragment"), [
    ({"testTiming": {"start": 10**400}}, "report.testTiming.start must be a finite number"),
    ({"testTiming": {"start": 0}, "networkQuality": {"level": 3, "stats": {"x": [1e999]}}}, "too large for JSON"),
    ({"testTiming": {"start": 0}, "extra": {"deep": float("inf")}}, "too large for JSON"),
    ({"testTiming": {"start": 0}, "networkQuality": {"level": -1}}, "0..5"),
    ({"testTiming": {"start": 0}, "samples": [{"time": 1, "jitter": None, "rtt": None, "packetLoss": None,
                                               "outgoingBitrate": None, "incomingBitrate": None, "level": True}]},
     "report.samples[0].level must be an integer or null"),
    ({"testTiming": {"start": 0}, "run": {"driver": "x"}}, "report.run is missing the 'version'"),
    ({"testTiming": {"start": 0}, "run": {"driver": "x", "version": "1", "stack": 3}},
     "report.run.stack must be a string"),
    ({"testTiming": {"start": 0}, "progressEvents": [{"name": 3, "duration": 1}]},
     "report.progressEvents[0].name must be a string"),
    ({"testTiming": {"start": 0}, "selectedIceCandidatePairStats": {}}, "missing the 'localCandidate'"),
    ({"testTiming": {"start": 0}, "networkQuality": {"level": 1, "stats": {"n": json.loads("[" * 30 + "]" * 30)}}},
     "nests deeper than 32"),
])
def test_bad_fields_are_named(value: Any, fragment: str) -> None:
    with pytest.raises(ReportError) as info:
        validate_report(value)
    assert fragment in str(info.value)


def test_deep_nesting_costs_no_stack() -> None:
    nested: Any = 1.0
    for _ in range(100_000):
        nested = [nested]
    with pytest.raises(ReportError, match="nests deeper"):
        validate_report({"testTiming": {"start": 0}, "networkQuality": {"level": 1, "stats": {"n": nested}}})


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_any_json_is_a_report_or_a_report_error(value: Any) -> None:
    _accepts_fully(value)


def _paths(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _paths(item, (*path, i))
    return found


VALID = [completed_report(samples=2).to_dict(), failed_report().to_dict()]
VALID_PATHS = [(i, p) for i, report in enumerate(VALID) for p in _paths(report) if p]


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(VALID_PATHS), st.one_of(JSON, st.just(KeyError)))
def test_a_valid_report_with_any_field_replaced_or_removed(where: tuple[int, tuple[str | int, ...]],
                                                           new: Any) -> None:
    # Hostile clients send almost-valid reports: every field of a real one, swapped for any JSON.
    i, path = where
    report = json.loads(json.dumps(VALID[i]))
    parent = report
    for key in path[:-1]:
        parent = parent[key]
    if new is KeyError:
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    _accepts_fully(report)


# --- the line and the file ------------------------------------------------------------------------


def test_the_line_is_canonical_ascii_json() -> None:
    report = {"b": [1.5, "é"], "a": None}
    line = report_line(report=report, received_at=1700000000.1234567, identity="ïd", client="10.0.0.1:5")
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and line.isascii()
    assert line == (b'{"client":"10.0.0.1:5","identity":"\\u00efd","receivedAt":1700000000123.457,'
                    b'"report":{"a":null,"b":[1.5,"\\u00e9"]}}\n')


def _append_many(path: str, writer: int, lines: int) -> None:
    log = ReportLog(path)
    for n in range(lines):
        record = {"writer": writer, "n": n, "pad": "x" * (1000 + 97 * (n % 50))}
        log.append(report_line(report=record, received_at=0.0, identity=f"w{writer}", client="c"))


def test_several_processes_append_whole_lines(tmp_path: Path) -> None:
    # Instances sharing one file (or logrotate's copy) never interleave within a line: O_APPEND
    # and one write per line.
    path = tmp_path / "reports.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(path), w, 300)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    records = [json.loads(line)["report"] for line in path.read_text().splitlines()]
    assert sorted((r["writer"], r["n"]) for r in records) == [(w, n) for w in range(4) for n in range(300)]


def test_the_file_is_created_private_to_its_group(tmp_path: Path) -> None:
    path = tmp_path / "reports.jsonl"
    old = os.umask(0)
    try:
        ReportLog(path)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640


def test_a_rotated_file_is_followed(tmp_path: Path) -> None:
    path = tmp_path / "reports.jsonl"
    log = ReportLog(path)
    log.append(b"1\n")
    path.rename(tmp_path / "reports.jsonl.1")  # logrotate without copytruncate
    log.append(b"2\n")
    assert path.read_bytes() == b"2\n" and (tmp_path / "reports.jsonl.1").read_bytes() == b"1\n"
