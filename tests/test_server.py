"""The media-free signaling server with real clients on 127.0.0.1: whole sessions (ice, iced, the
held socket, report, bye), tokens on the wire, TURN credentials, the reports file, /metrics,
capacity limits, shutdown. Every server is checked to release everything (its live counters back
at zero) when the test ends."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from rtcprobe.core.errors import ConfigError
from rtcprobe.core.report import PreflightReport
from rtcprobe.drivers.aiortc.protocol import Bye, Ice, Iced, Report, encode, parse_message
from test_server_support import (
    SECRET,
    completed_report,
    expect_close,
    expect_error,
    failed_report,
    good_session,
    hello,
    http_base,
    metric,
    metrics_text,
    running_server,
    token,
    wait_released,
    ws_client,
)

from rtcprobe.server import ServerConfig, SignalingServer
from rtcprobe.server.tokens import mint_token

pytestmark = pytest.mark.timeout(60)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def test_health_endpoint() -> None:
    async def body() -> None:
        async with running_server() as server, aiohttp.ClientSession() as http:
            async with http.get(http_base(server) + "/health") as resp:
                assert resp.status == 200
                assert await resp.json() == {"status": "ok"}
            async with http.get(http_base(server) + "/signaling") as resp:  # plain HTTP on the WebSocket endpoint
                assert resp.status == 400

    run(body())


def test_a_session_gets_iced_v2_is_held_reports_and_says_bye() -> None:
    async def body() -> None:
        async with running_server() as server:
            assert server.url.startswith("ws://127.0.0.1:") and server.url.endswith("/signaling")
            result = await good_session(server.url, hold=0.2)
            assert result.iced == Iced(ice_servers=(), ttl=3600, version=2)  # no TURN: no ICE server at all
            assert result.reported.stored is False  # no --reports file
            assert result.close_code == 1000
            assert server.stats.total_sessions == 1 and server.stats.reports == 1

    run(body())


def test_the_wire_format_of_iced_and_reported() -> None:
    async def body() -> None:
        async with running_server() as server, ws_client(server.url) as ws:
            await ws.send_str(json.dumps({"type": "ice", "preflight": True, "token": token(), "version": 2,
                                          "region": "gll"}))
            assert json.loads((await ws.receive()).data) == {"type": "iced", "ice_servers": [], "ttl": 3600,
                                                             "version": 2}
            await ws.send_str(json.dumps({"type": "report", "report": completed_report().to_dict()}))
            assert json.loads((await ws.receive()).data) == {"type": "reported", "stored": False}
            await ws.send_str('{"type": "bye"}')
            assert await expect_close(ws) == 1000

    run(body())


def test_a_session_may_end_without_a_report() -> None:
    async def body() -> None:
        async with running_server() as server:
            async with ws_client(server.url) as ws:
                await hello(ws)
                await ws.send_str(encode(Bye()))
                assert await expect_close(ws) == 1000
            assert server.stats.reports == 0

    run(body())


@pytest.mark.parametrize(
    ("make_token", "code"),
    [
        (lambda: "garbage", 20101),
        (lambda: token(issuer="someone-else"), 20103),
        (lambda: token(subject=""), 20103),
        (lambda: token(now=time.time() - 7200, ttl=60), 20104),
        (lambda: token(not_before=time.time() + 600), 20105),
        (lambda: token(secret="not-the-servers-secret-0123456789abcdef"), 20107),
    ],
    ids=["garbage", "wrong-issuer", "empty-sub", "expired", "nbf-future", "wrong-secret"],
)
def test_bad_tokens_get_their_code_then_service_continues(make_token: Any, code: int) -> None:
    async def body() -> None:
        async with running_server() as server:
            async with ws_client(server.url) as ws:
                await ws.send_str(encode(Ice(token=make_token())))
                got, message, close_code = await expect_error(ws)
            assert (got, close_code) == (code, 1008), message
            assert message  # says what was wrong
            assert server.stats.total_sessions == 0  # a refused token never held a slot
            assert metric(await metrics_text(server), "rtcprobe_tokens_rejected_total", code=str(code)) == 1
            assert (await good_session(server.url)).close_code == 1000

    run(body())


def test_custom_issuer_is_enforced() -> None:
    async def body() -> None:
        async with running_server(issuer="acme") as server:
            async with ws_client(server.url) as ws:
                await ws.send_str(encode(Ice(token=token())))  # issued by "rtcprobe"
                assert (await expect_error(ws))[0] == 20103
            async with ws_client(server.url) as ws:
                await ws.send_str(encode(Ice(token=token(issuer="acme"))))
                assert isinstance(parse_message((await ws.receive()).data), Iced)
                await ws.send_str(encode(Bye()))

    run(body())


def test_turn_configured_hands_out_rest_api_credentials() -> None:
    async def body() -> None:
        urls = ("turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp",
                "turns:127.0.0.1:5349?transport=tcp")
        async with running_server(turn_urls=urls, turn_secret="shared", turn_ttl=600) as server:
            async with ws_client(server.url) as ws:
                before = time.time()
                iced = await hello(ws, "carol")
                after = time.time()
                await ws.send_str(encode(Bye()))
        assert iced.ttl == 600 and iced.version == 2
        (server_entry,) = iced.ice_servers
        assert server_entry.urls == urls
        assert server_entry.username is not None and server_entry.credential is not None
        expiry, _, identity = server_entry.username.partition(":")
        assert identity == "carol"
        assert int(before) + 600 <= int(expiry) <= int(after) + 600
        expected = hmac.new(b"shared", server_entry.username.encode(), hashlib.sha1).digest()
        assert base64.b64decode(server_entry.credential) == expected

    run(body())


# --- the reports file ----------------------------------------------------------------------------


def test_reports_file_gets_one_canonical_line_per_report(tmp_path: Path) -> None:
    path = tmp_path / "reports.jsonl"
    sent = [completed_report(level=5), failed_report()]

    async def body() -> None:
        async with running_server(reports=str(path)) as server:
            assert path.exists() and path.read_bytes() == b""  # created (and checked) at start
            for identity, report in zip(("alice", "bob"), sent, strict=True):
                before = time.time()
                result = await good_session(server.url, identity=identity, report=report)
                assert result.reported.stored is True
                received_at = json.loads(path.read_text().splitlines()[-1])["receivedAt"]
                assert before * 1000 <= received_at <= time.time() * 1000

    run(body())
    raw = path.read_bytes()
    assert raw.endswith(b"\n") and raw.isascii()
    lines = raw.decode().splitlines()
    assert len(lines) == 2
    for line, identity, report in zip(lines, ("alice", "bob"), sent, strict=True):
        record = json.loads(line)
        assert sorted(record) == ["client", "identity", "receivedAt", "report"]
        assert record["identity"] == identity
        assert record["client"].startswith("127.0.0.1:")
        assert record["report"] == report.to_dict()  # as sent
        assert PreflightReport.from_dict(record["report"]) == report
        assert line == json.dumps(record, sort_keys=True, separators=(",", ":"))  # canonical


def test_reports_keep_what_the_client_sent(tmp_path: Path) -> None:
    # Keys the server does not read are kept, unicode included (escaped: the file is ASCII).
    path = tmp_path / "reports.jsonl"
    report = completed_report().to_dict() | {"app": {"build": "ünïcode \ud800 ✓"}}

    async def body() -> None:
        async with running_server(reports=str(path)) as server:
            assert (await good_session(server.url, report=report)).reported.stored

    run(body())
    assert json.loads(path.read_text())["report"] == report


def test_concurrent_sessions_write_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "reports.jsonl"
    n = 60

    async def body() -> None:
        async with running_server(reports=str(path)) as server:
            results = await asyncio.gather(*(
                good_session(server.url, identity=f"user{i}", report=completed_report(level=i % 6, samples=200),
                             hold=0.01 * (i % 7))
                for i in range(n)))
            assert all(r.reported.stored for r in results)

    run(body())
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(r["identity"] for r in records) == sorted(f"user{i}" for i in range(n))
    assert all(len(r["report"]["samples"]) == 200 for r in records)


def test_an_unwritable_reports_file_is_a_config_error_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot append to the reports file"):
        SignalingServer(secret=SECRET, reports=str(tmp_path / "no-such-dir" / "reports.jsonl"))


def test_a_reports_file_that_breaks_later_costs_only_the_storing(tmp_path: Path) -> None:
    path = tmp_path / "reports.jsonl"

    async def body() -> None:
        async with running_server(reports=str(path)) as server:
            path.unlink()
            path.mkdir()  # the operator broke it: appending now fails (EISDIR), also as root
            result = await good_session(server.url)
            assert result.reported.stored is False and result.close_code == 1000
            text = await metrics_text(server)
            assert metric(text, "rtcprobe_reports_store_failures_total") == 1
            assert metric(text, "rtcprobe_preflights_total", outcome="completed", code="") == 1
            path.rmdir()  # repaired (or rotated away): the next report is stored again
            assert (await good_session(server.url)).reported.stored is True
        assert len(path.read_text().splitlines()) == 1

    run(body())


# --- metrics -------------------------------------------------------------------------------------


def test_metrics_count_sessions_outcomes_levels_and_steps() -> None:
    async def body() -> None:
        async with running_server() as server:
            text = await metrics_text(server)
            assert metric(text, "rtcprobe_sessions_open") == 0
            assert "# TYPE rtcprobe_reports_rejected_total counter" in text
            async with ws_client(server.url) as ws:
                await hello(ws)
                text = await metrics_text(server)
                assert metric(text, "rtcprobe_sessions_open") == 1
                assert metric(text, "rtcprobe_connections_open") == 1
                await ws.send_str(encode(Bye()))
                await expect_close(ws)
            await wait_released(server)
            await good_session(server.url, report=completed_report(level=5))
            await good_session(server.url, report=completed_report(level=2))
            await good_session(server.url, report=failed_report())
            text = await metrics_text(server)

        assert metric(text, "rtcprobe_sessions_open") == 0
        assert metric(text, "rtcprobe_sessions_total") == 4
        assert metric(text, "rtcprobe_preflights_total", outcome="completed", code="") == 2
        assert metric(text, "rtcprobe_preflights_total", outcome="failed", code="53405") == 1
        assert metric(text, "rtcprobe_network_quality_level_count") == 2
        assert metric(text, "rtcprobe_network_quality_level_sum") == 7
        assert metric(text, "rtcprobe_network_quality_level_bucket", le="1.0") == 0
        assert metric(text, "rtcprobe_network_quality_level_bucket", le="2.0") == 1
        assert metric(text, "rtcprobe_network_quality_level_bucket", le="5.0") == 2
        # mediaStarted at 380 ms in the two completed reports: seconds in the histogram
        assert metric(text, "rtcprobe_step_seconds_count", step="mediaStarted") == 2
        assert metric(text, "rtcprobe_step_seconds_sum", step="mediaStarted") == pytest.approx(0.76)
        assert metric(text, "rtcprobe_step_seconds_bucket", step="mediaStarted", le="0.25") == 0
        assert metric(text, "rtcprobe_step_seconds_bucket", step="mediaStarted", le="0.5") == 2
        assert metric(text, "rtcprobe_step_seconds_count", step="connected") == 3  # the failed one too

    run(body())


def test_client_chosen_labels_are_bounded() -> None:
    # A report may name any error code and any step: neither becomes a new time series.
    report = failed_report().to_dict()
    report["error"]["code"] = 12345
    report["progressEvents"] = [{"name": f"step{i}", "duration": 1.0} for i in range(50)]

    async def body() -> None:
        async with running_server() as server:
            assert (await good_session(server.url, report=report)).reported.stored is False
            text = await metrics_text(server)
        assert metric(text, "rtcprobe_preflights_total", outcome="failed", code="other") == 1
        assert "12345" not in text and "step1" not in text

    run(body())


def test_two_servers_in_one_process_keep_their_own_metrics() -> None:
    async def body() -> None:
        async with running_server() as a, running_server() as b:
            await good_session(a.url)
            assert metric(await metrics_text(a), "rtcprobe_preflights_total", outcome="completed", code="") == 1
            assert metric(await metrics_text(b), "rtcprobe_preflights_total", outcome="completed", code="") == 0

    run(body())


# --- limits and lifecycle ------------------------------------------------------------------------


def test_max_sessions_refuses_with_server_busy() -> None:
    async def body() -> None:
        async with running_server(max_sessions=1) as server:
            async with ws_client(server.url) as first:
                await hello(first, "first")
                async with ws_client(server.url) as second:
                    await second.send_str(encode(Ice(token=token("second"))))
                    code, message, close_code = await expect_error(second)
                assert (code, close_code) == (53000, 1013) and "busy" in message
                await first.send_str(encode(Bye()))
                await first.receive()
            await wait_released(server)
            assert (await good_session(server.url)).close_code == 1000  # the slot is free again

    run(body())


def test_max_connections_refuses_extra_sockets() -> None:
    async def body() -> None:
        async with running_server(max_sessions=1, max_connections=2) as server:
            async with ws_client(server.url) as a, ws_client(server.url) as b, ws_client(server.url) as c:
                code, message, close_code = await expect_error(c)
                assert (code, close_code) == (53000, 1013) and "busy" in message
                for ws in (a, b):
                    await ws.send_str(encode(Bye()))

    run(body())


def test_close_with_live_sessions_releases_everything() -> None:
    async def body() -> None:
        server = SignalingServer(secret=SECRET)
        await server.start()
        async with ws_client(server.url) as held, ws_client(server.url) as fresh:
            await hello(held)
            assert server.stats.sessions == 1 and server.stats.connections == 2
            # The clients read while the server closes: each answers the server's close frame.
            codes = asyncio.gather(expect_close(held), expect_close(fresh))
            await server.close()
            s = server.stats
            assert s.connections == s.sessions == 0, s
            assert await codes == [1001, 1001]
        await server.close()  # idempotent

    run(body())


def test_the_hold_timeout_is_separate_from_the_idle_timeout() -> None:
    async def body() -> None:
        async with running_server(idle_timeout=0.3, hold_timeout=1.5) as server:
            async with ws_client(server.url) as ws:
                await hello(ws)
                await asyncio.sleep(0.9)  # three idle timeouts: a test in progress is not idle
                await ws.send_str(encode(Report(report=completed_report().to_dict())))
                assert (await ws.receive(timeout=5)).json()["type"] == "reported"
                started = time.monotonic()
                code, message, close_code = await expect_error(ws, timeout=5)  # now silent past the hold
                waited = time.monotonic() - started
            assert (code, close_code) == (53000, 1008) and "no message for 1.5 s" in message
            assert 1.3 < waited < 3.0

    run(body())


def test_server_config_errors_are_one_line_config_errors() -> None:
    for kwargs in ({"secret": ""}, {"secret": "s", "port": 70000}, {"secret": "s", "idle_timeout": 0},
                   {"secret": "s", "hold_timeout": float("nan")}, {"secret": "s", "ping_interval": -1},
                   {"secret": "s", "max_report_size": 2048, "max_message_size": 4096},
                   {"secret": "s", "reports": ""},
                   {"secret": "s", "turn_urls": ("turn:h",)}, {"secret": "s", "max_sessions": 0},
                   {"secret": "s", "turn_urls": ("turn:h:1:2",), "turn_secret": "t"}):
        with pytest.raises(ConfigError) as info:
            ServerConfig(**kwargs)
        assert "\n" not in str(info.value)


def test_port_in_use_is_a_config_error() -> None:
    async def body() -> None:
        async with running_server() as first:
            second = SignalingServer(secret=SECRET, port=first.port)
            with pytest.raises(ConfigError, match="cannot listen"):
                await second.start()
            assert (await good_session(first.url)).close_code == 1000  # the first server is unaffected

    run(body())


def test_mint_token_for_the_server_matches_its_issuer() -> None:
    # The token helper and the server agree on defaults: a default token opens a default server.
    async def body() -> None:
        async with running_server() as server, ws_client(server.url) as ws:
            await ws.send_str(encode(Ice(token=mint_token(SECRET, "dave", now=time.time()))))
            assert isinstance(parse_message((await ws.receive()).data), Iced)
            await ws.send_str(encode(Bye()))
            assert await expect_close(ws) == 1000

    run(body())
