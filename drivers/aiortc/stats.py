"""aiortc ``getStats()`` → the core's :class:`StatsSample`, in SI units (docs/references.md#aiortc-and-aioice).

The two peer connections are Twilio Video's preflight pair, both in this process: the publisher
(Twilio's sender, relay-only when TURN is handed out) sends the synthetic tracks, the subscriber
(Twilio's receiver) gets them back, through TURN when there is one. aiortc reports only
``inbound-rtp``, ``outbound-rtp``, ``remote-inbound-rtp``, ``remote-outbound-rtp`` and
``transport`` entries, in its own units:

================================================  ========================================  ======================
aiortc stat                                       core field                                conversion
================================================  ========================================  ======================
publisher ``outbound-rtp.packetsSent``            ``OutboundStats.packets_sent``            summed per kind
publisher ``outbound-rtp.bytesSent``              ``OutboundStats.bytes_sent``              summed per kind
publisher ``remote-inbound-rtp.roundTripTime``    ``OutboundStats.remote_rtt``              see below
publisher ``remote-inbound-rtp.jitter``           ``OutboundStats.remote_jitter``           RTP units ÷ clock rate
publisher ``remote-inbound-rtp.fractionLost``     ``OutboundStats.remote_fraction_lost``    ÷ 256
publisher ``remote-inbound-rtp.packetsLost``      ``OutboundStats.remote_packets_lost``     summed per kind
REMB received by the publisher's sender           ``OutboundStats.available_bps``           bps as is
subscriber ``inbound-rtp.packetsReceived``        ``InboundStats.packets_received``         summed per kind
subscriber ``inbound-rtp.packetsLost``            ``InboundStats.packets_lost``             summed, floored at 0
subscriber ``inbound-rtp.jitter``                 ``InboundStats.jitter``                   RTP units ÷ clock rate
RTP payload bytes the subscriber received         ``InboundStats.bytes_received``           see below
(no candidate-pair stats in aiortc)               ``StatsSample.candidate_pair_rtt``        None
(both ends are this client's)                     ``StatsSample.loopback``                  True
================================================  ========================================  ======================

Several streams of one kind: counters are summed, jitter/rtt/fractionLost take the worst.
Clock rates: 90000 for video, the negotiated codec's rate for audio (48000 for Opus).

What the core makes of it is Twilio's reading (``getCombinedConnectionStats.ts``,
docs/references.md#twilio-video-preflight): jitter from the subscriber's received audio, packet
loss Δlost / Δ(lost + received) over the subscriber's audio and video (the media crossed the whole
path, TURN included, as RTP: a packet lost anywhere is a gap there), rtt from the receiver's
candidate pair (Twilio's first choice, which aiortc does not expose) or else the publisher's
``remote-inbound-rtp.roundTripTime``. Either round trip runs publisher → TURN → subscriber and
back, crossing the client's access link four times: about twice the client ↔ TURN round trip. The
report keeps it, as Twilio reported it; ``loopback=True`` makes the core feed the network-quality
scorer half of it (core/sampling.py).

aiortc's ``roundTripTime`` comes only from an RR echoing the sender's latest SR, so over a loop
longer than its 0.5-1.5 s SR interval it stays None; :class:`RttWatch` measures it from an RR
echoing any recent SR (libwebrtc's rule) and is used where it has a figure.

aiortc's ``inbound-rtp`` has no ``bytesReceived`` and its transport counts bytes for all kinds
together, so :class:`ReceivedBytes` counts RTP payload bytes per receiver — the same measure as the
sender's ``bytesSent`` (RTCP's octet count), so outgoing and incoming bitrates compare.

Only the direction each peer connection carries is read: the subscriber's recvonly transceivers
still have senders whose ``outbound-rtp`` entries say 0, and the publisher's receivers never see
a stream.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import SimpleNamespace
from typing import Any

from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, RtcpRrPacket, RtcpSrPacket, unpack_remb_fci
from rtcprobe.core.observations import InboundStats, OutboundStats, StatsSample

DEFAULT_CLOCK_RATES: Mapping[str, int] = {"audio": 48000, "video": 90000}
KINDS = ("audio", "video")


def clock_rates(pc: Any) -> dict[str, int]:
    """The negotiated clock rate per kind (the first codec of each transceiver), else the default."""
    rates = dict(DEFAULT_CLOCK_RATES)
    for transceiver in pc.getTransceivers():
        codecs = getattr(transceiver, "_codecs", None)  # set once negotiation is done
        if codecs and getattr(codecs[0], "clockRate", None):
            rates[transceiver.kind] = int(codecs[0].clockRate)
    return rates


def _entries(report: Mapping[str, Any], kind_type: str, kind: str) -> list[Any]:
    return [s for s in report.values() if getattr(s, "type", None) == kind_type and getattr(s, "kind", None) == kind]


def _max(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def outbound(
    report: Mapping[str, Any], kind: str, *, clock_rate: int, available_bps: float | None = None,
    rtt: float | None = None,
) -> OutboundStats | None:
    """The publisher's view of its ``kind`` stream(s); None when it sends none. ``rtt``: the
    sender's round trip as :class:`RttWatch` measured it, preferred to aiortc's when known."""
    sent = _entries(report, "outbound-rtp", kind)
    if not sent:
        return None
    remote = _entries(report, "remote-inbound-rtp", kind)
    lost = [r.packetsLost for r in remote if r.packetsLost is not None]
    return OutboundStats(
        packets_sent=sum(int(s.packetsSent) for s in sent),
        bytes_sent=sum(int(s.bytesSent) for s in sent),
        remote_rtt=rtt if rtt is not None else _max(r.roundTripTime for r in remote),  # None until an RR echoes an SR
        remote_jitter=_max(None if r.jitter is None else r.jitter / clock_rate for r in remote),
        remote_fraction_lost=_max(None if r.fractionLost is None else r.fractionLost / 256 for r in remote),
        remote_packets_lost=sum(int(x) for x in lost) if lost else None,
        available_bps=available_bps,
    )


def inbound(report: Mapping[str, Any], kind: str, *, clock_rate: int, bytes_received: int = 0) -> InboundStats | None:
    """The subscriber's view of its received ``kind`` stream(s); None before the first packet."""
    got = _entries(report, "inbound-rtp", kind)
    if not got:
        return None
    return InboundStats(
        packets_received=sum(int(s.packetsReceived) for s in got),
        packets_lost=max(0, sum(int(s.packetsLost) for s in got)),  # RTCP's count can dip below 0
        bytes_received=bytes_received,
        jitter=_max(None if s.jitter is None else s.jitter / clock_rate for s in got),
    )


def media_streams(receiver: Any, kind: str) -> dict[str, Any] | None:
    """``inbound-rtp``-like entries of ``receiver``'s media SSRCs (RTX ones left out), keyed like a
    stats report; None when aiortc's private state is not as expected (use ``getStats()``)."""
    # private: aiortc 1.16 keeps a StreamStatistics per received SSRC in __remote_streams (RTX
    # SSRCs included) and maps each RTX SSRC to its media SSRC in __rtx_ssrc.
    streams = getattr(receiver, "_RTCRtpReceiver__remote_streams", None)
    rtx = getattr(receiver, "_RTCRtpReceiver__rtx_ssrc", None)
    if not isinstance(streams, dict) or not isinstance(rtx, dict):
        return None
    try:
        return {f"inbound-rtp_{ssrc}": SimpleNamespace(type="inbound-rtp", kind=kind,
                                                        packetsReceived=s.packets_received,
                                                        packetsLost=s.packets_lost, jitter=s.jitter)
                for ssrc, s in streams.items() if ssrc not in rtx}
    except AttributeError:
        return None



def media_inbound(report: Mapping[str, Any], pc: Any) -> Mapping[str, Any]:
    """``report`` (``pc.getStats()``) with its ``inbound-rtp`` entries read from the receivers'
    media SSRCs (:func:`media_streams`): aiortc reports every SSRC a receiver got under one id, so
    once a retransmission arrived the video entry is the RTX stream's and its counters seem to
    fall. Unchanged when aiortc's private state is not laid out as expected."""
    entries: dict[str, Any] = {}
    for transceiver in pc.getTransceivers():
        own = media_streams(transceiver.receiver, transceiver.kind)
        if own is None:
            return report
        entries.update(own)
    kept = {k: v for k, v in report.items() if getattr(v, "type", None) != "inbound-rtp"}
    return {**kept, **entries}


def to_sample(
    publisher: Mapping[str, Any],
    subscriber: Mapping[str, Any],
    *,
    publisher_rates: Mapping[str, int] = DEFAULT_CLOCK_RATES,
    subscriber_rates: Mapping[str, int] = DEFAULT_CLOCK_RATES,
    available_bps: Mapping[str, float | None] | None = None,
    bytes_received: Mapping[str, int] | None = None,
    remote_rtt: Mapping[str, float | None] | None = None,
) -> StatsSample:
    """One sample from the two reports (candidates are added by the caller); ``remote_rtt``: per
    kind, :class:`RttWatch`'s round trip (aiortc's ``roundTripTime`` where it has none)."""
    avail = available_bps or {}
    got = bytes_received or {}
    rtt = remote_rtt or {}
    return StatsSample(
        audio_out=outbound(publisher, "audio", clock_rate=publisher_rates["audio"], available_bps=avail.get("audio"),
                           rtt=rtt.get("audio")),
        video_out=outbound(publisher, "video", clock_rate=publisher_rates["video"], available_bps=avail.get("video"),
                           rtt=rtt.get("video")),
        audio_in=inbound(subscriber, "audio", clock_rate=subscriber_rates["audio"], bytes_received=got.get("audio", 0)),
        video_in=inbound(subscriber, "video", clock_rate=subscriber_rates["video"], bytes_received=got.get("video", 0)),
        candidate_pair_rtt=None,  # aiortc has no candidate-pair stats
        loopback=True,  # publisher and subscriber are both ours: every round trip is a loop
    )


class _Observed:
    """An async method of one object, with the observers that see each call before it runs."""

    def __init__(self, inner: Callable[..., Awaitable[None]]) -> None:
        self.inner = inner
        self.observers: list[Callable[..., None]] = []

    async def __call__(self, *args: Any, **kwargs: Any) -> None:
        for observe in self.observers:
            observe(*args, **kwargs)
        await self.inner(*args, **kwargs)


def _wrap(obj: Any, name: str, observe: Callable[..., None]) -> None:
    """Let ``observe`` see every call of ``obj.name`` (an async method) before it runs.

    aiortc's DTLS transport calls ``_handle_rtp_packet``/``_handle_rtcp_packet`` on the receiver or
    sender object it routed the packet to, and a sender calls its own ``_send_rtcp``, so an
    instance attribute sees exactly that object's packets, without touching aiortc's classes or
    other peers. Several watchers of one method share one wrapper (:func:`_unwrap` removes one).
    """
    wrapper = vars(obj).get(name)
    if not isinstance(wrapper, _Observed):
        wrapper = _Observed(getattr(obj, name))
        setattr(obj, name, wrapper)
    wrapper.observers.append(observe)


def _unwrap(obj: Any, name: str, observe: Callable[..., None]) -> None:
    wrapper = vars(obj).get(name)
    if isinstance(wrapper, _Observed):
        if observe in wrapper.observers:
            wrapper.observers.remove(observe)
        if not wrapper.observers:
            del vars(obj)[name]  # the class's method shows through again


class ReceivedBytes:
    """RTP payload bytes received by one aiortc ``RTCRtpReceiver``."""

    def __init__(self, receiver: Any) -> None:
        self.bytes = 0
        self._receiver = receiver
        _wrap(receiver, "_handle_rtp_packet", self._count)

    def _count(self, packet: Any, *args: Any, **kwargs: Any) -> None:
        self.bytes += len(packet.payload)

    def close(self) -> None:
        _unwrap(self._receiver, "_handle_rtp_packet", self._count)


class RembWatch:
    """The latest REMB (receiver estimated maximum bitrate) that reached one ``RTCRtpSender``.

    aiortc applies REMB to its encoder (clamped) but keeps the figure to itself.
    """

    def __init__(self, sender: Any) -> None:
        self.bps: float | None = None
        self._sender = sender
        _wrap(sender, "_handle_rtcp_packet", self._see)

    def _see(self, packet: Any) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                return
            if self._sender._ssrc in ssrcs:
                self.bps = float(bitrate)

    def close(self) -> None:
        _unwrap(self._sender, "_handle_rtcp_packet", self._see)


class RttWatch:
    """The round trip of one ``RTCRtpSender``'s stream, from every receiver report that echoes one
    of its last :attr:`HISTORY` sender reports — libwebrtc's rule (RFC 3550 §6.4.1: rtt = arrival
    − send time of the SR named by LSR − DLSR).

    aiortc measures rtt only from an RR echoing its latest SR; SRs go out every 0.5-1.5 s, so over
    a loop longer than that (publisher → TURN → subscriber and back on a satellite link, 1.2 s)
    almost no RR qualifies and ``roundTripTime`` stays None or stale. Every RR aiortc uses is one
    this watch uses too, with the same clock and smoothing (aiortc's 0.85 EWMA), so :attr:`rtt`
    is aiortc's figure with the samples it missed added.

    Private aiortc 1.16 state: a sender's ``_ssrc``; it sends each SR through its own
    ``_send_rtcp(packets)`` (right after noting the send time, as this watch does) with the NTP
    timestamp its RR echoes as LSR (middle 32 bits), and gets RTCP through ``_handle_rtcp_packet``.
    """

    HISTORY = 16  # SRs remembered (~16 s of them)
    ALPHA = 0.85  # aiortc's rtcrtpsender.RTT_ALPHA

    def __init__(self, sender: Any, clock: Callable[[], float] = time.time) -> None:
        self.rtt: float | None = None  # smoothed, seconds
        self.samples = 0
        self._sender = sender
        self._clock = clock
        self._sent: dict[int, float] = {}  # compact NTP -> local send time, oldest first
        _wrap(sender, "_send_rtcp", self._sending)
        _wrap(sender, "_handle_rtcp_packet", self._see)

    def _sending(self, packets: Iterable[Any], *args: Any, **kwargs: Any) -> None:
        for packet in packets:
            if isinstance(packet, RtcpSrPacket) and packet.ssrc == self._sender._ssrc:
                key = (packet.sender_info.ntp_timestamp >> 16) & 0xFFFFFFFF
                self._sent.pop(key, None)  # (an SR with no RTP since the previous repeats its NTP)
                self._sent[key] = self._clock()
                if len(self._sent) > self.HISTORY:
                    del self._sent[next(iter(self._sent))]

    def _see(self, packet: Any, *args: Any, **kwargs: Any) -> None:
        if not isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            return
        for report in packet.reports:
            sent = self._sent.get(report.lsr)
            if report.ssrc != self._sender._ssrc or sent is None or not report.dlsr:
                continue
            sample = self._clock() - sent - report.dlsr / 65536
            self.rtt = sample if self.rtt is None else self.ALPHA * self.rtt + (1 - self.ALPHA) * sample
            self.samples += 1

    def close(self) -> None:
        _unwrap(self._sender, "_send_rtcp", self._sending)
        _unwrap(self._sender, "_handle_rtcp_packet", self._see)
