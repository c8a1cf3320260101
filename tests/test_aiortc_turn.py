"""A preflight through a real TURN server (coturn) on loopback: the publisher goes relay-only.

coturn is the shared session fixture of tests/conftest.py (skipped where coturn is missing, a
failure under CI).
"""

from __future__ import annotations

import asyncio

import pytest
from rtcprobe.core.config import MediaDemand, VideoSpec
from rtcprobe.core.errors import PreflightError
from rtcprobe.core.report import PreflightReport

from rtcprobe.live import run_preflight
from rtcprobe.server.coturn import CoturnServer

pytestmark = [pytest.mark.turn, pytest.mark.timeout(120)]

SMALL_VIDEO = MediaDemand(video=VideoSpec(320, 240, 30))


def test_preflight_through_coturn_selects_a_relay_candidate(coturn: CoturnServer) -> None:
    async def main() -> PreflightReport:
        return await run_preflight(
            duration=1.0, media=SMALL_VIDEO, turn_urls=[coturn.udp_url], turn_secret=coturn.secret).wait()

    report = asyncio.run(main())
    assert report.ok, report.error
    d = report.to_dict()
    publisher_local = [c for c in d["iceCandidateStats"] if c["transportId"] == "publisher" and c["url"]]
    assert publisher_local and all(c["candidateType"] == "relay" for c in publisher_local)
    pair = d["selectedIceCandidatePairStats"]
    assert pair is not None
    local = pair["localCandidate"]
    assert (local["candidateType"], local["url"], local["relayProtocol"]) == ("relay", coturn.udp_url, "udp")
    assert local["address"] == "127.0.0.1"
    assert pair["remoteCandidate"]["candidateType"] in ("host", "prflx")
    assert d["stats"]["rtt"] is not None or d["stats"]["jitter"] is not None


def test_wrong_turn_secret_fails_the_media_step(coturn: CoturnServer) -> None:
    async def main() -> PreflightError:
        test = run_preflight(duration=1.0, media=SMALL_VIDEO, turn_urls=[coturn.udp_url], turn_secret="not-the-secret")
        with pytest.raises(PreflightError) as info:
            await test.wait()
        return info.value

    error = asyncio.run(main())
    # The allocation is refused, so the relay-only publisher has no candidate at all: ICE fails.
    assert error.code == 53405
    names = [e.name for e in error.report.progress_events]  # type: ignore[union-attr]
    assert names == ["mediaAcquired", "connected"]
