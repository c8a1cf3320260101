"""rtcprobe's sans-I/O core: the preflight state machine, the quality scorer, report and errors.

Nothing here performs I/O or reads a clock: time is an argument (``now``), timers are returned
(``get_timer``/``handle_timer``), randomness is injected. Drivers live in ``rtcprobe.drivers``.
"""

from . import errors
from ._state import STEPS, State, diagram
from .config import MediaDemand, PreflightConfig, VideoSpec
from .errors import ConfigError, PreflightError, PreflightErrorInfo, UsageError
from .observations import (
    PROGRESS_NAMES,
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
from .preflight import PreflightTest
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
    "PROGRESS_NAMES", "STEPS", "AcquireMedia", "Action", "Completed", "ConfigError", "ConnectSignaling",
    "ConnectionStateChanged", "DtlsStateChanged", "Event", "Failed", "IceCandidateStats", "IceServer",
    "IceStateChanged", "InboundStats", "MediaAcquired", "MediaDemand", "MediaStarted",
    "NetworkQualityLevelChanged", "Observation", "OpenPeerConnections", "OutboundStats", "PreflightConfig",
    "PreflightError", "PreflightErrorInfo", "PreflightReport", "PreflightTest", "Progress", "ProgressEvent",
    "ReportStats",
    "Role", "RunInfo", "Sample", "SampleRecorded", "SampleStats", "SelectedCandidatePair", "SignalingConnected",
    "Stat", "State", "StatsObserved", "StatsSample", "StepUnobservable", "StopRequested", "TearDown", "Timing",
    "TrackSubscribed", "TransportError", "UsageError", "VideoSpec", "diagram", "errors",
]
