"""Golden hashes: every built-in scenario's simulated report and one pcap, byte for byte, with
the aiortc endpoint model (``[media] stack = "aiortc"``; the default model, libwebrtc's, has its
own hashes in tests/test_sim_libwebrtc.py).

Refactors and speed-ups of the simulator must not change a single byte of what it produces. The
hashes in ``tests/golden/sim_reports.json`` were recorded from ``rtcprobe run NAME --stack aiortc
--json`` (the scenario's own seed and seeds 1-3) and ``rtcprobe run lossy-wifi --stack aiortc
--pcap``; they predate the libwebrtc model and the switch of the default to it, and the aiortc
model's reports still carry no ``stack`` key so that they keep these bytes (core.report.RunInfo).
A deliberate behaviour change re-records them with ``RTCPROBE_UPDATE_GOLDEN=1 pytest
tests/test_golden_reports.py`` and says why in its commit.

The package version is part of every report's ``run`` block; it is replaced by a placeholder
before hashing so that a release does not look like a behaviour change.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
from rtcprobe.drivers.sim import run_simulation
from rtcprobe.netem.pcap import write_pcap
from rtcprobe.netem.scenario import Scenario
from rtcprobe.scenarios import builtin_names, load

import rtcprobe

GOLDEN = Path(__file__).parent / "golden" / "sim_reports.json"
UPDATE = os.environ.get("RTCPROBE_UPDATE_GOLDEN") == "1"
SEEDS = (None, 1, 2, 3)  # None: the scenario's own seed


def _normalised(text: str) -> bytes:
    marker = f'"version": "{rtcprobe.__version__}"'
    assert text.count(marker) == 1, "the report's run block should carry the version exactly once"
    return text.replace(marker, '"version": "<version>"').encode()


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _aiortc(name: str) -> Scenario:
    """A built-in scenario with the aiortc endpoint model, whatever the default is."""
    return attrs.evolve(load(name), stack="aiortc")


def _cases() -> list[tuple[str, int | None]]:
    return [(name, seed) for name in builtin_names() for seed in SEEDS]


def _key(name: str, seed: int | None) -> str:
    return f"{name}@{'own' if seed is None else seed}"


def _load() -> dict[str, str]:
    return json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}


def _store(key: str, value: str) -> None:
    data = _load()
    data[key] = value
    GOLDEN.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def _check(key: str, value: str) -> None:
    if UPDATE:
        _store(key, value)
        return
    expected = _load().get(key)
    assert expected is not None, f"no golden hash for {key}: record it with RTCPROBE_UPDATE_GOLDEN=1"
    assert value == expected, f"{key}: the simulator's output changed (was {expected[:12]}, now {value[:12]})"


@pytest.mark.parametrize(("name", "seed"), _cases(), ids=[_key(n, s) for n, s in _cases()])
def test_report_bytes_unchanged(name: str, seed: int | None) -> None:
    scenario = _aiortc(name)
    report = run_simulation(scenario, seed=scenario.seed if seed is None else seed).report
    _check(_key(name, seed), _digest(_normalised(report.to_json())))


def test_pcap_bytes_unchanged(tmp_path: Path) -> None:
    scenario = _aiortc("lossy-wifi")
    result = run_simulation(scenario, seed=scenario.seed, packet_log=True)
    path = tmp_path / "lossy-wifi.pcap"
    write_pcap(path, result.packet_log)
    _check("lossy-wifi.pcap", _digest(path.read_bytes()))


def test_cli_prints_the_same_bytes(tmp_path: Path) -> None:
    """The CLI path (`rtcprobe run NAME --stack aiortc --json --pcap`) gives exactly what the hashes
    were taken of."""
    pcap = tmp_path / "cli.pcap"
    out = subprocess.run(
        [sys.executable, "-m", "rtcprobe", "run", "lossy-wifi", "--stack", "aiortc", "--json", "--pcap", str(pcap)],
        capture_output=True, text=True, check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.endswith("\n")
    golden = _load()
    if UPDATE:
        return
    assert _digest(_normalised(out.stdout[:-1])) == golden[_key("lossy-wifi", None)]
    assert _digest(pcap.read_bytes()) == golden["lossy-wifi.pcap"]
