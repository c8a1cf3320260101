"""``rtcprobe run SCENARIO``: the preflight over a simulated network (or real traffic through one)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

import attrs

from . import ReportOutput, add_output_arguments, parse_seed

if TYPE_CHECKING:
    from rtcprobe.core.report import PreflightReport
    from rtcprobe.netem.expect import ExpectationResult

# rtcprobe.netem.scenario.STACKS (not imported here: the CLI starts without numpy)
STACKS = ("aiortc", "libwebrtc")
NAME = "run"
HELP = "run a preflight over a network scenario (a file or a built-in name; see: rtcprobe scenarios)"
DESCRIPTION = """\
Run the preflight over the network a scenario describes. With --driver sim (the default) the
whole test is simulated on a virtual clock — deterministic, milliseconds of CPU; with
--driver aiortc real aiortc peers talk through an impairment relay applying the same scenario;
--driver chromium does the same with rtcprobe.js in a headless Chromium (apt-get install chromium,
pip install playwright).

The simulator models a browser's endpoint (libwebrtc: paced sender, congestion control, NACK/RTX)
unless the scenario's [media] stack or --stack says "aiortc" (aiortc's sender, what --driver aiortc
runs).

  rtcprobe run lossy-wifi --check
  rtcprobe run lossy-wifi --stack aiortc
  rtcprobe run my-network.toml --seed 7 --json --out report.json --plot report.png

Progress goes to stderr, the summary (or with --json only the report JSON) to stdout.
Exit codes: 0 completed, 1 the preflight failed, 2 bad input (e.g. a scenario file with a mistake).
With --check the expectations decide: 0 all met (a scenario may expect a failure), 1 one unmet.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", metavar="SCENARIO", help="a scenario file (.toml) or a built-in scenario name")
    parser.add_argument("--driver", choices=("sim", "aiortc", "chromium"), default="sim",
                        help="sim: simulated network (default); aiortc: real peers through the impairment relay; "
                             "chromium: the same in a headless Chromium")
    parser.add_argument("--seed", type=parse_seed, help="override the scenario's seed")
    parser.add_argument("--stack", choices=STACKS,
                        help="the simulator's endpoint model (--driver sim only): libwebrtc, a browser's, or "
                             "aiortc's sender; overrides the scenario's [media] stack (default libwebrtc)")
    parser.add_argument("--check", action="store_true", help="verify the scenario's [expect] block (exit 1 if unmet)")
    add_output_arguments(parser)
    parser.add_argument("--pcap", metavar="FILE", help="write what crossed the emulated link as a pcap capture")


def expectation_lines(results: list[ExpectationResult] | None) -> list[str]:
    """The summary's expectations block: one line per expectation met, one per reason it is not
    (``results`` None: the scenario has no [expect] block)."""
    if results is None:
        return ["  expectations: none ([expect] is not in the scenario)"]
    lines = ["  expectations"]
    for result in results:
        if result.met:
            lines.append(f"    met    {result.key} = {result.expected}")
        else:
            lines.extend(f"    UNMET  {failure}" for failure in result.failures)
    return lines


def run(args: argparse.Namespace) -> int:
    from rtcprobe.core.errors import ConfigError
    from rtcprobe.netem.files import writable_path
    from rtcprobe.progress import ProgressReporter
    from rtcprobe.scenarios import load

    from .preflight import summary

    scenario = load(args.scenario)  # a bad file raises ScenarioError: one line, exit 2
    if args.stack is not None:
        if args.driver != "sim":
            raise ConfigError(f"--stack chooses the simulator's endpoint model; --driver {args.driver} runs "
                              "its own stack")
        scenario = attrs.evolve(scenario, stack=args.stack)
    output = ReportOutput.from_args(args)
    pcap_path = writable_path(args.pcap, "--pcap") if args.pcap else None

    progress = ProgressReporter(sys.stderr)
    seed = scenario.seed if args.seed is None else args.seed
    if args.driver == "sim":
        from rtcprobe.drivers.sim import run_simulation

        result = run_simulation(scenario, seed=seed, packet_log=pcap_path is not None, on_event=progress)
        report: PreflightReport = result.report
        if pcap_path is not None:
            from rtcprobe.netem.pcap import write_pcap

            write_pcap(pcap_path, result.packet_log)
    else:
        from rtcprobe.replay import run_replay

        report = run_replay(
            scenario, seed=seed, pcap=None if pcap_path is None else str(pcap_path), on_progress=progress,
            driver=args.driver,
        ).report
    progress.close()

    data = report.to_dict()
    results = scenario.expect.results(data) if args.check and scenario.expect is not None else None

    def text() -> str:
        driver = f"sim, {scenario.stack} model" if args.driver == "sim" else args.driver
        lines = [f"scenario {scenario.name} (driver {driver}, seed {seed})"
                 + (f": {scenario.description}" if scenario.description else ""), summary(report)]
        levels = [s["level"] for s in data["samples"] if s["level"] is not None]
        if levels:
            lines.append(f"  level over time {' '.join(map(str, levels))}")
        if args.check:
            lines.extend(expectation_lines(results))
        return "\n".join(lines)

    # The expectations, when checked, say what the run must do: failing with 53002 may be the point.
    return output.finish(report, text, met=None if results is None else all(r.met for r in results))
