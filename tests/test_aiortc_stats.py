"""The getStats() → StatsSample mapping (stats.py) and the candidate functions (candidates.py).

Unit tests build reports from aiortc's own stats dataclasses, in the shapes aiortc 1.16 produces
(one entry per stream, ``jitter`` in RTP clock units, ``fractionLost`` as the raw RTCP byte); one
test maps the getStats() of two real peers connected over loopback.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtcicetransport import RTCIceCandidate
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    pack_remb_fci,
)
from aiortc.stats import (
    RTCInboundRtpStreamStats,
    RTCOutboundRtpStreamStats,
    RTCRemoteInboundRtpStreamStats,
    RTCRemoteOutboundRtpStreamStats,
    RTCStatsReport,
    RTCTransportStats,
)
from rtcprobe.core.config import VideoSpec
from rtcprobe.core.observations import IceServer, InboundStats, OutboundStats
from rtcprobe.drivers.aiortc import candidates, stats
from rtcprobe.drivers.aiortc.loopback import confine_ice_to_loopback
from rtcprobe.drivers.aiortc.media import PatternTrack, ToneTrack

pytestmark = pytest.mark.timeout(60)

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def _report(*entries: Any) -> RTCStatsReport:
    report = RTCStatsReport()
    for entry in entries:
        report.add(entry)
    return report


def _outbound(kind: str, packets: int, octets: int, n: int = 1) -> RTCOutboundRtpStreamStats:
    return RTCOutboundRtpStreamStats(
        timestamp=NOW, type="outbound-rtp", id=f"outbound-rtp_{kind}{n}", ssrc=100 + n, kind=kind,
        transportId="transport_1", packetsSent=packets, bytesSent=octets, trackId="t",
    )


def _remote_inbound(kind: str, *, jitter: int, rtt: float | None, fraction: int, lost: int,
                    n: int = 1) -> RTCRemoteInboundRtpStreamStats:
    return RTCRemoteInboundRtpStreamStats(
        timestamp=NOW, type="remote-inbound-rtp", id=f"remote-inbound-rtp_{kind}{n}", ssrc=100 + n, kind=kind,
        transportId="transport_1", packetsReceived=1000, packetsLost=lost, jitter=jitter,
        roundTripTime=rtt,  # type: ignore[arg-type]  # aiortc leaves it None until an RR echoes an SR
        fractionLost=fraction,
    )


def _inbound(kind: str, *, received: int, lost: int, jitter: int, n: int = 1) -> RTCInboundRtpStreamStats:
    return RTCInboundRtpStreamStats(
        timestamp=NOW, type="inbound-rtp", id=f"inbound-rtp_{kind}{n}", ssrc=200 + n, kind=kind,
        transportId="transport_2", packetsReceived=received, packetsLost=lost, jitter=jitter,
    )


def _transport() -> RTCTransportStats:
    return RTCTransportStats(
        timestamp=NOW, type="transport", id="transport_2", packetsSent=10, packetsReceived=500,
        bytesSent=1000, bytesReceived=400_000, iceRole="controlling", dtlsState="connected",
    )


def test_publisher_side_units_jitter_fraction_lost_rtt() -> None:
    pub = _report(
        _outbound("audio", 150, 45_000),
        _remote_inbound("audio", jitter=480, rtt=0.0125, fraction=64, lost=3),  # 480/48000 s, 64/256
        _outbound("video", 300, 600_000),
        _remote_inbound("video", jitter=900, rtt=None, fraction=0, lost=0),  # 900/90000 s; no RTT yet
    )
    sample = stats.to_sample(pub, _report(), available_bps={"video": 750_000.0})
    assert sample.audio_out == OutboundStats(
        packets_sent=150, bytes_sent=45_000, remote_rtt=0.0125, remote_jitter=0.01,
        remote_fraction_lost=0.25, remote_packets_lost=3, available_bps=None,
    )
    assert sample.video_out == OutboundStats(
        packets_sent=300, bytes_sent=600_000, remote_rtt=None, remote_jitter=0.01,
        remote_fraction_lost=0.0, remote_packets_lost=0, available_bps=750_000.0,
    )
    assert sample.audio_in is None and sample.video_in is None
    assert sample.candidate_pair_rtt is None  # aiortc has no candidate-pair stats


def test_the_rtt_watchs_figure_wins_over_aiortcs_where_it_has_one() -> None:
    pub = _report(
        _outbound("audio", 150, 45_000), _remote_inbound("audio", jitter=0, rtt=0.5, fraction=0, lost=0),
        _outbound("video", 300, 600_000), _remote_inbound("video", jitter=0, rtt=None, fraction=0, lost=0),
    )
    sample = stats.to_sample(pub, _report(), remote_rtt={"audio": 1.2, "video": None})
    assert sample.audio_out is not None and sample.audio_out.remote_rtt == 1.2  # aiortc's is stale
    assert sample.video_out is not None and sample.video_out.remote_rtt is None  # neither has one
    fallback = stats.to_sample(pub, _report(), remote_rtt={"audio": None})
    assert fallback.audio_out is not None and fallback.audio_out.remote_rtt == 0.5


def test_samples_are_loopback_samples_whose_loss_is_the_receivers() -> None:
    # Both peer connections are ours (Twilio's topology): every round trip is a loop through
    # TURN, so the core keeps it in the report and scores half of it; the loss the core reads is
    # the subscriber's inbound, which covers the whole path (the publisher's RR only informs).
    pub = _report(_outbound("video", 300, 600_000), _remote_inbound("video", jitter=0, rtt=0.02, fraction=12, lost=15))
    sub = _report(_inbound("video", received=285, lost=15, jitter=0))
    sample = stats.to_sample(pub, sub)
    assert sample.loopback is True and sample.candidate_pair_rtt is None
    assert sample.video_in == InboundStats(packets_received=285, packets_lost=15, bytes_received=0, jitter=0.0)
    assert sample.video_out is not None and sample.video_out.remote_rtt == 0.02


def test_publisher_before_any_receiver_report_has_counters_only() -> None:
    sample = stats.to_sample(_report(_outbound("video", 5, 5000)), _report())
    assert sample.video_out == OutboundStats(packets_sent=5, bytes_sent=5000)
    assert sample.audio_out is None


def test_subscriber_side_reads_inbound_only_and_uses_each_clock_rate() -> None:
    sub = _report(
        _transport(),
        _outbound("audio", 0, 0),  # recvonly transceivers still report an idle sender
        _outbound("video", 0, 0),
        RTCRemoteOutboundRtpStreamStats(
            timestamp=NOW, type="remote-outbound-rtp", id="remote-outbound-rtp_1", ssrc=201, kind="audio",
            transportId="transport_2", packetsSent=99, bytesSent=999, remoteTimestamp=NOW,
        ),
        _inbound("audio", received=500, lost=2, jitter=96),  # 96/48000 = 2 ms
        _inbound("video", received=900, lost=-1, jitter=4500),  # RTCP's lost count can go negative
    )
    sample = stats.to_sample(_report(), sub, subscriber_rates={"audio": 48000, "video": 90000},
                             bytes_received={"audio": 40_000, "video": 350_000})
    assert sample.audio_out is None and sample.video_out is None  # the idle senders are ignored
    assert sample.audio_in == InboundStats(packets_received=500, packets_lost=2, bytes_received=40_000, jitter=0.002)
    assert sample.video_in == InboundStats(packets_received=900, packets_lost=0, bytes_received=350_000, jitter=0.05)


def test_several_streams_of_one_kind_sum_counters_and_take_the_worst() -> None:
    pub = _report(
        _outbound("video", 100, 1000, n=1), _outbound("video", 50, 700, n=2),
        _remote_inbound("video", jitter=90, rtt=0.010, fraction=10, lost=1, n=1),
        _remote_inbound("video", jitter=180, rtt=0.030, fraction=20, lost=2, n=2),
    )
    sub = _report(_inbound("audio", received=10, lost=1, jitter=48, n=1),
                  _inbound("audio", received=20, lost=2, jitter=480, n=2))
    sample = stats.to_sample(pub, sub)
    assert sample.video_out is not None
    assert (sample.video_out.packets_sent, sample.video_out.bytes_sent) == (150, 1700)
    assert sample.video_out.remote_rtt == 0.030 and sample.video_out.remote_jitter == 0.002
    assert sample.video_out.remote_fraction_lost == 20 / 256 and sample.video_out.remote_packets_lost == 3
    assert sample.audio_in == InboundStats(packets_received=30, packets_lost=3, bytes_received=0, jitter=0.01)


def test_an_audio_codec_at_another_clock_rate_is_converted_with_it() -> None:
    sub = _report(_inbound("audio", received=1, lost=0, jitter=80))
    sample = stats.to_sample(_report(), sub, subscriber_rates={"audio": 8000, "video": 90000})
    assert sample.audio_in is not None and sample.audio_in.jitter == 0.01  # 80 / 8000 (PCMU)


class _FakeSender:
    """Just what RembWatch and RttWatch touch on an RTCRtpSender: its SSRC, its RTCP handler and
    its RTCP send path."""

    def __init__(self, ssrc: int) -> None:
        self._ssrc = ssrc
        self.handled: list[Any] = []
        self.sent: list[Any] = []

    async def _handle_rtcp_packet(self, packet: Any) -> None:
        self.handled.append(packet)

    async def _send_rtcp(self, packets: list[Any]) -> None:
        self.sent.extend(packets)


def test_remb_watch_keeps_the_latest_estimate_for_its_sender_and_passes_everything_on() -> None:
    sender = _FakeSender(1234)
    watch = stats.RembWatch(sender)
    remb_other = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(999_000, [42]))
    remb_ours = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(640_000, [42, 1234]))
    pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=1234, fci=b"")

    async def feed() -> None:
        for packet in (remb_other, remb_ours, pli):
            await sender._handle_rtcp_packet(packet)

    asyncio.run(feed())
    assert watch.bps is not None and abs(watch.bps - 640_000) / 640_000 < 0.001  # REMB's mantissa/exponent
    assert sender.handled == [remb_other, remb_ours, pli]  # aiortc still sees every packet
    watch.close()
    assert "_handle_rtcp_packet" not in vars(sender)


def _sr(ssrc: int, ntp_seconds: float) -> RtcpSrPacket:
    ntp = int(ntp_seconds * (1 << 32))
    return RtcpSrPacket(ssrc=ssrc, sender_info=RtcpSenderInfo(ntp_timestamp=ntp, rtp_timestamp=0,
                                                                 packet_count=0, octet_count=0))


def _rr(about: int, sr: RtcpSrPacket, dlsr: float) -> RtcpRrPacket:
    """An RR about stream ``about`` echoing ``sr`` (LSR: the middle 32 bits of its NTP timestamp)."""
    lsr = (sr.sender_info.ntp_timestamp >> 16) & 0xFFFFFFFF
    return RtcpRrPacket(ssrc=99, reports=[RtcpReceiverInfo(ssrc=about, fraction_lost=0, packets_lost=0,
                                                           highest_sequence=0, jitter=0, lsr=lsr,
                                                           dlsr=int(dlsr * 65536))])


def test_rtt_watch_measures_from_an_rr_echoing_any_recent_sr_not_only_the_latest() -> None:
    now = [100.0]
    sender = _FakeSender(1234)
    watch = stats.RttWatch(sender, clock=lambda: now[0])
    srs = [_sr(1234, 3_900_000_000 + i) for i in range(3)]

    async def run() -> None:
        for i, sr in enumerate(srs):  # sent at 100, 101, 102
            now[0] = 100.0 + i
            await sender._send_rtcp([sr])
        await sender._send_rtcp([_sr(777, 3_900_000_100)])  # another sender's SR: not ours
        now[0] = 102.5
        # Echoes the first SR (two newer ones went out since): aiortc alone would ignore it.
        await sender._handle_rtcp_packet(_rr(1234, srs[0], dlsr=1.3))
        assert watch.rtt == pytest.approx(102.5 - 100.0 - 1.3, abs=1e-4)
        await sender._handle_rtcp_packet(_rr(1234, srs[2], dlsr=0.0))  # no DLSR: no sample
        await sender._handle_rtcp_packet(_rr(4321, srs[1], dlsr=0.1))  # about another stream
        await sender._handle_rtcp_packet(_rr(1234, _sr(1234, 3_000_000_000), dlsr=0.1))  # an SR it never sent
        assert watch.samples == 1
        now[0] = 103.0
        await sender._handle_rtcp_packet(_rr(1234, srs[2], dlsr=0.2))  # smoothed as aiortc does
        assert watch.rtt == pytest.approx(0.85 * 1.2 + 0.15 * 0.8, abs=1e-4)

    asyncio.run(run())
    assert len(sender.sent) == 4 and len(sender.handled) == 5  # aiortc still sends and sees everything
    watch.close()
    assert "_send_rtcp" not in vars(sender) and "_handle_rtcp_packet" not in vars(sender)


def test_rtt_watch_forgets_old_srs_and_shares_the_rtcp_handler_with_the_remb_watch() -> None:
    now = [0.0]
    sender = _FakeSender(1234)
    remb = stats.RembWatch(sender)
    watch = stats.RttWatch(sender, clock=lambda: now[0])
    srs = [_sr(1234, 3_900_000_000 + i) for i in range(stats.RttWatch.HISTORY + 1)]
    remb_ours = RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(640_000, [1234]))

    async def run() -> None:
        for i, sr in enumerate(srs):
            now[0] = float(i)
            await sender._send_rtcp([sr])
        now[0] = 20.0
        await sender._handle_rtcp_packet(_rr(1234, srs[0], dlsr=0.5))  # fell out of the history
        assert watch.rtt is None
        await sender._handle_rtcp_packet(_rr(1234, srs[1], dlsr=0.5))
        assert watch.rtt == pytest.approx(18.5, abs=1e-4)
        remb.close()  # the other watch of the same handler carries on
        await sender._handle_rtcp_packet(remb_ours)
        assert remb.bps is None
        await sender._handle_rtcp_packet(_rr(1234, srs[1], dlsr=0.5))
        assert watch.samples == 2

    asyncio.run(run())
    watch.close()
    assert "_handle_rtcp_packet" not in vars(sender)


# --- candidates --------------------------------------------------------------------------------

TURN = IceServer(("stun:127.0.0.1:3478", "turns:127.0.0.1:5349?transport=tcp", "turn:127.0.0.1:3478?transport=udp"),
                 "1700000000:x", "pw")


def test_servers_used_mirrors_aiortc_one_stun_one_turn() -> None:
    assert candidates.servers_used([TURN]) == (
        "stun:127.0.0.1:3478", "turns:127.0.0.1:5349?transport=tcp", "tls")
    no_creds = IceServer(("turn:127.0.0.1:3478",))
    assert candidates.servers_used([no_creds, IceServer(("turn:127.0.0.1:3479?transport=tcp",), "u", "p")]) == (
        None, "turn:127.0.0.1:3479?transport=tcp", "tcp")
    assert candidates.servers_used([]) == (None, None, None)


def test_candidate_stats_names_the_server_of_local_relay_candidates_only() -> None:
    relay = RTCIceCandidate(component=1, foundation="f", ip="127.0.0.1", port=50000, priority=16777215,
                            protocol="UDP", type="relay")
    turn_udp = IceServer(("turn:127.0.0.1:3478?transport=udp",), "u", "p")
    local = candidates.candidate_stats(relay, "publisher", servers=[turn_udp])
    assert (local.url, local.relay_protocol, local.protocol) == ("turn:127.0.0.1:3478?transport=udp", "udp", "udp")
    remote = candidates.candidate_stats(relay, "publisher", servers=[turn_udp], local=False)
    assert (remote.url, remote.relay_protocol) == (None, None)


def test_nominated_pair_is_none_for_an_unconnected_or_unexpected_transport() -> None:
    async def unconnected() -> tuple[Any, Any, Any]:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            before = candidates.collect(pc, "publisher")  # no transceiver, no transport yet
            pc.addTransceiver("audio", direction="sendonly")
            transport = candidates.ice_transport(pc)
            return before, candidates.nominated_pair(transport), candidates.collect(pc, "publisher")
        finally:
            await pc.close()

    assert candidates.nominated_pair(object()) is None  # another aioice layout: None, never a crash
    before, pair, after = asyncio.run(unconnected())
    assert before == ((), None) and pair is None and after == ((), None)


# --- real getStats() from two peers on loopback ------------------------------------------------


async def _two_peers(seconds: float) -> tuple[Any, ...]:
    config = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    pub, sub = RTCPeerConnection(config), RTCPeerConnection(config)
    tracks = [ToneTrack(), PatternTrack(VideoSpec(160, 120, 30))]
    readers: list[asyncio.Task[None]] = []
    received: dict[str, stats.ReceivedBytes] = {}
    try:
        for track in tracks:
            pub.addTransceiver(track, direction="sendonly")

        @sub.on("track")
        def on_track(track: Any) -> None:
            async def drain() -> None:
                while True:
                    await track.recv()

            readers.append(asyncio.ensure_future(drain()))

        await pub.setLocalDescription(await pub.createOffer())
        await sub.setRemoteDescription(pub.localDescription)
        for transceiver in sub.getTransceivers():
            received[transceiver.kind] = stats.ReceivedBytes(transceiver.receiver)
        await sub.setLocalDescription(await sub.createAnswer())
        await pub.setRemoteDescription(sub.localDescription)
        # RTT needs an SR and then an RR echoing it (each every 0.5–1.5 s): poll until both senders
        # have one, rather than sleeping for a fixed time that is sometimes too short.
        for _ in range(int(seconds / 0.1)):
            await asyncio.sleep(0.1)
            pub_report, sub_report = await pub.getStats(), await sub.getStats()
            sample = stats.to_sample(
                pub_report, sub_report, publisher_rates=stats.clock_rates(pub),
                subscriber_rates=stats.clock_rates(sub), bytes_received={k: c.bytes for k, c in received.items()},
            )
            if all(o is not None and o.remote_rtt is not None for o in (sample.audio_out, sample.video_out)):
                break
        pub_cands = candidates.collect(pub, "publisher")
        sub_cands = candidates.collect(sub, "subscriber")
        rates = stats.clock_rates(pub)
        return sample, pub_cands, sub_cands, rates
    finally:
        for reader in readers:
            reader.cancel()
        for track in tracks:
            track.stop()
        await pub.close()
        await sub.close()
        for counter in received.values():
            counter.close()


def test_real_getstats_of_two_loopback_peers_maps_to_sane_si_values() -> None:
    with confine_ice_to_loopback():
        sample, (pub_cands, pub_pair), (sub_cands, sub_pair), rates = asyncio.run(_two_peers(8.0))
    assert rates == {"audio": 48000, "video": 90000}  # Opus and VP8 as negotiated
    for out in (sample.audio_out, sample.video_out):
        assert out is not None and out.packets_sent > 0 and out.bytes_sent > 0
        # Loopback RTT: well under 50 ms.
        assert out.remote_rtt is not None and 0 < out.remote_rtt < 0.05
        assert out.remote_jitter is not None and 0 <= out.remote_jitter < 0.05  # seconds, not RTP units
        assert out.remote_fraction_lost == 0.0
    for inbound in (sample.audio_in, sample.video_in):
        assert inbound is not None and inbound.packets_received > 0 and inbound.packets_lost == 0
        assert inbound.jitter is not None and 0 <= inbound.jitter < 0.05
        assert 0 < inbound.bytes_received
    # Payload bytes received never exceed those sent (the sender counted them first).
    assert sample.video_in.bytes_received <= sample.video_out.bytes_sent  # type: ignore[union-attr]
    # Candidates: host on loopback; the nominated pair is one of ours and one of theirs.
    assert pub_cands and all(c.address == "127.0.0.1" and c.candidate_type == "host" for c in pub_cands)
    assert pub_pair is not None and pub_pair.local_candidate in pub_cands and pub_pair.remote_candidate in pub_cands
    assert sub_pair is not None
    assert (pub_pair.local_candidate.port, pub_pair.remote_candidate.port) == (
        sub_pair.remote_candidate.port, sub_pair.local_candidate.port)
    assert {c.transport_id for c in sub_cands} == {"subscriber"}
