"""A room's clients, simulated: per-leg impairments in, each participant's RoomSample out.

:class:`CallSim` models the legs the room attributes to (each participant's uplink and
downlink: loss, jitter, access round trip, uplink capacity) and produces the cumulative counters
a real client's ``getStats()`` would show: for a mesh, one link per other participant (its sent
streams with the far end's receiver reports, its received streams); for an SFU, one link to the
server (the upstream with the server's receiver reports, which cover the uplink alone, and one
received stream per other participant, whose losses include the sender's uplink when the server
forwards packets as they came).  ``exact`` mode delivers the expected packet counts (rounded),
so a test's expectations are exact; otherwise a seeded numpy generator draws them.

The tests at the bottom check the simulator itself, so the room tests can trust it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import attrs
import numpy as np
from rtcprobe.core.config import VideoSpec
from rtcprobe.core.observations import InboundStats, OutboundStats
from rtcprobe.core.quality import Media, QualityDemand
from rtcprobe.core.room import InboundStream, PeerLink, Room, RoomEvent, RoomSample

MEDIA: tuple[Media, ...] = ("audio", "video")
#: Packets per second and bytes per packet of each media (Opus 20 ms frames at ~32 kbit/s;
#: 320x240@15 VP8 at ~140 kbit/s, over its demand of 100 kbit/s).
PPS = {"audio": 50, "video": 35}
SIZE = {"audio": 80, "video": 500}
SMALL_VIDEO = VideoSpec(320, 240, 15.0)
FULL = QualityDemand(audio_send=True, audio_recv=True, video_send=SMALL_VIDEO, video_recv=SMALL_VIDEO)


@attrs.frozen
class Legs:
    """One participant's network: loss fractions, one-way jitters (s), its access round trip (s),
    and its uplink's capacity in bps (None: enough for everything)."""

    up_loss: float = 0.0
    down_loss: float = 0.0
    up_jitter: float = 0.002
    down_jitter: float = 0.002
    rtt: float = 0.02
    up_bps: float | None = None


@attrs.define
class _Stream:
    sent: int = 0
    sent_bytes: int = 0
    received: int = 0
    lost: int = 0
    received_bytes: int = 0


class CallSim:
    """Participants with :class:`Legs`, in a mesh or around one SFU (``sfu=True``)."""

    def __init__(self, legs: dict[str, Legs], *, sfu: bool = False, exact: bool = True, seed: int = 0,
                 publishes: dict[str, tuple[Media, ...]] | None = None) -> None:
        self.legs = dict(legs)
        self.sfu = sfu
        self.exact = exact
        self.rng = np.random.default_rng(seed)
        self.publishes = publishes if publishes is not None else {name: MEDIA for name in legs}
        # mesh: (sender, receiver, media); SFU upstream: (sender, "sfu", media), downstream: (sender, receiver, media)
        self.streams: dict[tuple[str, str, Media], _Stream] = {}

    def _deliver(self, n: int, loss: float) -> int:
        if self.exact:
            return round(n * (1 - loss))
        return int(self.rng.binomial(n, 1 - loss))

    def _rate_share(self, sender: str, media: Media) -> float:
        """Fraction of each packet the sender's uplink capacity lets through (whole streams share it)."""
        cap = self.legs[sender].up_bps
        if cap is None:
            return 1.0
        copies = 1 if self.sfu else len(self.legs) - 1
        need = sum(PPS[m] * SIZE[m] * 8 for m in self.publishes[sender]) * max(1, copies)
        return min(1.0, cap / need)

    def step(self, dt: float = 1.0) -> None:
        """Advance every stream by ``dt`` seconds of media."""
        names = list(self.legs)
        for s in names:
            for media in self.publishes[s]:
                n = round(PPS[media] * dt)
                size = max(1, round(SIZE[media] * self._rate_share(s, media)))
                up = self.legs[s].up_loss
                if self.sfu:
                    upstream = self.streams.setdefault((s, "sfu", media), _Stream())
                    arrived = self._deliver(n, up)
                    upstream.sent += n
                    upstream.sent_bytes += n * size
                    upstream.received += arrived
                    upstream.lost += n - arrived
                    for r in names:
                        if r == s:
                            continue
                        down = self.streams.setdefault((s, r, media), _Stream())
                        got = self._deliver(arrived, self.legs[r].down_loss)
                        # a forwarding SFU passes the sender's gaps on: the receiver counts them as lost
                        down.received += got
                        down.lost += n - got
                        down.received_bytes += got * size
                    continue
                for r in names:
                    if r == s:
                        continue
                    st = self.streams.setdefault((s, r, media), _Stream())
                    p = 1 - (1 - up) * (1 - self.legs[r].down_loss)
                    got = self._deliver(n, p)
                    st.sent += n
                    st.sent_bytes += n * size
                    st.received += got
                    st.lost += n - got
                    st.received_bytes += got * size

    def _jitter(self, s: str, r: str) -> float:
        return math.hypot(self.legs[s].up_jitter, self.legs[r].down_jitter)

    def _out(self, st: _Stream, rtt: float, jitter: float) -> OutboundStats:
        return OutboundStats(
            packets_sent=st.sent, bytes_sent=st.sent_bytes, remote_rtt=rtt, remote_jitter=jitter,
            remote_packets_lost=st.lost,
        )

    def sample(self, name: str, *, demand: QualityDemand | None = None) -> RoomSample:
        """What ``name``'s client reports now."""
        links: list[PeerLink] = []
        me = self.legs[name]
        if self.sfu:
            rtt = me.rtt
            outs = {m: self._out(st, rtt, self.legs[name].up_jitter) for (s, r, m), st in self.streams.items()
                    if s == name and r == "sfu"}
            inbound = tuple(
                InboundStream(m, InboundStats(st.received, st.lost, st.received_bytes, self._jitter(s, name)), s)
                for (s, r, m), st in self.streams.items() if r == name
            )
            links.append(PeerLink("sfu", server=True, audio_out=outs.get("audio"), video_out=outs.get("video"),
                                  inbound=inbound, rtt=rtt))
            return RoomSample(tuple(links), demand)
        for other in self.legs:
            if other == name:
                continue
            rtt = me.rtt + self.legs[other].rtt
            outs = {m: self._out(st, rtt, self._jitter(name, other)) for (s, r, m), st in self.streams.items()
                    if s == name and r == other}
            inbound = tuple(
                InboundStream(m, InboundStats(st.received, st.lost, st.received_bytes, self._jitter(other, name)))
                for (s, r, m), st in self.streams.items() if s == other and r == name
            )
            links.append(PeerLink(other, audio_out=outs.get("audio"), video_out=outs.get("video"),
                                  inbound=inbound, rtt=rtt))
        return RoomSample(tuple(links), demand)


def run(room: Room, sim: CallSim, start: float, seconds: int, *, skip: Iterable[str] = ()) -> list[RoomEvent]:
    """Drive ``room`` with ``sim`` for ``seconds``: each second the media advances, every
    participant (but ``skip``) sends a sample a little after the whole second, and the room's
    timer fires when due.  Returns the events drained along the way."""
    events: list[RoomEvent] = []
    skipped = set(skip)
    for k in range(1, seconds + 1):
        sim.step()
        for i, name in enumerate(sim.legs):
            if name not in skipped and name in room.participants:
                at = start + k + 0.01 * (i + 1)
                advance(room, at)
                room.handle_sample(name, sim.sample(name), at)
        advance(room, start + k + 0.5)
        events.extend(room.events())
    return events


def advance(room: Room, now: float) -> None:
    """Fire every timer due up to ``now``, in order (one overdue fires at the room's latest time,
    as a server's late callback would)."""
    while (t := room.get_timer()) is not None and t <= now:
        room.handle_timer(max(t, room.now or t))


def join_all(room: Room, sim: CallSim, now: float, **kwargs: object) -> None:
    for name in sim.legs:
        room.join(name, now, **kwargs)  # type: ignore[arg-type]


# --- the simulator itself --------------------------------------------------------------------


def test_mesh_counters_follow_the_legs() -> None:
    sim = CallSim({"a": Legs(up_loss=0.2), "b": Legs(down_loss=0.1), "c": Legs()})
    for _ in range(10):
        sim.step()
    ab = sim.streams[("a", "b", "video")]
    assert ab.sent == 350
    assert ab.lost / ab.sent == 1 - round(35 * 0.8 * 0.9) / 35
    assert sim.streams[("c", "a", "audio")].lost == 0
    # the receiver's inbound and the sender's receiver reports describe the same packets
    a_link_b = next(link for link in sim.sample("a").links if link.remote == "b")
    b_link_a = next(link for link in sim.sample("b").links if link.remote == "a")
    assert a_link_b.video_out is not None
    video_in = next(s for s in b_link_a.inbound if s.kind == "video")
    assert a_link_b.video_out.remote_packets_lost == video_in.stats.packets_lost
    assert a_link_b.rtt == b_link_a.rtt == 0.04


def test_sfu_counters_split_up_and_down() -> None:
    sim = CallSim({"a": Legs(up_loss=0.2), "b": Legs(down_loss=0.1)}, sfu=True)
    for _ in range(10):
        sim.step()
    (link,) = sim.sample("a").links
    assert link.server and link.audio_out is not None
    assert link.audio_out.remote_packets_lost == 100  # the SFU saw the uplink's 20 % alone
    (b_link,) = sim.sample("b").links
    audio = next(s for s in b_link.inbound if s.kind == "audio")
    assert audio.source == "a"
    assert audio.stats.packets_lost == 500 - 10 * round(40 * 0.9)  # uplink and downlink together


def test_noisy_mode_is_seeded() -> None:
    def counts(seed: int) -> int:
        sim = CallSim({"a": Legs(up_loss=0.2), "b": Legs()}, exact=False, seed=seed)
        sim.step()
        return sim.streams[("a", "b", "video")].lost

    assert counts(1) == counts(1)
