"""The simulated-network driver: a preflight over a scenario's links, on a virtual clock.

Theory of operation
-------------------
:class:`SimDriver` plays both ends of a preflight — the client (publisher + subscriber peer
connections) and the server (signaling, TURN, and an SFU-style peer that forwards the
publisher's RTP to the subscriber) — and feeds the core's :class:`PreflightMachine` exactly the
observations a real aiortc driver produces, at the virtual times they would happen. Every packet
the real stack would send crosses the scenario's uplink (client→server) or downlink
(server→client) :class:`~rtcprobe.netem.Link`; nothing else is on the path (the TURN server and
the SFU sit together on the server side, 192.0.2.0/24 TEST-NET addresses).

Time order on a link is the one invariant. The run has two regimes:

1. **Handshakes (event-driven).** Until both peer connections are up at both ends and media has
   started at the subscriber, every control packet (TCP, STUN, DTLS, RTCP) goes one at a time
   and the media pipeline is brought up to ``now`` (:meth:`SimDriver.sync`) before any control
   packet leaves, so media moves in small arrays (a loop over ``Link.send`` when a batch is
   small, which is cheaper). Until the subscriber has started media, ``sync`` also runs at every
   media send and arrival time, so the moments the core sees (``MediaStarted``) are exact.
2. **Steady state (interval batches, :meth:`SimDriver._tick`).** As soon as nothing event-driven
   can put a packet on a link any more (:meth:`SimDriver._maybe_steady`: handshakes done, media
   started, only RTCP/REMB timers, consent checks and harmless events pending), the driver runs
   ahead of the event loop one interval [T, T') at a time: it generates the interval's RTP
   (audio frames, packetized VP8 frames) as arrays, merges them with the control packets whose
   send times are known in advance (SR/RR on their randomized timers, the subscriber's REMBs,
   consent checks), and sends the whole uplink in ONE ``send_batch``; then the server's side
   (its receive statistics, its RRs, SRs and REMBs on their timers, consent answers, the
   forwarded RTP departing at the uplink delivery times) in ONE ``send_batch`` on the downlink;
   then the subscriber's arrivals. Receive statistics are cumulative per-packet arrays
   (:mod:`._steady`: RFC 3550 jitter is a linear recurrence, lost = sequence span − received)
   queried "as of time t" for each RTCP report and stats sample; the client reads the RTCP that
   reached it when it needs to (a sample, a consent failure). Only the few things the core must
   see at exact times go back into the event loop (consent outcomes → ICE states).

   Granularity (documented simplifications of the steady state): T is always one of the
   server's REMB times and an interval spans ``REMB_PERIODS_PER_INTERVAL`` (2) REMB periods,
   i.e. 1 s. The REMB sent at T goes out before the interval's uplink, so the encoder follows it
   (and PLIs) at their exact arrival times; the REMB sent inside the interval takes effect at the
   next interval (≤ 0.5 s late) and uses the subscriber's estimate known at T. The subscriber's
   REMB goes out every 500 ms once it has received video (aiortc skips a window without video:
   here that packet repeats no estimate and the server keeps the previous one); its RR goes out
   once it has heard from the stream (known at T). The last interval ends at the last stats
   sample.

What is modelled, and how (decisions worth knowing)
---------------------------------------------------
* Signaling: TCP connect (SYN retransmitted after 1, 2, 4 … s: Linux's 6 SYN retries give up
  after 127 s), WebSocket upgrade, ``ice``/``iced``, then offer/answer for the publisher, then
  for the subscriber; each message is segmented (MSS 1448) and every segment is retransmitted
  with TCP's RTO (3 × the handshake RTT, at least 200 ms, doubling). A dead link therefore never
  exhausts the SYN retries inside a step: the core's step timeout fires first → 53002, as the
  anchor's TURN/signaling step does. The simulator never produces 53000 (no server refusal in
  the scenario format).
* TURN: ``iced`` hands out one TURN server; the publisher is relay-only (the anchor's setup),
  both peer connections allocate (Allocate → 401 → Allocate) before sending their offer
  (aiortc gathers before the SDP goes out), and a relayed pair costs a ChannelBind before its
  first check. The server's checks towards the client's relay address are dropped by TURN until
  that ChannelBind installed the permission — the 0.5 s retransmission REFERENCE.md F measured.
* ICE (aioice): checks paced 20 ms apart in priority order, each a STUN transaction (RTO 0.5 s
  doubling, 6 retransmissions); the client is controlling with aggressive nomination, so its
  first answered check completes it; the server completes once its own check on the nominated
  pair succeeded and the client's nominating check arrived, and then cancels its remaining
  checks (aioice's ``connect()``). Checks are answered as soon as they arrive. Consent
  freshness: one unretransmitted check every 4–6 s (0.5 s to answer); 6 failures in a row →
  ``failed``. A failed check while nothing at all has arrived on that connection for
  2.5 s (libwebrtc's receiving timeout) is fed to the core as ``disconnected`` — a browser stack
  says so, aiortc keeps quiet — and ``completed`` follows as soon as packets flow again.
* DTLS 1.2: the server (answerer, ``setup:active``) sends ClientHello once its ICE completes;
  four flights, each retransmitted on OpenSSL's timer (1 s, doubling); a duplicate of flight 5
  makes the client resend its Finished.
* Media: Opus 96 kbit/s in 20 ms packets; VP8 frames packetized at aiortc's 1300-byte limit and
  sent back to back (aiortc has no pacer), rate from :mod:`._media`. The SFU forwards RTP
  packets with their sequence numbers, so uplink loss shows up at the subscriber (aiortc's own
  server decodes and re-encodes instead — a documented difference). It asks the publisher for a
  keyframe (PLI) when the subscriber joins; the subscriber asks again every 500 ms while it has
  video it cannot decode. REMB: the server's estimate of the uplink, capped by the subscriber's
  estimate of the downlink (an SFU forwards the lower), drives the publisher's encoder.
* RTCP (aiortc): every sender sends SR and every receiver RR at 0.5–1.5 s random intervals;
  RR carries fraction lost, cumulative lost and RFC 3550 jitter; the publisher's rtt comes from
  an RR echoing its latest SR (smoothed with aiortc's 0.85 EWMA), so it is unknown until then.
* Not modelled: processing time on either end, NACK/RTX, TURN refreshes, server-side consent.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Callable
from typing import Final

import attrs
import numpy as np
from rtcprobe.core.config import PreflightConfig
from rtcprobe.core.observations import (
    AcquireMedia,
    Completed,
    ConnectionStateChanged,
    ConnectSignaling,
    DtlsStateChanged,
    Event,
    Failed,
    IceServer,
    IceStateChanged,
    InboundStats,
    MediaAcquired,
    MediaStarted,
    Observation,
    OpenPeerConnections,
    OutboundStats,
    Role,
    SampleStats,
    SignalingConnected,
    StatsObserved,
    StatsSample,
    StopRequested,
    TearDown,
    TrackSubscribed,
)
from rtcprobe.core.preflight import PreflightMachine
from rtcprobe.core.quality import QualityInput
from rtcprobe.core.report import IceCandidateStats, PreflightReport, RunInfo, SelectedCandidatePair
from rtcprobe.netem.models import LinkCounters
from rtcprobe.netem.scenario import Scenario

from ._media import (
    AUDIO,
    CHANNELDATA_OVERHEAD,
    CLOCK_RATE,
    KIND_NAMES,
    REMB_INTERVAL,
    VIDEO,
    AudioSource,
    Lookahead,
    Packets,
    ReceiverStats,
    RembEstimator,
    VideoSource,
)
from ._net import DOWN, UP, EventLoop, PacketRecord, Path, Pending, Tag, Transaction
from ._steady import SendLog, Timeline

# --- addresses (TEST-NET-1, RFC 5737: never a real host) -----------------------------------------
CLIENT_IP: Final = "192.0.2.10"
SERVER_IP: Final = "192.0.2.20"
TURN_IP: Final = "192.0.2.1"
TURN_PORT: Final = 3478
TURN_URL: Final = f"turn:{TURN_IP}:{TURN_PORT}?transport=udp"

# --- packet sizes on the wire (IPv4 bytes), estimates for aiortc/aioice/coturn messages --------
TCP_HEADER: Final = 52  # IPv4 20 + TCP 32 (with timestamps)
TCP_MSS: Final = 1448
SYN: Final = 60
HTTP_UPGRADE: Final = 260
HTTP_101: Final = 160
WS_ICE: Final = 560  # the `ice` hello with its JWT
WS_ICED: Final = 340  # `iced` with one TURN server and REST credentials
OFFER_PUBLISHER: Final = 3100  # JSON-escaped SDP, all of aiortc's codecs and candidates
ANSWER_PUBLISHER: Final = 2500
OFFER_SUBSCRIBER: Final = 2700
ANSWER_SUBSCRIBER: Final = 2300
STUN_CHECK: Final = 128  # Binding request: USERNAME, PRIORITY, ICE-CONTROLLING, USE-CANDIDATE, MI, FP
STUN_RESPONSE: Final = 92
TURN_ALLOCATE: Final = 64
TURN_401: Final = 108
TURN_ALLOCATE_AUTH: Final = 168
TURN_ALLOCATE_OK: Final = 112
TURN_CHANNEL_BIND: Final = 160
TURN_CHANNEL_BIND_OK: Final = 80
# ClientHello; ServerHello..ServerHelloDone (ECDSA certificate); Certificate..Finished; CCS+Finished.
DTLS_FLIGHTS: Final = (218, 748, 708, 95)
RTCP_SR: Final = 94  # SR + SDES, SRTCP
RTCP_RR: Final = 74
RTCP_REMB: Final = 70
RTCP_PLI: Final = 54

# --- timers --------------------------------------------------------------------------------------
TCP_SYN_RTO: Final = 1.0  # Linux initial RTO
TCP_SYN_RETRIES: Final = 6  # net.ipv4.tcp_syn_retries
TCP_MIN_RTO: Final = 0.2
TCP_RETRIES: Final = 15  # net.ipv4.tcp_retries2
ICE_PACING: Final = 0.020  # aioice connect(): one check every 20 ms
CONSENT_INTERVAL: Final = 5.0  # aioice CONSENT_INTERVAL, randomized x0.8..1.2
CONSENT_FAILURES: Final = 6
# `disconnected` needs a failed consent check *and* this long without receiving anything on the
# peer connection (libwebrtc's 2.5 s receiving timeout); a late answer on a long path is no outage.
RECEIVE_TIMEOUT: Final = 2.5
WATCH_INTERVAL: Final = 0.5
DTLS_RTO: Final = 1.0  # OpenSSL's initial DTLS timer
DTLS_RETRANSMISSIONS: Final = 12  # OpenSSL DTLS1_TMO_ALERT_COUNT
RTCP_MIN, RTCP_SPAN = 0.5, 1.0  # aiortc: sleep(0.5 + random())
RTT_ALPHA: Final = 0.85  # aiortc rtcrtpsender.RTT_ALPHA
PLI_INTERVAL: Final = 0.5  # the subscriber's keyframe requests: at most one per 500 ms
DLSR_UNIT: Final = 65536  # RTCP DLSR is in 1/65536 s
# Steady state: one batch per link per this many of the server's REMB periods (or per this
# many seconds without video). The publisher's encoder follows a REMB at its exact arrival time
# when the REMB opens the interval; a REMB sent inside an interval takes effect at the next one.
REMB_PERIODS_PER_INTERVAL: Final = 2
AUDIO_ONLY_INTERVAL: Final = 1.0
# Batches only once media started at the subscriber: until then the subscriber's keyframe requests
# (PLI) and the moment media starts are event-driven and exact. (False: batches from the end of
# the handshakes on, media start read off the arrays, PLIs at interval boundaries — cheaper, but a
# lost keyframe then costs up to two intervals.)
STEADY_AFTER_MEDIA_STARTED: Final = True

HOST_PREF, RELAY_PREF = 126, 0  # RFC 8445 type preferences


# The switch to batches: what the steady state plans itself, and what it can ignore.
RTCP_TIMERS: Final = frozenset({Tag.PUB_SR, Tag.SUB_RR, Tag.SRV_RR, Tag.SRV_SR})
TAKEN_OVER: Final = RTCP_TIMERS | {
    Tag.SRV_REMB_TIMER, Tag.SUB_REMB_TIMER, Tag.PUB_GOT_RR, Tag.PUB_GOT_REMB, Tag.SRV_GOT_SR,
    Tag.SRV_GOT_REMB, Tag.CONSENT, Tag.PUB_GOT_PLI, Tag.SRV_GOT_PLI}
HARMLESS: Final = frozenset({Tag.WATCH, Tag.OBSERVE, Tag.FINE_TICK, Tag.MAYBE_STEADY})


def _dropped_at_the_switch(p: Pending) -> bool:
    """Taken over by the steady state, or moot once in it (the event pipeline's ticks, the
    switch's own retries, retries of finished transactions)."""
    return (p.tag in TAKEN_OVER or p.tag is Tag.FINE_TICK or p.tag is Tag.MAYBE_STEADY
            or (p.tag is Tag.RETRY and p.args[0].done))


def _priority(type_pref: int) -> int:
    return (type_pref << 24) + (65535 << 8) + (256 - 1)


@attrs.frozen
class SimResult:
    """What one simulated run produced."""

    report: PreflightReport
    events: tuple[Event, ...]  # the core's events, in order
    uplink: LinkCounters
    downlink: LinkCounters
    packets: int  # packets offered to the two links
    sim_time: float  # virtual seconds simulated
    packet_log: tuple[PacketRecord, ...] = ()  # only with packet_log=True
    # What the core's network-quality scorer was fed, (now, input) in order: enough to re-score.
    scorer_inputs: tuple[tuple[float, QualityInput], ...] = ()


class _Sender:
    """One publisher RTP sender's view of RTCP (what getStats' outbound/remote-inbound give)."""

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0
        self.sr_sent_at: float | None = None  # the latest SR: RTT is only measured against it
        self.rtt: float | None = None
        self.jitter: float | None = None
        self.fraction_lost: float | None = None
        self.lost: int | None = None
        self.remb: float | None = None


class _Pc:
    """One peer connection: the client's end and the server's end."""

    def __init__(self, role: Role, relay_only: bool, turn: bool, ports: list[int]) -> None:
        self.role = role
        tid = f"transport-{role.value}"
        host = IceCandidateStats(tid, "host", ports[0], CLIENT_IP, _priority(HOST_PREF), "udp")
        relay = IceCandidateStats(tid, "relay", ports[1], TURN_IP, _priority(RELAY_PREF), "udp",
                                  url=TURN_URL, relay_protocol="udp")
        self.local: list[IceCandidateStats] = ([] if relay_only else [host]) + ([relay] if turn else [])
        self.remote = IceCandidateStats(tid, "host", ports[2], SERVER_IP, _priority(HOST_PREF), "udp")
        self.turn = turn
        self.relay_only = relay_only
        # client side
        self.ice_started = self.ice_done = self.ice_failed = False
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
        self.s_started = False
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


class _Queue:
    """Packets on their way to one end, kept sorted by arrival time."""

    def __init__(self, reorder: bool) -> None:
        self.q = Packets.empty()
        self.min = math.inf  # earliest arrival still queued
        self.reorder = reorder  # the link may deliver out of order: sort on the way in

    def push(self, p: Packets) -> None:
        if self.reorder and len(p) > 1:
            p = p.take(np.argsort(p.t, kind="stable"))
        q = Packets.concat([self.q, p])
        if self.reorder and len(self.q) and len(p) and p.t[0] < self.q.t[-1]:
            q = q.take(np.argsort(q.t, kind="stable"))
        self.q = q
        self.min = float(q.t[0]) if len(q) else math.inf

    def pop_until(self, t: float, accept_at: float) -> Packets:
        """Everything arrived by ``t``, minus what came before its end could decrypt it
        (``accept_at``: that end's DTLS handshake finished)."""
        k = int(np.searchsorted(self.q.t, t, side="right"))
        got, self.q = self.q.take(slice(0, k)), self.q.take(slice(k, None))
        self.min = float(self.q.t[0]) if len(self.q) else math.inf
        if len(got) and got.t[0] < accept_at:
            got = got.take(got.t >= accept_at)
        return got


class SimDriver:
    """Runs one preflight over a scenario. Use :func:`run_simulation`."""

    def __init__(self, scenario: Scenario, seed: int, *, packet_log: bool = False,
                 stop_at: float | None = None, on_event: Callable[[Event], None] | None = None,
                 version: str = "0") -> None:
        self.scenario = scenario
        self.seed = seed
        root = np.random.default_rng(seed)
        link_rng, self.media_rng, self.rtcp_rng, self.consent_rng, addr_rng = root.spawn(5)
        uplink, downlink = scenario.build_links(link_rng)
        self.path = Path(uplink, downlink, log=packet_log)
        self.loop = EventLoop()
        self.config = PreflightConfig(duration=scenario.duration, media=scenario.media, relay_only=True)
        self.core = PreflightMachine(self.config, run=RunInfo("sim", version, scenario.name, seed))
        self.on_event = on_event
        self.events: list[Event] = []
        self.stop_at = stop_at
        self.done = False
        ports = [int(p) for p in addr_rng.integers(49152, 65536, size=6)]
        self.pcs: dict[Role, _Pc] = {}
        self._ports = ports
        self.ice_servers: tuple[IceServer, ...] = ()
        self.tcp_rto = 1.0
        self._tcp_delivered = {UP: 0.0, DOWN: 0.0}
        # media state
        media = scenario.media
        self.kinds = [k for k, on in ((AUDIO, media.audio), (VIDEO, media.video is not None)) if on]
        self.sources: dict[int, Lookahead] = {}
        self.senders = {k: _Sender() for k in self.kinds}
        self.srv_stats = {k: ReceiverStats(CLOCK_RATE[k]) for k in self.kinds}
        self.sub_stats = {k: ReceiverStats(CLOCK_RATE[k]) for k in self.kinds}
        self.srv_sr: dict[int, tuple[float, float]] = {}  # kind -> (SR id = send time, arrival)
        self.srv_est = RembEstimator()
        self.sub_est = RembEstimator()
        self.sub_remb: float | None = None
        def reorders(link: str) -> bool:
            return any(c.reorder for c in (getattr(scenario, link), *(c for _, c in getattr(scenario.phases, link))))

        self.srv_q = _Queue(reorders(UP))  # arrived (or arriving) at the server, not yet processed
        self.sub_q = _Queue(reorders(DOWN))  # arriving at the subscriber
        self.srv_accept_at = math.inf  # the server's publisher-side DTLS is up
        self.forward_at = math.inf  # the server's subscriber-side DTLS is up: forwarding starts
        self.sub_accept_at = math.inf
        self.fine = False  # sync at every media event until media started
        self._fine_at = math.inf
        self.started: set[int] = set()
        self._key_counts: dict[int, int] = {}
        self._last_pli = -math.inf
        self._in_sync = False
        self.sub_last_rx = 0.0  # last media packet at the subscriber
        # steady state (interval batches), see _enter_steady
        self.steady = False
        self._core_touched = True
        self.end_hint = math.inf  # when the last stats sample falls, once known
        self._tick_at = math.inf

    # --- main loop -------------------------------------------------------------------------------

    def run(self) -> SimResult:
        core, loop = self.core, self.loop
        core.start(0.0, epoch_ms=0.0)
        self._pump()
        if self.stop_at is not None:
            loop.at(self.stop_at, self._observe, StopRequested(), tag=Tag.OBSERVE)
        tc: float | None = None
        while not self.done and core.report is None:
            if self._core_touched:  # the core's deadline only moves when the core is fed
                self._core_touched = False
                tc = core.get_timer()
            te = loop.peek()
            if te is not None and (tc is None or te <= tc):
                loop.run_next()
            elif tc is not None:
                loop.now = tc
                core.handle_timer(tc)
                self._core_touched = True
                self._pump()
            else:  # nothing can happen any more (cannot occur: every step has a timeout)
                break
        report = core.report
        assert report is not None, "the core always ends with a report"
        up, down = self.path.links[UP].counters, self.path.links[DOWN].counters
        return SimResult(report, tuple(self.events), attrs.evolve(up), attrs.evolve(down),
                         self.path.packets, loop.now, tuple(self.path.records()), self.core.scorer_inputs)

    @property
    def now(self) -> float:
        return self.loop.now

    def _observe(self, obs: Observation) -> None:
        if self.done:
            return
        self.core.handle(obs, self.now)
        self._core_touched = True
        self._pump()

    def _pump(self) -> None:
        core = self.core
        while True:
            action = core.next_action()
            if action is None:
                break
            match action:
                case AcquireMedia(media=media):
                    # Synthetic tracks cost no simulated time.
                    self._observe(MediaAcquired(media.kinds))
                case ConnectSignaling():
                    self._tcp_connect()
                case OpenPeerConnections(relay_only=relay_only):
                    self._open_pcs(relay_only)
                case SampleStats(index=index, total=total):
                    self.end_hint = self.now + (total - index) * self.config.sample_interval + 1e-6
                    self.sync()
                    self._observe(StatsObserved(self._sample()))
                case TearDown():
                    self.done = True
        while (event := core.next_event()) is not None:
            self.events.append(event)
            if self.on_event is not None:
                self.on_event(event)
            if isinstance(event, Completed | Failed):
                self.done = True

    def _send(self, direction: str, size: int, kind: str, then: Callable[..., None] | None = None,
              *args: object, tag: Tag = Tag.HANDSHAKE) -> None:
        """Put one control packet on a link now; ``then(*args)`` runs when it arrives."""
        assert not self.steady, "in the steady state every packet is planned with its interval"
        self.sync(1 if direction == UP else 2)
        delivered = self.path.send(direction, self.now, size, kind)
        if delivered is not None and then is not None:
            self.loop.at(delivered, then, *args, tag=tag)

    # --- signaling: TCP + WebSocket ----------------------------------------------------------------

    def _tcp_connect(self) -> None:
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
        self.tcp_rto = max(TCP_MIN_RTO, 3 * rtt)  # srtt + 4 * rttvar with rttvar = rtt / 2
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

            Transaction(self.loop, transmit, arrived, rto=self.tcp_rto, retransmissions=TCP_RETRIES).start()

    # --- peer connections ----------------------------------------------------------------------------

    def _open_pcs(self, relay_only: bool) -> None:
        turn = any(s.urls for s in self.ice_servers)
        p = self._ports
        self.pcs[Role.PUBLISHER] = _Pc(Role.PUBLISHER, relay_only and turn, turn, [p[0], p[1], p[2]])
        self.pcs[Role.SUBSCRIBER] = _Pc(Role.SUBSCRIBER, False, turn, [p[3], p[4], p[5]])
        self._gather(self.pcs[Role.PUBLISHER], lambda: self._tcp_message(
            UP, OFFER_PUBLISHER, lambda: self._srv_offer(Role.PUBLISHER)))

    def _gather(self, pc: _Pc, then: Callable[[], None]) -> None:
        """Host candidates are instant; a TURN allocation takes Allocate → 401 → Allocate."""
        if not pc.turn:
            then()
            return
        def authenticated() -> None:
            self._stun(UP, TURN_ALLOCATE_AUTH, TURN_ALLOCATE_OK, then)

        self._stun(UP, TURN_ALLOCATE, TURN_401, authenticated)

    def _stun(self, direction: str, req: int, resp: int, on_success: Callable[[], None],
              on_timeout: Callable[[], None] | None = None, *, retransmissions: int | None = None,
              responder: Callable[[], bool] | None = None, kind: str = "stun") -> Transaction:
        """A STUN transaction between the client and the server side (either way round).

        ``responder`` (run at the far end when a copy arrives) may refuse to answer.
        """
        back = DOWN if direction == UP else UP

        def transmit(tx: Transaction) -> None:
            self._send(direction, req, kind, answer, tx)

        def answer(tx: Transaction) -> None:
            if responder is None or responder():
                self._send(back, resp, kind, tx.succeed)

        kw = {} if retransmissions is None else {"retransmissions": retransmissions}
        return Transaction(self.loop, transmit, on_success, on_timeout, **kw).start()

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
            for kind in self.config.media.kinds:  # aiortc fires `track` in setRemoteDescription
                self._observe(TrackSubscribed(kind))
        self._cli_ice_start(pc)

    # --- ICE ---------------------------------------------------------------------------------------

    def _cli_ice_start(self, pc: _Pc) -> None:
        pc.ice_started = True
        self._observe(IceStateChanged(pc.role, "checking"))
        self._observe(ConnectionStateChanged(pc.role, "connecting"))
        for i, cand in enumerate(pc.local):  # already in priority order: host before relay
            self.loop.after(i * ICE_PACING, self._cli_check_start, pc, cand, tag=Tag.HANDSHAKE)
        if not pc.local:
            self._cli_ice_fail(pc)

    def _cli_check_start(self, pc: _Pc, cand: IceCandidateStats) -> None:
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

    def _cli_check_failed(self, pc: _Pc) -> None:
        pc.failed_checks += 1
        if pc.failed_checks >= len(pc.local) and not pc.ice_done:
            self._cli_ice_fail(pc)

    def _cli_ice_fail(self, pc: _Pc) -> None:
        if not pc.ice_failed:
            pc.ice_failed = True
            self._observe(IceStateChanged(pc.role, "failed"))

    def _cli_ice_done(self, pc: _Pc, cand: IceCandidateStats) -> None:
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

    def _srv_ice_start(self, pc: _Pc) -> None:
        pc.s_started = True
        for i, cand in enumerate(pc.local):
            self.loop.after(i * ICE_PACING, self._srv_check, pc, cand, tag=Tag.HANDSHAKE)

    def _srv_check(self, pc: _Pc, cand: IceCandidateStats) -> None:
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
            self._maybe_steady()

        tx = Transaction(self.loop, transmit, success)
        pc.s_checks.append(tx)
        tx.start()

    def _srv_maybe_done(self, pc: _Pc) -> None:
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

    def _schedule_consent(self, pc: _Pc) -> None:
        delay = CONSENT_INTERVAL * (0.8 + 0.4 * float(self.consent_rng.random()))
        pc.consent_at = self.now + delay
        if not self.steady:  # in the steady state the check is planned with its interval
            self.loop.after(delay, self._consent, pc, tag=Tag.CONSENT)

    def _consent(self, pc: _Pc) -> None:
        if pc.ice_failed:
            return
        pc.consent_at = math.inf
        extra = pc.extra
        self._stun(UP, STUN_CHECK + extra, STUN_RESPONSE + extra, lambda: self._consent_ok(pc),
                   lambda: self._consent_failed(pc), retransmissions=0)

    def _consent_ok(self, pc: _Pc) -> None:
        pc.consent_failures = 0
        pc.last_rx = self.now
        self._schedule_consent(pc)

    def _consent_failed(self, pc: _Pc) -> None:
        pc.consent_failures += 1  # aioice: no answer within 0.5 s, late or lost alike
        if pc.consent_failures >= CONSENT_FAILURES:
            pc.ice_failed = True
            self._observe(IceStateChanged(pc.role, "failed"))
            return
        if not pc.disconnected and self.now - self._last_rx(pc) >= RECEIVE_TIMEOUT:
            pc.disconnected = True
            self._observe(IceStateChanged(pc.role, "disconnected"))
            self.loop.after(WATCH_INTERVAL, self._watch, pc, tag=Tag.WATCH)
        self._schedule_consent(pc)

    def _last_rx(self, pc: _Pc) -> float:
        """When the client last received anything on this peer connection."""
        if self.steady:
            self._client_catch_up()
            if pc.role is Role.SUBSCRIBER:
                last = [tl.last_arrival(self.now) for tl in self.sub_tl.values()]
                return max([pc.last_rx, self.sub_last_rx] + [t for t in last if t is not None])
            return pc.last_rx
        if pc.role is Role.SUBSCRIBER:
            self.sync(3)
            return max(pc.last_rx, self.sub_last_rx)
        return pc.last_rx

    def _watch(self, pc: _Pc) -> None:
        """While disconnected: back to `completed` as soon as packets arrive again."""
        if pc.ice_failed or not pc.disconnected:
            return
        if self.now - self._last_rx(pc) < WATCH_INTERVAL:
            pc.disconnected = False
            self._observe(IceStateChanged(pc.role, "completed"))
        else:
            self.loop.after(WATCH_INTERVAL, self._watch, pc, tag=Tag.WATCH)

    # --- DTLS --------------------------------------------------------------------------------------

    def _dtls_tx(self, direction: str, flight: int, pc: _Pc, then: Callable[[_Pc], None]) -> Transaction:
        def transmit(tx: Transaction) -> None:
            self._send(direction, DTLS_FLIGHTS[flight - 1] + pc.extra, "dtls", then, pc)

        def gave_up() -> None:
            if direction == UP:  # the client's own handshake timed out: aiortc says `failed`
                self._observe(DtlsStateChanged(pc.role, "failed"))

        return Transaction(self.loop, transmit, lambda: None, gave_up, rto=DTLS_RTO,
                           retransmissions=DTLS_RETRANSMISSIONS).start()

    def _srv_dtls_start(self, pc: _Pc) -> None:
        pc.f1_tx = self._dtls_tx(DOWN, 1, pc, self._cli_f1)

    def _cli_f1(self, pc: _Pc) -> None:
        if not pc.ice_done:
            pc.f1_waiting = True
            return
        if pc.f2_tx is None:
            pc.f2_tx = self._dtls_tx(UP, 2, pc, self._srv_f2)

    def _srv_f2(self, pc: _Pc) -> None:
        if pc.f1_tx is not None:
            pc.f1_tx.succeed()
        if not pc.s_got_f2:
            pc.s_got_f2 = True
            pc.f3_tx = self._dtls_tx(DOWN, 3, pc, self._cli_f3)

    def _cli_f3(self, pc: _Pc) -> None:
        if pc.f2_tx is not None:
            pc.f2_tx.succeed()
        # Flight 6 has no timer: it is resent whenever flight 5 shows up again.
        self._send(UP, DTLS_FLIGHTS[3] + pc.extra, "dtls", self._srv_f4, pc)
        if pc.dtls_connected_at == math.inf:
            pc.dtls_connected_at = self.now
            self._observe(DtlsStateChanged(pc.role, "connected"))
            self._observe(ConnectionStateChanged(pc.role, "connected"))
            self._cli_media_ready(pc)

    def _srv_f4(self, pc: _Pc) -> None:
        if pc.f3_tx is not None:
            pc.f3_tx.succeed()
        if pc.s_dtls_connected_at == math.inf:
            pc.s_dtls_connected_at = self.now
            self._srv_media_ready(pc)
        self._maybe_steady()

    # --- media: who starts when --------------------------------------------------------------------

    def _cli_media_ready(self, pc: _Pc) -> None:
        self.sync(1)
        if pc.role is Role.PUBLISHER:
            extra = pc.extra
            media = self.config.media
            if media.audio:
                self.sources[AUDIO] = Lookahead(AudioSource(self.now, extra))
            if media.video is not None:
                self.sources[VIDEO] = Lookahead(VideoSource(media.video, self.now, extra, self.media_rng))
            for kind in self.sources:
                self._rtcp_timer(Tag.PUB_SR, kind)
            self.fine = True
            self._fine_next()
        else:
            self.sub_accept_at = self.now
            for kind in self.kinds:
                self._rtcp_timer(Tag.SUB_RR, kind)
            if VIDEO in self.kinds:
                self.loop.after(REMB_INTERVAL, self._sub_remb, tag=Tag.SUB_REMB_TIMER)

    def _srv_media_ready(self, pc: _Pc) -> None:
        self.sync(2)
        if pc.role is Role.PUBLISHER:
            self.srv_accept_at = self.now
            for kind in self.kinds:
                self._rtcp_timer(Tag.SRV_RR, kind)
            if VIDEO in self.kinds:
                self.loop.after(REMB_INTERVAL, self._srv_remb, tag=Tag.SRV_REMB_TIMER)
        else:
            self.forward_at = self.now
            for kind in self.kinds:
                self._rtcp_timer(Tag.SRV_SR, kind)
            if VIDEO in self.kinds:  # an SFU asks for a keyframe when a subscriber joins
                self._pli_to_publisher()

    # --- the media pipeline ------------------------------------------------------------------------

    def sync(self, stage: int = 3) -> None:
        """Move media up to ``now``: publisher → uplink (stage 1) → server, forwarding onto the
        downlink (2) → subscriber (3). A packet about to go up only needs stage 1, one about to
        go down stage 2; whatever reads the subscriber's state needs all three."""
        if self._in_sync or self.steady:  # already up to date (steady: the intervals run ahead)
            return
        self._in_sync = True
        try:
            self._sync(self.now, 3 if self.fine else stage)
        finally:
            self._in_sync = False
        if self.fine:
            self._fine_next()

    def _sync(self, t: float, stage: int) -> None:
        if self.sources and min(src.next_send for src in self.sources.values()) <= t:
            parts = [src.generate(t) for src in self.sources.values()]
            batch = Packets.concat(parts)
            if len(batch):
                if len(parts) > 1:
                    batch = batch.take(np.argsort(batch.t, kind="stable"))
                for kind, sender in self.senders.items():
                    mine = batch.kind == kind if len(self.kinds) > 1 else slice(None)
                    sender.packets += int(batch.t[mine].size)
                    sender.bytes += int(batch.payload[mine].sum())
                arrival = self.path.send_media(UP, batch.t, batch.size)
                ok = ~np.isnan(arrival)
                if ok.any():
                    got = batch.take(ok)
                    got.t = arrival[ok]
                    self.srv_q.push(got)
        if stage >= 2 and self.srv_q.min <= t:
            self._server_arrivals(t)
        if stage >= 3 and self.sub_q.min <= t:
            self._subscriber_arrivals(t)

    def _per_kind(self, got: Packets) -> list[tuple[int, Packets]]:
        if len(self.kinds) == 1:
            return [(self.kinds[0], got)] if len(got) else []
        out = []
        for kind in self.kinds:
            mine = got.take(got.kind == kind)
            if len(mine):
                out.append((kind, mine))
        return out

    def _server_arrivals(self, t: float) -> None:
        got = self.srv_q.pop_until(t, self.srv_accept_at)
        for kind, mine in self._per_kind(got):
            self.srv_stats[kind].add(mine.t, mine.seq, mine.ts, mine.payload)
            if kind == VIDEO:
                self.srv_est.add(mine.t, mine.sent, mine.seq, mine.size)
        fwd = got.take(got.t >= self.forward_at) if len(got) and got.t[0] < self.forward_at else got
        if len(fwd):
            resize = self.pcs[Role.SUBSCRIBER].extra - self.pcs[Role.PUBLISHER].extra
            if resize:  # ChannelData framing differs between the two legs
                fwd.size = fwd.size + resize
            arrival = self.path.send_media(DOWN, fwd.t, fwd.size)
            ok = ~np.isnan(arrival)
            if ok.any():
                out = fwd.take(ok)
                out.t = arrival[ok]
                self.sub_q.push(out)

    def _subscriber_arrivals(self, t: float) -> None:
        got = self.sub_q.pop_until(t, self.sub_accept_at)
        if len(got):
            self.sub_last_rx = float(got.t[-1])
        for kind, mine in self._per_kind(got):
            self.sub_stats[kind].add(mine.t, mine.seq, mine.ts, mine.payload)
            if kind == VIDEO:
                self.sub_est.add(mine.t, mine.sent, mine.seq, mine.size)
            if kind not in self.started:
                self._detect_start(kind, mine)

    def _playable_at(self, kind: int, got: Packets) -> float | None:
        """When the subscriber can first play ``kind`` from these arrivals, or None: audio plays
        from its first packet, video from its first complete keyframe (counted across calls)."""
        if kind == AUDIO:
            return float(got.t[0])
        key = got.take(got.key)
        for frame, n, last in zip(key.frame.tolist(), key.npk.tolist(), key.t.tolist(), strict=True):
            count = self._key_counts.get(frame, 0) + 1
            self._key_counts[frame] = count
            if count == n:
                return float(last)
        return None

    def _detect_start(self, kind: int, got: Packets) -> None:
        if (t := self._playable_at(kind, got)) is not None:
            self._media_started(kind, t)
            return
        # Video it cannot decode yet: ask for a keyframe (through the server) now and then.
        if self.now - max(self._last_pli, self.forward_at) >= PLI_INTERVAL:
            self._last_pli = self.now
            self._send(UP, RTCP_PLI + self.pcs[Role.SUBSCRIBER].extra, "rtcp", self._pli_to_publisher,
                       tag=Tag.SRV_GOT_PLI)

    def _media_started(self, kind: int, t: float) -> None:
        self.started.add(kind)
        self._key_counts.clear()
        self.loop.at(t, self._observe, MediaStarted(KIND_NAMES[kind]), tag=Tag.OBSERVE)
        if self.started.issuperset(self.kinds):
            self.fine = False
            self.loop.at(t, self._maybe_steady, tag=Tag.MAYBE_STEADY)  # (also tried at every RTCP timer from now on)

    def _fine_next(self) -> None:
        """Until media started, the next moment anything in the pipeline happens is an event."""
        nxt = min([src.next_send for src in self.sources.values()] + [self.srv_q.min, self.sub_q.min])
        if nxt > self.now and nxt < self._fine_at:
            self._fine_at = nxt
            self.loop.at(nxt, self._fine_tick, tag=Tag.FINE_TICK)

    def _fine_tick(self) -> None:
        if self.now >= self._fine_at:
            self._fine_at = math.inf
        if not self.done:
            self.sync()

    def _pli_to_publisher(self) -> None:
        self._send(DOWN, RTCP_PLI + self.pcs[Role.PUBLISHER].extra, "rtcp", self._cli_pli, tag=Tag.PUB_GOT_PLI)

    def _cli_pli(self) -> None:
        self.sync(1)
        self.pcs[Role.PUBLISHER].last_rx = self.now
        video = self.sources.get(VIDEO)
        if video is not None and isinstance(video.src, VideoSource):
            video.invalidate()
            video.src.force_key = True
        self._maybe_steady()

    # --- RTCP --------------------------------------------------------------------------------------

    def _rtcp_timer(self, report: Tag, kind: int) -> None:
        delay = RTCP_MIN + RTCP_SPAN * float(self.rtcp_rng.random())
        self.loop.after(delay, self._rtcp_fire, report, kind, tag=report)

    def _rtcp_fire(self, report: Tag, kind: int) -> None:
        {Tag.PUB_SR: self._sr, Tag.SUB_RR: self._sub_rr, Tag.SRV_RR: self._srv_rr, Tag.SRV_SR: self._srv_sr}[report](kind)
        self._rtcp_timer(report, kind)
        self._maybe_steady()

    def _sr(self, kind: int) -> None:
        """The publisher's sender report (uplink)."""
        sender = self.senders[kind]
        sender.sr_sent_at = sr_id = self.now
        self._send(UP, RTCP_SR + self.pcs[Role.PUBLISHER].extra, "rtcp", self._srv_got_sr, kind, sr_id,
                   tag=Tag.SRV_GOT_SR)

    def _srv_got_sr(self, kind: int, sr_id: float) -> None:
        self.srv_sr[kind] = (sr_id, self.now)

    def _srv_rr(self, kind: int) -> None:
        """The server's receiver report about the publisher's stream (downlink)."""
        self.sync(2)
        stats = self.srv_stats[kind]
        if stats.base_seq is None:
            return  # aiortc only reports on streams it has heard from
        lsr, dlsr = None, 0
        if kind in self.srv_sr:
            lsr, at = self.srv_sr[kind]
            dlsr = int((self.now - at) * DLSR_UNIT)
        block = (stats.fraction_lost(), stats.lost, stats.jitter, lsr, dlsr)
        self._send(DOWN, RTCP_RR + self.pcs[Role.PUBLISHER].extra, "rtcp", self._cli_rr, kind, block,
                   tag=Tag.PUB_GOT_RR)

    def _cli_rr(self, kind: int, block: tuple[int, int, int, float | None, int]) -> None:
        fraction, lost, jitter, lsr, dlsr = block
        self.pcs[Role.PUBLISHER].last_rx = self.now
        sender = self.senders[kind]
        if lsr is not None and lsr == sender.sr_sent_at and dlsr:
            rtt = self.now - lsr - dlsr / DLSR_UNIT
            sender.rtt = rtt if sender.rtt is None else RTT_ALPHA * sender.rtt + (1 - RTT_ALPHA) * rtt
        sender.fraction_lost = fraction / 256
        sender.lost = lost
        sender.jitter = jitter / CLOCK_RATE[kind]

    def _srv_sr(self, kind: int) -> None:
        """The server's sender report to the subscriber (traffic only: the core never reads it)."""
        self._send(DOWN, RTCP_SR + self.pcs[Role.SUBSCRIBER].extra, "rtcp")

    def _sub_rr(self, kind: int) -> None:
        """The subscriber's receiver report (traffic only: it informs the server, not the core)."""
        self.sync(3)
        if self.sub_stats[kind].base_seq is not None:
            self.sub_stats[kind].fraction_lost()
            self._send(UP, RTCP_RR + self.pcs[Role.SUBSCRIBER].extra, "rtcp")

    def _srv_remb(self) -> None:
        self.sync(2)
        estimate = self.srv_est.update(self.now)
        if estimate is not None:
            if self.sub_remb is not None:
                estimate = min(estimate, self.sub_remb)
            self._send(DOWN, RTCP_REMB + self.pcs[Role.PUBLISHER].extra, "rtcp", self._cli_remb, estimate,
                       tag=Tag.PUB_GOT_REMB)
        self.loop.after(REMB_INTERVAL, self._srv_remb, tag=Tag.SRV_REMB_TIMER)

    def _cli_remb(self, bps: float) -> None:
        self.sync(1)
        self.pcs[Role.PUBLISHER].last_rx = self.now
        self.senders[VIDEO].remb = bps
        video = self.sources.get(VIDEO)
        if video is not None and isinstance(video.src, VideoSource):
            video.invalidate()
            video.src.set_target(bps)

    def _sub_remb(self) -> None:
        self.sync(3)
        estimate = self.sub_est.update(self.now)
        if estimate is not None:
            self._send(UP, RTCP_REMB + self.pcs[Role.SUBSCRIBER].extra, "rtcp", self._srv_got_remb, estimate,
                       tag=Tag.SRV_GOT_REMB)
        self.loop.after(REMB_INTERVAL, self._sub_remb, tag=Tag.SUB_REMB_TIMER)

    def _srv_got_remb(self, bps: float) -> None:
        self.sub_remb = bps

    # --- steady state: one batch per link per interval ----------------------------------------------

    def _maybe_steady(self) -> None:
        """Switch to interval batches once nothing event-driven can put a packet on a link any more:
        both peer connections up at both ends, media started, and every pending event one the
        steady state takes over (RTCP and REMB timers and arrivals, consent checks) or harmless."""
        if self.steady or self.done or self._in_sync or not self.sources:
            return
        pub, sub = self.pcs.get(Role.PUBLISHER), self.pcs.get(Role.SUBSCRIBER)
        if pub is None or sub is None or (STEADY_AFTER_MEDIA_STARTED and not self.started.issuperset(self.kinds)):
            return
        if math.inf in (self.srv_accept_at, self.forward_at, self.sub_accept_at, pub.dtls_connected_at,
                        sub.dtls_connected_at, pub.s_dtls_connected_at, sub.s_dtls_connected_at):
            return
        for p in self.loop.pending():
            if p.tag is Tag.RETRY:
                if not p.args[0].done:
                    return
            elif p.tag not in TAKEN_OVER and p.tag not in HARMLESS:
                return
        self._enter_steady()

    def _enter_steady(self) -> None:
        self.sync(3)
        self.steady = True
        self.fine = False  # media start is read off the arrays from now on
        for lookahead in self.sources.values():
            lookahead.invalidate()
        self.src = {kind: lookahead.src for kind, lookahead in self.sources.items()}
        # Audio never reacts to anything: generate the rest of the run at once, hand it out by time.
        self._audio_until = self.now + self.config.step_timeout + 1.0
        audio = self.src.get(AUDIO)
        self._audio = None if audio is None else audio.generate(self._audio_until)
        self._audio_at = 0
        self.send_log = {k: SendLog(self.senders[k].packets, self.senders[k].bytes) for k in self.kinds}
        # Packets on their way, one queue per stream (each end keeps per-stream statistics).
        self.srv_qk, self.sub_qk = {}, {}
        for queues, q in ((self.srv_qk, self.srv_q), (self.sub_qk, self.sub_q)):
            left = dict(self._per_kind(q.pop_until(math.inf, -math.inf)))
            for kind in self.kinds:
                queues[kind] = _Queue(q.reorder)
                if kind in left:
                    queues[kind].push(left[kind])
        self.srv_tl = {k: Timeline(self.srv_stats[k], self.srv_est if k == VIDEO else None) for k in self.kinds}
        self.sub_tl = {k: Timeline(self.sub_stats[k], self.sub_est if k == VIDEO else None) for k in self.kinds}
        self.sr_times = {k: [] if s.sr_sent_at is None else [s.sr_sent_at] for k, s in self.senders.items()}
        self.rtcp_next: dict[tuple[Tag, int], float] = {}
        self.srv_remb_next = self.sub_remb_next = math.inf
        self._seq = 0  # tie-breaker in the inboxes
        self.cli_in: list[tuple[float, int, str, object]] = []  # downlink RTCP the client has coming
        self.srv_sr_in: list[tuple[float, int, int, float]] = []  # (arrival, _, kind, SR id)
        self.srv_remb_in: list[tuple[float, int, list[object]]] = []  # (arrival, _, [bps, known])
        # what the server sends as soon as something arrives: consent answers, PLIs it forwards
        self.srv_replies: list[tuple[float, int, int, str, object]] = []
        # REMBs and PLIs that reached the publisher and that its encoder has yet to follow
        self.fb_at: list[tuple[float, int, str, float]] = []
        self._undecodable = False  # the subscriber got video it cannot decode (it wants a keyframe)
        for t, tag, a in self.loop.remove(_dropped_at_the_switch):
            if tag in RTCP_TIMERS:
                self.rtcp_next[(tag, a[1])] = t
            elif tag is Tag.SRV_REMB_TIMER:
                self.srv_remb_next = t
            elif tag is Tag.SUB_REMB_TIMER:
                self.sub_remb_next = t
            elif tag is Tag.PUB_GOT_RR:
                self._cli_push(t, "rr", a)
            elif tag is Tag.PUB_GOT_REMB:
                self._cli_push(t, "remb", a[0])
            elif tag is Tag.SRV_GOT_SR:
                self._push(self.srv_sr_in, t, a[0], a[1])
            elif tag is Tag.SRV_GOT_REMB:
                self._push(self.srv_remb_in, t, [a[0], True])
            elif tag is Tag.CONSENT:
                a[0].consent_at = t
            elif tag is Tag.PUB_GOT_PLI:
                self._cli_push(t, "pli", None)
            elif tag is Tag.SRV_GOT_PLI:
                self._push(self.srv_replies, t, RTCP_PLI + self.pcs[Role.PUBLISHER].extra, "pli", None)
        self._tick()

    def _push(self, heap: list, t: float, *item: object) -> None:  # type: ignore[type-arg]
        heapq.heappush(heap, (t, self._seq, *item))
        self._seq += 1

    def _cli_push(self, t: float, what: str, data: object) -> None:
        self._push(self.cli_in, t, what, data)
        if what in ("remb", "pli"):
            bisect.insort(self.fb_at, (t, self._seq, what, 0.0 if data is None else float(data)))  # type: ignore[arg-type]

    def _fires(self, key: tuple[Tag, int], until: float) -> list[float]:
        """The RTCP timer's fire times before ``until`` (aiortc: every 0.5-1.5 s)."""
        out = []
        t = self.rtcp_next.get(key, math.inf)
        while t < until:
            out.append(t)
            t = t + RTCP_MIN + RTCP_SPAN * float(self.rtcp_rng.random())
        self.rtcp_next[key] = t
        return out

    def _tick(self) -> None:
        """Plan and run one interval [now, end): the uplink in one batch, the server, the downlink in
        one batch, the subscriber. Everything sent before ``now`` is already on the links."""
        if self.done:
            return
        start = self.now
        pub, sub = self.pcs[Role.PUBLISHER], self.pcs[Role.SUBSCRIBER]
        video = VIDEO in self.kinds
        if video and self.srv_remb_next == start:
            # The REMB opening the interval goes first, so the encoder follows it exactly.
            self._srv_inboxes(start)
            bps = self.srv_tl[VIDEO].remb(start)
            if bps is not None:
                if self.sub_remb is not None:
                    bps = min(bps, self.sub_remb)
                arrival = self.path.send(DOWN, start, RTCP_REMB + pub.extra, "rtcp")
                if arrival is not None:
                    self._cli_push(arrival, "remb", bps)
            end = self.srv_remb_next = start + REMB_INTERVAL
            if self.started.issuperset(self.kinds):  # (short intervals until media started)
                for _ in range(REMB_PERIODS_PER_INTERVAL - 1):
                    end += REMB_INTERVAL
        elif video:
            end = self.srv_remb_next
        else:
            end = start + (AUDIO_ONLY_INTERVAL if self.started else REMB_INTERVAL)
        if start < self.end_hint < end:
            end = self.end_hint
        until = float(np.nextafter(end, -math.inf))
        sub_rembs = self._uplink(start, end, until, pub, sub)
        self._downlink(end, until, pub, sub)
        # The subscriber: its arrivals of the interval, then what its REMBs said.
        for kind in self.kinds:
            mine = self.sub_qk[kind].pop_until(until, self.sub_accept_at)
            if len(mine):
                self.sub_tl[kind].extend(mine.t, mine.seq, mine.ts, mine.payload, mine.sent, mine.size)
                if kind not in self.started:
                    self._steady_start(kind, mine)
        for t, ref in sub_rembs:
            ref[0], ref[1] = self.sub_tl[VIDEO].remb(t), True
        self.loop.at(end, self._tick, tag=Tag.STEADY_TICK)

    def _uplink(self, start: float, end: float, until: float, pub: _Pc, sub: _Pc) -> list[tuple[float, list[object]]]:
        media: dict[int, Packets] = {}
        if self._audio is not None:
            if until > self._audio_until:  # (a run longer than planned for: plan more)
                self._audio_until = until + self.config.step_timeout
                rest = self._audio.take(slice(self._audio_at, None))
                self._audio = Packets.concat([rest, self.src[AUDIO].generate(self._audio_until)])
                self._audio_at = 0
            i = self._audio_at
            self._audio_at = j = int(self._audio.t.searchsorted(until, side="right"))
            media[AUDIO] = self._audio.take(slice(i, j))
        vs = self.src.get(VIDEO)
        parts = []
        if isinstance(vs, VideoSource):
            while self.fb_at and self.fb_at[0][0] < end:
                at, _, what, bps = self.fb_at.pop(0)
                if at > start:  # frames sent up to the arrival are the old encoder's
                    parts.append(vs.generate(at))
                if what == "pli":
                    vs.force_key = True
                else:
                    vs.set_target(bps)
            parts.append(vs.generate(until))
            media[VIDEO] = Packets.concat(parts)
        ct: list[float] = []
        cs: list[int] = []
        what: list[tuple[str, object]] = []
        for kind in self.kinds:
            for t in self._fires((Tag.PUB_SR, kind), end):
                ct.append(t), cs.append(RTCP_SR + pub.extra), what.append(("sr", kind))
                self.sr_times[kind].append(t)
            for t in self._fires((Tag.SUB_RR, kind), end):
                if self.sub_stats[kind].base_seq is not None:  # (as of the interval's start)
                    ct.append(t), cs.append(RTCP_RR + sub.extra), what.append(("rtcp", None))
        sub_rembs = []
        if VIDEO in self.kinds:
            while self.sub_remb_next < end:
                # Sent every 500 ms once video arrived (aiortc would skip a window without video:
                # here the packet carries no new estimate and the server keeps the previous one).
                if self.sub_est.first_arrival is not None:
                    ref: list[object] = [None, False]
                    sub_rembs.append((self.sub_remb_next, ref))
                    ct.append(self.sub_remb_next), cs.append(RTCP_REMB + sub.extra), what.append(("remb", ref))
                self.sub_remb_next += REMB_INTERVAL
            if self._undecodable and VIDEO not in self.started:
                # The subscriber's keyframe request: as soon as the interval lets it (at most
                # one per 500 ms), rather than at the very arrival that found no keyframe.
                t = max(start, max(self._last_pli, self.forward_at) + PLI_INTERVAL)
                if t < end:
                    self._last_pli = t
                    self._undecodable = False
                    ct.append(t), cs.append(RTCP_PLI + sub.extra), what.append(("pli", None))
        for pc in (pub, sub):
            if not pc.ice_failed and pc.consent_at < end:
                check: list[object] = [pc.consent_at, pc, False]
                ct.append(pc.consent_at), cs.append(STUN_CHECK + pc.extra), what.append(("stun", check))
                self.loop.at(pc.consent_at + 0.5, self._consent_timeout, check, tag=Tag.CONSENT_OUTCOME)
                pc.consent_at = math.inf
        arrival, m_arrival = self._batch(UP, list(media.values()), ct, cs,
                                         ["stun" if w == "stun" else "rtcp" for w, _ in what])
        for (kind, mine), arr in zip(media.items(), m_arrival, strict=True):
            self.send_log[kind].extend(mine.t, mine.payload)
            ok = ~np.isnan(arr)
            if ok.any():
                got = mine.take(ok)
                got.t = arr[ok]
                self.srv_qk[kind].push(got)
        for a, t, (w, data) in zip(arrival, ct, what, strict=True):
            if a != a:
                continue
            if w == "sr":
                self._push(self.srv_sr_in, a, data, t)
            elif w == "remb":
                self._push(self.srv_remb_in, a, data)
            elif w == "stun":
                check = data  # type: ignore[assignment]
                self._push(self.srv_replies, a, STUN_RESPONSE + check[1].extra, "stun", check)  # type: ignore[index]
            elif w == "pli":  # the SFU passes the keyframe request on to the publisher
                self._push(self.srv_replies, a, RTCP_PLI + pub.extra, "pli", None)
        return sub_rembs

    def _batch(self, direction: str, media: list[Packets], ct: list[float], cs: list[int], names: list[str]
               ) -> tuple[list[float], list[np.ndarray]]:
        """One send_batch of the media streams and the control packets merged in time order
        (on a tie: the order the publisher sent them in, the streams in order, then control).
        Returns the control packets' arrivals (NaN: dropped) and each stream's."""
        c = np.asarray(ct, dtype=np.float64)
        t_all = np.concatenate([p.t for p in media] + [c])
        size_all = np.concatenate([p.size for p in media] + [np.asarray(cs, dtype=np.int64)])
        if direction == UP:
            order = np.argsort(t_all, kind="stable")
        else:  # forwarded packets leave in the order they came in (FIFO through the SFU)
            order = np.lexsort((np.concatenate([p.sent for p in media] + [c]), t_all))
        n = len(t_all) - len(ct)

        def kinds() -> list[str]:
            every = ["rtp"] * n + names
            return [every[i] for i in order.tolist()]

        arrival = np.empty(len(t_all))
        arrival[order] = self.path.send_media(direction, t_all[order], size_all[order], kinds)
        out, i = [], 0
        for p in media:
            out.append(arrival[i : i + len(p)])
            i += len(p)
        return arrival[i:].tolist(), out

    def _srv_inboxes(self, t: float) -> None:
        """The server reads the SRs and the subscriber's REMBs that arrived by ``t``."""
        while self.srv_sr_in and self.srv_sr_in[0][0] <= t:
            a, _, kind, sr_id = heapq.heappop(self.srv_sr_in)
            self.srv_sr[kind] = (sr_id, a)
        while self.srv_remb_in and self.srv_remb_in[0][0] <= t and self.srv_remb_in[0][2][1]:
            # (a REMB sent in this very interval is not known yet: the server's REMBs inside
            # the interval use the subscriber's previous one)
            ref = heapq.heappop(self.srv_remb_in)[2]
            if ref[0] is not None:
                self.sub_remb = ref[0]  # type: ignore[assignment]

    def _downlink(self, end: float, until: float, pub: _Pc, sub: _Pc) -> None:
        fwd = []
        for kind in self.kinds:
            mine = self.srv_qk[kind].pop_until(until, self.srv_accept_at)
            if len(mine):
                self.srv_tl[kind].extend(mine.t, mine.seq, mine.ts, mine.payload, mine.sent, mine.size)
            fwd.append(mine)
        sends: list[tuple[float, int, str, int]] = []
        for kind in self.kinds:
            sends.extend((t, len(sends), "rr", kind) for t in self._fires((Tag.SRV_RR, kind), end))
            sends.extend((t, len(sends), "sr", kind) for t in self._fires((Tag.SRV_SR, kind), end))
        if VIDEO in self.kinds:
            while self.srv_remb_next < end:
                sends.append((self.srv_remb_next, len(sends), "remb", VIDEO))
                self.srv_remb_next += REMB_INTERVAL
        sends.sort()
        ct: list[float] = []
        cs: list[int] = []
        what: list[tuple[str, object]] = []
        for t, _, w, kind in sends:
            self._srv_inboxes(t)
            if w == "rr":
                block = self._srv_rr_block(kind, t)
                if block is not None:
                    ct.append(t), cs.append(RTCP_RR + pub.extra), what.append(("rr", (kind, block)))
            elif w == "sr":
                ct.append(t), cs.append(RTCP_SR + sub.extra), what.append(("rtcp", None))
            else:
                bps = self.srv_tl[VIDEO].remb(t)
                if bps is not None:
                    if self.sub_remb is not None:
                        bps = min(bps, self.sub_remb)
                    ct.append(t), cs.append(RTCP_REMB + pub.extra), what.append(("remb", bps))
        while self.srv_replies and self.srv_replies[0][0] < end:
            t, _, size, w, data = heapq.heappop(self.srv_replies)
            ct.append(t), cs.append(size), what.append((w, data))
        resize = sub.extra - pub.extra
        if resize:  # ChannelData framing differs between the two legs
            for mine in fwd:
                mine.size = mine.size + resize
        arrival, m_arrival = self._batch(DOWN, fwd, ct, cs, ["rtcp" if w != "stun" else w for w, _ in what])
        for kind, mine, arr in zip(self.kinds, fwd, m_arrival, strict=True):
            ok = ~np.isnan(arr)
            if ok.any():
                out = mine.take(ok)
                out.t = arr[ok]
                self.sub_qk[kind].push(out)
        for a, (w, data) in zip(arrival, what, strict=True):
            if a != a:
                continue
            if w == "rr":
                self._cli_push(a, "rr", data)
            elif w in ("remb", "pli"):
                self._cli_push(a, w, data)
            elif w == "stun":
                check = data
                if a < check[0] + 0.5:  # type: ignore[index,operator]
                    self.loop.at(a, self._consent_answered, check, tag=Tag.CONSENT_OUTCOME)

    def _srv_rr_block(self, kind: int, t: float) -> tuple[int, int, int, float | None, int] | None:
        """The server's receiver report at ``t``: what _srv_rr sends, from the timeline."""
        received, _, max_seq, jitter, base = self.srv_tl[kind].at(t)
        if base is None:
            return None
        st = self.srv_stats[kind]
        expected = max_seq - base + 1
        exp_i, rec_i = expected - st._expected_prior, received - st._received_prior
        st._expected_prior, st._received_prior = expected, received
        lost_i = exp_i - rec_i
        fraction = 0 if exp_i <= 0 or lost_i <= 0 else (lost_i << 8) // exp_i
        lsr, dlsr = None, 0
        if kind in self.srv_sr:
            lsr, at = self.srv_sr[kind]
            dlsr = int((t - at) * DLSR_UNIT)
        return fraction, max(0, expected - received), int(jitter), lsr, dlsr

    def _client_catch_up(self) -> None:
        """The client reads the RTCP that reached it by now (RR: rtt, loss, jitter; REMB)."""
        pub = self.pcs[Role.PUBLISHER]
        while self.cli_in and self.cli_in[0][0] <= self.now:
            a, _, what, data = heapq.heappop(self.cli_in)
            pub.last_rx = max(pub.last_rx, a)
            if what == "remb":
                self.senders[VIDEO].remb = data  # type: ignore[assignment]
                continue
            if what == "pli":
                continue
            kind, (fraction, lost, jitter, lsr, dlsr) = data  # type: ignore[misc]
            sender = self.senders[kind]
            sent = self.sr_times[kind]
            i = bisect.bisect_right(sent, a) - 1
            if lsr is not None and i >= 0 and lsr == sent[i] and dlsr:
                rtt = a - lsr - dlsr / DLSR_UNIT
                sender.rtt = rtt if sender.rtt is None else RTT_ALPHA * sender.rtt + (1 - RTT_ALPHA) * rtt
            sender.fraction_lost = fraction / 256
            sender.lost = lost
            sender.jitter = jitter / CLOCK_RATE[kind]

    def _steady_start(self, kind: int, got: Packets) -> None:
        """Media start from the subscriber's arrivals (as _detect_start; its PLI waits for the
        next interval: see _uplink)."""
        if (t := self._playable_at(kind, got)) is not None:
            self._media_started(kind, t)
            if kind == VIDEO:
                self._undecodable = False
            return
        if kind == VIDEO:
            self._undecodable = True

    def _consent_answered(self, check: list[object]) -> None:
        if not check[2]:
            check[2] = True
            self._consent_ok(check[1])  # type: ignore[arg-type]

    def _consent_timeout(self, check: list[object]) -> None:
        if not check[2]:
            check[2] = True
            self._consent_failed(check[1])  # type: ignore[arg-type]

    # --- stats ---------------------------------------------------------------------------------------

    def _sample(self) -> StatsSample:
        out: dict[int, OutboundStats] = {}
        inb: dict[int, InboundStats | None] = {}
        if self.steady:
            self._client_catch_up()
        for kind in self.kinds:
            s = self.senders[kind]
            if self.steady:
                s.packets, s.bytes = self.send_log[kind].at(self.now)
            out[kind] = OutboundStats(
                packets_sent=s.packets, bytes_sent=s.bytes, remote_rtt=s.rtt, remote_jitter=s.jitter,
                remote_fraction_lost=s.fraction_lost, remote_packets_lost=s.lost,
                available_bps=s.remb if kind == VIDEO else None,
            )
            r = self.sub_stats[kind]
            if self.steady:
                received, nbytes, max_seq, jitter, base = self.sub_tl[kind].at(self.now)
                lost = 0 if base is None else max(0, max_seq - base + 1 - received)
                inb[kind] = None if base is None else InboundStats(
                    packets_received=received, packets_lost=lost, bytes_received=nbytes,
                    jitter=int(jitter) / CLOCK_RATE[kind],
                )
                continue
            inb[kind] = None if r.base_seq is None else InboundStats(
                packets_received=r.received, packets_lost=r.lost, bytes_received=r.bytes,
                jitter=r.jitter / CLOCK_RATE[kind],
            )
        candidates: list[IceCandidateStats] = []
        for pc in self.pcs.values():
            candidates.extend(pc.local)
            candidates.append(pc.remote)
        pub = self.pcs.get(Role.PUBLISHER)
        pair = None
        if pub is not None and pub.selected is not None:
            pair = SelectedCandidatePair(pub.selected, pub.remote)
        return StatsSample(
            audio_out=out.get(AUDIO), video_out=out.get(VIDEO), audio_in=inb.get(AUDIO), video_in=inb.get(VIDEO),
            candidate_pair_rtt=None,  # aiortc has no candidate-pair stats (REFERENCE.md F)
            ice_candidates=tuple(candidates), selected_pair=pair,
        )


def run_simulation(scenario: Scenario, *, seed: int | None = None, packet_log: bool = False,
                   stop_at: float | None = None, on_event: Callable[[Event], None] | None = None) -> SimResult:
    """Simulate one preflight over ``scenario`` (seed: the scenario's own when None).

    ``packet_log`` keeps a :class:`PacketRecord` per packet offered to a link (for pcap export);
    ``stop_at`` (virtual seconds) asks the test to stop then; ``on_event`` sees each core event
    as it happens (progress output).
    """
    from rtcprobe.core._version import __version__

    chosen = scenario.seed if seed is None else seed
    driver = SimDriver(scenario, chosen, packet_log=packet_log, stop_at=stop_at, on_event=on_event,
                       version=__version__)
    return driver.run()
