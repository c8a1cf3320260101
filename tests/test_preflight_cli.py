"""``rtcprobe preflight``: the real command in a subprocess (embedded server on loopback, through
its own coturn when coturn is installed), and ``--url`` against ``rtcprobe serve`` on a host
whose only interface is loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from netns import loopback_only
from rtcprobe.core.errors import ConfigError
from rtcprobe.core.report import PreflightReport

from rtcprobe.commands.preflight import parse_duration, summary, turn_note
from rtcprobe.server.coturn import BINARY_ENV

pytestmark = pytest.mark.timeout(120)

SMALL = ("--video", "320x240@30")


def rtcprobe(*args: str, timeout: float = 90, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rtcprobe", "preflight", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


NO_COTURN = {**os.environ, BINARY_ENV: "rtcprobe-no-such-turnserver"}  # what a machine without coturn sees


@pytest.mark.parametrize(("text", "seconds"), [("10", 10.0), ("10s", 10.0), ("1.5s", 1.5), ("500ms", 0.5),
                                               (" 2 s ", 2.0), (".25", 0.25)])
def test_parse_duration_accepts_seconds_and_milliseconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "-1", "0", "0ms", "10m", "1e3", "5 h", "7200"])
def test_parse_duration_rejects_anything_else(text: str) -> None:
    with pytest.raises(ConfigError, match="--duration"):
        parse_duration(text)


@pytest.mark.turn
def test_completed_run_goes_through_coturn_prints_a_summary_and_writes_the_report(
    tmp_path: Path, coturn_binary: str
) -> None:
    out, png = tmp_path / "report.json", tmp_path / "samples.png"
    r = rtcprobe("--duration", "2s", *SMALL, "--out", str(out), "--plot", str(png))
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = PreflightReport.from_json(out.read_text())
    assert report.ok and [e.name for e in report.progress_events][-1] == "mediaStarted"
    assert r.stdout.strip() == summary(report)  # no note: TURN was tested
    # The receiver's selected pair: its host candidate to the sender's relayed address.
    for needle in ("preflight completed", "selected pair", "-> relay 127.0.0.1:", "jitter", "rtt", "packet loss",
                   "network quality 5 / 5", "mediaStarted"):
        assert needle in r.stdout
    assert "TURN was not tested" not in r.stdout + r.stderr
    # Live progress on stderr: every step as it lands (the bar is drawn on terminals only).
    for name in ("mediaAcquired", "connected", "iceConnected", "dtlsConnected", "peerConnectionConnected",
                 "mediaSubscribed", "mediaStarted"):
        assert f"rtcprobe: {name} " in r.stderr


def test_without_coturn_the_summary_says_turn_was_not_tested_and_how_to_get_it(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    r = rtcprobe("--duration", "1s", *SMALL, "--out", str(out), env=NO_COTURN)
    assert r.returncode == 0, r.stderr
    report = PreflightReport.from_json(out.read_text())
    note = turn_note(False, embedded=True)
    assert note is not None and r.stdout.strip() == summary(report, notes=(note,))
    assert "TURN was not tested" in r.stdout and "apt-get install coturn" in r.stdout
    assert "host 127.0.0.1:" in r.stdout and "relay" not in r.stdout
    # --json keeps stdout the report alone; the note goes to stderr.
    r = rtcprobe("--duration", "500ms", "--no-video", "--json", env=NO_COTURN)
    assert r.returncode == 0 and json.loads(r.stdout)["stats"] is not None
    assert "TURN was not tested" in r.stderr


def test_url_on_a_host_whose_only_interface_is_loopback_works_without_turn() -> None:
    # aioice leaves 127.0.0.1 out of host candidates: without the client's own confinement both
    # peer connections gather nothing there (53405 blaming TURN, which was not even in use).
    secret = "netns-secret-0123456789abcdef0123456789"
    script = f"""
set -e
export RTCPROBE_SECRET={secret}
{sys.executable} -m rtcprobe serve --port 8765 >/dev/null 2>&1 &
server=$!
trap 'kill $server' EXIT
{sys.executable} -c '
import socket, time
for _ in range(200):
    try:
        socket.create_connection(("127.0.0.1", 8765), 0.1).close()
        break
    except OSError:
        time.sleep(0.05)
'
token=$({sys.executable} -m rtcprobe token --identity netns)
{sys.executable} -m rtcprobe preflight --url ws://127.0.0.1:8765/signaling --token "$token" --duration 1s \
    --video 160x120@15 --json
"""
    r = loopback_only("sh", "-c", script, timeout=90)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert "error" not in d and [e["name"] for e in d["progressEvents"]][-1] == "mediaStarted"
    assert {(c["candidateType"], c["address"]) for c in d["iceCandidateStats"]} == {("host", "127.0.0.1")}
    assert "TURN was not tested: the server handed out no TURN server" in r.stderr


def test_json_prints_only_the_report_audio_only() -> None:
    r = rtcprobe("--duration", "1000ms", "--no-video", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)  # nothing but the JSON on stdout
    assert d["run"]["driver"] == "aiortc" and d["stats"] is not None and "error" not in d
    assert [e["name"] for e in d["progressEvents"]][-1] == "mediaStarted"


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_server_exits_1_with_the_partial_report() -> None:
    r = rtcprobe("--url", f"ws://127.0.0.1:{_unused_port()}/signaling", "--token", "x", "--duration", "1", "--json")
    assert r.returncode == 1
    d = json.loads(r.stdout)
    assert d["error"]["code"] == 53000 and d["stats"] is None and d["iceCandidateStats"] == []


@pytest.mark.parametrize(("args", "message"), [
    (("--duration", "soon"), "--duration"),
    (("--video", "640x481@30"), "video size"),
    (("--video", "big"), "video must look like"),
    (("--url", "ws://127.0.0.1:9/signaling"), "needs a token"),
    (("--token", "abc"), "needs a url"),
    (("--url", "gopher://127.0.0.1/", "--token", "t"), "signaling URL"),
    (("--region", "Mars Base"), "region"),
    (("--turn", "turn:127.0.0.1:3478"), "--turn-secret"),
    (("--turn", "stun:127.0.0.1", "--turn-secret", "s"), "turn:"),
    (("--out", "/nonexistent-dir-for-rtcprobe/r.json"), "does not exist"),
])
def test_bad_input_exits_2_with_one_line(args: tuple[str, ...], message: str) -> None:
    r = rtcprobe(*args, timeout=30)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rtcprobe preflight: error:") and message in lines[0]
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_ctrl_c_stops_promptly_with_the_partial_report() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "rtcprobe", "preflight", "--duration", "30s", *SMALL, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # wait until the stats step is under way
            if "mediaStarted" in line:
                break
        time.sleep(1.5)  # into the stats step: a sample is taken every second
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=20)  # far less than the 30 s the step would take
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, stderr
    d = json.loads(stdout)
    assert d["error"]["code"] == 99000 and d["stats"] is None
    assert len(d["samples"]) < 30 and "interrupted" in stderr
    assert [e["name"] for e in d["progressEvents"]][-1] == "mediaStarted"
