"""Rooms with real aiortc peers: the Python API (``rtcprobe.connect``, ``Room.monitor``) on peer
connections of this process, three participants in a mesh through a real coturn with one of
them behind the impairment relay, and ``rtcprobe call`` itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from rtcprobe.core.config import MediaDemand, VideoSpec
from rtcprobe.core.errors import ConfigError, UsageError
from rtcprobe.core.quality import QualityDemand
from rtcprobe.drivers.aiortc.loopback import confine_ice_to_loopback
from rtcprobe.drivers.aiortc.media import PatternTrack, ToneTrack
from rtcprobe.drivers.aiortc.roomstats import LinkStats
from rtcprobe.netem.scenario import Scenario
from test_rooms_support import joined, room_token
from test_server_support import SECRET, wait_released

import rtcprobe
from rtcprobe.call import Room, join_call
from rtcprobe.server import SignalingServer
from rtcprobe.server.coturn import CoturnServer

pytestmark = pytest.mark.timeout(120)

SMALL = VideoSpec(160, 120, 10.0)


@contextlib.asynccontextmanager
async def pair() -> AsyncIterator[tuple[RTCPeerConnection, RTCPeerConnection]]:
    """Two peer connections of this process, each sending a tone and small video to the other
    over loopback host candidates, every received frame read."""
    a, b = RTCPeerConnection(RTCConfiguration(iceServers=[])), RTCPeerConnection(RTCConfiguration(iceServers=[]))
    tracks: list[MediaStreamTrack] = [ToneTrack(), PatternTrack(SMALL), ToneTrack(), PatternTrack(SMALL, seed=1)]
    readers: list[asyncio.Task[None]] = []

    async def read(track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()

    for pc in (a, b):
        pc.on("track", lambda track: readers.append(asyncio.ensure_future(read(track))))
    for track in tracks[:2]:
        a.addTrack(track)
    with confine_ice_to_loopback():
        await a.setLocalDescription(await a.createOffer())
        await b.setRemoteDescription(a.localDescription)
        for track in tracks[2:]:
            b.addTrack(track)
        await b.setLocalDescription(await b.createAnswer())
        await a.setRemoteDescription(b.localDescription)
    try:
        yield a, b
    finally:
        for track in tracks:
            track.stop()
        await asyncio.gather(a.close(), b.close())
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)


def test_link_stats_map_a_peer_connection_both_ways() -> None:
    async def body() -> None:
        async with pair() as (a, b):
            link_a, link_b = LinkStats(a, "bob"), LinkStats(b, "sfu", server=True, source_of=lambda t: "alice")
            await asyncio.sleep(3.0)
            first = await link_a.sample()
            await asyncio.sleep(1.0)
            second = await link_a.sample()
            assert first is not None and second is not None
            assert (second.remote, second.server, second.rtt) == ("bob", False, None)
            for media in ("audio", "video"):
                out = second.outbound(media)  # type: ignore[arg-type]
                assert out is not None and out.packets_sent > first.outbound(media).packets_sent > 0  # type: ignore[arg-type, union-attr]
                assert out.bytes_sent > 0
            assert second.audio_out is not None and second.audio_out.remote_rtt is not None  # RTCP came back
            assert 0 <= second.audio_out.remote_rtt < 0.5
            inbound = {s.kind: s for s in second.inbound}
            assert set(inbound) == {"audio", "video"} and all(s.source is None for s in second.inbound)
            assert inbound["audio"].stats.packets_received > 50 and inbound["audio"].stats.bytes_received > 0
            assert inbound["video"].stats.bytes_received > 0
            server_side = await link_b.sample()
            assert server_side is not None and server_side.server
            assert {(s.kind, s.source) for s in server_side.inbound} == {("audio", "alice"), ("video", "alice")}
            link_a.close()
            link_b.close()
        assert await link_a.sample() is None  # closed: nothing to report

    asyncio.run(body())


def test_the_python_api_joins_monitors_and_follows_the_room() -> None:
    async def body() -> None:
        async with SignalingServer(secret=SECRET) as server:
            alice = await rtcprobe.connect(room_token("alice"), url=server.url,
                                           network_quality={"local": 3, "remote": 3})
            assert isinstance(alice, Room) and alice.name == "r1" and alice.participants == {}
            assert alice.ice_servers == () and alice.state == "connected"
            seen: list[str] = []
            alice.on("participantConnected", lambda p: seen.append(f"+{p.identity}"))
            alice.on("participantDisconnected", lambda p: seen.append(f"-{p.identity}"))
            bob = await rtcprobe.connect(room_token("bob"), url=server.url, network_quality={"local": 2})
            levels: list[tuple[str, int]] = []
            async with pair() as (a, b):
                alice.monitor(a, "bob")
                bob.monitor(b, "alice")
                with pytest.raises(UsageError):
                    alice.monitor(a, "bob")
                with pytest.raises(ConfigError):
                    alice.monitor(object(), "carol")  # type: ignore[arg-type]
                await _until(lambda: "bob" in alice.participants)
                alice.participants["bob"].on("networkQualityLevelChanged", lambda lvl, _: levels.append(("bob", lvl)))
                await asyncio.sleep(3.5)
                assert alice.demand == QualityDemand(audio_send=True, audio_recv=True, video_send=SMALL,
                                                     video_recv=SMALL)  # read from the transceivers
                mine = alice.local_participant.network_quality_stats
                assert alice.local_participant.network_quality_level == 5 and mine is not None
                assert mine.audio is not None and mine.audio.send_stats is not None
                assert (mine.audio.send_stats.bandwidth.actual or 0) > 10_000  # the samples reached the scorer
                assert alice.participants["bob"].network_quality_level == 5
                assert alice.participants["bob"].network_quality_stats is not None
                assert bob.participants["alice"].network_quality_level is None  # bob asked for remote 0
                assert bob.local_participant.network_quality_stats is not None
                assert bob.local_participant.network_quality_stats.video is not None  # local 2: per media levels
                assert bob.local_participant.network_quality_stats.video.send_stats is None
                assert not alice.errors and not bob.errors and alice.samples_sent >= 3
            await bob.disconnect()
            await _until(lambda: "bob" not in alice.participants)
            assert seen == ["+bob", "-bob"] and bob.state == "disconnected"
            await alice.disconnect()
            await wait_released(server)

    asyncio.run(body())


def test_connect_errors_carry_the_servers_code() -> None:
    async def body() -> None:
        async with SignalingServer(secret=SECRET) as server:
            with pytest.raises(rtcprobe.RoomConnectError) as info:
                await rtcprobe.connect(room_token("alice", room="r1"), url=server.url, name="r2")
            assert info.value.code == 20101
            with pytest.raises(rtcprobe.RoomConnectError) as info:
                await rtcprobe.connect(room_token("alice", secret="another-secret-of-forty-characters-xx"),
                                       url=server.url)
            assert info.value.code == 20107
        with pytest.raises(rtcprobe.RoomConnectError) as info:
            await rtcprobe.connect(room_token("alice"), url=server.url)  # the server is gone
        assert info.value.code == 53000

    asyncio.run(body())


async def _until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


# --- three participants through coturn, one behind the impairment relay ------------------------------


LOSSY = Scenario.from_dict({"name": "lossy-both-ways", "network": {"loss": 0.2, "delay_ms": 5}})


@pytest.mark.turn
@pytest.mark.slow
def test_three_participants_the_impaired_one_is_charged_in_every_view(coturn: CoturnServer) -> None:
    async def body() -> None:
        views: dict[tuple[str, str], list[tuple[float, int]]] = {}
        start = time.monotonic()

        def watch(room: Room) -> None:
            me = room.local_participant.identity

            def follow(p: rtcprobe.LocalParticipant | rtcprobe.RemoteParticipant) -> None:
                record = views.setdefault((me, p.identity), [])
                if p.network_quality_level is not None:
                    record.append((0.0, p.network_quality_level))
                p.on("networkQualityLevelChanged", lambda lvl, _: record.append((time.monotonic() - start, lvl)))

            follow(room.local_participant)
            for participant in room.participants.values():
                follow(participant)
            room.on("participantConnected", follow)

        async with SignalingServer(secret=SECRET, turn_urls=coturn.turn_urls, turn_secret=coturn.secret) as server:
            calls = []
            try:
                for identity, scenario, remote in (("ann", None, 3), ("ben", None, 1), ("imp", LOSSY, 3)):
                    calls.append(await join_call(room_token(identity), url=server.url, media=MediaDemand(video=SMALL),
                                                 network_quality={"local": 3, "remote": remote}, scenario=scenario,
                                                 on_room=watch))

                def impaired_everywhere() -> bool:
                    return all(views.get((me, "imp")) and views[(me, "imp")][-1][1] <= 2
                               for me in ("ann", "ben", "imp"))

                await _until(impaired_everywhere, timeout=15)
                found = time.monotonic() - start
                await asyncio.sleep(3.0)  # and it stays there while the others stay clean
                for me in ("ann", "ben", "imp"):
                    assert views[(me, "imp")][-1][1] <= 2, views
                    for clean in ("ann", "ben"):
                        assert all(level >= 4 for _, level in views[(me, clean)]), (me, clean, views[(me, clean)])
                for call in calls:  # every peer connection went through TURN, relay-only
                    assert call.mesh.relay_only and len(call.mesh.peer_connections) == 2
                    # 20 % loss both ways can hold one of imp's connections in a handshake retry or a
                    # missed consent check for a moment; none may have failed or closed.
                    states = [pc.connectionState for pc in call.mesh.peer_connections.values()]
                    assert not {"failed", "closed"} & set(states), states
                    assert states.count("connected") >= 1, states
                    assert not call.room.errors
                ann = calls[0].room
                stats = ann.participants["imp"].network_quality_stats  # remote 3: the full shape
                assert stats is not None and stats.audio is not None and stats.audio.send_stats is not None
                assert (stats.audio.send_stats.fraction_lost.fraction_lost or 0) > 0.1  # its uplink's loss
                own = ann.local_participant.network_quality_stats
                assert own is not None and own.audio is not None and own.audio.recv_stats is not None
                assert (own.audio.recv_stats.fraction_lost.fraction_lost or 0) < 0.03  # not charged to ann
                print(f"impaired participant at <= 2 in every view after {found:.1f} s")
            finally:
                for call in calls:
                    await call.leave()
            assert calls[2].relay_summary is not None and "dropped" in calls[2].relay_summary

    asyncio.run(body())


def test_a_mesh_call_holds_up_to_four_participants() -> None:
    async def body() -> None:
        async with SignalingServer(secret=SECRET) as server, contextlib.AsyncExitStack() as stack:
            for name in ("p1", "p2", "p3", "p4"):
                await stack.enter_async_context(joined(server.url, name))
            with pytest.raises(UsageError, match="up to 4 participants"):
                await join_call(room_token("p5"), url=server.url)
            await asyncio.sleep(0.2)
            assert server.stats.room_participants == 4  # the fifth left again

    asyncio.run(body())


# --- rtcprobe call ---------------------------------------------------------------------------------------


def _call(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rtcprobe", "call", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--url", "ws://127.0.0.1:1/signaling"), "--url needs --token"),
        (("--identity", "a"), "--room is required"),
        (("--room", "r", "--token", "t"), "--token needs --url"),
        (("--room", "r", "--identity", "a", "--video", "7x7"), "video"),
        (("--room", "r", "--identity", "a", "--scenario", "no-such-scenario"), "no such scenario"),
        (("--room", "r", "--identity", "a", "--duration", "0"), "--duration"),
    ],
)
def test_rtcprobe_call_refuses_bad_input(args: tuple[str, ...], message: str) -> None:
    r = _call(*args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


def test_rtcprobe_call_alone_in_an_embedded_room_prints_its_own_level_as_json() -> None:
    r = _call("--room", "demo", "--identity", "solo", "--duration", "2", "--port", "0", "--json")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert lines and lines[0]["identity"] == "solo" and lines[0]["local"] is True and lines[0]["level"] == 5
    assert set(lines[0]) == {"time", "identity", "local", "level", "stats"}
    assert "embedded server at ws://127.0.0.1:" in r.stderr and "joined room 'demo' as solo" in r.stderr


def test_rtcprobe_call_reports_a_refused_join() -> None:
    async def body() -> subprocess.CompletedProcess[str]:
        async with SignalingServer(secret=SECRET) as server:
            return await asyncio.to_thread(_call, "--url", server.url, "--token", room_token("a", room="r1"),
                                           "--room", "r2", "--duration", "1")

    r = asyncio.run(body())
    assert r.returncode == 1
    assert "error 20101" in r.stderr and "grants room 'r1'" in r.stderr
