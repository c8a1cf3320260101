"""Tests of the room model (core/room.py): attribution, levels, pushes, lifecycle, bad input.

Driven by the simulated clients of test_core_room_sim.py (per-leg impairments in, getStats-like
counters out), through the room's public API only.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from rtcprobe.core.errors import ConfigError
from rtcprobe.core.observations import InboundStats, OutboundStats
from rtcprobe.core.quality import QualityDemand
from rtcprobe.core.room import (
    MAX_SAMPLE_BYTES,
    InboundStream,
    NetworkQualityConfig,
    NetworkQualityPush,
    ParticipantConnected,
    ParticipantDisconnected,
    ParticipantReconnected,
    ParticipantReconnecting,
    PeerLink,
    QualityUpdate,
    Room,
    RoomConfig,
    RoomError,
    RoomEvent,
    RoomSample,
    decode_demand,
    decode_sample,
    decode_sample_json,
    encode_demand,
    encode_sample,
)
from test_core_room_sim import FULL, SMALL_VIDEO, CallSim, Legs, advance, join_all, run

DETAILED = NetworkQualityConfig(local=3, remote=3)
REMOTE_LEVELS = NetworkQualityConfig(local=1, remote=1)


def updates_to(events: list[RoomEvent], to: str) -> list[QualityUpdate]:
    return [u for e in events if isinstance(e, NetworkQualityPush) and e.to == to for u in e.updates]


def last_level_seen(events: list[RoomEvent], to: str, about: str) -> int | None:
    levels = [u.level for u in updates_to(events, to) if u.identity == about]
    return levels[-1] if levels else None


def room_with(legs: dict[str, Legs], *, seconds: int = 8, sfu: bool = False, exact: bool = True, seed: int = 0,
              network_quality: NetworkQualityConfig = REMOTE_LEVELS) -> tuple[Room, CallSim, list[RoomEvent]]:
    sim = CallSim(legs, sfu=sfu, exact=exact, seed=seed)
    room = Room()
    join_all(room, sim, 0.0, demand=FULL, network_quality=network_quality)
    events = list(room.events())
    events += run(room, sim, 0.0, seconds)
    return room, sim, events


# --- attribution: the level describes the participant's own network ----------------------------


def test_heavy_uplink_loss_is_charged_to_the_sender_alone() -> None:
    room, _, events = room_with({"a": Legs(up_loss=0.2), "b": Legs(), "c": Legs()})
    assert room.level("a") <= 2
    assert room.level("b") >= 4 and room.level("c") >= 4
    # as it sees itself and as both others see it
    for to in "abc":
        assert last_level_seen(events, to, "a") == room.level("a")
    for to in "abc":
        for clean in "bc":
            level = last_level_seen(events, to, clean)
            assert level is not None and level >= 4
    a = room.legs("a")
    assert a.video.uplink_loss == pytest.approx(0.2, abs=0.01)
    assert a.audio.uplink_loss == pytest.approx(0.2, abs=0.01)
    for clean in "bc":
        legs = room.legs(clean)
        assert legs.video.downlink_loss == pytest.approx(0.0, abs=1e-6)
        assert legs.video.uplink_loss == pytest.approx(0.0, abs=1e-6)


def test_the_impaired_level_drops_within_a_few_seconds() -> None:
    sim = CallSim({"a": Legs(up_loss=0.2), "b": Legs(), "c": Legs()})
    room = Room()
    join_all(room, sim, 0.0, demand=FULL)
    run(room, sim, 0.0, 3)
    assert room.level("a") <= 2


def test_heavy_downlink_loss_is_charged_to_the_receiver_alone() -> None:
    room, _, _ = room_with({"a": Legs(down_loss=0.2), "b": Legs(), "c": Legs()})
    assert room.level("a") <= 2
    assert room.level("b") >= 4 and room.level("c") >= 4
    assert room.legs("a").video.downlink_loss == pytest.approx(0.2, abs=0.01)
    assert room.legs("b").video.uplink_loss == pytest.approx(0.0, abs=1e-6)
    assert room.stats("a").video is not None
    recv = room.stats("a").video.recv_stats  # type: ignore[union-attr]
    send = room.stats("a").video.send_stats  # type: ignore[union-attr]
    assert recv is not None and send is not None
    assert recv.fraction_lost.fraction_lost == pytest.approx(0.2, abs=0.01)
    assert send.fraction_lost.fraction_lost == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("impairment", ["up", "down", "both"])
def test_attribution_holds_under_sampling_noise(seed: int, impairment: str) -> None:
    # Binomial packet losses, one second of counters per sample: the clean never drop below 4.
    bad = Legs(up_loss=0.2 if impairment != "down" else 0.0, down_loss=0.2 if impairment != "up" else 0.0)
    sim = CallSim({"a": bad, "b": Legs(), "c": Legs(), "d": Legs()}, exact=False, seed=seed)
    room = Room()
    join_all(room, sim, 0.0, demand=FULL)
    for k in range(10):
        run(room, sim, float(k), 1)
        assert room.level("b") >= 4 and room.level("c") >= 4 and room.level("d") >= 4
        if k >= 3:
            assert room.level("a") <= 2


def test_a_long_access_delay_is_charged_to_its_owner() -> None:
    room, _, _ = room_with({"a": Legs(rtt=0.35), "b": Legs(rtt=0.02), "c": Legs(rtt=0.03)})
    assert room.legs("a").rtt == pytest.approx(0.35)
    assert room.legs("b").rtt == pytest.approx(0.02)
    assert room.legs("c").rtt == pytest.approx(0.03)
    assert room.level("a") <= 3
    assert room.level("b") == room.level("c") == 5


def test_jitter_is_charged_to_the_leg_that_adds_it() -> None:
    room, _, _ = room_with({"a": Legs(up_jitter=0.15), "b": Legs(), "c": Legs()})
    assert room.legs("a").video.uplink_jitter == pytest.approx(0.15, rel=1e-6)
    assert room.legs("b").video.downlink_jitter == pytest.approx(0.002, rel=1e-6)
    assert room.level("a") <= 3
    assert room.level("b") == room.level("c") == 5


def test_a_thin_uplink_is_the_senders_not_the_receivers() -> None:
    # a's uplink carries 40 kbit/s for four streams: each receiver gets a fraction of a's demand,
    # and so does every other receiver, so the shortfall is a's.
    room, _, _ = room_with({"a": Legs(up_bps=40_000), "b": Legs(), "c": Legs()})
    assert room.level("a") <= 2
    assert room.level("b") == room.level("c") == 5
    b_video = room.stats("b").video
    assert b_video is not None and b_video.recv_stats is not None
    assert b_video.recv_stats.bandwidth.level == 5


def test_without_attribution_the_clean_would_be_blamed() -> None:
    # What the receivers measure themselves (the preflight's view): a's streams lose 20 % at both.
    room, sim, _ = room_with({"a": Legs(up_loss=0.2), "b": Legs(), "c": Legs()})
    for receiver in "bc":
        link = next(link for link in sim.sample(receiver).links if link.remote == "a")
        video = next(s for s in link.inbound if s.kind == "video")
        assert video.stats.packets_lost / (video.stats.packets_lost + video.stats.packets_received) > 0.15
        assert room.level(receiver) == 5


# --- two participants, SFUs ---------------------------------------------------------------------


def test_two_participants_alone_share_what_cannot_be_told_apart() -> None:
    # One path per direction: its loss may be the sender's uplink or the receiver's downlink.  The
    # room splits it evenly (in -ln(1 - p)), so both read it; the other direction stays clean.
    room, _, _ = room_with({"a": Legs(up_loss=0.2, rtt=0.03), "b": Legs(rtt=0.01)})
    half = 1 - math.sqrt(0.8)
    assert room.legs("a").video.uplink_loss == pytest.approx(half, abs=0.005)
    assert room.legs("b").video.downlink_loss == pytest.approx(half, abs=0.005)
    assert room.legs("a").video.downlink_loss == pytest.approx(0.0, abs=1e-6)
    assert room.legs("b").video.uplink_loss == pytest.approx(0.0, abs=1e-6)
    assert room.level("a") <= 2 and room.level("b") <= 2
    # the path's round trip, likewise, is shared out evenly
    assert room.legs("a").rtt == pytest.approx(0.02) and room.legs("b").rtt == pytest.approx(0.02)


def test_two_clean_participants_read_5() -> None:
    room, _, _ = room_with({"a": Legs(), "b": Legs()})
    assert room.level("a") == room.level("b") == 5


def test_an_sfu_tells_two_participants_apart() -> None:
    # The SFU's receiver reports measure the uplink alone: even two participants are separated.
    room, _, _ = room_with({"a": Legs(up_loss=0.2), "b": Legs()}, sfu=True)
    assert room.level("a") <= 2
    assert room.level("b") == 5
    assert room.legs("b").video.downlink_loss == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("bad", [Legs(up_loss=0.2), Legs(down_loss=0.2)])
def test_sfu_three_participants(bad: Legs) -> None:
    room, _, _ = room_with({"a": bad, "b": Legs(rtt=0.05), "c": Legs()}, sfu=True)
    assert room.level("a") <= 2
    assert room.level("b") >= 4 and room.level("c") >= 4
    assert room.legs("b").rtt == pytest.approx(0.05)  # its round trip to the server, as in a preflight


def test_a_server_that_terminates_media_charges_the_receiver_its_own_downlink() -> None:
    # With inbound_includes_uplink False the received loss is the downlink's alone.
    room = Room()
    for name in "ab":
        room.join(name, 0.0, demand=QualityDemand(audio_recv=True))
    for k in range(8):
        inbound = (InboundStream("audio", InboundStats(40 * k, 10 * k, 3200 * k), source="b"),)
        link = PeerLink("mcu", server=True, inbound=inbound, inbound_includes_uplink=False)
        room.handle_sample("a", RoomSample((link,)), k + 0.1)
        advance(room, k + 0.5)
    assert room.legs("a").audio.downlink_loss == pytest.approx(0.2)
    assert room.legs("b").audio.uplink_loss is None


# --- idle, reconnecting, leaving ---------------------------------------------------------------


def test_an_idle_participant_reads_5() -> None:
    sim = CallSim({"a": Legs(up_loss=0.2, down_loss=0.2), "b": Legs(), "c": Legs()})
    room = Room()
    join_all(room, sim, 0.0, demand=FULL)
    room.join("idle", 0.0, demand=QualityDemand(), network_quality=REMOTE_LEVELS)
    for k in range(1, 9):
        run(room, sim, float(k - 1), 1)
        room.handle_sample("idle", RoomSample(), k + 0.2)
    assert room.level("idle") == 5
    assert room.level("a") <= 2
    assert room.stats("idle").to_dict() == {"level": 5, "audio": None, "video": None}


def test_signaling_lost_reads_0_then_the_participant_is_removed() -> None:
    config = RoomConfig(reconnect_timeout=10.0)
    sim = CallSim({"a": Legs(), "b": Legs(), "c": Legs()})
    room = Room(config)
    join_all(room, sim, 0.0, demand=FULL, network_quality=REMOTE_LEVELS)
    run(room, sim, 0.0, 3)
    room.signaling_lost("a", 3.7)
    events = list(room.events())
    assert ParticipantReconnecting("a") in events
    assert room.level("a") == 0 and room.reconnecting("a")
    for to in "bc":
        assert last_level_seen(events, to, "a") == 0
    assert not updates_to(events, "a")  # unreachable: nothing is pushed to it
    events = run(room, sim, 3.7, 12, skip="a")
    assert ParticipantDisconnected("a", "timeout") in events
    assert room.participants == ("b", "c")
    later = run(room, sim, 15.7, 3)
    assert all(u.identity != "a" for to in "bc" for u in updates_to(later, to))
    with pytest.raises(RoomError) as info:
        room.level("a")
    assert info.value.code == 53204


def test_a_participant_back_from_reconnecting_climbs_from_0_and_gets_a_snapshot() -> None:
    sim = CallSim({"a": Legs(), "b": Legs(), "c": Legs()})
    room = Room()
    join_all(room, sim, 0.0, demand=FULL, network_quality=REMOTE_LEVELS)
    run(room, sim, 0.0, 3)
    room.signaling_lost("a", 3.5)
    room.signaling_restored("a", 4.5)
    events = list(room.events())
    assert ParticipantReconnected("a") in events
    snapshot = updates_to(events, "a")
    assert {u.identity for u in snapshot} == {"a", "b", "c"}
    assert room.level("a") == 0
    levels = []
    for k in range(5, 18):
        run(room, sim, float(k - 1), 1)
        levels.append(room.level("a"))
    assert levels == sorted(levels) and levels[-1] == 5 and levels[0] < 5


def test_a_sample_brings_a_reconnecting_participant_back() -> None:
    sim = CallSim({"a": Legs(), "b": Legs()})
    room = Room()
    join_all(room, sim, 0.0, demand=FULL)
    run(room, sim, 0.0, 2)
    room.signaling_lost("a", 2.5)
    sim.step()
    room.handle_sample("a", sim.sample("a"), 3.0)
    assert ParticipantReconnected("a") in list(room.events())
    assert not room.reconnecting("a")


def test_join_and_leave_are_events() -> None:
    room = Room()
    room.join("a", 0.0)
    room.join("b", 0.5)
    room.leave("a", 1.0)
    events = [e for e in room.events() if not isinstance(e, NetworkQualityPush)]
    assert events == [ParticipantConnected("a"), ParticipantConnected("b"), ParticipantDisconnected("a", "left")]
    assert room.participants == ("b",)
    room.leave("b", 2.0)
    assert room.get_timer() is None


def test_a_participant_that_stops_sampling_is_still_seen_by_the_others() -> None:
    # Its own samples go stale, but the others' receive counters still show its uplink.
    sim = CallSim({"a": Legs(up_loss=0.2), "b": Legs(), "c": Legs()})
    room = Room()
    join_all(room, sim, 0.0, demand=FULL)
    run(room, sim, 0.0, 10, skip="a")
    assert room.legs("a").video.uplink_loss == pytest.approx(0.2, abs=0.01)
    assert room.level("a") <= 2


# --- what is pushed to whom --------------------------------------------------------------------


def test_remote_verbosity_0_pushes_no_remote_levels() -> None:
    sim = CallSim({"a": Legs(up_loss=0.2), "b": Legs(), "c": Legs()})
    room = Room()
    room.join("a", 0.0, demand=FULL)  # the defaults: local 1, remote 0
    room.join("b", 0.0, demand=FULL, network_quality=NetworkQualityConfig(local=1, remote=0))
    room.join("c", 0.0, demand=FULL, network_quality=REMOTE_LEVELS)
    events = list(room.events()) + run(room, sim, 0.0, 6)
    for to in "ab":
        pushed = updates_to(events, to)
        assert pushed and {u.identity for u in pushed} == {to}
        assert all(u.local for u in pushed)
    assert {u.identity for u in updates_to(events, "c")} == {"a", "b", "c"}


def test_remote_verbosity_3_pushes_the_full_stats_shape() -> None:
    events = room_with({"a": Legs(up_loss=0.2), "b": Legs(), "c": Legs()}, network_quality=DETAILED)[2]
    about_a = [u for u in updates_to(events, "b") if u.identity == "a"][-1]
    stats = about_a.to_dict()["stats"]
    assert set(stats) == {"level", "audio", "video"}
    for media in ("audio", "video"):
        assert set(stats[media]) == {"send", "recv", "sendStats", "recvStats"}
        for side in ("sendStats", "recvStats"):
            assert set(stats[media][side]) == {"bandwidth", "latency", "fractionLost"}
            assert set(stats[media][side]["bandwidth"]) == {"actual", "available", "level"}
            assert set(stats[media][side]["latency"]) == {"jitter", "rtt", "level"}
            assert set(stats[media][side]["fractionLost"]) == {"fractionLost", "level"}
    assert stats["video"]["sendStats"]["fractionLost"]["fractionLost"] == pytest.approx(0.2, abs=0.01)
    assert stats["video"]["send"] == 1
    assert not about_a.local
    push = next(e for e in events if isinstance(e, NetworkQualityPush) and e.to == "b")
    assert push.to_dict()["to"] == "b" and push.to_dict()["updates"][0]["identity"] in "abc"


def test_moderate_verbosity_adds_media_levels_only() -> None:
    events = room_with({"a": Legs(), "b": Legs()}, network_quality=NetworkQualityConfig(2, 2))[2]
    stats = updates_to(events, "a")[-1].stats.to_dict()
    assert stats["video"] == {"send": 5, "recv": 5, "sendStats": None, "recvStats": None}


def test_local_verbosity_1_is_the_level_only_and_changes_only_on_level_changes() -> None:
    events = room_with({"a": Legs(up_loss=0.2), "b": Legs(), "c": Legs()})[2]
    mine = [u for u in updates_to(events, "a") if u.identity == "a"]
    assert all(u.stats.to_dict() == {"level": u.level, "audio": None, "video": None} for u in mine)
    assert all(u.level_changed for u in mine)
    assert [u.level for u in mine] == [5, 1]


def test_detailed_updates_refresh_stats_without_a_level_change() -> None:
    events = room_with({"a": Legs(), "b": Legs(), "c": Legs()}, network_quality=DETAILED)[2]
    mine = [u for u in updates_to(events, "a") if u.identity == "a"]
    assert mine[0].level_changed
    assert len(mine) > 1 and not any(u.level_changed for u in mine[1:])


def test_verbosity_out_of_range_falls_back_to_the_defaults() -> None:
    assert NetworkQualityConfig(local=0, remote=4) == NetworkQualityConfig(1, 0)
    assert NetworkQualityConfig(local=True, remote="3") == NetworkQualityConfig(1, 0)  # type: ignore[arg-type]
    assert NetworkQualityConfig.from_dict({"local": 3, "remote": 2}).to_dict() == {"local": 3, "remote": 2}
    assert NetworkQualityConfig.from_dict(True) == NetworkQualityConfig()
    assert NetworkQualityConfig.from_dict({"local": 9}) == NetworkQualityConfig(1, 0)


# --- demand ------------------------------------------------------------------------------------


def test_a_demand_change_keeps_the_level_without_a_gap() -> None:
    room, _, _ = room_with({"a": Legs(up_loss=0.2), "b": Legs(), "c": Legs()}, network_quality=DETAILED)
    room.update_demand("a", QualityDemand(audio_send=True, audio_recv=True), 9.0)
    assert room.level("a") <= 2
    pushed = [e for e in room.events() if isinstance(e, NetworkQualityPush)]
    assert all(u.level <= 2 for e in pushed for u in e.updates if u.identity == "a")
    assert room.stats("a").video is None and room.demand("a").video_send is None


def test_a_sample_may_carry_a_new_demand() -> None:
    room, sim, _ = room_with({"a": Legs(up_loss=0.2), "b": Legs(), "c": Legs()})
    sim.step()
    room.handle_sample("a", sim.sample("a", demand=QualityDemand()), 9.0)  # stops publishing/subscribing
    assert room.level("a") == 5


# --- bad input: an error for that participant, the room carries on -----------------------------


def assert_refused(code: int, reason: str, call: Any, *args: Any) -> RoomError:
    with pytest.raises(RoomError) as info:
        call(*args)
    assert info.value.code == code and info.value.reason == reason
    assert info.value.to_dict()["code"] == code
    return info.value


def test_bad_samples_are_refused_and_the_room_carries_on() -> None:
    sim = CallSim({"a": Legs(up_loss=0.2), "b": Legs(), "c": Legs()})
    room = Room(RoomConfig(max_links=4))
    join_all(room, sim, 0.0, demand=FULL)
    bad_out = PeerLink("b", audio_out=OutboundStats(packets_sent=-1))
    nan_jitter = PeerLink("b", inbound=(InboundStream("audio", InboundStats(jitter=math.nan)),))
    self_link = PeerLink("c")
    twice = (PeerLink("a"), PeerLink("a"))
    audio = InboundStream("audio", InboundStats())
    two_streams = PeerLink("a", inbound=(audio, audio))
    too_many = tuple(PeerLink(f"x{i}") for i in range(5))
    for k in range(1, 9):
        sim.step()
        for i, name in enumerate("ab"):
            room.handle_sample(name, sim.sample(name), k + 0.01 * i)
        garbage: list[Any] = ["junk", None, RoomSample((bad_out,)), RoomSample((nan_jitter,)), RoomSample((self_link,)),
                              RoomSample(twice), RoomSample((two_streams,)), RoomSample(too_many)]
        error = assert_refused(53003, "invalid-sample", room.handle_sample, "c", garbage[k - 1], k + 0.1)
        assert error.identity == "c"
        room.handle_sample("c", sim.sample("c"), k + 0.3)
        assert_refused(53003, "too-frequent", room.handle_sample, "c", sim.sample("c"), k + 0.35)
        assert_refused(53204, "not-found", room.handle_sample, "zed", sim.sample("c"), k + 0.4)
        advance(room, k + 0.5)
    assert room.level("a") <= 2
    assert room.level("b") >= 4 and room.level("c") >= 4


def test_counters_that_go_backwards_are_refused_then_rebased() -> None:
    room = Room()
    room.join("a", 0.0, demand=QualityDemand(audio_send=True))
    room.join("b", 0.0)

    def sample(sent: int) -> RoomSample:
        out = OutboundStats(packets_sent=sent, bytes_sent=80 * sent, remote_packets_lost=0)
        return RoomSample((PeerLink("b", audio_out=out),))

    room.handle_sample("a", sample(500), 1.0)
    assert_refused(53003, "counters-backwards", room.handle_sample, "a", sample(10), 2.0)
    room.handle_sample("a", sample(60), 3.0)  # counted from the refused sample: the client recovers
    room.handle_sample("a", sample(110), 4.0)
    advance(room, 4.5)
    send = room.stats("a").audio
    assert send is not None and send.send_stats is not None
    assert send.send_stats.bandwidth.actual == pytest.approx(50 * 80 * 8)


def test_lost_counts_may_fall() -> None:
    # RTCP counts duplicates as negative loss: a cumulative lost count that falls is not an error.
    room = Room()
    room.join("a", 0.0, demand=QualityDemand(audio_recv=True))
    room.join("b", 0.0)
    for k, (received, lost) in enumerate([(100, 5), (150, 4), (200, 4)]):
        inbound = (InboundStream("audio", InboundStats(received, lost, 80 * received)),)
        room.handle_sample("a", RoomSample((PeerLink("b", inbound=inbound),)), 1.0 + k)


def test_join_errors() -> None:
    room = Room(RoomConfig(max_participants=2))
    room.join("a", 0.0)
    assert_refused(53205, "identity-duplicate", room.join, "a", 0.0)
    assert_refused(53200, "identity-invalid", room.join, "", 0.0)
    assert_refused(53200, "identity-invalid", room.join, "bad\nname", 0.0)
    assert_refused(53200, "identity-invalid", room.join, 42, 0.0)
    assert_refused(53201, "identity-invalid", room.join, "x" * 129, 0.0)
    room.join("b", 0.0)
    assert_refused(53105, "room-full", room.join, "c", 0.0)
    assert_refused(53204, "not-found", room.leave, "c", 0.0)
    assert_refused(53204, "not-found", room.signaling_lost, "c", 0.0)
    assert room.participants == ("a", "b")


def test_caller_misuse_raises_at_once() -> None:
    room = Room()
    room.join("a", 5.0)
    with pytest.raises(ValueError, match="backwards"):
        room.handle_timer(4.0)
    with pytest.raises(ValueError):
        room.handle_timer(math.inf)
    with pytest.raises(TypeError):
        room.join("b", 6.0, demand="audio")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Room(config="big")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        RoomConfig(max_participants=0)
    with pytest.raises(ConfigError):
        RoomConfig(tick_interval=math.nan)
    with pytest.raises(ConfigError):
        PeerLink("b", rtt=-0.1)
    with pytest.raises(ConfigError):
        InboundStream("data", InboundStats())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        RoomSample([PeerLink("b")])  # type: ignore[arg-type]


# --- the wire shape ---------------------------------------------------------------------------


def test_samples_round_trip_through_json() -> None:
    sim = CallSim({"a": Legs(up_loss=0.1), "b": Legs(), "c": Legs()})
    sim.step()
    for name in "abc":
        sample = sim.sample(name, demand=FULL)
        assert decode_sample(encode_sample(sample)) == sample
    sfu = CallSim({"a": Legs(), "b": Legs()}, sfu=True)
    sfu.step()
    assert decode_sample(encode_sample(sfu.sample("a"))) == sfu.sample("a")
    assert decode_demand(encode_demand(FULL)) == FULL
    assert decode_demand({"videoRecv": {"width": 320, "height": 240, "fps": 15}}).video_recv == SMALL_VIDEO


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        '{"links": {}}',
        '{"links": [{"remote": 7}]}',
        '{"links": [{"remote": "b", "audioOut": {"packetsSent": 1.5, "bytesSent": 0}}]}',
        '{"links": [{"remote": "b", "audioOut": {"packetsSent": 1}}]}',
        '{"links": [{"remote": "b", "rtt": NaN}]}',
        '{"links": [{"remote": "b", "inbound": [{"kind": "smell", "packetsReceived": 0, "packetsLost": 0, '
        '"bytesReceived": 0}]}]}',
        '{"links": [], "demand": {"videoSend": {"width": -1}}}',
        '{"links": [], "demand": {"videoSend": 8}}',
        '{"links": [], "demand": {"audioSend": "yes"}}',
        '{"links": [{"remote": "b", "server": 1}]}',
        "\xff",
    ],
)
def test_garbage_json_is_one_typed_error(text: str) -> None:
    assert_refused(53003, "invalid-sample", decode_sample_json, text, "a")


def test_a_sample_too_big_is_refused_before_parsing() -> None:
    text = '{"links": [], "pad": "' + "x" * MAX_SAMPLE_BYTES + '"}'
    assert_refused(53003, "sample-too-big", decode_sample_json, text, "a")
    assert_refused(53003, "sample-too-big", decode_sample_json, text.encode(), "a")
    assert decode_sample_json('{"links": [], "unknown": 1}') == RoomSample()
