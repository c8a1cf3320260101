"""A scenario replayed over real aiortc traffic: the client's sender and receiver, both relay-only,
through the impairment relay and coturn (sender → relay → coturn → relay → receiver).

``rtcprobe run SCENARIO --driver aiortc`` (rtcprobe/replay.py). Short runs (1–2 s of
stats) with small video keep these under ~10 s each.
"""

from __future__ import annotations

import collections
import json
import subprocess
from pathlib import Path
from typing import Any

import attrs
import pytest
from rtcprobe.core.errors import ConfigError
from rtcprobe.drivers.sim import simulate
from rtcprobe.netem.scenario import Scenario

from rtcprobe.cli import main as cli_main
from rtcprobe.replay import run_replay, run_scenario
from rtcprobe.server.coturn import INSTALL_HINT, CoturnNotInstalled, CoturnServer

pytestmark = [pytest.mark.turn, pytest.mark.timeout(120)]

DELAY_MS = 30
SCENARIO = {
    "name": "replay-test",
    "duration": 2,
    "seed": 5,
    "media": {"video": {"width": 320, "height": 240, "fps": 15}},
    "network": {"delay_ms": DELAY_MS},
}


def key_shape(value: Any) -> Any:
    """The report's structure: keys all the way down (lists by their first element)."""
    if isinstance(value, dict):
        return {k: key_shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [key_shape(value[0])] if value else []
    return None


def write_scenario(tmp_path: Path, data: dict[str, Any] = SCENARIO) -> Path:
    lines = [f'name = "{data["name"]}"', f'duration = {data["duration"]}', f'seed = {data["seed"]}',
             "[media]", "video = { width = 320, height = 240, fps = 15 }", "[network]", f"delay_ms = {DELAY_MS}"]
    path = tmp_path / "replay-test.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_replay_goes_through_the_relay_and_matches_the_sim_report_shape(
    coturn_binary: str, tshark: str, tmp_path: Path
) -> None:
    # 3 s of stats: the first RR echoing an SR comes back 1-3 s into the media (SRs and RRs go
    # out every 0.5-1.5 s), so 2 s could end before any rtt was measured.
    sc = Scenario.from_dict({**SCENARIO, "duration": 3})
    pcap = tmp_path / "replay.pcap"
    result = run_replay(sc, pcap=pcap)
    report = result.report
    assert report.ok, report.error
    d = report.to_dict()
    assert d["run"]["driver"] == "aiortc" and d["run"]["scenario"] == "replay-test" and d["run"]["seed"] == 5
    # Same keys as the simulator's report of the same scenario with aiortc's sender (the libwebrtc
    # model's also names itself: run.stack).
    sim = simulate(attrs.evolve(sc, stack="aiortc")).to_dict()
    assert key_shape(d) == key_shape(sim)
    # Both peer connections went through the relay (TURN URL = the relay's address), relay-only:
    # the receiving one's pair (what the report shows, as Twilio's) joins its relayed address to
    # the sender's.
    pair = d["selectedIceCandidatePairStats"]
    local = pair["localCandidate"]
    assert (local["candidateType"], local["url"], local["relayProtocol"]) == ("relay", result.relay_url, "udp")
    assert pair["remoteCandidate"]["candidateType"] == "relay"
    assert {c["candidateType"] for c in d["iceCandidateStats"]} == {"relay"}
    # Every datagram crossed the emulated link and was held for its delay.
    for counters in (result.uplink, result.downlink):
        # (Tear-down traffic after the test's end is let through untouched: "bypassed", counted
        # when received; one may still be on its way out when the relay stops.)
        assert counters.forwarded > 100 and counters.delayed <= counters.link.delivered
        assert 0 <= counters.forwarded - counters.delayed <= counters.bypassed
        assert counters.link.mean_added_delay == pytest.approx(DELAY_MS / 1000)
    # Two relay clients: each peer connection's TURN allocation, from its own socket.
    assert "clients  2 seen" in result.relay_summary
    # The report's rtt is the loop's: sender → TURN → receiver and back crosses the link four times.
    assert d["stats"]["rtt"] is not None and d["stats"]["rtt"]["min"] >= 4 * DELAY_MS - 1
    # The capture holds what the relay forwarded: TURN's STUN messages and the RTP inside ChannelData.
    assert result.pcap_packets == result.uplink.forwarded + result.downlink.forwarded
    out = subprocess.run([tshark, "-r", str(pcap), "-o", "rtp.heuristic_rtp:TRUE", "-o", "rtcp.heuristic_rtcp:TRUE",
                          "-T", "fields", "-e", "udp.srcport", "-e", "udp.dstport", "-e", "frame.protocols"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    seen = collections.Counter(p for _, _, protocols in rows for p in set(protocols.split(":")))
    assert seen["stun"] == result.pcap_packets  # TURN framing on every packet (messages or ChannelData)
    # Directions: the capture shows the real ends, so coturn's port is in every datagram; the
    # relay's uplink carries client → coturn, its downlink coturn → client, whichever peer.
    (turn_port, _), = collections.Counter(p for src, dst, _ in rows for p in {src, dst}).most_common(1)
    assert all(turn_port in (src, dst) for src, dst, _ in rows)
    rtp_up = collections.Counter(src for src, dst, p in rows if dst == turn_port and p.endswith(":rtp"))
    rtp_down = collections.Counter(dst for src, dst, p in rows if src == turn_port and p.endswith(":rtp"))
    # The media goes up from one peer connection (the sender) and comes down to the other (the
    # receiver): every RTP packet crosses both links.
    [(sender, up)], [(receiver, down)] = rtp_up.items(), rtp_down.items()
    assert sender != receiver and up > 100 and abs(up - down) <= 0.05 * up
    # RTCP both ways, each report crossing both links: the sender's SRs up and down to the
    # receiver, the receiver's RRs/REMBs up and down to the sender.
    rtcp = {(src, dst) for src, dst, p in rows if p.endswith(":rtcp")}
    assert rtcp == {(sender, turn_port), (turn_port, receiver), (receiver, turn_port), (turn_port, sender)}


def test_cli_run_with_the_aiortc_driver(coturn_binary: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_scenario(tmp_path)
    pcap = tmp_path / "run.pcap"
    assert cli_main(["run", str(path), "--driver", "aiortc", "--seed", "9", "--json", "--pcap", str(pcap)]) == 0
    captured = capsys.readouterr()
    d = json.loads(captured.out)
    assert d["run"] == {"driver": "aiortc", "scenario": "replay-test", "seed": 9, "version": d["run"]["version"]}
    assert [e["name"] for e in d["progressEvents"]][-1] == "mediaStarted"
    # Live progress on stderr, one line per step as it lands, as with the simulator.
    shown = [line.split()[1] for line in captured.err.splitlines() if line.startswith("rtcprobe: ")]
    assert shown == [e["name"] for e in d["progressEvents"]]
    assert pcap.stat().st_size > 10_000


def test_replay_through_a_configured_turn_server(coturn: CoturnServer) -> None:
    report = run_scenario(Scenario.from_dict({**SCENARIO, "duration": 1}), turn=(coturn.udp_url, coturn.secret))
    assert report.ok, report.error


def test_replay_with_the_wrong_turn_secret_fails_cleanly(coturn: CoturnServer) -> None:
    seen: list[object] = []
    report = run_scenario(Scenario.from_dict({**SCENARIO, "duration": 1}), turn=(coturn.udp_url, "wrong"),
                          on_progress=seen.append)
    assert report.error is not None and report.error.code == 53405
    # The partial report names the replay too (the core's run, not a default).
    assert report.run is not None and (report.run.driver, report.run.scenario, report.run.seed) == (
        "aiortc", "replay-test", 5)
    # The TURN server answered, refusing the relay's credentials: the message says which.
    assert "refused the credentials (401" in report.error.message
    # on_progress sees the core's events, the failure last.
    assert type(seen[-1]).__name__ == "Failed"


def test_replay_bad_input_is_a_config_error(monkeypatch: pytest.MonkeyPatch, coturn: CoturnServer) -> None:
    sc = Scenario.from_dict(SCENARIO)
    with pytest.raises(ConfigError, match="UDP only"):
        run_scenario(sc, turn=(coturn.tcp_url, coturn.secret))
    with pytest.raises(ConfigError, match="turn: or turns:"):
        run_scenario(sc, turn=("stun:127.0.0.1:3478", coturn.secret))
    monkeypatch.setenv("RTCPROBE_TURNSERVER", "no-such-turnserver-binary")
    with pytest.raises(CoturnNotInstalled, match=INSTALL_HINT):
        run_scenario(sc)


def test_cli_run_aiortc_without_coturn_exits_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RTCPROBE_TURNSERVER", "no-such-turnserver-binary")
    assert cli_main(["run", str(write_scenario(tmp_path)), "--driver", "aiortc"]) == 2
    err = capsys.readouterr().err
    assert INSTALL_HINT in err and "Traceback" not in err


@pytest.mark.parametrize("direction", ["uplink", "downlink"])
def test_loss_on_either_link_shows_in_the_reports_packet_loss(coturn: CoturnServer, direction: str) -> None:
    # The media crosses both links (sender → TURN on the uplink, TURN → receiver on the downlink)
    # and TURN forwards RTP as it came: a packet lost on either is a sequence gap at the receiver.
    other = "downlink" if direction == "uplink" else "uplink"
    sc = Scenario.from_dict({
        "name": f"{direction}-loss", "duration": 3, "seed": 11,
        "media": {"video": {"width": 320, "height": 240, "fps": 15}},
        "network": {"delay_ms": 5, direction: {"loss": 0.05}},
    })
    result = run_replay(sc, turn=(coturn.udp_url, coturn.secret))
    report = result.report
    assert report.ok, report.error
    # The relay dropped on that link only (so any loss in the report is that link's).
    counters = {"uplink": result.uplink, "downlink": result.downlink}
    assert counters[direction].link.dropped > 0 and counters[other].link.dropped == 0
    d = report.to_dict()
    assert d["stats"]["packetLoss"] is not None
    assert d["stats"]["packetLoss"]["average"] > 1.0, d["stats"]["packetLoss"]
    # Near the link's 5 %: retransmissions (RTX) are not the media stream's counters (aiortc
    # reports both SSRCs under one id; stats.media_inbound reads the media SSRC's own).
    assert d["stats"]["packetLoss"]["average"] < 15.0, d["stats"]["packetLoss"]
    assert d["stats"]["packetLoss"]["max"] < 40.0, [s["packetLoss"] for s in d["samples"]]


def test_a_loop_longer_than_the_sender_report_interval_still_measures_rtt(coturn: CoturnServer) -> None:
    # 300 ms each way: the loop (sender → TURN → receiver and back, the link four times) takes
    # 1.2 s, longer than aiortc's 0.5-1.5 s between SRs, so an RR rarely echoes the latest SR and
    # aiortc's own roundTripTime stays None. The driver matches an RR against any recent SR.
    sc = Scenario.from_dict({
        "name": "long-loop", "duration": 5, "seed": 3,
        "media": {"video": {"width": 320, "height": 240, "fps": 15}},
        "network": {"delay_ms": 300},
    })
    report = run_scenario(sc, turn=(coturn.udp_url, coturn.secret))
    assert report.ok, report.error
    d = report.to_dict()
    assert d["stats"]["rtt"] is not None, [s["rtt"] for s in d["samples"]]
    assert 1150 < d["stats"]["rtt"]["min"] and d["stats"]["rtt"]["max"] < 1400, d["stats"]["rtt"]
    assert d["networkQuality"]["level"] == 1  # scored on a 600 ms rtt (half the loop), not unknown
