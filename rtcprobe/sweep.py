"""Scenario sweeps: every point of a sweep spec through the simulator, on a process pool or Dask.

    sweep = load("sweep.toml")                       # validated: every point parses
    outcome = run_sweep(sweep, out="results.parquet", where=Where.pool())

The spec format and its parser are in ``rtcprobe.netem.sweep`` (pure data); this module runs it,
so it is top layer: it uses the simulator and picks where the points run. Where they run and in
what order never changes the result: rows are keyed by their point and sorted into the spec's
order before writing (``rtcprobe.sweep_table``).

Points are shipped to the workers as plain scenario tables, not parsed scenarios, and parsed
there: a trace is then read from its file by each worker instead of being pickled with every
point, so on a remote Dask cluster the workers must see the base scenario's trace files at the
same paths (and have rtcprobe installed).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Generator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal, TextIO

import attrs

from rtcprobe.core._version import __version__
from rtcprobe.core.errors import ConfigError
from rtcprobe.netem.sweep import Sweep, SweepPoint, canonical_json, load_sweep

from .sweep_table import (
    ResultsError,
    axis_cell,
    axis_kind,
    build_table,
    read_table,
    report_row,
    sweep_metadata,
    write_table,
)

__all__ = ["Crash", "SweepOutcome", "Where", "load", "run_point_batch", "run_sweep"]

#: Seconds between checkpoints of the results file while a sweep runs (what survives a kill).
CHECKPOINT_SECONDS: Final = 10.0


def load(path: str | Path) -> Sweep:
    """A validated sweep spec; ``base`` may name a built-in scenario."""
    from rtcprobe.scenarios import path_of

    return load_sweep(path, find_builtin=path_of)


# --------------------------------------------------------------------------------------------
# The work: a batch of points, run in a worker
# --------------------------------------------------------------------------------------------


@attrs.frozen
class PointTask:
    """What a worker needs for one run: plain, picklable data."""

    index: int
    seed: int
    data: dict[str, Any]
    source: str  # the base scenario file (errors and the report's scenario name)
    base_dir: str  # where its trace paths resolve
    default_name: str


BatchResult = list[tuple[int, dict[str, Any] | None, str | None]]


def run_point_batch(tasks: Sequence[PointTask]) -> BatchResult:
    """Run each point; (index, row, None), or (index, None, error text) when the run raised."""
    from rtcprobe.drivers.sim import run_simulation
    from rtcprobe.netem.scenario import Scenario

    out: BatchResult = []
    for task in tasks:
        try:
            scenario = Scenario.from_dict(task.data, source=task.source, base_dir=task.base_dir,
                                          default_name=task.default_name)
            result = run_simulation(scenario, seed=task.seed)
            out.append((task.index, report_row(result.report, scenario.media, result.scorer_inputs), None))
        except Exception as exc:  # one broken point must not sink the batch: reported, not stored
            last = traceback.extract_tb(exc.__traceback__)[-1:]
            where = f" ({Path(last[0].filename).name}:{last[0].lineno})" if last else ""
            out.append((task.index, None, f"{type(exc).__name__}: {exc}{where}"))
    return out


# --------------------------------------------------------------------------------------------
# Where the points run
# --------------------------------------------------------------------------------------------


@attrs.frozen
class Where:
    """``serial`` (this process), ``pool`` (local processes), ``dask`` (a LocalCluster of
    ``workers`` processes, or the cluster whose scheduler is at ``scheduler``)."""

    kind: Literal["serial", "pool", "dask"]
    workers: int | None = None
    scheduler: str | None = None
    connect_timeout: float = 10.0  # seconds to reach a --scheduler

    @classmethod
    def serial(cls) -> Where:
        return cls("serial")

    @classmethod
    def pool(cls, workers: int | None = None) -> Where:
        return cls("pool", workers=workers)

    @classmethod
    def dask_local(cls, workers: int) -> Where:
        return cls("dask", workers=workers)

    @classmethod
    def dask(cls, scheduler: str, connect_timeout: float = 10.0) -> Where:
        return cls("dask", scheduler=scheduler, connect_timeout=connect_timeout)

    @property
    def parallelism(self) -> int:
        if self.kind == "serial":
            return 1
        return self.workers or _cores()

    def describe(self) -> str:
        if self.kind == "serial":
            return "in this process"
        if self.kind == "pool":
            n = self.parallelism
            return f"a local pool of {n} process{'es' if n != 1 else ''}"
        if self.scheduler:
            return f"the Dask cluster at {self.scheduler}"
        return f"a Dask LocalCluster of {self.workers} worker{'s' if self.workers != 1 else ''}"


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _ignore_sigint() -> None:
    # Ctrl-C reaches the whole process group: the parent saves and stops, workers just end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_serial(batches: list[list[PointTask]]) -> Generator[BatchResult, None, None]:
    for batch in batches:
        yield run_point_batch(batch)


def _run_pool(batches: list[list[PointTask]], workers: int) -> Generator[BatchResult, None, None]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: a fresh interpreter per worker (fork is unsafe in a process that may hold threads).
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_ignore_sigint)
    try:
        futures = [pool.submit(run_point_batch, b) for b in batches]
        for future in as_completed(futures):
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _run_dask(batches: list[list[PointTask]], where: Where, prefix: str) -> Generator[BatchResult, None, None]:
    from importlib import import_module

    # Untyped (distributed has no annotations on these): kept Any rather than silenced line by line.
    distributed: Any = import_module("distributed")
    cluster = None
    if where.scheduler:
        try:
            client = distributed.Client(where.scheduler, timeout=f"{where.connect_timeout}s")
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"--scheduler {where.scheduler}: cannot reach the Dask scheduler ({exc})") from None
    else:
        cluster = distributed.LocalCluster(n_workers=where.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = distributed.Client(cluster)
    futures: list[Any] = []
    try:
        # Keys name the work, not the call: the same points of the same sweep are the same task.
        futures = client.map(run_point_batch, batches, key=[f"{prefix}-{_batch_id(b)}" for b in batches])
        for future in distributed.as_completed(futures):
            yield future.result()
    finally:
        if futures:
            client.cancel(futures)
        client.close()
        if cluster is not None:
            cluster.close()


def _batch_id(batch: Sequence[PointTask]) -> str:
    """Content-addressed: two clients of one cluster share a key only for the very same runs."""
    text = canonical_json([[t.index, t.seed, t.data] for t in batch])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _batches(tasks: list[PointTask], parallelism: int, batch_size: int | None) -> list[list[PointTask]]:
    # A simulated run takes milliseconds: batches amortise the per-task overhead of a pool or
    # Dask, while keeping ~4 batches per worker so the load stays balanced and progress moves.
    if batch_size is None:
        batch_size = max(1, min(32, math.ceil(len(tasks) / (4 * parallelism))))
    return [tasks[i:i + batch_size] for i in range(0, len(tasks), batch_size)]


# --------------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------------


class SweepProgress:
    """A progress bar with the rate and an ETA on stderr: redrawn in place on a terminal, one
    line per tenth of the sweep otherwise (CI logs)."""

    WIDTH: Final = 24

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = tty if tty is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        self._start = time.monotonic()
        self._drawn = 0.0
        self._tenth = -1
        self._bar = False

    def __call__(self, done: int, todo: int, crashed: int) -> None:
        now = time.monotonic()
        elapsed = now - self._start
        rate = done / elapsed if elapsed > 0 and done else 0.0
        eta = (todo - done) / rate if rate else math.inf
        filled = round(self.WIDTH * done / todo) if todo else self.WIDTH
        text = (f"sweep [{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{todo} runs"
                f"  {rate:.1f}/s  ETA {_clock(eta)}" + (f"  {crashed} crashed" if crashed else ""))
        if self.tty:
            if done < todo and now - self._drawn < 0.1:
                return
            self._drawn = now
            self.stream.write("\r" + text)
            self._bar = True
        else:
            tenth = 10 * done // todo if todo else 10
            if tenth == self._tenth:
                return
            self._tenth = tenth
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._bar:
            self.stream.write("\n")
            self.stream.flush()
            self._bar = False


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--"
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


# --------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------


@attrs.frozen
class Crash:
    """A run that raised instead of producing a report: not stored, retried on the next run."""

    index: int
    point: str
    error: str


@attrs.frozen
class SweepOutcome:
    total: int  # points in the spec
    resumed: int  # already in the results file: not run again
    ran: int  # run now and stored
    crashed: tuple[Crash, ...]
    dropped: int  # rows of the results file that are no longer points of the spec
    elapsed: float  # seconds spent running
    rows: tuple[dict[str, Any], ...]  # the table's rows, in order

    @property
    def runs_per_second(self) -> float:
        done = self.ran + len(self.crashed)
        return done / self.elapsed if self.elapsed > 0 else 0.0


def check_resumable(sweep: Sweep, out: Path) -> dict[str, Any] | None:
    """The results file's metadata when ``out`` holds rows of this sweep, None when it does not
    exist; ResultsError (exit 2) when it holds another sweep's results."""
    if not out.exists():
        return None
    _, meta = read_table(out)
    if meta.get("fingerprint") != sweep.fingerprint(__version__):
        raise ResultsError(
            f"{out} holds the results of another sweep (a different base scenario, [set], axes or rtcprobe "
            f"version: it has base {meta.get('base')!r}, axes {[a['path'] for a in meta.get('axes', [])]}, "
            f"version {meta.get('version')}): choose another --out, or delete it to start again"
        )
    return meta


def run_sweep(
    sweep: Sweep,
    out: str | Path | None = None,
    where: Where | None = None,
    *,
    progress: Callable[[int, int, int], None] | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    batch_size: int | None = None,
    checkpoint_seconds: float = CHECKPOINT_SECONDS,
) -> SweepOutcome:
    """Run every point of ``sweep`` not already in ``out`` and write the whole table there.

    ``progress(done, todo, crashed)`` is called as batches finish; ``on_row(row)`` for each new
    row. The results file is rewritten every ``checkpoint_seconds`` and when the sweep stops for
    any reason (KeyboardInterrupt included), so re-running resumes where it stopped.
    """
    where = where or Where.pool()
    out_path = None if out is None else Path(out)
    meta = sweep_metadata(sweep, __version__)
    points = sweep.points()
    by_key = {p.key: p for p in points}
    kinds = [axis_kind(a.values) for a in sweep.axes]

    rows: dict[int, dict[str, Any]] = {}
    dropped = 0
    if out_path is not None and check_resumable(sweep, out_path) is not None:
        table, _ = read_table(out_path)
        for row in table.to_pylist():
            point = by_key.get(row["point_key"])
            if point is None:
                dropped += 1
                continue
            rows[point.index] = _with_point(row, point, sweep, kinds)
    resumed = len(rows)

    todo = [p for p in points if p.index not in rows]
    tasks = [PointTask(index=p.index, seed=p.seed, data=p.data, source=str(sweep.base_path),
                       base_dir=str(sweep.base_path.parent), default_name=sweep.base_path.stem) for p in todo]
    batches = _batches(tasks, where.parallelism, batch_size)
    crashes: list[Crash] = []
    by_index = {p.index: p for p in todo}
    last_write = time.monotonic()
    write_cost = 0.0

    def save() -> None:
        nonlocal last_write, write_cost
        if out_path is None:
            return
        t = time.monotonic()
        write_table(build_table(meta, [rows[i] for i in sorted(rows)]), out_path)
        last_write = time.monotonic()
        write_cost = last_write - t

    start = time.monotonic()
    done = 0
    finished = False
    if progress is not None and todo:
        progress(0, len(todo), 0)
    results: Generator[BatchResult, None, None]
    if where.kind == "serial" or not batches:  # nothing to run: no pool or cluster to start
        results = _run_serial(batches)
    elif where.kind == "pool":
        results = _run_pool(batches, where.parallelism)
    else:
        results = _run_dask(batches, where, f"rtcprobe-sweep-{sweep.fingerprint(__version__)[:12]}")
    try:
        for batch in results:
            for index, row, error in batch:
                point = by_index[index]
                done += 1
                if row is None:
                    crashes.append(Crash(index, sweep.describe_point(point.values, point.seed), error or "?"))
                    continue
                rows[index] = _with_point(row, point, sweep, kinds)
                if on_row is not None:
                    on_row(rows[index])
            if progress is not None:
                progress(done, len(todo), len(crashes))
            # Rewriting the whole file costs more as it grows: never spend over a tenth of the time on it.
            if time.monotonic() - last_write >= max(checkpoint_seconds, 10 * write_cost):
                save()
        finished = True
    finally:
        # Stop the pool or cluster now (queued batches cancelled, running ones finish), not when
        # the generator is collected: at exit a pool would otherwise run every queued batch.
        results.close()
        elapsed = time.monotonic() - start
        # Interrupted: keep what ran. Finished: write the table even when nothing new ran (a
        # spec that shrank, or a first run whose every point crashed).
        if len(rows) > resumed or (finished and (dropped or out_path is None or not out_path.exists())):
            save()
    crashes.sort(key=lambda c: c.index)
    return SweepOutcome(total=len(points), resumed=resumed, ran=done - len(crashes), crashed=tuple(crashes),
                        dropped=dropped, elapsed=elapsed, rows=tuple(rows[i] for i in sorted(rows)))


def _with_point(row: Mapping[str, Any], point: SweepPoint, sweep: Sweep, kinds: Sequence[str]) -> dict[str, Any]:
    """The row with its point's columns, written from the spec (so a resumed row matches a new one)."""
    out = {a.path: axis_cell(k, v) for a, k, v in zip(sweep.axes, kinds, point.values, strict=True)}
    out["seed"] = point.seed
    out["point_key"] = point.key
    out.update((k, v) for k, v in row.items() if k not in out)
    return out
