"""confine_ice_to_loopback: two real aiortc peers gather only 127.0.0.1 and connect;
has_host_address: whether aioice finds anything else (not on a host whose only interface is
loopback, reproduced in a fresh network namespace)."""

from __future__ import annotations

import asyncio
import sys

import aioice.ice
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from netns import loopback_only
from rtcprobe.drivers.aiortc.loopback import confine_ice_to_loopback, has_host_address, is_confined

pytestmark = pytest.mark.timeout(60)


def _candidate_addresses(sdp: str) -> list[tuple[str, str]]:
    """(address, type) of every a=candidate line."""
    out = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            fields = line.split()
            out.append((fields[4], fields[7]))
    return out


async def _connect_pair() -> tuple[list[tuple[str, str]], list[tuple[str, str]], str, str]:
    config = RTCConfiguration(iceServers=[])  # explicit: None would mean a public STUN server
    a, b = RTCPeerConnection(config), RTCPeerConnection(config)
    try:
        channel = a.createDataChannel("ping")
        got: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        @b.on("datachannel")
        def on_channel(ch: object) -> None:
            @ch.on("message")  # type: ignore[attr-defined]
            def on_message(msg: str) -> None:
                if not got.done():
                    got.set_result(msg)

        @channel.on("open")
        def on_open() -> None:
            channel.send("hello over loopback")

        await a.setLocalDescription(await a.createOffer())
        await b.setRemoteDescription(a.localDescription)
        await b.setLocalDescription(await b.createAnswer())
        await a.setRemoteDescription(b.localDescription)
        message = await asyncio.wait_for(got, 20)
        return (_candidate_addresses(a.localDescription.sdp), _candidate_addresses(b.localDescription.sdp),
                message, a.connectionState)
    finally:
        await a.close()
        await b.close()


def test_confined_peers_gather_only_loopback_and_connect() -> None:
    with confine_ice_to_loopback():
        assert is_confined()
        cands_a, cands_b, message, state = asyncio.run(_connect_pair())
    assert cands_a and cands_b
    assert {addr for addr, _ in cands_a + cands_b} == {"127.0.0.1"}
    assert {typ for _, typ in cands_a + cands_b} == {"host"}
    assert message == "hello over loopback"
    assert state == "connected"


def test_patch_is_reference_counted_and_restored() -> None:
    original = aioice.ice.get_host_addresses
    with confine_ice_to_loopback():
        with confine_ice_to_loopback():
            assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1"]
        # still confined: the outer block is open
        assert is_confined()
        assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1"]
    assert not is_confined()
    assert aioice.ice.get_host_addresses is original


def test_unconfined_discovery_leaves_loopback_out() -> None:
    # The reason the confinement exists: aioice's own discovery never offers 127.0.0.1.
    assert "127.0.0.1" not in aioice.ice.get_host_addresses(True, False)
    with confine_ice_to_loopback():
        assert aioice.ice.get_host_addresses(False, True) == []  # IPv6 only asked: nothing


def test_has_host_address_asks_aioices_own_discovery_even_when_confined() -> None:
    found = bool(aioice.ice.get_host_addresses(True, True))
    assert has_host_address() is found
    with confine_ice_to_loopback():
        assert has_host_address() is found  # not the confined answer (127.0.0.1)


def test_a_host_with_only_loopback_has_no_host_address() -> None:
    code = ("from rtcprobe.drivers.aiortc.loopback import has_host_address; import aioice.ice; "
            "print(has_host_address(), aioice.ice.get_host_addresses(True, True))")
    r = loopback_only(sys.executable, "-c", code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "[]"]
