"""Helpers for the signaling-server tests: a minimal real client (aiohttp WebSocket + two aiortc
peers) that publishes a tone and a solid-colour video and checks what comes back through the
server. Imported by the test_server*.py files; holds no tests itself."""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import attrs
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import AUDIO_PTIME, VIDEO_CLOCK_RATE, VIDEO_PTIME
from av import AudioFrame, VideoFrame
from rtcprobe.drivers.aiortc.protocol import Answer, Bye, Error, Ice, Iced, Offer, encode, parse_message

from rtcprobe.server import SignalingServer
from rtcprobe.server.tokens import mint_token

SECRET = "test-secret-0123456789abcdef0123456789abcdef"
VIDEO_SIZE = (160, 120)  # distinctive, so a received frame of this size came from our publisher
VIDEO_LUMA = 200  # the Y value the publisher paints; VP8 keeps it within a few steps
TONE_HZ = 440.0
TONE_AMPLITUDE = 8000


def token(identity: str = "alice", **kwargs: Any) -> str:
    kwargs.setdefault("now", time.time())
    return mint_token(kwargs.pop("secret", SECRET), identity, **kwargs)


class ToneTrack(MediaStreamTrack):
    """A 440 Hz tone, 48 kHz mono, 20 ms frames, paced in real time."""

    kind = "audio"
    rate = 48000

    def __init__(self) -> None:
        super().__init__()
        self._t0: float | None = None
        self._n = 0

    async def recv(self) -> AudioFrame:
        samples = int(AUDIO_PTIME * self.rate)
        if self._t0 is None:
            self._t0 = time.time()
        else:
            await asyncio.sleep(max(0.0, self._t0 + self._n / self.rate - time.time()))
        t = (self._n + np.arange(samples)) / self.rate
        pcm = (TONE_AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.int16)
        frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._n
        frame.time_base = fractions.Fraction(1, self.rate)
        self._n += samples
        return frame


class ColorVideoTrack(MediaStreamTrack):
    """Small solid frames (luma ``VIDEO_LUMA``) at 30 fps."""

    kind = "video"

    def __init__(self, size: tuple[int, int] = VIDEO_SIZE) -> None:
        super().__init__()
        self.size = size
        self._t0: float | None = None
        self._pts = 0

    async def recv(self) -> VideoFrame:
        if self._t0 is None:
            self._t0 = time.time()
        else:
            self._pts += int(VIDEO_PTIME * VIDEO_CLOCK_RATE)
            await asyncio.sleep(max(0.0, self._t0 + self._pts / VIDEO_CLOCK_RATE - time.time()))
        w, h = self.size
        yuv = np.full((h * 3 // 2, w), 128, dtype=np.uint8)
        yuv[:h] = VIDEO_LUMA
        frame = VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK_RATE)
        return frame


@attrs.frozen
class SessionResult:
    """What a full session saw."""

    ice_servers: tuple[Any, ...]
    video_sizes: tuple[tuple[int, int], ...]  # (width, height) of each received video frame
    video_luma: float  # mean Y of the last received frame
    audio_peak_rms: float  # loudest received audio frame
    close_code: int | None  # the server's close code after our bye
    publisher_candidates: frozenset[str]  # candidate types in our publisher offer
    server_candidates: frozenset[str]  # candidate types in the server's (subscriber) answer


def pc_config() -> RTCConfiguration:
    return RTCConfiguration(iceServers=[])  # explicit: None would mean a public STUN server


async def recv_json(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10) -> dict[str, Any]:
    msg = await ws.receive(timeout=timeout)
    assert msg.type is aiohttp.WSMsgType.TEXT, f"expected a text frame, got {msg.type} {msg.data!r}"
    return json.loads(msg.data)  # type: ignore[no-any-return]


async def expect_error(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10) -> tuple[int, str, int | None]:
    """(code, message, close code) of an ``error`` followed by the server closing the socket."""
    reply = parse_message((await ws.receive(timeout=timeout)).data)
    assert isinstance(reply, Error), reply
    closing = await ws.receive(timeout=timeout)
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), closing
    return reply.code, reply.message, ws.close_code


def candidate_types(sdp: str) -> frozenset[str]:
    return frozenset(line.split()[7] for line in sdp.splitlines() if line.startswith("a=candidate:"))


async def full_session(url: str, *, identity: str = "alice", frames: int = 5, timeout: float = 20,
                       use_ice_servers: bool = False, auth: str | None = None) -> SessionResult:
    """ice → publisher offer/answer → subscriber offer/answer with real peers; receive ``frames``
    video frames and ``frames`` audio frames relayed back by the server; bye.

    With ``use_ice_servers`` the peers use the TURN servers from ``iced`` and the publisher is
    relay-only, as the real client does. ``auth`` replaces the token minted for ``identity``."""
    pub: RTCPeerConnection | None = None
    sub: RTCPeerConnection | None = None
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            await ws.send_str(encode(Ice(token=auth if auth is not None else token(identity))))
            iced = parse_message((await ws.receive(timeout=timeout)).data)
            assert isinstance(iced, Iced), iced
            if use_ice_servers:
                servers = [RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
                           for s in iced.ice_servers]
                pub = RTCPeerConnection(RTCConfiguration(iceServers=servers,
                                                         iceTransportPolicy=RTCIceTransportPolicy.RELAY))
                sub = RTCPeerConnection(RTCConfiguration(iceServers=servers))
            else:
                pub, sub = RTCPeerConnection(pc_config()), RTCPeerConnection(pc_config())

            pub.addTransceiver(ToneTrack(), direction="sendonly")
            pub.addTransceiver(ColorVideoTrack(), direction="sendonly")
            await pub.setLocalDescription(await pub.createOffer())
            await ws.send_str(encode(Offer(pc="publisher", sdp=pub.localDescription.sdp)))
            answer = parse_message((await ws.receive(timeout=timeout)).data)
            assert isinstance(answer, Answer) and answer.pc == "publisher", answer
            await pub.setRemoteDescription(RTCSessionDescription(sdp=answer.sdp, type="answer"))

            received: dict[str, MediaStreamTrack] = {}
            sub.on("track", lambda track: received.setdefault(track.kind, track))
            sub.addTransceiver("audio", direction="recvonly")
            sub.addTransceiver("video", direction="recvonly")
            await sub.setLocalDescription(await sub.createOffer())
            await ws.send_str(encode(Offer(pc="subscriber", sdp=sub.localDescription.sdp)))
            answer = parse_message((await ws.receive(timeout=timeout)).data)
            assert isinstance(answer, Answer) and answer.pc == "subscriber", answer
            await sub.setRemoteDescription(RTCSessionDescription(sdp=answer.sdp, type="answer"))
            assert set(received) == {"audio", "video"}

            sizes: list[tuple[int, int]] = []
            luma = 0.0
            for _ in range(frames):
                vf = await asyncio.wait_for(received["video"].recv(), timeout)
                sizes.append((vf.width, vf.height))
                luma = float(vf.to_ndarray(format="yuv420p")[: vf.height].mean())  # the Y plane
            peak = 0.0
            # Opus needs a few frames before the tone is fully there; look at a handful more.
            for _ in range(max(frames, 25)):
                af = await asyncio.wait_for(received["audio"].recv(), timeout)
                pcm = af.to_ndarray().astype(np.float64)
                peak = max(peak, float(np.sqrt(np.mean(pcm**2))))

            await ws.send_str(encode(Bye()))
            closing = await ws.receive(timeout=timeout)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), closing
            return SessionResult(
                ice_servers=iced.ice_servers, video_sizes=tuple(sizes), video_luma=luma, audio_peak_rms=peak,
                close_code=ws.close_code, publisher_candidates=candidate_types(pub.localDescription.sdp),
                server_candidates=candidate_types(answer.sdp),
            )
    finally:
        for pc in (pub, sub):
            if pc is not None:
                await pc.close()


def assert_media_relayed(result: SessionResult) -> None:
    assert result.video_sizes and set(result.video_sizes) == {VIDEO_SIZE}
    assert abs(result.video_luma - VIDEO_LUMA) < 8
    assert result.audio_peak_rms > TONE_AMPLITUDE / 10  # the tone, not silence
    assert result.close_code == 1000


async def wait_released(server: SignalingServer, timeout: float = 10) -> None:
    """Wait until the server's live counters are all back at zero (or fail saying which is not)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        s = server.stats
        if s.connections == s.sessions == s.peer_connections == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"server did not release everything: {server.stats}")


@asynccontextmanager
async def running_server(**options: Any) -> AsyncIterator[SignalingServer]:
    async with SignalingServer(secret=SECRET, **options) as server:
        yield server
        await wait_released(server)  # a test that leaves something behind fails here
    s = server.stats
    assert s.connections == s.sessions == s.peer_connections == 0, s


@asynccontextmanager
async def ws_client(url: str) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        yield ws


# --- a raw WebSocket client: for abrupt drops and frames aiohttp would refuse to send -------------


def ws_frame(payload: bytes, opcode: int = 0x1, *, fin: bool = True, mask: bool = True) -> bytes:
    """One RFC 6455 frame (client frames are masked)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = b"\x01\x02\x03\x04"
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@asynccontextmanager
async def raw_ws(url: str) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A WebSocket connection after the HTTP upgrade, as bare streams; aborted (no close frame,
    TCP reset) when the block exits."""
    hostport = url.removeprefix("ws://").split("/", 1)[0]
    host, port = hostport.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            f"GET /signaling HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        status = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert status.startswith(b"HTTP/1.1 101"), status
        yield reader, writer
    finally:
        writer.transport.abort()


async def read_frames(reader: asyncio.StreamReader, timeout: float = 10) -> list[tuple[int, bytes]]:
    """(opcode, payload) of every server frame until the server's close frame or EOF."""
    frames: list[tuple[int, bytes]] = []
    while True:
        try:
            head = await asyncio.wait_for(reader.readexactly(2), timeout)
        except asyncio.IncompleteReadError:
            return frames
        n = head[1] & 0x7F
        if n == 126:
            n = int.from_bytes(await reader.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await reader.readexactly(8), "big")
        payload = await reader.readexactly(n)
        frames.append((head[0] & 0x0F, payload))
        if head[0] & 0x0F == 0x8:
            return frames
