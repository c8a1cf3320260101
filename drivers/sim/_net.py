"""The virtual clock, the two links, and the retransmission timers the real stack runs.

* :class:`EventLoop`: a heap of (time, order, callback, tag); ties run in scheduling order, so a
  run is a pure function of the scenario and the seed. Tags say what is pending.
* :class:`Path`: the client's access link to the TURN server, the uplink (client→TURN) and the
  downlink (TURN→client) ``Link``s. Control packets cross one at a time (``send``); media crosses
  in arrays (``send_media``). Every send on a link happens in time order, which the driver
  guarantees by bringing media up to ``now`` before any control packet leaves. An optional
  per-packet log records what crossed.
* :class:`Transaction`: aioice's STUN transaction timer (RTO 0.5 s, doubling, 6 retransmissions).
"""

from __future__ import annotations

import enum
import heapq
import math
from collections.abc import Callable, Iterator
from typing import Any, Final, NamedTuple

import attrs
import numpy as np
from numpy.typing import NDArray
from rtcprobe.netem import Link

UP: Final = "uplink"
DOWN: Final = "downlink"
# Below this many packets a Python loop over Link.send beats one Link.send_batch call.
BATCH_MIN: Final = 24

STUN_RTO: Final = 0.5  # aioice stun.RETRY_RTO
STUN_RETRANSMISSIONS: Final = 6  # aioice stun.RETRY_MAX


@attrs.frozen
class PacketRecord:
    """One packet offered to a simulated link (the ``--pcap`` export reads these).

    ``direction`` is "uplink" (client→TURN) or "downlink" (TURN→client); ``kind`` is one of "tcp", "stun",
    "dtls", "rtp", "rtcp"; ``size`` is the IP packet's size in bytes.
    """

    time_sent: float
    time_delivered: float | None  # None: the link dropped it
    direction: str
    kind: str
    size: int

    def __iter__(self) -> Iterator[Any]:  # unpacks like the (sent, delivered, dir, kind, size) tuple
        return iter((self.time_sent, self.time_delivered, self.direction, self.kind, self.size))


class Tag(enum.IntEnum):
    """What a scheduled callback is: the switch to interval batches asks the loop what is pending
    (:meth:`EventLoop.pending`) and takes over the entries it knows how to plan itself. (An
    IntEnum with int's own hash: Enum's is a Python function, and the steady state keys its
    timers by tag.)"""

    __hash__ = int.__hash__

    # The switch waits for these.
    HANDSHAKE = enum.auto()  # a signaling, ICE or DTLS step
    RETRY = enum.auto()  # a Transaction's next try or timeout (args: the transaction; moot once done)
    STEADY_TICK = enum.auto()  # the steady state's next interval
    CONSENT_OUTCOME = enum.auto()  # a consent check the steady state sent: answered or timed out
    # Harmless to the switch.
    OBSERVE = enum.auto()  # an observation for the core at a known time
    WATCH = enum.auto()  # the disconnected-state watch
    FINE_TICK = enum.auto()  # the event-driven media pipeline's next moment
    MAYBE_STEADY = enum.auto()  # another try at the switch
    # Taken over by the steady state (args: the callback's).
    CONSENT = enum.auto()  # a consent check is due (the peer that sends it)
    PUB_SR = enum.auto()  # RTCP timers (tag, kind): the publisher's SR,
    SUB_RR = enum.auto()  # the subscriber's RR
    SUB_REMB_TIMER = enum.auto()  # the subscriber's REMB timer (no args)
    # A packet from one peer to the other at the TURN server, to be forwarded onto the downlink
    # (when it went up, downlink size, packet kind, the arrival's tag, the arrival's args).
    AT_TURN = enum.auto()
    SUB_GOT_SR = enum.auto()  # arrivals at the subscriber: an SR (kind, SR id)
    PUB_GOT_RR = enum.auto()  # arrivals at the publisher: an RR (kind, block),
    PUB_GOT_REMB = enum.auto()  # a REMB (bps),
    PUB_GOT_PLI = enum.auto()  # a PLI ()


class Pending(NamedTuple):
    """One scheduled callback, as :meth:`EventLoop.pending` reports it."""

    time: float
    tag: Tag
    args: tuple[Any, ...]


# (time, order, callback, args, tag): (time, order) is unique, so entries never compare further.
_Entry = tuple[float, int, Callable[..., None], tuple[Any, ...], Tag]


class EventLoop:
    """A deterministic discrete-event queue on a virtual clock starting at 0.

    Every entry carries a :class:`Tag` saying what it is, so that the driver can ask what is
    pending (and take entries out) without knowing the callbacks.
    """

    def __init__(self) -> None:
        # The entries, a heapq heap. Always this one list (changed in place): the driver's loop
        # pops from it directly, once per event (see :meth:`run_due`).
        self.heap: list[_Entry] = []
        self._order = 0
        self.now = 0.0

    def at(self, t: float, fn: Callable[..., None], *args: Any, tag: Tag) -> None:
        now = self.now
        heapq.heappush(self.heap, (t if t > now else now, self._order, fn, args, tag))  # (max(t, now), no call)
        self._order += 1

    def after(self, delay: float, fn: Callable[..., None], *args: Any, tag: Tag) -> None:
        # (at's body, not a call to it: delays are never negative, so no max with now either)
        heapq.heappush(self.heap, (self.now + delay, self._order, fn, args, tag))
        self._order += 1

    def push(self, t: float, fn: Callable[..., None], args: tuple[Any, ...], tag: Tag) -> None:
        """:meth:`at` for a time known not to be in the past (a link's delivery time), with the
        arguments as a tuple already: no max with now, no repacking."""
        heapq.heappush(self.heap, (t, self._order, fn, args, tag))
        self._order += 1

    def peek(self) -> float | None:
        return self.heap[0][0] if self.heap else None

    def run_next(self) -> None:
        t, _, fn, args, _ = heapq.heappop(self.heap)
        self.now = t
        fn(*args)

    def run_due(self, limit: float | None) -> bool:
        """Run the next entry if there is one due at or before ``limit`` (None: any time);
        whether one ran. (The driver's loop does the same inline.)"""
        heap = self.heap
        if not heap or (limit is not None and heap[0][0] > limit):
            return False
        t, _, fn, args, _ = heapq.heappop(heap)
        self.now = t
        fn(*args)
        return True

    def pending(self) -> Iterator[Pending]:
        """Everything scheduled, in no particular order."""
        make = tuple.__new__  # (a NamedTuple's own __new__ is a Python function)
        for t, _, _, args, tag in self.heap:
            yield make(Pending, (t, tag, args))

    def remove(self, where: Callable[[Pending], bool]) -> list[Pending]:
        """Unschedule the entries ``where`` selects; returns them in firing order."""
        kept: list[_Entry] = []
        gone: list[tuple[float, int, Pending]] = []
        make = tuple.__new__
        for entry in self.heap:
            t, order, _, args, tag = entry
            p = make(Pending, (t, tag, args))
            if where(p):
                gone.append((t, order, p))
            else:
                kept.append(entry)
        if gone:
            heapq.heapify(kept)  # (time, order) keys are unique: the firing order is unchanged
            self.heap[:] = kept
            gone.sort()  # (by time, then order: unique, so the Pendings are never compared)
        return [p for _, _, p in gone]


class Path:
    """Both directions of the simulated path, with an optional packet log."""

    def __init__(self, uplink: Link, downlink: Link, *, log: bool = False) -> None:
        self.links = {UP: uplink, DOWN: downlink}
        self._log: list[tuple[Any, ...]] | None = [] if log else None
        self.packets = 0  # packets offered to the links
        self.batches = 0  # Link.send_batch calls

    def send(self, direction: str, t: float, size: int, kind: str) -> float | None:
        delivered = self.links[direction].send_trusted(t, size)
        self.packets += 1
        if self._log is not None:
            self._log.append((t, delivered, direction, kind, size))
        return delivered

    def send_media(self, direction: str, t: NDArray[np.float64], size: NDArray[np.int64],
                   kind: str | Callable[[], list[str]] = "rtp") -> NDArray[np.float64]:
        """Delivery times of a time-sorted batch (NaN where dropped). ``kind`` names the packets
        for the log: one name for all, or a function giving one name per packet (a mixed batch;
        only called when logging)."""
        link = self.links[direction]
        n = len(t)
        if n >= BATCH_MIN:
            out = link.send_sorted(t, size)  # (the driver sends in time order: send_batch's checks hold)
            self.batches += 1
        else:
            # One list and one array: cheaper than setting numpy elements one by one.
            send, nan = link.send_trusted, math.nan
            out = np.array([nan if (d := send(ti, si)) is None else d
                            for ti, si in zip(t.tolist(), size.tolist(), strict=True)], dtype=np.float64)
        self.packets += n
        if self._log is not None and n:
            self._log.append((t.copy(), out.copy(), direction, kind if isinstance(kind, str) else kind(),
                              size.copy()))
        return out

    def send_few(self, direction: str, t: list[float], size: list[int], kind: str = "rtp") -> list[float]:
        """:meth:`send_media` for Python lists (the event-driven pipeline's packets): the same
        links and log, delivery times as a list (NaN where dropped)."""
        n = len(t)
        if n >= BATCH_MIN:  # (the vectorized path, as send_media takes it)
            out: list[float] = self.send_media(direction, np.array(t), np.array(size, dtype=np.int64), kind).tolist()
            return out
        send, nan = self.links[direction].send_trusted, math.nan
        if n == 1:  # (the usual case: a packet at a time)
            out = [nan if (d := send(t[0], size[0])) is None else d]
        else:
            out = [nan if (d := send(ti, si)) is None else d for ti, si in zip(t, size, strict=True)]
        self.packets += n
        if self._log is not None:
            log = self._log
            for ti, di, si in zip(t, out, size, strict=True):
                log.append((ti, None if di != di else di, direction, kind, si))
        return out

    def records(self) -> list[PacketRecord]:
        """The log as records sorted by send time (empty unless the path was made with log=True)."""
        rows: list[PacketRecord] = []
        for t, d, direction, kind, size in self._log or ():
            if isinstance(t, np.ndarray):
                kinds = [kind] * len(t) if isinstance(kind, str) else kind
                rows.extend(
                    PacketRecord(ti, None if di != di else di, direction, ki, si)
                    for ti, di, ki, si in zip(t.tolist(), d.tolist(), kinds, size.tolist(), strict=True)
                )
            else:
                rows.append(PacketRecord(t, d, direction, kind, size))
        rows.sort(key=lambda r: r.time_sent)  # stable: same-time packets keep their order
        return rows


def _nothing(*_: object) -> None:
    pass


class Transaction:
    """A request retransmitted until answered: aioice's STUN timer by default, TCP's when asked.

    ``transmit(tx)`` puts one copy on the wire; whoever gets the answer back calls
    :meth:`succeed`. After the last try, ``on_timeout`` runs one more RTO later.
    """

    __slots__ = ("_on_success", "_on_timeout", "_transmit", "done", "loop", "rto", "tries", "tries_left")

    def __init__(self, loop: EventLoop, transmit: Callable[[Transaction], None],
                 on_success: Callable[[], None], on_timeout: Callable[[], None] | None = None, *,
                 rto: float = STUN_RTO, retransmissions: int = STUN_RETRANSMISSIONS) -> None:
        self.loop = loop
        self._transmit = transmit
        self._on_success = on_success
        self._on_timeout = on_timeout
        self.rto = rto
        self.tries_left = 1 + retransmissions
        self.done = False
        self.tries = 0

    def start(self) -> Transaction:
        self._retry()
        return self

    def _retry(self) -> None:
        if self.done:
            return
        if self.tries_left == 0:
            self.done = True
            if self._on_timeout is not None:
                self._on_timeout()
            self._let_go()
            return
        self.tries_left -= 1
        self.tries += 1
        self._transmit(self)
        loop = self.loop  # (loop.after's entry, pushed inline)
        heapq.heappush(loop.heap, (loop.now + self.rto, loop._order, Transaction._retry, (self,), Tag.RETRY))
        loop._order += 1
        self.rto *= 2

    def succeed(self) -> None:
        if not self.done:
            self.done = True
            self._on_success()
            self._let_go()

    def cancel(self) -> None:
        self.done = True
        self._let_go()

    def _let_go(self) -> None:
        """Done: nothing is sent or called any more. The callbacks (closures over their owner,
        which often keeps the transaction) go, so that no reference cycle outlives the run."""
        self._transmit = self._on_success = _nothing
        self._on_timeout = None
