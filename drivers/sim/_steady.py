"""The steady state: media and RTCP moved one interval at a time, one batch per link.

The driver switches here once nothing event-driven can put a packet on a link any more
(handshakes done, media started: only RTCP/REMB timers, packets in flight between the peers,
consent checks and harmless events pending; the libwebrtc endpoint model switches as soon as the
handshakes are done, so that its NACK covers media start too). :class:`SteadyState` takes over the pipeline's
sources, queues and statistics and the pending RTCP, then runs ahead of the event loop one
interval [T, T') at a time: it generates the interval's RTP (audio frames, packetized VP8 frames)
as arrays, merges them with the control packets whose send times are known in advance (the
publisher's SRs and the subscriber's RRs on their randomized timers, the subscriber's REMBs, its
keyframe requests, consent checks and answers), and sends the whole uplink (client→TURN) in ONE
``send_batch``; then everything TURN received before T' — the RTP and the other peer's RTCP and
STUN, departing at their uplink delivery times — in ONE ``send_batch`` on the downlink; then the
subscriber's arrivals. Receive statistics are cumulative per-packet arrays (:mod:`._timeline`)
queried "as of time t" for each RTCP report and stats sample, with the same rules (:mod:`._rtcp`)
as the event-driven mode; what an RR or a REMB says is worked out once the interval's arrivals
at the subscriber are in (it matters only where it arrives, later); the publisher reads the RTCP
that reached it when it needs to (a sample, a consent failure). Only what the core must see at
exact times goes back into the event loop (consent outcomes → ICE states).

Granularity (documented simplifications): an interval is 1 s (0.5 s until media started). A
packet one peer sends in answer to a downlink arrival would go up inside an interval whose uplink
is already on the link, so: REMBs and PLIs that reach the publisher inside the interval they were
sent in take effect at the next interval's start (their later ones at their exact arrival time);
the subscriber's keyframe request waits for the next interval (at most one per 500 ms); a consent
check's answer, when the check arrived inside an interval already sent, leaves at the next
interval's start, and its outcome counts that wait out (reported when the answer's way back has
been batched, so up to an interval late). The subscriber's REMB goes out every 500 ms once it has
received video (aiortc skips a window without video: here that packet carries no estimate and the
publisher keeps the previous one); its RR goes out once it has heard from the stream (known at T).
The last interval ends at the last stats sample.

This is the simulator's hot path: nearly all of a run's media goes through :meth:`SteadyState.tick`.
An interval costs a few hundred numpy calls of about a microsecond each, whatever the number of
packets (benchmarks/README.md): keep the calls few and every floating-point operation as it is,
since the golden reports hash each result to the bit.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Callable, Sequence
from functools import partial
from operator import itemgetter
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from rtcprobe.core.observations import InboundStats, OutboundStats, Role

from ._handshakes import Handshakes, Peer
from ._libwebrtc import NackRtx
from ._media import AUDIO, F64, I64, REMB_INTERVAL, VIDEO, AudioSource, Packets, RembEstimator, VideoSource, join, take
from ._net import DOWN, UP, EventLoop, Path, Pending, Tag
from ._rtcp import RTCP_MIN, RTCP_SPAN, SR_HISTORY, ReportBlock, next_pli_at
from ._streams import Queue, Streams, inbound
from ._timeline import AudioLog, SendLog, Timeline, extend_pair
from ._wire import CONSENT_TIMEOUT, RTCP_PLI, RTCP_REMB, RTCP_RR, RTCP_SR, STUN_CHECK, STUN_RESPONSE

INTERVAL: Final = 1.0  # once media started (two REMB periods)
STARTING_INTERVAL: Final = REMB_INTERVAL  # until then
NACK_RTT_GUESS: Final = 0.1  # the publisher's rtt before its first RR: libwebrtc's default (kDefaultRtt, 100 ms)

# What the steady state plans itself when it takes over from the event loop.
RTCP_TIMERS: Final = frozenset({Tag.PUB_SR, Tag.SUB_RR})
ARRIVALS: Final = frozenset({Tag.SUB_GOT_SR, Tag.PUB_GOT_RR, Tag.PUB_GOT_REMB, Tag.PUB_GOT_PLI})
TAKEN_OVER: Final = RTCP_TIMERS | ARRIVALS | {Tag.SUB_REMB_TIMER, Tag.AT_TURN, Tag.CONSENT}
_ARANGE = np.arange(1024)  # 0, 1, 2, ...: the send positions of a batch (one array for every batch)


class _Rr:
    """An RR on its way to the publisher; its block is worked out once the subscriber's arrivals
    up to its send time are in."""

    __slots__ = ("block", "kind")

    def __init__(self, kind: int, block: ReportBlock | None = None) -> None:
        self.kind = kind
        self.block = block


class _Remb:
    """A REMB on its way to the publisher (bps None: no estimate, or not worked out yet)."""

    __slots__ = ("bps",)

    def __init__(self, bps: float | None = None) -> None:
        self.bps = bps


class _ConsentCheck:
    __slots__ = ("answered", "deadline", "decided", "in_flight", "peer", "sent_at", "shift")

    def __init__(self, sent_at: float, peer: Peer) -> None:
        self.sent_at = sent_at
        self.deadline = sent_at + CONSENT_TIMEOUT
        self.peer = peer  # who checks
        self.decided = False
        self.answered = False  # its answer came back in time (reported by its own event)
        self.in_flight = True  # its check or answer is on its way in a batch still to be planned
        self.shift = 0.0  # how long its answer waited for the next interval

    def passes(self, t: float) -> None:
        """A leg of it arrived at ``t``: once that is past the deadline, it cannot be answered in time."""
        if t - self.shift >= self.deadline:
            self.in_flight = False


# What happens where a control packet arrives: ``handler(arg, arrival time)`` (a method and its
# argument, kept apart: cheaper than a partial per packet).
_Handler = Callable[[Any, float], None]
# One control packet on its way up to TURN (planned by the interval that sends it): send time,
# size on the uplink, name in the packet log, handler and its argument, the consent check it
# carries (lost with it), size on the downlink.
_Up = tuple[float, int, str, _Handler, Any, _ConsentCheck | None, int]
# The same at TURN, to go down: (arrival at TURN, _, downlink size, name, handler, its argument,
# the check, when it went up).
_AtTurn = tuple[float, int, int, str, _Handler, Any, _ConsentCheck | None, float]


def _kinds(n_media: int, control: Sequence[_Up | _AtTurn], name: int, order: I64) -> list[str]:
    """The packet log's names of a batch, in send order (``name``: where the control packets' is)."""
    every = ["rtp"] * n_media + [x[name] for x in control]
    return [every[i] for i in order.tolist()]


def _arrived(control: list[_AtTurn], arrival: list[float]) -> None:
    """Run each delivered control packet's handler with its arrival time, in send order."""
    for a, (_, _, _, _, then, arg, check, _) in zip(arrival, control, strict=True):
        if a == a:  # (NaN: dropped)
            then(arg, a)
        elif check is not None:
            check.in_flight = False


# Inboxes: heaps of (arrival, order, ...) — order breaks ties in the order things were sent.
_PubIn = tuple[float, int, _Rr | _Remb | None]  # RR, REMB or PLI (None) at the publisher
_SrInbox = tuple[float, int, int, float]  # (arrival, _, kind, SR id) at the subscriber
_Answer = tuple[float, int, _ConsentCheck]  # a consent check's answer, due at the other peer


class SteadyState:
    """Runs the media from the switch on. Built by the driver right after
    :meth:`~._pipeline.Pipeline.hand_over`; ``taken`` are the event-loop entries it plans itself
    from now on (:data:`TAKEN_OVER`). ``end_hint()``: when the last stats sample falls, once known."""

    def __init__(self, loop: EventLoop, path: Path, streams: Streams, handshakes: Handshakes, *,
                 sources: dict[int, AudioSource | VideoSource], turn_q: Queue, sub_q: Queue, sub_last_rx: float,
                 taken: Sequence[Pending], rtcp_rng: np.random.Generator, audio_horizon: float,
                 end_hint: Callable[[], float], started: Callable[[int, float], None],
                 nack: NackRtx | None = None) -> None:
        self.nack = nack  # the libwebrtc model's retransmissions (None: aiortc has none)
        self.loop = loop
        self.path = path
        self.streams = streams
        self.handshakes = handshakes
        self.pcs = handshakes.pcs
        self._pub, self._sub = self.pcs[Role.PUBLISHER], self.pcs[Role.SUBSCRIBER]
        self._rtcp_rng = rtcp_rng
        self._rtcp_u: list[float] = []  # its draws, taken ahead (the next one last)
        self._audio_horizon = audio_horizon
        self._end_hint = end_hint
        self._started = started
        self._sub_last_rx = sub_last_rx
        kinds = streams.kinds
        self.src = sources
        audio = sources.get(AUDIO)
        self.send_log: dict[int, SendLog | AudioLog] = {
            k: AudioLog(audio, streams.senders[k].packets, streams.senders[k].bytes)
            if k == AUDIO and isinstance(audio, AudioSource)
            else SendLog(streams.senders[k].packets, streams.senders[k].bytes) for k in kinds}
        # Audio never reacts to anything: generate the rest of the run at once, hand it out by time.
        self._audio_until = self.now + audio_horizon + 1.0
        self._audio_first = 0 if audio is None else audio.seq  # the number of the plan's first packet
        self._audio = None if audio is None else audio.generate(self._audio_until)
        self._audio_at = 0
        # Packets on their way to TURN and to the subscriber: both streams in one queue, in
        # arrival order (as the event pipeline left them), split by stream where the statistics are kept.
        self.turn_q = turn_q
        self.sub_q = sub_q
        self._multi = len(kinds) > 1
        self._video = VIDEO in kinds
        # (the REMB estimator works from the timeline's sums: its batch_arrived does nothing)
        self._per_packet_est = self._video and type(streams.sub_est).batch_arrived is not RembEstimator.batch_arrived
        self.sub_tl = {k: Timeline(streams.sub_stats[k], streams.sub_est if k == VIDEO else None,
                                   own_timestamps=k == AUDIO) for k in kinds}
        self.sr_times = {k: list(s.srs) for k, s in streams.senders.items()}
        # The RTCP timers' next fire times by stream: the publisher's SRs, the subscriber's RRs.
        self._sr_next = dict.fromkeys(kinds, math.inf)
        self._rr_next = dict.fromkeys(kinds, math.inf)
        self.sub_remb_next = math.inf
        self.next_tick = math.inf
        self._seq = 0  # tie-breaker in the inboxes
        self.pub_in: list[_PubIn] = []  # RTCP the publisher has coming
        self.sub_sr_in: list[_SrInbox] = []  # SRs the subscriber has coming (read when its RRs are worked out)
        self.turn_in: list[_AtTurn] = []  # packets between the peers, at TURN, to go down
        self.answers: list[_Answer] = []  # consent answers to go up
        # REMBs and PLIs (None) that reached the publisher and that its encoder has yet to follow
        self.fb_at: list[tuple[float, int, _Remb | None]] = []
        self._undecodable = False  # the subscriber got video it cannot decode (it wants a keyframe)
        self._by_kind: NDArray[np.void] = Packets.empty().a  # the latest split's records, audio first
        for t, tag, a in taken:
            if tag in RTCP_TIMERS:
                (self._sr_next if tag is Tag.PUB_SR else self._rr_next)[a[1]] = t
            elif tag is Tag.SUB_REMB_TIMER:
                self.sub_remb_next = t
            elif tag is Tag.AT_TURN:
                up_sent, size, kind, arrival, *args = a
                self._to_turn(size, kind, *self._arrival(arrival, tuple(args)), None, up_sent, t)
            elif tag in ARRIVALS:
                then, arg = self._arrival(tag, a)
                then(arg, t)
            elif tag is Tag.CONSENT:
                a[0].consent_at = t

    def release(self) -> None:
        """The run is over: drop what refers back to this object (the packets TURN still had to
        forward carry its bound methods), so that reference counting frees it without the cycle
        collector. (The event loop's pending entries are the driver's to drop.)"""
        self.turn_in.clear()

    @property
    def now(self) -> float:
        return self.loop.now

    def _arrival(self, tag: Tag, args: tuple[Any, ...]) -> tuple[_Handler, Any]:
        """What an event-loop arrival of ``tag`` does: a handler and its argument."""
        if tag is Tag.SUB_GOT_SR:
            return self._sr_at_sub, args
        if tag is Tag.PUB_GOT_RR:
            return self._at_pub, _Rr(*args)
        if tag is Tag.PUB_GOT_REMB:
            return self._at_pub, _Remb(*args)
        assert tag is Tag.PUB_GOT_PLI
        return self._at_pub, None

    # --- what the client knows ---------------------------------------------------------------------

    def catch_up(self) -> None:
        """The publisher reads the RTCP that reached it by now (RR: rtt, loss, jitter; REMB)."""
        pub_in = self.pub_in
        now = self.loop.now
        if not pub_in or pub_in[0][0] > now:
            return
        pub = self._pub
        senders = self.streams.senders
        last = pub.last_rx  # (Peer.heard inline: the latest of its arrivals)
        while pub_in and pub_in[0][0] <= now:
            a, _, msg = heapq.heappop(pub_in)
            if a > last:
                last = a
            if isinstance(msg, _Rr):
                block = msg.block
                if block is not None:
                    kind = msg.kind
                    sent = self.sr_times[kind]
                    i = bisect.bisect_right(sent, a)  # the SRs sent by then, the last SR_HISTORY of them
                    senders[kind].read_rr(kind, block, a, sent[i - SR_HISTORY if i > SR_HISTORY else 0 : i])
            elif msg is not None and msg.bps is not None:
                senders[VIDEO].remb = msg.bps
        pub.last_rx = last

    def last_heard(self, peer: Peer) -> float:
        """When ``peer`` last received anything."""
        self.catch_up()
        if peer.role is Role.SUBSCRIBER:
            last = [tl.last_arrival(self.now) for tl in self.sub_tl.values()]
            return max([peer.last_rx, self._sub_last_rx] + [t for t in last if t is not None])
        return peer.last_rx

    def stream_stats(self) -> tuple[dict[int, OutboundStats], dict[int, InboundStats | None]]:
        """getStats' outbound (publisher) and inbound (subscriber) entries per stream, now."""
        self.catch_up()
        now = self.loop.now
        senders, logs, tls = self.streams.senders, self.send_log, self.sub_tl
        out: dict[int, OutboundStats] = {}
        inb: dict[int, InboundStats | None] = {}
        for kind in self.streams.kinds:
            s = senders[kind]
            s.packets, s.bytes = logs[kind].at(now)
            out[kind] = s.outbound(kind)
            inb[kind] = inbound(tls[kind].at(now), kind)
        return out, inb

    # --- inboxes ---------------------------------------------------------------------------------------

    # (each a _Handler: its argument, then the arrival time)

    def _at_pub(self, msg: _Rr | _Remb | None, t: float) -> None:
        """An RR, a REMB or a PLI (None) reached the publisher at ``t``."""
        self._seq += 1
        heapq.heappush(self.pub_in, (t, self._seq, msg))
        if not isinstance(msg, _Rr):  # the encoder follows REMBs and PLIs
            bisect.insort(self.fb_at, (t, self._seq, msg))

    def _sr_at_sub(self, sr: tuple[int, float], t: float) -> None:
        """An SR (stream, SR id) reached the subscriber at ``t``."""
        self._seq += 1
        heapq.heappush(self.sub_sr_in, (t, self._seq, *sr))

    def _to_turn(self, size: int, kind: str, then: _Handler, arg: Any, check: _ConsentCheck | None,
                 up_sent: float, t: float) -> None:
        """A packet from one peer to the other (sent up at ``up_sent``) reached TURN at ``t``: it
        goes down as ``size`` bytes."""
        if check is not None:
            check.passes(t)
        self._seq += 1
        heapq.heappush(self.turn_in, (t, self._seq, size, kind, then, arg, check, up_sent))

    @staticmethod
    def _via_turn(t: float, size: int, src: Peer, dst: Peer, kind: str, then: _Handler, arg: Any,
                  check: _ConsentCheck | None = None) -> _Up:
        """A packet ``src`` sends ``dst`` at ``t``: ``size`` bytes plus each leg's framing, up to
        TURN, then down (planned with the interval TURN gets it in); ``then(arg, t)`` runs where it
        arrives."""
        return (t, size + src.extra, kind, then, arg, check, size + dst.extra)

    def _at_turn(self, control: list[_Up], arrival: list[float]) -> None:
        """The uplink's control packets reached TURN at ``arrival`` (NaN: lost), in the order of
        ``control``: each joins what TURN forwards (:meth:`_to_turn`, inline)."""
        turn_in = self.turn_in
        seq = self._seq
        for a, (t, _, kind, then, arg, check, size) in zip(arrival, control, strict=True):
            if a == a:
                if check is not None:
                    check.passes(a)
                seq += 1
                heapq.heappush(turn_in, (a, seq, size, kind, then, arg, check, t))
            elif check is not None:
                check.in_flight = False
        self._seq = seq

    def _check_arrived(self, check: _ConsentCheck, t: float) -> None:
        """A consent check reached the other peer, which answers at once (with the next interval)."""
        check.passes(t)
        self._seq += 1
        heapq.heappush(self.answers, (t, self._seq, check))

    def _answer_arrived(self, check: _ConsentCheck, t: float) -> None:
        check.in_flight = False
        t -= check.shift  # as if it had left on time
        if t < check.deadline:
            check.answered = True  # (a timeout already due at this moment must not fail it first)
            self.loop.at(t, self._consent_answered, check, tag=Tag.CONSENT_OUTCOME)

    def _fires(self, timers: dict[int, float], kind: int, until: float) -> list[float]:
        """The ``kind`` stream's RTCP timer's fire times before ``until`` (aiortc: every 0.5-1.5 s;
        the caller checks that it fires at all, the usual answer for one of the four timers)."""
        t = timers[kind]
        out: list[float] = []
        while t < until:
            out.append(t)
            # report_delay's draw, but added term by term: ``now + delay`` in the event loop rounds
            # differently (the steady state's own rounding, fixed by the golden reports).
            u = self._rtcp_u
            if not u:  # (drawn ahead: the same numbers in the same order, one call for many)
                u.extend(reversed(self._rtcp_rng.random(64).tolist()))
            t = t + RTCP_MIN + RTCP_SPAN * u.pop()
        timers[kind] = t
        return out

    # --- one interval --------------------------------------------------------------------------------

    def tick(self) -> None:
        """Plan and run one interval [now, end): the uplink in one batch, TURN's forwarding on the
        downlink in one batch, the subscriber. Everything sent before ``now`` is already on the links."""
        streams = self.streams
        start = self.loop.now
        pub, sub = self._pub, self._sub
        end = start + (INTERVAL if streams.all_started else STARTING_INTERVAL)
        hint = self._end_hint()
        if start < hint < end:
            end = hint
        self.next_tick = end
        until = math.nextafter(end, -math.inf)
        rrs, rembs = self._uplink(start, end, until, pub, sub)
        self._downlink(end, until, pub, sub)
        # The subscriber: its arrivals of the interval, then what its RRs and REMBs said.
        started = streams.playout.started
        got = self.sub_q.pop_until(until, streams.sub_accept_at)
        if self._per_packet_est:
            streams.sub_est.batch_arrived(got.a, streams.senders[VIDEO].rtt)
        split = self._split(got)
        counted = [mine if kind != VIDEO or self.nack is None else self.nack.originals(mine) for kind, mine in split]
        # Both streams' timelines in shared array operations when they can (the records sorted
        # by stream; the video without its retransmissions joined back on when it had any: one
        # copy, cheaper than extending each stream on its own), else one by one.
        if not (len(split) == 2 and len(counted[1])
                and extend_pair(self.sub_tl[AUDIO], self.sub_tl[VIDEO],
                                self._by_kind if counted[1] is split[1][1] else join([split[0][1], counted[1]]),
                                len(split[0][1]))):
            for (kind, _), c in zip(split, counted, strict=True):
                self.sub_tl[kind].extend(c["t"], c["seq"], c["ts"], c["payload"], c["sent"], c["size"])
        for kind, mine in split:
            if kind == VIDEO:
                rtt = streams.senders[VIDEO].rtt
                if self.nack is not None:
                    self.nack.arrived(mine["seq"], mine["t"], NACK_RTT_GUESS if rtt is None else rtt)
                    if self.nack.unrecoverable:  # a frame lost for good: the subscriber asks for a keyframe
                        self.nack.unrecoverable = False
                        self._undecodable = True
            if kind not in started:
                self._not_started_yet(kind, Packets(mine))
        if rrs:
            if len(rrs) > 1:
                rrs.sort(key=itemgetter(0))
            sr_in = self.sub_sr_in
            for t, rr in rrs:
                while sr_in and sr_in[0][0] <= t:
                    a, _, kind, sr_id = heapq.heappop(sr_in)
                    streams.sub_sr[kind] = (sr_id, a)
                rr.block = streams.subscriber_rr(rr.kind, self.sub_tl[rr.kind].at(t), t)
        for t, remb in rembs:
            remb.bps = self.sub_tl[VIDEO].remb(t)
        self.loop.at(end, self.tick, tag=Tag.STEADY_TICK)

    def _split(self, got: Packets) -> list[tuple[int, NDArray[np.void]]]:
        """An end's arrivals by stream, in stream order (only the non-empty parts)."""
        a = got.a
        if not len(a):
            return []
        if not self._multi:
            return [(self.streams.kinds[0], a)]
        kind = a["kind"]
        n_audio = len(a) - int(np.count_nonzero(kind))  # (AUDIO is 0, VIDEO 1)
        if n_audio == len(a):
            return [(AUDIO, a)]
        if not n_audio:
            return [(VIDEO, a)]
        # A stable sort by stream keeps each stream's order: one copy, two views.
        self._by_kind = a = take(a, kind.argsort(kind="stable"))
        return [(AUDIO, a[:n_audio]), (VIDEO, a[n_audio:])]

    def _not_started_yet(self, kind: int, got: Packets) -> None:
        """Media start from the subscriber's arrivals (its PLI waits for the next interval: see
        _uplink)."""
        if (t := self.streams.playout.arrived(kind, got)) is not None:
            self._started(kind, t)
            if kind == VIDEO:
                self._undecodable = False
        elif kind == VIDEO:
            self._undecodable = True

    def _uplink(self, start: float, end: float, until: float, pub: Peer, sub: Peer
                ) -> tuple[list[tuple[float, _Rr]], list[tuple[float, _Remb]]]:
        """The interval's uplink; returns the RRs and REMBs sent in it (worked out at its end)."""
        streams = self.streams
        media: list[tuple[int, NDArray[np.void]]] = []
        if self._audio is not None:
            if until > self._audio_until:  # (a run longer than planned for: plan more)
                self._audio_until = until + self._audio_horizon
                rest = self._audio.take(slice(self._audio_at, None))
                self._audio = Packets.concat([rest, self.src[AUDIO].generate(self._audio_until)])
                self._audio_first += self._audio_at
                self._audio_at = 0
            i = self._audio_at
            log = self.send_log[AUDIO]
            assert isinstance(log, AudioLog)
            # (the source's own count of what leaves by then: no search through the plan's times)
            self._audio_at = j = min(len(self._audio), log.source.sent_from(self._audio_first, until))
            log.next = self._audio_first + j
            media.append((AUDIO, self._audio.a[i:j]))
        vs = self.src.get(VIDEO)
        video: NDArray[np.void] | None = None
        rtx: NDArray[np.void] | None = None  # retransmissions (the libwebrtc model's), sent in between
        if isinstance(vs, VideoSource):
            changes: list[tuple[float | None, float | None]] = []  # REMBs (bps) and PLIs (None) on the way
            fb_at = self.fb_at
            while fb_at and fb_at[0][0] < end:
                at, _, msg = fb_at.pop(0)
                if msg is None or msg.bps is not None:
                    # (frames sent up to the arrival are the old encoder's)
                    changes.append((at if at > start else None, None if msg is None else msg.bps))
            video = vs.generate(until, changes).a
            if self.nack is not None:
                rtx = self._with_rtx(self.nack, video, start, until)
            media.append((VIDEO, video))
            if rtx is not None:
                media.append((VIDEO, rtx))
        control: list[_Up] = []
        via = self._via_turn
        rrs: list[tuple[float, _Rr]] = []
        rembs: list[tuple[float, _Remb]] = []
        sr_next, rr_next = self._sr_next, self._rr_next
        # (the RTCP sizes on each leg, as _via_turn works them out: its tuples made inline)
        sr_up, sr_down = RTCP_SR + pub.extra, RTCP_SR + sub.extra
        rr_up, rr_down = RTCP_RR + sub.extra, RTCP_RR + pub.extra
        at_pub = self._at_pub
        for kind in streams.kinds:
            if sr_next[kind] < end:
                for t in self._fires(sr_next, kind, end):
                    control.append((t, sr_up, "rtcp", self._sr_at_sub, (kind, t), None, sr_down))
                    self.sr_times[kind].append(t)
            if rr_next[kind] >= end:
                continue
            for t in self._fires(rr_next, kind, end):
                if streams.sub_stats[kind].base_seq is not None:  # (as of the interval's start)
                    rr = _Rr(kind)
                    rrs.append((t, rr))
                    control.append((t, rr_up, "rtcp", at_pub, rr, None, rr_down))
        if self._video:
            while self.sub_remb_next < end:
                # Sent every 500 ms once video arrived (aiortc would skip a window without video:
                # here the packet carries no estimate and the publisher keeps the previous one).
                if streams.sub_est.first_arrival is not None:
                    t, remb = self.sub_remb_next, _Remb()
                    rembs.append((t, remb))
                    control.append((t, RTCP_REMB + sub.extra, "rtcp", at_pub, remb, None, RTCP_REMB + pub.extra))
                self.sub_remb_next += REMB_INTERVAL
            if self._undecodable and (self.nack is not None or VIDEO not in streams.playout.started):
                # The subscriber's keyframe request: as soon as the interval lets it (at most
                # one per 500 ms), rather than at the very arrival that found no keyframe; after
                # media start only with NACK (a frame it could not recover).
                t = next_pli_at(start, streams.last_pli, streams.sub_accept_at)
                if t < end:
                    streams.last_pli = t
                    self._undecodable = False
                    control.append(via(t, RTCP_PLI, sub, pub, "rtcp", self._at_pub, None))
        for peer, other in ((pub, sub), (sub, pub)):
            if not peer.ice_failed and peer.consent_at < end:
                check = _ConsentCheck(peer.consent_at, peer)
                control.append(via(check.sent_at, STUN_CHECK, peer, other, "stun", self._check_arrived, check, check))
                self.loop.at(check.deadline, self._consent_timeout, check, tag=Tag.CONSENT_OUTCOME)
                peer.consent_at = math.inf
        while self.answers and self.answers[0][0] < end:
            d, _, check = heapq.heappop(self.answers)
            t = max(d, start)
            check.shift = t - d
            checker = check.peer
            answerer = sub if checker is pub else pub
            control.append(via(t, STUN_RESPONSE, answerer, checker, "stun", self._answer_arrived, check, check))
        if video is not None:
            video_log = self.send_log[VIDEO]
            assert isinstance(video_log, SendLog)
            video_log.extend(video["t"], video["payload"], None if rtx is None else (rtx["t"], rtx["payload"]))
        parts_ = [mine for _, mine in media if len(mine)]
        joined = parts_[0] if len(parts_) == 1 else join(parts_) if parts_ else Packets.empty().a
        # On a tie the publisher's streams go in stream order, then control: a stable sort.
        t_all, size_all = self._merged(joined, [x[0] for x in control], [x[1] for x in control])
        arrival = self._batch(UP, t_all.argsort(kind="stable"), t_all, size_all, joined, control, 2, self.turn_q)
        self._at_turn(control, arrival)
        return rrs, rembs

    @staticmethod
    def _with_rtx(nack: NackRtx, video: NDArray[np.void], start: float, until: float) -> NDArray[np.void] | None:
        """The retransmissions due in the interval, in send order (None: none). Not merged with
        the video here: the uplink's stable sort by send time puts a retransmission after the
        video packets it ties with, as merging them first did."""
        nack.remember(video, start)
        rtx = nack.take(start, until)
        return rtx if len(rtx) else None

    @staticmethod
    def _merged(media: NDArray[np.void], times: Sequence[float], sizes: Sequence[int]) -> tuple[F64, I64]:
        """Send times and sizes of the media, then of the control packets (``times``, ``sizes``),
        end to end."""
        if not times:
            return media["t"], media["size"]
        # (filled in place: cheaper than concatenating with the control packets as new arrays)
        n = len(media)
        t = np.empty(n + len(times))
        size = np.empty(n + len(times), dtype=np.int64)
        t[:n] = media["t"]
        size[:n] = media["size"]
        t[n:] = times
        size[n:] = sizes
        return t, size

    def _batch(self, direction: str, order: I64, t_all: F64, size_all: I64, media: NDArray[np.void],
               control: Sequence[_Up | _AtTurn], name: int, queue: Queue) -> list[float]:
        """One send_batch of the media and the control packets in ``order`` (their send order);
        what the link delivered of the media joins ``queue`` (in send order, so in arrival order
        unless the link reorders). Returns the control packets' arrivals (NaN: dropped) in the
        order of ``control`` (``name``: where a control packet's name for the log is)."""
        n = len(t_all)
        n_media = len(media)
        out = self.path.send_media(direction, t_all.take(order), size_all.take(order),
                                   partial(_kinds, n_media, control, name, order))
        kept = out == out  # (NaN: dropped)
        if control:
            # Where each packet went in send order (the inverse permutation): the control
            # packets' arrivals in their own order, and where they are among the media.
            where = np.empty(n, dtype=np.int64)
            where[order] = _ARANGE[:n] if n <= len(_ARANGE) else np.arange(n)
            c_at = where[n_media:]
            c_out: list[float] = out.take(c_at).tolist()
            kept[c_at] = False
        else:
            c_out = []
        if n_media:
            k = kept.nonzero()[0]
            if len(k):
                queue.arrive_taken(media, order.take(k), out.take(k))
        return c_out

    def _downlink(self, end: float, until: float, pub: Peer, sub: Peer) -> None:
        """TURN forwards what reached it before ``end``: the publisher's media, and what either
        peer sent the other."""
        fwd = self.turn_q.pop_until(until, -math.inf).a
        control: list[_AtTurn] = []
        turn_in = self.turn_in
        while turn_in and turn_in[0][0] < end:
            control.append(heapq.heappop(turn_in))
        resize = sub.extra - pub.extra
        if resize and len(fwd):  # ChannelData framing differs between the two legs
            wire: I64 = fwd["size"]
            np.add(wire, resize, out=wire)
        # Forwarded packets leave in the order they came in (FIFO through TURN): a tie in time
        # goes by when they went up, then media before control (as the event pipeline would).
        t_all, size_all = self._merged(fwd, [x[0] for x in control], [x[2] for x in control])
        order = np.lexsort((np.concatenate((fwd["sent"], [x[7] for x in control])), t_all)) if control else \
            np.lexsort((fwd["sent"], t_all))
        arrival = self._batch(DOWN, order, t_all, size_all, fwd, control, 3, self.sub_q)
        _arrived(control, arrival)

    # --- consent outcomes --------------------------------------------------------------------------

    def _consent_answered(self, check: _ConsentCheck) -> None:
        if not check.decided:
            check.decided = True
            self.handshakes.consent_ok(check.peer)

    def _consent_timeout(self, check: _ConsentCheck) -> None:
        if check.decided or check.answered:
            return
        if check.in_flight:  # its answer may still come in time: ask again once the next interval is planned
            self.loop.at(self.next_tick, self._consent_timeout, check, tag=Tag.CONSENT_OUTCOME)
            return
        check.decided = True
        self.handshakes.consent_failed(check.peer)
