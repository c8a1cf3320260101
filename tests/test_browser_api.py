"""rtcprobe.js end to end: Twilio's runPreflight API in a real headless Chromium, against the real
server running the core (core mode), through the real coturn.

What a web app sees: the events in order, a completed report with the documented keys and units,
stop() at every step answered by ``failed`` 99000 and the partial report within a second, each
bad-token code, and the server going away mid-test.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_harness import (
    PROGRESS,
    SECRET,
    ServerThread,
    browser,
    context,
    in_step_order,
    run_preflight,
    serving,
    token,
)
from rtcprobe.core import PreflightReport

from rtcprobe.server.coturn import CoturnServer
from rtcprobe.server.web import WebConfig

__all__ = ["browser", "context"]  # fixtures

pytestmark = pytest.mark.timeout(120)

DURATION = 3000  # ms of stats: three samples, enough for rates and loss


@pytest.fixture(scope="module")
def turn_server(coturn: CoturnServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """One server for the module, handing out coturn over UDP and TCP, keeping a reports file."""
    reports = tmp_path_factory.mktemp("reports") / "reports.jsonl"
    with serving(turn_urls=(coturn.udp_url, coturn.tcp_url), turn_secret=coturn.secret,
                 reports=str(reports)) as server:
        yield server


@pytest.fixture
def page(context: Any) -> Any:
    return context.new_page()


def _progress(result: dict[str, Any]) -> list[str]:
    return [e[1] for e in result["events"] if e[0] == "progress"]


def _check_timing(t: dict[str, Any]) -> None:
    assert set(t) == {"start", "end", "duration"}
    assert math.isclose(t["end"] - t["start"], t["duration"], abs_tol=0.01)
    assert t["duration"] >= 0


def _check_candidate(c: dict[str, Any]) -> None:
    assert set(c) == {"transportId", "candidateType", "port", "address", "priority", "protocol", "url",
                      "relayProtocol"}
    assert c["candidateType"] in ("host", "srflx", "prflx", "relay")
    assert c["protocol"] in ("udp", "tcp")
    assert 0 <= c["port"] <= 65535


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_preflight_completes_with_events_in_order_and_the_documented_report(
        turn_server: ServerThread, page: Any, transport: str) -> None:
    before = time.time() * 1000
    result = run_preflight(page, turn_server, token(), {"duration": DURATION, "transport": transport})
    assert "error" not in result, result.get("error")
    report = result["report"]

    # Events: every progress step once, in Twilio's order, then the samples, then completed last.
    assert in_step_order(_progress(result), complete=True), _progress(result)
    kinds = [e[0] for e in result["events"]]
    assert kinds[-1] == "completed" and kinds.count("completed") == 1
    samples = [e for e in result["events"] if e[0] == "sample"]
    assert [s[1] for s in samples] == [1, 2, 3] and all(s[2] == 3 for s in samples)
    assert kinds.index("sample") > kinds.index("progress") + len(PROGRESS) - 1
    assert result["sameReport"] is True  # preflightTest.report is the report completed carried

    # The report: Twilio's keys and units, plus rtcprobe's extensions.
    assert {"testTiming", "networkTiming", "stats", "iceCandidateStats", "selectedIceCandidatePairStats",
            "progressEvents", "networkQuality", "bitrate", "samples", "run"} <= set(report)
    assert "error" not in report
    _check_timing(report["testTiming"])
    assert abs(report["testTiming"]["start"] - before) < 5000  # epoch ms of this browser's clock
    assert DURATION <= report["testTiming"]["duration"] < DURATION + 5000
    assert set(report["networkTiming"]) == {"connect", "media", "ice", "dtls", "peerConnection"}
    for timing in report["networkTiming"].values():
        _check_timing(timing)
    assert [e["name"] for e in report["progressEvents"]] == _progress(result)
    durations = [e["duration"] for e in report["progressEvents"]]
    assert durations == sorted(durations) and durations[-1] < 5000  # ms since the start
    stats = report["stats"]
    for name in ("jitter", "rtt", "packetLoss"):
        assert set(stats[name]) == {"min", "max", "average"}
        assert stats[name]["min"] <= stats[name]["average"] <= stats[name]["max"]
    assert 0 <= stats["jitter"]["max"] < 0.1  # seconds
    assert 0 <= stats["rtt"]["max"] < 200  # ms, on loopback
    assert 0 <= stats["packetLoss"]["max"] <= 100  # percent
    assert len(report["samples"]) == 3
    assert report["bitrate"]["incoming"]["average"] > 50  # kbps: media flowed
    assert 0 <= report["networkQuality"]["level"] <= 5
    assert result["level"] == report["networkQuality"]["level"]  # preflightTest.networkQualityLevel
    assert report["run"]["driver"] == "browser"

    # Twilio's topology: the receiver selected the relay-only sender's relay candidate (the
    # sender's only candidates are relays over the transport asked for). Chromium names the relay
    # protocol of some of its local relay candidates only; where it does, it is that transport.
    for c in report["iceCandidateStats"]:
        _check_candidate(c)
    pair = report["selectedIceCandidatePairStats"]
    assert pair["remoteCandidate"]["candidateType"] == "relay"
    assert all(c["relayProtocol"] in (None, transport) for c in report["iceCandidateStats"])


def test_the_operator_gets_the_browser_report_byte_for_byte(turn_server: ServerThread, page: Any) -> None:
    """The report the browser receives is the core's, and the one the operator's log keeps."""
    reports = Path(turn_server.server.config.reports or "")
    before = reports.read_text().count("\n") if reports.exists() else 0
    result = run_preflight(page, turn_server, token("operator-check"), {"duration": 1000})
    assert "error" not in result
    lines = reports.read_text().splitlines()
    assert len(lines) == before + 1
    stored = json.loads(lines[-1])
    assert stored["identity"] == "operator-check"
    # Equal as JSON values (a browser writes 1.0 as 1), and the same canonical report bytes.
    assert stored["report"] == result["report"]
    canonical = PreflightReport.from_dict(stored["report"]).to_json()
    assert PreflightReport.from_dict(result["report"]).to_json() == canonical
    metrics = turn_server.call(_get(turn_server.http + "metrics"))
    assert 'rtcprobe_preflights_total{code="",outcome="completed"}' in metrics


async def _get(url: str) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return await r.text()


STOP_POINTS = ["start", *PROGRESS, "sample"]


@pytest.mark.parametrize("stop_at", STOP_POINTS)
def test_stop_at_every_step_fails_99000_with_the_partial_report_within_a_second(
        turn_server: ServerThread, page: Any, stop_at: str) -> None:
    result = run_preflight(page, turn_server, token(), {"duration": DURATION}, stop_at=stop_at)
    error, report = result["error"], result["report"]
    assert error == {"code": 99000, "name": "PreflightStoppedError", "isError": True,
                     "message": "The preflight test was stopped before it completed"}
    assert result["endedAt"] - result["stoppedAt"] < 1000
    assert report["error"]["code"] == 99000
    # The core's partial report: the steps reached before the stop, no stats, no candidates.
    names = [e["name"] for e in report["progressEvents"]]
    assert in_step_order(names), names
    if stop_at in PROGRESS:
        assert stop_at in names
    if stop_at == "sample":
        assert in_step_order(names, complete=True) and report["samples"]
    assert report["stats"] is None and report["iceCandidateStats"] == []
    assert report["run"]["driver"] == "browser"  # built by the core, not by the page
    # Nothing after the stop.
    assert [e[0] for e in result["events"]][-1] == "failed"


BAD_TOKENS: dict[int, Callable[[], str]] = {
    20101: lambda: "not-a-jwt",
    20103: lambda: token(issuer="someone-else"),
    20104: lambda: token(now=time.time() - 7200, ttl=3600),
    20105: lambda: token(not_before=time.time() + 3600),
    20107: lambda: token(secret="another-secret-0123456789abcdef0123456789"),
}
NAMES = {20101: "AccessTokenInvalidError", 20103: "AccessTokenIssuerInvalidError",
         20104: "AccessTokenExpiredError", 20105: "AccessTokenNotYetValidError",
         20107: "AccessTokenSignatureInvalidError"}


@pytest.mark.parametrize("code", sorted(BAD_TOKENS))
def test_each_bad_token_fails_with_its_code_and_a_partial_report(turn_server: ServerThread, page: Any,
                                                                 code: int) -> None:
    result = run_preflight(page, turn_server, BAD_TOKENS[code](), {"duration": DURATION})
    assert result["error"]["code"] == code
    assert result["error"]["name"] == NAMES[code]
    report = result["report"]
    assert report["error"]["code"] == code
    assert report["progressEvents"] == []  # refused before media was even asked for
    assert report["run"]["driver"] == "browser"
    assert result["endedAt"] - result["t0"] < 3000


def test_the_server_shutting_down_mid_test_fails_53001(coturn: CoturnServer, page: Any) -> None:
    with serving(turn_urls=(coturn.udp_url,), turn_secret=coturn.secret) as server:
        page.goto(server.http + "health")
        handle = page.evaluate_handle(
            """async ([token]) => {
              const { runPreflight } = await import('/rtcprobe.js');
              const test = runPreflight(token, { duration: 5000 });
              const seen = [];
              window.outcome = new Promise((resolve) => {
                test.on('progress', (name) => seen.push(name));
                test.on('completed', () => resolve({ completed: true }));
                test.on('failed', (e, report) => resolve({ code: e.code, name: e.name, message: e.message,
                                                           report, seen }));
              });
              await new Promise((r) => test.on('sampleRecorded', r));
              return true;
            }""", [token()])
        assert handle.json_value() is True
        server.close()  # every socket: 1001 going away
        outcome = page.evaluate("window.outcome")
    assert outcome["code"] == 53001
    assert outcome["name"] == "SignalingConnectionDisconnectedError"
    assert "1001" in outcome["message"]
    # The one report the page builds itself: minimal, with the progress it had seen.
    report = outcome["report"]
    assert [e["name"] for e in report["progressEvents"]] == outcome["seen"]
    assert in_step_order(outcome["seen"], complete=True), outcome["seen"]
    assert report["stats"] is None and report["error"]["code"] == 53001


def test_the_server_process_killed_mid_test_fails_53001(page: Any) -> None:
    with subprocess.Popen([sys.executable, "-m", "rtcprobe", "serve", "--port", "0", "--secret", SECRET],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}) as proc:
        try:
            assert proc.stdout is not None
            url = next(line.split(None, 1)[1].strip() for line in proc.stdout if line.startswith("url:"))
            page.goto(url.replace("ws://", "http://").removesuffix("signaling") + "health")
            page.evaluate(
                """async ([token]) => {
                  const { runPreflight } = await import('/rtcprobe.js');
                  const test = runPreflight(token, { duration: 5000 });
                  window.outcome = new Promise((resolve) => {
                    test.on('completed', () => resolve({ completed: true }));
                    test.on('failed', (e, report) => resolve({ code: e.code, report }));
                  });
                  await new Promise((r) => test.on('progress', (name) => name === 'mediaStarted' && r()));
                }""", [token()])
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            outcome = page.evaluate("window.outcome")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert outcome["code"] == 53001
    assert outcome["report"]["error"]["code"] == 53001


def test_a_page_of_another_origin_is_refused_unless_allowed(page: Any) -> None:
    """The Origin allowlist: a page elsewhere cannot use the server (53000, refused before the
    upgrade) until the operator allows its origin."""

    def run_from(other: ServerThread, server: ServerThread) -> dict[str, Any]:
        page.goto(other.http + "health")  # a document of `other`'s origin
        outcome: dict[str, Any] = page.evaluate(
            """async ([base, token]) => {
              const { runPreflight } = await import(base + 'rtcprobe.js');
              return await new Promise((resolve) => {
                const test = runPreflight(token, { duration: 1000 });
                test.on('completed', () => resolve({ completed: true }));
                test.on('failed', (e) => resolve({ code: e.code, message: e.message }));
              });
            }""", [server.http, token()])
        return outcome

    with serving() as other, serving() as server:
        refused = run_from(other, server)
    assert refused["code"] == 53000
    assert "origin" in refused["message"]
    with serving() as other, serving(web=WebConfig(allow_origins=(other.http.rstrip("/"),))) as server:
        assert run_from(other, server) == {"completed": True}
