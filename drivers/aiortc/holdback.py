"""Connect a relay-only peer without the 0.5 s TURN permission stall.

Theory of operation
-------------------
A TURN server drops whatever reaches a relayed address from a peer that the allocation holds no
permission for (RFC 8656 section 9), and aioice creates permissions lazily: one ChannelBind on
the first packet its relayed candidate sends to an address. In a non-trickle offer/answer where
the relay-only peer offers (Twilio Video's preflight publisher), the answerer starts its checks
as soon as it has answered, before the offerer has read the answer; its first check reaches the
relayed address before the ChannelBind and is dropped. The offerer's own check (aioice nominates
aggressively) then succeeds both ways, but aioice's controlled agent starts no triggered check on
a pair whose check is in progress (RFC 8445 section 7.3.1.4's immediate retransmit is missing):
the answerer waits for its STUN retransmission, 0.5 s later (``aioice.stun.RETRY_RTO``). The
answerer is the DTLS client (``a=setup:active``), so the handshake and the first media wait too:
the offerer's DTLS timer (``networkTiming.dtls``) runs ~480 ms for a 2 ms handshake.

The fix is in the signaling, through public aiortc API only: :func:`hold_relay_candidates` takes
the relayed candidates (and ``a=end-of-candidates``) out of the offer handed to the answerer. The
answerer has nothing to check until the offerer's check arrives through the relay, which aioice
sends only once its ChannelBind succeeded; the answerer learns the relayed address from that
check (a peer-reflexive candidate) and answers with a triggered check that the permission now
lets through. ICE then completes on both sides ~2 ms after the offerer's first check.
:func:`release_when_connected` signals the held candidates afterwards (aioice turns the
peer-reflexive candidate into the signalled one, keeping its pair), so the answerer's candidate
list and its failure detection (end-of-candidates) end up as without the hold.

No path is lost: the answerer's checks to a relayed address cannot pass before the relay-only
peer has sent to that address anyway. The transport to the TURN server (udp, tcp, tls) does not
matter: aioice binds channels the same way over each.

Hooks: two peers in one process use :func:`negotiate_pair` and then run
:func:`release_when_connected` as a task they own (cancel it on tear-down); a peer whose answerer
is remote sends ``hold_relay_candidates(pc.localDescription).description`` as its offer and, with
no trickle message to carry them, never releases (the answerer then only learns the relayed
address from the checks, and keeps expecting candidates until it closes).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.rtcicetransport import RTCIceCandidate
from aiortc.sdp import candidate_from_sdp

RELEASE_TIMEOUT = 1.0  # s: release anyway (the offerer's first check was lost, or its relay failed)
CANDIDATE = "a=candidate:"
END_OF_CANDIDATES = "a=end-of-candidates"


@attrs.frozen
class Held:
    """An offer to hand the other peer now, and the relayed candidates held back from it."""

    description: RTCSessionDescription
    candidates: tuple[RTCIceCandidate, ...] = ()
    end_of_candidates: bool = False  # the original offer said so: signal it on release

    @property
    def holding(self) -> bool:
        return bool(self.candidates)


def _relayed(line: str) -> RTCIceCandidate | None:
    if not line.startswith(CANDIDATE):
        return None
    try:
        candidate = candidate_from_sdp(line[len(CANDIDATE):])
    except (ValueError, IndexError):
        return None  # not ours to judge: the other peer parses it as it would have
    return candidate if candidate.type == "relay" else None


def hold_relay_candidates(description: RTCSessionDescription) -> Held:
    """Split ``description`` into the one to hand the other peer now and its relayed candidates.

    Without a relayed candidate the description comes back unchanged (nothing held). Otherwise
    ``a=end-of-candidates`` is held too: the other peer must keep expecting candidates, or aioice
    would give up on a media section left with none.
    """
    lines = description.sdp.splitlines()
    if not any(_relayed(line) for line in lines):
        return Held(description)
    kept: list[str] = []
    held: list[RTCIceCandidate] = []
    section: list[RTCIceCandidate] = []  # held from the current m= section, until its a=mid is known
    mid: str | None = None
    index = -1
    end = False

    def close_section() -> None:
        for candidate in section:
            candidate.sdpMid, candidate.sdpMLineIndex = mid, index
        held.extend(section)
        section.clear()

    for line in lines:
        if line.startswith("m="):
            close_section()
            index, mid = index + 1, None
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:"):].strip()
        elif line.strip() == END_OF_CANDIDATES:
            end = True
            continue
        elif (candidate := _relayed(line)) is not None:
            section.append(candidate)
            continue
        kept.append(line)
    close_section()
    sdp = "\r\n".join(kept) + "\r\n"
    return Held(RTCSessionDescription(sdp=sdp, type=description.type), tuple(held), end)


async def negotiate_pair(
    offerer: RTCPeerConnection,
    answerer: RTCPeerConnection,
    *,
    on_description_set: Callable[[RTCPeerConnection], None] | None = None,
    hold: bool = True,
) -> Held:
    """Local offer/answer between two peers of this process, the offerer's relayed candidates
    held back from the answerer. Returns what was held: pass it to :func:`release_when_connected`.

    ``hold=False`` hands the whole offer over at once. A relay-only answerer needs that: its own
    allocation drops the offerer's first check until it has sent to the offerer's relayed
    address itself, so it cannot learn that address from the check, and holding would only make
    it wait for the release timeout.

    ``on_description_set(pc)`` runs after each ``set*Description`` call, also when it raises (where
    a driver adopts aiortc's connect task, see teardown.py).
    """

    async def setting(pc: RTCPeerConnection, call: Callable[[], Awaitable[Any]]) -> None:
        try:
            await call()
        finally:
            if on_description_set is not None:
                on_description_set(pc)

    await setting(offerer, lambda: offerer.setLocalDescription(None))  # gathers: TURN allocation
    offer = offerer.localDescription
    assert offer is not None
    held = hold_relay_candidates(offer) if hold else Held(offer)
    await setting(answerer, lambda: answerer.setRemoteDescription(held.description))
    await setting(answerer, lambda: answerer.setLocalDescription(None))  # its checks start here
    answer = answerer.localDescription
    assert answer is not None
    await setting(offerer, lambda: offerer.setRemoteDescription(answer))
    return held


async def release(pc: RTCPeerConnection, held: Held) -> None:
    """Signal the held candidates (then end-of-candidates, when the offer had it) to ``pc``."""
    if not held.holding or pc.connectionState == "closed":
        return
    for candidate in held.candidates:
        await pc.addIceCandidate(candidate)
    if held.end_of_candidates:
        await pc.addIceCandidate(None)


async def release_when_connected(
    relay_pc: RTCPeerConnection, other: RTCPeerConnection, held: Held, *, timeout: float = RELEASE_TIMEOUT
) -> None:
    """Release ``held`` to ``other`` once ``relay_pc``'s ICE has left "checking" (its check went
    through the relay, so the permission exists; or it failed), or after ``timeout`` s."""
    if not held.holding:
        return
    done = asyncio.get_running_loop().create_future()

    def on_ice() -> None:
        if relay_pc.iceConnectionState not in ("new", "checking") and not done.done():
            done.set_result(None)

    relay_pc.on("iceconnectionstatechange", on_ice)
    try:
        on_ice()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done, timeout)
    finally:
        relay_pc.remove_listener("iceconnectionstatechange", on_ice)
    await release(other, held)


__all__ = ["RELEASE_TIMEOUT", "Held", "hold_relay_candidates", "negotiate_pair", "release", "release_when_connected"]
