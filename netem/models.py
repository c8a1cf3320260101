"""Impairment model configuration: what one direction of a network path does to packets.

Everything here is a frozen attrs value validated at construction (a bad value is caller misuse
and raises :class:`~rtcprobe.core.errors.ConfigError` at once). The behaviour lives in
:mod:`rtcprobe.netem.link`; the TOML front end in :mod:`rtcprobe.netem.scenario`.

Units: times in the config are milliseconds (``*_ms``) because that is how people write network
conditions (and how netem's ``tc`` takes them); outage windows and phase start times are seconds
since the start of the run, like every ``t`` the :class:`~rtcprobe.netem.link.Link` is given.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal, TypeAlias

import attrs
from rtcprobe.core.errors import ConfigError

from .trace import Trace

JitterDistribution: TypeAlias = Literal["uniform", "normal", "pareto"]
JITTER_DISTRIBUTIONS: Final[tuple[str, ...]] = ("uniform", "normal", "pareto")


def _is_number(value: object) -> bool:
    # bool is an int subclass in Python, but `loss = true` is a mistake, not 1.0.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite_min(lo: float, *, strict: bool = False) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not _is_number(value) or not math.isfinite(float(value)):  # type: ignore[arg-type]
            raise ConfigError(f"{attribute.name} must be a finite number, got {value!r}")
        v = float(value)  # type: ignore[arg-type]
        if v < lo or (strict and v == lo):
            raise ConfigError(f"{attribute.name} must be {'>' if strict else '>='} {lo:g}, got {value!r}")

    return check


def _probability(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not _is_number(value) or not 0.0 <= float(value) <= 1.0:  # type: ignore[arg-type]
        raise ConfigError(f"{attribute.name} must be a probability between 0 and 1, got {value!r}")


def _choice(options: tuple[str, ...]) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value not in options:
            raise ConfigError(f"{attribute.name} must be one of {', '.join(map(repr, options))}, got {value!r}")

    return check


def _bool(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{attribute.name} must be True or False, got {value!r}")


def _optional_of(kind: type) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None and not isinstance(value, kind):
            raise ConfigError(f"{attribute.name} must be a {kind.__name__} or None, got {type(value).__name__}")

    return check


def _optional_int_min(lo: int) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ConfigError(f"{attribute.name} must be an integer >= {lo} or None, got {value!r}")

    return check


@attrs.frozen
class GilbertElliott:
    """Two-state bursty loss with Linux netem's ``gemodel p r 1-h 1-k`` semantics.

    Per packet, in the state the packet finds: lost with probability ``1 - k`` in the good state
    and ``1 - h`` in the bad one; then the chain moves good→bad with ``p``, bad→good with ``r``.
    The defaults are netem's: ``r = 1 - p``, ``1 - h = 1`` (the bad state loses everything),
    ``1 - k = 0`` (the good state loses nothing), which reduces to the simple Gilbert model.
    """

    p: float = attrs.field(validator=_probability)
    r: float = attrs.field(
        default=attrs.Factory(lambda self: 1.0 - self.p, takes_self=True), validator=_probability
    )
    h: float = attrs.field(default=0.0, validator=_probability)
    k: float = attrs.field(default=1.0, validator=_probability)

    @property
    def bad_fraction(self) -> float:
        """Stationary probability of the bad state, p / (p + r)."""
        return 0.0 if self.p + self.r == 0 else self.p / (self.p + self.r)

    @property
    def mean_loss(self) -> float:
        """Long-run loss rate: π_bad·(1 − h) + π_good·(1 − k)."""
        if self.p + self.r == 0:  # the chain never moves: it stays in the good start state
            return 1.0 - self.k
        b = self.bad_fraction
        return b * (1.0 - self.h) + (1.0 - b) * (1.0 - self.k)


def _to_outages(value: Iterable[Iterable[float]]) -> tuple[tuple[float, float], ...]:
    try:
        windows = [tuple(w) for w in value]
    except TypeError:
        raise ConfigError(f"outages must be a list of (start, end) pairs, got {value!r}") from None
    out: list[tuple[float, float]] = []
    for w in windows:
        if len(w) != 2 or not all(_is_number(x) and math.isfinite(x) for x in w):
            raise ConfigError(f"outages: each window must be (start, end) in seconds, got {w!r}")
        start, end = float(w[0]), float(w[1])
        if start < 0 or end <= start:
            raise ConfigError(f"outages: need 0 <= start < end, got ({w[0]!r}, {w[1]!r})")
        out.append((start, end))
    # Sorted so the link can bisect; overlapping windows are harmless (a union).
    return tuple(sorted(out))


@attrs.frozen
class LinkConfig:
    """One direction of a path (uplink client→server or downlink server→client).

    Packets go through, in this order (like Mahimahi shells ``mm-loss`` → ``mm-link`` →
    ``mm-delay``): outage, loss, the bottleneck (``bandwidth_kbps`` or ``trace``, each behind a
    drop-tail queue of ``queue_packets`` / ``queue_bytes``), then delay + jitter.

    * ``jitter_ms``: netem's jitter. ``uniform`` draws from ±jitter; ``normal`` and ``pareto`` have
      standard deviation ``jitter_ms`` (pareto: netem's table, a Pareto with α = 3 shifted to mean
      0). The total one-way delay is clamped at 0. Packet order is kept unless ``reorder``.
    * ``loss`` is random (Bernoulli) loss; ``loss_model`` replaces it with Gilbert-Elliott.
    * ``bandwidth_kbps`` is in kbit/s (1000 bit/s): a packet takes (size + overhead)·8/rate to
      serialize. ``trace`` instead gives Mahimahi delivery opportunities. None = unlimited.
    * queue limits count packets waiting for the bottleneck (not the one being serialized),
      as Mahimahi's droptail does; None = unlimited.
    * ``outage`` drops everything while this config is in force (useful in phases);
      ``outages`` are absolute [start, end) windows in seconds since the start of the run.
    """

    delay_ms: float = attrs.field(default=0.0, validator=_finite_min(0.0))
    jitter_ms: float = attrs.field(default=0.0, validator=_finite_min(0.0))
    jitter_distribution: JitterDistribution = attrs.field(default="uniform", validator=_choice(JITTER_DISTRIBUTIONS))
    reorder: bool = attrs.field(default=False, validator=_bool)
    loss: float = attrs.field(default=0.0, validator=_probability)
    loss_model: GilbertElliott | None = attrs.field(default=None, validator=_optional_of(GilbertElliott))
    bandwidth_kbps: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(_finite_min(0.0, strict=True))
    )
    queue_packets: int | None = attrs.field(default=None, validator=_optional_int_min(1))
    queue_bytes: int | None = attrs.field(default=None, validator=_optional_int_min(1))
    overhead_bytes: int = attrs.field(default=0)
    trace: Trace | None = attrs.field(default=None, validator=_optional_of(Trace))
    outage: bool = attrs.field(default=False, validator=_bool)
    outages: tuple[tuple[float, float], ...] = attrs.field(default=(), converter=_to_outages)

    @overhead_bytes.validator
    def _check_overhead(self, attribute: attrs.Attribute[Any], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"overhead_bytes must be an integer >= 0, got {value!r}")

    def __attrs_post_init__(self) -> None:
        if self.loss_model is not None and self.loss != 0:
            raise ConfigError("set either loss (random) or loss_model, not both")
        if self.bandwidth_kbps is not None and self.trace is not None:
            raise ConfigError("set either bandwidth_kbps or trace, not both")

    @property
    def mean_loss(self) -> float:
        """Long-run loss probability of the loss stage (outages not included)."""
        return self.loss if self.loss_model is None else self.loss_model.mean_loss

    def with_changes(self, **changes: Any) -> LinkConfig:
        """A copy with ``changes`` applied; picking one of two exclusive settings clears the other."""
        if "loss" in changes and "loss_model" not in changes:
            changes["loss_model"] = None
        if "loss_model" in changes and changes["loss_model"] is not None and "loss" not in changes:
            changes["loss"] = 0.0
        if changes.get("trace") is not None and "bandwidth_kbps" not in changes:
            changes["bandwidth_kbps"] = None
        if changes.get("bandwidth_kbps") is not None and "trace" not in changes:
            changes["trace"] = None
        return attrs.evolve(self, **changes)


@attrs.define
class LinkCounters:
    """What a link did so far. A packet is counted when it is sent (its fate is decided then)."""

    sent: int = 0
    delivered: int = 0
    dropped_loss: int = 0
    dropped_queue: int = 0
    dropped_outage: int = 0
    bytes_sent: int = 0
    bytes_delivered: int = 0
    # Sum over delivered packets of (delivery − send), seconds: queueing + serialization + delay.
    total_added_delay: float = 0.0

    @property
    def dropped(self) -> int:
        return self.dropped_loss + self.dropped_queue + self.dropped_outage

    @property
    def mean_added_delay(self) -> float:
        return self.total_added_delay / self.delivered if self.delivered else 0.0


class ScenarioError(ConfigError):
    """A bad scenario (or expectation) file: names the file, the key path and the problem.

    ``key`` is a dotted path such as ``network.uplink.loss_model.p`` or ``phase[2].at`` (array
    indices count from 0); it is empty for problems with the file as a whole.
    """

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable despite the 3-argument constructor
        return (type(self), (self.source, self.key, self.problem))


def describe(value: object) -> str:
    """How a value reads in an error message: its TOML-ish type and the value itself."""
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(type(value))
    if kind is None:
        kind = "a table" if isinstance(value, Mapping) else "an array" if isinstance(value, list) else "a value"
    if isinstance(value, Mapping | list):
        return kind
    return f"{kind} ({value!r})" if isinstance(value, str) else f"{kind} ({_toml_repr(value)})"


def _toml_repr(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


class TableReader:
    """Reads one TOML table, turning every problem into a :class:`ScenarioError` with its key path.

    Shared by the scenario and expectation parsers so they word errors the same way.
    """

    def __init__(self, data: object, source: str, path: str, known: Iterable[str]) -> None:
        self.source = source
        self.path = path
        if not isinstance(data, Mapping):
            raise self.error("", f"must be a table, got {describe(data)}")
        self.data: dict[str, Any] = dict(data)
        known = list(known)
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(known)})"
                raise self.error(key, f"unknown key{hint}")

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, problem: str) -> ScenarioError:
        return ScenarioError(self.source, self.key(name) if name else self.path, problem)

    def __contains__(self, name: str) -> bool:
        return name in self.data

    def number(self, name: str, *, lo: float | None = None, hi: float | None = None, strict_lo: bool = False,
               default: float | None = None) -> float:
        value = self.data.get(name, default)
        if value is None:
            raise self.error(name, "is required")
        if not _is_number(value) or not math.isfinite(value):
            raise self.error(name, f"must be a number, got {describe(value)}")
        self._range(name, value, lo, hi, strict_lo)
        return float(value)

    def integer(self, name: str, *, lo: int | None = None, hi: int | None = None,
                default: int | None = None) -> int:
        value = self.data.get(name, default)
        if value is None:
            raise self.error(name, "is required")
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # `queue_packets = 100.0` means 100
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"must be an integer, got {describe(value)}")
        self._range(name, value, lo, hi, False)
        return value

    def _range(self, name: str, value: float, lo: float | None, hi: float | None, strict_lo: bool) -> None:
        if lo is not None and hi is not None and not lo <= value <= hi:
            raise self.error(name, f"must be between {lo:g} and {hi:g}, got {_toml_repr(value)}")
        if lo is not None and (value < lo or (strict_lo and value == lo)):
            cmp = "greater than" if strict_lo else "at least"
            raise self.error(name, f"must be {cmp} {lo:g}, got {_toml_repr(value)}")
        if hi is not None and value > hi:
            raise self.error(name, f"must be at most {hi:g}, got {_toml_repr(value)}")

    def boolean(self, name: str, *, default: bool | None = None) -> bool:
        value = self.data.get(name, default)
        if value is None:
            raise self.error(name, "is required")
        if not isinstance(value, bool):
            raise self.error(name, f"must be true or false, got {describe(value)}")
        return value

    def string(self, name: str, *, default: str | None = None, choices: Iterable[str] | None = None) -> str:
        value = self.data.get(name, default)
        if value is None:
            raise self.error(name, "is required")
        if not isinstance(value, str):
            raise self.error(name, f"must be a string, got {describe(value)}")
        if choices is not None:
            options = list(choices)
            if value not in options:
                raise self.error(name, f"must be one of {', '.join(map(repr, options))}, got {value!r}")
        return value

    def table(self, name: str, known: Iterable[str]) -> TableReader:
        return TableReader(self.data[name], self.source, self.key(name), known)

    def range_pair(self, name: str, *, lo: float, hi: float | None = None, integer: bool = False
                   ) -> tuple[float, float]:
        """A ``[low, high]`` array of two numbers within [lo, hi], low <= high."""
        value = self.data[name]
        kind = "integers" if integer else "numbers"
        if not isinstance(value, list) or len(value) != 2:
            raise self.error(name, f"must be an array [low, high] of two {kind}, got {describe(value)}")
        for i, x in enumerate(value):
            ok = (isinstance(x, int) and not isinstance(x, bool)) if integer else _is_number(x)
            if not ok or not math.isfinite(x):
                raise self.error(f"{name}[{i}]", f"must be {'an integer' if integer else 'a number'}, "
                                 f"got {describe(x)}")
            bounds = f"between {lo:g} and {hi:g}" if hi is not None else f"at least {lo:g}"
            if x < lo or (hi is not None and x > hi):
                raise self.error(f"{name}[{i}]", f"must be {bounds}, got {_toml_repr(x)}")
        if value[0] > value[1]:
            raise self.error(name, f"low must not exceed high, got [{value[0]}, {value[1]}]")
        return float(value[0]), float(value[1])
