"""Helpers for the signaling-server tests: a minimal real client (an aiohttp WebSocket speaking
protocol version 2), a raw WebSocket client for frames a library would not send, and real reports
built with the core's own types. Imported by the test_server*.py files; holds no tests itself."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import attrs
from rtcprobe.core.errors import MEDIA_CONNECTION
from rtcprobe.core.report import (
    IceCandidateStats,
    PreflightReport,
    ProgressEvent,
    ReportStats,
    RunInfo,
    Sample,
    SelectedCandidatePair,
    Stat,
    Timing,
)
from rtcprobe.drivers.aiortc.protocol import Bye, Error, Ice, Iced, Report, Reported, encode, parse_message

from rtcprobe.server import SignalingServer
from rtcprobe.server.tokens import mint_token

SECRET = "test-secret-0123456789abcdef0123456789abcdef"
WS = aiohttp.ClientWebSocketResponse
CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


def token(identity: str = "alice", **kwargs: Any) -> str:
    kwargs.setdefault("now", time.time())
    return mint_token(kwargs.pop("secret", SECRET), identity, **kwargs)


# --- reports -------------------------------------------------------------------------------------


def _candidate(kind: str, port: int) -> IceCandidateStats:
    return IceCandidateStats(transport_id="t0", candidate_type=kind, port=port, address="127.0.0.1",
                             priority=2130706431 if kind == "host" else 16777215, protocol="udp",
                             url=None if kind == "host" else "turn:127.0.0.1:3478?transport=udp",
                             relay_protocol=None if kind == "host" else "udp")


def completed_report(level: int = 4, samples: int = 10) -> PreflightReport:
    """A completed preflight's report, as a client builds it (the core's types)."""
    start = 1_700_000_000_000.0
    steps = (("mediaAcquired", 12.5), ("connected", 40.0), ("iceConnected", 180.0), ("dtlsConnected", 260.0),
             ("peerConnectionConnected", 262.0), ("mediaSubscribed", 270.0), ("mediaStarted", 380.0))
    relay, host = _candidate("relay", 50000), _candidate("host", 40000)
    return PreflightReport(
        test_timing=Timing(start, start + 10_400.0),
        network_timing={"connect": Timing(start, start + 40.0), "ice": Timing(start + 60, start + 180),
                        "dtls": Timing(start + 180, start + 260), "media": Timing(start + 270, start + 380)},
        stats=ReportStats(jitter=Stat(0.001, 0.004, 0.002), rtt=Stat(20.0, 44.0, 30.5),
                          packet_loss=Stat(0.0, 1.0, 0.2)),
        ice_candidate_stats=(relay, host),
        selected_ice_candidate_pair_stats=SelectedCandidatePair(relay, host),
        progress_events=tuple(ProgressEvent(name, ms) for name, ms in steps),
        network_quality_level=level,
        network_quality_stats={"level": level, "audio": {"send": 5, "recv": 4}},
        bitrate_outgoing=Stat(900.0, 1100.0, 1000.0), bitrate_incoming=Stat(850.0, 1050.0, 990.0),
        samples=tuple(Sample(time=1000.0 * (i + 1), jitter=0.002, rtt=30.0, packet_loss=0.1,
                             outgoing_bitrate=1000.0, incoming_bitrate=990.0, level=level) for i in range(samples)),
        run=RunInfo(driver="aiortc", version="0.0.0"),
    )


def failed_report() -> PreflightReport:
    """A failed preflight's partial report (no stats, an error)."""
    start = 1_700_000_000_000.0
    return PreflightReport(
        test_timing=Timing(start, start + 5000.0),
        progress_events=(ProgressEvent("mediaAcquired", 10.0), ProgressEvent("connected", 35.0)),
        run=RunInfo(driver="aiortc", version="0.0.0"),
        error=MEDIA_CONNECTION.with_message("the sender gathered no ICE candidates"),
    )


# --- the WebSocket client ------------------------------------------------------------------------


async def recv_json(ws: WS, timeout: float = 10) -> dict[str, Any]:
    msg = await ws.receive(timeout=timeout)
    assert msg.type is aiohttp.WSMsgType.TEXT, f"expected a text frame, got {msg.type} {msg.data!r}"
    return json.loads(msg.data)  # type: ignore[no-any-return]


async def expect_error(ws: WS, timeout: float = 10) -> tuple[int, str, int | None]:
    """(code, message, close code) of an ``error`` followed by the server closing the socket."""
    reply = parse_message((await ws.receive(timeout=timeout)).data)
    assert isinstance(reply, Error), reply
    closing = await ws.receive(timeout=timeout)
    assert closing.type in CLOSED, closing
    return reply.code, reply.message, ws.close_code


async def expect_close(ws: WS, timeout: float = 10) -> int | None:
    """The close code of a server closing without an ``error`` first."""
    msg = await ws.receive(timeout=timeout)
    assert msg.type in CLOSED, f"expected the socket to close, got {msg.type} {msg.data!r}"
    return ws.close_code


async def hello(ws: WS, identity: str = "alice", *, token_value: str | None = None) -> Iced:
    await ws.send_str(encode(Ice(token=token_value if token_value is not None else token(identity))))
    iced = parse_message((await ws.receive(timeout=10)).data)
    assert isinstance(iced, Iced), iced
    return iced


@attrs.frozen
class SessionResult:
    """What a good session saw."""

    iced: Iced
    reported: Reported
    close_code: int | None


async def good_session(url: str, *, identity: str = "alice", report: PreflightReport | dict[str, Any] | None = None,
                       hold: float = 0.0, token_value: str | None = None) -> SessionResult:
    """ice → iced → (``hold`` s: the client's test) → report → reported → bye → close 1000.
    ``token_value`` replaces the token minted for ``identity``."""
    async with ws_client(url) as ws:
        iced = await hello(ws, identity, token_value=token_value)
        await asyncio.sleep(hold)
        body = report if isinstance(report, dict) else (report or completed_report()).to_dict()
        await ws.send_str(encode(Report(report=body)))
        reported = parse_message((await ws.receive(timeout=10)).data)
        assert isinstance(reported, Reported), reported
        await ws.send_str(encode(Bye()))
        return SessionResult(iced=iced, reported=reported, close_code=await expect_close(ws))


async def wait_released(server: SignalingServer, timeout: float = 10) -> None:
    """Wait until the server's live counters are back at zero (or fail saying which is not)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        s = server.stats
        if s.connections == s.sessions == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"server did not release everything: {server.stats}")


@asynccontextmanager
async def running_server(**options: Any) -> AsyncIterator[SignalingServer]:
    async with SignalingServer(secret=SECRET, **options) as server:
        yield server
        await wait_released(server)  # a test that leaves something behind fails here
    s = server.stats
    assert s.connections == s.sessions == 0, s


@asynccontextmanager
async def ws_client(url: str, **options: Any) -> AsyncIterator[WS]:
    async with aiohttp.ClientSession() as http, http.ws_connect(url, **options) as ws:
        yield ws


def http_base(server: SignalingServer) -> str:
    return server.url.removesuffix("/signaling").replace("ws://", "http://")


async def metrics_text(server: SignalingServer) -> str:
    async with aiohttp.ClientSession() as http, http.get(http_base(server) + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        return await resp.text()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text ``text`` (0 when the series is absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        series, value = line.rsplit(" ", 1)
        head, _, rest = series.partition("{")
        got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if head == name and got == want:
            return float(value)
    return 0.0


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


async def read_frame(reader: asyncio.StreamReader, timeout: float = 10) -> tuple[int, bytes] | None:
    """(opcode, payload) of the server's next frame, None at EOF."""
    try:
        head = await asyncio.wait_for(reader.readexactly(2), timeout)
    except asyncio.IncompleteReadError:
        return None
    n = head[1] & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    return head[0] & 0x0F, await reader.readexactly(n)


async def read_frames(reader: asyncio.StreamReader, timeout: float = 10) -> list[tuple[int, bytes]]:
    """(opcode, payload) of every server frame until the server's close frame or EOF."""
    frames: list[tuple[int, bytes]] = []
    while (frame := await read_frame(reader, timeout)) is not None:
        frames.append(frame)
        if frame[0] == 0x8:
            break
    return frames
