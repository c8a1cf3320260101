"""The sweep results table: one row per run, its columns, and deterministic Parquet files.

A row holds the point (a column per axis, named by its path, and ``seed``), the report's headline
numbers in the report's units, the per-sample stats as list columns, and what re-scoring needs:
the media demand and every (now, QualityInput) the scorer was fed, as JSON text. The column list
is documented in ``scenarios/SWEEPS.md``.

Determinism: rows are sorted by their point's position in the spec's cartesian product, the
schema and metadata depend on the spec alone (no time, no path of this machine), and the Parquet
writer settings are fixed, so the same spec gives the same file byte for byte whatever ran it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

from rtcprobe.core.config import MediaDemand, VideoSpec
from rtcprobe.core.errors import ConfigError
from rtcprobe.core.observations import PROGRESS_NAMES
from rtcprobe.core.quality import NetworkQualityScorer, QualityDemand, QualityInput, SideMetrics
from rtcprobe.core.report import NETWORK_TIMERS
from rtcprobe.netem.sweep import Sweep, canonical_json, format_value

if TYPE_CHECKING:
    import pyarrow as pa

    from rtcprobe.core.report import PreflightReport

META_KEY: Final = b"rtcprobe.sweep"
FORMAT: Final = 1


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


STAT_COLUMNS: Final = tuple(
    f"{metric}_{agg}" for metric in ("rtt", "jitter", "packet_loss") for agg in ("avg", "min", "max")
)
BITRATE_COLUMNS: Final = tuple(
    f"bitrate_{way}_{agg}" for way in ("outgoing", "incoming") for agg in ("avg", "min", "max")
)
TIMING_COLUMNS: Final = ("test_duration", *(f"{_snake(t)}_duration" for t in NETWORK_TIMERS))
PROGRESS_COLUMNS: Final = tuple(f"progress_{_snake(n)}" for n in PROGRESS_NAMES)
SAMPLE_FIELDS: Final = (
    ("sample_time", "time"), ("sample_rtt", "rtt"), ("sample_jitter", "jitter"),
    ("sample_packet_loss", "packetLoss"), ("sample_outgoing_bitrate", "outgoingBitrate"),
    ("sample_incoming_bitrate", "incomingBitrate"),
)
#: Columns whose values re-scoring recomputes.
LEVEL_COLUMNS: Final = ("level", "level_min", "level_median", "sample_level")
#: The numeric per-run columns (what a heatmap can show).
METRIC_COLUMNS: Final = (
    "level", "level_min", "level_median", *STAT_COLUMNS, *BITRATE_COLUMNS, *TIMING_COLUMNS, *PROGRESS_COLUMNS,
    "error_code",
)


def result_schema() -> pa.Schema:
    """The columns after the point's own (axes, seed): the same for every sweep."""
    import pyarrow as pa

    f64, i64, s = pa.float64(), pa.int64(), pa.string()
    fields = [
        pa.field("point_key", s, nullable=False),
        pa.field("outcome", s, nullable=False),
        pa.field("error_code", i64), pa.field("error_name", s), pa.field("error_message", s),
        pa.field("level", i64), pa.field("level_min", i64), pa.field("level_median", f64),
        *(pa.field(c, f64) for c in (*STAT_COLUMNS, *BITRATE_COLUMNS, *TIMING_COLUMNS, *PROGRESS_COLUMNS)),
        *(pa.field(c, pa.list_(f64)) for c, _ in SAMPLE_FIELDS),
        pa.field("sample_level", pa.list_(i64)),
        pa.field("sample_input_index", pa.list_(i64)),
        pa.field("demand", s, nullable=False),
        pa.field("scorer_inputs", s, nullable=False),
        pa.field("report", s, nullable=False),
    ]
    return pa.schema(fields)


# --------------------------------------------------------------------------------------------
# One run -> one row
# --------------------------------------------------------------------------------------------


def encode_demand(media: MediaDemand) -> str:
    video = None if media.video is None else attrs.asdict(media.video)
    return canonical_json({"audio": media.audio, "video": video})


def decode_demand(text: str) -> MediaDemand:
    data = json.loads(text)
    video = data.get("video")
    return MediaDemand(audio=bool(data["audio"]), video=None if video is None else VideoSpec(**video))


def encode_inputs(inputs: Sequence[tuple[float, QualityInput]]) -> str:
    """Every scorer input as JSON text: ``[{"now": s, "audio_send": {...} | null, ..., "reconnecting": b}]``.
    Floats are written with repr, so they read back bit for bit."""
    return json.dumps([{"now": now, **attrs.asdict(q)} for now, q in inputs], separators=(",", ":"),
                      allow_nan=False)


def decode_inputs(text: str) -> list[tuple[float, QualityInput]]:
    out: list[tuple[float, QualityInput]] = []
    for item in json.loads(text):
        sides = {k: None if v is None else SideMetrics(**v) for k, v in item.items()
                 if k not in ("now", "reconnecting")}
        out.append((float(item["now"]), QualityInput(reconnecting=bool(item["reconnecting"]), **sides)))
    return out


def sample_input_indices(inputs: Sequence[tuple[float, QualityInput]], sample_times_ms: Sequence[float]) -> list[int]:
    """For each sample, the index of the scorer input that produced its level.

    The core scores each sample when it lands (so ``time = (now - t0) * 1000``), plus once more
    whenever a reconnection starts or ends: those extra inputs are skipped. ``t0`` is not in the
    report, so it is found as the offset that lines every sample up with an input, in order.
    """
    if not sample_times_ms:
        return []
    nows = [now for now, _ in inputs]

    def close(a: float, b: float) -> bool:
        return abs(a - b) <= 1e-9 + 1e-12 * abs(b)

    for k0 in range(len(nows)):
        t0 = nows[k0] - sample_times_ms[0] / 1000
        found = [k0]
        k = k0
        for time_ms in sample_times_ms[1:]:
            k += 1
            while k < len(nows) and not close(nows[k] - t0, time_ms / 1000):
                k += 1
            if k == len(nows):
                break
            # A reconnection scored at the very same instant: the sample's input is the one with data.
            while k + 1 < len(nows) and nows[k + 1] == nows[k] and inputs[k][1] == QualityInput(
                    reconnecting=inputs[k][1].reconnecting):
                k += 1
            found.append(k)
        else:
            return found
    raise ValueError("the report's samples do not line up with the scorer's inputs")


def replay_levels(demand: MediaDemand, inputs: Sequence[tuple[float, QualityInput]],
                  config: Any = None) -> list[int]:
    """The smoothed level after each input, scored afresh (``config``: a ScorerConfig, default when None)."""
    scorer = (NetworkQualityScorer(QualityDemand.symmetric(demand)) if config is None
              else NetworkQualityScorer(QualityDemand.symmetric(demand), config))
    return [scorer.update(now, q) for now, q in inputs]


def level_summary(levels: Sequence[int | None]) -> tuple[int | None, float | None]:
    """(min, median) of the known per-sample levels."""
    known = sorted(v for v in levels if v is not None)
    if not known:
        return None, None
    n = len(known)
    median = float(known[n // 2]) if n % 2 else (known[n // 2 - 1] + known[n // 2]) / 2
    return known[0], median


def report_row(report: PreflightReport, media: MediaDemand,
               inputs: Sequence[tuple[float, QualityInput]]) -> dict[str, Any]:
    """The per-run columns of one simulated run (everything but the point's own columns)."""
    d = report.to_dict()
    error = d.get("error")
    stats = d.get("stats") or {}
    bitrate = d.get("bitrate") or {}
    samples = d.get("samples") or []
    row: dict[str, Any] = {
        "outcome": "failed" if error else "completed",
        "error_code": error["code"] if error else None,
        "error_name": error["name"] if error else None,
        "error_message": error["message"] if error else None,
        "level": report.network_quality_level,
    }
    levels = [s["level"] for s in samples]
    row["level_min"], row["level_median"] = level_summary(levels)
    for metric, key in (("rtt", "rtt"), ("jitter", "jitter"), ("packet_loss", "packetLoss")):
        stat = stats.get(key) or {}
        for agg, k in (("avg", "average"), ("min", "min"), ("max", "max")):
            row[f"{metric}_{agg}"] = stat.get(k)
    for way in ("outgoing", "incoming"):
        stat = bitrate.get(way) or {}
        for agg, k in (("avg", "average"), ("min", "min"), ("max", "max")):
            row[f"bitrate_{way}_{agg}"] = stat.get(k)
    row["test_duration"] = d["testTiming"].get("duration")
    timers = d.get("networkTiming") or {}
    for timer in NETWORK_TIMERS:
        row[f"{_snake(timer)}_duration"] = (timers.get(timer) or {}).get("duration")
    progress = {e["name"]: e["duration"] for e in d.get("progressEvents") or []}
    for name in PROGRESS_NAMES:
        row[f"progress_{_snake(name)}"] = progress.get(name)
    for column, key in SAMPLE_FIELDS:
        row[column] = [s[key] for s in samples]
    row["sample_level"] = levels
    indices = sample_input_indices(inputs, [s.time for s in report.samples])
    # The contract re-scoring relies on: replaying the inputs reproduces every level reported.
    replayed = replay_levels(media, inputs)
    final = replayed[-1] if replayed else None
    if [replayed[i] for i in indices] != levels or (inputs and final != report.network_quality_level):
        raise RuntimeError("replaying the scorer inputs does not reproduce the report's levels")
    row["sample_input_index"] = indices
    row["demand"] = encode_demand(media)
    row["scorer_inputs"] = encode_inputs(inputs)
    row["report"] = report.to_json(indent=None)
    return row


# --------------------------------------------------------------------------------------------
# Axis columns
# --------------------------------------------------------------------------------------------


def axis_kind(values: Iterable[Any]) -> str:
    """How an axis is stored: ``int``, ``float``, ``bool``, ``string``, or ``json`` (text) for
    tables, arrays and mixed types (``bandwidth_kbps = [false, 1000]``)."""
    vals = list(values)
    if all(isinstance(v, bool) for v in vals):
        return "bool"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
        return "int"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals):
        return "float"
    if all(isinstance(v, str) for v in vals):
        return "string"
    return "json"


def axis_cell(kind: str, value: Any) -> Any:
    if kind == "float":
        return float(value)
    return canonical_json(value) if kind == "json" else value


def cell_label(kind: str, cell: Any) -> str:
    """An axis cell as people read it (a video spec as 320x180@15)."""
    return format_value(json.loads(cell) if kind == "json" else cell)


def point_kinds(meta: Mapping[str, Any]) -> dict[str, str]:
    """Each point column (the axes, then seed) and how it is stored."""
    return {**{a["path"]: a["kind"] for a in meta["axes"]}, "seed": "int"}


def _arrow_type(kind: str) -> pa.DataType:
    import pyarrow as pa

    return {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(), "string": pa.string(),
            "json": pa.string()}[kind]


# --------------------------------------------------------------------------------------------
# Tables and files
# --------------------------------------------------------------------------------------------


def sweep_metadata(sweep: Sweep, version: str) -> dict[str, Any]:
    """What the file says about the sweep that made it (no path of the machine, no time)."""
    return {
        "format": FORMAT,
        "version": version,
        "fingerprint": sweep.fingerprint(version),
        "base": sweep.base,
        "scenario": sweep.base_name,
        "description": sweep.description,
        "set": [[k, v] for k, v in sweep.settings],
        "axes": [{"path": a.path, "kind": axis_kind(a.values), "values": list(a.values)} for a in sweep.axes],
        "seeds": list(sweep.seeds),
    }


def table_schema(metadata: Mapping[str, Any]) -> pa.Schema:
    import pyarrow as pa

    axis_fields = [pa.field(a["path"], _arrow_type(a["kind"]), nullable=False) for a in metadata["axes"]]
    fields = [*axis_fields, pa.field("seed", pa.int64(), nullable=False), *result_schema()]
    return pa.schema(fields, metadata={META_KEY: canonical_json(metadata).encode()})


def build_table(metadata: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """The table of ``rows`` (each with every column), in the given order."""
    import pyarrow as pa

    schema = table_schema(metadata)
    columns = {f.name: pa.array([r[f.name] for r in rows], type=f.type) for f in schema}
    return pa.Table.from_pydict(columns, schema=schema)


def write_table(table: pa.Table, path: str | Path) -> None:
    """Write atomically (a reader never sees half a file) with fixed writer settings."""
    import pyarrow.parquet as pq

    out = Path(path)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table.combine_chunks(), tmp, compression="zstd", compression_level=3,
                       row_group_size=4096, use_dictionary=True, write_statistics=True)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


class ResultsError(ConfigError):
    """A results file that cannot be read as a sweep table (exit 2)."""


def read_table(path: str | Path) -> tuple[pa.Table, dict[str, Any]]:
    """A results file and its sweep metadata (ResultsError if it is not one)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.is_file():
        raise ResultsError(f"{path}: {'is a directory' if p.is_dir() else 'file not found'}")
    try:
        table = pq.read_table(p)
    except (pa.ArrowException, OSError) as exc:
        raise ResultsError(f"{path}: not a Parquet file ({exc})") from None
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise ResultsError(f"{path}: not an rtcprobe sweep results file (no sweep metadata)")
    meta = json.loads(raw)
    if meta.get("format") != FORMAT:
        raise ResultsError(f"{path}: sweep results format {meta.get('format')!r}, this rtcprobe reads {FORMAT}")
    return table, meta


def rows_of(table: pa.Table) -> list[dict[str, Any]]:
    return list(table.to_pylist())
