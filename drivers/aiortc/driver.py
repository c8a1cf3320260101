"""The real driver: one preflight over two aiortc peer connections of this process, as Twilio's.

Theory of operation
-------------------
:class:`AiortcDriver` owns every socket, task and clock; the core (:class:`rtcprobe.core.PreflightMachine`)
owns every decision. The driver only does two things, always on the event loop's thread:

* it **observes**: aiortc state changes, signaling replies, received frames and ``getStats()``
  results become core observations, fed with ``now = loop.time()``;
* it **executes** the core's actions: acquire media, connect signaling, open the two peer
  connections, sample stats, tear down. Actions that wait on the network run as tasks, so an
  observation (a stop request, a server error) can arrive while they are in flight; tear-down
  cancels whatever is still running, then closes the peer connections through ``teardown.py``
  (a close bounded when a TURN server is gone; what aiortc and aioice start after ``close()``
  ended), which is why aiortc's connect task is adopted as each description is set.

After every core call :meth:`AiortcDriver._pump` drains actions and events and wakes the one timer
task, which sleeps until ``get_timer()`` and then calls ``handle_timer(loop.time())``.

Topology (Twilio Video's ``runPreflight``, ``lib/preflight/preflighttest.ts``;
docs/references.md#twilio-video-preflight)::

    signaling server  ◀── WebSocket: ice → iced (TURN credentials) … report → reported, bye
    publisher  (Twilio's senderPC: relay-only when TURN was handed out, max-bundle, sendonly
                tone + pattern)  ──▶ TURN ──▶  subscriber (Twilio's receiverPC: unrestricted,
                max-bundle, gets the tracks back)

The signaling server only checks the token and hands out ICE servers; no SDP goes to it. The
two peer connections, both ours, are connected to each other in this process by a local offer
and answer (:func:`~.holdback.negotiate_pair`, which holds the publisher's relayed candidates
back until its own check has opened the TURN permission, then :func:`~.holdback.release_when_connected`;
not when the subscriber is relay-only too, as in a replay, which could not use them early).
Whether the publisher is relay-only is the core's decision (``OpenPeerConnections.relay_only``:
when TURN was handed out, unless configured otherwise). The core's roles: ``Role.PUBLISHER`` is
the sender (whose ICE, DTLS and connection timers the report keeps, as Twilio's
``_collectNetworkTimings(senderPC)``), ``Role.SUBSCRIBER`` the receiver (tracks, first frame,
candidates and the selected pair; candidates.py).

ICE host candidates: without a relay-only publisher the media never leaves this machine,
whichever host address carries it, so host gathering is confined to loopback
(:mod:`.loopback`): the test then works on a host whose only interface is loopback, where aioice
would gather nothing. A relay-only publisher gathers no host candidate; the subscriber gathers the
host's own addresses as Twilio's receiver does — but 127.0.0.1 alone when the TURN server is on
loopback (the whole test is on this machine: nothing but loopback is ever a target) or when the
host has no other address.

Per transport (``turn_transport``: udp, tcp or tls): the driver keeps, of the ICE servers handed
out, the first TURN URL over that transport only (:func:`~.turn_client.select_transport`), so both
peer connections reach TURN over it, and fails the media step naming the cause when the server
handed out none. A ``turns:`` server is trusted through ``turn_ssl`` when given (a private CA;
:mod:`.turn_tls`), else through the system's trust store, as aioice does by default.

When the test ends (completed, failed or stopped), the report goes to the server on the same
WebSocket, ``report`` → ``reported``, then ``bye`` (docs/signaling.md), bounded by
:data:`REPORT_TIMEOUT` and done while the peer connections close: the operator collects reports,
and a server that never answers costs ``stop()`` at most that bound.

The driver is given a signaling URL and an access token. It never starts a server: the user-facing
handle that may start the embedded one (:class:`rtcprobe.live.PreflightTest`, Twilio Video's
``runPreflight`` object) sits above the drivers (docs/architecture.md#the-aiortc-driver-and-the-server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Coroutine, Mapping
from types import MappingProxyType
from typing import Any, cast  # cast: aiortc types its states as str; the observations validate them
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import attrs
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcconfiguration import RTCBundlePolicy, RTCIceTransportPolicy
from rtcprobe.core import errors
from rtcprobe.core.config import Kind, MediaDemand
from rtcprobe.core.errors import ConfigError
from rtcprobe.core.observations import (
    AcquireMedia,
    Action,
    ConnectionState,
    ConnectionStateChanged,
    ConnectSignaling,
    DtlsState,
    DtlsStateChanged,
    Event,
    IceServer,
    IceState,
    IceStateChanged,
    MediaAcquired,
    MediaStarted,
    Observation,
    OpenPeerConnections,
    Role,
    SampleStats,
    SignalingConnected,
    StatsObserved,
    TearDown,
    TrackSubscribed,
    TransportError,
)
from rtcprobe.core.preflight import PreflightMachine

from . import candidates, loopback, protocol, stats, teardown, turn_client, turn_tls
from .holdback import negotiate_pair, release_when_connected
from .media import PatternTrack, ToneTrack

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 1.0  # s to wait for the server's WebSocket close frame: stop() must be prompt
REPORT_TIMEOUT = 0.5  # s for the report to be sent and answered: a silent server must not hold stop()
LATE_START_TIMEOUT = 0.5  # s for aiortc's connect task, interrupted by close(), to wind down (a few loop turns)
PC_CLOSE_TIMEOUT = 2.0  # s for a peer connection's close() before its TURN deallocations are given up
DIAGNOSE_TIMEOUT = 2.0  # s for the one TURN Allocate that tells why a relay-only peer gathered nothing
# s of gathering after which that Allocate starts beside aioice's (which gives up after 5 s): a
# TURN server that does not answer (UDP blocked) is then named at 5 s, not 5 + 2. A working one
# answers well within it, so a healthy run makes no extra allocation.
DIAGNOSE_AFTER = 1.0
HEARTBEAT = 10.0  # s between WebSocket pings: keeps the socket alive through a long stats step
NAMES: Mapping[Role, str] = {Role.PUBLISHER: "publisher", Role.SUBSCRIBER: "subscriber"}


def signaling_url(url: str) -> str:
    """Normalize a server URL: ``http``/``ws`` schemes, ``/signaling`` when no path is given."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss", "http", "https") or not parts.hostname:
        raise ConfigError(f"signaling URL must be ws://, wss://, http:// or https://HOST[:PORT][/PATH], got {url!r}")
    try:
        parts.port  # noqa: B018 -- validates the port
    except ValueError:
        raise ConfigError(f"signaling URL has an invalid port: {url!r}") from None
    path = parts.path if parts.path not in ("", "/") else "/signaling"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _turn_on_loopback(servers: tuple[IceServer, ...]) -> bool:
    """Whether the TURN server aiortc uses is on this machine's loopback."""
    _, url, _ = candidates.servers_used(servers)
    if url is None:
        return False
    try:
        host = turn_client.parse_turn_url(url).host
    except ConfigError:
        return False
    return loopback.is_loopback_host(host)


class _NoCandidates(Exception):
    """A peer connection gathered no ICE candidate: aiortc would wait forever (it never starts
    ICE without a local candidate), so the negotiation stops there."""

    def __init__(self, role: Role) -> None:
        super().__init__(role.value)
        self.role = role


class AiortcDriver:
    """Runs one core :class:`~rtcprobe.core.PreflightMachine` over aiortc (see the module docstring)."""

    def __init__(
        self,
        core: PreflightMachine,
        *,
        url: str,
        token: str,
        on_event: Callable[[Event], None],
        video_seed: int = 0,
        subscriber_relay_only: bool = False,
        turn_transport: str | None = None,
        turn_ssl: ssl.SSLContext | None = None,
    ) -> None:
        if turn_transport is not None and turn_transport not in turn_client.CLIENT_TRANSPORTS:
            raise ConfigError(f"TURN transport must be one of {', '.join(turn_client.CLIENT_TRANSPORTS)}, "
                              f"got {turn_transport!r}")
        self.core = core
        self.url = signaling_url(url)
        self._token = token
        self._on_event = on_event
        self._video_seed = video_seed
        self._subscriber_relay_only = subscriber_relay_only
        self._turn_transport = turn_transport
        self._turn_ssl = turn_ssl
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.Task[None] | None = None
        self._rearm = asyncio.Event()
        self._pumping = self._again = False
        self._closing = False
        self._closed = asyncio.Event()
        self._teardown_task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._iced = False  # the server accepted the token: it takes a report from then on
        self._report_stored: bool | None = None
        self._tracks: list[MediaStreamTrack] = []
        self._pcs: dict[Role, RTCPeerConnection] = {}
        self._connect_tasks: dict[RTCPeerConnection, set[asyncio.Task[Any]]] = {}  # aiortc's, adopted
        self._gathered: set[Role] = set()  # whose local candidates were checked
        self._offered: tuple[IceServer, ...] = ()  # as handed out
        self._servers: tuple[IceServer, ...] = ()  # what the peer connections use (turn_transport's)
        self._remb: dict[str, stats.RembWatch] = {}
        self._rtt: dict[str, stats.RttWatch] = {}
        self._received: dict[str, stats.ReceivedBytes] = {}
        self._dtls_seen: dict[Role, str] = {}
        self._dtls_watched: set[Role] = set()
        self._diagnosis: asyncio.Task[str | None] | None = None  # the publisher's TURN, while it gathers

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the test on the running loop (returns at once)."""
        self._loop = asyncio.get_running_loop()
        self._timer = self._loop.create_task(self._run_timer(), name="rtcprobe-timer")
        self.core.start(self._loop.time(), epoch_ms=time.time() * 1000)
        self._pump()

    def stop(self) -> None:
        """Ask the core to stop now: it fails with the partial report and asks for tear-down."""
        if self._loop is not None:
            self.core.stop(self._loop.time())
            self._pump()

    async def closed(self) -> None:
        """Wait until everything the test opened is closed again."""
        await self._closed.wait()

    @property
    def peer_connections(self) -> Mapping[Role, RTCPeerConnection]:
        """For diagnostics: the peer connections opened so far, by role (a read-only view).

        Look, do not touch: the driver alone drives and closes them.
        """
        return MappingProxyType(self._pcs)

    @property
    def ice_servers(self) -> tuple[IceServer, ...] | None:
        """The ICE servers the signaling server handed out, or None before its ``iced``."""
        return self._offered if self._iced else None

    @property
    def used_ice_servers(self) -> tuple[IceServer, ...] | None:
        """The ICE servers the peer connections are given: those handed out, cut down to one TURN
        URL over ``turn_transport`` when one was asked for; None before ``iced``."""
        return self._servers if self._iced else None

    @property
    def turn_url(self) -> str | None:
        """The TURN URL the peer connections use (aiortc's one TURN server), or None."""
        return candidates.servers_used(self._servers)[1] if self._iced else None

    @property
    def report_stored(self) -> bool | None:
        """What the server answered to the report: ``reported.stored`` (True: it kept the report,
        False: it only counted it), or None when no answer came (no socket, no time, or an error)."""
        return self._report_stored

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _observe(self, observation: Observation) -> None:
        self.core.handle(observation, self._now())
        self._pump()

    def _pump(self) -> None:
        # Reentrant calls (a user callback calling stop(), an action observing at once) only ask
        # the outermost pump to go round again, so actions and events keep their order.
        if self._pumping:
            self._again = True
            return
        self._pumping = True
        try:
            while True:
                self._again = False
                while (action := self.core.next_action()) is not None:
                    self._execute(action)
                while (event := self.core.next_event()) is not None:
                    try:
                        self._on_event(event)
                    except Exception:  # a user callback must not break the test
                        log.exception("preflight event callback raised")
                if not self._again:
                    break
        finally:
            self._pumping = False
        self._rearm.set()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        assert self._loop is not None
        task = self._loop.create_task(coro, name=f"rtcprobe-{name}")
        teardown.own(task, self._tasks, self._task_failed)
        return task

    def _task_failed(self, task: asyncio.Task[Any], exc: BaseException) -> None:
        if self._closing:
            return
        if isinstance(exc, ConnectionError | aiohttp.ClientError):  # the socket broke under a send
            before_iced = task.get_name() == "rtcprobe-signaling"
            info = errors.SIGNALING_CONNECTION if before_iced else errors.SIGNALING_DISCONNECTED
            detail = str(exc) or type(exc).__name__
            self._observe(TransportError(info.with_message(f"the signaling connection failed: {detail}")))
            return
        # A bug or an aiortc surprise: fail the test cleanly rather than hang until a timeout.
        log.error("preflight task %s failed", task.get_name(), exc_info=exc)
        self._observe(TransportError(errors.MEDIA_CONNECTION.with_message(f"internal error: {exc!r}")))

    async def _run_timer(self) -> None:
        while not self._closing:
            self._rearm.clear()
            deadline = self.core.get_timer()
            if deadline is None:
                await self._rearm.wait()
                continue
            delay = deadline - self._now()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._rearm.wait(), delay)
                continue  # re-read the deadline: it may have moved
            self.core.handle_timer(self._now())
            self._pump()

    # --- actions -------------------------------------------------------------------------------

    def _execute(self, action: Action) -> None:
        match action:
            case AcquireMedia(media=media):
                self._acquire(media)
            case ConnectSignaling(region=region):
                self._spawn(self._connect_signaling(region), "signaling")
            case OpenPeerConnections(ice_servers=servers, relay_only=relay_only):
                self._spawn(self._open_peer_connections(servers, relay_only), "negotiate")
            case SampleStats():
                self._spawn(self._sample(), "stats")
            case TearDown():
                if self._teardown_task is None:
                    assert self._loop is not None
                    self._teardown_task = self._loop.create_task(self._teardown(), name="rtcprobe-teardown")

    def _acquire(self, media: MediaDemand) -> None:
        try:
            if media.audio:
                self._tracks.append(ToneTrack())
            if media.video is not None:
                self._tracks.append(PatternTrack(media.video, seed=self._video_seed))
        except Exception as exc:
            self._observe(TransportError(errors.MEDIA_CONNECTION.with_message(f"could not create media: {exc}")))
            return
        self._observe(MediaAcquired(tuple(t.kind for t in self._tracks)))

    # --- signaling -----------------------------------------------------------------------------

    async def _connect_signaling(self, region: str) -> None:
        self._session = aiohttp.ClientSession()
        try:
            self._ws = await self._session.ws_connect(
                self.url, max_msg_size=protocol.MAX_MESSAGE_SIZE, heartbeat=HEARTBEAT,
                timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT),
            )
        except (aiohttp.ClientError, OSError) as exc:
            self._observe(TransportError(errors.SIGNALING_CONNECTION.with_message(
                f"could not connect to the signaling server at {self.url}: {exc or type(exc).__name__}")))
            return
        await self._send(protocol.Ice(token=self._token, region=region))
        reply = await self._receive()
        match reply:
            case protocol.Iced(ice_servers=servers):
                self._offered = self._servers = servers
                if self._turn_transport is not None:
                    self._servers = turn_client.select_transport(servers, self._turn_transport)
                self._iced = True
                self._spawn(self._read_signaling(), "signaling-reader")
                self._observe(SignalingConnected(self._servers))
            case protocol.Error(code=code, message=message):
                self._observe(TransportError(errors.error_for_code(code, message)))
            case None:
                self._observe(TransportError(errors.SIGNALING_CONNECTION.with_message(
                    "the signaling connection closed before the server accepted the token")))
            case protocol.ProtocolError() as bad:
                self._observe(TransportError(errors.SIGNALING_CONNECTION.with_message(
                    f"the signaling server sent a malformed reply: {bad.message}")))
            case _:
                self._observe(TransportError(errors.SIGNALING_CONNECTION.with_message(
                    f"the signaling server answered the hello with {type(reply).__name__.lower()!r}")))

    async def _send(self, message: protocol.Message) -> None:
        assert self._ws is not None
        await self._ws.send_str(protocol.encode(message))

    async def _receive(self) -> protocol.Message | protocol.ProtocolError | None:
        """The next message, a ProtocolError for a malformed one, or None once the socket closed."""
        assert self._ws is not None
        msg = await self._ws.receive()
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED,
                        aiohttp.WSMsgType.ERROR):
            return None
        try:
            return protocol.parse_message(msg.data if msg.type is aiohttp.WSMsgType.TEXT else bytes(msg.data))
        except protocol.ProtocolError as exc:
            return exc

    async def _read_signaling(self) -> None:
        """After ``iced`` the server has nothing more to say until our report: whatever comes (an
        error, the socket closing) ends the test. Reading also answers the server's pings."""
        reply = await self._receive()
        match reply:
            case protocol.Error(code=code, message=message):
                error = errors.error_for_code(code, message)
            case None:
                error = errors.SIGNALING_DISCONNECTED.with_message("the signaling server closed the connection")
            case protocol.ProtocolError() as bad:
                error = errors.SIGNALING_CONNECTION.with_message(f"malformed signaling message: {bad.message}")
            case _:
                error = errors.SIGNALING_CONNECTION.with_message(
                    f"unexpected signaling message {type(reply).__name__.lower()!r}")
        if not self._closing:
            self._observe(TransportError(error))

    async def _farewell(self) -> None:
        """The report (once the server has taken the token), its answer within REPORT_TIMEOUT,
        then ``bye`` and the close. Anything failing here only loses the report."""
        ws = self._ws
        if ws is None or ws.closed:
            return
        report = self.core.report
        if self._iced and report is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._send_report(report.to_dict()), REPORT_TIMEOUT)
        with contextlib.suppress(Exception):
            await self._send(protocol.Bye())
        with contextlib.suppress(Exception):
            await ws.close()

    async def _send_report(self, report: dict[str, Any]) -> None:
        message = protocol.Report(report=report)
        text = protocol.encode(message)
        size = len(text.encode())
        if size > protocol.MAX_REPORT_MESSAGE_SIZE:  # the server would close on it: keep the socket
            log.warning("the report (%d bytes) is larger than a report message may be (%d bytes): not sent",
                        size, protocol.MAX_REPORT_MESSAGE_SIZE)
            return
        assert self._ws is not None
        await self._ws.send_str(text)
        reply = await self._receive()
        if isinstance(reply, protocol.Reported):
            self._report_stored = reply.stored
        else:
            log.info("the signaling server did not take the report: %s", reply)

    # --- peer connections ----------------------------------------------------------------------

    def _configuration(self, ice: list[RTCIceServer], relay: bool) -> RTCConfiguration:
        # An explicit list always: iceServers=None would mean a public STUN server.
        return RTCConfiguration(
            iceServers=list(ice), bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
            iceTransportPolicy=RTCIceTransportPolicy.RELAY if relay else RTCIceTransportPolicy.ALL)

    async def _open_peer_connections(self, servers: tuple[IceServer, ...], relay_only: bool) -> None:
        if self._turn_transport is not None and candidates.servers_used(servers)[1] is None:
            offered = [u for s in self._offered for u in s.urls]
            self._observe(TransportError(errors.MEDIA_CONNECTION.with_message(
                f"TURN over {self._turn_transport} was not tested: the signaling server handed out no TURN URL "
                f"over {self._turn_transport} (it handed out {', '.join(offered) or 'none'})")))
            return
        ice = [RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential) for s in servers]
        # The subscriber is relay-only only when asked (a replay, whose emulated link sits in
        # front of the TURN server: a host candidate would bypass it) and the publisher is.
        sub_relay = relay_only and self._subscriber_relay_only
        sender = RTCPeerConnection(self._configuration(ice, relay_only))
        receiver = RTCPeerConnection(self._configuration(ice, sub_relay))
        self._pcs[Role.PUBLISHER], self._pcs[Role.SUBSCRIBER] = sender, receiver
        for role, pc in self._pcs.items():
            self._watch(pc, role)
        for track in self._tracks:
            transceiver = sender.addTransceiver(track, direction="sendonly")
            self._remb[track.kind] = stats.RembWatch(transceiver.sender)
            self._rtt[track.kind] = stats.RttWatch(transceiver.sender)
        self._watch_dtls(sender, Role.PUBLISHER)
        if self._turn_ssl is not None:  # before setLocalDescription gathers (the receiver's: _described)
            try:
                turn_tls.use_turn_ssl(sender, self._turn_ssl)
            except turn_tls.TurnTlsUnsupported as exc:
                self._observe(TransportError(errors.MEDIA_CONNECTION.with_message(str(exc))))
                return

        @receiver.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._observe(TrackSubscribed(cast(Kind, track.kind)))
            self._spawn(self._consume(track), f"consume-{track.kind}")

        # Without a relay-only publisher the media stays on this machine whatever the host
        # address: loopback then always works, also where it is the only interface. With one,
        # the subscriber gathers the host's addresses as Twilio's receiver does — loopback
        # instead when the TURN server is on it too, or when there is nothing else.
        if relay_only:
            self._spawn(self._diagnose_if_slow(), "turn-diagnosis-timer")
        confine = not relay_only or _turn_on_loopback(servers) or not loopback.has_host_address()
        try:
            with loopback.confine_ice_to_loopback() if confine else contextlib.nullcontext():
                held = await negotiate_pair(sender, receiver, on_description_set=self._described, hold=not sub_relay)
        except _NoCandidates as exc:
            why = await self._why_no_candidates(exc.role, relay_only if exc.role is Role.PUBLISHER else sub_relay)
            self._observe(TransportError(errors.MEDIA_CONNECTION.with_message(
                f"the {NAMES[exc.role]} peer connection gathered no ICE candidates: {why}")))
            return
        except (ValueError, RuntimeError) as exc:  # aiortc rejects a description with these
            self._observe(TransportError(errors.MEDIA_CONNECTION.with_message(f"negotiation failed: {exc}")))
            return
        self._spawn(release_when_connected(sender, receiver, held), "release")

    def _described(self, pc: RTCPeerConnection) -> None:
        """After each ``set*Description`` (negotiate_pair's hook): adopt aiortc's connect task,
        hook the receiver's transceivers once they exist, and stop at a peer connection that
        gathered nothing."""
        self._adopt(pc)
        role = Role.PUBLISHER if pc is self._pcs.get(Role.PUBLISHER) else Role.SUBSCRIBER
        if role is Role.SUBSCRIBER and pc.getTransceivers() and role not in self._dtls_watched:
            for transceiver in pc.getTransceivers():  # made by the offer, before any media
                self._received[transceiver.kind] = stats.ReceivedBytes(transceiver.receiver)
            self._watch_dtls(pc, role)
            if self._turn_ssl is not None:  # its gatherer exists now and gathers at its answer
                turn_tls.use_turn_ssl(pc, self._turn_ssl)
        if pc.localDescription is not None and role not in self._gathered:
            self._gathered.add(role)
            transport = candidates.ice_transport(pc)
            if transport is not None and not transport.iceGatherer.getLocalCandidates():
                raise _NoCandidates(role)

    def _adopt(self, pc: RTCPeerConnection) -> None:
        """Keep aiortc's connect task for ``pc`` (spawned by set*Description, never awaited by
        aiortc): the tear-down awaits it and its outcome is always retrieved (see teardown.py)."""
        teardown.adopt_connect_tasks(pc, self._connect_tasks.setdefault(pc, set()),
                                     closing=lambda: self._closing, log=log)

    def _diagnose(self) -> asyncio.Task[str | None] | None:
        """Start the one TURN Allocate of :meth:`_why_no_candidates` (once), or None without TURN."""
        if self._diagnosis is None:
            _, url, _ = candidates.servers_used(self._servers)
            if url is None:
                return None
            server = next(s for s in self._servers if url in s.urls)
            self._diagnosis = self._spawn(turn_client.diagnose_turn(
                url, server.username, server.credential, timeout=DIAGNOSE_TIMEOUT, ssl_context=self._turn_ssl,
            ), "turn-diagnosis")
        return self._diagnosis

    async def _diagnose_if_slow(self) -> None:
        await asyncio.sleep(DIAGNOSE_AFTER)
        if Role.PUBLISHER not in self._gathered:  # still gathering: its TURN server is slow or silent
            self._diagnose()

    async def _why_no_candidates(self, role: Role, relay_only: bool) -> str:
        """Why ``role`` gathered nothing, naming the real cause: the TURN server (refused, not
        answering, unreachable; told by one Allocate of our own) for a relay-only peer, the host's
        addresses otherwise."""
        _, url, _ = candidates.servers_used(self._servers)
        if relay_only:
            if url is None:
                return "it is relay-only and the signaling server handed out no usable TURN server"
            diagnosis = self._diagnose()
            assert diagnosis is not None
            why = await diagnosis
            return why or f"it is relay-only and TURN server {url} gave no relayed address (is it reachable?)"
        turn = f", and TURN server {url} gave no relayed address either" if url else ""
        return f"this host has no network address aioice could use (not even 127.0.0.1){turn}"

    def _watch(self, pc: RTCPeerConnection, role: Role) -> None:
        @pc.on("iceconnectionstatechange")
        def on_ice() -> None:
            self._observe(IceStateChanged(role, cast(IceState, pc.iceConnectionState)))

        @pc.on("connectionstatechange")
        def on_connection() -> None:
            # aiortc derives connectionState inside the DTLS transport's own statechange, before
            # our listener on that transport runs; report the DTLS state first, as it happened.
            self._sync_dtls(pc, role)
            self._observe(ConnectionStateChanged(role, cast(ConnectionState, pc.connectionState)))

    def _watch_dtls(self, pc: RTCPeerConnection, role: Role) -> None:
        # max-bundle: every transceiver shares the first one's DTLS transport.
        self._dtls_watched.add(role)
        pc.getTransceivers()[0].sender.transport.on("statechange", lambda: self._sync_dtls(pc, role))

    def _sync_dtls(self, pc: RTCPeerConnection, role: Role) -> None:
        transceivers = pc.getTransceivers()
        if not transceivers:
            return
        state = transceivers[0].sender.transport.state
        if self._dtls_seen.get(role) != state:
            self._dtls_seen[role] = state
            self._observe(DtlsStateChanged(role, cast(DtlsState, state)))

    async def _consume(self, track: MediaStreamTrack) -> None:
        """Read (and drop) received frames; the first one is ``MediaStarted``."""
        try:
            await track.recv()
            self._observe(MediaStarted(cast(Kind, track.kind)))
            while True:
                await track.recv()
        except MediaStreamError:
            return

    # --- stats ---------------------------------------------------------------------------------

    async def _sample(self) -> None:
        pub, sub = self._pcs.get(Role.PUBLISHER), self._pcs.get(Role.SUBSCRIBER)
        if pub is None or sub is None:
            return
        pub_report, sub_report = await asyncio.gather(pub.getStats(), sub.getStats())
        sample = stats.to_sample(
            pub_report, stats.media_inbound(sub_report, sub),
            publisher_rates=stats.clock_rates(pub), subscriber_rates=stats.clock_rates(sub),
            available_bps={kind: watch.bps for kind, watch in self._remb.items()},
            bytes_received={kind: counter.bytes for kind, counter in self._received.items()},
            remote_rtt={kind: watch.rtt for kind, watch in self._rtt.items()},
        )
        # Twilio reads both from the receiving peer connection (candidates.py).
        cands, pair = candidates.collect(sub, NAMES[Role.SUBSCRIBER], self._servers)
        self._observe(StatsObserved(attrs.evolve(sample, ice_candidates=cands, selected_pair=pair)))

    # --- tear-down -----------------------------------------------------------------------------

    async def _teardown(self) -> None:
        self._closing = True
        current = asyncio.current_task()
        pending = [t for t in self._tasks if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for track in self._tracks:
            track.stop()
        for watch in self._remb.values():
            watch.close()
        for rtt in self._rtt.values():
            rtt.close()
        for counter in self._received.values():
            counter.close()
        # The report and the peer connections' close (TURN deallocations) both wait on the
        # network: side by side, stop() costs the longer of the two.
        await asyncio.gather(self._farewell(), *(teardown.close_peer_connection(
            pc, connect_tasks=self._connect_tasks.get(pc, ()), close_timeout=PC_CLOSE_TIMEOUT,
            late_start_timeout=LATE_START_TIMEOUT, log=log) for pc in self._pcs.values()))
        if self._session is not None:
            await self._session.close()
        if self._timer is not None:
            self._rearm.set()
            self._timer.cancel()
            await asyncio.gather(self._timer, return_exceptions=True)
        self._closed.set()


__all__ = ["REPORT_TIMEOUT", "AiortcDriver", "signaling_url"]
