"""Where the TURN server comes from: the embedded default's own coturn, or a server's ``--turn``.

``rtcprobe preflight`` with no options goes through TURN as Twilio Video's preflight does when
coturn is installed (the embedded server starts one on loopback and hands it out), and says TURN
was not tested when it is not (``RTCPROBE_TURNSERVER`` naming a missing binary is exactly what
the lookup sees on a machine without coturn). A server of one's own hands out its TURN and
collects the report.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from rtcprobe.core.config import MediaDemand, VideoSpec
from rtcprobe.core.errors import PreflightError
from rtcprobe.core.observations import PROGRESS_NAMES

from rtcprobe.live import run_preflight
from rtcprobe.server import SignalingServer
from rtcprobe.server.coturn import BINARY_ENV, CoturnServer
from rtcprobe.server.tokens import mint_token

pytestmark = [pytest.mark.turn, pytest.mark.timeout(120)]

SMALL_VIDEO = MediaDemand(video=VideoSpec(320, 240, 30))
SECRET = "turn-test-secret-0123456789abcdef0123456789"


def _embedded_default() -> tuple[dict[str, Any], bool | None]:
    async def main() -> tuple[dict[str, Any], bool | None]:
        test = run_preflight(duration=1.0, media=SMALL_VIDEO)  # no TURN option at all
        report = await test.wait()
        return report.to_dict(), test.turn_tested

    return asyncio.run(main())


def test_the_embedded_default_goes_through_its_own_coturn(coturn_binary: str) -> None:
    d, turn_tested = _embedded_default()
    assert "error" not in d and turn_tested is True
    assert [e["name"] for e in d["progressEvents"]] == list(PROGRESS_NAMES)
    remote = d["selectedIceCandidatePairStats"]["remoteCandidate"]
    assert remote["candidateType"] == "relay" and remote["address"] == "127.0.0.1"
    own = [c for c in d["iceCandidateStats"] if c["url"] is not None]
    assert own and all(c["candidateType"] == "relay" and c["url"].startswith("turn:127.0.0.1:") for c in own)


def test_without_coturn_the_embedded_default_runs_on_host_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BINARY_ENV, "rtcprobe-no-such-turnserver")
    d, turn_tested = _embedded_default()
    assert "error" not in d and turn_tested is False
    assert [e["name"] for e in d["progressEvents"]] == list(PROGRESS_NAMES)
    assert {c["candidateType"] for c in d["iceCandidateStats"]} == {"host"}


def test_a_server_of_ones_own_hands_out_turn_and_stores_the_report(coturn: CoturnServer, tmp_path: Path) -> None:
    reports = tmp_path / "reports.jsonl"

    async def main() -> tuple[dict[str, Any], bool | None, Any]:
        async with SignalingServer(secret=SECRET, reports=str(reports), turn_urls=coturn.turn_urls,
                                   turn_secret=coturn.secret) as server:
            token = mint_token(SECRET, "frank", now=time.time())
            test = run_preflight(token, url=server.url, duration=1.0, media=SMALL_VIDEO)
            report = await test.wait()
            return report.to_dict(), test.report_stored, server.stats

    d, stored, stats = asyncio.run(main())
    assert "error" not in d and stored is True and stats.reports == 1
    line = json.loads(reports.read_text())
    assert line["identity"] == "frank" and line["report"] == d
    # aiortc uses the first TURN URL handed out (UDP); the report names it on the receiver's own
    # relay candidate, and the selected pair ends at the sender's relayed address.
    assert d["selectedIceCandidatePairStats"]["remoteCandidate"]["candidateType"] == "relay"
    assert {(c["url"], c["relayProtocol"]) for c in d["iceCandidateStats"] if c["url"]} == {(coturn.udp_url, "udp")}


def test_a_server_handing_out_a_wrong_turn_secret_fails_naming_the_refusal(coturn: CoturnServer) -> None:
    async def main() -> PreflightError:
        async with SignalingServer(secret=SECRET, turn_urls=(coturn.udp_url,), turn_secret="not-the-secret") as server:
            token = mint_token(SECRET, "grace", now=time.time())
            with pytest.raises(PreflightError) as info:
                await run_preflight(token, url=server.url, duration=1.0, media=SMALL_VIDEO).wait()
            return info.value

    error = asyncio.run(main())
    assert error.code == 53405
    assert f"TURN server {coturn.udp_url} refused the credentials (401" in error.error.message
    names = [e.name for e in error.report.progress_events]  # type: ignore[union-attr]
    assert names == ["mediaAcquired", "connected"]
