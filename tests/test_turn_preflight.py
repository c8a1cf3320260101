"""Relay-only preflights through a real coturn on loopback (UDP and TCP), and how TURN failures end.

The publisher is relay-only whenever the embedded server hands out TURN, as twilio-video.js's is.
Failures must end the media step with 53405 because ICE had nothing to work with — never by
waiting for the step timeout (duration + 10 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import re
import signal
import socket
from typing import Any

import pytest
from rtcprobe.core.config import MediaDemand, VideoSpec
from rtcprobe.core.errors import ConfigError, PreflightError

from rtcprobe.live import run_preflight
from rtcprobe.server.coturn import CoturnServer

pytestmark = [pytest.mark.turn, pytest.mark.timeout(90)]

SMALL = MediaDemand(video=VideoSpec(320, 240, 15))


def preflight(**options: Any) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        report = await run_preflight(duration=1.0, media=SMALL, **options).wait()
        return report.to_dict()

    return asyncio.run(main())


def failed_preflight(**options: Any) -> PreflightError:
    async def main() -> PreflightError:
        with pytest.raises(PreflightError) as info:
            await run_preflight(duration=1.0, media=SMALL, **options).wait()
        return info.value

    return asyncio.run(main())


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_relay_only_preflight_selects_the_relay_candidate(coturn: CoturnServer, transport: str) -> None:
    url = coturn.url(transport)
    d = preflight(turn_urls=[url], turn_secret=coturn.secret)
    assert "error" not in d
    assert [e["name"] for e in d["progressEvents"]][-1] == "mediaStarted"
    publisher_local = [c for c in d["iceCandidateStats"] if c["transportId"] == "publisher" and c["url"]]
    assert publisher_local, d["iceCandidateStats"]
    assert {(c["candidateType"], c["url"], c["relayProtocol"]) for c in publisher_local} == {("relay", url, transport)}
    local = d["selectedIceCandidatePairStats"]["localCandidate"]
    assert (local["candidateType"], local["url"], local["relayProtocol"]) == ("relay", url, transport)
    # The relayed address is coturn's: its relay port range on 127.0.0.1.
    assert coturn.relay_ports is not None
    assert local["address"] == "127.0.0.1" and coturn.relay_ports[0] <= local["port"] <= coturn.relay_ports[1]
    assert local["protocol"] == "udp"  # the relayed leg is UDP whatever the client↔TURN transport
    # Media flowed through the relay (rtt needs an RTCP round that a 1 s run may not see).
    assert d["stats"]["jitter"] is not None or d["stats"]["rtt"] is not None


def _assert_turn_failure(error: PreflightError, *verdicts: str) -> None:
    """A clean 53405 whose message names the TURN server and one of ``verdicts`` (why it failed)."""
    assert error.code == 53405
    assert error.error.name == "MediaConnectionError"
    assert "TURN" in error.error.message
    assert any(v in error.error.message for v in verdicts), error.error.message
    # It failed because ICE had no candidate, not because the step's timer ran out.
    assert "timed out" not in error.error.message
    report = error.report
    assert report is not None
    assert [e.name for e in report.progress_events] == ["mediaAcquired", "connected"]
    assert report.stats is None and report.ice_candidate_stats == ()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_wrong_turn_secret_fails_cleanly(coturn: CoturnServer, transport: str) -> None:
    url = coturn.url(transport)
    error = failed_preflight(turn_urls=[url], turn_secret="not-the-secret")
    # coturn answered, refusing the credentials: told apart from a server that is not there.
    _assert_turn_failure(error, f"TURN server {url} refused the credentials (401")
    assert "did not answer" not in error.error.message and "unreachable" not in error.error.message


def _dead_port(kind: int) -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_turn_over_udp_fails_cleanly() -> None:
    # aiortc gives up gathering after 5 s without an Allocate answer: well inside the 11 s step.
    port = _dead_port(socket.SOCK_DGRAM)
    error = failed_preflight(turn_urls=[f"turn:127.0.0.1:{port}?transport=udp"], turn_secret="s")
    _assert_turn_failure(error, "did not answer", "is unreachable")
    assert "credentials" not in error.error.message


def test_unreachable_turn_over_tcp_fails_cleanly() -> None:
    port = _dead_port(socket.SOCK_STREAM)
    url = f"turn:127.0.0.1:{port}?transport=tcp"
    error = failed_preflight(turn_urls=[url], turn_secret="s")
    _assert_turn_failure(error, f"TURN server {url} is unreachable")
    assert "credentials" not in error.error.message


# --- the TURN server going away mid-test ----------------------------------------------------------


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.timeout(150)
def test_teardown_is_bounded_when_the_turn_server_dies_mid_test(coturn_binary: str) -> None:
    # Without a bound, closing the peer connections waits for aioice's TURN deallocation
    # (Refresh lifetime 0), retransmitted for ~30 s per allocation with nobody answering: the
    # test's wait() returned ~60 s after coturn died.
    server = CoturnServer(binary=coturn_binary).start()  # private: this test kills it
    fds_before = _open_fds()

    async def main() -> tuple[float | None, float, list[asyncio.Task[Any]]]:
        loop = asyncio.get_running_loop()
        test = run_preflight(duration=2.0, media=SMALL, turn_urls=[server.udp_url], turn_secret=server.secret)
        killed_at: float | None = None

        def on_progress(name: str) -> None:
            nonlocal killed_at
            if name == "mediaStarted" and server.pid is not None:
                os.kill(server.pid, signal.SIGKILL)
                killed_at = loop.time()

        test.on("progress", on_progress)
        with contextlib.suppress(PreflightError):  # completing or failing are both fine here
            await test.wait()
        ended = loop.time()
        for _ in range(50):  # aiortc ends a few internal tasks some loop turns after close()
            if asyncio.all_tasks() == {asyncio.current_task()}:
                break
            await asyncio.sleep(0.02)
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        return killed_at, ended, left

    try:
        killed_at, ended, left = asyncio.run(main())
    finally:
        server.stop()
    assert killed_at is not None, "media never started through coturn"
    # A behavioural bound, far below aioice's retransmissions (not a speed benchmark): the
    # 2 s stats step plus a bounded close.
    assert ended - killed_at < 15.0
    assert not left, f"tasks left running: {left}"
    gc.collect()
    assert not _open_fds() - fds_before, "file descriptors left open"


# --- a relay-only subscriber (what a replay needs) ----------------------------------------------


def _offered_candidate_types(**options: Any) -> dict[str, set[str]]:
    """The candidate types each client peer connection offered (its local SDP), once media flows."""
    offered: dict[str, set[str]] = {}

    async def main() -> None:
        test = run_preflight(duration=1.0, media=SMALL, **options)

        def on_progress(name: str) -> None:
            if name == "mediaStarted":
                for role, sdp in test.local_descriptions.items():
                    offered[role] = set(re.findall(r"^a=candidate:.* typ (\w+)", sdp, re.M))

        test.on("progress", on_progress)
        await test.wait()

    asyncio.run(main())
    return offered


def test_subscriber_relay_only_makes_both_peer_connections_relay_only(coturn: CoturnServer) -> None:
    turn = {"turn_urls": [coturn.udp_url], "turn_secret": coturn.secret}
    assert _offered_candidate_types(**turn, subscriber_relay_only=True) == {
        "publisher": {"relay"}, "subscriber": {"relay"}}
    # Without it only the publisher is relay-only, as twilio-video.js's.
    offered = _offered_candidate_types(**turn)
    assert offered["publisher"] == {"relay"} and "host" in offered["subscriber"]


def test_subscriber_relay_only_without_a_relay_only_publisher_is_misuse() -> None:
    async def main() -> None:
        with pytest.raises(ConfigError, match="relay-only subscriber"):
            run_preflight(subscriber_relay_only=True)  # no TURN at all
        with pytest.raises(ConfigError, match="relay-only subscriber"):
            run_preflight(turn_urls=["turn:127.0.0.1:3478"], turn_secret="s", relay_only=False,
                          subscriber_relay_only=True)

    asyncio.run(main())
