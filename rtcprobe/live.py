"""The live preflight's public API: :func:`run_preflight`, :func:`preflight` and the
:class:`PreflightTest` handle they return (``rtcprobe.run_preflight`` & co.).

The handle is Twilio Video's ``runPreflight`` object (docs/references.md#twilio-video-preflight):
events by name, ``stop()``, ``network_quality_level`` and ``await wait()``. It runs the aiortc
driver (:class:`rtcprobe.drivers.aiortc.AiortcDriver`) — or with ``driver="chromium"`` rtcprobe.js in a
headless Chromium (:class:`rtcprobe.drivers.chromium.ChromiumDriver`, the core then in the
signaling server) — giving it a signaling URL and a token:
either the caller's, or those of an embedded server (:mod:`rtcprobe.server.embedded`) that it
starts on loopback for the one test. Starting servers is why this module sits in the top layer
and not in the driver (docs/architecture.md#layers).

The embedded default goes through TURN as Twilio's preflight does: when coturn (``turnserver``)
is installed it is started on loopback (:class:`~rtcprobe.server.coturn.CoturnServer`) and the
embedded server hands it out, so the publisher is relay-only and the media crosses a real TURN
server. Without coturn the loopback runs on host candidates and TURN is not tested
(:attr:`PreflightTest.turn_tested` says so; the CLI's summary tells how to get it).

Per transport: ``run_preflight(transport="tls")`` runs the loopback through the first TURN URL
handed out over that transport only (udp: ``turn:H:P?transport=udp``, tcp:
``turn:H:P?transport=tcp``, tls: ``turns:H:P``), and :func:`run_transport_preflights` runs one
such loopback per transport, one after the other, for a verdict each: a network that blocks UDP
but lets TLS through (on 443, say) is told apart from one that blocks TURN altogether. A
``turns:`` server's certificate is checked against the system's trust store, or against
``turn_ca`` (a PEM file or an :class:`ssl.SSLContext`) for our peer connections only
(:mod:`rtcprobe.drivers.aiortc.turn_tls`).

The embedded coturn serves UDP only unless other transports are asked for: every transport is one
more full loopback of ``duration``, and on loopback they all pass (nothing there blocks UDP), so
the default stays one. Asked for TLS (``transport="tls"`` or ``transports=("udp", "tcp", "tls")``),
it listens with a certificate made for the run (a few ms: an EC key), whose CA this client alone
trusts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import attrs

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
from rtcprobe.drivers.aiortc.turn_client import (
    CLIENT_TRANSPORTS,
    TURN_SCHEMES,
    client_transport,
    offered_transports,
)
from rtcprobe.drivers.aiortc.turn_tls import ssl_context
from rtcprobe.drivers.chromium import ChromiumDriver, check_available

from .server.coturn import CoturnNotInstalled, CoturnServer, CoturnStartError
from .server.credentials import check_turn_config
from .server.embedded import embedded_server

log = logging.getLogger(__name__)

EVENT_NAMES = ("progress", "sample", "networkQualityLevelChanged", "completed", "failed", "event")
#: The clients a live preflight runs in: aiortc in this process, or rtcprobe.js in a headless
#: Chromium (:mod:`rtcprobe.drivers.chromium`; its core runs in the signaling server).
DRIVERS = ("aiortc", "chromium")

TurnCa = str | os.PathLike[str] | ssl.SSLContext


@attrs.frozen
class _Endpoint:
    """Where a test connects: a signaling server, its token, and the SSL context for ``turns:``."""

    url: str
    token: str
    turn_ssl: ssl.SSLContext | None = None
    transports: tuple[str, ...] = ()  # of the TURN URLs it hands out, when known beforehand (embedded)


Connect = Callable[[], contextlib.AbstractAsyncContextManager[_Endpoint]]


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

    def __init__(self, config: PreflightConfig, *, run: RunInfo | None = None, transport: str | None = None,
                 driver: str = "aiortc") -> None:
        self.config = config
        self.transport = transport  # the TURN transport asked for (None: the first TURN URL handed out)
        self.driver = driver  # "chromium": the core runs in the server, this one stays idle
        self.core = PreflightMachine(
            config, run=run if run is not None else RunInfo(driver=driver, version=__version__))
        self._handlers: dict[str, list[Callable[..., Any]]] = {name: [] for name in EVENT_NAMES}
        self._driver: AiortcDriver | ChromiumDriver | None = None
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
    def stop_requested(self) -> bool:
        """Whether :meth:`stop` was called."""
        return self._stop_requested

    @property
    def _state(self) -> PreflightMachine | ChromiumDriver:
        """Where the test's state is: the core here, or the Chromium driver (the server's core)."""
        return self._driver if isinstance(self._driver, ChromiumDriver) else self.core

    @property
    def network_quality_level(self) -> int | None:
        return self._state.network_quality_level

    @property
    def report(self) -> PreflightReport | None:
        return self._state.report

    @property
    def progress_events(self) -> tuple[ProgressEvent, ...]:
        """The steps so far, each with its time (ms since the test started)."""
        return self._state.progress_events

    @property
    def ice_servers(self) -> tuple[IceServer, ...] | None:
        """The ICE servers the signaling server handed out (credentials included), or None
        before it answered."""
        return None if self._driver is None else self._driver.ice_servers

    @property
    def turn_url(self) -> str | None:
        """The TURN URL the peer connections use (with ``transport``: the first one handed out over
        it), or None (no TURN, or before the server answered)."""
        return None if self._driver is None else self._driver.turn_url

    @property
    def turn_tested(self) -> bool | None:
        """Whether the media was sent through TURN (the publisher relay-only through a TURN server
        the signaling server handed out, over ``transport`` when one was asked for); None before
        the server answered."""
        servers = None if self._driver is None else self._driver.used_ice_servers
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
            async with connect() as endpoint:
                if self.driver == "chromium":
                    self._driver = ChromiumDriver(
                        url=endpoint.url, token=endpoint.token, config=self.config, run=self.core.run,
                        on_event=self._on_core_event, transport=self.transport,
                        receiver_relay_only=subscriber_relay_only,
                    )
                else:
                    self._driver = AiortcDriver(
                        self.core, url=endpoint.url, token=endpoint.token, on_event=self._on_core_event,
                        video_seed=video_seed, subscriber_relay_only=subscriber_relay_only,
                        turn_transport=self.transport, turn_ssl=endpoint.turn_ssl,
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
async def _external(endpoint: _Endpoint) -> AsyncIterator[_Endpoint]:
    yield endpoint


async def _start_coturn(*, tls: bool, required: bool = False) -> CoturnServer | None:
    """coturn on loopback for the embedded server (with a TLS listener when ``tls``), or None
    when it is not installed or does not start (then the test runs on host candidates, and says
    TURN was not tested). ``required``: raise instead (ConfigError: a TURN transport was asked
    for, and there is no TURN server to test it on)."""
    try:
        turn = CoturnServer(tls=tls)
    except CoturnNotInstalled as exc:
        if required:
            raise CoturnNotInstalled(f"a TURN transport was asked for and there is no TURN server: {exc} "
                                     "(or give --turn URL --turn-secret S)") from None
        return None
    starting = asyncio.ensure_future(asyncio.to_thread(turn.start))  # blocks while it probes its ports
    try:
        return await asyncio.shield(starting)
    except (CoturnStartError, OSError) as exc:
        turn.stop()
        if required:
            raise ConfigError(f"a TURN transport was asked for and coturn did not start: {exc}") from None
        log.warning("coturn did not start, so TURN is not tested: %s", exc)
        return None
    except asyncio.CancelledError:  # the thread cannot be interrupted: stop what it started
        with contextlib.suppress(Exception):
            await starting
        await asyncio.to_thread(turn.stop)
        raise


@contextlib.asynccontextmanager
async def _embedded(
    turn_urls: Sequence[str] | None, turn_secret: str | None, turn_ssl: ssl.SSLContext | None = None,
    transports: Sequence[str] | None = None, core_run: RunInfo | None = None,
) -> AsyncIterator[_Endpoint]:
    """The embedded server, handing out ``turn_urls`` — or, when None, a coturn of its own if
    one is installed, serving ``transports`` (None: UDP, and no error without coturn).
    ``core_run``: the ``run`` its core stamps on a browser's report (``--driver chromium``)."""
    async with contextlib.AsyncExitStack() as stack:
        if turn_urls is None:
            turn = await _start_coturn(tls="tls" in (transports or ()), required=transports is not None)
            if turn is not None:
                stack.push_async_callback(asyncio.to_thread, turn.stop)
                turn_urls, turn_secret = turn.urls(tuple(transports or ("udp",))), turn.secret
                if turn.ca_file is not None:
                    turn_ssl = ssl_context(turn.ca_file)
        url, token = await stack.enter_async_context(
            embedded_server(turn_urls=turn_urls or (), turn_secret=turn_secret, core_run=core_run))
        yield _Endpoint(url, token, turn_ssl, _transports_of(turn_urls or ()))


def _check_transport(transport: str) -> str:
    if transport not in CLIENT_TRANSPORTS:
        raise ConfigError(f"TURN transport must be one of {', '.join(CLIENT_TRANSPORTS)}, got {transport!r}")
    return transport


def _transports_of(turn_urls: Sequence[str]) -> tuple[str, ...]:
    """The client transports of ``turn_urls`` (parsed already), in order of first appearance."""
    seen: list[str] = []
    for url in turn_urls:
        transport = client_transport(url)
        if transport is not None and transport not in seen:
            seen.append(transport)
    return tuple(seen)


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
    transport: str | None = None,
    turn_ca: TurnCa | None = None,
    driver: str = "aiortc",
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

    ``transport`` (``"udp"``, ``"tcp"`` or ``"tls"``) runs the loopback through the first TURN
    URL handed out over it (a failure naming the cause when there is none); None takes the first
    TURN URL whatever its transport. The embedded default's own coturn then serves that transport
    (tls: with a certificate made for the run and trusted by this test). ``turn_ca`` (a PEM file
    or an :class:`ssl.SSLContext`) is what a ``turns:`` server of ``turn_urls`` or of a remote
    server is checked against, instead of the system's trust store.

    ``driver="chromium"`` runs the test in a headless Chromium instead (rtcprobe.js, the core in
    the signaling server: :mod:`rtcprobe.drivers.chromium`); it needs Chromium and Playwright
    (ConfigError naming them otherwise). The embedded server then stamps the report's ``run``
    itself (a remote server's says ``"browser"``); ``relay_only=False``, ``turn_ca`` and TLS to
    the embedded coturn (a certificate Chromium does not trust) are not available.
    """
    loop = asyncio.get_running_loop()  # raises RuntimeError outside a running loop: misuse
    test, connect = _prepare(
        token, url=url, duration=duration, region=region, media=media, turn_urls=turn_urls, turn_secret=turn_secret,
        relay_only=relay_only, network_quality_verbosity=network_quality_verbosity, run=run,
        subscriber_relay_only=subscriber_relay_only, transport=transport, turn_ca=turn_ca, driver=driver,
    )
    return _launch(loop, test, connect, video_seed, subscriber_relay_only)


def _launch(loop: asyncio.AbstractEventLoop, test: PreflightTest, connect: Connect, video_seed: int,
            subscriber_relay_only: bool) -> PreflightTest:
    test._task = loop.create_task(test._run(connect, video_seed, subscriber_relay_only), name="rtcprobe-preflight")
    return test


def _prepare(
    token: str | None, *, url: str | None, duration: float = 10.0, region: str = "gll",
    media: MediaDemand | None = None, turn_urls: Sequence[str] | None, turn_secret: str | None,
    relay_only: bool | None = None, network_quality_verbosity: int = 1, run: RunInfo | None = None,
    subscriber_relay_only: bool = False, transport: str | None, turn_ca: TurnCa | None,
    endpoint: _Endpoint | None = None, driver: str = "aiortc",
) -> tuple[PreflightTest, Connect]:
    """Check everything :func:`run_preflight` was given (ConfigError at once); the test and how it
    connects. ``endpoint``: an embedded server started already (run_transport_preflights')."""
    _check_driver(driver, url=url, turn_urls=turn_urls, transports=() if transport is None else (transport,),
                  turn_ca=turn_ca, relay_only=relay_only)
    media = media if media is not None else MediaDemand()
    if media.video is not None:
        check_video(media.video)
    config = PreflightConfig(
        duration=duration, region=region, media=media, relay_only=relay_only,
        network_quality_verbosity=network_quality_verbosity,
    )
    if subscriber_relay_only and (relay_only is False or (url is None and not turn_urls)):
        raise ConfigError("a relay-only subscriber needs TURN and a relay-only publisher")
    if transport is not None:
        _check_transport(transport)
        if relay_only is False:
            raise ConfigError("a preflight over one TURN transport needs a relay-only publisher (relay_only)")
    turn_ssl = None if turn_ca is None else ssl_context(turn_ca)
    connect: Connect
    if endpoint is not None:
        connect = functools.partial(_external, endpoint)
    elif url is None:
        if token is not None:
            raise ConfigError("a token needs a url: the embedded server mints its own token")
        check_turn_config(turn_urls or (), turn_secret)  # a bad --turn is bad input, not a failed test
        if turn_urls is None:
            if turn_ssl is not None:
                raise ConfigError("--turn-ca is for the TURN servers of --turn or of a --url server; the embedded "
                                  "coturn's own certificate is trusted already")
        elif transport is not None and transport not in _transports_of(turn_urls):
            raise ConfigError(f"no --turn URL goes over {transport} (give one: {_EXAMPLE_URLS[transport]})")
        transports = None if transport is None else (transport,)
        connect = functools.partial(_embedded, turn_urls, turn_secret, turn_ssl, transports,
                                    _core_run(driver, run))
    else:
        if not token:
            raise ConfigError("a signaling url needs a token (--token)")
        if turn_urls or turn_secret:
            raise ConfigError("TURN options configure the embedded server; a remote server hands out its own TURN")
        connect = functools.partial(_external, _Endpoint(signaling_url(url), token, turn_ssl))
    return PreflightTest(config, run=run, transport=transport, driver=driver), connect


def _check_driver(driver: str, *, url: str | None, turn_urls: Sequence[str] | None, transports: Sequence[str],
                  turn_ca: TurnCa | None, relay_only: bool | None) -> None:
    """ConfigError for a driver that is not there, or an option it cannot honour."""
    if driver not in DRIVERS:
        raise ConfigError(f"driver must be one of {', '.join(DRIVERS)}, got {driver!r}")
    if driver != "chromium":
        return
    check_available()  # ChromiumUnavailable (a ConfigError) says what to install
    if relay_only is False:
        raise ConfigError("--driver chromium: the browser's sender is relay-only whenever TURN is handed out")
    if turn_ca is not None:
        raise ConfigError("--turn-ca is not available with --driver chromium (Chromium trusts the system's CAs)")
    if url is None and turn_urls is None and "tls" in transports:
        raise ConfigError("--driver chromium cannot test TLS on the embedded coturn (its certificate is made for the "
                          "run and Chromium does not trust it): give --turn turns:... of a trusted server, or --url")


def _core_run(driver: str, run: RunInfo | None) -> RunInfo | None:
    """The ``run`` the embedded server's core stamps on a browser's report: ``--driver chromium``'s
    (None: the server's default, for the browsers of a remote server)."""
    if driver != "chromium":
        return None
    return run if run is not None else RunInfo(driver="chromium", version=__version__)


_EXAMPLE_URLS = {"udp": "turn:HOST:3478?transport=udp", "tcp": "turn:HOST:3478?transport=tcp",
                 "tls": "turns:HOST:5349"}


@attrs.frozen
class TransportReport:
    """One loopback of :func:`run_transport_preflights`: the TURN transport it went over (None when
    no TURN was handed out: host candidates, TURN not tested), the TURN URL it went through (None
    when it never got one), and its report, completed or failed."""

    transport: str | None
    turn_url: str | None
    report: PreflightReport

    @property
    def ok(self) -> bool:
        return self.report.ok


async def _outcome(test: PreflightTest) -> TransportReport:
    try:
        report = await test.wait()
    except PreflightError as exc:
        assert isinstance(exc.report, PreflightReport)  # the client always attaches it
        report = exc.report
    turn_url = test.turn_url
    transport = test.transport or (None if turn_url is None else client_transport(turn_url))
    return TransportReport(transport, turn_url, report)


async def run_transport_preflights(
    token: str | None = None,
    *,
    url: str | None = None,
    transports: Sequence[str] | None = None,
    turn_urls: Sequence[str] | None = None,
    turn_secret: str | None = None,
    turn_ca: TurnCa | None = None,
    on_test: Callable[[PreflightTest], None] | None = None,
    video_seed: int = 0,
    **options: Any,
) -> tuple[TransportReport, ...]:
    """One loopback per TURN transport, one after the other: a verdict for each of ``transports``
    (``"udp"``, ``"tcp"``, ``"tls"``), in that order.

    ``transports`` None means every transport handed out: those of ``turn_urls``; for a remote
    server (``url``), the first loopback takes the first TURN URL it hands out and the others
    follow over the remaining transports of its list; the embedded default's own coturn serves UDP
    only (one loopback, or one on host candidates without coturn, as :func:`run_preflight`). Asked
    for transports, the embedded coturn serves them (tls with a certificate of the run), and
    without coturn that is a ConfigError. The embedded server starts once for all the loopbacks.

    ``on_test(test)`` sees each :class:`PreflightTest` as it starts (to follow its events, or to
    stop it: a stopped test ends the series, its report the last). ``options`` are the other
    keywords of :func:`run_preflight` (``duration``, ``media``, ``region``, ``run``, ...). Every
    loopback's report is kept, failed ones included: one :class:`TransportReport` per loopback
    run. Misuse raises ConfigError before anything runs.
    """
    loop = asyncio.get_running_loop()
    wanted: tuple[str, ...] | None = None
    if transports is not None:
        wanted = tuple(dict.fromkeys(_check_transport(t) for t in transports))
        if not wanted:
            raise ConfigError("--transports needs at least one of udp, tcp, tls")
    for name in ("transport", "subscriber_relay_only"):
        if name in options:
            raise ConfigError(f"run_transport_preflights takes transports=, not {name}=")
    driver = str(options.get("driver", "aiortc"))
    _check_driver(driver, url=url, turn_urls=turn_urls, transports=wanted or (), turn_ca=turn_ca,
                  relay_only=options.get("relay_only"))
    # Everything checked as run_preflight would, before anything runs.
    _prepare(token, url=url, turn_urls=turn_urls, turn_secret=turn_secret, transport=wanted[0] if wanted else None,
             turn_ca=turn_ca, **options)
    if url is None and turn_urls is not None and wanted is not None:
        for transport in wanted:
            if transport not in _transports_of(turn_urls):
                raise ConfigError(f"no --turn URL goes over {transport} (give one: {_EXAMPLE_URLS[transport]})")
    results: list[TransportReport] = []

    async def one(transport: str | None, endpoint: _Endpoint | None) -> PreflightTest:
        if endpoint is None:  # the remote server
            test, connect = _prepare(token, url=url, turn_urls=None, turn_secret=None, transport=transport,
                                     turn_ca=turn_ca, **options)
        else:
            test, connect = _prepare(None, url=None, turn_urls=turn_urls, turn_secret=turn_secret,
                                     transport=transport, turn_ca=None, endpoint=endpoint, **options)
        if on_test is not None:
            on_test(test)
        results.append(await _outcome(_launch(loop, test, connect, video_seed, False)))
        return test

    async def series(runs: Sequence[str | None], endpoint: _Endpoint | None) -> None:
        for transport in runs:
            if (await one(transport, endpoint)).stop_requested:
                return

    if url is not None:
        if wanted is not None:
            await series(wanted, None)
        else:
            first = await one(None, None)
            if not first.stop_requested:
                offered = offered_transports(first.ice_servers or ())
                await series([t for t in offered if t != results[0].transport], None)
        return tuple(results)

    # The embedded server (and its coturn), started once for every loopback.
    turn_ssl = None if turn_ca is None else ssl_context(turn_ca)
    async with _embedded(turn_urls, turn_secret, turn_ssl, wanted, _core_run(driver, options.get("run"))) as endpoint:
        runs: Sequence[str | None] = wanted or endpoint.transports
        # One TURN URL (or none: host candidates) and no transport asked for: run_preflight's test.
        await series(runs if len(runs) > 1 or wanted else [None], endpoint)
    return tuple(results)


def preflight(token: str | None = None, **options: Any) -> PreflightReport:
    """Blocking :func:`run_preflight` for scripts: runs its own loop, returns the report or
    raises :class:`~rtcprobe.PreflightError`. Ctrl-C stops the test and closes everything first."""

    async def main() -> PreflightReport:
        return await run_preflight(token, **options).wait()

    return asyncio.run(main())


__all__ = ["DRIVERS", "EVENT_NAMES", "PreflightTest", "TransportReport", "preflight", "run_preflight",
           "run_transport_preflights"]
