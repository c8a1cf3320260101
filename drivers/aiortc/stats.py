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
publisher ``remote-inbound-rtp.roundTripTime``    ``OutboundStats.remote_rtt``              seconds already
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

aiortc's ``inbound-rtp`` has no ``bytesReceived`` and its transport counts bytes for all kinds
together, so :class:`ReceivedBytes` counts RTP payload bytes per receiver — the same measure as the
sender's ``bytesSent`` (RTCP's octet count), so outgoing and incoming bitrates compare.

Only the direction each peer connection carries is read: the subscriber's recvonly transceivers
still have senders whose ``outbound-rtp`` entries say 0, and the publisher's receivers never see
a stream.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import SimpleNamespace
from typing import Any

from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, unpack_remb_fci
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
    report: Mapping[str, Any], kind: str, *, clock_rate: int, available_bps: float | None = None
) -> OutboundStats | None:
    """The publisher's view of its ``kind`` stream(s); None when it sends none."""
    sent = _entries(report, "outbound-rtp", kind)
    if not sent:
        return None
    remote = _entries(report, "remote-inbound-rtp", kind)
    lost = [r.packetsLost for r in remote if r.packetsLost is not None]
    return OutboundStats(
        packets_sent=sum(int(s.packetsSent) for s in sent),
        bytes_sent=sum(int(s.bytesSent) for s in sent),
        remote_rtt=_max(r.roundTripTime for r in remote),  # None until an RR echoes an SR
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
) -> StatsSample:
    """One sample from the two reports (candidates are added by the caller)."""
    avail = available_bps or {}
    got = bytes_received or {}
    return StatsSample(
        audio_out=outbound(publisher, "audio", clock_rate=publisher_rates["audio"], available_bps=avail.get("audio")),
        video_out=outbound(publisher, "video", clock_rate=publisher_rates["video"], available_bps=avail.get("video")),
        audio_in=inbound(subscriber, "audio", clock_rate=subscriber_rates["audio"], bytes_received=got.get("audio", 0)),
        video_in=inbound(subscriber, "video", clock_rate=subscriber_rates["video"], bytes_received=got.get("video", 0)),
        candidate_pair_rtt=None,  # aiortc has no candidate-pair stats
        loopback=True,  # publisher and subscriber are both ours: every round trip is a loop
    )


def _wrap(obj: Any, name: str, observe: Callable[..., None]) -> None:
    """Let ``observe`` see every call of ``obj.name`` (an async method) before it runs.

    aiortc's DTLS transport calls ``_handle_rtp_packet``/``_handle_rtcp_packet`` on the receiver or
    sender object it routed the packet to, so an instance attribute sees exactly that object's
    packets, without touching aiortc's classes or other peers.
    """
    inner: Callable[..., Awaitable[None]] = getattr(obj, name)

    async def wrapper(*args: Any, **kwargs: Any) -> None:
        observe(*args, **kwargs)
        await inner(*args, **kwargs)

    setattr(obj, name, wrapper)


def _unwrap(obj: Any, name: str) -> None:
    obj.__dict__.pop(name, None)  # the class's method shows through again


class ReceivedBytes:
    """RTP payload bytes received by one aiortc ``RTCRtpReceiver``."""

    def __init__(self, receiver: Any) -> None:
        self.bytes = 0
        self._receiver = receiver
        _wrap(receiver, "_handle_rtp_packet", self._count)

    def _count(self, packet: Any, *args: Any, **kwargs: Any) -> None:
        self.bytes += len(packet.payload)

    def close(self) -> None:
        _unwrap(self._receiver, "_handle_rtp_packet")


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
        _unwrap(self._sender, "_handle_rtcp_packet")
