"""The signaling server's settings (:class:`ServerConfig`), checked once when it is built."""

from __future__ import annotations

import ipaddress
import math

import attrs

from rtcprobe.core.errors import ConfigError
from rtcprobe.core.report import RunInfo
from rtcprobe.drivers.aiortc.protocol import (
    DEFAULT_HOLD_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    MAX_MESSAGE_SIZE,
    MAX_REPORT_MESSAGE_SIZE,
)
from rtcprobe.drivers.aiortc.turn_client import TurnUrl

from .credentials import check_turn_config
from .tokens import DEFAULT_ISSUER
from .web import WebConfig

# Sessions cost a socket and some memory, no CPU while they wait: benchmarks/bench_server.py.
DEFAULT_MAX_SESSIONS = 4000
DEFAULT_MAX_CONNECTIONS = 8000


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@attrs.frozen
class ServerConfig:
    """The server's settings; ConfigError (one line) for a bad value."""

    secret: str
    host: str = "127.0.0.1"
    port: int = 0  # 0: an ephemeral port, read it back from ``url``
    issuer: str = DEFAULT_ISSUER
    turn_urls: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    turn_secret: str | None = None
    turn_ttl: int = 3600  # s, lifetime of minted TURN credentials (and the ``ttl`` of ``iced``)
    max_message_size: int = MAX_MESSAGE_SIZE  # bytes of a frame
    max_report_size: int = MAX_REPORT_MESSAGE_SIZE  # bytes of the frame carrying the report
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT  # s the server waits for the hello
    hold_timeout: float = DEFAULT_HOLD_TIMEOUT  # s a session may stay silent after ``iced``
    ping_interval: float = 30.0  # s between WebSocket pings (a pong must come within half of it)
    max_sessions: int = DEFAULT_MAX_SESSIONS
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    reports: str | None = None  # file each accepted report is appended to, one JSON line each
    web: WebConfig = attrs.field(factory=WebConfig)  # rtcprobe.js, the diagnostics page, Origin allowlist
    # The ``run`` of the reports the core builds in core mode (None: driver "browser", this version).
    # An embedded server knows its one client: ``--driver chromium`` names itself (and its scenario).
    core_run: RunInfo | None = attrs.field(default=None, validator=attrs.validators.optional(
        attrs.validators.instance_of(RunInfo)))

    def __attrs_post_init__(self) -> None:
        if not self.secret:
            raise ConfigError("the server needs a non-empty token secret")
        if not self.issuer:
            raise ConfigError("the issuer must not be empty")
        if not self.host:
            raise ConfigError("the host must not be empty")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        if self.turn_ttl <= 0:
            raise ConfigError(f"turn_ttl must be positive, got {self.turn_ttl}")
        if self.max_message_size < 1024:
            raise ConfigError(f"max_message_size must be at least 1024 bytes, got {self.max_message_size}")
        if self.max_report_size < self.max_message_size:
            raise ConfigError("max_report_size must be at least max_message_size")
        if self.reports is not None and not self.reports:
            raise ConfigError("the reports file name must not be empty")
        for name in ("idle_timeout", "hold_timeout", "ping_interval"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds, got {value}")
        if self.max_sessions < 1 or self.max_connections < self.max_sessions:
            raise ConfigError("need 1 <= max_sessions <= max_connections")
        check_turn_config(self.turn_urls, self.turn_secret)

    @property
    def parsed_turn_urls(self) -> tuple[TurnUrl, ...]:
        return check_turn_config(self.turn_urls, self.turn_secret)


__all__ = ["DEFAULT_MAX_CONNECTIONS", "DEFAULT_MAX_SESSIONS", "ServerConfig", "is_loopback"]
