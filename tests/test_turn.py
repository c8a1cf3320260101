"""The coturn harness (rtcprobe/server/coturn.py) against the real turnserver, and a raw aioice TURN
allocation through it over UDP and TCP (no peer connection involved)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from aioice.stun import TransactionFailed
from aioice.turn import create_turn_endpoint
from rtcprobe.core.errors import ConfigError
from rtcprobe.drivers.aiortc.turn_client import diagnose_turn

from rtcprobe.server.coturn import (
    INSTALL_HINT,
    CoturnNotInstalled,
    CoturnServer,
    find_turnserver,
    stun_binding,
)

pytestmark = [pytest.mark.turn, pytest.mark.timeout(60)]


# --- without coturn ----------------------------------------------------------------------------


def test_missing_binary_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTCPROBE_TURNSERVER", "no-such-turnserver-binary")
    with pytest.raises(CoturnNotInstalled) as info:
        find_turnserver()
    assert str(info.value).startswith(INSTALL_HINT)
    assert isinstance(info.value, ConfigError)  # the CLI turns it into one line and exit 2
    with pytest.raises(CoturnNotInstalled):
        CoturnServer()


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"host": "localhost"}, "IPv4 address"),
        ({"host": "::1"}, "IPv4 address"),
        ({"port": 70000}, "port"),
        ({"relay_ports": (3000, 2000)}, "relay ports"),
        ({"secret": "has space"}, "secret"),
    ],
)
def test_bad_options_are_config_errors(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        CoturnServer(**kwargs)  # type: ignore[arg-type]


def _run_fixture_probe(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    """Run a one-test session using the shared ``coturn`` fixture with coturn made missing."""
    (tmp_path / "conftest.py").write_text((Path(__file__).parent / "conftest.py").read_text())
    (tmp_path / "test_probe.py").write_text(textwrap.dedent("""
        def test_uses_coturn(coturn):
            assert coturn.running
    """))
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["RTCPROBE_TURNSERVER"] = "no-such-turnserver-binary"
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )


def test_fixture_skips_without_coturn_outside_ci(tmp_path: Path) -> None:
    result = _run_fixture_probe(tmp_path, ci=None)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout
    assert INSTALL_HINT in result.stdout


def test_fixture_fails_without_coturn_in_ci(tmp_path: Path) -> None:
    result = _run_fixture_probe(tmp_path, ci="true")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 error" in result.stdout
    assert INSTALL_HINT in result.stdout


# --- with coturn -------------------------------------------------------------------------------


def test_coturn_answers_stun_on_udp_and_tcp(coturn: CoturnServer) -> None:
    assert coturn.running
    assert coturn.turn_urls == (
        f"turn:127.0.0.1:{coturn.port}?transport=udp",
        f"turn:127.0.0.1:{coturn.port}?transport=tcp",
    )
    host, port = stun_binding(*coturn.address, transport="udp")
    assert host == "127.0.0.1" and port > 0
    host, port = stun_binding(*coturn.address, transport="tcp")
    assert host == "127.0.0.1" and port > 0


def test_stop_releases_everything(coturn_binary: str) -> None:
    server = CoturnServer(binary=coturn_binary).start()
    pid, port = server.pid, server.port
    assert pid is not None
    files = Path(f"/proc/{pid}/cwd").resolve()  # coturn runs in its private directory
    assert files.is_dir()
    server.stop()
    assert not server.running
    assert not files.exists()
    with pytest.raises(OSError):
        stun_binding("127.0.0.1", port, timeout=0.3)
    server.stop()  # idempotent


def test_a_taken_port_is_detected(coturn_binary: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        port = squatter.getsockname()[1]
        server = CoturnServer(binary=coturn_binary, port=port, startup_timeout=3)
        with pytest.raises(RuntimeError, match=r"could not bind|did not answer"):
            server.start()
        assert not server.running


def test_two_servers_side_by_side(coturn_binary: str) -> None:
    with CoturnServer(binary=coturn_binary) as a, CoturnServer(binary=coturn_binary) as b:
        assert a.port != b.port
        assert stun_binding(*a.address)[0] == stun_binding(*b.address)[0] == "127.0.0.1"


class _Collect(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait((data, addr))


async def _relay_round_trip(server: CoturnServer, transport: str) -> tuple[tuple[str, int], bytes]:
    """Allocate on coturn with REST credentials and bounce a datagram off a plain UDP peer."""
    username, password = server.credentials("alice")
    loop = asyncio.get_running_loop()
    peer_t, peer = await loop.create_datagram_endpoint(_Collect, local_addr=("127.0.0.1", 0))
    turn, mine = await create_turn_endpoint(
        _Collect, server.address, username, password, transport=transport
    )
    try:
        relayed = turn.get_extra_info("sockname")
        turn.sendto(b"ping", peer_t.get_extra_info("sockname"))
        data, from_addr = await asyncio.wait_for(peer.received.get(), 5)
        assert data == b"ping"
        assert tuple(from_addr) == tuple(relayed)  # the peer sees the relayed address
        peer_t.sendto(b"pong", from_addr)
        echoed, _ = await asyncio.wait_for(mine.received.get(), 5)
        return relayed, echoed
    finally:
        turn.close()
        peer_t.close()
        await asyncio.sleep(0.05)  # let the allocation be deleted


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_raw_turn_allocation_relays_data(coturn: CoturnServer, transport: str) -> None:
    relayed, echoed = asyncio.run(_relay_round_trip(coturn, transport))
    assert relayed[0] == "127.0.0.1"
    assert coturn.relay_ports is not None
    assert coturn.relay_ports[0] <= relayed[1] <= coturn.relay_ports[1]
    assert echoed == b"pong"


def test_raw_turn_allocation_with_wrong_credentials_is_refused(coturn: CoturnServer) -> None:
    async def main() -> None:
        username, _ = coturn.credentials("mallory")
        await create_turn_endpoint(_Collect, coturn.address, username, "d3JvbmcgcGFzc3dvcmQ=")

    with pytest.raises(TransactionFailed) as info:
        asyncio.run(main())
    assert info.value.response.attributes["ERROR-CODE"][0] == 401


# --- telling TURN failures apart ---------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_diagnose_turn(coturn: CoturnServer, transport: str) -> None:
    username, password = coturn.credentials("bob")
    url = coturn.url(transport)
    assert asyncio.run(diagnose_turn(url, username, password)) is None
    wrong = asyncio.run(diagnose_turn(url, username, "d3Jvbmc="))
    assert wrong is not None and wrong.startswith(f"TURN server {url} refused the credentials (401")


def test_diagnose_unreachable_turn() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # bound, never answers
        silent.bind(("127.0.0.1", 0))
        url = f"turn:127.0.0.1:{silent.getsockname()[1]}?transport=udp"
        message = asyncio.run(diagnose_turn(url, "u", "p", timeout=0.5))
    assert message == f"TURN server {url} did not answer within 0.5 s: is it running and reachable?"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"turn:127.0.0.1:{port}?transport=tcp"
    message = asyncio.run(diagnose_turn(url, "u", "p"))
    assert message is not None and message.startswith(f"TURN server {url} is unreachable:")
