"""The core-mode wire codec (core/codec.py): observations round-trip exactly, hostile input is
only ever a CodecError (code 53000), and actions/events carry the core's objects unchanged."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from core_harness import CounterSource, Harness, answer_with, to_stats_phase
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rtcprobe.core import (
    Completed,
    ConfigError,
    ConnectionStateChanged,
    DtlsStateChanged,
    Failed,
    IceCandidateStats,
    IceServer,
    IceStateChanged,
    InboundStats,
    MediaAcquired,
    MediaDemand,
    MediaStarted,
    OutboundStats,
    PreflightConfig,
    Role,
    SelectedCandidatePair,
    SignalingConnected,
    StatsObserved,
    StatsSample,
    StepUnobservable,
    StopRequested,
    TrackSubscribed,
    TransportError,
    VideoSpec,
    errors,
)
from rtcprobe.core.codec import (
    CANDIDATE_PROTOCOLS,
    CANDIDATE_TYPES,
    KIND_OF,
    MAX_COUNTER,
    MAX_MESSAGE_BYTES,
    RELAY_PROTOCOLS,
    CodecError,
    Observe,
    action_message,
    decode_config,
    decode_media,
    decode_observation,
    decode_observe,
    decode_observe_object,
    encode_event,
    encode_media,
    encode_observation,
    encode_observe,
    event_message,
)
from rtcprobe.core.observations import (
    CONNECTION_STATES,
    DTLS_STATES,
    ICE_STATES,
    OBSERVATION_TYPES,
    UNOBSERVABLE_STEPS,
)

# --- strategies: every valid observation ---------------------------------------------------------

roles = st.sampled_from(list(Role))
kinds = st.sampled_from(["audio", "video"])
counters = st.integers(min_value=0, max_value=MAX_COUNTER)
seconds = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
maybe_seconds = st.none() | seconds
text = st.text(max_size=40)

candidates = st.builds(
    IceCandidateStats,
    transport_id=text,
    candidate_type=st.sampled_from(CANDIDATE_TYPES),
    port=st.integers(0, 65535),
    address=text,
    priority=st.integers(0, 2**32 - 1),
    protocol=st.sampled_from(CANDIDATE_PROTOCOLS),
    url=st.none() | text,
    relay_protocol=st.none() | st.sampled_from(RELAY_PROTOCOLS),
)
outbound = st.builds(
    OutboundStats,
    packets_sent=counters,
    bytes_sent=counters,
    remote_rtt=maybe_seconds,
    remote_jitter=maybe_seconds,
    remote_fraction_lost=st.none() | st.floats(0, 1),
    remote_packets_lost=st.none() | counters,
    remote_packets_received=st.none() | counters,
    available_bps=st.none() | st.floats(0, 1e12),
)
inbound = st.builds(InboundStats, packets_received=counters, packets_lost=counters, bytes_received=counters,
                    jitter=maybe_seconds)
samples = st.builds(
    StatsSample,
    audio_out=st.none() | outbound,
    video_out=st.none() | outbound,
    audio_in=st.none() | inbound,
    video_in=st.none() | inbound,
    candidate_pair_rtt=maybe_seconds,
    ice_candidates=st.lists(candidates, max_size=4).map(tuple),
    selected_pair=st.none() | st.builds(SelectedCandidatePair, candidates, candidates),
    inbound_includes_uplink=st.booleans(),
    loopback=st.booleans(),
)
ice_servers = st.builds(IceServer, urls=st.lists(text, min_size=1, max_size=3).map(tuple),
                        username=st.none() | text, credential=st.none() | text)

#: One strategy per observation type: the test below checks that none is missing.
STRATEGIES: dict[type, st.SearchStrategy[Any]] = {
    MediaAcquired: st.lists(kinds, unique=True, max_size=2).map(lambda ks: MediaAcquired(tuple(ks))),
    SignalingConnected: st.lists(ice_servers, max_size=3).map(lambda s: SignalingConnected(tuple(s))),
    IceStateChanged: st.builds(IceStateChanged, roles, st.sampled_from(ICE_STATES)),
    DtlsStateChanged: st.builds(DtlsStateChanged, roles, st.sampled_from(DTLS_STATES)),
    ConnectionStateChanged: st.builds(ConnectionStateChanged, roles, st.sampled_from(CONNECTION_STATES)),
    TrackSubscribed: st.builds(TrackSubscribed, kinds),
    MediaStarted: st.builds(MediaStarted, kinds),
    StepUnobservable: st.builds(StepUnobservable, st.sampled_from(UNOBSERVABLE_STEPS)),
    StatsObserved: st.builds(StatsObserved, samples),
    TransportError: st.builds(
        lambda e, m: TransportError(e if m is None else e.with_message(m)),
        st.sampled_from(list(errors.ERRORS.values())), st.none() | text,
    ),
    StopRequested: st.just(StopRequested()),
}
observations = st.one_of(*STRATEGIES.values())
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(10**308, 10**400)  # beyond any float
    | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)


def test_every_observation_type_has_a_codec_entry_and_a_strategy() -> None:
    # Adding an observation to the core's one list without a codec entry fails here (and at import).
    assert set(KIND_OF) == set(OBSERVATION_TYPES)
    assert set(STRATEGIES) == set(OBSERVATION_TYPES)
    assert len(set(KIND_OF.values())) == len(OBSERVATION_TYPES)  # one wire kind each


# --- round trips ---------------------------------------------------------------------------------


@given(observations)
def test_round_trip_is_identity(observation: Any) -> None:
    encoded = encode_observation(observation)
    assert encoded["v"] == 1 and encoded["kind"] == KIND_OF[type(observation)]
    assert decode_observation(encoded) == observation


@given(observations, st.floats(min_value=0, max_value=1e12, allow_nan=False))
def test_observe_frame_round_trips_through_text(observation: Any, now: float) -> None:
    frame = encode_observe(observation, now)
    assert len(frame.encode()) <= MAX_MESSAGE_BYTES
    assert decode_observe(frame) == Observe(now, observation)
    assert decode_observe(frame.encode()) == Observe(now, observation)


def test_the_documented_shapes_decode() -> None:
    # The examples of docs/signaling.md, as a browser writes them.
    assert decode_observation({"v": 1, "kind": "mediaAcquired", "kinds": ["audio", "video"]}) == MediaAcquired()
    assert decode_observation({"v": 1, "kind": "signalingConnected"}) == SignalingConnected()
    assert decode_observation({"v": 1, "kind": "iceStateChanged", "role": "publisher", "state": "checking"}) == \
        IceStateChanged(Role.PUBLISHER, "checking")
    assert decode_observation({"v": 1, "kind": "mediaStarted", "media": "video"}) == MediaStarted("video")
    assert decode_observation({"v": 1, "kind": "stepUnobservable", "name": "dtlsConnected"}) == \
        StepUnobservable("dtlsConnected")
    assert decode_observation({"v": 1, "kind": "transportError", "code": 53405, "message": "ICE failed"}) == \
        TransportError(errors.MEDIA_CONNECTION.with_message("ICE failed"))
    assert decode_observation({"v": 1, "kind": "stopRequested", "extra": [1, 2]}) == StopRequested()
    sample = decode_observation({"v": 1, "kind": "stats", "sample": {
        "audioOut": {"packetsSent": 50, "bytesSent": 6000, "remoteRtt": 0.08},
        "audioIn": {"packetsReceived": 49, "packetsLost": 1, "bytesReceived": 5880, "jitter": 0.002},
        "candidatePairRtt": 0.081, "loopback": True, "futureField": {"x": 1},
    }})
    assert sample == StatsObserved(StatsSample(
        audio_out=OutboundStats(50, 6000, remote_rtt=0.08),
        audio_in=InboundStats(49, 1, 5880, 0.002),
        candidate_pair_rtt=0.081, loopback=True,
    ))


# --- hostile input: never anything but CodecError -----------------------------------------------


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_any_json_value_is_an_observation_or_a_codec_error(value: Any) -> None:
    for candidate in (value, {"v": 1, "kind": "stats", "sample": value}, {"v": 1, "kind": "mediaAcquired",
                                                                           "kinds": value}):
        try:
            decode_observation(candidate)
        except CodecError as exc:
            assert exc.code == 53000 and exc.error.code == 53000


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(observations, st.data())
def test_a_valid_observation_with_one_field_replaced_decodes_or_is_a_codec_error(observation: Any,
                                                                              data: st.DataObject) -> None:
    encoded = encode_observation(observation)
    path = data.draw(st.sampled_from(_paths(encoded)[1:] or [("kind",)]))
    replacement = data.draw(json_values | st.sampled_from([-1, 2**53, 1.5, "", True, None, [], {}]))
    target: Any = encoded
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = replacement
    try:
        decoded = decode_observation(encoded)
    except CodecError:
        return
    assert type(decoded) in OBSERVATION_TYPES
    assert decode_observation(encode_observation(decoded)) == decoded  # whatever it accepted is exact


@given(st.binary(max_size=200) | st.text(max_size=200))
def test_any_frame_is_an_observe_message_or_a_codec_error(frame: bytes | str) -> None:
    with pytest.raises(CodecError):
        decode_observe(frame)  # random bytes and text are never a valid observe message


GOOD = {"v": 1, "kind": "mediaStarted", "media": "audio"}


@pytest.mark.parametrize(("observation", "words"), [
    ({"kind": "mediaStarted", "media": "audio"}, "missing the 'v' field"),
    ({**GOOD, "v": 2}, "observation.v must be 1"),
    ({**GOOD, "v": True}, "observation.v must be 1"),
    ({**GOOD, "v": "1"}, "observation.v must be 1"),
    ({**GOOD, "kind": "offer"}, "a known observation kind"),
    ({**GOOD, "kind": 7}, "a known observation kind"),
    ({"v": 1}, "missing the 'kind' field"),
    ([GOOD], "must be an object"),
    ({**GOOD, "media": "screen"}, "one of audio, video"),
    ({**GOOD, "media": None}, "one of audio, video"),
    ({"v": 1, "kind": "iceStateChanged", "role": "publisher", "state": "connectedd"}, "state must be one of"),
    ({"v": 1, "kind": "iceStateChanged", "role": "sender", "state": "new"}, "role must be one of"),
    ({"v": 1, "kind": "dtlsStateChanged", "role": "publisher", "state": "completed"}, "state must be one of"),
    ({"v": 1, "kind": "stepUnobservable", "name": "iceConnected"}, "name must be one of"),
    ({"v": 1, "kind": "mediaAcquired", "kinds": ["audio", "audio"]}, "lists a kind twice"),
    ({"v": 1, "kind": "mediaAcquired", "kinds": "audio"}, "must be an array"),
    ({"v": 1, "kind": "transportError", "code": 12345}, "a code of the error table"),
    ({"v": 1, "kind": "transportError", "code": 53405.0}, "a code of the error table"),
    ({"v": 1, "kind": "transportError", "code": 53405, "message": 5}, "message must be a string"),
    ({"v": 1, "kind": "signalingConnected", "iceServers": [{"urls": []}]}, "urls must not be empty"),
    ({"v": 1, "kind": "signalingConnected", "iceServers": [{"urls": "turn:x"}]}, "urls must be an array"),
    ({"v": 1, "kind": "stats"}, "missing the 'sample' field"),
    ({"v": 1, "kind": "stats", "sample": {}}, "missing the 'loopback' field"),
    ({"v": 1, "kind": "stats", "sample": {"loopback": 1}}, "loopback must be true or false"),
])
def test_malformed_observations_are_codec_errors_naming_the_field(observation: Any, words: str) -> None:
    with pytest.raises(CodecError, match=words):
        decode_observation(observation)


def _stats(**sample: Any) -> dict[str, Any]:
    return {"v": 1, "kind": "stats", "sample": {"loopback": True, **sample}}


OUT = {"packetsSent": 10, "bytesSent": 1000}
IN = {"packetsReceived": 10, "packetsLost": 0, "bytesReceived": 1000}
CANDIDATE = {"transportId": "t", "candidateType": "relay", "port": 3478, "address": "127.0.0.1",
             "priority": 1, "protocol": "udp", "url": "turn:127.0.0.1", "relayProtocol": "tls"}


@pytest.mark.parametrize(("observation", "words"), [
    (_stats(audioOut={**OUT, "packetsSent": -1}), r"audioOut.packetsSent must be an integer in 0\.\."),
    (_stats(videoIn={**IN, "packetsLost": -3}), r"videoIn.packetsLost must be an integer in 0\.\."),
    (_stats(audioOut={**OUT, "remotePacketsLost": -1}), "remotePacketsLost must be an integer"),
    (_stats(audioOut={**OUT, "bytesSent": 2**53}), "bytesSent must be an integer"),
    (_stats(audioOut={**OUT, "bytesSent": 10.5}), "bytesSent must be an integer"),
    (_stats(audioOut={**OUT, "bytesSent": True}), "bytesSent must be an integer"),
    (_stats(audioOut={**OUT, "bytesSent": "10"}), "bytesSent must be an integer"),
    (_stats(audioOut={"bytesSent": 10}), "missing the 'packetsSent' field"),
    (_stats(audioOut={**OUT, "remoteRtt": -0.1}), "remoteRtt must be a number in 0"),
    (_stats(audioOut={**OUT, "remoteRtt": math.inf}), "remoteRtt must be a finite number"),
    (_stats(audioOut={**OUT, "remoteFractionLost": 1.5}), "remoteFractionLost must be a number in 0..1"),
    (_stats(audioIn={**IN, "jitter": math.nan}), "jitter must be a finite number"),
    (_stats(candidatePairRtt="0.1"), "candidatePairRtt must be a finite number"),
    (_stats(candidatePairRtt=10**400), "candidatePairRtt must be a finite number"),  # no OverflowError
    (_stats(audioOut={**OUT, "bytesSent": 10**400}), "bytesSent must be an integer"),
    (_stats(audioIn=[IN]), "audioIn must be an object"),
    (_stats(iceCandidates=[{**CANDIDATE, "candidateType": "turn"}]), "candidateType must be one of"),
    (_stats(iceCandidates=[{**CANDIDATE, "protocol": "UDP"}]), "protocol must be one of"),
    (_stats(iceCandidates=[{**CANDIDATE, "relayProtocol": "dtls"}]), "relayProtocol must be one of"),
    (_stats(iceCandidates=[{**CANDIDATE, "port": 70000}]), "port must be an integer in 0..65535"),
    (_stats(iceCandidates=[{**CANDIDATE, "address": None}]), "address must be a string"),
    (_stats(iceCandidates=CANDIDATE), "iceCandidates must be an array"),
    (_stats(selectedPair={"localCandidate": CANDIDATE}), "missing the 'remoteCandidate' field"),
])
def test_bad_stats_are_codec_errors_naming_the_field(observation: Any, words: str) -> None:
    with pytest.raises(CodecError, match=words):
        decode_observation(observation)


def test_codec_error_is_a_core_error_carrying_53000() -> None:
    with pytest.raises(CodecError) as info:
        decode_observation({"v": 1, "kind": "nope"})
    assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)
    assert info.value.code == 53000
    assert info.value.error.code == 53000 and info.value.error.name == "SignalingConnectionError"
    assert "nope" in info.value.error.message


# --- the raw frame --------------------------------------------------------------------------------


def _frame(observation: Any = GOOD, now: Any = 1234.5, **extra: Any) -> str:
    return json.dumps({"type": "observe", "now": now, "observation": observation, **extra})


def test_frame_decodes_with_its_client_time() -> None:
    assert decode_observe(_frame(now=1e9)) == Observe(1e9, MediaStarted("audio"))
    assert decode_observe_object(json.loads(_frame(now=0))) == Observe(0.0, MediaStarted("audio"))


@pytest.mark.parametrize(("frame", "words"), [
    ('{"type": "observe", "now": NaN, "observation": {}}', "NaN is not JSON"),
    ('{"type": "observe", "now": Infinity, "observation": {}}', "Infinity is not JSON"),
    ('{"type": "observe", "now": 1e999, "observation": {}}', "now must be a finite number"),
    (_frame(now=-1), "now must be a number in 0"),
    (_frame(now="1"), "now must be a finite number"),
    ('{"type": "observe", "now": 1' + "0" * 400 + ', "observation": {}}', "now must be a finite number"),
    (_frame(now=None), "now must be a finite number"),
    (json.dumps({"type": "observe", "observation": GOOD}), "missing the 'now' field"),
    (json.dumps({"type": "observe", "now": 1}), "missing the 'observation' field"),
    (json.dumps({"type": "report", "now": 1, "observation": GOOD}), "message.type must be 'observe'"),
    ("[1, 2]", "message must be an object"),
    ("{", "invalid JSON"),
    ("", "invalid JSON"),
    ("[" * 100_000, "message too big"),  # refused by size, never parsed (no RecursionError either)
    ("[" * 60_000, "invalid JSON"),  # under the limit: deep nesting is still a CodecError
    ('{"type": "observe", "now": ' + "9" * 30_000 + "}", "invalid JSON"),  # int() digit limit
    (b"\xff\xfe", "not UTF-8"),
])
def test_bad_frames_are_codec_errors(frame: str | bytes, words: str) -> None:
    with pytest.raises(CodecError, match=words):
        decode_observe(frame)


def test_size_is_checked_in_utf8_bytes_before_parsing() -> None:
    pad_ok = "x" * (MAX_MESSAGE_BYTES - len(_frame(extra="")))
    assert len(_frame(extra=pad_ok).encode()) == MAX_MESSAGE_BYTES
    assert decode_observe(_frame(extra=pad_ok)).observation == MediaStarted("audio")
    with pytest.raises(CodecError, match="message too big"):
        decode_observe(_frame(extra=pad_ok + "x"))
    # 3 bytes per character: fewer characters than the limit, more bytes.
    wide = "€" * (MAX_MESSAGE_BYTES // 3 + 10)
    assert len(wide) < MAX_MESSAGE_BYTES
    with pytest.raises(CodecError, match="message too big"):
        decode_observe(json.dumps({"type": "observe", "now": 1, "observation": GOOD, "pad": wide},
                                  ensure_ascii=False))
    with pytest.raises(CodecError, match="message too big"):
        decode_observe(_frame(extra=pad_ok + "x").encode())
    # Oversized garbage gets the size error, not a parse error: the parser never ran.
    with pytest.raises(CodecError, match="message too big"):
        decode_observe("}" * (MAX_MESSAGE_BYTES + 1))


# --- encoding refuses what decoding would refuse -------------------------------------------------


@pytest.mark.parametrize("observation", [
    StatsObserved(StatsSample(audio_in=InboundStats(packets_lost=-1))),
    StatsObserved(StatsSample(candidate_pair_rtt=math.nan)),
    StatsObserved(StatsSample(audio_out=OutboundStats(remote_fraction_lost=2.0))),
    TransportError(errors.PreflightErrorInfo(12345, "X", "y")),
    TransportError(errors.PreflightErrorInfo(53405, "NotTheTableName", "y")),
    MediaAcquired(("audio", "screen")),
    SignalingConnected((IceServer(()),)),
])
def test_encode_refuses_what_decode_refuses(observation: Any) -> None:
    with pytest.raises(CodecError):
        encode_observation(observation)


def test_encode_refuses_non_observations_and_non_finite_now() -> None:
    with pytest.raises(CodecError):
        encode_observation(object())  # type: ignore[arg-type]
    with pytest.raises(CodecError):
        encode_observe(StopRequested(), math.inf)


# --- config of the hello --------------------------------------------------------------------------


def test_config_from_the_hello() -> None:
    config = decode_config({"start": 5.0, "duration": 10000, "verbosity": 2,
                            "media": {"audio": True, "video": {"width": 320, "height": 240, "fps": 15}}},
                           region="de1")
    assert config == PreflightConfig(duration=10.0, region="de1", network_quality_verbosity=2,
                                     media=MediaDemand(True, VideoSpec(320, 240, 15.0)))
    assert decode_config({}, region="gll") == PreflightConfig()
    assert decode_config({"media": {"audio": True, "video": None}}, region="gll").media == MediaDemand(video=None)
    assert decode_media({"audio": False}) == MediaDemand(audio=False)  # absent video: the default
    assert decode_media({"video": True}) == decode_media({"video": {}}) == MediaDemand()
    for media in (MediaDemand(), MediaDemand(audio=False), MediaDemand(video=None),
                  MediaDemand(True, VideoSpec(1, 2, 3))):
        assert decode_media(encode_media(media)) == media


@pytest.mark.parametrize(("core", "words"), [
    ({"duration": 0}, "duration must be a positive number"),
    ({"duration": -5}, "duration must be a number in 0"),
    ({"duration": 10**9}, "duration must be a number in 0..600000"),
    ({"duration": "10s"}, "duration must be a finite number"),
    ({"verbosity": 4}, "verbosity must be an integer in 1..3"),
    ({"media": {"audio": False, "video": None}}, "media must publish audio, video or both"),
    ({"media": {"audio": "yes"}}, "media.audio must be true or false"),
    ({"media": {"video": {"width": 0}}}, "width must be an integer in 1"),
    ({"media": {"video": {"fps": math.nan}}}, "fps must be a finite number"),
    ({"media": []}, "media must be an object"),
    ([], "core must be an object"),
])
def test_bad_config_is_a_codec_error(core: Any, words: str) -> None:
    with pytest.raises(CodecError, match=words):
        decode_config(core, region="gll")


def test_a_bad_region_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match="region"):
        decode_config({}, region="NOT A REGION")


# --- actions and events ---------------------------------------------------------------------------


def _run(fail: bool) -> Harness:
    h = to_stats_phase(PreflightConfig(duration=3.0, network_quality_verbosity=3))
    if fail:
        h.feed(TransportError(errors.MEDIA_CONNECTION.with_message("gone")), 1.5)
    else:
        h.advance(5.0, answer_with(h, CounterSource(loss_every=50)))
    return h


@pytest.mark.parametrize("fail", [False, True])
def test_every_action_and_event_of_a_run_encodes_to_strict_json(fail: bool) -> None:
    h = _run(fail)
    kinds_seen = set()
    for action in h.actions:
        message = action_message(action)
        assert message["type"] == "action"
        kinds_seen.add(message["action"]["kind"])
        json.dumps(message, allow_nan=False)
    for event in h.events:
        message = event_message(event)
        assert message["type"] == "event"
        kinds_seen.add(message["event"]["kind"])
        json.dumps(message, allow_nan=False)
    expected = {"acquireMedia", "connectSignaling", "openPeerConnections", "tearDown", "progress"}
    expected |= {"failed"} if fail else {"completed", "sampleStats", "sampleRecorded", "networkQualityLevelChanged"}
    assert expected <= kinds_seen


def test_terminal_events_carry_the_core_report_unchanged() -> None:
    done = _run(False).events[-1]
    assert isinstance(done, Completed)
    encoded = encode_event(done)
    # Through JSON and back: the same canonical bytes as the core writes.
    assert json.dumps(json.loads(json.dumps(encoded))["report"], sort_keys=True, indent=2) == done.report.to_json()
    failed = _run(True).events[-1]
    assert isinstance(failed, Failed)
    assert encode_event(failed) == {"kind": "failed", "error": {"code": 53405, "name": "MediaConnectionError",
                                                                "message": "gone"},
                                    "report": failed.report.to_dict()}


def test_action_shapes() -> None:
    h = Harness(PreflightConfig(duration=2.0)).start()
    h.feed(MediaAcquired(), 0.01)
    h.feed(SignalingConnected((IceServer(("turn:127.0.0.1:3478",), "u", "p"), IceServer(("stun:x",)))), 0.01)
    assert [action_message(a)["action"] for a in h.actions] == [
        {"kind": "acquireMedia", "media": {"audio": True, "video": {"width": 640, "height": 480, "fps": 30.0}}},
        {"kind": "connectSignaling", "region": "gll"},
        {"kind": "openPeerConnections", "relayOnly": True, "iceServers": [
            {"urls": ["turn:127.0.0.1:3478"], "username": "u", "credential": "p"}, {"urls": ["stun:x"]}]},
    ]


def test_non_finite_quality_stats_become_null() -> None:
    from rtcprobe.core import NetworkQualityLevelChanged

    event = NetworkQualityLevelChanged(3, {"bandwidth": {"actual": math.inf, "level": 3}, "x": [math.nan, 1.0]})
    assert encode_event(event) == {"kind": "networkQualityLevelChanged", "level": 3,
                                   "stats": {"bandwidth": {"actual": None, "level": 3}, "x": [None, 1.0]}}
