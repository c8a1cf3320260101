"""The simulated-network driver: determinism, fidelity to the configured network, natural failures,
and Twilio Video's preflight topology (sender → TURN → receiver, both the client's)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from typing import Any

import pytest
from rtcprobe.core import errors
from rtcprobe.core.observations import (
    ConnectionStateChanged,
    DtlsStateChanged,
    Failed,
    IceStateChanged,
    Observation,
)
from rtcprobe.drivers.sim import PacketRecord, SimDriver, SimResult, link_seed, run_simulation, simulate
from rtcprobe.netem.scenario import Scenario


def scenario(network: dict[str, Any] | None = None, *, duration: float = 2.0, seed: int = 0,
             media: dict[str, Any] | None = None, **extra: Any) -> Scenario:
    data: dict[str, Any] = {"name": "test", "duration": duration, "seed": seed, **extra}
    if network is not None:
        data["network"] = network
    if media is not None:
        data["media"] = media
    return Scenario.from_dict(data)


def report(network: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    return run_simulation(scenario(network, **kw)).report.to_dict()


def avg(rep: dict[str, Any], key: str) -> float:
    return float(rep["stats"][key]["average"])


# --- determinism ---------------------------------------------------------------------------------

_SCRIPT = """
import sys
from rtcprobe.netem.scenario import Scenario
from rtcprobe.drivers.sim import simulate
sc = Scenario.from_dict({"name": "det", "duration": 3, "network": {
    "delay_ms": 20, "jitter_ms": 6, "loss": 0.02, "bandwidth_kbps": 3000, "queue_packets": 50}})
sys.stdout.write(simulate(sc, seed=int(sys.argv[1])).to_json())
"""


def _in_subprocess(seed: int) -> str:
    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(seed)], capture_output=True, text=True,
                          check=True, timeout=120)
    return done.stdout


def test_same_scenario_and_seed_give_byte_identical_reports_across_processes() -> None:
    first, second = _in_subprocess(5), _in_subprocess(5)
    assert first == second
    assert json.loads(first)["run"] == {"driver": "sim", "scenario": "det", "seed": 5, "stack": "libwebrtc",
                                        "version": json.loads(first)["run"]["version"]}  # (the default model)
    assert json.loads(first)["stats"] is not None


def test_another_seed_gives_another_report() -> None:
    a, b = json.loads(_in_subprocess(5)), json.loads(_in_subprocess(6))
    assert a != b
    assert [s["packetLoss"] for s in a["samples"]] != [s["packetLoss"] for s in b["samples"]]


def test_in_process_runs_repeat_exactly_and_seed_defaults_to_the_scenarios() -> None:
    sc = scenario({"delay_ms": 10, "jitter_ms": 4, "loss": 0.01}, seed=11)
    assert simulate(sc).to_json() == simulate(sc, seed=11).to_json()
    run = simulate(sc).run
    assert run is not None and run.seed == 11


# --- fidelity --------------------------------------------------------------------------------------


@pytest.mark.parametrize("delay_ms", [5, 40, 150])
def test_rtt_is_the_loop_twice_the_path_round_trip_and_the_scorer_gets_half(delay_ms: float) -> None:
    # SR: sender → TURN → receiver; RR: receiver → TURN → sender. Four crossings of the access
    # link, whose round trip is 2d: the report says 4d, as Twilio Video's preflight would.
    result = run_simulation(scenario({"delay_ms": delay_ms}, duration=4))
    rtt = result.report.to_dict()["stats"]["rtt"]
    # RTCP's DLSR is truncated to 1/65536 s, so the measured rtt may exceed 4d by ~15 µs.
    assert 4 * delay_ms <= rtt["min"] <= rtt["max"] <= 4 * delay_ms + 0.1
    assert result.report.to_dict()["stats"]["jitter"]["max"] < 0.0005  # no jitter configured: clock rounding
    # The network-quality scorer is fed the client <-> TURN round trip: half the loop's.
    fed = [side.rtt for _, q in result.scorer_inputs
           for side in (q.audio_send, q.audio_recv, q.video_send, q.video_recv) if side is not None and side.rtt]
    assert fed and all(2 * delay_ms <= 1000 * r <= 2 * delay_ms + 0.05 for r in fed), fed


def test_rtt_with_jitter_stays_near_the_loop() -> None:
    rep = report({"delay_ms": 50, "jitter_ms": 5}, duration=6)
    assert 190 <= avg(rep, "rtt") <= 220


def test_an_asymmetric_path_is_crossed_both_ways_twice() -> None:
    # 10 ms up, 40 ms down: every round trip of the loop is (10 + 40) x 2, whichever way it starts.
    rep = report({"uplink": {"delay_ms": 10}, "downlink": {"delay_ms": 40}}, duration=4)
    assert 100 <= rep["stats"]["rtt"]["min"] <= rep["stats"]["rtt"]["max"] <= 100.1


def _pooled_loss(network: dict[str, Any], seeds: range) -> float:
    # aiortc's model: no NACK/RTX, so every packet a hop loses counts (a browser's retransmits video)
    return statistics.fmean(avg(report(network, duration=10, seed=s, media={"stack": "aiortc"}), "packetLoss")
                            for s in seeds)


@pytest.mark.parametrize(("where", "hops"), [("uplink", 1), ("downlink", 1), ("both", 2)])
def test_random_loss_compounds_over_the_hops_media_crosses(where: str, hops: int) -> None:
    p = 0.03
    net: dict[str, Any] = {"delay_ms": 10}
    if where == "both":
        net["loss"] = p
    else:
        net[where] = {"loss": p}
    expected = 100 * (1 - (1 - p) ** hops)
    measured = _pooled_loss(net, range(4))
    # ~4 x 10 s x ~110 packets/s: the standard error of the pooled rate is about 0.35 points.
    assert abs(measured - expected) < 1.5, (measured, expected)


def test_jitter_rises_with_configured_jitter() -> None:
    measured = [avg(report({"delay_ms": 20, "jitter_ms": j}, duration=4), "jitter") * 1000 for j in (0, 4, 15, 40)]
    assert measured[0] < 0.5
    assert measured == sorted(measured) and len(set(measured)) == 4, measured
    assert measured[-1] > 10


def test_bandwidth_below_demand_shows_as_loss_or_delay_and_lowers_the_level() -> None:
    free = report({"delay_ms": 20}, duration=8)
    tight = report({"delay_ms": 20, "uplink": {"bandwidth_kbps": 300, "queue_packets": 40}}, duration=8)
    assert avg(tight, "packetLoss") > avg(free, "packetLoss") + 1 or avg(tight, "rtt") > avg(free, "rtt") + 50
    assert tight["networkQuality"]["level"] < free["networkQuality"]["level"] == 5
    assert tight["bitrate"]["outgoing"]["average"] < free["bitrate"]["outgoing"]["average"]


def test_same_link_scores_hd_lower_than_a_small_video() -> None:
    link = {"delay_ms": 30, "bandwidth_kbps": 800, "queue_packets": 60}
    hd = report(link, duration=8, media={"video": {"width": 1280, "height": 720, "fps": 30}})
    small = report(link, duration=8, media={"video": {"width": 320, "height": 180, "fps": 15}})
    assert hd["networkQuality"]["level"] < small["networkQuality"]["level"]


def test_a_clean_link_scores_five_and_reports_the_receivers_candidates_on_test_net() -> None:
    rep = report({"delay_ms": 10})
    assert "error" not in rep
    assert rep["networkQuality"]["level"] == 5
    assert [e["name"] for e in rep["progressEvents"]] == [
        "mediaAcquired", "connected", "iceConnected", "dtlsConnected", "peerConnectionConnected",
        "mediaSubscribed", "mediaStarted",
    ]
    # As the aiortc client reports them (drivers/aiortc/candidates.py): the receiving peer
    # connection's own candidates (host, and relayed through its allocation, with the TURN URL)
    # and the relay-only sender's relayed candidate as the receiver learned it (no URL).
    cands = rep["iceCandidateStats"]
    assert {c["transportId"] for c in cands} == {"subscriber"}
    assert all(c["address"].startswith("192.0.2.") for c in cands)
    assert sorted((c["candidateType"], c["url"] is not None) for c in cands) == [
        ("host", False), ("relay", False), ("relay", True)]
    turn = next(c for c in cands if c["url"])
    assert (turn["url"], turn["relayProtocol"]) == ("turn:192.0.2.1:3478?transport=udp", "udp")
    # The selected pair: the receiver's host candidate and the sender's relayed one, on TURN.
    pair = rep["selectedIceCandidatePairStats"]
    local, remote = pair["localCandidate"], pair["remoteCandidate"]
    assert (local["candidateType"], local["address"]) == ("host", "192.0.2.10")
    assert (remote["candidateType"], remote["address"], remote["url"]) == ("relay", "192.0.2.1", None)
    assert remote in cands and local in cands


def test_progress_timing_follows_the_round_trips() -> None:
    fast = {e["name"]: e["duration"] for e in report({"delay_ms": 10})["progressEvents"]}
    slow = {e["name"]: e["duration"] for e in report({"delay_ms": 100})["progressEvents"]}
    # TCP handshake + WebSocket upgrade + ice/iced: three round trips.
    assert fast["connected"] == pytest.approx(60, abs=1)
    assert slow["connected"] == pytest.approx(600, abs=1)
    assert all(slow[k] > fast[k] for k in fast if k != "mediaAcquired")


def test_rtt_only_appears_once_a_receiver_report_echoed_a_sender_report() -> None:
    rtts = [s["rtt"] for s in report({"delay_ms": 20}, duration=5)["samples"]]
    first_known = next(i for i, r in enumerate(rtts) if r is not None)
    assert all(r is not None for r in rtts[first_known:])
    assert all(r is None for r in rtts[:first_known])


@pytest.mark.parametrize(("stack", "kbps"), [("aiortc", 96), ("libwebrtc", 32)])
def test_audio_only_starts_media_on_the_first_audio_packet(stack: str, kbps: float) -> None:
    rep = report({"delay_ms": 20}, media={"video": False, "stack": stack})
    assert rep.get("error") is None
    assert "mediaStarted" in {e["name"] for e in rep["progressEvents"]}
    assert rep["bitrate"]["outgoing"]["average"] == pytest.approx(kbps, rel=0.05)  # Opus: aiortc's, a browser's


# --- failures come out of the network ------------------------------------------------------------


def test_a_dead_uplink_times_the_signaling_step_out() -> None:
    rep = report({"uplink": {"outage": True}})
    assert rep["error"]["code"] == errors.SIGNALING_TIMEOUT.code
    assert [e["name"] for e in rep["progressEvents"]] == ["mediaAcquired"]
    assert rep["stats"] is None and rep["iceCandidateStats"] == []


def test_a_dead_downlink_does_too() -> None:
    rep = report({"downlink": {"outage": True}})
    assert rep["error"]["code"] == 53002


def test_a_long_outage_during_ice_fails_the_media_connection() -> None:
    rep = report({"delay_ms": 20, "outages": [[0.3, 500.0]]})
    assert rep["error"]["code"] == errors.MEDIA_CONNECTION.code
    names = [e["name"] for e in rep["progressEvents"]]
    assert "connected" in names and "iceConnected" not in names


def test_a_short_outage_drops_the_level_which_then_recovers() -> None:
    rep = report({"delay_ms": 15, "outages": [[3.5, 6.0]]}, duration=14, seed=1)
    assert rep.get("error") is None
    levels = [s["level"] for s in rep["samples"]]
    low = levels.index(min(levels))
    assert levels[0] == 5 and min(levels) <= 1
    assert levels[-1] > min(levels) and low < len(levels) - 1
    assert max(s["packetLoss"] or 0 for s in rep["samples"]) > 50


def test_consent_failure_feeds_disconnected_and_recovery_completed() -> None:
    sc = scenario({"delay_ms": 15, "outages": [[3.0, 9.0]]}, duration=12, seed=2)
    seen: list[tuple[float, str, str]] = []

    def spy(now: float, obs: Observation) -> None:
        if isinstance(obs, IceStateChanged):
            seen.append((now, obs.role.value, obs.state))

    SimDriver(sc, 2, on_observation=spy).run()
    states = [s for _, _, s in seen]
    assert "disconnected" in states
    i = states.index("disconnected")
    assert "completed" in states[i:]
    t_down = seen[i][0]
    assert 3.0 + 2.5 <= t_down <= 9.0  # only after 2.5 s without packets, inside the outage


def test_stop_ends_the_test_promptly_with_the_partial_report() -> None:
    result = run_simulation(scenario({"delay_ms": 20}, duration=10), stop_at=4.0)
    failed = [e for e in result.events if isinstance(e, Failed)]
    assert len(failed) == 1 and failed[0].error.code == errors.STOPPED.code
    rep = result.report.to_dict()
    assert rep["testTiming"]["duration"] == pytest.approx(4000)
    assert rep["stats"] is None and len(rep["samples"]) >= 2


# --- the packet log ------------------------------------------------------------------------------


def test_packet_log_records_every_packet_offered_to_the_links() -> None:
    result = run_simulation(scenario({"delay_ms": 20, "loss": 0.02}), packet_log=True)
    log = result.packet_log
    assert len(log) == result.uplink.sent + result.downlink.sent == result.packets
    assert {r.kind for r in log} == {"tcp", "stun", "dtls", "rtp", "rtcp"}
    assert {r.direction for r in log} == {"uplink", "downlink"}
    assert [r.time_sent for r in log] == sorted(r.time_sent for r in log)
    dropped = sum(r.time_delivered is None for r in log)
    assert dropped == result.uplink.dropped + result.downlink.dropped > 0
    assert all(r.time_delivered >= r.time_sent for r in log if r.time_delivered is not None)
    sent, delivered, direction, kind, size = log[0]  # unpacks like a tuple
    assert (kind, direction, size) == ("tcp", "uplink", 60) and delivered is not None and sent == 0.0


def test_without_the_log_nothing_is_kept() -> None:
    assert run_simulation(scenario({"delay_ms": 20})).packet_log == ()


def test_both_peer_connections_report_their_own_states() -> None:
    seen: list[tuple[str, str, str]] = []

    def spy(now: float, obs: Observation) -> None:
        if isinstance(obs, IceStateChanged | DtlsStateChanged | ConnectionStateChanged):
            seen.append((type(obs).__name__, obs.role.value, obs.state))

    SimDriver(scenario({"delay_ms": 5}), 0, on_observation=spy).run()
    for role in ("publisher", "subscriber"):
        mine = [(kind, state) for kind, r, state in seen if r == role]
        assert mine.index(("IceStateChanged", "checking")) < mine.index(("IceStateChanged", "completed"))
        assert mine.index(("DtlsStateChanged", "connecting")) < mine.index(("DtlsStateChanged", "connected"))
        assert ("ConnectionStateChanged", "connected") in mine
    # The sender is the DTLS server: the receiver (answerer, setup:active) finishes last.
    connected = [r for kind, r, state in seen if (kind, state) == ("DtlsStateChanged", "connected")]
    assert connected == ["publisher", "subscriber"]


def _rtp(result: SimResult, direction: str) -> list[PacketRecord]:
    return [r for r in result.packet_log if r.kind == "rtp" and r.direction == direction]


def test_every_media_packet_crosses_the_uplink_then_the_downlink() -> None:
    # (aiortc's model: its RTCP is the sizes below; the libwebrtc model's adds its NACKs)
    result = run_simulation(scenario({"delay_ms": 10}, media={"stack": "aiortc"}), packet_log=True)
    up, down = _rtp(result, "uplink"), _rtp(result, "downlink")
    # TURN forwards each delivered packet at once: one downlink copy per uplink one (the last
    # ones still on their way up when the test ended aside), leaving as it arrived.
    assert len(up) > 200 and 0 <= len(up) - len(down) <= 5
    assert [r.time_sent for r in down] == [r.time_delivered for r in up[:len(down)]]
    # ChannelData framing on the sender's leg only: the receiver's pair is its host candidate.
    assert [u.size - d.size for u, d in zip(up, down, strict=False)] == [4] * len(down)
    # RTCP both ways, each report going up then down: the sender's SRs (94 bytes) through its
    # channel up (+4), plain down; the receiver's RRs (74) and REMBs (70) plain up, down through
    # the sender's channel (+4).
    rtcp = {d: {r.size for r in result.packet_log if r.kind == "rtcp" and r.direction == d}
            for d in ("uplink", "downlink")}
    assert rtcp == {"uplink": {98, 74, 70}, "downlink": {94, 78, 74}}


def test_the_receivers_estimate_follows_the_whole_loop() -> None:
    # Only the downlink is narrow: the sender learns of it from the receiver's REMB through TURN
    # and backs off below the 640x480 default.
    rep = report({"delay_ms": 20, "downlink": {"bandwidth_kbps": 400, "queue_packets": 60}}, duration=8)
    free = report({"delay_ms": 20}, duration=8)
    assert rep["bitrate"]["outgoing"]["average"] < 0.8 * free["bitrate"]["outgoing"]["average"]


def test_public_api_takes_a_builtin_name_a_path_or_a_scenario() -> None:
    from rtcprobe.scenarios import path_of

    import rtcprobe

    by_name = rtcprobe.simulate("clean-broadband")
    assert by_name.to_json() == rtcprobe.simulate(path_of("clean-broadband")).to_json()
    assert by_name.run is not None and by_name.run.scenario == "clean-broadband"
    other = rtcprobe.simulate("clean-broadband", seed=99)
    assert other.run is not None and other.run.seed == 99 and other.to_json() != by_name.to_json()


def test_six_failed_consent_checks_fail_the_test_mid_call() -> None:
    # The network dies for good during the stats step: aioice gives up after 6 consent checks
    # (4-6 s apart), long before this test's own step timeout (duration + 10 s).
    rep = report({"delay_ms": 15, "outages": [[4.0, 1000.0]]}, duration=45)
    assert rep["error"]["code"] == errors.MEDIA_CONNECTION.code
    assert "ICE failed" in rep["error"]["message"]
    assert 4.0 + 20 < rep["testTiming"]["duration"] / 1000 < 4.0 + 40


def test_link_seed_gives_a_relay_the_simulators_link_draws() -> None:
    # rtcprobe run --driver aiortc builds its impairment relay's links from link_seed(seed): the
    # n-th packet on each link meets the same loss and jitter draws as in the simulation.
    import numpy as np

    sc = scenario({"delay_ms": 20, "jitter_ms": 5, "loss_model": {"kind": "gilbert-elliott", "p": 0.05, "r": 0.3}})
    sim = SimDriver(sc, 7).path.links
    relay_up, relay_down = sc.build_links(np.random.default_rng(link_seed(7)))
    for ours, theirs in ((sim["uplink"], relay_up), (sim["downlink"], relay_down)):
        fates = [(ours.send(i * 0.01, 500), theirs.send(i * 0.01, 500)) for i in range(400)]
        assert all(a == b for a, b in fates) and any(a is None for a, _ in fates)
    # (the seed itself, as the relay took it before, draws otherwise)
    plain_up, _ = sc.build_links(np.random.default_rng(7))
    fresh_up = SimDriver(sc, 7).path.links["uplink"]
    assert [plain_up.send(i * 0.01, 500) for i in range(400)] != [fresh_up.send(i * 0.01, 500) for i in range(400)]


@pytest.mark.parametrize("stack", ["aiortc", "libwebrtc"])
@pytest.mark.parametrize("network", [{"delay_ms": 30, "jitter_ms": 5, "loss": 0.02},
                                     {"loss": 1.0}, {"bandwidth_kbps": 150, "queue_packets": 10}])
def test_a_finished_run_leaves_nothing_for_the_cycle_collector(stack: str, network: dict[str, Any]) -> None:
    """A run's objects are freed by reference counting as soon as the driver goes: the cycle
    collector would otherwise find hundreds of them after every run (and run about once a run)."""
    import gc

    sc = scenario(network, duration=4.0, seed=3, media={"stack": stack})
    gc.collect()
    gc.disable()
    try:
        driver = SimDriver(sc, sc.seed)
        result = driver.run()
        assert driver.steady_at is None or driver.steady_at > 0  # (what a caller reads after the run stays)
        assert len(driver.pcs) in (0, 2)
        del driver
        assert gc.collect() == 0
        assert result.report.to_json()
    finally:
        gc.enable()
