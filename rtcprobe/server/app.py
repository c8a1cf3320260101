"""The signaling server's aiohttp application: listening, one :class:`~.session.Session` per
WebSocket connection, the connection and session limits, metrics and shutdown.

``GET /signaling`` upgrades to the WebSocket the protocol runs over (docs/signaling.md), rooms
included (:mod:`.rooms`);
``GET /health`` answers ``{"status": "ok"}``; ``GET /metrics`` is the Prometheus text format
(:mod:`.metrics`). A connection past ``max_connections`` gets one ``error`` (53000 "server busy")
and close code 1013; the session module says what happens on the others. ``close()`` shuts every
session down, waits for their handlers, then stops listening.

No media passes through here, and nothing in this package imports aiortc (a test checks it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final

import attrs
from aiohttp import web

from rtcprobe.core.errors import ConfigError
from rtcprobe.drivers.aiortc.protocol import CLOSE_GOING_AWAY, CLOSE_NORMAL, CLOSE_TRY_AGAIN_LATER, SIGNALING_ERROR

from .config import ServerConfig
from .metrics import CONTENT_TYPE, ServerMetrics
from .reports import ReportLog
from .rooms import RoomRegistry
from .session import Registry, ServerStats, Session, SignalingWebSocket
from .web import BrowserSide

log = logging.getLogger("rtcprobe.server")

SIGNALING_PATH: Final = "/signaling"
HEALTH_PATH: Final = "/health"
METRICS_PATH: Final = "/metrics"
LISTEN_BACKLOG: Final = 1024  # connections the kernel queues before we accept them (capped by somaxconn)
CLOSE_TIMEOUT: Final = 2.0  # s to wait for the client's close frame before dropping the socket


class SignalingServer:
    """The signaling server. ``async with SignalingServer(secret=...) as server: server.url``."""

    def __init__(self, secret: str, **options: Any) -> None:
        self.config = ServerConfig(secret=secret, **options)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._port: int | None = None
        self.metrics = ServerMetrics()
        reports = None if self.config.reports is None else ReportLog(self.config.reports)
        self._registry = Registry(self.config.max_sessions, self.metrics, reports,
                                  RoomRegistry(self.config.rooms, self.metrics))
        self._handlers: set[asyncio.Task[Any]] = set()

    @classmethod
    def from_config(cls, config: ServerConfig) -> SignalingServer:
        return cls(**attrs.asdict(config, recurse=False))

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the server is already started")
        config = self.config
        app = web.Application()
        app.router.add_get(SIGNALING_PATH, self._handle_signaling)
        app.router.add_get(HEALTH_PATH, self._handle_health)
        app.router.add_get(METRICS_PATH, self._handle_metrics)
        BrowserSide(config.web, secret=config.secret, issuer=config.issuer, turn_urls=config.parsed_turn_urls,
                    host=config.host, protected=(SIGNALING_PATH,)).install(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        # A deep accept queue: sessions arrive in bursts (aiohttp's default of 128 drops SYNs
        # under a few hundred connects per second; the client then retries after a second).
        site = web.TCPSite(runner, self.config.host, self.config.port, backlog=LISTEN_BACKLOG)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(f"cannot listen on {self.config.host}:{self.config.port}: {exc.strerror}") from None
        self._runner, self._site = runner, site
        self._port = int(runner.addresses[0][1])  # port 0: read back the one the OS chose
        log.info("signaling server listening on %s", self.url)

    async def close(self) -> None:
        """Close every session, then stop listening."""
        if self._runner is None or self._registry.closing:
            return
        self._registry.closing = True
        try:
            await asyncio.gather(*(s.shutdown(CLOSE_GOING_AWAY, "server shutting down")
                                   for s in list(self._registry.connections)))
            handlers = [t for t in self._handlers if not t.done()]
            if handlers:
                _, pending = await asyncio.wait(handlers, timeout=CLOSE_TIMEOUT + 1)
                for task in pending:  # a handler stuck past the close timeout: last resort
                    task.cancel()
                if pending:
                    await asyncio.wait(pending, timeout=CLOSE_TIMEOUT)
            self._registry.rooms.close()
            await self._runner.cleanup()
        finally:
            self._runner = self._site = None
            self._registry.closing = False

    async def __aenter__(self) -> SignalingServer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    @property
    def url(self) -> str:
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        elif host in ("0.0.0.0", ""):
            host = "127.0.0.1"  # a wildcard bind is reachable locally at loopback
        return f"ws://{host}:{self.port}{SIGNALING_PATH}"

    @property
    def stats(self) -> ServerStats:
        return self._registry.stats

    # --- HTTP handlers ---------------------------------------------------------------------

    async def _handle_health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _handle_metrics(self, request: web.Request) -> web.Response:
        response = web.Response(body=self.metrics.render())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    async def _handle_signaling(self, request: web.Request) -> web.StreamResponse:
        config = self.config
        ws = SignalingWebSocket(
            # aiohttp refuses a message of exactly max_msg_size; the protocol allows "at most".
            # The larger (report) limit: the session applies the smaller one to other frames.
            # No compression: a compressed frame would be limited after inflating, not as sent.
            max_msg_size=config.max_report_size + 1, compress=False, timeout=CLOSE_TIMEOUT,
            heartbeat=config.ping_interval,  # pings detect a vanished client
        )
        if not ws.can_prepare(request).ok:
            return web.json_response({"error": "this endpoint speaks WebSocket only"}, status=400)
        await ws.prepare(request)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        session = Session(config, self._registry, ws, f"{peer[0]}:{peer[1]}" if peer else "?")
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        registry = self._registry
        registry.add_connection(session)
        try:
            if registry.closing or len(registry.connections) > config.max_connections:
                await session.fail(SIGNALING_ERROR, "server busy: too many connections, try again later",
                                   close_code=CLOSE_TRY_AGAIN_LATER)
            else:
                await session.run()
        finally:
            await session.shutdown(CLOSE_NORMAL)
            registry.remove_connection(session)
            if task is not None:
                self._handlers.discard(task)
        return ws


def run_forever(server: SignalingServer, on_ready: Callable[[SignalingServer], None]) -> None:
    """Run ``server`` until Ctrl-C or SIGTERM (used by ``rtcprobe serve``); either closes every
    session with 1001 before returning."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError):  # no signal handlers on some platforms
            loop.add_signal_handler(signal.SIGTERM, stop.set)
        try:
            async with server:
                on_ready(server)
                await stop.wait()
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


__all__ = ["HEALTH_PATH", "METRICS_PATH", "SIGNALING_PATH", "SignalingServer", "run_forever"]
