"""The steady state: media and RTCP moved one interval at a time, one batch per link.

The driver switches here once nothing event-driven can put a packet on a link any more
(handshakes done, media started: only RTCP/REMB timers, consent checks and harmless events
pending). :class:`SteadyState` takes over the pipeline's sources, queues and statistics and the
pending RTCP, then runs ahead of the event loop one interval [T, T') at a time: it generates the
interval's RTP (audio frames, packetized VP8 frames) as arrays, merges them with the control
packets whose send times are known in advance (SR/RR on their randomized timers, the
subscriber's REMBs, consent checks), and sends the whole uplink in ONE ``send_batch``; then the
server's side (its receive statistics, its RRs, SRs and REMBs on their timers, consent answers,
the forwarded RTP departing at the uplink delivery times) in ONE ``send_batch`` on the downlink;
then the subscriber's arrivals. Receive statistics are cumulative per-packet arrays
(:mod:`._timeline`) queried "as of time t" for each RTCP report and stats sample, with the same
rules (:mod:`._rtcp`) as the event-driven mode; the client reads the RTCP that reached it when
it needs to (a sample, a consent failure). Only what the core must see at exact times goes back
into the event loop (consent outcomes → ICE states).

Granularity (documented simplifications): T is always one of the server's REMB times and an
interval spans ``REMB_PERIODS_PER_INTERVAL`` (2) REMB periods, i.e. 1 s. The REMB sent at T goes
out before the interval's uplink, so the encoder follows it (and PLIs) at their exact arrival
times; the REMB sent inside the interval takes effect at the next interval (≤ 0.5 s late) and
uses the subscriber's estimate known at T. The subscriber's REMB goes out every 500 ms once it
has received video (aiortc skips a window without video: here that packet repeats no estimate
and the server keeps the previous one); its RR goes out once it has heard from the stream (known
at T). The last interval ends at the last stats sample.

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
from typing import Final, NamedTuple

import numpy as np
from numpy.typing import NDArray
from rtcprobe.core.observations import InboundStats, OutboundStats, Role

from ._handshakes import Handshakes, PeerConnection
from ._media import AUDIO, F64, I64, REMB_INTERVAL, VIDEO, AudioSource, Packets, VideoSource, join
from ._net import DOWN, UP, EventLoop, Path, Pending, Tag
from ._rtcp import RTCP_MIN, RTCP_SPAN, ReportBlock, next_pli_at
from ._streams import Queue, Streams, inbound
from ._timeline import SendLog, Timeline
from ._wire import CONSENT_TIMEOUT, RTCP_PLI, RTCP_REMB, RTCP_RR, RTCP_SR, STUN_CHECK, STUN_RESPONSE

# One batch per link per this many of the server's REMB periods (or per this many seconds
# without video). The publisher's encoder follows a REMB at its exact arrival time when the
# REMB opens the interval; a REMB sent inside an interval takes effect at the next one.
REMB_PERIODS_PER_INTERVAL: Final = 2
AUDIO_ONLY_INTERVAL: Final = 1.0

# What the steady state plans itself when it takes over from the event loop.
RTCP_TIMERS: Final = frozenset({Tag.PUB_SR, Tag.SUB_RR, Tag.SRV_RR, Tag.SRV_SR})
TAKEN_OVER: Final = RTCP_TIMERS | {
    Tag.SRV_REMB_TIMER, Tag.SUB_REMB_TIMER, Tag.PUB_GOT_RR, Tag.PUB_GOT_REMB, Tag.SRV_GOT_SR,
    Tag.SRV_GOT_REMB, Tag.CONSENT, Tag.PUB_GOT_PLI, Tag.SRV_GOT_PLI}


class _Rr(NamedTuple):
    """An RR on its way to the publisher."""

    kind: int
    block: ReportBlock


class _Remb:
    """The subscriber's REMB: sent in an interval, its value known once the interval's
    arrivals at the subscriber are in."""

    __slots__ = ("bps", "known")

    def __init__(self, bps: float | None, known: bool) -> None:
        self.bps = bps
        self.known = known


class _ConsentCheck:
    __slots__ = ("decided", "pc", "sent_at")

    def __init__(self, sent_at: float, pc: PeerConnection) -> None:
        self.sent_at = sent_at
        self.pc = pc
        self.decided = False


# One control packet of an interval on one link: send time, size, name in the packet log, and
# what happens where it arrives, given the arrival time (None: nothing the simulation reads).
_Control = tuple[float, int, str, Callable[[float], None] | None]


def _kinds(n_media: int, control: list[_Control], order: I64) -> list[str]:
    """The packet log's names of a batch, in send order."""
    every = ["rtp"] * n_media + [x[2] for x in control]
    return [every[i] for i in order.tolist()]


def _arrived(control: list[_Control], arrival: list[float]) -> None:
    """Run each delivered control packet's handler with its arrival time, in send order."""
    for a, (_, _, _, then) in zip(arrival, control, strict=True):
        if a == a and then is not None:  # (NaN: dropped)
            then(a)


# Inboxes: heaps of (arrival, order, ...) — order breaks ties in the order things were sent.
_ClientIn = tuple[float, int, _Rr | float | None]  # RR, REMB (bps) or PLI (None) at the publisher
_SrInbox = tuple[float, int, int, float]  # (arrival, _, kind, SR id) at the server
_RembInbox = tuple[float, int, _Remb]  # the subscriber's REMB at the server
_Reply = tuple[float, int, int, _ConsentCheck | None]  # (at, _, size, consent check or None: a PLI)


class SteadyState:
    """Runs the media from the switch on. Built by the driver right after
    :meth:`~._pipeline.Pipeline.hand_over`; ``taken`` are the event-loop entries it plans itself
    from now on (:data:`TAKEN_OVER`). ``end_hint()``: when the last stats sample falls, once known."""

    def __init__(self, loop: EventLoop, path: Path, streams: Streams, handshakes: Handshakes, *,
                 sources: dict[int, AudioSource | VideoSource], srv_q: Queue, sub_q: Queue, sub_last_rx: float,
                 taken: Sequence[Pending], rtcp_rng: np.random.Generator, audio_horizon: float,
                 end_hint: Callable[[], float], started: Callable[[int, float], None]) -> None:
        self.loop = loop
        self.path = path
        self.streams = streams
        self.handshakes = handshakes
        self.pcs = handshakes.pcs
        self._pub, self._sub = self.pcs[Role.PUBLISHER], self.pcs[Role.SUBSCRIBER]
        self._rtcp_rng = rtcp_rng
        self._audio_horizon = audio_horizon
        self._end_hint = end_hint
        self._started = started
        self._sub_last_rx = sub_last_rx
        kinds = streams.kinds
        self.src = sources
        # Audio never reacts to anything: generate the rest of the run at once, hand it out by time.
        self._audio_until = self.now + audio_horizon + 1.0
        audio = sources.get(AUDIO)
        self._audio = None if audio is None else audio.generate(self._audio_until)
        self._audio_at = 0
        self.send_log = {k: SendLog(streams.senders[k].packets, streams.senders[k].bytes) for k in kinds}
        # Packets on their way to each end: both streams in one queue, in arrival order (as the
        # event pipeline left them), split by stream where the statistics are kept.
        self.srv_q = srv_q
        self.sub_q = sub_q
        self._multi = len(kinds) > 1
        self._video = VIDEO in kinds
        self.srv_tl = {k: Timeline(streams.srv_stats[k], streams.srv_est if k == VIDEO else None,
                                   own_timestamps=k == AUDIO) for k in kinds}
        self.sub_tl = {k: Timeline(streams.sub_stats[k], streams.sub_est if k == VIDEO else None,
                                   own_timestamps=k == AUDIO) for k in kinds}
        self.sr_times = {k: [] if s.sr_sent_at is None else [s.sr_sent_at] for k, s in streams.senders.items()}
        self.rtcp_next: dict[tuple[Tag, int], float] = {}
        self.srv_remb_next = self.sub_remb_next = math.inf
        self._seq = 0  # tie-breaker in the inboxes
        self.cli_in: list[_ClientIn] = []  # downlink RTCP the client has coming
        self.srv_sr_in: list[_SrInbox] = []
        self.srv_remb_in: list[_RembInbox] = []
        # what the server sends as soon as something arrives: consent answers, PLIs it forwards
        self.srv_replies: list[_Reply] = []
        # REMBs (bps) and PLIs (None) that reached the publisher and that its encoder has yet to follow
        self.fb_at: list[tuple[float, int, float | None]] = []
        self._undecodable = False  # the subscriber got video it cannot decode (it wants a keyframe)
        for t, tag, a in taken:
            if tag in RTCP_TIMERS:
                self.rtcp_next[(tag, a[1])] = t
            elif tag is Tag.SRV_REMB_TIMER:
                self.srv_remb_next = t
            elif tag is Tag.SUB_REMB_TIMER:
                self.sub_remb_next = t
            elif tag is Tag.PUB_GOT_RR:
                self._at_client(_Rr(*a), t)
            elif tag is Tag.PUB_GOT_REMB:
                self._at_client(a[0], t)
            elif tag is Tag.SRV_GOT_SR:
                self._sr_at_server(a[0], a[1], t)
            elif tag is Tag.SRV_GOT_REMB:
                self._remb_at_server(_Remb(a[0], True), t)
            elif tag is Tag.CONSENT:
                a[0].consent_at = t
            elif tag is Tag.PUB_GOT_PLI:
                self._at_client(None, t)
            elif tag is Tag.SRV_GOT_PLI:
                self._pli_at_server(t)

    @property
    def now(self) -> float:
        return self.loop.now

    # --- what the client knows ---------------------------------------------------------------------

    def catch_up(self) -> None:
        """The client reads the RTCP that reached it by now (RR: rtt, loss, jitter; REMB)."""
        pub = self._pub
        senders = self.streams.senders
        now = self.loop.now
        while self.cli_in and self.cli_in[0][0] <= now:
            a, _, msg = heapq.heappop(self.cli_in)
            pub.heard(a)
            if isinstance(msg, _Rr):
                sent = self.sr_times[msg.kind]
                i = bisect.bisect_right(sent, a) - 1
                senders[msg.kind].read_rr(msg.kind, msg.block, a, sent[i] if i >= 0 else None)
            elif msg is not None:
                senders[VIDEO].remb = msg

    def last_heard(self, pc: PeerConnection) -> float:
        """When the client last received anything on ``pc``."""
        self.catch_up()
        if pc.role is Role.SUBSCRIBER:
            last = [tl.last_arrival(self.now) for tl in self.sub_tl.values()]
            return max([pc.last_rx, self._sub_last_rx] + [t for t in last if t is not None])
        return pc.last_rx

    def stream_stats(self) -> tuple[dict[int, OutboundStats], dict[int, InboundStats | None]]:
        """getStats' outbound (publisher) and inbound (subscriber) entries per stream, now."""
        self.catch_up()
        out: dict[int, OutboundStats] = {}
        inb: dict[int, InboundStats | None] = {}
        for kind in self.streams.kinds:
            s = self.streams.senders[kind]
            s.packets, s.bytes = self.send_log[kind].at(self.now)
            out[kind] = s.outbound(kind)
            inb[kind] = inbound(self.sub_tl[kind].at(self.now), kind)
        return out, inb

    # --- inboxes ---------------------------------------------------------------------------------------

    # (each takes the arrival time last, so that a packet's fate can be a partial of one)

    def _at_client(self, msg: _Rr | float | None, t: float) -> None:
        """An RR, a REMB (bps) or a PLI (None) reached the publisher at ``t``."""
        self._seq += 1
        heapq.heappush(self.cli_in, (t, self._seq, msg))
        if not isinstance(msg, _Rr):  # the encoder follows REMBs and PLIs
            bisect.insort(self.fb_at, (t, self._seq, msg))

    def _sr_at_server(self, kind: int, sr_id: float, t: float) -> None:
        self._seq += 1
        heapq.heappush(self.srv_sr_in, (t, self._seq, kind, sr_id))

    def _remb_at_server(self, remb: _Remb, t: float) -> None:
        self._seq += 1
        heapq.heappush(self.srv_remb_in, (t, self._seq, remb))

    def _pli_at_server(self, t: float) -> None:
        """The SFU passes the subscriber's keyframe request on to the publisher at once."""
        self._reply(RTCP_PLI + self._pub.extra, None, t)

    def _check_at_server(self, check: _ConsentCheck, t: float) -> None:
        """The server answers a consent check at once."""
        self._reply(STUN_RESPONSE + check.pc.extra, check, t)

    def _answer_at_client(self, check: _ConsentCheck, t: float) -> None:
        if t < check.sent_at + CONSENT_TIMEOUT:
            self.loop.at(t, self._consent_answered, check, tag=Tag.CONSENT_OUTCOME)

    def _reply(self, size: int, check: _ConsentCheck | None, t: float) -> None:
        self._seq += 1
        heapq.heappush(self.srv_replies, (t, self._seq, size, check))

    def _srv_inboxes(self, t: float) -> None:
        """The server reads the SRs and the subscriber's REMBs that arrived by ``t``."""
        while self.srv_sr_in and self.srv_sr_in[0][0] <= t:
            a, _, kind, sr_id = heapq.heappop(self.srv_sr_in)
            self.streams.srv_sr[kind] = (sr_id, a)
        while self.srv_remb_in and self.srv_remb_in[0][0] <= t and self.srv_remb_in[0][2].known:
            # (a REMB sent in this very interval is not known yet: the server's REMBs inside
            # the interval use the subscriber's previous one)
            remb = heapq.heappop(self.srv_remb_in)[2]
            if remb.bps is not None:
                self.streams.sub_remb = remb.bps

    def _fires(self, key: tuple[Tag, int], until: float) -> list[float]:
        """The RTCP timer's fire times before ``until`` (aiortc: every 0.5-1.5 s)."""
        out = []
        t = self.rtcp_next.get(key, math.inf)
        while t < until:
            out.append(t)
            # report_delay's draw, but added term by term: ``now + delay`` in the event loop rounds
            # differently, and the reports stay byte-identical to the ones recorded.
            t = t + RTCP_MIN + RTCP_SPAN * float(self._rtcp_rng.random())
        self.rtcp_next[key] = t
        return out

    # --- one interval --------------------------------------------------------------------------------

    def tick(self) -> None:
        """Plan and run one interval [now, end): the uplink in one batch, the server, the downlink in
        one batch, the subscriber. Everything sent before ``now`` is already on the links."""
        streams = self.streams
        start = self.loop.now
        pub, sub = self._pub, self._sub
        video = self._video
        if video and self.srv_remb_next == start:
            # The REMB opening the interval goes first, so the encoder follows it exactly.
            self._srv_inboxes(start)
            bps = self.srv_tl[VIDEO].remb(start)
            if bps is not None:
                bps = streams.remb_to_publisher(bps)
                arrival = self.path.send(DOWN, start, RTCP_REMB + pub.extra, "rtcp")
                if arrival is not None:
                    self._at_client(bps, arrival)
            end = self.srv_remb_next = start + REMB_INTERVAL
            if streams.all_started:  # (short intervals until media started)
                for _ in range(REMB_PERIODS_PER_INTERVAL - 1):
                    end += REMB_INTERVAL
        elif video:
            end = self.srv_remb_next
        else:
            end = start + (AUDIO_ONLY_INTERVAL if streams.playout.started else REMB_INTERVAL)
        hint = self._end_hint()
        if start < hint < end:
            end = hint
        until = math.nextafter(end, -math.inf)
        sub_rembs = self._uplink(start, end, until, pub, sub)
        self._downlink(end, until, pub, sub)
        # The subscriber: its arrivals of the interval, then what its REMBs said.
        started = streams.playout.started
        for kind, mine in self._split(self.sub_q.pop_until(until, streams.sub_accept_at)):
            self.sub_tl[kind].extend(mine["t"], mine["seq"], mine["ts"], mine["payload"], mine["sent"], mine["size"])
            if kind not in started:
                self._not_started_yet(kind, Packets(mine))
        for t, remb in sub_rembs:
            remb.bps, remb.known = self.sub_tl[VIDEO].remb(t), True
        self.loop.at(end, self.tick, tag=Tag.STEADY_TICK)

    def _split(self, got: Packets) -> list[tuple[int, NDArray[np.void]]]:
        """An end's arrivals by stream, in stream order (only the non-empty parts)."""
        a = got.a
        if not len(a):
            return []
        if not self._multi:
            return [(self.streams.kinds[0], a)]
        audio = a["kind"] == AUDIO
        n_audio = int(np.count_nonzero(audio))
        if n_audio == len(a):
            return [(AUDIO, a)]
        if not n_audio:
            return [(VIDEO, a)]
        return [(AUDIO, a.compress(audio)), (VIDEO, a.compress(~audio))]

    def _not_started_yet(self, kind: int, got: Packets) -> None:
        """Media start from the subscriber's arrivals (its PLI waits for the next interval: see
        _uplink)."""
        if (t := self.streams.playout.arrived(kind, got)) is not None:
            self._started(kind, t)
            if kind == VIDEO:
                self._undecodable = False
        elif kind == VIDEO:
            self._undecodable = True

    def _uplink(self, start: float, end: float, until: float, pub: PeerConnection, sub: PeerConnection
                ) -> list[tuple[float, _Remb]]:
        streams = self.streams
        media: list[tuple[int, NDArray[np.void]]] = []
        if self._audio is not None:
            if until > self._audio_until:  # (a run longer than planned for: plan more)
                self._audio_until = until + self._audio_horizon
                rest = self._audio.take(slice(self._audio_at, None))
                self._audio = Packets.concat([rest, self.src[AUDIO].generate(self._audio_until)])
                self._audio_at = 0
            i = self._audio_at
            self._audio_at = j = int(self._audio.a["t"].searchsorted(until, "right"))
            media.append((AUDIO, self._audio.a[i:j]))
        vs = self.src.get(VIDEO)
        if isinstance(vs, VideoSource):
            changes = []  # REMBs (bps) and PLIs (None) the encoder follows on the way
            fb_at = self.fb_at
            while fb_at and fb_at[0][0] < end:
                at, _, bps = fb_at.pop(0)
                # (frames sent up to the arrival are the old encoder's)
                changes.append((at if at > start else None, bps))
            media.append((VIDEO, vs.generate(until, changes).a))
        control: list[_Control] = []
        rtcp_sr, rtcp_rr = RTCP_SR + pub.extra, RTCP_RR + sub.extra
        for kind in streams.kinds:
            for t in self._fires((Tag.PUB_SR, kind), end):
                control.append((t, rtcp_sr, "rtcp", partial(self._sr_at_server, kind, t)))
                self.sr_times[kind].append(t)
            for t in self._fires((Tag.SUB_RR, kind), end):
                if streams.sub_stats[kind].base_seq is not None:  # (as of the interval's start)
                    control.append((t, rtcp_rr, "rtcp", None))
        sub_rembs = []
        if self._video:
            while self.sub_remb_next < end:
                # Sent every 500 ms once video arrived (aiortc would skip a window without video:
                # here the packet carries no new estimate and the server keeps the previous one).
                if streams.sub_est.first_arrival is not None:
                    t, remb = self.sub_remb_next, _Remb(None, False)
                    sub_rembs.append((t, remb))
                    control.append((t, RTCP_REMB + sub.extra, "rtcp", partial(self._remb_at_server, remb)))
                self.sub_remb_next += REMB_INTERVAL
            if self._undecodable and VIDEO not in streams.playout.started:
                # The subscriber's keyframe request: as soon as the interval lets it (at most
                # one per 500 ms), rather than at the very arrival that found no keyframe.
                t = next_pli_at(start, streams.last_pli, streams.forward_at)
                if t < end:
                    streams.last_pli = t
                    self._undecodable = False
                    control.append((t, RTCP_PLI + sub.extra, "rtcp", self._pli_at_server))
        for pc in (pub, sub):
            if not pc.ice_failed and pc.consent_at < end:
                check = _ConsentCheck(pc.consent_at, pc)
                control.append((pc.consent_at, STUN_CHECK + pc.extra, "stun", partial(self._check_at_server, check)))
                self.loop.at(pc.consent_at + CONSENT_TIMEOUT, self._consent_timeout, check, tag=Tag.CONSENT_OUTCOME)
                pc.consent_at = math.inf
        for kind, mine in media:
            self.send_log[kind].extend(mine["t"], mine["payload"])
        parts_ = [mine for _, mine in media]
        # On a tie the publisher's streams go in stream order, then control: a stable sort.
        t_all, size_all = self._merged(parts_, control)
        arrival = self._batch(UP, t_all.argsort(kind="stable"), t_all, size_all, parts_, control, self.srv_q)
        _arrived(control, arrival)
        return sub_rembs

    @staticmethod
    def _merged(media: list[NDArray[np.void]], control: list[_Control]) -> tuple[F64, I64]:
        """Send times and sizes of the media streams, then of the control packets, end to end."""
        if control:
            ct = np.array([x[0] for x in control], dtype=np.float64)
            cs = np.array([x[1] for x in control], dtype=np.int64)
            return np.concatenate([m["t"] for m in media] + [ct]), np.concatenate([m["size"] for m in media] + [cs])
        if len(media) == 1:
            return media[0]["t"], media[0]["size"]
        return np.concatenate([m["t"] for m in media]), np.concatenate([m["size"] for m in media])

    def _batch(self, direction: str, order: I64, t_all: F64, size_all: I64, media: list[NDArray[np.void]],
               control: list[_Control], queue: Queue) -> list[float]:
        """One send_batch of the media and the control packets in ``order`` (their send order);
        what the link delivered of the media joins ``queue`` (in send order, so in arrival order
        unless the link reorders). Returns the control packets' arrivals (NaN: dropped) in the
        order of ``control``."""
        n_media = len(t_all) - len(control)
        out = self.path.send_media(direction, t_all.take(order), size_all.take(order),
                                   partial(_kinds, n_media, control, order))
        if not control:
            m_order, m_out = order, out
            c_out: list[float] = []
        else:
            is_media = order < n_media
            m_order, m_out = order.compress(is_media), out.compress(is_media)
            c_out = [math.nan] * len(control)
            for i, a in zip((order.compress(~is_media) - n_media).tolist(), out.compress(~is_media).tolist(),
                            strict=True):
                c_out[i] = a
        if n_media:
            kept = (m_out == m_out).nonzero()[0]  # (NaN: dropped)
            if len(kept):
                if len(kept) < n_media:
                    m_order, m_out = m_order.take(kept), m_out.take(kept)
                joined = media[0] if len(media) == 1 else join([m for m in media if len(m)])
                got = joined.take(m_order)
                got["t"] = m_out
                queue.push(Packets(got))
        return c_out

    def _downlink(self, end: float, until: float, pub: PeerConnection, sub: PeerConnection) -> None:
        streams = self.streams
        fwd = self.srv_q.pop_until(until, streams.srv_accept_at).a
        for kind, mine in self._split(Packets(fwd)):
            self.srv_tl[kind].extend(mine["t"], mine["seq"], mine["ts"], mine["payload"], mine["sent"], mine["size"])
        sends: list[tuple[float, int, Tag, int]] = []
        for kind in streams.kinds:
            sends.extend((t, len(sends), Tag.SRV_RR, kind) for t in self._fires((Tag.SRV_RR, kind), end))
            sends.extend((t, len(sends), Tag.SRV_SR, kind) for t in self._fires((Tag.SRV_SR, kind), end))
        if self._video:
            while self.srv_remb_next < end:
                sends.append((self.srv_remb_next, len(sends), Tag.SRV_REMB_TIMER, VIDEO))
                self.srv_remb_next += REMB_INTERVAL
        sends.sort()
        control: list[_Control] = []
        for t, _, what, kind in sends:
            self._srv_inboxes(t)
            if what is Tag.SRV_RR:
                block = streams.server_rr(kind, self.srv_tl[kind].at(t), t)
                if block is not None:
                    control.append((t, RTCP_RR + pub.extra, "rtcp", partial(self._at_client, _Rr(kind, block))))
            elif what is Tag.SRV_SR:  # (traffic only)
                control.append((t, RTCP_SR + sub.extra, "rtcp", None))
            else:
                bps = self.srv_tl[VIDEO].remb(t)
                if bps is not None:
                    bps = streams.remb_to_publisher(bps)
                    control.append((t, RTCP_REMB + pub.extra, "rtcp", partial(self._at_client, bps)))
        while self.srv_replies and self.srv_replies[0][0] < end:
            t, _, size, check = heapq.heappop(self.srv_replies)
            if check is None:  # a PLI on its way to the publisher
                control.append((t, size, "rtcp", partial(self._at_client, None)))
            else:
                control.append((t, size, "stun", partial(self._answer_at_client, check)))
        resize = sub.extra - pub.extra
        if resize and len(fwd):  # ChannelData framing differs between the two legs
            fwd["size"] = fwd["size"] + resize
        # Forwarded packets leave in the order they came in (FIFO through the SFU); a tie in
        # time goes by send time, then stream, then control (as the streams' queues would).
        t_all, size_all = self._merged([fwd], control)
        order = np.lexsort((np.concatenate([fwd["sent"], t_all[len(fwd):]]), t_all)) if control else \
            np.lexsort((fwd["sent"], t_all))
        arrival = self._batch(DOWN, order, t_all, size_all, [fwd], control, self.sub_q)
        _arrived(control, arrival)

    # --- consent outcomes --------------------------------------------------------------------------

    def _consent_answered(self, check: _ConsentCheck) -> None:
        if not check.decided:
            check.decided = True
            self.handshakes.consent_ok(check.pc)

    def _consent_timeout(self, check: _ConsentCheck) -> None:
        if not check.decided:
            check.decided = True
            self.handshakes.consent_failed(check.pc)
