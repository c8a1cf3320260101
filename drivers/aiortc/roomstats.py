"""One aiortc peer connection of a call → the room's :class:`~rtcprobe.core.room.PeerLink`, in SI units.

In a call (docs/network-quality-rooms.md) each participant samples its own peer connections about
once a second, one :class:`PeerLink` per remote end: another participant (a mesh) or a media
server (an SFU). Unlike the preflight's pair (:mod:`.stats`), one peer connection here both sends
and receives, so the two directions are told apart by transceiver:

* **sent**: the senders that carry a track on a transceiver negotiated to send
  (``currentDirection`` ``sendrecv``/``sendonly``): their ``outbound-rtp`` and
  ``remote-inbound-rtp`` entries, per kind, converted by :func:`.stats.outbound` (jitter ÷ clock
  rate, ``fractionLost`` ÷ 256, counters summed), and the latest REMB that reached them
  (:class:`.stats.RembWatch`) as the available outgoing bitrate;
* **received**: the receivers of transceivers negotiated to receive (``sendrecv``/``recvonly``):
  their ``inbound-rtp`` entries (:func:`.stats.inbound`) and the RTP payload bytes they got
  (:class:`.stats.ReceivedBytes`, since aiortc reports no ``bytesReceived``), summed per kind —
  and, on a server link, per source: ``source_of(transceiver)`` names the participant whose media
  a transceiver carries (an app knows it from its SFU's signaling); unnamed streams are charged to
  this participant's downlink alone.

aiortc's ``RTCRtpReceiver.getStats()`` reports every SSRC it received under one id, so the last
one wins: once the first retransmission arrived, a video receiver's ``inbound-rtp`` is the RTX
stream's (a few packets), and the counters seem to fall. The received side is therefore read from
the receiver's own per-SSRC statistics, media SSRCs only (:func:`.stats.media_streams`), and from
``getStats()`` only where that private state is not laid out as expected. What is counted is then
the network's loss before repair: a packet lost and retransmitted counts as lost, as in
``inbound-rtp.packetsLost`` of a browser.

aiortc has no candidate-pair stats, so ``PeerLink.rtt`` stays None and the room takes the largest
``remote-inbound-rtp.roundTripTime`` of the link instead. Hooks (REMB, received bytes) are put on
every sender and receiver the first time a sample sees it, so transceivers added by a later
negotiation are counted from then on; :meth:`LinkStats.close` takes them off.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from aiortc import RTCPeerConnection
from rtcprobe.core.quality import MEDIA, Media
from rtcprobe.core.room import InboundStream, PeerLink

from . import stats

SENDING = ("sendrecv", "sendonly")
RECEIVING = ("sendrecv", "recvonly")

#: Which participant's media a transceiver carries on a server link (None: unknown).
SourceOf = Callable[[Any], "str | None"]


class LinkStats:
    """Samples one peer connection as one :class:`PeerLink` of the room's sample.

    ``remote`` is the participant at the other end, or the media server's name when ``server``;
    ``source_of`` and ``inbound_includes_uplink`` matter on a server link only (PeerLink's).
    """

    def __init__(self, pc: RTCPeerConnection, remote: str, *, server: bool = False,
                 source_of: SourceOf | None = None, inbound_includes_uplink: bool = True) -> None:
        self.pc = pc
        self.remote = remote
        self.server = server
        self._source_of = source_of
        self._includes_uplink = inbound_includes_uplink
        self._remb: dict[Any, stats.RembWatch] = {}  # by RTCRtpSender
        self._received: dict[Any, stats.ReceivedBytes] = {}  # by RTCRtpReceiver

    @property
    def closed(self) -> bool:
        return self.pc.connectionState == "closed"

    def _hook(self) -> None:
        for transceiver in self.pc.getTransceivers():
            if transceiver.sender not in self._remb:
                self._remb[transceiver.sender] = stats.RembWatch(transceiver.sender)
            if transceiver.receiver not in self._received:
                self._received[transceiver.receiver] = stats.ReceivedBytes(transceiver.receiver)

    def _source(self, transceiver: Any) -> str | None:
        if not self.server:
            return None  # a peer link's streams are its remote's
        if self._source_of is None:
            return None
        source = self._source_of(transceiver)
        return source if isinstance(source, str) and source else None

    async def sample(self) -> PeerLink | None:
        """This peer connection's counters now; None once it is closed."""
        if self.closed:
            return None
        self._hook()
        rates = stats.clock_rates(self.pc)
        sending = [t for t in self.pc.getTransceivers()
                   if t.currentDirection in SENDING and t.sender.track is not None]
        receiving = [t for t in self.pc.getTransceivers() if t.currentDirection in RECEIVING]
        reports = await asyncio.gather(*(t.sender.getStats() for t in sending),
                                       *(t.receiver.getStats() for t in receiving))
        sent_reports, received_reports = reports[: len(sending)], reports[len(sending):]
        outs: dict[str, Any] = {}
        for kind in MEDIA:
            merged: dict[str, Any] = {}
            remb: list[float] = []
            for transceiver, report in zip(sending, sent_reports, strict=True):
                if transceiver.kind != kind:
                    continue
                # Each sender's entries keep their own ids (its SSRC's), except the transport's.
                merged.update({f"{id(transceiver)}:{key}": value for key, value in report.items()})
                watch = self._remb.get(transceiver.sender)
                if watch is not None and watch.bps is not None:
                    remb.append(watch.bps)
            outs[kind] = stats.outbound(merged, kind, clock_rate=rates[kind],
                                        available_bps=max(remb) if remb else None)
        groups: dict[tuple[Media, str | None], tuple[dict[str, Any], int]] = {}
        for transceiver, report in zip(receiving, received_reports, strict=True):
            key = (cast(Media, transceiver.kind), self._source(transceiver))
            merged, got = groups.get(key, ({}, 0))
            own = stats.media_streams(transceiver.receiver, transceiver.kind)
            merged.update({f"{id(transceiver)}:{k}": v for k, v in (report if own is None else own).items()})
            counter = self._received.get(transceiver.receiver)
            groups[key] = merged, got + (counter.bytes if counter is not None else 0)
        inbound = []
        for (kind, source), (merged, got) in groups.items():
            received = stats.inbound(merged, kind, clock_rate=rates[kind], bytes_received=got)
            if received is not None:
                inbound.append(InboundStream(kind, received, source))
        return PeerLink(
            remote=self.remote, server=self.server, audio_out=outs["audio"], video_out=outs["video"],
            inbound=tuple(inbound), rtt=None,  # aiortc has no candidate-pair stats: the room uses remoteRtt
            inbound_includes_uplink=self._includes_uplink,
        )

    def close(self) -> None:
        """Take the hooks off (the peer connection keeps working)."""
        for watch in self._remb.values():
            watch.close()
        for counter in self._received.values():
            counter.close()
        self._remb.clear()
        self._received.clear()


__all__ = ["LinkStats", "SourceOf"]
