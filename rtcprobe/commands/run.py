"""``rtcprobe run SCENARIO``: the preflight over a simulated network (or real traffic through one)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from . import EXIT_FAILED, EXIT_OK, writable_path

if TYPE_CHECKING:
    from rtcprobe.core.report import PreflightReport
    from rtcprobe.netem.scenario import Scenario

NAME = "run"
HELP = "run a preflight over a network scenario (a file or a built-in name; see: rtcprobe scenarios)"
DESCRIPTION = """\
Run the preflight over the network a scenario describes. With --driver sim (the default) the
whole test is simulated on a virtual clock — deterministic, milliseconds of CPU; with
--driver aiortc real aiortc peers talk through an impairment relay applying the same scenario.

  rtcprobe run lossy-wifi --check
  rtcprobe run my-network.toml --seed 7 --json --out report.json --plot report.png

Progress goes to stderr, the summary (or with --json only the report JSON) to stdout.
Exit codes: 0 completed, 1 the preflight failed, 2 bad input (e.g. a scenario file with a mistake).
With --check the expectations decide: 0 all met (a scenario may expect a failure), 1 one unmet.
"""


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if value < 0 or value >= 2**63:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", metavar="SCENARIO", help="a scenario file (.toml) or a built-in scenario name")
    parser.add_argument("--driver", choices=("sim", "aiortc"), default="sim",
                        help="sim: simulated network (default); aiortc: real peers through the impairment relay")
    parser.add_argument("--seed", type=_seed, help="override the scenario's seed")
    parser.add_argument("--check", action="store_true", help="verify the scenario's [expect] block (exit 1 if unmet)")
    parser.add_argument("--json", action="store_true", help="print only the report JSON on stdout")
    parser.add_argument("--out", metavar="FILE", help="also write the report JSON to FILE")
    parser.add_argument("--plot", metavar="FILE.png", help="plot the samples to FILE.png (needs matplotlib)")
    parser.add_argument("--pcap", metavar="FILE", help="write what crossed the emulated link as a pcap capture")


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) + "]"
    return str(value)


def expectation_lines(scenario: Scenario, report: dict[str, Any]) -> tuple[list[str], int]:
    """One line per expectation (met or not) and the number unmet."""
    import attrs

    from rtcprobe.netem.expect import Expect

    expect = scenario.expect
    if expect is None:
        return ["  expectations: none ([expect] is not in the scenario)"], 0
    lines, unmet = ["  expectations"], 0
    defaults = Expect()
    for field in attrs.fields(Expect):
        value = getattr(expect, field.name)
        if value == getattr(defaults, field.name):
            continue
        failures = Expect(**{field.name: value}).check(report)
        if field.name == "outcome" and expect.error_code is not None:
            continue  # error_code implies it; reported once, below
        shown = _show(value)
        if failures:
            unmet += 1
            lines.extend(f"    UNMET  {f}" for f in failures)
        else:
            lines.append(f"    met    {field.name} = {shown}")
    return lines, unmet


def run(args: argparse.Namespace) -> int:
    from rtcprobe.progress import ProgressReporter
    from rtcprobe.scenarios import load

    scenario = load(args.scenario)  # a bad file raises ScenarioError: one line, exit 2
    out = writable_path(args.out, "--out") if args.out else None
    plot_path = writable_path(args.plot, "--plot") if args.plot else None
    pcap_path = writable_path(args.pcap, "--pcap") if args.pcap else None
    if plot_path is not None:
        from rtcprobe.plot import require_matplotlib

        require_matplotlib()  # fail before the run, not after it, when matplotlib is missing

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
        from rtcprobe.drivers.aiortc.replay import run_replay

        report = run_replay(
            scenario, seed=seed, pcap=None if pcap_path is None else str(pcap_path), on_progress=progress,
        ).report
    progress.close()

    text = report.to_json()
    if out is not None:
        out.write_text(text + "\n")
    if plot_path is not None:
        from rtcprobe.plot import plot_report

        plot_report(report, plot_path)
    data = report.to_dict()
    lines, unmet = expectation_lines(scenario, data) if args.check else ([], 0)
    if args.json:
        print(text)
    else:
        from .preflight import summary

        print(f"scenario {scenario.name} (driver {args.driver}, seed {seed})"
              + (f": {scenario.description}" if scenario.description else ""))
        print(summary(report))
        levels = [s["level"] for s in data["samples"] if s["level"] is not None]
        if levels:
            print(f"  level over time {' '.join(map(str, levels))}")
        for line in lines:
            print(line)
    if args.check and scenario.expect is not None:
        # The expectations say what the run must do — failing with 53002 may be the point.
        return EXIT_FAILED if unmet else EXIT_OK
    return EXIT_FAILED if report.error is not None else EXIT_OK
