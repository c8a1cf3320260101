"""TURN REST API credentials and the ICE-server list the server hands out (REFERENCE.md G).

A TURN server sharing a secret with us (coturn ``--use-auth-secret --static-auth-secret=S``)
accepts username ``"<unix expiry>:<identity>"`` with password base64(HMAC-SHA1(secret, username)),
so the signaling server mints short-lived credentials without talking to the TURN server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from collections.abc import Iterable
from urllib.parse import parse_qs

import attrs
from rtcprobe.core.errors import ConfigError
from rtcprobe.core.observations import IceServer

TURN_SCHEMES = ("turn", "turns")
TRANSPORTS = ("udp", "tcp")


@attrs.frozen
class TurnUrl:
    """One parsed ``turn:``/``turns:`` URL (RFC 7065)."""

    scheme: str
    host: str
    port: int
    transport: str

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}:{host}:{self.port}?transport={self.transport}"


def parse_turn_url(url: str) -> TurnUrl:
    """Parse and check a TURN URL; ConfigError (one line) when it is malformed."""
    scheme, sep, rest = url.partition(":")
    if not sep or scheme.lower() not in TURN_SCHEMES:
        raise ConfigError(f"TURN URL {url!r} must start with turn: or turns:")
    scheme = scheme.lower()
    if rest.startswith("//"):
        raise ConfigError(f"TURN URL {url!r} must not contain '//' (write turn:HOST:PORT)")
    hostport, _, query = rest.partition("?")
    transport = "tcp" if scheme == "turns" else "udp"
    if query:
        params = parse_qs(query, keep_blank_values=True)
        if set(params) != {"transport"} or len(params["transport"]) != 1:
            raise ConfigError(f"TURN URL {url!r}: the only query parameter allowed is transport=udp|tcp")
        transport = params["transport"][0].lower()
        if transport not in TRANSPORTS:
            raise ConfigError(f"TURN URL {url!r}: transport must be udp or tcp, got {transport!r}")
        if scheme == "turns" and transport == "udp":
            raise ConfigError(f"TURN URL {url!r}: turns: runs over TLS, so its transport is tcp")
    if hostport.startswith("["):  # [IPv6]:port
        host, bracket, port_text = hostport[1:].partition("]")
        if not bracket or (port_text and not port_text.startswith(":")):
            raise ConfigError(f"TURN URL {url!r}: malformed IPv6 address")
        port_text = port_text[1:]
    else:
        host, _, port_text = hostport.partition(":")
    if not host or any(c in host for c in "/@ "):
        raise ConfigError(f"TURN URL {url!r} has no valid host")
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError(f"TURN URL {url!r}: port must be 1..65535, got {port_text!r}")
        port = int(port_text)
    else:
        port = 5349 if scheme == "turns" else 3478
    return TurnUrl(scheme=scheme, host=host, port=port, transport=transport)


def mint_turn_credentials(secret: str, identity: str, ttl: float, now_unix: float) -> tuple[str, str]:
    """(username, password) valid until ``now_unix + ttl`` for a TURN server sharing ``secret``."""
    if not secret:
        raise ConfigError("the TURN secret must not be empty")
    if not math.isfinite(ttl) or ttl <= 0:
        raise ConfigError(f"the TURN credential ttl must be positive, got {ttl}")
    username = f"{int(now_unix + ttl)}:{identity}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def check_turn_config(turn_urls: Iterable[str], turn_secret: str | None) -> tuple[TurnUrl, ...]:
    """Parse ``--turn`` URLs; they need a secret to mint credentials with."""
    parsed = tuple(parse_turn_url(u) for u in turn_urls)
    if parsed and not turn_secret:
        raise ConfigError("--turn needs --turn-secret (the TURN server's REST API shared secret)")
    if turn_secret and not parsed:
        raise ConfigError("--turn-secret given without any --turn URL")
    return parsed


def build_ice_servers(
    turn_urls: Iterable[TurnUrl], turn_secret: str | None, identity: str, ttl: float, now_unix: float
) -> tuple[IceServer, ...]:
    """The ICE servers for one client: all TURN URLs under one set of fresh credentials, or none.

    Never a STUN server: on loopback it is useless, and a public one would leak the test.
    """
    urls = tuple(u.url for u in turn_urls)
    if not urls:
        return ()
    if not turn_secret:
        raise ConfigError("TURN URLs need a TURN secret")
    username, password = mint_turn_credentials(turn_secret, identity, ttl, now_unix)
    return (IceServer(urls=urls, username=username, credential=password),)
