from __future__ import annotations

import subprocess
import sys

from rtcprobe.core import STEPS, State, diagram

import rtcprobe
from rtcprobe.cli import COMMANDS, main


def rtcprobe_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rtcprobe", *args], capture_output=True, text=True, timeout=60)


def test_version() -> None:
    r = rtcprobe_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"rtcprobe {rtcprobe.__version__}"


def test_help_lists_every_command() -> None:
    r = rtcprobe_cli("--help")
    assert r.returncode == 0
    for name in COMMANDS:
        assert name in r.stdout
        sub = rtcprobe_cli(name, "--help")
        assert sub.returncode == 0, sub.stderr
        assert "usage: rtcprobe " + name in sub.stdout


def test_no_command_is_usage_error(capsys: object) -> None:
    assert main([]) == 2


def test_import_rtcprobe_does_not_import_aiortc() -> None:
    code = "import sys, rtcprobe; print('aiortc' in sys.modules, 'trio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_diagram_covers_every_step() -> None:
    dot = diagram()
    for state, step in STEPS.items():
        assert f"{state.value} -> {step.next.value}" in dot
        assert f"timeout {step.timeout_error.code}" in dot
    assert State.COMPLETED.value in dot


def test_every_public_name_resolves() -> None:
    for name in rtcprobe.__all__:
        assert getattr(rtcprobe, name) is not None, name


def test_a_reader_that_leaves_early_gets_no_traceback() -> None:
    """`rtcprobe run NAME --json | head -1`: the closed pipe ends the command quietly."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "rtcprobe", "run", "lossy-wifi", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader leaves before the report is written out
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) in (0, 141)
    assert "Traceback" not in err and "BrokenPipeError" not in err
