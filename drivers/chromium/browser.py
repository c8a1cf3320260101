"""Finding and launching Chromium for the driver: headless, a fresh profile, off the network.

The flags are those docs/references.md#chromium lists: no sandbox (the driver may run as root),
loopback candidates allowed and not hidden behind mDNS names (a test on loopback has nothing
else), no permission prompt, autoplay without a gesture, and nothing that talks to the network on
its own (background networking, component updates, sync, QUIC). Every launch gets a profile of
its own in a temporary directory, removed afterwards.

Playwright (its Python package carries its own node driver) launches the system's Chromium; it
never downloads a browser. Both are optional at install time: only ``--driver chromium`` needs
them, and asking for it without them is a :class:`ChromiumUnavailable` (bad input, exit 2) that
says what to install.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final

from rtcprobe.core.errors import ConfigError

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext

#: Names the executable: a path, or a name looked up on PATH (else ``chromium``).
EXECUTABLE_ENV: Final = "RTCPROBE_CHROMIUM"
CANDIDATES: Final = ("chromium", "chromium-browser")
FLAGS: Final = (
    "--no-sandbox",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)
INSTALL_HINT: Final = ("--driver chromium needs Chromium and Playwright for Python: apt-get install chromium; "
                       "pip install playwright (or pip install 'rtcprobe[browser]'); no 'playwright install' needed")


class ChromiumUnavailable(ConfigError):
    """Chromium or Playwright is not installed (or ``RTCPROBE_CHROMIUM`` names nothing runnable)."""


def find_chromium() -> str:
    """The Chromium executable to launch; ChromiumUnavailable (with the install hint) if none."""
    wanted = os.environ.get(EXECUTABLE_ENV)
    for name in (wanted,) if wanted else CANDIDATES:
        path = shutil.which(name)
        if path is not None:
            return path
    what = f"{EXECUTABLE_ENV}={wanted!r} is not an executable" if wanted else "chromium is not installed"
    raise ChromiumUnavailable(f"{what}: {INSTALL_HINT}")


def check_available() -> str:
    """Chromium's path, once both it and Playwright are found; ChromiumUnavailable otherwise."""
    if importlib.util.find_spec("playwright") is None:
        raise ChromiumUnavailable(f"playwright is not installed: {INSTALL_HINT}")
    return find_chromium()


@contextlib.asynccontextmanager
async def launch(executable: str | None = None) -> AsyncIterator[BrowserContext]:
    """A headless Chromium with :data:`FLAGS` and a fresh profile, closed (and its profile
    removed) when the block exits. Playwright's async API: it runs on the caller's loop."""
    path = executable if executable is not None else check_available()
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory(prefix="rtcprobe-chromium-") as profile:
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                profile, executable_path=path, args=list(FLAGS), headless=True,
            )
            try:
                yield context
            finally:
                await context.close()


__all__ = ["CANDIDATES", "EXECUTABLE_ENV", "FLAGS", "INSTALL_HINT", "ChromiumUnavailable", "check_available",
           "find_chromium", "launch"]
