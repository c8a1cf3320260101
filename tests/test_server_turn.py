"""The server with a real TURN server (coturn on loopback): the credentials it mints are accepted,
and a relay-only publisher reaches the server's host-only peer through the relay."""

from __future__ import annotations

import asyncio
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiortc import RTCConfiguration, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnection
from rtcprobe.drivers.aiortc.loopback import confine_ice_to_loopback
from rtcprobe.drivers.aiortc.protocol import Bye, Ice, Iced, encode, parse_message
from test_server_support import (
    assert_media_relayed,
    candidate_types,
    full_session,
    running_server,
    token,
    ws_client,
)

pytestmark = [
    pytest.mark.turn,
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("turnserver") is None, reason="coturn (turnserver) is not installed"),
]

TURN_SECRET = "coturn-shared-secret-for-tests"


def _unused_port() -> int:
    """A port free for UDP and TCP on 127.0.0.1, below the kernel's ephemeral range so that the
    many sockets ICE agents open meanwhile do not take it before coturn binds it."""
    while True:
        port = random.randrange(10000, 30000)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
                u.bind(("127.0.0.1", port))
                t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue


def _answers_stun(port: int) -> bool:
    """Whether a STUN binding request to 127.0.0.1:port gets a binding response (RFC 5389)."""
    request = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + random.randbytes(12)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.1)
        s.sendto(request, ("127.0.0.1", port))
        try:
            reply = s.recv(2048)
        except OSError:
            return False
    return reply[:2] == b"\x01\x01" and reply[8:20] == request[8:20]


def _start_coturn(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int] | None:
    port = _unused_port()
    low = random.randrange(10000, 30000 - 200)  # relay ports: also outside the ephemeral range
    proc = subprocess.Popen(
        ["turnserver", "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={port}",
         "--use-auth-secret", f"--static-auth-secret={TURN_SECRET}", "--realm=rtcprobe.test", "--no-tls",
         "--no-dtls", "--no-cli", "--allow-loopback-peers", f"--userdb={tmp_path / 'turn.db'}",
         f"--pidfile={tmp_path / 'turn.pid'}", f"--log-file={tmp_path / 'turn.log'}", "--simple-log",
         f"--min-port={low}", f"--max-port={low + 199}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 5
    while proc.poll() is None and time.monotonic() < deadline:
        if _answers_stun(port):
            return proc, port
    _stop(proc)
    return None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[str]:
    """A coturn on 127.0.0.1 with a REST API shared secret; yields its host:port."""
    for _ in range(3):  # a port taken between our check and coturn's bind: try other ports
        started = _start_coturn(tmp_path)
        if started is not None:
            break
    else:
        raise AssertionError("turnserver did not start on loopback (3 attempts)")
    proc, port = started
    try:
        yield f"127.0.0.1:{port}"
    finally:
        _stop(proc)


def test_relay_only_publisher_through_coturn(coturn: str) -> None:
    async def body() -> None:
        async with running_server(turn_urls=(f"turn:{coturn}?transport=udp",), turn_secret=TURN_SECRET) as server:
            result = await full_session(server.url, use_ice_servers=True)
            assert_media_relayed(result)
            (ice_server,) = result.ice_servers
            assert ice_server.urls == (f"turn:{coturn}?transport=udp",)
            assert result.publisher_candidates == {"relay"}  # the publisher really went through TURN
            assert result.server_candidates == {"host"}  # the server's own peer stays host-only

    with confine_ice_to_loopback():
        asyncio.run(body())


@pytest.mark.parametrize(("server_secret", "relayed"), [(TURN_SECRET, True), ("not-coturns-secret", False)])
def test_coturn_accepts_exactly_the_credentials_minted_with_its_secret(
        coturn: str, server_secret: str, relayed: bool) -> None:
    # A relay-only peer gathers a relay candidate only if coturn accepted the allocation.
    async def body() -> None:
        async with running_server(turn_urls=(f"turn:{coturn}?transport=udp",), turn_secret=server_secret) as server:
            async with ws_client(server.url) as ws:
                await ws.send_str(encode(Ice(token=token())))
                iced = parse_message((await ws.receive()).data)
                await ws.send_str(encode(Bye()))
            assert isinstance(iced, Iced)
            servers = [RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
                       for s in iced.ice_servers]
            pc = RTCPeerConnection(RTCConfiguration(iceServers=servers, iceTransportPolicy=RTCIceTransportPolicy.RELAY))
            try:
                pc.addTransceiver("audio", direction="sendonly")
                await pc.setLocalDescription(await pc.createOffer())
                types = candidate_types(pc.localDescription.sdp)
            finally:
                await pc.close()
            assert types == (frozenset({"relay"}) if relayed else frozenset())

    with confine_ice_to_loopback():
        asyncio.run(body())
