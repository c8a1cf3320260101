"""The impairment relay's own cost: added latency at idle, and datagrams per second on one core.

    python benchmarks/bench_relay.py [--pings 2000] [--seconds 2] [--rates 2000,5000,10000,20000,40000]

Everything runs on 127.0.0.1 in separate processes: a UDP echo/sink server, the relay
(``python -m rtcprobe relay``, a real process with its own interpreter, so its CPU time can be
read from /proc) and this script as the client.

* Latency: ``--pings`` sequential ping-pongs of 200-byte datagrams, straight to the echo server
  and then through the relay applying a scenario that does nothing (no delay, loss or limit), so
  everything added is the relay's own processing. Percentiles of the round trip, and the
  difference relayed − direct (two relay hops per round trip).
* Throughput: for each offered rate, the client paces 200-byte datagrams for ``--seconds`` into a
  fresh relay whose upstream is a sink; the relay's exit counters say how many it received and
  forwarded, /proc how much CPU it used. "per CPU-s" = datagrams forwarded per second of relay
  CPU time: the rate one fully busy core sustains. Rows for the idle scenario and for a busy one
  (delay + jitter + 1 % loss: every datagram goes through the heap and the random draws).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
echo = sys.argv[1] == "echo"
n = 0
s.settimeout(1.0 if not echo else None)
try:
    while True:
        try:
            data, addr = s.recvfrom(2048)
        except TimeoutError:
            if n:
                break
            continue
        n += 1
        if echo:
            s.sendto(data, addr)
finally:
    print(n, flush=True)
"""

IDLE = 'name = "idle"\n'
BUSY = 'name = "busy"\n[network]\ndelay_ms = 20\njitter_ms = 5\nloss = 0.01\n'
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
COUNTS = re.compile(r"uplink\s+received (\d+)\s+forwarded (\d+)")


def start_server(mode: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-c", ECHO, mode], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def start_relay(upstream: int, scenario: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtcprobe", "relay", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{upstream}",
         "--scenario", str(scenario)], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    match = LISTENING.search(line)
    if match is None:
        raise SystemExit(f"relay did not start: {line}{proc.stderr.read()}")
    return proc, int(match.group(1))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_relay(proc: subprocess.Popen[str]) -> tuple[int, int]:
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    match = COUNTS.search(err)
    if match is None:
        raise SystemExit(f"no counters from the relay: {err}")
    return int(match.group(1)), int(match.group(2))


def pings(port: int, n: int) -> list[float]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(2)
    payload = bytes(200)
    rtts = []
    for _ in range(50):  # warm up (first datagram opens the relay's upstream socket)
        s.sendto(payload, ("127.0.0.1", port))
        s.recvfrom(2048)
    for _ in range(n):
        t0 = time.perf_counter()
        s.sendto(payload, ("127.0.0.1", port))
        s.recvfrom(2048)
        rtts.append(time.perf_counter() - t0)
    s.close()
    return rtts


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1e6


def blast(port: int, rate: float, seconds: float) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    s.bind(("127.0.0.1", 0))
    payload = bytes(200)
    total = int(rate * seconds)
    start = time.perf_counter()
    sent = 0
    while sent < total:
        due = int((time.perf_counter() - start) * rate) + 1
        while sent < min(due, total):
            s.sendto(payload, ("127.0.0.1", port))
            sent += 1
    s.close()
    return sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pings", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rates", default="2000,5000,10000,20000,40000")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        idle, busy = Path(tmp) / "idle.toml", Path(tmp) / "busy.toml"
        idle.write_text(IDLE)
        busy.write_text(BUSY)

        echo, echo_port = start_server("echo")
        relay, relay_port = start_relay(echo_port, idle)
        direct = pings(echo_port, args.pings)
        relayed = pings(relay_port, args.pings)
        stop_relay(relay)
        echo.terminate()
        echo.wait()
        print(f"Round trip of a 200-byte datagram on loopback ({args.pings} pings, µs)")
        print(f"{'path':22s} {'p50':>8s} {'p90':>8s} {'p99':>8s} {'mean':>8s}")
        for name, rtts in (("direct", direct), ("through the relay", relayed)):
            print(f"{name:22s} {pct(rtts, 0.5):8.0f} {pct(rtts, 0.9):8.0f} {pct(rtts, 0.99):8.0f} "
                  f"{statistics.fmean(rtts) * 1e6:8.0f}")
        added = pct(relayed, 0.5) - pct(direct, 0.5)
        print(f"{'added (relay − direct)':22s} {added:8.0f} {pct(relayed, 0.9) - pct(direct, 0.9):8.0f} "
              f"{pct(relayed, 0.99) - pct(direct, 0.99):8.0f}   ≈ {added / 2:.0f} µs per relay hop "
              f"(ratio {pct(relayed, 0.5) / pct(direct, 0.5):.1f}x)")
        print()
        print(f"Throughput, 200-byte datagrams, {args.seconds:g} s per row, relay in its own process")
        print(f"{'scenario':9s} {'offered/s':>10s} {'received':>9s} {'forwarded':>9s} {'fwd %':>6s} "
              f"{'relay CPU %':>11s} {'per CPU-s':>10s}")
        for name, scenario in (("idle", idle), ("busy", busy)):
            for rate in rates:
                sink, sink_port = start_server("sink")
                relay, relay_port = start_relay(sink_port, scenario)
                cpu0, t0 = cpu_seconds(relay.pid), time.perf_counter()
                sent = blast(relay_port, rate, args.seconds)
                time.sleep(0.2)  # let the relay drain (busy: its 20 ms delay)
                cpu = cpu_seconds(relay.pid) - cpu0
                wall = time.perf_counter() - t0
                received, forwarded = stop_relay(relay)
                sink.terminate()
                sink.wait()
                pct_fwd = 100 * forwarded / sent
                print(f"{name:9s} {rate:10.0f} {received:9d} {forwarded:9d} {pct_fwd:6.1f} {100 * cpu / wall:11.0f} "
                      f"{forwarded / cpu if cpu else float('nan'):10.0f}")
                sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
