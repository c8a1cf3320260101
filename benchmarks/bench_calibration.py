"""How well the simulator's endpoint models predict a browser: every built-in scenario (the tuning
set) and the held-out scenarios in scenarios/heldout/ (never used for tuning) through ``--driver
sim`` with each stack model (``[media] stack = "aiortc"`` and ``"libwebrtc"``, several seeds) and
through the real drivers: ``--driver chromium`` (rtcprobe.js in a headless Chromium) and ``--driver
aiortc`` (the real aiortc client), both behind the impairment relay and coturn
(:func:`rtcprobe.replay.run_replay`, as bench_sim_vs_real.py runs the aiortc client), then the
per-metric agreement of each model — and of the real aiortc client — with Chromium.

    python benchmarks/bench_calibration.py [--seeds 3] [--reps 2] [--duration 8]
                                           [--driver chromium|aiortc ...] [--scenario NAME ...]
                                           [--sim-only] [--save FILE.json] [--load FILE.json]
                                           [--real-from FILE.json] [--plot FILE.png]

Metrics are the report's: rtt (ms, the loop's), jitter (ms), packet loss (%), delivered bitrate
(the receiver's average incoming kbit/s), the final and the minimum network-quality level, and
the time to ``mediaStarted`` (ms). A model agrees with Chromium on a metric in a scenario when its
mean over the seeds is within the tolerance of Chromium's mean over the repetitions:

* loss within 2 points; rtt within 25 %; delivered bitrate within 30 %;
* final and minimum level within 1;
* jitter within 50 % or 5 ms (whichever is wider: a few ms of jitter are timer noise in a browser);
* media start within 50 % or 300 ms (the browser's start is dominated by its own scheduling).

Repetition k of a real driver replays the scenario with seed ``seed + k`` (the relay draws the
simulator's link streams for that seed), so the real means cover the link draws of the sim's first
``--reps`` seeds; the drivers are interleaved per repetition, so a change in the machine's load
hits both alike. The agreement table also has Chromium's second repetition against its first: how
often the browser agrees with itself within the same tolerances (the noise floor a model cannot
beat), and a second table compares the sim models with the real aiortc client.

The first table lists every scenario's numbers, the second the share of scenarios that agree per
metric, for the tuning set and the held-out set separately. ``--save`` keeps the raw numbers,
every real repetition's included, with the load average after each scenario's real runs (the
real drivers are slow: 16 scenarios x ~10-15 s per driver and repetition). ``--load`` prints the
tables again from such a file; ``--real-from`` (old name ``--chromium-from``) reruns only the sim
models and takes every real driver's numbers from it. Needs coturn, and Chromium and Playwright
for ``--driver chromium``, unless ``--sim-only``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
from rtcprobe.drivers.sim import run_simulation
from rtcprobe.netem.scenario import Scenario
from rtcprobe.scenarios import builtin_names, load

HELDOUT = Path(__file__).resolve().parent.parent / "scenarios" / "heldout"
STACKS = ("aiortc", "libwebrtc")
# A real driver's key in a row (the sim models' keys are the stack names, so the real aiortc client
# needs its own; "chromium" is what files saved before the aiortc row used).
REAL = {"chromium": "chromium", "aiortc": "aiortc_client"}
LABELS = {"aiortc": "sim aiortc", "libwebrtc": "sim libwebrtc", "chromium": "chromium",
          "aiortc_client": "aiortc client", "rep2": "chromium 2nd vs 1st"}
METRICS = ("rtt", "jitter", "loss", "in", "level", "min_level", "media")


def tolerance(metric: str, real: float) -> float:
    """How far from the real value a model may be on ``metric`` (the module's docstring)."""
    if metric == "loss":
        return 2.0
    if metric == "rtt":
        return 0.25 * abs(real)
    if metric == "in":
        return 0.30 * abs(real)
    if metric in ("level", "min_level"):
        return 1.0
    if metric == "jitter":
        return max(5.0, 0.5 * abs(real))
    return max(300.0, 0.5 * abs(real))  # media


def agree(metric: str, model: float, real: float) -> bool:
    return abs(model - real) <= tolerance(metric, real)


def deviation(metric: str, model: float, real: float) -> float:
    """The model's error in tolerances (signed: within ±1 it agrees; 0 when both are 0)."""
    tol = tolerance(metric, real)
    return (model - real) / tol if tol else (0.0 if model == real else math.copysign(math.inf, model - real))


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


def collect(chosen: list[tuple[str, Scenario]], seeds: int, reps: int, drivers: list[str]) -> Iterator[dict[str, Any]]:
    for which, sc in chosen:
        row: dict[str, Any] = {"set": which, "name": sc.name}
        for stack in STACKS:
            s = attrs.evolve(sc, stack=stack)
            row[stack] = mean([metrics(run_simulation(s, seed=sc.seed + k).report.to_dict()) for k in range(seeds)])
        if drivers:
            from rtcprobe.replay import run_replay  # (needs coturn; Chromium and Playwright for chromium)

            runs: dict[str, list[dict[str, float | None]]] = {d: [] for d in drivers}
            walls: dict[str, list[float]] = {d: [] for d in drivers}
            for k in range(reps):  # interleaved: drift in the machine's load hits every driver alike
                for d in drivers:
                    t0 = time.perf_counter()
                    runs[d].append(metrics(run_replay(sc, seed=sc.seed + k, driver=d).report.to_dict()))
                    walls[d].append(round(time.perf_counter() - t0, 2))
            for d in drivers:
                row[REAL[d]] = mean(runs[d])
                row[REAL[d] + "_runs"] = runs[d]
                row[REAL[d] + "_wall_s"] = walls[d]
            row["load"] = [round(x, 2) for x in os.getloadavg()]  # 1, 5, 15 min, after the real runs
        print(f"  {which:<8} {sc.name}" + (f"  (load {row['load'][0]:.2f})" if "load" in row else ""),
              file=sys.stderr, flush=True)
        yield row


def reuse_real(rows: list[dict[str, Any]], saved_rows: list[dict[str, Any]]) -> None:
    """Every real driver's numbers (means, repetitions, load) of ``saved_rows`` into ``rows``."""
    saved = {r["name"]: r for r in saved_rows}
    for r in rows:
        old = saved.get(r["name"], {})
        for key, value in old.items():
            if key not in ("set", "name", *STACKS):
                r[key] = value


def fmt(v: float | None, spec: str = ".0f") -> str:
    return "-" if v is None or not math.isfinite(v) else format(v, spec)


def agreement(rows: list[dict[str, Any]], which: str, reference: str, candidates: list[str]) -> list[str]:
    """Markdown table lines: per candidate, the ``which`` set's scenarios within tolerance of ``reference``."""
    mine = [r for r in rows if r["set"] == which and reference in r]
    lines = []
    for cand in candidates:
        cells = []
        for m in METRICS:
            pairs = [(r[cand][m], r[reference][m]) for r in mine
                     if cand in r and r[cand][m] is not None and r[reference][m] is not None]
            cells.append(f"{sum(agree(m, a, b) for a, b in pairs)}/{len(pairs)}")
        lines.append(f"| {which} | {LABELS[cand]} | " + " | ".join(cells) + " |")
    return lines


def agreement_table(rows: list[dict[str, Any]], reference: str, candidates: list[str]) -> None:
    # Chromium's second repetition against its first: how often the browser agrees with itself.
    noise = [{"set": r["set"], "rep1": r["chromium_runs"][0], "rep2": r["chromium_runs"][1]}
             for r in rows if len(r.get("chromium_runs") or ()) >= 2] if reference == "chromium" else []
    print("| set | model | " + " | ".join(METRICS) + " |")
    print("|---|---|" + "---:|" * len(METRICS))
    for which in ("tuning", "held-out"):
        for line in agreement(rows, which, reference, candidates) + (
                agreement(noise, which, "rep1", ["rep2"]) if noise else []):
            print(line)


def print_tables(rows: list[dict[str, Any]]) -> None:
    sources = [s for s in (*STACKS, *REAL.values()) if any(s in r for r in rows)]
    print("| set | scenario | source | rtt ms | jitter ms | loss % | in kbps | level | min level | media ms |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        for src in sources:
            if src not in r:
                continue
            m = r[src]
            n = len(r.get(src + "_runs") or ())
            label = LABELS[src] + (f" ({n} runs)" if n > 1 else "")
            print(f"| {r['set']} | {r['name']} | {label} | {fmt(m['rtt'])} | {fmt(m['jitter'], '.1f')} | "
                  f"{fmt(m['loss'], '.2f')} | {fmt(m['in'])} | {fmt(m['level'], '.1f')} | "
                  f"{fmt(m['min_level'], '.1f')} | {fmt(m['media'])} |")
    loads = [r["load"][0] for r in rows if "load" in r]
    if loads:
        print(f"\nLoad average (1 min) after each scenario's real runs: median {statistics.median(loads):.2f}, "
              f"max {max(loads):.2f}")
    if "chromium" in sources:
        print()
        print("Agreement with Chromium (scenarios within tolerance / scenarios with both values; "
              "\"chromium 2nd vs 1st\": the browser's second repetition against its first):")
        print()
        agreement_table(rows, "chromium", [c for c in (*STACKS, "aiortc_client") if c in sources])
    if "aiortc_client" in sources:
        print()
        print("Agreement with the real aiortc client:")
        print()
        agreement_table(rows, "aiortc_client", list(STACKS))


def plot(rows: list[dict[str, Any]], path: str) -> None:
    """One panel per source (the sim models, the real aiortc client, Chromium's second run): a
    cell per scenario and metric, coloured by the signed error against Chromium in tolerances
    (white within ±1: agrees; red too high, blue too low; clipped at ±3) and labelled with it."""
    from rtcprobe.plot import require_matplotlib

    plt = require_matplotlib()
    import numpy as np
    from matplotlib.colors import BoundaryNorm

    rows = [r for r in rows if "chromium" in r]
    if not rows:
        raise SystemExit("--plot needs Chromium's numbers (--real-from or --load a file with them)")
    noise = {r["name"]: r["chromium_runs"] for r in rows if len(r.get("chromium_runs") or ()) >= 2}
    order = ("libwebrtc", "aiortc", "aiortc_client")  # the default model first
    panels = [(s, LABELS[s] + (" (default)" if s == "libwebrtc" else "")) for s in order if any(s in r for r in rows)]
    if noise:
        panels.append(("rep2", LABELS["rep2"] + " (noise floor)"))
    names = [f"{r['name']}{' *' if r['set'] == 'held-out' else ''}" for r in rows]
    cmap = plt.get_cmap("RdBu_r", 6)
    colors = [cmap(0), cmap(1), (1.0, 1.0, 1.0, 1.0), (1.0, 1.0, 1.0, 1.0), cmap(4), cmap(5)]
    from matplotlib.colors import ListedColormap
    cmap = ListedColormap(colors)
    norm = BoundaryNorm([-3, -2, -1, 0, 1, 2, 3], cmap.N)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 1.2, 0.34 * len(rows) + 2.0),
                             sharey=True, squeeze=False)
    for ax, (src, title) in zip(axes[0], panels, strict=True):
        grid = np.full((len(rows), len(METRICS)), np.nan)
        agreed = 0
        counted = 0
        for i, r in enumerate(rows):
            if src == "rep2":
                if r["name"] not in noise:
                    continue
                model, real = noise[r["name"]][1], noise[r["name"]][0]
            elif src in r:
                model, real = r[src], r["chromium"]
            else:
                continue
            for j, m in enumerate(METRICS):
                if model[m] is None or real[m] is None:
                    continue
                d = deviation(m, model[m], real[m])
                grid[i, j] = 0.0 if abs(d) <= 1 else max(-3.0, min(3.0, d))  # (exactly ±1 agrees)
                counted += 1
                agreed += abs(d) <= 1
                ax.text(j, i, f"{d:+.1f}" if math.isfinite(d) else "inf", ha="center", va="center", fontsize=7,
                        color="white" if abs(d) > 2 else "black")
        ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, aspect="auto")
        ax.set_facecolor("#dddddd")  # no value (a scenario without media, say)
        ax.set_title(f"{title}\n{agreed}/{counted} within tolerance", fontsize=9)
        ax.set_xticks(range(len(METRICS)), [m.replace("_", " ") for m in METRICS], rotation=45, ha="right",
                      fontsize=8)
        ax.set_xticks(np.arange(len(METRICS) + 1) - 0.5, minor=True)
        ax.set_yticks(np.arange(len(rows) + 1) - 0.5, minor=True)
        ax.grid(which="minor", color="#bbbbbb", linewidth=0.5)
        ax.tick_params(which="minor", length=0)
    axes[0][0].set_yticks(range(len(rows)), names, fontsize=8)
    fig.suptitle("Error against Chromium's mean, in tolerances (white: within ±1; red: too high, blue: too low; "
                 "* held out)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="sim seeds per scenario and model (default 3)")
    parser.add_argument("--reps", type=int, default=2, help="repetitions per real driver and scenario (default 2)")
    parser.add_argument("--duration", type=float, default=8.0, help="stats seconds, untimed scenarios (default 8)")
    parser.add_argument("--driver", action="append", choices=sorted(REAL),
                        help="a real driver to run (repeatable; default: chromium and aiortc)")
    parser.add_argument("--scenario", action="append", help="only these scenarios (repeatable)")
    parser.add_argument("--sim-only", "--no-chromium", dest="sim_only", action="store_true",
                        help="the sim models only, no real driver")
    parser.add_argument("--save", help="write the raw numbers (every real repetition's too) to this JSON file")
    parser.add_argument("--load", help="print the tables from a file --save wrote")
    parser.add_argument("--real-from", "--chromium-from", dest="real_from",
                        help="rerun the sim models only; every real driver's numbers from a --save file")
    parser.add_argument("--plot", help="also draw the errors against Chromium, per scenario and metric, to this PNG")
    args = parser.parse_args(argv)
    if args.load:
        rows = json.loads(Path(args.load).read_text())
    else:
        drivers = [] if args.sim_only or args.real_from else (args.driver or ["chromium", "aiortc"])
        saved = json.loads(Path(args.real_from).read_text()) if args.real_from else []
        rows = []
        for row in collect(scenarios(args.scenario, args.duration), args.seeds, args.reps, drivers):
            reuse_real([row], saved)
            rows.append(row)
            if args.save:  # after every scenario: a long capture interrupted keeps what it has
                Path(args.save).write_text(json.dumps(rows, indent=1) + "\n")
    print_tables(rows)
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
