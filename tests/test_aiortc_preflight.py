"""End-to-end preflights over real aiortc peers and the real (media-free) signaling server, on
loopback only, in Twilio Video's topology: the client's two peer connections connect to each
other; the server checks the token, hands out ICE servers and takes the report.

Most runs here hand out no TURN (``turn_urls=()``: host candidates, the no-coturn path); the
runs through a real coturn are in test_turn_preflight.py. Every test checks that nothing leaks:
no asyncio task outlives the test, no file descriptor stays open, and no aiortc peer connection
is left unclosed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiortc import RTCPeerConnection
from rtcprobe.core.config import MediaDemand, VideoSpec
from rtcprobe.core.errors import ConfigError, PreflightError
from rtcprobe.core.observations import PROGRESS_NAMES
from rtcprobe.core.report import PreflightReport
from rtcprobe.drivers.aiortc.driver import REPORT_TIMEOUT

import rtcprobe
from rtcprobe.live import PreflightTest, run_preflight
from rtcprobe.server import SignalingServer
from rtcprobe.server.coturn import CoturnServer
from rtcprobe.server.tokens import mint_token

pytestmark = pytest.mark.timeout(90)

SECRET = "preflight-test-secret-0123456789abcdef0123"
SMALL_VIDEO = MediaDemand(video=VideoSpec(320, 240, 30))  # keeps the 2-core machine's CPU for others


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _live_peer_connections() -> list[RTCPeerConnection]:
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, RTCPeerConnection) and o.connectionState != "closed"]


class Leaks:
    """What one run left behind: tasks still pending at its end, peer connections not closed,
    file descriptors not closed once the loop is gone."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[Any]] = []
        self.peer_connections: list[RTCPeerConnection] = []
        self.fds: set[str] = set()

    def assert_none(self) -> None:
        assert not self.tasks, f"tasks left running: {self.tasks}"
        assert not self.peer_connections, f"peer connections not closed: {self.peer_connections}"
        assert not self.fds, f"file descriptors left open: {sorted(self.fds)}"


def run_checked(main: Callable[[], Awaitable[Any]]) -> tuple[Any, Leaks]:
    """asyncio.run(main()) and record what the run left behind (see :class:`Leaks`)."""
    leaks = Leaks()
    fds_before = _open_fds()

    async def wrapper() -> Any:
        try:
            return await main()
        finally:
            # aiortc finishes some internal tasks a few loop turns after close() returns (a sender's
            # RTCP loop noticing its transport is gone): wait for those, then what remains leaked.
            for _ in range(50):
                if asyncio.all_tasks() == {asyncio.current_task()}:
                    break
                await asyncio.sleep(0.02)
            leaks.tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    result = asyncio.run(wrapper())
    leaks.peer_connections = _live_peer_connections()
    gc.collect()
    leaks.fds = _open_fds() - fds_before
    return result, leaks


class Recorder:
    """Every callback of one PreflightTest, in order."""

    def __init__(self, test: PreflightTest) -> None:
        self.log: list[tuple[str, Any]] = []
        self.levels: list[int] = []
        test.on("progress", lambda name: self.log.append(("progress", name)))
        test.on("sample", lambda i, n, level: self.log.append(("sample", (i, n))))
        test.on("networkQualityLevelChanged", lambda level, stats: self.levels.append(level))
        test.on("completed", lambda report: self.log.append(("completed", report)))
        test.on("failed", lambda error, report: self.log.append(("failed", (error, report))))

    @property
    def progress(self) -> list[str]:
        return [v for k, v in self.log if k == "progress"]

    @property
    def terminal(self) -> list[str]:
        return [k for k, _ in self.log if k in ("completed", "failed")]


def _assert_partial(report: PreflightReport) -> None:
    d = report.to_dict()
    assert d["stats"] is None
    assert d["iceCandidateStats"] == []
    assert d["selectedIceCandidatePairStats"] is None
    assert d["testTiming"]["duration"] >= 0


# --- a complete run ----------------------------------------------------------------------------

NO_TURN: dict[str, Any] = {"turn_urls": ()}  # the embedded server hands out no TURN: host candidates


def test_embedded_preflight_without_turn_completes_with_every_step_and_sane_stats() -> None:
    async def main() -> tuple[PreflightReport, Recorder, int | None, bool | None]:
        test = run_preflight(duration=2.0, media=SMALL_VIDEO, **NO_TURN)
        rec = Recorder(test)
        report = await test.wait()
        return report, rec, test.network_quality_level, test.turn_tested

    (report, rec, level, turn_tested), leaks = run_checked(main)
    d = report.to_dict()

    # All seven progress events, each once, in the documented order, then completed.
    assert rec.progress == list(PROGRESS_NAMES)
    assert [e["name"] for e in d["progressEvents"]] == list(PROGRESS_NAMES)
    durations = [e["duration"] for e in d["progressEvents"]]
    assert durations == sorted(durations) and durations[0] >= 0
    assert [v for k, v in rec.log if k == "sample"] == [(1, 2), (2, 2)]
    assert rec.terminal == ["completed"] and rec.log[-1][1] is report

    # Timers: all five stopped, each inside the test.
    start, end = d["testTiming"]["start"], d["testTiming"]["end"]
    assert set(d["networkTiming"]) == {"connect", "media", "dtls", "ice", "peerConnection"}
    for timer in d["networkTiming"].values():
        assert start <= timer["start"] <= timer["end"] <= end

    # Stats in Twilio Video's units: jitter seconds, rtt ms, packetLoss percent.
    stats = d["stats"]
    assert stats["jitter"] is not None and 0 <= stats["jitter"]["max"] < 0.1  # seconds, loopback
    assert stats["rtt"] is None or 0 < stats["rtt"]["max"] < 100  # ms, loopback (once an RR echoed an SR)
    assert stats["packetLoss"] == {"min": 0.0, "max": 0.0, "average": 0.0}
    assert d["bitrate"]["outgoing"]["average"] > 0 and d["bitrate"]["incoming"]["average"] > 0

    # Candidates, as Twilio reports them: the receiving peer connection's local and remote ones,
    # here host candidates on loopback only (no TURN handed out: nothing else is ever a target).
    cands = d["iceCandidateStats"]
    assert {c["transportId"] for c in cands} == {"subscriber"}
    assert all(c["candidateType"] == "host" and c["address"] == "127.0.0.1" for c in cands)
    assert all(c["protocol"] == "udp" and 0 < c["port"] < 65536 and c["priority"] > 0 for c in cands)
    assert all(c["url"] is None and c["relayProtocol"] is None for c in cands)
    pair = d["selectedIceCandidatePairStats"]
    assert pair is not None
    assert pair["localCandidate"] in cands and pair["remoteCandidate"] in cands
    assert pair["localCandidate"]["port"] != pair["remoteCandidate"]["port"]  # two peers, two ends
    assert turn_tested is False

    # Network quality: the best level on an unimpaired loopback.
    assert level == 5 and d["networkQuality"]["level"] == 5 and rec.levels[-1] == 5
    assert d["run"]["driver"] == "aiortc" and d["run"]["version"] == rtcprobe.__version__
    assert len(d["samples"]) == 2 and "error" not in d
    leaks.assert_none()


async def _settled(server: SignalingServer) -> None:
    """Until the server has closed the client's session (it does once it read the bye)."""
    for _ in range(100):
        if server.stats.sessions == 0 and server.stats.connections == 0:
            return
        await asyncio.sleep(0.02)


def test_external_server_takes_the_report_before_bye_and_releases_everything(tmp_path: Path) -> None:
    reports = tmp_path / "reports.jsonl"

    async def main() -> tuple[PreflightReport, Any, bool | None]:
        async with SignalingServer(secret=SECRET, reports=str(reports)) as server:
            token = mint_token(SECRET, "carol", now=time.time())
            test = run_preflight(token, url=server.url, duration=1.0, media=SMALL_VIDEO)
            report = await test.wait()
            await _settled(server)
            return report, server.stats, test.report_stored

    (report, server_stats, stored), leaks = run_checked(main)
    assert report.ok and [e.name for e in report.progress_events] == list(PROGRESS_NAMES)
    assert len(report.samples) == 1 and report.samples[0].packet_loss is None  # the first is skipped
    assert server_stats.sessions == 0 and server_stats.total_sessions == 1 and server_stats.reports == 1
    assert stored is True
    # The operator's copy is the client's canonical report.
    line = json.loads(reports.read_text())
    assert line["identity"] == "carol"
    assert line["report"] == report.to_dict()
    leaks.assert_none()


def test_audio_only_preflight_completes_on_audio() -> None:
    async def main() -> PreflightReport:
        return await run_preflight(duration=1.0, media=MediaDemand(video=None), **NO_TURN).wait()

    report, leaks = run_checked(main)
    assert report.ok and report.progress_events[-1].name == "mediaStarted"
    assert report.samples[0].jitter is not None
    leaks.assert_none()


def test_blocking_api_from_the_package_root() -> None:
    fds_before = _open_fds()
    report = rtcprobe.preflight(duration=1.0, media=SMALL_VIDEO, **NO_TURN)
    assert isinstance(report, rtcprobe.PreflightReport) and report.ok
    assert [e.name for e in report.progress_events] == list(PROGRESS_NAMES)
    with pytest.raises(rtcprobe.PreflightError) as info:
        rtcprobe.preflight("t", url=f"ws://127.0.0.1:{_unused_port()}", duration=1.0)
    assert info.value.code == 53000
    assert rtcprobe.run_preflight is run_preflight and rtcprobe.PreflightTest is PreflightTest
    assert _live_peer_connections() == []
    gc.collect()
    assert _open_fds() - fds_before == set()


# --- failures ----------------------------------------------------------------------------------


def _bad_tokens(now: float) -> dict[int, str]:
    return {
        20101: "not-a-jwt",
        20103: mint_token(SECRET, "dave", now=now, issuer="someone-else"),
        20104: mint_token(SECRET, "dave", now=now - 7200, ttl=60),
        20105: mint_token(SECRET, "dave", now=now, not_before=now + 3600),
        20107: mint_token("a-different-secret-0123456789abcdef012345", "dave", now=now),
    }


def test_bad_tokens_fail_with_their_code_and_a_partial_report() -> None:
    async def main() -> tuple[dict[int, tuple[PreflightError, list[str], list[tuple[str, Any]]]], Any]:
        out = {}
        async with SignalingServer(secret=SECRET) as server:
            for code, token in _bad_tokens(time.time()).items():
                test = run_preflight(token, url=server.url, duration=1.0, media=SMALL_VIDEO)
                rec = Recorder(test)
                with pytest.raises(PreflightError) as info:
                    await test.wait()
                out[code] = (info.value, rec.progress, rec.log)
            await _settled(server)
            return out, server.stats

    (results, server_stats), leaks = run_checked(main)
    assert sorted(results) == [20101, 20103, 20104, 20105, 20107]
    for code, (error, progress, log) in results.items():
        assert error.code == code, (code, error)
        assert progress == ["mediaAcquired"]
        report = error.report
        assert isinstance(report, PreflightReport) and report.error is not None and report.error.code == code
        _assert_partial(report)
        assert "end" not in report.to_dict()["networkTiming"]["connect"]  # the step never finished
        assert log[-1][0] == "failed" and log[-1][1][1] is report
    # A refused token opens no session, so no report is owed (the server closed the socket).
    assert server_stats.total_sessions == 0 and server_stats.reports == 0 and server_stats.connections == 0
    leaks.assert_none()


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_server_not_listening_fails_with_53000_before_any_timeout() -> None:
    async def main() -> PreflightError:
        test = run_preflight("any-token", url=f"ws://127.0.0.1:{_unused_port()}", duration=1.0)
        with pytest.raises(PreflightError) as info:
            await test.wait()
        return info.value

    error, leaks = run_checked(main)
    # 53000 (refused), not 53002: the step's timeout (duration + 10 s) never came into play.
    assert error.code == 53000 and "could not connect" in str(error)
    assert isinstance(error.report, PreflightReport)
    _assert_partial(error.report)
    assert error.report.test_timing.duration is not None and error.report.test_timing.duration < 11_000
    leaks.assert_none()


Script = Callable[[web.WebSocketResponse, list[Any]], Awaitable[None]]


@contextlib.asynccontextmanager
async def fake_server(script: Script) -> AsyncIterator[tuple[str, list[Any]]]:
    """A WebSocket endpoint on loopback that runs ``script(ws, seen)`` on each connection; yields
    its URL and ``seen``, where scripts put what the client sent."""
    seen: list[Any] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await script(ws, seen)
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/signaling", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen  # no path: the client adds /signaling
    finally:
        await runner.cleanup()


ICED = {"type": "iced", "ice_servers": [], "ttl": 60, "version": 2}


async def _read_json(ws: web.WebSocketResponse, seen: list[Any]) -> Any:
    msg = await ws.receive()
    value = json.loads(msg.data) if msg.type is web.WSMsgType.TEXT else None
    seen.append(value)
    return value


async def _fails_against(script: Script) -> PreflightError:
    async with fake_server(script) as (url, _):
        with pytest.raises(PreflightError) as info:
            await run_preflight("t", url=url, duration=1.0, media=SMALL_VIDEO).wait()
    return info.value


async def _close_at_once(ws: web.WebSocketResponse, seen: list[Any]) -> None:
    await _read_json(ws, seen)


async def _close_after_iced(ws: web.WebSocketResponse, seen: list[Any]) -> None:
    await _read_json(ws, seen)
    await ws.send_json(ICED)


async def _error_after_iced(ws: web.WebSocketResponse, seen: list[Any]) -> None:
    await _read_json(ws, seen)
    await ws.send_json(ICED)
    await ws.send_json({"type": "error", "code": 53405, "message": "no media for you"})


async def _malformed_iced(ws: web.WebSocketResponse, seen: list[Any]) -> None:
    await _read_json(ws, seen)
    await ws.send_json({**ICED, "ice_servers": [{"urls": 5}]})


async def _version_1_server(ws: web.WebSocketResponse, seen: list[Any]) -> None:
    await _read_json(ws, seen)
    await ws.send_json({"type": "iced", "ice_servers": [], "ttl": 60})  # v1 sent no version


@pytest.mark.parametrize(("script", "code", "text", "steps"), [
    (_close_at_once, 53000, "closed before", ["mediaAcquired"]),
    (_malformed_iced, 53000, "malformed reply", ["mediaAcquired"]),
    (_version_1_server, 53000, "the server speaks signaling protocol version 1", ["mediaAcquired"]),
    (_close_after_iced, 53001, "closed the connection", ["mediaAcquired", "connected"]),
    (_error_after_iced, 53405, "no media for you", ["mediaAcquired", "connected"]),
], ids=["closed-before-iced", "malformed-iced", "v1-server", "closed-after-iced", "error-after-iced"])
def test_signaling_failures_map_to_their_codes(script: Any, code: int, text: str, steps: list[str]) -> None:
    error, leaks = run_checked(lambda: _fails_against(script))
    assert error.code == code and text in str(error)
    assert isinstance(error.report, PreflightReport)
    # The socket's end ends the test at once: at most ICE got through on the way (a few ms).
    assert [e.name for e in error.report.progress_events][: len(steps)] == steps
    assert error.report.test_timing.duration is not None and error.report.test_timing.duration < 5_000
    _assert_partial(error.report)
    leaks.assert_none()


async def _never_answers_the_report(ws: web.WebSocketResponse, seen: list[Any]) -> None:
    await _read_json(ws, seen)
    await ws.send_json(ICED)
    await _read_json(ws, seen)  # the report: never answered
    await _read_json(ws, seen)  # bye, once the client gave up waiting
    await ws.receive()  # the client's close


async def _answers_the_report_with_an_error(ws: web.WebSocketResponse, seen: list[Any]) -> None:
    await _read_json(ws, seen)
    await ws.send_json(ICED)
    await _read_json(ws, seen)
    await ws.send_json({"type": "error", "code": 53000, "message": "that is no report"})


@pytest.mark.parametrize("script", [_never_answers_the_report, _answers_the_report_with_an_error],
                         ids=["silent", "error"])
def test_a_server_that_does_not_take_the_report_costs_the_client_at_most_the_bound(script: Script) -> None:
    async def main() -> tuple[PreflightReport, list[Any], float, bool | None]:
        loop = asyncio.get_running_loop()
        async with fake_server(script) as (url, seen):
            test = run_preflight("t", url=url, duration=1.0, media=SMALL_VIDEO)
            done: list[float] = []
            test.on("event", lambda e: done.append(loop.time()) if type(e).__name__ == "Completed" else None)
            report = await test.wait()
            return report, list(seen), loop.time() - done[0], test.report_stored

    (report, seen, closing, stored), leaks = run_checked(main)
    assert report.ok  # the test's outcome is the test's, whatever the server does with the report
    assert [m["type"] for m in seen[:2]] == ["ice", "report"]
    if script is _never_answers_the_report:
        assert seen[2] == {"type": "bye"}  # after the bounded wait, the client still says goodbye
    assert seen[1]["report"] == report.to_dict()
    assert stored is None
    # From the result to everything closed: the report's bound, with room for the close.
    assert closing < REPORT_TIMEOUT + 1.0, closing
    leaks.assert_none()


# --- stop() in every step ----------------------------------------------------------------------

# (the event that triggers the stop, its argument) -> the last progress event the report keeps.
STOP_POINTS = [
    ("progress", "mediaAcquired"),  # signaling connect in flight
    ("progress", "connected"),  # TURN allocations and the local offer/answer in flight
    ("progress", "iceConnected"),  # DTLS handshake in flight, held candidates being released
    ("progress", "dtlsConnected"),
    ("progress", "peerConnectionConnected"),
    ("progress", "mediaSubscribed"),  # waiting for the first frame
    ("progress", "mediaStarted"),  # stats phase just begun
    ("sample", 1),  # the middle of the stats phase
]
STOP_IDS = ["mediaAcquired", "connected", "iceConnected", "dtlsConnected", "peerConnectionConnected",
            "mediaSubscribed", "mediaStarted", "sample1"]
LONG = 20.0  # s: a stop that waited for the step (or its duration + 10 s timeout) would show


@pytest.mark.turn
@pytest.mark.parametrize(("event", "at"), STOP_POINTS, ids=STOP_IDS)
def test_stop_in_every_step_fails_promptly_and_the_partial_report_reaches_the_server(
    event: str, at: object, coturn: CoturnServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    reports = tmp_path / "reports.jsonl"

    async def main() -> tuple[PreflightError, Recorder, float, float, Any]:
        loop = asyncio.get_running_loop()
        async with SignalingServer(secret=SECRET, reports=str(reports), turn_urls=(coturn.udp_url,),
                                   turn_secret=coturn.secret) as server:
            token = mint_token(SECRET, "erin", now=time.time())
            test = run_preflight(token, url=server.url, duration=LONG, media=SMALL_VIDEO)
            rec = Recorder(test)
            stopped_at: list[float] = []

            def maybe_stop(*args: Any) -> None:
                if args[0] == at and not stopped_at:
                    stopped_at.append(loop.time())
                    loop.call_soon(test.stop)  # one loop turn later: the next step is under way

            test.on(event, maybe_stop)
            t0 = loop.time()
            with pytest.raises(PreflightError) as info:
                await test.wait()
            ended = loop.time()
            await _settled(server)
            return info.value, rec, stopped_at[0] - t0, ended - stopped_at[0], server.stats

    (error, rec, until_stop, stop_latency, server_stats), leaks = run_checked(main)
    print(f"stop at {at}: {stop_latency * 1000:.0f} ms from stop() to everything closed")
    assert error.code == 99000
    report = error.report
    assert isinstance(report, PreflightReport)
    _assert_partial(report)
    names = [e.name for e in report.progress_events]
    assert names == rec.progress and names[0] == "mediaAcquired"
    if event == "progress":
        assert at in names and names == list(PROGRESS_NAMES[: len(names)])
    else:
        assert names == list(PROGRESS_NAMES) and 1 <= len(report.samples) < LONG / 2
    assert rec.terminal == ["failed"]
    # Prompt: nowhere near the step's length (LONG) or its timeout (LONG + 10 s); the report's
    # trip to the server runs beside the close and is bounded.
    assert stop_latency < 2.5 and report.test_timing.duration is not None
    assert report.test_timing.duration < (until_stop + LONG / 4) * 1000
    # Once the server handed out its ICE servers it is owed the report, partial as it is.
    if "connected" in names:
        assert server_stats.reports == 1
        line = json.loads(reports.read_text())
        assert line["report"] == report.to_dict() and line["report"]["error"]["code"] == 99000
    assert server_stats.sessions == 0
    leaks.assert_none()
    # aiortc's connect task, resuming after close(), raises InvalidStateError: the driver adopts
    # it and retrieves that, so asyncio never logs it (once the task is collected).
    gc.collect()
    unretrieved = [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()]
    assert not unretrieved, unretrieved


def test_stop_before_the_loop_runs_and_cancelling_wait_still_tear_down() -> None:
    async def main() -> tuple[PreflightError, bool]:
        test = run_preflight(duration=LONG)
        test.stop()  # before the test even started: it fails as soon as it starts
        with pytest.raises(PreflightError) as info:
            await test.wait()

        other = run_preflight(duration=LONG, media=SMALL_VIDEO)
        started = asyncio.Event()
        other.on("progress", lambda name: started.set() if name == "mediaSubscribed" else None)
        waiter = asyncio.ensure_future(other.wait())
        await started.wait()
        waiter.cancel()  # Ctrl-C in a script: the waiter is cancelled
        with pytest.raises(asyncio.CancelledError):
            await waiter
        return info.value, other.done

    (error, other_done), leaks = run_checked(main)
    assert error.code == 99000 and [e.name for e in error.report.progress_events] in ([], ["mediaAcquired"])  # type: ignore[union-attr]
    assert other_done
    leaks.assert_none()


# --- misuse raises at once ---------------------------------------------------------------------


def test_misuse_raises_config_error_at_once() -> None:
    async def main() -> list[str]:
        errors = []
        for kwargs in (
            {"token": "t"},  # a token without a url
            {"url": "ws://127.0.0.1:1/signaling"},  # a url without a token
            {"url": "ftp://127.0.0.1/", "token": "t"},
            {"url": "ws://127.0.0.1:1", "token": "t", "turn_urls": ["turn:127.0.0.1:3478"], "turn_secret": "s"},
            {"duration": 0},
            {"region": "Not A Region"},
            {"media": MediaDemand(video=VideoSpec(641, 480, 30))},
        ):
            with pytest.raises(ConfigError) as info:
                run_preflight(**kwargs)  # type: ignore[arg-type]
            errors.append(str(info.value))
        return errors

    errors, leaks = run_checked(main)
    assert len(errors) == 7 and all(e and "\n" not in e for e in errors)
    with pytest.raises(RuntimeError):
        run_preflight()  # outside a running loop
    leaks.assert_none()
