"""From two stats samples to one measurement: the stats step's arithmetic, pure.

Theory of operation
-------------------
A driver answers each :class:`~rtcprobe.core.observations.SampleStats` request with one
:class:`~rtcprobe.core.observations.StatsSample`: cumulative counters and current gauges of both
peer connections, in SI units. :func:`measure` turns the current sample and the one before it into
a :class:`Measurement`: what the report's sample row says (jitter, rtt, path loss, bitrates) and
what the network-quality scorer is fed (:class:`~rtcprobe.core.quality.QualityInput`).

* jitter: the subscriber's received audio jitter, video's when no audio is received (Twilio Video's
  preflight reads audio's);
* rtt: the selected candidate pair's, else the worst of the publisher's receiver reports;
* path loss: Δlost / Δ(lost + received) between the two samples over the subscriber's received
  streams, whose media crossed the whole publisher -> subscriber path;
* bitrates: Δbytes over Δt, sent by the publisher and received by the subscriber.

Rates and loss need an interval, so the first sample (``prev`` None) measures only the gauges, and
its quality input carries nothing but the reconnecting flag.

Stats come from the network: a gauge that is not a finite number >= 0 (a fraction: in 0..1) is
treated as not measured (``None``), never passed on, so that a peer's odd receiver report cannot
make the scorer's validation raise. Every loss fraction is clamped to 0..1 by one function,
:func:`loss_fraction`: counters may go backwards (RTCP counts duplicates as negative loss).

Kinds are reached through typed accessors (:func:`outbound`, :func:`inbound`), or on the
per-sample path through the two tables of stream pairs (``_outbound_pairs``, ``_inbound_pairs``):
never by a field name built from a kind.
"""

from __future__ import annotations

import math

import attrs

from .config import Kind
from .observations import KINDS, InboundStats, OutboundStats, StatsSample
from .quality import QualityInput, SideMetrics, _quality_input, _side_metrics


@attrs.frozen
class Measurement:
    """One sample's measurement in SI units; ``None`` = not measured."""

    jitter: float | None  # s
    rtt: float | None  # s
    loss: float | None  # fraction of the publisher -> subscriber path, 0..1
    outgoing_bps: float | None
    incoming_bps: float | None
    quality: QualityInput


def outbound(sample: StatsSample, kind: Kind) -> OutboundStats | None:
    """The publisher's sent stream of ``kind``."""
    return sample.audio_out if kind == "audio" else sample.video_out


def inbound(sample: StatsSample, kind: Kind) -> InboundStats | None:
    """The subscriber's received stream of ``kind``."""
    return sample.audio_in if kind == "audio" else sample.video_in


def loss_fraction(lost: int, total: int) -> float | None:
    """``lost / total`` clamped to 0..1; ``None`` when nothing was expected (``total`` <= 0)."""
    return None if total <= 0 else min(1.0, max(0.0, lost / total))


_INF = math.inf


def _gauge(value: float | None) -> float | None:
    """A measured value the scorer can take (finite, >= 0), else not measured."""
    return value if value is not None and math.isfinite(value) and value >= 0 else None


def _rate(count: int, dt: float) -> float | None:
    """``_gauge(max(0.0, 8 * count / dt))`` in one call: bits per second, 0 for a counter that
    went back, None past the largest float (a NaN gives 0.0 there too)."""
    bps = 8 * count / dt
    if bps > 0.0:
        return bps if bps < _INF else None
    return 0.0


def _fraction(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) and 0 <= value <= 1 else None


def jitter(sample: StatsSample) -> float | None:
    """Received audio jitter; video's when no audio jitter is measured."""
    for kind in KINDS:  # audio first
        stream = inbound(sample, kind)
        if stream is not None and (value := _gauge(stream.jitter)) is not None:
            return float(value)
    return None


def rtt(sample: StatsSample) -> float | None:
    """The selected candidate pair's rtt, else the largest rtt of the publisher's receiver reports."""
    pair = _gauge(sample.candidate_pair_rtt)
    if pair is not None:
        return pair
    audio, video = sample.audio_out, sample.video_out  # KINDS' order: max keeps the first of equals
    a = None if audio is None else _gauge(audio.remote_rtt)
    v = None if video is None else _gauge(video.remote_rtt)
    return v if a is None else a if v is None else max(a, v)


# The streams of both samples, kind by kind in KINDS' order (plain tuples: these run on every sample).
def _inbound_pairs(cur: StatsSample, prev: StatsSample) -> tuple[tuple[InboundStats | None, InboundStats | None], ...]:
    return (cur.audio_in, prev.audio_in), (cur.video_in, prev.video_in)


def _outbound_pairs(
    cur: StatsSample, prev: StatsSample
) -> tuple[tuple[OutboundStats | None, OutboundStats | None], ...]:
    return (cur.audio_out, prev.audio_out), (cur.video_out, prev.video_out)


def path_loss(cur: StatsSample, prev: StatsSample) -> float | None:
    """Loss fraction of the publisher -> subscriber media path between two samples: Δlost /
    Δ(lost + received) over the subscriber's streams (Twilio Video's preflight reads the receiver's
    ``inbound-rtp`` the same way; both ends forward RTP as it came, so a packet lost anywhere on
    the path is a sequence gap at the subscriber)."""
    lost = recv = 0
    for c, p in _inbound_pairs(cur, prev):
        if c is not None:
            lost += c.packets_lost - (p.packets_lost if p is not None else 0)
            recv += c.packets_received - (p.packets_received if p is not None else 0)
    return loss_fraction(lost, lost + recv)


def bytes_sent(cur: StatsSample, prev: StatsSample) -> int:
    """Bytes the publisher sent between the two samples (a counter reset counts as 0)."""
    total = 0
    for c, p in _outbound_pairs(cur, prev):
        if c is not None:
            total += max(0, c.bytes_sent - (p.bytes_sent if p is not None else 0))
    return total


def bytes_received(cur: StatsSample, prev: StatsSample) -> int:
    """Bytes the subscriber received between the two samples (a counter reset counts as 0)."""
    total = 0
    for c, p in _inbound_pairs(cur, prev):
        if c is not None:
            total += max(0, c.bytes_received - (p.bytes_received if p is not None else 0))
    return total


def _send_side(c: OutboundStats, sent: int, dt: float, rtt_s: float | None, loopback: bool) -> SideMetrics:
    # The receiver report's gauges as _gauge and _fraction take them, the usual case (None, or a
    # float in range) inline: this runs for every sent stream of every sample.
    remote_rtt, available, jitter, lost = c.remote_rtt, c.available_bps, c.remote_jitter, c.remote_fraction_lost
    if remote_rtt is not None and not (type(remote_rtt) is float and 0.0 <= remote_rtt < _INF):
        remote_rtt = _gauge(remote_rtt)
    if available is not None and not (type(available) is float and 0.0 <= available < _INF):
        available = _gauge(available)
    if jitter is not None and not (type(jitter) is float and 0.0 <= jitter < _INF):
        jitter = _gauge(jitter)
    if lost is not None and not (type(lost) is float and 0.0 <= lost <= 1.0):
        lost = _fraction(lost)
    if remote_rtt is not None and loopback:
        remote_rtt /= 2
    # actual_bps, available_bps, rtt, jitter, fraction_lost
    return _side_metrics(_rate(sent, dt), available, remote_rtt if remote_rtt is not None else rtt_s, jitter, lost)


def _interval(
    cur: StatsSample, prev: StatsSample, dt: float, rtt_s: float | None, reconnecting: bool
) -> tuple[float | None, int, int, QualityInput]:
    """The interval's path loss, bytes sent and bytes received (as :func:`path_loss`,
    :func:`bytes_sent` and :func:`bytes_received` count them: the same sums in the same order) and
    the scorer's input: each stream's deltas worked out once for both."""
    loop = cur.loopback
    if rtt_s is not None and loop:
        rtt_s /= 2
    sent = received = lost = rcvd = 0
    sides: list[SideMetrics | None] = []  # audio_send, audio_recv, video_send, video_recv
    for (c, p), (ci, pi) in zip(_outbound_pairs(cur, prev), _inbound_pairs(cur, prev), strict=True):
        if c is None:
            sides.append(None)
        else:
            d_sent = c.bytes_sent - (p.bytes_sent if p is not None else 0)
            sent += max(0, d_sent)
            sides.append(_send_side(c, d_sent, dt, rtt_s, loop))
        if ci is None:
            sides.append(None)
        else:
            d_got = ci.bytes_received - (pi.bytes_received if pi is not None else 0)
            d_lost = ci.packets_lost - (pi.packets_lost if pi is not None else 0)
            d_rcvd = ci.packets_received - (pi.packets_received if pi is not None else 0)
            received += max(0, d_got)
            lost += d_lost
            rcvd += d_rcvd
            sides.append(_side_metrics(  # actual_bps, available_bps, rtt, jitter, fraction_lost
                _rate(d_got, dt), None, rtt_s, _gauge(ci.jitter), loss_fraction(d_lost, d_lost + d_rcvd)
            ))
    audio_send, audio_recv, video_send, video_recv = sides
    return (
        loss_fraction(lost, lost + rcvd), sent, received,
        _quality_input(audio_send, audio_recv, video_send, video_recv, reconnecting),
    )


def quality_input(
    cur: StatsSample, prev: StatsSample, dt: float, rtt_s: float | None, reconnecting: bool
) -> QualityInput:
    """What the scorer is fed for the ``dt`` seconds between two samples. ``rtt_s`` is the
    sample's (the report's) rtt; on a loopback path the scorer gets half of every round trip
    (:attr:`StatsSample.loopback`)."""
    return _interval(cur, prev, dt, rtt_s, reconnecting)[3]


def measure(
    sample: StatsSample, now: float, prev: tuple[float, StatsSample] | None, *, reconnecting: bool
) -> Measurement:
    """The measurement of ``sample`` taken at ``now`` (s), given the previous sample and its time.

    Rates, loss and the scorer's side metrics need a previous sample taken strictly earlier;
    without one only jitter and rtt are measured.
    """
    rtt_s = rtt(sample)
    if prev is None or not now > prev[0]:
        return Measurement(jitter(sample), rtt_s, None, None, None, QualityInput(reconnecting=reconnecting))
    p_now, p = prev
    dt = now - p_now
    loss, sent, received, quality = _interval(sample, p, dt, rtt_s, reconnecting)
    # jitter, rtt, loss, outgoing_bps, incoming_bps, quality
    return Measurement(jitter(sample), rtt_s, loss, _gauge(8 * sent / dt), _gauge(8 * received / dt), quality)
