"""The server's Prometheus metrics (``GET /metrics``), one registry per server.

Each :class:`~rtcprobe.server.app.SignalingServer` has its own ``CollectorRegistry`` rather than
prometheus_client's global one, so several servers in one process (tests, an embedded server
next to a served one) never collide.

Labels that come from a client's report are bounded before use — error codes to the codes the
core knows, step names to the core's progress events — so a hostile client cannot create
unbounded time series.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from rtcprobe.core.errors import ERRORS
from rtcprobe.core.observations import PROGRESS_NAMES
from rtcprobe.core.report import PreflightReport

from .reports import MAX_LEVEL

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
# A step's time from the test's start, in seconds (a healthy preflight reaches mediaStarted in
# about a second; the core's deadlines end a failing one within tens of seconds).
STEP_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LEVEL_BUCKETS: Final = tuple(float(level) for level in range(MAX_LEVEL + 1))

#: ``reason`` label values of ``rtcprobe_reports_rejected_total``.
REJECT_REASONS: Final = ("not_json", "too_big", "invalid", "duplicate", "before_iced")
#: ``reason`` label values of ``rtcprobe_room_errors_total`` (rooms.ERROR_REASONS, repeated here so
#: that this module does not import the rooms; a test keeps them equal).
ROOM_ERROR_REASONS: Final = (
    "identity-invalid", "identity-duplicate", "room-full", "not-found", "invalid-sample", "sample-too-big",
    "too-frequent", "counters-backwards", "signal-invalid", "signal-too-big", "room-name", "room-grant",
    "rooms-exhausted", "flood", "too-slow",
)


def _code_label(code: int) -> str:
    return str(code) if code in ERRORS else "other"


class ServerMetrics:
    """The metrics one server exports; methods are called by its sessions."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections_open = Gauge("rtcprobe_connections_open", "Open signaling WebSocket connections.",
                                      registry=r)
        self.sessions_open = Gauge("rtcprobe_sessions_open",
                                   "Authenticated sessions (token accepted, socket held).", registry=r)
        self.sessions = Counter("rtcprobe_sessions", "Sessions authenticated since the server started.", registry=r)
        self.tokens_rejected = Counter("rtcprobe_tokens_rejected", "Hellos refused, by error code.", ["code"],
                                       registry=r)
        self.preflights = Counter("rtcprobe_preflights", "Reports accepted, by outcome and error code.",
                                  ["outcome", "code"], registry=r)
        self.levels = Histogram("rtcprobe_network_quality_level",
                                "Network quality level (0..5) of accepted reports that have one.",
                                buckets=LEVEL_BUCKETS, registry=r)
        self.steps = Histogram("rtcprobe_step_seconds",
                               "Time from the test's start to each progress event of accepted reports.",
                               ["step"], buckets=STEP_BUCKETS, registry=r)
        self.reports_rejected = Counter("rtcprobe_reports_rejected", "Reports refused, by reason.", ["reason"],
                                        registry=r)
        self.reports_unstored = Counter("rtcprobe_reports_store_failures",
                                        "Accepted reports the reports file could not take (see the log).",
                                        registry=r)
        self.rooms_open = Gauge("rtcprobe_rooms_open", "Rooms with at least one participant.", registry=r)
        self.room_participants = Gauge("rtcprobe_room_participants",
                                       "Participants in rooms (reconnecting ones included).", registry=r)
        self.room_samples = Counter("rtcprobe_room_samples", "Network quality samples accepted from participants.",
                                    registry=r)
        self.room_signals = Counter("rtcprobe_room_signals", "Negotiation messages relayed between participants.",
                                    registry=r)
        self.room_messages = Counter("rtcprobe_room_messages", "Room messages, by direction (in: from clients).",
                                     ["direction"], registry=r)
        self.room_errors = Counter("rtcprobe_room_errors", "Room errors sent to participants (or refused joins), "
                                   "by reason.", ["reason"], registry=r)
        for direction in ("in", "out"):
            self.room_messages.labels(direction)
        for reason in ROOM_ERROR_REASONS:
            self.room_errors.labels(reason)
        for reason in REJECT_REASONS:  # every series exists from the start: rate() needs a zero
            self.reports_rejected.labels(reason)
        for outcome in ("completed", "failed"):
            self.preflights.labels(outcome, "")
        for step in PROGRESS_NAMES:
            self.steps.labels(step)

    def report_accepted(self, report: PreflightReport) -> None:
        if report.error is None:
            self.preflights.labels("completed", "").inc()
        else:
            self.preflights.labels("failed", _code_label(report.error.code)).inc()
        if report.network_quality_level is not None:
            self.levels.observe(report.network_quality_level)
        for event in report.progress_events:
            if event.name in PROGRESS_NAMES and event.duration is not None:
                self.steps.labels(event.name).observe(max(event.duration, 0.0) / 1000)

    def report_rejected(self, reason: str) -> None:
        assert reason in REJECT_REASONS, reason
        self.reports_rejected.labels(reason).inc()

    def room_error(self, reason: str) -> None:
        self.room_errors.labels(reason if reason in ROOM_ERROR_REASONS else "other").inc()

    def token_rejected(self, code: int) -> None:
        self.tokens_rejected.labels(_code_label(code)).inc()

    def render(self) -> bytes:
        """The text exposition format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)


__all__ = ["CONTENT_TYPE", "REJECT_REASONS", "ROOM_ERROR_REASONS", "ServerMetrics"]
