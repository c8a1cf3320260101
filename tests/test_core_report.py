"""Report JSON: keys and units as Twilio Video's, round trip, canonical bytes, partial report."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal

import attrs
import pytest
from core_harness import CounterSource, answer_with, to_stats_phase
from hypothesis import given
from hypothesis import strategies as st
from rtcprobe.core import (
    IceCandidateStats,
    PreflightReport,
    RunInfo,
    SelectedCandidatePair,
    Stat,
    StatsObserved,
    StatsSample,
)
from rtcprobe.core.errors import PreflightErrorInfo
from rtcprobe.core.report import ProgressEvent, ReportStats, Sample, Timing, canonical_json

TWILIO_KEYS = {"testTiming", "networkTiming", "stats", "iceCandidateStats", "selectedIceCandidatePairStats",
               "progressEvents"}
EXTENSION_KEYS = {"networkQuality", "bitrate", "samples", "run"}

HOST = IceCandidateStats("T01", "host", 50000, "192.0.2.10", 2130706431, "udp")
RELAY = IceCandidateStats("T01", "relay", 49152, "192.0.2.1", 16777215, "udp", "turn:192.0.2.1:3478", "udp")


def completed_report() -> PreflightReport:
    h = to_stats_phase()
    src = CounterSource(loss_every=50)
    inner = answer_with(h, src)

    def on_sample(a: object) -> None:
        if src.n == 2:  # the last sample also carries candidates
            s = src.sample()
            src.n -= 1
            h.test.handle(StatsObserved(StatsSample(
                s.audio_out, s.video_out, s.audio_in, s.video_in, None, (HOST, RELAY),
                SelectedCandidatePair(RELAY, HOST))), h.now)
            src.n += 1
            h.pump()
        else:
            inner(a)  # type: ignore[arg-type]

    h.advance(4.0, on_sample=on_sample)
    assert h.test.report is not None
    return h.test.report


def test_keys_exactly_as_twilio_plus_extensions() -> None:
    d = completed_report().to_dict()
    assert set(d) == TWILIO_KEYS | EXTENSION_KEYS
    assert set(d["stats"]) == {"jitter", "rtt", "packetLoss"}
    for stat in d["stats"].values():
        assert set(stat) == {"min", "max", "average"}
    assert set(d["testTiming"]) == {"start", "end", "duration"}
    assert set(d["iceCandidateStats"][0]) == {"transportId", "candidateType", "port", "address", "priority",
                                              "protocol", "url", "relayProtocol"}
    assert d["selectedIceCandidatePairStats"]["localCandidate"]["candidateType"] == "relay"
    assert set(d["bitrate"]) == {"outgoing", "incoming"}
    assert set(d["samples"][0]) == {"time", "jitter", "rtt", "packetLoss", "outgoingBitrate", "incomingBitrate",
                                    "level"}
    assert all(set(e) == {"name", "duration"} for e in d["progressEvents"])


def test_units_jitter_seconds_rtt_ms_loss_percent() -> None:
    d = completed_report().to_dict()
    assert d["stats"]["jitter"]["max"] == pytest.approx(0.002)  # CounterSource: 2 ms audio jitter, in s
    assert d["stats"]["rtt"]["average"] == pytest.approx(40.0)  # 0.04 s → 40 ms
    assert d["stats"]["packetLoss"]["average"] == pytest.approx(100 * 2 / 150)  # percent


def test_round_trip_and_canonical_bytes() -> None:
    r = completed_report()
    text = r.to_json()
    again = PreflightReport.from_json(text)
    assert again.to_json() == text
    assert again.to_dict() == json.loads(text)
    assert completed_report().to_json() == text  # same run → same bytes
    assert r.to_json(indent=None) == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


def test_failure_partial_report_shape() -> None:
    h = to_stats_phase()
    h.advance(1.0, on_sample=answer_with(h, CounterSource()))
    h.test.stop(h.now)
    d = h.test.report.to_dict()  # type: ignore[union-attr]
    assert d["stats"] is None and d["iceCandidateStats"] == [] and d["selectedIceCandidatePairStats"] is None
    assert d["error"] == {"code": 99000, "name": "PreflightStoppedError",
                          "message": "The preflight test was stopped before it completed"}
    assert len(d["progressEvents"]) == 7
    assert PreflightReport.from_dict(d).to_dict() == json.loads(PreflightReport.from_dict(d).to_json())


def test_unstopped_timer_has_no_end_or_duration() -> None:
    from rtcprobe.core import Timing

    assert Timing(5.0).to_dict() == {"start": 5.0}
    assert Timing(5.0, 7.5).to_dict() == {"start": 5.0, "end": 7.5, "duration": 2.5}


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64) | st.none(), max_size=20))
def test_stat_of(values: list[float | None]) -> None:
    s = Stat.of(values)
    finite = [v for v in values if v is not None and v == v and abs(v) != float("inf")]
    if not finite:
        assert s is None
    else:
        assert s is not None and s.min == min(finite) and s.max == max(finite)
        assert min(finite) - 1e-9 * abs(min(finite)) <= s.average <= max(finite) + 1e-9 * abs(max(finite))


def test_no_nan_in_json() -> None:
    r = PreflightReport.from_dict(completed_report().to_dict())
    bad = PreflightReport(test_timing=r.test_timing, bitrate_outgoing=Stat(float("nan"), 1.0, float("inf")))
    assert "NaN" not in bad.to_json() and "Infinity" not in bad.to_json()


def test_build_report_converts_timers_to_epoch_ms_and_drops_stats_on_failure() -> None:
    from rtcprobe.core import ProgressEvent, Sample, Timing
    from rtcprobe.core.errors import STOPPED
    from rtcprobe.core.report import build_report

    rows = [Sample.measured(elapsed=1.0, jitter=0.002, rtt=0.04, loss=0.01, outgoing_bps=800_000.0,
                            incoming_bps=None, level=5)]
    common = dict(
        start=100.0, end=102.5, epoch_ms=1_000_000.0,
        timers={"ice": Timing(100.25, 100.5), "connect": Timing(100.0)},  # any order in, the report's out
        progress=[ProgressEvent("mediaAcquired", 5.0)], samples=rows, candidates=(HOST, RELAY),
        selected_pair=SelectedCandidatePair(RELAY, HOST), level=5, quality_stats={"level": 5}, run=None,
    )
    ok = build_report(**common, error=None)  # type: ignore[arg-type]
    assert list(ok.network_timing) == ["connect", "ice"]
    assert ok.network_timing["ice"] == Timing(1_000_250.0, 1_000_500.0)
    assert ok.network_timing["connect"] == Timing(1_000_000.0)
    assert ok.test_timing == Timing(1_000_000.0, 1_002_500.0)
    assert rows[0].rtt == pytest.approx(40.0) and rows[0].packet_loss == pytest.approx(1.0)
    assert rows[0].outgoing_bitrate == pytest.approx(800.0) and rows[0].time == pytest.approx(1000.0)
    assert ok.stats is not None and ok.stats.rtt == Stat(40.0, 40.0, 40.0)
    assert ok.ice_candidate_stats == (HOST, RELAY) and ok.selected_ice_candidate_pair_stats is not None
    failed = build_report(**common, error=STOPPED)  # type: ignore[arg-type]
    assert failed.stats is None and failed.ice_candidate_stats == ()
    assert failed.selected_ice_candidate_pair_stats is None
    assert failed.samples == ok.samples and failed.progress_events == ok.progress_events
    assert failed.network_quality_level == 5 and failed.bitrate_outgoing == ok.bitrate_outgoing


_JSON_SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                 | st.text())
_JSON_TREES = st.recursive(
    _JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.tuples(children, children)
    | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=30,
)


@given(_JSON_TREES, st.sampled_from([None, 0, 1, 2, 4]))
def test_canonical_json_is_json_dumps_byte_for_byte(tree: object, indent: int | None) -> None:
    # The report's own encoder (faster than the stdlib's pure-Python indenting one) must not
    # change a byte of what json.dumps writes, on any tree, at any indent.
    separators = (",", ": ") if indent is not None else (",", ":")
    expected = json.dumps(tree, sort_keys=True, indent=indent, allow_nan=False, separators=separators)
    assert canonical_json(tree, indent=indent) == expected


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_canonical_json_refuses_what_json_dumps_refuses(bad: float) -> None:
    with pytest.raises(ValueError):
        canonical_json({"a": [1, {"b": bad}]})


def test_canonical_json_hands_non_string_keys_to_json_dumps() -> None:
    tree = {"a": {1: "x", 2: "y"}}
    assert canonical_json(tree) == json.dumps(tree, sort_keys=True, indent=2, separators=(",", ": "))


def test_run_info_carries_a_stack_only_when_there_is_one() -> None:
    """The simulator's libwebrtc model names itself; without a stack the run block has the bytes
    it had before the key existed (the aiortc model's golden reports)."""
    plain, lw = RunInfo("sim", "1", "x", 3), RunInfo("sim", "1", "x", 3, "libwebrtc")
    assert plain.to_dict() == {"driver": "sim", "scenario": "x", "seed": 3, "version": "1"}
    assert lw.to_dict() == {**plain.to_dict(), "stack": "libwebrtc"}
    assert RunInfo.from_dict(lw.to_dict()) == lw and RunInfo.from_dict(plain.to_dict()) == plain


# --- PreflightReport.to_json writes canonical_json(to_dict()) directly: the same bytes ------------

_NUMBERS = (st.none() | st.floats(width=64) | st.integers(-10**12, 10**12)
            | st.floats(-2e9, 2e9).map(lambda x: round(x, 7))  # near the six decimals' rounding edges
            | st.sampled_from([1e-4, 9.99995e-5, -1e-4, 999999999.9999996, 1e9, 5e-7, -5e-7, 0.0, -0.0])
            | st.decimals(-10**9, 10**9, places=8) | st.fractions(-10**9, 10**9, max_denominator=10**8)
            | st.sampled_from([Decimal("2.0000005"), Decimal("-2.0000005")]))  # its own rounding differs
_TIMINGS = st.builds(Timing, st.floats(width=64), _NUMBERS)
_STATS = st.none() | st.builds(Stat, _NUMBERS, _NUMBERS, _NUMBERS)
_TEXT = st.text(max_size=8)
_CANDIDATES = st.builds(IceCandidateStats, _TEXT, _TEXT, st.integers(0, 65535), _TEXT, st.integers(0, 2**32),
                        _TEXT, st.none() | _TEXT, st.none() | _TEXT)
_SAMPLES = st.builds(Sample, _NUMBERS, _NUMBERS, _NUMBERS, _NUMBERS, _NUMBERS, _NUMBERS,
                     st.none() | st.integers(0, 5))
_QUALITY_TREES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(width=64) | _TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_TEXT, children, max_size=4),
    max_leaves=20,
)
_REPORTS = st.builds(
    PreflightReport,
    test_timing=_TIMINGS,
    network_timing=st.dictionaries(_TEXT, _TIMINGS, max_size=5),
    stats=st.none() | st.builds(ReportStats, _STATS, _STATS, _STATS),
    ice_candidate_stats=st.lists(_CANDIDATES, max_size=3).map(tuple),
    selected_ice_candidate_pair_stats=st.none() | st.builds(SelectedCandidatePair, _CANDIDATES, _CANDIDATES),
    progress_events=st.lists(st.builds(ProgressEvent, _TEXT, _NUMBERS), max_size=3).map(tuple),
    network_quality_level=st.none() | st.integers(0, 5),
    network_quality_stats=st.none() | st.dictionaries(_TEXT, _QUALITY_TREES, max_size=4),
    bitrate_outgoing=_STATS,
    bitrate_incoming=_STATS,
    samples=st.lists(_SAMPLES, max_size=4).map(tuple),
    run=st.none() | st.builds(RunInfo, _TEXT, _TEXT, st.none() | _TEXT, st.none() | st.integers(), st.none() | _TEXT),
    error=st.none() | st.builds(PreflightErrorInfo, st.integers(0, 99999), _TEXT, _TEXT),
)


def _outcome(write: Callable[[], str]) -> tuple[str, str]:
    try:
        return "ok", write()
    except (TypeError, ValueError) as e:
        return "raised", type(e).__name__


@given(_REPORTS)
def test_report_json_is_canonical_json_of_its_dict(report: PreflightReport) -> None:
    # to_json writes the indented form straight from the report's objects (faster than building
    # the dict first): on any report it must give what canonical_json(to_dict()) gives, or raise
    # what that raises (a NaN where _num does not turn it into null, a None timing).
    assert _outcome(report.to_json) == _outcome(lambda: canonical_json(report.to_dict()))


def test_report_json_of_odd_data_takes_the_general_path() -> None:
    # Not plain data (numpy numbers, a non-string key, a mapping that is not a dict): what
    # canonical_json(to_dict()) does, which takes each as json.dumps does.
    import types

    import numpy as np

    base = completed_report()
    for odd in [
        attrs.evolve(base, network_quality_stats={"level": np.float64(0.1234567)}),
        attrs.evolve(base, network_quality_stats={"a": {1: 2.5, 2: 3}}),
        attrs.evolve(base, network_quality_stats=types.MappingProxyType({"b": 1.25})),
        attrs.evolve(base, samples=(attrs.evolve(base.samples[0], jitter=np.float64(0.25)),)),
        attrs.evolve(base, samples=(attrs.evolve(base.samples[0], level=np.int64(3)),)),
        attrs.evolve(base, network_quality_stats={"x": [float("nan")]}),
    ]:
        assert _outcome(odd.to_json) == _outcome(lambda o=odd: canonical_json(o.to_dict()))  # type: ignore[misc]
    numpy_level = attrs.evolve(base, samples=(attrs.evolve(base.samples[0], level=np.int64(3)),))
    assert _outcome(numpy_level.to_json)[0] == "raised"  # as json.dumps refuses it
    assert base.to_json(indent=4) == canonical_json(base.to_dict(), indent=4)
