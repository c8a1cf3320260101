"""What the simulated stack puts on the wire: addresses, packet sizes, and its protocols' timers.

Sizes are IPv4 bytes, estimates for aiortc/aioice/coturn messages; timers are the real stacks'
(Linux TCP, aioice, OpenSSL), see docs/references.md#aiortc-and-aioice.
"""

from __future__ import annotations

from typing import Final

# --- addresses (TEST-NET-1, RFC 5737: never a real host) -----------------------------------------
CLIENT_IP: Final = "192.0.2.10"  # both peer connections: the client's
SERVER_IP: Final = "192.0.2.20"  # the signaling server (no media reaches it)
TURN_IP: Final = "192.0.2.1"
TURN_PORT: Final = 3478
TURN_URL: Final = f"turn:{TURN_IP}:{TURN_PORT}?transport=udp"

# --- packet sizes --------------------------------------------------------------------------------
TCP_HEADER: Final = 52  # IPv4 20 + TCP 32 (with timestamps)
TCP_MSS: Final = 1448
SYN: Final = 60
HTTP_UPGRADE: Final = 260
HTTP_101: Final = 160
WS_ICE: Final = 560  # the `ice` hello with its JWT
WS_ICED: Final = 340  # `iced` with one TURN server and REST credentials
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

# --- handshake timers ----------------------------------------------------------------------------
TCP_SYN_RTO: Final = 1.0  # Linux initial RTO
TCP_SYN_RETRIES: Final = 6  # net.ipv4.tcp_syn_retries
TCP_MIN_RTO: Final = 0.2
TCP_RETRIES: Final = 15  # net.ipv4.tcp_retries2
ICE_PACING: Final = 0.020  # aioice connect(): one check every 20 ms
CONSENT_INTERVAL: Final = 5.0  # aioice CONSENT_INTERVAL, randomized x0.8..1.2
CONSENT_TIMEOUT: Final = 0.5  # aioice: a consent check unanswered this long has failed
CONSENT_FAILURES: Final = 6
# `disconnected` needs a failed consent check *and* this long without receiving anything on the
# peer connection (libwebrtc's 2.5 s receiving timeout); a late answer on a long path is no outage.
RECEIVE_TIMEOUT: Final = 2.5
WATCH_INTERVAL: Final = 0.5
DTLS_RTO: Final = 1.0  # OpenSSL's initial DTLS timer
DTLS_RETRANSMISSIONS: Final = 12  # OpenSSL DTLS1_TMO_ALERT_COUNT

# --- ICE candidate priorities --------------------------------------------------------------------
HOST_PREF, RELAY_PREF = 126, 0  # RFC 8445 type preferences


def priority(type_pref: int) -> int:
    """RFC 8445 candidate priority for component 1 with the highest local preference."""
    return (type_pref << 24) + (65535 << 8) + (256 - 1)
