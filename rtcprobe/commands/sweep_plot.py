"""``rtcprobe sweep-plot RESULTS --out FILE.png``: heatmaps from a sweep's results table."""

from __future__ import annotations

import argparse

from . import EXIT_OK

NAME = "sweep-plot"
HELP = "draw heatmaps of a metric over two sweep axes from a results table (needs matplotlib)"
DESCRIPTION = """\
Draw a metric of a sweep's results over two axes as a heatmap: each cell is the median over the
seeds (and over any axis not shown); --panel draws one heatmap per value of a third axis.
Axes default to the spec's first, second and third; the metric to the final network quality
level. Cells where no run has a value (a level when the preflight failed) are grey.

  rtcprobe sweep-plot results.parquet --out level.png
  rtcprobe sweep-plot results.parquet --x network.loss --y network.delay_ms --panel media.video \\
      --metric level_min --out level-min.png
  rtcprobe sweep-plot results.parquet --x network.loss --y seed --metric rtt_avg --out rtt.png

Metrics: level, level_min, level_median, rtt_avg (ms), jitter_avg (s), packet_loss_avg (%),
their _min/_max, bitrate_outgoing_avg / bitrate_incoming_avg (kbps), the timings (ms), error_code.
Exit codes: 0 drawn, 2 bad input (not a sweep's results, an unknown column, no matplotlib).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", metavar="RESULTS.parquet", help="a table written by rtcprobe sweep")
    parser.add_argument("--x", metavar="AXIS", help="the horizontal axis (default: the spec's first axis)")
    parser.add_argument("--y", metavar="AXIS", help="the vertical axis (default: the second)")
    parser.add_argument("--panel", metavar="AXIS", help="one panel per value of this axis (default: the third)")
    parser.add_argument("--metric", metavar="COLUMN", default="level", help="the value shown (default: level)")
    parser.add_argument("--title", help="the figure's title")
    parser.add_argument("--out", metavar="FILE.png", required=True, help="where to write the PNG")


def run(args: argparse.Namespace) -> int:
    from rtcprobe.netem.files import writable_path
    from rtcprobe.plot import require_matplotlib
    from rtcprobe.sweep_plot import choose, plot_heatmaps
    from rtcprobe.sweep_table import read_table

    out = writable_path(args.out, "--out")
    table, meta = read_table(args.results)
    choice = choose(meta, args.x, args.y, args.panel, args.metric)
    require_matplotlib()
    plot_heatmaps(table.to_pylist(), meta, choice, out, title=args.title)
    print(f"wrote {out}: {choice.metric} over {choice.x}" + (f" x {choice.y}" if choice.y else "")
          + (f", a panel per {choice.panel}" if choice.panel else ""))
    return EXIT_OK
