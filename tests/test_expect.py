"""Expect: parsing the [expect] table and checking a report (shaped as in
docs/architecture.md#the-report-and-its-units)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from rtcprobe.netem.expect import PROGRESS_EVENTS, Expect
from rtcprobe.netem.scenario import ScenarioError


def completed_report() -> dict[str, Any]:
    return {
        "testTiming": {"start": 0, "end": 12000, "duration": 12000},
        "networkTiming": {},
        "stats": {
            "jitter": {"min": 0.002, "max": 0.02, "average": 0.012},  # seconds
            "rtt": {"min": 40, "max": 90, "average": 61.5},  # ms
            "packetLoss": {"min": 0, "max": 4, "average": 1.5},  # percent
        },
        "iceCandidateStats": [],
        "selectedIceCandidatePairStats": None,
        "progressEvents": [{"name": n, "duration": 100 * i} for i, n in enumerate(PROGRESS_EVENTS)],
        "networkQuality": {"level": 4, "stats": {}},
        "samples": [{"time": i, "level": lv} for i, lv in enumerate([5, 4, 3, 4, 4])],
    }


def failed_report() -> dict[str, Any]:
    r = completed_report()
    r["stats"] = None
    r["progressEvents"] = r["progressEvents"][:2]
    r["samples"] = []
    del r["networkQuality"]
    r["error"] = {"code": 53405, "name": "MediaConnectionError", "message": "Media connection failed"}
    return r


FULL = {
    "outcome": "completed",
    "events": ["mediaAcquired", "iceConnected", "mediaStarted"],
    "absent_events": [],
    "rtt_ms": [50, 80],
    "jitter_ms": [10, 15],
    "packet_loss": [0, 2],
    "level": [4, 5],
    "min_level": [3, 5],
}


def test_all_expectations_met() -> None:
    exp = Expect.from_dict(FULL)
    assert exp.check(completed_report()) == []
    assert Expect().check(completed_report()) == []
    assert Expect().check(failed_report()) == []


def test_failed_run_expectations() -> None:
    exp = Expect.from_dict({"error_code": 53405, "events": ["mediaAcquired"], "absent_events": ["mediaStarted"]})
    assert exp.outcome == "failed"  # an error code implies it
    assert exp.check(failed_report()) == []
    assert exp.check(completed_report()) == [
        "outcome: expected 'failed', got 'completed'",
        "error_code: expected 53405, got no error (the test completed)",
        "absent_events: 'mediaStarted' occurred",
    ]
    wrong = failed_report()
    wrong["error"] = {"code": 53002, "name": "SignalingConnectionTimeoutError", "message": "timed out"}
    assert exp.check(wrong) == ["error_code: expected 53405, got 53002 (SignalingConnectionTimeoutError)"]


def test_completed_expected_but_failed() -> None:
    fails = Expect.from_dict(FULL).check(failed_report())
    assert fails[0] == (
        "outcome: expected 'completed', got 'failed' (53405 MediaConnectionError: Media connection failed)"
    )
    assert "events: 'iceConnected' did not occur (got: mediaAcquired, connected)" in fails
    assert any(f.startswith("rtt_ms: the report has no stats.rtt.average") for f in fails)
    assert "level: the report has no networkQuality.level" in fails
    assert "min_level: the report has no samples with a level" in fails
    assert len(fails) == 8  # outcome, 2 missing events, 3 stats, level, min_level


def test_jitter_is_compared_in_milliseconds_from_seconds() -> None:
    # stats.jitter is in seconds (0.012 s = 12 ms): a ms range must see 12, not 0.012 or 12000.
    assert Expect(jitter_ms=(10, 15)).check(completed_report()) == []
    assert Expect(jitter_ms=(0, 1)).check(completed_report()) == [
        "jitter_ms: average jitter 12 ms is outside [0, 1]"
    ]
    assert Expect(jitter_ms=(0.01, 0.015)).check(completed_report()) != []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda r: r["stats"]["rtt"].update(average=150.25), "rtt_ms: average rtt 150.2 ms is outside [50, 80]"),
        (lambda r: r["stats"]["packetLoss"].update(average=7),
         "packet_loss: average packet loss 7 % is outside [0, 2]"),
        (lambda r: r["networkQuality"].update(level=2), "level: final network quality level 2 is outside [4, 5]"),
        (lambda r: r["samples"].append({"time": 9, "level": 1}),
         "min_level: lowest level over 6 samples 1 is outside [3, 5]"),
        (lambda r: r["progressEvents"].reverse(),
         "events: 'iceConnected' came before 'mediaAcquired', expected after it"),
        (lambda r: r["progressEvents"].pop(), "events: 'mediaStarted' did not occur (got: mediaAcquired, connected, "
         "iceConnected, dtlsConnected, peerConnectionConnected, mediaSubscribed)"),
        (lambda r: r["stats"].update(rtt=None), "rtt_ms: the report has no stats.rtt.average (stats are null: did "
         "the test fail?)"),
    ],
)
def test_each_unmet_expectation_is_reported(change: Any, expected: str) -> None:
    report = copy.deepcopy(completed_report())
    change(report)
    assert expected in Expect.from_dict(FULL).check(report)


def test_samples_without_level_are_ignored_and_bounds_are_inclusive() -> None:
    report = completed_report()
    report["samples"].append({"time": 10, "level": None})
    assert Expect(min_level=(3, 3), level=(4, 4), rtt_ms=(61.5, 61.5)).check(report) == []


def test_parse_errors_use_the_key_path() -> None:
    with pytest.raises(ScenarioError) as info:
        Expect.from_dict({"rtt_ms": [1, "2"]}, source="s.toml")
    assert str(info.value) == "s.toml: expect.rtt_ms[1]: must be a number, got a string ('2')"
    with pytest.raises(ScenarioError, match=r"expect.events\[1\]: 'connected' is listed twice"):
        Expect.from_dict({"events": ["connected", "connected"]})
    with pytest.raises(ScenarioError, match=r"expect\.absent_events: 'connected' is also listed in events"):
        Expect.from_dict({"events": ["connected"], "absent_events": ["connected"]})
    with pytest.raises(ScenarioError, match=r"expect.events: must be an array of event names"):
        Expect.from_dict({"events": "connected"})
    with pytest.raises(ScenarioError, match=r"expect.error_code: must be at least 1"):
        Expect.from_dict({"error_code": 0})
    with pytest.raises(ScenarioError, match=r"expect.min_level\[0\]: must be an integer, got a boolean"):
        Expect.from_dict({"min_level": [True, 5]})


def test_results_say_per_expectation_whether_met_and_what_was_expected() -> None:
    exp = Expect.from_dict({**FULL, "rtt_ms": [0.125, 3.5], "min_level": [1, 2]})
    results = exp.results(completed_report())
    assert [(r.key, r.expected, r.met) for r in results] == [
        ("outcome", "completed", True),
        ("events", "[mediaAcquired, iceConnected, mediaStarted]", True),  # absent_events = [] is not stated
        ("rtt_ms", "[0.125, 3.5]", False),
        ("jitter_ms", "[10, 15]", True),
        ("packet_loss", "[0, 2]", True),
        ("level", "[4, 5]", True),
        ("min_level", "[1, 2]", False),
    ]
    assert results[2].failures == ("rtt_ms: average rtt 61.5 ms is outside [0.125, 3.5]",)
    assert [f for r in results for f in r.failures] == exp.check(completed_report())
    assert Expect().results(completed_report()) == []


def test_an_error_code_stands_for_the_outcome_it_implies() -> None:
    exp = Expect.from_dict({"error_code": 53405, "absent_events": ["mediaStarted"]})
    results = exp.results(completed_report())
    assert [(r.key, r.expected, r.failures) for r in results] == [
        ("error_code", "53405", ("error_code: expected 53405, got no error (the test completed)",)),
        ("absent_events", "[mediaStarted]", ("absent_events: 'mediaStarted' occurred",)),
    ]
    assert exp.check(completed_report())[0] == "outcome: expected 'failed', got 'completed'"  # check keeps it
    assert all(r.met for r in exp.results(failed_report()))
