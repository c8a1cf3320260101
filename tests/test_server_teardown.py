"""A session released in the middle of setup leaves nothing behind on the server.

A real aiortc client drops (its WebSocket aborted or closed without ``bye``) at each point of the
setup: right after the publisher's answer, while ICE checks run, while the DTLS handshake runs,
right after the subscriber's answer. Then no task the server, aiortc or aioice started for the
server's side may survive (after a short grace period), no receiver's decoder thread may be left
running, and asyncio must not log "Task exception was never retrieved" for any of them. Each drop
point runs a few rounds: the races it is about (aiortc's connect task and aioice's consent loop
resuming after ``close()``) depend on timing.

The test client is the offerer (ICE controlling), so a task is told apart by the side of the
aiortc/aioice object it runs a method of; the client's own leftovers are not this test's business,
but it retrieves its own connect tasks and stops its receivers again after ``close()`` (as the
client driver does), so any "never retrieved" or decoder thread left is the server's.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioice import Connection
from aiortc import (
    RTCDtlsTransport,
    RTCIceTransport,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCSctpTransport,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from rtcprobe.drivers.aiortc import teardown
from rtcprobe.drivers.aiortc.loopback import confine_ice_to_loopback
from rtcprobe.drivers.aiortc.protocol import Answer, Ice, Iced, Offer, encode, parse_message
from test_server_support import ColorVideoTrack, ToneTrack, pc_config, running_server, token, wait_released

import rtcprobe.server
from rtcprobe.server import SignalingServer

pytestmark = pytest.mark.timeout(120)

SERVER_DIR = Path(rtcprobe.server.__file__).parent  # the server's modules: a task running their code is its
GRACE = 0.25  # s: the release awaits what it ends, so leftovers should be gone at once
ROUNDS = 5
DROP_POINTS = ["publisher-answered", "ice", "dtls", "subscriber-answered"]


def _client_side(task: asyncio.Task[Any]) -> bool:
    """Whether ``task`` runs a method of the test client's (the offerer's) aiortc/aioice objects."""
    owner = teardown.task_owner(task)
    if isinstance(owner, Connection):
        return bool(owner.ice_controlling)
    if isinstance(owner, RTCIceTransport):
        return owner.role == "controlling"
    if isinstance(owner, RTCDtlsTransport | RTCSctpTransport):
        dtls = owner.transport if isinstance(owner, RTCSctpTransport) else owner
        return dtls.transport.role == "controlling"
    if isinstance(owner, RTCRtpSender | RTCRtpReceiver):
        return owner.transport.transport.role == "controlling"
    if isinstance(owner, RTCPeerConnection):
        return owner.localDescription is not None and owner.localDescription.type == "offer"
    return False


def _interesting(task: asyncio.Task[Any]) -> bool:
    """A task created by aiortc, aioice or the server (not aiohttp's, not the test's)."""
    coro = task.get_coro()
    code = getattr(coro, "cr_code", None)
    filename = code.co_filename if code is not None else ""
    return (isinstance(teardown.task_owner(task), MediaRelay) or Path(filename).parent == SERVER_DIR
            or "/aiortc/" in filename or "/aioice/" in filename)


def _adopt(pc: RTCPeerConnection, kept: set[asyncio.Task[Any]]) -> None:
    """The client's own connect tasks: keep them and retrieve their outcome (see the docstring)."""
    for task in asyncio.all_tasks():
        if teardown.task_owner(task) is pc and task not in kept:
            kept.add(task)
            task.add_done_callback(lambda t: t.cancelled() or t.exception())


class Client:
    """A real aiortc client that can drop at any point of the setup."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.pub = RTCPeerConnection(pc_config())
        self.sub = RTCPeerConnection(pc_config())
        self.connect_tasks: set[asyncio.Task[Any]] = set()

    async def _negotiate(self, pc: RTCPeerConnection, name: str) -> None:
        await pc.setLocalDescription(await pc.createOffer())
        _adopt(pc, self.connect_tasks)
        await self.ws.send_str(encode(Offer(pc=name, sdp=pc.localDescription.sdp)))
        answer = parse_message((await self.ws.receive(timeout=10)).data)
        assert isinstance(answer, Answer) and answer.pc == name, answer
        await pc.setRemoteDescription(RTCSessionDescription(answer.sdp, "answer"))
        _adopt(pc, self.connect_tasks)

    async def setup_until(self, point: str) -> None:
        """Negotiate until ``point`` (one of DROP_POINTS) is reached."""
        await self.ws.send_str(encode(Ice(token=token())))
        assert isinstance(parse_message((await self.ws.receive(timeout=10)).data), Iced)
        self.pub.addTransceiver(ToneTrack(), direction="sendonly")
        self.pub.addTransceiver(ColorVideoTrack(), direction="sendonly")
        reached = asyncio.Event()
        if point == "ice":  # our ICE checks started: the server's are running too
            self.pub.on("iceconnectionstatechange",
                        lambda: reached.set() if self.pub.iceConnectionState == "checking" else None)
        elif point == "dtls":  # ICE completed on our side: the DTLS handshake is in flight
            dtls = self.pub.getTransceivers()[0].sender.transport
            dtls.on("statechange", lambda: reached.set() if dtls.state == "connecting" else None)
        await self._negotiate(self.pub, "publisher")
        if point == "publisher-answered":
            return
        if point in ("ice", "dtls"):
            await asyncio.wait_for(reached.wait(), 10)
            return
        self.sub.addTransceiver("audio", direction="recvonly")
        self.sub.addTransceiver("video", direction="recvonly")
        await self._negotiate(self.sub, "subscriber")

    async def drop(self, how: str) -> None:
        if how == "abort":  # the TCP connection dies: no close frame
            transport = self.ws._response.connection.transport
            assert transport is not None
            transport.abort()
        else:  # a clean WebSocket close, but no bye
            await self.ws.close()

    async def close(self) -> None:
        await self.pub.close()
        await self.sub.close()
        await asyncio.gather(*self.connect_tasks, return_exceptions=True)
        for pc in (self.pub, self.sub):  # what a connect task resuming after close() started
            for transceiver in pc.getTransceivers():
                await transceiver.sender.stop()
                await transceiver.receiver.stop()


def _decoder_threads() -> set[threading.Thread]:
    """aiortc runs one decoder thread per started receiver ("audio-decoder", "video-decoder")."""
    return {t for t in threading.enumerate() if t.name.endswith("-decoder")}


async def _server_leftovers(before: set[asyncio.Task[Any]], threads: set[threading.Thread]) -> list[object]:
    """The server's tasks (or aiortc/aioice ones of its side) and decoder threads still running
    after GRACE."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GRACE
    while True:
        left: list[object] = [t for t in asyncio.all_tasks() - before
                              if t is not asyncio.current_task() and _interesting(t) and not _client_side(t)]
        left += sorted(_decoder_threads() - threads, key=lambda t: t.name)
        if not left or loop.time() >= deadline:
            return left
        await asyncio.sleep(0.02)


async def _drop_once(server: SignalingServer, point: str, how: str) -> list[object]:
    before, threads = asyncio.all_tasks(), _decoder_threads()
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.url)
        client = Client(ws)
        try:
            await client.setup_until(point)
            await client.drop(how)
            # The client's peers stay up while the server tears down (the races need a live far
            # end); the server releases the session on its own.
            await wait_released(server)
        finally:
            await client.close()
    return await _server_leftovers(before, threads)


def _run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with confine_ice_to_loopback():
        asyncio.run(body())
    gc.collect()  # a task that dies with its exception unretrieved is reported when collected


@pytest.mark.parametrize("how", ["abort", "close"])
@pytest.mark.parametrize("point", DROP_POINTS)
def test_a_client_dropping_mid_setup_leaves_no_task_behind(
    point: str, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    leftovers: list[tuple[int, list[object]]] = []

    async def body() -> None:
        async with running_server() as server:
            for i in range(ROUNDS):
                left = await _drop_once(server, point, how)
                if left:
                    leftovers.append((i, left))
                gc.collect()

    _run(body)
    assert not leftovers, f"the server left these running (round, tasks and threads): {leftovers}"
    bad = [r for r in caplog.records
           if "never retrieved" in r.getMessage()
           or (r.name.startswith("rtcprobe.server") and r.levelno >= logging.WARNING)]
    assert not bad, [f"{r.name}: {r.getMessage()}" for r in bad]
