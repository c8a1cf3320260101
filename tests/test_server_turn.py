"""The server with a real TURN server (coturn on loopback): the credentials it mints are accepted,
and a relay-only publisher reaches the server's host-only peer through the relay."""

from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCConfiguration, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnection
from rtcprobe.drivers.aiortc.loopback import confine_ice_to_loopback
from rtcprobe.drivers.aiortc.protocol import Bye, Ice, Iced, encode, parse_message
from test_server_support import (
    assert_media_relayed,
    candidate_types,
    full_session,
    running_server,
    token,
    ws_client,
)

from rtcprobe.server.coturn import CoturnServer

# coturn is the shared session fixture of tests/conftest.py (skipped where coturn is missing, a
# failure under CI).
pytestmark = [pytest.mark.turn, pytest.mark.timeout(120)]

def test_relay_only_publisher_through_coturn(coturn: CoturnServer) -> None:
    async def body() -> None:
        async with running_server(turn_urls=(coturn.udp_url,), turn_secret=coturn.secret) as server:
            result = await full_session(server.url, use_ice_servers=True)
            assert_media_relayed(result)
            (ice_server,) = result.ice_servers
            assert ice_server.urls == (coturn.udp_url,)
            assert result.publisher_candidates == {"relay"}  # the publisher really went through TURN
            assert result.server_candidates == {"host"}  # the server's own peer stays host-only

    with confine_ice_to_loopback():
        asyncio.run(body())


@pytest.mark.parametrize("relayed", [True, False], ids=["coturns-secret", "another-secret"])
def test_coturn_accepts_exactly_the_credentials_minted_with_its_secret(coturn: CoturnServer, relayed: bool) -> None:
    # A relay-only peer gathers a relay candidate only if coturn accepted the allocation.
    server_secret = coturn.secret if relayed else "not-coturns-secret"

    async def body() -> None:
        async with running_server(turn_urls=(coturn.udp_url,), turn_secret=server_secret) as server:
            async with ws_client(server.url) as ws:
                await ws.send_str(encode(Ice(token=token())))
                iced = parse_message((await ws.receive()).data)
                await ws.send_str(encode(Bye()))
            assert isinstance(iced, Iced)
            servers = [RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
                       for s in iced.ice_servers]
            pc = RTCPeerConnection(RTCConfiguration(iceServers=servers, iceTransportPolicy=RTCIceTransportPolicy.RELAY))
            try:
                pc.addTransceiver("audio", direction="sendonly")
                await pc.setLocalDescription(await pc.createOffer())
                types = candidate_types(pc.localDescription.sdp)
            finally:
                await pc.close()
            assert types == (frozenset({"relay"}) if relayed else frozenset())

    with confine_ice_to_loopback():
        asyncio.run(body())
