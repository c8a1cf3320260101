"""``rtcprobe scenarios``: list the built-in scenarios."""

from __future__ import annotations

import argparse

from . import EXIT_OK

NAME = "scenarios"
HELP = "list the built-in network scenarios (for rtcprobe run)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from rtcprobe.scenarios import builtin_names, load

    names = builtin_names()
    width = max(map(len, names), default=0)
    for name in names:
        print(f"{name:<{width}}  {load(name).description}")
    print(f"\n{len(names)} scenarios; run one with: rtcprobe run NAME [--check]")
    return EXIT_OK
