"""The signaling protocol's messages (version 2), shared by the server and the client (docs/signaling.md).

They live here, in the driver, because the client needs them and a driver never imports the
server (:mod:`rtcprobe.server`, the top layer, imports them from here; docs/architecture.md#layers).
They are not pure enough for the core's place either: the core holds no wire formats. This module
imports neither aiortc nor aioice, so the server can use it without loading any media stack.

One JSON object per WebSocket text frame, each with a ``type``. :func:`parse_message` turns a frame
into one of the frozen message classes below or raises :class:`ProtocolError` (code 53000) naming
what was wrong; :func:`encode` is its inverse. Unknown extra keys are ignored so that either side
can add optional fields later without breaking the other.

Version 2 carries no SDP: the client runs both peer connections itself, as Twilio Video's
preflight does (twilio-video.js ``lib/preflight/preflighttest.ts``). The server checks the token,
hands out ICE servers, holds the socket while the test runs and takes the client's report.

Which messages a side may send, and in which order, is the server's business (see
:mod:`rtcprobe.server.session`); what a report must contain is checked by
:mod:`rtcprobe.server.reports`. This module only checks that each message is well formed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Final, NoReturn, TypeAlias

import attrs
from rtcprobe.core.observations import IceServer

PROTOCOL_VERSION: Final = 2
DEFAULT_REGION: Final = "gll"
MAX_MESSAGE_SIZE: Final = 64 * 1024  # bytes of one text frame
MAX_REPORT_MESSAGE_SIZE: Final = 256 * 1024  # bytes of the one frame carrying a ``report``
DEFAULT_IDLE_TIMEOUT: Final = 30.0  # s the server waits for the hello
DEFAULT_HOLD_TIMEOUT: Final = 600.0  # s the server holds a socket after ``iced`` without a message

# Error codes used on the wire (the Twilio Video codes, docs/references.md#twilio-video-preflight).
SIGNALING_ERROR: Final = 53000

# WebSocket close codes the server uses (RFC 6455 section 7.4.1).
CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_POLICY_VIOLATION: Final = 1008
CLOSE_MESSAGE_TOO_BIG: Final = 1009
CLOSE_INTERNAL_ERROR: Final = 1011
CLOSE_TRY_AGAIN_LATER: Final = 1013


class ProtocolError(Exception):
    """A message broke the protocol: the receiver answers with an ``error`` carrying ``code`` and
    closes the connection."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def unsupported_version(version: int) -> str:
    """The one error message a client speaking another protocol version gets."""
    return (f"signaling protocol version {version} is not supported: this server speaks version "
            f"{PROTOCOL_VERSION} (the client runs both peer connections itself; upgrade the client)")


# --- Messages ----------------------------------------------------------------------------------


@attrs.frozen
class Ice:
    """client → server: the hello. Carries the access token."""

    TYPE: ClassVar[str] = "ice"

    token: str
    version: int = PROTOCOL_VERSION
    preflight: bool = True
    region: str = DEFAULT_REGION

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "ice", "preflight": self.preflight, "token": self.token, "version": self.version,
            "region": self.region,
        }


@attrs.frozen
class Iced:
    """server → client: the token was accepted; the ICE servers to use (empty without TURN)."""

    TYPE: ClassVar[str] = "iced"

    ice_servers: tuple[IceServer, ...] = ()
    ttl: int = 3600
    version: int = PROTOCOL_VERSION

    def to_dict(self) -> dict[str, Any]:
        servers = []
        for s in self.ice_servers:
            entry: dict[str, Any] = {"urls": list(s.urls)}
            if s.username is not None:
                entry["username"] = s.username
            if s.credential is not None:
                entry["credential"] = s.credential
            servers.append(entry)
        return {"type": "iced", "ice_servers": servers, "ttl": self.ttl, "version": self.version}


@attrs.frozen(eq=True, hash=False)
class Report:
    """client → server, at most once after ``iced``: the test's canonical report
    (``PreflightReport.to_dict()``), completed or failed. Only its being an object is checked
    here; the server checks its shape."""

    TYPE: ClassVar[str] = "report"

    report: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"type": "report", "report": dict(self.report)}


@attrs.frozen
class Reported:
    """server → client: the report was accepted; ``stored`` when it was written to the server's
    reports file (false when none is configured: it was still counted in the metrics)."""

    TYPE: ClassVar[str] = "reported"

    stored: bool

    def to_dict(self) -> dict[str, Any]:
        return {"type": "reported", "stored": self.stored}


@attrs.frozen
class Bye:
    """client → server: the test is over; the server closes the socket (1000)."""

    TYPE: ClassVar[str] = "bye"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "bye"}


@attrs.frozen
class Error:
    """server → client: the last message sent before the server closes the connection."""

    TYPE: ClassVar[str] = "error"

    code: int
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": "error", "code": self.code, "message": self.message}


Message: TypeAlias = Ice | Iced | Report | Reported | Bye | Error
CLIENT_MESSAGES: Final = (Ice, Report, Bye)  # what a client may send
SERVER_MESSAGES: Final = (Iced, Reported, Error)  # what a server may send


def encode(message: Message) -> str:
    """The JSON text frame for ``message`` (NaN and infinities are refused: they are not JSON)."""
    return json.dumps(message.to_dict(), separators=(",", ":"), allow_nan=False)


# --- Parsing -----------------------------------------------------------------------------------


def _fail(message: str) -> ProtocolError:
    return ProtocolError(SIGNALING_ERROR, message)


def _field(obj: dict[str, Any], kind: str, key: str, types: type | tuple[type, ...], *, default: Any = None,
           required: bool = True) -> Any:
    """``obj[key]`` checked against ``types`` (bool is never accepted as an int)."""
    if key not in obj:
        if required:
            raise _fail(f"'{kind}' message is missing the '{key}' field")
        return default
    value = obj[key]
    want = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in want:
        ok = False
    else:
        ok = isinstance(value, want)
    if not ok:
        names = " or ".join(_JSON_NAMES.get(t, t.__name__) for t in want)
        raise _fail(f"'{kind}' field '{key}' must be {names}, got {json_type(value)}")
    return value


_JSON_NAMES: dict[type, str] = {
    str: "a string", int: "an integer", bool: "a boolean", list: "an array", dict: "an object",
}


def json_type(value: Any) -> str:
    """How JSON calls the type of a parsed value ("an object", "null", ...), for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _nonempty(value: str, kind: str, key: str) -> str:
    if not value:
        raise _fail(f"'{kind}' field '{key}' must not be empty")
    return value


def _parse_ice(obj: dict[str, Any]) -> Ice:
    version = _field(obj, "ice", "version", int)
    if version != PROTOCOL_VERSION:
        raise _fail(unsupported_version(version))
    return Ice(
        token=_field(obj, "ice", "token", str),
        version=version,
        preflight=_field(obj, "ice", "preflight", bool, default=True, required=False),
        region=_nonempty(_field(obj, "ice", "region", str, default=DEFAULT_REGION, required=False),
                         "ice", "region"),
    )


def _parse_ice_server(entry: Any) -> IceServer:
    if not isinstance(entry, dict):
        raise _fail(f"'iced' ice_servers entries must be objects, got {json_type(entry)}")
    urls = _field(entry, "iced", "urls", (str, list))
    if isinstance(urls, str):
        urls = [urls]  # RTCIceServer allows one URL as a plain string
    if not urls or not all(isinstance(u, str) and u for u in urls):
        raise _fail("'iced' ice_servers urls must be non-empty strings")
    return IceServer(
        urls=tuple(urls),
        username=_field(entry, "iced", "username", str, required=False),
        credential=_field(entry, "iced", "credential", str, required=False),
    )


def _parse_iced(obj: dict[str, Any]) -> Iced:
    version = _field(obj, "iced", "version", int, default=1, required=False)  # a v1 server sent none
    if version != PROTOCOL_VERSION:
        raise _fail(f"the server speaks signaling protocol version {version}; this client speaks "
                    f"version {PROTOCOL_VERSION}")
    servers = _field(obj, "iced", "ice_servers", list)
    ttl = _field(obj, "iced", "ttl", int, default=3600, required=False)
    return Iced(ice_servers=tuple(_parse_ice_server(s) for s in servers), ttl=ttl, version=version)


def _parse_report(obj: dict[str, Any]) -> Report:
    return Report(report=_field(obj, "report", "report", dict))


def _parse_reported(obj: dict[str, Any]) -> Reported:
    return Reported(stored=_field(obj, "reported", "stored", bool))


def _parse_error(obj: dict[str, Any]) -> Error:
    return Error(code=_field(obj, "error", "code", int), message=_field(obj, "error", "message", str))


_PARSERS: dict[str, Callable[[dict[str, Any]], Message]] = {
    "ice": _parse_ice,
    "iced": _parse_iced,
    "report": _parse_report,
    "reported": _parse_reported,
    "bye": lambda obj: Bye(),
    "error": _parse_error,
}


def _no_constants(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def loads(text: str) -> Any:
    """Strict JSON: NaN and the infinities (which Python's json accepts) are refused."""
    return json.loads(text, parse_constant=_no_constants)


def parse_message(text: str | bytes) -> Message:
    """Parse one text frame. Raises :class:`ProtocolError` (53000) saying what was wrong."""
    if isinstance(text, bytes | bytearray):
        raise _fail("binary frames are not part of the protocol: send JSON text frames")
    return parse_object(parse_json(text))


def parse_json(text: str) -> Any:
    """The JSON value of a text frame; :class:`ProtocolError` (53000) when it is not JSON."""
    try:
        return loads(text)
    except (ValueError, RecursionError) as exc:
        raise _fail(f"invalid JSON: {exc}") from None


def parse_object(obj: Any) -> Message:
    """The message a parsed JSON value holds; :class:`ProtocolError` (53000) saying what is wrong."""
    if not isinstance(obj, dict):
        raise _fail(f"a message must be a JSON object, got {json_type(obj)}")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise _fail("a message needs a string 'type' field")
    parser = _PARSERS.get(kind)
    if parser is None:
        if kind in ("offer", "answer"):
            raise _fail(f"unknown message type {kind!r}: signaling protocol version {PROTOCOL_VERSION} carries no "
                        "SDP (the client connects its two peer connections itself)")
        raise _fail(f"unknown message type {kind!r}")
    return parser(obj)
