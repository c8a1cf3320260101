"""``teardown.close_peer_connection`` leaves nothing behind, wherever in the setup it lands.

Two real aiortc peers talk over loopback as the client's sender and receiver do (both max-bundle,
connected in-process by ``holdback.negotiate_pair``). One side (the offerer, or the answerer) is
closed at a point of the setup —
right after the descriptions are set, while ICE checks run, while the DTLS handshake runs, once
connected — while the other side stays up (the races need a live far end), then the other side is
closed too, both through :func:`close_peer_connection` with their connect tasks adopted as the
drivers do. After a short grace no task may be left (aiortc's connect task, aioice's consent loop,
RTCP loops...), no receiver's decoder thread may run, asyncio must not log "Task exception was
never retrieved", and the tear-down must not warn. Each point runs a few rounds, each closing a
loop turn later than the one before: the races depend on timing.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcconfiguration import RTCBundlePolicy
from rtcprobe.core.config import VideoSpec
from rtcprobe.drivers.aiortc import teardown
from rtcprobe.drivers.aiortc.holdback import negotiate_pair
from rtcprobe.drivers.aiortc.loopback import confine_ice_to_loopback
from rtcprobe.drivers.aiortc.media import PatternTrack, ToneTrack

pytestmark = pytest.mark.timeout(120)

GRACE = 0.25  # s: close_peer_connection awaits what it ends, so leftovers should be gone at once
ROUNDS = 4
CLOSE_TIMEOUT = 2.0  # s, as the drivers use
LATE_START_TIMEOUT = 0.5  # s, as the drivers use
POINTS = ["answered", "ice", "dtls", "connected"]
SIDES = ["offerer", "answerer"]

log = logging.getLogger("rtcprobe.test.teardown")


class Peer:
    """One aiortc peer connection, its adopted connect tasks, and the states it went through."""

    def __init__(self, config: RTCConfiguration) -> None:
        self.pc = RTCPeerConnection(config)
        self.connect_tasks: set[asyncio.Task[Any]] = set()
        self.closing = False
        self.dtls_watched = False
        self.reached: dict[str, asyncio.Event] = {point: asyncio.Event() for point in POINTS}
        self.pc.on("iceconnectionstatechange", self._on_ice)
        self.pc.on("connectionstatechange", self._on_connection)

    def _on_ice(self) -> None:
        if self.pc.iceConnectionState == "checking":
            self.reached["ice"].set()

    def _on_connection(self) -> None:
        if self.pc.connectionState == "connected":
            self.reached["connected"].set()

    def watch_dtls(self) -> None:
        self.dtls_watched = True
        dtls = self.pc.getTransceivers()[0].receiver.transport
        dtls.on("statechange", lambda: self.reached["dtls"].set() if dtls.state == "connecting" else None)

    def adopt(self) -> None:
        teardown.adopt_connect_tasks(self.pc, self.connect_tasks, closing=lambda: self.closing, log=log)

    async def set_description(self, description: RTCSessionDescription, *, local: bool) -> None:
        try:
            if local:
                await self.pc.setLocalDescription(description)
            else:
                await self.pc.setRemoteDescription(description)
        finally:
            self.adopt()

    async def close(self) -> None:
        self.closing = True
        await teardown.close_peer_connection(
            self.pc, connect_tasks=self.connect_tasks, close_timeout=CLOSE_TIMEOUT,
            late_start_timeout=LATE_START_TIMEOUT, log=log)


async def _negotiate(offerer: Peer, answerer: Peer) -> None:
    """As the driver does: its hook adopts each connect task and watches the answerer's DTLS once
    the offer made its transceivers (the answerer starts ICE at its answer, the offerer after)."""

    def on_description_set(pc: RTCPeerConnection) -> None:
        peer = offerer if pc is offerer.pc else answerer
        peer.adopt()
        if peer is answerer and pc.getTransceivers() and not answerer.dtls_watched:
            answerer.watch_dtls()

    await negotiate_pair(offerer.pc, answerer.pc, on_description_set=on_description_set)


def _decoder_threads() -> set[threading.Thread]:
    """aiortc runs one decoder thread per started receiver ("audio-decoder", "video-decoder")."""
    return {t for t in threading.enumerate() if t.name.endswith("-decoder")}


async def _leftovers(threads: set[threading.Thread]) -> list[object]:
    """Every task but this one, and every new decoder thread, still there after GRACE."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GRACE
    while True:
        left: list[object] = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        new_threads = sorted(_decoder_threads() - threads, key=lambda t: t.name)
        left += new_threads
        if not left or loop.time() >= deadline:
            return left
        await asyncio.sleep(0.02)


async def _close_once(point: str, side: str, turns: int) -> list[object]:
    threads = _decoder_threads()
    assert asyncio.all_tasks() == {asyncio.current_task()}, "a previous round left tasks"
    tracks = [ToneTrack(), PatternTrack(VideoSpec(160, 120, 15))]
    offerer = Peer(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    answerer = Peer(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    for track in tracks:
        offerer.pc.addTransceiver(track, direction="sendonly")
    first, second = (offerer, answerer) if side == "offerer" else (answerer, offerer)
    try:
        await _negotiate(offerer, answerer)
        if point != "answered":
            offerer.watch_dtls()
            await asyncio.wait_for(first.reached[point].wait(), 10)
        for _ in range(turns):  # each round closes a loop turn later
            await asyncio.sleep(0)
        await first.close()  # the far end is still up, as a real one would be
    finally:
        await first.close()  # idempotent: a no-op after the one above
        await second.close()
        for track in tracks:
            track.stop()
    return await _leftovers(threads)


def _run(body: Callable[[], Any]) -> None:
    with confine_ice_to_loopback():
        asyncio.run(body())
    gc.collect()  # a task that dies with its exception unretrieved is reported when collected


def _bad_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records
            if "never retrieved" in r.getMessage() or (r.name.startswith("rtcprobe") and r.levelno >= logging.WARNING)]


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("point", POINTS)
def test_closing_mid_setup_leaves_no_task_behind(point: str, side: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    leftovers: list[tuple[int, list[object]]] = []

    async def body() -> None:
        for i in range(ROUNDS):
            if left := await _close_once(point, side, turns=i):
                leftovers.append((i, left))
                for task in left:  # so that the next round starts clean
                    if isinstance(task, asyncio.Task):
                        task.cancel()
                await asyncio.sleep(0.1)
            gc.collect()

    _run(body)
    assert not leftovers, f"left running (round, tasks and threads): {leftovers}"
    assert not _bad_records(caplog), _bad_records(caplog)


def test_closing_a_peer_connection_that_never_negotiated(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)

    async def body() -> None:
        loop = asyncio.get_running_loop()
        # An earlier test's decoder thread may still be winding down: only new ones count.
        threads = _decoder_threads()
        peer = Peer(RTCConfiguration(iceServers=[]))
        peer.pc.addTransceiver("audio", direction="recvonly")
        t0 = loop.time()
        await peer.close()
        assert loop.time() - t0 < LATE_START_TIMEOUT  # nothing to wait for
        assert peer.pc.connectionState == "closed"
        assert teardown.turn_deletions(peer.pc) == []
        assert await _leftovers(threads) == []

    _run(body)
    assert not _bad_records(caplog), _bad_records(caplog)


def test_adopt_connect_tasks_keeps_each_task_once() -> None:
    async def body() -> None:
        offerer = Peer(RTCConfiguration(iceServers=[]))
        answerer = Peer(RTCConfiguration(iceServers=[]))
        offerer.pc.addTransceiver("audio", direction="sendrecv")
        try:
            await offerer.set_description(await offerer.pc.createOffer(), local=True)
            await answerer.set_description(offerer.pc.localDescription, local=False)
            adopted = set(answerer.connect_tasks)
            assert adopted, "setRemoteDescription spawns aiortc's connect task"
            assert all(teardown.task_owner(t) is answerer.pc for t in adopted)
            # adopting again finds nothing new (each task gets one done callback)
            again = teardown.adopt_connect_tasks(answerer.pc, answerer.connect_tasks, closing=lambda: True, log=log)
            assert again.isdisjoint(adopted)
        finally:
            await offerer.close()
            await answerer.close()
        assert not offerer.connect_tasks and not answerer.connect_tasks  # every adopted task ended

    _run(body)
