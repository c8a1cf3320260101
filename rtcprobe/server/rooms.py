"""Rooms: Twilio Video's Network Quality API for live calls, in the signaling server
(docs/signaling.md#rooms; the model: docs/network-quality-rooms.md).

Theory of operation
-------------------
A hello carrying ``room`` makes the session a room participant. After ``iced`` the server admits
it to the room named in the hello (or in the token's room grant; a token with a grant joins that
room only), answers ``joined``, and from then on the session is a :class:`RoomMember`: the client
sends a stats sample (``nq-sample``) about once a second and relays its peer-to-peer negotiation
through the server (``signal``); the server pushes levels (``network-quality``) and the room's
events (``participant-*``). The media never reaches the server: it goes wherever the app sends it,
peer to peer or through its own SFU.

* One :class:`LiveRoom` per room name holds the core's pure :class:`~rtcprobe.core.room.Room`
  (attribution, one scorer per participant, what to push to whom) and drives it with the event
  loop's monotonic clock: every input is handed over with ``now = loop.time()``, the room's
  wake-ups (scoring ticks, removals after a signaling loss) are one ``loop.call_at`` handle kept
  on ``get_timer()``, and after every call the room's events are routed (:meth:`LiveRoom.pump`):
  a push to its receiver, a join/leave/reconnection to everyone else. A room exists while it has
  participants.
* Each member has an outgoing queue drained by one writer task, so the room (synchronous) never
  waits on a socket and a slow reader costs only itself: past ``max_pending`` queued messages the
  member is dropped (its signaling counts as lost).
* A session that ends without ``bye`` (and without a WebSocket close 1000/1001 from the client) has
  lost its signaling: the participant reads 0 to the others (``participant-reconnecting``) and is
  removed after the room's ``reconnect_timeout`` unless a session with the same identity joins
  again first (``participant-reconnected``). A room session that says nothing for
  ``silence_timeout`` (samples come every second) is closed the same way. A second live session
  with the same identity takes the place of the first, which gets 53205 and is closed (Twilio's
  rule).

Bad input is the sender's problem only. A sample that does not decode, is too big, too frequent,
or whose counters went backwards, a ``signal`` to nobody, a room message from a session that
joined no room: one ``room-error`` (:meth:`RoomError.to_dict`'s fields) to that session, which
stays connected; the room carries on. A session flooding the server (more than ``message_rate``
room messages per second sustained) is closed (53000), as is any frame that is not a protocol
message at all. Bounds: ``max_rooms`` per server, the core's ``RoomConfig`` per room (participants,
links and streams per sample, the sample interval), a sample at most 32 KiB, a ``signal`` at most
``max_signal_bytes``.

Nothing here imports aiortc: the server stays media-free.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final

import attrs

from rtcprobe.core.errors import ConfigError, PreflightErrorInfo
from rtcprobe.core.quality import QualityDemand
from rtcprobe.core.room import (
    DUPLICATE_IDENTITY,
    MAX_SAMPLE_BYTES,
    MESSAGE_INVALID,
    PARTICIPANT_NOT_FOUND,
    NetworkQualityConfig,
    NetworkQualityPush,
    ParticipantConnected,
    ParticipantDisconnected,
    ParticipantReconnected,
    ParticipantReconnecting,
    Room,
    RoomConfig,
    RoomError,
    decode_demand,
    decode_sample,
)
from rtcprobe.drivers.aiortc.protocol import (
    CLOSE_POLICY_VIOLATION,
    CLOSE_TRY_AGAIN_LATER,
    SIGNALING_ERROR,
    Ice,
    ProtocolError,
    json_type,
    parse_object,
)

from .tokens import INVALID as TOKEN_INVALID
from .tokens import MAX_ROOM_NAME, check_room_name

if TYPE_CHECKING:
    from .metrics import ServerMetrics
    from .session import Session
    from .tokens import TokenClaims

log = logging.getLogger("rtcprobe.server")

# Twilio Video's codes for a room that cannot be joined (docs/references.md#twilio-video-network-quality).
ROOM_NAME_INVALID: Final = PreflightErrorInfo(53100, "RoomNameInvalidError", "Room name is invalid")
ROOM_NAME_TOO_LONG: Final = PreflightErrorInfo(53101, "RoomNameTooLongError", "Room name is too long")
ROOM_CREATE_FAILED: Final = PreflightErrorInfo(53103, "RoomCreateFailedError", "Unable to create Room")

#: ``reason`` of a ``room-error`` and label of ``rtcprobe_room_errors_total``: the core's reasons
#: (core/room.py) and the server's own.
SERVER_REASONS: Final = ("signal-invalid", "signal-too-big", "room-name", "room-grant", "rooms-exhausted",
                         "flood", "too-slow")
CORE_REASONS: Final = ("identity-invalid", "identity-duplicate", "room-full", "not-found", "invalid-sample",
                       "sample-too-big", "too-frequent", "counters-backwards")
ERROR_REASONS: Final = CORE_REASONS + SERVER_REASONS

DEFAULT_MAX_ROOMS: Final = 1000
DEFAULT_SILENCE_TIMEOUT: Final = 10.0  # s: ten missed samples
DEFAULT_MAX_SIGNAL_BYTES: Final = 32 * 1024  # an SDP offer with every candidate is a few KiB
DEFAULT_MESSAGE_RATE: Final = 20.0  # room messages per second, sustained (one sample + trickled candidates)
DEFAULT_MESSAGE_BURST: Final = 60  # ... and at once (a browser trickles a dozen candidates per peer)
DEFAULT_MAX_PENDING: Final = 256  # messages queued for one member before it counts as gone


def _positive(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"rooms.{attribute.name} must be a positive number, got {value!r}")


@attrs.frozen
class RoomsConfig:
    """The server's room settings; each room's own bounds and timings are the core's ``room``."""

    room: RoomConfig = attrs.field(factory=RoomConfig, validator=attrs.validators.instance_of(RoomConfig))
    max_rooms: int = attrs.field(default=DEFAULT_MAX_ROOMS, validator=_positive)
    silence_timeout: float = attrs.field(default=DEFAULT_SILENCE_TIMEOUT, validator=_positive)
    max_signal_bytes: int = attrs.field(default=DEFAULT_MAX_SIGNAL_BYTES, validator=_positive)
    message_rate: float = attrs.field(default=DEFAULT_MESSAGE_RATE, validator=_positive)
    message_burst: int = attrs.field(default=DEFAULT_MESSAGE_BURST, validator=_positive)
    max_pending: int = attrs.field(default=DEFAULT_MAX_PENDING, validator=_positive)


# --- the room messages a client sends ----------------------------------------------------------


@attrs.frozen
class RoomHello:
    """An ``ice`` hello carrying ``room``: the v2 hello, plus which room and how to be told."""

    TYPE: ClassVar[str] = "ice"

    ice: Ice
    name: str | None  # None: the token's room grant names it
    network_quality: NetworkQualityConfig
    demand: QualityDemand


@attrs.frozen(eq=False)
class SampleMessage:
    """``nq-sample``: one stats sample, decoded by the room (a bad one is a ``room-error``)."""

    TYPE: ClassVar[str] = "nq-sample"

    sample: Any
    size: int  # bytes of the frame


@attrs.frozen(eq=False)
class SignalMessage:
    """``signal``: an opaque negotiation message for another participant, checked by the room."""

    TYPE: ClassVar[str] = "signal"

    to: Any
    data: Any


RoomMessage = SampleMessage | SignalMessage


def _fail(message: str) -> ProtocolError:
    return ProtocolError(SIGNALING_ERROR, message)


def parse_room_message(obj: Any, text: str) -> RoomHello | RoomMessage | None:
    """The room message a parsed frame holds (a hello carrying ``room``, ``nq-sample``,
    ``signal``), or None for any other (the protocol's parser says what is wrong with it).
    Raises ProtocolError (53000) for a malformed hello; what a sample or a signal carries is
    checked later, where a bad one costs a ``room-error`` only."""
    if not isinstance(obj, dict):
        return None
    kind = obj.get("type")
    if kind == SampleMessage.TYPE:
        # Only a frame of more than a quarter of the limit can exceed it in UTF-8 bytes.
        size = len(text.encode()) if len(text) * 4 > MAX_SAMPLE_BYTES else len(text)
        return SampleMessage(obj.get("sample"), size)
    if kind == SignalMessage.TYPE:
        return SignalMessage(obj.get("to"), obj.get("data"))
    if kind != Ice.TYPE or "room" not in obj:
        return None
    ice = parse_object(obj)  # the hello's own checks first: a v1 client gets the version error
    assert isinstance(ice, Ice)
    if "core" in obj:
        raise _fail("a hello carries 'room' or 'core', not both")
    room = obj["room"]
    if not isinstance(room, dict):
        raise _fail(f"'ice' field 'room' must be an object, got {json_type(room)}")
    name = room.get("name")
    if name is not None and not isinstance(name, str):
        raise _fail(f"'room' field 'name' must be a string, got {json_type(name)}")
    try:
        demand = decode_demand(room.get("demand", {}), "room.demand")
    except (ConfigError, TypeError, ValueError) as exc:
        raise _fail(str(exc)) from None
    # Twilio's rule: a verbosity out of range (or no object at all) means the default.
    return RoomHello(ice, name, NetworkQualityConfig.from_dict(room.get("networkQuality")), demand)


# --- errors --------------------------------------------------------------------------------------


class _Refused(Exception):
    """A room message refused with a ``room-error``; the sender stays connected."""

    def __init__(self, info: PreflightErrorInfo, reason: str, message: str) -> None:
        super().__init__(message)
        self.info = info.with_message(message)
        self.reason = reason


def room_error(info: PreflightErrorInfo, reason: str, identity: str | None) -> dict[str, Any]:
    """The ``room-error`` message: the code-table entry, why, and whose input it was."""
    return {"type": "room-error", **info.to_dict(), "reason": reason, "identity": identity}


class _Bucket:
    """A token bucket: ``rate`` per second sustained, ``burst`` at once."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.stamp = float(burst), now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def _encode(message: Mapping[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


# --- a participant's session ---------------------------------------------------------------------


class RoomMember:
    """A session in a room: its identity, its outgoing queue and the writer task draining it."""

    def __init__(self, session: Session, live: LiveRoom, identity: str) -> None:
        self.session = session
        self.live = live
        self.identity = identity
        self.active = True  # False once detached from the room (left, lost, replaced)
        self._queue: collections.deque[str] = collections.deque()
        self._wakeup = asyncio.Event()

    def start(self) -> None:
        self.live.registry.keep(asyncio.get_running_loop().create_task(self._write(), name="rtcprobe-room-writer"))

    def send(self, message: Mapping[str, Any]) -> None:
        self.send_text(_encode(message))

    def send_text(self, text: str) -> None:
        if not self.active:
            return
        if len(self._queue) >= self.live.registry.config.max_pending:
            # The client does not read: drop it (its signaling is lost) rather than queue forever;
            # after the room's current round (this may run while it routes its events).
            self.live.registry.count_error("too-slow")
            self.detach()
            asyncio.get_running_loop().call_soon(self._drop_slow)
            return
        self._queue.append(text)
        self._wakeup.set()

    async def _write(self) -> None:
        ws = self.session.ws
        metrics = self.live.registry.metrics
        while self.active:
            while self._queue:
                text = self._queue.popleft()
                try:
                    await ws.send_str(text)
                except Exception:  # the socket is going (reset, closed): the session ends it
                    return
                metrics.room_messages.labels("out").inc()
            self._wakeup.clear()
            if self.active:
                await self._wakeup.wait()

    def _drop_slow(self) -> None:
        self.live.lost(self)
        self._close_session(SIGNALING_ERROR, "too many messages queued: the client does not read its socket")

    def _close_session(self, code: int, message: str, close_code: int = CLOSE_POLICY_VIOLATION) -> None:
        task = asyncio.ensure_future(self.session.fail(code, message, close_code=close_code))
        self.live.registry.keep(task)

    def detach(self) -> None:
        """Stop sending: what is still queued is dropped and the writer ends after the frame it
        may be sending. It is not cancelled: aiohttp's writers share one drain waiter per
        connection, and cancelling a task blocked on it would cancel the waiter for every other
        writer of that socket (the session's error and close included)."""
        self.active = False
        self._queue.clear()
        self._wakeup.set()

    async def handle(self, message: RoomMessage) -> None:
        live = self.live
        if not self.active:
            return
        try:
            if isinstance(message, SampleMessage):
                self._sample(message)
            else:
                self._signal(message)
        except RoomError as exc:
            live.registry.count_error(exc.reason)
            self.send({"type": "room-error", **exc.to_dict()})
        except _Refused as exc:
            live.registry.count_error(exc.reason)
            self.send(room_error(exc.info, exc.reason, self.identity))
        live.pump()

    def _sample(self, message: SampleMessage) -> None:
        if message.size > MAX_SAMPLE_BYTES:
            raise RoomError(MESSAGE_INVALID, "sample-too-big",
                            f"sample too big: {message.size} bytes, the limit is {MAX_SAMPLE_BYTES}", self.identity)
        sample = decode_sample(message.sample, self.identity)
        self.live.room.handle_sample(self.identity, sample, self.live.now())
        self.live.registry.metrics.room_samples.inc()

    def _signal(self, message: SignalMessage) -> None:
        to, data = message.to, message.data
        if not isinstance(to, str):
            raise _Refused(MESSAGE_INVALID, "signal-invalid",
                           f"'signal' field 'to' must be a string, got {json_type(to)}")
        if not isinstance(data, dict):
            raise _Refused(MESSAGE_INVALID, "signal-invalid",
                           f"'signal' field 'data' must be an object, got {json_type(data)}")
        if to == self.identity:
            raise _Refused(MESSAGE_INVALID, "signal-invalid", "a participant does not signal itself")
        target = self.live.members.get(to)
        if target is None:
            state = "is reconnecting" if to in self.live.room.participants else "is not in the room"
            raise _Refused(PARTICIPANT_NOT_FOUND, "not-found", f"{to!r} {state}")
        text = _encode({"type": "signal", "from": self.identity, "data": data})
        limit = self.live.registry.config.max_signal_bytes
        if len(text) > limit or len(text.encode()) > limit:
            raise _Refused(MESSAGE_INVALID, "signal-too-big", f"signal too big: the limit is {limit} bytes")
        target.send_text(text)
        self.live.registry.metrics.room_signals.inc()

    def end(self, *, left: bool) -> None:
        """The session is over: the participant left (``bye``, a normal close) or lost its signaling."""
        if not self.active:
            return
        if left:
            self.live.leave(self)
        else:
            self.live.lost(self)


# --- one room --------------------------------------------------------------------------------------


class LiveRoom:
    """One room of the server: the core's :class:`Room`, its members and its timer."""

    def __init__(self, name: str, registry: RoomRegistry) -> None:
        self.name = name
        self.registry = registry
        self.room = Room(registry.config.room)
        self.members: dict[str, RoomMember] = {}  # live sessions by identity (reconnecting ones have none)
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False

    def now(self) -> float:
        """The loop's clock, never behind what the room was last told."""
        now = self._loop.time()
        last = self.room.now
        return now if last is None or now >= last else last

    def admit(self, member: RoomMember, hello: RoomHello) -> bool:
        """Put ``member`` in the room; returns whether it came back from a signaling loss.
        Raises RoomError (room full, invalid identity) with the room unchanged."""
        identity, room, now = member.identity, self.room, self.now()
        reconnected = False
        if identity in room.participants:
            old = self.members.get(identity)
            if old is not None:  # a second live session: it replaces the first (Twilio's rule)
                info = DUPLICATE_IDENTITY.with_message(
                    f"{identity!r} connected again from another session: this one is closed")
                old.detach()
                old._close_session(info.code, info.message)
                self.registry.count_error("identity-duplicate")
                room.leave(identity, now)
                room.join(identity, now, demand=hello.demand, network_quality=hello.network_quality)
            else:
                room.signaling_restored(identity, now)
                if room.demand(identity) != hello.demand:
                    room.update_demand(identity, hello.demand, now)
                reconnected = True
        else:
            room.join(identity, now, demand=hello.demand, network_quality=hello.network_quality)
        self.members[identity] = member
        member.start()
        member.send({
            "type": "joined", "room": self.name, "identity": identity, "reconnected": reconnected,
            "networkQuality": room.network_quality_config(identity).to_dict(),
            "participants": [{"identity": p, "state": "reconnecting" if room.reconnecting(p) else "connected"}
                             for p in room.participants if p != identity],
            "sampleInterval": room.config.tick_interval,
            "minSampleInterval": room.config.min_sample_interval,
        })
        self.pump()
        return reconnected

    def leave(self, member: RoomMember) -> None:
        if self._detach(member) and member.identity in self.room.participants:
            self.room.leave(member.identity, self.now())
        self.pump()

    def lost(self, member: RoomMember) -> None:
        if self._detach(member) and member.identity in self.room.participants:
            self.room.signaling_lost(member.identity, self.now())
        self.pump()

    def _detach(self, member: RoomMember) -> bool:
        """Detach ``member``; whether it was the participant's current session (a replaced one
        no longer speaks for it)."""
        member.detach()
        if self.members.get(member.identity) is member:
            del self.members[member.identity]
            return True
        return False

    def _broadcast(self, about: str, message: Mapping[str, Any]) -> None:
        text = _encode(message)
        for identity, member in list(self.members.items()):
            if identity != about:
                member.send_text(text)

    def pump(self) -> None:
        """Route the room's events, re-arm its timer; close the room once it is empty."""
        if self.closed:
            return
        for event in list(self.room.events()):
            if isinstance(event, NetworkQualityPush):
                member = self.members.get(event.to)
                if member is not None:
                    member.send({"type": "network-quality", "updates": [u.to_dict() for u in event.updates]})
            elif isinstance(event, ParticipantConnected):
                self._broadcast(event.identity, {"type": "participant-connected", "identity": event.identity})
            elif isinstance(event, ParticipantDisconnected):
                self._broadcast(event.identity, {"type": "participant-disconnected", "identity": event.identity,
                                                 "reason": event.reason})
            elif isinstance(event, ParticipantReconnecting):
                self._broadcast(event.identity, {"type": "participant-reconnecting", "identity": event.identity})
            elif isinstance(event, ParticipantReconnected):
                self._broadcast(event.identity, {"type": "participant-reconnected", "identity": event.identity})
        if not self.room.participants:
            self.registry.drop(self)
            return
        self.registry.update_gauges()
        deadline = self.room.get_timer()
        if self._timer is not None and (deadline is None or self._timer.when() != deadline):
            self._timer.cancel()
            self._timer = None
        if deadline is not None and self._timer is None:
            self._timer = self._loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = None
        try:
            self.room.handle_timer(self.now())
        except Exception:  # a bug must not stop the room's clock: log it, keep ticking
            log.exception("room %r: the timer failed", self.name)
        self.pump()

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for member in list(self.members.values()):
            member.detach()
        self.members.clear()


# --- every room of the server ---------------------------------------------------------------------


class RoomRegistry:
    """The server's rooms by name, their bounds and metrics."""

    def __init__(self, config: RoomsConfig, metrics: ServerMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.rooms: dict[str, LiveRoom] = {}
        self._buckets: weakref.WeakKeyDictionary[Session, _Bucket] = weakref.WeakKeyDictionary()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def participants(self) -> int:
        return sum(len(live.room.participants) for live in self.rooms.values())

    def update_gauges(self) -> None:
        self.metrics.rooms_open.set(len(self.rooms))
        self.metrics.room_participants.set(self.participants)

    def count_error(self, reason: str) -> None:
        self.metrics.room_error(reason)

    def keep(self, task: asyncio.Task[Any]) -> None:
        """Hold a reference to ``task`` until it ends (the loop keeps only weak ones)."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def drop(self, live: LiveRoom) -> None:
        live.close()
        if self.rooms.get(live.name) is live:
            del self.rooms[live.name]
        self.update_gauges()

    async def join(self, session: Session, claims: TokenClaims, hello: RoomHello) -> RoomMember | None:
        """Admit ``session`` (authenticated as ``claims``, ``iced`` sent) to its room; None when it
        was refused (the session has been failed with the reason's code)."""
        name = hello.name if hello.name is not None else claims.room
        if name is None:
            await self._refuse(session, ROOM_NAME_INVALID, "room-name",
                               "the hello names no room and the access token grants none")
            return None
        if (why := check_room_name(name)) is not None:
            info = ROOM_NAME_TOO_LONG if len(name) > MAX_ROOM_NAME else ROOM_NAME_INVALID
            await self._refuse(session, info, "room-name", why)
            return None
        if claims.room is not None and claims.room != name:
            info = PreflightErrorInfo(TOKEN_INVALID, "AccessTokenInvalidError", "Invalid Access Token")
            self.metrics.token_rejected(TOKEN_INVALID)
            await self._refuse(session, info, "room-grant",
                               f"the access token grants room {claims.room!r}, not {name!r}")
            return None
        live = self.rooms.get(name)
        if live is None:
            if len(self.rooms) >= self.config.max_rooms:
                await self._refuse(session, ROOM_CREATE_FAILED, "rooms-exhausted",
                                   f"server busy: {self.config.max_rooms} rooms are open, try again later",
                                   close_code=CLOSE_TRY_AGAIN_LATER)
                return None
            live = self.rooms[name] = LiveRoom(name, self)
        member = RoomMember(session, live, claims.identity)
        try:
            reconnected = live.admit(member, hello)
        except RoomError as exc:
            if not live.room.participants:
                self.drop(live)
            await self._refuse(session, exc.error, exc.reason, exc.error.message)
            return None
        self.update_gauges()
        session.log.info("%s %s room %r", claims.identity, "rejoined" if reconnected else "joined", name)
        return member

    async def _refuse(self, session: Session, info: PreflightErrorInfo, reason: str, message: str, *,
                      close_code: int = CLOSE_POLICY_VIOLATION) -> None:
        self.count_error(reason)
        await session.fail(info.code, message, close_code=close_code)
        return None

    async def handle(self, session: Session, member: RoomMember | None, message: RoomMessage) -> None:
        """A room message from ``session`` (after ``iced``): rate-limited, then the member's."""
        loop = asyncio.get_running_loop()
        bucket = self._buckets.get(session)
        if bucket is None:
            bucket = self._buckets[session] = _Bucket(self.config.message_rate, self.config.message_burst, loop.time())
        self.metrics.room_messages.labels("in").inc()
        if not bucket.take(loop.time()):
            self.count_error("flood")
            await session.fail(SIGNALING_ERROR, f"too many room messages: at most {self.config.message_rate:g} "
                               "per second sustained")
            return
        if member is not None:
            await member.handle(message)
            return
        # A session that joined no room (or was replaced): an error for it alone.
        self.count_error("not-found")
        text = _encode(room_error(PARTICIPANT_NOT_FOUND.with_message(
            f"'{message.TYPE}' from a session that is not in a room (join with a hello carrying 'room')"),
            "not-found", session.identity))
        with contextlib.suppress(ConnectionError, RuntimeError):
            await session.ws.send_str(text)

    def close(self) -> None:
        """The server is shutting down: every room goes. The writers end by themselves (detached)
        and the sessions close with the server; nothing is cancelled (see RoomMember.detach)."""
        for live in list(self.rooms.values()):
            self.drop(live)


__all__ = [
    "ERROR_REASONS", "ROOM_CREATE_FAILED", "ROOM_NAME_INVALID", "ROOM_NAME_TOO_LONG", "LiveRoom", "RoomHello",
    "RoomMember", "RoomMessage", "RoomRegistry", "RoomsConfig", "SampleMessage", "SignalMessage", "parse_room_message",
    "room_error",
]
