"""The signaling messages of protocol version 2: parse_message / encode, and the errors for
malformed frames."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rtcprobe.core.observations import IceServer
from rtcprobe.drivers.aiortc.protocol import (
    CLIENT_MESSAGES,
    PROTOCOL_VERSION,
    SERVER_MESSAGES,
    Bye,
    Error,
    Ice,
    Iced,
    Message,
    ProtocolError,
    Report,
    Reported,
    encode,
    parse_message,
    unsupported_version,
)

ROUND_TRIP: list[Message] = [
    Ice(token="t"),
    Ice(token="t", preflight=False, region="us1"),
    Iced(),
    Iced(ice_servers=(IceServer(urls=("turn:127.0.0.1:3478?transport=udp",), username="u", credential="p"),), ttl=60),
    Report(report={"testTiming": {"start": 0.0}, "samples": []}),
    Reported(stored=True),
    Reported(stored=False),
    Bye(),
    Error(code=20101, message="bad token"),
]


@pytest.mark.parametrize("message", ROUND_TRIP, ids=lambda m: type(m).__name__)
def test_encode_parse_round_trip(message: Message) -> None:
    text = encode(message)
    assert json.loads(text)["type"] == message.TYPE
    assert parse_message(text) == message


def test_wire_shapes_match_the_protocol() -> None:
    assert PROTOCOL_VERSION == 2
    assert json.loads(encode(Ice(token="T"))) == {
        "type": "ice", "preflight": True, "token": "T", "version": 2, "region": "gll"}
    assert json.loads(encode(Iced(ttl=3600))) == {"type": "iced", "ice_servers": [], "ttl": 3600, "version": 2}
    assert json.loads(encode(Report(report={"a": 1}))) == {"type": "report", "report": {"a": 1}}
    assert json.loads(encode(Reported(stored=True))) == {"type": "reported", "stored": True}
    assert json.loads(encode(Bye())) == {"type": "bye"}
    assert json.loads(encode(Error(53000, "x"))) == {"type": "error", "code": 53000, "message": "x"}
    assert {m.TYPE for m in CLIENT_MESSAGES} == {"ice", "report", "bye"}
    assert {m.TYPE for m in SERVER_MESSAGES} == {"iced", "reported", "error"}


def test_optional_fields_and_extra_keys() -> None:
    # preflight and region are optional; unknown keys are ignored (forward compatibility).
    assert parse_message('{"type":"ice","token":"t","version":2,"future":1}') == Ice(token="t")
    # RTCIceServer allows a single URL string
    iced = parse_message('{"type":"iced","ice_servers":[{"urls":"turn:h"}],"version":2}')
    assert iced == Iced(ice_servers=(IceServer(urls=("turn:h",)),))


def test_a_version_1_hello_gets_the_upgrade_message() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_message('{"type": "ice", "preflight": true, "token": "t", "version": 1, "region": "gll"}')
    assert info.value.code == 53000
    assert info.value.message == unsupported_version(1) == (
        "signaling protocol version 1 is not supported: this server speaks version 2 (the client runs both "
        "peer connections itself; upgrade the client)")


def test_a_version_1_server_is_told_apart_by_a_version_2_client() -> None:
    # A v1 server's iced had no version: the client says what it met instead of failing later.
    with pytest.raises(ProtocolError, match="server speaks signaling protocol version 1"):
        parse_message('{"type": "iced", "ice_servers": [], "ttl": 3600}')


def test_encode_refuses_what_is_not_json() -> None:
    with pytest.raises(ValueError):
        encode(Report(report={"x": float("nan")}))


@pytest.mark.parametrize(
    ("frame", "fragment"),
    [
        (b"\x00\x01", "binary"),
        ("", "invalid JSON"),
        ("{", "invalid JSON"),
        ("[1, 2]", "JSON object"),
        ('"ice"', "JSON object"),
        ("null", "JSON object"),
        ("{}", "'type'"),
        ('{"type": 3}', "'type'"),
        ('{"type": "hello"}', "unknown message type"),
        ('{"type": "ice", "version": 2}', "missing the 'token'"),
        ('{"type": "ice", "token": 5, "version": 2}', "'token' must be a string"),
        ('{"type": "ice", "token": "t"}', "missing the 'version'"),
        ('{"type": "ice", "token": "t", "version": 3}', "version 3 is not supported"),
        ('{"type": "ice", "token": "t", "version": "2"}', "'version' must be an integer"),
        ('{"type": "ice", "token": "t", "version": true}', "'version' must be an integer"),
        ('{"type": "ice", "token": "t", "version": 2, "preflight": "yes"}', "'preflight' must be a boolean"),
        ('{"type": "ice", "token": "t", "version": 2, "region": ""}', "'region' must not be empty"),
        ('{"type": "ice", "token": "t", "version": NaN}', "invalid JSON"),
        ('{"type": "ice", "token": "t", "version": -Infinity}', "invalid JSON"),
        ('{"type": "offer", "pc": "publisher", "sdp": "v=0"}', "carries no SDP"),
        ('{"type": "answer", "pc": "publisher", "sdp": "v=0"}', "unknown message type 'answer'"),
        ('{"type": "report"}', "missing the 'report'"),
        ('{"type": "report", "report": []}', "'report' must be an object"),
        ('{"type": "report", "report": null}', "'report' must be an object"),
        ('{"type": "reported"}', "missing the 'stored'"),
        ('{"type": "reported", "stored": 1}', "'stored' must be a boolean"),
        ('{"type": "iced", "ice_servers": {}, "version": 2}', "'ice_servers' must be an array"),
        ('{"type": "iced", "ice_servers": [3], "version": 2}', "must be objects"),
        ('{"type": "iced", "ice_servers": [{"urls": []}], "version": 2}', "non-empty strings"),
        ('{"type": "iced", "ice_servers": [], "version": 3}', "server speaks signaling protocol version 3"),
        ('{"type": "error", "code": "x", "message": "m"}', "'code' must be an integer"),
        ("[" * 100000 + "]" * 100000, "invalid JSON"),  # deep nesting: no RecursionError escapes
    ],
)
def test_malformed_frames_are_protocol_errors(frame: str | bytes, fragment: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_message(frame)
    assert info.value.code == 53000
    assert fragment in info.value.message


@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "token", "version", "report", "stored", "ice_servers", "urls", "code", "message"]),
        inner, max_size=6),
    max_leaves=12,
))
def test_any_json_parses_or_raises_protocol_error(value: Any) -> None:
    try:
        parse_message(json.dumps(value))
    except ProtocolError as exc:
        assert exc.code == 53000 and exc.message


@given(st.sampled_from(["ice", "report", "bye", "iced", "reported", "error"]),
       st.dictionaries(st.sampled_from(["token", "version", "report", "stored", "ice_servers", "code", "message",
                                        "preflight", "region", "ttl"]),
                       st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=8)
                       | st.just([]) | st.just({}), max_size=6))
def test_typed_messages_parse_or_raise_protocol_error(kind: str, fields: dict[str, Any]) -> None:
    try:
        message = parse_message(json.dumps({"type": kind, **fields}))
    except ProtocolError as exc:
        assert exc.code == 53000
    else:
        assert message.TYPE == kind
        assert parse_message(encode(message)) == message
