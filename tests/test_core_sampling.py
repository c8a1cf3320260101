"""The stats step's arithmetic, pure: two samples in, one measurement out."""

from __future__ import annotations

import math

import attrs
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rtcprobe.core import InboundStats, OutboundStats, StatsSample
from rtcprobe.core.errors import ConfigError
from rtcprobe.core.quality import QualityInput
from rtcprobe.core.sampling import bytes_received, bytes_sent, inbound, loss_fraction, measure, outbound, path_loss


def _sample(n: int, **overrides: object) -> StatsSample:
    fields: dict[str, object] = {
        "audio_out": OutboundStats(packets_sent=50 * n, bytes_sent=6_000 * n, remote_rtt=0.05, remote_jitter=0.003,
                                   remote_fraction_lost=0.0),
        "video_out": OutboundStats(packets_sent=100 * n, bytes_sent=100_000 * n, remote_rtt=0.07),
        "audio_in": InboundStats(packets_received=50 * n, packets_lost=0, bytes_received=6_000 * n, jitter=0.002),
        "video_in": InboundStats(packets_received=95 * n, packets_lost=5 * n, bytes_received=90_000 * n,
                                 jitter=0.004),
    }
    fields.update(overrides)
    return StatsSample(**fields)  # type: ignore[arg-type]


def test_accessors_pick_the_stream_of_each_kind() -> None:
    s = _sample(1)
    assert outbound(s, "audio") is s.audio_out and outbound(s, "video") is s.video_out
    assert inbound(s, "audio") is s.audio_in and inbound(s, "video") is s.video_in


@given(lost=st.integers(-10**6, 10**6), total=st.integers(-10**6, 10**6))
def test_loss_fraction_is_a_fraction_or_none(lost: int, total: int) -> None:
    f = loss_fraction(lost, total)
    assert (f is None) == (total <= 0)
    assert f is None or 0.0 <= f <= 1.0


def test_the_first_sample_measures_gauges_only() -> None:
    m = measure(_sample(1), 10.0, None, reconnecting=False)
    assert m.jitter == 0.002  # audio's
    assert m.rtt == 0.07  # the worst receiver report, no candidate pair rtt
    assert (m.loss, m.outgoing_bps, m.incoming_bps) == (None, None, None)
    assert m.quality == QualityInput()


def test_an_interval_measures_rates_loss_and_the_scorer_sides() -> None:
    m = measure(_sample(3), 12.0, (10.0, _sample(1)), reconnecting=False)
    assert m.loss == pytest.approx(10 / 300)  # Δlost 10 of Δ(lost + received) 300
    assert m.outgoing_bps == pytest.approx(8 * 2 * 106_000 / 2)
    assert m.incoming_bps == pytest.approx(8 * 2 * 96_000 / 2)
    q = m.quality
    assert q.audio_send is not None and q.audio_send.rtt == 0.05 and q.audio_send.jitter == 0.003
    assert q.video_send is not None and q.video_send.rtt == 0.07  # its own receiver report
    assert q.video_recv is not None and q.video_recv.fraction_lost == pytest.approx(0.05)
    assert q.video_recv.rtt == 0.07 and q.video_recv.actual_bps == pytest.approx(8 * 180_000 / 2)


def test_the_candidate_pair_rtt_wins_and_video_jitter_stands_in_for_audio() -> None:
    s = _sample(1, candidate_pair_rtt=0.02, audio_in=None)
    m = measure(s, 1.0, None, reconnecting=True)
    assert m.rtt == 0.02 and m.jitter == 0.004
    assert m.quality == QualityInput(reconnecting=True)


def test_no_interval_when_the_clock_did_not_move() -> None:
    m = measure(_sample(2), 10.0, (10.0, _sample(1)), reconnecting=False)
    assert m.loss is None and m.outgoing_bps is None and m.quality == QualityInput()


@pytest.mark.parametrize("odd", [math.nan, math.inf, -0.01])
def test_odd_gauges_are_not_measured(odd: float) -> None:
    s = _sample(2, candidate_pair_rtt=odd,
                audio_out=OutboundStats(packets_sent=100, bytes_sent=12_000, remote_rtt=odd, remote_jitter=odd,
                                        remote_fraction_lost=odd, available_bps=odd),
                audio_in=InboundStats(packets_received=100, packets_lost=0, bytes_received=12_000, jitter=odd))
    m = measure(s, 11.0, (10.0, _sample(1)), reconnecting=False)
    assert m.rtt == 0.07  # the video receiver report's, the odd ones are not measurements
    assert m.jitter == 0.004  # video's
    side = m.quality.audio_send
    assert side is not None
    assert (side.rtt, side.jitter, side.fraction_lost, side.available_bps) == (0.07, None, None, None)


def test_counter_resets_count_as_nothing_sent() -> None:
    m = measure(_sample(1), 11.0, (10.0, _sample(5)), reconnecting=False)
    assert m.outgoing_bps == 0.0 and m.incoming_bps == 0.0
    assert m.loss is None  # counters went backwards: nothing was expected in between


def test_a_loopback_path_reports_the_whole_round_trip_and_scores_half_of_it() -> None:
    """Twilio's topology: the pair's round trip crosses the client's access link twice."""
    loop = measure(_sample(3, loopback=True, candidate_pair_rtt=0.2), 12.0,
                   (10.0, _sample(1, loopback=True)), reconnecting=False)
    assert loop.rtt == 0.2  # the report keeps what the stats say
    q = loop.quality
    assert q.video_recv is not None and q.video_recv.rtt == pytest.approx(0.1)
    assert q.audio_send is not None and q.audio_send.rtt == pytest.approx(0.025)  # its receiver report, halved
    plain = measure(_sample(3, candidate_pair_rtt=0.2), 12.0, (10.0, _sample(1)), reconnecting=False)
    assert plain.quality.video_recv is not None and plain.quality.video_recv.rtt == 0.2


def test_path_loss_is_the_subscribers_alone() -> None:
    """The subscriber's streams crossed the whole path as RTP: a loss the publisher's receiver
    reports also mention is not counted twice."""
    reported = OutboundStats(packets_sent=300, bytes_sent=300_000, remote_rtt=0.07, remote_packets_lost=30,
                             remote_fraction_lost=0.1)
    m = measure(_sample(3, video_out=reported), 12.0, (10.0, _sample(1)), reconnecting=False)
    assert m.loss == pytest.approx(10 / 300)  # the same as without those receiver reports


_GAUGES = (st.none() | st.booleans() | st.integers(-5, 10**9) | st.floats(width=64)
           | st.floats(0, 10).map(np.float64))


@given(rtt=_GAUGES, jitter=_GAUGES, lost=_GAUGES, available=_GAUGES, received_jitter=_GAUGES)
def test_the_scorer_sides_are_validated_as_their_classes_validate(
    rtt: object, jitter: object, lost: object, available: object, received_jitter: object
) -> None:
    # measure builds its SideMetrics and QualityInput through a fast path: whatever it builds must
    # pass the classes' own validators, and what they refuse (a bool passes the gauge checks, not
    # the validators) must still raise.
    cur = _sample(2, video_out=OutboundStats(100, 100_000, remote_rtt=rtt, remote_jitter=jitter,  # type: ignore[arg-type]
                                             remote_fraction_lost=lost, available_bps=available),  # type: ignore[arg-type]
                  audio_in=InboundStats(100, 0, 12_000, jitter=received_jitter))  # type: ignore[arg-type]
    if any(isinstance(v, bool) for v in (rtt, jitter, lost, available, received_jitter)):
        with pytest.raises(ConfigError):
            measure(cur, 2.0, (1.0, _sample(1)), reconnecting=False)
        return
    q = measure(cur, 2.0, (1.0, _sample(1)), reconnecting=False).quality
    sides = (q.audio_send, q.audio_recv, q.video_send, q.video_recv)
    assert all(s is not None and attrs.evolve(s) == s for s in sides)  # evolve runs the validators
    assert attrs.evolve(q) == q


_COUNTS = st.integers(0, 10**7)
_OUT = st.none() | st.builds(OutboundStats, _COUNTS, _COUNTS)
_IN = st.none() | st.builds(InboundStats, _COUNTS, _COUNTS, _COUNTS)


@given(st.tuples(_OUT, _OUT, _IN, _IN), st.tuples(_OUT, _OUT, _IN, _IN), st.floats(0.01, 10))
def test_measure_counts_as_path_loss_and_bytes_count(
    cur: tuple[object, ...], prev: tuple[object, ...], dt: float
) -> None:
    # measure works each stream's deltas out once for the row and the scorer: its loss and
    # bitrates must be what the public functions say (counters may reset: go backwards).
    c, p = StatsSample(*cur), StatsSample(*prev)  # type: ignore[arg-type]
    now = 1.0 + dt
    m = measure(c, now, (1.0, p), reconnecting=False)
    assert m.loss == path_loss(c, p)
    assert m.outgoing_bps == 8 * bytes_sent(c, p) / (now - 1.0)
    assert m.incoming_bps == 8 * bytes_received(c, p) / (now - 1.0)
