"""``--driver chromium`` for real: rtcprobe.js in a real headless Chromium (Debian's ``chromium``,
Playwright's async API), the real signaling server running the core, the real coturn, and for
``rtcprobe run`` the real impairment relay.

* ``rtcprobe preflight --driver chromium``: the seven steps in order, the documented report,
  the media through TURN;
* the report the driver returns is the one the server's core built and logged, byte for byte;
* ``stop()`` at the start and during the test: ``failed`` 99000 with the partial report;
* ``rtcprobe run clean-broadband --driver chromium``: through the impairment relay, both peer
  connections relay-only (relay <-> relay selected), media both ways on the relay's counters;
* a lossy scenario's loss shows in the report.

Skipped without Chromium or Playwright (except under CI, which installs them) or coturn.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from browser_harness import PROGRESS as STEPS
from browser_harness import in_step_order
from conftest import running_in_ci
from rtcprobe.core.errors import PreflightError
from rtcprobe.core.observations import Completed, Event, Progress
from rtcprobe.core.report import PreflightReport
from rtcprobe.drivers.chromium import INSTALL_HINT, ChromiumUnavailable, check_available
from rtcprobe.drivers.sim import simulate

from rtcprobe.live import run_preflight
from rtcprobe.replay import run_replay
from rtcprobe.server import SignalingServer
from rtcprobe.server.coturn import CoturnServer
from rtcprobe.server.tokens import mint_token

pytestmark = [pytest.mark.turn, pytest.mark.slow, pytest.mark.timeout(180)]

SECRET = "chromium-driver-test-secret-0123456789abcdef"


@pytest.fixture(scope="module", autouse=True)
def chromium() -> str:
    try:
        return check_available()
    except ChromiumUnavailable as exc:
        if running_in_ci():
            pytest.fail(f"{exc} (CI is set, so browser tests must run)", pytrace=False)
        pytest.skip(INSTALL_HINT)


def rtcprobe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rtcprobe", *args], capture_output=True, text=True, timeout=150)


def key_shape(value: Any) -> Any:
    """The report's structure: keys all the way down (lists by their first element)."""
    if isinstance(value, dict):
        return {k: key_shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [key_shape(value[0])] if value else []
    return None


def test_rtcprobe_preflight_driver_chromium_completes_through_turn(coturn_binary: str, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    r = rtcprobe("preflight", "--driver", "chromium", "--duration", "3s", "--json", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "in Chromium" in r.stderr and "TURN was not tested" not in r.stderr
    # The progress reporter saw the seven steps, in Twilio's order (Chromium may see its connection
    # state before its DTLS transport's: browser_harness.in_step_order), as the page got them.
    seen = [line.split()[1] for line in r.stderr.splitlines() if line.startswith("rtcprobe: ")
            and len(line.split()) > 2 and line.split()[1] in STEPS]
    assert in_step_order(seen, complete=True), seen
    report = json.loads(r.stdout)
    assert json.loads(out.read_text()) == report
    assert "error" not in report
    assert {"testTiming", "networkTiming", "stats", "iceCandidateStats", "selectedIceCandidatePairStats",
            "progressEvents", "networkQuality", "bitrate", "samples", "run"} <= set(report)
    assert report["run"]["driver"] == "chromium"  # the embedded server's core names its client
    assert [e["name"] for e in report["progressEvents"]] == seen
    durations = [e["duration"] for e in report["progressEvents"]]
    assert durations == sorted(durations) and durations[-1] < 5000  # ms since the start
    assert set(report["networkTiming"]) == {"connect", "media", "ice", "dtls", "peerConnection"}
    assert 3000 <= report["testTiming"]["duration"] < 10_000  # ms
    stats = report["stats"]
    assert 0 <= stats["jitter"]["max"] < 0.1  # seconds, as Twilio's
    assert 0 <= stats["rtt"]["average"] < 200  # ms, on loopback
    assert stats["packetLoss"]["max"] == 0  # percent; nothing loses packets on loopback
    assert len(report["samples"]) == 3
    assert report["bitrate"]["incoming"]["average"] > 50  # kbps: media flowed
    assert 0 <= report["networkQuality"]["level"] <= 5
    # Twilio's topology: the sender relay-only through the embedded coturn.
    pair = report["selectedIceCandidatePairStats"]
    assert pair["remoteCandidate"]["candidateType"] == "relay"
    # On loopback the peer connections met on loopback only (nothing else is a target).
    assert pair["localCandidate"]["address"].startswith("127.")


def test_the_driver_returns_the_report_the_servers_core_built_and_logged(coturn: CoturnServer, tmp_path: Path) -> None:
    reports = tmp_path / "reports.jsonl"
    events: list[Event] = []
    progress: list[str] = []

    async def main() -> tuple[PreflightReport, Any]:
        async with SignalingServer(secret=SECRET, turn_urls=(coturn.udp_url,), turn_secret=coturn.secret,
                                   reports=str(reports)) as server:
            test = run_preflight(mint_token(SECRET, "chromium-test", now=time.time()), url=server.url,
                                 duration=2, driver="chromium")
            test.on("event", events.append).on("progress", progress.append)
            report = await test.wait()
            return report, (test.network_quality_level, test.progress_events, test.turn_url, test.turn_tested)

    report, (level, steps, turn_url, turn_tested) = asyncio.run(main())
    logged = json.loads(reports.read_text().splitlines()[-1])["report"]
    # Byte for byte: the canonical JSON of the driver's report is that of the logged one.
    assert report.to_json() == json.dumps(logged, sort_keys=True, indent=2, allow_nan=False)
    assert report.run is not None and report.run.driver == "browser"  # a server of its own: it knows no better
    assert in_step_order(progress, complete=True) and [e.name for e in events if isinstance(e, Progress)] == progress
    last = events[-1]
    assert isinstance(last, Completed) and last.report == report  # completed, last
    assert level == report.network_quality_level and [e.name for e in steps] == progress
    assert turn_url == coturn.udp_url and turn_tested is True


@pytest.mark.parametrize("stop_at", ["start", "iceConnected"])
def test_stop_fails_the_test_with_99000_and_the_partial_report(coturn_binary: str, stop_at: str) -> None:
    async def main() -> tuple[PreflightError, float]:
        test = run_preflight(duration=10, driver="chromium")
        stopped: list[float] = []

        def stop() -> None:
            stopped.append(time.monotonic())
            test.stop()

        if stop_at == "start":
            stop()
        else:
            test.on("progress", lambda name: stop() if name == stop_at else None)
        with pytest.raises(PreflightError) as info:
            await test.wait()
        return info.value, time.monotonic() - stopped[0]

    error, took = asyncio.run(main())
    assert error.code == 99000
    assert isinstance(error.report, PreflightReport)
    report = error.report.to_dict()
    assert report["error"]["code"] == 99000 and report["run"]["driver"] == "chromium"
    names = [e["name"] for e in report["progressEvents"]]
    assert in_step_order(names)  # the steps so far, in order
    if stop_at == "iceConnected":
        # The page is a few ms ahead of Python (DTLS follows ICE within ms): later steps may be in.
        assert "iceConnected" in names and report["samples"] == []
    else:
        assert "iceConnected" not in names
    assert took < 5  # the failure, and Chromium closed


def test_ctrl_c_in_the_terminal_stops_a_chromium_preflight(coturn_binary: str) -> None:
    # A terminal's Ctrl-C reaches the whole process group: rtcprobe, Playwright's node driver and
    # Chromium alike. The test still ends as stopped (99000), at once, with what it had seen.
    proc = subprocess.Popen([sys.executable, "-m", "rtcprobe", "preflight", "--driver", "chromium",
                             "--duration", "20s", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # the media flows: the stats step has begun
            if "mediaStarted" in line:
                break
        os.killpg(proc.pid, signal.SIGINT)
        sent = time.monotonic()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 1, err
    assert time.monotonic() - sent < 10
    report = json.loads(out)
    assert report["error"]["code"] == 99000
    assert [e["name"] for e in report["progressEvents"]][-1] == "mediaStarted"


def test_run_clean_broadband_driver_chromium_goes_relay_to_relay_through_the_relay(coturn_binary: str) -> None:
    result = run_replay("clean-broadband", driver="chromium")
    report = result.report
    assert report.ok, report.error
    d = report.to_dict()
    assert (d["run"]["driver"], d["run"]["scenario"], d["run"]["seed"]) == ("chromium", "clean-broadband", 1)
    # The simulator's report shape: the same keys, but for the run.stack the libwebrtc model adds
    sim = simulate("clean-broadband").to_dict()
    assert sim["run"].pop("stack") == "libwebrtc" and key_shape(d) == key_shape(sim)
    # Both peer connections relay-only through the relay's TURN address.
    pair = d["selectedIceCandidatePairStats"]
    assert (pair["localCandidate"]["candidateType"], pair["localCandidate"]["url"]) == ("relay", result.relay_url)
    assert pair["remoteCandidate"]["candidateType"] == "relay"
    assert {c["candidateType"] for c in d["iceCandidateStats"]} == {"relay"}
    # Media both ways on the relay: sender -> TURN on the uplink, TURN -> receiver on the downlink
    # (and RTCP back). 10 s of video at hundreds of kbit/s is over a thousand packets each way.
    for counters in (result.uplink, result.downlink):
        assert counters.forwarded > 1000 and counters.bytes_forwarded > 300_000
        assert counters.dropped == 0
    assert d["bitrate"]["outgoing"]["average"] > 200 and d["bitrate"]["incoming"]["average"] > 200
    assert d["stats"]["packetLoss"]["max"] == 0
    assert d["stats"]["rtt"]["min"] >= 4 * 10 - 1  # the loop crosses both 10 ms links twice


def test_a_lossy_scenario_through_chromium_shows_loss(coturn_binary: str, tmp_path: Path) -> None:
    scenario = tmp_path / "lossy.toml"
    scenario.write_text('name = "lossy-chromium"\nduration = 4\nseed = 3\n'
                        "[network]\ndelay_ms = 10\nloss = 0.05\n")
    r = rtcprobe("run", str(scenario), "--driver", "chromium", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["run"]["driver"] == "chromium" and report["run"]["scenario"] == "lossy-chromium"
    # 5 % each way: the media crosses the uplink and the downlink once each (~10 %).
    assert 3 <= report["stats"]["packetLoss"]["average"] <= 25
