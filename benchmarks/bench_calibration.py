"""How well the simulator's endpoint models predict a browser: every built-in scenario (the tuning
set) and the held-out scenarios in scenarios/heldout/ (never used for tuning) through ``--driver
sim`` with each stack model (``[media] stack = "aiortc"`` and ``"libwebrtc"``, several seeds) and
through ``--driver chromium`` (rtcprobe.js in a headless Chromium behind the impairment relay and
coturn, 1-2 repetitions), then the per-metric agreement of each model with Chromium.

    python benchmarks/bench_calibration.py [--seeds 3] [--reps 1] [--duration 8]
                                           [--scenario NAME ...] [--no-chromium]
                                           [--save FILE.json] [--load FILE.json]

Metrics are the report's: rtt (ms, the loop's), jitter (ms), packet loss (%), delivered bitrate
(the receiver's average incoming kbit/s), the final and the minimum network-quality level, and
the time to ``mediaStarted`` (ms). A model agrees with Chromium on a metric in a scenario when its
mean over the seeds is within the tolerance of Chromium's mean over the repetitions:

* loss within 2 points; rtt within 25 %; delivered bitrate within 30 %;
* final and minimum level within 1;
* jitter within 50 % or 5 ms (whichever is wider: a few ms of jitter are timer noise in a browser);
* media start within 50 % or 300 ms (the browser's start is dominated by its own scheduling).

The first table lists every scenario's numbers, the second the share of scenarios that agree per
metric, for the tuning set and the held-out set separately. ``--save`` keeps the raw numbers
(Chromium is slow: 16 scenarios x ~10-15 s per repetition) and ``--load`` prints the tables
again from them. Needs coturn, Chromium and Playwright unless ``--no-chromium``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import attrs
from rtcprobe.drivers.sim import run_simulation
from rtcprobe.netem.scenario import Scenario
from rtcprobe.scenarios import builtin_names, load

HELDOUT = Path(__file__).resolve().parent.parent / "scenarios" / "heldout"
STACKS = ("aiortc", "libwebrtc")
METRICS = ("rtt", "jitter", "loss", "in", "level", "min_level", "media")


def agree(metric: str, model: float, real: float) -> bool:
    """The tolerances of the module's docstring."""
    diff = abs(model - real)
    if metric == "loss":
        return diff <= 2.0
    if metric == "rtt":
        return diff <= 0.25 * abs(real)
    if metric == "in":
        return diff <= 0.30 * abs(real)
    if metric in ("level", "min_level"):
        return diff <= 1.0
    if metric == "jitter":
        return diff <= max(5.0, 0.5 * abs(real))
    return diff <= max(300.0, 0.5 * abs(real))  # media


def _avg(stats: dict[str, Any] | None, key: str, scale: float = 1.0) -> float | None:
    if not stats or stats.get(key) is None:
        return None
    return float(stats[key]["average"]) * scale


def metrics(report: dict[str, Any]) -> dict[str, float | None]:
    stats = report.get("stats")
    incoming = (report.get("bitrate") or {}).get("incoming")
    levels = [s["level"] for s in report.get("samples") or () if s.get("level") is not None]
    level = (report.get("networkQuality") or {}).get("level")
    media = {e["name"]: e["duration"] for e in report["progressEvents"]}.get("mediaStarted")
    return {
        "rtt": _avg(stats, "rtt"), "jitter": _avg(stats, "jitter", 1000.0), "loss": _avg(stats, "packetLoss"),
        "in": None if incoming is None else float(incoming["average"]),
        "level": None if level is None else float(level), "min_level": float(min(levels)) if levels else None,
        "media": None if media is None else float(media),
    }


def mean(runs: list[dict[str, float | None]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for m in METRICS:
        values = [r[m] for r in runs if r[m] is not None]
        out[m] = statistics.fmean(v for v in values if v is not None) if values else None
    return out


def scenarios(names: list[str] | None, duration: float) -> list[tuple[str, Scenario]]:
    """(set, scenario) for the tuning set and the held-out set, shortened to ``duration`` unless
    timed events need their own."""
    out = [("tuning", load(n)) for n in builtin_names()] + [
        ("held-out", Scenario.from_toml(p)) for p in sorted(HELDOUT.glob("*.toml"))]
    if names:
        out = [(s, sc) for s, sc in out if sc.name in names]
    short = []
    for s, sc in out:
        timed = sc.phases.uplink or sc.phases.downlink or sc.uplink.outages or sc.downlink.outages
        short.append((s, sc if timed else attrs.evolve(sc, duration=min(sc.duration, duration))))
    return short


def collect(chosen: list[tuple[str, Scenario]], seeds: int, reps: int, chromium: bool) -> list[dict[str, Any]]:
    rows = []
    for which, sc in chosen:
        row: dict[str, Any] = {"set": which, "name": sc.name}
        for stack in STACKS:
            s = attrs.evolve(sc, stack=stack)
            row[stack] = mean([metrics(run_simulation(s, seed=sc.seed + k).report.to_dict()) for k in range(seeds)])
        if chromium:
            from rtcprobe.replay import run_replay  # (needs coturn, Chromium and Playwright)

            row["chromium"] = mean([metrics(run_replay(sc, driver="chromium").report.to_dict())
                                    for _ in range(reps)])
        print(f"  {which:<8} {sc.name}", file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def fmt(v: float | None, spec: str = ".0f") -> str:
    return "-" if v is None or not math.isfinite(v) else format(v, spec)


def print_tables(rows: list[dict[str, Any]]) -> None:
    sources = [s for s in (*STACKS, "chromium") if any(s in r for r in rows)]
    print("| set | scenario | source | rtt ms | jitter ms | loss % | in kbps | level | min level | media ms |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        for src in sources:
            if src not in r:
                continue
            m = r[src]
            label = f"sim {src}" if src in STACKS else src
            print(f"| {r['set']} | {r['name']} | {label} | {fmt(m['rtt'])} | {fmt(m['jitter'], '.1f')} | "
                  f"{fmt(m['loss'], '.2f')} | {fmt(m['in'])} | {fmt(m['level'], '.1f')} | "
                  f"{fmt(m['min_level'], '.1f')} | {fmt(m['media'])} |")
    if "chromium" not in sources:
        return
    print()
    print("Agreement with Chromium (scenarios within tolerance / scenarios with both values):")
    print()
    print("| set | model | " + " | ".join(METRICS) + " |")
    print("|---|---|" + "---:|" * len(METRICS))
    for which in ("tuning", "held-out"):
        mine = [r for r in rows if r["set"] == which and "chromium" in r]
        for stack in STACKS:
            cells = []
            for m in METRICS:
                pairs = [(r[stack][m], r["chromium"][m]) for r in mine
                         if r[stack][m] is not None and r["chromium"][m] is not None]
                ok = sum(agree(m, a, b) for a, b in pairs)
                cells.append(f"{ok}/{len(pairs)}")
            print(f"| {which} | {stack} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="sim seeds per scenario and model (default 3)")
    parser.add_argument("--reps", type=int, default=1, help="Chromium repetitions per scenario (default 1)")
    parser.add_argument("--duration", type=float, default=8.0, help="stats seconds, untimed scenarios (default 8)")
    parser.add_argument("--scenario", action="append", help="only these scenarios (repeatable)")
    parser.add_argument("--no-chromium", action="store_true", help="the sim models only")
    parser.add_argument("--save", help="write the raw numbers to this JSON file")
    parser.add_argument("--load", help="print the tables from a file --save wrote")
    parser.add_argument("--chromium-from", help="rerun the sim models, take Chromium's numbers from a --save file")
    args = parser.parse_args(argv)
    if args.load:
        rows = json.loads(Path(args.load).read_text())
    else:
        reuse = args.chromium_from is not None
        rows = collect(scenarios(args.scenario, args.duration), args.seeds, args.reps,
                       not (args.no_chromium or reuse))
        if reuse:
            saved = {r["name"]: r for r in json.loads(Path(args.chromium_from).read_text())}
            for r in rows:
                if "chromium" in saved.get(r["name"], {}):
                    r["chromium"] = saved[r["name"]]["chromium"]
        if args.save:
            Path(args.save).write_text(json.dumps(rows, indent=1) + "\n")
    print_tables(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
