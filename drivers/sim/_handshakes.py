"""The handshakes before media, event by event: signaling (TCP + WebSocket), the TURN
allocations, ICE between the client's two peer connections with its consent checks, and DTLS.
Every control packet goes on its link at the moment the real stack sends it (through the
driver's ``send``, which first brings media up to then).

The topology is Twilio Video's preflight as the aiortc client runs it (drivers/aiortc/driver.py):
the signaling server only hands out TURN credentials; the client's sender (Role.PUBLISHER:
offerer, ICE controlling, DTLS server, relay-only) and receiver (Role.SUBSCRIBER: answerer,
controlled, DTLS client, unrestricted) connect to each other through the TURN server. Every
packet between them crosses the access link twice: uplink to TURN, downlink back (:meth:`_p2p`).

* Signaling: TCP connect (SYN retransmitted after 1, 2, 4 … s: Linux's 6 SYN retries give up
  after 127 s), WebSocket upgrade, ``ice``/``iced``; each message is segmented (MSS 1448) and
  every segment is retransmitted with TCP's RTO (3 × the handshake RTT, at least 200 ms,
  doubling). No SDP goes to the server. A dead link therefore never exhausts the SYN retries
  inside a step: the core's step timeout fires first → 53002, as Twilio Video's preflight API
  reports for its signaling step. The simulator never produces 53000 (no server refusal in the
  scenario format).
* Negotiation, as ``holdback.negotiate_pair`` does it in one process (nothing on the wire but
  TURN): the sender gathers (its allocation: Allocate → 401 → Allocate); the receiver takes the
  offer with the sender's relayed candidate held back (``track`` fires: TrackSubscribed), gathers
  (a host candidate at once, a relayed one through its own allocation) and answers; the sender
  takes the answer. Both ICE agents start there.
* ICE (aioice): the sender checks its pairs 20 ms apart in priority order, its relayed candidate
  with the receiver's host candidate first, then with the receiver's relayed one; each check is a
  STUN transaction (RTO 0.5 s doubling, 6 retransmissions) preceded by a ChannelBind to the TURN
  server, which also installs the permission for that peer. A check to the receiver's relayed
  address is dropped by TURN (that allocation holds no permission for the sender's), so the host
  pair carries the connection. The receiver, with no remote candidate (held back), learns the
  sender's relayed address from the check, answers it and sends a triggered check back; the
  sender nominates aggressively, so its first answered check completes it, and the receiver
  completes once its own check succeeded and the nominating check arrived. Checks are answered
  as soon as they arrive. The held candidates released afterwards put nothing on the wire.
* Consent freshness, at both peers: one unretransmitted check every 4–6 s (0.5 s to answer:
  through TURN and back, twice over the access link); 6 failures in a row → ``failed``. A failed
  check while nothing at all has arrived on that peer connection for 2.5 s (libwebrtc's
  receiving timeout) is fed to the core as ``disconnected`` — a browser stack says so, aiortc
  keeps quiet — and ``completed`` follows as soon as packets flow again. Once the driver batches
  media, the steady state plans the checks with its intervals (:attr:`Handshakes.consent_in_loop`)
  and reports their outcomes here.
* DTLS 1.2: the receiver (answerer, ``setup:active``) sends ClientHello once its ICE completes;
  four flights, each retransmitted on OpenSSL's timer (1 s, doubling); a duplicate of flight 5
  makes the sender resend its Finished.
* Not modelled: processing time, TURN refreshes and deallocations, the receiver's checks of the
  released relayed candidate (its host pair is nominated by then).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from rtcprobe.core.config import Kind
from rtcprobe.core.observations import (
    KINDS,
    ConnectionStateChanged,
    DtlsStateChanged,
    IceServer,
    IceStateChanged,
    Observation,
    Role,
    SignalingConnected,
    TrackSubscribed,
)
from rtcprobe.core.report import IceCandidateStats

from ._media import CHANNELDATA_OVERHEAD
from ._net import DOWN, STUN_RETRANSMISSIONS, STUN_RTO, UP, EventLoop, Tag, Transaction
from ._wire import (
    CLIENT_IP,
    CONSENT_FAILURES,
    CONSENT_INTERVAL,
    CONSENT_TIMEOUT,
    DTLS_FLIGHTS,
    DTLS_RETRANSMISSIONS,
    DTLS_RTO,
    HOST_PREF,
    HTTP_101,
    HTTP_UPGRADE,
    ICE_PACING,
    RECEIVE_TIMEOUT,
    RELAY_PREF,
    STUN_CHECK,
    STUN_RESPONSE,
    SYN,
    TCP_HEADER,
    TCP_MIN_RTO,
    TCP_MSS,
    TCP_RETRIES,
    TCP_SYN_RETRIES,
    TCP_SYN_RTO,
    TURN_401,
    TURN_ALLOCATE,
    TURN_ALLOCATE_AUTH,
    TURN_ALLOCATE_OK,
    TURN_CHANNEL_BIND,
    TURN_CHANNEL_BIND_OK,
    TURN_IP,
    TURN_URL,
    WATCH_INTERVAL,
    WS_ICE,
    WS_ICED,
    priority,
)


def _gone(*_: object) -> None:
    """What a callback becomes after the run (nothing may call it then)."""
    raise AssertionError("called after the run")


def _gone_float(*_: object) -> float:
    raise AssertionError("called after the run")


# The receiver's one transport (max-bundle), as the aiortc driver names it in the report.
TRANSPORT_ID = "subscriber"

# The observations every run reports the same way, made once (frozen: safe to share; attrs'
# validators cost ~1.5 us an object, and a run makes about fifteen of them).
_PUB, _SUB = Role.PUBLISHER, Role.SUBSCRIBER
ICE_SERVERS: tuple[IceServer, ...] = (IceServer((TURN_URL,), "86400:rtcprobe-sim", "sim-credential"),)
_SIGNALING_CONNECTED = SignalingConnected(ICE_SERVERS)
_TRACK_SUBSCRIBED: dict[Kind, TrackSubscribed] = {kind: TrackSubscribed(kind) for kind in KINDS}
# both ICE agents start (the receiver's first)
_CHECKING = (IceStateChanged(_SUB, "checking"), ConnectionStateChanged(_SUB, "connecting"),
             IceStateChanged(_PUB, "checking"), ConnectionStateChanged(_PUB, "connecting"))
_ICE_DONE = {role: (IceStateChanged(role, "completed"), DtlsStateChanged(role, "connecting")) for role in Role}
_DTLS_DONE = {role: (DtlsStateChanged(role, "connected"), ConnectionStateChanged(role, "connected")) for role in Role}


class Send(Protocol):
    """Puts one control packet on a link now; ``then(*args)`` runs (tagged ``tag``) when it
    arrives. ``up_sent``: for a packet TURN forwards, when it went up."""

    def __call__(self, direction: str, size: int, kind: str, then: Callable[..., None] | None = None,
                 *args: Any, tag: Tag = Tag.HANDSHAKE, up_sent: float = math.inf) -> None: ...


class Peer:
    """One of the client's two peer connections: the sender (Role.PUBLISHER) or the receiver
    (Role.SUBSCRIBER). ``local``: its candidates in priority order; ``remote``: the other's, as
    it knows them; ``selected``: its nominated (local, remote) pair."""

    def __init__(self, role: Role, local: list[IceCandidateStats], relay_only: bool) -> None:
        self.role = role
        self.local = local
        # ChannelData framing on this peer's leg of the access link, both ways: a relay-only peer
        # sends and receives through its own allocation's channel; the receiver's pair is its host
        # candidate's, plain UDP to and from the sender's relayed address.
        self.extra = CHANNELDATA_OVERHEAD if relay_only else 0
        self.remote: list[IceCandidateStats] = []
        self.selected: tuple[IceCandidateStats, IceCandidateStats] | None = None
        self.ice_done = self.ice_failed = False
        self.checks: list[Transaction] = []
        self.failed_checks = 0
        self.succeeded = self.nominated = False  # (the controlled receiver's two conditions)
        self.dtls_connected_at = math.inf
        self.f1_waiting = False  # (the sender: a ClientHello arrived before its ICE completed)
        self.consent_failures = 0
        self.consent_at = math.inf  # the next consent check, once scheduled
        self.disconnected = False
        self.last_rx = 0.0  # the latest RTCP/STUN it received (media is counted by the pipeline)

    @property
    def up(self) -> bool:
        """Its DTLS is up (it may send and decrypt media)."""
        return self.dtls_connected_at < math.inf

    def heard(self, t: float) -> None:
        """This peer received something at ``t``."""
        if t > self.last_rx:
            self.last_rx = t


class Handshakes:
    """Signaling, both peers' ICE, consent and DTLS. The driver supplies the wire (``send``), the
    core (``observe``) and what happens next:

    * ``sender_up(peer)`` / ``receiver_up(peer)``: that peer's DTLS is up (its media may flow);
    * ``progress()``: a handshake step finished (the driver may switch to batches);
    * ``last_heard(peer)``: when the peer last received anything (media included).
    """

    # The two peer connections (also in ``pcs``), once open_peer_connections made them: attributes,
    # not dict lookups by Role on every use.
    sender: Peer
    receiver: Peer

    def __init__(self, loop: EventLoop, send: Send, observe: Callable[[Observation], None], *,
                 ports: list[int], tracks: tuple[Kind, ...], consent_rng: np.random.Generator,
                 sender_up: Callable[[Peer], None], receiver_up: Callable[[Peer], None],
                 progress: Callable[[], None], last_heard: Callable[[Peer], float],
                 pcs: dict[Role, Peer] | None = None) -> None:
        self.loop = loop
        self._send = send
        self._observe = observe
        self._ports = ports
        self._tracks = tracks
        self._consent_rng = consent_rng
        self._sender_up = sender_up
        self._receiver_up = receiver_up
        self._progress = progress
        self._last_heard = last_heard
        self.pcs: dict[Role, Peer] = {} if pcs is None else pcs  # (a dict the driver shares with the pipeline)
        self.ice_servers: tuple[IceServer, ...] = ()
        # False once the steady state plans consent checks with its intervals (it then reports
        # their outcomes through consent_ok / consent_failed).
        self.consent_in_loop = True
        self._tcp_rto = 1.0
        self._tcp_delivered = {UP: 0.0, DOWN: 0.0}
        # DTLS flights on their timers: ClientHello, ServerHello.., Certificate..Finished
        self._f1: Transaction | None = None
        self._f2: Transaction | None = None
        self._f3: Transaction | None = None

    @property
    def now(self) -> float:
        return self.loop.now

    def other(self, peer: Peer) -> Peer:
        return self.receiver if peer is self.sender else self.sender

    def release(self) -> None:
        """After the run: let go of the driver's callbacks, and of every ICE check and DTLS
        flight (done by then; their callbacks refer back here). See ``SimDriver._release``."""
        self._observe = self._sender_up = self._receiver_up = self._progress = _gone
        self._last_heard = _gone_float
        for peer in self.pcs.values():
            for tx in peer.checks:
                tx.cancel()
        for flight in (self._f1, self._f2, self._f3):
            if flight is not None:
                flight.cancel()

    # --- signaling: TCP + WebSocket ----------------------------------------------------------------

    def connect_signaling(self) -> None:
        state = {"sent": 0.0}

        def transmit(tx: Transaction) -> None:
            state["sent"] = self.loop.now
            self._send(UP, SYN, "tcp", self._srv_syn, tx, state)

        Transaction(self.loop, transmit, lambda: None, rto=TCP_SYN_RTO, retransmissions=TCP_SYN_RETRIES).start()

    def _srv_syn(self, tx: Transaction, state: dict[str, float]) -> None:
        self._send(DOWN, SYN, "tcp", self._cli_synack, tx, state)

    def _cli_synack(self, tx: Transaction, state: dict[str, float]) -> None:
        if tx.done:
            return
        rtt = self.loop.now - state["sent"]
        self._tcp_rto = max(TCP_MIN_RTO, 3 * rtt)  # srtt + 4 * rttvar with rttvar = rtt / 2
        tx.succeed()
        self._send(UP, TCP_HEADER, "tcp")  # the handshake's ACK
        self._tcp_message(UP, HTTP_UPGRADE, lambda: self._tcp_message(DOWN, HTTP_101, self._ws_open))

    def _ws_open(self) -> None:
        self._tcp_message(UP, WS_ICE, lambda: self._tcp_message(DOWN, WS_ICED, self._iced))

    def _iced(self) -> None:
        self.ice_servers = ICE_SERVERS
        self._observe(_SIGNALING_CONNECTED)

    def _tcp_message(self, direction: str, size: int, on_delivered: Callable[[], None]) -> None:
        """Send ``size`` bytes reliably; ``on_delivered`` runs once every segment is in."""
        segments = [TCP_MSS] * (size // TCP_MSS) + ([size % TCP_MSS] if size % TCP_MSS else [])
        pending = {"left": len(segments), "last": 0.0}

        def arrived() -> None:
            pending["left"] -= 1
            pending["last"] = max(pending["last"], self.loop.now)
            if pending["left"] == 0:
                # In-order delivery: a message never overtakes the previous one on the stream.
                t = max(pending["last"], self._tcp_delivered[direction])
                self._tcp_delivered[direction] = t
                self.loop.at(t, on_delivered, tag=Tag.HANDSHAKE)

        for seg in segments:
            def transmit(tx: Transaction, seg: int = seg) -> None:
                self._send(direction, seg + TCP_HEADER, "tcp", tx.succeed)

            Transaction(self.loop, transmit, arrived, rto=self._tcp_rto, retransmissions=TCP_RETRIES).start()

    # --- the two peer connections ---------------------------------------------------------------------

    def open_peer_connections(self, relay_only: bool) -> None:
        # The simulator always hands out TURN, and the core then makes the sender relay-only:
        # without TURN the real client's media would never leave the machine.
        assert relay_only and any(s.urls for s in self.ice_servers), "the simulated sender is relay-only through TURN"
        p = self._ports
        tid = TRANSPORT_ID
        # The sender's relayed candidate as the receiver learns it (a remote candidate carries no
        # url/relayProtocol); the receiver's own candidates.
        sender_relay = IceCandidateStats(tid, "relay", p[0], TURN_IP, priority(RELAY_PREF), "udp")
        host = IceCandidateStats(tid, "host", p[1], CLIENT_IP, priority(HOST_PREF), "udp")
        relay = IceCandidateStats(tid, "relay", p[2], TURN_IP, priority(RELAY_PREF), "udp", url=TURN_URL,
                                  relay_protocol="udp")
        self.sender = self.pcs[Role.PUBLISHER] = Peer(Role.PUBLISHER, [sender_relay], relay_only=True)
        self.receiver = self.pcs[Role.SUBSCRIBER] = Peer(Role.SUBSCRIBER, [host, relay], relay_only=False)
        self._allocate(self._offer_taken)  # the sender gathers in setLocalDescription(offer)

    def _allocate(self, then: Callable[[], None]) -> None:
        """A TURN allocation: Allocate → 401 → Allocate with the REST credentials."""
        def authenticated() -> None:
            self._stun(UP, TURN_ALLOCATE_AUTH, TURN_ALLOCATE_OK, then)

        self._stun(UP, TURN_ALLOCATE, TURN_401, authenticated)

    def _offer_taken(self) -> None:
        """The receiver took the (held-back) offer — aiortc fires ``track`` in setRemoteDescription —
        and gathers for its answer: a host candidate at once, a relayed one through TURN."""
        for kind in self._tracks:
            self._observe(_TRACK_SUBSCRIBED[kind])
        self._allocate(self._answer_taken)

    def _answer_taken(self) -> None:
        """The receiver set its answer (its ICE agent starts, with nothing to check yet) and the
        sender took it: the sender's checks start."""
        for obs in _CHECKING:
            self._observe(obs)
        sender, receiver = self.sender, self.receiver
        sender.remote = list(receiver.local)
        for i, remote in enumerate(receiver.local):  # in priority order: the host candidate first
            self.loop.after(i * ICE_PACING, self._sender_check, remote, tag=Tag.HANDSHAKE)

    # --- through TURN ------------------------------------------------------------------------------

    def _stun(self, direction: str, req: int, resp: int, on_success: Callable[[], None],
              on_timeout: Callable[[], None] | None = None, *, responder: Callable[[], bool] | None = None,
              rto: float = STUN_RTO, retransmissions: int = STUN_RETRANSMISSIONS) -> Transaction:
        """A STUN transaction between the client and the TURN server (either way round), on
        aioice's timer unless told otherwise.

        ``responder`` (run at the far end when a copy arrives) may refuse to answer.
        """
        back = DOWN if direction == UP else UP

        def transmit(tx: Transaction) -> None:
            self._send(direction, req, "stun", answer, tx)

        def answer(tx: Transaction) -> None:
            if responder is None or responder():
                self._send(back, resp, "stun", tx.succeed)

        return Transaction(self.loop, transmit, on_success, on_timeout, rto=rto,
                           retransmissions=retransmissions).start()


    def _p2p(self, src: Peer, size: int, kind: str, then: Callable[..., None] | None = None, *args: Any,
             through: bool = True) -> None:
        """One packet from ``src`` to the other peer: uplink to TURN, downlink from it. ``through``
        False: TURN drops it (no permission for ``src`` at the address it was sent to)."""
        if not through:
            self._send(UP, size + src.extra, kind)
            return
        dst = self.other(src)
        self._send(UP, size + src.extra, kind, self._turn_forward, self.loop.now, dst, size, kind, then, args)

    def _turn_forward(self, up_sent: float, dst: Peer, size: int, kind: str, then: Callable[..., None] | None,
                      args: tuple[Any, ...]) -> None:
        self._send(DOWN, size + dst.extra, kind, then, *args, up_sent=up_sent)

    def _p2p_stun(self, src: Peer, req: int, resp: int, on_success: Callable[[], None],
                  on_timeout: Callable[[], None] | None = None, *, responder: Callable[[], bool] | None = None,
                  through: bool = True, rto: float = STUN_RTO, retransmissions: int = STUN_RETRANSMISSIONS
                  ) -> Transaction:
        """A STUN transaction from ``src`` to the other peer and back, both ways through TURN."""
        dst = self.other(src)

        def transmit(tx: Transaction) -> None:
            self._p2p(src, req, "stun", answer, tx, through=through)

        def answer(tx: Transaction) -> None:
            if responder is None or responder():
                self._p2p(dst, resp, "stun", tx.succeed)

        return Transaction(self.loop, transmit, on_success, on_timeout, rto=rto,
                           retransmissions=retransmissions).start()

    # --- ICE ---------------------------------------------------------------------------------------

    def _sender_check(self, remote: IceCandidateStats) -> None:
        sender = self.sender
        if sender.ice_done or sender.ice_failed:
            return
        # TURN passes a peer's packets to a relayed address only with a permission for that
        # peer: the receiver's allocation holds none for the sender's relayed address (the
        # receiver never sent from it); its host address needs none.
        through = remote.candidate_type == "host"

        def check() -> None:
            def arrived() -> bool:
                self._receiver_got_check()
                return True

            sender.checks.append(self._p2p_stun(sender, STUN_CHECK, STUN_RESPONSE,
                                                lambda: self._sender_ice_done(remote),
                                                lambda: self._check_failed(sender), responder=arrived,
                                                through=through))

        # aioice binds a channel to a peer before its first packet there (the permission comes with it).
        sender.checks.append(self._stun(UP, TURN_CHANNEL_BIND, TURN_CHANNEL_BIND_OK, check,
                                        lambda: self._check_failed(sender)))

    def _check_failed(self, peer: Peer) -> None:
        peer.failed_checks += 1
        pairs = len(self.receiver.local) if peer.role is Role.PUBLISHER else 1
        if peer.failed_checks >= pairs and not peer.ice_done:
            self._ice_fail(peer)

    def _ice_fail(self, peer: Peer) -> None:
        if not peer.ice_failed:
            peer.ice_failed = True
            self._observe(IceStateChanged(peer.role, "failed"))

    def _sender_ice_done(self, remote: IceCandidateStats) -> None:
        sender = self.sender
        if sender.ice_done or sender.ice_failed:
            return
        sender.ice_done = True
        sender.selected = (sender.local[0], remote)
        for tx in sender.checks:
            tx.cancel()
        for obs in _ICE_DONE[_PUB]:
            self._observe(obs)
        self._schedule_consent(sender)
        if sender.f1_waiting:  # a ClientHello that arrived before ICE completed waited in aioice's queue
            self._sender_f1()

    def _receiver_got_check(self) -> None:
        """A check from the sender reached the receiver's host candidate: it nominates the pair
        (aggressive nomination) and makes the sender's relayed address known; the first one
        starts a triggered check back."""
        receiver = self.receiver
        receiver.nominated = True
        if not receiver.remote:
            receiver.remote = [self.sender.local[0]]
        if not receiver.checks:
            receiver.checks.append(self._p2p_stun(receiver, STUN_CHECK, STUN_RESPONSE, self._receiver_check_ok,
                                                  lambda: self._check_failed(receiver)))
        self._receiver_maybe_done()

    def _receiver_check_ok(self) -> None:
        self.receiver.succeeded = True
        self._receiver_maybe_done()
        self._progress()

    def _receiver_maybe_done(self) -> None:
        receiver = self.receiver
        if receiver.ice_done or receiver.ice_failed or not (receiver.succeeded and receiver.nominated):
            return
        receiver.ice_done = True
        receiver.selected = (receiver.local[0], receiver.remote[0])
        for tx in receiver.checks:
            tx.cancel()
        for obs in _ICE_DONE[_SUB]:
            self._observe(obs)
        self._schedule_consent(receiver)
        self._f1 = self._dtls_tx(receiver, 1, self._sender_f1)

    # --- consent freshness -------------------------------------------------------------------------

    def _schedule_consent(self, peer: Peer) -> None:
        delay = CONSENT_INTERVAL * (0.8 + 0.4 * float(self._consent_rng.random()))
        peer.consent_at = self.loop.now + delay
        if self.consent_in_loop:
            self.loop.after(delay, self._consent, peer, tag=Tag.CONSENT)

    def _consent(self, peer: Peer) -> None:
        if peer.ice_failed:
            return
        peer.consent_at = math.inf
        self._p2p_stun(peer, STUN_CHECK, STUN_RESPONSE, lambda: self.consent_ok(peer),
                       lambda: self.consent_failed(peer), rto=CONSENT_TIMEOUT, retransmissions=0)

    def consent_ok(self, peer: Peer) -> None:
        """A consent check was answered in time (now)."""
        peer.consent_failures = 0
        peer.last_rx = max(peer.last_rx, self.loop.now)
        self._schedule_consent(peer)

    def consent_failed(self, peer: Peer) -> None:
        """A consent check went unanswered (aioice: no answer within 0.5 s, late or lost alike)."""
        peer.consent_failures += 1
        if peer.consent_failures >= CONSENT_FAILURES:
            self._ice_fail(peer)
            return
        if not peer.disconnected and self.loop.now - self._last_heard(peer) >= RECEIVE_TIMEOUT:
            peer.disconnected = True
            self._observe(IceStateChanged(peer.role, "disconnected"))
            self.loop.after(WATCH_INTERVAL, self._watch, peer, tag=Tag.WATCH)
        self._schedule_consent(peer)

    def _watch(self, peer: Peer) -> None:
        """While disconnected: back to `completed` as soon as packets arrive again."""
        if peer.ice_failed or not peer.disconnected:
            return
        if self.loop.now - self._last_heard(peer) < WATCH_INTERVAL:
            peer.disconnected = False
            self._observe(IceStateChanged(peer.role, "completed"))
        else:
            self.loop.after(WATCH_INTERVAL, self._watch, peer, tag=Tag.WATCH)

    # --- DTLS --------------------------------------------------------------------------------------

    def _dtls_tx(self, src: Peer, flight: int, then: Callable[[], None]) -> Transaction:
        def transmit(tx: Transaction) -> None:
            self._p2p(src, DTLS_FLIGHTS[flight - 1], "dtls", then)

        def gave_up() -> None:
            self._observe(DtlsStateChanged(src.role, "failed"))

        return Transaction(self.loop, transmit, lambda: None, gave_up, rto=DTLS_RTO,
                           retransmissions=DTLS_RETRANSMISSIONS).start()

    def _sender_f1(self) -> None:
        """ClientHello at the sender (the DTLS server)."""
        sender = self.sender
        if not sender.ice_done:
            sender.f1_waiting = True
            return
        if self._f2 is None:
            self._f2 = self._dtls_tx(sender, 2, self._receiver_f2)

    def _receiver_f2(self) -> None:
        if self._f1 is not None:
            self._f1.succeed()
        if self._f3 is None:
            self._f3 = self._dtls_tx(self.receiver, 3, self._sender_f3)

    def _sender_f3(self) -> None:
        sender = self.sender
        if self._f2 is not None:
            self._f2.succeed()
        # Flight 6 has no timer: it is resent whenever flight 5 shows up again.
        self._p2p(sender, DTLS_FLIGHTS[3], "dtls", self._receiver_f4)
        if sender.dtls_connected_at == math.inf:
            sender.dtls_connected_at = self.loop.now
            for obs in _DTLS_DONE[_PUB]:
                self._observe(obs)
            self._sender_up(sender)
        self._progress()

    def _receiver_f4(self) -> None:
        receiver = self.receiver
        if self._f3 is not None:
            self._f3.succeed()
        if receiver.dtls_connected_at == math.inf:
            receiver.dtls_connected_at = self.loop.now
            for obs in _DTLS_DONE[_SUB]:
                self._observe(obs)
            self._receiver_up(receiver)
        self._progress()
