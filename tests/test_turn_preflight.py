"""Relay-only preflights through a real coturn on loopback (UDP and TCP), and how TURN failures end.

The publisher is relay-only whenever the embedded server hands out TURN, as the anchor's is.
Failures must end the media step with 53405 because ICE had nothing to work with — never by
waiting for the step timeout (duration + 10 s).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from rtcprobe.core.config import MediaDemand, VideoSpec
from rtcprobe.core.errors import PreflightError
from rtcprobe.drivers.aiortc import run_preflight
from rtcprobe.drivers.aiortc.turn import CoturnServer

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


def _assert_turn_failure(error: PreflightError) -> None:
    assert error.code == 53405
    assert error.error.name == "MediaConnectionError"
    assert "TURN" in error.error.message
    # It failed because ICE had no candidate, not because the step's timer ran out.
    assert "timed out" not in error.error.message
    report = error.report
    assert report is not None
    assert [e.name for e in report.progress_events] == ["mediaAcquired", "connected"]
    assert report.stats is None and report.ice_candidate_stats == ()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_wrong_turn_secret_fails_cleanly(coturn: CoturnServer, transport: str) -> None:
    _assert_turn_failure(failed_preflight(turn_urls=[coturn.url(transport)], turn_secret="not-the-secret"))


def _dead_port(kind: int) -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_turn_over_udp_fails_cleanly() -> None:
    # aiortc gives up gathering after 5 s without an Allocate answer: well inside the 11 s step.
    port = _dead_port(socket.SOCK_DGRAM)
    _assert_turn_failure(failed_preflight(turn_urls=[f"turn:127.0.0.1:{port}?transport=udp"], turn_secret="s"))


def test_unreachable_turn_over_tcp_fails_cleanly() -> None:
    port = _dead_port(socket.SOCK_STREAM)
    _assert_turn_failure(failed_preflight(turn_urls=[f"turn:127.0.0.1:{port}?transport=tcp"], turn_secret="s"))
