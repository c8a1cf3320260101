"""Holding a relay-only offerer's relayed candidates back from the answerer (holdback.py).

Without the hold, the answerer's first check reaches coturn before the offerer's TURN permission
exists, is dropped, and the answerer's ICE completes only with its STUN retransmission 0.5 s
later; with it, both sides complete within a few ms of the offerer's first check.
"""

from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcconfiguration import RTCBundlePolicy, RTCIceTransportPolicy
from rtcprobe.drivers.aiortc.holdback import hold_relay_candidates, negotiate_pair, release_when_connected
from rtcprobe.drivers.aiortc.loopback import confine_ice_to_loopback

from rtcprobe.server.coturn import CoturnServer

OFFER = "\r\n".join([
    "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0 1",
    "m=audio 20000 UDP/TLS/RTP/SAVPF 96", "c=IN IP4 127.0.0.1",
    "a=candidate:1 1 UDP 2130706431 10.0.0.1 5000 typ host",
    "a=candidate:2 1 UDP 16777215 127.0.0.1 20000 typ relay raddr 127.0.0.1 rport 4000",
    "a=end-of-candidates", "a=mid:0",
    "m=video 20000 UDP/TLS/RTP/SAVPF 97", "c=IN IP4 127.0.0.1", "a=mid:1",
    "a=candidate:2 1 UDP 16777215 127.0.0.1 20000 typ relay raddr 127.0.0.1 rport 4000",
    "a=end-of-candidates", "",
])


def test_relayed_candidates_and_end_of_candidates_are_held_with_their_section() -> None:
    held = hold_relay_candidates(RTCSessionDescription(sdp=OFFER, type="offer"))
    sdp = held.description.sdp
    assert held.description.type == "offer"
    assert "typ relay" not in sdp and "a=end-of-candidates" not in sdp
    assert "typ host" in sdp and sdp.count("a=mid:") == 2  # everything else kept
    assert [(c.type, c.ip, c.port, c.sdpMid, c.sdpMLineIndex) for c in held.candidates] == [
        ("relay", "127.0.0.1", 20000, "0", 0), ("relay", "127.0.0.1", 20000, "1", 1)]
    assert held.end_of_candidates and held.holding


def test_an_offer_without_relayed_candidates_is_handed_over_unchanged() -> None:
    offer = RTCSessionDescription(sdp=OFFER.replace("typ relay", "typ srflx"), type="offer")
    held = hold_relay_candidates(offer)
    assert held.description is offer and not held.holding


async def _connect(turn: CoturnServer, *, hold: bool) -> tuple[float, list[str]]:
    """Seconds from the offerer's setRemoteDescription to the answerer's ICE completion, and the
    answerer's remote candidate types once the held candidates were released."""
    loop = asyncio.get_running_loop()
    user, password = turn.credentials()
    ice = [RTCIceServer(urls=[turn.udp_url], username=user, credential=password)]
    sender = RTCPeerConnection(RTCConfiguration(
        iceServers=ice, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE, iceTransportPolicy=RTCIceTransportPolicy.RELAY))
    receiver = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    sender.addTransceiver("audio", direction="sendonly")
    completed = loop.create_future()

    @receiver.on("iceconnectionstatechange")
    def on_ice() -> None:
        if receiver.iceConnectionState == "completed" and not completed.done():
            completed.set_result(loop.time())

    try:
        if hold:
            held = await negotiate_pair(sender, receiver)
            started = loop.time()
            release = asyncio.ensure_future(release_when_connected(sender, receiver, held))
        else:
            await sender.setLocalDescription(await sender.createOffer())
            await receiver.setRemoteDescription(sender.localDescription)
            await receiver.setLocalDescription(await receiver.createAnswer())
            await sender.setRemoteDescription(receiver.localDescription)
            started = loop.time()
            release = asyncio.ensure_future(asyncio.sleep(0))
        elapsed = await asyncio.wait_for(completed, 5.0) - started
        await release
        transport = receiver.getTransceivers()[0].receiver.transport.transport
        return elapsed, sorted(c.type for c in transport.getRemoteCandidates())
    finally:
        await asyncio.gather(sender.close(), receiver.close())


@pytest.mark.turn
@pytest.mark.timeout(60)
def test_held_relay_candidates_spare_the_answerer_the_stun_retransmission(coturn: CoturnServer) -> None:
    async def main() -> tuple[tuple[float, list[str]], tuple[float, list[str]]]:
        with confine_ice_to_loopback():
            return await _connect(coturn, hold=False), await _connect(coturn, hold=True)

    (without, _), (with_hold, remote) = asyncio.run(main())
    # Without the hold the answerer's first check usually beats the offerer's TURN permission and
    # waits for aioice's 0.5 s retransmission — usually, not always (a race), so only the held
    # case is asserted; `without` is kept for the failure message.
    assert with_hold < 0.3, (with_hold, without)  # ~2 ms of ICE plus aioice's 20 ms pacing, with room for load
    assert remote == ["relay"]  # the peer-reflexive candidate became the signalled one


@pytest.mark.turn
@pytest.mark.timeout(120)
def test_a_relay_only_preflight_through_coturn_waits_for_no_stun_retransmission(coturn: CoturnServer) -> None:
    from rtcprobe.core.config import MediaDemand, VideoSpec

    from rtcprobe import run_preflight

    async def main() -> dict[str, float]:
        test = run_preflight(duration=1.0, media=MediaDemand(video=VideoSpec(320, 240, 30)),
                             turn_urls=[coturn.udp_url], turn_secret=coturn.secret)
        report = await test.wait()
        return {k: t.duration for k, t in report.network_timing.items() if t.duration is not None}

    timing = asyncio.run(main())
    # The publisher's DTLS timer runs from its ICE completion to the handshake's end: ~2 ms, and
    # ~480 ms when the server's first check was dropped by coturn (the server is the DTLS client).
    assert timing["dtls"] < 250, timing


async def _connect_both_relay_only(turn: CoturnServer, *, hold: bool) -> float:
    """Seconds from the end of negotiate_pair to the answerer's ICE completion when BOTH peers
    are relay-only (the emulated topology: every packet crosses the impairment relay)."""
    loop = asyncio.get_running_loop()
    user, password = turn.credentials()
    ice = [RTCIceServer(urls=[turn.udp_url], username=user, credential=password)]

    def relay_only() -> RTCPeerConnection:
        return RTCPeerConnection(RTCConfiguration(
            iceServers=ice, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE, iceTransportPolicy=RTCIceTransportPolicy.RELAY))

    sender, receiver = relay_only(), relay_only()
    sender.addTransceiver("audio", direction="sendonly")
    completed = loop.create_future()

    @receiver.on("iceconnectionstatechange")
    def on_ice() -> None:
        if receiver.iceConnectionState == "completed" and not completed.done():
            completed.set_result(loop.time())

    try:
        held = await negotiate_pair(sender, receiver, hold=hold)
        started = loop.time()
        release = asyncio.ensure_future(release_when_connected(sender, receiver, held))
        elapsed = await asyncio.wait_for(completed, 5.0) - started
        await release
        return elapsed
    finally:
        await asyncio.gather(sender.close(), receiver.close())


@pytest.mark.turn
@pytest.mark.timeout(60)
def test_a_relay_only_answerer_gets_the_whole_offer_at_once(coturn: CoturnServer) -> None:
    """It cannot learn the offerer's relayed address from a check its own allocation drops, so
    holding the candidates back would only make it wait for the release timeout."""
    async def main() -> tuple[float, float]:
        return await _connect_both_relay_only(coturn, hold=False), await _connect_both_relay_only(coturn, hold=True)

    at_once, held = asyncio.run(main())
    assert held >= 0.9  # waited for RELEASE_TIMEOUT (1 s)
    assert at_once < 0.8, at_once  # at most one 0.5 s STUN retransmission, with room for load
