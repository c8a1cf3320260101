"""Mahimahi trace files: parsing with line-numbered errors, writing, the seeded generator, and the
traces shipped in scenarios/traces (regenerated here from their documented seed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rtcprobe.netem import Trace, TraceFormatError, generate_trace, parse_trace, write_trace
from rtcprobe.netem.trace import CELLULAR_SEED, generate_cellular_pair

TRACES = Path(__file__).resolve().parents[1] / "scenarios" / "traces"


def test_parse_and_write_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "t.trace"
    write_trace(p, [0, 3, 3, 7, 10])
    assert p.read_text() == "0\n3\n3\n7\n10\n"
    trace = parse_trace(p)
    assert trace.timestamps_ms == (0, 3, 3, 7, 10)
    assert trace.period_ms == 10
    assert trace.mean_kbps == pytest.approx(5 * 1504 * 8 / 10)
    assert trace.source == str(p)
    assert "opportunities=5" in repr(trace)


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("1\n2\nabc\n", 3, "expected an integer millisecond timestamp, got 'abc'"),
        ("1\n2.5\n", 2, "expected an integer"),
        ("5\n3\n", 2, "must not decrease (3 after 5)"),
        ("-1\n4\n", 1, "must be >= 0"),
        ("", 0, "empty trace"),
        ("\n\n", 0, "empty trace"),
        ("0\n0\n", 2, "the last timestamp (the period) must be > 0"),
    ],
)
def test_malformed_traces_name_the_line(tmp_path: Path, text: str, line: int, problem: str) -> None:
    p = tmp_path / "bad.trace"
    p.write_text(text)
    with pytest.raises(TraceFormatError) as info:
        parse_trace(p)
    assert info.value.line == line
    assert problem in info.value.problem
    assert str(p) in str(info.value)


def test_missing_trace_file(tmp_path: Path) -> None:
    with pytest.raises(TraceFormatError, match="not found"):
        parse_trace(tmp_path / "nope")


def test_trace_validates_direct_construction() -> None:
    with pytest.raises(TraceFormatError):
        Trace([])
    with pytest.raises(TraceFormatError):
        Trace([3, 2])
    with pytest.raises(TraceFormatError):
        Trace([0])
    assert Trace([1]) == Trace((1,))


def test_opportunities_until_counts_across_wraps() -> None:
    trace = Trace([2, 2, 5])
    assert [trace.opportunities_until(x / 1000) for x in (0, 1.9, 2, 4.9, 5, 7, 10, 12)] == [0, 0, 2, 2, 3, 5, 6, 8]
    assert [trace.opportunity_time(k) for k in range(6)] == [0.002, 0.002, 0.005, 0.007, 0.007, 0.010]


def test_generator_is_seeded_and_follows_the_rate() -> None:
    a = generate_trace([(0.0, 2000.0), (10.0, 500.0)], 20.0, np.random.default_rng(1))
    b = generate_trace([(0.0, 2000.0), (10.0, 500.0)], 20.0, np.random.default_rng(1))
    c = generate_trace([(0.0, 2000.0), (10.0, 500.0)], 20.0, np.random.default_rng(2))
    assert a == b and a != c
    assert a[-1] == 20_000  # the period is the duration
    arr = np.array(a)
    first = np.sum(arr <= 10_000) * 1504 * 8 / 10 / 1000
    second = np.sum(arr > 10_000) * 1504 * 8 / 10 / 1000
    assert first == pytest.approx(2000, rel=0.05)
    assert second == pytest.approx(500, rel=0.08)
    f = generate_trace(lambda t: 1000.0, 5.0, np.random.default_rng(3))
    assert Trace(f).mean_kbps == pytest.approx(1000, rel=0.08)


def test_generator_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        generate_trace([(0.0, 100.0)], 0, np.random.default_rng(1))
    with pytest.raises(ValueError):
        generate_trace([(0.0, -5.0)], 1, np.random.default_rng(1))


def test_shipped_cellular_traces_are_regenerated_from_their_seed() -> None:
    up, down = generate_cellular_pair(CELLULAR_SEED, 60.0)
    for name, stamps in (("cellular.up", up), ("cellular.down", down)):
        path = TRACES / name
        assert path.read_text() == "".join(f"{t}\n" for t in stamps), name
        trace = parse_trace(path)
        assert trace.period_ms == 60_000
        per_second = np.bincount(trace.array // 1000, minlength=61)[:60] * 1504 * 8 / 1000
        assert per_second.min() < 500 and per_second.max() > 2000  # cellular-like: it varies a lot
        assert per_second.max() < 5500
    assert sum(p.stat().st_size for p in TRACES.iterdir()) < 300_000
