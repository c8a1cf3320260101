"""Helpers for the room tests: a participant speaking the room protocol by hand over a real
WebSocket (every message it receives kept, in order), and a server with short room timings.
Imported by the test_rooms*.py files; holds no tests itself."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from rtcprobe.core.quality import QualityDemand
from rtcprobe.core.room import RoomConfig, RoomSample, encode_demand, encode_sample
from test_core_room_sim import FULL
from test_server_support import SECRET, wait_released

from rtcprobe.server import SignalingServer
from rtcprobe.server.rooms import RoomsConfig
from rtcprobe.server.tokens import mint_token

#: Fast rooms: a tick every 0.3 s, samples at least 0.1 s apart, losses over 2 s.
FAST = RoomConfig(tick_interval=0.3, min_sample_interval=0.1, max_sample_age=1.0, loss_window=2.0,
                  reconnect_timeout=1.0)
STEP = 0.3  # s between a simulated client's samples


def room_token(identity: str, room: str | None = "r1", **kwargs: Any) -> str:
    return mint_token(kwargs.pop("secret", SECRET), identity, now=time.time(), room=room, **kwargs)


def room_hello(identity: str, *, room: str | None = "r1", name: str | None = None, local: int = 1, remote: int = 0,
               demand: QualityDemand = FULL, token: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"networkQuality": {"local": local, "remote": remote}, "demand": encode_demand(demand)}
    if name is not None:
        body["name"] = name
    return {"type": "ice", "preflight": False, "version": 2, "region": "gll",
            "token": token if token is not None else room_token(identity, room), "room": body}


@asynccontextmanager
async def room_server(room: RoomConfig = FAST, **options: Any) -> AsyncIterator[SignalingServer]:
    """A server whose rooms tick fast; every connection released at the end."""
    rooms = RoomsConfig(room=room, **{k: options.pop(k) for k in list(options) if k in _ROOMS_FIELDS})
    async with SignalingServer(secret=SECRET, rooms=rooms, **options) as server:
        yield server
        await wait_released(server)
    assert server.stats.rooms == server.stats.room_participants == 0, server.stats


_ROOMS_FIELDS = ("max_rooms", "silence_timeout", "max_signal_bytes", "message_rate", "message_burst", "max_pending")


class Client:
    """One WebSocket; a reader task keeps every message the server sends (``messages``)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, identity: str) -> None:
        self.ws = ws
        self.identity = identity
        self.messages: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    self.messages.append(json.loads(msg.data))
                    self._changed.set()
        finally:
            self.close_code = self.ws.close_code
            self.closed.set()
            self._changed.set()

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message))

    async def sample(self, sample: RoomSample | dict[str, Any]) -> None:
        body = encode_sample(sample) if isinstance(sample, RoomSample) else sample
        await self.send({"type": "nq-sample", "sample": body})

    async def wait(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        """The first message (kept so far or to come) that ``predicate`` accepts."""
        deadline = asyncio.get_running_loop().time() + timeout
        seen = 0
        while True:
            for message in self.messages[seen:]:
                if predicate(message):
                    return message
            seen = len(self.messages)
            if self.closed.is_set():
                raise AssertionError(f"{self.identity}: closed ({self.close_code}) before the message; got "
                                     f"{[m.get('type') for m in self.messages]}")
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"{self.identity}: no such message within {timeout} s; got "
                                     f"{[m.get('type') for m in self.messages][-20:]}")
            self._changed.clear()
            if len(self.messages) == seen:
                try:
                    await asyncio.wait_for(self._changed.wait(), remaining)
                except TimeoutError:
                    pass

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    def updates(self, about: str | None = None) -> list[dict[str, Any]]:
        """Every network-quality update received (about ``about`` only, when given), in order."""
        return [u for m in self.of_type("network-quality") for u in m["updates"]
                if about is None or u["identity"] == about]

    def level(self, about: str) -> int | None:
        """The latest level this client was told about ``about``."""
        updates = self.updates(about)
        return updates[-1]["level"] if updates else None

    async def wait_level(self, about: str, accept: Callable[[int], bool], timeout: float = 10.0) -> int:
        message = await self.wait(lambda m: m.get("type") == "network-quality" and any(
            u["identity"] == about and accept(u["level"]) for u in m["updates"]), timeout)
        return next(u["level"] for u in message["updates"] if u["identity"] == about)

    async def close(self) -> None:
        await self.ws.close()
        await self._reader

    @asynccontextmanager
    async def sampling(self, interval: float = 0.2) -> AsyncIterator[None]:
        """Empty samples every ``interval`` s while the block runs (a client that is alive)."""

        async def loop() -> None:
            while True:
                await self.sample(RoomSample())
                await asyncio.sleep(interval)

        task = asyncio.get_running_loop().create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@asynccontextmanager
async def joined(url: str, identity: str, **hello: Any) -> AsyncIterator[Client]:
    """A client that sent a room hello and got ``iced`` and ``joined``."""
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        client = Client(ws, identity)
        await client.send(room_hello(identity, **hello))
        await client.wait(lambda m: m.get("type") == "joined")
        try:
            yield client
        finally:
            await ws.close()
            await client._reader


@asynccontextmanager
async def connected(url: str, identity: str) -> AsyncIterator[Client]:
    """A client that has sent nothing yet."""
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        client = Client(ws, identity)
        try:
            yield client
        finally:
            await ws.close()
            await client._reader


__all__ = ["FAST", "STEP", "Client", "connected", "joined", "room_hello", "room_server", "room_token"]
