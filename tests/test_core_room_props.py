"""Properties of the room model (core/room.py), with hypothesis.

* attribution: with independent per-leg losses drawn at random and exact path losses computed
  from them, the fit recovers every leg, up to the one thing no path measurement can tell (how
  much of the loss common to every path is on the uplinks rather than the downlinks: split
  evenly); round trips of three or more ends are recovered exactly;
* the fit is a true non-negative least-squares optimum (its KKT conditions hold) on any input;
* no sample, however malformed, makes the room raise anything but its typed error, and the
  levels stay in 0..5 whatever the participants send.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from rtcprobe.core.observations import InboundStats, OutboundStats
from rtcprobe.core.quality import QualityDemand
from rtcprobe.core.room import (
    InboundStream,
    NetworkQualityPush,
    PeerLink,
    Room,
    RoomError,
    RoomSample,
    decode_sample,
    fit_legs,
    split_losses,
    split_rtts,
)
from test_core_room_sim import FULL

NAMES = "abcdefgh"
loss = st.floats(0.0, 0.5, allow_nan=False)


def log_loss(p: float) -> float:
    return -math.log1p(-p)


@st.composite
def legs(draw: st.DrawFn, low: int = 3, high: int = 7) -> tuple[dict[str, float], dict[str, float]]:
    n = draw(st.integers(low, high))
    names = NAMES[:n]
    return {s: draw(loss) for s in names}, {r: draw(loss) for r in names}


def mesh_paths(up: dict[str, float], down: dict[str, float]) -> dict[tuple[str, str], float]:
    return {(s, r): 1 - (1 - up[s]) * (1 - down[r]) for s in up for r in down if s != r}


@settings(max_examples=300, deadline=None)
@given(legs())
def test_every_leg_is_recovered_up_to_the_common_part(drawn: tuple[dict[str, float], dict[str, float]]) -> None:
    up, down = drawn
    est_up, est_down = split_losses(mesh_paths(up, down))
    # In -ln(1 - p), uplinks and downlinks may trade a constant; the fit takes the middle of what
    # keeps every leg >= 0: uplinks shifted by (min downlink - min uplink) / 2, downlinks back.
    shift = (min(map(log_loss, down.values())) - min(map(log_loss, up.values()))) / 2
    for name in up:
        assert log_loss(est_up[name]) == approx(log_loss(up[name]) + shift)
        assert log_loss(est_down[name]) == approx(log_loss(down[name]) - shift)


@settings(max_examples=300, deadline=None)
@given(legs(), st.data())
def test_with_one_clean_uplink_and_one_clean_downlink_every_leg_is_exact(
    drawn: tuple[dict[str, float], dict[str, float]], data: st.DataObject
) -> None:
    up, down = drawn
    names = list(up)
    up[data.draw(st.sampled_from(names))] = 0.0
    down[data.draw(st.sampled_from(names))] = 0.0
    est_up, est_down = split_losses(mesh_paths(up, down))
    for name in names:
        assert est_up[name] == approx(up[name])
        assert est_down[name] == approx(down[name])


@settings(max_examples=200, deadline=None)
@given(legs(), st.data())
def test_one_impaired_leg_among_clean_ones_is_found(
    drawn: tuple[dict[str, float], dict[str, float]], data: st.DataObject
) -> None:
    # The property the live test relies on: one bad leg, everyone else clean.
    up, down = drawn
    names = list(up)
    bad = data.draw(st.sampled_from(names))
    side = data.draw(st.sampled_from(["up", "down"]))
    up = {n: (up[n] if side == "up" and n == bad else 0.0) for n in names}
    down = {n: (down[n] if side == "down" and n == bad else 0.0) for n in names}
    est_up, est_down = split_losses(mesh_paths(up, down))
    for name in names:
        assert est_up[name] == approx(up[name]) and est_down[name] == approx(down[name])


@settings(max_examples=200, deadline=None)
@given(loss, loss)
def test_two_participants_split_each_path_evenly(p_ab: float, p_ba: float) -> None:
    est_up, est_down = split_losses({("a", "b"): p_ab, ("b", "a"): p_ba})
    assert log_loss(est_up["a"]) == approx(log_loss(p_ab) / 2)
    assert log_loss(est_down["b"]) == approx(log_loss(p_ab) / 2)
    assert log_loss(est_up["b"]) == approx(log_loss(p_ba) / 2)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 0.5), min_size=3, max_size=8))
def test_round_trips_of_three_or_more_ends_are_exact(access: list[float]) -> None:
    names = NAMES[: len(access)]
    paths = {(a, b): access[i] + access[j] for i, a in enumerate(names) for j, b in enumerate(names) if i < j}
    fitted = split_rtts(paths)
    for name, value in zip(names, access, strict=True):
        assert fitted[name] == approx(value)


@settings(max_examples=200, deadline=None)
@given(st.floats(0.0, 0.5), st.floats(0.0, 0.5), st.floats(0.0, 0.5))
def test_direct_uplink_observations_pin_the_split(u_a: float, u_b: float, d_b: float) -> None:
    # An SFU's receiver reports measure uplinks alone: two participants are then told apart.
    paths = {("a", "b"): 1 - (1 - u_a) * (1 - d_b)}
    est_up, est_down = split_losses(paths, uplinks={"a": u_a, "b": u_b})
    assert est_up["a"] == approx(u_a) and est_up["b"] == approx(u_b) and est_down["b"] == approx(d_b)


observation = st.tuples(
    st.integers(0, 7), st.one_of(st.none(), st.integers(0, 7)), st.floats(0.0, 10.0), st.floats(0.01, 100.0)
)


@settings(max_examples=400, deadline=None)
@given(st.lists(observation, min_size=1, max_size=30))
def test_the_fit_is_a_nonnegative_least_squares_optimum(obs: list[tuple[int, int | None, float, float]]) -> None:
    obs = [(a, b, v, w) for a, b, v, w in obs if a != b]
    assume(obs)
    fitted = fit_legs(8, obs)
    touched = {a for a, _, _, _ in obs} | {b for _, b, _, _ in obs if b is not None}
    assert all((fitted[i] is None) == (i not in touched) for i in range(8))
    x = np.array([fitted[i] or 0.0 for i in range(8)])
    assert (x >= 0).all()
    # KKT of min sum w (x_a + x_b - v)^2 over x >= 0: gradient >= 0, and 0 wherever x > 0.
    grad = np.zeros(8)
    scale = max(w for _, _, _, w in obs) * max(1.0, max(v for _, _, v, _ in obs))
    for a, b, v, w in obs:
        r = x[a] + (x[b] if b is not None else 0.0) - v
        grad[a] += w * r
        if b is not None:
            grad[b] += w * r
    tol = 1e-7 * scale
    for i in touched:
        assert grad[i] >= -tol
        if x[i] > 1e-9:
            assert abs(grad[i]) <= tol


# --- robustness: any input ------------------------------------------------------------------

anything = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
)
maybe_int = st.one_of(st.integers(-(2**60), 2**60), anything)
maybe_float = st.one_of(st.none(), st.floats(-1e13, 1e13), anything)


@st.composite
def wild_outbound(draw: st.DrawFn) -> OutboundStats:
    return OutboundStats(draw(maybe_int), draw(maybe_int), draw(maybe_float), draw(maybe_float), draw(maybe_float),
                         draw(maybe_int), draw(maybe_float))


@st.composite
def wild_inbound(draw: st.DrawFn) -> InboundStream:
    stats = InboundStats(draw(maybe_int), draw(maybe_int), draw(maybe_int), draw(maybe_float))
    return InboundStream(draw(st.sampled_from(["audio", "video"])), stats,
                         draw(st.one_of(st.none(), st.sampled_from(list("abcz")))))


@st.composite
def wild_sample(draw: st.DrawFn) -> RoomSample:
    links = []
    for _ in range(draw(st.integers(0, 4))):
        links.append(PeerLink(
            draw(st.sampled_from(list("abcz"))),
            server=draw(st.booleans()),
            audio_out=draw(st.one_of(st.none(), wild_outbound())),
            video_out=draw(st.one_of(st.none(), wild_outbound())),
            inbound=tuple(draw(st.lists(wild_inbound(), max_size=3))),
            rtt=draw(st.one_of(st.none(), st.floats(0.0, 60.0))),
            inbound_includes_uplink=draw(st.booleans()),
        ))
    return RoomSample(tuple(links), draw(st.one_of(st.none(), st.just(FULL), st.just(QualityDemand()))))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from("abc"), st.one_of(wild_sample(), anything)), max_size=12))
def test_no_sample_makes_the_room_raise_anything_but_its_error(samples: list[tuple[str, Any]]) -> None:
    room = Room()
    for name in "ab":
        room.join(name, 0.0, demand=FULL)
    now = 0.0
    for name, sample in samples:
        now += 0.3
        try:
            room.handle_sample(name, sample, now)
        except RoomError as exc:
            assert exc.code in (53003, 53204)
        room.handle_timer(now)
        for identity in room.participants:
            assert 0 <= room.level(identity) <= 5
            room.stats(identity).to_dict()
        for event in room.events():
            if isinstance(event, NetworkQualityPush):
                for update in event.updates:
                    assert 0 <= update.level <= 5


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_valid_samples_of_any_shape_give_levels_in_range(data: st.DataObject) -> None:
    # Counters that only grow, gauges anywhere in range, links of any shape (peers, servers,
    # remotes that never joined, sources unknown): the fit and the scorers always answer.
    room = Room()
    members = "abc"
    for name in members:
        room.join(name, 0.0, demand=data.draw(st.sampled_from([FULL, QualityDemand(), QualityDemand(audio_recv=True)])))
    counters: dict[tuple[Any, ...], int] = {}

    def grow(key: tuple[Any, ...], most: int) -> int:
        counters[key] = counters.get(key, 0) + data.draw(st.integers(0, most))
        return counters[key]

    gauge = st.one_of(st.none(), st.floats(0.0, 60.0))
    now = 0.0
    for _ in range(data.draw(st.integers(1, 12))):
        now += data.draw(st.floats(0.2, 3.0))
        name = data.draw(st.sampled_from(members))
        links = []
        for remote in data.draw(st.lists(st.sampled_from(["a", "b", "c", "z", "sfu"]), unique=True, max_size=3)):
            if remote == name:
                continue
            server = remote == "sfu"
            outs = {}
            for kind in data.draw(st.lists(st.sampled_from(["audio", "video"]), unique=True)):
                key = (name, remote, kind)
                outs[kind] = OutboundStats(
                    grow((*key, "ps"), 100), grow((*key, "bs"), 10**6), data.draw(gauge), data.draw(gauge),
                    data.draw(st.one_of(st.none(), st.floats(0.0, 1.0))),
                    data.draw(st.one_of(st.none(), st.integers(-1000, 1000))),
                    data.draw(st.one_of(st.none(), st.floats(0.0, 1e9))),
                )
            inbound = []
            for kind in data.draw(st.lists(st.sampled_from(["audio", "video"]), unique=True)):
                source = data.draw(st.sampled_from([None, "a", "b", "c"])) if server else None
                if source == name:
                    continue
                key = (name, remote, kind, source)
                stats = InboundStats(grow((*key, "pr"), 100), data.draw(st.integers(-50, 10**4)),
                                     grow((*key, "br"), 10**6), data.draw(gauge))
                inbound.append(InboundStream(kind, stats, source))
            links.append(PeerLink(remote, server=server, audio_out=outs.get("audio"), video_out=outs.get("video"),
                                  inbound=tuple(inbound), rtt=data.draw(gauge),
                                  inbound_includes_uplink=data.draw(st.booleans())))
        try:
            room.handle_sample(name, RoomSample(tuple(links)), now)
        except RoomError as exc:
            assert exc.reason in ("too-frequent", "counters-backwards")
        room.handle_timer(now)
        for identity in room.participants:
            assert 0 <= room.level(identity) <= 5
            assert room.stats(identity).to_dict()["level"] == room.level(identity)
        list(room.events())


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**60), 2**60), st.floats(), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=5)),
    max_leaves=30,
)
sample_keys = st.sampled_from(["links", "remote", "server", "rtt", "audioOut", "videoOut", "inbound", "kind", "source",
                               "packetsSent", "bytesSent", "packetsReceived", "packetsLost", "bytesReceived",
                               "jitter", "demand", "videoSend", "width"])
shaped = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 2**54), st.floats(), st.sampled_from(["audio", "b", "video"])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(sample_keys, inner, max_size=6)),
    max_leaves=40,
)


@settings(max_examples=500, deadline=None)
@given(st.one_of(json_values, shaped))
def test_decoding_any_json_gives_a_sample_or_the_typed_error(value: Any) -> None:
    try:
        sample = decode_sample(value, "a")
    except RoomError as exc:
        assert exc.code == 53003 and exc.reason == "invalid-sample"
        return
    assert isinstance(sample, RoomSample)


def approx(value: float) -> Any:
    return pytest.approx(value, rel=1e-6, abs=1e-9)
