"""The room server's cost per participant: CPU and messages per second of one ``rtcprobe serve``
process holding a few hundred simulated participants that send a sample every second.

The server runs as ``rtcprobe serve`` in its own process (``--log-level warning``). The load
generator is this process: one aiohttp WebSocket per participant, speaking the room protocol as a
real client does (a hello carrying ``room``, ``iced``, ``joined``, then one ``nq-sample`` a
second, every push read), with the samples of ``tests/test_core_room_sim.py``'s simulated call
(``CallSim``: per-leg loss, jitter and round trips; binomial packet losses), one simulated call
per room, its media advanced every second. In each room one participant's uplink loses 5 %, so
attribution has something to do; every participant asks for local and remote verbosity 3 (the
full stats of everyone, pushed at every tick: the most the server ever sends).

Participants join over ``--ramp`` seconds, their samples spread evenly over each second; after
``--warmup`` seconds the server's CPU time (/proc/PID/stat), its message counters (its own
``/metrics``: ``rtcprobe_room_messages_total``, ``rtcprobe_room_samples_total``) and the bytes
the clients received are read, and again ``--seconds`` later. Printed per step:

* the server's CPU as a fraction of one core, and per participant: CPU ms per second;
* samples accepted per second, room messages in and out per second (per participant too), and
  the bytes the server pushed per second;
* the server's RSS and room errors (none expected), and how late the load generator's samples
  went out (its own lag: if it is large, the generator, not the server, is the limit).

    python benchmarks/bench_rooms.py [--steps 150,300,600] [--room-size 3] [--seconds 20]

Linux only (/proc).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from rtcprobe.core.room import encode_demand, encode_sample
from test_core_room_sim import FULL, CallSim, Legs

from rtcprobe.server.tokens import mint_token

SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def proc_stat(pid: int) -> tuple[float, int]:
    """(CPU seconds, RSS bytes) of ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK, int(fields[21]) * PAGE


def scrape(metrics_url: str) -> dict[str, float]:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("rtcprobe_room") and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            values[series] = float(value)
    return values


class Load:
    """The counters every simulated participant adds to."""

    def __init__(self) -> None:
        self.received = 0
        self.bytes = 0
        self.sent = 0
        self.lag: list[float] = []  # s each sample went out after it was due
        self.joined = 0
        self.errors: list[str] = []


async def participant(http: aiohttp.ClientSession, url: str, room: str, identity: str, sim: CallSim,
                      first: float, until: float, load: Load) -> None:
    loop = asyncio.get_running_loop()
    token = mint_token(SECRET, identity, now=time.time(), room=room)
    async with http.ws_connect(url, max_msg_size=1 << 20) as ws:
        await ws.send_str(json.dumps({"type": "ice", "token": token, "version": 2, "preflight": False,
                                      "room": {"networkQuality": {"local": 3, "remote": 3},
                                               "demand": encode_demand(FULL)}}))
        joined = asyncio.Event()

        async def read() -> None:
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                load.received += 1
                load.bytes += len(msg.data)
                if not joined.is_set() and '"joined"' in msg.data:
                    joined.set()
                elif '"error"' in msg.data[:40] or '"room-error"' in msg.data[:40]:
                    load.errors.append(msg.data[:200])

        reader = asyncio.ensure_future(read())
        await asyncio.wait_for(joined.wait(), 30)
        load.joined += 1
        due = first
        while due < until:
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            load.lag.append(max(0.0, loop.time() - due))
            await ws.send_str(json.dumps({"type": "nq-sample", "sample": encode_sample(sim.sample(identity))},
                                         separators=(",", ":")))
            load.sent += 1
            due += 1.0
        await ws.send_str('{"type":"bye"}')
        await asyncio.wait_for(reader, 10)


async def advance(sim: CallSim, until: float) -> None:
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        sim.step(1.0)
        await asyncio.sleep(1.0)


async def step(n: int, size: int, args: argparse.Namespace) -> dict[str, Any]:
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rtcprobe", "serve", "--port", "0", "--secret", SECRET, "--log-level", "warning",
        "--room-size", str(size), "--max-rooms", str(n), stdout=asyncio.subprocess.PIPE)
    assert server.stdout is not None
    url = ""
    while not url:
        line = (await server.stdout.readline()).decode()
        if not line:
            raise RuntimeError("rtcprobe serve did not start")
        if line.startswith("url:"):
            url = line.split()[1]
    metrics = url.replace("ws://", "http://").replace("/signaling", "/metrics")
    loop = asyncio.get_running_loop()
    load = Load()
    start = loop.time()
    measure_from = start + args.ramp + args.warmup
    until = measure_from + args.seconds + 1.0
    rooms = n // size
    idle_cpu, idle_rss = proc_stat(server.pid)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            tasks = []
            for r in range(rooms):
                names = [f"p{r}-{i}" for i in range(size)]
                legs = {name: Legs(up_loss=0.05 if i == 0 else 0.0) for i, name in enumerate(names)}
                sim = CallSim(legs, exact=False, seed=r)
                tasks.append(asyncio.ensure_future(advance(sim, until)))
                for i, name in enumerate(names):
                    k = r * size + i
                    join_at = start + args.ramp * k / n
                    first = start + args.ramp + (k / n)  # samples spread evenly over each second
                    tasks.append(asyncio.ensure_future(
                        _later(join_at, participant(http, url, f"room-{r}", name, sim, first, until, load))))
            await asyncio.sleep(max(0.0, measure_from - loop.time()))
            cpu0, _ = proc_stat(server.pid)
            m0 = await asyncio.to_thread(scrape, metrics)
            bytes0, received0, lag_from = load.bytes, load.received, len(load.lag)
            t0 = loop.time()
            await asyncio.sleep(args.seconds)
            cpu1, rss = proc_stat(server.pid)
            m1 = await asyncio.to_thread(scrape, metrics)
            t1 = loop.time()
            bytes1, received1, lags = load.bytes, load.received, sorted(load.lag[lag_from:])
            own = resource.getrusage(resource.RUSAGE_SELF)
            results = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        server.terminate()
        await server.wait()
    failures = [r for r in results if isinstance(r, BaseException)]
    wall = t1 - t0

    def delta(series: str) -> float:
        return m1.get(series, 0.0) - m0.get(series, 0.0)

    errors = sum(v for k, v in m1.items() if k.startswith("rtcprobe_room_errors_total"))
    cpu = (cpu1 - cpu0) / wall
    return {
        "participants": n, "rooms": rooms, "size": size, "joined": load.joined, "cpu": cpu,
        "cpu_ms_per_participant": 1000 * cpu / n, "idle_cpu": idle_cpu,
        "samples_s": delta("rtcprobe_room_samples_total") / wall,
        "in_s": delta('rtcprobe_room_messages_total{direction="in"}') / wall,
        "out_s": delta('rtcprobe_room_messages_total{direction="out"}') / wall,
        "client_msgs_s": (received1 - received0) / wall, "kbytes_out_s": (bytes1 - bytes0) / wall / 1000,
        "rss_mb": rss / 1e6, "rss_idle_mb": idle_rss / 1e6, "room_errors": errors,
        "client_errors": len(load.errors), "failures": len(failures),
        "lag_p50_ms": 1000 * lags[len(lags) // 2] if lags else 0.0,
        "lag_p99_ms": 1000 * lags[int(len(lags) * 0.99)] if lags else 0.0,
        "generator_cpu_s": own.ru_utime + own.ru_stime,
    }


async def _later(at: float, coro: Any) -> Any:
    await asyncio.sleep(max(0.0, at - asyncio.get_running_loop().time()))
    return await coro


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="150,300,600", help="participants per step (default: 150,300,600)")
    parser.add_argument("--room-size", type=int, default=3, help="participants per room (default: 3)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per step (default: 20)")
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds over which participants join")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds after the ramp before measuring")
    parser.add_argument("--json", action="store_true", help="one JSON object per step instead of the table")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    rows = []
    for n in (int(x) for x in args.steps.split(",")):
        row = asyncio.run(step(n, args.room_size, args))
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)
    if args.json:
        return
    print(f"rooms of {args.room_size}, verbosity 3/3, one sample per participant per second, "
          f"{args.seconds:g} s measured per step")
    print("participants | rooms | server CPU (% core) | CPU ms/participant/s | samples/s | msgs in/s | "
          "msgs out/s | out/participant/s | kB out/s | RSS MB | errors | sample lag p50/p99 ms")
    for r in rows:
        print(f"{r['participants']:12d} | {r['rooms']:5d} | {100 * r['cpu']:19.1f} | "
              f"{r['cpu_ms_per_participant']:20.2f} | "
              f"{r['samples_s']:9.1f} | {r['in_s']:9.1f} | {r['out_s']:10.1f} | "
              f"{r['out_s'] / r['participants']:17.2f} | {r['kbytes_out_s']:8.1f} | {r['rss_mb']:6.1f} | "
              f"{r['room_errors'] + r['client_errors'] + r['failures']:6.0f} | "
              f"{r['lag_p50_ms']:.1f}/{r['lag_p99_ms']:.1f}")


if __name__ == "__main__":
    main()
