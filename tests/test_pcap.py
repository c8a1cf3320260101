"""pcap captures (netem/pcap.py) of the simulator's packet log and of the relay's real datagrams,
read back with tshark and scapy."""

from __future__ import annotations

import collections
import json
import struct
import subprocess
from pathlib import Path

import pytest
import trio
import trio.testing
from aioice import stun
from rtcprobe.core.errors import ConfigError
from rtcprobe.drivers.sim import run_simulation
from rtcprobe.netem.pcap import CLIENT_IP, SERVER_IP, TURN_IP, PcapStream, write_pcap
from rtcprobe.netem.relay import ImpairmentRelay, RelayRecord
from rtcprobe.netem.scenario import Scenario
from rtcprobe.scenarios import load
from scapy.layers.inet import IP, TCP, UDP
from scapy.utils import rdpcap

from rtcprobe.cli import main as cli_main

pytestmark = pytest.mark.timeout(120)


def tshark_fields(tshark: str, path: Path, *fields: str, options: tuple[str, ...] = ()) -> list[list[str]]:
    cmd = [tshark, "-r", str(path), *options, "-T", "fields", *(x for f in fields for x in ("-e", f))]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    return [line.split("\t") for line in out.splitlines()]


def protocols(tshark: str, path: Path, *options: str) -> collections.Counter[str]:
    """How many frames carry each protocol. tshark's RTP heuristic hands RTCP-muxed packets to
    RTCP (the stack then reads rtp:rtcp): those count as RTCP only."""
    rows = tshark_fields(tshark, path, "frame.protocols", options=options)
    counts: collections.Counter[str] = collections.Counter()
    for (stack,) in rows:
        names = set(stack.split(":"))
        if "rtcp" in names:
            names.discard("rtp")
        counts.update(names)
    return counts


@pytest.fixture(scope="module")
def sim_log() -> tuple:  # type: ignore[type-arg]
    return run_simulation(load("lossy-wifi"), seed=2, packet_log=True).packet_log


# --- the simulator's packet log ----------------------------------------------------------------


def test_sim_capture_opens_in_tshark_with_stun_rtp_rtcp_dtls(tshark: str, sim_log: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    path = tmp_path / "sim.pcap"
    written = write_pcap(path, sim_log)
    delivered = [r for r in sim_log if r.time_delivered is not None]
    assert written == len(delivered) < len(sim_log)  # lossy-wifi drops some: they are not in the capture
    seen = protocols(tshark, path, "-o", "rtp.heuristic_rtp:TRUE")
    kinds = collections.Counter(r.kind for r in delivered)
    assert seen["stun"] == kinds["stun"]
    assert seen["rtp"] == kinds["rtp"]
    assert seen["dtls"] == kinds["dtls"]
    assert seen["rtcp"] == kinds["rtcp"]
    assert seen["tcp"] == kinds["tcp"]
    assert "_ws.malformed" not in seen
    # The documented decode-as route works too: RTP on the media port.
    rows = tshark_fields(tshark, path, "rtp.p_type", options=("-d", "udp.port==40000,rtp", "-Y", "rtp"))
    assert {int(pt) for (pt,) in rows if pt} >= {96, 111}


def test_sim_capture_timestamps_sizes_and_addresses(sim_log: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    path = tmp_path / "sim.pcap"
    write_pcap(path, sim_log, epoch=1_700_000_000.0)
    packets = rdpcap(str(path))
    delivered = sorted((r for r in sim_log if r.time_delivered is not None), key=lambda r: r.time_delivered)
    stamps = [float(p.time) - 1_700_000_000.0 for p in packets]
    assert stamps == pytest.approx([r.time_delivered for r in delivered], abs=2e-6)  # µs resolution
    for p, r in zip(packets, delivered, strict=True):
        assert {p[IP].src, p[IP].dst} <= {CLIENT_IP, SERVER_IP, TURN_IP}
        assert (p[IP].src == CLIENT_IP) == (r.direction == "uplink")
        if r.kind == "stun":
            assert TURN_IP in (p[IP].src, p[IP].dst)
        if r.kind == "tcp":
            assert TCP in p
            if r.size > 60:  # a SYN carries 40 bytes of options, ours only the timestamp
                assert len(p[IP]) == r.size
        elif r.kind in ("stun", "rtcp"):
            assert len(p[IP]) == r.size - (r.size - 28) % 4  # STUN and RTCP are 4-byte aligned
        else:
            assert len(p[IP]) == r.size
        # Checksums as the wire would have them: scapy recomputes and compares.
        ip = p[IP].copy()
        del ip.chksum
        assert IP(bytes(ip)).chksum == p[IP].chksum


def test_sim_capture_is_deterministic(sim_log: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    write_pcap(a, sim_log)
    write_pcap(b, run_simulation(load("lossy-wifi"), seed=2, packet_log=True).packet_log)
    assert a.read_bytes() == b.read_bytes()


def test_cli_run_sim_writes_pcap(tshark: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "run.pcap"
    assert cli_main(["run", "clean-broadband", "--json", "--pcap", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["run"]["driver"] == "sim"
    seen = protocols(tshark, path, "-o", "rtp.heuristic_rtp:TRUE")
    assert seen["stun"] > 0 and seen["rtp"] > 100


# --- the relay's real datagrams ----------------------------------------------------------------


def rtp_packet(seq: int, pt: int = 111) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq, seq * 960, 0x1234ABCD) + bytes(120)


def relay_capture(path: Path) -> tuple[int, tuple[str, int], tuple[str, int]]:
    """STUN requests and RTP through a relay (with 5 ms delay) to an upstream that answers STUN."""

    async def main() -> tuple[int, tuple[str, int], tuple[str, int]]:
        upstream = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await upstream.bind(("127.0.0.1", 0))
        client = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await client.bind(("127.0.0.1", 0))
        sc = Scenario.from_dict({"network": {"delay_ms": 5}})
        with PcapStream(path) as stream:
            relay = ImpairmentRelay.from_scenario(sc, upstream.getsockname(), sink=stream)

            async def answer() -> None:
                while True:
                    data, addr = await upstream.recvfrom(2048)
                    if data[:2] == b"\x00\x01":
                        request = stun.parse_message(data)
                        response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, request.transaction_id)
                        response.attributes["XOR-MAPPED-ADDRESS"] = addr[:2]
                        await upstream.sendto(bytes(response), addr)

            async with trio.open_nursery() as nursery:
                address = await nursery.start(relay.serve)
                nursery.start_soon(answer)
                for seq in range(50):
                    if seq % 10 == 0:
                        await client.sendto(bytes(stun.Message(stun.Method.BINDING, stun.Class.REQUEST)), address)
                    await client.sendto(rtp_packet(seq), address)
                    await trio.sleep(0.02)
                await trio.sleep(0.5)
                nursery.cancel_scope.cancel()
            count = stream.count
        ends = client.getsockname()[:2], upstream.getsockname()[:2]
        client.close()
        upstream.close()
        return count, ends[0], ends[1]

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_relay_capture_shows_stun_and_rtp_with_real_addresses(tshark: str, tmp_path: Path) -> None:
    path = tmp_path / "relay.pcap"
    count, client, upstream = relay_capture(path)
    assert count == 50 + 5 + 5  # RTP, STUN requests, STUN responses
    seen = protocols(tshark, path, "-d", f"udp.port=={upstream[1]},rtp")
    assert seen["rtp"] == 50
    seen = protocols(tshark, path, "-o", "rtp.heuristic_rtp:TRUE")
    assert seen["stun"] == 10 and seen["rtp"] == 50
    rows = tshark_fields(tshark, path, "ip.src", "udp.srcport", "ip.dst", "udp.dstport", "stun.type",
                         options=("-Y", "stun"))
    requests = [r for r in rows if r[4] == "0x0001"]
    responses = [r for r in rows if r[4] == "0x0101"]
    assert len(requests) == len(responses) == 5
    assert {(r[0], int(r[1]), r[2], int(r[3])) for r in requests} == {(*client, *upstream)}
    assert {(r[0], int(r[1]), r[2], int(r[3])) for r in responses} == {(*upstream, *client)}


def test_write_pcap_of_relay_records_and_edge_cases(tshark: str, tmp_path: Path) -> None:
    records = [
        RelayRecord(0.0, 0.030, "uplink", ("127.0.0.1", 5000), ("127.0.0.1", 3478), rtp_packet(1)),
        RelayRecord(0.0, 0.010, "downlink", ("127.0.0.1", 3478), ("127.0.0.1", 5000), rtp_packet(2)),
    ]
    path = tmp_path / "two.pcap"
    assert write_pcap(path, records) == 2
    rows = tshark_fields(tshark, path, "frame.time_epoch", "rtp.seq", options=("-d", "udp.port==3478,rtp"))
    assert [(round(float(t), 6), int(seq)) for t, seq in rows] == [(0.01, 2), (0.03, 1)]  # delivery order
    empty = tmp_path / "empty.pcap"
    assert write_pcap(empty, []) == 0
    assert tshark_fields(tshark, empty, "frame.number") == []
    with pytest.raises(ConfigError, match="directory"):
        write_pcap(tmp_path, records)
    with pytest.raises(ConfigError, match="does not exist"):
        write_pcap(tmp_path / "missing" / "x.pcap", records)
    with pytest.raises(ConfigError, match="unknown packet kind"):
        write_pcap(tmp_path / "bad.pcap", [(0.0, 0.1, "uplink", "quic", 100)])


def test_udp_checksum_is_absent_not_wrong(tmp_path: Path) -> None:
    path = tmp_path / "one.pcap"
    write_pcap(path, [RelayRecord(0.0, 0.0, "uplink", ("127.0.0.1", 1), ("127.0.0.1", 2), b"abc")])
    (p,) = rdpcap(str(path))
    assert p[UDP].chksum == 0 and bytes(p[UDP].payload) == b"abc"
