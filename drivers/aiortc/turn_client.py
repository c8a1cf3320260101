"""What the client side knows about TURN: the URL syntax (RFC 7065) and why an allocation fails.

Shared by the driver (which diagnoses a relay-only peer that gathered nothing) and the signaling
server (``rtcprobe.server.credentials`` parses ``--turn`` URLs with :func:`parse_turn_url`); the
server imports it from here because a driver never imports the server (docs/architecture.md#layers).
"""

from __future__ import annotations

import asyncio
from typing import Final
from urllib.parse import parse_qs

import attrs
from aioice import stun
from rtcprobe.core.errors import ConfigError

TURN_SCHEMES: Final = ("turn", "turns")
TRANSPORTS: Final = ("udp", "tcp")


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


async def diagnose_turn(url: str, username: str | None, password: str | None, *, timeout: float = 2.0) -> str | None:
    """Why a TURN allocation on ``url`` fails, in one line naming the server; None if it works.

    For a driver whose relay-only peer gathered no candidate: aiortc only reports that ICE had
    nothing to try, while this tells a refused credential (401/403/437/...) from a server that
    does not answer or refuses the connection. One Allocate, deleted again on success.
    """
    from aioice.turn import create_turn_endpoint

    try:
        parsed = parse_turn_url(url)
    except ConfigError as exc:
        return str(exc)
    if parsed.scheme == "turns":
        return None  # TLS needs the client's SSL context: not diagnosed here
    if username is None or password is None:
        return f"TURN server {url} needs a username and credential"

    class _Ignore(asyncio.DatagramProtocol):
        pass

    try:
        transport, _ = await asyncio.wait_for(
            create_turn_endpoint(_Ignore, (parsed.host, parsed.port), username, password, transport=parsed.transport),
            timeout,
        )
    except stun.TransactionFailed as exc:
        code, reason = exc.response.attributes.get("ERROR-CODE", (0, "error"))
        if code in (401, 403, 431, 437, 441):
            return f"TURN server {url} refused the credentials ({code} {reason}): is the TURN secret right?"
        return f"TURN server {url} refused the allocation ({code} {reason})"
    except (TimeoutError, stun.TransactionTimeout):
        return f"TURN server {url} did not answer within {timeout:g} s: is it running and reachable?"
    except OSError as exc:
        return f"TURN server {url} is unreachable: {exc.strerror or exc}"
    transport.close()
    return None


__all__ = ["TRANSPORTS", "TURN_SCHEMES", "TurnUrl", "diagnose_turn", "parse_turn_url"]
