"""Core mode with a Python "fake browser" over a real WebSocket to a real SignalingServer on
127.0.0.1: the server runs the client's core on the client's clock (far from its own), sends its
actions and events, fires its timers, reports through the one report path; hostile clients are
closed with 53000 while a good one beside them completes; nothing outlives its connection."""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
from core_harness import CounterSource
from rtcprobe.core import (
    ConnectionStateChanged,
    DtlsStateChanged,
    IceServer,
    IceStateChanged,
    MediaAcquired,
    MediaStarted,
    Observation,
    PreflightMachine,
    PreflightReport,
    Role,
    RunInfo,
    SignalingConnected,
    StatsObserved,
    StepUnobservable,
    StopRequested,
    TrackSubscribed,
    TransportError,
    errors,
)
from rtcprobe.core._version import __version__
from rtcprobe.core.codec import action_message, decode_config, encode_observation, encode_observe, event_message
from rtcprobe.drivers.aiortc.protocol import Bye, Report, encode
from test_server_support import (
    WS,
    expect_close,
    hello,
    metric,
    metrics_text,
    recv_json,
    running_server,
    token,
    ws_client,
)

from rtcprobe.server import SignalingServer, coremode
from rtcprobe.server.coremode import BURST, DRIVER, GRACE

pytestmark = pytest.mark.timeout(60)

CLIENT_ORIGIN_MS = 1e9  # the client's performance.now() at the test's start: 1e6 s, far from the server's clock
EPOCH = 1_700_000_000_000.0
TURN = {"turn_urls": ["turn:127.0.0.1:3478?transport=udp"], "turn_secret": "turn-secret"}
PUB, SUB = Role.PUBLISHER, Role.SUBSCRIBER


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


class FakeBrowser:
    """What rtcprobe.js does, in Python: its own clock (ms, like performance.now()), a core-mode
    hello, scripted observations; every observation sent is kept, with its time, for a replay."""

    def __init__(self, ws: WS, origin_ms: float = CLIENT_ORIGIN_MS) -> None:
        self.ws = ws
        self.loop = asyncio.get_running_loop()
        self.base = self.loop.time()
        self.origin = origin_ms
        self.sent: list[tuple[Observation, float]] = []
        self.received: list[dict[str, Any]] = []  # every action and event, in order
        self.iced: dict[str, Any] | None = None
        self.start = self.clock()
        self.hello_now = self.start

    def clock(self) -> float:
        return self.origin + (self.loop.time() - self.base) * 1000

    async def hello(self, *, tok: str | None = None, start: float | None = None, duration: float = 2000,
                    epoch: float | None = EPOCH, **core: Any) -> None:
        self.start = self.start if start is None else start
        self.hello_now = self.clock()
        body: dict[str, Any] = {"start": self.start, "duration": duration, "verbosity": 1,
                                "media": {"audio": True, "video": {"width": 640, "height": 480, "fps": 30}}, **core}
        if epoch is not None:
            body["epoch"] = epoch
        await self.ws.send_str(json.dumps({"type": "ice", "preflight": True, "token": tok or token(),
                                           "version": 2, "region": "gll", "now": self.hello_now, "core": body}))

    async def observe(self, observation: Observation, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        self.sent.append((observation, now))
        await self.ws.send_str(encode_observe(observation, now))

    async def next(self, timeout: float = 10) -> dict[str, Any]:
        message = await recv_json(self.ws, timeout)
        if message["type"] in ("action", "event"):
            self.received.append(message)
        elif message["type"] == "iced":
            self.iced = message
        return message

    async def until(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        """Read up to the action or event of ``kind``; returns it."""
        while True:
            message = await self.next(timeout)
            if message["type"] == "iced":
                continue
            body = message.get("action") or message.get("event")
            assert body is not None, message
            if body["kind"] == kind:
                return body  # type: ignore[no-any-return]


def replay(config_core: dict[str, Any], start: float, sent: Sequence[tuple[Observation, float]],
           ice_servers: tuple[IceServer, ...], epoch: float = EPOCH) -> tuple[PreflightMachine, list[dict[str, Any]]]:
    """A local PreflightMachine fed the same observations at the same times, its timers fired at
    their deadlines: its report and messages are what the server's core must have produced."""
    machine = PreflightMachine(decode_config(config_core, region="gll"), run=RunInfo(DRIVER, __version__))
    out: list[dict[str, Any]] = []

    def drain() -> None:
        out.extend(action_message(a) for a in machine.actions())
        out.extend(event_message(e) for e in machine.events())

    machine.start(start / 1000, epoch_ms=epoch)
    drain()
    for observation, now in sent:
        while (deadline := machine.get_timer()) is not None and deadline <= now / 1000:
            machine.handle_timer(deadline)
            drain()
        if isinstance(observation, SignalingConnected):
            observation = SignalingConnected(ice_servers)
        machine.handle(observation, now / 1000)
        drain()
    return machine, out


def torn_down(b: FakeBrowser) -> bool:
    """The machine asked for tearDown once, before its terminal event (actions, then events)."""
    kinds = [(m.get("action") or m["event"])["kind"] for m in b.received]
    return kinds.count("tearDown") == 1 and kinds.index("tearDown") < len(kinds) - 1 and \
        kinds[-1] in ("completed", "failed")


async def connect_and_start_media(b: FakeBrowser, media_acquired_at: float) -> dict[str, Any]:
    """From the hello to mediaStarted, as a browser would answer the core's actions."""
    assert (await b.next())["type"] == "iced"
    assert (await b.until("acquireMedia"))["media"]["audio"] is True
    await b.observe(MediaAcquired(), media_acquired_at)  # acquired before the hello, sent when asked
    await b.until("connectSignaling")
    await b.observe(SignalingConnected())  # the server fills in the ICE servers
    opened = await b.until("openPeerConnections")
    for observation in (TrackSubscribed("audio"), TrackSubscribed("video"), IceStateChanged(PUB, "checking"),
                        ConnectionStateChanged(PUB, "connecting"), DtlsStateChanged(PUB, "connecting"),
                        IceStateChanged(PUB, "connected"), DtlsStateChanged(PUB, "connected"),
                        ConnectionStateChanged(PUB, "connected"), IceStateChanged(SUB, "connected"),
                        MediaStarted("audio"), MediaStarted("video")):
        await asyncio.sleep(0.002)
        await b.observe(observation)
    return opened


async def full_preflight(url: str, *, identity: str = "alice",
                         say_bye: bool = True) -> tuple[FakeBrowser, dict[str, Any]]:
    """A whole core-mode preflight; returns the browser and its completed event."""
    async with ws_client(url) as ws:
        b = FakeBrowser(ws)
        await b.hello(tok=token(identity), start=b.clock() - 100)  # media took 100 ms before the hello
        await connect_and_start_media(b, media_acquired_at=b.start + 20)
        source = CounterSource(loss_every=50)
        while True:
            message = await b.next()
            body = message.get("action") or message.get("event")
            assert body is not None, message
            if body["kind"] == "sampleStats":  # answered at once, as getStats() would
                await b.observe(StatsObserved(attrs.evolve(source.sample(), loopback=True)))
            elif body["kind"] in ("completed", "failed"):
                break
        assert body["kind"] == "completed", body
        assert torn_down(b)
        if say_bye:
            await ws.send_str(encode(Bye()))
            assert await expect_close(ws) == 1000
        return b, body


# --- a whole preflight ------------------------------------------------------------------------------


def test_a_whole_core_mode_preflight_is_the_local_core_byte_for_byte(tmp_path: Path) -> None:
    reports = tmp_path / "reports.jsonl"

    async def body() -> None:
        async with running_server(reports=str(reports), **TURN) as server:
            b, completed = await full_preflight(server.url, identity="carol")
            # The ICE servers handed out in iced are the ones the core gives the peer connections.
            iced = b.iced
            assert iced is not None
            servers = tuple(IceServer(tuple(s["urls"]), s.get("username"), s.get("credential"))
                            for s in iced["ice_servers"])
            assert servers and servers[0].username is not None and servers[0].username.endswith(":carol")
            core = {"duration": 2000, "verbosity": 1, "media": {"audio": True, "video": {"width": 640,
                                                                                         "height": 480, "fps": 30}}}
            machine, expected = replay(core, b.start, b.sent, servers)
            local = machine.report
            assert local is not None and local.ok
            # Byte for byte: the canonical JSON of the report the browser got is the local core's.
            assert json.dumps(completed["report"], sort_keys=True, indent=2) == local.to_json()
            # And every action and event, in order, is what the local core produced.
            assert b.received == expected
            opened = next(m["action"] for m in b.received if m.get("action", {}).get("kind") == "openPeerConnections")
            assert opened["relayOnly"] is True and opened["iceServers"] == iced["ice_servers"]
            assert local.run == RunInfo("browser", __version__)
            assert local.test_timing.start == EPOCH  # the client's wall clock, as it said
            assert [e.name for e in local.progress_events] == [
                "mediaAcquired", "connected", "iceConnected", "dtlsConnected", "peerConnectionConnected",
                "mediaSubscribed", "mediaStarted"]
            assert len(local.samples) == 2 and local.network_quality_level is not None
            # The operator's file and /metrics saw it like a Python client's report.
            line = json.loads(reports.read_text().splitlines()[-1])
            assert line["identity"] == "carol" and line["report"] == completed["report"]
            text = await metrics_text(server)
            assert metric(text, "rtcprobe_preflights_total", outcome="completed", code="") == 1
            assert metric(text, "rtcprobe_network_quality_level_count") == 1
            assert metric(text, "rtcprobe_step_seconds_count", step="mediaStarted") == 1
            assert server.stats.reports == 1

    run(body())


def test_without_epoch_the_report_starts_at_the_servers_wall_clock_minus_the_clients_delay() -> None:
    async def body() -> None:
        async with running_server() as server, ws_client(server.url) as ws:
            b = FakeBrowser(ws)
            before = time.time() * 1000
            await b.hello(start=b.clock() - 5000, epoch=None)  # runPreflight was called 5 s before the hello
            assert (await b.next())["type"] == "iced"
            await b.observe(StopRequested())
            failed = await b.until("failed")
            start = failed["report"]["testTiming"]["start"]
            assert before - 5000 - 50 <= start <= time.time() * 1000 - 5000 + 50
            assert failed["report"]["testTiming"]["end"] - start == pytest.approx(5000, abs=100)

    run(body())


# --- timers on the server's clock ---------------------------------------------------------------------


def test_a_step_timeout_fires_on_the_servers_clock_at_the_clients_deadline() -> None:
    async def body() -> None:
        async with running_server() as server, ws_client(server.url) as ws:
            b = FakeBrowser(ws)
            # The test started 10 s (client clock) before the hello; its step timeout is 10.1 s, so
            # the signaling step, entered at start + 50 ms, times out 150 ms after the hello.
            await b.hello(start=b.clock() - 10_000, duration=100)
            t0 = b.loop.time()
            assert (await b.next())["type"] == "iced"
            await b.until("acquireMedia")
            await b.observe(MediaAcquired(), b.start + 50)
            await b.until("connectSignaling")  # ... and the browser never answers
            failed = await b.until("failed", timeout=5)
            waited = b.loop.time() - t0
            assert 0.14 <= waited < 2.0, waited  # not at once, not 10 s later: at the mapped deadline
            assert failed["error"]["code"] == 53002
            assert "timed out after 10.1 s" in failed["error"]["message"]
            report = PreflightReport.from_dict(failed["report"])
            assert report.error is not None and report.error.code == 53002
            assert [e.name for e in report.progress_events] == ["mediaAcquired"]
            assert report.test_timing.end is not None
            assert report.test_timing.end - report.test_timing.start == pytest.approx(10_150)  # the deadline
            machine, expected = replay({"duration": 100}, b.start, b.sent, ())
            machine.handle_timer(b.start / 1000 + 10.150)
            expected += [action_message(a) for a in machine.actions()]
            expected += [event_message(e) for e in machine.events()]
            assert machine.report is not None and report.to_json() == machine.report.to_json()
            assert b.received == expected
            assert torn_down(b)
            await ws.send_str(encode(Bye()))
            assert await expect_close(ws) == 1000

    run(body())


# --- stop, tokens, the grace period ---------------------------------------------------------------------


def test_stop_fails_99000_with_the_partial_report_counted_and_closes_after_the_grace(tmp_path: Path) -> None:
    reports = tmp_path / "reports.jsonl"

    async def body() -> None:
        async with running_server(reports=str(reports)) as server, ws_client(server.url) as ws:
            b = FakeBrowser(ws)
            await b.hello(tok=token("dave"), start=b.clock() - 50)
            await connect_and_start_media(b, media_acquired_at=b.start + 10)
            await b.until("sampleStats")
            await b.observe(StopRequested())
            failed = await b.until("failed")
            assert failed["error"] == {"code": 99000, "name": "PreflightStoppedError",
                                       "message": "The preflight test was stopped before it completed"}
            assert failed["report"]["error"]["code"] == 99000
            assert [e["name"] for e in failed["report"]["progressEvents"]][-1] == "mediaStarted"
            assert failed["report"]["stats"] is None  # a failed run reports no stats, as Twilio's does
            assert torn_down(b)
            t0 = b.loop.time()
            assert await expect_close(ws, timeout=GRACE + 5) == 1000  # no bye: closed after the grace
            assert GRACE - 0.5 <= b.loop.time() - t0 <= GRACE + 2
            line = json.loads(reports.read_text())
            assert line["identity"] == "dave" and line["report"] == failed["report"]
            text = await metrics_text(server)
            assert metric(text, "rtcprobe_preflights_total", outcome="failed", code="99000") == 1

    run(body())


@pytest.mark.parametrize(("make_token", "code", "name"), [
    (lambda: "not-a-jwt", 20101, "AccessTokenInvalidError"),
    (lambda: token(secret="another-secret-0123456789abcdef0123456789"), 20107, "AccessTokenSignatureInvalidError"),
    (lambda: token(now=time.time() - 7200, ttl=60), 20104, "AccessTokenExpiredError"),
])
def test_a_bad_token_fails_through_the_core_with_its_code_and_a_partial_report(
        tmp_path: Path, make_token: Callable[[], str], code: int, name: str) -> None:
    reports = tmp_path / "reports.jsonl"

    async def body() -> None:
        async with running_server(reports=str(reports)) as server, ws_client(server.url) as ws:
            b = FakeBrowser(ws)
            await b.hello(tok=make_token())
            kinds = []
            while (msg := await ws.receive(timeout=10)).type is aiohttp.WSMsgType.TEXT:
                message = json.loads(msg.data)
                assert message["type"] in ("action", "event"), message  # no iced: not authenticated
                kinds.append((message.get("action") or message["event"])["kind"])
                if kinds[-1] == "failed":
                    failed = message["event"]
            assert kinds == ["acquireMedia", "tearDown", "failed"]
            assert ws.close_code == 1008
            assert failed["error"]["code"] == code and failed["error"]["name"] == name
            report = PreflightReport.from_dict(failed["report"])
            assert report.error is not None and report.error.code == code and report.run is not None
            # As the local core: started, then told of the token's error at the hello's time.
            local = PreflightMachine(decode_config({"duration": 2000}, region="gll"),
                                     run=RunInfo(DRIVER, __version__))
            local.start(b.start / 1000, epoch_ms=EPOCH)
            local.handle(TransportError(errors.error_for_code(code, failed["error"]["message"])), b.hello_now / 1000)
            assert local.report is not None and report.to_json() == local.report.to_json()
            # Not authenticated: the token is counted, the report is neither stored nor counted.
            text = await metrics_text(server)
            assert metric(text, "rtcprobe_tokens_rejected_total", code=str(code)) == 1
            assert metric(text, "rtcprobe_preflights_total", outcome="failed", code=str(code)) == 0
            assert not reports.read_text()

    run(body())


# --- hostile clients beside a good one ------------------------------------------------------------------


def _observe(observation: dict[str, Any], now: float = CLIENT_ORIGIN_MS + 1) -> str:
    return json.dumps({"type": "observe", "now": now, "observation": observation})


GOOD_OBS = encode_observation(MediaAcquired())


async def _core_hello(ws: WS, **core: Any) -> None:
    await ws.send_str(json.dumps({"type": "ice", "token": token(), "version": 2, "now": CLIENT_ORIGIN_MS,
                                  "core": {"start": CLIENT_ORIGIN_MS, **core}}))


async def _flood(ws: WS) -> None:
    await _core_hello(ws)
    assert (await recv_json(ws))["type"] == "iced"
    for i in range(BURST + 200):  # far above 50/s; stops when the server has closed
        if ws.closed:
            break
        await ws.send_str(_observe({"v": 1, "kind": "stepUnobservable", "name": "dtlsConnected"},
                                   CLIENT_ORIGIN_MS + i))


def _after_hello(*frames: str) -> Callable[[WS], Coroutine[Any, Any, None]]:
    """A good core-mode hello, then ``frames``."""
    async def send(ws: WS) -> None:
        await _core_hello(ws)
        assert (await recv_json(ws))["type"] == "iced"
        assert (await recv_json(ws))["action"]["kind"] == "acquireMedia"
        for frame in frames:
            await ws.send_str(frame)
    return send


def _raw(*frames: str) -> Callable[[WS], Coroutine[Any, Any, None]]:
    async def send(ws: WS) -> None:
        for frame in frames:
            await ws.send_str(frame)
    return send


async def _python_client_observes(ws: WS) -> None:
    await hello(ws)  # a v2 hello without core: no core on the server
    await ws.send_str(_observe(GOOD_OBS))


HOSTILE: list[tuple[str, Callable[[WS], Coroutine[Any, Any, None]], str, int]] = [
    ("unknown-kind", _after_hello(_observe({"v": 1, "kind": "offer"})), "a known observation kind", 1008),
    ("wrong-version", _after_hello(_observe({**GOOD_OBS, "v": 2})), "observation.v must be 1", 1008),
    ("wrong-type", _after_hello(_observe({"v": 1, "kind": "mediaStarted", "media": 1})), "media must be one of",
     1008),
    ("negative-counter", _after_hello(_observe({"v": 1, "kind": "stats", "sample": {
        "loopback": True, "audioIn": {"packetsReceived": 1, "packetsLost": -1, "bytesReceived": 1}}})),
     "packetsLost must be an integer", 1008),
    ("nan", _after_hello('{"type": "observe", "now": NaN, "observation": {}}'), "invalid JSON", 1008),
    ("not-json", _after_hello("{observe"), "invalid JSON", 1008),
    ("oversized", _after_hello(_observe({**GOOD_OBS, "pad": "x" * 70_000})), "message too big", 1009),
    ("clock-goes-back", _after_hello(_observe(GOOD_OBS, CLIENT_ORIGIN_MS + 10),
                                     _observe(encode_observation(SignalingConnected()), CLIENT_ORIGIN_MS + 9)),
     "now went back", 1008),
    ("before-the-start", _after_hello(_observe(GOOD_OBS, CLIENT_ORIGIN_MS - 1)), "now went back", 1008),
    ("flood", _flood, "too many 'observe' messages", 1008),
    ("observe-before-hello", _raw(_observe(GOOD_OBS)), "only a core-mode session", 1008),
    ("observe-without-core", _python_client_observes, "only a core-mode session", 1008),
    ("report-in-core-mode", _after_hello(encode(Report(report={"testTiming": {"start": 0}}))),
     "the server's core builds the report", 1008),
    ("second-hello", _after_hello(json.dumps({"type": "ice", "token": "t", "version": 2, "now": 1,
                                              "core": {"start": 1}})), "authenticated already", 1008),
    ("bad-config", _raw(json.dumps({"type": "ice", "token": "t", "version": 2, "now": 5,
                                    "core": {"start": 1, "duration": -1}})), "duration must be", 1008),
    ("start-after-now", _raw(json.dumps({"type": "ice", "token": "t", "version": 2, "now": 5,
                                         "core": {"start": 6}})), "core.start is later", 1008),
    ("huge-now", _raw('{"type": "ice", "token": "t", "version": 2, "now": 1' + "0" * 400 + ', "core": {"start": 1}}'),
     "'now' must be a finite number", 1008),
    ("huge-observe-now", _after_hello('{"type": "observe", "now": 1' + "0" * 400 + ', "observation": {}}'),
     "now must be a finite number", 1008),
    ("no-now", _raw(json.dumps({"type": "ice", "token": "t", "version": 2, "core": {"start": 6}})),
     "'now' must be a finite number", 1008),
    ("core-not-object", _raw(json.dumps({"type": "ice", "token": "t", "version": 2, "now": 5, "core": 3})),
     "'core' must be an object", 1008),
    ("v1-hello-with-core", _raw(json.dumps({"type": "ice", "token": "t", "version": 1, "now": 5,
                                            "core": {"start": 1}})), "version 1 is not supported", 1008),
]


async def hostile(url: str, send: Callable[[WS], Coroutine[Any, Any, None]], words: str, close_code: int) -> None:
    """Run one hostile client: it must get one 53000 error naming the problem, then the close."""
    async with ws_client(url) as ws:
        await send(ws)
        while True:  # skip what the core sent before the error
            msg = await ws.receive(timeout=10)
            if msg.type is not aiohttp.WSMsgType.TEXT or json.loads(msg.data)["type"] == "error":
                break
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        error = json.loads(msg.data)
        assert error["code"] == 53000 and words in error["message"], error
        assert await expect_close(ws) == close_code


@pytest.mark.parametrize(("name", "send", "words", "close_code"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_client_is_closed_with_53000(name: str, send: Callable[[WS], Coroutine[Any, Any, None]],
                                              words: str, close_code: int) -> None:
    async def body() -> None:
        async with running_server() as server:
            await hostile(server.url, send, words, close_code)

    run(body())


def test_every_hostile_client_at_once_beside_a_good_session_that_completes(tmp_path: Path) -> None:
    reports = tmp_path / "reports.jsonl"

    async def body() -> None:
        async with running_server(reports=str(reports)) as server:
            good = asyncio.ensure_future(full_preflight(server.url, identity="good"))
            await asyncio.gather(*(hostile(server.url, send, words, code) for _, send, words, code in HOSTILE))
            b, completed = await good
            assert completed["report"].get("error") is None and len(completed["report"]["samples"]) == 2
            machine, expected = replay({"duration": 2000}, b.start, b.sent, ())
            assert machine.report is not None
            assert json.dumps(completed["report"], sort_keys=True, indent=2) == machine.report.to_json()
            assert b.received == expected
            lines = [json.loads(line) for line in reports.read_text().splitlines()]
            assert [line["identity"] for line in lines] == ["good"]  # only the good one reported

    run(body())


def test_a_burst_is_allowed_the_flood_is_not() -> None:
    async def body() -> None:
        async with running_server() as server, ws_client(server.url) as ws:
            b = FakeBrowser(ws)
            await b.hello()
            await b.until("acquireMedia")
            for _ in range(BURST - 1):  # at once: e.g. every state of both connections after a reconnect
                await b.observe(StepUnobservable("dtlsConnected"))
            await b.observe(StopRequested())
            failed = await b.until("failed")
            assert failed["error"]["code"] == 99000  # the core answered: no error for the burst

    run(body())


# --- nothing outlives its connection --------------------------------------------------------------------


def _core_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if "CoreSession" in t.get_coro().__qualname__]  # type: ignore[union-attr]


def test_disconnects_in_every_phase_leave_no_task_timer_or_session_behind() -> None:
    async def body() -> None:
        async with running_server() as server:
            # Drops: right after the hello, while the machine waits for stats (timer armed), after
            # the end (grace pending), and a bye after completion.
            async with ws_client(server.url) as ws:
                b = FakeBrowser(ws)
                await b.hello()
                await b.until("acquireMedia")
            async with ws_client(server.url) as ws:
                b = FakeBrowser(ws)
                await b.hello(start=b.clock() - 50)
                await connect_and_start_media(b, b.start + 1)
                await b.until("sampleStats")
                assert len(_core_tasks()) == 1  # its timer task is alive while the test runs
            async with ws_client(server.url) as ws:
                b = FakeBrowser(ws)
                await b.hello()
                assert (await b.next())["type"] == "iced"
                await b.observe(StopRequested())
                await b.until("failed")
                assert torn_down(b)  # the grace period is pending when the client drops
            await full_preflight(server.url)
            for _ in range(200):
                if server.stats.connections == 0 and not _core_tasks():
                    break
                await asyncio.sleep(0.02)
            assert not _core_tasks()
            assert server.stats.sessions == 0 and server.stats.connections == 0
        gc.collect()
        assert coremode.alive() == 0  # every CoreSession (and its machine) was freed

    run(body())


def test_server_shutdown_closes_core_sessions_and_their_timers() -> None:
    async def body() -> None:
        server = SignalingServer(secret="test-secret-0123456789abcdef0123456789abcdef")
        await server.start()
        async with ws_client(server.url) as ws:
            b = FakeBrowser(ws)
            await b.hello()
            await b.until("acquireMedia")
            assert len(_core_tasks()) == 1
            closing = asyncio.ensure_future(server.close())
            assert await expect_close(ws) == 1001
            await closing
        assert not _core_tasks()
        gc.collect()
        assert coremode.alive() == 0

    run(body())
