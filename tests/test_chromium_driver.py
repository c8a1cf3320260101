"""The Chromium driver's parts that need no browser: the server's events decoded back into the
core's, the page it opens and the options it gives rtcprobe.js, and bad input — Chromium or
Playwright missing, options the browser cannot honour — refused before anything starts, with
what to install.

The driver in a real headless Chromium: tests/test_chromium_driver_live.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import pytest
from rtcprobe.core import errors
from rtcprobe.core.codec import encode_event, event_message
from rtcprobe.core.config import MediaDemand, PreflightConfig, VideoSpec
from rtcprobe.core.errors import ConfigError
from rtcprobe.core.observations import (
    Completed,
    Event,
    Failed,
    IceServer,
    NetworkQualityLevelChanged,
    Progress,
    SampleRecorded,
)
from rtcprobe.drivers.chromium import EXECUTABLE_ENV, ChromiumUnavailable, check_available
from rtcprobe.drivers.chromium.driver import page_options, page_url, servers_over
from rtcprobe.drivers.chromium.events import EventError, decode_event
from rtcprobe.drivers.sim import simulate

from rtcprobe.live import run_preflight
from rtcprobe.replay import run_replay

NO_CHROMIUM = {**os.environ, EXECUTABLE_ENV: "rtcprobe-no-such-chromium"}


def rtcprobe(*args: str, env: dict[str, str] | None = None, prelude: str = "") -> subprocess.CompletedProcess[str]:
    code = f"{prelude}\nimport sys\nfrom rtcprobe.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, env=env)


# --- the server's events, decoded ---------------------------------------------------------------


def _wire(event: Event) -> Any:
    """The event object as it reaches the page: the server's frame, JSON-encoded and parsed."""
    return json.loads(json.dumps(event_message(event), separators=(",", ":"), allow_nan=False))["event"]


def _events() -> list[Event]:
    completed = simulate("lossy-wifi")
    failed = simulate("long-outage")
    assert completed.ok and failed.error is not None
    return [
        Progress("mediaAcquired", 12.5),
        Progress("mediaStarted", 301.0),
        SampleRecorded(3, 10, 4),
        SampleRecorded(1, 10, None),
        NetworkQualityLevelChanged(3, {"level": 3, "audio": {"send": 4, "recv": 3}}),
        Completed(completed),
        Failed(failed.error, failed),
    ]


@pytest.mark.parametrize("event", _events(), ids=lambda e: type(e).__name__)
def test_each_server_event_decodes_to_the_core_event_it_encodes(event: Event) -> None:
    decoded = decode_event(_wire(event))
    if isinstance(event, Completed | Failed):
        assert type(decoded) is type(event)
        assert isinstance(decoded, Completed | Failed)
        if isinstance(event, Failed):
            assert isinstance(decoded, Failed) and decoded.error == event.error
        # The report is the one the core built: what it sends, and its canonical JSON, byte for
        # byte (the objects may differ below the precision the report is rounded to).
        assert decoded.report.to_dict() == encode_event(event)["report"]
        assert decoded.report.to_json() == event.report.to_json()
    else:
        assert decoded == event


@pytest.mark.parametrize("bad", [
    None, [], {}, {"kind": "nope"},
    {"kind": "progress", "name": "warpDrive", "duration": 1.0},
    {"kind": "progress", "name": "connected", "duration": "1"},
    {"kind": "progress", "name": "connected", "duration": True},
    {"kind": "sampleRecorded", "index": 1.5, "total": 10, "level": 3},
    {"kind": "networkQualityLevelChanged", "level": 3, "stats": []},
    {"kind": "completed", "report": {}},
    {"kind": "completed"},
    {"kind": "failed", "error": {"code": "53000", "name": "x", "message": "y"}, "report": {}},
])
def test_a_malformed_event_is_an_event_error(bad: Any) -> None:
    with pytest.raises(EventError):
        decode_event(bad)


# --- the page and its options --------------------------------------------------------------------


@pytest.mark.parametrize(("url", "page"), [
    ("ws://127.0.0.1:8765/signaling", "http://127.0.0.1:8765/health"),
    ("wss://probe.example.com/signaling", "https://probe.example.com/health"),
    ("wss://example.com/probe/signaling", "https://example.com/probe/health"),
    ("ws://[::1]:9/signaling", "http://[::1]:9/health"),
])
def test_the_page_is_a_document_of_the_signaling_servers_own_origin(url: str, page: str) -> None:
    assert page_url(url) == page


@pytest.mark.parametrize("url", ["ftp://x/signaling", "signaling", "ws:///signaling"])
def test_a_url_that_is_no_signaling_server_is_refused(url: str) -> None:
    with pytest.raises(ConfigError):
        page_url(url)


def test_the_page_gets_the_configs_options_in_rtcprobe_js_units() -> None:
    config = PreflightConfig(duration=2.5, region="de1", media=MediaDemand(video=VideoSpec(320, 240, 15)),
                             network_quality_verbosity=3)
    assert page_options(config, "ws://h/signaling", "tcp", True) == {
        "url": "ws://h/signaling", "duration": 2500.0, "region": "de1", "transport": "tcp", "audio": True,
        "video": {"width": 320, "height": 240, "fps": 15.0}, "networkQualityVerbosity": 3,
        "receiverRelayOnly": True,
    }
    audio_only = PreflightConfig(media=MediaDemand(video=None))
    assert page_options(audio_only, "ws://h/signaling", None, False)["video"] is False


def test_the_servers_used_over_a_transport_are_rtcprobe_js_ones() -> None:
    servers = (IceServer(("stun:s:3478", "turn:t:3478?transport=udp", "turn:t:3478?transport=tcp"), "u", "c"),
               IceServer(("turns:t:443",), "u", "c"))
    assert servers_over(servers, None) == servers
    assert servers_over(servers, "tcp") == (IceServer(("turn:t:3478?transport=tcp",), "u", "c"),)
    assert servers_over(servers, "tls") == (IceServer(("turns:t:443",), "u", "c"),)


# --- what cannot run says so, before anything starts ------------------------------------------


def test_without_chromium_the_driver_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EXECUTABLE_ENV, "rtcprobe-no-such-chromium")
    with pytest.raises(ChromiumUnavailable, match="apt-get install chromium") as info:
        check_available()
    assert isinstance(info.value, ConfigError)  # bad input: the CLI's exit 2
    with pytest.raises(ChromiumUnavailable):
        run_replay("clean-broadband", driver="chromium")


@pytest.mark.parametrize("command", [("preflight", "--driver", "chromium"),
                                     ("run", "clean-broadband", "--driver", "chromium")])
def test_the_cli_without_chromium_exits_2_with_the_install_hint(command: tuple[str, ...]) -> None:
    r = rtcprobe(*command, env=NO_CHROMIUM)
    assert r.returncode == 2, r.stderr
    assert "apt-get install chromium" in r.stderr and "pip install playwright" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_cli_without_playwright_exits_2_with_the_install_hint() -> None:
    # A None entry in sys.modules is how Python says a module cannot be imported.
    r = rtcprobe("preflight", "--driver", "chromium", prelude="import sys; sys.modules['playwright'] = None")
    assert r.returncode == 2, r.stderr
    assert "playwright is not installed" in r.stderr and "pip install playwright" in r.stderr


@pytest.mark.parametrize(("options", "message"), [
    ({"relay_only": False}, "relay-only"),
    ({"turn_ca": "ca.pem", "turn_urls": ["turns:127.0.0.1:5349"], "turn_secret": "s"}, "--turn-ca"),
    ({"transport": "tls"}, "TLS on the embedded coturn"),
    ({"driver": "firefox"}, "driver must be one of"),
])
def test_options_the_browser_cannot_honour_are_refused_at_once(options: dict[str, Any], message: str) -> None:
    options = {"driver": "chromium", **options}

    async def start() -> None:
        run_preflight(**options)

    with pytest.raises(ConfigError, match=message):
        asyncio.run(start())


def test_an_unknown_replay_driver_is_refused() -> None:
    with pytest.raises(ConfigError, match="driver"):
        run_replay("clean-broadband", driver="firefox")


def test_errors_table_is_what_the_driver_fails_with_when_chromium_hangs() -> None:
    # The driver's own failures use the core's table (what a report's error may say).
    assert errors.error_for_code(errors.SIGNALING_DISCONNECTED.code) == errors.SIGNALING_DISCONNECTED
