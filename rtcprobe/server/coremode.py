"""Core mode: the server runs the preflight's core for a client that cannot, a browser
(docs/signaling.md#core-mode-browsers).

Theory of operation
-------------------
A hello carrying ``core`` asks the server to run the test's state machine
(:class:`~rtcprobe.core.PreflightMachine`) on the client's behalf. The client performs the actions
and reports what it observes; the machine, here, decides. Its config comes from the hello
(:func:`rtcprobe.core.codec.decode_config`: a bad one is 53000 like any malformed message) and it
runs on the **client's clock**: it is started at the client's ``core.start`` and fed each
observation at the ``now`` the client stamped on it, so every timing in the report is the
client's own. Only the machine's timers need the server's clock: ``offset = server_monotonic -
hello.now`` is taken when the hello arrives, and a deadline ``d`` of the machine fires at server
time ``d + offset``. It is handled as ``handle_timer(d)``, at the deadline itself rather than at
``server_now - offset``: both fire the same things, but ``d`` keeps the server's scheduling
latency out of the report (a step timeout ends the test at its deadline, as in a local run).
The hello's transit delay makes the server's idea of the client's time lag a little, never lead,
so a timer does not run ahead of an observation the client stamped later.

One :class:`CoreSession` per such session holds the machine, a timer task, and the outgoing
frames: whatever the machine asks (actions) and tells (events) is encoded by the core's codec and
sent in the order the machine produced it, from whichever of the two tasks (the session's receive
loop, the timer task) drove the machine. When the test ends (``completed`` or ``failed``), the
report goes through the session's one report path (the same as a Python client's ``report``
message: metrics and the reports file) and the session closes 1000 after the client's ``bye``,
or after :data:`GRACE` seconds without one.

The client's input is never trusted: an ``observe`` that does not decode, a ``now`` earlier than
the previous one (or than ``core.start``), or more than :data:`RATE` messages per second
sustained (a burst of :data:`BURST` is allowed) close that connection with 53000; other sessions
never notice. A bad token is reported through the core, as a Python client's core reports it:
the machine is started and fed a ``TransportError`` with the token's code, so the client receives
``failed`` with that code and the partial report; that report is neither stored nor counted (the
client is not authenticated; the rejected token is counted), and the connection closes (1008).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
import weakref
from collections.abc import Mapping
from typing import Any, ClassVar, Final, Protocol

import attrs

from rtcprobe.core import (
    IceServer,
    PreflightConfig,
    PreflightMachine,
    RunInfo,
    SignalingConnected,
    TransportError,
    errors,
)
from rtcprobe.core._version import __version__
from rtcprobe.core.codec import (
    CodecError,
    Observe,
    action_message,
    decode_config,
    decode_observe_object,
    event_message,
    finite,
)
from rtcprobe.drivers.aiortc.protocol import (
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    SIGNALING_ERROR,
    Ice,
    ProtocolError,
    parse_object,
)

RATE: Final = 50.0  # observe messages per second a client may send, sustained
BURST: Final = 100  # ... and at once (ICE, DTLS and connection states come in bursts)
GRACE: Final = 3.0  # s the server waits for ``bye`` after the test ended before it closes
#: The ``run.driver`` of a report the server's core built.
DRIVER: Final = "browser"

# Every CoreSession alive, for the leak test: one that outlives its connection is a leak.
_alive: weakref.WeakSet[CoreSession] = weakref.WeakSet()


def alive() -> int:
    """How many core sessions exist (0 once every core-mode connection is gone and collected)."""
    return len(_alive)


# --- the two messages of core mode ---------------------------------------------------------------


@attrs.frozen
class CoreHello:
    """An ``ice`` hello carrying ``core``: the v2 hello, plus the client's clock and the config."""

    TYPE: ClassVar[str] = "ice"

    ice: Ice
    now: float  # ms of the client's clock when it sent the hello
    start: float  # ms of the client's clock when the test started (runPreflight was called)
    epoch: float | None  # the client's wall clock at ``start`` (ms since 1970), when it says
    config: PreflightConfig


@attrs.frozen
class ObserveMessage:
    """An ``observe`` message: one observation stamped with the client's clock."""

    TYPE: ClassVar[str] = "observe"

    observe: Observe


CoreMessage = CoreHello | ObserveMessage


def _wire_error(exc: CodecError) -> ProtocolError:
    return ProtocolError(SIGNALING_ERROR, exc.message)


def _client_ms(obj: Mapping[str, Any], key: str, where: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not finite(value) or value < 0:
        raise ProtocolError(SIGNALING_ERROR, f"{where} '{key}' must be a finite number of milliseconds >= 0")
    return float(value)


def parse_core_message(obj: Any) -> CoreMessage | None:
    """The core-mode message a parsed frame holds (a hello carrying ``core``, an ``observe``), or
    None for any other message (or none: the protocol's parser says what is wrong with it).
    Raises ProtocolError (53000) naming what is wrong with a core-mode message."""
    if not isinstance(obj, dict):
        return None
    kind = obj.get("type")
    if kind == ObserveMessage.TYPE:
        try:
            return ObserveMessage(decode_observe_object(obj))
        except CodecError as exc:
            raise _wire_error(exc) from None
    if kind != Ice.TYPE or "core" not in obj:
        return None
    ice = parse_object(obj)  # the hello's own checks first: a v1 client gets the version error
    assert isinstance(ice, Ice)
    core = obj["core"]
    if not isinstance(core, dict):
        raise ProtocolError(SIGNALING_ERROR, "'ice' field 'core' must be an object")
    now = _client_ms(obj, "now", "core mode: 'ice' field")
    start = _client_ms(core, "start", "'ice' field 'core':")
    if start > now:
        raise ProtocolError(SIGNALING_ERROR, "'ice' core.start is later than its 'now': the test cannot have "
                                             "started after the hello was sent")
    epoch = None if core.get("epoch") is None else _client_ms(core, "epoch", "'ice' field 'core':")
    try:
        config = decode_config(core, region=ice.region)
    except CodecError as exc:
        raise _wire_error(exc) from None
    return CoreHello(ice=ice, now=now, start=start, epoch=epoch, config=config)


# --- what the core session needs of its signaling session ---------------------------------------


class _Socket(Protocol):
    @property
    def closed(self) -> bool: ...

    async def send_str(self, data: str, compress: int | None = None) -> None: ...


class Host(Protocol):
    """The signaling session a core session runs in (:class:`rtcprobe.server.session.Session`)."""

    @property
    def ws(self) -> _Socket: ...

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]: ...

    def accept_report(self, raw: Mapping[str, Any]) -> bool: ...

    async def fail(self, code: int, message: str, *, close_code: int = ...) -> None: ...

    async def shutdown(self, close_code: int = ..., reason: str = "") -> None: ...


def _machine(hello: CoreHello, run: RunInfo | None) -> PreflightMachine:
    machine = PreflightMachine(hello.config, run=run if run is not None else RunInfo(DRIVER, __version__))
    # The client's wall clock at its start when it says it; else the server's, moved back by the
    # time the client says passed between the start and the hello.
    epoch = hello.epoch if hello.epoch is not None else time.time() * 1000 - (hello.now - hello.start)
    machine.start(hello.start / 1000, epoch_ms=epoch)
    return machine


def _frames(machine: PreflightMachine) -> list[str]:
    """The actions, then the events, the machine has queued, as frames (the order every driver
    drains them in: a step's actions, then what it tells the user)."""
    out = [_dumps(action_message(a)) for a in machine.actions()]
    out += [_dumps(event_message(e)) for e in machine.events()]
    return out


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


async def refuse(host: Host, hello: CoreHello, error: ProtocolError, run: RunInfo | None = None) -> None:
    """A core-mode hello whose token was refused: the client hears it from the core (``failed``
    with the token's code and the partial report), then the connection closes (1008). ``run``: the
    report's (None: driver :data:`DRIVER`)."""
    host.log.info("core mode: token refused, %d: %s", error.code, error.message)
    machine = _machine(hello, run)
    machine.handle(TransportError(errors.error_for_code(error.code, error.message)), hello.now / 1000)
    with contextlib.suppress(Exception):  # the client may be gone already
        for frame in _frames(machine):
            await host.ws.send_str(frame)
    await host.shutdown(CLOSE_POLICY_VIOLATION, error.message)


class CoreSession:
    """The core of one core-mode session: its machine, its timer, its outgoing frames. ``run``: the
    report's (None: driver :data:`DRIVER`, this version)."""

    def __init__(self, host: Host, hello: CoreHello, ice_servers: tuple[IceServer, ...],
                 run: RunInfo | None = None) -> None:
        self.host = host
        self.ice_servers = ice_servers
        self.machine = _machine(hello, run)
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.offset = loop.time() - hello.now / 1000  # server s = client s + offset
        self._last_now = hello.start  # ms: observations' ``now`` never goes back
        self._tokens = float(BURST)
        self._refilled = loop.time()
        self._outbox: collections.deque[str] = collections.deque()
        self._send_lock = asyncio.Lock()
        self._rearm = asyncio.Event()
        self.ended = False
        self._task: asyncio.Task[None] | None = None
        _alive.add(self)

    async def begin(self) -> None:
        """Send what starting the machine produced (``acquireMedia``) and arm its timer."""
        self._drain()
        self._task = asyncio.ensure_future(self._timers())
        await self._send()

    def close(self) -> None:
        """Stop the timer task (the connection is going away); idempotent."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._outbox.clear()

    # --- input ---------------------------------------------------------------------------------

    async def observe(self, message: ObserveMessage) -> None:
        """Feed one observation; ProtocolError (53000) for a flood or a clock going back."""
        self._admit()
        now = message.observe.now
        if now < self._last_now:
            raise ProtocolError(SIGNALING_ERROR, f"'observe' now went back from {self._last_now:.3f} to {now:.3f} ms: "
                                "observations must carry a non-decreasing clock")
        self._last_now = now
        observation = message.observe.observation
        if isinstance(observation, SignalingConnected):  # the ICE servers are the ones this server handed out
            observation = SignalingConnected(self.ice_servers)
        self.machine.handle(observation, now / 1000)
        self._drain()
        await self._send()

    def _admit(self) -> None:
        """A token bucket: RATE messages per second, BURST at once."""
        t = self._loop.time()
        self._tokens = min(float(BURST), self._tokens + (t - self._refilled) * RATE)
        self._refilled = t
        if self._tokens < 1:
            raise ProtocolError(SIGNALING_ERROR, f"too many 'observe' messages: at most {RATE:g} per second")
        self._tokens -= 1

    # --- output --------------------------------------------------------------------------------

    def _drain(self) -> None:
        """Queue the machine's output; record the report when the test has ended."""
        self._rearm.set()  # whatever the machine did may have moved its timer
        for frame in _frames(self.machine):
            self._outbox.append(frame)
        if not self.ended and self.machine.report is not None:
            self.ended = True
            self._record()

    def _record(self) -> None:
        report = self.machine.report
        assert report is not None
        try:
            self.host.accept_report(report.to_dict())
        except Exception:  # the core's own report: refused only by a bug, which must not end the session
            self.host.log.exception("the core's report was not accepted")

    async def _send(self) -> None:
        """Send the queued frames in order (either task may call this; the lock keeps one sender)."""
        async with self._send_lock:
            while self._outbox:
                frame = self._outbox.popleft()
                if self.host.ws.closed:
                    self._outbox.clear()
                    return
                try:
                    await self.host.ws.send_str(frame)
                except (ConnectionError, RuntimeError):  # closing under us: the receive loop ends the session
                    self._outbox.clear()
                    return

    # --- the machine's timer, on the server's clock --------------------------------------------

    async def _timers(self) -> None:
        try:
            while not self.ended:
                self._rearm.clear()
                deadline = self.machine.get_timer()
                if deadline is None:
                    await self._rearm.wait()
                    continue
                delay = deadline + self.offset - self._loop.time()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._rearm.wait()
                            continue  # re-armed: read the deadline again
                # At the deadline itself, however late the server got to it: what the machine
                # records never depends on the server's load (a local replay gives the same report).
                self.machine.handle_timer(deadline)
                self._drain()
                await self._send()
            await asyncio.sleep(GRACE)  # the test is over: the client says bye, or we close
            await self.host.shutdown(CLOSE_NORMAL, "the test is over")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.host.log.exception("core mode: internal error")
            await self.host.fail(SIGNALING_ERROR, f"internal server error: {type(exc).__name__}")


__all__ = [
    "BURST",
    "DRIVER",
    "GRACE",
    "RATE",
    "CoreHello",
    "CoreMessage",
    "CoreSession",
    "Host",
    "ObserveMessage",
    "alive",
    "parse_core_message",
    "refuse",
]
