"""The simulator's libwebrtc endpoint model (``[media] stack = "libwebrtc"``, the default): what a
browser does on the networks that matter (docs/references.md#chromium), against the aiortc model
on the same links; the stack key's parsing and default; what the report says about the model;
determinism; and golden hashes of the built-in scenarios' reports as they are by default.

The libwebrtc hashes live in ``tests/golden/sim_reports_libwebrtc.json`` (the aiortc model's in
tests/test_golden_reports.py); a deliberate change of the model re-records them with
``RTCPROBE_UPDATE_GOLDEN=1`` and says why in its commit.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
from numpy.typing import NDArray
from rtcprobe.drivers.sim import SimDriver, SimResult, run_simulation
from rtcprobe.drivers.sim._libwebrtc import GccEstimator, LibwebrtcVideoSource, NackRtx
from rtcprobe.drivers.sim._media import Packets, VideoSource
from rtcprobe.drivers.sim._wire import RTCP_PLI
from rtcprobe.netem.models import ScenarioError
from rtcprobe.netem.scenario import Scenario
from rtcprobe.scenarios import builtin_names, load

import rtcprobe

GOLDEN = Path(__file__).parent / "golden" / "sim_reports_libwebrtc.json"
UPDATE = os.environ.get("RTCPROBE_UPDATE_GOLDEN") == "1"


def _scenario(stack: str, *, kbps: float | None = None, queue: int | None = None, loss: float = 0.0) -> Scenario:
    up: dict[str, Any] = {"delay_ms": 20}
    if kbps is not None:
        up |= {"bandwidth_kbps": kbps, "queue_packets": queue}
    if loss:
        up["loss"] = loss
    return Scenario.from_dict({"name": "t", "duration": 10, "media": {"stack": stack}, "network": {"uplink": up}})


def _stats(stack: str, seed: int = 1, **link: Any) -> dict[str, float]:
    d = json.loads(run_simulation(_scenario(stack, **link), seed=seed).report.to_json())
    return {"rtt": d["stats"]["rtt"]["average"], "loss": d["stats"]["packetLoss"]["average"],
            "kbps": d["bitrate"]["incoming"]["average"]}


def test_stack_key_parses_and_defaults_to_libwebrtc() -> None:
    assert Scenario.from_dict({"name": "t"}).stack == "libwebrtc"
    assert Scenario.from_dict({"name": "t", "media": {"stack": "aiortc"}}).stack == "aiortc"
    assert Scenario.from_dict({"name": "t", "media": {"stack": "libwebrtc"}}).stack == "libwebrtc"
    with pytest.raises(ScenarioError, match="stack"):
        Scenario.from_dict({"name": "t", "media": {"stack": "chrome"}})


def test_choosing_the_default_explicitly_changes_no_byte_and_aiortc_differs() -> None:
    scenario = load("lossy-wifi")
    default = run_simulation(scenario, seed=1).report.to_json()
    explicit = run_simulation(attrs.evolve(scenario, stack="libwebrtc"), seed=1).report.to_json()
    assert explicit == default
    assert run_simulation(attrs.evolve(scenario, stack="aiortc"), seed=1).report.to_json() != default


def test_the_report_names_the_libwebrtc_model_and_the_aiortc_model_keeps_its_bytes() -> None:
    """A sim report says ``stack: "libwebrtc"``; the aiortc model's has no stack key, so it keeps
    the bytes it had before the key existed (tests/test_golden_reports.py)."""
    scenario = load("clean-broadband")
    lw = json.loads(run_simulation(attrs.evolve(scenario, stack="libwebrtc"), seed=1).report.to_json())["run"]
    ai = json.loads(run_simulation(attrs.evolve(scenario, stack="aiortc"), seed=1).report.to_json())["run"]
    assert lw["stack"] == "libwebrtc" and lw["driver"] == "sim"
    assert "stack" not in ai and ai["driver"] == "sim"


@pytest.mark.parametrize("seed", [1, 2])
def test_small_queue_paced_and_backed_off_like_chrome(seed: int) -> None:
    """600 kbit/s, 30-packet queue: Chromium loses nothing, delivers ~440 kbit/s and adds
    50-70 ms of rtt; aiortc (and its model) overflow the queue."""
    base = _stats("libwebrtc", seed)["rtt"]
    lw = _stats("libwebrtc", seed, kbps=600, queue=30)
    ai = _stats("aiortc", seed, kbps=600, queue=30)
    assert lw["loss"] < 0.5
    assert 350 <= lw["kbps"] <= 560
    assert lw["rtt"] - base < 120
    assert ai["loss"] > lw["loss"] and ai["rtt"] > lw["rtt"]


def test_ramps_on_a_clean_link() -> None:
    """Chromium ramps VGA video toward 1.3-1.6 Mbit/s from its 300 kbit/s start (its first probe
    takes it to ~900 k); aiortc's model stays at ~550-700 kbit/s."""
    up = {"delay_ms": 20}
    lw = Scenario.from_dict({"name": "t", "duration": 20, "media": {"stack": "libwebrtc"}, "network": {"uplink": up}})
    rates = [s["incomingBitrate"] for s in json.loads(run_simulation(lw, seed=1).report.to_json())["samples"]
             if s["incomingBitrate"]]
    assert rates[0] < 0.8 * rates[-1]
    assert 1300 <= rates[-1] <= 1700
    assert _stats("libwebrtc")["kbps"] > 1.3 * _stats("aiortc")["kbps"]


def test_nack_repairs_frames_while_getstats_counts_the_loss() -> None:
    """3 % loss: NACK/RTX repairs nearly every lost video packet for the decoder (at most one
    keyframe request where tens of packets were retransmitted), but getStats' packetsLost counts
    the originals' loss as Chromium's does (a restored RTX packet stays out of the media stream's
    receive statistics): the loss reads as on the aiortc model, which has no NACK."""
    driver, result, _ = _run("libwebrtc", loss=0.03)
    assert driver.steady is not None and driver.steady.nack is not None
    assert driver.steady.nack.retransmitted >= 10
    assert sum(1 for p in result.packet_log if p.kind == "rtcp" and p.size == RTCP_PLI) <= 1
    lw, ai = _stats("libwebrtc", loss=0.03), _stats("aiortc", loss=0.03)
    assert lw["loss"] > 2.0 and abs(lw["loss"] - ai["loss"]) < 1.0


def _deep_queue_rtt(stack: str, seed: int) -> float:
    up = {"delay_ms": 20, "bandwidth_kbps": 700, "queue_packets": 300}
    sc = Scenario.from_dict({"name": "t", "duration": 10, "media": {"stack": stack}, "network": {"uplink": up}})
    return float(json.loads(run_simulation(sc, seed=seed).report.to_json())["stats"]["rtt"]["average"])


def test_trendline_keeps_a_deep_queue_from_standing() -> None:
    """700 kbit/s behind a 300-packet queue: GCC's trendline sees the queue grow within a few
    100 ms feedbacks and backs off to 0.85 x the acked rate, so the bottleneck queue drains; the
    window rule it replaced waited for 25-100 ms of standing queue (it added ~60 ms of rtt here)."""
    base = [_stats("libwebrtc", seed)["rtt"] for seed in (1, 2, 3)]
    deep = [_deep_queue_rtt("libwebrtc", seed) for seed in (1, 2, 3)]
    added = sum(d - b for d, b in zip(deep, base, strict=True)) / 3
    assert added < 45, added
    assert all(_deep_queue_rtt("aiortc", seed) > d for seed, d in zip((1, 2, 3), deep, strict=True))


def _run(stack: str, *, loss: float = 0.0, outages: list[list[float]] | None = None
         ) -> tuple[SimDriver, SimResult, float]:
    net: dict[str, Any] = {"delay_ms": 20}
    if loss:
        net["uplink"] = {"loss": loss}
    if outages:
        net["outages"] = outages
    sc = Scenario.from_dict({"name": "t", "duration": 12, "media": {"stack": stack}, "network": net})
    driver = SimDriver(sc, 1, packet_log=True)
    result = driver.run()
    report = json.loads(result.report.to_json())
    started = {e["name"]: e["duration"] for e in report["progressEvents"]}["mediaStarted"] / 1000.0
    return driver, result, started


def _keyframe_requests_after(result: SimResult, t: float) -> int:
    """The subscriber's PLIs (RTCP of a PLI's size, on its way up to TURN) sent after ``t``."""
    return sum(1 for p in result.packet_log
               if p.kind == "rtcp" and p.direction == "uplink" and p.size == RTCP_PLI and p.time_sent > t)


def _keyframes(driver: SimDriver) -> int:
    assert driver.steady is not None
    video = driver.steady.src[1]
    assert isinstance(video, VideoSource)
    return video.keyframes


def test_a_frame_nack_cannot_recover_gets_a_keyframe_request() -> None:
    """A 4 s outage: once packets flow again NACK asks for the lost ones, but the oldest have left
    the sender's 3 s history, so those frames are lost for good: the subscriber sends a PLI after
    media started and the encoder's next frame is a keyframe. A 2 s outage NACK recovers (no PLI,
    the first keyframe stays the only one); aiortc's model sends no PLI once playing."""
    driver, result, started = _run("libwebrtc", outages=[[3.0, 7.0]])
    assert _keyframe_requests_after(result, started) == 1
    assert _keyframes(driver) == 2
    short, short_result, short_started = _run("libwebrtc", outages=[[3.0, 5.0]])
    assert _keyframe_requests_after(short_result, short_started) == 0
    assert _keyframes(short) == 1
    _, ai_result, ai_started = _run("aiortc", outages=[[3.0, 7.0]])
    assert _keyframe_requests_after(ai_result, ai_started) == 0


def _video(n: int) -> NDArray[np.void]:
    t = np.arange(n) * 0.01
    return Packets.build(t=t, size=1200, payload=1142, kind=1, seq=np.arange(n), ts=0, frame=np.arange(n),
                         key=False, npk=1, sent=t).a


def test_nack_asks_again_for_a_lost_retransmission_and_gives_up_after_ten() -> None:
    """NackRtx's contract: a gap is asked for and its retransmission leaves; one that has not
    arrived a round trip (+ slack) later is asked for again; after ten retransmissions, or for a
    packet the sender no longer has, the frame is unrecoverable."""
    rtt = 0.04
    got = np.array([0, 1, 2, 3, 4, 6])
    nack = NackRtx(-1)
    nack.remember(_video(10), 0.0)
    nack.arrived(got, 0.05 + got * 0.01, rtt)
    now = 0.2
    for tries in range(1, 11):
        rtx = nack.take(now - 0.1, now)
        assert rtx["seq"].tolist() == [5] and nack.retransmitted == tries
        assert not nack.unrecoverable
        now += 1.0  # (seq 5 never arrives)
        nack.arrived(np.array([6 + tries]), np.array([now - 0.5]), rtt)
    assert nack.unrecoverable and not len(nack.take(now - 0.1, now))
    fresh = NackRtx(-1)
    fresh.remember(_video(10), 0.0)
    fresh.arrived(got, 0.05 + got * 0.01, rtt)
    rtx = fresh.take(0.1, 0.2)
    fresh.arrived(np.array([5, 7]), np.array([0.15, 0.16]), rtt)  # the retransmission made it
    assert rtx["seq"].tolist() == [5] and not fresh.unrecoverable
    fresh.arrived(np.array([30]), np.array([2.0]), rtt)  # 8-29: 10-29 never were in the history
    assert fresh.unrecoverable


def test_gcc_estimator_takes_arrivals_as_arrays_or_lists_alike() -> None:
    """Every arrival reaches the trendline however the pipeline hands it over: a 400 kbit/s
    bottleneck's growing queue (one-way delay rising 1 ms per 10 ms packet) reads as overuse
    either way, and the estimates agree."""
    t = 0.05 + np.arange(400) * 0.01 + np.arange(400) * 0.001
    sent = np.arange(400) * 0.01
    seq = np.arange(400)
    size = np.full(400, 1200)
    whole, few = GccEstimator(lambda _t: 400_000.0), GccEstimator(lambda _t: 400_000.0)
    estimates: list[tuple[float | None, float | None]] = []
    for k in range(0, 400, 50):
        whole.add(t[k : k + 50], sent[k : k + 50], seq[k : k + 50], size[k : k + 50])
        for j in range(k, k + 50, 5):
            few.add_few(t[j : j + 5].tolist(), sent[j : j + 5].tolist(), seq[j : j + 5].tolist(),
                        size[j : j + 5].tolist())
        now = float(t[k + 49])
        estimates.append((whole.update(now), few.update(now)))
    assert [a for a, _ in estimates] == [b for _, b in estimates]
    assert whole.overuses > 0 and whole.estimate is not None and whole.estimate < 400_000


@pytest.mark.parametrize("step", [0.013, 0.497, 0.991])
def test_the_pacer_hands_out_each_packet_once_in_its_interval(step: float) -> None:
    """Successive ``generate(until)`` calls (an interval each): every packet leaves after the
    previous interval's end and by this one's, in order, none lost or repeated — also when a
    frame's paced packets straddle the boundary (the rest leaves in the next interval)."""
    spec = Scenario.from_dict({"name": "t"}).media.video
    assert spec is not None
    src = LibwebrtcVideoSource(spec, 0.0, 4, np.random.default_rng(1), True)
    src.set_target(2_000_000.0)
    seqs: list[int] = []
    last_frame, straddled, until = -1, 0, 0.0
    while until < 5.0:
        prev, until = until, until + step
        a = src.generate(until).a
        if len(a):
            assert float(a["t"][0]) > prev and float(a["t"][-1]) <= until
            assert bool(np.all(a["t"][1:] >= a["t"][:-1]))
            straddled += int(a["frame"][0]) == last_frame
            last_frame = int(a["frame"][-1])
            seqs += a["seq"].tolist()
    assert seqs == list(range(len(seqs))) and straddled > 0


@pytest.mark.parametrize(("name", "seed", "changes"), [
    ("satellite", 2, {}),
    ("lossy-wifi", 1, {"loss": 0.02, "delay_ms": 200}),
])
def test_a_paced_frame_never_leaves_before_its_interval(name: str, seed: int, changes: dict[str, float]) -> None:
    """Runs where a frame used to be deferred to the next interval with its old send times (the
    link got them after later packets: "time went backwards")."""
    sc = load(name)
    sc = attrs.evolve(sc, stack="libwebrtc", uplink=attrs.evolve(sc.uplink, **changes),
                      downlink=attrs.evolve(sc.downlink, **changes))
    assert run_simulation(sc, seed=seed).report.error is None


def _report_in_child(name: str) -> str:
    code = ("import attrs; from rtcprobe.scenarios import load; from rtcprobe.drivers.sim import run_simulation; "
            f"s = attrs.evolve(load({name!r}), stack='libwebrtc'); print(run_simulation(s, seed=7).report.to_json())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout


def test_deterministic_across_processes() -> None:
    assert _report_in_child("bursty-loss") == _report_in_child("bursty-loss")


def _digest(text: str) -> str:
    marker = f'"version": "{rtcprobe.__version__}"'
    return hashlib.sha256(text.replace(marker, '"version": "<version>"').encode()).hexdigest()


@pytest.mark.parametrize("name", builtin_names())
def test_default_report_bytes_pinned(name: str) -> None:
    """The built-in scenarios as they run by default: with the libwebrtc model."""
    scenario = load(name)
    assert scenario.stack == "libwebrtc"
    value = _digest(run_simulation(scenario, seed=scenario.seed).report.to_json())
    data = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    if UPDATE:
        data[name] = value
        GOLDEN.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        return
    assert data.get(name) == value, f"{name}: the libwebrtc model's output changed"
