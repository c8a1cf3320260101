"""rtcprobe's sans-I/O core: the preflight state machine, the quality scorer, report and errors.

Nothing here performs I/O or reads a clock (docs/architecture.md#the-sans-io-contract): time is an
argument (``now``), timers are returned (``get_timer``/``handle_timer``), randomness is injected.
Drivers live in ``rtcprobe.drivers``.

* :mod:`.observations`: what a driver reports, what the machine asks of it, what it tells the user;
* :mod:`._state`: the machine's tables (rules per observation, steps), its edges and diagram;
* :mod:`.preflight`: :class:`PreflightMachine`, the interpreter of those tables;
* :mod:`.sampling`: the stats step's arithmetic (two samples in, one measurement out);
* :mod:`.quality`: the network-quality scorer;
* :mod:`.report`: the report, how a run becomes one, and its canonical JSON;
* :mod:`.codec`: core mode's wire format (observations in, actions and events out, as JSON);
* :mod:`.config`, :mod:`.errors`: options and error codes.
"""

from . import errors
from ._state import STEPS, State, diagram, edges
from .config import Kind, MediaDemand, PreflightConfig, VideoSpec
from .errors import ConfigError, PreflightError, PreflightErrorInfo, UsageError
from .observations import (
    PROGRESS_NAMES,
    AcquireMedia,
    Action,
    Completed,
    ConnectionState,
    ConnectionStateChanged,
    ConnectSignaling,
    DtlsState,
    DtlsStateChanged,
    Event,
    Failed,
    IceServer,
    IceState,
    IceStateChanged,
    InboundStats,
    MediaAcquired,
    MediaStarted,
    NetworkQualityLevelChanged,
    Observation,
    OpenPeerConnections,
    OutboundStats,
    Progress,
    ProgressName,
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
from .preflight import PreflightMachine
from .report import (
    IceCandidateStats,
    PreflightReport,
    ProgressEvent,
    ReportStats,
    RunInfo,
    Sample,
    SelectedCandidatePair,
    Stat,
    Timing,
)

__all__ = [
    "PROGRESS_NAMES",
    "STEPS",
    "AcquireMedia",
    "Action",
    "Completed",
    "ConfigError",
    "ConnectSignaling",
    "ConnectionState",
    "ConnectionStateChanged",
    "DtlsState",
    "DtlsStateChanged",
    "Event",
    "Failed",
    "IceCandidateStats",
    "IceServer",
    "IceState",
    "IceStateChanged",
    "InboundStats",
    "Kind",
    "MediaAcquired",
    "MediaDemand",
    "MediaStarted",
    "NetworkQualityLevelChanged",
    "Observation",
    "OpenPeerConnections",
    "OutboundStats",
    "PreflightConfig",
    "PreflightError",
    "PreflightErrorInfo",
    "PreflightMachine",
    "PreflightReport",
    "Progress",
    "ProgressEvent",
    "ProgressName",
    "ReportStats",
    "Role",
    "RunInfo",
    "Sample",
    "SampleRecorded",
    "SampleStats",
    "SelectedCandidatePair",
    "SignalingConnected",
    "Stat",
    "State",
    "StatsObserved",
    "StatsSample",
    "StepUnobservable",
    "StopRequested",
    "TearDown",
    "Timing",
    "TrackSubscribed",
    "TransportError",
    "UsageError",
    "VideoSpec",
    "diagram",
    "edges",
    "errors",
]
