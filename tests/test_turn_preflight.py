"""Preflights through a real coturn on loopback (UDP and TCP), as Twilio Video's runs: the sender
relay-only, the receiver unrestricted, both in this process; and how TURN failures end.

The publisher (sender) is relay-only whenever the server hands out TURN, as twilio-video.js's is.
Failures must end the media step with 53405 naming the real cause — never by waiting for the step
timeout (duration + 10 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import re
import signal
import socket
import sys
from typing import Any

import pytest
from netns import loopback_only
from rtcprobe.core.config import MediaDemand, VideoSpec
from rtcprobe.core.errors import ConfigError, PreflightError
from rtcprobe.core.observations import PROGRESS_NAMES

from rtcprobe.live import run_preflight
from rtcprobe.server.coturn import CoturnServer

pytestmark = [pytest.mark.turn, pytest.mark.timeout(90)]

SMALL = MediaDemand(video=VideoSpec(320, 240, 15))


def failed_preflight(**options: Any) -> PreflightError:
    async def main() -> PreflightError:
        with pytest.raises(PreflightError) as info:
            await run_preflight(duration=1.0, media=SMALL, **options).wait()
        return info.value

    return asyncio.run(main())


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_preflight_through_coturn_selects_the_senders_relay_candidate_and_starts_media_fast(
    coturn: CoturnServer, transport: str
) -> None:
    url = coturn.url(transport)

    async def main() -> tuple[dict[str, Any], list[str], bool | None]:
        test = run_preflight(duration=1.0, media=SMALL, turn_urls=[url], turn_secret=coturn.secret)
        seen: list[str] = []
        test.on("progress", seen.append)
        report = await test.wait()
        return report.to_dict(), seen, test.turn_tested

    d, seen, turn_tested = asyncio.run(main())
    assert "error" not in d and turn_tested is True
    assert seen == [e["name"] for e in d["progressEvents"]] == list(PROGRESS_NAMES)
    # Through TURN on loopback, the first frame comes well within 300 ms of the start (~100 ms:
    # no STUN retransmission waited for, holdback.py).
    started = next(e["duration"] for e in d["progressEvents"] if e["name"] == "mediaStarted")
    assert started < 300, d["progressEvents"]
    # The receiver's view (Twilio's): its selected pair's remote end is the sender's relayed
    # address, on coturn's relay ports; the relayed leg is UDP whatever the client↔TURN transport.
    assert coturn.relay_ports is not None
    low, high = coturn.relay_ports
    pair = d["selectedIceCandidatePairStats"]
    remote = pair["remoteCandidate"]
    assert (remote["candidateType"], remote["address"], remote["protocol"]) == ("relay", "127.0.0.1", "udp")
    assert low <= remote["port"] <= high
    assert remote["url"] is None and remote["relayProtocol"] is None  # a remote candidate names no server
    assert pair["localCandidate"]["candidateType"] in ("host", "relay")
    cands = d["iceCandidateStats"]
    assert pair["localCandidate"] in cands and remote in cands
    assert {c["transportId"] for c in cands} == {"subscriber"}
    # The receiver gathered with the same TURN server: its own relay candidate names the URL and
    # the transport under test (a local candidate); everything is on loopback.
    own = [c for c in cands if c["url"] is not None]
    assert own and {(c["candidateType"], c["url"], c["relayProtocol"]) for c in own} == {("relay", url, transport)}
    assert {c["address"] for c in cands} == {"127.0.0.1"}
    # Media flowed through the relay (rtt needs an RTCP round that a 1 s run may not see).
    assert d["stats"]["jitter"] is not None or d["stats"]["rtt"] is not None


def test_the_report_keeps_the_loops_round_trip_and_the_scorer_gets_half(coturn: CoturnServer) -> None:
    # The sender's RTCP round trip runs sender → TURN → receiver and back: twice the client ↔
    # TURN round trip, which is what a call through that TURN server sees and what is scored.
    async def main() -> dict[str, Any]:
        test = run_preflight(duration=3.0, media=SMALL, turn_urls=[coturn.udp_url], turn_secret=coturn.secret)
        return (await test.wait()).to_dict()

    d = asyncio.run(main())
    rtts = [s["rtt"] for s in d["samples"] if s["rtt"] is not None]  # ms
    assert rtts and all(r > 0 for r in rtts)
    # The scorer's latency is the lower median of its recent inputs (one rtt spike must not move
    # the level), so it is half of one of the reported samples' round trips, not always the last.
    scored = d["networkQuality"]["stats"]["audio"]["recvStats"]["latency"]["rtt"] * 1000  # ms
    assert any(scored == pytest.approx(r / 2, abs=2e-3) for r in rtts), (scored, rtts)
    assert min(rtts) / 2 - 2e-3 <= scored <= max(rtts) / 2 + 2e-3


def _assert_turn_failure(error: PreflightError, *verdicts: str) -> None:
    """A clean 53405 whose message names the TURN server and one of ``verdicts`` (why it failed)."""
    assert error.code == 53405
    assert error.error.name == "MediaConnectionError"
    assert "TURN" in error.error.message and "the publisher peer connection gathered no ICE candidates" in str(error)
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


# --- a host whose only interface is loopback ----------------------------------------------------

_LOOPBACK_HOST_RUN = """
import asyncio, json, sys, time
from rtcprobe.core.config import MediaDemand, VideoSpec
from rtcprobe.core.errors import PreflightError
from rtcprobe.live import run_preflight
from rtcprobe.server import SignalingServer
from rtcprobe.server.coturn import CoturnServer
from rtcprobe.server.tokens import mint_token

SECRET = "netns-secret-0123456789abcdef0123456789"

async def main(turn):
    async with SignalingServer(secret=SECRET, turn_urls=(turn.url(sys.argv[1]),),
                               turn_secret=turn.secret if sys.argv[2] == "right" else "wrong") as server:
        test = run_preflight(mint_token(SECRET, "ns", now=time.time()), url=server.url, duration=1.0,
                             media=MediaDemand(video=VideoSpec(160, 120, 15)))
        try:
            return (await test.wait()).to_dict()
        except PreflightError as exc:
            return exc.report.to_dict()

with CoturnServer(binary=sys.argv[3]) as turn:
    print(json.dumps(asyncio.run(main(turn))))
"""


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_loopback_only_host_runs_through_its_turn_server_and_names_a_refusal(
    coturn_binary: str, transport: str
) -> None:
    r = loopback_only(sys.executable, "-c", _LOOPBACK_HOST_RUN, transport, "right", coturn_binary, timeout=90)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert "error" not in d, d["error"]
    assert d["selectedIceCandidatePairStats"]["remoteCandidate"]["candidateType"] == "relay"
    assert {c["address"] for c in d["iceCandidateStats"]} == {"127.0.0.1"}
    r = loopback_only(sys.executable, "-c", _LOOPBACK_HOST_RUN, transport, "wrong", coturn_binary, timeout=90)
    assert r.returncode == 0, r.stderr
    error = json.loads(r.stdout)["error"]
    assert error["code"] == 53405 and "refused the credentials (401" in error["message"], error
