"""The RTCP rules, as pure functions both of the driver's modes apply (aiortc's behaviour).

The event-driven pipeline applies them at the virtual moment a report is sent or arrives, from
the packet-by-packet statistics; the steady state applies them to what its timelines say "as of"
the same moment. Either way one function decides, so the two modes cannot drift apart.

* The publisher sends an SR per stream and the subscriber an RR per stream at 0.5-1.5 s random
  intervals, each through TURN to the other peer.
* An RR carries the fraction lost since the previous RR, cumulative lost and RFC 3550 jitter; the
  publisher measures rtt from an RR echoing any of its last :data:`SR_HISTORY` SRs (as libwebrtc
  does; the driver's aiortc client adds the same rule, drivers/aiortc/stats.py ``RttWatch``),
  smoothed with aiortc's 0.85 EWMA, so rtt is unknown until such an RR arrived. (aiortc alone
  matches only its latest SR: over a loop longer than the 0.5-1.5 s SR interval it measures
  almost nothing.) SR and RR each cross the access link twice (up to TURN, down to the other
  peer): the rtt is the loop's, about twice the client↔TURN round trip.
* The subscriber asks for a keyframe (PLI) at most every 500 ms while it has video it cannot
  decode, the first one 500 ms after its DTLS came up at the soonest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, NamedTuple

import numpy as np

from ._media import Snapshot

RTCP_MIN: Final = 0.5  # aiortc: sleep(0.5 + random()) between reports
RTCP_SPAN: Final = 1.0
RTT_ALPHA: Final = 0.85  # aiortc rtcrtpsender.RTT_ALPHA
DLSR_UNIT: Final = 65536  # RTCP DLSR is in 1/65536 s
SR_HISTORY: Final = 16  # SRs a sender remembers to match RRs against (~16 s of them)
PLI_INTERVAL: Final = 0.5  # the subscriber's keyframe requests: at most one per 500 ms


def report_delay(rng: np.random.Generator) -> float:
    """The wait before a sender's or receiver's next report."""
    return RTCP_MIN + RTCP_SPAN * float(rng.random())


class ReportBlock(NamedTuple):
    """One RR report block, as the publisher reads it."""

    fraction_lost: int  # 8-bit fixed point, since the previous RR
    lost: int  # cumulative
    jitter: int  # RTP clock units
    lsr: float | None  # the SR echoed (its send time: the simulator's SR id), None before any SR
    dlsr: int  # delay since that SR arrived, 1/65536 s


class Prior(NamedTuple):
    """What the previous RR about a stream covered (RFC 3550's expected_prior/received_prior)."""

    expected: int = 0
    received: int = 0


_new = tuple.__new__


def receiver_report(stats: Snapshot, prior: Prior, last_sr: tuple[float, float] | None,
                    now: float) -> tuple[ReportBlock, Prior] | None:
    """The RR about a stream sent at ``now`` and the interval it closes, or None before the
    stream was heard from (aiortc only reports on streams it has received).

    ``last_sr``: (SR id, arrival) of the latest SR the reporter received on that stream.
    """
    if stats.base_seq is None:
        return None
    expected = stats.max_seq - stats.base_seq + 1
    exp_i, rec_i = expected - prior.expected, stats.received - prior.received
    lost_i = exp_i - rec_i
    fraction = 0 if exp_i <= 0 or lost_i <= 0 else (lost_i << 8) // exp_i
    lsr, dlsr = None, 0
    if last_sr is not None:
        lsr, at = last_sr
        dlsr = int((now - at) * DLSR_UNIT)
    # (tuple.__new__: a NamedTuple's own __new__ is a Python function)
    block = _new(ReportBlock, (fraction, max(0, expected - stats.received), int(stats.jitter_units), lsr, dlsr))
    return block, _new(Prior, (expected, stats.received))


def rtt_sample(block: ReportBlock, arrival: float, recent_srs: Sequence[float]) -> float | None:
    """The round trip an RR arriving at ``arrival`` measures, or None when it echoes none of the
    publisher's recent SRs (``recent_srs``: the send times of its last :data:`SR_HISTORY` SRs
    before ``arrival``) or came with no delay since it."""
    if block.lsr is None or not block.dlsr or block.lsr not in recent_srs:
        return None
    return arrival - block.lsr - block.dlsr / DLSR_UNIT


def smoothed_rtt(previous: float | None, sample: float) -> float:
    return sample if previous is None else RTT_ALPHA * previous + (1 - RTT_ALPHA) * sample


def pli_due(now: float, last_pli: float, up_at: float) -> bool:
    """May the subscriber (whose DTLS is up since ``up_at``) send a keyframe request now?"""
    return now - max(last_pli, up_at) >= PLI_INTERVAL


def next_pli_at(earliest: float, last_pli: float, up_at: float) -> float:
    """The first moment from ``earliest`` on the subscriber may send a keyframe request (the
    steady state's form of :func:`pli_due`: the same rule, its own rounding)."""
    return max(earliest, max(last_pli, up_at) + PLI_INTERVAL)
