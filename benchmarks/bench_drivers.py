"""Every built-in scenario through the three drivers, and the preflight's time to media per client.

    python benchmarks/bench_drivers.py [--duration 5] [--scenario NAME ...] [--runs 5]
                                       [--only scenarios|preflight]

Table 1, per scenario and driver (``rtcprobe run SCENARIO --driver ...``):

* ``sim``: the simulator (virtual clock) with the scenario's endpoint model: by default a
  browser's (``[media] stack = "libwebrtc"``; tables recorded before it became the default show
  the aiortc model's);
* ``aiortc``: real aiortc peers through the impairment relay and coturn (``rtcprobe.replay``);
* ``chromium``: rtcprobe.js in a headless Chromium (libwebrtc) through the same relay and coturn,
  both of its peer connections relay-only, the core in the embedded server.

The stats step is shortened to ``--duration`` seconds (default 5); scenarios with phases or
outages keep their own duration, or their events would fall outside the run. Columns: outcome
(``ok`` or the error code), the report's averages — rtt (ms, the loop's: sender -> TURN ->
receiver and back), jitter (ms), packet loss (%) —, the delivered bitrate (the receiver's average
incoming kbit/s) beside the sent one, the final network quality level, and when media started
(ms since the test's start).

Table 2: start -> ``mediaStarted`` of ``rtcprobe preflight`` on loopback through coturn, the Python
client (aiortc) beside Chromium, ``--runs`` runs each, interleaved (median, min, max), with the
steps on the way (medians) and the wall time of a whole test including starting the client
(Chromium's launch and page). Each run's clock starts when the test does (``runPreflight`` for
Chromium), so the browser's launch is not in its time to media.

Needs coturn and, for the chromium rows, Chromium and Playwright. Takes roughly 13 x 2 x
(duration + ~4 s) plus the longer scenarios: 5–6 minutes at the default.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

# The same scenario shortening and averaging as the sim-vs-real table (this folder is on sys.path
# when a benchmark runs as a script).
from bench_sim_vs_real import avg, fmt, shortened
from rtcprobe.core.config import MediaDemand
from rtcprobe.drivers.sim import run_simulation
from rtcprobe.scenarios import builtin_names, load

from rtcprobe.live import run_preflight
from rtcprobe.replay import run_replay
from rtcprobe.server.coturn import CoturnServer

DRIVERS = ("sim", "aiortc", "chromium")
STEPS = ("mediaAcquired", "connected", "iceConnected", "dtlsConnected", "mediaStarted")


def row(report: dict[str, Any]) -> dict[str, Any]:
    stats = report.get("stats")
    bitrate = report.get("bitrate") or {}
    incoming, outgoing = bitrate.get("incoming"), bitrate.get("outgoing")
    return {
        "outcome": "ok" if "error" not in report else str(report["error"]["code"]),
        "rtt": avg(stats, "rtt"),
        "jitter": avg(stats, "jitter", 1000.0),
        "loss": avg(stats, "packetLoss"),
        "in": None if incoming is None else incoming["average"],
        "out": None if outgoing is None else outgoing["average"],
        "level": (report.get("networkQuality") or {}).get("level"),
        "media": {e["name"]: e["duration"] for e in report["progressEvents"]}.get("mediaStarted"),
    }


def separator(header: str) -> str:
    """A Markdown table's second line for ``header``."""
    return "|" + "|".join("-" * len(cell) for cell in header.split("|")[1:-1]) + "|"


def scenario_table(names: list[str], duration: float) -> None:
    header = (f"| {'scenario':<23} | {'driver':<8} | {'s':>3} | {'outcome':<7} | {'rtt ms':>7} | {'jitter ms':>9} | "
              f"{'loss %':>6} | {'in kbps':>7} | {'out kbps':>8} | {'level':>5} | {'media ms':>8} |")
    print(header)
    print(separator(header))
    for name in names:
        sc = shortened(load(name), duration)
        for driver in DRIVERS:
            if driver == "sim":
                report = run_simulation(sc).report.to_dict()
            else:
                report = run_replay(sc, driver=driver).report.to_dict()
            r = row(report)
            print(f"| {sc.name:<23} | {driver:<8} | {sc.duration:>3g} | {r['outcome']:<7} | {fmt(r['rtt']):>7} | "
                  f"{fmt(r['jitter']):>9} | {fmt(r['loss'], '.2f'):>6} | {fmt(r['in'], '.0f'):>7} | "
                  f"{fmt(r['out'], '.0f'):>8} | {fmt(r['level']):>5} | {fmt(r['media'], '.0f'):>8} |")
            sys.stdout.flush()


async def preflight_once(turn: CoturnServer, driver: str) -> dict[str, float]:
    t0 = time.perf_counter()
    test = run_preflight(duration=1.0, media=MediaDemand(), turn_urls=[turn.udp_url], turn_secret=turn.secret,
                         driver=driver)
    report = await test.wait()
    wall = time.perf_counter() - t0
    assert report.ok and test.turn_tested, report.error
    steps = {e.name: e.duration for e in report.progress_events}
    return {**{name: steps[name] for name in STEPS}, "wall": wall * 1000}


def preflight_table(runs: int) -> None:
    results: dict[str, list[dict[str, float]]] = {"aiortc": [], "chromium": []}
    with CoturnServer() as turn:
        for _ in range(runs):  # interleaved, so drift in the machine's load hits both alike
            for driver, rows in results.items():
                rows.append(asyncio.run(preflight_once(turn, driver)))
    header = (f"| {'client':<8} | {'start -> mediaStarted ms: median':>32} | {'min':>5} | {'max':>5} | "
              + " | ".join(f"{s:>13}" for s in STEPS[:-1]) + f" | {'wall ms':>7} |")
    print(header)
    print(separator(header))
    for driver, rows in results.items():
        media = [r["mediaStarted"] for r in rows]
        cells = " | ".join(f"{statistics.median(r[s] for r in rows):>13.0f}" for s in STEPS[:-1])
        print(f"| {driver:<8} | {statistics.median(media):>32.0f} | {min(media):>5.0f} | {max(media):>5.0f} | "
              f"{cells} | {statistics.median(r['wall'] for r in rows):>7.0f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="stats step length in seconds (default 5)")
    parser.add_argument("--scenario", action="append", help="a built-in scenario name (repeatable; default all)")
    parser.add_argument("--runs", type=int, default=5, help="preflight runs per client for table 2 (default 5)")
    parser.add_argument("--only", choices=("scenarios", "preflight"), help="one table only")
    args = parser.parse_args()
    if args.only != "preflight":
        print(f"Table 1: every scenario through each driver (stats step {args.duration:g} s unless timed; "
              "column s: the run's duration)\n")
        scenario_table(args.scenario or builtin_names(), args.duration)
        print()
    if args.only != "scenarios":
        print(f"Table 2: preflight start -> mediaStarted on loopback through coturn, {args.runs} runs each "
              "(ms since the test's start; 640x480@30 and audio)\n")
        preflight_table(args.runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
