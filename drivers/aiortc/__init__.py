"""The real WebRTC driver: one preflight over aiortc peer connections and WebSocket signaling.

:class:`AiortcDriver` runs the core against a signaling server it is given (a URL and a token);
the server hands out the ICE servers. What the client and the server share sits here too, since a
driver never imports the server (docs/architecture.md#layers): the protocol's messages
(``protocol``) and TURN URLs (``turn_client``).

The public handle (``rtcprobe.run_preflight`` / ``preflight`` / ``PreflightTest``), which may start
the embedded server, is :mod:`rtcprobe.live`; the server is :mod:`rtcprobe.server`. The driver is
imported lazily: the media-free server imports ``protocol`` from this package without loading aiortc.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .driver import AiortcDriver, signaling_url

_LAZY = {"AiortcDriver": ".driver", "signaling_url": ".driver"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module, __name__), name)


__all__ = ["AiortcDriver", "signaling_url"]
