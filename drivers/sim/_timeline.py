"""Receiver and sender state as functions of time, for the interval-batched steady state.

The steady state (:mod:`._steady`) moves a whole interval's packets across each link in one
``Link.send_batch`` and works out afterwards what each end knew at any moment of it (an RTCP
report's send time, a stats sample, a REMB window). These classes hold that per packet, as
cumulative numpy arrays in arrival order, one chunk per interval, and answer "as of time t" with a
binary search. The numbers are the ones :class:`~._media.ReceiverStats` and
:class:`~._media.RembEstimator` compute packet by packet (RFC 3550 jitter is a linear recurrence,
so its value after every packet is a scaled cumulative sum).

Single elements are read with ``ndarray.item`` (the same Python int or float as ``int(a[i])`` or
``float(a[i])``, without making a numpy scalar first: about half the instructions; an interval
reads a few dozen).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import Final

import numpy as np
from numpy.typing import NDArray

from ._media import AUDIO, CLOCK_RATE, F64, I64, VIDEO, AudioSource, ReceiverStats, RembEstimator, Snapshot

_A: Final = 15.0 / 16.0
_BLOCK: Final = 256  # keeps (16/15)**k far from overflow


_CLOCKS = np.array(CLOCK_RATE, dtype=np.float64)  # by kind (AUDIO 0, VIDEO 1), as the multiplier numpy uses
_K = np.arange(1, _BLOCK + 1, dtype=np.float64)
_UP = (1.0 / _A) ** _K / 16.0  # a^-k / 16
_DOWN = _A**_K  # a^k
# Their first n terms for every n (views made once: a list lookup is cheaper than a slice)
_UPS = [_UP[:n] for n in range(_BLOCK + 1)]
_DOWNS = [_DOWN[:n] for n in range(_BLOCK + 1)]
_add = np.add
_sub = np.subtract
_mul = np.multiply
_abs = np.abs
_gt = np.greater
_ne = np.not_equal
_new = tuple.__new__  # (a NamedTuple's own __new__ is a Python function)


def jitter_path(j0: float, d: F64 | I64) -> F64:
    """J_0 = j0 and J_i = J_(i-1) + (|d_i| - J_(i-1))/16: the estimate after every update.

    J_i = a^i (j0 + (1/16) sum_(k<=i) a^-k |d_k|) with a = 15/16, evaluated in blocks. (Integer
    ``d`` gives the same values as ``d.astype(float)``: |d| is exact either way.)
    """
    n = len(d)
    out = np.empty(n + 1)
    out[0] = j = j0
    if n <= _BLOCK:  # (an interval's packets: one block, without the loop)
        part = out[1:]
        _mul(_abs(d), _UPS[n], out=part)
        _add.accumulate(part, out=part)
        part += j
        part *= _DOWNS[n]
        return out
    ad = _abs(d)
    for s in range(0, n, _BLOCK):
        m = min(_BLOCK, n - s)
        part = out[s + 1 : s + 1 + m]
        _mul(ad[s : s + m], _UPS[m], out=part)
        _add.accumulate(part, out=part)
        part += j
        part *= _DOWNS[m]
        j = part.item(-1)
    return out


class _Chunk:
    """One interval's arrivals: the state after each of them (index k-1 = after k packets) and
    the state before the first (``s0``). The byte counts and the one-way-delay sum run from the
    chunk's start: a query adds s0's total (one addition where read rather than one array
    operation per chunk; the same integers, and the same float addition for the delays)."""

    __slots__ = ("after", "arrival", "b0", "bytes", "jidx", "jitter", "last", "maxseq", "owd", "s0", "seq", "size")

    def __init__(self, arrival: F64, s0: tuple[int, int, int, float, int, int, float], bytes_: I64, b0: int,
                 maxseq: I64, jitter: F64, jidx: I64 | None, seq: I64, size: I64 | None, owd: F64 | None,
                 after: Snapshot) -> None:
        self.arrival = arrival
        self.s0 = s0  # (received, bytes, max_seq, jitter, timeline count, wire bytes, owd sum) before
        self.bytes = bytes_
        self.b0 = b0  # what to add to ``bytes`` (s0's bytes, less what a shared running sum adds first)
        self.maxseq = maxseq
        self.jitter = jitter
        # None: ``jitter`` is per packet; else the packets' places in ``jitter`` (the estimate
        # after each update: mapped onto the packets only where a query asks)
        self.jidx = jidx
        self.seq = seq
        self.size = size
        self.owd = owd
        # The state after the whole chunk and its last arrival, as Python objects: stats samples
        # fall on interval boundaries, so most queries want exactly this (no search, no lookups).
        self.after = after
        self.last = arrival.item(-1)


class Timeline:
    """One stream at one end: every arrival's effect on aiortc's StreamStatistics (and, for video,
    on the REMB estimator's window sums), queryable at any time up to the processed horizon.

    ``stats`` is the packet-by-packet object of the event-driven phase: its state is where the
    timeline starts, and :meth:`extend` leaves it at the state after the newest chunk.
    """

    def __init__(self, stats: ReceiverStats, est: RembEstimator | None, *, own_timestamps: bool = False) -> None:
        self.stats = stats
        self.est = est
        # Every packet carries its own RTP timestamp (audio: one packet per frame): then every
        # in-order packet after the first updates the jitter estimate, nothing to look up.
        self.own_timestamps = own_timestamps
        self.chunks: list[_Chunk] = []
        self.firsts: list[float] = []  # first arrival of each chunk (bisect key)
        self.g0s: list[int] = []  # timeline count before each chunk
        self._start = stats.snapshot()
        self.base_seq = stats.base_seq
        self.count = 0  # arrivals added through the timeline
        self._size_total = 0
        self._owd_total = 0.0
        # REMB: the previous update's time, chunk count and sums (the estimator's own sums carry over)
        self._est_prev: tuple[float, int, tuple[int, int, float, int]] = (-math.inf, 0, (0, 0, 0.0, 0))

    def extend(self, arrival: F64, seq: I64, ts: I64, payload: I64, sent: F64 | None = None,
               size: I64 | None = None) -> None:
        """Arrivals in arrival order, all later than everything added before."""
        n = len(arrival)
        if not n:
            return
        st = self.stats
        if st.base_seq is None:
            st.base_seq = self.base_seq = seq.item(0)
        max0 = st.max_seq
        s0 = (st.received, st.bytes, max0, st.jitter_units, self.count, self._size_total, self._owd_total)
        bytes_ = _add.accumulate(payload)  # (from the chunk's start: s0's bytes are added where read)
        io = None
        # (every step an increase: the first non-increase, by argmin, is none; np.count_nonzero
        # runs two Python functions before its C one, logical_and.reduce sets up a reduction)
        if seq.item(0) > max0 and (n == 1 or (up := _gt(seq[1:], seq[:-1]))[up.argmin()]):
            maxseq, arr_t, tss = seq, arrival, ts  # the usual case: every packet in order
        else:
            maxseq = np.maximum.accumulate(seq)
            np.maximum(maxseq, max0, out=maxseq)
            before = np.empty(n, dtype=np.int64)
            before[0] = max0
            before[1:] = maxseq[:-1]
            io = (seq > before).nonzero()[0]  # only in-order packets move the jitter estimate
            arr_t, tss = arrival[io], ts[io]
        m = len(tss)
        if m:
            # RFC 3550: D = (R_i - S_i) - (R_j - S_j), only between packets of different timestamps.
            # (Arrivals are >= 0: truncating is flooring.)
            rel = (arr_t * st.clock_rate).astype(np.int64)
            last_arrival = rel.item(-1)
            last_ts = tss.item(-1)
            rel -= tss
            d = np.empty(m, dtype=np.int64)
            _sub(rel[1:], rel[:-1], out=d[1:])
            if st.last_arrival is None or st.last_ts is None:
                d[0] = 0
                first = False
            else:
                d[0] = rel.item(0) - (st.last_arrival - st.last_ts)
                first = tss.item(0) != st.last_ts
            if self.own_timestamps and first and io is None:
                path = jitter_path(st.jitter_units, d)  # every packet changed the timestamp
                jitter = path[1:]
            else:
                changed = np.empty(m, dtype=np.bool_)
                changed[0] = first
                _ne(tss[1:], tss[:-1], out=changed[1:])
                path = jitter_path(st.jitter_units, d.compress(changed))
                if io is None:
                    jitter = path.take(_add.accumulate(changed))
                else:
                    mark = np.zeros(n, dtype=np.int64)
                    mark[io] = changed
                    jitter = path.take(_add.accumulate(mark))
            st.last_arrival, st.last_ts = last_arrival, last_ts
        else:
            jitter = np.full(n, st.jitter_units)
        size_c: I64 | None = None
        owd_c: F64 | None = None
        if self.est is not None and size is not None and sent is not None:
            # (from the chunk's start, as bytes_: added to the totals before it where read)
            size_c = _add.accumulate(size)
            owd_c = _add.accumulate(_sub(arrival, sent))
        self._add_chunk(arrival, seq, s0, bytes_, 0, maxseq, jitter, None, size_c, owd_c)

    def _add_chunk(self, arrival: F64, seq: I64, s0: tuple[int, int, int, float, int, int, float], bytes_: I64,
                   shared: int, maxseq: I64, jitter: F64, jidx: I64 | None, size_c: I64 | None,
                   owd_c: F64 | None) -> None:
        """Keep a chunk and move the statistics past it (``shared``: what ``bytes_`` adds before
        this stream's first packet; ``jidx``: see _Chunk, the last packet's place is the last)."""
        st = self.stats
        n = len(arrival)
        if self.est is not None and size_c is not None and owd_c is not None:
            self._size_total += size_c.item(-1)
            self._owd_total = owd_c.item(-1) + self._owd_total
            if self.est.first_arrival is None:
                self.est.first_video(arrival.item(0))
        self.firsts.append(arrival.item(0))
        self.g0s.append(self.count)
        st.received += n
        st.bytes += bytes_.item(-1) - shared
        st.max_seq = maxseq.item(-1)
        st.jitter_units = jitter.item(-1)
        self.count += n
        after = _new(Snapshot, (st.received, st.bytes, st.max_seq, st.jitter_units, self.base_seq))
        self.chunks.append(_Chunk(arrival, s0, bytes_, s0[1] - shared, maxseq, jitter, jidx, seq, size_c, owd_c,
                                  after))

    def _locate(self, t: float) -> tuple[_Chunk | None, int]:
        i = bisect_right(self.firsts, t) - 1
        if i < 0:
            return None, 0
        c = self.chunks[i]
        if t >= c.last:  # (the whole chunk: no search)
            return c, len(c.arrival)
        return c, int(c.arrival.searchsorted(t, "right"))  # >= 1

    def at(self, t: float) -> Snapshot:
        """The statistics after every arrival at or before ``t``."""
        i = bisect_right(self.firsts, t) - 1
        if i < 0:
            return self._start
        c = self.chunks[i]
        if t >= c.last:
            return c.after
        i = int(c.arrival.searchsorted(t, "right")) - 1
        k = i + 1
        j = c.jidx
        return _new(Snapshot, (c.s0[0] + k, c.b0 + c.bytes.item(i), c.maxseq.item(i),
                               c.jitter.item(i if j is None else j.item(i)), self.base_seq))

    def last_arrival(self, t: float) -> float | None:
        c, k = self._locate(t)
        return None if c is None else c.arrival.item(k - 1)

    def _sums(self, t: float) -> tuple[int, int, float, int]:
        """(arrivals through the timeline, wire bytes, one-way-delay sum, max seq) at ``t``."""
        c, k = self._locate(t)
        if c is None:
            return 0, 0, 0.0, self._start[2]
        assert c.size is not None and c.owd is not None
        i = k - 1
        s0 = c.s0
        return s0[4] + k, s0[5] + c.size.item(i), c.owd.item(i) + s0[6], c.maxseq.item(i)

    def _seq_of(self, g: int) -> int:
        c = self.chunks[bisect_right(self.g0s, g) - 1]
        return c.seq.item(g - c.s0[4])

    def remb(self, t: float) -> float | None:
        """The estimator's update at ``t`` (REMB_INTERVAL after the previous one): what
        ``RembEstimator.update`` returns after ``add`` saw every video arrival up to ``t``."""
        est = self.est
        assert est is not None
        g1, s1, o1, m1 = sums = self._sums(t)
        prev_t, prev_chunks, prev = self._est_prev
        # The sums at the previous update still hold unless a chunk added since then has an
        # arrival at (not after) that very moment.
        if prev_chunks < len(self.chunks) and self.firsts[prev_chunks] <= prev_t:
            prev = self._sums(prev_t)
        g0, s0, o0, _ = prev
        if g1 > g0:
            est.add_totals(g1 - g0, s1 - s0, o1 - o0, lambda: self._seq_of(g0), m1)
        self._est_prev = (t, len(self.chunks), sums)
        return est.update(t)


def extend_pair(audio: Timeline, video: Timeline, a: NDArray[np.void], na: int) -> bool:
    """``audio.extend`` with the packet records ``a[:na]`` and ``video.extend`` with ``a[na:]``
    (with their send times and wire sizes), each elementwise stage one call for both streams,
    when both are under way and in order (the usual case: the same operations on the same
    values, so the same numbers); False, with nothing done, otherwise (extend each)."""
    n = len(a)
    nv = n - na
    sa, sv = audio.stats, video.stats
    la, lta, lv, ltv = sa.last_arrival, sa.last_ts, sv.last_arrival, sv.last_ts
    if not (0 < na <= _BLOCK and 0 < nv <= _BLOCK and audio.own_timestamps and not video.own_timestamps
            and audio.est is None and video.est is not None and sa.base_seq is not None
            and sv.base_seq is not None and la is not None and lta is not None and lv is not None
            and ltv is not None and sa.clock_rate == CLOCK_RATE[AUDIO] and sv.clock_rate == CLOCK_RATE[VIDEO]):
        return False
    seq = a["seq"]
    ts = a["ts"]
    if not (seq.item(0) > sa.max_seq and seq.item(na) > sv.max_seq and ts.item(0) != lta):
        return False
    up = _gt(seq[1:], seq[:-1])
    up[na - 1] = True  # (audio's last and video's first: not a step of either stream)
    if not up[up.argmin()]:  # (a step that is not an increase: see Timeline.extend)
        return False
    s0a = (sa.received, sa.bytes, sa.max_seq, sa.jitter_units, audio.count, audio._size_total, audio._owd_total)
    s0v = (sv.received, sv.bytes, sv.max_seq, sv.jitter_units, video.count, video._size_total, video._owd_total)
    t = a["t"]
    bytes_ = _add.accumulate(a["payload"])  # (video's part starts with audio's total: ``shared``)
    rel = (t * _CLOCKS.take(a["kind"])).astype(np.int64)
    la_a, la_v = rel.item(na - 1), rel.item(-1)
    lt_a, lt_v = ts.item(na - 1), ts.item(-1)
    rel -= ts
    d = np.empty(n, dtype=np.int64)
    _sub(rel[1:], rel[:-1], out=d[1:])
    d[0] = rel.item(0) - (la - lta)
    d[na] = rel.item(na) - (lv - ltv)
    # Every audio packet moves the jitter estimate; a video packet when its timestamp changes.
    changed = np.empty(nv, dtype=np.bool_)
    changed[0] = ts.item(na) != ltv
    _ne(ts[na + 1 :], ts[na:-1], out=changed[1:])
    ad = _abs(d)
    adv = ad[na:].compress(changed)
    mv = len(adv)
    # Both jitter paths (jitter_path's one-block case) in one buffer: [ja, audio..., jv, video...].
    path = np.empty(na + mv + 2)
    path[0] = ja = sa.jitter_units
    path[na + 1] = jv = sv.jitter_units
    qa, qv = path[1 : na + 1], path[na + 2 :]
    _mul(ad[:na], _UPS[na], out=qa)
    _mul(adv, _UPS[mv], out=qv)
    _add.accumulate(qa, out=qa)
    _add.accumulate(qv, out=qv)
    qa += ja
    qv += jv
    qa *= _DOWNS[na]
    qv *= _DOWNS[mv]
    # (the video's estimate after each packet: path[na + 1:] at the packet's count of updates)
    jidx_v = _add.accumulate(changed)
    tv = t[na:]
    size_c = _add.accumulate(a["size"][na:])
    owd_c = _add.accumulate(_sub(tv, a["sent"][na:]))
    sa.last_arrival, sa.last_ts = la_a, lt_a
    sv.last_arrival, sv.last_ts = la_v, lt_v
    seq_a = seq[:na]
    audio._add_chunk(t[:na], seq_a, s0a, bytes_[:na], 0, seq_a, qa, None, None, None)
    seq_v = seq[na:]
    video._add_chunk(tv, seq_v, s0v, bytes_[na:], bytes_.item(na - 1), seq_v, path[na + 1 :], jidx_v, size_c, owd_c)
    return True


class SendLog:
    """What one publisher sender has sent, as of any time (getStats' packetsSent / bytesSent).
    Each chunk keeps its parts' send times and running payload sums (each part in send order: the
    video, and the retransmissions among it) and its totals before it; a query reads what it needs.
    (Integer sums: a running sum's k-th value is the sum of the first k+1, however added.)"""

    def __init__(self, packets: int, bytes_: int) -> None:
        # (parts as (send times, running payload sums), packets and bytes before)
        self.chunks: list[tuple[tuple[tuple[F64, I64], ...], int, int]] = []
        self.firsts: list[float] = []
        self.lasts: list[float] = []  # (a query past a chunk's last packet needs no search: its totals)
        self._start = (packets, bytes_)
        self.packets, self.bytes = packets, bytes_

    def extend(self, t: F64, payload: I64, rtx: tuple[F64, I64] | None = None) -> None:
        """One interval's packets in send order, and ``rtx`` (send times, payloads: the
        retransmissions sent in between, in send order)."""
        if rtx is not None and not len(rtx[0]):
            rtx = None
        if not len(t):  # (retransmissions alone, or nothing)
            if rtx is None:
                return
            (t, payload), rtx = rtx, None
        # (a running sum costs what a sum does, and a query then reads one number)
        cum = _add.accumulate(payload)
        if rtx is None:
            parts: tuple[tuple[F64, I64], ...] = ((t, cum),)
        else:
            rtx_cum = _add.accumulate(rtx[1])
            parts = ((t, cum), (rtx[0], rtx_cum))
        self.chunks.append((parts, self.packets, self.bytes))
        first, last = t.item(0), t.item(-1)
        self.packets += len(t)
        self.bytes += cum.item(-1)
        if rtx is not None:
            first, last = min(first, rtx[0].item(0)), max(last, rtx[0].item(-1))
            self.packets += len(rtx[0])
            self.bytes += rtx_cum.item(-1)
        self.firsts.append(first)
        self.lasts.append(last)

    def at(self, t: float) -> tuple[int, int]:
        i = bisect_right(self.firsts, t) - 1
        if i < 0:
            return self._start
        parts, packets, bytes_ = self.chunks[i]
        if t >= self.lasts[i]:  # the whole chunk: the totals before the next one
            if i + 1 < len(self.chunks):
                return self.chunks[i + 1][1], self.chunks[i + 1][2]
            return self.packets, self.bytes
        for times, cum in parts:
            k = int(times.searchsorted(t, "right"))
            if k:
                packets += k
                bytes_ += cum.item(k - 1)
        return packets, bytes_


class AudioLog:
    """:class:`SendLog` for the audio, which is planned ahead on its source's fixed grid with one
    payload size: what left by any time is a count (no per-interval bookkeeping, no search)."""

    def __init__(self, source: AudioSource, packets: int, bytes_: int) -> None:
        self.source = source
        self._first = source.seq  # the number of the first packet it logs
        self._start = (packets, bytes_)
        self.next = source.seq  # the number of the first packet not handed to the uplink yet

    def at(self, t: float) -> tuple[int, int]:
        k = min(self.source.sent_from(self._first, t), self.next - self._first)
        return self._start[0] + k, self._start[1] + k * self.source.payload
