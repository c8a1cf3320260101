"""``rtcprobe relay``: the impairment relay as a command (a real process, real UDP on 127.0.0.1)."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scapy.utils import rdpcap

pytestmark = pytest.mark.timeout(60)

LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+) \(UDP\)")


def relay_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "rtcprobe", "relay", *args]


def start_relay(*args: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(relay_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    match = LISTENING.search(line)
    assert match, line + proc.stderr.read()
    return proc, int(match.group(1))


def udp() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    return s


def test_relay_forwards_both_ways_and_prints_counters(tmp_path: Path) -> None:
    upstream, client = udp(), udp()
    pcap = tmp_path / "relay.pcap"
    scenario = tmp_path / "half.toml"
    scenario.write_text('name = "half"\n[network.uplink]\nloss = 0.5\n[network]\ndelay_ms = 5\n')
    proc, port = start_relay("--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{upstream.getsockname()[1]}",
                             "--scenario", str(scenario), "--seed", "4", "--pcap", str(pcap))
    try:
        n = 400
        for i in range(n):
            client.sendto(i.to_bytes(4, "big"), ("127.0.0.1", port))
            time.sleep(0.0005)
        got = 0
        upstream.settimeout(0.5)
        while True:
            try:
                data, relay_side = upstream.recvfrom(100)
            except TimeoutError:
                break
            got += 1
            upstream.sendto(data, relay_side)  # echoed back: the downlink is lossless
        client.settimeout(0.5)
        echoed = 0
        while True:
            try:
                client.recvfrom(100)
            except TimeoutError:
                break
            echoed += 1
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert abs(got / n - 0.5) < 4 * (0.25 / n) ** 0.5
    assert echoed == got
    assert f"uplink   received {n}  forwarded {got}" in err
    assert f"dropped {n - got} (loss {n - got}, queue 0, outage 0)" in err
    assert f"downlink received {got}  forwarded {got}" in err
    assert f"pcap: {2 * got} datagrams written" in err
    assert len(rdpcap(str(pcap))) == 2 * got
    upstream.close()
    client.close()


def test_relay_stops_after_duration() -> None:
    proc, _ = start_relay("--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--scenario", "clean-broadband",
                          "--duration", "0.5")
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "uplink   received 0" in err and "clients  0 seen" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--scenario", "no-such-scenario"],
         "no such scenario file or built-in scenario"),
        (["--listen", "localhost:0", "--upstream", "127.0.0.1:9", "--scenario", "clean-broadband"],
         "--listen host must be an IPv4 address"),
        (["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1", "--scenario", "clean-broadband"],
         "--upstream must look like HOST:PORT"),
        (["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--scenario", "clean-broadband", "--seed", "-1"],
         "must be an integer >= 0"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], message: str) -> None:
    result = subprocess.run(relay_cmd(*args), capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_malformed_scenario_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[network]\nloss = 1.5\n')
    result = subprocess.run(relay_cmd("--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:9", "--scenario", str(bad)),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == f"rtcprobe relay: error: {bad}: network.loss: must be between 0 and 1, got 1.5"


def test_busy_port_exits_2() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = subprocess.run(
            relay_cmd("--listen", f"127.0.0.1:{port}", "--upstream", "127.0.0.1:9", "--scenario", "clean-broadband"),
            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr


def test_controlled_relay_process(tmp_path: Path) -> None:
    """``python -m rtcprobe.netem.relay``: the pipe-driven relay the aiortc replay runs."""
    import pickle

    from rtcprobe.netem.scenario import Scenario

    upstream, client = udp(), udp()
    sc = Scenario.from_dict({"network": {"outage": True}})
    pcap = tmp_path / "c.pcap"
    proc = subprocess.Popen([sys.executable, "-m", "rtcprobe.netem.relay"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    pickle.dump((sc, upstream.getsockname(), 1, ("127.0.0.1", 0), str(pcap)), proc.stdin)
    proc.stdin.flush()
    ready, host, port = proc.stdout.readline().split()
    assert ready == b"ready" and host == b"127.0.0.1"
    proc.stdin.write(b"clock\n")
    proc.stdin.flush()
    client.sendto(b"dropped: outage", ("127.0.0.1", int(port)))
    time.sleep(0.2)
    proc.stdin.write(b"bypass\n")
    proc.stdin.flush()
    time.sleep(0.2)
    client.sendto(b"through", ("127.0.0.1", int(port)))
    assert upstream.recvfrom(100)[0] == b"through"
    out, _ = proc.communicate(b"stop\n", timeout=20)
    up, down, summary, packets = pickle.loads(out)
    assert (up.link.dropped_outage, up.bypassed, up.forwarded, down.received, packets) == (1, 1, 1, 0, 1)
    assert "bypassed 1" in summary
    upstream.close()
    client.close()
