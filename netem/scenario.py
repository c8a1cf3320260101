"""Scenario files: a reproducible network condition + demand + expectations, in TOML.

The full schema is documented in ``scenarios/README.md``. Parsing validates every key and turns
every problem into one :class:`ScenarioError` naming the file, the dotted key path and what is
wrong (never a traceback from deep inside). Layering, from weakest to strongest:

    LinkConfig defaults < [network] < [network.uplink] / [network.downlink]

and ``[[phase]]`` entries then change that per-direction config cumulatively from ``at`` seconds
on (like successive ``tc qdisc change``), or from the un-phased config when ``reset = true``.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs
import numpy as np
from numpy.random.bit_generator import ISpawnableSeedSequence
from rtcprobe.core.config import MediaDemand, VideoSpec
from rtcprobe.core.errors import ConfigError

from .expect import Expect
from .link import Link
from .models import JITTER_DISTRIBUTIONS, GilbertElliott, LinkConfig, ScenarioError, TableReader, describe
from .trace import Trace, TraceFormatError, parse_trace

__all__ = ["DIRECTIONS", "MediaDemand", "Scenario", "ScenarioError", "ScenarioPhases", "VideoSpec", "read_toml"]

DIRECTIONS: Final = ("uplink", "downlink")
LINK_KEYS: Final[tuple[str, ...]] = (
    "delay_ms", "jitter_ms", "jitter_distribution", "reorder", "loss", "loss_model", "bandwidth_kbps",
    "queue_packets", "queue_bytes", "overhead_bytes", "trace", "outage", "outages",
)
# The endpoint model the simulator runs (drivers/sim): "libwebrtc" is a browser's (pacer, GCC,
# NACK/RTX; drivers/sim/_libwebrtc.py), the default since what the preflight stands in for runs in
# browsers; "aiortc" is aiortc's sender (what --driver aiortc runs), the model the original golden
# reports pin.
STACKS: Final = ("aiortc", "libwebrtc")
DEFAULT_STACK: Final = "libwebrtc"
TOP_KEYS: Final = ("name", "description", "duration", "seed", "media", "network", "phase", "expect")
LOSS_MODEL_KINDS: Final = ("gilbert-elliott", "random")
# Keys that take `false` to switch the feature off again (TOML has no null).
_NULLABLE: Final = ("loss_model", "bandwidth_kbps", "queue_packets", "queue_bytes", "trace")

Phase = tuple[float, LinkConfig]


def _phase_list(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple):
        raise ConfigError(f"{attribute.name} phases must be a tuple of (at, LinkConfig)")
    prev = -1.0
    for item in value:
        ok = isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], LinkConfig)
        if not ok or not isinstance(item[0], int | float) or isinstance(item[0], bool):
            raise ConfigError(f"{attribute.name} phases must be (at, LinkConfig) pairs, got {item!r}")
        if not item[0] > prev or not math.isfinite(item[0]):
            raise ConfigError(f"{attribute.name} phase times must be >= 0 and increasing, got {item[0]!r}")
        prev = item[0]


def _instance(kind: type, optional: bool = False) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not (isinstance(value, kind) or (optional and value is None)):
            raise ConfigError(f"{attribute.name} must be a {kind.__name__}, got {type(value).__name__}")

    return check


def _duration(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ConfigError(f"duration must be a positive number of seconds, got {value!r}")


def _seed(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {value!r}")


@attrs.frozen
class ScenarioPhases:
    """Per-direction phase lists, sorted by ``at``: each entry is the full config from then on."""

    uplink: tuple[Phase, ...] = attrs.field(default=(), validator=_phase_list)
    downlink: tuple[Phase, ...] = attrs.field(default=(), validator=_phase_list)


@attrs.frozen
class Scenario:
    """A parsed scenario file. Build one with :meth:`from_toml` or :meth:`from_dict`."""

    name: str = attrs.field(validator=_instance(str))
    description: str = attrs.field(default="", validator=_instance(str))
    duration: float = attrs.field(default=10.0, validator=_duration)
    seed: int = attrs.field(default=0, validator=_seed)
    media: MediaDemand = attrs.field(factory=MediaDemand, validator=_instance(MediaDemand))
    uplink: LinkConfig = attrs.field(factory=LinkConfig, validator=_instance(LinkConfig))
    downlink: LinkConfig = attrs.field(factory=LinkConfig, validator=_instance(LinkConfig))
    phases: ScenarioPhases = attrs.field(factory=ScenarioPhases, validator=_instance(ScenarioPhases))
    expect: Expect | None = attrs.field(default=None, validator=_instance(Expect, optional=True))
    stack: str = attrs.field(default=DEFAULT_STACK, validator=attrs.validators.in_(STACKS))
    source: str | None = attrs.field(default=None, validator=_instance(str, optional=True))

    @classmethod
    def from_toml(cls, path: str | Path) -> Scenario:
        """Read and validate a scenario file (trace paths are relative to its folder)."""
        p = Path(path)
        return cls.from_dict(read_toml(p), source=str(path), base_dir=p.parent, default_name=p.stem)

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        source: str = "<dict>",
        base_dir: str | Path | None = None,
        *,
        default_name: str = "scenario",
    ) -> Scenario:
        """Validate plain data (as tomllib returns it). Relative trace paths resolve against
        ``base_dir`` (the current directory when None)."""
        return _Parser(source, Path(base_dir) if base_dir is not None else Path.cwd()).scenario(
            data, default_name
        )

    def build_links(self, rng: np.random.Generator | ISpawnableSeedSequence | None = None) -> tuple[Link, Link]:
        """(uplink, downlink) links with independent random streams spawned from ``rng``
        (from the scenario's seed when None)."""
        if rng is None:
            rng = np.random.default_rng(self.seed)
        up_rng, down_rng = rng.spawn(2)
        return (
            Link(self.uplink, up_rng, self.phases.uplink),
            Link(self.downlink, down_rng, self.phases.downlink),
        )


def read_toml(path: str | Path, what: str = "scenario file") -> dict[str, Any]:
    """The raw tables of a TOML file (not validated), every problem a :class:`ScenarioError`.

    A file with no keys at all (empty, blank or only comments) is an error: a truncated file must
    not pass as the all-defaults perfect network.
    """
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ScenarioError(source, "", "file not found") from None
    except IsADirectoryError:
        raise ScenarioError(source, "", f"is a directory, not a {what}") from None
    except OSError as exc:
        raise ScenarioError(source, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ScenarioError(source, "", f"invalid TOML: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(source, "", f"invalid TOML: {exc}") from None
    if not data:
        raise ScenarioError(source, "", f"empty {what} (no keys: truncated?)")
    return data


class _Parser:
    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir
        self._traces: dict[Path, Trace] = {}  # both directions often share a file

    def scenario(self, data: Mapping[str, Any], default_name: str) -> Scenario:
        r = TableReader(data, self.source, "", TOP_KEYS)
        name = r.string("name", default=default_name)
        description = r.string("description", default="")
        duration = r.number("duration", lo=0.0, strict_lo=True, default=10.0)
        seed = r.integer("seed", lo=0, default=0)
        media, stack = MediaDemand(), DEFAULT_STACK
        if "media" in r:
            mr = r.table("media", ("audio", "video", "stack"))
            media, stack = self.media(mr), mr.string("stack", default=DEFAULT_STACK, choices=STACKS)

        net: dict[str, Any] = {}
        per_dir: dict[str, dict[str, Any]] = {d: {} for d in DIRECTIONS}
        if "network" in r:
            nr = r.table("network", (*LINK_KEYS, *DIRECTIONS))
            net = self.link_changes(nr)
            for d in DIRECTIONS:
                if d in nr:
                    per_dir[d] = self.link_changes(nr.table(d, LINK_KEYS))
        base = {d: self.make_config(LinkConfig(), [(net, "network"), (per_dir[d], f"network.{d}")])
                for d in DIRECTIONS}

        phases: dict[str, list[Phase]] = {d: [] for d in DIRECTIONS}
        if "phase" in r:
            raw = r.data["phase"]
            if not isinstance(raw, list):
                raise r.error("phase", f"must be an array of tables ([[phase]]), got {describe(raw)}")
            current = dict(base)
            prev_at: float | None = None
            for i, item in enumerate(raw):
                key = f"phase[{i}]"
                pr = TableReader(item, self.source, key, ("at", "reset", *LINK_KEYS, *DIRECTIONS))
                at = pr.number("at", lo=0.0)
                if prev_at is not None and at <= prev_at:
                    raise pr.error(
                        "at", f"must be greater than phase[{i - 1}].at ({prev_at:g}), got {at:g} "
                        "(phases must be in time order)"
                    )
                prev_at = at
                reset = pr.boolean("reset", default=False)
                common = self.link_changes(pr, in_phase=True)
                for d in DIRECTIONS:
                    own = self.link_changes(pr.table(d, LINK_KEYS), in_phase=True) if d in pr else {}
                    if not (common or own or reset):
                        continue  # this phase does not touch this direction
                    start = base[d] if reset else current[d]
                    cfg = self.make_config(start, [(common, key), (own, f"{key}.{d}")])
                    phases[d].append((at, cfg))
                    current[d] = cfg

        expect = Expect.from_dict(r.data["expect"], self.source) if "expect" in r else None
        return Scenario(
            name=name,
            description=description,
            duration=duration,
            seed=seed,
            media=media,
            uplink=base["uplink"],
            downlink=base["downlink"],
            phases=ScenarioPhases(tuple(phases["uplink"]), tuple(phases["downlink"])),
            expect=expect,
            stack=stack,
            source=self.source,
        )

    def media(self, r: TableReader) -> MediaDemand:
        audio = r.boolean("audio", default=True)
        video: VideoSpec | None = VideoSpec()
        value = r.data.get("video", True)
        if value is False:
            video = None
        elif isinstance(value, Mapping):
            vr = r.table("video", ("width", "height", "fps"))
            video = VideoSpec(
                width=vr.integer("width", lo=16, hi=7680, default=640),
                height=vr.integer("height", lo=16, hi=4320, default=480),
                fps=vr.number("fps", lo=0.0, hi=240.0, strict_lo=True, default=30.0),
            )
        elif value is not True:
            raise r.error("video", f"must be true, false or a table {{ width, height, fps }}, got {describe(value)}")
        if not audio and video is None:
            raise r.error("", "must publish audio, video or both (both are false)")
        return MediaDemand(audio=audio, video=video)

    def link_changes(self, r: TableReader, *, in_phase: bool = False) -> dict[str, Any]:
        """The LinkConfig fields one table sets, validated, keyed by field name."""
        out: dict[str, Any] = {}
        d = r.data
        for key in _NULLABLE:
            if d.get(key) is False:
                out[key] = None
        if "delay_ms" in d:
            out["delay_ms"] = r.number("delay_ms", lo=0.0)
        if "jitter_ms" in d:
            out["jitter_ms"] = r.number("jitter_ms", lo=0.0)
        if "jitter_distribution" in d:
            out["jitter_distribution"] = r.string("jitter_distribution", choices=JITTER_DISTRIBUTIONS)
        if "reorder" in d:
            out["reorder"] = r.boolean("reorder")
        if "loss" in d:
            out["loss"] = r.number("loss", lo=0.0, hi=1.0)
        if "loss_model" in d and d["loss_model"] is not False:
            if "loss" in d:
                raise r.error("loss_model", "set either loss (random loss) or loss_model, not both")
            out.update(self.loss_model(r))
        if "bandwidth_kbps" in d and d["bandwidth_kbps"] is not False:
            if "trace" in d and d["trace"] is not False:
                raise r.error("trace", "set either bandwidth_kbps or trace, not both")
            out["bandwidth_kbps"] = r.number("bandwidth_kbps", lo=0.0, strict_lo=True)
        for key in ("queue_packets", "queue_bytes"):
            if key in d and d[key] is not False:
                out[key] = r.integer(key, lo=1)
        if "overhead_bytes" in d:
            out["overhead_bytes"] = r.integer("overhead_bytes", lo=0)
        if "trace" in d and d["trace"] is not False:
            out["trace"] = self.trace(r)
        if "outage" in d:
            out["outage"] = r.boolean("outage")
        if "outages" in d:
            if in_phase:
                raise r.error(
                    "outages", "outage windows are absolute times: set them in [network] or a direction, "
                    "or use outage = true in a phase"
                )
            out["outages"] = self.outages(r)
        return out

    def loss_model(self, r: TableReader) -> dict[str, Any]:
        value = r.data["loss_model"]
        if not isinstance(value, Mapping):
            raise r.error("loss_model", f"must be a table {{ kind = ..., p = ... }} or false, got {describe(value)}")
        kind = value.get("kind")
        if kind is None:
            raise r.error("loss_model.kind", f"is required: one of {', '.join(map(repr, LOSS_MODEL_KINDS))}")
        known = ("kind", "p") if kind == "random" else ("kind", "p", "r", "h", "k")
        mr = r.table("loss_model", known)
        kind = mr.string("kind", choices=LOSS_MODEL_KINDS)
        p = mr.number("p", lo=0.0, hi=1.0)
        if kind == "random":
            return {"loss": p, "loss_model": None}
        model = GilbertElliott(
            p=p,
            r=mr.number("r", lo=0.0, hi=1.0, default=1.0 - p),
            h=mr.number("h", lo=0.0, hi=1.0, default=0.0),
            k=mr.number("k", lo=0.0, hi=1.0, default=1.0),
        )
        return {"loss_model": model, "loss": 0.0}

    def trace(self, r: TableReader) -> Trace:
        rel = r.string("trace")
        if not rel.strip():
            raise r.error("trace", "must be a path to a Mahimahi trace file (or false for none)")
        if "\0" in rel:  # the OS would refuse the path with a bare ValueError
            raise r.error("trace", f"must be a path to a Mahimahi trace file, got a NUL byte in {rel!r}")
        path = (self.base_dir / rel).resolve()
        cached = self._traces.get(path)
        if cached is not None:
            return cached
        if not path.is_file():
            raise r.error("trace", f"trace file {rel!r} not found (looked for {path})")
        try:
            trace = parse_trace(path)
        except TraceFormatError as exc:
            where = f"line {exc.line}: " if exc.line else ""
            raise r.error("trace", f"{rel}: {where}{exc.problem}") from None
        self._traces[path] = trace
        return trace

    def outages(self, r: TableReader) -> tuple[tuple[float, float], ...]:
        value = r.data["outages"]
        if not isinstance(value, list):
            raise r.error("outages", f"must be an array of [start, end] windows in seconds, got {describe(value)}")
        out: list[tuple[float, float]] = []
        for i, w in enumerate(value):
            ok = (
                isinstance(w, list) and len(w) == 2
                and all(isinstance(x, int | float) and not isinstance(x, bool) for x in w)
            )
            if not ok:
                raise r.error(f"outages[{i}]", f"must be [start, end] in seconds, got {describe(w)}")
            start, end = float(w[0]), float(w[1])
            if not (0 <= start < end < float("inf")):
                raise r.error(f"outages[{i}]", f"needs 0 <= start < end, got [{w[0]}, {w[1]}]")
            out.append((start, end))
        return tuple(out)

    def make_config(self, start: LinkConfig, layers: list[tuple[dict[str, Any], str]]) -> LinkConfig:
        cfg = start
        for changes, key in layers:
            if not changes:
                continue
            try:
                cfg = cfg.with_changes(**changes)
            except ConfigError as exc:  # cross-field rules the per-key checks cannot see
                raise ScenarioError(self.source, key, str(exc)) from None
        return cfg
