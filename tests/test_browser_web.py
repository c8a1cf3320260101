"""What ``rtcprobe serve`` gives browsers, over plain HTTP (rtcprobe/server/web.py): content types
and security headers, the page only with --diagnostics, page tokens (rate-limited, POST only), the
Origin allowlist refusing before the upgrade, the token never logged, and the serve options.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Coroutine
from typing import Any

import aiohttp
import pytest
from browser_harness import SECRET, token
from rtcprobe.core.errors import ConfigError

from rtcprobe.server import SignalingServer
from rtcprobe.server.tokens import verify_token
from rtcprobe.server.web import LIBRARY, PAGE, OriginPolicy, TokenBuckets, WebConfig, normalize_origin

pytestmark = pytest.mark.timeout(60)

UPGRADE = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def base(server: SignalingServer) -> str:
    return server.url.replace("ws://", "http://").removesuffix("signaling")


# --- pure parts ---------------------------------------------------------------------------------


def test_origins_are_normalized_and_checked() -> None:
    assert normalize_origin("HTTPS://App.Example.com:443") == "https://app.example.com"
    assert normalize_origin("http://127.0.0.1:8765/") == "http://127.0.0.1:8765"
    assert normalize_origin("http://[::1]:80") == "http://[::1]"
    assert normalize_origin("*") == "*"
    for bad in ("ftp://x", "app.example.com", "https://x/path", "https://x?q=1", "https://u@x", "http://x:99999"):
        with pytest.raises(ConfigError):
            normalize_origin(bad)
    assert WebConfig(allow_origins=["https://A.example"]).allow_origins == ("https://a.example",)
    with pytest.raises(ConfigError):
        WebConfig(allow_origins=["nope"])
    with pytest.raises(ConfigError):
        WebConfig(token_refill=0)
    assert WebConfig(diagnostics_tokens=True).page  # tokens for the page imply the page


def test_the_default_origin_rule_is_the_servers_own_origin() -> None:
    own = OriginPolicy((), loopback_server=True)
    assert own.allows(None, "127.0.0.1:8765")  # not a page: curl, the Python client
    assert own.allows("http://127.0.0.1:8765", "127.0.0.1:8765")
    assert own.allows("http://localhost:8765", "localhost:8765")
    assert not own.allows("http://127.0.0.1:8766", "127.0.0.1:8765")  # another port is another origin
    assert not own.allows("https://evil.example", "127.0.0.1:8765")
    assert not own.allows("null", "127.0.0.1:8765")
    # DNS rebinding: a page of evil.example whose name now points at 127.0.0.1.
    assert not own.allows("http://evil.example:8765", "evil.example:8765")
    public = OriginPolicy((), loopback_server=False)
    assert public.allows("https://probe.example.com", "probe.example.com")  # TLS ended by a proxy
    assert public.allows("http://probe.example.com", "probe.example.com:80")
    assert not public.allows("https://probe.example.com", "probe.example.com:8443")
    assert not public.allows("https://probe.example.com", None)
    listed = OriginPolicy(("https://app.example.com",), loopback_server=True)
    assert listed.allows("https://APP.example.com:443", "127.0.0.1:8765")
    assert not listed.allows("http://127.0.0.1:8765", "127.0.0.1:8765")  # the list replaces the default
    assert OriginPolicy(("*",), loopback_server=True).allows("https://anyone.example", "x")


def test_token_buckets_allow_a_burst_then_one_per_refill() -> None:
    now = [0.0]
    buckets = TokenBuckets(3, 10.0, limit=2, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(10.0)
    assert buckets.take("b") == 0.0  # per address
    now[0] = 10.0
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0
    buckets.take("c")  # a third address: the least recently seen ("b") is forgotten
    now[0] = 10.0
    assert [buckets.take("b") for _ in range(3)] == [0.0, 0.0, 0.0]


# --- over HTTP ----------------------------------------------------------------------------------


def test_rtcprobe_js_is_always_served_the_page_only_with_diagnostics() -> None:
    async def body() -> None:
        async with SignalingServer(secret=SECRET) as server, aiohttp.ClientSession() as s:
            for name in LIBRARY:
                async with s.get(base(server) + name) as r:
                    assert r.status == 200
                    assert r.headers["Content-Type"] == "text/javascript; charset=utf-8"
                    assert r.headers["X-Content-Type-Options"] == "nosniff"
                    assert r.headers["Access-Control-Allow-Origin"] == "*"  # importable by other sites
            for path in ("", "diagnostics.js", "diagnostics.json", "token"):
                async with s.get(base(server) + path) as r:
                    assert r.status == 404, path

    run(body())


def test_the_page_is_served_with_its_content_types_and_security_headers() -> None:
    async def body() -> None:
        web = WebConfig(diagnostics=True)
        async with SignalingServer(secret=SECRET, web=web) as server, aiohttp.ClientSession() as s:
            async with s.get(base(server)) as r:
                assert r.status == 200
                assert r.headers["Content-Type"] == "text/html; charset=utf-8"
                csp = r.headers["Content-Security-Policy"]
                assert "script-src 'self'" in csp and "unsafe-inline" not in csp
                assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
                assert r.headers["X-Content-Type-Options"] == "nosniff"
                assert r.headers["Referrer-Policy"] == "no-referrer"
                html = await r.text()
                assert "<script>" not in html  # no inline script for the CSP to forbid
            for name in PAGE[1:]:
                async with s.get(base(server) + name) as r:
                    assert r.status == 200
                    kind = "text/css" if name.endswith(".css") else "text/javascript"
                    assert r.headers["Content-Type"] == f"{kind}; charset=utf-8"
                    assert r.headers["X-Content-Type-Options"] == "nosniff"
                    assert "Access-Control-Allow-Origin" not in r.headers  # the page's own files
            async with s.get(base(server) + "diagnostics.json") as r:
                config = await r.json()
                assert r.headers["Content-Type"] == "application/json; charset=utf-8"
                assert (config["transports"], config["tokens"]) == ([], False)
            async with s.get(base(server) + "health") as r:
                assert r.headers["X-Content-Type-Options"] == "nosniff"

    run(body())


def test_the_page_learns_the_transports_to_test() -> None:
    async def body() -> None:
        urls = ("turn:127.0.0.1:3478?transport=tcp", "turns:127.0.0.1:5349", "turn:127.0.0.1:3478")
        async with SignalingServer(secret=SECRET, turn_urls=urls, turn_secret="t",
                                   web=WebConfig(diagnostics_tokens=True)) as server, aiohttp.ClientSession() as s:
            async with s.get(base(server) + "diagnostics.json") as r:
                got = await r.json()
        assert got["transports"] == ["udp", "tcp", "tls"]
        assert got["tokens"] is True

    run(body())


def test_page_tokens_are_minted_on_post_only_and_rate_limited() -> None:
    async def body() -> None:
        web = WebConfig(diagnostics_tokens=True, token_burst=2, token_refill=60.0, token_ttl=120)
        async with SignalingServer(secret=SECRET, web=web) as server, aiohttp.ClientSession() as s:
            url = base(server) + "token"
            async with s.get(url) as r:
                assert r.status == 405
            minted = []
            for _ in range(2):
                async with s.post(url) as r:
                    assert r.status == 200
                    assert r.headers["Cache-Control"] == "no-store"
                    minted.append(await r.json())
            async with s.post(url) as r:
                assert r.status == 429
                assert 0 < int(r.headers["Retry-After"]) <= 60
            async with s.post(url, headers={"Origin": "https://evil.example"}) as r:
                assert r.status == 403  # another site's page cannot have tokens minted for it
        for m in minted:
            claims = verify_token(m["token"], SECRET, now=time.time())
            assert claims.identity.startswith("diagnostics-")
            assert claims.expires <= time.time() + 120
            assert m["ttl"] == 120
        assert minted[0]["token"] != minted[1]["token"]

    run(body())


def test_a_disallowed_origin_is_refused_before_the_upgrade() -> None:
    async def body() -> None:
        async with SignalingServer(secret=SECRET) as server, aiohttp.ClientSession() as s:
            host = base(server).removeprefix("http://").rstrip("/")
            own = f"http://{host}"
            cases = [({"Origin": "https://evil.example"}, 403), ({"Origin": own}, 101), ({}, 101),
                     ({"Origin": "http://evil.example:1", "Host": "evil.example:1"}, 403)]
            for extra, status in cases:
                async with s.get(server.url.replace("ws://", "http://"), headers={**UPGRADE, **extra}) as r:
                    assert r.status == status, extra
                    if status == 403:
                        assert "origin not allowed" in await r.text()
            # The Python client sends no Origin: a whole session works.
            async with s.ws_connect(server.url) as ws:
                await ws.send_json({"type": "ice", "token": token(), "version": 2})
                assert (await ws.receive_json())["type"] == "iced"
                await ws.send_json({"type": "bye"})

    run(body())


def test_an_allowed_origin_list_replaces_the_default() -> None:
    async def body() -> None:
        web = WebConfig(allow_origins=("https://app.example.com",))
        async with SignalingServer(secret=SECRET, web=web) as server, aiohttp.ClientSession() as s:
            own = "http://" + base(server).removeprefix("http://").rstrip("/")
            for origin, status in (("https://app.example.com", 101), (own, 403), ("https://other.example", 403)):
                async with s.get(server.url.replace("ws://", "http://"), headers={**UPGRADE, "Origin": origin}) as r:
                    assert r.status == status, origin

    run(body())


def test_no_token_ever_reaches_the_log(caplog: pytest.LogCaptureFixture) -> None:
    """Sessions that succeed, fail on a bad token, run in core mode, and page tokens minted: the
    log says what happened, never with a token in it."""
    caplog.set_level(logging.DEBUG)
    tokens: list[str] = []

    async def body() -> None:
        web = WebConfig(diagnostics_tokens=True)
        async with SignalingServer(secret=SECRET, web=web) as server, aiohttp.ClientSession() as s:
            async with s.post(base(server) + "token") as r:
                tokens.append((await r.json())["token"])
            good, expired = token("logged?"), token(now=0, ttl=60)
            tokens.extend([good, expired, "garbage.token.value"])
            for t, core in ((good, False), (expired, False), (tokens[0], True), (expired, True),
                            ("garbage.token.value", True)):
                hello: dict[str, Any] = {"type": "ice", "token": t, "version": 2}
                if core:
                    hello.update(now=10.0, core={"start": 5.0, "duration": 1000})
                async with s.ws_connect(server.url) as ws:
                    await ws.send_json(hello)
                    await ws.receive()
                    await ws.send_json({"type": "bye"})
                    await ws.receive()

    run(body())
    assert caplog.records, "the server logs its sessions"
    text = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    for t in tokens:
        assert t not in text
        assert t.split(".")[-1] not in text  # not even the signature


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rtcprobe", "serve", "--port", "0", *args],
                          capture_output=True, text=True, timeout=30)


def test_serve_refuses_a_bad_origin_in_one_line() -> None:
    r = _serve("--allow-origin", "app.example.com")
    assert r.returncode == 2
    assert "origin" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_serve_prints_the_page_address() -> None:
    with subprocess.Popen([sys.executable, "-m", "rtcprobe", "serve", "--port", "0", "--diagnostics"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            info = {}
            for line in proc.stdout:
                if line.startswith("Ctrl-C"):
                    break
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()

            async def fetch() -> None:
                page = info["page"]
                assert page.startswith("http://127.0.0.1:") and "#token=" in page  # the generated token
                async with aiohttp.ClientSession() as s, s.get(page.split("#")[0]) as r:
                    assert r.status == 200 and "Network test" in await r.text()

            run(fetch())
        finally:
            proc.terminate()
            proc.wait(10)
