"""The real WebRTC driver (aiortc) and the signaling server.

``run_preflight`` / ``preflight`` / ``PreflightTest`` are the public preflight API, re-exported by
``rtcprobe``. Importing this package pulls in aiortc; ``import rtcprobe`` alone does not.
"""

from .client import PreflightTest, preflight, run_preflight

__all__ = ["PreflightTest", "preflight", "run_preflight"]
