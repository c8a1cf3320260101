"""Captures of what crossed an emulated link, as pcap files (scapy) that Wireshark/tshark open.

Two kinds of record go in:

* the impairment relay's :class:`~rtcprobe.netem.relay.RelayRecord` — real payloads and real
  addresses (client ↔ upstream, as if the relay were a transparent link), written as IPv4/UDP;
* the simulator's packet log (records unpacking to ``(time_sent, time_delivered, direction,
  kind, size)``, ``kind`` one of tcp/stun/dtls/rtp/rtcp). The simulator moves sizes, not bytes,
  so plausible payloads are synthesized: STUN Binding requests/responses with the magic cookie,
  RTP v2 (Opus PT 111 for small packets, VP8 PT 96 otherwise) with running sequence numbers and
  timestamps, RTCP SR/RR, DTLS 1.2 handshake records, and TCP segments for signaling. Addresses
  are TEST-NET-1 (RFC 5737): client 192.0.2.10, TURN server 192.0.2.1:3478, media server
  192.0.2.20. The path is flattened to one 5-tuple per traffic family: STUN to the TURN port,
  media to the server, signaling over TCP to port 443. Synthesis is deterministic: the same log
  gives the same bytes.

Only delivered packets are written (a dropped one never crossed the link), stamped with their
delivery time (``epoch`` + the record's time, seconds, µs resolution), in delivery order. Frames
are Ethernet with fixed locally administered MACs, so every tool's default dissectors apply.
Headers are packed here with ``struct`` (IPv4 and TCP checksums computed, UDP checksum 0 as IPv4
allows) and scapy's ``RawPcapWriter`` writes the file: building scapy ``Packet`` objects cost
~0.7 ms each, which would make a capture of a 10 s run take seconds.
"""

from __future__ import annotations

import array
import logging
import math
import random
import socket
import struct
import sys
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from rtcprobe.core.errors import ConfigError

from .files import writable_path

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)  # scapy warns about IPv6 routes on import

from scapy.utils import RawPcapWriter  # noqa: E402

__all__ = [
    "CLIENT_IP", "SERVER_IP", "TURN_IP", "PcapStream", "check_writable", "synthesize", "tcp_frame", "udp_frame",
    "write_pcap",
]

CLIENT_IP: Final = "192.0.2.10"
SERVER_IP: Final = "192.0.2.20"
TURN_IP: Final = "192.0.2.1"
TURN_PORT: Final = 3478
CLIENT_STUN_PORT: Final = 50000
CLIENT_TCP_PORT: Final = 50001
CLIENT_MEDIA_PORT: Final = 50002
SERVER_MEDIA_PORT: Final = 40000
SIGNALING_PORT: Final = 443
CLIENT_MAC: Final = "02:00:00:00:00:0a"
SERVER_MAC: Final = "02:00:00:00:00:14"
UDP_IP: Final = 28
TCP_IP: Final = 52  # IPv4 + TCP with timestamps, as the simulator counts
STUN_COOKIE: Final = 0x2112A442
AUDIO_MAX: Final = 300  # IP bytes: Opus packets are smaller, video packets larger
KINDS: Final = ("tcp", "stun", "dtls", "rtp", "rtcp")
TCP_FIN, TCP_SYN, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x08, 0x10

Address = tuple[str, int]
Frame = tuple[float, bytes]  # (timestamp in seconds, Ethernet frame)


_MAC = {True: bytes.fromhex("02000000001402000000000a"), False: bytes.fromhex("02000000000a020000000014")}


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(array.array("H", data))  # native order; folded and swapped back below
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    value = ~total & 0xFFFF
    return socket.htons(value) if sys.byteorder == "little" else value


def _ipv4(src: str, dst: str, proto: int, ident: int, body: bytes) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), ident & 0xFFFF, 0x4000, 64, proto, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + body


def udp_frame(uplink: bool, src: Address, dst: Address, payload: bytes, ident: int) -> bytes:
    """An Ethernet/IPv4/UDP frame carrying ``payload`` (UDP checksum 0: none, as IPv4 allows)."""
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    return _MAC[uplink] + b"\x08\x00" + _ipv4(src[0], dst[0], 17, ident, udp)


def tcp_frame(uplink: bool, src: Address, dst: Address, seq: int, ack: int, flags: int, payload: bytes,
              ident: int, tsval: int = 0) -> bytes:
    """An Ethernet/IPv4/TCP frame with the timestamp option (32-byte TCP header, as Linux sends),
    checksum computed."""
    options = struct.pack("!BBBBII", 1, 1, 8, 10, tsval & 0xFFFFFFFF, 0)
    header = struct.pack("!HHIIBBHHH", src[1], dst[1], seq, ack, 8 << 4, flags, 65535, 0, 0) + options
    pseudo = socket.inet_aton(src[0]) + socket.inet_aton(dst[0]) + struct.pack("!BBH", 0, 6, len(header) + len(payload))
    csum = _checksum(pseudo + header + payload)
    segment = header[:16] + struct.pack("!H", csum) + header[18:] + payload
    return _MAC[uplink] + b"\x08\x00" + _ipv4(src[0], dst[0], 6, ident, segment)


def _fill(n: int, seed: int) -> bytes:
    """``n`` deterministic filler bytes (stand-ins for encrypted payload)."""
    return random.Random(seed).randbytes(n) if n > 0 else b""


class _Synth:
    """Per-flow state (sequence numbers, transaction ids) for synthesized payloads."""

    def __init__(self) -> None:
        self.n = 0
        self.rtp_seq: dict[tuple[bool, bool], int] = {}
        self.tcp_seq = {True: 1000, False: 5000}
        self.dtls_seq = {True: 0, False: 0}
        self.stun_tid: list[bytes] = []

    def packet(self, t_sent: float, uplink: bool, kind: str, size: int) -> bytes:
        self.n += 1
        if kind == "tcp":
            return self._tcp(uplink, size)
        payload = max(0, size - UDP_IP)
        if kind == "stun":
            body = self._stun(uplink, payload)
            client, far = (CLIENT_IP, CLIENT_STUN_PORT), (TURN_IP, TURN_PORT)
        else:
            body = {"rtp": self._rtp, "rtcp": self._rtcp, "dtls": self._dtls}[kind](t_sent, uplink, payload)
            client, far = (CLIENT_IP, CLIENT_MEDIA_PORT), (SERVER_IP, SERVER_MEDIA_PORT)
        src, dst = (client, far) if uplink else (far, client)
        return udp_frame(uplink, src, dst, body, self.n)

    def _tcp(self, uplink: bool, size: int) -> bytes:
        payload = max(0, size - TCP_IP)
        syn = payload == 0 and size >= 60  # the simulator's SYN is 60 bytes, a bare ACK 52
        seq = self.tcp_seq[uplink]
        self.tcp_seq[uplink] = (seq + max(payload, 1 if syn else 0)) & 0xFFFFFFFF
        client, server = (CLIENT_IP, CLIENT_TCP_PORT), (SERVER_IP, SIGNALING_PORT)
        src, dst = (client, server) if uplink else (server, client)
        if syn:
            flags = TCP_SYN if uplink else TCP_SYN | TCP_ACK
        else:
            flags = TCP_PSH | TCP_ACK if payload else TCP_ACK
        return tcp_frame(uplink, src, dst, seq, self.tcp_seq[not uplink], flags, _fill(payload, self.n), self.n,
                         tsval=self.n)

    def _stun(self, uplink: bool, payload: int) -> bytes:
        # A Binding request (client → TURN) or success response (TURN → client) answering the
        # oldest open request, padded to the record's size with a SOFTWARE attribute.
        if uplink or not self.stun_tid:
            tid = struct.pack("!III", 0x52544350, self.n, 0x524F4245)  # "RTCP" n "ROBE"
            if uplink:
                self.stun_tid.append(tid)
        else:
            tid = self.stun_tid.pop(0)
        attrs = b""
        if not uplink:  # XOR-MAPPED-ADDRESS 192.0.2.10:50000
            port = CLIENT_STUN_PORT ^ (STUN_COOKIE >> 16)
            addr = struct.unpack("!I", bytes([192, 0, 2, 10]))[0] ^ STUN_COOKIE
            attrs += struct.pack("!HHBBHI", 0x0020, 8, 0, 1, port, addr)
        room = payload - 20 - len(attrs) - 4
        if room >= 0:
            room -= room % 4
            attrs += struct.pack("!HH", 0x8022, room) + b"rtcprobe sim".ljust(room, b" ")[:room]
        method = 0x0001 if uplink else 0x0101
        return struct.pack("!HHI", method, len(attrs), STUN_COOKIE) + tid + attrs

    def _rtp(self, t_sent: float, uplink: bool, payload: int) -> bytes:
        audio = payload + UDP_IP <= AUDIO_MAX
        key = (uplink, audio)
        seq = self.rtp_seq.get(key, 1000 if audio else 20000)
        self.rtp_seq[key] = (seq + 1) & 0xFFFF
        pt, clock = (111, 48000) if audio else (96, 90000)
        ssrc = (0x11110000 if audio else 0x22220000) + (1 if uplink else 2)
        ts = math.floor(t_sent * clock) & 0xFFFFFFFF
        header = struct.pack("!BBHII", 0x80, pt, seq, ts, ssrc)
        return header + _fill(max(0, payload - len(header)), self.n)

    def _rtcp(self, t_sent: float, uplink: bool, payload: int) -> bytes:
        # A compound packet: a sender report from the publisher (uplink), a receiver report
        # otherwise, a PLI when the size is too small for either; the rest of the size is an APP
        # packet or RTCP padding. RTCP is 4-byte aligned, so up to 3 bytes of the size are left
        # out (a trailer there, like SRTCP's, would hide the packet from tshark's RTCP heuristic).
        ssrc = 0x22220000 + (1 if uplink else 2)
        media = 0x22220000 + (2 if uplink else 1)
        block = struct.pack("!IIIIII", media, 0, 0, 0, 0, 0)
        aligned = payload - payload % 4
        if uplink and aligned >= 52:
            ntp = int((t_sent + 2208988800) * 2**32) & 0xFFFFFFFFFFFFFFFF
            first, body = 0x81, struct.pack("!IQIII", ssrc, ntp, int(t_sent * 90000) & 0xFFFFFFFF, 0, 0) + block
            pt = 200
        elif aligned >= 32:
            first, body, pt = 0x81, struct.pack("!I", ssrc) + block, 201
        else:
            first, body, pt = 0x81, struct.pack("!II", ssrc, media), 206  # PSFB, FMT 1: PLI
        rest = aligned - 4 - len(body)
        if 0 < rest < 12:  # too small for an APP packet: RTCP padding, its count in the last byte
            first |= 0x20
            body += bytes(rest - 1) + bytes([rest])
            rest = 0
        packet = struct.pack("!BBH", first, pt, len(body) // 4) + body
        if rest >= 12:
            app = struct.pack("!I", ssrc) + b"rtcp" + _fill(rest - 12, self.n)
            packet += struct.pack("!BBH", 0x80, 204, len(app) // 4) + app
        return packet

    def _dtls(self, t_sent: float, uplink: bool, payload: int) -> bytes:
        seq = self.dtls_seq[uplink]
        self.dtls_seq[uplink] = seq + 1
        length = max(0, payload - 13)
        header = struct.pack("!BHH", 22, 0xFEFD, 0) + seq.to_bytes(6, "big") + struct.pack("!H", length)
        return header + _fill(length, self.n)


def _real(record: Any, n: int) -> bytes:
    src, dst = record.src, record.dst
    return udp_frame(record.direction == "uplink", (src[0], int(src[1])), (dst[0], int(dst[1])),
                     bytes(record.payload), n)


def synthesize(records: Iterable[Any], *, epoch: float = 0.0) -> list[Frame]:
    """The (timestamp, Ethernet frame) pairs a capture of ``records`` holds: delivered packets
    only, in delivery order."""
    rows: list[tuple[float, int, Any]] = []
    for i, record in enumerate(records):
        delivered = getattr(record, "time_delivered", None)
        if delivered is None and not hasattr(record, "payload"):
            delivered = tuple(record)[1]  # a bare (sent, delivered, direction, kind, size) tuple
        if delivered is None or delivered != delivered:  # dropped (None or NaN)
            continue
        rows.append((float(delivered), i, record))
    rows.sort(key=lambda r: (r[0], r[1]))
    synth = _Synth()
    frames: list[Frame] = []
    for delivered, _, record in rows:
        if hasattr(record, "payload"):
            frames.append((epoch + delivered, _real(record, len(frames) + 1)))
            continue
        t_sent, _, direction, kind, size = tuple(record)
        if kind not in KINDS:
            raise ConfigError(f"packet log: unknown packet kind {kind!r} (expected one of {', '.join(KINDS)})")
        frames.append((epoch + delivered, synth.packet(float(t_sent), direction == "uplink", kind, int(size))))
    return frames


def _stamp(t: float) -> tuple[int, int]:
    us = round(t * 1e6)
    return us // 1_000_000, us % 1_000_000


def check_writable(path: str | Path) -> Path:
    """``path`` as a Path if a capture can be created there; ConfigError (one line) if not."""
    return writable_path(path, "pcap file")


def _writer(path: str | Path) -> RawPcapWriter:
    p = check_writable(path)
    try:
        writer = RawPcapWriter(str(p), linktype=1, sync=False)  # 1 = Ethernet
        writer.write_header(None)  # an empty capture is still a valid file
    except OSError as exc:
        raise ConfigError(f"cannot write pcap file {str(p)!r}: {exc.strerror or exc}") from None
    return writer


def write_pcap(path: str | Path, records: Iterable[Any], *, epoch: float = 0.0) -> int:
    """Write ``records`` (relay records or the simulator's packet log) to ``path``; the packet count."""
    frames = synthesize(records, epoch=epoch)
    writer = _writer(path)
    try:
        for t, frame in frames:
            sec, usec = _stamp(t)
            writer.write_packet(frame, sec=sec, usec=usec)
    finally:
        writer.close()
    return len(frames)


class PcapStream:
    """Writes relay records as they are forwarded (use it as the relay's ``sink``): a long-running
    relay never holds its capture in memory. Records arrive in delivery order already."""

    def __init__(self, path: str | Path, *, epoch: float = 0.0) -> None:
        self._writer = _writer(path)
        self.epoch = epoch
        self.count = 0

    def write(self, record: Any) -> None:
        self.count += 1
        sec, usec = _stamp(self.epoch + record.time_delivered)
        self._writer.write_packet(_real(record, self.count), sec=sec, usec=usec)

    def __call__(self, record: Any) -> None:
        self.write(record)

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> PcapStream:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
