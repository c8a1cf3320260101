"""The signaling server with real clients: full sessions with real aiortc peers, tokens on the
wire, TURN credentials, capacity limits, shutdown. Every server is checked to release everything
(its live counters back at zero) when the test ends."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Coroutine
from typing import Any

import aiohttp
import pytest
from rtcprobe.core.errors import ConfigError
from rtcprobe.drivers.aiortc import loopback
from rtcprobe.drivers.aiortc.loopback import confine_ice_to_loopback, is_confined
from rtcprobe.drivers.aiortc.protocol import Bye, Ice, Iced, encode, parse_message
from test_server_support import (
    SECRET,
    assert_media_relayed,
    expect_error,
    full_session,
    running_server,
    token,
    wait_released,
    ws_client,
)

from rtcprobe.server import ServerConfig, SignalingServer
from rtcprobe.server.tokens import mint_token

pytestmark = pytest.mark.timeout(120)


def run(coro: Coroutine[Any, Any, None]) -> None:
    with confine_ice_to_loopback():  # the test's client peers, like the server's, stay on loopback
        asyncio.run(coro)


def test_health_endpoint() -> None:
    async def body() -> None:
        async with running_server() as server, aiohttp.ClientSession() as http:
            base = server.url.removesuffix("/signaling").replace("ws://", "http://")
            async with http.get(base + "/health") as resp:
                assert resp.status == 200
                assert await resp.json() == {"status": "ok"}
            async with http.get(base + "/signaling") as resp:  # plain HTTP on the WebSocket endpoint
                assert resp.status == 400

    run(body())


def test_full_session_relays_the_publishers_media_back() -> None:
    async def body() -> None:
        async with running_server() as server:
            assert server.url.startswith("ws://127.0.0.1:") and server.url.endswith("/signaling")
            result = await full_session(server.url)
            assert_media_relayed(result)
            assert result.ice_servers == ()  # no TURN configured: an empty list, never a STUN server
            await wait_released(server)
            assert server.stats.total_sessions == 1

    run(body())


def test_sessions_leave_no_tasks_or_threads_behind() -> None:
    async def body() -> None:
        async with running_server() as server:
            baseline = asyncio.all_tasks()
            for _ in range(3):
                assert_media_relayed(await full_session(server.url))
                await wait_released(server)
            for _ in range(250):  # relay and drain tasks end as their tracks end
                left = asyncio.all_tasks() - baseline
                decoders = [t for t in threading.enumerate() if t.name.endswith("-decoder")]
                if not left and not decoders:
                    break
                await asyncio.sleep(0.02)
            assert not left, [t.get_coro() for t in left]
            # Every receiver (ours and the server's) runs a decoder thread until it is closed.
            assert not decoders, decoders

    run(body())


def test_concurrent_sessions_each_get_their_own_relay() -> None:
    async def body() -> None:
        async with running_server() as server:
            results = await asyncio.gather(*(full_session(server.url, identity=f"user{i}") for i in range(3)))
            for result in results:
                assert_media_relayed(result)
            assert server.stats.total_sessions == 3

    run(body())


def test_live_counters_while_a_session_is_established() -> None:
    async def body() -> None:
        async with running_server() as server:
            seen: list[Any] = []

            async def watch() -> None:
                while True:
                    seen.append(server.stats)
                    await asyncio.sleep(0.01)

            watcher = asyncio.ensure_future(watch())
            try:
                assert_media_relayed(await full_session(server.url))
            finally:
                watcher.cancel()
            assert max(s.peer_connections for s in seen) == 2
            assert max(s.sessions for s in seen) == 1
            assert max(s.connections for s in seen) == 1
            assert max(s.established for s in seen) == 1  # media was relayed: both peers connected

    run(body())


@pytest.mark.parametrize(
    ("make_token", "code"),
    [
        (lambda: "garbage", 20101),
        (lambda: token(issuer="someone-else"), 20103),
        (lambda: token(subject=""), 20103),
        (lambda: token(now=time.time() - 7200, ttl=60), 20104),
        (lambda: token(not_before=time.time() + 600), 20105),
        (lambda: token(secret="not-the-servers-secret-0123456789abcdef"), 20107),
    ],
    ids=["garbage", "wrong-issuer", "empty-sub", "expired", "nbf-future", "wrong-secret"],
)
def test_bad_tokens_get_their_code_then_service_continues(make_token: Any, code: int) -> None:
    async def body() -> None:
        async with running_server() as server:
            async with ws_client(server.url) as ws:
                await ws.send_str(encode(Ice(token=make_token())))
                got, message, close_code = await expect_error(ws)
            assert (got, close_code) == (code, 1008), message
            assert message  # says what was wrong
            assert server.stats.total_sessions == 0  # a refused token never held a slot
            assert_media_relayed(await full_session(server.url))

    run(body())


def test_custom_issuer_is_enforced() -> None:
    async def body() -> None:
        async with running_server(issuer="acme") as server:
            async with ws_client(server.url) as ws:
                await ws.send_str(encode(Ice(token=token())))  # issued by "rtcprobe"
                assert (await expect_error(ws))[0] == 20103
            async with ws_client(server.url) as ws:
                await ws.send_str(encode(Ice(token=token(issuer="acme"))))
                assert isinstance(parse_message((await ws.receive()).data), Iced)
                await ws.send_str(encode(Bye()))

    run(body())


def test_turn_configured_hands_out_rest_api_credentials() -> None:
    async def body() -> None:
        urls = ("turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp")
        async with running_server(turn_urls=urls, turn_secret="shared", turn_ttl=600) as server:
            async with ws_client(server.url) as ws:
                before = time.time()
                await ws.send_str(encode(Ice(token=token("carol"))))
                iced = parse_message((await ws.receive()).data)
                after = time.time()
                await ws.send_str(encode(Bye()))
        assert isinstance(iced, Iced) and iced.ttl == 600
        (server_entry,) = iced.ice_servers
        assert server_entry.urls == urls
        assert server_entry.username is not None and server_entry.credential is not None
        expiry, _, identity = server_entry.username.partition(":")
        assert identity == "carol"
        assert int(before) + 600 <= int(expiry) <= int(after) + 600
        expected = hmac.new(b"shared", server_entry.username.encode(), hashlib.sha1).digest()
        assert base64.b64decode(server_entry.credential) == expected

    run(body())


def test_max_sessions_refuses_with_server_busy() -> None:
    async def body() -> None:
        async with running_server(max_sessions=1) as server:
            async with ws_client(server.url) as first:
                await first.send_str(encode(Ice(token=token("first"))))
                assert isinstance(parse_message((await first.receive()).data), Iced)
                async with ws_client(server.url) as second:
                    await second.send_str(encode(Ice(token=token("second"))))
                    code, message, close_code = await expect_error(second)
                assert (code, close_code) == (53000, 1013) and "busy" in message
                await first.send_str(encode(Bye()))
                await first.receive()
            await wait_released(server)
            assert_media_relayed(await full_session(server.url))  # the slot is free again

    run(body())


def test_max_connections_refuses_extra_sockets() -> None:
    async def body() -> None:
        async with running_server(max_sessions=1, max_connections=2) as server:
            async with ws_client(server.url) as a, ws_client(server.url) as b, ws_client(server.url) as c:
                code, message, close_code = await expect_error(c)
                assert (code, close_code) == (53000, 1013) and "busy" in message
                for ws in (a, b):
                    await ws.send_str(encode(Bye()))

    run(body())


def test_close_with_live_sessions_releases_everything() -> None:
    async def body() -> None:
        server = SignalingServer(secret=SECRET)
        await server.start()
        assert is_confined()
        established = asyncio.Event()
        gone = asyncio.Event()
        close_codes: list[int | None] = []

        async def client() -> None:
            from aiortc import RTCPeerConnection, RTCSessionDescription
            from rtcprobe.drivers.aiortc.protocol import Answer, Offer
            from test_server_support import ColorVideoTrack, pc_config

            pub = RTCPeerConnection(pc_config())
            try:
                async with ws_client(server.url) as ws:
                    await ws.send_str(encode(Ice(token=token())))
                    await ws.receive()
                    pub.addTransceiver(ColorVideoTrack(), direction="sendonly")
                    await pub.setLocalDescription(await pub.createOffer())
                    await ws.send_str(encode(Offer(pc="publisher", sdp=pub.localDescription.sdp)))
                    answer = parse_message((await ws.receive()).data)
                    assert isinstance(answer, Answer)
                    await pub.setRemoteDescription(RTCSessionDescription(answer.sdp, "answer"))
                    established.set()
                    msg = await ws.receive()  # the server going away
                    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
                    close_codes.append(ws.close_code)
                    gone.set()
            finally:
                await pub.close()

        task = asyncio.ensure_future(client())
        await asyncio.wait_for(established.wait(), 20)
        assert server.stats.peer_connections == 1 and server.stats.sessions == 1
        await server.close()
        s = server.stats
        assert s.connections == s.sessions == s.peer_connections == 0, s
        await asyncio.wait_for(gone.wait(), 10)
        await task
        assert close_codes == [1001]
        await server.close()  # idempotent

    run(body())


def test_server_config_errors_are_one_line_config_errors() -> None:
    for kwargs in ({"secret": ""}, {"secret": "s", "port": 70000}, {"secret": "s", "idle_timeout": 0},
                   {"secret": "s", "connect_timeout": float("nan")},
                   {"secret": "s", "turn_urls": ("turn:h",)}, {"secret": "s", "max_sessions": 0},
                   {"secret": "s", "turn_urls": ("turn:h:1:2",), "turn_secret": "t"}):
        with pytest.raises(ConfigError) as info:
            ServerConfig(**kwargs)
        assert "\n" not in str(info.value)


def test_port_in_use_is_a_config_error() -> None:
    async def body() -> None:
        async with running_server() as first:
            depth = loopback.depth()
            second = SignalingServer(secret=SECRET, port=first.port)
            with pytest.raises(ConfigError, match="cannot listen"):
                await second.start()
            assert loopback.depth() == depth  # the failed start gave back its loopback confinement
            assert_media_relayed(await full_session(first.url))  # the first server is unaffected

    run(body())


def test_mint_token_for_the_server_matches_its_issuer() -> None:
    # The token helper and the server agree on defaults: a default token opens a default server.
    async def body() -> None:
        async with running_server() as server, ws_client(server.url) as ws:
            await ws.send_str(encode(Ice(token=mint_token(SECRET, "dave", now=time.time()))))
            assert isinstance(parse_message((await ws.receive()).data), Iced)
            await ws.send_str(encode(Bye()))
            closing = await ws.receive()
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws.close_code == 1000

    run(body())
