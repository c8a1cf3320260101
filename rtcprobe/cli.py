"""The ``rtcprobe`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib import import_module

from . import __version__
from .commands import EXIT_USAGE
from .core.errors import ConfigError

# In the order --help lists them.
COMMANDS = ("preflight", "run", "scenarios", "sweep", "rescore", "sweep-plot", "serve", "token", "call", "relay")

DESCRIPTION = """\
An open, self-hostable WebRTC preflight test and network quality scorer.

  rtcprobe preflight              real WebRTC preflight against the embedded loopback server
  rtcprobe run lossy-wifi         the same preflight over a simulated network (a scenario)
  rtcprobe scenarios              list the built-in scenarios
  rtcprobe sweep SPEC.toml --out results.parquet
                                  a scenario sweep (axes x seeds) through the simulator
  rtcprobe call --room demo --identity alice
                                  a synthetic participant in a room: every participant's level

Exit codes: 0 completed (and expectations met), 1 the preflight failed or an expectation was not
met, 2 bad input or usage.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtcprobe", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"rtcprobe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = import_module(f"rtcprobe.commands.{name.replace('-', '_')}")  # sweep-plot: sweep_plot.py
        p = sub.add_parser(
            module.NAME, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args._run(args))
    except ConfigError as exc:  # bad input: one clear line, never a traceback
        print(f"rtcprobe {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("rtcprobe: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `rtcprobe ... | head`: the reader left; stop quietly, as cat does
        # Point stdout at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a killed writer
