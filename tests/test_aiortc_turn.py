"""A preflight through a real TURN server (coturn) on loopback: the publisher goes relay-only."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from rtcprobe.core.config import MediaDemand, VideoSpec
from rtcprobe.core.errors import PreflightError
from rtcprobe.core.report import PreflightReport
from rtcprobe.drivers.aiortc import run_preflight

TURNSERVER = shutil.which("turnserver") or "/usr/bin/turnserver"
pytestmark = [
    pytest.mark.turn,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not Path(TURNSERVER).exists(), reason="coturn (turnserver) is not installed"),
]

TURN_SECRET = "turn-rest-secret-for-tests"
SMALL_VIDEO = MediaDemand(video=VideoSpec(320, 240, 30))


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stun_answers(port: int) -> bool:
    """Whether a STUN Binding request to 127.0.0.1:port gets an answer (coturn is up)."""
    request = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + os.urandom(12)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        s.sendto(request, ("127.0.0.1", port))
        try:
            return s.recv(2048)[8:20] == request[8:20]
        except OSError:
            return False


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A coturn on 127.0.0.1 with a REST shared secret; yields its turn: URL (REFERENCE.md G)."""
    work = tmp_path_factory.mktemp("coturn")
    port = _free_udp_port()
    low = random.randrange(50000, 59000, 100)
    with open(work / "turn.log", "w") as log:
        proc = subprocess.Popen(
            [TURNSERVER, "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={port}",
             "--use-auth-secret", f"--static-auth-secret={TURN_SECRET}", "--realm=rtcprobe.test", "--no-tls",
             "--no-dtls", "--no-cli", "--allow-loopback-peers", f"--userdb={work / 'turndb'}",
             f"--pidfile={work / 'turn.pid'}", "--log-file=stdout", "--simple-log",
             f"--min-port={low}", f"--max-port={low + 99}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        for _ in range(75):
            if _stun_answers(port):
                break
            if proc.poll() is not None:
                break
        else:
            pytest.fail("coturn did not answer STUN")
        if proc.poll() is not None:
            pytest.fail(f"coturn exited: {(work / 'turn.log').read_text()[-2000:]}")
        yield f"turn:127.0.0.1:{port}?transport=udp"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_preflight_through_coturn_selects_a_relay_candidate(coturn: str) -> None:
    async def main() -> PreflightReport:
        return await run_preflight(duration=1.0, media=SMALL_VIDEO, turn_urls=[coturn], turn_secret=TURN_SECRET).wait()

    report = asyncio.run(main())
    assert report.ok, report.error
    d = report.to_dict()
    publisher_local = [c for c in d["iceCandidateStats"] if c["transportId"] == "publisher" and c["url"]]
    assert publisher_local and all(c["candidateType"] == "relay" for c in publisher_local)
    pair = d["selectedIceCandidatePairStats"]
    assert pair is not None
    local = pair["localCandidate"]
    assert (local["candidateType"], local["url"], local["relayProtocol"]) == ("relay", coturn, "udp")
    assert local["address"] == "127.0.0.1"
    assert pair["remoteCandidate"]["candidateType"] in ("host", "prflx")
    assert d["stats"]["rtt"] is not None or d["stats"]["jitter"] is not None


def test_wrong_turn_secret_fails_the_media_step(coturn: str) -> None:
    async def main() -> PreflightError:
        test = run_preflight(duration=1.0, media=SMALL_VIDEO, turn_urls=[coturn], turn_secret="not-the-secret")
        with pytest.raises(PreflightError) as info:
            await test.wait()
        return info.value

    error = asyncio.run(main())
    # The allocation is refused, so the relay-only publisher has no candidate at all: ICE fails.
    assert error.code == 53405
    names = [e.name for e in error.report.progress_events]  # type: ignore[union-attr]
    assert names == ["mediaAcquired", "connected"]
