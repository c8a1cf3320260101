"""The simulator's libwebrtc endpoint model (``[media] stack = "libwebrtc"``): what a browser does
on the networks that matter (docs/references.md#chromium), against the aiortc model on the same
links; the stack key's parsing; determinism; and golden hashes of the model's built-in reports.

The libwebrtc hashes live in ``tests/golden/sim_reports_libwebrtc.json``; a deliberate change of
the model re-records them with ``RTCPROBE_UPDATE_GOLDEN=1`` and says why in its commit.
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
import pytest
from rtcprobe.drivers.sim import run_simulation
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


def test_stack_key_parses_and_defaults_to_aiortc() -> None:
    assert Scenario.from_dict({"name": "t"}).stack == "aiortc"
    assert Scenario.from_dict({"name": "t", "media": {"stack": "libwebrtc"}}).stack == "libwebrtc"
    with pytest.raises(ScenarioError, match="stack"):
        Scenario.from_dict({"name": "t", "media": {"stack": "chrome"}})


def test_choosing_aiortc_explicitly_changes_no_byte() -> None:
    scenario = load("lossy-wifi")
    default = run_simulation(scenario, seed=1).report.to_json()
    explicit = run_simulation(attrs.evolve(scenario, stack="aiortc"), seed=1).report.to_json()
    assert explicit == default
    assert run_simulation(attrs.evolve(scenario, stack="libwebrtc"), seed=1).report.to_json() != default


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


def test_nack_recovers_isolated_losses() -> None:
    lw = _stats("libwebrtc", loss=0.03)
    ai = _stats("aiortc", loss=0.03)
    assert lw["loss"] < 2.0 < ai["loss"]


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
def test_libwebrtc_report_bytes_pinned(name: str) -> None:
    scenario = attrs.evolve(load(name), stack="libwebrtc")
    value = _digest(run_simulation(scenario, seed=scenario.seed).report.to_json())
    data = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    if UPDATE:
        data[name] = value
        GOLDEN.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        return
    assert data.get(name) == value, f"{name}: the libwebrtc model's output changed"
