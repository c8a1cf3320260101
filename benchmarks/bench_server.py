"""How many concurrent sessions one media-free signaling server process holds on this machine.

The server runs as ``rtcprobe serve`` in its own process (``--log-level warning``: a line per
session would measure the terminal). The load generator runs in ``--workers`` other processes,
each an asyncio loop of aiohttp WebSocket clients speaking protocol version 2 exactly as a real
client does: connect, ``ice`` with a fresh token, ``iced`` (the TURN REST credentials of two TURN
URLs), the socket held for ``--hold`` seconds (the client's test), a real report (a simulated
``clean-broadband`` preflight's, ~5 KB), ``reported``, ``bye``, the close.

For each step N, a fresh server; N sessions arrive at an even rate over ``--hold`` seconds, so
that (Little's law) about N are open at once when the last one arrives; the peak is read from the
server's own ``rtcprobe_sessions_open`` gauge. Printed per step:

* p50/p99 of the ``iced`` answer: from sending ``ice`` to receiving ``iced``, on the client (so
  the load generator's own scheduling delay counts against the server: conservative);
* p99 of the ``reported`` answer, and of the WebSocket connect (TCP + HTTP upgrade);
* the server's RSS per open session (peak RSS minus the idle server's, over the peak sessions);
* the server's CPU: average over the step as a fraction of one core, and CPU ms per session;
* errors: failed connects, error replies, timeouts, unexpected closes.

File descriptors: the server holds one per connection and each worker one per session, so both
raise their soft ``RLIMIT_NOFILE`` towards the hard limit (``rtcprobe serve`` does it itself,
from ``--max-connections``; here ``resource.setrlimit`` in each worker). A hard limit below the
step's N makes connects fail: raise it (``ulimit -Hn``, ``LimitNOFILE=``) before running.

``--preflight-cpu`` instead measures the server's CPU during one real preflight: ``rtcprobe
preflight --url ... --duration 10s`` run by ``--client-python`` (a Python whose rtcprobe speaks
protocol version 2) against a fresh server, reading the server's CPU time from /proc (schedstat).

    python benchmarks/bench_server.py [--steps 250,500,1000,2000,3000] [--hold 10] [--workers 2]
    python benchmarks/bench_server.py --preflight-cpu [--client-python PATH] [--duration 10s]

Linux only (/proc).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from typing import Any

import aiohttp
import attrs

SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
TURN_SECRET = "bench-turn-secret"
TURN_URLS = ("turn:127.0.0.1:3478?transport=udp", "turns:127.0.0.1:5349?transport=tcp")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
TIMEOUT = 30.0  # s for any one step of a session before it counts as an error


# --- the server process ----------------------------------------------------------------------------


class ServerProcess:
    """``rtcprobe serve`` in its own process, with its CPU time and RSS read from /proc."""

    def __init__(self, max_sessions: int, hold: float, turn_urls: tuple[str, ...] = TURN_URLS,
                 turn_secret: str = TURN_SECRET) -> None:
        args = [sys.executable, "-m", "rtcprobe", "serve", "--port", "0", "--secret", SECRET,
                "--max-sessions", str(max_sessions), "--max-connections", str(2 * max_sessions),
                "--hold-timeout", str(max(4 * hold, 60)), "--log-level", "warning"]
        for url in turn_urls:
            args += ["--turn", url]
        if turn_urls:
            args += ["--turn-secret", turn_secret]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.url = ""
        for line in self.proc.stdout:
            if line.startswith("url:"):
                self.url = line.split(None, 1)[1].strip()
            if line.startswith("Ctrl-C"):
                break
        if not self.url:
            raise RuntimeError(f"rtcprobe serve did not start: {self.proc.stderr.read()}")
        self.stderr: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()  # a full pipe would block the server

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        self.stderr.extend(self.proc.stderr)

    @property
    def metrics_url(self) -> str:
        return self.url.replace("ws://", "http://").replace("/signaling", "/metrics")

    def cpu_seconds(self) -> float:
        """CPU time of all the server's threads: the scheduler's nanoseconds (schedstat), else
        utime + stime in clock ticks."""
        tasks = f"/proc/{self.proc.pid}/task"
        try:  # (a thread that ended takes its time along: the server's work is on its main thread)
            return sum(int(open(f"{tasks}/{t}/schedstat").read().split()[0]) for t in os.listdir(tasks)) / 1e9
        except (OSError, ValueError, IndexError):  # no schedstats in this kernel, or a thread just ended
            fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_bytes(self) -> int:
        return int(open(f"/proc/{self.proc.pid}/statm").read().split()[1]) * PAGE

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def sessions_open(metrics_url: str) -> int:
    with urllib.request.urlopen(metrics_url, timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("rtcprobe_sessions_open "):
                return int(float(line.split()[1]))
    return 0


# --- the load generator ----------------------------------------------------------------------------


@attrs.frozen
class WorkerResult:
    connect: list[float]  # s, per session
    iced: list[float]
    reported: list[float]
    errors: dict[str, int]
    cpu: list[float] = attrs.Factory(list)  # s of CPU this worker used (one entry)


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def _session(http: aiohttp.ClientSession, url: str, token: str, start: float, hold: float, report_frame: str,
                   out: WorkerResult) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, start - time.time()))
    t0 = loop.time()
    try:
        ws = await http.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_close=TIMEOUT), autoping=True)
    except Exception as exc:
        out.errors[f"connect: {type(exc).__name__}"] += 1
        return
    try:
        t1 = loop.time()
        out.connect.append(t1 - t0)
        await ws.send_str(json.dumps({"type": "ice", "preflight": True, "token": token, "version": 2,
                                      "region": "gll"}))
        msg = await ws.receive(timeout=TIMEOUT)
        t2 = loop.time()
        if msg.type is not aiohttp.WSMsgType.TEXT or json.loads(msg.data).get("type") != "iced":
            out.errors[f"iced: {msg.type.name} {str(msg.data)[:60]}"] += 1
            return
        out.iced.append(t2 - t1)
        await asyncio.sleep(max(0.0, t0 + hold - loop.time()))  # the client's test
        t3 = loop.time()
        await ws.send_str(report_frame)
        msg = await ws.receive(timeout=TIMEOUT)
        if msg.type is not aiohttp.WSMsgType.TEXT or json.loads(msg.data).get("type") != "reported":
            out.errors[f"reported: {msg.type.name} {str(msg.data)[:60]}"] += 1
            return
        out.reported.append(loop.time() - t3)
        await ws.send_str('{"type":"bye"}')
        msg = await ws.receive(timeout=TIMEOUT)
        if msg.type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) or ws.close_code != 1000:
            out.errors[f"bye: {msg.type.name} {ws.close_code}"] += 1
    except TimeoutError:
        out.errors["timeout"] += 1
    except Exception as exc:
        out.errors[f"{type(exc).__name__}"] += 1
    finally:
        await ws.close()


def worker(url: str, starts: list[float], hold: float, report: dict[str, Any], conn: Any) -> None:
    """One load-generator process: a session starting at each of ``starts`` (epoch s)."""
    from rtcprobe.server.tokens import mint_token

    raise_fd_limit()
    tokens = [mint_token(SECRET, f"bench-{os.getpid()}-{i}", now=time.time()) for i in range(len(starts))]
    report_frame = json.dumps({"type": "report", "report": report}, separators=(",", ":"))
    out = WorkerResult(connect=[], iced=[], reported=[], errors=Counter())

    async def main() -> None:
        connector = aiohttp.TCPConnector(limit=0, force_close=True)  # limit=0: no cap on open connections
        async with aiohttp.ClientSession(connector=connector) as http:
            await asyncio.gather(*(_session(http, url, token, start, hold, report_frame, out)
                                   for token, start in zip(tokens, starts, strict=True)))

    cpu0 = time.process_time()
    asyncio.run(main())
    out.cpu.append(time.process_time() - cpu0)
    conn.send(attrs.asdict(out))
    conn.close()


# --- one step ----------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


@attrs.frozen
class Step:
    n: int
    peak_sessions: int
    connect_p99: float  # ms
    iced_p50: float
    iced_p99: float
    reported_p99: float
    rss_idle: float  # MiB
    rss_per_session: float  # KiB
    cpu_core: float  # average fraction of one core over the step
    cpu_ms_per_session: float
    clients_cpu_core: float  # the load generator's processes together, fraction of one core
    errors: dict[str, int]
    load: float  # 1-min load average before the step


def run_step(n: int, hold: float, workers: int, report: dict[str, Any]) -> Step:
    load = os.getloadavg()[0]
    server = ServerProcess(max_sessions=max(2 * n, 100), hold=hold)
    try:
        time.sleep(0.5)
        rss_idle = server.rss_bytes()
        t0 = time.time() + 2.0  # the workers import and mint meanwhile
        starts = [t0 + hold * i / n for i in range(n)]
        ctx = multiprocessing.get_context("spawn")
        pipes, procs = [], []
        for w in range(workers):
            parent, child = ctx.Pipe(duplex=False)
            p = ctx.Process(target=worker, args=(server.url, starts[w::workers], hold, report, child))
            p.start()
            pipes.append(parent)
            procs.append(p)
        peak_rss, peak_sessions = rss_idle, 0
        while time.time() < t0:
            time.sleep(0.05)
        cpu0, wall0 = server.cpu_seconds(), time.monotonic()
        # Sample around the peak (the last arrivals): RSS often, the gauge (an HTTP request) rarely.
        next_gauge = t0 + hold - 1.0
        while any(p.is_alive() for p in procs) and not all(pipe.poll() for pipe in pipes):
            peak_rss = max(peak_rss, server.rss_bytes())
            if time.time() >= next_gauge and time.time() < t0 + hold + 1.0:
                peak_sessions = max(peak_sessions, sessions_open(server.metrics_url))
                next_gauge = time.time() + 0.25
            time.sleep(0.05)
        results = [pipe.recv() for pipe in pipes]
        cpu = server.cpu_seconds() - cpu0
        wall = time.monotonic() - wall0
        for p in procs:
            p.join()
    finally:
        server.stop()
    merged: dict[str, Any] = {"connect": [], "iced": [], "reported": [], "cpu": [], "errors": Counter()}
    for r in results:
        for key in ("connect", "iced", "reported", "cpu"):
            merged[key] += r[key]
        merged["errors"].update(r["errors"])
    missing = n - len(merged["connect"]) - sum(v for k, v in merged["errors"].items() if k.startswith("connect"))
    if missing:
        merged["errors"]["lost"] += missing
    return Step(
        n=n, peak_sessions=peak_sessions,
        connect_p99=1000 * pct(merged["connect"], 0.99), iced_p50=1000 * pct(merged["iced"], 0.50),
        iced_p99=1000 * pct(merged["iced"], 0.99), reported_p99=1000 * pct(merged["reported"], 0.99),
        rss_idle=rss_idle / 2**20, rss_per_session=(peak_rss - rss_idle) / max(peak_sessions, 1) / 1024,
        cpu_core=cpu / wall, cpu_ms_per_session=1000 * cpu / n, clients_cpu_core=sum(merged["cpu"]) / wall,
        errors=dict(merged["errors"]), load=load,
    )


def simulated_report() -> dict[str, Any]:
    import rtcprobe

    return json.loads(rtcprobe.simulate("clean-broadband", seed=1).to_json())  # type: ignore[no-any-return]


def print_table(steps: list[Step]) -> None:
    print("| sessions | peak open | iced p50 ms | iced p99 ms | reported p99 ms | connect p99 ms | "
          "RSS/session KiB | server CPU (core) | CPU ms/session | clients CPU (core) | errors | load before |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in steps:
        errors = sum(s.errors.values())
        print(f"| {s.n:,} | {s.peak_sessions:,} | {s.iced_p50:.1f} | {s.iced_p99:.1f} | {s.reported_p99:.1f} | "
              f"{s.connect_p99:.1f} | {s.rss_per_session:.1f} | {s.cpu_core:.2f} | {s.cpu_ms_per_session:.2f} | "
              f"{s.clients_cpu_core:.2f} | {errors} | {s.load:.2f} |")
    for s in steps:
        if s.errors:
            print(f"  errors at {s.n}: {s.errors}")
    print(f"  idle server RSS: {statistics.mean(s.rss_idle for s in steps):.1f} MiB")


# --- the server during one real preflight ------------------------------------------------------------


def preflight_cpu(client_python: str, duration: str) -> None:
    """One real preflight against a fresh server, through a real coturn when it is installed (as
    in production: the server only hands out its credentials)."""
    from contextlib import ExitStack

    from rtcprobe.server.coturn import CoturnNotInstalled, CoturnServer
    from rtcprobe.server.tokens import mint_token

    with ExitStack() as stack:
        try:
            coturn = stack.enter_context(CoturnServer())
            turn: tuple[tuple[str, ...], str] = (coturn.turn_urls, coturn.secret)
        except CoturnNotInstalled:
            turn = ((), "")
        server = ServerProcess(max_sessions=16, hold=60, turn_urls=turn[0], turn_secret=turn[1])
        stack.callback(server.stop)
        time.sleep(0.5)
        token = mint_token(SECRET, "bench-preflight", now=time.time())
        cpu0, wall0 = server.cpu_seconds(), time.monotonic()
        client = subprocess.run([client_python, "-m", "rtcprobe", "preflight", "--url", server.url, "--token", token,
                                 "--duration", duration, "--json"], capture_output=True, text=True, timeout=300)
        cpu, wall = server.cpu_seconds() - cpu0, time.monotonic() - wall0
        with urllib.request.urlopen(server.metrics_url, timeout=5) as resp:
            lines = resp.read().decode().splitlines()
        reports = [line for line in lines if line.startswith("rtcprobe_preflights_total")]
    try:
        report = json.loads(client.stdout)
        outcome = "failed: " + report["error"]["message"] if report.get("error") else "completed"
        pair = report.get("selectedIceCandidatePairStats") or {}
        outcome += f" (local candidate {pair.get('localCandidate', {}).get('candidateType')})"
    except (ValueError, KeyError, TypeError, AttributeError):
        outcome = f"no report (exit {client.returncode}): {client.stderr.strip()[-300:]}"
    print(f"preflight ({duration}, TURN: {', '.join(turn[0]) or 'none'}) with {client_python}: {outcome}")
    print(f"the server counted: {'; '.join(reports)}")
    print(f"server CPU over the client's {wall:.1f} s: {1000 * cpu:.1f} ms = {100 * cpu / wall:.3f} % of one core "
          "(all its threads, from /proc schedstat)")


# --- main --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="250,500,1000,2000,3000", help="session counts N (comma-separated)")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds each session holds its socket (default 10)")
    parser.add_argument("--workers", type=int, default=2, help="load-generator processes (default 2)")
    parser.add_argument("--preflight-cpu", action="store_true", help="measure the server during one real preflight")
    parser.add_argument("--client-python", default=sys.executable, help="the Python that runs rtcprobe preflight")
    parser.add_argument("--duration", default="10s", help="the preflight's --duration (default 10s)")
    args = parser.parse_args()
    if args.preflight_cpu:
        preflight_cpu(args.client_python, args.duration)
        return
    limit = raise_fd_limit()
    steps = [int(s) for s in args.steps.split(",")]
    if max(steps) // args.workers + 64 > limit:
        print(f"warning: the file descriptor limit ({limit}) is below what {max(steps)} sessions need per worker",
              file=sys.stderr)
    report = simulated_report()
    print(f"{os.cpu_count()} CPUs, hold {args.hold:g} s, {args.workers} load-generator processes, report "
          f"{len(json.dumps(report))} bytes")
    done: list[Step] = []
    for n in steps:
        done.append(run_step(n, args.hold, args.workers, report))
        s = done[-1]
        print(f"  N={n}: peak {s.peak_sessions}, iced p99 {s.iced_p99:.1f} ms, errors {sum(s.errors.values())}",
              file=sys.stderr, flush=True)
    print_table(done)


if __name__ == "__main__":
    main()
