"""The signaling server's settings (:class:`ServerConfig`), checked once when it is built."""

from __future__ import annotations

import ipaddress
import math

import attrs

from rtcprobe.core.errors import ConfigError
from rtcprobe.drivers.aiortc.protocol import DEFAULT_IDLE_TIMEOUT, MAX_MESSAGE_SIZE
from rtcprobe.drivers.aiortc.turn_client import TurnUrl

from .credentials import check_turn_config
from .tokens import DEFAULT_ISSUER


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
    max_message_size: int = MAX_MESSAGE_SIZE
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT  # s the server waits for the next negotiation message
    connect_timeout: float = 30.0  # s after the last answer for both peer connections to connect
    max_sessions: int = 16
    max_connections: int = 256
    confine_to_loopback: bool | None = None  # None: when ``host`` is a loopback address

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
        for name in ("idle_timeout", "connect_timeout"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds, got {value}")
        if self.max_sessions < 1 or self.max_connections < self.max_sessions:
            raise ConfigError("need 1 <= max_sessions <= max_connections")
        check_turn_config(self.turn_urls, self.turn_secret)

    @property
    def parsed_turn_urls(self) -> tuple[TurnUrl, ...]:
        return check_turn_config(self.turn_urls, self.turn_secret)

    @property
    def confined(self) -> bool:
        return is_loopback(self.host) if self.confine_to_loopback is None else self.confine_to_loopback


__all__ = ["ServerConfig", "is_loopback"]
