"""Twilio's documented preflight example runs against rtcprobe with only its import changed
(tests/browser/example.js), in an app's page on another origin than the rtcprobe server: loaded as
an ES module through an import map, and from a plain ``<script>`` tag (the global ``rtcprobe``).

The example runs with its defaults (a 10 s test), so both pages run side by side.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from browser_harness import browser, context, in_step_order, serving, site, token

from rtcprobe.server.coturn import CoturnServer
from rtcprobe.server.web import WebConfig

__all__ = ["browser", "context"]  # fixtures

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

PAGES = Path(__file__).parent / "browser"


def test_twilios_example_runs_with_only_the_import_changed(context: Any, coturn: CoturnServer) -> None:
    addresses: dict[str, str] = {}  # filled in once the rtcprobe server is up
    with site(PAGES, addresses) as app:
        with serving(turn_urls=(coturn.udp_url,), turn_secret=coturn.secret,
                     web=WebConfig(allow_origins=(app.rstrip("/"),))) as server:
            addresses["RTCPROBE"] = server.http  # the app's pages name the server; the example does not
            logs: dict[str, list[str]] = {}
            pages = []
            for name in ("example.html", "example-script.html"):
                page = context.new_page()
                lines: list[str] = []
                logs[name] = lines
                page.on("console", lambda m, lines=lines: lines.append(m.text))
                page.on("pageerror", lambda e, lines=lines: lines.append(f"pageerror: {e}"))
                page.goto(f"{app}{name}#token={token()}")
                pages.append(page)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not all(_done(lines) for lines in logs.values()):
                pages[0].wait_for_timeout(200)
    for name, lines in logs.items():
        seen = [m.split(": ", 1)[1] for m in lines if m.startswith("preflight progress:")]
        assert in_step_order(seen, complete=True), (name, lines)
        completed = [m for m in lines if m.startswith("Test completed in ")]
        assert completed, (name, lines)
        assert re.fullmatch(r"Test completed in \d+(\.\d+)? milliseconds\.", completed[0])
        assert re.search(r"^ It took \d+(\.\d+)? milliseconds to connect$", "\n".join(lines), re.M), lines
        assert re.search(r"^ It took \d+(\.\d+)? milliseconds to receive media$", "\n".join(lines), re.M), lines
        assert not [m for m in lines if "error" in m.lower()], lines


def _done(lines: list[str]) -> bool:
    return any("milliseconds to receive media" in m or "preflight error" in m or "pageerror" in m for m in lines)
