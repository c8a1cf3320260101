"""Network quality in a live call, for Python apps on aiortc: ``rtcprobe.connect`` and the
:class:`Room` it returns, with Twilio Video's names in snake_case (docs/network-quality-calls.md).

Theory of operation
-------------------
The app keeps its own media: its ``RTCPeerConnection`` objects go wherever it sends them, peer to
peer or to its own SFU. :func:`connect` opens the signaling WebSocket of an ``rtcprobe serve``
and joins a room (the hello carries ``room``: docs/signaling.md#rooms); :meth:`Room.monitor` adds
a peer connection to what this participant reports. About once a second (``sample_interval``)
the room samples every monitored peer connection (:class:`~rtcprobe.drivers.aiortc.roomstats.LinkStats`,
one link per remote end) and sends the sample with its demand (what it publishes and subscribes
to: given, or read from the monitored transceivers); the server attributes every impairment to
the leg that caused it, scores every participant and pushes levels back, the local one at the
local verbosity, the others' at the remote verbosity. Those pushes update
:attr:`Participant.network_quality_level` / :attr:`Participant.network_quality_stats` and fire
``networkQualityLevelChanged(level, stats)`` when a level changes. The room's events
(``participantConnected`` …) keep :attr:`Room.participants` current.

A ``signal`` relay rides on the same socket (:meth:`Room.signal`, the ``"signal"`` event): apps
without signaling of their own negotiate through it, as ``rtcprobe call`` does with
:class:`MeshCall`, a participant that sends synthetic audio and video to every other participant
of the room over one peer connection each (a mesh), through TURN when the server hands it out,
and optionally through an impairment relay running a scenario in front of that TURN server.

This module starts servers' helpers (the impairment relay) and talks to a server, which is why it
sits in the top layer (docs/architecture.md#layers); it runs no server itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal

import aiohttp
import attrs
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcconfiguration import RTCBundlePolicy, RTCIceTransportPolicy
from aiortc.sdp import candidate_from_sdp

from rtcprobe.core.config import MediaDemand, VideoSpec
from rtcprobe.core.errors import ConfigError, UsageError
from rtcprobe.core.observations import IceServer
from rtcprobe.core.quality import (
    NetworkQualityBandwidthStats,
    NetworkQualityFractionLostStats,
    NetworkQualityLatencyStats,
    NetworkQualityMediaStats,
    NetworkQualitySendOrRecvStats,
    NetworkQualityStats,
    QualityDemand,
)
from rtcprobe.core.room import PeerLink, RoomSample, encode_demand, encode_sample
from rtcprobe.drivers.aiortc import loopback, protocol, teardown
from rtcprobe.drivers.aiortc.driver import signaling_url
from rtcprobe.drivers.aiortc.media import PatternTrack, ToneTrack, check_video
from rtcprobe.drivers.aiortc.roomstats import LinkStats, SourceOf
from rtcprobe.drivers.aiortc.turn_client import TURN_SCHEMES, parse_turn_url

if TYPE_CHECKING:
    from rtcprobe.netem.scenario import Scenario

log = logging.getLogger(__name__)

DEFAULT_SAMPLE_INTERVAL: Final = 1.0  # s: Twilio's clients summarised their stats about once a second
CONNECT_TIMEOUT: Final = 10.0  # s for the socket, ``iced`` and ``joined``
BYE_TIMEOUT: Final = 1.0  # s for the server's close after ``bye``
HEARTBEAT: Final = 10.0  # s between WebSocket pings
MAX_MESH_PEERS: Final = 3  # rtcprobe call's mesh: up to 4 participants (every stream is sent once per peer)
PC_CLOSE_TIMEOUT: Final = 2.0  # s for a peer connection's close() before its TURN deallocations are given up
LATE_START_TIMEOUT: Final = 0.5
#: twilio-video.js's events, by emitter.
ROOM_EVENTS: Final = ("participantConnected", "participantDisconnected", "participantReconnecting",
                      "participantReconnected", "disconnected", "signal", "error")
PARTICIPANT_EVENTS: Final = ("networkQualityLevelChanged",)

ParticipantState = Literal["connected", "reconnecting", "disconnected"]


class RoomConnectError(Exception):
    """The room could not be joined (or the server ended it): Twilio's ``code``, ``name`` and
    ``message`` (a refused token: 201xx; a full room: 53105; ...)."""

    def __init__(self, code: int, message: str, name: str = "SignalingConnectionError") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.name = name
        self.message = message


class _Emitter:
    """Callbacks by event name; a callback that raises is logged and the others still run."""

    _EVENTS: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._handlers: dict[str, list[Callable[..., Any]]] = {name: [] for name in self._EVENTS}

    def on(self, name: str, callback: Callable[..., Any]) -> _Emitter:
        if name not in self._handlers:
            raise UsageError(f"unknown event {name!r}; one of: {', '.join(self._EVENTS)}")
        self._handlers[name].append(callback)
        return self

    def off(self, name: str, callback: Callable[..., Any]) -> _Emitter:
        with contextlib.suppress(KeyError, ValueError):
            self._handlers[name].remove(callback)
        return self

    def _emit(self, name: str, *args: Any) -> None:
        for callback in list(self._handlers[name]):
            try:
                callback(*args)
            except Exception:
                log.exception("room %r callback raised", name)


class Participant(_Emitter):
    """A participant as this client sees it: its identity, its level 0..5 (None until the server
    said one; never for a remote participant when the remote verbosity is 0) and the stats behind
    it (``NetworkQualityStats``: at verbosity 1 its ``audio``/``video`` are None).

    Events: ``networkQualityLevelChanged(level, stats)``, when the level changes (also the first
    time one is known).
    """

    _EVENTS = PARTICIPANT_EVENTS

    def __init__(self, identity: str, state: ParticipantState = "connected") -> None:
        super().__init__()
        self.identity = identity
        self.state: ParticipantState = state
        self.network_quality_level: int | None = None
        self.network_quality_stats: NetworkQualityStats | None = None

    def on(self, name: str, callback: Callable[..., Any]) -> Participant:
        super().on(name, callback)
        return self

    def _update(self, level: int, stats: NetworkQualityStats | None, changed: bool) -> None:
        self.network_quality_level = level
        self.network_quality_stats = stats
        if changed:
            self._emit("networkQualityLevelChanged", level, stats)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity!r}, level={self.network_quality_level})"


class LocalParticipant(Participant):
    """This client, as the room scores it (Twilio's ``room.localParticipant``)."""


class RemoteParticipant(Participant):
    """Another participant (an entry of Twilio's ``room.participants``)."""


# --- the wire's stats shape back into the core's classes ------------------------------------------


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _side_stats(d: Any) -> NetworkQualitySendOrRecvStats | None:
    if not isinstance(d, dict):
        return None
    bw, lat, fl = (_obj(d.get(k)) for k in ("bandwidth", "latency", "fractionLost"))
    return NetworkQualitySendOrRecvStats(
        NetworkQualityBandwidthStats(_num(bw.get("actual")), _num(bw.get("available")), _int(bw.get("level"))),
        NetworkQualityLatencyStats(_num(lat.get("jitter")), _num(lat.get("rtt")), _int(lat.get("level"))),
        NetworkQualityFractionLostStats(_num(fl.get("fractionLost")), _int(fl.get("level"))),
    )


def _media_stats(d: Any) -> NetworkQualityMediaStats | None:
    if not isinstance(d, dict):
        return None
    return NetworkQualityMediaStats(_int(d.get("send")), _int(d.get("recv")), _side_stats(d.get("sendStats")),
                                    _side_stats(d.get("recvStats")))


def stats_from_dict(d: Mapping[str, Any], level: int) -> NetworkQualityStats:
    """The core's :class:`NetworkQualityStats` from its ``to_dict()`` shape (what the server pushes)."""
    return NetworkQualityStats(level, _media_stats(d.get("audio")), _media_stats(d.get("video")))


# --- the room ----------------------------------------------------------------------------------


def _has_turn(servers: Sequence[IceServer]) -> bool:
    return any(url.partition(":")[0].lower() in TURN_SCHEMES for s in servers for url in s.urls)


def _media_demand(monitors: Sequence[LinkStats]) -> QualityDemand:
    """What the monitored peer connections publish and subscribe to, read from their transceivers.
    A sent video's size comes from its track when it says (``PatternTrack.spec``), else 640x480@30;
    a received one is taken to be what this participant sends (else the same default)."""
    audio_send = audio_recv = False
    video_send: VideoSpec | None = None
    video_recv = False
    for monitor in monitors:
        for t in monitor.pc.getTransceivers():
            direction = t.currentDirection
            sending = direction in ("sendrecv", "sendonly") and t.sender.track is not None
            receiving = direction in ("sendrecv", "recvonly")
            if t.kind == "audio":
                audio_send, audio_recv = audio_send or sending, audio_recv or receiving
            elif t.kind == "video":
                if sending and video_send is None:
                    spec = getattr(t.sender.track, "spec", None)
                    video_send = spec if isinstance(spec, VideoSpec) else VideoSpec()
                video_recv = video_recv or receiving
    recv_spec = (video_send or VideoSpec()) if video_recv else None
    return QualityDemand(audio_send=audio_send, audio_recv=audio_recv, video_send=video_send, video_recv=recv_spec)


class Room(_Emitter):
    """A joined room (Twilio Video's ``Room``): made by :func:`connect`.

    * ``name``, ``local_participant``, ``participants`` (identity → :class:`RemoteParticipant`,
      reconnecting ones included), ``state`` (``"connected"``/``"disconnected"``), ``ice_servers``
      (what the server handed out: TURN credentials for the app's own peer connections);
    * :meth:`monitor` / :meth:`unmonitor` a peer connection, :meth:`signal` another participant,
      :meth:`disconnect`;
    * events (``room.on(name, callback)``): ``participantConnected(participant)``,
      ``participantDisconnected(participant)``, ``participantReconnecting(participant)``,
      ``participantReconnected(participant)``, ``disconnected(room, error)`` (error None after
      :meth:`disconnect`), ``signal(identity, data)`` and ``error(info)`` (a ``room-error`` the
      server sent about this client's input: a dict with ``code``, ``name``, ``message``, ``reason``).
    """

    _EVENTS = ROOM_EVENTS

    def __init__(self, *, name: str, identity: str, ice_servers: tuple[IceServer, ...],
                 participants: Sequence[tuple[str, ParticipantState]], network_quality: Mapping[str, int],
                 demand: QualityDemand | None, sample_interval: float,
                 session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        super().__init__()
        self.name = name
        self.local_participant = LocalParticipant(identity)
        self._participants = {p: RemoteParticipant(p, state) for p, state in participants}
        self.ice_servers = ice_servers
        self.network_quality = dict(network_quality)
        self.state: Literal["connected", "disconnected"] = "connected"
        self.sample_interval = sample_interval
        self._demand = demand
        self._sent_demand: QualityDemand | None = None
        self._session = session
        self._ws = ws
        self._monitors: dict[Any, LinkStats] = {}  # by RTCPeerConnection
        self._tasks: set[asyncio.Task[Any]] = set()
        self._disconnecting = False
        self.samples_sent = 0
        self.errors: list[dict[str, Any]] = []  # every room-error the server sent, oldest first

    def on(self, name: str, callback: Callable[..., Any]) -> Room:
        super().on(name, callback)
        return self

    @property
    def participants(self) -> Mapping[str, RemoteParticipant]:
        """The other participants by identity (a read-only view that follows the room)."""
        return MappingProxyType(self._participants)

    @property
    def demand(self) -> QualityDemand:
        """What this participant publishes and subscribes to, as the next sample will say."""
        return self._demand if self._demand is not None else _media_demand(list(self._monitors.values()))

    def set_demand(self, demand: QualityDemand | None) -> None:
        """Say what this participant publishes and subscribes to; None reads it from the monitored
        peer connections (the default)."""
        if demand is not None and not isinstance(demand, QualityDemand):
            raise ConfigError(f"demand must be a QualityDemand or None, got {demand!r}")
        self._demand = demand

    # --- peer connections ----------------------------------------------------------------------

    def monitor(self, pc: RTCPeerConnection, remote: str | None = None, *, server_name: str = "sfu",
                source_of: SourceOf | None = None, inbound_includes_uplink: bool = True) -> None:
        """Report ``pc`` in this participant's samples from now on: a peer connection to the
        participant ``remote`` (a mesh), or, with ``remote=None``, to a media server
        (``server_name``; ``source_of(transceiver)`` names whose media each received transceiver
        carries; ``inbound_includes_uplink``: whether the server forwards packets as they came).
        One peer connection per remote end."""
        if not isinstance(pc, RTCPeerConnection):
            raise ConfigError(f"monitor() takes an aiortc RTCPeerConnection, got {type(pc).__name__}")
        if self.state != "connected":
            raise UsageError("the room is disconnected")
        server = remote is None
        name = server_name if remote is None else remote
        if remote is not None and remote == self.local_participant.identity:
            raise ConfigError("a peer connection to oneself is not a link")
        for other in self._monitors.values():
            if other.pc is pc:
                raise UsageError("this peer connection is monitored already")
            if (other.remote, other.server) == (name, server) and not other.closed:
                raise UsageError(f"a peer connection to {name!r} is monitored already")
        self._monitors[pc] = LinkStats(pc, name, server=server, source_of=source_of,
                                       inbound_includes_uplink=inbound_includes_uplink)

    def unmonitor(self, pc: RTCPeerConnection) -> None:
        """Stop reporting ``pc`` (a closed peer connection is dropped by itself)."""
        monitor = self._monitors.pop(pc, None)
        if monitor is not None:
            monitor.close()

    # --- signaling -----------------------------------------------------------------------------

    async def signal(self, to: str, data: Mapping[str, Any]) -> None:
        """Send ``data`` (a JSON object: an offer, an answer, a candidate…) to participant ``to``
        through the server, which delivers it as a ``signal`` event (or answers with an ``error``
        event: nobody of that name, or too big)."""
        if self.state != "connected":
            raise UsageError("the room is disconnected")
        await self._send({"type": "signal", "to": to, "data": dict(data)})

    async def _send(self, message: Mapping[str, Any]) -> None:
        await self._ws.send_str(json.dumps(message, separators=(",", ":"), allow_nan=False))

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        for coro, name in ((self._read(), "reader"), (self._sample_loop(), "sampler")):
            task = loop.create_task(coro, name=f"rtcprobe-room-{name}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _read(self) -> None:
        error: RoomConnectError | None = None
        try:
            async for msg in self._ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    message = json.loads(msg.data)
                except ValueError:
                    log.warning("room %r: the server sent something that is not JSON", self.name)
                    continue
                if isinstance(message, dict) and message.get("type") == "error":
                    error = RoomConnectError(_int(message.get("code")) or protocol.SIGNALING_ERROR,
                                             str(message.get("message")))
                    continue
                if isinstance(message, dict):
                    self._handle(message)
        finally:
            if not self._disconnecting:
                if error is None:
                    error = RoomConnectError(53001, "the signaling connection closed",
                                             "SignalingConnectionDisconnectedError")
                self._tasks.add(asyncio.ensure_future(self._closed_by_server(error)))

    async def _closed_by_server(self, error: RoomConnectError) -> None:
        await self._shutdown()
        self._emit("disconnected", self, error)

    def _participant(self, identity: Any) -> RemoteParticipant | None:
        return self._participants.get(identity) if isinstance(identity, str) else None

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        identity = message.get("identity")
        if kind == "network-quality":
            for update in message.get("updates") or ():
                if not isinstance(update, dict) or _int(update.get("level")) is None:
                    continue
                level = update["level"]
                who: Participant | None = (self.local_participant if update.get("local")
                                           else self._participant(update.get("identity")))
                if who is None:
                    continue
                raw = update.get("stats")
                stats = stats_from_dict(raw, level) if isinstance(raw, dict) else None
                who._update(level, stats, bool(update.get("levelChanged", True)))
        elif kind == "participant-connected" and isinstance(identity, str):
            joined = self._participants.setdefault(identity, RemoteParticipant(identity))
            joined.state = "connected"
            self._emit("participantConnected", joined)
        elif kind in ("participant-disconnected", "participant-reconnecting", "participant-reconnected"):
            participant = self._participant(identity)
            if participant is None:
                return
            if kind == "participant-disconnected":
                del self._participants[participant.identity]
                participant.state = "disconnected"
                self._emit("participantDisconnected", participant)
            elif kind == "participant-reconnecting":
                participant.state = "reconnecting"
                self._emit("participantReconnecting", participant)
            else:
                participant.state = "connected"
                self._emit("participantReconnected", participant)
        elif kind == "signal" and isinstance(message.get("from"), str) and isinstance(message.get("data"), dict):
            self._emit("signal", message["from"], message["data"])
        elif kind == "room-error":
            self.errors.append(message)
            log.warning("room %r: the server refused our input: %s (%s)", self.name, message.get("message"),
                        message.get("reason"))
            self._emit("error", message)

    async def _sample_loop(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += self.sample_interval
            delay = due - loop.time()
            if delay < 0:  # a slow round: skip ahead rather than send a burst
                due = loop.time()
            else:
                await asyncio.sleep(delay)
            await self._send_sample()

    async def _send_sample(self) -> None:
        for pc, monitor in list(self._monitors.items()):
            if monitor.closed:
                self.unmonitor(pc)
        monitors = list(self._monitors.values())
        results = await asyncio.gather(*(m.sample() for m in monitors), return_exceptions=True)
        links: list[PeerLink] = []
        for monitor, result in zip(monitors, results, strict=True):
            if isinstance(result, PeerLink):
                links.append(result)
            elif isinstance(result, BaseException):
                log.debug("room %r: sampling the link to %s failed: %r", self.name, monitor.remote, result)
        demand = self.demand
        sample = RoomSample(tuple(links), demand if demand != self._sent_demand else None)
        await self._send({"type": "nq-sample", "sample": encode_sample(sample)})
        self._sent_demand = demand
        self.samples_sent += 1

    # --- leaving -------------------------------------------------------------------------------

    async def disconnect(self) -> None:
        """Leave the room (``bye``): the others see ``participantDisconnected`` at once. The
        monitored peer connections are the app's: they stay open."""
        if self._disconnecting:
            return
        self._disconnecting = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._send({"type": "bye"}), BYE_TIMEOUT)
        await self._shutdown()
        self._emit("disconnected", self, None)

    async def _shutdown(self) -> None:
        self._disconnecting = True
        self.state = "disconnected"
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await asyncio.wait_for(self._ws.close(), BYE_TIMEOUT)
        except asyncio.CancelledError:
            # A task cancelled while it waited for the socket to drain cancels aiohttp's shared
            # drain waiter: only a cancellation of this task itself is ours to pass on.
            if current is not None and current.cancelling():
                raise
        except Exception:
            pass
        await self._session.close()
        for pc in list(self._monitors):
            self.unmonitor(pc)
        self.local_participant.state = "disconnected"

    async def __aenter__(self) -> Room:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()


def _token_room(token: str) -> str | None:
    """The room grant of an access token, read without checking it (the server checks it)."""
    import jwt

    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    video = claims.get("grants", {}).get("video") if isinstance(claims.get("grants"), dict) else None
    room = video.get("room") if isinstance(video, dict) else None
    return room if isinstance(room, str) else None


async def connect(
    token: str,
    *,
    url: str,
    name: str | None = None,
    network_quality: Mapping[str, int] | bool | None = None,
    demand: QualityDemand | None = None,
    sample_interval: float = DEFAULT_SAMPLE_INTERVAL,
    region: str = protocol.DEFAULT_REGION,
    timeout: float = CONNECT_TIMEOUT,
) -> Room:
    """Join room ``name`` (default: the token's room grant) on the ``rtcprobe serve`` at ``url``.

    ``network_quality`` is Twilio's ``{"local": 1..3, "remote": 0..3}`` (default local 1, remote 0;
    a value out of range means the default). ``demand`` says what this participant publishes and
    subscribes to (default: read from the monitored peer connections). Raises
    :class:`RoomConnectError` when the server refuses (its code) or cannot be reached (53000).
    """
    asyncio.get_running_loop()  # misuse outside a loop raises RuntimeError here
    if not token:
        raise ConfigError("connect() needs an access token")
    if demand is not None and not isinstance(demand, QualityDemand):
        raise ConfigError(f"demand must be a QualityDemand or None, got {demand!r}")
    if not 0.2 <= sample_interval <= 10:
        raise ConfigError(f"sample_interval must be 0.2..10 s, got {sample_interval!r}")
    normalized = signaling_url(url)
    room: dict[str, Any] = {"networkQuality": dict(network_quality) if isinstance(network_quality, Mapping)
                            else {}}
    if name is not None:
        room["name"] = name
    if demand is not None:
        room["demand"] = encode_demand(demand)
    hello = {**protocol.Ice(token=token, region=region, preflight=False).to_dict(), "room": room}
    session = aiohttp.ClientSession()
    try:
        return await asyncio.wait_for(_join(session, normalized, hello, demand, sample_interval, name, token),
                                      timeout)
    except TimeoutError:
        await session.close()
        raise RoomConnectError(protocol.SIGNALING_ERROR, f"no answer from {normalized} within {timeout:g} s",
                               "SignalingConnectionTimeoutError") from None
    except BaseException:
        await session.close()
        raise


async def _join(session: aiohttp.ClientSession, url: str, hello: dict[str, Any], demand: QualityDemand | None,
                sample_interval: float, name: str | None, token: str) -> Room:
    try:
        ws = await session.ws_connect(url, max_msg_size=protocol.MAX_MESSAGE_SIZE, heartbeat=HEARTBEAT)
    except (aiohttp.ClientError, OSError) as exc:
        raise RoomConnectError(protocol.SIGNALING_ERROR,
                               f"could not connect to the signaling server at {url}: {exc or type(exc).__name__}"
                               ) from None
    await ws.send_str(json.dumps(hello))
    iced: protocol.Iced | None = None
    while True:
        msg = await ws.receive()
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise RoomConnectError(53001, "the signaling connection closed before the room was joined",
                                   "SignalingConnectionDisconnectedError")
        message = json.loads(msg.data)
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "error":
            raise RoomConnectError(_int(message.get("code")) or protocol.SIGNALING_ERROR, str(message.get("message")))
        if kind == "iced" and iced is None:
            parsed = protocol.parse_message(msg.data)
            assert isinstance(parsed, protocol.Iced)
            iced = parsed
        elif kind == "joined" and iced is not None:
            break
        else:
            raise RoomConnectError(protocol.SIGNALING_ERROR, f"unexpected {kind!r} before 'joined'")
    assert iced is not None
    participants: list[tuple[str, ParticipantState]] = [
        (p["identity"], "reconnecting" if p.get("state") == "reconnecting" else "connected")
        for p in message.get("participants", ()) if isinstance(p, dict) and isinstance(p.get("identity"), str)]
    room = Room(name=str(message.get("room", name or _token_room(token))), identity=str(message["identity"]),
                ice_servers=iced.ice_servers, participants=participants,
                network_quality=message.get("networkQuality") or {}, demand=demand,
                sample_interval=sample_interval, session=session, ws=ws)
    room._start()
    return room


# --- a synthetic participant in a mesh: rtcprobe call --------------------------------------------


@attrs.define
class _Peer:
    pc: RTCPeerConnection
    tracks: list[MediaStreamTrack]
    connect_tasks: set[asyncio.Task[Any]] = attrs.field(factory=set)
    lock: asyncio.Lock = attrs.field(factory=asyncio.Lock)


class MeshCall:
    """A participant that sends a tone and a moving pattern to every other participant of
    ``room`` over one peer connection each, negotiated through the room's ``signal`` relay: the
    newcomer offers to everyone already there, who answers. Every peer connection is relay-only
    when TURN is among its ICE servers (``relay_only`` None), and monitored by the room.

    ``ice_servers`` defaults to what the server handed out; ``confine_to_loopback`` keeps host
    candidates on 127.0.0.1 (a call on one machine). A mesh has at most ``max_peers`` peers: more
    participants in the room at :meth:`start` raise UsageError, and later offers beyond it are
    declined (logged).
    """

    def __init__(self, room: Room, *, media: MediaDemand | None = None,
                 ice_servers: Sequence[IceServer] | None = None, relay_only: bool | None = None,
                 confine_to_loopback: bool = False, video_seed: int = 0, max_peers: int = MAX_MESH_PEERS) -> None:
        self.room = room
        self.max_peers = max_peers
        self.media = media if media is not None else MediaDemand(video=VideoSpec(320, 240, 15.0))
        if self.media.video is not None:
            check_video(self.media.video)
        self.ice_servers = tuple(ice_servers) if ice_servers is not None else room.ice_servers
        self.relay_only = _has_turn(self.ice_servers) if relay_only is None else relay_only
        self.confine = confine_to_loopback
        self._seed = video_seed
        self._peers: dict[str, _Peer] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        room.set_demand(QualityDemand.symmetric(self.media))

    @property
    def peer_connections(self) -> Mapping[str, RTCPeerConnection]:
        """For diagnostics: the peer connection to each remote participant."""
        return MappingProxyType({identity: peer.pc for identity, peer in self._peers.items()})

    def start(self) -> None:
        """Offer to everyone in the room now, answer whoever offers later."""
        if len(self.room.participants) > self.max_peers:
            raise UsageError(f"the mesh holds up to {self.max_peers + 1} participants; room {self.room.name!r} "
                             f"has {len(self.room.participants)} others already")
        self.room.on("signal", self._on_signal)
        self.room.on("participantDisconnected", self._on_left)
        for identity in list(self.room.participants):
            self._spawn(self._offer(identity), f"offer-{identity}")

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"rtcprobe-call-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None and not self._closing:
            log.warning("call task %s failed: %r", task.get_name(), exc)

    def _new_peer(self, remote: str) -> _Peer:
        ice = [RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential) for s in self.ice_servers]
        pc = RTCPeerConnection(RTCConfiguration(
            iceServers=ice, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
            iceTransportPolicy=RTCIceTransportPolicy.RELAY if self.relay_only else RTCIceTransportPolicy.ALL))
        tracks: list[MediaStreamTrack] = []
        if self.media.audio:
            tracks.append(ToneTrack())
        if self.media.video is not None:
            tracks.append(PatternTrack(self.media.video, seed=self._seed))
        peer = _Peer(pc, tracks)
        self._peers[remote] = peer

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._spawn(self._consume(track), f"consume-{remote}-{track.kind}")

        return peer

    async def _describe(self, peer: _Peer, call: Callable[[], Any]) -> None:
        """set*Description, inside the loopback confinement when asked, adopting aiortc's task."""
        try:
            with loopback.confine_ice_to_loopback() if self.confine else contextlib.nullcontext():
                await call()
        finally:
            teardown.adopt_connect_tasks(peer.pc, peer.connect_tasks, closing=lambda: self._closing, log=log)

    async def _offer(self, remote: str) -> None:
        peer = self._new_peer(remote)
        async with peer.lock:
            for track in peer.tracks:
                peer.pc.addTransceiver(track, direction="sendrecv")
            await self._describe(peer, lambda: peer.pc.setLocalDescription(None))  # gathers every candidate
            self.room.monitor(peer.pc, remote)
            await self.room.signal(remote, {"description": _description(peer.pc)})

    async def _on_offer(self, remote: str, offer: RTCSessionDescription) -> None:
        if remote not in self._peers and len(self._peers) >= self.max_peers:
            log.warning("declined %s's offer: the mesh holds up to %d participants", remote, self.max_peers + 1)
            return
        old = self._peers.pop(remote, None)
        if old is not None:  # the other side started over (it rejoined): so do we
            self.room.unmonitor(old.pc)
            await self._close_peer(old)
        peer = self._new_peer(remote)
        async with peer.lock:
            await self._describe(peer, lambda: peer.pc.setRemoteDescription(offer))
            for track in peer.tracks:
                peer.pc.addTrack(track)
            await self._describe(peer, lambda: peer.pc.setLocalDescription(None))
            self.room.monitor(peer.pc, remote)
            await self.room.signal(remote, {"description": _description(peer.pc)})

    def _on_signal(self, remote: str, data: Mapping[str, Any]) -> None:
        if self._closing:
            return
        description = data.get("description")
        if isinstance(description, dict) and description.get("type") in ("offer", "answer"):
            sdp = RTCSessionDescription(sdp=str(description.get("sdp", "")), type=str(description["type"]))
            if sdp.type == "offer":
                self._spawn(self._on_offer(remote, sdp), f"answer-{remote}")
            else:
                self._spawn(self._on_answer(remote, sdp), f"answered-{remote}")
        elif "candidate" in data:  # a trickled candidate (browsers trickle; aiortc gathers first)
            self._spawn(self._on_candidate(remote, data["candidate"]), f"candidate-{remote}")

    async def _on_answer(self, remote: str, answer: RTCSessionDescription) -> None:
        peer = self._peers.get(remote)
        if peer is None:
            return
        async with peer.lock:
            if peer.pc.signalingState == "have-local-offer":
                await self._describe(peer, lambda: peer.pc.setRemoteDescription(answer))

    async def _on_candidate(self, remote: str, candidate: Any) -> None:
        peer = self._peers.get(remote)
        if peer is None:
            return
        async with peer.lock:
            if candidate is None:
                await peer.pc.addIceCandidate(None)
                return
            line = candidate.get("candidate") if isinstance(candidate, dict) else None
            if not isinstance(line, str) or not line:
                return
            try:
                parsed = candidate_from_sdp(line.split(":", 1)[1] if line.startswith("candidate:") else line)
            except (ValueError, IndexError):
                return
            parsed.sdpMid = candidate.get("sdpMid")
            parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
            await peer.pc.addIceCandidate(parsed)

    def _on_left(self, participant: RemoteParticipant) -> None:
        peer = self._peers.pop(participant.identity, None)
        if peer is not None and not self._closing:
            self.room.unmonitor(peer.pc)
            self._spawn(self._close_peer(peer), f"close-{participant.identity}")

    async def _consume(self, track: MediaStreamTrack) -> None:
        """Read (and drop) received frames: aiortc queues them until someone does."""
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()

    async def _close_peer(self, peer: _Peer) -> None:
        for track in peer.tracks:
            track.stop()
        await teardown.close_peer_connection(peer.pc, connect_tasks=peer.connect_tasks, close_timeout=PC_CLOSE_TIMEOUT,
                                             late_start_timeout=LATE_START_TIMEOUT, log=log)

    async def close(self) -> None:
        """Close every peer connection (the room stays joined: :meth:`Room.disconnect` leaves it)."""
        self._closing = True
        self.room.off("signal", self._on_signal)
        self.room.off("participantDisconnected", self._on_left)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        peers, self._peers = list(self._peers.values()), {}
        for peer in peers:
            self.room.unmonitor(peer.pc)
        await asyncio.gather(*(self._close_peer(peer) for peer in peers), return_exceptions=True)


def _description(pc: RTCPeerConnection) -> dict[str, str]:
    description = pc.localDescription
    assert description is not None
    return {"type": description.type, "sdp": description.sdp}


# --- a scenario in front of the TURN server -----------------------------------------------------


class ImpairedTurn:
    """The impairment relay (``rtcprobe.netem.relay`` in a process of its own) in front of the
    TURN server a room handed out: ``ice_servers`` point at the relay with the same credentials,
    so every packet of a relay-only participant crosses the scenario's uplink and downlink."""

    def __init__(self, scenario: Scenario, servers: Sequence[IceServer], *, seed: int | None = None) -> None:
        from .replay import _RelayProcess  # the replay's relay process, reused as it is

        upstream: tuple[str, int] | None = None
        chosen: IceServer | None = None
        for server in servers:
            for url in server.urls:
                try:
                    parsed = parse_turn_url(url)
                except ConfigError:
                    continue
                if parsed.scheme == "turn" and parsed.transport == "udp":
                    upstream, chosen = (parsed.host, parsed.port), server
                    break
            if chosen is not None:
                break
        if upstream is None or chosen is None:
            raise ConfigError("a scenario needs a server that hands out TURN over UDP "
                              "(turn:HOST:PORT?transport=udp): the impairment relay sits in front of it")
        self._server = chosen
        self._relay = _RelayProcess(scenario, upstream, scenario.seed if seed is None else seed, None)
        self.ice_servers: tuple[IceServer, ...] = ()

    async def start(self) -> tuple[IceServer, ...]:
        host, port = await asyncio.to_thread(self._relay.start)
        self._relay.command("clock")  # the scenario's phases count from now
        self.ice_servers = (IceServer((f"turn:{host}:{port}?transport=udp",), self._server.username,
                                      self._server.credential),)
        return self.ice_servers

    def bypass(self) -> None:
        """Stop impairing (for the tear-down: a deallocation lost to the scenario would hold it)."""
        self._relay.command("bypass")

    async def stop(self) -> str | None:
        """Stop the relay; its summary of what it did to each direction."""
        await asyncio.to_thread(self._relay.stop)
        return None if self._relay.result is None else self._relay.result[2]


async def join_call(
    token: str,
    *,
    url: str,
    name: str | None = None,
    media: MediaDemand | None = None,
    network_quality: Mapping[str, int] | None = None,
    scenario: Scenario | None = None,
    seed: int | None = None,
    relay_only: bool | None = None,
    sample_interval: float = DEFAULT_SAMPLE_INTERVAL,
    on_room: Callable[[Room], None] | None = None,
) -> Call:
    """Join a room as a synthetic mesh participant (``rtcprobe call``): connect, put the
    scenario's impairment relay in front of the handed-out TURN server when asked (every peer
    connection then relay-only through it), and start the mesh. ``on_room(room)`` runs once the
    room is joined, before any peer connection exists (to subscribe to its events first)."""
    from urllib.parse import urlsplit

    room = await connect(token, url=url, name=name, network_quality=network_quality,
                         demand=QualityDemand.symmetric(media if media is not None else
                                                        MediaDemand(video=VideoSpec(320, 240, 15.0))),
                         sample_interval=sample_interval)
    impaired: ImpairedTurn | None = None
    try:
        if on_room is not None:
            on_room(room)
        servers: tuple[IceServer, ...] = room.ice_servers
        if scenario is not None:
            impaired = ImpairedTurn(scenario, servers, seed=seed)
            servers = await impaired.start()
            relay_only = True
        host = urlsplit(signaling_url(url)).hostname or ""
        local = host in ("127.0.0.1", "localhost", "::1")
        mesh = MeshCall(room, media=media, ice_servers=servers, relay_only=relay_only, confine_to_loopback=local,
                        video_seed=0 if seed is None else seed)
        mesh.start()
    except BaseException:
        await room.disconnect()
        if impaired is not None:
            await impaired.stop()
        raise
    return Call(room, mesh, impaired)


class Call:
    """A running :func:`join_call`: its room, its mesh and the relay in front of TURN (if any)."""

    def __init__(self, room: Room, mesh: MeshCall, impaired: ImpairedTurn | None) -> None:
        self.room = room
        self.mesh = mesh
        self.impaired = impaired
        self.relay_summary: str | None = None
        self.started = time.monotonic()

    async def leave(self) -> None:
        """Leave the room, then close every peer connection and the relay."""
        await self.room.disconnect()
        if self.impaired is not None:
            self.impaired.bypass()
        await self.mesh.close()
        if self.impaired is not None:
            self.relay_summary = await self.impaired.stop()


__all__ = [
    "Call", "ImpairedTurn", "LocalParticipant", "MeshCall", "Participant", "RemoteParticipant", "Room",
    "RoomConnectError", "connect", "join_call", "stats_from_dict",
]
