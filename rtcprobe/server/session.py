"""One signaling session: a WebSocket connection, its protocol phases and its server-side aiortc peers.

Theory of operation
-------------------
Each WebSocket connection is one :class:`Session` that walks a fixed sequence of phases
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
loopback its host candidates are confined to 127.0.0.1
(:mod:`rtcprobe.drivers.aiortc.loopback`).

Resources are bounded: ``max_connections`` open sockets, ``max_sessions`` authenticated
sessions (each holds up to two peer connections and a decode/encode pipeline), refused with
53000 "server busy" and close code 1013. Sessions count what they hold in the server's
:class:`Registry`; the server's ``close()`` releases everything and the live counters
(:class:`ServerStats`) return to zero.

Releasing a session leaves no task behind, whatever step it was in (``Session._release``). The
session owns the tasks it spawns (drains, the peer-ended watch) and cancels and awaits them.
Closing a peer connection is not enough on its own, because aiortc and aioice race with
``close()`` when it lands in the middle of setup: the session adopts aiortc's connect task as
each description is set and closes its peers through :mod:`rtcprobe.drivers.aiortc.teardown`
(shared with the client, which explains each race). What is the server's own:

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
import logging
import time
from collections.abc import Coroutine, MutableMapping
from typing import Any, Final

import attrs
from aiohttp import WSMsgType, web
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError

from rtcprobe.drivers.aiortc import teardown
from rtcprobe.drivers.aiortc.protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TRY_AGAIN_LATER,
    MEDIA_ERROR,
    SIGNALING_ERROR,
    Answer,
    Bye,
    Error,
    Ice,
    Iced,
    Message,
    Offer,
    PcName,
    ProtocolError,
    encode,
    parse_message,
)

from .config import ServerConfig
from .credentials import build_ice_servers
from .tokens import verify_token

log = logging.getLogger("rtcprobe.server")

PEER_GRACE: Final = 1.0  # s between a client's peer connection ending and the server ending the session
LATE_START_TIMEOUT: Final = 0.5  # s for aiortc/aioice work interrupted by close() to wind down
PC_CLOSE_TIMEOUT: Final = 2.0  # s bounding a peer connection's close() (host-only peers: no TURN to wait for)


@attrs.frozen
class ServerStats:
    """Live counters, for tests and monitoring: all zero once everything is released."""

    connections: int  # open WebSocket connections
    sessions: int  # authenticated sessions (each holds a ``max_sessions`` slot)
    peer_connections: int  # server-side RTCPeerConnections not yet closed
    total_sessions: int  # sessions ever authenticated (monotonic)
    established: int  # open connections whose two peer connections have both reached "connected"


class Registry:
    """What one server's sessions hold: open connections, session slots, live peer connections.

    The server owns it and hands it to each :class:`Session`, which takes and gives back its
    slot and its peer connections here; :attr:`stats` reads the counters.
    """

    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self.connections: set[Session] = set()
        self.slots: set[Session] = set()
        self.peer_connections: set[RTCPeerConnection] = set()
        self.total_sessions = 0
        self.closing = False  # the server is shutting down: no new session gets a slot

    def acquire_slot(self, session: Session) -> bool:
        if len(self.slots) >= self.max_sessions or self.closing:
            return False
        self.slots.add(session)
        self.total_sessions += 1
        return True

    def release_slot(self, session: Session) -> None:
        self.slots.discard(session)

    @property
    def stats(self) -> ServerStats:
        return ServerStats(
            connections=len(self.connections), sessions=len(self.slots), peer_connections=len(self.peer_connections),
            total_sessions=self.total_sessions,
            established=sum(len(s.connected) == 2 for s in self.connections),
        )


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


class SessionLog(logging.LoggerAdapter[logging.Logger]):
    """The server's log, each message prefixed with its session (``session HOST:PORT: ``)."""

    def __init__(self, logger: logging.Logger, remote: str) -> None:
        super().__init__(logger, {"remote": remote})
        self.remote = remote

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return f"session {self.remote}: {msg}", kwargs


class SignalingWebSocket(web.WebSocketResponse):
    """aiohttp closes an oversized frame's connection itself (1009) before returning to us; this
    hook sends the protocol's ``error`` message first, so the client learns why."""

    async def close(self, *, code: int = CLOSE_NORMAL, message: bytes = b"", drain: bool = True) -> bool:
        if code == CLOSE_MESSAGE_TOO_BIG and not self.closed:
            with contextlib.suppress(Exception):  # the peer may be gone already
                await self.send_str(encode(Error(SIGNALING_ERROR, "message too big")))
            message = message or b"message too big"
        return await super().close(code=code, message=message, drain=drain)


class Session:
    """One WebSocket connection: its phase, its peer connections, its relay."""

    def __init__(self, config: ServerConfig, registry: Registry, ws: SignalingWebSocket, remote: str) -> None:
        self.config = config
        self.registry = registry
        self.ws = ws
        self.remote = remote
        self.phase = _Phase.AWAIT_ICE
        self.identity: str | None = None
        self.publisher: RTCPeerConnection | None = None
        self.subscriber: RTCPeerConnection | None = None
        self.tracks: dict[str, list[MediaStreamTrack]] = {}  # the publisher's (remote) tracks, by kind
        self.relay = MediaRelay()
        self.proxies: list[MediaStreamTrack] = []  # every relay proxy handed out (drains, subscriber)
        self.deadline = self._now() + config.idle_timeout
        self.connected: set[str] = set()  # peer connections that reached "connected"
        self._shutdown: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # spawned by this session: drains, peer-ended watch
        self._connect_tasks: dict[RTCPeerConnection, set[asyncio.Task[Any]]] = {}  # aiortc's, adopted
        self.log = SessionLog(log, remote)

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
        teardown.own(task, self._tasks, teardown.log_failure(self.log, closing=lambda: self.closing))

    def _adopt(self, pc: RTCPeerConnection) -> None:
        """Keep aiortc's connect task for ``pc`` (``setLocalDescription``/``setRemoteDescription``
        spawn it as their last act): the release awaits it; its outcome is always retrieved."""
        teardown.adopt_connect_tasks(pc, self._connect_tasks.setdefault(pc, set()),
                                     closing=lambda: self.closing, log=self.log)

    # --- the receive loop ------------------------------------------------------------------

    async def run(self) -> None:
        idle = self.config.idle_timeout
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
                                    f"{self.config.connect_timeout:g} s", close_code=CLOSE_INTERNAL_ERROR)
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
                    self.config.connect_timeout if self.phase is _Phase.ESTABLISHED else idle)
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
            self.log.exception("internal error")
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
        config = self.config
        claims = verify_token(message.token, config.secret, now=time.time(), issuer=config.issuer)
        if not self.registry.acquire_slot(self):
            await self.fail(SIGNALING_ERROR, "server busy: too many sessions, try again later",
                            close_code=CLOSE_TRY_AGAIN_LATER)
            return
        self.identity = claims.identity
        servers = build_ice_servers(config.parsed_turn_urls, config.turn_secret, claims.identity,
                                    config.turn_ttl, time.time())
        self.phase = _Phase.AWAIT_PUBLISHER
        self.log.info("%s authenticated (region %s)", claims.identity, message.region)
        await self.ws.send_str(encode(Iced(ice_servers=servers, ttl=config.turn_ttl)))

    def _new_pc(self, name: str) -> RTCPeerConnection:
        # iceServers must be an explicit list: None silently means a public STUN server.
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.registry.peer_connections.add(pc)

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
            self.log.info("the client closed its %s peer connection", name)
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

    async def _answer(self, pc: RTCPeerConnection, name: PcName) -> None:
        answer = await pc.createAnswer()
        try:
            await pc.setLocalDescription(answer)  # spawns aiortc's connect task (ICE, DTLS, media)
        finally:
            self._adopt(pc)
        if self.closing:
            return
        await self.ws.send_str(encode(Answer(pc=name, sdp=pc.localDescription.sdp)))

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
        self.log.info("error %d: %s", code, message)
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
        self.registry.release_slot(self)
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
                self.registry.peer_connections.discard(pc)
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


__all__ = ["Registry", "ServerStats", "Session", "SessionLog", "SignalingWebSocket"]
