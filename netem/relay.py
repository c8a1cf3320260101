"""The impairment relay: real UDP traffic through a scenario's link model (trio).

Theory of operation
-------------------
The relay sits between UDP clients and one upstream (in practice a TURN server: WebRTC over
TURN/UDP sends every media packet through it). Clients send to the relay's listening socket;
for each new client address the relay opens its own upstream socket, so the upstream sees one
distinct 5-tuple per client, as it would without the relay. Payloads are never parsed: any
bytes are forwarded, so garbage cannot break the relay, only be delayed or dropped like the rest.

Each datagram is offered to a :class:`~rtcprobe.netem.link.Link` — the same objects, built by
``Scenario.build_links``, that the simulator uses: client→upstream datagrams to the **uplink**,
upstream→client ones to the **downlink**. All clients share the two links: one access link, as
in the simulator, where both peer connections cross the same path. The link's ``t`` is seconds
since the relay's clock started (trio's clock, so tests can run the relay under
``trio.testing.MockClock``), which lines the scenario's phases and outage windows up with that
start; :meth:`ImpairmentRelay.restart_clock` re-aligns them (``run --driver aiortc`` calls it
when the preflight starts). A datagram the link delivers at time ``d`` is pushed on a heap and
sent by one scheduler task at ``d``; a dropped one is only counted. The size offered to the
link is the IPv4 packet size (payload + 28 bytes of IPv4/UDP headers), as in the simulator.

Only UDP is relayed. TURN over TCP (``turn:...?transport=tcp``) would need a TCP proxy that
re-frames the stream; clients using it bypass the impairment (documented limitation).

Per direction the relay counts what the link did (``LinkCounters``: offered, dropped for loss /
queue / outage) and what it did itself: forwarded, delayed (sent later than received), send
errors, and datagrams passed untouched while bypassed (:meth:`ImpairmentRelay.bypass`, for a
run's tear-down). Upstream sockets of clients idle for ``idle_timeout`` seconds are closed.
"""

from __future__ import annotations

import heapq
import ipaddress
import math
import time
from collections.abc import Callable
from typing import Any, Final

import attrs
import numpy as np
import trio
from rtcprobe.core.errors import ConfigError

from .link import Link
from .models import LinkCounters
from .scenario import Scenario

__all__ = [
    "DOWNLINK", "UDP_IP_OVERHEAD", "UPLINK", "DirectionCounters", "ImpairmentRelay", "RelayRecord",
    "parse_hostport",
]

UPLINK: Final = "uplink"  # client → upstream
DOWNLINK: Final = "downlink"  # upstream → client
UDP_IP_OVERHEAD: Final = 28  # IPv4 (20) + UDP (8) header bytes: what a link serializes besides the payload
MAX_DATAGRAM: Final = 65535
DEFAULT_IDLE_TIMEOUT: Final = 120.0  # s: longer than any TURN refresh or ICE consent interval
DEFAULT_MAX_CLIENTS: Final = 256
# A keyframe is dozens of datagrams back to back: room for bursts while the relay is busy.
SOCKET_BUFFER: Final = 4 << 20

Address = tuple[str, int]


def parse_hostport(text: str, what: str = "address") -> Address:
    """``HOST:PORT`` with an IPv4 HOST (``[v6]:PORT`` is refused: the relay is IPv4) → tuple."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{what} must look like HOST:PORT (e.g. 127.0.0.1:3478), got {text!r}")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"{what} host must be an IPv4 address, got {host!r}") from None
    if addr.version != 4:
        raise ConfigError(f"{what} host must be an IPv4 address, got {host!r}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{what} port must be 0..65535, got {port_text!r}")
    return str(addr), int(port_text)


@attrs.frozen
class RelayRecord:
    """One datagram the relay forwarded (what the ``--pcap`` capture shows).

    Times are seconds on the relay's clock (``t`` of the link); the addresses are the real ends
    (client and upstream), as if the relay were a transparent link.
    """

    time_sent: float
    time_delivered: float
    direction: str
    src: Address
    dst: Address
    payload: bytes


@attrs.define
class DirectionCounters:
    """What one direction did: the link's counters plus the relay's own."""

    link: LinkCounters
    forwarded: int = 0
    bytes_forwarded: int = 0  # payload bytes
    delayed: int = 0  # forwarded, and later than received (the link held them)
    send_errors: int = 0
    bypassed: int = 0  # received while the relay was bypassed: passed on untouched, never offered to the link

    @property
    def received(self) -> int:
        return self.link.sent + self.bypassed

    @property
    def dropped(self) -> int:
        return self.link.dropped

    def to_dict(self) -> dict[str, Any]:
        c = self.link
        return {
            "received": self.received, "forwarded": self.forwarded, "delayed": self.delayed,
            "dropped": c.dropped, "dropped_loss": c.dropped_loss, "dropped_queue": c.dropped_queue,
            "dropped_outage": c.dropped_outage, "send_errors": self.send_errors, "bypassed": self.bypassed,
            "bytes_received": c.bytes_sent, "bytes_forwarded": self.bytes_forwarded,
            "mean_added_delay_ms": round(c.mean_added_delay * 1000, 3),
        }


def _udp_socket() -> trio.socket.SocketType:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    for option in (trio.socket.SO_RCVBUF, trio.socket.SO_SNDBUF):
        try:
            sock.setsockopt(trio.socket.SOL_SOCKET, option, SOCKET_BUFFER)
        except OSError:  # the kernel caps it at its limit anyway; never fatal
            pass
    return sock


class _Client:
    __slots__ = ("addr", "last", "scope", "sock")

    def __init__(self, addr: Address, sock: trio.socket.SocketType, now: float) -> None:
        self.addr = addr
        self.sock = sock
        self.last = now
        self.scope = trio.CancelScope()


# heap entry: (due on trio's clock, order, socket, payload, destination, direction, held by the
# link, record)
_Pending = tuple[float, int, trio.socket.SocketType, bytes, Address, str, bool, "RelayRecord | None"]


class ImpairmentRelay:
    """Forwards UDP between clients and ``upstream`` through an uplink and a downlink :class:`Link`.

    Run :meth:`serve` in a trio nursery (``await nursery.start(relay.serve)`` returns the bound
    listening address); cancel it to stop. ``sink`` (optional) sees every forwarded datagram as a
    :class:`RelayRecord`, in the order they are sent (the pcap writer streams from it).
    """

    def __init__(
        self,
        uplink: Link,
        downlink: Link,
        upstream: Address,
        *,
        listen: Address = ("127.0.0.1", 0),
        sink: Callable[[RelayRecord], None] | None = None,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_clients: int = DEFAULT_MAX_CLIENTS,
    ) -> None:
        if not (math.isfinite(idle_timeout) and idle_timeout > 0):
            raise ConfigError(f"idle_timeout must be a positive number of seconds, got {idle_timeout!r}")
        if max_clients < 1:
            raise ConfigError(f"max_clients must be at least 1, got {max_clients!r}")
        self.links = {UPLINK: uplink, DOWNLINK: downlink}
        self.upstream = parse_hostport(f"{upstream[0]}:{upstream[1]}", "upstream")
        self.listen = parse_hostport(f"{listen[0]}:{listen[1]}", "listen")
        self.sink = sink
        self.idle_timeout = float(idle_timeout)
        self.max_clients = max_clients
        self.counters = {d: DirectionCounters(link.counters) for d, link in self.links.items()}
        self.refused = 0  # datagrams from new clients beyond max_clients
        self.foreign = 0  # datagrams on an upstream socket from anyone but the upstream
        self.clients_seen = 0
        self.epoch = 0.0  # wall-clock time (s since 1970) of the relay clock's t = 0
        # While set, datagrams skip the link model (see bypass()).
        self.bypassing = False
        self._t0: float | None = None
        self._last_t = 0.0
        self._clients: dict[Address, _Client] = {}
        self._heap: list[_Pending] = []
        self._order = 0
        self._wake = trio.Event()
        self._bound: Address | None = None
        self._listen_sock: trio.socket.SocketType | None = None
        self._nursery: trio.Nursery | None = None

    @classmethod
    def from_scenario(
        cls, scenario: Scenario, upstream: Address, *, seed: int | None = None, **options: Any
    ) -> ImpairmentRelay:
        """A relay applying ``scenario``'s links (random streams from ``seed``, else the scenario's)."""
        uplink, downlink = scenario.build_links(np.random.default_rng(scenario.seed if seed is None else seed))
        return cls(uplink, downlink, upstream, **options)

    # --- facts ---------------------------------------------------------------------------------

    @property
    def address(self) -> Address:
        """The bound listening address (after :meth:`serve` has started)."""
        if self._bound is None:
            raise RuntimeError("the relay is not serving yet")
        return self._bound

    @property
    def clients(self) -> int:
        return len(self._clients)

    def now(self) -> float:
        """The relay's clock: seconds since it started (never goes backwards)."""
        if self._t0 is None:
            return 0.0
        t = trio.current_time() - self._t0
        if t > self._last_t:
            self._last_t = t
        return self._last_t

    def restart_clock(self) -> None:
        """Make ``t = 0`` now, so the scenario's phases count from here (trio thread only).

        Meant for before any traffic. The links never see time go backwards: if datagrams were
        already offered, the clock stays at the latest time they saw until it catches up.
        """
        self._t0 = trio.current_time()
        self.epoch = time.time()

    def bypass(self, on: bool = True) -> None:
        """Forward everything untouched from now on (or again impair, with False).

        For after an emulated run: a test's tear-down (TURN deallocation, DTLS close) should not
        sit out the scenario's outage in retransmission timers. Bypassed datagrams are counted
        apart (``bypassed``) and never reach the links, so their counters describe the run only.
        """
        self.bypassing = on

    def summary(self) -> str:
        """Counters per direction, one line each (printed when the CLI relay exits)."""
        lines = []
        for d in (UPLINK, DOWNLINK):
            c = self.counters[d].to_dict()
            lines.append(
                f"{d:8s} received {c['received']}  forwarded {c['forwarded']}  delayed {c['delayed']}  "
                f"dropped {c['dropped']} (loss {c['dropped_loss']}, queue {c['dropped_queue']}, "
                f"outage {c['dropped_outage']})  send errors {c['send_errors']}  "
                f"mean added delay {c['mean_added_delay_ms']:.1f} ms"
                + (f"  bypassed {c['bypassed']}" if c["bypassed"] else "")
            )
        lines.append(f"clients  {self.clients_seen} seen, {self.clients} active, {self.refused} datagrams refused, "
                     f"{self.foreign} foreign datagrams ignored")
        return "\n".join(lines)

    # --- running -------------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, report the listening address to ``task_status``, and relay until cancelled."""
        sock = _udp_socket()
        try:
            await sock.bind(self.listen)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"cannot listen on {self.listen[0]}:{self.listen[1]}: {exc.strerror or exc}") from None
        self._listen_sock = sock
        self._bound = sock.getsockname()[:2]
        if self._t0 is None:
            self._t0 = trio.current_time()
            self.epoch = time.time()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._scheduler)
                nursery.start_soon(self._reaper)
                task_status.started(self._bound)
                await self._from_clients(sock)
        finally:
            self._nursery = None
            for client in self._clients.values():
                client.sock.close()
            self._clients.clear()
            sock.close()

    async def _from_clients(self, sock: trio.socket.SocketType) -> None:
        while True:
            try:
                data, addr = await sock.recvfrom(MAX_DATAGRAM)
            except OSError:  # e.g. a Windows-style ICMP report: nothing to do with the next datagram
                await trio.lowlevel.checkpoint()
                continue
            src: Address = (addr[0], addr[1])
            client = self._clients.get(src)
            if client is None:
                client = await self._open_client(src)
                if client is None:
                    continue
            t = self.now()
            client.last = t
            self._offer(UPLINK, t, data, client.sock, self.upstream, src, self.upstream)

    async def _open_client(self, addr: Address) -> _Client | None:
        if len(self._clients) >= self.max_clients:
            self.refused += 1
            return None
        up = _udp_socket()
        try:
            await up.bind((self.listen[0], 0))
        except OSError:
            up.close()
            self.refused += 1
            return None
        client = _Client(addr, up, self.now())
        self._clients[addr] = client
        self.clients_seen += 1
        assert self._nursery is not None
        self._nursery.start_soon(self._from_upstream, client)
        return client

    async def _from_upstream(self, client: _Client) -> None:
        assert self._listen_sock is not None
        with client.scope:
            while True:
                try:
                    data, addr = await client.sock.recvfrom(MAX_DATAGRAM)
                except OSError:
                    await trio.lowlevel.checkpoint()
                    continue
                if (addr[0], addr[1]) != self.upstream:
                    self.foreign += 1
                    continue
                t = self.now()
                client.last = t
                self._offer(DOWNLINK, t, data, self._listen_sock, client.addr, self.upstream, client.addr)

    def _offer(self, direction: str, t: float, data: bytes, sock: trio.socket.SocketType, dest: Address,
               src: Address, dst: Address) -> None:
        if self.bypassing:
            self.counters[direction].bypassed += 1
            delivered: float | None = t
        else:
            delivered = self.links[direction].send(t, len(data) + UDP_IP_OVERHEAD)
        if delivered is None:
            return
        assert self._t0 is not None
        record = RelayRecord(t, delivered, direction, src, dst, data) if self.sink is not None else None
        held = delivered > t
        heapq.heappush(self._heap, (self._t0 + delivered, self._order, sock, data, dest, direction, held, record))
        self._order += 1
        self._wake.set()

    async def _scheduler(self) -> None:
        heap = self._heap
        while True:
            if not heap:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            due = heap[0][0]
            if trio.current_time() < due:
                with trio.move_on_at(due):
                    await self._wake.wait()
                if self._wake.is_set():
                    self._wake = trio.Event()
                continue
            _, _, sock, data, dest, direction, held, record = heapq.heappop(heap)
            counters = self.counters[direction]
            try:
                await sock.sendto(data, dest)
            except OSError:
                counters.send_errors += 1
                continue
            counters.forwarded += 1
            counters.delayed += held
            counters.bytes_forwarded += len(data)
            if record is not None and self.sink is not None:
                self.sink(record)

    async def _reaper(self) -> None:
        while True:
            await trio.sleep(self.idle_timeout / 4)
            limit = self.now() - self.idle_timeout
            for addr, client in list(self._clients.items()):
                if client.last < limit:
                    client.scope.cancel()
                    client.sock.close()
                    del self._clients[addr]


# --- a relay in a process of its own, driven over stdin/stdout ---------------------------------
#
# ``python -m rtcprobe.netem.relay`` reads one pickled ``(scenario, upstream, seed, listen, pcap)``
# from stdin, answers ``ready HOST PORT``, then obeys lines on stdin: ``clock`` (restart_clock),
# ``bypass``, ``stop`` (or end of input). At the end it writes one pickled
# ``(uplink counters, downlink counters, summary, pcap datagram count)`` to stdout. Drivers use it
# to keep the relay's timers off their own interpreter's GIL; the pickle only ever crosses a pipe
# between this package and itself.


def controlled_main() -> None:
    import pickle
    import sys

    scenario, upstream, seed, listen, pcap = pickle.load(sys.stdin.buffer)
    stream = None
    if pcap is not None:
        from .pcap import PcapStream

        stream = PcapStream(pcap)
    relay = ImpairmentRelay.from_scenario(scenario, upstream, seed=seed, listen=listen, sink=stream)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            host, port = await nursery.start(relay.serve)
            sys.stdout.write(f"ready {host} {port}\n")
            sys.stdout.flush()
            while True:
                line = await trio.to_thread.run_sync(sys.stdin.buffer.readline)
                command = line.decode(errors="replace").strip()
                if command == "clock":
                    relay.restart_clock()
                    if stream is not None:
                        stream.epoch = relay.epoch
                elif command == "bypass":
                    relay.bypass()
                elif command in ("stop", ""):
                    nursery.cancel_scope.cancel()
                    return

    try:
        trio.run(main)
    finally:
        if stream is not None:
            stream.close()
    result = (relay.counters[UPLINK], relay.counters[DOWNLINK], relay.summary(),
              None if stream is None else stream.count)
    pickle.dump(result, sys.stdout.buffer)
    sys.stdout.flush()


if __name__ == "__main__":
    from rtcprobe.netem.relay import controlled_main as _main  # this module's classes, not __main__'s

    _main()
