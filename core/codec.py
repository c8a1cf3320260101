"""The wire format of core mode (docs/signaling.md#core-mode-browsers): observations as JSON, and
the machine's actions and events as JSON.

A browser cannot import the core, so the core runs in the server and the browser speaks to it
over the signaling WebSocket: it sends what it observes (``observe`` messages, decoded here into
the core's observation types) and receives what the machine asks and tells (``action`` and
``event`` messages, encoded here from the core's types).

Decoding is strict, because the input comes from the network and is never trusted: every
observation object carries the codec version (``"v": 1``) and a ``kind`` this module knows; every
field has its JSON type, numbers are finite, counters are non-negative integers within
JavaScript's safe range, enumerations take only the core's values, a ``transportError`` only a
code of the core's error table. Anything else is one :class:`CodecError` (code 53000) naming the
field, never another exception. Unknown extra keys are ignored (the protocol's rule), so a newer
client may add optional fields. :func:`decode_observe` takes the raw frame and refuses one larger
than :data:`MAX_MESSAGE_BYTES` before parsing it.

Round trip: ``decode_observation(encode_observation(o)) == o`` for every observation the decoder
accepts; :func:`encode_observation` checks it and raises :class:`CodecError` for an observation
the decoder would refuse (a negative counter, a code outside the table), so a client using this
module never sends what the server will refuse.

Every observation type of the core's one list (:data:`rtcprobe.core.observations.Observation`)
has an entry here: importing this module fails otherwise, as importing the rule table does.

Events carry the core's objects as the core serializes them: ``completed`` and ``failed`` carry
``report.to_dict()``, so the report a browser receives is the core's, byte for byte once written
as canonical JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, NoReturn

import attrs

from .config import MediaDemand, PreflightConfig, VideoSpec
from .errors import ERRORS, SIGNALING_CONNECTION, ConfigError, PreflightErrorInfo
from .observations import (
    CONNECTION_STATES,
    DTLS_STATES,
    ICE_STATES,
    KINDS,
    OBSERVATION_TYPES,
    UNOBSERVABLE_STEPS,
    AcquireMedia,
    Action,
    Completed,
    ConnectionStateChanged,
    ConnectSignaling,
    DtlsStateChanged,
    Event,
    Failed,
    IceServer,
    IceStateChanged,
    InboundStats,
    MediaAcquired,
    MediaStarted,
    NetworkQualityLevelChanged,
    Observation,
    OpenPeerConnections,
    OutboundStats,
    Progress,
    Role,
    SampleRecorded,
    SampleStats,
    SignalingConnected,
    StatsObserved,
    StatsSample,
    StepUnobservable,
    StopRequested,
    TearDown,
    TrackSubscribed,
    TransportError,
)
from .report import IceCandidateStats, SelectedCandidatePair

#: The version of the observation format, carried as ``"v"`` in every observation object.
CODEC_VERSION: Final = 1
#: The largest ``observe`` frame, in bytes of UTF-8 (the signaling protocol's frame limit).
MAX_MESSAGE_BYTES: Final = 64 * 1024
#: Counters beyond JavaScript's ``Number.MAX_SAFE_INTEGER`` cannot have come from a browser exactly.
MAX_COUNTER: Final = 2**53 - 1
#: ICE candidate fields (RTCIceCandidateStats) take the values browsers and aioice report.
CANDIDATE_TYPES: Final = ("host", "srflx", "prflx", "relay")
CANDIDATE_PROTOCOLS: Final = ("udp", "tcp")
RELAY_PROTOCOLS: Final = ("udp", "tcp", "tls")
#: The longest test a client may ask the server's core to run (the hello's ``core.duration``).
MAX_DURATION_MS: Final = 600_000.0


class CodecError(ConfigError):
    """A message is not in the wire format; carries the signaling error code (53000) it closes
    the connection with."""

    code: Final = SIGNALING_CONNECTION.code

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def error(self) -> PreflightErrorInfo:
        return SIGNALING_CONNECTION.with_message(self.message)


@attrs.frozen
class Observe:
    """One ``observe`` message: an observation and the client's ``now`` (ms of its own clock)."""

    now: float
    observation: Observation


# --- field readers: each names the path of the field it refuses -------------------------------

_MISSING: Final = object()


def finite(value: int | float) -> bool:
    """Whether a JSON number is finite as a float (an integer of 400 digits is valid JSON, and
    ``math.isfinite`` raises OverflowError for it)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _fail(path: str, want: str, value: Any) -> NoReturn:
    raise CodecError(f"{path} must be {want}, got {_json_type(value)}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}" if finite(value) and abs(value) < 1e15 else "a number out of range"
    if isinstance(value, str):  # quoted, cut short: it is the client's text
        return repr(value) if len(value) <= 40 else repr(value[:40]) + "..."
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _obj(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        _fail(path, "an object", value)
    return value


def _get(d: Mapping[str, Any], key: str, path: str, default: Any = _MISSING) -> Any:
    value = d.get(key, _MISSING)
    if value is _MISSING:
        if default is _MISSING:
            raise CodecError(f"{path} is missing the '{key}' field")
        return default
    return value


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        _fail(path, "a string", value)
    return value


def _opt_str(value: Any, path: str) -> str | None:
    return None if value is None else _str(value, path)


def _one_of(value: Any, allowed: Sequence[str], path: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        _fail(path, "one of " + ", ".join(allowed), value)
    return value


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        _fail(path, "true or false", value)
    return value


def _count(value: Any, path: str, *, low: int = 0, high: int = MAX_COUNTER) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        _fail(path, f"an integer in {low}..{high}", value)
    return value


def _opt_count(value: Any, path: str) -> int | None:
    return None if value is None else _count(value, path)


def _number(value: Any, path: str, *, low: float = 0.0, high: float = math.inf) -> float:
    """A finite number in ``low..high`` (JSON has no NaN; ``1e999`` parses to infinity: refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not finite(value):
        _fail(path, "a finite number", value)
    if not low <= value <= high:
        _fail(path, f"a number in {low:g}..{high:g}", value)
    return float(value)


def _opt_number(value: Any, path: str, *, high: float = math.inf) -> float | None:
    return None if value is None else _number(value, path, high=high)


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        _fail(path, "an array", value)
    return value


# --- observations: one encoder and one decoder per kind ---------------------------------------


def _encode_ice_server(s: IceServer) -> dict[str, Any]:
    """An RTCIceServer dict (``username``/``credential`` only when set: a browser rejects null)."""
    entry: dict[str, Any] = {"urls": list(s.urls)}
    if s.username is not None:
        entry["username"] = s.username
    if s.credential is not None:
        entry["credential"] = s.credential
    return entry


def _decode_ice_server(value: Any, path: str) -> IceServer:
    d = _obj(value, path)
    urls = _list(_get(d, "urls", path), f"{path}.urls")
    if not urls:
        raise CodecError(f"{path}.urls must not be empty")
    return IceServer(
        urls=tuple(_str(u, f"{path}.urls[{i}]") for i, u in enumerate(urls)),
        username=_opt_str(d.get("username"), f"{path}.username"),
        credential=_opt_str(d.get("credential"), f"{path}.credential"),
    )


def _encode_candidate(c: IceCandidateStats) -> dict[str, Any]:
    return c.to_dict()  # the report's iceCandidateStats shape


def _decode_candidate(value: Any, path: str) -> IceCandidateStats:
    d = _obj(value, path)
    relay_protocol = d.get("relayProtocol")
    return IceCandidateStats(
        transport_id=_str(_get(d, "transportId", path), f"{path}.transportId"),
        candidate_type=_one_of(_get(d, "candidateType", path), CANDIDATE_TYPES, f"{path}.candidateType"),
        port=_count(_get(d, "port", path), f"{path}.port", high=65535),
        address=_str(_get(d, "address", path), f"{path}.address"),
        priority=_count(_get(d, "priority", path), f"{path}.priority", high=2**32 - 1),
        protocol=_one_of(_get(d, "protocol", path), CANDIDATE_PROTOCOLS, f"{path}.protocol"),
        url=_opt_str(d.get("url"), f"{path}.url"),
        relay_protocol=None if relay_protocol is None
        else _one_of(relay_protocol, RELAY_PROTOCOLS, f"{path}.relayProtocol"),
    )


def _encode_outbound(s: OutboundStats | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {
        "packetsSent": s.packets_sent,
        "bytesSent": s.bytes_sent,
        "remoteRtt": s.remote_rtt,
        "remoteJitter": s.remote_jitter,
        "remoteFractionLost": s.remote_fraction_lost,
        "remotePacketsLost": s.remote_packets_lost,
        "remotePacketsReceived": s.remote_packets_received,
        "availableBps": s.available_bps,
    }


def _decode_outbound(value: Any, path: str) -> OutboundStats | None:
    if value is None:
        return None
    d = _obj(value, path)
    return OutboundStats(
        packets_sent=_count(_get(d, "packetsSent", path), f"{path}.packetsSent"),
        bytes_sent=_count(_get(d, "bytesSent", path), f"{path}.bytesSent"),
        remote_rtt=_opt_number(d.get("remoteRtt"), f"{path}.remoteRtt"),
        remote_jitter=_opt_number(d.get("remoteJitter"), f"{path}.remoteJitter"),
        remote_fraction_lost=_opt_number(d.get("remoteFractionLost"), f"{path}.remoteFractionLost", high=1.0),
        remote_packets_lost=_opt_count(d.get("remotePacketsLost"), f"{path}.remotePacketsLost"),
        remote_packets_received=_opt_count(d.get("remotePacketsReceived"), f"{path}.remotePacketsReceived"),
        available_bps=_opt_number(d.get("availableBps"), f"{path}.availableBps"),
    )


def _encode_inbound(s: InboundStats | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {"packetsReceived": s.packets_received, "packetsLost": s.packets_lost,
            "bytesReceived": s.bytes_received, "jitter": s.jitter}


def _decode_inbound(value: Any, path: str) -> InboundStats | None:
    if value is None:
        return None
    d = _obj(value, path)
    return InboundStats(
        packets_received=_count(_get(d, "packetsReceived", path), f"{path}.packetsReceived"),
        packets_lost=_count(_get(d, "packetsLost", path), f"{path}.packetsLost"),
        bytes_received=_count(_get(d, "bytesReceived", path), f"{path}.bytesReceived"),
        jitter=_opt_number(d.get("jitter"), f"{path}.jitter"),
    )


def _encode_sample(s: StatsSample) -> dict[str, Any]:
    return {
        "audioOut": _encode_outbound(s.audio_out),
        "videoOut": _encode_outbound(s.video_out),
        "audioIn": _encode_inbound(s.audio_in),
        "videoIn": _encode_inbound(s.video_in),
        "candidatePairRtt": s.candidate_pair_rtt,
        "iceCandidates": [_encode_candidate(c) for c in s.ice_candidates],
        "selectedPair": None if s.selected_pair is None else s.selected_pair.to_dict(),
        "inboundIncludesUplink": s.inbound_includes_uplink,
        "loopback": s.loopback,
    }


def _decode_sample(value: Any, path: str) -> StatsSample:
    d = _obj(value, path)
    pair = d.get("selectedPair")
    if pair is not None:
        p = _obj(pair, f"{path}.selectedPair")
        selected: SelectedCandidatePair | None = SelectedCandidatePair(
            _decode_candidate(_get(p, "localCandidate", f"{path}.selectedPair"), f"{path}.selectedPair.localCandidate"),
            _decode_candidate(_get(p, "remoteCandidate", f"{path}.selectedPair"),
                              f"{path}.selectedPair.remoteCandidate"),
        )
    else:
        selected = None
    candidates = _list(d.get("iceCandidates", []), f"{path}.iceCandidates")
    return StatsSample(
        audio_out=_decode_outbound(d.get("audioOut"), f"{path}.audioOut"),
        video_out=_decode_outbound(d.get("videoOut"), f"{path}.videoOut"),
        audio_in=_decode_inbound(d.get("audioIn"), f"{path}.audioIn"),
        video_in=_decode_inbound(d.get("videoIn"), f"{path}.videoIn"),
        candidate_pair_rtt=_opt_number(d.get("candidatePairRtt"), f"{path}.candidatePairRtt"),
        ice_candidates=tuple(_decode_candidate(c, f"{path}.iceCandidates[{i}]") for i, c in enumerate(candidates)),
        selected_pair=selected,
        inbound_includes_uplink=_bool(d.get("inboundIncludesUplink", True), f"{path}.inboundIncludesUplink"),
        # Required: it halves the round trip the scorer sees, so a client must say which path it measured.
        loopback=_bool(_get(d, "loopback", path), f"{path}.loopback"),
    )


def _decode_kinds(value: Any, path: str) -> tuple[str, ...]:
    kinds = tuple(_one_of(k, KINDS, f"{path}[{i}]") for i, k in enumerate(_list(value, path)))
    if len(set(kinds)) != len(kinds):
        raise CodecError(f"{path} lists a kind twice")
    return kinds


def _decode_transport_error(d: Mapping[str, Any], path: str) -> TransportError:
    code = _get(d, "code", path)
    if isinstance(code, bool) or not isinstance(code, int) or code not in ERRORS:
        _fail(f"{path}.code", "a code of the error table (" + ", ".join(map(str, ERRORS)) + ")", code)
    known = ERRORS[code]
    return TransportError(known.with_message(_str(d.get("message", known.message), f"{path}.message")))


def _encode_transport_error(o: TransportError) -> dict[str, Any]:
    return {"code": o.error.code, "message": o.error.message}


def _role(d: Mapping[str, Any], path: str) -> Role:
    return Role(_one_of(_get(d, "role", path), [r.value for r in Role], f"{path}.role"))


def _state(d: Mapping[str, Any], path: str, states: Sequence[str]) -> Any:
    return _one_of(_get(d, "state", path), states, f"{path}.state")


def _media(d: Mapping[str, Any], path: str) -> Any:
    return _one_of(_get(d, "media", path), KINDS, f"{path}.media")


def _step(d: Mapping[str, Any], path: str) -> Any:
    return _one_of(_get(d, "name", path), UNOBSERVABLE_STEPS, f"{path}.name")


_Encoder = Callable[[Any], dict[str, Any]]
_Decoder = Callable[[Mapping[str, Any], str], Observation]


@attrs.frozen
class _Entry:
    kind: str
    encode: _Encoder
    decode: _Decoder


_ENTRIES: Final[Mapping[type[Observation], _Entry]] = {
    MediaAcquired: _Entry(
        "mediaAcquired",
        lambda o: {"kinds": list(o.kinds)},
        lambda d, p: MediaAcquired(_decode_kinds(_get(d, "kinds", p), f"{p}.kinds")),
    ),
    # A browser sends no ICE servers (the server fills in those it handed out); a Python
    # client's observation carries them, so they round-trip when present.
    SignalingConnected: _Entry(
        "signalingConnected",
        lambda o: {"iceServers": [_encode_ice_server(s) for s in o.ice_servers]},
        lambda d, p: SignalingConnected(tuple(
            _decode_ice_server(s, f"{p}.iceServers[{i}]")
            for i, s in enumerate(_list(d.get("iceServers", []), f"{p}.iceServers"))
        )),
    ),
    IceStateChanged: _Entry(
        "iceStateChanged",
        lambda o: {"role": o.role.value, "state": o.state},
        lambda d, p: IceStateChanged(_role(d, p), _state(d, p, ICE_STATES)),
    ),
    DtlsStateChanged: _Entry(
        "dtlsStateChanged",
        lambda o: {"role": o.role.value, "state": o.state},
        lambda d, p: DtlsStateChanged(_role(d, p), _state(d, p, DTLS_STATES)),
    ),
    ConnectionStateChanged: _Entry(
        "connectionStateChanged",
        lambda o: {"role": o.role.value, "state": o.state},
        lambda d, p: ConnectionStateChanged(_role(d, p), _state(d, p, CONNECTION_STATES)),
    ),
    TrackSubscribed: _Entry(
        "trackSubscribed", lambda o: {"media": o.kind}, lambda d, p: TrackSubscribed(_media(d, p)),
    ),
    MediaStarted: _Entry(
        "mediaStarted", lambda o: {"media": o.kind}, lambda d, p: MediaStarted(_media(d, p)),
    ),
    StepUnobservable: _Entry(
        "stepUnobservable",
        lambda o: {"name": o.name},
        lambda d, p: StepUnobservable(_step(d, p)),
    ),
    StatsObserved: _Entry(
        "stats",
        lambda o: {"sample": _encode_sample(o.sample)},
        lambda d, p: StatsObserved(_decode_sample(_get(d, "sample", p), f"{p}.sample")),
    ),
    TransportError: _Entry("transportError", _encode_transport_error, _decode_transport_error),
    StopRequested: _Entry("stopRequested", lambda o: {}, lambda d, p: StopRequested()),
}
_BY_KIND: Final[Mapping[str, _Entry]] = {e.kind: e for e in _ENTRIES.values()}

#: The wire ``kind`` of each observation type.
KIND_OF: Final[Mapping[type[Observation], str]] = {t: e.kind for t, e in _ENTRIES.items()}

if set(_ENTRIES) != set(OBSERVATION_TYPES):  # the one list of observation types: each has a codec
    _missing = sorted(t.__name__ for t in set(OBSERVATION_TYPES) - set(_ENTRIES))
    raise AssertionError(f"core/codec.py has no entry for {', '.join(_missing) or 'a removed type'}")


def encode_observation(observation: Observation) -> dict[str, Any]:
    """The JSON object for ``observation``. Raises :class:`CodecError` for an observation the
    decoder would refuse (it checks the round trip)."""
    entry = _ENTRIES.get(type(observation))
    if entry is None:
        raise CodecError(f"not an observation: {type(observation).__name__}")
    obj = {"v": CODEC_VERSION, "kind": entry.kind, **entry.encode(observation)}
    if decode_observation(obj) != observation:
        raise CodecError(f"{entry.kind} does not survive its own round trip: {observation!r}")
    return obj


def decode_observation(value: Any, path: str = "observation") -> Observation:
    """The observation a parsed JSON value holds; :class:`CodecError` for anything else."""
    d = _obj(value, path)
    version = _get(d, "v", path)
    if isinstance(version, bool) or version != CODEC_VERSION:
        _fail(f"{path}.v", f"{CODEC_VERSION} (the observation codec's version)", version)
    kind = _get(d, "kind", path)
    entry = _BY_KIND.get(kind) if isinstance(kind, str) else None
    if entry is None:
        _fail(f"{path}.kind", "a known observation kind (" + ", ".join(_BY_KIND) + ")", kind)
    try:
        return entry.decode(d, f"{path}({kind})")
    except CodecError:
        raise
    except (ConfigError, ValueError, TypeError) as exc:  # an observation's own validator
        raise CodecError(f"{path}({kind}): {exc}") from None


# --- the observe message ------------------------------------------------------------------------


def _no_constant(name: str) -> NoReturn:
    raise CodecError(f"{name} is not JSON")


def loads(text: str | bytes, *, limit: int = MAX_MESSAGE_BYTES) -> Any:
    """Parse one frame of at most ``limit`` bytes of UTF-8 as strict JSON (no NaN, no infinities):
    the size is checked before anything is parsed."""
    if isinstance(text, bytes | bytearray):
        if len(text) > limit:
            raise CodecError(f"message too big: the limit is {limit} bytes")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise CodecError("the message is not UTF-8") from None
    elif not isinstance(text, str):
        raise CodecError(f"a message is text, got {type(text).__name__}")
    # A character is at least one byte: only a frame of more than limit/4 characters needs encoding.
    if len(text) > limit or (
        len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit
    ):
        raise CodecError(f"message too big: the limit is {limit} bytes")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except CodecError:
        raise
    except (ValueError, RecursionError) as exc:  # bad JSON, nesting too deep, an absurdly long integer
        raise CodecError(f"invalid JSON: {exc}") from None


def decode_observe_object(value: Any) -> Observe:
    """The ``observe`` message a parsed JSON value holds: ``{"type": "observe", "now": ms,
    "observation": {...}}``."""
    d = _obj(value, "message")
    if d.get("type") != "observe":
        _fail("message.type", "'observe'", d.get("type"))
    now = _number(_get(d, "now", "message"), "message.now")
    return Observe(now, decode_observation(_get(d, "observation", "message")))


def decode_observe(text: str | bytes) -> Observe:
    """Decode one raw ``observe`` frame; refuses a frame over :data:`MAX_MESSAGE_BYTES` unparsed."""
    return decode_observe_object(loads(text))


def encode_observe(observation: Observation, now: float) -> str:
    """The ``observe`` frame for ``observation`` seen at ``now`` (ms of the client's clock)."""
    _number(now, "now")
    return _dumps({"type": "observe", "now": now, "observation": encode_observation(observation)})


def _dumps(obj: Any) -> str:
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:
        raise CodecError(str(exc)) from None


# --- the hello's core options -------------------------------------------------------------------


def encode_media(media: MediaDemand) -> dict[str, Any]:
    video = media.video
    return {
        "audio": media.audio,
        "video": None if video is None else {"width": video.width, "height": video.height, "fps": video.fps},
    }


def decode_media(value: Any, path: str = "media") -> MediaDemand:
    """``{"audio": bool, "video": {width, height, fps} | true | false | null}`` (absent: audio, and
    640x480@30 video; a video object's absent keys take those defaults too)."""
    d = _obj(value, path)
    video = d.get("video", True)  # absent: the default video, as PreflightConfig.from_dict has it
    if video is None or video is False:
        spec = None
    elif video is True:
        spec = VideoSpec()
    else:
        v = _obj(video, f"{path}.video")
        spec = VideoSpec(
            width=_count(v.get("width", 640), f"{path}.video.width", low=1, high=7680),
            height=_count(v.get("height", 480), f"{path}.video.height", low=1, high=4320),
            fps=_number(v.get("fps", 30), f"{path}.video.fps", low=1, high=120),
        )
    return MediaDemand(audio=_bool(d.get("audio", True), f"{path}.audio"), video=spec)


def decode_config(value: Any, *, region: str, path: str = "core") -> PreflightConfig:
    """The preflight options of a core-mode hello: ``{"duration": ms, "media": {...}, "verbosity":
    1..3}`` (each optional: 10 000 ms, audio and 640x480@30 video, 1)."""
    d = _obj(value, path)
    duration = _number(d.get("duration", 10_000), f"{path}.duration", high=MAX_DURATION_MS)
    if duration <= 0:
        _fail(f"{path}.duration", "a positive number of milliseconds", duration)
    verbosity = _count(d.get("verbosity", 1), f"{path}.verbosity", low=1, high=3)
    media = decode_media(d["media"], f"{path}.media") if d.get("media") is not None else MediaDemand()
    try:
        return PreflightConfig(duration=duration / 1000, region=region, media=media,
                               network_quality_verbosity=verbosity)
    except ConfigError as exc:
        raise CodecError(f"{path}: {exc}") from None


# --- actions and events (server -> client) --------------------------------------------------------


def encode_action(action: Action) -> dict[str, Any]:
    """The ``action`` object of an action message (``{"kind": ..., ...}``)."""
    match action:
        case AcquireMedia(media=media):
            return {"kind": "acquireMedia", "media": encode_media(media)}
        case ConnectSignaling(region=region):
            return {"kind": "connectSignaling", "region": region}
        case OpenPeerConnections(ice_servers=servers, relay_only=relay_only):
            return {"kind": "openPeerConnections", "iceServers": [_encode_ice_server(s) for s in servers],
                    "relayOnly": relay_only}
        case SampleStats(index=index, total=total):
            return {"kind": "sampleStats", "index": index, "total": total}
        case TearDown():
            return {"kind": "tearDown"}
    raise CodecError(f"not an action: {type(action).__name__}")


def _finite_tree(x: Any) -> Any:
    """JSON-safe copy: non-finite floats (which JSON cannot carry) become null."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): _finite_tree(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite_tree(v) for v in x]
    return x


def encode_event(event: Event) -> dict[str, Any]:
    """The ``event`` object of an event message (``{"kind": ..., ...}``); ``completed`` and
    ``failed`` carry the report exactly as :meth:`PreflightReport.to_dict` gives it."""
    match event:
        case Progress(name=name, duration=duration):
            return {"kind": "progress", "name": name, "duration": _finite_tree(float(duration))}
        case NetworkQualityLevelChanged(level=level, stats=stats):
            return {"kind": "networkQualityLevelChanged", "level": level, "stats": _finite_tree(stats)}
        case SampleRecorded(index=index, total=total, level=level):
            return {"kind": "sampleRecorded", "index": index, "total": total, "level": level}
        case Completed(report=report):
            return {"kind": "completed", "report": report.to_dict()}
        case Failed(error=error, report=report):
            return {"kind": "failed", "error": error.to_dict(), "report": report.to_dict()}
    raise CodecError(f"not an event: {type(event).__name__}")


def action_message(action: Action) -> dict[str, Any]:
    """``{"type": "action", "action": {...}}``."""
    return {"type": "action", "action": encode_action(action)}


def event_message(event: Event) -> dict[str, Any]:
    """``{"type": "event", "event": {...}}``."""
    return {"type": "event", "event": encode_event(event)}


__all__ = [
    "CANDIDATE_PROTOCOLS",
    "CANDIDATE_TYPES",
    "CODEC_VERSION",
    "KIND_OF",
    "MAX_COUNTER",
    "MAX_DURATION_MS",
    "MAX_MESSAGE_BYTES",
    "RELAY_PROTOCOLS",
    "CodecError",
    "Observe",
    "action_message",
    "decode_config",
    "decode_media",
    "decode_observation",
    "decode_observe",
    "decode_observe_object",
    "encode_action",
    "encode_event",
    "encode_media",
    "encode_observation",
    "encode_observe",
    "event_message",
    "finite",
    "loads",
]
