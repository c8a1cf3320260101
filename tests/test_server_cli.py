"""``rtcprobe serve`` and ``rtcprobe token`` as a user runs them (subprocesses)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs
import pytest
from rtcprobe.drivers.aiortc.protocol import DEFAULT_HOLD_TIMEOUT, DEFAULT_IDLE_TIMEOUT
from test_server_support import completed_report, expect_close, good_session, hello, ws_client

from rtcprobe.commands import serve
from rtcprobe.server import ServerConfig
from rtcprobe.server.tokens import verify_token

pytestmark = pytest.mark.timeout(120)

SECRET = "cli-test-secret-0123456789abcdef0123456789"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rtcprobe", *args], capture_output=True, text=True, timeout=60,
                          env=env)


@attrs.frozen
class Serving:
    info: dict[str, str]  # the "key: value" lines printed before "Ctrl-C to stop"
    pid: int


@contextmanager
def serving(*args: str, stop: signal.Signals | None = signal.SIGINT,
            env: dict[str, str] | None = None) -> Iterator[Serving]:
    """Run ``rtcprobe serve ARGS`` until the block exits, then stop it with ``stop`` (None: the
    block stopped it): it must exit 0 without a traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "rtcprobe", "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        info: dict[str, str] = {}
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("Ctrl-C"):
                break
            key, _, value = line.partition(":")
            info[key.strip()] = value.strip()
        else:
            raise AssertionError(f"serve exited early: {proc.wait()} {proc.stderr.read() if proc.stderr else ''}")
        yield Serving(info=info, pid=proc.pid)
        if stop is not None:
            proc.send_signal(stop)
        assert proc.wait(15) == 0  # Ctrl-C and SIGTERM are the normal ways to stop a server
        stderr = proc.stderr.read() if proc.stderr else ""
        assert "Traceback" not in stderr, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_token_command_mints_a_verifiable_token() -> None:
    before = time.time()
    r = cli("token", "--secret", SECRET, "--identity", "erin", "--ttl", "120", "--issuer", "acme")
    assert r.returncode == 0, r.stderr
    claims = verify_token(r.stdout.strip(), SECRET, now=time.time(), issuer="acme")
    assert claims.identity == "erin"
    assert int(before) + 120 <= claims.expires <= time.time() + 120


def test_token_secret_from_environment() -> None:
    r = cli("token", "--identity", "erin", env={**os.environ, "RTCPROBE_SECRET": SECRET})
    assert r.returncode == 0, r.stderr
    assert verify_token(r.stdout.strip(), SECRET, now=time.time()).identity == "erin"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["token", "--identity", "x"], "--secret is required"),
        (["token", "--secret", SECRET, "--identity", ""], "identity"),
        (["token", "--secret", SECRET, "--identity", "x", "--ttl", "0"], "ttl"),
        (["serve", "--turn", "turn:127.0.0.1:3478"], "--turn-secret"),
        (["serve", "--turn-secret", "s"], "without any --turn"),
        (["serve", "--turn", "stun:127.0.0.1:3478", "--turn-secret", "s"], "turn: or turns:"),
        (["serve", "--turn", "turn:127.0.0.1:port", "--turn-secret", "s"], "port"),
        (["serve", "--port", "70000"], "port"),
        (["serve", "--secret", ""], "secret"),
        (["serve", "--max-sessions", "0"], "max_sessions"),
        (["serve", "--max-sessions", "10", "--max-connections", "5"], "max_sessions <= max_connections"),
        (["serve", "--hold-timeout", "0"], "hold_timeout must be a positive number"),
        (["serve", "--idle-timeout", "nan"], "idle_timeout must be a positive number"),
        (["serve", "--reports", "/nonexistent-dir/reports.jsonl"], "cannot append to the reports file"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: list[str], fragment: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RTCPROBE_SECRET", "RTCPROBE_TURN_SECRET")}
    r = cli(*args, env=env)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_serve_on_a_port_in_use_exits_2() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = cli("serve", "--port", str(busy.getsockname()[1]), "--secret", SECRET)
    assert r.returncode == 2 and "cannot listen" in r.stderr and "Traceback" not in r.stderr


def test_serve_without_secret_prints_a_working_token() -> None:
    with serving("--port", "0") as server:
        info = server.info
        assert info["url"].startswith("ws://127.0.0.1:") and info["url"].endswith("/signaling")
        assert info["metrics"] == info["url"].replace("ws://", "http://").replace("/signaling", "/metrics")
        assert len(info["secret"]) >= 32
        token = info["token"].split()[0]
        assert "--token " + token in info["try"]
        assert asyncio.run(good_session(info["url"], token_value=token)).close_code == 1000


def test_serve_with_secret_accepts_tokens_from_the_token_command() -> None:
    with serving("--port", "0", "--secret", SECRET) as server:
        assert "token" not in server.info and "secret" not in server.info  # the operator has the secret already
        minted = cli("token", "--secret", SECRET, "--identity", "frank")
        assert minted.returncode == 0, minted.stderr
        result = asyncio.run(good_session(server.info["url"], token_value=minted.stdout.strip()))
        assert result.close_code == 1000 and result.reported.stored is False


def test_serve_appends_reports_and_holds_sessions_for_the_hold_timeout(tmp_path: Path) -> None:
    reports = tmp_path / "reports.jsonl"
    token = cli("token", "--secret", SECRET, "--identity", "grace").stdout.strip()

    async def body(url: str) -> None:
        result = await good_session(url, token_value=token, report=completed_report())
        assert result.reported.stored is True
        async with ws_client(url) as ws:
            await hello(ws, token_value=token)
            started = time.monotonic()
            msg = await ws.receive(timeout=10)  # silent past the hold timeout: one error, then the close
            assert "no message for 1 s" in json.loads(msg.data)["message"]
            assert await expect_close(ws) == 1008
            assert time.monotonic() - started < 5

    with serving("--port", "0", "--secret", SECRET, "--reports", str(reports), "--hold-timeout", "1") as server:
        assert server.info["reports"] == str(reports)
        asyncio.run(body(server.info["url"]))
    (line,) = reports.read_text().splitlines()
    assert json.loads(line)["identity"] == "grace"


def test_the_turn_secret_may_come_from_the_environment() -> None:
    # Secrets on the command line are visible to every local user (ps): the environment is not.
    env = {**os.environ, "RTCPROBE_SECRET": SECRET, "RTCPROBE_TURN_SECRET": "from-env"}
    with serving("--port", "0", "--turn", "turn:127.0.0.1:3478", env=env) as server:
        token = cli("token", "--identity", "judy", env=env).stdout.strip()
        iced = asyncio.run(good_session(server.info["url"], token_value=token)).iced
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes() if Path("/proc").is_dir() else b""
    (entry,) = iced.ice_servers
    assert entry.username is not None and entry.username.endswith(":judy")
    expected = base64.b64encode(hmac.new(b"from-env", entry.username.encode(), hashlib.sha1).digest()).decode()
    assert entry.credential == expected
    assert b"from-env" not in cmdline and SECRET.encode() not in cmdline


def test_sigterm_closes_sessions_with_going_away() -> None:
    token = cli("token", "--secret", SECRET, "--identity", "heidi").stdout.strip()

    async def held(url: str, pid: int) -> int | None:
        async with ws_client(url) as ws:
            await hello(ws, token_value=token)
            os.kill(pid, signal.SIGTERM)
            return await expect_close(ws)

    with serving("--port", "0", "--secret", SECRET, stop=None) as server:
        assert asyncio.run(held(server.info["url"], server.pid)) == 1001


def test_help_lists_the_options_with_examples() -> None:
    r = cli("serve", "--help")
    assert r.returncode == 0
    for option in ("--reports", "--hold-timeout", "--turn", "--turn-secret", "--max-sessions", "examples:",
                   "/metrics"):
        assert option in r.stdout, option


def test_the_help_defaults_are_the_servers() -> None:
    config = ServerConfig(secret="s")
    assert (serve.DEFAULT_HOLD_TIMEOUT, serve.DEFAULT_IDLE_TIMEOUT) == (DEFAULT_HOLD_TIMEOUT, DEFAULT_IDLE_TIMEOUT)
    assert (config.hold_timeout, config.idle_timeout) == (DEFAULT_HOLD_TIMEOUT, DEFAULT_IDLE_TIMEOUT)
    assert (serve.DEFAULT_MAX_SESSIONS, serve.DEFAULT_MAX_CONNECTIONS) == (config.max_sessions, config.max_connections)


def test_the_fd_limit_is_raised_towards_what_max_connections_needs() -> None:
    # In a child process: the limit is per process and this one must keep its own.
    code = ("import resource; from rtcprobe.commands.serve import raise_fd_limit; "
            "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE); "
            "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)); "
            "w = raise_fd_limit(min(hard, 4096)); "
            "print(w, resource.getrlimit(resource.RLIMIT_NOFILE)[0] == min(hard, 4096)); "
            "print(raise_fd_limit(hard + 1 if hard != resource.RLIM_INFINITY else 2**40) is not None "
            "or hard == resource.RLIM_INFINITY)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.stdout.split() == ["None", "True", "True"], r.stderr
