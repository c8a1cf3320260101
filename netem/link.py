"""One direction of an emulated network path, packet by packet, in virtual time.

Theory of operation
-------------------
A :class:`Link` is a pure function of (its config, its phases, the injected random generator,
and the packets offered so far). It never reads a clock: the caller passes each packet's send
time ``t`` (seconds since the start of the run, non-decreasing) and gets back the time the
packet comes out of the far end, or ``None``/NaN if the link dropped it. The fate of a packet is
decided when it is sent, under the :class:`LinkConfig` in force at that moment (the base config,
or the last phase whose ``at`` <= t). Stages, in Mahimahi shell order (loss → link → delay):

1. **Outage**: ``outage`` set, or ``t`` inside an ``outages`` window → dropped (``dropped_outage``).
2. **Loss**: Bernoulli ``loss``, or Gilbert-Elliott with netem's ``gemodel`` semantics (the loss
   draw uses the state the packet finds, then the chain steps) → ``dropped_loss``.
3. **Bottleneck + drop-tail queue** (FIFO). A packet is refused (``dropped_queue``) if admitting
   it would put more than ``queue_packets`` packets / ``queue_bytes`` bytes in the queue, where
   the queue holds accepted packets whose service has not started at ``t`` (Mahimahi's
   droptail does not count the packet in transit; "started" allows 1 ns of float noise).

   * ``bandwidth_kbps``: service time s = (size + overhead)·8 / rate; departures follow the FIFO
     recursion d_i = max(a_i, d_{i−1}) + s_i, whose closed form d_i = S_i + max_{j≤i}(a_j − S_{j−1})
     (S = running sum of s) is a cumulative maximum numpy computes without a Python loop.
   * ``trace`` (Mahimahi): opportunity k (trace line k mod L, plus ⌊k/L⌋ periods) carries byte
     positions [1504·k, 1504·(k+1)). A packet arriving at ``a`` may use opportunities strictly
     after ``a`` (Mahimahi serves the opportunities due at a millisecond before it enqueues the
     packets of that millisecond). In byte space the FIFO recursion is the same cumulative
     maximum (start = max(end of previous packet, 1504·first usable opportunity)); the packet
     leaves at the opportunity holding its last byte. Leftover bytes of an opportunity are
     used by a packet already queued and wasted otherwise, exactly as Mahimahi does.
   * neither: no serialization, but still FIFO behind anything queued by an earlier phase.

4. **Delay + jitter**: delivery = departure + max(0, delay + jitter draw); with ``reorder``
   false, delivery = max(that, previous delivery) so packets never overtake each other.

``send`` runs the stages for one packet; ``send_batch`` runs the same model over arrays. The
batch path is vectorized per phase segment: outage and loss are masks (the Gilbert-Elliott
chain too: each packet applies one of four maps {stay, flip, →good, →bad} to the state, so a
state is the last constant map's value XOR the parity of flips since); the bottleneck is the
cumulative maximum above, computed optimistically in chunks; where a chunk would overflow the
queue, the batch falls back to the scalar code for that packet and keeps looping in Python only
while the queue stays non-empty, then vectorizes again. Each random stage has its own child
generator drawn in packet order, so ``send`` and ``send_batch`` consume identical streams and
agree (up to floating-point rounding of the running sums) even with randomness.

Phase changes apply to packets sent after ``at``; packets already queued keep the departure
computed when they were admitted (a simplification of a live qdisc change).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
from numpy.random.bit_generator import ISpawnableSeedSequence
from numpy.typing import ArrayLike, NDArray

from .models import GilbertElliott, LinkConfig, LinkCounters
from .trace import MTU_BYTES, Trace, ms, ms_v

__all__ = ["Link"]

_UNLIMITED, _RATE, _TRACE = 0, 1, 2
_PARETO_ALPHA = 3.0
# Standardize Lomax(α=3) (numpy's pareto) to mean 0 and standard deviation 1, as netem's table is.
_PARETO_MEAN = 1.0 / (_PARETO_ALPHA - 1.0)
_PARETO_STD = math.sqrt(_PARETO_ALPHA / ((_PARETO_ALPHA - 1.0) ** 2 * (_PARETO_ALPHA - 2.0)))
# A packet whose service starts within 1 ns of an arrival counts as started at that arrival.
# Exact ties are common (grid-aligned send times meet a link that just drained), and the scalar
# and vectorized running sums can land an ulp either side of them; this keeps both paths'
# queue decisions identical without changing the model by anything measurable.
_TIE = 1e-9
_FIRST_CHUNK = 512
_DRAW_AHEAD = 32
_BLOCK = 2048  # uniforms drawn from a generator at a time
_MAX_CHUNK = 1 << 18
_ARANGE = np.arange(_FIRST_CHUNK)
_add = np.add


def _nans(n: int) -> NDArray[np.float64]:
    out = np.empty(n)
    out.fill(np.nan)
    return out

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
Bool = NDArray[np.bool_]


_NO_F64: F64 = np.zeros(0, dtype=np.float64)
_NO_I64: I64 = np.zeros(0, dtype=np.int64)


class _Uniforms:
    """A generator's standard uniforms (``Generator.random``), drawn ahead in blocks: a batch
    takes a slice of the block and the scalar path a few at a time as Python floats, so neither
    calls the generator per packet or per batch. Every draw from the generator goes through
    here, so the values come in the generator's own order whatever the mix of scalar and vector
    draws (``random(a)`` then ``random(b)`` gives the numbers ``random(a + b)`` does: one 64-bit
    output per double). Values before ``pos`` are used up (callers may overwrite their slice),
    except the last ``len(_ahead)``: the scalar path's list holds them, unused, until it uses
    them or :meth:`give_back` returns them."""

    __slots__ = ("_ahead", "_derived", "_rng", "block", "pos")

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._ahead: list[float] = []  # taken from the block for the scalar path, not used yet (the next one last)
        self.block: F64 = np.empty(0)
        self.pos = 0
        # A stage's transform of the whole block (what its stage computes from each draw), kept
        # while the block and the stage stay the same: (stage, block, values).
        self._derived: tuple[object, F64, NDArray[Any]] | None = None

    def one(self) -> float:
        ahead = self._ahead
        if not ahead:
            p = self.take(_DRAW_AHEAD)
            ahead.extend(reversed(self.block[p : p + _DRAW_AHEAD].tolist()))
        return ahead.pop()

    def give_back(self) -> None:
        """Return the scalar path's unused draws to the block: they are its values just before
        ``pos`` (:meth:`one` takes them from there, in order, and the block is replaced only
        while the list is empty), so the vector path then reads them from the block itself."""
        self.pos -= len(self._ahead)
        self._ahead.clear()

    def take(self, n: int) -> int:
        """Use up the block's next ``n`` draws (drawing a new block if needed); returns where
        they start in ``block``. Only while nothing is left in the scalar path's list."""
        pos = self.pos
        if pos + n > len(self.block):
            rest = self.block[pos:]
            fresh = self._rng.random(max(_BLOCK, n))
            self.block = np.concatenate([rest, fresh]) if len(rest) else fresh
            pos = 0
        self.pos = pos + n
        return pos

    def many(self, n: int) -> F64:
        if self._ahead:
            self.give_back()
        p = self.take(n)
        return self.block[p : p + n]

    def derived(self, n: int, key: object, make: Callable[[F64], NDArray[Any]]) -> NDArray[Any]:
        """The next ``n`` draws through ``make`` (an elementwise function, the same for the same
        ``key``), computed once per block rather than once per batch."""
        if self._ahead:
            self.give_back()
        p = self.pos
        if p + n > len(self.block):
            p = self.take(n)
        else:  # (take, inline)
            self.pos = p + n
        d = self._derived
        if d is None or d[0] is not key or d[1] is not self.block:
            d = self._derived = (key, self.block, make(self.block))
        return d[2][p : p + n]


class _Stage:
    """A LinkConfig with everything the hot path needs precomputed."""

    __slots__ = (
        "config", "delay", "dist", "ge", "jitter", "kind", "loss", "out_ends", "out_ends_a",
        "out_starts", "out_starts_a", "outage", "overhead", "qb", "qp", "reorder", "sec_per_byte",
        "tr", "tr_f", "tr_len", "tr_list", "tr_period", "trace",
    )

    def __init__(self, config: LinkConfig) -> None:
        self.config = config
        self.delay = config.delay_ms / 1000.0
        self.jitter = config.jitter_ms / 1000.0
        self.dist = config.jitter_distribution
        self.reorder = config.reorder
        self.loss = config.loss
        self.ge: GilbertElliott | None = config.loss_model
        self.overhead = config.overhead_bytes
        self.qp = config.queue_packets
        self.qb = config.queue_bytes
        self.outage = config.outage
        merged: list[list[float]] = []
        for start, end in config.outages:  # sorted by start; merge overlaps so one bisect suffices
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        self.out_starts = [w[0] for w in merged]
        self.out_ends = [w[1] for w in merged]
        # (the arrays are only read: stages without outages or a trace share empty ones)
        self.out_starts_a = np.asarray(self.out_starts, dtype=np.float64) if merged else _NO_F64
        self.out_ends_a = np.asarray(self.out_ends, dtype=np.float64) if merged else _NO_F64
        self.trace: Trace | None = config.trace
        self.sec_per_byte = 0.0
        self.tr_list: list[int] = []
        self.tr: I64 = _NO_I64
        self.tr_f: F64 = _NO_F64
        self.tr_len = 0
        self.tr_period = 0
        if config.trace is not None:
            self.kind = _TRACE
            self.tr_list = list(config.trace.timestamps_ms)
            self.tr = config.trace.array
            self.tr_f = self.tr.astype(np.float64)
            self.tr_len = len(self.tr_list)
            self.tr_period = config.trace.period_ms
        elif config.bandwidth_kbps is not None:
            self.kind = _RATE
            self.sec_per_byte = 8.0 / (config.bandwidth_kbps * 1000.0)
        else:
            self.kind = _UNLIMITED

    # -- trace opportunity arithmetic (scalar and vector versions do the same float operations) --

    def first_opp_after(self, t: float) -> int:
        t_ms = ms(t)
        cycle = math.floor(t_ms / self.tr_period)
        return cycle * self.tr_len + bisect_right(self.tr_list, t_ms - cycle * self.tr_period)

    def first_opp_after_v(self, t: F64) -> I64:
        t_ms = ms_v(t)
        cycle = t_ms / self.tr_period
        np.floor(cycle, out=cycle)
        within = self.tr_f.searchsorted(t_ms - cycle * self.tr_period, "right")
        result: I64 = cycle.astype(np.int64)
        result *= self.tr_len
        result += within
        return result

    def opp_time(self, k: int) -> float:
        cycle, i = divmod(k, self.tr_len)
        return (self.tr_list[i] + cycle * self.tr_period) / 1000.0

    def opp_time_v(self, k: I64) -> F64:
        cycle, i = np.divmod(k, self.tr_len)
        cycle *= self.tr_period
        cycle += self.tr.take(i)  # (integers: exact in any order)
        result: F64 = cycle / 1000.0
        return result

    # -- what a batch computes from its random draws (elementwise: also done once per block) --

    def kept_v(self, u: F64) -> Bool:
        """Bernoulli loss: which draws keep their packet."""
        kept: Bool = u >= self.loss
        return kept

    def uniform_jitter_v(self, u: F64) -> F64:
        """Uniform jitter from standard uniforms, as numpy's ``uniform(lo, hi)`` (``lo + (hi - lo) * u``)."""
        lo = -self.jitter
        out: F64 = np.multiply(self.jitter - lo, u)
        np.add(lo, out, out=out)
        return out

    def delay_v(self, jitter: F64) -> F64:
        """The delay stage, ``max(0, delay + jitter)``, in place."""
        np.add(self.delay, jitter, out=jitter)
        np.maximum(0.0, jitter, out=jitter)
        return jitter

    def uniform_delay_v(self, u: F64) -> F64:
        """The delay stage from standard uniforms (uniform jitter), in a new array."""
        return self.delay_v(self.uniform_jitter_v(u))

    def in_outage(self, t: float) -> bool:
        if self.outage:
            return True
        if not self.out_starts:
            return False
        i = bisect_right(self.out_starts, t) - 1
        return i >= 0 and t < self.out_ends[i]

    def in_outage_v(self, t: F64) -> Bool:
        if self.outage:
            return np.ones(len(t), dtype=np.bool_)
        if not self.out_starts:
            return np.zeros(len(t), dtype=np.bool_)
        i = np.searchsorted(self.out_starts_a, t, side="right") - 1
        result: Bool = (i >= 0) & (t < self.out_ends_a[np.maximum(i, 0)])
        return result


class Link:
    """One direction of a path: offer packets with :meth:`send` / :meth:`send_batch`.

    ``rng``: the generator whose two spawned children draw the loss and the jitter, or the seed
    sequence it is made from (the same children, without building the parent generator)."""

    def __init__(
        self,
        config: LinkConfig,
        rng: np.random.Generator | ISpawnableSeedSequence,
        phases: Sequence[tuple[float, LinkConfig]] = (),
    ) -> None:
        if not isinstance(config, LinkConfig):
            raise TypeError(f"config must be a LinkConfig, got {type(config).__name__}")
        ats: list[float] = []
        for at, cfg in phases:
            if not isinstance(cfg, LinkConfig):
                raise TypeError(f"phase configs must be LinkConfig, got {type(cfg).__name__}")
            if not math.isfinite(at) or at < 0 or (ats and at <= ats[-1]):
                raise ValueError(f"phase times must be finite, >= 0 and increasing, got {at!r}")
            ats.append(float(at))
        self.config = config
        self.phases: tuple[tuple[float, LinkConfig], ...] = tuple((a, c) for a, (_, c) in zip(ats, phases, strict=True))
        self._stages = [_Stage(config)] + [_Stage(c) for _, c in phases]
        # Equal traces must be one object: the trace byte position carries over a phase change
        # only when the phase keeps the same trace (compared by identity on the hot path).
        seen: list[Trace] = []
        for stage in self._stages:
            if stage.trace is not None:
                same = next((tr for tr in seen if tr == stage.trace), None)
                if same is None:
                    seen.append(stage.trace)
                else:
                    stage.trace = same
        self._ats = ats
        # Separate streams per random stage keep send and send_batch drawing in the same order.
        # A seed sequence gives the same two generators as a generator made from it would spawn
        # (Generator.spawn makes PCG64s from its seed sequence's children), without that parent.
        if isinstance(rng, np.random.Generator):
            self._loss_rng, self._jitter_rng = rng.spawn(2)
        else:
            # (a BitGenerator takes any ISeedSequence; numpy's stubs only name SeedSequence)
            loss_s, jitter_s = rng.spawn(2)
            self._loss_rng = np.random.Generator(np.random.PCG64(cast(Any, loss_s)))
            self._jitter_rng = np.random.Generator(np.random.PCG64(cast(Any, jitter_s)))
        # Loss draws are standard uniforms; so are jitter draws while every stage's distribution
        # is uniform (numpy's uniform(lo, hi) is lo + (hi - lo) * random()): then both are drawn
        # ahead for the scalar path. Other distributions draw from their generator directly.
        self._loss_u = _Uniforms(self._loss_rng)
        self._jitter_u = _Uniforms(self._jitter_rng) if all(
            st.dist == "uniform" or st.jitter == 0 for st in self._stages) else None
        self.counters = LinkCounters()
        self._last_t = 0.0
        self._stage_i = 0
        self._next_at = ats[0] if ats else math.inf
        self._ge_bad = False
        self._free_at = -math.inf  # when the bottleneck finishes the last accepted packet
        self._pos = 0  # trace mode: byte position after the last accepted packet
        self._pos_trace: Trace | None = None  # the trace `_pos` counts in (None: recompute)
        self._last_delivery = -math.inf
        # Accepted packets whose service starts after the latest arrival: (start time, wire bytes).
        self._pending: deque[tuple[float, int]] = deque()
        self._pending_bytes = 0
        self._sums = np.zeros(_FIRST_CHUNK + 1)  # (see _rate_fits)
        self._track_queue = any(s.qp is not None or s.qb is not None for s in self._stages)

    # -- public --------------------------------------------------------------------------------

    def config_at(self, t: float) -> LinkConfig:
        """The config in force for a packet sent at ``t``."""
        return self._stages[bisect_right(self._ats, t)].config

    def send(self, t: float, size: int) -> float | None:
        """Offer one packet of ``size`` bytes at time ``t`` (s); its delivery time, or None if dropped."""
        t = float(t)
        if not t >= self._last_t:  # also rejects NaN
            raise ValueError(
                f"send times must be >= 0 and non-decreasing: got {t!r} after {self._last_t!r} (time went backwards)"
            )
        if type(size) is not int:  # (bool is not int here: it goes through the full check)
            if isinstance(size, bool) or int(size) != size:
                raise ValueError(f"size must be a positive integer number of bytes, got {size!r}")
            size = int(size)
        if size <= 0:
            raise ValueError(f"size must be a positive integer number of bytes, got {size!r}")
        return self.send_trusted(t, size)

    def send_trusted(self, t: float, size: int) -> float | None:
        """:meth:`send` without its checks, for a caller that guarantees them: ``t`` a float not
        before the previous send, ``size`` a positive int (the simulator's event-driven packets,
        where the checks cost a third of the model)."""
        self._last_t = t
        while t >= self._next_at:
            self._stage_i += 1
            self._next_at = self._ats[self._stage_i] if self._stage_i < len(self._ats) else math.inf
        st = self._stages[self._stage_i]
        c = self.counters
        c.sent += 1
        c.bytes_sent += size
        if st.outage or (st.out_starts and st.in_outage(t)):
            c.dropped_outage += 1
            return None
        if st.ge is not None:
            if self._lost(st):
                c.dropped_loss += 1
                return None
        elif st.loss > 0:
            ahead = self._loss_u._ahead  # (_Uniforms.one inlined: this is the per-packet hot path)
            if (ahead.pop() if ahead else self._loss_u.one()) < st.loss:
                c.dropped_loss += 1
                return None
        wire = size + st.overhead
        if st.kind == _TRACE:
            dep = self._bottleneck(st, t, wire)
            if dep is None:
                c.dropped_queue += 1
                return None
        else:  # (_bottleneck's rate/unlimited case, inlined: this is the per-packet hot path)
            pend = self._pending
            track = self._track_queue
            if track:
                tie = t + _TIE
                while pend and pend[0][0] <= tie:
                    self._pending_bytes -= pend.popleft()[1]
                if (st.qp is not None and len(pend) >= st.qp) or (
                    st.qb is not None and self._pending_bytes + wire > st.qb
                ):
                    c.dropped_queue += 1
                    return None
            self._pos_trace = None
            free = self._free_at
            start = t if t > free else free
            dep = start + wire * st.sec_per_byte
            self._free_at = dep
            if track and start > t + _TIE:
                pend.append((start, wire))
                self._pending_bytes += wire
        delay = st.delay
        jitter = st.jitter
        if jitter > 0:
            uniforms = self._jitter_u
            if uniforms is not None and st.dist == "uniform":  # (_jitter_one's first case, inlined)
                ahead = uniforms._ahead
                lo = -jitter
                delay = max(0.0, delay + (lo + (jitter - lo) * (ahead.pop() if ahead else uniforms.one())))
            else:
                delay = max(0.0, delay + self._jitter_one(st))
        d = dep + delay
        last = self._last_delivery
        if d < last and not st.reorder:
            d = last
        if d > last:
            self._last_delivery = d
        c.delivered += 1
        c.bytes_delivered += size
        c.total_added_delay += d - t
        return d

    def send_batch(self, times: ArrayLike, sizes: ArrayLike) -> F64:
        """Offer many packets at once (times non-decreasing); delivery times, NaN where dropped."""
        t_all = np.ascontiguousarray(times, dtype=np.float64)
        raw = np.asarray(sizes)
        if t_all.ndim != 1 or raw.shape != t_all.shape:
            raise ValueError(f"times and sizes must be 1-D and the same length, got {t_all.shape}, {raw.shape}")
        n = len(t_all)
        if n == 0:
            return np.empty(0)
        if raw.dtype == np.int64:  # (the simulator's case: one check)
            w_all = raw
            if int(w_all[w_all.argmin()]) <= 0:  # (argmin and a look: no ufunc reduction to set up)
                raise ValueError("sizes must be positive integers")
        else:
            if raw.dtype == np.bool_ or not np.issubdtype(raw.dtype, np.number):
                raise ValueError("sizes must be integers")
            w_all = raw.astype(np.int64)
            if np.any(w_all != raw) or np.any(w_all <= 0):
                raise ValueError("sizes must be positive integers")
        # One comparison covers NaN (it compares false), order, and the previous send.
        if not (t_all[0] >= self._last_t and (n == 1 or bool((ok := t_all[1:] >= t_all[:-1])[ok.argmin()]))):
            raise ValueError("times must be >= 0, non-decreasing and not before the previous send")
        return self.send_sorted(t_all, w_all)

    def send_sorted(self, times: F64, sizes: I64) -> F64:
        """:meth:`send_batch` without its checks, for a caller that guarantees them: ``times`` a
        1-D float64 array, non-decreasing and not before the previous send, ``sizes`` positive
        int64 of the same length (the simulator's hot path, where the checks cost as much as the
        model)."""
        t_all, w_all = times, sizes
        n = len(t_all)
        if n == 0:
            return np.empty(0)
        self._last_t = float(t_all[-1])
        if not self._ats:  # no phases: one segment is the whole batch
            return self._segment(self._stages[0], t_all, w_all)
        out = _nans(n)
        bounds = [0, *np.searchsorted(t_all, self._ats, side="left").tolist(), n]
        for i, st in enumerate(self._stages):
            lo, hi = bounds[i], bounds[i + 1]
            if hi > lo:
                out[lo:hi] = self._segment(st, t_all[lo:hi], w_all[lo:hi])
        self._stage_i = bisect_right(self._ats, self._last_t)
        self._next_at = self._ats[self._stage_i] if self._stage_i < len(self._ats) else math.inf
        return out

    # -- stages, scalar ------------------------------------------------------------------------

    def _lost(self, st: _Stage) -> bool:
        ge = st.ge
        if ge is None:
            return st.loss > 0 and self._loss_u.one() < st.loss
        u_step = self._loss_u.one()
        u_loss = self._loss_u.one()
        bad = self._ge_bad
        # netem: the loss draw uses the state the packet found, then the chain steps.
        self._ge_bad = (u_step >= ge.r) if bad else (u_step < ge.p)
        return u_loss < (1.0 - ge.h if bad else 1.0 - ge.k)

    def _jitter_one(self, st: _Stage) -> float:
        if st.dist == "uniform":
            if self._jitter_u is not None:
                lo = -st.jitter
                return lo + (st.jitter - lo) * self._jitter_u.one()
            return float(self._jitter_rng.uniform(-st.jitter, st.jitter))
        if st.dist == "normal":
            return st.jitter * float(self._jitter_rng.standard_normal())
        return st.jitter * (float(self._jitter_rng.pareto(_PARETO_ALPHA)) - _PARETO_MEAN) / _PARETO_STD

    def _enter_trace(self, st: _Stage) -> None:
        # A different bottleneck came before: start this trace's byte count after `_free_at`.
        trace = st.trace
        if self._pos_trace is not trace:
            self._pos = 0 if self._free_at == -math.inf else st.first_opp_after(self._free_at) * MTU_BYTES
            self._pos_trace = trace

    def _bottleneck(self, st: _Stage, t: float, wire: int) -> float | None:
        pend = self._pending
        if self._track_queue:
            while pend and pend[0][0] <= t + _TIE:
                self._pending_bytes -= pend.popleft()[1]
            if (st.qp is not None and len(pend) >= st.qp) or (
                st.qb is not None and self._pending_bytes + wire > st.qb
            ):
                return None
        if st.kind == _TRACE:
            self._enter_trace(st)
            start_b = max(self._pos, st.first_opp_after(t) * MTU_BYTES)
            end_b = start_b + wire
            start = st.opp_time(start_b // MTU_BYTES)
            dep = st.opp_time((end_b - 1) // MTU_BYTES)
            self._pos = end_b
        else:
            self._pos_trace = None
            start = t if t > self._free_at else self._free_at
            dep = start + wire * st.sec_per_byte
        self._free_at = dep
        if self._track_queue and start > t + _TIE:
            pend.append((start, wire))
            self._pending_bytes += wire
        return dep

    # -- stages, vectorized --------------------------------------------------------------------

    def _segment(self, st: _Stage, t: F64, size: I64) -> F64:
        """All packets of one batch that fall in one phase (a new array, NaN where dropped).

        The hot path of the simulator: ufuncs and their reduce/accumulate are called directly
        (numpy's Python wrappers cost as much as the work on a few hundred packets), and every
        value is computed with the same operations in the same order as the scalar :meth:`send`
        documents (``.sum()`` is ``add.reduce``, ``cumsum`` is ``add.accumulate``).
        """
        c = self.counters
        n = len(t)
        c.sent += n
        offered = int(_add.reduce(size))
        c.bytes_sent += offered
        if st.outage:
            c.dropped_outage += n
            return _nans(n)
        # Survivors of each stage; `idx` maps them back to the segment (None: all of them, so
        # the common no-drop case costs no indexing at all).
        idx: I64 | None = None
        tt, ss = t, size
        if st.out_starts:
            up = ~st.in_outage_v(tt)
            kept = up.nonzero()[0]
            if dropped := n - len(kept):
                c.dropped_outage += dropped
                idx = kept
                tt, ss = tt.take(idx), ss.take(idx)
        m = len(tt)
        if m and (st.ge is not None or st.loss > 0):
            if st.ge is None:
                kept = self._loss_u.derived(m, st, st.kept_v).nonzero()[0]
            else:
                kept = (~self._lost_v(st, m)).nonzero()[0]
            if dropped := m - len(kept):
                c.dropped_loss += dropped
                idx = kept if idx is None else idx.take(kept)
                tt, ss = tt[kept], ss[kept]
                m -= dropped
        if not m:
            return _nans(n)
        w = ss + st.overhead if st.overhead else ss
        dep = self._rate_fits(st, tt, w) if st.kind == _RATE and m <= _FIRST_CHUNK else None
        refused = 0
        if dep is None:
            dep, refused = self._bottleneck_v(st, tt, w)
        if refused:
            c.dropped_queue += refused
            kept = (dep == dep).nonzero()[0]  # (NaN: refused)
            idx = kept if idx is None else idx.take(kept)
            tt, ss, dep = tt.take(kept), ss.take(kept), dep.take(kept)
            m -= refused
            if not m:
                return _nans(n)
        # (dep is a new array: the stages below work in place, with the same operations in the
        # same order as ``dep + max(0, delay + jitter)``, so the values are the same to the bit)
        if st.jitter > 0:
            jd = self._jitter_u.derived(m, st, st.uniform_delay_v) if self._jitter_u is not None else None
            if jd is not None:  # (the same operations, done once per block of draws)
                d = dep
                np.add(dep, jd, out=d)
            else:
                d = st.delay_v(self._jitter_v(st, m))
                np.add(dep, d, out=d)
        else:
            d = dep
            np.add(d, st.delay, out=d)
        if st.reorder:
            # (argmax: no ufunc reduction to set up)
            self._last_delivery = max(self._last_delivery, float(d[d.argmax()]))
        else:
            np.maximum.accumulate(d, out=d)
            last = self._last_delivery
            if d[0] < last:  # (d is non-decreasing now: else the maximum changes nothing)
                np.maximum(d, last, out=d)
            self._last_delivery = float(d[-1])  # (the last is the largest)
        c.delivered += m
        c.bytes_delivered += offered if idx is None else int(_add.reduce(ss))
        c.total_added_delay += float(_add.reduce(d - tt))
        if idx is None:
            return d
        out = _nans(n)
        out[idx] = d
        return out

    def _lost_v(self, st: _Stage, n: int) -> Bool:
        ge = st.ge
        if ge is None:
            lost: Bool = self._loss_u.many(n) < st.loss
            return lost
        u = self._loss_u.many(2 * n).reshape(n, 2)  # row-major: (step, loss) per packet, as the scalar path
        f_good = u[:, 0] < ge.p  # next state from good (True = bad)
        f_bad = u[:, 0] >= ge.r  # next state from bad
        const = f_good == f_bad
        flip = f_good & ~f_bad
        pos = np.arange(n)
        last_const = np.maximum.accumulate(np.where(const, pos, -1))
        lc = np.concatenate(([-1], last_const[:-1]))  # last constant map strictly before packet k
        flips = np.concatenate(([0], np.cumsum(flip)))
        parity = (flips[pos] - flips[lc + 1]) & 1
        base = np.where(lc >= 0, f_good[np.maximum(lc, 0)], self._ge_bad)
        state = base ^ parity.astype(np.bool_)
        self._ge_bad = bool(f_bad[-1] if state[-1] else f_good[-1])
        lost = u[:, 1] < np.where(state, 1.0 - ge.h, 1.0 - ge.k)
        return lost

    def _jitter_v(self, st: _Stage, n: int) -> F64:
        if st.dist == "uniform":
            if self._jitter_u is not None:
                return st.uniform_jitter_v(self._jitter_u.many(n))
            return self._jitter_rng.uniform(-st.jitter, st.jitter, n)
        if st.dist == "normal":
            return st.jitter * self._jitter_rng.standard_normal(n)
        return st.jitter * (self._jitter_rng.pareto(_PARETO_ALPHA, n) - _PARETO_MEAN) / _PARETO_STD

    def _chunk(self, st: _Stage, a: F64, w: I64) -> tuple[F64, F64, I64 | None]:
        """Service start and departure of every packet of a chunk, assuming all are admitted."""
        if st.kind == _TRACE:
            self._enter_trace(st)
            w_end = _add.accumulate(w)
            m = st.first_opp_after_v(a)
            m *= MTU_BYTES
            m -= w_end - w
            np.maximum.accumulate(m, out=m)
            np.maximum(m, self._pos, out=m)
            end_b = w_end + m
            start = st.opp_time_v((end_b - w) // MTU_BYTES)
            dep = st.opp_time_v((end_b - 1) // MTU_BYTES)
            return start, dep, end_b
        self._pos_trace = None
        # S_before and S_end are one running sum from 0 (the same additions as cumsum alone).
        s = np.empty(len(w) + 1)
        s[0] = 0.0
        _add.accumulate(w * st.sec_per_byte, out=s[1:])
        s_before, s_end = s[:-1], s[1:]
        lead = a - s_before  # max_{j<=i}(a_j - S_(j-1)), and not before the link is free
        np.maximum.accumulate(lead, out=lead)
        np.maximum(lead, self._free_at, out=lead)
        return s_before + lead, s_end + lead, None

    def _rate_fits(self, st: _Stage, a: F64, w: I64) -> F64 | None:
        """The departures of a batch through a rate bottleneck when it is one chunk and the queue
        refuses none of it (:meth:`_chunk`, the queue check and :meth:`_commit` in one body, the
        same operations: the usual case, with no calls to spare); None (nothing changed): go
        through :meth:`_bottleneck_v`."""
        # S_before and S_end are one running sum from 0 (the same additions as cumsum alone), in
        # the link's scratch buffer (its first element stays 0).
        m = len(w)
        s = self._sums
        if len(s) <= m:
            s = self._sums = np.zeros(max(2 * len(s), m + 1))
        s_end = s[1 : m + 1]
        _add.accumulate(w * st.sec_per_byte, out=s_end)
        s_before = s[:m]
        gap = a - s_before
        lead = np.maximum.accumulate(gap)  # max_{j<=i}(a_j - S_(j-1)), and not before the link is free
        free = self._free_at
        if a[0] < free:  # (lead is non-decreasing from lead[0] = a[0]: else the maximum changes nothing)
            np.maximum(lead, free, out=lead)
        # The service starts (s_before + lead) are needed only where the queue is not clear:
        # the bound takes the waits as lead - gap (start - a up to rounding, which its margin covers).
        track = self._track_queue
        if track and (st.qp is not None or st.qb is not None):
            waits = np.subtract(lead, gap, out=gap)
            if not self._fits(st, w, float(waits[waits.argmax()])):
                if self._first_overflow(st, a, w, s_before + lead) < m:
                    return None  # (the queue refuses a packet: the general path)
        dep: F64 = s_end + lead
        self._pos_trace = None
        self._free_at = float(dep[-1])
        if track:
            a_tie = float(a[-1]) + _TIE
            pend = self._pending
            while pend and pend[0][0] <= a_tie:
                self._pending_bytes -= pend.popleft()[1]
            # Packets not started by the last arrival: a few at the end (starts are sorted),
            # found from the end one by one (each start is s_before + lead, the same addition).
            i = m - 1
            start = float(s_before[i]) + float(lead[i])
            if start > a_tie:
                waiting = []
                while True:
                    wire = int(w[i])
                    waiting.append((start, wire))
                    self._pending_bytes += wire
                    i -= 1
                    if i < 0:
                        break
                    start = float(s_before[i]) + float(lead[i])
                    if start <= a_tie:
                        break
                waiting.reverse()
                pend.extend(waiting)
        return dep

    def _first_overflow(self, st: _Stage, a: F64, w: I64, start: F64) -> int:
        """Index of the first packet the queue would refuse (len(a) if none)."""
        n = len(a)
        k = _ARANGE[:n] if n <= len(_ARANGE) else np.arange(n)
        a_tie = a + _TIE
        # Earlier packets of this chunk still waiting at a_k (starts are sorted: FIFO).
        done = start.searchsorted(a_tie, side="right")
        np.minimum(done, k, out=done)
        # Packets admitted before this chunk still waiting at a_k.
        pend = self._pending
        p_gone: I64 | int = 0
        if pend:
            p_start = np.fromiter((p[0] for p in pend), dtype=np.float64, count=len(pend))
            p_gone = p_start.searchsorted(a_tie, side="right")
        bad: Bool | None = None
        if st.qp is not None:
            # waiting + (len(pend) - p_gone) >= qp, in integers
            waiting = k - done
            waiting -= p_gone
            bad = waiting >= st.qp - len(pend)
        if st.qb is not None:
            w_before = np.concatenate(([0], np.cumsum(w)))
            p_bytes = np.concatenate(([0], np.cumsum(np.fromiter((p[1] for p in pend), np.int64, len(pend)))))
            queued = (w_before[k] - w_before[done]) + (p_bytes[-1] - p_bytes[p_gone])
            over = queued + w > st.qb
            bad = over if bad is None else bad | over
        assert bad is not None
        first = int(bad.argmax())
        return first if bad[first] else n

    def _fits(self, st: _Stage, w: I64, longest: float) -> bool:
        """Whether the queue surely refuses nothing of a chunk through a rate bottleneck (False:
        find out packet by packet, :meth:`_first_overflow`), from its ``longest`` wait: a packet
        that waits ``q`` seconds for the bottleneck has fewer than ``q / s_min`` of the chunk's
        packets ahead of it (each of them is still waiting, and serialized before it, for at
        least the shortest service time ``s_min``; or, tighter, no more than the chunk's smallest
        packets that fit in ``q``) and at most ``q / sec_per_byte`` of their bytes; add
        everything pending from before. One packet and one MTU of margin cover the
        running sums' rounding."""
        pend = len(self._pending)
        if st.qp is not None and longest >= (st.qp - pend - 1) * (int(w[w.argmin()]) * st.sec_per_byte):
            # A few small packets (RTCP) among big ones make that bound loose: count instead how
            # many of the chunk's smallest packets fit in the wait (the packets ahead of it fit
            # in it), with one more packet of margin.
            fit = int(np.cumsum(np.sort(w)).searchsorted(longest / st.sec_per_byte, "right"))
            if fit + pend + 2 >= st.qp:
                return False
        return st.qb is None or longest / st.sec_per_byte + self._pending_bytes + int(w[w.argmax()]) \
            + MTU_BYTES < st.qb

    def _commit(self, a_last: float, start: F64, w: I64, dep: F64, end_b: I64 | None) -> None:
        self._free_at = float(dep[-1])
        if end_b is not None:
            self._pos = int(end_b[-1])
        if self._track_queue:
            pend = self._pending
            while pend and pend[0][0] <= a_last + _TIE:
                self._pending_bytes -= pend.popleft()[1]
            if start[-1] <= a_last + _TIE:  # (starts are sorted: the usual case, all started)
                return
            first = int(start.searchsorted(a_last + _TIE, side="right"))
            sizes = w[first:].tolist()
            pend.extend(zip(start[first:].tolist(), sizes, strict=True))
            self._pending_bytes += sum(sizes)

    def _bottleneck_v(self, st: _Stage, a: F64, w: I64) -> tuple[F64, int]:
        """Departure times (NaN: refused by the queue) and how many the queue refused."""
        n = len(a)
        limited = st.qp is not None or st.qb is not None
        dep_out: F64 | None = None
        refused = 0
        i, chunk = 0, _FIRST_CHUNK
        while i < n:
            j = min(n, i + chunk)
            ca, cw = a[i:j], w[i:j]
            start, dep, end_b = self._chunk(st, ca, cw)
            clear = st.kind == _RATE and self._fits(st, cw, float(np.maximum.reduce(start - ca)))
            v = self._first_overflow(st, ca, cw, start) if limited and not clear else len(ca)
            if v:
                self._commit(float(ca[v - 1]), start[:v], cw[:v], dep[:v], None if end_b is None else end_b[:v])
                if v == n:  # the whole batch in one chunk, nothing refused: the usual case
                    return dep, 0
                if dep_out is None:
                    dep_out = _nans(n)
                dep_out[i : i + v] = dep[:v]
            elif dep_out is None:
                dep_out = _nans(n)
            if v == len(ca):
                i, chunk = j, min(chunk * 2, _MAX_CHUNK)
                continue
            # The queue overflows at i + v: go packet by packet while the queue stays non-empty.
            k = i + v
            while k < n:
                tk = float(a[k])
                pend = self._pending
                while pend and pend[0][0] <= tk + _TIE:
                    self._pending_bytes -= pend.popleft()[1]
                if k > i + v and not pend:
                    break
                d = self._bottleneck(st, tk, int(w[k]))
                if d is None:
                    refused += 1
                else:
                    dep_out[k] = d
                k += 1
            i, chunk = k, _FIRST_CHUNK
        assert dep_out is not None
        return dep_out, refused
