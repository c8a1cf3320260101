"""The live preflight's public API: :func:`run_preflight`, :func:`preflight` and the
:class:`PreflightTest` handle they return (``rtcprobe.run_preflight`` & co.).

The handle is Twilio Video's ``runPreflight`` object (docs/references.md#twilio-video-preflight):
events by name, ``stop()``, ``network_quality_level`` and ``await wait()``. It runs the aiortc
driver (:class:`rtcprobe.drivers.aiortc.AiortcDriver`), giving it a signaling URL and a token:
either the caller's, or those of an embedded server (:mod:`rtcprobe.server.embedded`) that it
starts on loopback for the one test. Starting servers is why this module sits in the top layer
and not in the driver (docs/architecture.md#layers).

The embedded default goes through TURN as Twilio's preflight does: when coturn (``turnserver``)
is installed it is started on loopback (:class:`~rtcprobe.server.coturn.CoturnServer`) and the
embedded server hands it out, so the publisher is relay-only and the media crosses a real TURN
server. Without coturn the loopback runs on host candidates and TURN is not tested
(:attr:`PreflightTest.turn_tested` says so; the CLI's summary tells how to get it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from rtcprobe.core import errors
from rtcprobe.core._version import __version__
from rtcprobe.core.config import MediaDemand, PreflightConfig
from rtcprobe.core.errors import ConfigError, PreflightError, UsageError
from rtcprobe.core.observations import (
    Completed,
    Event,
    Failed,
    IceServer,
    NetworkQualityLevelChanged,
    Progress,
    SampleRecorded,
)
from rtcprobe.core.preflight import PreflightMachine
from rtcprobe.core.report import PreflightReport, ProgressEvent, RunInfo, Timing
from rtcprobe.drivers.aiortc.driver import AiortcDriver, signaling_url
from rtcprobe.drivers.aiortc.media import check_video
from rtcprobe.drivers.aiortc.turn_client import TURN_SCHEMES

from .server.coturn import CoturnNotInstalled, CoturnServer, CoturnStartError
from .server.credentials import check_turn_config
from .server.embedded import embedded_server

log = logging.getLogger(__name__)

EVENT_NAMES = ("progress", "sample", "networkQualityLevelChanged", "completed", "failed", "event")

Connect = Callable[[], contextlib.AbstractAsyncContextManager[tuple[str, str]]]  # yields (url, token)


class PreflightTest:
    """A running preflight (Twilio Video's ``PreflightTest``), returned by :func:`run_preflight`.

    Events (``test.on(name, callback)``):

    * ``"progress"`` ``(name)``: a step landed (``mediaAcquired`` … ``mediaStarted``);
    * ``"sample"`` ``(index, total, level)``: a stats sample was taken;
    * ``"networkQualityLevelChanged"`` ``(level, stats)``;
    * ``"completed"`` ``(report)`` / ``"failed"`` ``(error, report)``: once everything is closed;
    * ``"event"`` ``(event)``: every core event object as the core emits it (for tools such as
      :class:`rtcprobe.progress.ProgressReporter`).
    """

    def __init__(self, config: PreflightConfig, *, run: RunInfo | None = None) -> None:
        self.config = config
        self.core = PreflightMachine(
            config, run=run if run is not None else RunInfo(driver="aiortc", version=__version__))
        self._handlers: dict[str, list[Callable[..., Any]]] = {name: [] for name in EVENT_NAMES}
        self._driver: AiortcDriver | None = None
        self._stop_requested = False
        self._task: asyncio.Task[None] | None = None
        self._terminal: Completed | Failed | None = None

    def on(self, name: str, callback: Callable[..., Any]) -> PreflightTest:
        if name not in self._handlers:
            raise UsageError(f"unknown preflight event {name!r}; one of: {', '.join(EVENT_NAMES)}")
        self._handlers[name].append(callback)
        return self

    def stop(self) -> None:
        """End the test now, in any step: it fails (code 99000) with the partial report."""
        self._stop_requested = True
        if self._driver is not None:
            self._driver.stop()

    @property
    def network_quality_level(self) -> int | None:
        return self.core.network_quality_level

    @property
    def report(self) -> PreflightReport | None:
        return self.core.report

    @property
    def progress_events(self) -> tuple[ProgressEvent, ...]:
        """The steps so far, each with its time (ms since the test started)."""
        return self.core.progress_events

    @property
    def ice_servers(self) -> tuple[IceServer, ...] | None:
        """The ICE servers the signaling server handed out (credentials included), or None
        before it answered."""
        return None if self._driver is None else self._driver.ice_servers

    @property
    def turn_tested(self) -> bool | None:
        """Whether the media was sent through TURN (the publisher relay-only through a TURN server
        the signaling server handed out); None before the server answered."""
        servers = self.ice_servers
        if servers is None:
            return None
        has_turn = any(url.partition(":")[0].lower() in TURN_SCHEMES for s in servers for url in s.urls)
        return has_turn and self.config.relay_only is not False

    @property
    def report_stored(self) -> bool | None:
        """The server's answer to the report sent at the end: True when it stored it (its
        ``--reports`` file), False when it only counted it, None when it took none (yet)."""
        return None if self._driver is None else self._driver.report_stored

    @property
    def done(self) -> bool:
        return self._task is not None and self._task.done()

    @property
    def local_descriptions(self) -> dict[str, str]:
        """For diagnostics: the SDP each peer connection set as its local description (every
        gathered candidate inside), by role: ``"publisher"`` (the sender's offer), ``"subscriber"``
        (the receiver's answer). A copy; empty until the peer connections are negotiated, kept
        after they close."""
        if self._driver is None:
            return {}
        return {role.value: pc.localDescription.sdp for role, pc in self._driver.peer_connections.items()
                if pc.localDescription is not None}

    async def wait(self) -> PreflightReport:
        """The report once the test has ended and everything is closed; raises
        :class:`~rtcprobe.PreflightError` (with ``.code`` and the partial ``.report``) on failure.

        Cancelling the waiter stops the test and still closes everything before it re-raises.
        """
        assert self._task is not None, "run_preflight() starts the test"
        try:
            await asyncio.shield(self._task)
        except asyncio.CancelledError:
            self.stop()
            with contextlib.suppress(BaseException):
                await self._task
            raise
        terminal = self._terminal
        if isinstance(terminal, Completed):
            return terminal.report
        if isinstance(terminal, Failed):
            raise PreflightError(terminal.error, terminal.report)
        raise UsageError("the preflight ended without a result")  # unreachable: the core always ends

    def _emit(self, name: str, *args: Any) -> None:
        for callback in list(self._handlers[name]):
            try:
                callback(*args)
            except Exception:
                log.exception("preflight %r callback raised", name)

    def _on_core_event(self, event: Event) -> None:
        self._emit("event", event)
        match event:
            case Progress(name=name):
                self._emit("progress", name)
            case SampleRecorded(index=index, total=total, level=level):
                self._emit("sample", index, total, level)
            case NetworkQualityLevelChanged(level=level, stats=nq):
                self._emit("networkQualityLevelChanged", level, nq)
            case Completed() | Failed():
                self._terminal = event  # announced once everything is closed (see _run)

    async def _run(self, connect: Connect, video_seed: int, subscriber_relay_only: bool = False) -> None:
        try:
            async with connect() as (url, token):
                self._driver = AiortcDriver(
                    self.core, url=url, token=token, on_event=self._on_core_event,
                    video_seed=video_seed, subscriber_relay_only=subscriber_relay_only,
                )
                self._driver.start()
                if self._stop_requested:
                    self._driver.stop()
                await self._driver.closed()
        except Exception as exc:  # e.g. the embedded server could not start
            log.exception("preflight could not run")
            if self._terminal is None:
                error = errors.SIGNALING_CONNECTION.with_message(f"could not start the preflight: {exc}")
                report = PreflightReport(test_timing=_now_timing(), run=self.core.run, error=error)
                self._terminal = Failed(error, report)
        if isinstance(self._terminal, Completed):
            self._emit("completed", self._terminal.report)
        elif isinstance(self._terminal, Failed):
            self._emit("failed", PreflightError(self._terminal.error, self._terminal.report), self._terminal.report)


def _now_timing() -> Timing:
    now = time.time() * 1000
    return Timing(now, now)


@contextlib.asynccontextmanager
async def _external(url: str, token: str) -> AsyncIterator[tuple[str, str]]:
    yield url, token


async def _start_coturn() -> CoturnServer | None:
    """coturn on loopback for the embedded server, or None when it is not installed or does not
    start (then the test runs on host candidates, and says TURN was not tested)."""
    try:
        turn = CoturnServer()
    except CoturnNotInstalled:
        return None
    starting = asyncio.ensure_future(asyncio.to_thread(turn.start))  # blocks while it probes its ports
    try:
        return await asyncio.shield(starting)
    except (CoturnStartError, OSError) as exc:
        log.warning("coturn did not start, so TURN is not tested: %s", exc)
        turn.stop()
        return None
    except asyncio.CancelledError:  # the thread cannot be interrupted: stop what it started
        with contextlib.suppress(Exception):
            await starting
        await asyncio.to_thread(turn.stop)
        raise


@contextlib.asynccontextmanager
async def _embedded(turn_urls: Sequence[str] | None, turn_secret: str | None) -> AsyncIterator[tuple[str, str]]:
    """The embedded server, handing out ``turn_urls`` — or, when None, a coturn of its own if
    one is installed."""
    async with contextlib.AsyncExitStack() as stack:
        if turn_urls is None:
            turn = await _start_coturn()
            if turn is not None:
                stack.push_async_callback(asyncio.to_thread, turn.stop)
                turn_urls, turn_secret = turn.turn_urls, turn.secret
        yield await stack.enter_async_context(embedded_server(turn_urls=turn_urls or (), turn_secret=turn_secret))


def run_preflight(
    token: str | None = None,
    *,
    url: str | None = None,
    duration: float = 10.0,
    region: str = "gll",
    media: MediaDemand | None = None,
    turn_urls: Sequence[str] | None = None,
    turn_secret: str | None = None,
    relay_only: bool | None = None,
    network_quality_verbosity: int = 1,
    video_seed: int = 0,
    run: RunInfo | None = None,
    subscriber_relay_only: bool = False,
) -> PreflightTest:
    """Start a preflight on the running asyncio loop and return its :class:`PreflightTest`.

    With ``url`` (and its ``token``) the test runs against that signaling server. Without it, an
    embedded server starts in-process on 127.0.0.1 with a fresh secret and token and hands out
    TURN: ``turn_urls`` + ``turn_secret`` when given, none for ``turn_urls=()``, and by default
    (None) a coturn started on loopback for the test when coturn is installed.
    ``relay_only=None`` makes the publisher relay-only whenever the server hands out TURN, as
    twilio-video.js's sender is. ``subscriber_relay_only`` makes the subscriber relay-only too
    (twilio-video.js's is not; a replay needs it so that all traffic crosses its emulated link); it needs a
    relay-only publisher. ``run`` is the report's ``run`` (default: driver ``"aiortc"``, this
    version). Misuse raises :class:`~rtcprobe.ConfigError` at once.
    """
    loop = asyncio.get_running_loop()  # raises RuntimeError outside a running loop: misuse
    media = media if media is not None else MediaDemand()
    if media.video is not None:
        check_video(media.video)
    config = PreflightConfig(
        duration=duration, region=region, media=media, relay_only=relay_only,
        network_quality_verbosity=network_quality_verbosity,
    )
    if subscriber_relay_only and (relay_only is False or (url is None and not turn_urls)):
        raise ConfigError("a relay-only subscriber needs TURN and a relay-only publisher")
    if url is None:
        if token is not None:
            raise ConfigError("a token needs a url: the embedded server mints its own token")
        check_turn_config(turn_urls or (), turn_secret)  # a bad --turn is bad input, not a failed test
        connect: Connect = functools.partial(_embedded, turn_urls, turn_secret)
    else:
        if not token:
            raise ConfigError("a signaling url needs a token (--token)")
        if turn_urls or turn_secret:
            raise ConfigError("TURN options configure the embedded server; a remote server hands out its own TURN")
        normalized = signaling_url(url)
        connect = functools.partial(_external, normalized, token)
    test = PreflightTest(config, run=run)
    test._task = loop.create_task(test._run(connect, video_seed, subscriber_relay_only), name="rtcprobe-preflight")
    return test


def preflight(token: str | None = None, **options: Any) -> PreflightReport:
    """Blocking :func:`run_preflight` for scripts: runs its own loop, returns the report or
    raises :class:`~rtcprobe.PreflightError`. Ctrl-C stops the test and closes everything first."""

    async def main() -> PreflightReport:
        return await run_preflight(token, **options).wait()

    return asyncio.run(main())


__all__ = ["EVENT_NAMES", "PreflightTest", "preflight", "run_preflight"]
