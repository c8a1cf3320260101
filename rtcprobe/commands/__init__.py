"""One module per CLI subcommand. Each defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``, and imports its heavy dependencies inside ``run`` so that ``--help`` is fast.
The commands that run a preflight share the end of it here: where the report goes and the exit code.

Exit codes: 0 completed (and expectations met), 1 the preflight failed or an expectation was not
met, 2 bad input or usage.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from rtcprobe.core.report import PreflightReport

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

SECRET_ENV = "RTCPROBE_SECRET"  # the token secret, read by both serve and token


def parse_seed(text: str) -> int:
    """``--seed``: an integer in [0, 2**63), the range numpy's generators take."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """--json, --out and --plot: what :class:`ReportOutput` does with the report."""
    parser.add_argument("--json", action="store_true", help="print only the report JSON on stdout")
    parser.add_argument("--out", metavar="FILE", help="also write the report JSON to FILE")
    parser.add_argument("--plot", metavar="FILE.png", help="plot the samples to FILE.png (needs matplotlib)")


_optional_path = attrs.validators.optional(attrs.validators.instance_of(Path))


@attrs.frozen(kw_only=True)
class ReportOutput:
    """Where a finished preflight's report goes (--json, --out, --plot) and the exit code. Build it
    before the test with :meth:`from_args`: bad paths and a missing matplotlib fail first."""

    json: bool = attrs.field(validator=attrs.validators.instance_of(bool))
    out: Path | None = attrs.field(default=None, validator=_optional_path)
    plot: Path | None = attrs.field(default=None, validator=_optional_path)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ReportOutput:
        from rtcprobe.netem.files import writable_path

        out = writable_path(args.out, "--out") if args.out else None
        plot = writable_path(args.plot, "--plot") if args.plot else None
        if plot is not None:
            from rtcprobe.plot import require_matplotlib

            require_matplotlib()  # fail before the test, not after it, when matplotlib is missing
        return cls(json=bool(args.json), out=out, plot=plot)

    def finish(self, report: PreflightReport, summary: Callable[[], str], *, met: bool | None = None) -> int:
        """Write --out and --plot, print the report JSON (--json) or ``summary()``, and return the
        exit code: with expectations checked (``met`` not None) they decide, since a scenario may
        expect a failure; otherwise whether the preflight completed."""
        from rtcprobe.core.errors import ConfigError

        text = report.to_json()
        if self.out is not None:
            try:
                self.out.write_text(text + "\n")
            except OSError as exc:
                raise ConfigError(f"--out {str(self.out)!r}: {exc.strerror}") from None
        if self.plot is not None:
            from rtcprobe.plot import plot_report

            plot_report(report, self.plot)
        print(text if self.json else summary())
        if met is not None:
            return EXIT_OK if met else EXIT_FAILED
        return EXIT_OK if report.ok else EXIT_FAILED
