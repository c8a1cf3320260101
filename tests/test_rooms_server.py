"""Rooms in the signaling server, over real WebSockets to a real server: joining with a room
grant, events, levels at each receiver's verbosity (the simulated call's clients send the
samples), idle participants, signaling loss and return, the signal relay, bad input (the sender
gets a room-error, the room carries on), bounds and metrics."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Coroutine, Iterable
from typing import Any

import jwt
import pytest
from rtcprobe.core.quality import QualityDemand
from rtcprobe.core.room import RoomConfig, RoomSample
from test_core_room_sim import CallSim, Legs
from test_rooms_support import (
    STEP,
    Client,
    connected,
    joined,
    room_hello,
    room_server,
    room_token,
)
from test_server_support import SECRET, expect_error, metric, metrics_text, raw_ws, read_frame, ws_client, ws_frame

from rtcprobe.server import rooms as server_rooms
from rtcprobe.server.metrics import ROOM_ERROR_REASONS
from rtcprobe.server.tokens import INVALID, TokenError, mint_token, verify_token

pytestmark = pytest.mark.timeout(60)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


async def drive(sim: CallSim, clients: dict[str, Client], seconds: float, *, skip: Iterable[str] = ()) -> None:
    """Every STEP s: the simulated media advances and every client (but ``skip``) sends its sample."""
    skipped = set(skip)
    for _ in range(round(seconds / STEP)):
        sim.step(STEP)
        for name, client in clients.items():
            if name not in skipped:
                await client.sample(sim.sample(name))
        await asyncio.sleep(STEP)


FULL_SIDE = {"bandwidth": {"actual", "available", "level"}, "latency": {"jitter", "rtt", "level"},
             "fractionLost": {"fractionLost", "level"}}


def full_shape(stats: dict[str, Any]) -> bool:
    """Verbosity 3: per media, send/recv levels and the stats behind both."""
    sides = ("sendStats", "recvStats")
    return all(isinstance(stats[m], dict) and set(stats[m]) == {"send", "recv", *sides}
               and all({k: set(v) for k, v in stats[m][side].items()} == FULL_SIDE for side in sides)
               for m in ("audio", "video"))


# --- tokens ----------------------------------------------------------------------------------------


def test_a_room_grant_round_trips_and_a_bad_one_is_refused() -> None:
    token = mint_token(SECRET, "alice", now=1e9, room="standup")
    assert jwt.decode(token, options={"verify_signature": False})["grants"] == {
        "identity": "alice", "video": {"room": "standup"}}
    assert verify_token(token, SECRET, now=1e9 + 1).room == "standup"
    assert verify_token(mint_token(SECRET, "alice", now=1e9), SECRET, now=1e9 + 1).room is None
    bad = jwt.encode({"iss": "rtcprobe", "sub": "a", "exp": 2e9, "grants": {"identity": "a", "video": {"room": 7}}},
                     SECRET, algorithm="HS256")
    with pytest.raises(TokenError) as info:
        verify_token(bad, SECRET, now=1e9)
    assert info.value.code == INVALID and "room" in info.value.message


def test_rtcprobe_token_room_mints_a_room_grant() -> None:
    r = subprocess.run([sys.executable, "-m", "rtcprobe", "token", "--secret", SECRET, "--identity", "bob",
                        "--room", "standup"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert verify_token(r.stdout.strip(), SECRET, now=__import__("time").time()).room == "standup"


# --- joining, events, levels -----------------------------------------------------------------------


def test_participants_see_each_other_join_and_leave() -> None:
    async def body() -> None:
        async with room_server() as server, joined(server.url, "alice") as alice:
            first = alice.of_type("joined")[0]
            assert (first["room"], first["identity"], first["participants"], first["reconnected"]) == (
                "r1", "alice", [], False)
            assert first["networkQuality"] == {"local": 1, "remote": 0}
            assert alice.of_type("iced")  # the ICE servers came first, as in every v2 session
            async with joined(server.url, "bob", remote=1) as bob:
                assert bob.of_type("joined")[0]["participants"] == [{"identity": "alice", "state": "connected"}]
                await alice.wait(lambda m: m == {"type": "participant-connected", "identity": "bob"})
                assert server.stats.rooms == 1 and server.stats.room_participants == 2
                await bob.send({"type": "bye"})
                await alice.wait(lambda m: m == {"type": "participant-disconnected", "identity": "bob",
                                                 "reason": "left"})
                await bob.closed.wait()
                assert bob.close_code == 1000
        assert server.stats.rooms == 0

    run(body())


def test_levels_reach_each_receiver_at_its_verbosity_and_the_impaired_one_is_charged() -> None:
    # alice's uplink loses 20 %: she reads it, and everyone who asked for remote levels sees it.
    async def body() -> None:
        sim = CallSim({"alice": Legs(up_loss=0.2), "bob": Legs(), "carol": Legs()})
        async with room_server() as server, \
                joined(server.url, "alice", local=3, remote=0) as alice, \
                joined(server.url, "bob", local=1, remote=3) as bob, \
                joined(server.url, "carol", local=2, remote=1) as carol:
            clients = {"alice": alice, "bob": bob, "carol": carol}
            await drive(sim, clients, 3.0)
            assert alice.level("alice") is not None and alice.level("alice") <= 2
            assert bob.level("alice") is not None and bob.level("alice") <= 2
            assert carol.level("alice") is not None and carol.level("alice") <= 2
            for client in clients.values():  # the clean ones never read below 4, as anyone saw them
                assert all(u["level"] >= 4 for u in client.updates() if u["identity"] != "alice"), client.updates()
            # remote 0: alice hears about herself only; her local 3 is the full shape
            assert {u["identity"] for u in alice.updates()} == {"alice"}
            assert all(u["local"] for u in alice.updates())
            assert full_shape(alice.updates("alice")[-1]["stats"])
            # remote 3: bob gets the full shape of the others; his local 1 is the level alone
            assert full_shape(bob.updates("alice")[-1]["stats"]) and full_shape(bob.updates("carol")[-1]["stats"])
            assert bob.updates("bob")[-1]["stats"] == {"level": bob.level("bob"), "audio": None, "video": None}
            # remote 1: carol gets levels only; her local 2 has the per-media levels without stats
            assert carol.updates("alice")[-1]["stats"] == {"level": carol.level("alice"), "audio": None,
                                                           "video": None}
            mine = carol.updates("carol")[-1]["stats"]["video"]
            assert mine["sendStats"] is None and isinstance(mine["send"], int)
            # the level change is flagged once per change, per receiver
            changes = [u["level"] for u in bob.updates("alice") if u["levelChanged"]]
            assert changes[0] == 5 and changes[-1] == bob.level("alice") and len(set(changes)) == len(changes)
            text = await metrics_text(server)
            assert metric(text, "rtcprobe_rooms_open") == 1
            assert metric(text, "rtcprobe_room_participants") == 3
            assert metric(text, "rtcprobe_room_samples_total") >= 24

    run(body())


def test_a_participant_that_publishes_and_subscribes_nothing_reads_5() -> None:
    async def body() -> None:
        async with room_server() as server, \
                joined(server.url, "idle", demand=QualityDemand(), remote=3) as idle, \
                joined(server.url, "watcher", remote=3) as watcher:
            for _ in range(6):
                await idle.sample(RoomSample())
                await asyncio.sleep(STEP)
            assert idle.level("idle") == 5 and watcher.level("idle") == 5
            assert idle.updates("idle")[-1]["stats"] == {"level": 5, "audio": None, "video": None}
            assert not idle.of_type("room-error")

    run(body())


# --- signaling loss ---------------------------------------------------------------------------------


def test_a_participant_whose_signaling_drops_reads_0_then_leaves_the_list() -> None:
    async def body() -> None:
        async with room_server() as server, joined(server.url, "alice", remote=1) as alice:
            async with raw_ws(server.url) as (reader, writer):  # aborted (TCP reset, no close frame) on exit
                writer.write(ws_frame(json.dumps(room_hello("bob")).encode()))
                while (frame := await read_frame(reader)) is not None and b'"joined"' not in frame[1]:
                    pass
                await alice.wait(lambda m: m.get("type") == "participant-connected")
            await alice.wait(lambda m: m == {"type": "participant-reconnecting", "identity": "bob"})
            assert await alice.wait_level("bob", lambda level: level == 0) == 0
            await alice.wait(lambda m: m == {"type": "participant-disconnected", "identity": "bob",
                                             "reason": "timeout"}, timeout=5)
            assert server.stats.room_participants == 1
            async with joined(server.url, "carol") as carol:  # the list no longer holds bob
                assert carol.of_type("joined")[0]["participants"] == [{"identity": "alice", "state": "connected"}]

    run(body())


def test_a_silent_participant_is_closed_and_comes_back_within_the_timeout() -> None:
    async def body() -> None:
        async with room_server(room=RoomConfig(tick_interval=0.3, min_sample_interval=0.1, reconnect_timeout=5.0),
                               silence_timeout=0.5) as server, joined(server.url, "alice", remote=1) as alice, \
                alice.sampling():
            async with joined(server.url, "bob") as bob:
                await bob.closed.wait()
                assert bob.close_code == 1008
                assert any(m.get("type") == "error" and "no message for 0.5 s" in m["message"] for m in bob.messages)
            await alice.wait(lambda m: m == {"type": "participant-reconnecting", "identity": "bob"})
            assert await alice.wait_level("bob", lambda level: level == 0) == 0
            async with joined(server.url, "bob") as bob:
                assert bob.of_type("joined")[0]["reconnected"] is True
                await alice.wait(lambda m: m == {"type": "participant-reconnected", "identity": "bob"})
                await bob.send({"type": "bye"})
                await alice.wait(lambda m: m.get("type") == "participant-disconnected")

    run(body())


def test_a_second_session_with_the_same_identity_replaces_the_first() -> None:
    async def body() -> None:
        async with room_server() as server, joined(server.url, "alice") as alice, \
                joined(server.url, "bob") as old:
            async with joined(server.url, "bob") as new:
                await old.closed.wait()
                error = next(m for m in old.messages if m.get("type") == "error")
                assert error["code"] == 53205
                assert new.of_type("joined")[0]["reconnected"] is False
                await alice.wait(lambda m: m == {"type": "participant-disconnected", "identity": "bob",
                                                 "reason": "left"})
                await alice.wait(lambda m: m == {"type": "participant-connected", "identity": "bob"}
                                 and alice.messages.index(m) > 2)
                assert server.stats.room_participants == 2

    run(body())


# --- the signal relay ------------------------------------------------------------------------------


def test_signals_are_relayed_to_their_participant_and_bad_ones_refused() -> None:
    async def body() -> None:
        async with room_server(max_signal_bytes=4096) as server, joined(server.url, "alice") as alice, \
                joined(server.url, "bob") as bob:
            offer = {"description": {"type": "offer", "sdp": "v=0\r\n"}}
            await alice.send({"type": "signal", "to": "bob", "data": offer})
            assert await bob.wait(lambda m: m.get("type") == "signal") == {"type": "signal", "from": "alice",
                                                                           "data": offer}
            for bad, reason in (({"to": "zoe", "data": {}}, "not-found"),
                                ({"to": "bob", "data": "x"}, "signal-invalid"),
                                ({"to": 3, "data": {}}, "signal-invalid"),
                                ({"to": "alice", "data": {}}, "signal-invalid"),
                                ({"to": "bob", "data": {"sdp": "a" * 5000}}, "signal-too-big")):
                await alice.send({"type": "signal", **bad})
                error = await alice.wait(lambda m, r=reason: m.get("type") == "room-error" and m["reason"] == r)
                assert error["identity"] == "alice" and error["code"] in (53003, 53204)
            await alice.send({"type": "signal", "to": "bob", "data": {"candidate": None}})
            await bob.wait(lambda m: m.get("data") == {"candidate": None})
            assert len(bob.of_type("signal")) == 2 and not bob.of_type("room-error")
            assert metric(await metrics_text(server), "rtcprobe_room_signals_total") == 2

    run(body())


# --- bad input: an error for the sender, the room carries on -------------------------------------


def test_bad_samples_get_the_sender_a_room_error_and_the_room_carries_on() -> None:
    async def body() -> None:
        sim = CallSim({"alice": Legs(), "bob": Legs(), "carol": Legs()})
        async with room_server(room=RoomConfig(tick_interval=0.3, min_sample_interval=0.2, max_sample_age=1.0,
                                               loss_window=2.0)) as server, \
                joined(server.url, "alice", local=3, remote=3) as alice, \
                joined(server.url, "bob", local=3, remote=3) as bob, \
                joined(server.url, "carol", local=3, remote=3) as carol:
            clients = {"alice": alice, "bob": bob, "carol": carol}  # verbosity 3: a push every tick
            await drive(sim, clients, 1.2)
            sim.step(STEP)
            good = sim.sample("bob")  # a step ahead of bob's last sample: media flowed since
            big = {"links": [], "padding": "x" * 40_000}  # over the sample's 32 KiB, under the frame's 64 KiB
            cases: list[tuple[Any, str]] = [
                ("garbage", "invalid-sample"),
                ({"links": [{"remote": "alice", "audioOut": {"packetsSent": -1, "bytesSent": 0}}]}, "invalid-sample"),
                ({"links": [{"remote": "alice", "rtt": 1e9}]}, "invalid-sample"),
                (big, "sample-too-big"),
            ]
            for sample, reason in cases:
                await bob.sample(sample)
                error = await bob.wait(lambda m, r=reason: m.get("type") == "room-error" and m["reason"] == r)
                assert error["code"] == 53003 and error["identity"] == "bob"
            await asyncio.sleep(0.25)
            await bob.sample(good)
            await bob.sample(good)  # right after the previous one
            await bob.wait(lambda m: m.get("type") == "room-error" and m["reason"] == "too-frequent")
            await asyncio.sleep(0.25)
            await bob.sample(_zeroed(good))  # every counter back to 0
            await bob.wait(lambda m: m.get("type") == "room-error" and m["reason"] == "counters-backwards")
            # A session in no room sending a sample: an error for it alone.
            async with connected(server.url, "dave") as dave:
                await dave.send({"type": "ice", "token": room_token("dave"), "version": 2})
                await dave.wait(lambda m: m.get("type") == "iced")
                await dave.sample(good)
                error = await dave.wait(lambda m: m.get("type") == "room-error")
                assert (error["code"], error["reason"], error["identity"]) == (53204, "not-found", "dave")
                await dave.send({"type": "bye"})
            # Nobody was thrown out, and everybody keeps being scored, bob included.
            before = {name: len(c.of_type("network-quality")) for name, c in clients.items()}
            await asyncio.sleep(0.25)  # bob's next sample must not come too soon after the last
            await drive(sim, clients, 1.5)
            for name, client in clients.items():
                assert not client.closed.is_set(), name
                assert len(client.of_type("network-quality")) > before[name], name
                assert all(u["level"] >= 4 for u in client.updates()), client.updates()
            assert not alice.of_type("room-error") and not carol.of_type("room-error")
            text = await metrics_text(server)
            for reason, count in (("invalid-sample", 3), ("sample-too-big", 1), ("too-frequent", 1),
                                  ("counters-backwards", 1), ("not-found", 1)):
                assert metric(text, "rtcprobe_room_errors_total", reason=reason) == count, reason

    run(body())


def _zeroed(sample: RoomSample) -> RoomSample:
    """The same links with every counter at 0 (a client that went backwards)."""
    import attrs
    from rtcprobe.core.observations import InboundStats, OutboundStats

    def out(s: OutboundStats | None) -> OutboundStats | None:
        return None if s is None else attrs.evolve(s, packets_sent=0, bytes_sent=0, remote_packets_lost=0)

    return RoomSample(tuple(
        attrs.evolve(link, audio_out=out(link.audio_out), video_out=out(link.video_out),
                     inbound=tuple(attrs.evolve(s, stats=InboundStats(0, 0, 0, s.stats.jitter)) for s in link.inbound))
        for link in sample.links))


def test_a_flood_of_room_messages_closes_that_session_only() -> None:
    async def body() -> None:
        async with room_server(message_rate=5.0, message_burst=10) as server, \
                joined(server.url, "alice", remote=1) as alice, joined(server.url, "bob") as bob:
            for _ in range(30):
                await bob.send({"type": "signal", "to": "alice", "data": {}})
            await bob.closed.wait()
            assert any(m.get("type") == "error" and "too many room messages" in m["message"] for m in bob.messages)
            await alice.wait(lambda m: m == {"type": "participant-reconnecting", "identity": "bob"})
            assert not alice.closed.is_set()
            assert metric(await metrics_text(server), "rtcprobe_room_errors_total", reason="flood") == 1

    run(body())


# --- bounds and refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hello", "code", "close"),
    [
        (room_hello("a", room=None), 53100, 1008),  # no name, no grant
        (room_hello("a", room=None, name=""), 53100, 1008),
        (room_hello("a", room=None, name="x" * 129), 53101, 1008),
        (room_hello("a", room=None, name="bad\nname"), 53100, 1008),
        (room_hello("a", room="r1", name="r2"), 20101, 1008),  # the grant is for another room
        ({**room_hello("a"), "room": "r1"}, 53000, 1008),
        ({**room_hello("a"), "core": {"start": 0}}, 53000, 1008),
        ({**room_hello("a"), "room": {"demand": {"audioSend": 1}}}, 53000, 1008),
        ({**room_hello("a"), "version": 1}, 53000, 1008),
    ],
)
def test_hellos_that_cannot_join_get_one_error(hello: dict[str, Any], code: int, close: int) -> None:
    async def body() -> None:
        async with room_server() as server, ws_client(server.url) as ws:
            await ws.send_str(json.dumps(hello))
            first = json.loads((await ws.receive(timeout=10)).data)
            if first["type"] == "iced":  # refused at the join, after the token was accepted
                first = json.loads((await ws.receive(timeout=10)).data)
            assert (first["type"], first["code"]) == ("error", code), first
            assert (await ws.receive(timeout=10)).type.name in ("CLOSE", "CLOSED")
            assert ws.close_code == close

    run(body())


def test_a_token_without_a_grant_joins_the_room_the_hello_names() -> None:
    async def body() -> None:
        async with room_server() as server, joined(server.url, "alice", room=None, name="free") as alice:
            assert alice.of_type("joined")[0]["room"] == "free"

    run(body())


def test_rooms_and_participants_are_bounded() -> None:
    async def body() -> None:
        room = RoomConfig(max_participants=2, tick_interval=0.3)
        async with room_server(room=room, max_rooms=1) as server, joined(server.url, "a") as _a, \
                joined(server.url, "b") as _b:
            for hello, code, close in ((room_hello("c"), 53105, 1008),
                                       (room_hello("c", room="other"), 53103, 1013)):
                async with ws_client(server.url) as ws:
                    await ws.send_str(json.dumps(hello))
                    assert json.loads((await ws.receive(timeout=10)).data)["type"] == "iced"
                    assert (await expect_error(ws))[0::2] == (code, close)
            text = await metrics_text(server)
            assert metric(text, "rtcprobe_room_errors_total", reason="room-full") == 1
            assert metric(text, "rtcprobe_room_errors_total", reason="rooms-exhausted") == 1

    run(body())


def test_a_room_session_sends_no_report() -> None:
    async def body() -> None:
        async with room_server() as server, joined(server.url, "alice") as alice:
            await alice.send({"type": "report", "report": {"testTiming": {"start": 0}}})
            await alice.closed.wait()
            assert "unexpected 'report' in a room" in next(m for m in alice.messages if m["type"] == "error")["message"]

    run(body())


def test_the_metrics_error_reasons_are_the_rooms() -> None:
    assert server_rooms.ERROR_REASONS == ROOM_ERROR_REASONS


def test_rtcprobe_serve_room_options_default_to_the_servers() -> None:
    from rtcprobe.commands import serve

    config = server_rooms.RoomsConfig()
    assert (serve.DEFAULT_MAX_ROOMS, serve.DEFAULT_ROOM_SIZE, serve.DEFAULT_RECONNECT_TIMEOUT) == (
        config.max_rooms, config.room.max_participants, config.room.reconnect_timeout)
    r = subprocess.run([sys.executable, "-m", "rtcprobe", "serve", "--port", "0", "--room-size", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "max_participants must be a positive integer" in r.stderr


def test_a_participant_that_does_not_read_is_dropped_and_the_room_carries_on() -> None:
    async def body() -> None:
        async with room_server(max_pending=8, message_rate=1000.0, message_burst=1000,
                               max_signal_bytes=60_000) as server, \
                joined(server.url, "alice", remote=1) as alice, alice.sampling():
            async with raw_ws(server.url) as (_, writer):  # joins, then never reads again
                writer.write(ws_frame(json.dumps(room_hello("deaf")).encode()))
                await alice.wait(lambda m: m == {"type": "participant-connected", "identity": "deaf"})
                blob = {"sdp": "x" * 50_000}
                for _ in range(400):  # 20 MB for a socket nobody reads
                    await alice.send({"type": "signal", "to": "deaf", "data": blob})
                    if any(m.get("type") == "participant-reconnecting" for m in alice.messages):
                        break
                await alice.wait(lambda m: m == {"type": "participant-reconnecting", "identity": "deaf"})
            await alice.wait(lambda m: m.get("type") == "participant-disconnected", timeout=5)
            assert not alice.closed.is_set()
            assert metric(await metrics_text(server), "rtcprobe_room_errors_total", reason="too-slow") == 1

    run(body())
