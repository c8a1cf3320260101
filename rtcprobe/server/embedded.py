"""The embedded default: a signaling server in this process, on loopback, for one test.

``rtcprobe preflight`` with no ``--url`` must work on a fresh machine with nothing else running
(docs/architecture.md#the-aiortc-driver-and-the-server). This starts the real
:class:`SignalingServer` on 127.0.0.1 with a fresh random secret and mints a token for it; the
driver only ever sees the ``(url, token)`` it yields. The server holds no peer connection, so it
confines nothing: keeping the client's own ICE candidates on loopback is the client's business
(:mod:`rtcprobe.drivers.aiortc.loopback`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence

from rtcprobe.core.report import RunInfo

from .app import SignalingServer
from .tokens import generate_secret, mint_token

IDENTITY = "rtcprobe-preflight"
HOST = "127.0.0.1"


@contextlib.asynccontextmanager
async def embedded_server(
    *, turn_urls: Sequence[str] = (), turn_secret: str | None = None, ttl: float = 3600.0,
    core_run: RunInfo | None = None,
) -> AsyncIterator[tuple[str, str]]:
    """Yield ``(url, token)`` of a signaling server running on loopback until the block exits.
    ``core_run``: the ``run`` of the reports its core builds for a core-mode client (a browser)."""
    secret = generate_secret()
    async with SignalingServer(
        secret=secret, host=HOST, port=0, turn_urls=tuple(turn_urls), turn_secret=turn_secret, core_run=core_run,
    ) as server:
        yield server.url, mint_token(secret, IDENTITY, now=time.time(), ttl=ttl)


__all__ = ["embedded_server"]
