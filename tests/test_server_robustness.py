"""The server against misbehaving clients, each while a well-behaved client runs a whole session
next to it: garbage, oversized and out-of-order messages, bad reports (not JSON, too big, the wrong
shape, twice, before iced), an old (version 1) client, clients that drop at every point, idle
clients, crowds. A bad client loses its own session and nothing else: the neighbour's report is
accepted, and the server has released everything afterwards."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
from rtcprobe.drivers.aiortc.protocol import Bye, Ice, Report, encode, parse_message
from test_server_support import (
    WS,
    completed_report,
    expect_close,
    expect_error,
    good_session,
    hello,
    metric,
    metrics_text,
    raw_ws,
    read_frame,
    read_frames,
    running_server,
    token,
    wait_released,
    ws_client,
    ws_frame,
)

from rtcprobe.server import SignalingServer

pytestmark = pytest.mark.timeout(120)

KIB = 1024


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


async def beside_a_good_session(server: SignalingServer, bad: Callable[[], Awaitable[None]]) -> None:
    """Run ``bad`` while a good client holds a session (authenticated before, reporting after):
    the good one must complete, and everything is released at the end."""
    async with ws_client(server.url) as ws:
        await hello(ws, "neighbour")
        await bad()
        await ws.send_str(encode(Report(report=completed_report().to_dict())))
        assert json.loads((await ws.receive(timeout=10)).data)["type"] == "reported"
        await ws.send_str(encode(Bye()))
        assert await expect_close(ws) == 1000
    await wait_released(server)
    assert (await good_session(server.url)).close_code == 1000  # and new sessions still work


async def rejected(server: SignalingServer, reason: str) -> float:
    return metric(await metrics_text(server), "rtcprobe_reports_rejected_total", reason=reason)


# --- an old client -------------------------------------------------------------------------------


def test_a_version_1_client_gets_one_clear_error_at_once() -> None:
    async def body() -> None:
        async with running_server() as server:
            async def old_client() -> None:
                async with ws_client(server.url) as ws:
                    started = time.monotonic()
                    await ws.send_str(json.dumps({"type": "ice", "preflight": True, "token": token(),
                                                  "version": 1, "region": "gll"}))
                    code, message, close_code = await expect_error(ws)
                    assert time.monotonic() - started < 1.0  # at once, never a hang
                assert (code, close_code) == (53000, 1008)
                assert message == ("signaling protocol version 1 is not supported: this server speaks version 2 "
                                   "(the client runs both peer connections itself; upgrade the client)")
                assert server.stats.total_sessions == 1  # only the neighbour's

            await beside_a_good_session(server, old_client)

    run(body())


def test_an_offer_is_an_unknown_message() -> None:
    async def body() -> None:
        async with running_server() as server:
            async def offerer() -> None:
                async with ws_client(server.url) as ws:
                    await hello(ws)
                    await ws.send_str(json.dumps({"type": "offer", "pc": "publisher", "sdp": "v=0"}))
                    code, message, close_code = await expect_error(ws)
                assert (code, close_code) == (53000, 1008)
                assert "unknown message type 'offer'" in message and "no SDP" in message

            await beside_a_good_session(server, offerer)

    run(body())


# --- garbage -------------------------------------------------------------------------------------

GARBAGE: list[tuple[str, str | bytes, str]] = [
    # (id, frame, fragment of the error message)
    ("binary", b"\x00\x01\x02", "binary frames"),
    ("invalid-json", "{not json", "invalid JSON"),
    ("nan", '{"type": "ice", "token": "t", "version": NaN}', "invalid JSON"),
    ("array", "[]", "JSON object"),
    ("number", "42", "JSON object"),
    ("no-type", '{"token": "t"}', "'type'"),
    ("unknown-type", '{"type": "subscribe"}', "unknown message type"),
    ("wrong-field-type", '{"type": "ice", "token": ["t"], "version": 2}', "must be a string"),
    ("missing-version", '{"type": "ice", "token": "t"}', "missing the 'version'"),
    ("string-version", '{"type": "ice", "token": "t", "version": "2"}', "must be an integer"),
    ("future-version", '{"type": "ice", "token": "t", "version": 3}', "version 3 is not supported"),
    ("nul-bytes", "\x00\x00\x00", "invalid JSON"),
    ("deep-nesting", "[" * 100_000 + "]" * 100_000, "invalid JSON"),
]


@pytest.mark.parametrize(("frame", "fragment"), [g[1:] for g in GARBAGE], ids=[g[0] for g in GARBAGE])
def test_garbage_first_message(frame: str | bytes, fragment: str) -> None:
    async def body() -> None:
        async with running_server(max_message_size=256 * KIB) as server:
            async def vandal() -> None:
                async with ws_client(server.url) as ws:
                    await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
                    code, message, close_code = await expect_error(ws)
                assert (code, close_code) == (53000, 1008)
                assert fragment in message, message

            await beside_a_good_session(server, vandal)
            assert await rejected(server, "not_json") == 0  # not a report: nothing counted as one

    run(body())


def test_websocket_level_garbage() -> None:
    # Frames a library would never send: a reserved opcode, a continuation with nothing to
    # continue (protocol error, 1002), a text frame that is not UTF-8 (1007). aiohttp closes those
    # connections itself.
    async def body() -> None:
        async with running_server() as server:
            async def vandal() -> None:
                for bad, expected in ((ws_frame(b"x", opcode=0x3), 1002), (ws_frame(b"x", opcode=0x0), 1002),
                                      (ws_frame(b"\xff\xfe\xfd"), 1007)):
                    async with raw_ws(server.url) as (reader, writer):
                        writer.write(ws_frame(encode(Ice(token=token())).encode()))
                        assert (await read_frame(reader) or (0, b""))[0] == 0x1  # iced
                        writer.write(bad)
                        frames = await read_frames(reader)
                    assert frames and frames[-1][0] == 0x8  # the server closed the connection
                    assert int.from_bytes(frames[-1][1][:2], "big") == expected

            await beside_a_good_session(server, vandal)

    run(body())


# --- bad reports ---------------------------------------------------------------------------------


def test_a_report_before_iced_is_refused() -> None:
    async def body() -> None:
        async with running_server() as server:
            async def eager() -> None:
                async with ws_client(server.url) as ws:
                    await ws.send_str(encode(Report(report=completed_report().to_dict())))
                    code, message, close_code = await expect_error(ws)
                assert (code, close_code) == (53000, 1008) and "first message must be 'ice'" in message

            await beside_a_good_session(server, eager)
            assert await rejected(server, "before_iced") == 1
            assert server.stats.reports == 2  # the neighbour's and the check's

    run(body())


def test_a_second_report_is_refused_and_the_first_is_kept() -> None:
    async def body() -> None:
        async with running_server() as server:
            async def twice() -> None:
                async with ws_client(server.url) as ws:
                    await hello(ws)
                    await ws.send_str(encode(Report(report=completed_report().to_dict())))
                    assert json.loads((await ws.receive()).data) == {"type": "reported", "stored": False}
                    await ws.send_str(encode(Report(report=completed_report().to_dict())))
                    code, message, close_code = await expect_error(ws)
                assert (code, close_code) == (53000, 1008) and "one report" in message

            await beside_a_good_session(server, twice)
            assert await rejected(server, "duplicate") == 1
            assert server.stats.reports == 3  # the first of the two, the neighbour's, the check's

    run(body())


def test_a_report_that_is_not_json_is_refused() -> None:
    async def body() -> None:
        async with running_server() as server:
            async def broken() -> None:
                async with ws_client(server.url) as ws:
                    await hello(ws)
                    text = encode(Report(report=completed_report().to_dict()))
                    await ws.send_str(text[: len(text) // 2])  # cut in the middle
                    code, message, close_code = await expect_error(ws)
                assert (code, close_code) == (53000, 1008) and "invalid JSON" in message

            await beside_a_good_session(server, broken)
            assert await rejected(server, "not_json") == 1

    run(body())


BAD_SHAPES: list[tuple[str, Any, str]] = [
    # (id, the "report" value, fragment of the error message)
    ("array", [], "'report' must be an object"),
    ("string", "report", "'report' must be an object"),
    ("null", None, "'report' must be an object"),
    ("empty", {}, "missing the 'testTiming'"),
    ("timing-string", {"testTiming": "now"}, "report.testTiming must be an object"),
    ("start-missing", {"testTiming": {"end": 1}}, "missing the 'start'"),
    ("start-bool", {"testTiming": {"start": True}}, "report.testTiming.start must be a finite number"),
    ("start-infinite", {"testTiming": {"start": 1e999}}, "report.testTiming.start must be a finite number"),
    ("level-6", {"testTiming": {"start": 0}, "networkQuality": {"level": 6, "stats": None}}, "0..5"),
    ("level-float", {"testTiming": {"start": 0}, "networkQuality": {"level": 2.5}}, "must be an integer"),
    ("unknown-timer", {"testTiming": {"start": 0}, "networkTiming": {"x": {"start": 0}}}, "unknown timer"),
    ("samples-object", {"testTiming": {"start": 0}, "samples": {}}, "report.samples must be an array"),
    ("sample-missing", {"testTiming": {"start": 0}, "samples": [{"time": 1}]}, "report.samples[0] is missing"),
    ("candidate-port", {"testTiming": {"start": 0}, "iceCandidateStats": [
        {"transportId": "t", "candidateType": "host", "port": "80", "address": "a", "priority": 1,
         "protocol": "udp"}]}, "report.iceCandidateStats[0].port must be an integer"),
    ("error-code", {"testTiming": {"start": 0}, "error": {"code": "53405", "name": "n", "message": "m"}},
     "report.error.code must be an integer"),
]


@pytest.mark.parametrize(("value", "fragment"), [b[1:] for b in BAD_SHAPES], ids=[b[0] for b in BAD_SHAPES])
def test_a_report_of_the_wrong_shape_is_refused(value: Any, fragment: str) -> None:
    async def body() -> None:
        async with running_server() as server:
            async def misshapen() -> None:
                async with ws_client(server.url) as ws:
                    await hello(ws)
                    # 1e999 is valid JSON (Python's json writes it as Infinity, which is not)
                    await ws.send_str(json.dumps({"type": "report", "report": value}).replace("Infinity", "1e999"))
                    code, message, close_code = await expect_error(ws)
                assert (code, close_code) == (53000, 1008)
                assert fragment in message, message

            await beside_a_good_session(server, misshapen)
            assert await rejected(server, "invalid") == 1
            assert server.stats.reports == 2

    run(body())


def _report_frame(size: int) -> str:
    """A valid report frame of exactly ``size`` bytes (padded with an extra key)."""
    frame = encode(Report(report=completed_report().to_dict() | {"pad": ""}))
    frame = frame.replace('"pad":""', '"pad":"' + "x" * (size - len(frame)) + '"')
    assert len(frame.encode()) == size
    return frame


def test_a_report_may_be_256_kib_and_no_more() -> None:
    async def body() -> None:
        async with running_server() as server:
            async def big() -> None:
                # (far bigger ones: test_a_huge_frame_is_refused_from_its_header)
                for size, fits in ((100 * KIB, True), (256 * KIB, True), (256 * KIB + 1, False)):
                    async with ws_client(server.url, max_msg_size=0) as ws:
                        await hello(ws)
                        await ws.send_str(_report_frame(size))
                        if fits:
                            assert json.loads((await ws.receive()).data)["type"] == "reported"
                            await ws.send_str(encode(Bye()))
                            assert await expect_close(ws) == 1000
                        else:
                            code, message, close_code = await expect_error(ws)
                            assert (code, close_code) == (53000, 1009) and "too big" in message, size

            await beside_a_good_session(server, big)
            assert await rejected(server, "too_big") == 0  # aiohttp refused those from the frame header
            assert server.stats.reports == 4  # 100 KiB, 256 KiB, the neighbour's, the check's

    run(body())


def test_a_custom_report_limit_is_counted_as_too_big() -> None:
    async def body() -> None:
        async with running_server(max_report_size=100 * KIB) as server:
            async def big() -> None:
                async with ws_client(server.url) as ws:
                    await hello(ws)
                    await ws.send_str(_report_frame(100 * KIB))
                    assert json.loads((await ws.receive()).data)["type"] == "reported"
                async with ws_client(server.url) as ws:
                    await hello(ws)
                    await ws.send_str(_report_frame(100 * KIB + 1))
                    code, message, close_code = await expect_error(ws)
                    assert (code, close_code) == (53000, 1009) and "too big" in message

            await beside_a_good_session(server, big)

    run(body())


def test_only_a_report_may_exceed_64_kib() -> None:
    async def body() -> None:
        async with running_server() as server:
            async def big() -> None:
                padded_ice = json.dumps({"type": "ice", "token": token(), "version": 2, "pad": "x" * (64 * KIB)})
                async with ws_client(server.url) as ws:  # before iced: a report is not expected
                    await ws.send_str(padded_ice)
                    code, message, close_code = await expect_error(ws)
                    assert (code, close_code) == (53000, 1009) and "too big" in message
                async with ws_client(server.url) as ws:  # after iced, a big frame that is no report
                    await hello(ws)
                    await ws.send_str(json.dumps({"type": "bye", "pad": "x" * (64 * KIB)}))
                    code, message, close_code = await expect_error(ws)
                    assert (code, close_code) == (53000, 1009) and "only a report" in message
                async with ws_client(server.url) as ws:  # after the report, even a report is too big
                    await hello(ws)
                    await ws.send_str(encode(Report(report=completed_report().to_dict())))
                    await ws.receive()
                    await ws.send_str(_report_frame(100 * KIB))
                    code, message, close_code = await expect_error(ws)
                    assert (code, close_code) == (53000, 1009) and "too big" in message

            await beside_a_good_session(server, big)

    run(body())


def test_a_message_of_exactly_64_kib_is_read() -> None:
    # Exactly 64 KiB is allowed: it is read and judged on content (here: a bad token, 20101).
    async def body() -> None:
        async with running_server() as server:
            prefix = '{"type":"ice","version":2,"token":"'
            frame = prefix + "x" * (64 * KIB - len(prefix) - 2) + '"}'
            assert len(frame.encode()) == 64 * KIB
            async with ws_client(server.url) as ws:
                await ws.send_str(frame)
                code, _, close_code = await expect_error(ws)
            assert (code, close_code) == (20101, 1008)

    run(body())


def test_a_huge_frame_is_refused_from_its_header() -> None:
    # A frame announcing 1 GiB: the server answers after the header, without waiting for (or
    # buffering) the payload.
    async def body() -> None:
        async with running_server() as server:
            async def huge() -> None:
                async with raw_ws(server.url) as (reader, writer):
                    writer.write(ws_frame(encode(Ice(token=token())).encode()))
                    assert (await read_frame(reader) or (0, b""))[0] == 0x1  # iced
                    header = bytes([0x81, 0x80 | 127]) + (1 << 30).to_bytes(8, "big") + b"\x01\x02\x03\x04"
                    writer.write(header + b"{" * 1024)
                    frames = await read_frames(reader)
                assert [op for op, _ in frames] == [0x1, 0x8]
                error = parse_message(frames[0][1].decode())
                assert getattr(error, "code", None) == 53000
                assert int.from_bytes(frames[1][1][:2], "big") == 1009

            await beside_a_good_session(server, huge)

    run(body())


# --- order ---------------------------------------------------------------------------------------

OUT_OF_ORDER: list[tuple[str, bool, str, str]] = [
    # (id, authenticated first, message sent then, fragment of the error)
    ("iced-before-ice", False, '{"type":"iced","ice_servers":[],"version":2}', "first message must be 'ice'"),
    ("two-ice", True, encode(Ice(token="t")), "authenticated already"),
    ("client-sends-iced", True, '{"type":"iced","ice_servers":[],"version":2}', "unexpected 'iced'"),
    ("client-sends-reported", True, '{"type":"reported","stored":true}', "unexpected 'reported'"),
    ("client-sends-error", True, '{"type":"error","code":1,"message":"m"}', "unexpected 'error'"),
]


@pytest.mark.parametrize(("authenticated", "text", "fragment"), [o[1:] for o in OUT_OF_ORDER],
                         ids=[o[0] for o in OUT_OF_ORDER])
def test_out_of_order_messages(authenticated: bool, text: str, fragment: str) -> None:
    async def body() -> None:
        async with running_server() as server:
            async def confused() -> None:
                async with ws_client(server.url) as ws:
                    if authenticated:
                        await hello(ws)
                    await ws.send_str(text)
                    code, message, close_code = await expect_error(ws)
                assert (code, close_code) == (53000, 1008)
                assert fragment in message, message

            await beside_a_good_session(server, confused)

    run(body())


@pytest.mark.parametrize("phase", ["connected", "iced", "reported"])
def test_bye_in_every_phase_closes_cleanly(phase: str) -> None:
    async def body() -> None:
        async with running_server() as server, ws_client(server.url) as ws:
            if phase != "connected":
                await hello(ws)
            if phase == "reported":
                await ws.send_str(encode(Report(report=completed_report().to_dict())))
                await ws.receive()
            await ws.send_str(encode(Bye()))
            assert await expect_close(ws) == 1000  # no error first

    run(body())


# --- drops ---------------------------------------------------------------------------------------


async def _to(ws: WS, phase: str) -> None:
    if phase in ("iced", "reported"):
        await hello(ws)
    if phase == "reported":
        await ws.send_str(encode(Report(report=completed_report().to_dict())))
        await ws.receive()


@pytest.mark.parametrize("phase", ["connected", "iced", "reported"])
def test_a_client_that_closes_mid_test_is_released(phase: str) -> None:
    async def body() -> None:
        async with running_server() as server:
            async def quitter() -> None:
                async with ws_client(server.url) as ws:
                    await _to(ws, phase)
                    await ws.close()  # a clean WebSocket close, but no bye

            await beside_a_good_session(server, quitter)

    run(body())


@pytest.mark.parametrize("point", ["upgraded", "half-hello", "iced", "half-report"])
def test_a_client_that_vanishes_mid_test_is_released(point: str) -> None:
    # The TCP connection is reset: no close frame, maybe half a frame.
    async def body() -> None:
        async with running_server() as server:
            async def vanisher() -> None:
                async with raw_ws(server.url) as (reader, writer):
                    hello_frame = ws_frame(encode(Ice(token=token())).encode())
                    if point == "half-hello":
                        writer.write(hello_frame[: len(hello_frame) // 2])
                    elif point in ("iced", "half-report"):
                        writer.write(hello_frame)
                        assert (await read_frame(reader) or (0, b""))[0] == 0x1
                        assert server.stats.sessions == 2
                    if point == "half-report":
                        report = ws_frame(encode(Report(report=completed_report().to_dict())).encode())
                        writer.write(report[: len(report) // 2])
                    await writer.drain()
                    await asyncio.sleep(0.05)

            await beside_a_good_session(server, vanisher)

    run(body())


def test_a_silent_client_is_found_out_by_pings() -> None:
    # A client that stops answering (its network died, no FIN): the server's pings go unanswered
    # and the session is released long before the hold timeout.
    async def body() -> None:
        async with running_server(ping_interval=0.4) as server:
            async with raw_ws(server.url) as (reader, writer):
                writer.write(ws_frame(encode(Ice(token=token())).encode()))
                assert (await read_frame(reader) or (0, b""))[0] == 0x1
                assert server.stats.sessions == 1
                started = time.monotonic()
                await wait_released(server, timeout=5)  # we never answer the pings
                assert time.monotonic() - started < 3

    run(body())


# --- idle ----------------------------------------------------------------------------------------


def test_no_hello_within_the_idle_timeout_is_closed() -> None:
    async def body() -> None:
        async with running_server(idle_timeout=0.4) as server:
            async def idler() -> None:
                async with ws_client(server.url) as ws:
                    code, message, close_code = await expect_error(ws)
                assert (code, close_code) == (53000, 1008) and "idle" in message

            await beside_a_good_session(server, idler)

    run(body())


# --- crowds --------------------------------------------------------------------------------------


def test_two_hundred_clients_misbehave_while_twenty_complete() -> None:
    async def body() -> None:
        async with running_server(max_sessions=100) as server:
            outcomes: list[str] = []

            async def vandal(i: int) -> None:
                async with ws_client(server.url) as ws:
                    kind = i % 8
                    if kind == 0:
                        await ws.send_str("{garbage")
                    elif kind == 1:
                        await ws.send_str(encode(Ice(token="bad")))
                    elif kind == 2:
                        await ws.send_bytes(b"\x00" * 100)
                    elif kind == 3:
                        await ws.send_str(json.dumps({"type": "ice", "token": token(), "version": 1}))
                    elif kind == 4:
                        await hello(ws)
                        await ws.send_str('{"type": "report", "report": {"testTiming": 1}}')
                    elif kind == 5:
                        await hello(ws)
                        await ws.send_str('{"type": "report", "rep')
                    elif kind == 6:
                        await ws.send_str(encode(Report(report={})))
                    else:
                        await hello(ws)
                        return  # and go away without a word
                    code, _, close_code = await expect_error(ws)
                    outcomes.append(f"{code}/{close_code}")

            results = await asyncio.gather(*(vandal(i) for i in range(200)),
                                           *(good_session(server.url, identity=f"good{i}", hold=0.1)
                                             for i in range(20)))
            good = results[200:]
            assert all(r is not None and r.close_code == 1000 for r in good)
            assert len(outcomes) == 175 and set(outcomes) <= {"53000/1008", "20101/1008"}
            await wait_released(server)
            assert server.stats.reports == 20
            text = await metrics_text(server)
            assert metric(text, "rtcprobe_reports_rejected_total", reason="invalid") == 25
            assert metric(text, "rtcprobe_reports_rejected_total", reason="not_json") == 25
            assert metric(text, "rtcprobe_reports_rejected_total", reason="before_iced") == 25

    run(body())
