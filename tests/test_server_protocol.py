"""The signaling messages: parse_message / encode, and the errors for malformed frames."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rtcprobe.core.observations import IceServer
from rtcprobe.drivers.aiortc.protocol import (
    Answer,
    Bye,
    Error,
    Ice,
    Iced,
    Message,
    Offer,
    ProtocolError,
    encode,
    parse_message,
)

ROUND_TRIP: list[Message] = [
    Ice(token="t"),
    Ice(token="t", preflight=False, region="us1"),
    Iced(),
    Iced(ice_servers=(IceServer(urls=("turn:127.0.0.1:3478?transport=udp",), username="u", credential="p"),), ttl=60),
    Offer(pc="publisher", sdp="v=0\r\n"),
    Offer(pc="subscriber", sdp="v=0\r\n"),
    Answer(pc="publisher", sdp="v=0\r\n"),
    Bye(),
    Error(code=20101, message="bad token"),
]


@pytest.mark.parametrize("message", ROUND_TRIP, ids=lambda m: type(m).__name__)
def test_encode_parse_round_trip(message: Message) -> None:
    text = encode(message)
    assert json.loads(text)["type"] == message.TYPE
    assert parse_message(text) == message


def test_wire_shapes_match_the_protocol() -> None:
    assert json.loads(encode(Ice(token="T"))) == {
        "type": "ice", "preflight": True, "token": "T", "version": 1, "region": "gll"}
    assert json.loads(encode(Iced(ttl=3600))) == {"type": "iced", "ice_servers": [], "ttl": 3600}
    assert json.loads(encode(Error(53000, "x"))) == {"type": "error", "code": 53000, "message": "x"}


def test_optional_fields_and_extra_keys() -> None:
    # preflight and region are optional; unknown keys are ignored (forward compatibility).
    assert parse_message('{"type":"ice","token":"t","version":1,"future":1}') == Ice(token="t")
    # RTCIceServer allows a single URL string
    iced = parse_message('{"type":"iced","ice_servers":[{"urls":"turn:h"}]}')
    assert iced == Iced(ice_servers=(IceServer(urls=("turn:h",)),))


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
        ('{"type": "ice", "version": 1}', "missing the 'token'"),
        ('{"type": "ice", "token": 5, "version": 1}', "'token' must be a string"),
        ('{"type": "ice", "token": "t"}', "missing the 'version'"),
        ('{"type": "ice", "token": "t", "version": 2}', "unsupported protocol version"),
        ('{"type": "ice", "token": "t", "version": "1"}', "'version' must be an integer"),
        ('{"type": "ice", "token": "t", "version": true}', "'version' must be an integer"),
        ('{"type": "ice", "token": "t", "version": 1, "preflight": "yes"}', "'preflight' must be a boolean"),
        ('{"type": "ice", "token": "t", "version": 1, "region": ""}', "'region' must not be empty"),
        ('{"type": "offer", "pc": "publisher"}', "missing the 'sdp'"),
        ('{"type": "offer", "pc": "publisher", "sdp": ""}', "'sdp' must not be empty"),
        ('{"type": "offer", "pc": "sideways", "sdp": "v=0"}', "'publisher' or 'subscriber'"),
        ('{"type": "offer", "sdp": "v=0"}', "missing the 'pc'"),
        ('{"type": "iced", "ice_servers": {}}', "'ice_servers' must be an array"),
        ('{"type": "iced", "ice_servers": [3]}', "must be objects"),
        ('{"type": "iced", "ice_servers": [{"urls": []}]}', "non-empty strings"),
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
        st.sampled_from(["type", "token", "version", "pc", "sdp", "ice_servers", "urls", "code", "message"]),
        inner, max_size=6),
    max_leaves=12,
))
def test_any_json_parses_or_raises_protocol_error(value: Any) -> None:
    try:
        parse_message(json.dumps(value))
    except ProtocolError as exc:
        assert exc.code == 53000 and exc.message


@given(st.sampled_from(["ice", "offer", "bye", "iced", "answer", "error"]),
       st.dictionaries(st.sampled_from(["token", "version", "pc", "sdp", "ice_servers", "code", "message",
                                        "preflight", "region", "ttl"]),
                       st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=8)
                       | st.sampled_from(["publisher", "subscriber"]) | st.just([]), max_size=6))
def test_typed_messages_parse_or_raise_protocol_error(kind: str, fields: dict[str, Any]) -> None:
    try:
        message = parse_message(json.dumps({"type": kind, **fields}))
    except ProtocolError as exc:
        assert exc.code == 53000
    else:
        assert message.TYPE == kind
        assert parse_message(encode(message)) == message
