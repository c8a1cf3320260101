"""The handshakes before media, event by event: signaling (TCP + WebSocket), TURN allocations,
ICE with its consent checks, and DTLS. Every control packet goes on its link at the moment the
real stack sends it (through the driver's ``send``, which first brings media up to then).

* Signaling: TCP connect (SYN retransmitted after 1, 2, 4 … s: Linux's 6 SYN retries give up
  after 127 s), WebSocket upgrade, ``ice``/``iced``, then offer/answer for the publisher, then
  for the subscriber; each message is segmented (MSS 1448) and every segment is retransmitted
  with TCP's RTO (3 × the handshake RTT, at least 200 ms, doubling). A dead link therefore never
  exhausts the SYN retries inside a step: the core's step timeout fires first → 53002, as Twilio
  Video's preflight API reports for its signaling step. The simulator never produces 53000 (no
  server refusal in the scenario format).
* TURN: ``iced`` hands out one TURN server; the publisher is relay-only (Twilio Video's preflight
  setup), both peer connections allocate (Allocate → 401 → Allocate) before sending their offer
  (aiortc gathers before the SDP goes out), and a relayed pair costs a ChannelBind before its
  first check. The server's checks towards the client's relay address are dropped by TURN until
  that ChannelBind installed the permission — the 0.5 s retransmission measured in
  docs/references.md#aiortc-and-aioice.
* ICE (aioice): checks paced 20 ms apart in priority order, each a STUN transaction (RTO 0.5 s
  doubling, 6 retransmissions); the client is controlling with aggressive nomination, so its
  first answered check completes it; the server completes once its own check on the nominated
  pair succeeded and the client's nominating check arrived, and then cancels its remaining
  checks (aioice's ``connect()``). Checks are answered as soon as they arrive.
* Consent freshness: one unretransmitted check every 4–6 s (0.5 s to answer); 6 failures in a
  row → ``failed``. A failed check while nothing at all has arrived on that connection for
  2.5 s (libwebrtc's receiving timeout) is fed to the core as ``disconnected`` — a browser stack
  says so, aiortc keeps quiet — and ``completed`` follows as soon as packets flow again. Once
  the driver batches media, the steady state plans the checks with its intervals
  (:attr:`Handshakes.consent_in_loop`) and reports their outcomes here.
* DTLS 1.2: the server (answerer, ``setup:active``) sends ClientHello once its ICE completes;
  four flights, each retransmitted on OpenSSL's timer (1 s, doubling); a duplicate of flight 5
  makes the client resend its Finished.
* Not modelled: processing time on either end, TURN refreshes, server-side consent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from rtcprobe.core.config import Kind
from rtcprobe.core.observations import (
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
    ANSWER_PUBLISHER,
    ANSWER_SUBSCRIBER,
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
    OFFER_PUBLISHER,
    OFFER_SUBSCRIBER,
    RECEIVE_TIMEOUT,
    RELAY_PREF,
    SERVER_IP,
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


class Send(Protocol):
    """Puts one control packet on a link now; ``then(*args)`` runs (tagged ``tag``) when it arrives."""

    def __call__(self, direction: str, size: int, kind: str, then: Callable[..., None] | None = None,
                 *args: Any, tag: Tag = Tag.HANDSHAKE) -> None: ...


class PeerConnection:
    """One peer connection: the client's end and the server's end."""

    def __init__(self, role: Role, relay_only: bool, turn: bool, ports: list[int]) -> None:
        self.role = role
        tid = f"transport-{role.value}"
        host = IceCandidateStats(tid, "host", ports[0], CLIENT_IP, priority(HOST_PREF), "udp")
        relay = IceCandidateStats(tid, "relay", ports[1], TURN_IP, priority(RELAY_PREF), "udp",
                                  url=TURN_URL, relay_protocol="udp")
        self.local: list[IceCandidateStats] = ([] if relay_only else [host]) + ([relay] if turn else [])
        self.remote = IceCandidateStats(tid, "host", ports[2], SERVER_IP, priority(HOST_PREF), "udp")
        self.turn = turn
        # client side
        self.ice_done = self.ice_failed = False
        self.selected: IceCandidateStats | None = None
        self.checks: list[Transaction] = []
        self.failed_checks = 0
        self.permission_at = math.inf  # TURN lets the server's packets through to the relay from then
        self.dtls_connected_at = math.inf
        self.f1_waiting = False
        self.consent_failures = 0
        self.consent_at = math.inf  # the next consent check, once scheduled
        self.disconnected = False
        self.last_rx = 0.0  # last RTCP/STUN from the server on this connection
        # server side
        self.s_success: dict[str, float] = {}
        self.s_nominated: dict[str, float] = {}
        self.s_ice_done = False
        self.s_checks: list[Transaction] = []
        self.s_key: str | None = None
        self.s_dtls_connected_at = math.inf
        self.s_got_f2 = False
        self.f1_tx: Transaction | None = None
        self.f2_tx: Transaction | None = None
        self.f3_tx: Transaction | None = None

    @property
    def extra(self) -> int:
        """ChannelData bytes on each packet of the pair in use (the client's choice, else the server's)."""
        key = self.selected.candidate_type if self.selected is not None else self.s_key
        return CHANNELDATA_OVERHEAD if key == "relay" else 0

    @property
    def up(self) -> bool:
        """DTLS is up at both ends."""
        return self.dtls_connected_at < math.inf and self.s_dtls_connected_at < math.inf

    def heard(self, t: float) -> None:
        """The client received something from the server on this connection at ``t``."""
        self.last_rx = max(self.last_rx, t)


class Handshakes:
    """Both ends' signaling, ICE, consent and DTLS. The driver supplies the wire (``send``), the
    core (``observe``) and what happens next:

    * ``client_up(pc)`` / ``server_up(pc)``: DTLS is up at that end (its media may flow);
    * ``progress()``: a handshake step finished (the driver may switch to batches);
    * ``last_heard(pc)``: when the client last received anything on ``pc`` (media included).
    """

    def __init__(self, loop: EventLoop, send: Send, observe: Callable[[Observation], None], *,
                 ports: list[int], tracks: tuple[Kind, ...], consent_rng: np.random.Generator,
                 client_up: Callable[[PeerConnection], None], server_up: Callable[[PeerConnection], None],
                 progress: Callable[[], None], last_heard: Callable[[PeerConnection], float]) -> None:
        self.loop = loop
        self._send = send
        self._observe = observe
        self._ports = ports
        self._tracks = tracks
        self._consent_rng = consent_rng
        self._client_up = client_up
        self._server_up = server_up
        self._progress = progress
        self._last_heard = last_heard
        self.pcs: dict[Role, PeerConnection] = {}
        self.ice_servers: tuple[IceServer, ...] = ()
        # False once the steady state plans consent checks with its intervals (it then reports
        # their outcomes through consent_ok / consent_failed).
        self.consent_in_loop = True
        self._tcp_rto = 1.0
        self._tcp_delivered = {UP: 0.0, DOWN: 0.0}

    @property
    def now(self) -> float:
        return self.loop.now

    # --- signaling: TCP + WebSocket ----------------------------------------------------------------

    def connect_signaling(self) -> None:
        state = {"sent": 0.0}

        def transmit(tx: Transaction) -> None:
            state["sent"] = self.now
            self._send(UP, SYN, "tcp", self._srv_syn, tx, state)

        Transaction(self.loop, transmit, lambda: None, rto=TCP_SYN_RTO, retransmissions=TCP_SYN_RETRIES).start()

    def _srv_syn(self, tx: Transaction, state: dict[str, float]) -> None:
        self._send(DOWN, SYN, "tcp", self._cli_synack, tx, state)

    def _cli_synack(self, tx: Transaction, state: dict[str, float]) -> None:
        if tx.done:
            return
        rtt = self.now - state["sent"]
        self._tcp_rto = max(TCP_MIN_RTO, 3 * rtt)  # srtt + 4 * rttvar with rttvar = rtt / 2
        tx.succeed()
        self._send(UP, TCP_HEADER, "tcp")  # the handshake's ACK
        self._tcp_message(UP, HTTP_UPGRADE, lambda: self._tcp_message(DOWN, HTTP_101, self._ws_open))

    def _ws_open(self) -> None:
        self._tcp_message(UP, WS_ICE, lambda: self._tcp_message(DOWN, WS_ICED, self._iced))

    def _iced(self) -> None:
        self.ice_servers = (IceServer((TURN_URL,), "86400:rtcprobe-sim", "sim-credential"),)
        self._observe(SignalingConnected(self.ice_servers))

    def _tcp_message(self, direction: str, size: int, on_delivered: Callable[[], None]) -> None:
        """Send ``size`` bytes reliably; ``on_delivered`` runs once every segment is in."""
        segments = [TCP_MSS] * (size // TCP_MSS) + ([size % TCP_MSS] if size % TCP_MSS else [])
        pending = {"left": len(segments), "last": 0.0}

        def arrived() -> None:
            pending["left"] -= 1
            pending["last"] = max(pending["last"], self.now)
            if pending["left"] == 0:
                # In-order delivery: a message never overtakes the previous one on the stream.
                t = max(pending["last"], self._tcp_delivered[direction])
                self._tcp_delivered[direction] = t
                self.loop.at(t, on_delivered, tag=Tag.HANDSHAKE)

        for seg in segments:
            def transmit(tx: Transaction, seg: int = seg) -> None:
                self._send(direction, seg + TCP_HEADER, "tcp", tx.succeed)

            Transaction(self.loop, transmit, arrived, rto=self._tcp_rto, retransmissions=TCP_RETRIES).start()

    # --- peer connections ----------------------------------------------------------------------------

    def open_peer_connections(self, relay_only: bool) -> None:
        turn = any(s.urls for s in self.ice_servers)
        p = self._ports
        self.pcs[Role.PUBLISHER] = PeerConnection(Role.PUBLISHER, relay_only and turn, turn, [p[0], p[1], p[2]])
        self.pcs[Role.SUBSCRIBER] = PeerConnection(Role.SUBSCRIBER, False, turn, [p[3], p[4], p[5]])
        self._gather(self.pcs[Role.PUBLISHER], lambda: self._tcp_message(
            UP, OFFER_PUBLISHER, lambda: self._srv_offer(Role.PUBLISHER)))

    def _gather(self, pc: PeerConnection, then: Callable[[], None]) -> None:
        """Host candidates are instant; a TURN allocation takes Allocate → 401 → Allocate."""
        if not pc.turn:
            then()
            return
        def authenticated() -> None:
            self._stun(UP, TURN_ALLOCATE_AUTH, TURN_ALLOCATE_OK, then)

        self._stun(UP, TURN_ALLOCATE, TURN_401, authenticated)

    def _stun(self, direction: str, req: int, resp: int, on_success: Callable[[], None],
              on_timeout: Callable[[], None] | None = None, *, responder: Callable[[], bool] | None = None,
              rto: float = STUN_RTO, retransmissions: int = STUN_RETRANSMISSIONS) -> Transaction:
        """A STUN transaction between the client and the server side (either way round), on
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

    def _srv_offer(self, role: Role) -> None:
        """The server got an offer: it answers and starts its ICE agent at once."""
        pc = self.pcs[role]
        self._srv_ice_start(pc)
        size = ANSWER_PUBLISHER if role is Role.PUBLISHER else ANSWER_SUBSCRIBER
        self._tcp_message(DOWN, size, lambda: self._cli_answer(role))

    def _cli_answer(self, role: Role) -> None:
        pc = self.pcs[role]
        if role is Role.PUBLISHER:
            sub = self.pcs[Role.SUBSCRIBER]
            self._gather(sub, lambda: self._tcp_message(
                UP, OFFER_SUBSCRIBER, lambda: self._srv_offer(Role.SUBSCRIBER)))
        else:
            for kind in self._tracks:  # aiortc fires `track` in setRemoteDescription
                self._observe(TrackSubscribed(kind))
        self._cli_ice_start(pc)

    # --- ICE ---------------------------------------------------------------------------------------

    def _cli_ice_start(self, pc: PeerConnection) -> None:
        self._observe(IceStateChanged(pc.role, "checking"))
        self._observe(ConnectionStateChanged(pc.role, "connecting"))
        for i, cand in enumerate(pc.local):  # already in priority order: host before relay
            self.loop.after(i * ICE_PACING, self._cli_check_start, pc, cand, tag=Tag.HANDSHAKE)
        if not pc.local:
            self._cli_ice_fail(pc)

    def _cli_check_start(self, pc: PeerConnection, cand: IceCandidateStats) -> None:
        if pc.ice_done or pc.ice_failed:
            return
        relay = cand.candidate_type == "relay"
        extra = CHANNELDATA_OVERHEAD if relay else 0

        def check() -> None:
            def arrived_at_server() -> bool:
                key = cand.candidate_type
                pc.s_nominated.setdefault(key, self.now)  # every check nominates (aggressive)
                self._srv_maybe_done(pc)
                return True

            tx = self._stun(UP, STUN_CHECK + extra, STUN_RESPONSE + extra, lambda: self._cli_ice_done(pc, cand),
                            lambda: self._cli_check_failed(pc), responder=arrived_at_server)
            pc.checks.append(tx)

        if relay:
            def bound() -> bool:
                pc.permission_at = min(pc.permission_at, self.now)
                return True

            pc.checks.append(self._stun(UP, TURN_CHANNEL_BIND, TURN_CHANNEL_BIND_OK, check,
                                        lambda: self._cli_check_failed(pc), responder=bound))
        else:
            check()

    def _cli_check_failed(self, pc: PeerConnection) -> None:
        pc.failed_checks += 1
        if pc.failed_checks >= len(pc.local) and not pc.ice_done:
            self._cli_ice_fail(pc)

    def _cli_ice_fail(self, pc: PeerConnection) -> None:
        if not pc.ice_failed:
            pc.ice_failed = True
            self._observe(IceStateChanged(pc.role, "failed"))

    def _cli_ice_done(self, pc: PeerConnection, cand: IceCandidateStats) -> None:
        if pc.ice_done or pc.ice_failed:
            return
        pc.ice_done = True
        pc.selected = cand
        for tx in pc.checks:
            tx.cancel()
        self._observe(IceStateChanged(pc.role, "completed"))
        self._observe(DtlsStateChanged(pc.role, "connecting"))
        self._schedule_consent(pc)
        if pc.f1_waiting:  # a ClientHello that arrived before ICE completed waited in aioice's queue
            self._cli_f1(pc)

    def _srv_ice_start(self, pc: PeerConnection) -> None:
        for i, cand in enumerate(pc.local):
            self.loop.after(i * ICE_PACING, self._srv_check, pc, cand, tag=Tag.HANDSHAKE)

    def _srv_check(self, pc: PeerConnection, cand: IceCandidateStats) -> None:
        relay = cand.candidate_type == "relay"
        extra = CHANNELDATA_OVERHEAD if relay else 0
        key = cand.candidate_type

        def transmit(tx: Transaction) -> None:
            # Towards a relay address the check goes through TURN, which drops it until the
            # client's ChannelBind installed a permission for the server.
            if relay and self.now < pc.permission_at:
                return
            self._send(DOWN, STUN_CHECK + extra, "stun", answer, tx)

        def answer(tx: Transaction) -> None:
            self._send(UP, STUN_RESPONSE + extra, "stun", tx.succeed)

        def success() -> None:
            pc.s_success.setdefault(key, self.now)
            self._srv_maybe_done(pc)
            self._progress()

        tx = Transaction(self.loop, transmit, success)
        pc.s_checks.append(tx)
        tx.start()

    def _srv_maybe_done(self, pc: PeerConnection) -> None:
        if pc.s_ice_done:
            return
        for key in pc.s_success:
            if key in pc.s_nominated:
                pc.s_ice_done = True
                pc.s_key = key
                for tx in pc.s_checks:  # aioice's connect(): "cancel remaining checks"
                    tx.cancel()
                self._srv_dtls_start(pc)
                return

    # --- consent freshness -------------------------------------------------------------------------

    def _schedule_consent(self, pc: PeerConnection) -> None:
        delay = CONSENT_INTERVAL * (0.8 + 0.4 * float(self._consent_rng.random()))
        pc.consent_at = self.now + delay
        if self.consent_in_loop:
            self.loop.after(delay, self._consent, pc, tag=Tag.CONSENT)

    def _consent(self, pc: PeerConnection) -> None:
        if pc.ice_failed:
            return
        pc.consent_at = math.inf
        extra = pc.extra
        self._stun(UP, STUN_CHECK + extra, STUN_RESPONSE + extra, lambda: self.consent_ok(pc),
                   lambda: self.consent_failed(pc), rto=CONSENT_TIMEOUT, retransmissions=0)

    def consent_ok(self, pc: PeerConnection) -> None:
        """A consent check was answered in time (now)."""
        pc.consent_failures = 0
        pc.last_rx = self.now
        self._schedule_consent(pc)

    def consent_failed(self, pc: PeerConnection) -> None:
        """A consent check went unanswered (aioice: no answer within 0.5 s, late or lost alike)."""
        pc.consent_failures += 1
        if pc.consent_failures >= CONSENT_FAILURES:
            pc.ice_failed = True
            self._observe(IceStateChanged(pc.role, "failed"))
            return
        if not pc.disconnected and self.now - self._last_heard(pc) >= RECEIVE_TIMEOUT:
            pc.disconnected = True
            self._observe(IceStateChanged(pc.role, "disconnected"))
            self.loop.after(WATCH_INTERVAL, self._watch, pc, tag=Tag.WATCH)
        self._schedule_consent(pc)

    def _watch(self, pc: PeerConnection) -> None:
        """While disconnected: back to `completed` as soon as packets arrive again."""
        if pc.ice_failed or not pc.disconnected:
            return
        if self.now - self._last_heard(pc) < WATCH_INTERVAL:
            pc.disconnected = False
            self._observe(IceStateChanged(pc.role, "completed"))
        else:
            self.loop.after(WATCH_INTERVAL, self._watch, pc, tag=Tag.WATCH)

    # --- DTLS --------------------------------------------------------------------------------------

    def _dtls_tx(self, direction: str, flight: int, pc: PeerConnection,
                 then: Callable[[PeerConnection], None]) -> Transaction:
        def transmit(tx: Transaction) -> None:
            self._send(direction, DTLS_FLIGHTS[flight - 1] + pc.extra, "dtls", then, pc)

        def gave_up() -> None:
            if direction == UP:  # the client's own handshake timed out: aiortc says `failed`
                self._observe(DtlsStateChanged(pc.role, "failed"))

        return Transaction(self.loop, transmit, lambda: None, gave_up, rto=DTLS_RTO,
                           retransmissions=DTLS_RETRANSMISSIONS).start()

    def _srv_dtls_start(self, pc: PeerConnection) -> None:
        pc.f1_tx = self._dtls_tx(DOWN, 1, pc, self._cli_f1)

    def _cli_f1(self, pc: PeerConnection) -> None:
        if not pc.ice_done:
            pc.f1_waiting = True
            return
        if pc.f2_tx is None:
            pc.f2_tx = self._dtls_tx(UP, 2, pc, self._srv_f2)

    def _srv_f2(self, pc: PeerConnection) -> None:
        if pc.f1_tx is not None:
            pc.f1_tx.succeed()
        if not pc.s_got_f2:
            pc.s_got_f2 = True
            pc.f3_tx = self._dtls_tx(DOWN, 3, pc, self._cli_f3)

    def _cli_f3(self, pc: PeerConnection) -> None:
        if pc.f2_tx is not None:
            pc.f2_tx.succeed()
        # Flight 6 has no timer: it is resent whenever flight 5 shows up again.
        self._send(UP, DTLS_FLIGHTS[3] + pc.extra, "dtls", self._srv_f4, pc)
        if pc.dtls_connected_at == math.inf:
            pc.dtls_connected_at = self.now
            self._observe(DtlsStateChanged(pc.role, "connected"))
            self._observe(ConnectionStateChanged(pc.role, "connected"))
            self._client_up(pc)

    def _srv_f4(self, pc: PeerConnection) -> None:
        if pc.f3_tx is not None:
            pc.f3_tx.succeed()
        if pc.s_dtls_connected_at == math.inf:
            pc.s_dtls_connected_at = self.now
            self._server_up(pc)
        self._progress()
