"""The media pipeline, event-driven: the driver's mode until it can batch (see :mod:`._steady`).

Media crosses the links a few packets at a time, as Python records (``Rec``: a PACKET record's
fields; the steady state takes PACKET arrays over at the switch). Before any control packet
leaves, :meth:`Pipeline.sync` brings media up to ``now`` — publisher → uplink (stage 1) → TURN,
forwarding onto the downlink (stage 2) → subscriber (stage 3) — so every send on a link stays in
time order. Until the
subscriber has started every stream, the pipeline also runs at every media send and arrival
time (``fine``), so the moments the core sees (``MediaStarted``) are exact.

RTCP runs packet by packet on aiortc's timers, following the rules in :mod:`._rtcp`. The TURN
server forwards whatever one peer sends the other, RTP with its sequence numbers and RTCP alike
(so loss on either link shows at the subscriber, and every report crosses both links): the
publisher's SRs reach the subscriber, the subscriber's RRs, REMBs and PLIs reach the publisher.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from heapq import heappush
from operator import itemgetter
from typing import Any

import numpy as np
from numpy.typing import NDArray
from rtcprobe.core.config import MediaDemand
from rtcprobe.core.observations import InboundStats, OutboundStats, Role

from ._handshakes import Peer
from ._libwebrtc import AIORTC, EndpointModel
from ._media import (
    _SMALL,
    AUDIO,
    PACKET,
    REMB_INTERVAL,
    VIDEO,
    AudioSource,
    Packets,
    VideoSource,
    join,
)
from ._net import DOWN, UP, EventLoop, Path, Tag
from ._rtcp import ReportBlock, pli_due, report_delay
from ._streams import Queue, Streams, inbound
from ._wire import RTCP_PLI, RTCP_REMB, RTCP_RR, RTCP_SR

# The event-driven pipeline moves a packet or a few at a time, where numpy's per-call cost is most
# of the work: it keeps its packets as Python tuples, the fields of a PACKET record in order (what
# ``ndarray.tolist`` gives, exactly: float64 fields as floats, integers as ints), and hands them
# over as PACKET arrays at the switch. Every number is computed as before (integer sums in Python,
# float sums and the links' batches still numpy's), so the output is the same to the byte.
Rec = tuple[Any, ...]
_T, _SIZE, _PAYLOAD, _KIND, _SEQ, _TS, _FRAME, _KEY, _NPK, _SENT = range(10)
assert PACKET.names == ("t", "size", "payload", "kind", "seq", "ts", "frame", "key", "npk", "sent")
_t = itemgetter(_T)


def _gone(*_: object) -> None:
    """What a callback becomes after the run (nothing may call it then)."""
    raise AssertionError("called after the run")


def _array(recs: list[Rec]) -> NDArray[np.void]:
    # (np.array leaves PACKET's padding bytes as they were in memory; filling zeroed records
    # converts the tuples the same way and costs the same)
    a = np.zeros(len(recs), dtype=PACKET)
    a[...] = recs
    return a


# An empty PACKET array, shared: a source's packets are replaced, never written in place.
_NO_PACKETS = _array([])


class _Ahead:
    """A source's packets generated ``span`` seconds ahead (one numpy call for many) and handed
    out by send time as records. :meth:`invalidate` when the source's state changes (a new REMB
    target, a keyframe request). ``next_send`` is when its next packet leaves."""

    __slots__ = ("arr", "i", "next_send", "span", "src", "times")

    def __init__(self, source: AudioSource | VideoSource, span: float = 0.5) -> None:
        self.src = source
        self.span = span
        # Generated, arr[i:] not handed out yet. Records are made only of what is handed out:
        # most of what is generated ahead is taken back at the switch.
        self.arr = _NO_PACKETS
        self.times: list[float] = []  # their send times
        self.i = 0
        self.next_send = source.next_send

    def take(self, until: float) -> list[Rec]:
        """Every packet sent at or before ``until``."""
        if self.src.next_send <= until:
            new = self.src.generate(until + self.span).a
            if len(new):
                self.arr = join([self.arr[self.i:], new]) if self.i < len(self.times) else new
                self.times = self.times[self.i:] + new["t"].tolist()
                self.i = 0
        i, times = self.i, self.times
        k = bisect_right(times, until, i)
        self.i = k
        self.next_send = times[k] if k < len(times) else self.src.next_send
        out: list[Rec] = self.arr[i:k].tolist() if k > i else []
        return out

    def invalidate(self) -> None:
        if self.i < len(self.times):
            self.src.rewind(Packets(self.arr[self.i:]))
        self.times, self.i = [], 0
        self.arr = self.arr[:0]
        self.next_send = self.src.next_send


class _AudioAhead:
    """:class:`_Ahead` for an :class:`AudioSource` whose records are its generated packets
    (:meth:`AudioSource.records`): nothing is made ahead, so nothing is handed back at the switch
    (the source's sequence number is already the next unsent one) and no numpy call is made."""

    __slots__ = ("next_send", "src")

    def __init__(self, source: AudioSource) -> None:
        self.src = source
        self.next_send = source.next_send

    def take(self, until: float) -> list[Rec]:
        if self.next_send > until:
            return []
        out = self.src.records(until)
        self.next_send = self.src.next_send
        return out

    def invalidate(self) -> None:
        pass


class _Flight:
    """Packets on their way to one end as records, kept sorted by arrival time (``Queue``'s
    rules, one record at a time)."""

    __slots__ = ("min", "recs", "reorder")

    def __init__(self, reorder: bool) -> None:
        self.recs: list[Rec] = []
        self.min = math.inf  # earliest arrival still queued
        self.reorder = reorder  # the link may deliver out of order: sort on the way in

    def arrive(self, sent: list[Rec], arrival: list[float], resize: int = 0) -> None:
        """Queue what a link delivered of ``sent`` (``arrival``: NaN where it dropped a packet),
        ``resize`` bytes larger on this leg (TURN's reframing)."""
        if len(sent) == 1:  # (the usual case, one packet: what the general case does with a list of one)
            a = arrival[0]
            if a != a:
                return
            r = sent[0]
            rec = (a, r[1] + resize, r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9])
            q = self.recs
            if not q:
                self.recs = [rec]
                self.min = a
                return
            if self.reorder and a < q[-1][_T]:
                # where a stable sort of the queue with it appended puts it: after every equal time
                q.insert(bisect_right(q, a, key=_t), rec)
                self.min = q[0][_T]
            else:
                q.append(rec)
            return
        # (each record made once, field by field: cheaper than unpacking a slice)
        if resize:
            got = [(a, r[1] + resize, r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9])
                   for r, a in zip(sent, arrival, strict=True) if a == a]
        else:
            got = [(a, r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9])
                   for r, a in zip(sent, arrival, strict=True) if a == a]
        if not got:
            return
        reorder = self.reorder
        if reorder and len(got) > 1:
            got.sort(key=_t)  # (stable, as argsort(kind="stable"))
        q = self.recs  # (this queue's own list: extended in place)
        if q:
            late = reorder and got[0][_T] < q[-1][_T]
            q.extend(got)
            if late:
                q.sort(key=_t)
        else:
            self.recs = q = got
        self.min = q[0][_T]

    def pop_until(self, t: float, accept_at: float, sent_before: float = math.inf) -> list[Rec]:
        """``Queue.pop_until``: everything arrived by ``t``, minus what came before its end could
        decrypt it; of what arrived at exactly ``t``, only what was sent before ``sent_before``."""
        q = self.recs
        k = bisect_right(q, t, key=_t)
        if k and sent_before != math.inf and q[k - 1][_T] == t:
            for j in range(bisect_left(q, t, key=_t), k):
                if q[j][_SENT] >= sent_before:
                    k = j
                    break
        if not k:
            return []
        got, self.recs = q[:k], q[k:]
        self.min = q[k][_T] if k < len(q) else math.inf
        if got[0][_T] < accept_at:
            got = [r for r in got if r[_T] >= accept_at]
        return got

    def queue(self) -> Queue:
        """The same packets as a ``Queue`` (what the steady state takes over)."""
        return Queue.of_records(self.reorder, self.recs)


class Pipeline:
    """Publisher → uplink → TURN → downlink → subscriber, one event at a time.

    ``started(kind, t)`` is called when the subscriber can first play a stream (at ``t``,
    possibly ahead of ``now``); ``progress()`` after each RTCP timer and keyframe request, when
    the driver may switch to batches.
    """

    def __init__(self, loop: EventLoop, path: Path, streams: Streams, peers: dict[Role, Peer], *,
                 media: MediaDemand, media_rng: np.random.Generator, rtcp_rng: np.random.Generator,
                 reorders: dict[str, bool], started: Callable[[int, float], None],
                 progress: Callable[[], None], model: EndpointModel = AIORTC) -> None:
        self.loop = loop
        self.model = model
        self.path = path
        self.streams = streams
        self.peers = peers
        self._media = media
        self._media_rng = media_rng
        self._rtcp_rng = rtcp_rng
        self._started = started
        self._progress = progress
        self.sources: dict[int, _Ahead | _AudioAhead] = {}
        self.turn_q = _Flight(reorders[UP])  # arrived (or arriving) at TURN, not yet forwarded
        self.sub_q = _Flight(reorders[DOWN])  # arriving at the subscriber
        self.fine = False  # sync at every media event until media started
        self._fine_at = math.inf
        self.busy = False  # inside sync
        self.sub_last_rx = 0.0  # last media packet at the subscriber
        self.handed_over = False  # the steady state runs the media now
        self._resize: int | None = None  # TURN's reframing, subscriber's leg minus publisher's
        # The earliest next_send of the sources, kept up to date wherever one moves (take,
        # invalidate, a new source): syncs and fine ticks ask for it at every event.
        self._src_next = math.inf
        # What runs where an RTCP packet from one peer arrives at the other (by its tag).
        self._arrivals: dict[Tag, Callable[..., None]] = {
            Tag.SUB_GOT_SR: self._sub_sr, Tag.PUB_GOT_RR: self._pub_rr, Tag.PUB_GOT_REMB: self._pub_remb,
            Tag.PUB_GOT_PLI: self._pub_pli}

    @property
    def now(self) -> float:
        return self.loop.now

    def send(self, direction: str, size: int, kind: str, then: Callable[..., None] | None = None,
             *args: Any, tag: Tag = Tag.HANDSHAKE, up_sent: float = math.inf) -> None:
        """Put one control packet on a link now; ``then(*args)`` runs when it arrives.
        ``up_sent``: for a packet TURN forwards, when it went up (media that reached TURN at the
        same moment but left the publisher no earlier is forwarded after it, as TURN would)."""
        assert not self.handed_over, "in the steady state every packet is planned with its interval"
        if self.sources:  # (no media before the publisher is up: nothing to bring up to now)
            self.sync(1 if direction == UP else 2, up_sent)
        loop = self.loop
        delivered = self.path.send(direction, loop.now, size, kind)
        if delivered is not None and then is not None:  # (loop.push, inline: a link never delivers before now)
            heappush(loop.heap, (delivered, loop._order, then, args, tag))
            loop._order += 1

    def _relay(self, src: Role, size: int, arrival: Tag, *args: Any) -> None:
        """An RTCP packet from the ``src`` peer to the other, through TURN; where it arrives, the
        handler of ``arrival`` runs with ``args``."""
        dst = Role.SUBSCRIBER if src is Role.PUBLISHER else Role.PUBLISHER
        self.send(UP, size + self.peers[src].extra, "rtcp", self._forward, self.loop.now, size + self.peers[dst].extra,
                  "rtcp", arrival, *args, tag=Tag.AT_TURN)

    def _forward(self, up_sent: float, size: int, kind: str, arrival: Tag, *args: Any) -> None:
        """TURN forwards a packet from one peer to the other (``Tag.AT_TURN``'s callback)."""
        self.send(DOWN, size, kind, self._arrivals[arrival], *args, tag=arrival, up_sent=up_sent)

    def release(self) -> None:
        """After the run: let go of the driver's callbacks and of its own handlers (see
        ``SimDriver._release``)."""
        self._arrivals.clear()
        self._started = self._progress = _gone

    def hand_over(self) -> tuple[dict[int, AudioSource | VideoSource], Queue, Queue]:
        """Bring everything up to now and stop: the steady state takes the sources and the two
        queues (TURN's, the subscriber's), as they are, from here."""
        self.sync(3)
        self.handed_over = True
        self.fine = False
        for ahead in self.sources.values():
            ahead.invalidate()
        return ({kind: ahead.src for kind, ahead in self.sources.items()}, self.turn_q.queue(),
                self.sub_q.queue())

    # --- who starts when ---------------------------------------------------------------------------

    def sender_up(self, peer: Peer) -> None:
        """The publisher's DTLS is up: it starts sending media and sender reports."""
        self.sync(1)
        extra = peer.extra
        if self._media.audio:
            audio = self.model.audio(self.loop.now, extra)
            # (a source with its own generate: through numpy, as it makes them)
            self.sources[AUDIO] = _AudioAhead(audio) if type(audio).generate is AudioSource.generate else _Ahead(audio)
        if self._media.video is not None:
            self.sources[VIDEO] = _Ahead(self.model.video(self._media.video, self.loop.now, extra, self._media_rng,
                                                             self._media.audio))
        self._sources_moved()
        for kind in self.sources:
            self._rtcp_timer(Tag.PUB_SR, kind)
        self.fine = True
        self._fine_next()

    def receiver_up(self, peer: Peer) -> None:
        """The subscriber's DTLS is up: it accepts media and starts reporting."""
        self.sync(1)
        streams = self.streams
        streams.sub_accept_at = self.loop.now
        for kind in streams.kinds:
            self._rtcp_timer(Tag.SUB_RR, kind)
        if VIDEO in streams.kinds:
            self.loop.after(REMB_INTERVAL, self._sub_remb, tag=Tag.SUB_REMB_TIMER)

    def stream_stats(self) -> tuple[dict[int, OutboundStats], dict[int, InboundStats | None]]:
        """getStats' outbound (publisher) and inbound (subscriber) entries per stream, now."""
        self.sync()
        streams = self.streams
        out = {kind: streams.senders[kind].outbound(kind) for kind in streams.kinds}
        return out, {kind: inbound(streams.sub_stats[kind].snapshot(), kind) for kind in streams.kinds}

    def last_heard(self, peer: Peer) -> float:
        """When ``peer`` last received anything."""
        if peer.role is Role.SUBSCRIBER:
            self.sync(3)
            return max(peer.last_rx, self.sub_last_rx)
        return peer.last_rx

    # --- moving media --------------------------------------------------------------------------------

    def sync(self, stage: int = 3, up_sent: float = math.inf) -> None:
        """Move media up to ``now``, through ``stage``: a packet about to go up only needs
        stage 1, one about to go down stage 2; whatever reads the subscriber's state all three.
        (``up_sent``: see :meth:`send`.)"""
        if self.busy or self.handed_over:
            return
        self.busy = True
        try:
            self._sync(self.loop.now, 3 if self.fine else stage, up_sent)
        finally:
            self.busy = False
        if self.fine:
            self._fine_next()

    def _sync(self, t: float, stage: int, up_sent: float = math.inf) -> None:
        sources = self.sources
        if self._src_next <= t:
            senders = self.streams.senders
            parts = []
            for kind, la in sources.items():
                if la.next_send > t:  # (nothing due from this one: take would hand out nothing)
                    continue
                mine = la.take(t)
                if mine:
                    parts.append(mine)
                    sender = senders[kind]
                    sender.packets += len(mine)
                    sender.bytes += mine[0][_PAYLOAD] if len(mine) == 1 else sum([r[_PAYLOAD] for r in mine])
            if parts:
                batch = parts[0]
                if len(parts) > 1:  # in send order, stream order among equal times
                    batch = sorted([r for part in parts for r in part], key=_t)
                if len(batch) == 1:  # (the usual case: lists of one, without the comprehensions)
                    times, sizes = [batch[0][_T]], [batch[0][_SIZE]]
                else:
                    times, sizes = [r[_T] for r in batch], [r[_SIZE] for r in batch]
                self.turn_q.arrive(batch, self.path.send_few(UP, times, sizes))
            self._sources_moved()
        if stage >= 2 and self.turn_q.min <= t:
            self._turn_arrivals(t, up_sent)
        if stage >= 3 and self.sub_q.min <= t:
            self._subscriber_arrivals(t)

    def _per_kind(self, got: list[Rec]) -> list[tuple[int, list[Rec]]]:
        """``got`` split by stream, in stream order (only the non-empty parts)."""
        kinds = self.streams.kinds
        if len(kinds) == 1 or len(got) == 1:
            return [(kinds[0] if len(kinds) == 1 else got[0][_KIND], got)] if got else []
        parts = [(kind, [r for r in got if r[_KIND] == kind]) for kind in kinds]
        return [(kind, mine) for kind, mine in parts if mine]

    def _turn_arrivals(self, t: float, up_sent: float = math.inf) -> None:
        """TURN forwards the publisher's media to the subscriber as it arrives."""
        fwd = self.turn_q.pop_until(t, -math.inf, up_sent)
        if fwd:
            resize = self._resize
            if resize is None:  # (both peers exist once media flows; their framing never changes)
                resize = self._resize = self.peers[Role.SUBSCRIBER].extra - self.peers[Role.PUBLISHER].extra
            # ChannelData framing differs between the two legs: the records take the downlink's
            # size where they arrive (one new record each, as every arrival makes anyway).
            if len(fwd) == 1:  # (the usual case: lists of one, without the comprehensions)
                times, sizes = [fwd[0][_T]], [fwd[0][_SIZE] + resize]
            else:
                times = [r[_T] for r in fwd]
                sizes = [r[_SIZE] + resize for r in fwd] if resize else [r[_SIZE] for r in fwd]
            self.sub_q.arrive(fwd, self.path.send_few(DOWN, times, sizes), resize)

    def _subscriber_arrivals(self, t: float) -> None:
        streams = self.streams
        got = self.sub_q.pop_until(t, streams.sub_accept_at)
        if not got:
            return
        self.sub_last_rx = got[-1][_T]
        if len(got) == 1:  # (the usual case: the loop below for one packet, lists of one made directly)
            r = got[0]
            kind = r[_KIND]
            arrival, seq = [r[_T]], [r[_SEQ]]
            streams.sub_stats[kind]._add_few(arrival, seq, [r[_TS]], [r[_PAYLOAD]])
            if kind == VIDEO:
                streams.sub_est.add_few(arrival, [r[_SENT]], seq, [r[_SIZE]])
            if kind not in streams.playout.started:
                self._not_started_yet(kind, got)
            return
        for kind, mine in self._per_kind(got):
            arrival = [r[_T] for r in mine]
            seq = [r[_SEQ] for r in mine]
            if len(mine) <= _SMALL:  # (ReceiverStats.add's own choice for so few)
                streams.sub_stats[kind]._add_few(arrival, seq, [r[_TS] for r in mine], [r[_PAYLOAD] for r in mine])
            else:
                a = _array(mine)
                streams.sub_stats[kind].add(a["t"], a["seq"], a["ts"], a["payload"])
            if kind == VIDEO:
                streams.sub_est.add_few(arrival, [r[_SENT] for r in mine], seq, [r[_SIZE] for r in mine])
            if kind not in streams.playout.started:
                self._not_started_yet(kind, mine)

    def _not_started_yet(self, kind: int, got: list[Rec]) -> None:
        streams = self.streams
        keys = [(r[_FRAME], r[_NPK], r[_T]) for r in got if r[_KEY]] if kind == VIDEO else []
        if (t := streams.playout.arrived_few(kind, got[0][_T], keys)) is not None:
            if streams.all_started:
                self.fine = False
            self._started(kind, t)
            return
        # Video it cannot decode yet: ask the publisher for a keyframe now and then.
        if pli_due(self.loop.now, streams.last_pli, streams.sub_accept_at):
            streams.last_pli = self.loop.now
            self._relay(Role.SUBSCRIBER, RTCP_PLI, Tag.PUB_GOT_PLI)

    def _fine_next(self) -> None:
        """Until media started, the next moment anything in the pipeline happens is an event."""
        # (min of the three, by comparisons: this runs after every sync until media started)
        nxt = self._src_next
        if (q := self.turn_q.min) < nxt:
            nxt = q
        if (q := self.sub_q.min) < nxt:
            nxt = q
        loop = self.loop
        if loop.now < nxt < self._fine_at:
            self._fine_at = nxt
            heappush(loop.heap, (nxt, loop._order, self._fine_tick, (), Tag.FINE_TICK))  # (loop.push, inline)
            loop._order += 1

    def _sources_moved(self) -> None:
        nxt = math.inf
        for la in self.sources.values():
            if la.next_send < nxt:
                nxt = la.next_send
        self._src_next = nxt

    def _fine_tick(self) -> None:
        now = self.loop.now
        if now >= self._fine_at:
            self._fine_at = math.inf
        # (sync(), inline: a tick runs from the driver's loop, so never inside a sync, and never
        # after the hand-over, which drops the ticks)
        self.busy = True
        try:
            self._sync(now, 3)
        finally:
            self.busy = False
        if self.fine:
            self._fine_next()

    # --- what arrives at the publisher -------------------------------------------------------------

    def _pub_pli(self) -> None:
        self.sync(1)
        self.peers[Role.PUBLISHER].heard(self.loop.now)
        video = self.sources.get(VIDEO)
        if video is not None and isinstance(video.src, VideoSource):
            video.invalidate()
            video.src.force_key = True
            self._sources_moved()
        self._progress()

    def _pub_rr(self, kind: int, block: ReportBlock) -> None:
        self.peers[Role.PUBLISHER].heard(self.loop.now)
        sender = self.streams.senders[kind]
        sender.read_rr(kind, block, self.loop.now, sender.srs)

    def _pub_remb(self, bps: float) -> None:
        self.sync(1)
        self.peers[Role.PUBLISHER].heard(self.loop.now)
        self.streams.senders[VIDEO].remb = bps
        video = self.sources.get(VIDEO)
        if video is not None and isinstance(video.src, VideoSource):
            video.invalidate()
            video.src.set_target(bps)
            self._sources_moved()

    # --- RTCP ----------------------------------------------------------------------------------------

    def _rtcp_timer(self, report: Tag, kind: int) -> None:
        self.loop.after(report_delay(self._rtcp_rng), self._rtcp_fire, report, kind, tag=report)

    def _rtcp_fire(self, report: Tag, kind: int) -> None:
        if report is Tag.PUB_SR:
            self._pub_sr(kind)
        else:
            self._sub_rr(kind)
        self._rtcp_timer(report, kind)
        self._progress()

    def _pub_sr(self, kind: int) -> None:
        """The publisher's sender report, to the subscriber."""
        sender = self.streams.senders[kind]
        sr_id = self.loop.now
        sender.sent_sr(sr_id)
        self._relay(Role.PUBLISHER, RTCP_SR, Tag.SUB_GOT_SR, kind, sr_id)

    def _sub_sr(self, kind: int, sr_id: float) -> None:
        self.peers[Role.SUBSCRIBER].heard(self.loop.now)
        self.streams.sub_sr[kind] = (sr_id, self.loop.now)

    def _sub_rr(self, kind: int) -> None:
        """The subscriber's receiver report about the ``kind`` stream, to the publisher."""
        self.sync(3)
        block = self.streams.subscriber_rr(kind, self.streams.sub_stats[kind].snapshot(), self.loop.now)
        if block is not None:
            self._relay(Role.SUBSCRIBER, RTCP_RR, Tag.PUB_GOT_RR, kind, block)

    def _sub_remb(self) -> None:
        self.sync(3)
        estimate = self.streams.sub_est.update(self.loop.now)
        if estimate is not None:
            self._relay(Role.SUBSCRIBER, RTCP_REMB, Tag.PUB_GOT_REMB, estimate)
        self.loop.after(REMB_INTERVAL, self._sub_remb, tag=Tag.SUB_REMB_TIMER)
