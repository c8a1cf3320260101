"""The signaling server: aiohttp WebSocket signaling plus a server-side aiortc peer per session.

Theory of operation
-------------------
Each WebSocket connection is one :class:`_Session` that walks a fixed sequence of phases
(``_EXPECTED`` below): ``ice`` (token checked, ICE servers handed out) → publisher ``offer``
(the server answers receive-only and starts draining the tracks it gets) → subscriber ``offer``
(the server answers with the publisher's tracks relayed back through ``MediaRelay``) →
established, where only ``bye`` may come. ``bye`` is accepted in every phase. Anything else — a
malformed frame, a message out of order — gets one ``error`` (53000) and that connection is
closed (1008; 1009 for an oversized frame); every other session carries on.

The idle timeout counts from the server's last reply while it waits for the next negotiation
message; after the last answer, both peer connections must connect within ``connect_timeout``
(else 53405). Once established, the session lives until ``bye``, the socket closes
(WebSocket pings detect a dead peer), or one of its peer connections fails (ICE consent
freshness detects a client gone silent; error 53405) or is closed by the client: a preflight may
legitimately run for minutes without a message.

Server-side peers are host-only (``RTCConfiguration(iceServers=[])``) even when TURN is
configured: the server is the far end, reachable at its host address, so only the publishing
client needs relay-only. TURN for the server would double the allocations on the TURN server and
delay every answer (non-trickle ICE waits for gathering) for nothing. When the server listens on
loopback its host candidates are confined to 127.0.0.1 (``loopback.py``).

Resources are bounded: ``max_connections`` open sockets, ``max_sessions`` authenticated
sessions (each holds up to two peer connections and a decode/encode pipeline), refused with
53000 "server busy" and close code 1013. ``close()`` releases everything; the live counters
(:attr:`SignalingServer.stats`) return to zero.

Releasing a session leaves no task behind, whatever step it was in (``_Session._release``). The
session owns the tasks it spawns (drains, the peer-ended watch) and cancels and awaits them.
Closing a peer connection is not enough on its own, because aiortc and aioice race with
``close()`` when it lands in the middle of setup: the session adopts aiortc's connect task as
each description is set and closes its peers through ``teardown.py`` (shared with the client,
which explains each race). What is the server's own:

* ``MediaRelay`` has no stop: its per-source worker waits on the remote track until the
  receiver's decoder ends it, forever when the receiver never started. The session stops every
  relay proxy it created and the source tracks, then cancels and awaits the relay's workers.

What still runs a method of one of the session's aiortc objects after that is cancelled and
awaited as a last resort (logged at debug level).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import ipaddress
import logging
import math
import time
from collections.abc import Callable, Coroutine
from contextlib import ExitStack
from types import TracebackType
from typing import Any, Final

import attrs
from aiohttp import WSMsgType, web
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError
from rtcprobe.core.errors import ConfigError

from . import teardown
from .credentials import TurnUrl, build_ice_servers, check_turn_config
from .loopback import confine_ice_to_loopback
from .protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TRY_AGAIN_LATER,
    DEFAULT_IDLE_TIMEOUT,
    MAX_MESSAGE_SIZE,
    MEDIA_ERROR,
    SIGNALING_ERROR,
    Answer,
    Bye,
    Error,
    Ice,
    Iced,
    Message,
    Offer,
    ProtocolError,
    encode,
    parse_message,
)
from .tokens import DEFAULT_ISSUER, verify_token

log = logging.getLogger("rtcprobe.server")

SIGNALING_PATH: Final = "/signaling"
HEALTH_PATH: Final = "/health"
CLOSE_TIMEOUT: Final = 2.0  # s to wait for the client's close frame before dropping the socket
PEER_GRACE: Final = 1.0  # s between a client's peer connection ending and the server ending the session
LATE_START_TIMEOUT: Final = 0.5  # s for aiortc/aioice work interrupted by close() to wind down
PC_CLOSE_TIMEOUT: Final = 2.0  # s bounding a peer connection's close() (host-only peers: no TURN to wait for)


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@attrs.frozen
class ServerConfig:
    """The server's settings; ConfigError (one line) for a bad value."""

    secret: str
    host: str = "127.0.0.1"
    port: int = 0  # 0: an ephemeral port, read it back from ``url``
    issuer: str = DEFAULT_ISSUER
    turn_urls: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    turn_secret: str | None = None
    turn_ttl: int = 3600  # s, lifetime of minted TURN credentials (and the ``ttl`` of ``iced``)
    max_message_size: int = MAX_MESSAGE_SIZE
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT  # s the server waits for the next negotiation message
    connect_timeout: float = 30.0  # s after the last answer for both peer connections to connect
    max_sessions: int = 16
    max_connections: int = 256
    confine_to_loopback: bool | None = None  # None: when ``host`` is a loopback address

    def __attrs_post_init__(self) -> None:
        if not self.secret:
            raise ConfigError("the server needs a non-empty token secret")
        if not self.issuer:
            raise ConfigError("the issuer must not be empty")
        if not self.host:
            raise ConfigError("the host must not be empty")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        if self.turn_ttl <= 0:
            raise ConfigError(f"turn_ttl must be positive, got {self.turn_ttl}")
        if self.max_message_size < 1024:
            raise ConfigError(f"max_message_size must be at least 1024 bytes, got {self.max_message_size}")
        for name in ("idle_timeout", "connect_timeout"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds, got {value}")
        if self.max_sessions < 1 or self.max_connections < self.max_sessions:
            raise ConfigError("need 1 <= max_sessions <= max_connections")
        check_turn_config(self.turn_urls, self.turn_secret)

    @property
    def parsed_turn_urls(self) -> tuple[TurnUrl, ...]:
        return check_turn_config(self.turn_urls, self.turn_secret)

    @property
    def confined(self) -> bool:
        return is_loopback(self.host) if self.confine_to_loopback is None else self.confine_to_loopback


@attrs.frozen
class ServerStats:
    """Live counters, for tests and monitoring: all zero once everything is released."""

    connections: int  # open WebSocket connections
    sessions: int  # authenticated sessions (each holds a ``max_sessions`` slot)
    peer_connections: int  # server-side RTCPeerConnections not yet closed
    total_sessions: int  # sessions ever authenticated (monotonic)


class _Phase(enum.Enum):
    AWAIT_ICE = "await ice"
    AWAIT_PUBLISHER = "await publisher offer"
    AWAIT_SUBSCRIBER = "await subscriber offer"
    ESTABLISHED = "established"


# The one message each phase accepts (``bye`` is accepted in every phase), and why others are wrong.
_EXPECTED: Final[dict[_Phase, tuple[str, str]]] = {
    _Phase.AWAIT_ICE: ("ice", "the first message must be 'ice'"),
    _Phase.AWAIT_PUBLISHER: ("offer/publisher", "expected the publisher's 'offer' after 'iced'"),
    _Phase.AWAIT_SUBSCRIBER: ("offer/subscriber", "expected the subscriber's 'offer' after the publisher's answer"),
    _Phase.ESTABLISHED: ("", "negotiation is complete: only 'bye' is expected"),
}


def _label(message: Message) -> str:
    return f"offer/{message.pc}" if isinstance(message, Offer) else message.TYPE


async def _drain(track: MediaStreamTrack) -> None:
    """Read and drop ``track``'s frames: keeps the relay flowing while nobody subscribes."""
    with contextlib.suppress(MediaStreamError):
        while True:
            await track.recv()


class _SessionLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The server's log, each message prefixed with its session (``session HOST:PORT: ``)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"session {self.extra['remote']}: {msg}", kwargs  # type: ignore[index]


class _SignalingWebSocket(web.WebSocketResponse):
    """aiohttp closes an oversized frame's connection itself (1009) before returning to us; this
    hook sends the protocol's ``error`` message first, so the client learns why."""

    async def close(self, *, code: int = CLOSE_NORMAL, message: bytes = b"", drain: bool = True) -> bool:
        if code == CLOSE_MESSAGE_TOO_BIG and not self.closed:
            with contextlib.suppress(Exception):  # the peer may be gone already
                await self.send_str(encode(Error(SIGNALING_ERROR, "message too big")))
            message = message or b"message too big"
        return await super().close(code=code, message=message, drain=drain)


class _Session:
    """One WebSocket connection: its phase, its peer connections, its relay."""

    def __init__(self, server: SignalingServer, ws: _SignalingWebSocket, remote: str) -> None:
        self.server = server
        self.ws = ws
        self.remote = remote
        self.phase = _Phase.AWAIT_ICE
        self.identity: str | None = None
        self.publisher: RTCPeerConnection | None = None
        self.subscriber: RTCPeerConnection | None = None
        self.tracks: dict[str, list[MediaStreamTrack]] = {}  # the publisher's (remote) tracks, by kind
        self.relay = MediaRelay()
        self.proxies: list[MediaStreamTrack] = []  # every relay proxy handed out (drains, subscriber)
        self.deadline = self._now() + server.config.idle_timeout
        self.holds_slot = False
        self.connected: set[str] = set()  # peer connections that reached "connected"
        self._shutdown: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # spawned by this session: drains, peer-ended watch
        self._connect_tasks: dict[RTCPeerConnection, set[asyncio.Task[Any]]] = {}  # aiortc's, adopted
        self.log = _SessionLog(log, {"remote": remote})

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    @property
    def closing(self) -> bool:
        return self._shutdown is not None

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coro`` as a task this session owns: cancelled and awaited when it is released."""
        if self.closing:  # the release has taken its list of tasks already
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro, name=f"rtcprobe-server-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or (exc := task.exception()) is None:
            return
        if self.closing:
            log.debug("session %s: task %s ended with %r while closing", self.remote, task.get_name(), exc)
        else:
            log.error("session %s: task %s failed", self.remote, task.get_name(), exc_info=exc)

    def _adopt(self, pc: RTCPeerConnection) -> None:
        """Keep aiortc's connect task for ``pc`` (``setLocalDescription``/``setRemoteDescription``
        spawn it as their last act): the release awaits it; its outcome is always retrieved."""
        teardown.adopt_connect_tasks(pc, self._connect_tasks.setdefault(pc, set()),
                                     closing=lambda: self.closing, log=self.log)

    # --- the receive loop ------------------------------------------------------------------

    async def run(self) -> None:
        idle = self.server.config.idle_timeout
        while not self.closing:
            timeout: float | None = None
            if self.phase is not _Phase.ESTABLISHED:
                timeout = self.deadline - self._now()
                if timeout <= 0:
                    await self.fail(SIGNALING_ERROR, f"no message for {idle:g} s: closing an idle connection")
                    return
            elif len(self.connected) < 2:
                # Negotiated but not connected yet: counted from the subscriber's answer.
                timeout = self.deadline - self._now()
                if timeout <= 0:
                    await self.fail(MEDIA_ERROR, "the peer connections did not connect within "
                                    f"{self.server.config.connect_timeout:g} s", close_code=CLOSE_INTERNAL_ERROR)
                    return
            try:
                # aiohttp treats a timeout of 0 as "none": keep it strictly positive
                msg = await self.ws.receive(timeout=None if timeout is None else max(timeout, 1e-3))
            except TimeoutError:
                continue  # the deadline check above fails the session
            if msg.type is WSMsgType.TEXT:
                await self._handle_text(msg.data)
                # The client's turn starts once we have answered.
                self.deadline = self._now() + (
                    self.server.config.connect_timeout if self.phase is _Phase.ESTABLISHED else idle)
            elif msg.type is WSMsgType.BINARY:
                await self.fail(SIGNALING_ERROR, "binary frames are not part of the protocol: send JSON text")
            else:  # CLOSE, CLOSING, CLOSED, ERROR (aiohttp has closed the socket already)
                return

    async def _handle_text(self, text: str) -> None:
        try:
            await self._dispatch(parse_message(text))
        except ProtocolError as exc:
            await self.fail(exc.code, exc.message)
        except Exception as exc:
            if self.closing:  # the server shut this session down under our feet
                return
            log.exception("session %s: internal error", self.remote)
            await self.fail(SIGNALING_ERROR, f"internal server error: {type(exc).__name__}")

    async def _dispatch(self, message: Message) -> None:
        if self.closing:  # released meanwhile (server shutdown, a failed peer connection)
            return
        if isinstance(message, Bye):
            await self.shutdown(CLOSE_NORMAL, "bye")
            return
        label = _label(message)
        expected, why = _EXPECTED[self.phase]
        if label != expected:
            raise ProtocolError(SIGNALING_ERROR, f"unexpected '{label}' ({self.phase.value}): {why}")
        if isinstance(message, Ice):
            await self._on_ice(message)
        elif isinstance(message, Offer) and message.pc == "publisher":
            await self._on_publisher_offer(message)
        elif isinstance(message, Offer):
            await self._on_subscriber_offer(message)

    # --- the three negotiation steps -------------------------------------------------------

    async def _on_ice(self, message: Ice) -> None:
        config = self.server.config
        claims = verify_token(message.token, config.secret, now=time.time(), issuer=config.issuer)
        if not self.server._acquire_slot(self):
            await self.fail(SIGNALING_ERROR, "server busy: too many sessions, try again later",
                            close_code=CLOSE_TRY_AGAIN_LATER)
            return
        self.identity = claims.identity
        servers = build_ice_servers(config.parsed_turn_urls, config.turn_secret, claims.identity,
                                    config.turn_ttl, time.time())
        self.phase = _Phase.AWAIT_PUBLISHER
        log.info("session %s: %s authenticated (region %s)", self.remote, claims.identity, message.region)
        await self.ws.send_str(encode(Iced(ice_servers=servers, ttl=config.turn_ttl)))

    def _new_pc(self, name: str) -> RTCPeerConnection:
        # iceServers must be an explicit list: None silently means a public STUN server.
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.server._pc_opened(pc)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected":
                self.connected.add(name)
            if pc.connectionState in ("failed", "closed") and not self.closing:
                self._spawn(self._peer_ended(name, pc.connectionState), f"{name}-ended")

        return pc

    async def _peer_ended(self, name: str, state: str) -> None:
        """A peer connection failed (ICE consent lost) or the client closed it: nothing left to
        relay. Give a client tearing down in its own order a moment to say bye first."""
        await asyncio.sleep(PEER_GRACE)
        if self.closing:
            return
        if state == "failed":
            await self.fail(MEDIA_ERROR, f"the {name} peer connection failed", close_code=CLOSE_INTERNAL_ERROR)
        else:
            log.info("session %s: the client closed its %s peer connection", self.remote, name)
            await self.shutdown(CLOSE_NORMAL, f"the {name} peer connection was closed")

    async def _apply_offer(self, pc: RTCPeerConnection, name: str, sdp: str) -> None:
        try:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            finally:
                self._adopt(pc)
        except Exception as exc:  # aiortc raises assorted types for bad SDP; the client gets one line
            if self.closing:
                raise
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ProtocolError(SIGNALING_ERROR, f"the {name} offer is not usable SDP: {detail}") from None

    async def _answer(self, pc: RTCPeerConnection, name: str) -> None:
        answer = await pc.createAnswer()
        try:
            await pc.setLocalDescription(answer)  # spawns aiortc's connect task (ICE, DTLS, media)
        finally:
            self._adopt(pc)
        if self.closing:
            return
        await self.ws.send_str(encode(Answer(pc=name, sdp=pc.localDescription.sdp)))  # type: ignore[arg-type]

    async def _on_publisher_offer(self, message: Offer) -> None:
        pc = self.publisher = self._new_pc("publisher")

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.tracks.setdefault(track.kind, []).append(track)

        await self._apply_offer(pc, "publisher", message.sdp)
        if not self.tracks:
            raise ProtocolError(SIGNALING_ERROR, "the publisher offer sends no audio or video")
        # Keep received frames flowing while nobody subscribes yet.
        for track in [t for tracks in self.tracks.values() for t in tracks]:
            self._spawn(_drain(self._relayed(track)), f"drain-{track.kind}")
        self.phase = _Phase.AWAIT_SUBSCRIBER
        await self._answer(pc, "publisher")

    async def _on_subscriber_offer(self, message: Offer) -> None:
        pc = self.subscriber = self._new_pc("subscriber")
        sent_to_us: list[str] = []
        pc.on("track", lambda track: sent_to_us.append(track.kind))
        await self._apply_offer(pc, "subscriber", message.sdp)
        if sent_to_us:
            # Nobody would consume them: refuse rather than buffer frames forever.
            raise ProtocolError(SIGNALING_ERROR, "the subscriber offer must be receive-only (recvonly)")
        used: dict[str, int] = {}
        for transceiver in pc.getTransceivers():
            sources = self.tracks.get(transceiver.kind)
            if not sources:
                continue  # nothing of that kind was published: the answer leaves it inactive
            i = used.get(transceiver.kind, 0)
            used[transceiver.kind] = i + 1
            # addTrack fills the first free transceiver of the kind, i.e. this one
            pc.addTrack(self._relayed(sources[i % len(sources)]))
        self.phase = _Phase.ESTABLISHED
        await self._answer(pc, "subscriber")

    def _relayed(self, track: MediaStreamTrack) -> MediaStreamTrack:
        """A new relay proxy of ``track``, stopped when the session is released."""
        proxy = self.relay.subscribe(track, buffered=False)
        self.proxies.append(proxy)
        return proxy

    # --- ending ----------------------------------------------------------------------------

    async def fail(self, code: int, message: str, *, close_code: int = CLOSE_POLICY_VIOLATION) -> None:
        """Send one ``error`` and close this connection (and release its peers)."""
        if self.closing:
            return
        log.info("session %s: error %d: %s", self.remote, code, message)
        if not self.ws.closed:
            with contextlib.suppress(Exception):  # the client may be gone already
                await self.ws.send_str(encode(Error(code, message)))
        await self.shutdown(close_code, message)

    async def shutdown(self, close_code: int = CLOSE_GOING_AWAY, reason: str = "") -> None:
        """Release everything this session holds; idempotent, safe from any task."""
        if self._shutdown is None:
            self._shutdown = asyncio.ensure_future(self._release(close_code, reason))
            # retrieved also when every caller was cancelled
            self._shutdown.add_done_callback(functools.partial(teardown.retrieve, log=log))
        await asyncio.shield(self._shutdown)

    async def _release(self, close_code: int, reason: str) -> None:
        self.server._release_slot(self)
        # RFC 6455 caps the close reason at 123 bytes of UTF-8: cut it without splitting a character.
        short = reason.encode()[:120].decode("utf-8", "ignore").encode()
        with contextlib.suppress(Exception):
            await self.ws.close(code=close_code, message=short)
        # Our own tasks first (a peer-ended watch may be the one waiting for this release).
        await teardown.cancel_and_wait(self._tasks, timeout=LATE_START_TIMEOUT, log=log)
        pcs = [pc for pc in (self.subscriber, self.publisher) if pc is not None]
        try:
            await asyncio.gather(*(teardown.close_peer_connection(
                pc, connect_tasks=self._connect_tasks.get(pc, ()), close_timeout=PC_CLOSE_TIMEOUT,
                late_start_timeout=LATE_START_TIMEOUT, log=self.log) for pc in pcs))
        finally:
            for pc in pcs:
                self.server._pc_closed(pc)
        await self._stop_relay()
        # Last resort: whatever still runs a method of this session's aiortc/aioice objects.
        owned = [self.relay, *(part for pc in pcs for part in teardown.peer_parts(pc))]
        if left := teardown.tasks_of(owned):
            await asyncio.sleep(0)  # let those that are finishing finish
            if left := [t for t in left if not t.done()]:
                self.log.debug("cancelling %d leftover aiortc task(s): %s", len(left), left)
                await teardown.cancel_and_wait(left, timeout=LATE_START_TIMEOUT, log=log)

    async def _stop_relay(self) -> None:
        """MediaRelay has no stop(): end its proxies and sources, then its per-source workers
        (one waits forever on a remote track whose receiver never started)."""
        for proxy in self.proxies:  # unregisters it from the relay
            proxy.stop()
        for tracks in self.tracks.values():
            for track in tracks:
                track.stop()
        await teardown.cancel_and_wait(teardown.tasks_of([self.relay]), timeout=LATE_START_TIMEOUT, log=log)


class SignalingServer:
    """The signaling server. ``async with SignalingServer(secret=...) as server: server.url``."""

    def __init__(self, secret: str, **options: Any) -> None:
        self.config = ServerConfig(secret=secret, **options)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._port: int | None = None
        self._connections: set[_Session] = set()
        self._slots: set[_Session] = set()
        self._pcs: set[RTCPeerConnection] = set()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._total_sessions = 0
        self._exit_stack = ExitStack()
        self._closing = False

    @classmethod
    def from_config(cls, config: ServerConfig) -> SignalingServer:
        return cls(**attrs.asdict(config, recurse=False))

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the server is already started")
        app = web.Application()
        app.router.add_get(SIGNALING_PATH, self._handle_signaling)
        app.router.add_get(HEALTH_PATH, self._handle_health)
        if self.config.confined:
            self._exit_stack.enter_context(confine_ice_to_loopback())
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            self._exit_stack.close()
            raise ConfigError(f"cannot listen on {self.config.host}:{self.config.port}: {exc.strerror}") from None
        self._runner, self._site = runner, site
        self._port = int(runner.addresses[0][1])  # port 0: read back the one the OS chose
        log.info("signaling server listening on %s", self.url)

    async def close(self) -> None:
        """Close every session and peer connection, then stop listening."""
        if self._runner is None or self._closing:
            return
        self._closing = True
        try:
            await asyncio.gather(*(s.shutdown(CLOSE_GOING_AWAY, "server shutting down")
                                   for s in list(self._connections)))
            handlers = [t for t in self._handlers if not t.done()]
            if handlers:
                _, pending = await asyncio.wait(handlers, timeout=CLOSE_TIMEOUT + 1)
                await teardown.cancel_and_wait(pending, timeout=LATE_START_TIMEOUT, log=log)
            await self._runner.cleanup()
        finally:
            self._runner = self._site = None
            self._exit_stack.close()
            self._closing = False

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
        return ServerStats(
            connections=len(self._connections), sessions=len(self._slots), peer_connections=len(self._pcs),
            total_sessions=self._total_sessions,
        )

    # --- bookkeeping used by sessions ------------------------------------------------------

    def _acquire_slot(self, session: _Session) -> bool:
        if len(self._slots) >= self.config.max_sessions or self._closing:
            return False
        self._slots.add(session)
        session.holds_slot = True
        self._total_sessions += 1
        return True

    def _release_slot(self, session: _Session) -> None:
        self._slots.discard(session)
        session.holds_slot = False

    def _pc_opened(self, pc: RTCPeerConnection) -> None:
        self._pcs.add(pc)

    def _pc_closed(self, pc: RTCPeerConnection) -> None:
        self._pcs.discard(pc)

    # --- HTTP handlers ---------------------------------------------------------------------

    async def _handle_health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _handle_signaling(self, request: web.Request) -> web.StreamResponse:
        config = self.config
        ws = _SignalingWebSocket(
            # aiohttp refuses a message of exactly max_msg_size; the protocol allows "at most".
            # No compression: a compressed frame would be limited after inflating, not as sent.
            max_msg_size=config.max_message_size + 1, compress=False, timeout=CLOSE_TIMEOUT,
            heartbeat=max(config.idle_timeout, 1.0),  # pings detect a dead peer once established
        )
        if not ws.can_prepare(request).ok:
            return web.json_response({"error": "this endpoint speaks WebSocket only"}, status=400)
        await ws.prepare(request)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        session = _Session(self, ws, f"{peer[0]}:{peer[1]}" if peer else "?")
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        self._connections.add(session)
        try:
            if self._closing or len(self._connections) > config.max_connections:
                await session.fail(SIGNALING_ERROR, "server busy: too many connections, try again later",
                                   close_code=CLOSE_TRY_AGAIN_LATER)
            else:
                await session.run()
        finally:
            await session.shutdown(CLOSE_NORMAL)
            self._connections.discard(session)
            if task is not None:
                self._handlers.discard(task)
        return ws


def run_forever(server: SignalingServer, on_ready: Callable[[SignalingServer], None]) -> None:
    """Run ``server`` until Ctrl-C (used by ``rtcprobe serve``)."""

    async def main() -> None:
        async with server:
            on_ready(server)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
