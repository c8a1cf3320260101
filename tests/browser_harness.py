"""What the browser tests share: a real headless Chromium (Playwright, Debian's ``chromium``) and a
real ``SignalingServer`` running in a thread of its own, so a test drives the browser with
Playwright's synchronous API while the server serves.

Chromium runs with the flags docs/references.md#chromium lists: no sandbox (tests may run as
root), loopback candidates allowed and not hidden behind mDNS (this machine has only loopback to
test on), no permission prompt, autoplay allowed, and nothing that talks to the network on its own
(background networking, component updates, sync, QUIC). Playwright gives every launch a fresh
profile. Where Chromium (or Playwright) is missing the tests are skipped with the install hint,
except under CI, which installs both: there a missing browser fails them.
"""

from __future__ import annotations

import asyncio
import http.server
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import running_in_ci
from rtcprobe.drivers.chromium.browser import FLAGS

from rtcprobe.server import SignalingServer
from rtcprobe.server.tokens import mint_token

SECRET = "browser-test-secret-0123456789abcdef0123456789"
CHROMIUM = "/usr/bin/chromium"
INSTALL_HINT = "chromium not installed: apt-get install chromium (and pip install playwright)"
CHROMIUM_FLAGS = list(FLAGS)  # the Chromium driver's own launch flags: one home
PROGRESS = ["mediaAcquired", "connected", "iceConnected", "dtlsConnected", "peerConnectionConnected",
            "mediaSubscribed", "mediaStarted"]


def in_step_order(names: list[str], *, complete: bool = False) -> bool:
    """``names`` are the first progress steps in Twilio's order, except that Chromium may fire
    ``connectionstatechange`` before the DTLS transport's ``statechange``: those two are reported
    in the order the browser saw them. ``complete``: all seven."""
    pair = {"dtlsConnected", "peerConnectionConnected"}
    expected = PROGRESS[: len(names)]
    return (
        (not complete or len(names) == len(PROGRESS))
        and sorted(names, key=PROGRESS.index) == expected
        and [n for n in names if n not in pair] == [n for n in expected if n not in pair]
    )


def _missing(why: str) -> None:
    if running_in_ci():
        pytest.fail(f"{why} (CI is set, so browser tests must run)", pytrace=False)
    pytest.skip(INSTALL_HINT)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium per test module. Not per session: Playwright's synchronous API keeps
    its event loop running in the main thread while the browser is open, so tests elsewhere that
    call ``asyncio.run`` can only run once it is closed (at the end of each browser module)."""
    path = shutil.which("chromium") or (CHROMIUM if shutil.which(CHROMIUM) else None)
    if path is None:
        _missing("chromium is not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A fresh browser context (its own cookies, storage, permissions) per test."""
    ctx = browser.new_context()
    yield ctx
    ctx.close()


def token(identity: str = "browser-test", *, secret: str = SECRET, now: float | None = None, **claims: Any) -> str:
    return mint_token(secret, identity, now=time.time() if now is None else now, **claims)


class ServerThread:
    """A :class:`SignalingServer` on its own event loop in a thread (``url``: its WebSocket URL,
    ``http``: its HTTP base URL)."""

    def __init__(self, **options: Any) -> None:
        self.server = SignalingServer(secret=SECRET, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="signaling-server", daemon=True)
        self._closed = False

    def start(self) -> ServerThread:
        self._thread.start()
        self.call(self.server.start())
        return self

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def http(self) -> str:
        return self.server.url.replace("ws://", "http://", 1).removesuffix("signaling")

    def close(self) -> None:
        """Shut the server down (every socket gets 1001 "going away"); idempotent."""
        if not self._closed:
            self._closed = True
            self.call(self.server.close())

    def stop(self) -> None:
        self.close()
        # What the calls left running on this loop (aiortc's TURN deletions, consent checks) ends
        # here, as asyncio.run would end it: a task still pending when the loop closes is closed by
        # the garbage collector later, in whichever test happens to be running.
        self.call(_drain(), timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


async def _drain(grace: float = 2.0) -> None:
    """Let this loop's other tasks finish for up to ``grace`` seconds, then cancel the rest."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()


@contextmanager
def serving(**options: Any) -> Iterator[ServerThread]:
    server = ServerThread(**options).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def site(directory: Path, substitutions: dict[str, str]) -> Iterator[str]:
    """Serve the files of ``directory`` over HTTP on loopback (another origin than the rtcprobe
    server: an app's own site), with each ``{{KEY}}`` replaced; yields the base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = (directory / self.path.split("?")[0].lstrip("/")).resolve()
            if path.parent != directory.resolve() or not path.is_file():
                self.send_error(404)
                return
            text = path.read_text()
            for key, value in substitutions.items():
                text = text.replace("{{" + key + "}}", value)
            body = text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8" if path.suffix == ".html"
                             else "text/javascript; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


# A page function: run one preflight with `options`, record every event with the page's clock;
# `stopAt` names the event at which to call stop() ('start': right after runPreflight).
RUN_PREFLIGHT = """
async ([token, options, stopAt]) => {
  const { runPreflight } = await import('/rtcprobe.js');
  const events = [];
  const t0 = performance.now();
  const test = runPreflight(token, options);
  let stoppedAt = null;
  const stop = () => { if (stoppedAt === null) { stoppedAt = performance.now(); test.stop(); } };
  if (stopAt === 'start') stop();
  return await new Promise((resolve) => {
    const done = (outcome) => resolve({ ...outcome, events, stoppedAt, endedAt: performance.now(), t0,
      level: test.networkQualityLevel, sameReport: test.report === outcome.report });
    test.on('progress', (name) => { events.push(['progress', name, performance.now()]); if (name === stopAt) stop(); });
    test.on('networkQualityLevelChanged', (level) => events.push(['level', level, performance.now()]));
    test.on('sampleRecorded', (i, n, level) => {
      events.push(['sample', i, n, level, performance.now()]);
      if (stopAt === 'sample') stop();
    });
    test.on('completed', (report) => { events.push(['completed', performance.now()]); done({ report }); });
    test.on('failed', (error, report) => {
      events.push(['failed', performance.now()]);
      done({ report, error: { code: error.code, name: error.name, message: error.message,
        isError: error instanceof Error } });
    });
  });
}
"""


def run_preflight(page: Any, server: ServerThread, tok: str, options: dict[str, Any] | None = None,
                  stop_at: str | None = None) -> dict[str, Any]:
    """Open a page of ``server``'s origin and run one preflight in it (RUN_PREFLIGHT's result)."""
    page.goto(server.http + "health")  # any document of the server's origin: the WebSocket's Origin
    result: dict[str, Any] = page.evaluate(RUN_PREFLIGHT, [tok, options or {}, stop_at])
    return result


__all__ = ["CHROMIUM_FLAGS", "PROGRESS", "RUN_PREFLIGHT", "SECRET", "ServerThread", "browser", "context",
           "run_preflight", "serving", "site", "token"]
