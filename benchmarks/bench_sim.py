"""How fast the simulated preflight runs, side by side with a SimPy model of the same media flow.

    python benchmarks/bench_sim.py [--repeat N] [--scenario NAME_OR_PATH]

Rows, all timed in this process with time.perf_counter (best of N, machines are noisy):

* rtcprobe sim, whole preflight: a 10 s preflight end to end — signaling, TURN, ICE, DTLS,
  RTP/RTCP over both links, the core, the report and its JSON;
* netem, media flow vectorized: only the media packets of that run (the same send times and
  sizes) through the same two links with ``Link.send_batch`` (uplink, then downlink at the
  uplink delivery times);
* netem, media flow packet by packet: the same with ``Link.send`` in a Python loop;
* SimPy, media flow: the same packets through a SimPy model of the same links (a FIFO
  bottleneck with a drop-tail queue, random loss, delay + uniform jitter, then the second hop).

The ratio column is SimPy's time over the row's time (higher = faster than SimPy).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rtcprobe.drivers.sim import PacketRecord, run_simulation
from rtcprobe.netem import LinkConfig
from rtcprobe.netem.scenario import Scenario
from rtcprobe.scenarios import load

LINK = {"delay_ms": 25, "jitter_ms": 5, "loss": 0.01, "bandwidth_kbps": 2000, "queue_packets": 100}
DEFAULT = Scenario.from_dict({"name": "bench", "duration": 10, "seed": 1, "network": LINK})


def best_of(n: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(n):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def media_flow(log: tuple[PacketRecord, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The uplink RTP packets of a run: the flow every model below carries over both hops."""
    rtp = [(r.time_sent, r.size) for r in log if r.kind == "rtp" and r.direction == "uplink"]
    return np.array([t for t, _ in rtp]), np.array([s for _, s in rtp], dtype=np.int64)


def netem_vectorized(sc: Scenario, t: np.ndarray, size: np.ndarray) -> int:
    up, down = sc.build_links(np.random.default_rng(0))
    mid = up.send_batch(t, size)
    ok = ~np.isnan(mid)
    order = np.argsort(mid[ok], kind="stable")
    out = down.send_batch(mid[ok][order], size[ok][order])
    return int((~np.isnan(out)).sum())


def netem_loop(sc: Scenario, t: np.ndarray, size: np.ndarray) -> int:
    up, down = sc.build_links(np.random.default_rng(0))
    mids = [(d, s) for ti, s in zip(t.tolist(), size.tolist(), strict=True) if (d := up.send(ti, s)) is not None]
    mids.sort()
    return sum(down.send(d, s) is not None for d, s in mids)


def simpy_model(cfg_up: LinkConfig, cfg_down: LinkConfig, t: np.ndarray, size: np.ndarray, seed: int = 0) -> int:
    """The same two hops in SimPy: each packet a process through a FIFO resource."""
    import simpy

    rng = random.Random(seed)
    env = simpy.Environment()
    delivered = [0]

    class Hop:
        def __init__(self, cfg: LinkConfig) -> None:
            self.cfg = cfg
            self.server = simpy.Resource(env, capacity=1)
            self.sec_per_byte = 8.0 / (cfg.bandwidth_kbps * 1000.0) if cfg.bandwidth_kbps else 0.0
            self.last = 0.0

        def carry(self, nbytes: int) -> Any:
            cfg = self.cfg
            if cfg.loss and rng.random() < cfg.loss:
                return False
            if cfg.queue_packets is not None and len(self.server.queue) >= cfg.queue_packets:
                return False
            with self.server.request() as req:
                yield req
                yield env.timeout(nbytes * self.sec_per_byte)
            delay = max(0.0, cfg.delay_ms / 1000 + rng.uniform(-cfg.jitter_ms, cfg.jitter_ms) / 1000)
            arrive = max(env.now + delay, self.last)  # no reordering, as the netem Link keeps order
            self.last = arrive
            yield env.timeout(arrive - env.now)
            return True

    up, down = Hop(cfg_up), Hop(cfg_down)

    def packet(nbytes: int) -> Any:
        if (yield env.process(up.carry(nbytes))) and (yield env.process(down.carry(nbytes))):
            delivered[0] += 1

    def source() -> Any:
        for ti, s in zip(t.tolist(), size.tolist(), strict=True):
            if ti > env.now:
                yield env.timeout(ti - env.now)
            env.process(packet(s))

    env.process(source())
    env.run()
    return delivered[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=15, help="best of N (default 15)")
    parser.add_argument("--scenario",
                        help="a scenario file or built-in name (default: a 10 s, 2 Mbit/s, 1 %% loss link)")
    args = parser.parse_args(argv)
    sc = load(args.scenario) if args.scenario else DEFAULT
    try:
        import simpy  # noqa: F401
    except ImportError:
        print("bench_sim needs simpy: pip install simpy", file=sys.stderr)
        return 2

    n = args.repeat
    full = run_simulation(sc, packet_log=True)
    t, size = media_flow(full.packet_log)
    hops = 2 * len(t)

    t_sim, _ = best_of(n, lambda: run_simulation(sc).report.to_json())
    t_vec, got_vec = best_of(n, lambda: netem_vectorized(sc, t, size))
    t_loop, got_loop = best_of(max(3, n // 3), lambda: netem_loop(sc, t, size))
    t_simpy, got_simpy = best_of(max(3, n // 5), lambda: simpy_model(sc.uplink, sc.downlink, t, size))

    print(f"scenario {sc.name!r}: {sc.duration:g} s preflight, {full.sim_time:.2f} s simulated, "
          f"{full.packets} packets offered to the links, of which {len(t)} uplink RTP packets "
          f"(the media flow, {hops} packet-hops over both links)")
    print()
    header = f"{'model':<44} {'time (ms)':>10} {'packets':>8} {'packets/s':>12} {'vs SimPy':>9} {'delivered':>9}"
    print(header)
    print("-" * len(header))
    rows = [
        ("rtcprobe sim: whole preflight (report incl.)", t_sim, full.packets, "-"),
        ("netem: media flow, vectorized (send_batch)", t_vec, hops, str(got_vec)),
        ("netem: media flow, packet by packet (send)", t_loop, hops, str(got_loop)),
        ("SimPy: media flow, same links", t_simpy, hops, str(got_simpy)),
    ]
    for name, secs, packets, delivered in rows:
        print(f"{name:<44} {secs * 1000:>10.2f} {packets:>8} {packets / secs:>12,.0f} "
              f"{t_simpy / secs:>8.1f}x {delivered:>9}")
    print()
    print(f"(best of {n}; {Path(sys.executable).name} {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
