"""Network quality in a live call: a room of participants, each scored on its own network.

Theory of operation (the full method, its math and its limits: docs/network-quality-rooms.md)
============================================================================================

Twilio Video's Network Quality API gives every participant of a call a level 0..5 and pushes it,
at a verbosity each receiver chose, to the participant itself and to the others
(docs/references.md#twilio-video-network-quality).  :class:`Room` is that service without I/O:
the caller (the signaling server) passes every input and the time ``now`` (seconds of a monotonic
clock of its choice), and drains what to tell whom with :meth:`Room.next_event`.

* **Participants** join with a demand (:class:`~rtcprobe.core.quality.QualityDemand`: what they
  publish and subscribe to) and a verbosity configuration (:class:`NetworkQualityConfig`).
* About once a second each sends a :class:`RoomSample`: cumulative counters and gauges of its own
  peer connections, one :class:`PeerLink` per remote end, which is another participant (a mesh)
  or a media server (an SFU).  Counters become per-interval measurements between a participant's
  consecutive samples.
* **Attribution.**  A level describes the participant's *own* network.  Every stream crosses two
  legs, the sender's uplink and the receiver's downlink, so a loss a receiver sees is charged to
  the leg that caused it by fitting all the room's observations at once: path losses
  ``1 - p = (1 - u)(1 - d)`` become linear in ``-ln(1 - .)``, path round trips are sums of the two
  ends' access delays, path jitters (squared) sums of two leg variances.  The fit is a
  non-negative least-squares weighted by each observation's inverse variance, losses counted over
  ``RoomConfig.loss_window``; where the room's data cannot tell uplinks from downlinks (two
  participants alone; loss common to every path) the undecided part is split evenly
  (:func:`fit_legs`).  A media server's receiver reports measure a sender's uplink directly.
* **Scoring.**  Once per tick (``RoomConfig.tick_interval``) every participant's attributed
  metrics (send: its uplink; recv: its downlink) feed its own
  :class:`~rtcprobe.core.quality.NetworkQualityScorer`, with the preflight's constants, smoothing
  and hysteresis.  Idle participants read 5; a participant whose signaling is lost reads 0, and is
  removed after ``RoomConfig.reconnect_timeout`` (:meth:`Room.get_timer`/:meth:`Room.handle_timer`).
* **Output.**  After each change, one :class:`NetworkQualityPush` per receiver lists what changed
  in its view: its own level at its local verbosity, every other participant's at its remote
  verbosity (0: nothing about others).  Joins, leaves and reconnections are events too.

Bad input from a participant (garbage, a sample too big or too frequent, counters that go
backwards, an identity not in the room) raises :class:`RoomError`, a typed error with a Twilio
Video error code the server can send back; the room's state is left as it was (or, for counters
that go backwards, re-based on the new sample), so the room carries on.  Misuse by the caller (a
``now`` that goes backwards, a configuration of the wrong type) raises ``ValueError``/``TypeError``.

This module is pure (docs/architecture.md#the-sans-io-contract): no I/O, no clock, no randomness.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final, Literal, TypeVar

import attrs
import numpy as np
import numpy.typing as npt

from .config import VideoSpec
from .errors import ConfigError, PreflightErrorInfo
from .observations import InboundStats, OutboundStats
from .quality import (
    DEFAULT_CONFIG,
    LOCAL_VERBOSITY_DEFAULT,
    MEDIA,
    REMOTE_VERBOSITY_DEFAULT,
    Media,
    NetworkQualityScorer,
    NetworkQualityStats,
    QualityDemand,
    QualityInput,
    ScorerConfig,
    SideMetrics,
    normalize_verbosity,
)
from .sampling import loss_fraction

# --------------------------------------------------------------------------------------------
# Errors: Twilio Video's codes where it has one, so apps keep their error handling
# --------------------------------------------------------------------------------------------

IDENTITY_INVALID: Final = PreflightErrorInfo(
    53200, "ParticipantIdentityInvalidError", "Participant identity is invalid"
)
IDENTITY_TOO_LONG: Final = PreflightErrorInfo(
    53201, "ParticipantIdentityTooLongError", "Participant identity is too long"
)
PARTICIPANT_NOT_FOUND: Final = PreflightErrorInfo(53204, "ParticipantNotFoundError", "Participant not found")
DUPLICATE_IDENTITY: Final = PreflightErrorInfo(
    53205, "ParticipantDuplicateIdentityError", "Participant with the same identity is already in the room"
)
ROOM_FULL: Final = PreflightErrorInfo(53105, "RoomMaxParticipantsExceededError", "Room contains too many Participants")
#: Twilio's code for a signaling message the server cannot accept: every bad sample.
MESSAGE_INVALID: Final = PreflightErrorInfo(
    53003, "SignalingIncomingMessageInvalidError", "Client sent an invalid network quality sample"
)

#: Why a :class:`RoomError` was raised, for machines (the code alone lumps bad samples together).
RoomErrorReason = Literal[
    "identity-invalid",
    "identity-duplicate",
    "room-full",
    "not-found",
    "invalid-sample",
    "sample-too-big",
    "too-frequent",
    "counters-backwards",
]


class RoomError(Exception):
    """A participant's input was refused; the room carries on.  ``error`` is the code-table entry
    (code, name, message) to send back, ``reason`` which rule was broken."""

    def __init__(self, error: PreflightErrorInfo, reason: RoomErrorReason, message: str, identity: str | None) -> None:
        super().__init__(f"{error.code} {error.name}: {message}")
        self.error = error.with_message(message)
        self.code = error.code
        self.reason: RoomErrorReason = reason
        self.identity = identity

    def to_dict(self) -> dict[str, Any]:
        return {**self.error.to_dict(), "reason": self.reason, "identity": self.identity}


def _bad_sample(identity: str | None, message: str, reason: RoomErrorReason = "invalid-sample") -> RoomError:
    return RoomError(MESSAGE_INVALID, reason, message, identity)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

#: Counters beyond JavaScript's ``Number.MAX_SAFE_INTEGER`` cannot have come from a browser exactly.
MAX_COUNTER: Final = 2**53 - 1
#: Gauges beyond these are garbage: a minute of round trip or jitter, a terabit per second.
MAX_SECONDS: Final = 60.0
MAX_BPS: Final = 1e12
#: The largest sample :func:`decode_sample_json` parses, in bytes of UTF-8 (a 16-participant mesh
#: with every field set is about 10 KiB).
MAX_SAMPLE_BYTES: Final = 32 * 1024
#: Hard caps :func:`decode_sample` applies before a room's own bounds, so no client makes the
#: decoder build a huge object.
MAX_LINKS_HARD: Final = 256
MAX_STREAMS_HARD: Final = 1024
#: The longest identity (or media-server name) a room accepts.
MAX_IDENTITY_LENGTH: Final = 128
#: The worst path loss fitted: ``-ln(1 - p)`` is infinite at p = 1.
MAX_FITTED_LOSS: Final = 0.999


def _positive(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{attribute.name} must be a positive finite number, got {value!r}")


def _positive_int(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{attribute.name} must be a positive integer, got {value!r}")


@attrs.frozen
class RoomConfig:
    """Bounds and timings of one room.  Frozen, validated at construction."""

    #: Twilio's group rooms hold up to 50, its peer-to-peer rooms 10; a mesh of 16 is already
    #: 15 uplink copies of every stream.  The fit's cost grows with the square of this.
    max_participants: int = attrs.field(default=16, validator=_positive_int)
    #: Seconds between scoring rounds: the clients sample about once a second.
    tick_interval: float = attrs.field(default=1.0, validator=_positive)
    #: Samples closer than this (s) to the participant's previous one are refused: rates over a
    #: shorter interval are mostly noise, and a flood of samples costs the server.
    min_sample_interval: float = attrs.field(default=0.2, validator=_positive)
    #: A participant's latest measurement is used until it is this old (s): one missed sample at
    #: one a second does not blank its view.
    max_sample_age: float = attrs.field(default=2.5, validator=_positive)
    #: Seconds of each participant's samples whose packet counts are summed for the loss fit (as
    #: the scorer's rtt/jitter ``latency_window``): one second of one path is a few dozen video
    #: packets, whose loss by chance is often 3 in 35 where the path loses 2 %.
    loss_window: float = attrs.field(default=5.0, validator=_positive)
    #: A stream's loss enters the fit once the loss window holds this many of its packets: at 2 %
    #: loss, 35 packets (one second of small video) show 6 % or more one time in six.
    min_loss_packets: int = attrs.field(default=50, validator=_positive_int)
    #: Seconds a participant whose signaling is lost stays in the room (level 0) before it is
    #: removed.
    reconnect_timeout: float = attrs.field(default=30.0, validator=_positive)
    #: Peer connections in one sample (a mesh needs ``max_participants - 1``; SFUs add one each).
    max_links: int = attrs.field(default=32, validator=_positive_int)
    #: Streams (sent and received, over all links) in one sample.
    max_streams: int = attrs.field(default=128, validator=_positive_int)

    def __attrs_post_init__(self) -> None:
        if self.max_links > MAX_LINKS_HARD or self.max_streams > MAX_STREAMS_HARD:
            raise ConfigError(f"max_links <= {MAX_LINKS_HARD} and max_streams <= {MAX_STREAMS_HARD}")


def _local_verbosity(value: object) -> int:
    return normalize_verbosity(value, local=True)


def _remote_verbosity(value: object) -> int:
    return normalize_verbosity(value, local=False)


@attrs.frozen
class NetworkQualityConfig:
    """A participant's ``networkQuality: {local, remote}`` (Twilio's names and rule): local 1..3
    (default 1), remote 0..3 (default 0); a value out of range falls back to the default."""

    local: int = attrs.field(default=LOCAL_VERBOSITY_DEFAULT, converter=_local_verbosity)
    remote: int = attrs.field(default=REMOTE_VERBOSITY_DEFAULT, converter=_remote_verbosity)

    @classmethod
    def from_dict(cls, value: object) -> NetworkQualityConfig:
        """From a client's ``networkQuality`` option: an object with ``local``/``remote``; anything
        else (``true``, a missing option) means the defaults, as in twilio-video.js."""
        if not isinstance(value, Mapping):
            return cls()
        return cls(local=value.get("local"), remote=value.get("remote"))

    def to_dict(self) -> dict[str, int]:
        return {"local": self.local, "remote": self.remote}


# --------------------------------------------------------------------------------------------
# The sample: one participant's peer connections, one link per remote end
# --------------------------------------------------------------------------------------------


def _check_name(value: object, what: str) -> str:
    """An identity or a media server's name: a non-empty string of printable characters."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > MAX_IDENTITY_LENGTH:
        raise ConfigError(f"{what} must be at most {MAX_IDENTITY_LENGTH} characters")
    if not value.isprintable():
        raise ConfigError(f"{what} must hold printable characters only")
    return value


def _name(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _check_name(value, attribute.name)


def _optional_name(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _check_name(value, attribute.name)


def _media(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in MEDIA:
        raise ConfigError(f"{attribute.name} must be 'audio' or 'video', got {value!r}")


_outbound = attrs.validators.optional(attrs.validators.instance_of(OutboundStats))


def _rtt(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _check_gauge(value, attribute.name, MAX_SECONDS)
_bool = attrs.validators.instance_of(bool)


@attrs.frozen
class InboundStream:
    """One stream a participant receives on a link: its counters, and whose media it is.

    ``source`` is the identity of the participant who publishes it.  On a peer link it is the
    link's remote (``None`` says the same); on a server link it says whose uplink the stream
    crossed, and a stream without one is charged to the receiver alone.  The client sums the
    tracks of one kind from one source (e.g. simulcast layers) into one stream.
    """

    kind: Media = attrs.field(validator=_media)
    stats: InboundStats = attrs.field(validator=attrs.validators.instance_of(InboundStats))
    source: str | None = attrs.field(default=None, validator=_optional_name)


@attrs.frozen
class PeerLink:
    """One peer connection of a participant, to another participant (a mesh) or to a media server
    (``server``: an SFU; the server's own network counts as part of each leg to it).

    ``rtt`` is the selected candidate pair's current round trip (s), when the stack reports one;
    otherwise the largest of the sent streams' ``remote_rtt`` is used.  ``inbound_includes_uplink``
    matters on server links only, as in :class:`~rtcprobe.core.observations.StatsSample`: True when
    the server forwards packets as they came (a sender's uplink loss is a gap at every receiver),
    False when it terminates or repairs media (the receiver then sees its own downlink only).
    """

    remote: str = attrs.field(validator=_name)
    server: bool = attrs.field(default=False, validator=_bool)
    audio_out: OutboundStats | None = attrs.field(default=None, validator=_outbound)
    video_out: OutboundStats | None = attrs.field(default=None, validator=_outbound)
    inbound: tuple[InboundStream, ...] = attrs.field(
        default=(),
        validator=attrs.validators.deep_iterable(
            attrs.validators.instance_of(InboundStream), attrs.validators.instance_of(tuple)
        ),
    )
    rtt: float | None = attrs.field(default=None, validator=_rtt)
    inbound_includes_uplink: bool = attrs.field(default=True, validator=_bool)

    def outbound(self, media: Media) -> OutboundStats | None:
        return self.audio_out if media == "audio" else self.video_out


@attrs.frozen
class RoomSample:
    """One stats round over all of a participant's peer connections, in SI units; ``demand``, when
    given, replaces the participant's demand (what it publishes and subscribes to)."""

    links: tuple[PeerLink, ...] = attrs.field(
        default=(),
        validator=attrs.validators.deep_iterable(
            attrs.validators.instance_of(PeerLink), attrs.validators.instance_of(tuple)
        ),
    )
    demand: QualityDemand | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(QualityDemand))
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_count(value: object, path: str, *, signed: bool = False) -> None:
    low = -MAX_COUNTER if signed else 0
    if not _is_int(value) or not low <= value <= MAX_COUNTER:  # type: ignore[operator]
        raise ConfigError(f"{path} must be an integer in {low}..{MAX_COUNTER}, got {value!r}")


def _check_gauge(value: object, path: str, high: float) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{path} must be a finite number or null, got {value!r}")
    if not 0 <= value <= high:
        raise ConfigError(f"{path} must be in 0..{high:g}, got {value!r}")


def _check_outbound(s: OutboundStats, path: str) -> None:
    _check_count(s.packets_sent, f"{path}.packetsSent")
    _check_count(s.bytes_sent, f"{path}.bytesSent")
    _check_gauge(s.remote_rtt, f"{path}.remoteRtt", MAX_SECONDS)
    _check_gauge(s.remote_jitter, f"{path}.remoteJitter", MAX_SECONDS)
    _check_gauge(s.remote_fraction_lost, f"{path}.remoteFractionLost", 1.0)
    # RTCP's cumulative lost is signed: duplicates count as negative loss.
    if s.remote_packets_lost is not None:
        _check_count(s.remote_packets_lost, f"{path}.remotePacketsLost", signed=True)
    _check_gauge(s.available_bps, f"{path}.availableBps", MAX_BPS)


def _check_inbound(s: InboundStats, path: str) -> None:
    _check_count(s.packets_received, f"{path}.packetsReceived")
    _check_count(s.packets_lost, f"{path}.packetsLost", signed=True)
    _check_count(s.bytes_received, f"{path}.bytesReceived")
    _check_gauge(s.jitter, f"{path}.jitter", MAX_SECONDS)


#: A remote end: ("p", identity) for a participant, ("s", name) for a media server.
_Node = tuple[str, str]


def _node(link: PeerLink) -> _Node:
    return ("s" if link.server else "p", link.remote)


def _check_sample(sample: RoomSample, identity: str, config: RoomConfig) -> None:
    """Everything :class:`RoomSample`'s own validators cannot see (the stats classes carry none,
    and the bounds are the room's); raises :class:`ConfigError` naming the field."""
    if not isinstance(sample, RoomSample):
        raise ConfigError(f"a sample must be a RoomSample, got {type(sample).__name__}")
    if len(sample.links) > config.max_links:
        raise ConfigError(f"too many links: {len(sample.links)} > {config.max_links}")
    streams = sum(len(link.inbound) + (link.audio_out is not None) + (link.video_out is not None)
                  for link in sample.links)
    if streams > config.max_streams:
        raise ConfigError(f"too many streams: {streams} > {config.max_streams}")
    seen: set[_Node] = set()
    for i, link in enumerate(sample.links):
        path = f"links[{i}]"
        if not link.server and link.remote == identity:
            raise ConfigError(f"{path}.remote is the participant itself")
        if _node(link) in seen:
            raise ConfigError(f"{path}: a second link to {link.remote!r}")
        seen.add(_node(link))
        _check_gauge(link.rtt, f"{path}.rtt", MAX_SECONDS)
        for media in MEDIA:
            out = link.outbound(media)
            if out is not None:
                _check_outbound(out, f"{path}.{media}Out")
        sources: set[tuple[str, str | None]] = set()
        for j, stream in enumerate(link.inbound):
            spath = f"{path}.inbound[{j}]"
            _check_inbound(stream.stats, spath)
            source = stream.source
            if not link.server:
                if source is not None and source != link.remote:
                    raise ConfigError(f"{spath}.source must be the link's remote on a peer link")
                source = link.remote
            if source == identity:
                raise ConfigError(f"{spath}.source is the participant itself")
            if (stream.kind, source) in sources:
                raise ConfigError(f"{spath}: a second {stream.kind} stream from {source!r} (sum them)")
            sources.add((stream.kind, source))


# --- JSON: the wire shape (camelCase; the stats fields as in the observation codec) ---------------


def _get(d: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in d:
        raise ConfigError(f"{path} is missing the '{key}' field")
    return d[key]


def _obj(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{path} must be an object")
    return value


def _opt_bool(d: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
    value = d.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{path}.{key} must be true or false")
    return value


def _decode_outbound(value: object, path: str) -> OutboundStats | None:
    if value is None:
        return None
    d = _obj(value, path)
    s = OutboundStats(
        packets_sent=_get(d, "packetsSent", path),
        bytes_sent=_get(d, "bytesSent", path),
        remote_rtt=d.get("remoteRtt"),
        remote_jitter=d.get("remoteJitter"),
        remote_fraction_lost=d.get("remoteFractionLost"),
        remote_packets_lost=d.get("remotePacketsLost"),
        available_bps=d.get("availableBps"),
    )
    _check_outbound(s, path)
    return s


def _decode_inbound(value: object, path: str) -> InboundStream:
    d = _obj(value, path)
    stats = InboundStats(
        packets_received=_get(d, "packetsReceived", path),
        packets_lost=_get(d, "packetsLost", path),
        bytes_received=_get(d, "bytesReceived", path),
        jitter=d.get("jitter"),
    )
    _check_inbound(stats, path)
    return InboundStream(kind=_get(d, "kind", path), stats=stats, source=d.get("source"))


def _decode_video(value: object, path: str) -> VideoSpec | None:
    if value is None:
        return None
    d = _obj(value, path)
    try:
        return VideoSpec(**{k: d[k] for k in ("width", "height", "fps") if k in d})
    except TypeError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def decode_demand(value: object, path: str = "demand") -> QualityDemand:
    """A demand from JSON: ``{"audioSend": bool, "audioRecv": bool, "videoSend": video|null,
    "videoRecv": video|null}``, a video ``{"width", "height", "fps"}`` (missing fields: 640x480@30);
    missing keys demand nothing.  Raises :class:`ConfigError` naming the field."""
    d = _obj(value, path)
    return QualityDemand(
        audio_send=_opt_bool(d, "audioSend", path, False),
        audio_recv=_opt_bool(d, "audioRecv", path, False),
        video_send=_decode_video(d.get("videoSend"), f"{path}.videoSend"),
        video_recv=_decode_video(d.get("videoRecv"), f"{path}.videoRecv"),
    )


def encode_demand(demand: QualityDemand) -> dict[str, Any]:
    def video(spec: VideoSpec | None) -> dict[str, Any] | None:
        return None if spec is None else {"width": spec.width, "height": spec.height, "fps": spec.fps}

    return {"audioSend": demand.audio_send, "audioRecv": demand.audio_recv,
            "videoSend": video(demand.video_send), "videoRecv": video(demand.video_recv)}


def _decode_link(value: object, path: str) -> PeerLink:
    d = _obj(value, path)
    inbound = d.get("inbound", [])
    if not isinstance(inbound, list):
        raise ConfigError(f"{path}.inbound must be an array")
    if len(inbound) > MAX_STREAMS_HARD:
        raise ConfigError(f"{path}.inbound: too many streams")
    rtt = d.get("rtt")
    _check_gauge(rtt, f"{path}.rtt", MAX_SECONDS)
    return PeerLink(
        remote=_get(d, "remote", path),
        server=_opt_bool(d, "server", path, False),
        audio_out=_decode_outbound(d.get("audioOut"), f"{path}.audioOut"),
        video_out=_decode_outbound(d.get("videoOut"), f"{path}.videoOut"),
        inbound=tuple(_decode_inbound(s, f"{path}.inbound[{i}]") for i, s in enumerate(inbound)),
        rtt=rtt,
        inbound_includes_uplink=_opt_bool(d, "inboundIncludesUplink", path, True),
    )


def decode_sample(value: object, identity: str | None = None) -> RoomSample:
    """A :class:`RoomSample` from parsed JSON; unknown keys are ignored (a newer client may add
    fields).  Anything else wrong raises :class:`RoomError` (``invalid-sample``), never another
    exception."""
    try:
        d = _obj(value, "sample")
        links = d.get("links", [])
        if not isinstance(links, list):
            raise ConfigError("sample.links must be an array")
        if len(links) > MAX_LINKS_HARD:
            raise ConfigError("sample.links: too many links")
        demand = d.get("demand")
        return RoomSample(
            links=tuple(_decode_link(link, f"sample.links[{i}]") for i, link in enumerate(links)),
            demand=None if demand is None else decode_demand(demand, "sample.demand"),
        )
    except (ConfigError, TypeError, ValueError) as exc:  # attrs' validators raise TypeError too
        raise _bad_sample(identity, str(exc)) from None


def decode_sample_json(text: str | bytes, identity: str | None = None, *, limit: int = MAX_SAMPLE_BYTES) -> RoomSample:
    """Parse one sample of at most ``limit`` bytes of UTF-8 (checked before parsing: a bigger one
    is ``sample-too-big``), strict JSON (no NaN or infinities), then :func:`decode_sample`."""
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise _bad_sample(identity, f"sample too big: {size} bytes, the limit is {limit}", "sample-too-big")
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, NaN/Infinity, nesting too deep
        raise _bad_sample(identity, f"invalid JSON: {exc}") from None
    return decode_sample(value, identity)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _encode_outbound(s: OutboundStats | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {"packetsSent": s.packets_sent, "bytesSent": s.bytes_sent, "remoteRtt": s.remote_rtt,
            "remoteJitter": s.remote_jitter, "remoteFractionLost": s.remote_fraction_lost,
            "remotePacketsLost": s.remote_packets_lost, "availableBps": s.available_bps}


def encode_sample(sample: RoomSample) -> dict[str, Any]:
    """The JSON shape :func:`decode_sample` reads (round trip: equal samples)."""
    return {
        "links": [
            {
                "remote": link.remote,
                "server": link.server,
                "rtt": link.rtt,
                "audioOut": _encode_outbound(link.audio_out),
                "videoOut": _encode_outbound(link.video_out),
                "inbound": [
                    {"kind": s.kind, "source": s.source, "packetsReceived": s.stats.packets_received,
                     "packetsLost": s.stats.packets_lost, "bytesReceived": s.stats.bytes_received,
                     "jitter": s.stats.jitter}
                    for s in link.inbound
                ],
                "inboundIncludesUplink": link.inbound_includes_uplink,
            }
            for link in sample.links
        ],
        "demand": None if sample.demand is None else encode_demand(sample.demand),
    }


# --------------------------------------------------------------------------------------------
# Attribution: legs from path observations
# --------------------------------------------------------------------------------------------

#: One observation: ``value ≈ x[a] + x[b]`` (``b`` None: ``value ≈ x[a]``) with weight > 0.
LegObservation = tuple[int, int | None, float, float]

_FloatArray = npt.NDArray[np.float64]
_K = TypeVar("_K")


def _nnls(gram: _FloatArray, rhs: _FloatArray) -> _FloatArray:
    """min ||A x - y||² over x >= 0 given the normal equations (``gram`` = AᵀWA, ``rhs`` = AᵀWy):
    Lawson and Hanson's active-set method, with least-norm sub-solves because the gram matrix may
    be singular (the unidentifiable direction of :func:`fit_legs`)."""
    k = rhs.shape[0]
    x = np.zeros(k)
    passive = np.zeros(k, dtype=bool)
    scale = max(1.0, float(np.abs(rhs).max(initial=0.0)), float(np.abs(gram).max(initial=0.0)))
    tol = 1e-11 * scale
    for _ in range(4 * k + 4):
        grad = rhs - gram @ x
        candidates = ~passive & (grad > tol)
        if not candidates.any():
            break
        passive[int(np.argmax(np.where(candidates, grad, -np.inf)))] = True
        for _ in range(4 * k + 4):
            idx = np.flatnonzero(passive)
            s = np.zeros(k)
            s[idx] = np.linalg.lstsq(gram[np.ix_(idx, idx)], rhs[idx], rcond=None)[0]
            if (s[idx] > 0).all():
                x = s
                break
            neg = idx[s[idx] <= 0]
            step = x[neg] - s[neg]
            alpha = float(np.min(np.where(step > 0, x[neg] / np.where(step > 0, step, 1.0), 0.0)))
            x = x + alpha * (s - x)
            passive &= x > 1e-15 * scale
            x[~passive] = 0.0
            if not passive.any():
                break
    return np.maximum(x, 0.0)


def fit_legs(count: int, observations: Iterable[LegObservation]) -> list[float | None]:
    """Non-negative leg values from observations of sums of legs.

    Each observation says ``x[a] + x[b] ≈ value`` (``b`` None: ``x[a] ≈ value``) with a weight
    (its inverse variance).  The result is the weighted least-squares fit under ``x >= 0``:

    * a connected group of legs whose pair observations form a bipartite graph and that has no
      single-leg observation can shift by ``+c`` on one side and ``-c`` on the other without
      changing any sum (two participants alone; loss that every path shares): every ``c`` that
      keeps all legs >= 0 fits equally well.  The fit takes the middle of that range, the one
      best fit whose largest error on any leg is smallest whatever the truth among them;
    * any other group (an odd cycle, as in three participants' round trips; a leg observed
      directly, as an SFU's receiver reports are) has one best fit.

    Legs no observation touches are ``None``.  Raises ``ValueError`` for a leg index out of range,
    a value that is not finite or a weight that is not a positive finite number.
    """
    obs = list(observations)
    for a, b, value, weight in obs:
        if not 0 <= a < count or (b is not None and not 0 <= b < count):
            raise ValueError(f"leg index out of range 0..{count - 1}: {(a, b)!r}")
        if not math.isfinite(value) or not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"an observation needs a finite value and a positive weight, got {(value, weight)!r}")
    result: list[float | None] = [None] * count
    if not obs:
        return result
    # Union-find over legs; per component: a 2-colouring (bipartite?) and whether a leg is pinned.
    parent = list(range(count))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    touched: set[int] = set()
    adjacency: dict[int, list[int]] = {}
    pinned: set[int] = set()
    for a, b, _, _ in obs:
        touched.add(a)
        if b is None:
            pinned.add(a)
            continue
        touched.add(b)
        adjacency.setdefault(a, []).append(b)
        adjacency.setdefault(b, []).append(a)
        parent[find(a)] = find(b)
    order = sorted(touched)
    index = {leg: i for i, leg in enumerate(order)}
    k = len(order)
    rows_a = np.array([index[a] for a, _, _, _ in obs], dtype=np.intp)
    rows_b = np.array([index[b] if b is not None else -1 for _, b, _, _ in obs], dtype=np.intp)
    values = np.array([v for _, _, v, _ in obs], dtype=np.float64)
    weights = np.array([w for _, _, _, w in obs], dtype=np.float64)
    weights = weights / weights.max()  # only relative weights matter; keeps the gram near 1
    pair = rows_b >= 0
    gram = np.zeros((k, k))
    rhs = np.zeros(k)
    np.add.at(gram, (rows_a, rows_a), weights)
    np.add.at(gram, (rows_b[pair], rows_b[pair]), weights[pair])
    np.add.at(gram, (rows_a[pair], rows_b[pair]), weights[pair])
    np.add.at(gram, (rows_b[pair], rows_a[pair]), weights[pair])
    np.add.at(rhs, rows_a, weights * values)
    np.add.at(rhs, rows_b[pair], (weights * values)[pair])
    x = _nnls(gram, rhs)
    fitted = {leg: float(x[index[leg]]) for leg in order}
    # The free direction, per component.
    components: dict[int, list[int]] = {}
    for leg in order:
        components.setdefault(find(leg), []).append(leg)
    for members in components.values():
        colour = _two_colouring(members, adjacency)
        if colour is None or any(leg in pinned for leg in members):
            for leg in members:
                result[leg] = fitted[leg]
            continue
        # Shifting colour 0 by +c and colour 1 by -c keeps every sum; x >= 0 bounds c to
        # [-min x(colour 0), min x(colour 1)].  Take the middle of that range.
        lowest = [min(fitted[leg] for leg in members if colour[leg] == side) for side in (0, 1)]
        middle = (lowest[1] - lowest[0]) / 2
        for leg in members:
            result[leg] = max(0.0, fitted[leg] + (middle if colour[leg] == 0 else -middle))
    return result


def _two_colouring(members: list[int], adjacency: Mapping[int, list[int]]) -> dict[int, int] | None:
    """A 2-colouring of one connected component, or None when it has an odd cycle."""
    colour = {members[0]: 0}
    queue = deque([members[0]])
    while queue:
        leg = queue.popleft()
        for other in adjacency.get(leg, ()):
            if other not in colour:
                colour[other] = 1 - colour[leg]
                queue.append(other)
            elif colour[other] == colour[leg]:
                return None
    return colour


class _Legs:
    """Named legs for :func:`fit_legs`: observations by key, results by key."""

    def __init__(self) -> None:
        self._index: dict[Any, int] = {}
        self._obs: list[LegObservation] = []

    def _leg(self, key: Any) -> int:
        return self._index.setdefault(key, len(self._index))

    def pair(self, a: Any, b: Any, value: float, weight: float) -> None:
        self._obs.append((self._leg(a), self._leg(b), value, weight))

    def single(self, a: Any, value: float, weight: float) -> None:
        self._obs.append((self._leg(a), None, value, weight))

    def solve(self) -> dict[Any, float]:
        fitted = fit_legs(len(self._index), self._obs)
        return {key: v for key, i in self._index.items() if (v := fitted[i]) is not None}


def _loss_observation(lost: int, expected: int, minimum: int = 1) -> tuple[float, float] | None:
    """A path's loss counts as a fit observation: ``(-ln(1 - p), weight)``; None when fewer than
    ``minimum`` packets were expected.  The weight is the inverse variance of ``-ln(1 - p)``
    estimated from ``N`` packets: ``N (1 - p) / p`` (the binomial's variance through the delta
    method), with ``p`` taken as
    ``(lost + 1/2) / (N + 1)`` so that a path with no loss weighs a lot, not infinitely.  A clean
    path is near-certain evidence and pins its legs near 0; a lossy one is noisier and weighs
    less, so its noise is not spread onto clean legs."""
    fraction = loss_fraction(lost, expected)
    if fraction is None or expected < minimum:
        return None
    p = (fraction * expected + 0.5) / (expected + 1.0)
    return _to_log(fraction), expected * (1.0 - p) / p


def _relative_weight(value: float, floor: float) -> float:
    """Inverse variance of a gauge whose error is a roughly constant fraction of it (rtt, jitter):
    small values are precise; ``floor`` keeps a zero finite."""
    return 1.0 / (value + floor) ** 2


#: The floors of :func:`_relative_weight`: 1 ms of rtt, (1 ms)² of squared jitter.
RTT_FLOOR: Final = 0.001
JITTER2_FLOOR: Final = 1e-6


def _to_log(p: float) -> float:
    return -math.log1p(-min(MAX_FITTED_LOSS, max(0.0, p)))


def _from_log(x: float) -> float:
    return min(1.0, max(0.0, -math.expm1(-x)))


def split_losses(
    paths: Mapping[tuple[str, str], float],
    *,
    uplinks: Mapping[str, float] | None = None,
    downlinks: Mapping[str, float] | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """Per-leg loss fractions from path loss fractions ``{(sender, receiver): p}`` (a path delivers
    a packet when both legs do: ``1 - p = (1 - u_sender)(1 - d_receiver)``), plus legs measured
    directly (an SFU's receiver reports).  Returns ``(uplink, downlink)`` by identity; equal
    weights (the room weighs by packets)."""
    legs = _Legs()
    for (sender, receiver), p in paths.items():
        legs.pair(("up", sender), ("down", receiver), _to_log(p), 1.0)
    for sender, p in (uplinks or {}).items():
        legs.single(("up", sender), _to_log(p), 1.0)
    for receiver, p in (downlinks or {}).items():
        legs.single(("down", receiver), _to_log(p), 1.0)
    fitted = legs.solve()
    up = {name: _from_log(v) for (side, name), v in fitted.items() if side == "up"}
    down = {name: _from_log(v) for (side, name), v in fitted.items() if side == "down"}
    return up, down


def split_rtts(paths: Mapping[tuple[str, str], float]) -> dict[str, float]:
    """Per-end access round trips from path round trips ``{(a, b): rtt}`` (``rtt = x_a + x_b``;
    the core's delay is shared out among the ends).  Three or more ends in a triangle are exact."""
    legs = _Legs()
    for (a, b), rtt in paths.items():
        legs.pair(a, b, rtt, 1.0)
    return legs.solve()


# --------------------------------------------------------------------------------------------
# Per-participant measurements between two samples
# --------------------------------------------------------------------------------------------


@attrs.frozen
class _Sent:
    """One stream the participant sent, over one interval."""

    remote: _Node
    media: Media
    bps: float | None
    available: float | None
    loss: tuple[int, int] | None  # (lost, expected) packets, from the far end's receiver reports
    rtt: float | None
    jitter: float | None


@attrs.frozen
class _Received:
    """One stream the participant received, over one interval."""

    source: str | None  # the publishing participant; None: unknown (charged to the receiver)
    through: bool  # does its loss and jitter include the sender's uplink?
    media: Media
    bps: float | None
    loss: tuple[int, int] | None  # (lost, expected) packets
    jitter: float | None


@attrs.frozen
class _Window:
    end: float
    sent: tuple[_Sent, ...]
    received: tuple[_Received, ...]
    rtts: tuple[tuple[_Node, float], ...]


def _delta(cur: int, prev: int, path: str, backwards: list[str]) -> int:
    """``cur - prev`` of a counter that only grows (sent or received packets and bytes: lost
    counts may fall), noting it when it went backwards."""
    if cur < prev:
        backwards.append(path)
    return cur - prev


def _rr_loss(c: OutboundStats, p: OutboundStats | None) -> tuple[int, int] | None:
    """The far end's view of one sent stream over the interval: (lost, expected) packets, from its
    cumulative lost count against what was sent, else from its last fraction lost applied to what
    was sent.  A receiver report lags what was sent by up to an RTCP interval; summed over the
    loss window the lag matters little, and the receiver's own counts are preferred anyway."""
    if p is None:
        return None
    sent = c.packets_sent - p.packets_sent
    if c.remote_packets_lost is not None and p.remote_packets_lost is not None:
        return c.remote_packets_lost - p.remote_packets_lost, sent
    if c.remote_fraction_lost is not None and sent > 0:
        return round(c.remote_fraction_lost * sent), sent
    return None


def _window(cur: RoomSample, prev: RoomSample | None, dt: float | None, end: float) -> tuple[_Window, list[str]]:
    """The measurements between two samples (``prev`` None: gauges only), and the counters that
    went backwards."""
    backwards: list[str] = []
    old_links = {} if prev is None else {_node(link): link for link in prev.links}
    sent: list[_Sent] = []
    received: list[_Received] = []
    rtts: list[tuple[_Node, float]] = []
    for link in cur.links:
        node = _node(link)
        old = old_links.get(node)
        rr_rtts: list[float] = []
        for media in MEDIA:
            c = link.outbound(media)
            if c is None:
                continue
            p = None if old is None else old.outbound(media)
            bps = None
            if p is not None:
                where = f"{link.remote}.{media}Out"
                d_bytes = _delta(c.bytes_sent, p.bytes_sent, f"{where}.bytesSent", backwards)
                _delta(c.packets_sent, p.packets_sent, f"{where}.packetsSent", backwards)
                if dt is not None:
                    bps = 8.0 * d_bytes / dt
            if c.remote_rtt is not None:
                rr_rtts.append(c.remote_rtt)
            sent.append(_Sent(node, media, bps, c.available_bps, _rr_loss(c, p), c.remote_rtt, c.remote_jitter))
        olds = {} if old is None else {(s.kind, s.source if link.server else link.remote): s.stats
                                        for s in old.inbound}
        for stream in link.inbound:
            source = stream.source if link.server else link.remote
            through = link.inbound_includes_uplink if link.server else True
            c_in, p_in = stream.stats, olds.get((stream.kind, source))
            bps = loss = None
            if p_in is not None:
                where = f"{link.remote}.inbound.{stream.kind}"
                d_bytes = _delta(c_in.bytes_received, p_in.bytes_received, f"{where}.bytesReceived", backwards)
                d_recv = _delta(c_in.packets_received, p_in.packets_received, f"{where}.packetsReceived", backwards)
                d_lost = c_in.packets_lost - p_in.packets_lost  # may fall: duplicates count as negative loss
                loss = (d_lost, d_lost + d_recv)
                if dt is not None:
                    bps = 8.0 * d_bytes / dt
            received.append(_Received(source, through, stream.kind, bps, loss, c_in.jitter))
        rtt = link.rtt if link.rtt is not None else (max(rr_rtts) if rr_rtts else None)
        if rtt is not None:
            rtts.append((node, rtt))
    return _Window(end, tuple(sent), tuple(received), tuple(rtts)), backwards


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


@attrs.frozen
class MediaLegs:
    """The attributed legs of one participant for one media: loss fractions and jitters (s)."""

    uplink_loss: float | None = None
    downlink_loss: float | None = None
    uplink_jitter: float | None = None
    downlink_jitter: float | None = None


@attrs.frozen
class ParticipantLegs:
    """What attribution charged to one participant's own network at the last tick: its share of
    the round trip (s) and, per media, its uplink's and downlink's loss and jitter."""

    rtt: float | None = None
    audio: MediaLegs = MediaLegs()
    video: MediaLegs = MediaLegs()

    def media(self, media: Media) -> MediaLegs:
        return self.audio if media == "audio" else self.video


@attrs.frozen
class ParticipantConnected:
    """``identity`` joined (the server tells every other participant)."""

    identity: str


@attrs.frozen
class ParticipantDisconnected:
    """``identity`` left, or was removed after its signaling stayed lost (``timeout``)."""

    identity: str
    reason: Literal["left", "timeout"]


@attrs.frozen
class ParticipantReconnecting:
    """``identity``'s signaling was lost: its level reads 0 until it is back or removed."""

    identity: str


@attrs.frozen
class ParticipantReconnected:
    """``identity`` is back: its level climbs from 0 at the scorer's pace."""

    identity: str


@attrs.frozen
class QualityUpdate:
    """What a receiver is told about one participant: its level and stats at the verbosity the
    receiver asked for.  ``level_changed`` says whether the level differs from the last one this
    receiver was told (first update: True): that is ``networkQualityLevelChanged``; an update with
    the same level refreshes the stats (verbosity 2 and 3) only."""

    identity: str
    local: bool
    level: int
    level_changed: bool
    stats: NetworkQualityStats

    def to_dict(self) -> dict[str, Any]:
        return {"identity": self.identity, "local": self.local, "level": self.level,
                "levelChanged": self.level_changed, "stats": self.stats.to_dict()}


@attrs.frozen
class NetworkQualityPush:
    """One message for participant ``to``: what changed in its view since the last push."""

    to: str
    updates: tuple[QualityUpdate, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"to": self.to, "updates": [u.to_dict() for u in self.updates]}


RoomEvent = (
    ParticipantConnected | ParticipantDisconnected | ParticipantReconnecting | ParticipantReconnected
    | NetworkQualityPush
)


# --------------------------------------------------------------------------------------------
# The room
# --------------------------------------------------------------------------------------------


class _Participant:
    def __init__(self, identity: str, demand: QualityDemand, verbosity: NetworkQualityConfig,
                 scorer: ScorerConfig, now: float) -> None:
        self.identity = identity
        self.demand = demand
        self.verbosity = verbosity
        self.scorer = NetworkQualityScorer(demand, scorer)
        self.joined = now
        self.reconnect_deadline: float | None = None
        self.baseline: tuple[float, RoomSample] | None = None
        self.windows: deque[_Window] = deque()  # the latest last, spanning RoomConfig.loss_window
        self.last_input: QualityInput | None = None
        self.told: dict[str, NetworkQualityStats] = {}  # what this receiver was last told, by identity

    @property
    def reconnecting(self) -> bool:
        return self.reconnect_deadline is not None


def _check_now(now: object) -> float:
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        raise ValueError(f"now must be a finite number of seconds, got {now!r}")
    return float(now)


def _side(**fields: float | None) -> SideMetrics | None:
    """A side with what is known, or None when nothing is; values kept in the scorer's domain."""
    clean = {k: (None if v is None or not math.isfinite(v) else max(0.0, v)) for k, v in fields.items()}
    if clean.get("fraction_lost") is not None:
        clean["fraction_lost"] = min(1.0, clean["fraction_lost"])  # type: ignore[type-var]
    if all(v is None for v in clean.values()):
        return None
    return SideMetrics(**clean)


class Room:
    """One call's network quality, sans I/O.  See the module docstring for the protocol.

    Every method taking ``now`` (seconds, monotonic, the caller's clock) raises ``ValueError`` if
    it goes backwards.  Methods about a participant raise :class:`RoomError` for an identity not in
    the room.
    """

    def __init__(self, config: RoomConfig | None = None, scorer: ScorerConfig = DEFAULT_CONFIG) -> None:
        config = RoomConfig() if config is None else config
        if not isinstance(config, RoomConfig):
            raise TypeError(f"config must be a RoomConfig, got {config!r}")
        if not isinstance(scorer, ScorerConfig):
            raise TypeError(f"scorer must be a ScorerConfig, got {scorer!r}")
        self.config = config
        self.scorer_config = scorer
        self._participants: dict[str, _Participant] = {}  # in join order
        self._events: deque[RoomEvent] = deque()
        self._now: float | None = None
        self._next_tick: float | None = None
        self._legs: dict[str, ParticipantLegs] = {}

    # --- inputs ---------------------------------------------------------------------------

    def join(
        self,
        identity: str,
        now: float,
        *,
        demand: QualityDemand | None = None,
        network_quality: NetworkQualityConfig | None = None,
    ) -> None:
        """Add a participant (level 5 until there is evidence).  Raises :class:`RoomError` for an
        invalid or duplicate identity or a full room (Twilio disconnects the older participant
        with a duplicate identity: a server wanting that calls :meth:`leave` first)."""
        now = self._advance(now)
        demand = QualityDemand() if demand is None else demand
        network_quality = NetworkQualityConfig() if network_quality is None else network_quality
        if not isinstance(demand, QualityDemand):
            raise TypeError(f"demand must be a QualityDemand, got {demand!r}")
        if not isinstance(network_quality, NetworkQualityConfig):
            raise TypeError(f"network_quality must be a NetworkQualityConfig, got {network_quality!r}")
        try:
            _check_name(identity, "identity")
        except ConfigError as exc:
            too_long = isinstance(identity, str) and len(identity) > MAX_IDENTITY_LENGTH
            raise RoomError(IDENTITY_TOO_LONG if too_long else IDENTITY_INVALID, "identity-invalid", str(exc),
                            None) from None
        if identity in self._participants:
            raise RoomError(DUPLICATE_IDENTITY, "identity-duplicate", f"{identity!r} is already in the room", identity)
        if len(self._participants) >= self.config.max_participants:
            raise RoomError(ROOM_FULL, "room-full", f"the room holds at most {self.config.max_participants}", identity)
        self._participants[identity] = _Participant(identity, demand, network_quality, self.scorer_config, now)
        if self._next_tick is None:
            self._next_tick = now + self.config.tick_interval
        self._events.append(ParticipantConnected(identity))
        self._publish()

    def leave(self, identity: str, now: float) -> None:
        """Remove a participant that left."""
        self._advance(now)
        self._get(identity)
        self._remove(identity, "left")

    def update_demand(self, identity: str, demand: QualityDemand, now: float) -> None:
        """The participant now publishes/subscribes to ``demand``.  The scorer restarts for the new
        demand and is fed the latest metrics at once, so the level follows without a gap."""
        now = self._advance(now)
        if not isinstance(demand, QualityDemand):
            raise TypeError(f"demand must be a QualityDemand, got {demand!r}")
        self._set_demand(self._get(identity), demand, now)
        self._publish()

    def handle_sample(self, identity: str, sample: RoomSample, now: float) -> None:
        """One stats sample from ``identity``, received at ``now``.  Raises :class:`RoomError`
        (and changes nothing) for a participant not in the room, an invalid sample, one closer
        than ``min_sample_interval`` to the previous; for counters that go backwards it raises
        too, after taking the sample as the new baseline (a client that rebuilt a peer
        connection recovers at its next sample).  A sample from a participant whose signaling
        was lost means it is back."""
        now = self._advance(now)
        part = self._participants.get(identity) if isinstance(identity, str) else None
        if part is None:
            raise RoomError(PARTICIPANT_NOT_FOUND, "not-found", f"{identity!r} is not in the room",
                            identity if isinstance(identity, str) else None)
        try:
            _check_sample(sample, identity, self.config)
        except (ConfigError, TypeError, ValueError, AttributeError) as exc:
            raise _bad_sample(identity, str(exc)) from None
        if part.baseline is not None and now - part.baseline[0] < self.config.min_sample_interval:
            raise _bad_sample(identity, f"samples must be at least {self.config.min_sample_interval:g} s apart",
                              "too-frequent")
        # Levels change at ticks; a sample changes what receivers are told only when it brings
        # a participant back or changes its demand.
        published = part.reconnecting or (sample.demand is not None and sample.demand != part.demand)
        if part.reconnecting:
            self._restore(part)
        if sample.demand is not None and sample.demand != part.demand:
            self._set_demand(part, sample.demand, now)
        prev = part.baseline
        window, backwards = _window(sample, None if prev is None else prev[1],
                                    None if prev is None else now - prev[0], now)
        part.baseline = (now, sample)
        if backwards:
            part.windows.clear()
            if published:
                self._publish()
            raise _bad_sample(identity, "counters went backwards: " + ", ".join(backwards[:4]),
                              "counters-backwards")
        part.windows.append(window)
        while part.windows and now - part.windows[0].end >= self.config.loss_window:
            part.windows.popleft()
        if published:
            self._publish()

    def signaling_lost(self, identity: str, now: float) -> None:
        """The participant's signaling connection dropped: it reads 0 at once, and is removed
        ``reconnect_timeout`` seconds later unless it comes back."""
        now = self._advance(now)
        part = self._get(identity)
        if part.reconnecting:
            return
        part.reconnect_deadline = now + self.config.reconnect_timeout
        part.windows.clear()
        part.scorer.update(now, QualityInput(reconnecting=True))
        self._events.append(ParticipantReconnecting(identity))
        self._publish()

    def signaling_restored(self, identity: str, now: float) -> None:
        """The participant is back: its level climbs from 0 as the scorer's hysteresis allows,
        and its next push is a full snapshot of the room."""
        self._advance(now)
        part = self._get(identity)
        if part.reconnecting:
            self._restore(part)
            self._publish()

    def get_timer(self) -> float | None:
        """The next deadline (a scoring tick or a removal), or None when the room is empty."""
        deadlines = [p.reconnect_deadline for p in self._participants.values() if p.reconnect_deadline is not None]
        if self._next_tick is not None:
            deadlines.append(self._next_tick)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Remove participants whose reconnection timed out, and score everyone if a tick is due."""
        now = self._advance(now)
        for part in list(self._participants.values()):
            if part.reconnect_deadline is not None and now >= part.reconnect_deadline:
                self._remove(part.identity, "timeout")
        if self._next_tick is not None and now >= self._next_tick:
            self._tick(now)
            while self._next_tick <= now:
                self._next_tick += self.config.tick_interval
        self._publish()

    # --- outputs --------------------------------------------------------------------------

    def next_event(self) -> RoomEvent | None:
        return self._events.popleft() if self._events else None

    def events(self) -> Iterator[RoomEvent]:
        """Drain the pending events."""
        while self._events:
            yield self._events.popleft()

    @property
    def now(self) -> float | None:
        """The latest ``now`` the room was given (None before any)."""
        return self._now

    @property
    def participants(self) -> tuple[str, ...]:
        """Identities in join order."""
        return tuple(self._participants)

    def level(self, identity: str) -> int:
        return self._get(identity).scorer.level

    def stats(self, identity: str, verbosity: int = 3) -> NetworkQualityStats:
        """The participant's :class:`~rtcprobe.core.quality.NetworkQualityStats` at ``verbosity``
        (0..3; the send/recv stats are its attributed legs, as scored)."""
        return self._get(identity).scorer.stats(verbosity)

    def demand(self, identity: str) -> QualityDemand:
        return self._get(identity).demand

    def network_quality_config(self, identity: str) -> NetworkQualityConfig:
        return self._get(identity).verbosity

    def reconnecting(self, identity: str) -> bool:
        return self._get(identity).reconnecting

    def legs(self, identity: str) -> ParticipantLegs:
        """What the last tick's attribution charged to the participant's own network."""
        self._get(identity)
        return self._legs.get(identity, ParticipantLegs())

    # --- internals ------------------------------------------------------------------------

    def _advance(self, now: float) -> float:
        now = _check_now(now)
        if self._now is not None and now < self._now:
            raise ValueError(f"now went backwards: {now!r} < {self._now!r}")
        self._now = now
        return now

    def _get(self, identity: str) -> _Participant:
        part = self._participants.get(identity) if isinstance(identity, str) else None
        if part is None:
            raise RoomError(PARTICIPANT_NOT_FOUND, "not-found", f"{identity!r} is not in the room",
                            identity if isinstance(identity, str) else None)
        return part

    def _remove(self, identity: str, reason: Literal["left", "timeout"]) -> None:
        del self._participants[identity]
        self._legs.pop(identity, None)
        for other in self._participants.values():
            other.told.pop(identity, None)
        if not self._participants:
            self._next_tick = None
        self._events.append(ParticipantDisconnected(identity, reason))

    def _restore(self, part: _Participant) -> None:
        part.reconnect_deadline = None
        part.baseline = None  # the client may have rebuilt its peer connections: counters restart
        part.told.clear()
        self._events.append(ParticipantReconnected(part.identity))

    def _set_demand(self, part: _Participant, demand: QualityDemand, now: float) -> None:
        part.demand = demand
        part.scorer = NetworkQualityScorer(demand, self.scorer_config)
        if part.reconnecting:
            part.scorer.update(now, QualityInput(reconnecting=True))
        elif part.last_input is not None:
            part.scorer.update(now, part.last_input)

    def _tick(self, now: float) -> None:
        legs, sides = self._attribute(now)
        self._legs = legs
        for identity, part in self._participants.items():
            if part.reconnecting:
                quality = QualityInput(reconnecting=True)
            else:
                quality = sides.get(identity, QualityInput())
                part.last_input = quality
            part.scorer.update(now, quality)

    def _fresh(self, now: float) -> dict[str, deque[_Window]]:
        """The participants whose latest measurement is recent enough, with their windows."""
        return {
            identity: part.windows
            for identity, part in self._participants.items()
            if part.windows and not part.reconnecting and now - part.windows[-1].end <= self.config.max_sample_age
        }

    def _attribute(self, now: float) -> tuple[dict[str, ParticipantLegs], dict[str, QualityInput]]:
        """Fit every leg of the room from the fresh windows, then build each participant's sides.

        Losses are counted over each participant's windows of the last ``loss_window`` seconds
        (one second of a path is a few dozen packets: too few to tell 2 % from 8 %); rates, rtt
        and jitter are the latest window's (the scorer smooths rtt and jitter itself)."""
        fresh = self._fresh(now)
        windows = {identity: w[-1] for identity, w in fresh.items()}
        since = now - self.config.loss_window
        least = self.config.min_loss_packets
        received_losses = {identity: _summed(w, since, _received_keys) for identity, w in fresh.items()}
        sent_losses = {identity: _summed(w, since, _sent_keys) for identity, w in fresh.items()}
        rtt_legs = _Legs()
        loss_legs = {m: _Legs() for m in MEDIA}
        jitter_legs = {m: _Legs() for m in MEDIA}
        # Paths measured by the receiver's own counters win over the sender's receiver reports of
        # the same path (the same packets, seen from the other end): one observation per path.
        paths: dict[tuple[Media, str, str], tuple[int, int]] = {}
        jitter_paths: dict[tuple[Media, str, str], float] = {}
        for receiver, received_window in windows.items():
            for (source, through, media), counts in received_losses[receiver].items():
                if source is not None and through:
                    paths[(media, source, receiver)] = counts
                else:  # terminated at a server, or from nobody we know: the receiver's downlink alone
                    if (obs := _loss_observation(*counts, least)) is not None:
                        loss_legs[media].single(("down", receiver), *obs)
            for r in received_window.received:
                if r.jitter is None:
                    continue
                if r.source is not None and r.through:
                    jitter_paths[(r.media, r.source, receiver)] = r.jitter
                else:
                    j2 = r.jitter**2
                    jitter_legs[r.media].single(("down", receiver), j2, _relative_weight(j2, JITTER2_FLOOR))
        for sender, sent_window in windows.items():
            for ((kind, name), media), counts in sent_losses[sender].items():
                if kind == "s":  # the server's receiver reports cover the sender's uplink alone
                    if (obs := _loss_observation(*counts, least)) is not None:
                        loss_legs[media].single(("up", sender), *obs)
                else:
                    paths.setdefault((media, sender, name), counts)
            for s in sent_window.sent:
                if s.jitter is None:
                    continue
                kind, name = s.remote
                if kind == "s":
                    j2 = s.jitter**2
                    jitter_legs[s.media].single(("up", sender), j2, _relative_weight(j2, JITTER2_FLOOR))
                else:
                    jitter_paths.setdefault((s.media, sender, name), s.jitter)
            for node, path_rtt in sent_window.rtts:
                weight = _relative_weight(path_rtt, RTT_FLOOR)
                if node[0] == "s":  # a media server is part of the core: its delay is the sender's
                    rtt_legs.single(("p", sender), path_rtt, weight)
                else:
                    rtt_legs.pair(("p", sender), node, path_rtt, weight)
        for (media, sender, receiver), counts in paths.items():
            if (obs := _loss_observation(*counts, least)) is not None:
                loss_legs[media].pair(("up", sender), ("down", receiver), *obs)
        for (media, sender, receiver), path_jitter in jitter_paths.items():
            j2 = path_jitter**2
            jitter_legs[media].pair(("up", sender), ("down", receiver), j2, _relative_weight(j2, JITTER2_FLOOR))
        rtt_fit = rtt_legs.solve()
        loss_fit = {m: loss_legs[m].solve() for m in MEDIA}
        jitter_fit = {m: jitter_legs[m].solve() for m in MEDIA}

        def loss(media: Media, side: str, identity: str) -> float | None:
            v = loss_fit[media].get((side, identity))
            return None if v is None else _from_log(v)

        def jitter(media: Media, side: str, identity: str) -> float | None:
            v = jitter_fit[media].get((side, identity))
            return None if v is None else math.sqrt(v)

        received_rates = {m: _received_rates(windows, m) for m in MEDIA}
        best_rates = {m: _best_two(received_rates[m]) for m in MEDIA}
        legs: dict[str, ParticipantLegs] = {}
        sides: dict[str, QualityInput] = {}
        for identity, part in self._participants.items():
            rtt = rtt_fit.get(("p", identity))
            media_legs = {
                m: MediaLegs(loss(m, "up", identity), loss(m, "down", identity),
                             jitter(m, "up", identity), jitter(m, "down", identity))
                for m in MEDIA
            }
            legs[identity] = ParticipantLegs(rtt, media_legs["audio"], media_legs["video"])
            window = windows.get(identity)
            mine: dict[str, SideMetrics | None] = {}
            for m in MEDIA:
                ml = media_legs[m]
                send_bps, available = _send_rates(window, m)
                mine[f"{m}_send"] = _side(actual_bps=send_bps, available_bps=available, rtt=rtt,
                                          jitter=ml.uplink_jitter, fraction_lost=ml.uplink_loss)
                recv_bps = _recv_rate(identity, received_rates[m], best_rates[m],
                                      part.demand.demanded_bps(m, "recv", self.scorer_config))
                mine[f"{m}_recv"] = _side(actual_bps=recv_bps, rtt=rtt, jitter=ml.downlink_jitter,
                                          fraction_lost=ml.downlink_loss)
            sides[identity] = QualityInput(mine["audio_send"], mine["audio_recv"], mine["video_send"],
                                           mine["video_recv"])
        return legs, sides

    def _publish(self) -> None:
        """Queue, for each reachable receiver, what changed in its view (one message each)."""
        cache: dict[tuple[str, int], NetworkQualityStats] = {}
        for receiver in self._participants.values():
            if receiver.reconnecting:
                continue  # unreachable; gets a full snapshot when it is back
            updates: list[QualityUpdate] = []
            for identity, part in self._participants.items():
                local = identity == receiver.identity
                verbosity = receiver.verbosity.local if local else receiver.verbosity.remote
                if verbosity == 0:
                    continue
                stats = cache.get((identity, verbosity))
                if stats is None:
                    stats = cache[(identity, verbosity)] = part.scorer.stats(verbosity)
                told = receiver.told.get(identity)
                if told != stats:
                    receiver.told[identity] = stats
                    changed = told is None or told.level != stats.level
                    updates.append(QualityUpdate(identity, local, stats.level, changed, stats))
            if updates:
                self._events.append(NetworkQualityPush(receiver.identity, tuple(updates)))


def _received_keys(window: _Window) -> Iterator[tuple[tuple[str | None, bool, Media], tuple[int, int] | None]]:
    for r in window.received:
        yield (r.source, r.through, r.media), r.loss


def _sent_keys(window: _Window) -> Iterator[tuple[tuple[_Node, Media], tuple[int, int] | None]]:
    for s in window.sent:
        yield (s.remote, s.media), s.loss


def _summed(
    windows: Iterable[_Window], since: float, keys: Callable[[_Window], Iterator[tuple[_K, tuple[int, int] | None]]]
) -> dict[_K, tuple[int, int]]:
    """(lost, expected) per stream, summed over the windows that end after ``since``."""
    total: dict[_K, tuple[int, int]] = {}
    for window in windows:
        if window.end <= since:
            continue
        for key, loss in keys(window):
            if loss is not None:
                lost, expected = total.get(key, (0, 0))
                total[key] = (lost + loss[0], expected + loss[1])
    return total


def _send_rates(window: _Window | None, media: Media) -> tuple[float | None, float | None]:
    """The participant's uplink bandwidth for one media: the best per-stream rate it sent to any
    remote, and the best available-bitrate estimate (a thin downlink at one receiver makes the
    sender's congestion control slow that one stream down, which is not the sender's uplink)."""
    if window is None:
        return None, None
    rates = [s.bps for s in window.sent if s.media == media and s.bps is not None]
    available = [s.available for s in window.sent if s.media == media and s.available is not None]
    return (max(rates) if rates else None), (max(available) if available else None)


def _received_rates(windows: Mapping[str, _Window], media: Media) -> dict[str, dict[str | None, float]]:
    """Per receiver, the rate (bps) it received from each source in its latest window."""
    rates: dict[str, dict[str | None, float]] = {}
    for receiver, window in windows.items():
        mine: dict[str | None, float] = {}
        for r in window.received:
            if r.media == media and r.bps is not None:
                mine[r.source] = mine.get(r.source, 0.0) + r.bps
        if mine:
            rates[receiver] = mine
    return rates


def _best_two(rates: Mapping[str, Mapping[str | None, float]]) -> dict[str, tuple[tuple[str, float], float | None]]:
    """Per source: its best receiver and rate, and the second best rate (None: one receiver)."""
    best: dict[str, tuple[tuple[str, float], float | None]] = {}
    for receiver, mine in rates.items():
        for source, bps in mine.items():
            if source is None:
                continue
            if source not in best:
                best[source] = ((receiver, bps), None)
                continue
            (top, top_bps), second = best[source]
            if bps > top_bps:
                best[source] = ((receiver, bps), top_bps)
            elif second is None or bps > second:
                best[source] = ((top, top_bps), bps)
    return best


def _recv_rate(
    identity: str,
    rates: Mapping[str, Mapping[str | None, float]],
    best: Mapping[str, tuple[tuple[str, float], float | None]],
    demanded: float,
) -> float | None:
    """The participant's downlink bandwidth for one media: the worst per-source rate it received,
    each excused for what the source delivered to anyone else.  A source that reaches its best
    other receiver at only a fraction e < 1 of the demand has its rate here divided by e (at most
    up to the demand): the sender's shortfall is not this receiver's."""
    mine = rates.get(identity)
    if not mine:
        return None
    worst: float | None = None
    for source, bps in mine.items():
        elsewhere: float | None = None
        if source is not None and source in best:
            (top, top_bps), second = best[source]
            elsewhere = second if top == identity else top_bps
        if elsewhere is None or demanded <= 0 or elsewhere >= demanded:
            rate = bps
        elif elsewhere > 0:
            rate = max(bps, min(demanded, bps * demanded / elsewhere))
        else:  # the source delivers nothing anywhere else: no evidence about this downlink
            continue
        worst = rate if worst is None else min(worst, rate)
    return worst


__all__ = [
    "DUPLICATE_IDENTITY",
    "IDENTITY_INVALID",
    "IDENTITY_TOO_LONG",
    "MAX_SAMPLE_BYTES",
    "MESSAGE_INVALID",
    "PARTICIPANT_NOT_FOUND",
    "ROOM_FULL",
    "InboundStream",
    "LegObservation",
    "MediaLegs",
    "NetworkQualityConfig",
    "NetworkQualityPush",
    "ParticipantConnected",
    "ParticipantDisconnected",
    "ParticipantLegs",
    "ParticipantReconnected",
    "ParticipantReconnecting",
    "PeerLink",
    "QualityUpdate",
    "Room",
    "RoomConfig",
    "RoomError",
    "RoomEvent",
    "RoomSample",
    "decode_demand",
    "decode_sample",
    "decode_sample_json",
    "encode_demand",
    "encode_sample",
    "fit_legs",
    "split_losses",
    "split_rtts",
]
