"""The same scenarios through the simulator and through real aiortc traffic, side by side.

    python benchmarks/bench_sim_vs_real.py [--duration 5] [--scenario NAME ...] [--seed N]

For each scenario: ``--driver sim`` (virtual clock) and ``--driver aiortc`` (real peers through
the impairment relay and coturn on 127.0.0.1, ``rtcprobe.replay``), with the
stats step shortened to ``--duration`` seconds (scenarios with phases or outages keep their own
duration, or their events would fall outside the run). One table row per (scenario, driver):
outcome, the report's averages (rtt ms, jitter ms, packet loss %), the final network quality
level, the average outgoing bitrate, when media started, and what crossed each link: packets
delivered / dropped per direction (the simulator's link counters; for the real run the relay's,
tear-down traffic after the test's end excluded). The "real/sim" rows divide the two.

Needs coturn (apt-get install coturn). Takes roughly the sum of the durations plus ~2 s a run.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

import attrs
from rtcprobe.drivers.sim import run_simulation
from rtcprobe.netem.scenario import Scenario
from rtcprobe.scenarios import load

from rtcprobe.replay import run_replay

DEFAULT_SCENARIOS = (
    "clean-broadband", "lossy-wifi", "bursty-loss", "nepal-india", "congested-uplink", "satellite",
    "audio-only-poor", "short-outage",
)


def shortened(sc: Scenario, duration: float) -> Scenario:
    timed = sc.phases.uplink or sc.phases.downlink or sc.uplink.outages or sc.downlink.outages
    return sc if timed else attrs.evolve(sc, duration=min(sc.duration, duration))


def avg(stats: dict[str, Any] | None, key: str, scale: float = 1.0) -> float | None:
    if not stats or stats.get(key) is None:
        return None
    return float(stats[key]["average"]) * scale


def row(report: dict[str, Any]) -> dict[str, Any]:
    stats = report.get("stats")
    started = {e["name"]: e["duration"] for e in report["progressEvents"]}.get("mediaStarted")
    bitrate = report.get("bitrate") or {}
    out = bitrate.get("outgoing")
    return {
        "outcome": "ok" if "error" not in report else str(report["error"]["code"]),
        "rtt": avg(stats, "rtt"),
        "jitter": avg(stats, "jitter", 1000.0),
        "loss": avg(stats, "packetLoss"),
        "level": (report.get("networkQuality") or {}).get("level"),
        "out_kbps": None if out is None else out["average"],
        "started": started,
    }


def fmt(value: Any, spec: str = ".1f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec) if math.isfinite(value) else "-"
    return str(value)


def ratio(a: Any, b: Any) -> str:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="stats step length in seconds (default 5)")
    parser.add_argument("--scenario", action="append", help="a scenario name or path (repeatable)")
    parser.add_argument("--seed", type=int, help="override every scenario's seed")
    args = parser.parse_args()

    header = (f"{'scenario':18s} {'driver':7s} {'outcome':7s} {'rtt ms':>8s} {'jitter ms':>9s} {'loss %':>7s} "
              f"{'level':>5s} {'out kbps':>8s} {'media ms':>8s}  link up deliv/drop, down deliv/drop")
    print(header)
    print("-" * len(header))
    for name in args.scenario or DEFAULT_SCENARIOS:
        sc = shortened(load(name), args.duration)
        seed = sc.seed if args.seed is None else args.seed
        sim_result = run_simulation(sc, seed=seed)
        sim = row(sim_result.report.to_dict())
        t0 = time.perf_counter()
        real_result = run_replay(sc, seed=seed)
        wall = time.perf_counter() - t0
        real = row(real_result.report.to_dict())
        su, sd = sim_result.uplink, sim_result.downlink
        ru, rd = real_result.uplink.link, real_result.downlink.link
        sim_links = f"{su.delivered}/{su.dropped}, {sd.delivered}/{sd.dropped}"
        real_links = f"{ru.delivered}/{ru.dropped}, {rd.delivered}/{rd.dropped}  ({wall:.1f} s wall)"
        for driver, r, extra in (("sim", sim, sim_links), ("aiortc", real, real_links)):
            print(f"{sc.name:18s} {driver:7s} {r['outcome']:7s} {fmt(r['rtt']):>8s} {fmt(r['jitter']):>9s} "
                  f"{fmt(r['loss'], '.2f'):>7s} {fmt(r['level']):>5s} {fmt(r['out_kbps'], '.0f'):>8s} "
                  f"{fmt(r['started'], '.0f'):>8s}  {extra}")
        print(f"{'':18s} {'real/sim':7s} {'':7s} {ratio(real['rtt'], sim['rtt']):>8s} "
              f"{ratio(real['jitter'], sim['jitter']):>9s} {ratio(real['loss'], sim['loss']):>7s} "
              f"{'':>5s} {ratio(real['out_kbps'], sim['out_kbps']):>8s} {ratio(real['started'], sim['started']):>8s}")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
