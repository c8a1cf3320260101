"""``rtcprobe serve`` and ``rtcprobe token`` as a user runs them (subprocesses)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from rtcprobe.drivers.aiortc.loopback import confine_ice_to_loopback
from test_server_support import assert_media_relayed, full_session

from rtcprobe.server.tokens import verify_token

pytestmark = pytest.mark.timeout(120)

SECRET = "cli-test-secret-0123456789abcdef0123456789"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rtcprobe", *args], capture_output=True, text=True, timeout=60,
                          env=env)


@contextmanager
def serving(*args: str) -> Iterator[dict[str, str]]:
    """Run ``rtcprobe serve ARGS``; yield the ``key: value`` lines it printed before "Ctrl-C"."""
    proc = subprocess.Popen([sys.executable, "-m", "rtcprobe", "serve", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
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
        yield info
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0  # Ctrl-C is the normal way to stop a server
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
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: list[str], fragment: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RTCPROBE_SECRET"}
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
    with serving("--port", "0") as info:
        assert info["url"].startswith("ws://127.0.0.1:") and info["url"].endswith("/signaling")
        assert len(info["secret"]) >= 32
        token = info["token"].split()[0]
        assert "--token " + token in info["try"]
        with confine_ice_to_loopback():
            result = asyncio.run(full_session(info["url"], auth=token))
        assert_media_relayed(result)


def test_serve_with_secret_accepts_tokens_from_the_token_command() -> None:
    with serving("--port", "0", "--secret", SECRET) as info:
        assert "token" not in info and "secret" not in info  # the operator has the secret already
        minted = cli("token", "--secret", SECRET, "--identity", "frank")
        assert minted.returncode == 0, minted.stderr
        with confine_ice_to_loopback():
            result = asyncio.run(full_session(info["url"], auth=minted.stdout.strip()))
        assert_media_relayed(result)
