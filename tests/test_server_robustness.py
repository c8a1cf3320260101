"""The server against misbehaving clients: garbage, oversized and out-of-order messages, clients
that drop at every point of the negotiation, idle clients, crowds. After each, the server has
released everything (live counters at zero) and a full well-behaved session with real aiortc
peers still works."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from rtcprobe.drivers.aiortc.loopback import confine_ice_to_loopback
from rtcprobe.drivers.aiortc.protocol import Answer, Bye, Ice, Iced, Offer, encode, parse_message
from test_server_support import (
    ColorVideoTrack,
    ToneTrack,
    assert_media_relayed,
    expect_error,
    full_session,
    pc_config,
    raw_ws,
    read_frames,
    running_server,
    token,
    wait_released,
    ws_client,
    ws_frame,
)

from rtcprobe.server import SignalingServer

pytestmark = pytest.mark.timeout(180)

WS = aiohttp.ClientWebSocketResponse


def run(coro: Coroutine[Any, Any, None]) -> None:
    with confine_ice_to_loopback():
        asyncio.run(coro)


async def then_still_serves(server: SignalingServer) -> None:
    """Everything released, and a full session with real peers works."""
    await wait_released(server)
    assert_media_relayed(await full_session(server.url))


async def wait_connected(server: SignalingServer) -> None:
    """Until the server's peer connections of every live session (here: one) are both connected."""
    for _ in range(500):
        stats = server.stats
        if stats.connections and stats.established == stats.connections:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the server's peer connections did not connect")


class Negotiator:
    """Walks one connection through the protocol with real peers, step by step."""

    def __init__(self, ws: WS) -> None:
        self.ws = ws
        self.pub = RTCPeerConnection(pc_config())
        self.sub = RTCPeerConnection(pc_config())

    async def ice(self) -> None:
        await self.ws.send_str(encode(Ice(token=token())))
        assert isinstance(parse_message((await self.ws.receive(timeout=10)).data), Iced)

    async def publisher_offer(self) -> None:
        self.pub.addTransceiver(ToneTrack(), direction="sendonly")
        self.pub.addTransceiver(ColorVideoTrack(), direction="sendonly")
        await self.pub.setLocalDescription(await self.pub.createOffer())
        await self.ws.send_str(encode(Offer(pc="publisher", sdp=self.pub.localDescription.sdp)))

    async def publisher_answer(self) -> None:
        answer = parse_message((await self.ws.receive(timeout=10)).data)
        assert isinstance(answer, Answer) and answer.pc == "publisher"
        await self.pub.setRemoteDescription(RTCSessionDescription(answer.sdp, "answer"))

    async def subscriber(self) -> None:
        self.sub.addTransceiver("audio", direction="recvonly")
        self.sub.addTransceiver("video", direction="recvonly")
        await self.sub.setLocalDescription(await self.sub.createOffer())
        await self.ws.send_str(encode(Offer(pc="subscriber", sdp=self.sub.localDescription.sdp)))
        answer = parse_message((await self.ws.receive(timeout=10)).data)
        assert isinstance(answer, Answer) and answer.pc == "subscriber"
        await self.sub.setRemoteDescription(RTCSessionDescription(answer.sdp, "answer"))

    async def to(self, phase: str) -> None:
        """Advance to ``phase``: connected | iced | published | established."""
        steps: list[Callable[[], Awaitable[None]]] = {
            "connected": [],
            "iced": [self.ice],
            "published": [self.ice, self.publisher_offer, self.publisher_answer],
            "established": [self.ice, self.publisher_offer, self.publisher_answer, self.subscriber],
        }[phase]
        for step in steps:
            await step()

    async def close(self) -> None:
        await self.pub.close()
        await self.sub.close()


PHASES = ["connected", "iced", "published", "established"]


# --- garbage -------------------------------------------------------------------------------------

GARBAGE: list[tuple[str, str | bytes, str]] = [
    ("binary", b"\x00\xffbinary", "binary"),
    ("invalid-json", "{not json", "invalid JSON"),
    ("array", "[]", "JSON object"),
    ("number", "42", "JSON object"),
    ("no-type", '{"token": "t"}', "'type'"),
    ("unknown-type", '{"type": "subscribe"}', "unknown message type"),
    ("wrong-field-type", '{"type": "ice", "token": ["t"], "version": 1}', "must be a string"),
    ("missing-field", '{"type": "offer", "pc": "publisher"}', "missing"),
    ("bad-version", '{"type": "ice", "token": "t", "version": 9}', "version"),
    ("nul-bytes", "\x00\x00\x00", "invalid JSON"),
]


@pytest.mark.parametrize(("frame", "fragment"), [g[1:] for g in GARBAGE], ids=[g[0] for g in GARBAGE])
def test_garbage_first_message(frame: str | bytes, fragment: str) -> None:
    async def body() -> None:
        async with running_server() as server:
            async with ws_client(server.url) as ws:
                await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
                code, message, close_code = await expect_error(ws)
            assert (code, close_code) == (53000, 1008)
            assert fragment in message
            await then_still_serves(server)

    run(body())


@pytest.mark.parametrize("phase", PHASES[1:])
def test_garbage_in_every_later_phase(phase: str) -> None:
    async def body() -> None:
        async with running_server() as server:
            async with ws_client(server.url) as ws:
                n = Negotiator(ws)
                try:
                    await n.to(phase)
                    await ws.send_str('{"type": "ice", "token": 1, "version": 1}')
                    code, message, close_code = await expect_error(ws)
                finally:
                    await n.close()
            assert (code, close_code) == (53000, 1008) and "token" in message
            await then_still_serves(server)

    run(body())


def test_websocket_level_garbage() -> None:
    # Frames a library would never send: a reserved opcode, a continuation with nothing to
    # continue (protocol error, 1002), a text frame that is not UTF-8 (1007). aiohttp closes those
    # connections itself.
    async def body() -> None:
        async with running_server() as server:
            for bad, expected in ((ws_frame(b"x", opcode=0x3), 1002), (ws_frame(b"x", opcode=0x0), 1002),
                                  (ws_frame(b"\xff\xfe\xfd"), 1007)):
                async with raw_ws(server.url) as (reader, writer):
                    writer.write(bad)
                    frames = await read_frames(reader)
                assert frames and frames[-1][0] == 0x8  # the server closed the connection
                assert int.from_bytes(frames[-1][1][:2], "big") == expected
            await then_still_serves(server)

    run(body())


# --- size ----------------------------------------------------------------------------------------


def test_oversized_message_gets_error_and_1009() -> None:
    async def body() -> None:
        async with running_server() as server:
            async with ws_client(server.url) as ws:
                await ws.send_str(json.dumps({"type": "ice", "token": "x" * (64 * 1024), "version": 1}))
                code, message, close_code = await expect_error(ws)
            assert (code, close_code) == (53000, 1009) and "too big" in message
            await then_still_serves(server)

    run(body())


def test_huge_frame_is_refused_from_its_header() -> None:
    # A frame announcing 1 GiB: the server answers after the header, without waiting for (or
    # buffering) the payload.
    async def body() -> None:
        async with running_server() as server:
            async with raw_ws(server.url) as (reader, writer):
                header = ws_frame(b"")[:1] + bytes([0x80 | 127]) + (1 << 30).to_bytes(8, "big") + b"\x01\x02\x03\x04"
                writer.write(header + b"{" * 1024)
                frames = await read_frames(reader)
            assert [op for op, _ in frames] == [0x1, 0x8]
            error = parse_message(frames[0][1].decode())
            assert getattr(error, "code", None) == 53000
            assert int.from_bytes(frames[1][1][:2], "big") == 1009
            await then_still_serves(server)

    run(body())


def test_message_at_the_limit_is_read() -> None:
    # Exactly 64 KiB is allowed: it is read and judged on content (here: a bad token, 20101).
    async def body() -> None:
        async with running_server() as server:
            prefix = '{"type":"ice","version":1,"token":"'
            frame = prefix + "x" * (64 * 1024 - len(prefix) - 2) + '"}'
            assert len(frame.encode()) == 64 * 1024
            async with ws_client(server.url) as ws:
                await ws.send_str(frame)
                code, _, close_code = await expect_error(ws)
            assert (code, close_code) == (20101, 1008)
            await then_still_serves(server)

    run(body())


# --- order ---------------------------------------------------------------------------------------

OUT_OF_ORDER: list[tuple[str, str, list[str], str]] = [
    # (id, phase reached first, messages sent then, fragment of the error)
    ("offer-before-ice", "connected", [encode(Offer(pc="publisher", sdp="v=0"))], "first message must be 'ice'"),
    ("bye-is-fine-but-answer-is-not", "connected", [encode(Answer(pc="publisher", sdp="v=0"))], "'answer'"),
    ("two-ice", "iced", [encode(Ice(token="t"))], "unexpected 'ice'"),
    ("subscriber-before-publisher", "iced", [encode(Offer(pc="subscriber", sdp="v=0"))], "publisher"),
    ("client-sends-iced", "iced", ['{"type":"iced","ice_servers":[]}'], "unexpected 'iced'"),
    ("client-sends-error", "iced", ['{"type":"error","code":1,"message":"m"}'], "unexpected 'error'"),
    ("publisher-offer-twice", "published", [encode(Offer(pc="publisher", sdp="v=0"))], "subscriber"),
    ("ice-after-publish", "published", [encode(Ice(token="t"))], "unexpected 'ice'"),
    ("offer-after-established", "established", [encode(Offer(pc="subscriber", sdp="v=0"))], "only 'bye'"),
    ("ice-after-established", "established", [encode(Ice(token="t"))], "only 'bye'"),
]


@pytest.mark.parametrize(("phase", "messages", "fragment"), [o[1:] for o in OUT_OF_ORDER],
                         ids=[o[0] for o in OUT_OF_ORDER])
def test_out_of_order_messages(phase: str, messages: list[str], fragment: str) -> None:
    async def body() -> None:
        async with running_server() as server:
            async with ws_client(server.url) as ws:
                n = Negotiator(ws)
                try:
                    await n.to(phase)
                    for text in messages:
                        await ws.send_str(text)
                    code, message, close_code = await expect_error(ws)
                finally:
                    await n.close()
            assert (code, close_code) == (53000, 1008)
            assert fragment in message, message
            await then_still_serves(server)

    run(body())


@pytest.mark.parametrize("phase", PHASES)
def test_bye_in_every_phase_closes_cleanly(phase: str) -> None:
    async def body() -> None:
        async with running_server() as server:
            async with ws_client(server.url) as ws:
                n = Negotiator(ws)
                try:
                    await n.to(phase)
                    await ws.send_str(encode(Bye()))
                    msg = await ws.receive(timeout=10)
                finally:
                    await n.close()
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)  # no error first
                assert ws.close_code == 1000
            await then_still_serves(server)

    run(body())


# --- bad offers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sdp", [
    "v=0\r\nm=audio notaport UDP/TLS/RTP/SAVPF 111\r\n",
    "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\na=mid:0\r\n",  # no ICE credentials
], ids=["bad-port", "no-ice-ufrag"])
def test_unusable_sdp_is_refused(sdp: str) -> None:
    async def body() -> None:
        async with running_server() as server:
            async with ws_client(server.url) as ws:
                await Negotiator(ws).to("iced")
                await ws.send_str(encode(Offer(pc="publisher", sdp=sdp)))
                code, message, close_code = await expect_error(ws)
            assert (code, close_code) == (53000, 1008) and "SDP" in message
            await then_still_serves(server)

    run(body())


def test_publisher_offer_without_media_is_refused() -> None:
    async def body() -> None:
        async with running_server() as server:
            pc = RTCPeerConnection(pc_config())
            try:
                pc.createDataChannel("nothing to relay")
                await pc.setLocalDescription(await pc.createOffer())
                async with ws_client(server.url) as ws:
                    await Negotiator(ws).to("iced")
                    await ws.send_str(encode(Offer(pc="publisher", sdp=pc.localDescription.sdp)))
                    code, message, close_code = await expect_error(ws)
            finally:
                await pc.close()
            assert (code, close_code) == (53000, 1008) and "no audio or video" in message
            await then_still_serves(server)

    run(body())


def test_subscriber_offer_that_sends_media_is_refused() -> None:
    async def body() -> None:
        async with running_server() as server:
            async with ws_client(server.url) as ws:
                n = Negotiator(ws)
                try:
                    await n.to("published")
                    n.sub.addTransceiver(ColorVideoTrack(), direction="sendrecv")
                    await n.sub.setLocalDescription(await n.sub.createOffer())
                    await ws.send_str(encode(Offer(pc="subscriber", sdp=n.sub.localDescription.sdp)))
                    code, message, close_code = await expect_error(ws)
                finally:
                    await n.close()
            assert (code, close_code) == (53000, 1008) and "recvonly" in message
            await then_still_serves(server)

    run(body())


# --- drops ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", [*PHASES, "offer-in-flight"])
@pytest.mark.parametrize("how", ["close", "abort"])
def test_client_drops_mid_negotiation(phase: str, how: str) -> None:
    async def body() -> None:
        async with running_server() as server:
            async with aiohttp.ClientSession() as http:
                ws = await http.ws_connect(server.url)
                n = Negotiator(ws)
                try:
                    if phase == "offer-in-flight":  # drop while the server is answering
                        await n.to("iced")
                        await n.publisher_offer()
                    else:
                        await n.to(phase)
                    if how == "close":
                        await ws.close()  # a clean WebSocket close, but no bye
                    else:
                        transport = ws._response.connection.transport  # no close frame: TCP dropped
                        assert transport is not None
                        transport.abort()
                finally:
                    await n.close()
            await then_still_serves(server)

    run(body())


def test_raw_drop_after_partial_frame() -> None:
    async def body() -> None:
        async with running_server() as server:
            async with raw_ws(server.url) as (_reader, writer):
                frame = ws_frame(encode(Ice(token=token())).encode())
                writer.write(frame[: len(frame) // 2])  # half a frame, then the TCP connection dies
                await writer.drain()
                await asyncio.sleep(0.05)
            await then_still_serves(server)

    run(body())


@pytest.mark.parametrize("which", ["pub", "sub"])
def test_client_closing_a_peer_connection_ends_the_session(which: str) -> None:
    # The socket stays open, but there is nothing left to relay: the server releases the session.
    async def body() -> None:
        async with running_server() as server:
            async with ws_client(server.url) as ws:
                n = Negotiator(ws)
                try:
                    await n.to("established")
                    await wait_connected(server)
                    await getattr(n, which).close()
                    msg = await ws.receive(timeout=10)
                finally:
                    await n.close()
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
                assert ws.close_code == 1000
            await then_still_serves(server)

    run(body())


def test_peer_connections_that_never_connect_end_the_session() -> None:
    # Offers whose only candidate is a dead port: negotiation completes, media cannot.
    async def body() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            dead = s.getsockname()[1]  # closed again when this block ends

        def misdirect(sdp: str) -> str:
            return re.sub(r"(a=candidate:\S+ \d+ udp \d+ 127\.0\.0\.1) \d+", rf"\1 {dead}", sdp)

        async with running_server(connect_timeout=1.0) as server:
            async with ws_client(server.url) as ws:
                n = Negotiator(ws)
                try:
                    await n.ice()
                    n.pub.addTransceiver(ColorVideoTrack(), direction="sendonly")
                    await n.pub.setLocalDescription(await n.pub.createOffer())
                    await ws.send_str(encode(Offer(pc="publisher", sdp=misdirect(n.pub.localDescription.sdp))))
                    assert isinstance(parse_message((await ws.receive(timeout=10)).data), Answer)
                    n.sub.addTransceiver("video", direction="recvonly")
                    await n.sub.setLocalDescription(await n.sub.createOffer())
                    await ws.send_str(encode(Offer(pc="subscriber", sdp=misdirect(n.sub.localDescription.sdp))))
                    assert isinstance(parse_message((await ws.receive(timeout=10)).data), Answer)
                    code, message, close_code = await expect_error(ws, timeout=30)
                finally:
                    await n.close()
            assert (code, close_code) == (53405, 1011), message
            await then_still_serves(server)

    run(body())


# --- idle ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", PHASES[:3])
def test_idle_negotiation_is_closed(phase: str) -> None:
    async def body() -> None:
        async with running_server(idle_timeout=0.4) as server:
            async with ws_client(server.url) as ws:
                n = Negotiator(ws)
                try:
                    await n.to(phase)
                    code, message, close_code = await expect_error(ws)
                finally:
                    await n.close()
            assert (code, close_code) == (53000, 1008) and "idle" in message
            await then_still_serves(server)

    run(body())


def test_established_session_outlives_the_idle_timeout() -> None:
    # Once negotiated, a preflight may run for its whole duration without sending anything.
    async def body() -> None:
        async with running_server(idle_timeout=0.3) as server:
            async with ws_client(server.url) as ws:
                n = Negotiator(ws)
                try:
                    received: dict[str, Any] = {}
                    n.sub.on("track", lambda t: received.setdefault(t.kind, t))
                    await n.to("established")
                    await asyncio.sleep(1.2)  # four idle timeouts
                    assert not ws.closed
                    frame = await asyncio.wait_for(received["video"].recv(), 10)
                    assert (frame.width, frame.height) == ColorVideoTrack().size
                    assert server.stats.peer_connections == 2
                    await ws.send_str(encode(Bye()))
                    await ws.receive(timeout=10)
                    assert ws.close_code == 1000
                finally:
                    await n.close()
            await wait_released(server)

    run(body())


# --- crowds and neighbours -----------------------------------------------------------------------


def test_an_erring_neighbour_does_not_disturb_a_live_session() -> None:
    async def body() -> None:
        async with running_server() as server:
            async def vandal() -> None:
                await asyncio.sleep(0.05)
                for frame in ("{", "[]", encode(Offer(pc="subscriber", sdp="v=0"))):
                    async with ws_client(server.url) as ws:
                        await ws.send_str(frame)
                        assert (await expect_error(ws))[0] == 53000

            result, _ = await asyncio.gather(full_session(server.url, frames=30), vandal())
            assert_media_relayed(result)
            await wait_released(server)

    run(body())


def test_fifty_clients_connect_misbehave_and_drop() -> None:
    async def body() -> None:
        async with running_server(max_sessions=8) as server:
            outcomes: list[str] = []

            async def client(i: int) -> None:
                async with aiohttp.ClientSession() as http:
                    ws = await http.ws_connect(server.url)
                    kind = i % 5
                    if kind == 0:
                        await ws.send_str("{garbage")
                    elif kind == 1:
                        await ws.send_str(encode(Ice(token=token(f"u{i}"))))
                    elif kind == 2:
                        await ws.send_str(encode(Ice(token="bad")))
                    elif kind == 3:
                        await ws.send_bytes(b"\x00" * 100)
                    reply = await ws.receive(timeout=10) if kind != 4 else None
                    outcomes.append("reply" if reply is not None and reply.type is aiohttp.WSMsgType.TEXT
                                    else "none")
                    if i % 2:
                        await ws.close()
                    else:
                        transport = ws._response.connection.transport
                        assert transport is not None
                        transport.abort()

            await asyncio.gather(*(client(i) for i in range(50)))
            assert outcomes.count("reply") == 40  # every client that spoke got an answer
            await then_still_serves(server)

    run(body())
