"""The Chromium driver: one preflight run by ``rtcprobe.js`` in a headless Chromium.

Theory of operation
-------------------
The browser is a client of the server's core ("core mode", docs/signaling.md#core-mode-browsers):
the page performs the core's actions and reports what it observes; the core, in the signaling
server, decides the steps and builds the report. This driver only sets the stage and listens:

1. It launches Chromium (:func:`~.browser.launch`: headless, a fresh profile, off the network)
   and opens a document of the signaling server's own origin (its ``/health``), so the page's
   WebSocket carries the server's own ``Origin`` and passes its allowlist by default.
2. A page function imports the server's ``rtcprobe.js`` and calls ``runPreflight(token,
   options)``; the test's ``completed`` / ``failed`` come back through a binding
   (``page.expose_binding``).
3. Every frame the server sends the page is read off the page's WebSocket as Chromium received
   it: ``iced`` gives the ICE servers handed out, each ``event`` is decoded into the core's event
   object (:mod:`.events`) and passed to ``on_event`` as it arrives — the same events an
   in-process core emits, so progress reporters work unchanged. The report is decoded from the
   text of the server's ``completed`` / ``failed`` frame, so it is exactly the report the server's
   core built (and the one the page got: :attr:`ChromiumDriver.page_report` is the page's copy).
4. The test ends with the page's ``completed`` / ``failed``. When the page ended it without the
   core (the server went away: rtcprobe.js's minimal partial report, docs/browser.md#when-the-server-is-gone),
   that is the result. Chromium is then closed, which closes whatever the page still held.

With the server on loopback the two peer connections learn only each other's loopback (and relay)
candidates (:data:`LOOPBACK_ONLY`), as the aiortc driver confines its own to 127.0.0.1: Chromium
gathers every interface's address, and a loopback test must not send media to any of them.

The driver never starts a server: it is given a signaling URL and a token (the top layer's
embedded server, or a remote one). The receiver may be made relay-only too
(``receiver_relay_only``, rtcprobe.js's ``receiverRelayOnly``) for network emulation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit, urlunsplit

from rtcprobe.core import errors
from rtcprobe.core.config import PreflightConfig
from rtcprobe.core.errors import ConfigError, PreflightErrorInfo
from rtcprobe.core.observations import (
    Completed,
    Event,
    Failed,
    IceServer,
    NetworkQualityLevelChanged,
    Progress,
)
from rtcprobe.core.report import PreflightReport, ProgressEvent, RunInfo, Timing
from rtcprobe.drivers.aiortc.loopback import is_loopback_host
from rtcprobe.drivers.aiortc.protocol import Iced, ProtocolError, parse_message
from rtcprobe.drivers.aiortc.turn_client import CLIENT_TRANSPORTS, TURN_SCHEMES, client_transport

from .browser import launch
from .events import EventError, decode_event, error_of, report_of

if TYPE_CHECKING:
    from playwright.async_api import Page, WebSocket

log = logging.getLogger(__name__)

BINDING: Final = "__rtcprobeDriver"
#: s to wait for the core's terminal frame once the page says the core ended the test (the two
#: reach Python by different paths: the frame from the network stack, the call from the page).
FRAME_GRACE: Final = 5.0
#: s beyond the test's duration before the driver gives up on Chromium (every step of the core
#: has a timeout much shorter than this: it only guards against a browser that hangs).
SLACK: Final = 120.0

# Runs in the page: starts the test and hands its end back to Python. rtcprobe.js sits next to
# the signaling path on the server (a server behind a path prefix too).
START_PAGE: Final = """
async ([token, options]) => {
  const { runPreflight } = await import('./rtcprobe.js');
  const test = runPreflight(token, options);
  window.__rtcprobeTest = test;
  const hand = (kind, payload) => window.__rtcprobeDriver(kind, JSON.stringify(payload));
  test.on('completed', (report) => hand('completed', { report }));
  test.on('failed', (error, report) => hand('failed', {
    error: { code: error.code, name: error.name, message: error.message }, report }));
  return test.url;
}
"""
STOP_PAGE: Final = "() => { window.__rtcprobeTest?.stop(); }"
# Installed before the page's scripts when the server is on loopback: the two peer connections
# learn only each other's loopback (and relay) candidates. Chromium gathers every interface's
# address; the aiortc driver confines its host candidates to 127.0.0.1 in the same case
# (drivers/aiortc/loopback.py), so media on a loopback test never targets another address.
LOOPBACK_ONLY: Final = """
(() => {
  const loopback = (address) => /^127\\./.test(address) || address === '::1' || address === 'localhost';
  const addressOf = (c) => c.address ?? String(c.candidate ?? '').split(' ')[4] ?? '';
  const add = RTCPeerConnection.prototype.addIceCandidate;
  RTCPeerConnection.prototype.addIceCandidate = function (candidate, ...rest) {
    if (candidate && candidate.candidate && !loopback(addressOf(candidate))) return Promise.resolve();
    return add.call(this, candidate, ...rest);
  };
})();
"""


def page_url(url: str) -> str:
    """The HTTP document next to a signaling WebSocket URL (``ws://h:p/signaling`` ->
    ``http://h:p/health``), of the server's own origin."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https", "http": "http", "https": "https"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ConfigError(f"a signaling URL is ws(s)://HOST:PORT/PATH, got {url!r}")
    base = parts.path.rsplit("/", 1)[0] if parts.path not in ("", "/") else ""
    return urlunsplit((scheme, parts.netloc, f"{base}/health", "", ""))


def on_loopback(url: str) -> bool:
    """Whether the signaling server at ``url`` is on this machine's loopback."""
    return is_loopback_host(urlsplit(url).hostname or "")


def page_options(config: PreflightConfig, url: str, transport: str | None, receiver_relay_only: bool) -> dict[str, Any]:
    """``runPreflight``'s options for ``config`` (docs/browser.md#options)."""
    video = config.media.video
    return {
        "url": url,
        "duration": config.duration * 1000,
        "region": config.region,
        "transport": transport,
        "audio": config.media.audio,
        "video": False if video is None else {"width": video.width, "height": video.height, "fps": video.fps},
        "networkQualityVerbosity": config.network_quality_verbosity,
        "receiverRelayOnly": receiver_relay_only,
    }


def servers_over(servers: tuple[IceServer, ...], transport: str | None) -> tuple[IceServer, ...]:
    """What rtcprobe.js gives its peer connections (ice.js ``filterIceServers``): every server as
    handed out, or with ``transport`` only the TURN URLs over it (STUN dropped too)."""
    if transport is None:
        return servers
    kept = []
    for s in servers:
        urls = tuple(u for u in s.urls if client_transport(u) == transport)
        if urls:
            kept.append(IceServer(urls, s.username, s.credential))
    return tuple(kept)


class ChromiumDriver:
    """One preflight in a headless Chromium against the signaling server at ``url``.

    ``on_event`` gets the core's events as the page receives them; :meth:`closed` returns once
    Chromium is closed. The members :class:`rtcprobe.live.PreflightTest` reads of a driver are
    here too (``ice_servers``, ``used_ice_servers``, ``turn_url``, ``report_stored``,
    ``peer_connections``), and what an in-process core would say (``report``,
    ``network_quality_level``, ``progress_events``).
    """

    def __init__(
        self, *, url: str, token: str, config: PreflightConfig, run: RunInfo | None, on_event: Callable[[Event], None],
        transport: str | None = None, receiver_relay_only: bool = False, executable: str | None = None,
    ) -> None:
        if transport is not None and transport not in CLIENT_TRANSPORTS:
            raise ConfigError(f"TURN transport must be one of {', '.join(CLIENT_TRANSPORTS)}, got {transport!r}")
        if config.relay_only is False:
            raise ConfigError("the browser's sender is relay-only whenever the server hands out TURN "
                              "(relay_only=False is not an option of --driver chromium)")
        self._page_url = page_url(url)
        self._token = token
        self._options = page_options(config, url, transport, receiver_relay_only)
        self._config = config
        self._run_info = run
        self._on_event = on_event
        self._transport = transport
        self._executable = executable
        self._ice_servers: tuple[IceServer, ...] | None = None
        self._progress: list[ProgressEvent] = []
        self._level: int | None = None
        self._core_terminal: Completed | Failed | None = None
        self._terminal: Completed | Failed | None = None
        self._page_report: dict[str, Any] | None = None
        self._page_error: Any = None  # the page's failed error ({code, name, message}), None if completed
        self._page: Page | None = None
        self._stop_requested = False
        self._stopping: asyncio.Task[None] | None = None
        self._page_ended = asyncio.Event()
        self._core_ended = asyncio.Event()
        self._start_ms = time.time() * 1000
        self._task: asyncio.Task[None] | None = None

    # --- what PreflightTest reads ----------------------------------------------------------------

    @property
    def ice_servers(self) -> tuple[IceServer, ...] | None:
        """The ICE servers the signaling server handed out (its ``iced``), or None before."""
        return self._ice_servers

    @property
    def used_ice_servers(self) -> tuple[IceServer, ...] | None:
        """The ICE servers the page's peer connections are given (only the TURN URLs of
        ``transport`` when one was asked for); None before ``iced``."""
        return None if self._ice_servers is None else servers_over(self._ice_servers, self._transport)

    @property
    def turn_url(self) -> str | None:
        """The first TURN URL the peer connections are given, or None."""
        for server in self.used_ice_servers or ():
            for url in server.urls:
                if url.partition(":")[0].lower() in TURN_SCHEMES:
                    return url
        return None

    @property
    def report_stored(self) -> bool | None:
        """None: the server's core records its report itself; no client sends one."""
        return None

    @property
    def peer_connections(self) -> Mapping[Any, Any]:
        """Empty: the peer connections live in the page."""
        return MappingProxyType({})

    @property
    def report(self) -> PreflightReport | None:
        """The report once the test has ended, else None."""
        return None if self._terminal is None else self._terminal.report

    @property
    def network_quality_level(self) -> int | None:
        return self._level

    @property
    def progress_events(self) -> tuple[ProgressEvent, ...]:
        return tuple(self._progress)

    @property
    def page_report(self) -> dict[str, Any] | None:
        """The report as the page's ``completed`` / ``failed`` listener got it (JSON-parsed), or
        None before the page ended the test."""
        return self._page_report

    # --- running ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the test on the running loop (returns at once)."""
        self._start_ms = time.time() * 1000
        self._task = asyncio.get_running_loop().create_task(self._main(), name="rtcprobe-chromium")

    def stop(self) -> None:
        """Stop the test now (rtcprobe.js's ``stop()``): it fails with 99000 and the partial report."""
        self._stop_requested = True
        page = self._page
        if page is not None and self._stopping is None and not self._page_ended.is_set():
            self._stopping = asyncio.ensure_future(self._stop_page(page))

    async def closed(self) -> None:
        """Wait until the test has ended and Chromium is closed. A failure to launch Chromium or to
        load the page is raised here (the test has no result then)."""
        assert self._task is not None, "start() first"
        await asyncio.shield(self._task)

    async def _stop_page(self, page: Page) -> None:
        with contextlib.suppress(Exception):  # the page may be closing: it ends the test anyway
            await page.evaluate(STOP_PAGE)

    async def _main(self) -> None:
        try:
            async with asyncio.timeout(self._config.duration + SLACK):
                await self._drive()
        except TimeoutError:
            self._end_locally(errors.SIGNALING_DISCONNECTED.with_message(
                f"Chromium did not end the test within {self._config.duration + SLACK:g} s"))
        finally:
            if self._stopping is not None:
                self._stopping.cancel()

    async def _drive(self) -> None:
        async with launch(self._executable) as context:
            # Chromium gone before the test ended (it crashed, or a Ctrl-C in the terminal reached
            # it and Playwright's node driver too: they share this process group).
            context.on("close", lambda _: self._end_locally(errors.SIGNALING_DISCONNECTED.with_message(
                "Chromium closed during the test")))
            page = context.pages[0] if context.pages else await context.new_page()
            page.on("websocket", self._on_websocket)
            page.on("crash", lambda _: self._end_locally(errors.SIGNALING_DISCONNECTED.with_message(
                "Chromium's page crashed during the test")))
            await page.expose_binding(BINDING, self._on_page_end)
            if on_loopback(self._page_url):
                await page.add_init_script(LOOPBACK_ONLY)
            response = await page.goto(self._page_url)
            if response is None or not response.ok:
                status = "no response" if response is None else f"HTTP {response.status}"
                raise ConfigError(f"cannot load a page of the signaling server ({self._page_url}: {status})")
            await page.evaluate(START_PAGE, [self._token, self._options])
            self._page = page
            if self._stop_requested:
                self.stop()
            await self._page_ended.wait()
            if self._terminal is None:  # the page heard the core end the test: its frame follows
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(FRAME_GRACE):
                        await self._core_ended.wait()
                self._finish_from_page()

    # --- what comes back -------------------------------------------------------------------------

    def _on_websocket(self, ws: WebSocket) -> None:
        if urlsplit(ws.url)[:3] == urlsplit(str(self._options["url"]))[:3]:
            ws.on("framereceived", self._on_frame)

    def _on_frame(self, payload: str | bytes) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            log.warning("chromium driver: a frame from the server is not JSON")
            return
        if not isinstance(message, dict):
            return
        if message.get("type") == "iced":
            with contextlib.suppress(ProtocolError):
                iced = parse_message(payload)
                if isinstance(iced, Iced):
                    self._ice_servers = iced.ice_servers
        elif message.get("type") == "event":
            try:
                event = decode_event(message.get("event"))
            except EventError as exc:
                log.warning("chromium driver: %s", exc)
                return
            self._on_core_event(event)

    def _on_core_event(self, event: Event) -> None:
        if self._core_terminal is not None or self._page_ended.is_set():
            return  # the page ignores whatever follows its end; so do we
        if isinstance(event, Completed | Failed):
            self._core_terminal = event
            self._core_ended.set()
            return  # the result is announced when the page has it (_finish_from_page)
        if isinstance(event, Progress):
            self._progress.append(ProgressEvent(event.name, event.duration))
        elif isinstance(event, NetworkQualityLevelChanged):
            self._level = event.level
        self._emit(event)

    def _on_page_end(self, source: Any, kind: str, payload: str) -> None:
        if self._page_ended.is_set():
            return
        try:
            data = json.loads(payload)
            self._page_report = data["report"]
            self._page_error = data.get("error") if kind == "failed" else None
        except (ValueError, KeyError, TypeError):
            log.warning("chromium driver: the page's %r did not carry a report", kind)
            self._page_report = None
        self._page_ended.set()

    def _finish_from_page(self) -> None:
        """The result the page got: the core's (decoded from its frame) when the core ended the
        test, else the partial report rtcprobe.js made without a core."""
        page = self._page_report
        from_core = isinstance(page, dict) and page.get("run") is not None
        if from_core and self._core_terminal is not None:
            self._finish(self._core_terminal)
            return
        if page is None:
            self._end_locally(errors.SIGNALING_DISCONNECTED.with_message("the page ended the test without a report"))
            return
        try:
            report = report_of(page)
            error = None if self._page_error is None else error_of(self._page_error)
        except EventError as exc:
            self._end_locally(errors.SIGNALING_DISCONNECTED.with_message(f"the page's report does not decode: {exc}"))
            return
        if from_core:
            log.warning("chromium driver: the core's last frame was not seen; using the page's copy of its report")
        self._finish(Completed(report) if error is None else Failed(error, report))

    def _end_locally(self, error: PreflightErrorInfo) -> None:
        """End without a result from the page (it crashed, hung, or said nothing usable): a partial
        report of what was seen; a stopped test's says it was stopped."""
        if self._terminal is not None:
            return
        if self._stop_requested:
            error = errors.STOPPED
        now = time.time() * 1000
        report = PreflightReport(
            test_timing=Timing(self._start_ms, now), progress_events=tuple(self._progress),
            network_quality_level=self._level, run=self._run_info, error=error,
        )
        self._page_ended.set()
        self._finish(Failed(error, report))

    def _finish(self, terminal: Completed | Failed) -> None:
        if self._terminal is None:
            self._terminal = terminal
            self._emit(terminal)

    def _emit(self, event: Event) -> None:
        try:
            self._on_event(event)
        except Exception:
            log.exception("chromium driver: on_event raised")


__all__ = ["BINDING", "ChromiumDriver", "page_options", "page_url", "servers_over"]
