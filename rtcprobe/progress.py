"""Live progress of a preflight on stderr, fed the core's events.

One line per progress step as it lands (always: they are useful in CI logs too), and while the
stats are being collected a one-line progress bar driven by ``SampleRecorded`` events — only
when the stream is a terminal, since a bar redrawn with ``\\r`` is noise in a log file.

    reporter = ProgressReporter()          # stderr
    run_simulation(scenario, on_event=reporter)
    reporter.close()
"""

from __future__ import annotations

import sys
from typing import TextIO

from rtcprobe.core.observations import (
    Completed,
    Event,
    Failed,
    NetworkQualityLevelChanged,
    Progress,
    SampleRecorded,
)

BAR_WIDTH = 24


class ProgressReporter:
    """Call it with each core event; :meth:`close` when the run is over."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None, prefix: str = "rtcprobe") -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = tty if tty is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        self.prefix = prefix
        self.level: int | None = None
        self._bar_shown = False
        self._last: float = 0.0

    def __call__(self, event: Event) -> None:
        match event:
            case Progress(name=name, duration=duration):
                step = duration - self._last
                self._last = duration
                self._line(f"{self.prefix}: {name:<24} {duration:8.0f} ms  (+{step:.0f} ms)")
            case SampleRecorded(index=index, total=total, level=level):
                self.level = level
                if self.tty:
                    self._bar(index, total)
            case NetworkQualityLevelChanged(level=level):
                self.level = level
            case Completed():
                self._end_bar()
            case Failed(error=error):
                self._line(f"{self.prefix}: failed: {error.code} {error.name}: {error.message}")

    def _bar(self, index: int, total: int) -> None:
        done = round(BAR_WIDTH * index / total) if total else BAR_WIDTH
        level = "-" if self.level is None else str(self.level)
        self.stream.write(
            f"\r{self.prefix}: stats [{'#' * done}{'.' * (BAR_WIDTH - done)}] {index}/{total}  level {level}"
        )
        self.stream.flush()
        self._bar_shown = True

    def _end_bar(self) -> None:
        if self._bar_shown:
            self.stream.write("\n")
            self.stream.flush()
            self._bar_shown = False

    def _line(self, text: str) -> None:
        self._end_bar()
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        self._end_bar()
