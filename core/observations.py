"""What a driver tells the core (observations), what the core asks of the driver (actions), and
what the core tells the user (events). All frozen attrs classes: plain data, no behaviour.

Units are SI at this boundary (seconds, bytes, fractions 0..1); the report converts to the units
of Twilio Video's preflight report (ms, percent) in one place, :mod:`rtcprobe.core.report`.

The states a driver reports (ICE, DTLS, peer connection), the media kinds and the step names are
``Literal`` types: a typo in the core is a type error. A driver passes them straight from its stack
(aiortc's ``iceConnectionState`` and friends are plain ``str``), so every such field is also checked
at construction and an unknown value raises :class:`~rtcprobe.core.errors.ConfigError` (a
``ValueError``) at once: a driver passing a state no stack has is misuse, not network input. The
machine reacts to each of these values as its table says (docs/architecture.md#the-step-table).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Final, Literal, get_args

import attrs

from .config import Kind, MediaDemand
from .errors import ConfigError, PreflightErrorInfo
from .report import IceCandidateStats, PreflightReport, SelectedCandidatePair


class Role(enum.Enum):
    """Which of the two peer connections an observation is about."""

    # Members are singletons: hash by identity in C, not Enum's Python-level hash of the name (the
    # machine's rule table is looked up by observations that carry a role).
    __hash__ = object.__hash__

    PUBLISHER = "publisher"  # Twilio's sender: sends the synthetic media (relay-only when TURN is handed out)
    SUBSCRIBER = "subscriber"  # Twilio's receiver: receives it back (unrestricted)


# The W3C values (RTCIceConnectionState, RTCDtlsTransportState, RTCPeerConnectionState); aiortc
# uses a subset of each.
IceState = Literal["new", "checking", "connected", "completed", "failed", "disconnected", "closed"]
DtlsState = Literal["new", "connecting", "connected", "closed", "failed"]
ConnectionState = Literal["new", "connecting", "connected", "disconnected", "failed", "closed"]
#: Progress steps a driver may be unable to observe (see :class:`StepUnobservable`).
UnobservableStep = Literal["dtlsConnected", "peerConnectionConnected"]
#: The progress events, in the order a healthy run emits them (Twilio Video's names).
ProgressName = Literal[
    "mediaAcquired",
    "connected",
    "iceConnected",
    "dtlsConnected",
    "peerConnectionConnected",
    "mediaSubscribed",
    "mediaStarted",
]

ICE_STATES: Final[tuple[IceState, ...]] = get_args(IceState)
DTLS_STATES: Final[tuple[DtlsState, ...]] = get_args(DtlsState)
CONNECTION_STATES: Final[tuple[ConnectionState, ...]] = get_args(ConnectionState)
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)
UNOBSERVABLE_STEPS: Final[tuple[UnobservableStep, ...]] = get_args(UnobservableStep)
PROGRESS_NAMES: Final[tuple[ProgressName, ...]] = get_args(ProgressName)


def _one_of(values: tuple[str, ...]) -> Any:
    """An attrs validator: ``value`` is one of ``values``, else :class:`ConfigError`."""
    allowed = frozenset(values)

    def check(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, str) or value not in allowed:
            raise ConfigError(f"{attribute.name} must be one of {', '.join(values)}; got {value!r}")

    return check


def _role(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, Role):
        raise ConfigError(f"{attribute.name} must be a Role, got {value!r}")


# --- Observations (driver -> core) -------------------------------------------------------------


@attrs.frozen
class IceServer:
    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


@attrs.frozen
class MediaAcquired:
    """The synthetic tracks exist."""

    kinds: tuple[str, ...] = ("audio", "video")  # what the driver made (informative)


@attrs.frozen
class SignalingConnected:
    """The signaling server accepted the token and handed out ICE servers."""

    ice_servers: tuple[IceServer, ...] = ()


@attrs.frozen
class IceStateChanged:
    role: Role = attrs.field(validator=_role)
    state: IceState = attrs.field(validator=_one_of(ICE_STATES))


@attrs.frozen
class DtlsStateChanged:
    role: Role = attrs.field(validator=_role)
    state: DtlsState = attrs.field(validator=_one_of(DTLS_STATES))


@attrs.frozen
class ConnectionStateChanged:
    role: Role = attrs.field(validator=_role)
    state: ConnectionState = attrs.field(validator=_one_of(CONNECTION_STATES))


@attrs.frozen
class TrackSubscribed:
    """The subscriber received a track of this kind."""

    kind: Kind = attrs.field(validator=_one_of(KINDS))


@attrs.frozen
class MediaStarted:
    """The first decodable media of this kind arrived at the subscriber."""

    kind: Kind = attrs.field(validator=_one_of(KINDS))


@attrs.frozen
class StepUnobservable:
    """The driver cannot observe this progress step (e.g. a stack with no DTLS state events).

    The core then skips waiting for it and never emits its progress event: it never invents one.
    """

    name: UnobservableStep = attrs.field(validator=_one_of(UNOBSERVABLE_STEPS))


@attrs.frozen
class OutboundStats:
    """The publisher's view of one sent stream: cumulative counters plus the remote receiver's
    report (RTCP RR) about it."""

    packets_sent: int = 0
    bytes_sent: int = 0
    remote_rtt: float | None = None  # s (remote-inbound-rtp roundTripTime)
    remote_jitter: float | None = None  # s
    remote_fraction_lost: float | None = None  # 0..1, already ÷256
    remote_packets_lost: int | None = None  # informative: the report's loss is the receiver's
    available_bps: float | None = None  # bandwidth estimate (e.g. REMB), if any


@attrs.frozen
class InboundStats:
    """The subscriber's view of one received stream: cumulative counters."""

    packets_received: int = 0
    packets_lost: int = 0
    bytes_received: int = 0
    jitter: float | None = None  # s (already divided by the codec clock rate)


@attrs.frozen
class StatsSample:
    """One ``getStats()`` round over both peer connections, mapped to SI units."""

    audio_out: OutboundStats | None = None
    video_out: OutboundStats | None = None
    audio_in: InboundStats | None = None
    video_in: InboundStats | None = None
    candidate_pair_rtt: float | None = None  # s, the selected pair's current RTT, when observable
    ice_candidates: tuple[IceCandidateStats, ...] = ()
    selected_pair: SelectedCandidatePair | None = None
    # Are both ends of the measured path this client's own peer connections (Twilio's preflight
    # topology: sender -> TURN -> receiver, in one client)? Then every round trip in the stats
    # crosses the client's access link twice (receiver -> TURN -> sender and back). The report
    # keeps it, as Twilio reported it; the scorer is fed half, the client<->TURN round trip that a
    # call through that TURN server would see.
    loopback: bool = False


@attrs.frozen
class StatsObserved:
    sample: StatsSample


@attrs.frozen
class TransportError:
    """Something on the network or the server side went wrong; carries the code to fail with."""

    error: PreflightErrorInfo


@attrs.frozen
class StopRequested:
    """The user asked to stop now."""


# The one list of observation types: the machine's rule table (rtcprobe.core._state.RULES) must
# say what each does, and checks so when it is imported.
Observation = (
    MediaAcquired
    | SignalingConnected
    | IceStateChanged
    | DtlsStateChanged
    | ConnectionStateChanged
    | TrackSubscribed
    | MediaStarted
    | StepUnobservable
    | StatsObserved
    | TransportError
    | StopRequested
)
OBSERVATION_TYPES: Final[tuple[type[Observation], ...]] = get_args(Observation)

# --- Actions (core -> driver) ------------------------------------------------------------------


@attrs.frozen
class AcquireMedia:
    media: MediaDemand


@attrs.frozen
class ConnectSignaling:
    region: str


@attrs.frozen
class OpenPeerConnections:
    ice_servers: tuple[IceServer, ...]
    relay_only: bool


@attrs.frozen
class SampleStats:
    """Take one stats sample now and answer with :class:`StatsObserved`."""

    index: int  # 1-based
    total: int


@attrs.frozen
class TearDown:
    """Close everything: the test has ended."""


Action = AcquireMedia | ConnectSignaling | OpenPeerConnections | SampleStats | TearDown

# --- Events (core -> user) ---------------------------------------------------------------------


@attrs.frozen
class Progress:
    """A progress step landed (``duration``: ms since start)."""

    name: ProgressName
    duration: float


@attrs.frozen
class SampleRecorded:
    """A stats sample was taken (drives progress bars)."""

    index: int
    total: int
    level: int | None


@attrs.frozen
class NetworkQualityLevelChanged:
    level: int
    stats: Mapping[str, Any]  # NetworkQualityStats.to_dict() at the requested verbosity


@attrs.frozen
class Completed:
    report: PreflightReport


@attrs.frozen
class Failed:
    error: PreflightErrorInfo
    report: PreflightReport


Event = Progress | SampleRecorded | NetworkQualityLevelChanged | Completed | Failed
