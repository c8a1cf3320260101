"""The stderr progress reporter: step lines always, a bar only on a terminal."""

from __future__ import annotations

import io

from rtcprobe.core import errors
from rtcprobe.core.observations import Completed, Failed, NetworkQualityLevelChanged, Progress, SampleRecorded
from rtcprobe.core.report import PreflightReport, Timing
from rtcprobe.drivers.sim import run_simulation
from rtcprobe.netem.scenario import Scenario

from rtcprobe.progress import ProgressReporter

REPORT = PreflightReport(Timing(0.0, 1.0))


def feed(tty: bool) -> str:
    stream = io.StringIO()
    p = ProgressReporter(stream, tty=tty)
    p(Progress("mediaAcquired", 0.0))
    p(Progress("connected", 120.0))
    for i in range(1, 4):
        p(SampleRecorded(i, 3, 5))
    p(NetworkQualityLevelChanged(4, {}))
    p(Completed(REPORT))
    p.close()
    return stream.getvalue()


def test_not_a_terminal_gets_only_the_step_lines() -> None:
    text = feed(tty=False)
    assert text.splitlines() == [
        "rtcprobe: mediaAcquired                   0 ms  (+0 ms)",
        "rtcprobe: connected                     120 ms  (+120 ms)",
    ]


def test_a_terminal_also_gets_a_bar_for_the_stats_step() -> None:
    text = feed(tty=True)
    assert "\rrtcprobe: stats [" in text and "3/3  level 5" in text
    assert text.endswith("\n") and "#" * 24 in text


def test_failure_is_one_line() -> None:
    stream = io.StringIO()
    ProgressReporter(stream, tty=False)(Failed(errors.SIGNALING_TIMEOUT, REPORT))
    assert stream.getvalue().startswith("rtcprobe: failed: 53002 SignalingConnectionTimeoutError")


def test_it_follows_a_simulated_run() -> None:
    stream = io.StringIO()
    run_simulation(Scenario.from_dict({"name": "p", "duration": 2}), on_event=ProgressReporter(stream, tty=True))
    text = stream.getvalue()
    for name in ("mediaAcquired", "connected", "iceConnected", "mediaStarted"):
        assert f"rtcprobe: {name}" in text
    assert "2/2" in text
