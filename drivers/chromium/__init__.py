"""The Chromium driver: the preflight run by ``rtcprobe.js`` in a headless Chromium (Playwright).

``--driver chromium`` of ``rtcprobe preflight`` and ``rtcprobe run``: libwebrtc, the stack most
calls run on, against the same core (in the server, "core mode") as every other client. Needs
Chromium and Playwright for Python (:data:`~.browser.INSTALL_HINT`); this package imports
Playwright only when a test starts.
"""

from .browser import EXECUTABLE_ENV, FLAGS, INSTALL_HINT, ChromiumUnavailable, check_available, find_chromium
from .driver import ChromiumDriver

__all__ = ["EXECUTABLE_ENV", "FLAGS", "INSTALL_HINT", "ChromiumDriver", "ChromiumUnavailable", "check_available",
           "find_chromium"]
