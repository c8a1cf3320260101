"""The diagnostics page (``rtcprobe serve --diagnostics``) in a real headless Chromium: a full run
from the Start button to the graded verdict, one verdict per TURN transport, the copy button, the
token handed in the URL fragment, and screenshots at phone and desktop widths (saved under
``build/artifacts/``: the copies in docs/ come from there).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_harness import browser, context, serving, token

from rtcprobe.server.coturn import CoturnServer
from rtcprobe.server.web import WebConfig

__all__ = ["browser", "context"]  # fixtures

pytestmark = pytest.mark.timeout(180)

ARTIFACTS = Path(__file__).resolve().parent.parent / "build" / "artifacts"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
GRADES = {"excellent", "good", "fair", "poor"}


class PageErrors:
    """Console errors and uncaught exceptions of a page (a CSP violation is a console error)."""

    def __init__(self, page: Any) -> None:
        self.messages: list[str] = []
        page.on("console", lambda m: self.messages.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.messages.append(f"pageerror: {e}"))


def _run(page: Any, url: str, timeout_ms: float = 90_000) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-state=idle]")
    page.click("#start")
    page.wait_for_selector("body[data-state=done]", timeout=timeout_ms)


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A UDP port that swallows everything: a TURN server behind a firewall that drops UDP."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


def test_a_full_run_reaches_its_verdict_per_transport(context: Any, coturn: CoturnServer) -> None:
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.set_viewport_size(DESKTOP)
    errors = PageErrors(page)
    web = WebConfig(diagnostics=True, diagnostics_tokens=True)
    with serving(turn_urls=(coturn.udp_url, coturn.tcp_url), turn_secret=coturn.secret, web=web) as server:
        _run(page, server.http + "#duration=5000")

        summary = page.locator("#summary")
        assert summary.get_attribute("data-grade") in GRADES
        assert summary.locator(".big").inner_text().lower() in GRADES
        cards = page.locator(".transport")
        assert cards.count() == 2
        assert [cards.nth(i).get_attribute("data-transport") for i in range(2)] == ["udp", "tcp"]
        for i in range(2):
            card = cards.nth(i)
            assert card.get_attribute("data-grade") in GRADES
            for metric in ("rtt", "jitter", "loss", "bandwidth"):
                text = card.locator(f"dd[data-metric={metric}]").inner_text()
                assert text != "not measured", (metric, text)
        assert page.locator("#recommendations li").count() >= 1
        # Four charts, one line per transport, drawn from the reports' samples.
        assert page.locator("#charts figure").count() == 4
        for d in page.locator("#charts path.line").evaluate_all("els => els.map(e => e.getAttribute('d'))"):
            assert d.startswith("M")
        assert page.locator("#charts path.line").count() == 8
        assert page.locator("#live").is_hidden()

        # The copy button: the whole run as JSON, the reports as the core built them.
        page.click("#copy")
        page.wait_for_selector("#copied:has-text('copied')")
        copied = json.loads(page.evaluate("navigator.clipboard.readText()"))
        assert [t["transport"] for t in copied["tests"]] == ["udp", "tcp"]
        assert all(t["report"]["run"]["driver"] == "browser" for t in copied["tests"])
        assert copied["verdict"] == summary.get_attribute("data-grade")

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "diagnostics-desktop.png"), full_page=True)
        page.set_viewport_size(PHONE)
        page.screenshot(path=str(ARTIFACTS / "diagnostics-phone.png"), full_page=True)
        # At phone width nothing overflows sideways.
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert errors.messages == []


def test_udp_blocked_fails_udp_and_passes_tcp(context: Any, coturn: CoturnServer, black_hole: int) -> None:
    """The case people most need told apart: UDP to the TURN server is dropped, TCP passes."""
    page = context.new_page()
    web = WebConfig(diagnostics=True)
    udp = f"turn:127.0.0.1:{black_hole}?transport=udp"
    with serving(turn_urls=(udp, coturn.tcp_url), turn_secret=coturn.secret, web=web) as server:
        _run(page, server.http + f"#token={token()}&duration=1000")
    cards = page.locator(".transport")
    assert cards.nth(0).get_attribute("data-transport") == "udp"
    assert cards.nth(0).get_attribute("data-grade") == "failed"
    assert "53405" in cards.nth(0).locator(".error").inner_text()
    assert cards.nth(1).get_attribute("data-grade") in GRADES
    assert page.locator("#summary").get_attribute("data-grade") in GRADES  # calls still work, over TCP
    assert "blocks UDP" in page.locator("#recommendations").inner_text()


def test_a_token_in_the_fragment_runs_and_leaves_the_address_bar(context: Any) -> None:
    page = context.new_page()
    errors = PageErrors(page)
    with serving(web=WebConfig(diagnostics=True)) as server:  # no TURN: one test, direct
        _run(page, server.http + f"#token={token()}&duration=1000")
        assert "token" not in page.url
        assert page.locator(".transport").get_attribute("data-transport") == "none"
        assert page.locator("#summary").get_attribute("data-grade") in GRADES
    assert errors.messages == []


def test_without_a_token_the_page_says_how_to_get_one(context: Any) -> None:
    page = context.new_page()
    with serving(web=WebConfig(diagnostics=True)) as server:
        page.goto(server.http)
        page.wait_for_selector("body[data-state=idle]")
        assert page.locator("#start").is_disabled()
        assert "test link" in page.locator("#start-note").inner_text()


def test_a_bad_token_is_a_verdict_too(context: Any) -> None:
    page = context.new_page()
    with serving(web=WebConfig(diagnostics=True)) as server:
        _run(page, server.http + f"#token={token(now=0, ttl=60)}&duration=1000")
    assert page.locator("#summary").get_attribute("data-grade") == "failed"
    assert "20104" in page.locator(".transport .error").inner_text()
    assert "fresh link" in page.locator("#recommendations").inner_text()
