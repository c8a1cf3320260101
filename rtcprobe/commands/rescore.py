"""``rtcprobe rescore RESULTS --scorer-config FILE``: a sweep's levels with other scorer constants."""

from __future__ import annotations

import argparse
import json
from typing import Any

from . import EXIT_OK

NAME = "rescore"
HELP = "recompute a sweep's network quality levels with other scorer constants (no new simulation)"
DESCRIPTION = """\
Recompute every level of a sweep's results (final level, level_min, level_median, sample_level)
from the scorer inputs stored with each run, with the scorer constants of a TOML file (keys: the
fields of ScorerConfig in rtcprobe.core.quality; any key left out keeps its default). Nothing
is simulated again. Without --scorer-config the default constants are used: that reproduces the
stored levels exactly (a check of the table).

  rtcprobe rescore results.parquet --scorer-config strict.toml
  rtcprobe rescore results.parquet --scorer-config strict.toml --out strict.parquet --json

A scorer config file, for example:

  level_thresholds = [92, 84, 76, 68]   # lowest score of levels 5, 4, 3, 2
  video_loss_weight = 10                # score points per % of video loss
  rise_interval = 3                     # seconds per +1 level

Reports the runs whose levels moved, and by how much; --out writes the re-scored table.
Exit codes: 0 done, 2 bad input (a results file that is not a sweep's, a config mistake: the
file, key and problem).
"""

SHOWN = 20  # changed runs listed in the text output (--json lists all)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", metavar="RESULTS.parquet", help="a table written by rtcprobe sweep")
    parser.add_argument("--scorer-config", metavar="FILE.toml",
                        help="scorer constants (TOML; default: the built-in constants)")
    parser.add_argument("--out", metavar="FILE.parquet", help="write the re-scored table to FILE")
    parser.add_argument("--json", action="store_true", help="print what changed as JSON on stdout")


def run(args: argparse.Namespace) -> int:
    import attrs

    from rtcprobe.core.quality import ScorerConfig
    from rtcprobe.netem.files import writable_path
    from rtcprobe.netem.scorer_config import load_scorer_config
    from rtcprobe.sweep_rescore import rescore_rows
    from rtcprobe.sweep_table import build_table, cell_label, point_kinds, read_table, write_table

    config = load_scorer_config(args.scorer_config) if args.scorer_config else ScorerConfig()
    out = writable_path(args.out, "--out") if args.out else None
    table, meta = read_table(args.results)
    kinds = point_kinds(meta)
    outcome = rescore_rows(table.to_pylist(), config, list(kinds))
    if out is not None:
        defaults = attrs.asdict(ScorerConfig())
        changed = {k: v for k, v in attrs.asdict(config).items() if v != defaults[k]}
        write_table(build_table({**meta, "scorer_config": changed}, outcome.rows), out)

    changes = [
        {"point": c.point, "level": list(c.level), "delta": c.delta, "level_min": list(c.level_min),
         "level_median": list(c.level_median)}
        for c in outcome.changes
    ]
    summary: dict[str, Any] = {
        "results": args.results,
        "scorer_config": args.scorer_config,
        "runs": len(outcome.rows),
        "level_moved": sum(1 for c in outcome.changes if c.delta),
        "level_min_moved": outcome.moved("level_min"),
        "level_median_moved": outcome.moved("level_median"),
        "level_deltas": {str(k): v for k, v in outcome.level_deltas.items()},
        "changes": changes,
        "out": None if out is None else str(out),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return EXIT_OK
    source = args.scorer_config or "the default scorer constants"
    print(f"rescored {summary['runs']} runs of {args.results} with {source}")
    deltas = ", ".join(f"{'+' if int(k) > 0 else ''}{k}: {v}" for k, v in summary["level_deltas"].items())
    print(f"  final level moved in {summary['level_moved']} of {summary['runs']} runs (by how much: {deltas})")
    print(f"  level_min moved in {summary['level_min_moved']}, level_median in {summary['level_median_moved']}")
    for c in outcome.changes[:SHOWN]:
        point = ", ".join(f"{k} = {cell_label(kinds[k], v)}" for k, v in c.point.items())
        print(f"    ({point}): level {_show(c.level[0])} -> {_show(c.level[1])}, "
              f"min {_show(c.level_min[0])} -> {_show(c.level_min[1])}, "
              f"median {_show(c.level_median[0])} -> {_show(c.level_median[1])}")
    if len(outcome.changes) > SHOWN:
        print(f"    ... and {len(outcome.changes) - SHOWN} more (--json lists them all)")
    if out is not None:
        print(f"  wrote {out}")
    return EXIT_OK


def _show(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
