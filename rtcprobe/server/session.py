"""One signaling session: a WebSocket connection walking protocol version 2 (docs/signaling.md).

Theory of operation
-------------------
The server never touches media: the client runs both of its peer connections itself, as Twilio
Video's preflight does, and the server only authenticates, hands out ICE servers, holds the
socket while the test runs and takes the report. Each connection is one :class:`Session` with
three phases:

* ``await ice``: the hello. The token is checked (20101..20107), a session slot is taken
  (``max_sessions``, else 53000 "server busy" and close 1013), and ``iced`` carries the ICE
  servers (TURN REST credentials minted for the token's identity, or none).
* ``holding``: the client is testing. It may send one ``report`` (validated, counted in the
  metrics, appended to the reports file, answered with ``reported``) and ``bye``.
* ``reported``: only ``bye`` is left.

A hello carrying ``core`` puts the session in core mode (:mod:`.coremode`): the server runs the
client's core, the client sends ``observe`` messages instead of a report, and the core's report
takes the same path as a ``report`` message (:meth:`Session.accept_report`).

``bye`` is accepted in every phase and closes with 1000. Anything else — a malformed frame, a
message out of order, a second report, a report of the wrong shape — gets one ``error`` (53000)
and that connection is closed (1008; 1009 for an oversized frame); every other session carries
on. The report is the client's own: a bad one costs that client its report and nothing else.

Timeouts: the hello must come within ``idle_timeout``; after ``iced`` the socket may stay silent
for ``hold_timeout`` (a preflight runs for tens of seconds; the default is generous) counted from
the server's last reply. WebSocket pings detect a client that vanished without closing.

Frame sizes: a frame may be ``max_message_size`` bytes, except a ``report`` while one is
expected, which may be ``max_report_size``. aiohttp refuses anything above the larger limit
from the frame's header; the session refuses the rest after reading it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import time
from collections.abc import Mapping, MutableMapping
from typing import Any, Final

import attrs
from aiohttp import WSMsgType, web

from rtcprobe.drivers.aiortc.protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    CLOSE_TRY_AGAIN_LATER,
    SIGNALING_ERROR,
    Bye,
    Error,
    Ice,
    Iced,
    Message,
    ProtocolError,
    Report,
    Reported,
    encode,
    parse_json,
    parse_object,
)

from .config import ServerConfig
from .coremode import CoreHello, CoreMessage, CoreSession, ObserveMessage, parse_core_message, refuse
from .credentials import build_ice_servers
from .metrics import ServerMetrics
from .reports import ReportError, ReportLog, report_line, validate_report
from .tokens import TokenError, verify_token

log = logging.getLogger("rtcprobe.server")

TOO_BIG: Final = "message too big"


@attrs.frozen
class ServerStats:
    """Live counters, for tests and monitoring: ``connections`` and ``sessions`` are zero once
    everything is released."""

    connections: int  # open WebSocket connections
    sessions: int  # authenticated sessions (each holds a ``max_sessions`` slot)
    total_sessions: int  # sessions ever authenticated (monotonic)
    reports: int  # reports accepted (monotonic)


class Registry:
    """What one server's sessions share: open connections, session slots, metrics, the reports file.

    The server owns it and hands it to each :class:`Session`, which takes and gives back its
    slot here; :attr:`stats` reads the counters.
    """

    def __init__(self, max_sessions: int, metrics: ServerMetrics, reports: ReportLog | None) -> None:
        self.max_sessions = max_sessions
        self.metrics = metrics
        self.reports = reports
        self.connections: set[Session] = set()
        self.slots: set[Session] = set()
        self.total_sessions = 0
        self.accepted_reports = 0
        self.closing = False  # the server is shutting down: no new session gets a slot

    def add_connection(self, session: Session) -> None:
        self.connections.add(session)
        self.metrics.connections_open.set(len(self.connections))

    def remove_connection(self, session: Session) -> None:
        self.connections.discard(session)
        self.metrics.connections_open.set(len(self.connections))

    def acquire_slot(self, session: Session) -> bool:
        if len(self.slots) >= self.max_sessions or self.closing:
            return False
        self.slots.add(session)
        self.total_sessions += 1
        self.metrics.sessions.inc()
        self.metrics.sessions_open.set(len(self.slots))
        return True

    def release_slot(self, session: Session) -> None:
        self.slots.discard(session)
        self.metrics.sessions_open.set(len(self.slots))

    @property
    def stats(self) -> ServerStats:
        return ServerStats(connections=len(self.connections), sessions=len(self.slots),
                           total_sessions=self.total_sessions, reports=self.accepted_reports)


class _Phase(enum.Enum):
    AWAIT_ICE = "await ice"
    HOLDING = "holding"
    REPORTED = "reported"


class SessionLog(logging.LoggerAdapter[logging.Logger]):
    """The server's log, each message prefixed with its session (``session HOST:PORT: ``)."""

    def __init__(self, logger: logging.Logger, remote: str) -> None:
        super().__init__(logger, {"remote": remote})
        self.remote = remote

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return f"session {self.remote}: {msg}", kwargs


class SignalingWebSocket(web.WebSocketResponse):
    """aiohttp closes an oversized frame's connection itself (1009) before returning to us; this
    hook sends the protocol's ``error`` message first, so the client learns why (unless the
    session sent its own ``error`` already: ``error_sent``)."""

    error_sent = False

    async def close(self, *, code: int = CLOSE_NORMAL, message: bytes = b"", drain: bool = True) -> bool:
        if code == CLOSE_MESSAGE_TOO_BIG and not self.closed and not self.error_sent:
            with contextlib.suppress(Exception):  # the peer may be gone already
                await self.send_str(encode(Error(SIGNALING_ERROR, TOO_BIG)))
            message = message or TOO_BIG.encode()
        return await super().close(code=code, message=message, drain=drain)


class _Refused(Exception):
    """The session fails with ``message`` and ``close_code``; a refused report is counted under
    ``reason`` (a ``rtcprobe_reports_rejected_total`` label) first."""

    def __init__(self, message: str, *, close_code: int = CLOSE_POLICY_VIOLATION, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.close_code = close_code
        self.reason = reason


class Session:
    """One WebSocket connection: its phase, its identity once authenticated."""

    def __init__(self, config: ServerConfig, registry: Registry, ws: SignalingWebSocket, remote: str) -> None:
        self.config = config
        self.registry = registry
        self.ws = ws
        self.remote = remote
        self.phase = _Phase.AWAIT_ICE
        self.identity: str | None = None
        self.deadline = self._now() + config.idle_timeout
        self._shutdown: asyncio.Task[None] | None = None
        self.log = SessionLog(log, remote)
        self.core: CoreSession | None = None  # core mode: the server runs the client's core (coremode)

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    @property
    def closing(self) -> bool:
        return self._shutdown is not None

    # --- the receive loop ------------------------------------------------------------------

    async def run(self) -> None:
        while not self.closing:
            timeout = self.deadline - self._now()
            if timeout <= 0:
                limit = self.config.idle_timeout if self.phase is _Phase.AWAIT_ICE else self.config.hold_timeout
                await self.fail(SIGNALING_ERROR, f"no message for {limit:g} s: closing an idle connection")
                return
            try:
                # aiohttp treats a timeout of 0 as "none": keep it strictly positive
                msg = await self.ws.receive(timeout=max(timeout, 1e-3))
            except TimeoutError:
                continue  # the deadline check above fails the session
            if msg.type is WSMsgType.TEXT:
                await self._handle_text(msg.data)
                # The client's turn starts once we have answered.
                self.deadline = self._now() + (
                    self.config.idle_timeout if self.phase is _Phase.AWAIT_ICE else self.config.hold_timeout)
            elif msg.type is WSMsgType.BINARY:
                await self.fail(SIGNALING_ERROR, "binary frames are not part of the protocol: send JSON text")
            else:  # CLOSE, CLOSING, CLOSED, ERROR (aiohttp has closed the socket already)
                return

    async def _handle_text(self, text: str) -> None:
        try:
            await self._dispatch(self._parse(text))
        except _Refused as exc:
            if exc.reason is not None:
                self.registry.metrics.report_rejected(exc.reason)
            await self.fail(SIGNALING_ERROR, exc.message, close_code=exc.close_code)
        except ProtocolError as exc:
            if isinstance(exc, TokenError):
                self.registry.metrics.token_rejected(exc.code)
            await self.fail(exc.code, exc.message)
        except Exception as exc:
            if self.closing:  # the server shut this session down under our feet
                return
            self.log.exception("internal error")
            await self.fail(SIGNALING_ERROR, f"internal server error: {type(exc).__name__}")

    def _parse(self, text: str) -> Message | CoreMessage:
        """The message in ``text``; refuses an oversized frame, and counts why a report was refused."""
        config = self.config
        # A report is expected: the larger limit applies (never in core mode, where the server builds it).
        holding = self.phase is _Phase.HOLDING and self.core is None
        # Only a frame of more than a quarter of the limit can exceed it in UTF-8 bytes.
        size = len(text.encode()) if len(text) * 4 > config.max_message_size else len(text)
        if size > (config.max_report_size if holding else config.max_message_size):
            limit = config.max_report_size if holding else config.max_message_size
            raise _Refused(f"{TOO_BIG}: the limit is {limit} bytes", close_code=CLOSE_MESSAGE_TOO_BIG,
                           reason="too_big" if holding else None)
        try:
            obj = parse_json(text)
        except ProtocolError as exc:
            # After iced a client says only report or bye: garbage there is a report lost.
            raise _Refused(exc.message, reason="not_json" if holding else None) from None
        is_report = isinstance(obj, dict) and obj.get("type") == Report.TYPE
        if size > config.max_message_size and not is_report:
            raise _Refused(f"{TOO_BIG}: only a report may exceed {config.max_message_size} bytes",
                           close_code=CLOSE_MESSAGE_TOO_BIG)
        if not is_report:
            return parse_core_message(obj) or parse_object(obj)
        if self.phase is _Phase.AWAIT_ICE:
            raise _Refused("unexpected 'report' (await ice): the first message must be 'ice'", reason="before_iced")
        if self.phase is _Phase.REPORTED:
            raise _Refused("unexpected 'report' (reported): a session sends one report", reason="duplicate")
        try:
            return parse_object(obj)
        except ProtocolError as exc:
            raise _Refused(exc.message, reason="invalid") from None

    async def _dispatch(self, message: Message | CoreMessage) -> None:
        if self.closing:  # released meanwhile (server shutdown)
            return
        if isinstance(message, Bye):
            await self.shutdown(CLOSE_NORMAL, "bye")
        elif isinstance(message, Ice) and self.phase is _Phase.AWAIT_ICE:
            await self._on_ice(message)
        elif isinstance(message, CoreHello) and self.phase is _Phase.AWAIT_ICE:
            await self._on_ice(message.ice, message)
        elif isinstance(message, ObserveMessage) and self.core is not None:
            await self.core.observe(message)
        elif isinstance(message, ObserveMessage):
            raise ProtocolError(SIGNALING_ERROR, "unexpected 'observe': only a core-mode session (a hello "
                                "carrying 'core') sends observations")
        elif isinstance(message, Report) and self.core is not None:
            raise ProtocolError(SIGNALING_ERROR, "unexpected 'report' in core mode: the server's core builds "
                                "the report")
        elif isinstance(message, Report):  # _parse let it through: the phase is HOLDING
            await self._on_report(message)
        elif self.phase is _Phase.AWAIT_ICE:
            raise ProtocolError(SIGNALING_ERROR, f"unexpected '{message.TYPE}' (await ice): "
                                "the first message must be 'ice'")
        elif isinstance(message, Ice | CoreHello):
            raise ProtocolError(SIGNALING_ERROR, f"unexpected 'ice' ({self.phase.value}): "
                                "this session is authenticated already")
        else:
            raise ProtocolError(SIGNALING_ERROR, f"unexpected '{message.TYPE}' ({self.phase.value}): "
                                "a client sends 'report' and 'bye' after 'iced'")

    # --- the two steps ---------------------------------------------------------------------

    async def _on_ice(self, message: Ice, core: CoreHello | None = None) -> None:
        config = self.config
        try:
            claims = verify_token(message.token, config.secret, now=time.time(), issuer=config.issuer)
        except TokenError as exc:
            if core is None:
                raise
            self.registry.metrics.token_rejected(exc.code)
            await refuse(self, core, exc, config.core_run)  # core mode: the client hears it from its core
            return
        if not self.registry.acquire_slot(self):
            await self.fail(SIGNALING_ERROR, "server busy: too many sessions, try again later",
                            close_code=CLOSE_TRY_AGAIN_LATER)
            return
        self.identity = claims.identity
        servers = build_ice_servers(config.parsed_turn_urls, config.turn_secret, claims.identity,
                                    config.turn_ttl, time.time())
        self.phase = _Phase.HOLDING
        self.log.debug("%s authenticated (region %s)", claims.identity, message.region)
        await self.ws.send_str(encode(Iced(ice_servers=servers, ttl=config.turn_ttl)))
        if core is not None:
            self.core = CoreSession(self, core, servers, config.core_run)
            await self.core.begin()

    async def _on_report(self, message: Report) -> None:
        try:
            stored = self.accept_report(message.report)
        except ReportError as exc:
            raise _Refused(f"the report is not valid: {exc}", reason="invalid") from None
        await self.ws.send_str(encode(Reported(stored=stored)))

    def accept_report(self, raw: Mapping[str, Any]) -> bool:
        """The one path of every report, a client's ``report`` message and the server's own core's
        (core mode) alike: validated, counted in the metrics, appended to the reports file. Returns
        whether it was stored; ReportError when it is not a report."""
        report = validate_report(raw)
        self.phase = _Phase.REPORTED
        self.registry.accepted_reports += 1
        self.registry.metrics.report_accepted(report)
        stored = False
        if self.registry.reports is not None:
            assert self.identity is not None
            line = report_line(report=raw, received_at=time.time(), identity=self.identity, client=self.remote)
            try:
                self.registry.reports.append(line)
                stored = True
            except OSError as exc:
                self.registry.metrics.reports_unstored.inc()
                self.log.error("could not append the report to %s: %s", self.registry.reports.path, exc)
        outcome = "completed" if report.error is None else f"failed ({report.error.code})"
        self.log.info("%s reported: %s", self.identity, outcome)
        return stored

    # --- ending ----------------------------------------------------------------------------

    async def fail(self, code: int, message: str, *, close_code: int = CLOSE_POLICY_VIOLATION) -> None:
        """Send one ``error`` and close this connection."""
        if self.closing:
            return
        self.log.info("error %d: %s", code, message)
        if not self.ws.closed:
            self.ws.error_sent = True
            with contextlib.suppress(Exception):  # the client may be gone already
                await self.ws.send_str(encode(Error(code, message)))
        await self.shutdown(close_code, message)

    async def shutdown(self, close_code: int = CLOSE_GOING_AWAY, reason: str = "") -> None:
        """Give back the slot and close the socket; idempotent, safe from any task."""
        if self._shutdown is None:
            self._shutdown = asyncio.ensure_future(self._release(close_code, reason))
            self._shutdown.add_done_callback(functools.partial(_retrieve, log=self.log))
        await asyncio.shield(self._shutdown)

    async def _release(self, close_code: int, reason: str) -> None:
        self.registry.release_slot(self)
        if self.core is not None:
            self.core.close()
        # RFC 6455 caps the close reason at 123 bytes of UTF-8: cut it without splitting a character.
        short = reason.encode()[:120].decode("utf-8", "ignore").encode()
        with contextlib.suppress(Exception):
            await self.ws.close(code=close_code, message=short)


def _retrieve(task: asyncio.Task[None], *, log: logging.LoggerAdapter[logging.Logger]) -> None:
    """Retrieve a release's outcome even when every caller was cancelled."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("closing the session failed", exc_info=exc)


__all__ = ["Registry", "ServerStats", "Session", "SessionLog", "SignalingWebSocket"]
