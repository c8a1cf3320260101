"""End-to-end preflights over real aiortc peers and the real signaling server, on loopback only.

Every test checks that nothing leaks: no asyncio task outlives the test, no file descriptor stays
open, and no aiortc peer connection (client or server side) is left unclosed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from rtcprobe.core.config import MediaDemand, VideoSpec
from rtcprobe.core.errors import ConfigError, PreflightError
from rtcprobe.core.observations import PROGRESS_NAMES
from rtcprobe.core.report import PreflightReport
from rtcprobe.drivers.aiortc import teardown

import rtcprobe
from rtcprobe.live import PreflightTest, run_preflight
from rtcprobe.server import SignalingServer
from rtcprobe.server.tokens import mint_token

pytestmark = pytest.mark.timeout(90)

SECRET = "preflight-test-secret-0123456789abcdef0123"
SMALL_VIDEO = MediaDemand(video=VideoSpec(320, 240, 30))  # keeps the 2-core machine's CPU for others


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _live_peer_connections() -> list[RTCPeerConnection]:
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, RTCPeerConnection) and o.connectionState != "closed"]


class ServerLeak(AssertionError):
    """Only the signaling server's side (the answerer) left something behind."""


def _server_side(task: asyncio.Task[Any]) -> bool:
    """The client is always the offerer (ICE controlling) and never uses MediaRelay: anything left
    by the answering side, or a relay, belongs to the server."""
    owner: Any = teardown.task_owner(task)
    if type(owner).__name__ == "MediaRelay":
        return True
    if type(owner).__name__ == "Connection":  # aioice
        return not owner.ice_controlling
    if isinstance(owner, RTCPeerConnection):
        return owner.localDescription is not None and owner.localDescription.type == "answer"
    if isinstance(owner, RTCRtpSender | RTCRtpReceiver):
        return bool(owner.transport.transport.role == "controlled")
    return False


class Leaks:
    """What one run left behind: tasks still pending at its end, peer connections not closed,
    file descriptors not closed once the loop is gone."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[Any]] = []
        self.server_tasks: list[asyncio.Task[Any]] = []
        self.peer_connections: list[RTCPeerConnection] = []
        self.fds: set[str] = set()

    def assert_none(self) -> None:
        """Nothing left on either side: client leaks first, then the server's (ServerLeak)."""
        assert not self.tasks, f"tasks left running: {self.tasks}"
        assert not self.peer_connections, f"peer connections not closed: {self.peer_connections}"
        assert not self.fds, f"file descriptors left open: {sorted(self.fds)}"
        if self.server_tasks:
            raise ServerLeak(f"the signaling server left tasks running: {self.server_tasks}")


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
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    (leaks.server_tasks if _server_side(task) else leaks.tasks).append(task)

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


def test_embedded_preflight_completes_with_every_step_and_sane_stats() -> None:
    async def main() -> tuple[PreflightReport, Recorder, int | None]:
        test = run_preflight(duration=2.0, media=SMALL_VIDEO)
        rec = Recorder(test)
        report = await test.wait()
        return report, rec, test.network_quality_level

    (report, rec, level), leaks = run_checked(main)
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
    assert stats["rtt"] is not None and 0 < stats["rtt"]["max"] < 100  # ms, loopback
    assert stats["packetLoss"] == {"min": 0.0, "max": 0.0, "average": 0.0}
    assert d["bitrate"]["outgoing"]["average"] > 0 and d["bitrate"]["incoming"]["average"] > 0

    # Candidates: host candidates on loopback for both peer connections, and a selected pair.
    cands = d["iceCandidateStats"]
    assert {c["transportId"] for c in cands} == {"publisher", "subscriber"}
    assert all(c["candidateType"] == "host" and c["address"] == "127.0.0.1" for c in cands)
    assert all(c["protocol"] == "udp" and 0 < c["port"] < 65536 and c["priority"] > 0 for c in cands)
    pair = d["selectedIceCandidatePairStats"]
    assert pair is not None
    assert pair["localCandidate"] in cands and pair["remoteCandidate"] in cands

    # Network quality: the best level on an unimpaired loopback.
    assert level == 5 and d["networkQuality"]["level"] == 5 and rec.levels[-1] == 5
    assert d["run"]["driver"] == "aiortc" and d["run"]["version"] == rtcprobe.__version__
    assert len(d["samples"]) == 2 and "error" not in d
    leaks.assert_none()


def test_external_server_with_token_completes_and_server_releases_everything() -> None:
    async def main() -> tuple[PreflightReport, Any]:
        async with SignalingServer(secret=SECRET) as server:
            token = mint_token(SECRET, "carol", now=time.time())
            report = await run_preflight(token, url=server.url, duration=1.0, media=SMALL_VIDEO).wait()
            for _ in range(100):  # the server closes its side once it has read the client's bye
                if server.stats.peer_connections == 0:
                    break
                await asyncio.sleep(0.02)
            return report, server.stats

    (report, server_stats), leaks = run_checked(main)
    assert report.ok and [e.name for e in report.progress_events] == list(PROGRESS_NAMES)
    assert len(report.samples) == 1 and report.samples[0].packet_loss is None  # the first is skipped
    assert server_stats.peer_connections == 0 and server_stats.sessions == 0 and server_stats.total_sessions == 1
    leaks.assert_none()


def test_audio_only_preflight_completes_on_audio() -> None:
    async def main() -> PreflightReport:
        return await run_preflight(duration=1.0, media=MediaDemand(video=None)).wait()

    report, leaks = run_checked(main)
    assert report.ok and report.progress_events[-1].name == "mediaStarted"
    assert report.samples[0].jitter is not None
    leaks.assert_none()


def test_blocking_api_from_the_package_root() -> None:
    fds_before = _open_fds()
    report = rtcprobe.preflight(duration=1.0, media=SMALL_VIDEO)
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
    async def main() -> dict[int, tuple[PreflightError, list[str], list[tuple[str, Any]]]]:
        out = {}
        async with SignalingServer(secret=SECRET) as server:
            for code, token in _bad_tokens(time.time()).items():
                test = run_preflight(token, url=server.url, duration=1.0, media=SMALL_VIDEO)
                rec = Recorder(test)
                with pytest.raises(PreflightError) as info:
                    await test.wait()
                out[code] = (info.value, rec.progress, rec.log)
        return out

    results, leaks = run_checked(main)
    assert sorted(results) == [20101, 20103, 20104, 20105, 20107]
    for code, (error, progress, log) in results.items():
        assert error.code == code, (code, error)
        assert progress == ["mediaAcquired"]
        report = error.report
        assert isinstance(report, PreflightReport) and report.error is not None and report.error.code == code
        _assert_partial(report)
        assert "end" not in report.to_dict()["networkTiming"]["connect"]  # the step never finished
        assert log[-1][0] == "failed" and log[-1][1][1] is report
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


@contextlib.asynccontextmanager
async def fake_server(script: Callable[[web.WebSocketResponse], Awaitable[None]]) -> AsyncIterator[str]:
    """A WebSocket endpoint on loopback that runs ``script`` on each connection; yields its URL."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await script(ws)
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/signaling", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"  # no path: the client adds /signaling
    finally:
        await runner.cleanup()


async def _fails_against(script: Callable[[web.WebSocketResponse], Awaitable[None]]) -> PreflightError:
    async with fake_server(script) as url:
        with pytest.raises(PreflightError) as info:
            await run_preflight("t", url=url, duration=1.0, media=SMALL_VIDEO).wait()
    return info.value


async def _close_at_once(ws: web.WebSocketResponse) -> None:
    await ws.receive()


async def _close_after_iced(ws: web.WebSocketResponse) -> None:
    await ws.receive()
    await ws.send_json({"type": "iced", "ice_servers": [], "ttl": 60})
    await ws.receive()  # the publisher's offer


async def _error_on_offer(ws: web.WebSocketResponse) -> None:
    await ws.receive()
    await ws.send_json({"type": "iced", "ice_servers": [], "ttl": 60})
    await ws.receive()
    await ws.send_json({"type": "error", "code": 53405, "message": "no media for you"})


async def _malformed_iced(ws: web.WebSocketResponse) -> None:
    await ws.receive()
    await ws.send_json({"type": "iced", "ice_servers": [{"urls": 5}]})


@pytest.mark.parametrize(("script", "code", "text", "steps"), [
    (_close_at_once, 53000, "closed before", ["mediaAcquired"]),
    (_malformed_iced, 53000, "malformed reply", ["mediaAcquired"]),
    (_close_after_iced, 53001, "closed the connection", ["mediaAcquired", "connected"]),
    (_error_on_offer, 53405, "no media for you", ["mediaAcquired", "connected"]),
], ids=["closed-before-iced", "malformed-iced", "closed-after-iced", "error-on-offer"])
def test_signaling_failures_map_to_their_codes(script: Any, code: int, text: str, steps: list[str]) -> None:
    error, leaks = run_checked(lambda: _fails_against(script))
    assert error.code == code and text in str(error)
    assert isinstance(error.report, PreflightReport)
    assert [e.name for e in error.report.progress_events] == steps
    _assert_partial(error.report)
    leaks.assert_none()


# --- stop() in every step ----------------------------------------------------------------------

# (the event that triggers the stop, its argument) -> the last progress event the report keeps.
STOP_POINTS = [
    ("progress", "mediaAcquired"),  # signaling connect in flight
    ("progress", "connected"),  # publisher negotiation in flight
    ("progress", "iceConnected"),  # DTLS handshake in flight, subscriber negotiation under way
    ("progress", "dtlsConnected"),
    ("progress", "peerConnectionConnected"),
    ("progress", "mediaSubscribed"),  # waiting for the first frame
    ("progress", "mediaStarted"),  # stats phase just begun
    ("sample", 1),  # the middle of the stats phase
]
STOP_IDS = ["mediaAcquired", "connected", "iceConnected", "dtlsConnected", "peerConnectionConnected",
            "mediaSubscribed", "mediaStarted", "sample1"]
LONG = 20.0  # s: a stop that waited for the step (or its duration + 10 s timeout) would show


@pytest.mark.parametrize(("event", "at"), STOP_POINTS, ids=STOP_IDS)
def test_stop_in_every_step_fails_promptly_with_the_partial_report(
    event: str, at: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)

    async def main() -> tuple[PreflightError, Recorder, float, float]:
        loop = asyncio.get_running_loop()
        test = run_preflight(duration=LONG, media=SMALL_VIDEO)
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
        return info.value, rec, stopped_at[0] - t0, loop.time() - stopped_at[0]

    (error, rec, until_stop, stop_latency), leaks = run_checked(main)
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
    # Prompt: nowhere near the step's length (LONG) or its timeout (LONG + 10 s).
    assert stop_latency < LONG / 4 and report.test_timing.duration is not None
    assert report.test_timing.duration < (until_stop + LONG / 4) * 1000
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
