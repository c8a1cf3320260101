"""Mahimahi link traces: parse, write, and generate them from a seeded rate profile.

Format (Mahimahi ``mm-link``): one integer millisecond timestamp per line, non-decreasing; each
line is one delivery opportunity for 1504 bytes; repeated timestamps are several opportunities
in the same millisecond; the trace repeats with period = its last timestamp. A file holding just
``1`` is a 1504·8 bit/ms = 12.032 Mbit/s link.

The generator draws a time-varying Poisson process of opportunities (per 1 ms bin, Poisson with
the profile's mean) using only ``Generator.random()`` so that a seed reproduces the same file.
Regenerate the shipped traces with::

    python -c "from rtcprobe.netem.trace import main; main()" --seed 2026 --duration 60 --out scenarios/traces
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import numpy as np
from numpy.typing import NDArray
from rtcprobe.core.errors import ConfigError

MTU_BYTES: Final = 1504
# Seed and ranges of the shipped scenarios/traces/cellular.{up,down} (see scenarios/README.md).
CELLULAR_SEED: Final = 2026
CELLULAR_UP_KBPS: Final = (300.0, 2500.0)
CELLULAR_DOWN_KBPS: Final = (300.0, 5000.0)

RateProfile = Callable[[float], float] | Sequence[tuple[float, float]]


def ms(t: float) -> float:
    """Seconds to trace milliseconds, snapping float noise: an opportunity time k/1000 s maps back
    to exactly k ms (1.005 * 1000 is 1004.9999999999999, which would misplace it)."""
    t_ms = t * 1000.0
    r = round(t_ms)
    return float(r) if abs(t_ms - r) < 1e-6 else t_ms


def ms_v(t: NDArray[np.float64]) -> NDArray[np.float64]:
    """:func:`ms` over an array (the same operations, so scalar and vector paths agree)."""
    t_ms = t * 1000.0
    r = np.rint(t_ms)
    off = t_ms - r
    np.abs(off, out=off)
    np.copyto(t_ms, r, where=off < 1e-6)
    return t_ms


class TraceFormatError(ConfigError):
    """A malformed trace: ``line`` is 1-based (0 when the problem is the file as a whole)."""

    def __init__(self, source: str, line: int, problem: str) -> None:
        self.source = source
        self.line = line
        self.problem = problem
        super().__init__(f"{source}: line {line}: {problem}" if line else f"{source}: {problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.source, self.line, self.problem))


def _to_timestamps(value: Iterable[int]) -> tuple[int, ...]:
    return tuple(value)


@attrs.frozen(repr=False)
class Trace:
    """A Mahimahi trace: delivery opportunity times in integer milliseconds since the link started."""

    timestamps_ms: tuple[int, ...] = attrs.field(converter=_to_timestamps)
    source: str | None = attrs.field(default=None, eq=False)
    _array: NDArray[np.int64] = attrs.field(init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        ts = self.timestamps_ms
        name = self.source or "trace"
        if not ts:
            raise TraceFormatError(name, 0, "no timestamps (a trace needs at least one line)")
        prev = 0
        for i, t in enumerate(ts):
            if isinstance(t, bool) or not isinstance(t, int) or t < 0:
                raise TraceFormatError(name, i + 1, f"timestamps must be integers >= 0, got {t!r}")
            if t < prev:
                raise TraceFormatError(name, i + 1, f"timestamps must not decrease ({t} after {prev})")
            prev = t
        if ts[-1] <= 0:
            raise TraceFormatError(name, len(ts), "the last timestamp (the period) must be > 0")
        array = np.asarray(ts, dtype=np.int64)
        array.flags.writeable = False  # shared by every link built from this trace
        object.__setattr__(self, "_array", array)

    def __repr__(self) -> str:
        return f"Trace(source={self.source!r}, opportunities={len(self.timestamps_ms)}, period_ms={self.period_ms})"

    @property
    def array(self) -> NDArray[np.int64]:
        """The timestamps as a read-only int64 array."""
        return self._array

    @property
    def period_ms(self) -> int:
        return self.timestamps_ms[-1]

    @property
    def mean_kbps(self) -> float:
        """Capacity averaged over one period: bits per ms = kbit/s."""
        return len(self.timestamps_ms) * MTU_BYTES * 8 / self.period_ms

    def opportunity_time(self, k: int) -> float:
        """Time in seconds of opportunity ``k`` (0-based, counting across wrap-arounds)."""
        cycle, i = divmod(k, len(self.timestamps_ms))
        return (self.timestamps_ms[i] + cycle * self.period_ms) / 1000.0

    def opportunities_until(self, t: float) -> int:
        """How many opportunities fall at times <= ``t`` seconds."""
        if t < 0:
            return 0
        t_ms = ms(t)
        cycle = math.floor(t_ms / self.period_ms)
        within = int(np.searchsorted(self._array, t_ms - cycle * self.period_ms, side="right"))
        return cycle * len(self.timestamps_ms) + within

    @classmethod
    def from_text(cls, text: str, source: str = "<trace>") -> Trace:
        """Parse trace file contents; errors name the 1-based line."""
        stamps: list[int] = []
        prev = 0
        for lineno, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line:
                continue  # blank lines (a trailing newline, say) carry nothing
            try:
                t = int(line, 10)
            except ValueError:
                raise TraceFormatError(
                    source, lineno, f"expected an integer millisecond timestamp, got {line[:40]!r}"
                ) from None
            if t < 0:
                raise TraceFormatError(source, lineno, f"timestamps must be >= 0, got {t}")
            if t < prev:
                raise TraceFormatError(source, lineno, f"timestamps must not decrease ({t} after {prev})")
            stamps.append(t)
            prev = t
        if not stamps:
            raise TraceFormatError(source, 0, "empty trace (a trace needs at least one timestamp)")
        if stamps[-1] == 0:
            raise TraceFormatError(source, len(stamps), "the last timestamp (the period) must be > 0")
        return cls(stamps, source=source)


def parse_trace(path: str | Path) -> Trace:
    """Read a Mahimahi trace file. Raises TraceFormatError (a ConfigError) naming the line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="ascii")
    except FileNotFoundError:
        raise TraceFormatError(str(path), 0, "trace file not found") from None
    except UnicodeDecodeError:
        raise TraceFormatError(str(path), 0, "not a text file of integer timestamps") from None
    except OSError as exc:
        raise TraceFormatError(str(path), 0, f"cannot read: {exc.strerror or exc}") from None
    return Trace.from_text(text, source=str(path))


def write_trace(path: str | Path, timestamps_ms: Iterable[int]) -> None:
    """Write one timestamp per line (the format Mahimahi reads)."""
    Path(path).write_text("".join(f"{t}\n" for t in timestamps_ms), encoding="ascii")


def _rate_fn(rate: RateProfile) -> Callable[[float], float]:
    if callable(rate):
        return rate
    steps = sorted((float(t), float(kbps)) for t, kbps in rate)
    if not steps:
        raise ValueError("the rate profile needs at least one (t, kbps) step")
    starts = [t for t, _ in steps]

    def step(t: float) -> float:
        i = int(np.searchsorted(starts, t, side="right")) - 1
        return steps[max(i, 0)][1]

    return step


def _poisson(mean: float, u: float) -> int:
    # Inversion: the smallest k with CDF(k) >= u. Means here are a few per ms, so this is short.
    p = math.exp(-mean)
    cdf, k = p, 0
    while u > cdf and k < 1000:
        k += 1
        p *= mean / k
        cdf += p
    return k


def generate_trace(rate: RateProfile, duration_s: float, rng: np.random.Generator) -> list[int]:
    """Opportunity timestamps for a link whose capacity follows ``rate`` (kbit/s).

    ``rate`` is a function of time in seconds, or steps ``[(t, kbps), ...]`` each holding from
    its ``t`` on. Each 1 ms bin gets a Poisson number of opportunities with mean
    kbps / (1504·8) per ms. The last line is the duration, so the trace wraps with that period.
    """
    if not duration_s > 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s!r}")
    fn = _rate_fn(rate)
    n_ms = max(1, round(duration_s * 1000))
    u = rng.random(n_ms)
    out: list[int] = []
    for m in range(n_ms):
        kbps = fn(m / 1000.0)
        if kbps < 0:
            raise ValueError(f"rate must be >= 0 kbit/s, got {kbps!r} at t={m / 1000.0}")
        out.extend([m + 1] * _poisson(kbps / (MTU_BYTES * 8), float(u[m])))
    if not out or out[-1] != n_ms:
        out.append(n_ms)
    return out


def cellular_profile(
    duration_s: float, rng: np.random.Generator, lo_kbps: float, hi_kbps: float, step_s: float = 0.5
) -> list[tuple[float, float]]:
    """A cellular-like capacity: a reflected random walk in log-rate with occasional deep fades."""
    lo, hi = math.log(lo_kbps), math.log(hi_kbps)
    x = (lo + hi) / 2
    steps: list[tuple[float, float]] = []
    fade = 0
    n = max(1, math.ceil(duration_s / step_s))
    for i in range(n):
        u_walk, u_fade = rng.random(2)
        x += (u_walk - 0.5) * 0.6 * (hi - lo) / 2  # about ±15 % of the log-range per step
        x = lo + abs(x - lo) if x < lo else hi - abs(x - hi) if x > hi else x  # reflect at the bounds
        x = min(max(x, lo), hi)
        if fade == 0 and u_fade < 0.03:
            fade = 2 + int(u_fade * 100)  # a 1–2 s fade (tunnels, handovers)
        kbps = math.exp(x) if fade == 0 else lo_kbps
        fade = max(0, fade - 1)
        steps.append((i * step_s, kbps))
    return steps


def generate_cellular_pair(seed: int = CELLULAR_SEED, duration_s: float = 60.0) -> tuple[list[int], list[int]]:
    """The shipped ``cellular.up`` / ``cellular.down`` traces, reproducibly from ``seed``."""
    up_rng, down_rng = np.random.default_rng(seed).spawn(2)
    up = generate_trace(cellular_profile(duration_s, up_rng, *CELLULAR_UP_KBPS), duration_s, up_rng)
    down = generate_trace(cellular_profile(duration_s, down_rng, *CELLULAR_DOWN_KBPS), duration_s, down_rng)
    return up, down


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the cellular-like Mahimahi traces.")
    parser.add_argument("--seed", type=int, default=CELLULAR_SEED)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds")
    parser.add_argument("--out", type=Path, default=Path("scenarios/traces"))
    args = parser.parse_args(argv)
    up, down = generate_cellular_pair(args.seed, args.duration)
    args.out.mkdir(parents=True, exist_ok=True)
    write_trace(args.out / "cellular.up", up)
    write_trace(args.out / "cellular.down", down)
    for name, ts in (("cellular.up", up), ("cellular.down", down)):
        print(f"{args.out / name}: {len(ts)} opportunities, mean {Trace(ts).mean_kbps:.0f} kbit/s")


if __name__ == "__main__":
    main()
