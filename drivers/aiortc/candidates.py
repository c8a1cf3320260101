"""ICE candidates of an aiortc peer connection as the report's ``iceCandidateStats``.

What Twilio Video's preflight reports (``getCombinedConnectionStats.ts``,
docs/references.md#twilio-video-preflight), and so what the driver passes here: everything comes
from the **receiving** peer connection's stats, none from the sender's.

* ``iceCandidateStats``: every ``local-candidate`` and ``remote-candidate`` entry of the receiver:
  its own candidates (host, and relay/srflx when it was handed TURN/STUN: it gathers with the same
  ICE servers as the sender, unrestricted) and the sender's as it learned them — the sender is
  relay-only when TURN is in use, so its relayed address(es) on the TURN server.
* ``selectedIceCandidatePairStats``: the receiver's selected pair, so ``localCandidate`` is the
  receiver's end and ``remoteCandidate`` the sender's (its relay candidate through TURN).
* Per candidate, the browser's fields: ``url`` (the STUN/TURN server it came from) and
  ``relayProtocol`` (the client ↔ TURN transport) exist for local srflx/relay candidates only,
  never for remote ones (W3C ``RTCIceCandidateStats``). So the sender's relay candidate carries no
  URL; the receiver's own relay candidate, when it has one, names the TURN URL and transport.
* ``transportId``: the receiver's one transport (max-bundle); the driver names it ``subscriber``.

aiortc has no candidate stats (docs/references.md#aiortc-and-aioice). Local and remote candidates
come from the public ``RTCIceGatherer.getLocalCandidates()`` / ``RTCIceTransport.getRemoteCandidates()``
(a sender candidate first learned from its check, peer-reflexive, turns into the signalled one when
the held candidates are released, holdback.py); the nominated pair exists only in aioice's private
connection state, reached by :func:`nominated_pair` alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiortc.rtcicetransport import RTCIceCandidate, candidate_from_aioice, parse_stun_turn_uri
from rtcprobe.core.observations import IceServer
from rtcprobe.core.report import IceCandidateStats, SelectedCandidatePair


def ice_transport(pc: Any) -> Any | None:
    """The peer connection's ICE transport (one with max-bundle), or None before there is one."""
    for transceiver in pc.getTransceivers():
        dtls = transceiver.sender.transport
        if dtls is not None:
            return dtls.transport
    return None


def nominated_pair(transport: Any) -> tuple[Any, Any] | None:
    """aioice's nominated (local, remote) candidate pair for RTP (component 1), or None.

    The only place that touches aioice's private state (``Connection._nominated``): aiortc exposes
    no selected pair. Anything unexpected there (another aioice version) yields None, never raises.
    """
    try:
        pair = transport.iceGatherer._connection._nominated.get(1)
        return None if pair is None else (pair.local_candidate, pair.remote_candidate)
    except AttributeError:
        return None


def servers_used(servers: Iterable[IceServer]) -> tuple[str | None, str | None, str | None]:
    """The (STUN url, TURN url, TURN relay protocol) aioice uses: the first usable of each.

    Mirrors aiortc's ``connection_kwargs`` (one STUN and one TURN server, ``turn:`` over udp/tcp
    and ``turns:`` over tcp, password credentials), so srflx and relay candidates can name the
    URL they came from, as the browser's stats that twilio-video.js reports do.
    """
    stun = turn = proto = None
    for server in servers:
        for url in server.urls:
            try:
                parsed = parse_stun_turn_uri(url)
            except ValueError:
                continue
            if parsed["scheme"] == "stun" and stun is None:
                stun = url
            elif parsed["scheme"] in ("turn", "turns") and turn is None:
                wanted = ("udp", "tcp") if parsed["scheme"] == "turn" else ("tcp",)
                ok = parsed["transport"] in wanted
                if ok and server.username is not None and server.credential is not None:
                    turn = url
                    proto = "tls" if parsed["scheme"] == "turns" else parsed["transport"]
    return stun, turn, proto


def candidate_stats(
    c: RTCIceCandidate, transport_id: str, *, servers: Iterable[IceServer] = (), local: bool = True
) -> IceCandidateStats:
    """One candidate in the shape of Twilio Video's preflight report. ``url``/``relayProtocol`` only
    for local srflx/relay."""
    url = relay_protocol = None
    if local and c.type in ("srflx", "relay"):
        stun, turn, proto = servers_used(servers)
        if c.type == "relay":
            url, relay_protocol = turn, proto
        else:
            url = stun
    return IceCandidateStats(
        transport_id=transport_id,
        candidate_type=c.type,
        port=int(c.port),
        address=c.ip,
        priority=int(c.priority),
        protocol=c.protocol.lower(),
        url=url,
        relay_protocol=relay_protocol,
    )


def collect(
    pc: Any, transport_id: str, servers: Iterable[IceServer] = ()
) -> tuple[tuple[IceCandidateStats, ...], SelectedCandidatePair | None]:
    """All local and remote candidates of ``pc`` and its selected pair (None until nominated)."""
    transport = ice_transport(pc)
    if transport is None:
        return (), None
    servers = tuple(servers)
    local = [candidate_stats(c, transport_id, servers=servers) for c in transport.iceGatherer.getLocalCandidates()]
    remote = [candidate_stats(c, transport_id, local=False) for c in transport.getRemoteCandidates()]
    pair = nominated_pair(transport)
    selected = None
    if pair is not None:
        selected = SelectedCandidatePair(
            candidate_stats(candidate_from_aioice(pair[0]), transport_id, servers=servers),
            candidate_stats(candidate_from_aioice(pair[1]), transport_id, local=False),
        )
    return tuple(local + remote), selected
