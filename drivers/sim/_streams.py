"""The media streams' state at both peers: what the event-driven pipeline builds up and the
steady state takes over at the switch, and the RTCP rules (:mod:`._rtcp`) applied to it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
import numpy as np
from numpy.typing import NDArray
from rtcprobe.core.observations import InboundStats, OutboundStats

from ._media import (
    CLOCK_RATE,
    F64,
    I64,
    PACKET,
    RAW,
    VIDEO,
    Packets,
    PlayoutStart,
    ReceiverStats,
    RembEstimator,
    Snapshot,
)
from ._rtcp import SR_HISTORY, Prior, ReportBlock, receiver_report, rtt_sample, smoothed_rtt


class SenderView:
    """One publisher RTP sender's view of RTCP (what getStats' outbound/remote-inbound give)."""

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0
        self.srs: list[float] = []  # its last SR_HISTORY SRs' send times (event-driven mode)
        self.rtt: float | None = None
        self.jitter: float | None = None
        self.fraction_lost: float | None = None
        self.lost: int | None = None
        self.remb: float | None = None

    def sent_sr(self, sr_id: float) -> None:
        """It sent an SR (event-driven mode)."""
        self.srs.append(sr_id)
        if len(self.srs) > SR_HISTORY:
            del self.srs[0]

    def read_rr(self, kind: int, block: ReportBlock, arrival: float, recent_srs: Sequence[float]) -> None:
        """An RR about this sender's stream arrived; ``recent_srs``: its last SRs by then."""
        rtt = rtt_sample(block, arrival, recent_srs)
        if rtt is not None:
            self.rtt = smoothed_rtt(self.rtt, rtt)
        self.fraction_lost = block.fraction_lost / 256
        self.lost = block.lost
        self.jitter = block.jitter / CLOCK_RATE[kind]

    def outbound(self, kind: int) -> OutboundStats:
        # (positional, in the fields' order (checked below): keywords cost attrs' __init__ a
        # third more, and stats samples make these a few times a second)
        return OutboundStats(self.packets, self.bytes, self.rtt, self.jitter, self.fraction_lost, self.lost,
                             self.remb if kind == VIDEO else None)


def inbound(stats: Snapshot, kind: int) -> InboundStats | None:
    """getStats' inbound-rtp for a stream the subscriber receives (None before its first packet)."""
    if stats.base_seq is None:
        return None
    # (positional, as SenderView.outbound)
    return InboundStats(stats.received, max(0, stats.max_seq - stats.base_seq + 1 - stats.received), stats.bytes,
                        int(stats.jitter_units) / CLOCK_RATE[kind])


# The field order the positional calls above rely on.
assert [f.name for f in attrs.fields(OutboundStats)] == [
    "packets_sent", "bytes_sent", "remote_rtt", "remote_jitter", "remote_fraction_lost", "remote_packets_lost",
    "available_bps"]
assert [f.name for f in attrs.fields(InboundStats)] == ["packets_received", "packets_lost", "bytes_received", "jitter"]


class Streams:
    """Per stream (``kinds``: AUDIO and/or VIDEO): the publisher's senders, the subscriber's
    receive statistics and REMB estimator, the RTCP state the subscriber keeps, when it can
    decrypt media (its DTLS is up), and media start at the subscriber. (The TURN server between
    them keeps nothing: it forwards.)"""

    def __init__(self, kinds: list[int], estimator: RembEstimator | None = None) -> None:
        self.kinds = kinds
        self.senders = {k: SenderView() for k in kinds}
        self.sub_stats = {k: ReceiverStats(CLOCK_RATE[k]) for k in kinds}
        self.sub_est = RembEstimator() if estimator is None else estimator
        self.sub_sr: dict[int, tuple[float, float]] = {}  # kind -> (SR id = send time, arrival)
        self.rr_prior = {k: Prior() for k in kinds}  # the subscriber's previous RR per stream
        self.sub_accept_at = math.inf  # the subscriber's DTLS is up
        self.playout = PlayoutStart()
        self.last_pli = -math.inf  # the subscriber's latest keyframe request

    @property
    def all_started(self) -> bool:
        return self.playout.started.issuperset(self.kinds)

    def per_kind(self, got: Packets) -> list[tuple[int, Packets]]:
        """``got`` split by stream (only the non-empty parts)."""
        if len(self.kinds) == 1:
            return [(self.kinds[0], got)] if len(got) else []
        out = []
        for kind in self.kinds:
            mine = got.take(got.kind == kind)
            if len(mine):
                out.append((kind, mine))
        return out

    def subscriber_rr(self, kind: int, stats: Snapshot, now: float) -> ReportBlock | None:
        """The subscriber's RR about the ``kind`` stream at ``now`` (None: not heard yet)."""
        report = receiver_report(stats, self.rr_prior[kind], self.sub_sr.get(kind), now)
        if report is None:
            return None
        block, self.rr_prior[kind] = report
        return block


def _raw(a: NDArray[np.void]) -> NDArray[np.void]:
    """Packet records to copy, as opaque bytes (numpy copies those without visiting each field)."""
    return np.frombuffer(a, RAW) if a.flags.c_contiguous else a.view(RAW).copy()


class Queue:
    """Packets on their way to one end, kept sorted by arrival time.

    One buffer for the run's packets: the queue is its records [head, tail). A push writes after
    ``tail`` (a new, larger buffer when full: the old one stays as it is), a pop hands out a view
    of the records it passes and moves ``head`` on; a record is never written again once popped
    (the receive timelines keep views of them). A push is one copy, a pop one slice: cheaper
    than joining and slicing arrays each time.
    """

    __slots__ = ("_buf", "_head", "_raw", "_sent", "_t", "_tail", "min", "reorder")

    def __init__(self, reorder: bool) -> None:
        self._buf: NDArray[np.void] = Packets.empty().a
        # (views of the buffer, kept: each lookup costs a call; the raw one copies records whole,
        # several times cheaper than on the structured dtype)
        self._t: F64 = self._buf["t"]
        self._sent: F64 = self._buf["sent"]
        self._raw: NDArray[np.void] = np.frombuffer(self._buf, RAW)
        self._head = self._tail = 0
        self.min = math.inf  # earliest arrival still queued
        self.reorder = reorder  # the link may deliver out of order: sort on the way in

    @classmethod
    def of_records(cls, reorder: bool, recs: Sequence[tuple[object, ...]]) -> Queue:
        """A queue of ``recs`` (PACKET records as tuples, sorted by arrival time), written
        straight into its first buffer: what ``push`` of them as an array gives, without the
        array in between."""
        q = cls(reorder)
        n = len(recs)
        if n:
            # (zeroed, as np.zeros makes records: see PACKET; the tuples convert as in np.array)
            buf = np.zeros(max(2 * n, 256), dtype=PACKET)
            buf[:n] = recs
            q._buf, q._t, q._sent, q._raw = buf, buf["t"], buf["sent"], np.frombuffer(buf, RAW)
            q._tail = n
            q.min = float(q._t[0])
        return q

    @property
    def a(self) -> NDArray[np.void]:
        """The packets queued (a view)."""
        return self._buf[self._head : self._tail]

    def _room(self, n: int) -> int:
        """Make room for ``n`` more records; returns where they go."""
        tail = self._tail
        if tail + n > len(self._buf):
            live = self._buf[self._head : tail]
            buf = np.empty(max(2 * len(self._buf), 2 * (len(live) + n), 256), dtype=PACKET)
            raw = np.frombuffer(buf, RAW)
            raw[: len(live)] = _raw(live)
            self._buf, self._t, self._sent, self._raw = buf, buf["t"], buf["sent"], raw
            self._head, tail = 0, len(live)
        return tail

    def arrive(self, sent: Packets, arrival: F64) -> None:
        """Queue what a link delivered of ``sent`` (``arrival``: NaN where it dropped a packet)."""
        kept = (arrival == arrival).nonzero()[0]  # (NaN: dropped)
        self.arrive_taken(sent.a, kept, arrival.take(kept))

    def arrive_taken(self, sent: NDArray[np.void], which: I64, arrival: F64) -> None:
        """Queue the packets ``sent[which]``, which arrive at ``arrival``."""
        n = len(which)
        if not n:
            return
        if self.reorder:
            got = np.frombuffer(_raw(sent).take(which), PACKET)  # (a copy: ``sent`` keeps its send times)
            got["t"] = arrival
            self._push(got)
            return
        # In order: copied straight into the buffer ('clip': no bounds check into a temporary).
        tail = self._room(n)
        _raw(sent).take(which, out=self._raw[tail : tail + n], mode="clip")
        self._t[tail : tail + n] = arrival
        self._pushed(tail, n)

    def push(self, p: Packets) -> None:
        self._push(p.a)

    def _push(self, p: NDArray[np.void]) -> None:
        n = len(p)
        if not n:
            return
        tail = self._room(n)
        if self.reorder and n > 1:
            _raw(p).take(p["t"].argsort(kind="stable"), out=self._raw[tail : tail + n], mode="clip")
        else:
            self._raw[tail : tail + n] = _raw(p)
        self._pushed(tail, n)

    def _pushed(self, tail: int, n: int) -> None:
        head = self._head
        self._tail = tail + n
        if self.reorder and tail > head and self._t[tail] < self._t[tail - 1]:
            q = self._raw[head : tail + n]  # (queued records only: no one holds a view of them)
            q[:] = q.take(self._t[head : tail + n].argsort(kind="stable"))
        self.min = float(self._t[head])

    def pop_until(self, t: float, accept_at: float, sent_before: float = math.inf) -> Packets:
        """Everything arrived by ``t``, minus what came before its end could decrypt it
        (``accept_at``: that end's DTLS handshake finished). ``sent_before``: of what arrived at
        exactly ``t``, only what was sent before then (the rest stays queued, in its order)."""
        head, tail = self._head, self._tail
        qt = self._t[head:tail]
        k = int(qt.searchsorted(t, "right"))
        if k and sent_before != math.inf and qt[k - 1] == t:
            i = int(qt.searchsorted(t, "left"))
            later = self._sent[head + i : head + k] >= sent_before
            if later.any():
                k = i + int(later.argmax())
        got = self._buf[head : head + k]
        if not k:
            return Packets(got)
        self._head = head + k
        self.min = float(qt[k]) if k < len(qt) else math.inf
        if qt[0] < accept_at:
            got = got.compress(qt[:k] >= accept_at)
        return Packets(got)
