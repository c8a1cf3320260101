"""What the client side knows about TURN: the URL syntax (RFC 7065), which transport a URL reaches
the server over (udp, tcp, tls), and why an allocation fails.

Shared by the driver (which diagnoses a relay-only peer that gathered nothing) and the signaling
server (``rtcprobe.server.credentials`` parses ``--turn`` URLs with :func:`parse_turn_url`); the
server imports it from here because a driver never imports the server (docs/architecture.md#layers).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from typing import Final
from urllib.parse import parse_qs

import attrs
from aioice import stun
from rtcprobe.core.errors import ConfigError
from rtcprobe.core.observations import IceServer

TURN_SCHEMES: Final = ("turn", "turns")
TRANSPORTS: Final = ("udp", "tcp")  # a URL's ?transport=
CLIENT_TRANSPORTS: Final = ("udp", "tcp", "tls")  # how a client reaches the server: tls is turns: (over tcp)


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

    @property
    def client_transport(self) -> str:
        """``udp``, ``tcp`` or ``tls`` (``turns:``): what the client reaches the server over."""
        return "tls" if self.scheme == "turns" else self.transport


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


def client_transport(url: str) -> str | None:
    """The client transport (udp, tcp, tls) of a TURN URL; None for anything else (a STUN URL, a
    malformed one)."""
    try:
        return parse_turn_url(url).client_transport
    except ConfigError:
        return None


def offered_transports(servers: Iterable[IceServer]) -> tuple[str, ...]:
    """The client transports of the TURN URLs in ``servers`` (with credentials, as aiortc needs),
    in the order they are first listed."""
    seen: list[str] = []
    for server in servers:
        if server.username is None or server.credential is None:
            continue
        for url in server.urls:
            transport = client_transport(url)
            if transport is not None and transport not in seen:
                seen.append(transport)
    return tuple(seen)


def select_transport(servers: Iterable[IceServer], transport: str) -> tuple[IceServer, ...]:
    """``servers`` with the first TURN URL over ``transport`` as their only TURN URL (aiortc uses
    one TURN server, the first it can); STUN URLs stay. No TURN URL at all when none goes over
    ``transport``."""
    if transport not in CLIENT_TRANSPORTS:
        raise ConfigError(f"TURN transport must be one of {', '.join(CLIENT_TRANSPORTS)}, got {transport!r}")
    chosen = False
    selected: list[IceServer] = []
    for server in servers:
        urls: list[str] = []
        for url in server.urls:
            if url.partition(":")[0].lower() not in TURN_SCHEMES:
                urls.append(url)
            elif (not chosen and client_transport(url) == transport
                  and server.username is not None and server.credential is not None):
                urls.append(url)
                chosen = True
        if urls:
            selected.append(attrs.evolve(server, urls=tuple(urls)))
    return tuple(selected)


def _tls_failure(url: str, exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TURN server {url}: its TLS certificate is not trusted ({exc.verify_message}): "
                "give the CA that signed it (--turn-ca FILE, turn_ca=)")
    reason = exc.reason or exc.strerror or str(exc)
    return f"TLS with TURN server {url} failed ({reason}): does it speak TLS on that port?"


async def diagnose_turn(url: str, username: str | None, password: str | None, *, timeout: float = 2.0,
                        ssl_context: ssl.SSLContext | None = None) -> str | None:
    """Why a TURN allocation on ``url`` fails, in one line naming the server; None if it works.

    For a driver whose relay-only peer gathered no candidate: aiortc only reports that ICE had
    nothing to try, while this tells a refused credential (401/403/437/...) from a server that
    does not answer or refuses the connection, and for ``turns:`` an untrusted certificate from a
    failed handshake. One Allocate, deleted again on success. ``ssl_context`` is the one the
    peer connections used for ``turns:`` (None: the system's trust store, as aioice's default).
    """
    from aioice.turn import create_turn_endpoint

    try:
        parsed = parse_turn_url(url)
    except ConfigError as exc:
        return str(exc)
    if username is None or password is None:
        return f"TURN server {url} needs a username and credential"
    tls: ssl.SSLContext | bool | None = None
    if parsed.scheme == "turns":
        tls = ssl_context if ssl_context is not None else True

    class _Ignore(asyncio.DatagramProtocol):
        pass

    try:
        transport, _ = await asyncio.wait_for(
            create_turn_endpoint(_Ignore, (parsed.host, parsed.port), username, password, ssl=tls,
                                 transport=parsed.transport),
            timeout,
        )
    except ssl.SSLError as exc:  # an OSError: before the generic case
        return _tls_failure(url, exc)
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


__all__ = [
    "CLIENT_TRANSPORTS", "TRANSPORTS", "TURN_SCHEMES", "TurnUrl", "client_transport", "diagnose_turn",
    "offered_transports", "parse_turn_url", "select_transport",
]
