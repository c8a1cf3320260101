"""Which CA a peer connection trusts when it reaches its TURN server over TLS (``turns:``).

aiortc hands aioice a bare ``turn_ssl=True`` for a ``turns:`` URL, and aioice then lets asyncio
build the default SSL context: the system's trust store, nothing else. A TURN server whose
certificate comes from a private CA (a test's, an intranet's) can only be trusted by giving
aioice an :class:`ssl.SSLContext` instead — which its ``create_turn_endpoint`` accepts, and which
its ``Connection`` passes on unchanged from its ``turn_ssl`` attribute when it gathers. So
:func:`use_turn_ssl` replaces that attribute on each ICE gatherer of one peer connection, after
aiortc made the gatherer and before it gathers: the CA applies to our connections only, never
process-wide (no ``SSL_CERT_FILE``, no patched ``ssl`` module).

The gatherer's aioice ``Connection`` is private aiortc state (``RTCIceGatherer._connection``, as
candidates.py's nominated pair); if another aiortc lays it out differently,
:class:`TurnTlsUnsupported` says so instead of silently trusting the system's store.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

from rtcprobe.core.errors import ConfigError


class TurnTlsUnsupported(RuntimeError):
    """This aiortc/aioice gives no way to hand a peer connection's TURN client an SSL context."""


def ssl_context(ca: str | os.PathLike[str] | ssl.SSLContext) -> ssl.SSLContext:
    """An SSL context trusting the CA certificates (PEM) in ``ca`` — them only, not the system's —
    with hostname checks; a context given is returned as is. ConfigError for a file that is
    missing or holds no certificate."""
    if isinstance(ca, ssl.SSLContext):
        return ca
    path = os.fspath(ca)
    try:
        return ssl.create_default_context(cafile=path)
    except FileNotFoundError:
        raise ConfigError(f"TURN CA file {path!r} (--turn-ca) does not exist") from None
    except (ssl.SSLError, OSError) as exc:  # not PEM, no certificate in it, unreadable
        detail = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"TURN CA file {path!r} (--turn-ca) holds no usable PEM certificate: {detail}") from None


def use_turn_ssl(pc: Any, context: ssl.SSLContext) -> int:
    """Make ``pc``'s ICE gatherers that reach their TURN server over TLS use ``context``.

    Call it once the gatherers exist (after ``addTransceiver`` for an offerer, after
    ``setRemoteDescription`` for an answerer) and before ``setLocalDescription`` gathers. Returns
    how many gatherers it changed (0 when the TURN server is not ``turns:``)."""
    changed = 0
    seen: set[int] = set()
    for transceiver in pc.getTransceivers():
        dtls = transceiver.sender.transport
        if dtls is None:
            continue
        gatherer = dtls.transport.iceGatherer
        if id(gatherer) in seen:
            continue
        seen.add(id(gatherer))
        connection = getattr(gatherer, "_connection", None)
        if connection is None or not hasattr(connection, "turn_ssl"):
            raise TurnTlsUnsupported(
                "this aiortc/aioice gives no way to choose the CA for a turns: server (the ICE gatherer "
                "has no _connection.turn_ssl); use a TURN certificate from a CA the system trusts")
        if connection.turn_ssl:  # True: aiortc saw a turns: URL
            connection.turn_ssl = context
            changed += 1
    return changed


__all__ = ["TurnTlsUnsupported", "ssl_context", "use_turn_ssl"]
