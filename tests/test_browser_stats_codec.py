"""rtcprobe.js's stats mapping (static/stats.js, run by Node) against the core's observation codec:
what the browser sends for the Chromium stats in tests/js/fixtures decodes into the core's
StatsSample with the values the browser reported, and the edge cases the mapping guards against
(negative loss counts, fractions above 1, hidden addresses) still decode."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import running_in_ci
from rtcprobe.core import StatsObserved
from rtcprobe.core.codec import decode_observation

ROOT = Path(__file__).resolve().parent.parent
STATS_JS = ROOT / "rtcprobe" / "server" / "static" / "stats.js"
FIXTURES = ROOT / "tests" / "js" / "fixtures"

EDGES = {
    "publisher": [
        {"type": "outbound-rtp", "kind": "audio", "packetsSent": 10, "bytesSent": 900},
        {"type": "remote-inbound-rtp", "kind": "audio", "roundTripTime": 0.2, "jitter": -1, "fractionLost": 1.5,
         "packetsLost": -3},
    ],
    "subscriber": [
        {"type": "inbound-rtp", "kind": "video", "packetsReceived": 5, "packetsLost": -2, "bytesReceived": 1e17,
         "jitter": 0.01},
        {"type": "local-candidate", "id": "L", "transportId": "T", "candidateType": "host", "port": 1,
         "priority": 1, "protocol": "udp"},
    ],
}


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        if running_in_ci():
            pytest.fail("node is not installed (CI is set)", pytrace=False)
        pytest.skip("node not installed: apt-get install nodejs")
    return node


def _map(reports: dict[str, Any]) -> Any:
    script = (f"import {{ mapStats }} from {json.dumps(STATS_JS.as_uri())};"
              "let s = ''; process.stdin.on('data', (d) => { s += d; });"
              "process.stdin.on('end', () => { const r = JSON.parse(s);"
              " console.log(JSON.stringify(mapStats(r.publisher, r.subscriber))); });")
    out = subprocess.run([_node(), "--input-type=module", "-e", script], input=json.dumps(reports),
                         capture_output=True, text=True, timeout=30, check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_chromium_stats_decode_into_the_cores_sample(fixture: str) -> None:
    sample = _map(json.loads((FIXTURES / fixture).read_text()))
    observation = decode_observation({"v": 1, "kind": "stats", "sample": sample})
    assert isinstance(observation, StatsObserved)
    s = observation.sample
    assert s.loopback is True
    assert s.audio_out is not None and s.video_out is not None
    assert s.audio_in is not None and s.video_in is not None
    assert s.audio_out.packets_sent == sample["audioOut"]["packetsSent"] > 0
    assert s.video_in.bytes_received == sample["videoIn"]["bytesReceived"] > 0
    assert s.candidate_pair_rtt == sample["candidatePairRtt"]
    assert len(s.ice_candidates) == len(sample["iceCandidates"]) > 0
    assert s.selected_pair is not None


def test_the_edges_the_mapping_guards_decode_too() -> None:
    sample = _map(EDGES)
    s = decode_observation({"v": 1, "kind": "stats", "sample": sample})
    assert isinstance(s, StatsObserved)
    assert s.sample.audio_out is not None and s.sample.audio_out.remote_fraction_lost is None
    assert s.sample.video_in is not None and s.sample.video_in.packets_lost == 0
    assert s.sample.ice_candidates == ()  # the candidate without an address is left out
