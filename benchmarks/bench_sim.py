"""How fast the simulated preflight runs, side by side with SimPy models of the same traffic.

    python benchmarks/bench_sim.py [--repeat N] [--scenario NAME_OR_PATH]

Rows, all timed in this process with time.perf_counter (best of N, machines are noisy):

* rtcprobe sim, whole preflight: a 10 s preflight end to end — signaling, TURN, ICE, DTLS,
  RTP/RTCP over both links, the REMB loop, the core, the report and its JSON — with the
  scenario's endpoint model (the default scenario: aiortc's, the only model before the
  speed-up, so its row compares with the "before" column of benchmarks/README.md), then the
  same with the other model (libwebrtc's, the simulator's default); the rows below are the
  first row's run;
* core alone: the same core (``PreflightMachine``) fed the very calls the simulator made, replayed
  with nothing else around them, plus the report's JSON — the floor under the first row;
* netem, media flow vectorized: only the media packets of that run (the same send times and
  sizes) through the same two links with ``Link.send_batch`` (uplink, then downlink at the
  uplink delivery times);
* netem, media flow packet by packet: the same with ``Link.send`` in a Python loop;
* SimPy, media flow: the same packets through a SimPy model of the same links (a FIFO
  bottleneck with a drop-tail queue, random loss, delay + uniform jitter, then the second hop);
* SimPy, whole flow: every packet the preflight put on a link (control and media, both
  directions, each on its own link at its logged send time) through the same SimPy links, plus
  the core replay — the same work as the first row with SimPy as the packet engine (it replays
  the schedule, so it has no feedback loop to run: a lower bound for a SimPy simulator).

"vs SimPy media" and "vs SimPy whole" are those rows' times over this row's time (higher =
faster); "sim packets/s" is packets simulated per second of wall time.

A second table splits each whole-preflight row into its parts (timed with hooks around them in
the fastest of N runs, which add a little to each): setting up the run (random streams, links,
core), the interval batches of the steady state, the driver's stats sampling, the core (every
call into ``PreflightMachine``, the scorer included), the report's JSON, and the rest — the event
loop with the handshakes and the event-driven media until the switch to batches.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import numpy as np
from rtcprobe.core.preflight import PreflightMachine
from rtcprobe.core.report import PreflightReport
from rtcprobe.drivers.sim import PacketRecord, SimDriver, run_simulation
from rtcprobe.drivers.sim._steady import SteadyState
from rtcprobe.netem import LinkConfig
from rtcprobe.netem.scenario import Scenario
from rtcprobe.scenarios import load

LINK = {"delay_ms": 25, "jitter_ms": 5, "loss": 0.01, "bandwidth_kbps": 2000, "queue_packets": 100}
# aiortc's endpoint model: the one the simulator had before its speed-up (benchmarks/README.md's
# "before" column); the other model, libwebrtc's (the default), is the second row.
DEFAULT = Scenario.from_dict({"name": "bench", "duration": 10, "seed": 1, "network": LINK,
                              "media": {"stack": "aiortc"}})


def best_of(n: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(n):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def mean_of(n: int, fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def forget_seeds() -> None:
    """Empty the simulator's per-process memory of seeds (what a run with a new seed finds)."""
    from rtcprobe.drivers.sim import _seeds, driver

    for memo in (_seeds._POOLS, _seeds._PCG64_WORDS, driver._PORTS):
        memo.clear()


def media_flow(log: tuple[PacketRecord, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The uplink RTP packets of a run: the flow every media model below carries over both hops."""
    rtp = [(r.time_sent, r.size) for r in log if r.kind == "rtp" and r.direction == "uplink"]
    return np.array([t for t, _ in rtp]), np.array([s for _, s in rtp], dtype=np.int64)


def whole_flow(log: tuple[PacketRecord, ...]) -> dict[str, tuple[list[float], list[int]]]:
    """Every packet of a run, per link, in send order."""
    out: dict[str, tuple[list[float], list[int]]] = {"uplink": ([], []), "downlink": ([], [])}
    for r in log:
        out[r.direction][0].append(r.time_sent)
        out[r.direction][1].append(r.size)
    return out


def record_core_calls(sc: Scenario) -> tuple[SimDriver, list[tuple[str, tuple[Any, ...], dict[str, Any]]]]:
    """Run the simulator once and keep every call it made into its core."""
    driver = SimDriver(sc, sc.seed)
    core, calls = driver.core, []
    for name in ("start", "handle", "handle_timer", "get_timer", "next_action", "next_event"):
        real = getattr(core, name)

        def spy(*args: Any, _real: Callable[..., Any] = real, _name: str = name, **kw: Any) -> Any:
            calls.append((_name, args, kw))
            return _real(*args, **kw)

        setattr(core, name, spy)
    driver.run()
    return driver, calls


def core_replay(driver: SimDriver, calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]]) -> str:
    core = PreflightMachine(driver.config, run=driver.core.run)
    for name, args, kw in calls:
        getattr(core, name)(*args, **kw)
    assert core.report is not None
    return core.report.to_json()


CORE_CALLS = ("start", "handle", "handle_timer", "get_timer", "next_action", "next_event")


def breakdown(sc: Scenario, n: int) -> tuple[float, dict[str, float]]:
    """The whole-preflight row's parts in the fastest of ``n`` runs (total, {part: seconds})."""
    parts = ("setup", "interval batches", "stats sampling", "core", "report JSON")
    hooked = [(SimDriver, "__init__", "setup"), (SteadyState, "tick", "interval batches"),
              (SimDriver, "_sample", "stats sampling"), (PreflightReport, "to_json", "report JSON")]
    hooked += [(PreflightMachine, name, "core") for name in CORE_CALLS]
    spent = dict.fromkeys(parts, 0.0)
    originals = [(cls, name, cls.__dict__[name]) for cls, name, _ in hooked]

    def hook(fn: Callable[..., Any], part: str) -> Callable[..., Any]:
        def timed(*args: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                spent[part] += time.perf_counter() - t0

        return timed

    best: tuple[float, dict[str, float]] = (math.inf, {})
    try:
        for cls, name, part in hooked:
            setattr(cls, name, hook(cls.__dict__[name], part))
        for _ in range(n):
            for part in parts:
                spent[part] = 0.0
            t0 = time.perf_counter()
            run_simulation(sc).report.to_json()
            total = time.perf_counter() - t0
            if total < best[0]:
                rest = total - sum(spent.values())
                best = (total, {**spent, "event loop, handshakes, event-driven media": rest})
    finally:
        for cls, name, fn in originals:
            setattr(cls, name, fn)
    return best


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


def _simpy_hops(env: Any, rng: random.Random, cfg: LinkConfig) -> Any:
    import simpy

    class Hop:
        def __init__(self) -> None:
            self.server = simpy.Resource(env, capacity=1)
            self.sec_per_byte = 8.0 / (cfg.bandwidth_kbps * 1000.0) if cfg.bandwidth_kbps else 0.0
            self.last = 0.0

        def carry(self, nbytes: int) -> Any:
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

    return Hop()


def simpy_model(cfg_up: LinkConfig, cfg_down: LinkConfig, t: np.ndarray, size: np.ndarray, seed: int = 0) -> int:
    """The media flow's two hops in SimPy: each packet a process through a FIFO resource."""
    import simpy

    rng = random.Random(seed)
    env = simpy.Environment()
    delivered = [0]
    up, down = _simpy_hops(env, rng, cfg_up), _simpy_hops(env, rng, cfg_down)

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


def simpy_whole(sc: Scenario, flow: dict[str, tuple[list[float], list[int]]], seed: int = 0) -> int:
    """Every packet of the run on its own link, in SimPy (both links in one environment)."""
    import simpy

    rng = random.Random(seed)
    env = simpy.Environment()
    delivered = [0]
    hops = {"uplink": _simpy_hops(env, rng, sc.uplink), "downlink": _simpy_hops(env, rng, sc.downlink)}

    def packet(hop: Any, nbytes: int) -> Any:
        if (yield env.process(hop.carry(nbytes))):
            delivered[0] += 1

    def source(direction: str) -> Any:
        hop = hops[direction]
        times, sizes = flow[direction]
        for ti, s in zip(times, sizes, strict=True):
            if ti > env.now:
                yield env.timeout(ti - env.now)
            env.process(packet(hop, s))

    for direction in hops:
        env.process(source(direction))
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
    flow = whole_flow(full.packet_log)
    hops = 2 * len(t)
    driver, calls = record_core_calls(sc)
    recorded = driver.core.report
    assert recorded is not None and core_replay(driver, calls) == recorded.to_json()

    t_sim, _ = best_of(n, lambda: run_simulation(sc).report.to_json())
    # The same scenario with the other endpoint model (``[media] stack``): libwebrtc's pacer, GCC
    # and NACK/RTX must keep the simulator within ~1.5x of the aiortc model's time.
    other = attrs.evolve(sc, stack="aiortc" if sc.stack == "libwebrtc" else "libwebrtc")
    lw_full = run_simulation(other)
    t_other, _ = best_of(n, lambda: run_simulation(other).report.to_json())
    t_core, _ = best_of(n, lambda: core_replay(driver, calls))
    t_vec, got_vec = best_of(n, lambda: netem_vectorized(sc, t, size))
    t_loop, got_loop = best_of(max(3, n // 3), lambda: netem_loop(sc, t, size))
    t_simpy, got_simpy = best_of(max(3, n // 5), lambda: simpy_model(sc.uplink, sc.downlink, t, size))

    def whole() -> int:
        got = simpy_whole(sc, flow)
        core_replay(driver, calls)
        return got

    t_whole, got_whole = best_of(max(3, n // 5), whole)

    print(f"scenario {sc.name!r}: {sc.duration:g} s preflight, {full.sim_time:.2f} s simulated, "
          f"{full.packets} packets offered to the links, of which {len(t)} uplink RTP packets "
          f"(the media flow, {hops} packet-hops over both links)")
    print()
    header = (f"{'model':<46} {'time (ms)':>9} {'packets':>8} {'sim packets/s':>13} "
              f"{'vs SimPy media':>14} {'vs SimPy whole':>14} {'delivered':>9}")
    print(header)
    print("-" * len(header))
    rows = [
        (f"rtcprobe sim: whole preflight, {sc.stack} model", t_sim, full.packets, "-"),
        (f"rtcprobe sim: whole preflight, {other.stack} model", t_other, lw_full.packets, "-"),
        ("  of which the core alone (replayed) + JSON", t_core, 0, "-"),
        ("netem: media flow, vectorized (send_batch)", t_vec, hops, str(got_vec)),
        ("netem: media flow, packet by packet (send)", t_loop, hops, str(got_loop)),
        ("SimPy: media flow, same links", t_simpy, hops, str(got_simpy)),
        ("SimPy: whole flow (every packet) + the core", t_whole, full.packets, str(got_whole)),
    ]
    for name, secs, packets, delivered in rows:
        rate = f"{packets / secs:>13,.0f}" if packets else f"{'-':>13}"
        print(f"{name:<46} {secs * 1000:>9.2f} {packets:>8} {rate} "
              f"{t_simpy / secs:>13.1f}x {t_whole / secs:>13.1f}x {delivered:>9}")
    print()
    print(f"whole preflight: {t_sim * 1000:.2f} ms = {t_simpy / t_sim:.1f}x faster than the SimPy media flow, "
          f"{t_whole / t_sim:.1f}x faster than SimPy carrying the whole flow; "
          f"{full.packets / t_sim:,.0f} simulated packets/s")
    # The simulator remembers per process what a seed determines (the seeding's pools and words,
    # the ports): the rows above repeat one seed, as a sweep's points do. Here each run first
    # forgets it, as the first run of a seed must; and the mean, collections included.
    t_cold, _ = best_of(n, lambda: (forget_seeds(), run_simulation(sc).report.to_json()))
    t_mean = mean_of(n, lambda: run_simulation(sc).report.to_json())
    print(f"whole preflight, {sc.stack} model: {t_cold * 1000:.2f} ms with a seed never seen before (best of {n}); "
          f"mean of {n} runs {t_mean * 1000:.2f} ms")
    splits = [(model.stack, *breakdown(model, n)) for model in (sc, other)]
    print()
    title = "where the whole preflight goes (ms, share)"
    print(f"{title:<46}" + "".join(f"{st + ' model':>22}" for st, _, _ in splits))
    print("-" * (46 + 22 * len(splits)))
    for part in sorted(splits[0][2], key=lambda p: -splits[0][2][p]):
        print(f"{part:<46}" + "".join(f"{spent[part] * 1000:>15.2f} {spent[part] / total:>5.0%}"
                                      for _, total, spent in splits))
    print(f"{'(with the hooks: total)':<46}" + "".join(f"{total * 1000:>15.2f} {'':>5}" for _, total, _ in splits))
    print(f"(best of {n}; {Path(sys.executable).name} {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
