"""The same scenarios through the simulator and through real aiortc traffic, side by side.

    python benchmarks/bench_sim_vs_real.py [--duration 5] [--scenario NAME ...] [--seed N] [--markdown]

For each scenario (default: every built-in one): ``--driver sim`` (virtual clock, with the aiortc
endpoint model, ``[media] stack = "aiortc"``, whatever the scenario or the default says: the
comparison is with the real aiortc client) and
``--driver aiortc`` (``rtcprobe.replay``: the client's two peer connections, both relay-only,
through the impairment relay and coturn on 127.0.0.1 — the preflight's loop, sender → TURN →
receiver, crossing the emulated uplink and downlink as in the simulator), with the stats step
shortened to ``--duration`` seconds (scenarios with phases or outages keep their own duration, or
their events would fall outside the run). One table row per (scenario, driver): outcome, the
report's averages (rtt ms — the loop's, about twice the path's round trip —, jitter ms, packet
loss %), the final network quality level, the average outgoing bitrate, when media started, and
what crossed each link: packets delivered / dropped per direction, "q N" saying how many of the
drops were a full queue's (the simulator's link counters; for the real run the relay's, tear-down
traffic after the test's end excluded). The "real - sim"
row gives the differences the tolerances are about — loss in points (±2), rtt in % (±25 %), level
(±1) — and marks with ``!`` each one outside them (or where only one side has a value).

Needs coturn (apt-get install coturn). Takes roughly the sum of the durations plus ~3 s a run
(a failing scenario runs until its step timeout: duration + 10 s).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

import attrs
from rtcprobe.drivers.sim import run_simulation
from rtcprobe.netem.models import LinkCounters
from rtcprobe.netem.scenario import Scenario
from rtcprobe.scenarios import builtin_names, load

from rtcprobe.replay import run_replay

LOSS_POINTS = 2.0  # tolerances (issue 5)
RTT_RATIO = 0.25
LEVEL_STEPS = 1


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


def counts(c: LinkCounters) -> str:
    """delivered/dropped, with how many of the drops were the queue's (a full bottleneck)."""
    return f"{c.delivered}/{c.dropped}" + (f" (q {c.dropped_queue})" if c.dropped_queue else "")


def fmt(value: Any, spec: str = ".1f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec) if math.isfinite(value) else "-"
    return str(value)


def differences(sim: dict[str, Any], real: dict[str, Any]) -> dict[str, str]:
    """real - sim for loss (points), rtt (%), level, jitter (ms); '!' where outside the tolerances."""

    def both(key: str) -> tuple[float, float] | None:
        a, b = sim[key], real[key]
        return None if a is None or b is None else (float(a), float(b))

    def one_sided(key: str) -> str:
        return "-" if sim[key] is None and real[key] is None else "!only one"

    out = {}
    loss = both("loss")
    out["loss"] = one_sided("loss") if loss is None else \
        f"{loss[1] - loss[0]:+.2f}{' !' if abs(loss[1] - loss[0]) > LOSS_POINTS else ''}"
    rtt = both("rtt")
    out["rtt"] = one_sided("rtt") if rtt is None or rtt[0] == 0 else \
        f"{100 * (rtt[1] / rtt[0] - 1):+.0f}%{' !' if abs(rtt[1] / rtt[0] - 1) > RTT_RATIO else ''}"
    level = both("level")
    out["level"] = one_sided("level") if level is None else \
        f"{int(level[1] - level[0]):+d}{' !' if abs(level[1] - level[0]) > LEVEL_STEPS else ''}"
    jitter = both("jitter")
    out["jitter"] = "-" if jitter is None else f"{jitter[1] - jitter[0]:+.1f}"
    out["outcome"] = "" if sim["outcome"] == real["outcome"] else "!"
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="stats step length in seconds (default 5)")
    parser.add_argument("--scenario", action="append", help="a scenario name or path (repeatable; default: all)")
    parser.add_argument("--seed", type=int, help="override every scenario's seed")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args()

    md = args.markdown
    cols = ("scenario", "driver", "outcome", "rtt ms", "jitter ms", "loss %", "level", "out kbps", "media ms",
            "up deliv/drop", "down deliv/drop")
    if md:
        print("| " + " | ".join(cols) + " |")
        print("|" + "---|" * len(cols))
    else:
        header = (f"{'scenario':23s} {'driver':8s} {'outcome':7s} {'rtt ms':>8s} {'jitter ms':>9s} {'loss %':>7s} "
                  f"{'level':>5s} {'out kbps':>8s} {'media ms':>8s}  link up deliv/drop, down deliv/drop")
        print(header)
        print("-" * len(header))
    for name in args.scenario or builtin_names():
        sc = attrs.evolve(shortened(load(name), args.duration), stack="aiortc")  # (the real side ignores it)
        seed = sc.seed if args.seed is None else args.seed
        sim_result = run_simulation(sc, seed=seed)
        sim = row(sim_result.report.to_dict())
        t0 = time.perf_counter()
        real_result = run_replay(sc, seed=seed)
        wall = time.perf_counter() - t0
        real = row(real_result.report.to_dict())
        su, sd = sim_result.uplink, sim_result.downlink
        ru, rd = real_result.uplink.link, real_result.downlink.link
        links = {"sim": (counts(su), counts(sd)), "aiortc": (counts(ru), counts(rd))}
        diff = differences(sim, real)
        for driver, r in (("sim", sim), ("aiortc", real)):
            up, down = links[driver]
            cells = [sc.name, driver, r["outcome"], fmt(r["rtt"]), fmt(r["jitter"]), fmt(r["loss"], ".2f"),
                     fmt(r["level"]), fmt(r["out_kbps"], ".0f"), fmt(r["started"], ".0f"), up, down]
            if md:
                print("| " + " | ".join(cells) + " |")
            else:
                print(f"{cells[0]:23s} {cells[1]:8s} {cells[2]:7s} {cells[3]:>8s} {cells[4]:>9s} {cells[5]:>7s} "
                      f"{cells[6]:>5s} {cells[7]:>8s} {cells[8]:>8s}  {up}, {down}"
                      + (f"  ({wall:.1f} s wall)" if driver == "aiortc" else ""))
        cells = ["", "real - sim", diff["outcome"], diff["rtt"], diff["jitter"], diff["loss"], diff["level"], "",
                 "", "", ""]
        if md:
            print("| " + " | ".join(cells) + " |")
        else:
            print(f"{'':23s} {cells[1]:10s}{cells[2]:5s} {cells[3]:>8s} {cells[4]:>9s} {cells[5]:>7s} {cells[6]:>5s}")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
