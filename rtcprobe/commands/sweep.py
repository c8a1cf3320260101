"""``rtcprobe sweep SPEC.toml --out results.parquet``: a scenario sweep through the simulator."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any

from . import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:
    from rtcprobe.netem.sweep import Sweep
    from rtcprobe.sweep import SweepOutcome, Where

NAME = "sweep"
HELP = "run a scenario sweep (axes over scenario keys x seeds) through the simulator into a Parquet table"
DESCRIPTION = """\
Run every point of a sweep spec — a base scenario, axes over its keys (by dotted path) and
seeds; the cartesian product — through the simulator, and write one row per run to a Parquet
table. The spec format: scenarios/SWEEPS.md. Every point is checked before anything runs.
The simulator models a browser's endpoint (libwebrtc) unless the base scenario's [media] stack
says "aiortc"; [set] "media.stack" = "aiortc" chooses aiortc's sender, an axis over it compares both.

  rtcprobe sweep loss-delay.toml --out results.parquet
  rtcprobe sweep loss-delay.toml --out results.parquet --workers 4 --plot loss-delay.png
  rtcprobe sweep loss-delay.toml --out results.parquet --scheduler tcp://dask-scheduler:8786 --json

By default the points run on a pool of local processes, one per core; --workers N starts a Dask
LocalCluster of N workers, --scheduler uses a running Dask cluster (its workers need rtcprobe,
and the base scenario's trace files at the same paths). Where and in what order the points ran
never changes the table: the same spec gives the same file, byte for byte.

Re-running into an existing --out resumes: points already there are skipped (the table is saved
every few seconds and on Ctrl-C). Progress with an ETA goes to stderr; --json prints a summary
on stdout.

Exit codes: 0 every point ran (a failed preflight is a result: see the outcome column), 1 some
runs crashed (not stored; the summary names them, a re-run retries them), 2 bad input (a spec
mistake names the file, key and problem; nothing has run).
"""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC.toml", help="the sweep spec (format: scenarios/SWEEPS.md)")
    parser.add_argument("--out", metavar="FILE.parquet", required=True,
                        help="results table (resumed when it holds part of this sweep)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", metavar="N", type=_positive,
                       help="run on a Dask LocalCluster of N worker processes")
    where.add_argument("--scheduler", metavar="ADDRESS", help="run on the Dask cluster at ADDRESS (tcp://host:8786)")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="heatmap of --plot-metric over the first two axes, a panel per value of the third "
                             "(median over seeds; needs matplotlib)")
    parser.add_argument("--plot-metric", metavar="COLUMN", default="level",
                        help="what --plot shows (default: level, the final network quality level)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")


def run(args: argparse.Namespace) -> int:
    from rtcprobe.netem.files import writable_path
    from rtcprobe.sweep import SweepProgress, Where, check_resumable, load, run_sweep

    sweep = load(args.spec)  # every point validated: a mistake is a ScenarioError, exit 2
    out = writable_path(args.out, "--out")
    check_resumable(sweep, out)  # another sweep's results: exit 2 before anything runs
    choice = None
    plot_path = writable_path(args.plot, "--plot") if args.plot else None
    if plot_path is not None:
        from rtcprobe.core._version import __version__
        from rtcprobe.plot import require_matplotlib
        from rtcprobe.sweep_plot import choose
        from rtcprobe.sweep_table import sweep_metadata

        choice = choose(sweep_metadata(sweep, __version__), metric=args.plot_metric)
        require_matplotlib()  # missing matplotlib: exit 2 now, not after the sweep
    elif args.plot_metric != "level":
        from rtcprobe.core.errors import ConfigError

        raise ConfigError("--plot-metric needs --plot")

    where = (Where.dask(args.scheduler) if args.scheduler else
             Where.dask_local(args.workers) if args.workers else Where.pool())
    progress = SweepProgress(sys.stderr)
    print(f"rtcprobe sweep: {_shape(sweep)} = {sweep.total} runs on {where.describe()}", file=sys.stderr)
    try:
        outcome = run_sweep(sweep, out, where, progress=progress)
    except KeyboardInterrupt:
        progress.close()
        print(f"rtcprobe sweep: interrupted; the runs done so far are in {out}: run the same command to resume",
              file=sys.stderr)
        raise
    progress.close()

    if choice is not None and plot_path is not None:
        from rtcprobe.sweep_plot import plot_heatmaps
        from rtcprobe.sweep_table import read_table

        table, meta = read_table(out)
        plot_heatmaps(table.to_pylist(), meta, choice, plot_path)

    summary = _summary(sweep, outcome, where, str(out), None if plot_path is None else str(plot_path))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)
    return EXIT_FAILED if outcome.crashed else EXIT_OK


def _shape(sweep: Sweep) -> str:
    parts = [f"{len(a.values)} {a.path}" for a in sweep.axes]
    parts.append(f"{len(sweep.seeds)} seed{'s' if len(sweep.seeds) != 1 else ''}")
    return f"{sweep.base_name}: " + " x ".join(parts)


def _summary(sweep: Sweep, outcome: SweepOutcome, where: Where, out: str, plot: str | None) -> dict[str, Any]:
    rows = outcome.rows
    outcomes = Counter(r["outcome"] for r in rows)
    errors = Counter(str(r["error_code"]) for r in rows if r["error_code"] is not None)
    levels = Counter("none" if r["level"] is None else str(r["level"]) for r in rows)
    return {
        "spec": sweep.source,
        "scenario": sweep.base_name,
        "axes": [a.path for a in sweep.axes],
        "seeds": list(sweep.seeds),
        "points": outcome.total,
        "resumed": outcome.resumed,
        "ran": outcome.ran,
        "crashed": [{"point": c.point, "error": c.error} for c in outcome.crashed],
        "dropped": outcome.dropped,
        "rows": len(rows),
        "where": where.describe(),
        "elapsed_s": round(outcome.elapsed, 3),
        "runs_per_s": round(outcome.runs_per_second, 2),
        "outcomes": dict(sorted(outcomes.items())),
        "error_codes": dict(sorted(errors.items())),
        "levels": dict(sorted(levels.items())),
        "out": out,
        "plot": plot,
    }


def _print_summary(s: dict[str, Any]) -> None:
    print(f"sweep {s['spec']}: {s['points']} points of {s['scenario']} ({', '.join(s['axes'] + ['seed'])})")
    ran = f"  ran {s['ran']} in {s['elapsed_s']:.1f} s ({s['runs_per_s']:g} runs/s on {s['where']})"
    if s["resumed"]:
        ran += f", {s['resumed']} already in the results"
    print(ran)
    if s["dropped"]:
        print(f"  dropped {s['dropped']} rows of the results file that are no longer points of the spec")
    outcomes = ", ".join(f"{k} {v}" for k, v in s["outcomes"].items())
    codes = ", ".join(f"{k} x{v}" for k, v in s["error_codes"].items())
    print(f"  outcomes        {outcomes}" + (f" (errors {codes})" if codes else ""))
    print(f"  final level     {', '.join(f'{k}: {v}' for k, v in s['levels'].items())}")
    for c in s["crashed"]:
        print(f"  CRASHED {c['point']}: {c['error']}")
    print(f"  wrote {s['out']} ({s['rows']} rows)" + (f" and {s['plot']}" if s["plot"] else ""))
