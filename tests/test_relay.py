"""The impairment relay (netem/relay.py) measured with plain UDP sockets on 127.0.0.1.

Most tests run under trio's MockClock (autojump): the relay, the client and the upstream are
real loopback sockets, but time is virtual, so thousands of datagrams spaced like real media take
milliseconds, and every delay measured is exactly what the link model decided (no scheduling
noise). One test runs on the real clock to show the same behaviour there.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import numpy as np
import pytest
import trio
import trio.testing
from rtcprobe.core.errors import ConfigError
from rtcprobe.netem.relay import (
    DOWNLINK,
    UDP_IP_OVERHEAD,
    UPLINK,
    ImpairmentRelay,
    RelayRecord,
    parse_hostport,
)
from rtcprobe.netem.scenario import Scenario

pytestmark = pytest.mark.timeout(120)

HEADER = struct.Struct("!Id")  # sequence number, send time on the relay's clock
LOCAL = ("127.0.0.1", 0)


def four_sigma(p: float, n: int) -> float:
    """4 standard deviations of a binomial proportion."""
    return 4 * math.sqrt(p * (1 - p) / n)


def scenario(network: dict[str, Any], phases: list[dict[str, Any]] | None = None) -> Scenario:
    data: dict[str, Any] = {"name": "test", "network": network}
    if phases:
        data["phase"] = phases
    return Scenario.from_dict(data)


async def udp_socket() -> trio.socket.SocketType:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    # Thousands of datagrams may wait in a buffer while the sender runs ahead: never lose them here.
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4 << 20)
    await sock.bind(LOCAL)
    return sock


@attrs.define
class Traffic:
    """What a run sent and what arrived where (times on the relay's clock)."""

    relay: ImpairmentRelay
    sent: dict[int, float] = attrs.Factory(dict)
    sizes: dict[int, int] = attrs.Factory(dict)
    at_upstream: dict[int, float] = attrs.Factory(dict)
    upstream_sources: set[tuple[str, int]] = attrs.Factory(set)
    echoed: dict[int, float] = attrs.Factory(dict)
    records: list[RelayRecord] = attrs.Factory(list)


async def drive(
    sc: Scenario, *, n: int, interval: float, size: int = 200, echo: bool = False, seed: int = 1,
    settle: float = 3.0, extra: Callable[[ImpairmentRelay, tuple[str, int]], Awaitable[None]] | None = None,
) -> Traffic:
    """Send ``n`` numbered datagrams ``interval`` s apart through a relay to a plain UDP upstream
    (which echoes them back when ``echo``), and record every arrival."""
    upstream = await udp_socket()
    client = await udp_socket()
    records: list[RelayRecord] = []
    relay = ImpairmentRelay.from_scenario(sc, upstream.getsockname(), seed=seed, sink=records.append)
    traffic = Traffic(relay, records=records)

    async def upstream_side() -> None:
        while True:
            data, addr = await upstream.recvfrom(70000)
            if len(data) >= HEADER.size:
                seq, _ = HEADER.unpack_from(data)
                traffic.at_upstream[seq] = relay.now()
            traffic.upstream_sources.add(addr[:2])
            if echo:
                await upstream.sendto(data, addr)

    async def client_side() -> None:
        while True:
            data, _ = await client.recvfrom(70000)
            seq, _ = HEADER.unpack_from(data)
            traffic.echoed[seq] = relay.now()

    async with trio.open_nursery() as nursery:
        address = await nursery.start(relay.serve)
        nursery.start_soon(upstream_side)
        nursery.start_soon(client_side)
        pad = bytes(size - HEADER.size)
        for seq in range(n):
            now = relay.now()
            traffic.sent[seq] = now
            traffic.sizes[seq] = size
            await client.sendto(HEADER.pack(seq, now) + pad, address)
            await trio.sleep(interval)
        if extra is not None:
            await extra(relay, address)
        await trio.sleep(settle)
        nursery.cancel_scope.cancel()
    upstream.close()
    client.close()
    return traffic


def mock_run(fn: Callable[[], Awaitable[Traffic]]) -> Traffic:
    return trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


# --- the link model, measured ------------------------------------------------------------------


def test_loss_rate_matches_configured_loss() -> None:
    n, p = 4000, 0.2
    tr = mock_run(lambda: drive(scenario({"uplink": {"loss": p}}), n=n, interval=0.005))
    dropped = n - len(tr.at_upstream)
    assert abs(dropped / n - p) < four_sigma(p, n)
    up = tr.relay.counters[UPLINK]
    # Every datagram is accounted for: the relay's counters agree with what the sockets saw.
    assert (up.received, up.dropped, up.link.dropped_loss, up.forwarded) == (n, dropped, dropped, n - dropped)


def test_added_delay_matches_delay_plus_jitter() -> None:
    n, delay, jitter = 2000, 0.040, 0.010
    sc = scenario({"uplink": {"delay_ms": 40, "jitter_ms": 10, "jitter_distribution": "uniform"}})
    tr = mock_run(lambda: drive(sc, n=n, interval=0.025))
    added = np.array([tr.at_upstream[s] - tr.sent[s] for s in range(n)])
    assert len(tr.at_upstream) == n
    eps = 1e-9
    assert added.min() >= delay - jitter - eps and added.max() <= delay + jitter + eps
    sd = jitter / math.sqrt(3)  # uniform ±jitter
    assert abs(added.mean() - delay) < 4 * sd / math.sqrt(n)
    assert abs(added.std() - sd) < 0.1 * sd
    assert tr.relay.counters[UPLINK].delayed == n


def test_bandwidth_limit_caps_throughput() -> None:
    n, size, rate_kbps = 3000, 1172, 800  # 1200-byte IP packets offered at 1600 kbit/s
    sc = scenario({"uplink": {"bandwidth_kbps": rate_kbps, "queue_packets": 50}})
    tr = mock_run(lambda: drive(sc, n=n, interval=0.006, size=size))
    arrivals = sorted(tr.at_upstream.values())
    span = arrivals[-1] - arrivals[0]
    got_kbps = (len(arrivals) - 1) * (size + UDP_IP_OVERHEAD) * 8 / span / 1000
    assert abs(got_kbps - rate_kbps) < 0.01 * rate_kbps
    up = tr.relay.counters[UPLINK]
    assert up.link.dropped_queue == n - len(arrivals) > 0.4 * n  # half the offer cannot fit
    # Without the limit the same offer goes through whole.
    free = mock_run(lambda: drive(scenario({}), n=500, interval=0.006, size=size))
    assert len(free.at_upstream) == 500


def test_outage_phase_stops_traffic_and_it_resumes() -> None:
    sc = scenario({"delay_ms": 10}, [{"at": 2.0, "outage": True}, {"at": 3.0, "outage": False}])
    n = 500  # one every 10 ms for 5 s, echoed back
    tr = mock_run(lambda: drive(sc, n=n, interval=0.010, echo=True))
    in_outage = {s for s, t in tr.sent.items() if 2.0 <= t < 3.0}
    assert 99 <= len(in_outage) <= 101  # 1 s of a 10 ms cadence (float sums decide the edges)
    assert not in_outage & set(tr.at_upstream)  # nothing sent during the outage arrived
    assert set(tr.at_upstream) == set(range(n)) - in_outage  # everything else did
    after = [s for s in tr.echoed if tr.sent[s] >= 3.0]
    assert len(after) == sum(1 for t in tr.sent.values() if t >= 3.0)  # traffic resumed, both ways
    # Echoes of datagrams that reached the upstream just before 2 s meet the downlink outage.
    lost_back = {s for s in tr.at_upstream if s not in tr.echoed}
    assert lost_back and all(2.0 <= tr.at_upstream[s] < 3.0 for s in lost_back)
    assert tr.relay.counters[UPLINK].link.dropped_outage == len(in_outage)
    assert tr.relay.counters[DOWNLINK].link.dropped_outage == len(lost_back)


def test_downlink_model_applies_to_replies() -> None:
    n, p = 3000, 0.3
    sc = scenario({"downlink": {"loss": p, "delay_ms": 25}})
    tr = mock_run(lambda: drive(sc, n=n, interval=0.005, echo=True))
    assert len(tr.at_upstream) == n  # the uplink is clean
    lost = n - len(tr.echoed)
    assert abs(lost / n - p) < four_sigma(p, n)
    rtts = [tr.echoed[s] - tr.sent[s] for s in tr.echoed]
    assert min(rtts) == pytest.approx(0.025, abs=1e-6) and max(rtts) == pytest.approx(0.025, abs=1e-6)


def test_records_carry_real_addresses_and_delivery_times() -> None:
    sc = scenario({"delay_ms": 5, "loss": 0.5})
    tr = mock_run(lambda: drive(sc, n=200, interval=0.01, echo=True))
    assert len(tr.records) == len(tr.at_upstream) + len(tr.echoed)
    up = [r for r in tr.records if r.direction == UPLINK]
    down = [r for r in tr.records if r.direction == DOWNLINK]
    (client,) = {r.src for r in up}
    assert {r.dst for r in up} == {r.src for r in down} == {tr.relay.upstream}
    assert {r.dst for r in down} == {client}
    for r in tr.records:
        assert r.time_delivered == pytest.approx(r.time_sent + 0.005)
    delivered = [r.time_delivered for r in tr.records]
    assert delivered == sorted(delivered)  # streamed in delivery order


# --- clients, garbage, bookkeeping -------------------------------------------------------------


def test_one_upstream_socket_per_client() -> None:
    async def extra(relay: ImpairmentRelay, address: tuple[str, int]) -> None:
        others = [await udp_socket() for _ in range(3)]
        for i, sock in enumerate(others):
            await sock.sendto(HEADER.pack(10_000 + i, 0.0), address)
        await trio.sleep(0.1)
        for sock in others:
            sock.close()

    tr = mock_run(lambda: drive(scenario({}), n=5, interval=0.01, extra=extra))
    assert len(tr.upstream_sources) == 4  # four clients, four distinct 5-tuples at the upstream
    assert tr.relay.clients_seen == 4


def test_garbage_never_kills_the_relay() -> None:
    junk_sizes = (0, 1, 3, 1500, 65507)

    async def extra(relay: ImpairmentRelay, address: tuple[str, int]) -> None:
        junk = await udp_socket()
        rng = np.random.default_rng(3)
        for size in junk_sizes:
            await junk.sendto(b"\xff" * min(size, 1) + rng.bytes(max(0, size - 1)), address)
        await trio.sleep(0.1)
        for seq in range(100, 105):  # and it still relays afterwards
            await junk.sendto(HEADER.pack(seq, 0.0), address)
        await trio.sleep(0.1)
        junk.close()

    tr = mock_run(lambda: drive(scenario({"delay_ms": 1}), n=10, interval=0.01, extra=extra))
    numbered = {s for s in tr.at_upstream if s < 10 or 100 <= s < 105}
    assert numbered == set(range(10)) | set(range(100, 105))
    assert tr.relay.counters[UPLINK].forwarded == 15 + len(junk_sizes)  # the empty datagram too
    assert sorted(len(r.payload) for r in tr.records)[-1] == 65507


def test_foreign_datagrams_on_an_upstream_socket_are_ignored() -> None:
    async def main() -> tuple[int, int, int]:
        upstream = await udp_socket()
        client = await udp_socket()
        stranger = await udp_socket()
        relay = ImpairmentRelay.from_scenario(scenario({}), upstream.getsockname())
        async with trio.open_nursery() as nursery:
            address = await nursery.start(relay.serve)
            await client.sendto(b"hello", address)
            _, relay_side = await upstream.recvfrom(100)  # the client's upstream socket
            await stranger.sendto(b"not from the upstream", relay_side)
            await upstream.sendto(b"reply", relay_side)
            data, _ = await client.recvfrom(100)
            assert data == b"reply"
            nursery.cancel_scope.cancel()
        for s in (upstream, client, stranger):
            s.close()
        return relay.foreign, relay.counters[DOWNLINK].forwarded, relay.counters[UPLINK].forwarded

    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == (1, 1, 1)


def test_idle_clients_are_released_and_limits_hold() -> None:
    async def main() -> tuple[int, int, int, int]:
        upstream = await udp_socket()
        relay = ImpairmentRelay.from_scenario(scenario({}), upstream.getsockname(), idle_timeout=10, max_clients=2)
        socks = [await udp_socket() for _ in range(3)]
        async with trio.open_nursery() as nursery:
            address = await nursery.start(relay.serve)
            for s in socks:
                await s.sendto(b"x", address)
            await trio.sleep(1)
            active, refused = relay.clients, relay.refused
            await trio.sleep(20)
            idle = relay.clients
            await socks[2].sendto(b"x", address)  # room again
            await trio.sleep(1)
            again = relay.clients
            nursery.cancel_scope.cancel()
        for s in (*socks, upstream):
            s.close()
        assert relay.clients == 0  # stopping releases every upstream socket
        return active, refused, idle, again

    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == (2, 1, 0, 1)


def test_restart_clock_aligns_phases_with_a_later_start() -> None:
    async def main() -> tuple[int, int]:
        upstream = await udp_socket()
        client = await udp_socket()
        sc = scenario({}, [{"at": 0.0, "outage": True}, {"at": 1.0, "outage": False}])
        relay = ImpairmentRelay.from_scenario(sc, upstream.getsockname())
        async with trio.open_nursery() as nursery:
            address = await nursery.start(relay.serve)
            await trio.sleep(5)  # the relay idles before the run starts
            relay.restart_clock()
            await client.sendto(b"during the outage", address)
            await trio.sleep(1.5)
            await client.sendto(b"after it", address)
            data, _ = await upstream.recvfrom(100)
            assert data == b"after it"
            nursery.cancel_scope.cancel()
        upstream.close()
        client.close()
        c = relay.counters[UPLINK]
        return c.link.dropped_outage, c.forwarded

    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == (1, 1)


def test_real_clock_loss_and_delay() -> None:
    """The same relay on trio's real clock: loss within 4σ, and no datagram is ever early."""
    n, p, delay = 2000, 0.1, 0.020
    sc = scenario({"uplink": {"loss": p, "delay_ms": 20}})

    async def main() -> Traffic:
        return await drive(sc, n=n, interval=0.0005, settle=0.5)

    tr = trio.run(main)
    dropped = n - len(tr.at_upstream)
    assert abs(dropped / n - p) < four_sigma(p, n)
    assert tr.relay.counters[UPLINK].link.dropped_loss == dropped
    assert all(tr.at_upstream[s] - tr.sent[s] >= delay - 1e-3 for s in tr.at_upstream)


def test_summary_names_every_counter() -> None:
    tr = mock_run(lambda: drive(scenario({"loss": 0.5}), n=100, interval=0.01, echo=True))
    text = tr.relay.summary()
    up = tr.relay.counters[UPLINK]
    assert f"uplink   received 100  forwarded {up.forwarded}" in text
    assert f"loss {up.link.dropped_loss}" in text and "downlink" in text and "clients  1 seen" in text


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("127.0.0.1", "HOST:PORT"), (":3478", "HOST:PORT"), ("localhost:3478", "IPv4"), ("[::1]:3478", "IPv4"),
     ("127.0.0.1:99999", "port"), ("127.0.0.1:x", "port")],
)
def test_bad_addresses_are_config_errors(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_hostport(text)


def test_parse_hostport() -> None:
    assert parse_hostport("127.0.0.1:3478") == ("127.0.0.1", 3478)


def test_bypass_lets_everything_through_and_keeps_the_links_untouched() -> None:
    async def main() -> tuple[int, int, int, int]:
        upstream = await udp_socket()
        client = await udp_socket()
        relay = ImpairmentRelay.from_scenario(scenario({"outage": True}), upstream.getsockname())
        async with trio.open_nursery() as nursery:
            address = await nursery.start(relay.serve)
            await client.sendto(b"lost in the outage", address)
            await trio.sleep(1)
            relay.bypass()
            await client.sendto(b"after the run", address)
            data, relay_side = await upstream.recvfrom(100)
            assert data == b"after the run"
            await upstream.sendto(b"reply", relay_side)
            assert (await client.recvfrom(100))[0] == b"reply"
            nursery.cancel_scope.cancel()
        upstream.close()
        client.close()
        up, down = relay.counters[UPLINK], relay.counters[DOWNLINK]
        assert "bypassed 1" in relay.summary()
        return up.link.sent, up.link.dropped_outage, up.bypassed, down.bypassed

    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == (1, 1, 1, 1)
