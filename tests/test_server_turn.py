"""The server with a real TURN server (coturn on loopback): the credentials it hands out in
``iced`` are the ones coturn accepts for an allocation, over UDP and TCP, and only with coturn's
secret. The allocation is a real one (aioice's TURN client, as the client's relay-only peer
connection makes it)."""

from __future__ import annotations

import asyncio

import pytest
from rtcprobe.drivers.aiortc.protocol import Bye, Iced, encode
from rtcprobe.drivers.aiortc.turn_client import diagnose_turn
from test_server_support import expect_close, hello, running_server, ws_client

from rtcprobe.server.coturn import CoturnServer

# coturn is the shared session fixture of tests/conftest.py (skipped where coturn is missing, a
# failure under CI).
pytestmark = [pytest.mark.turn, pytest.mark.timeout(120)]


async def _iced(coturn: CoturnServer, secret: str) -> Iced:
    async with running_server(turn_urls=coturn.turn_urls, turn_secret=secret) as server:
        async with ws_client(server.url) as ws:
            iced = await hello(ws, "ivan")
            await ws.send_str(encode(Bye()))
            assert await expect_close(ws) == 1000
    return iced


def test_coturn_allocates_with_the_credentials_handed_out(coturn: CoturnServer) -> None:
    async def body() -> None:
        iced = await _iced(coturn, coturn.secret)
        (entry,) = iced.ice_servers
        assert entry.urls == coturn.turn_urls  # UDP and TCP, under one set of credentials
        for url in entry.urls:
            assert await diagnose_turn(url, entry.username, entry.credential) is None, url

    asyncio.run(body())


def test_coturn_refuses_credentials_minted_with_another_secret(coturn: CoturnServer) -> None:
    async def body() -> None:
        (entry,) = (await _iced(coturn, "not-coturns-secret")).ice_servers
        for url in entry.urls:
            why = await diagnose_turn(url, entry.username, entry.credential)
            assert why is not None and "refused the credentials" in why, (url, why)

    asyncio.run(body())
