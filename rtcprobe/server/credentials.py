"""TURN REST API credentials and the ICE-server list the server hands out (docs/references.md#coturn).

A TURN server sharing a secret with us (coturn ``--use-auth-secret --static-auth-secret=S``)
accepts username ``"<unix expiry>:<identity>"`` with password base64(HMAC-SHA1(secret, username)),
so the signaling server mints short-lived credentials without talking to the TURN server. TURN
URLs themselves are parsed by :mod:`rtcprobe.drivers.aiortc.turn_client`, which the client
shares.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from collections.abc import Iterable

from rtcprobe.core.errors import ConfigError
from rtcprobe.core.observations import IceServer
from rtcprobe.drivers.aiortc.turn_client import TurnUrl, parse_turn_url


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


__all__ = ["build_ice_servers", "check_turn_config", "mint_turn_credentials"]
