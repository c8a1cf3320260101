"""``rtcprobe run`` and ``rtcprobe scenarios``: output, files, exit codes, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
from rtcprobe.drivers.sim import simulate
from rtcprobe.netem.scenario import STACKS as SCENARIO_STACKS
from rtcprobe.netem.scenario import Scenario
from rtcprobe.scenarios import builtin_names

from rtcprobe.cli import main
from rtcprobe.commands.run import STACKS

FAST = """\
name = "fast"
description = "a short clean run"
duration = 2
seed = 3

[network]
delay_ms = 10

[expect]
outcome = "completed"
rtt_ms = [35, 50]
level = [5, 5]
"""


@pytest.fixture
def fast(tmp_path: Path) -> Path:
    path = tmp_path / "fast.toml"
    path.write_text(FAST)
    return path


def test_json_prints_only_the_report(fast: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(fast), "--json"]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)  # nothing but the JSON on stdout
    assert report["run"]["driver"] == "sim" and report["run"]["scenario"] == "fast"
    # sender -> TURN -> receiver and back: the loop crosses the 10 ms link four times
    assert report["stats"]["rtt"]["average"] == pytest.approx(40, abs=1)
    assert "mediaStarted" in err  # progress went to stderr


def test_summary_and_check_list_each_expectation(fast: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(fast), "--check"]) == 0
    out = capsys.readouterr().out
    assert "preflight completed" in out and "network quality 5 / 5" in out
    assert "met    outcome = completed" in out and "met    rtt_ms = [35, 50]" in out


def test_unmet_expectation_exits_1_and_says_which(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "strict.toml"
    path.write_text(FAST.replace("rtt_ms = [35, 50]", "rtt_ms = [100, 200]"))
    assert main(["run", str(path), "--check"]) == 1
    out = capsys.readouterr().out
    assert "UNMET  rtt_ms: average rtt" in out and "met    level = [5, 5]" in out


def test_without_check_expectations_are_not_applied(tmp_path: Path) -> None:
    path = tmp_path / "strict.toml"
    path.write_text(FAST.replace("rtt_ms = [35, 50]", "rtt_ms = [100, 200]"))
    assert main(["run", str(path), "--json"]) == 0


def test_a_failing_preflight_exits_1_unless_check_expected_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "signaling-unreachable"]) == 1
    assert "53002" in capsys.readouterr().out
    assert main(["run", "signaling-unreachable", "--check"]) == 0  # the scenario expects 53002
    assert "met    error_code = 53002" in capsys.readouterr().out


def test_out_writes_the_same_json(fast: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.json"
    assert main(["run", str(fast), "--json", "--out", str(out), "--seed", "9"]) == 0
    printed = capsys.readouterr().out
    assert out.read_text().strip() == printed.strip()
    assert json.loads(printed)["run"]["seed"] == 9


def test_plot_writes_a_png(fast: Path, tmp_path: Path) -> None:
    png = tmp_path / "run.png"
    assert main(["run", str(fast), "--json", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_scenario_file_exits_2_naming_file_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "typo.toml"
    path.write_text('name = "typo"\n[network]\ndealy_ms = 20\n')
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "typo.toml: network.dealy_ms: unknown key (did you mean 'delay_ms'?)" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bad_value_exits_2_with_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "loss.toml"
    path.write_text("[network.uplink]\nloss = 1.5\n")
    assert main(["run", str(path)]) == 2
    assert "network.uplink.loss: must be between 0 and 1, got 1.5" in capsys.readouterr().err


def test_unknown_scenario_name_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "clean-broadbnd"]) == 2
    assert "did you mean 'clean-broadband'?" in capsys.readouterr().err


def test_out_into_a_missing_directory_exits_2(fast: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(fast), "--out", str(tmp_path / "nope" / "r.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_pcap_into_a_directory_exits_2_naming_the_flag_and_path(fast: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(fast), "--pcap", f"{tmp_path}/"]) == 2
    assert capsys.readouterr().err == f"rtcprobe run: error: --pcap '{tmp_path}/' is a directory\n"


def test_out_that_cannot_be_written_exits_2_with_one_line(fast: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    # Passes the up-front check (not a directory, the parent exists), fails when written.
    dangling = tmp_path / "r.json"
    dangling.symlink_to(tmp_path / "gone" / "r.json")
    assert main(["run", str(fast), "--json", "--out", str(dangling)]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # progress went to stderr, then the error: one line, no traceback
    assert err.splitlines()[-1] == f"rtcprobe run: error: --out {str(dangling)!r}: No such file or directory"
    assert "Traceback" not in err


def test_an_unexpected_failure_lists_every_unmet_expectation(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "dead.toml"
    path.write_text(FAST.replace("delay_ms = 10", "outage = true"))
    assert main(["run", str(path), "--check"]) == 1
    out = capsys.readouterr().out
    assert out.endswith(
        "  expectations\n"
        "    UNMET  outcome: expected 'completed', got 'failed' (53002 SignalingConnectionTimeoutError: "
        "Signaling connection timed out (signaling or TURN step) (timed out after 12 s waiting for: signaling "
        "accepted the token and returned ICE servers))\n"
        "    UNMET  rtt_ms: the report has no stats.rtt.average (stats are null: did the test fail?)\n"
        "    UNMET  level: the report has no networkQuality.level\n"
    )


def test_check_without_an_expect_block_says_so_and_the_run_decides(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "plain.toml"
    path.write_text(FAST.split("[expect]")[0].replace("delay_ms = 10", "outage = true"))
    assert main(["run", str(path), "--check"]) == 1
    assert capsys.readouterr().out.endswith("  expectations: none ([expect] is not in the scenario)\n")


def test_negative_seed_is_a_usage_error(fast: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", str(fast), "--seed", "-1"])
    assert exc.value.code == 2


def test_pcap_writes_a_capture(fast: Path, tmp_path: Path) -> None:
    pcap = tmp_path / "run.pcap"
    assert main(["run", str(fast), "--json", "--pcap", str(pcap)]) == 0
    assert pcap.stat().st_size > 24  # a pcap header and packets


def test_scenarios_lists_every_builtin_with_its_description(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenarios"]) == 0
    out = capsys.readouterr().out
    for name in builtin_names():
        assert name in out
    assert "Pantheon" in out  # descriptions are shown


def test_run_as_a_real_process_reports_on_stdout_and_progress_on_stderr() -> None:
    done = subprocess.run([sys.executable, "-m", "rtcprobe", "run", "clean-broadband", "--json", "--check"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["networkQuality"]["level"] == 5
    assert "rtcprobe: connected" in done.stderr


def test_stack_chooses_the_simulators_endpoint_model(fast: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = {}
    for stack in STACKS:
        assert main(["run", str(fast), "--json", "--stack", stack]) == 0
        runs[stack] = json.loads(capsys.readouterr().out)
    assert runs["aiortc"] == json.loads(simulate(attrs.evolve(Scenario.from_toml(fast), stack="aiortc")).to_json())
    assert runs["libwebrtc"]["run"]["stack"] == "libwebrtc" and "stack" not in runs["aiortc"]["run"]
    # Opus at 96 kbit/s (aiortc) against 32 kbit/s (a browser): the models differ on the wire
    assert runs["aiortc"]["bitrate"] != runs["libwebrtc"]["bitrate"]
    assert main(["run", str(fast), "--stack", "aiortc"]) == 0
    assert "(driver sim, aiortc model, seed 3)" in capsys.readouterr().out


def test_stack_lists_the_scenario_formats_models() -> None:
    assert set(STACKS) == set(SCENARIO_STACKS)


def test_stack_with_a_real_driver_exits_2(fast: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(fast), "--driver", "aiortc", "--stack", "aiortc"]) == 2
    assert "--stack chooses the simulator's endpoint model" in capsys.readouterr().err
