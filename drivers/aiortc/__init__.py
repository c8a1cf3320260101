"""The real WebRTC driver: one preflight over aiortc peer connections and WebSocket signaling.

:class:`AiortcDriver` runs the core against a signaling server it is given (a URL and a token);
the server hands out the ICE servers. What the client and the server share sits here too, since a
driver never imports the server (docs/architecture.md#layers): the protocol's messages
(``protocol``), TURN URLs and the TURN diagnosis (``turn_client``), loopback-only ICE
(``loopback``) and the bounded close of a peer connection (``teardown``).

The public handle (``rtcprobe.run_preflight`` / ``preflight`` / ``PreflightTest``), which may start
the embedded server, is :mod:`rtcprobe.live`; the server is :mod:`rtcprobe.server`. Importing this
package pulls in aiortc; ``import rtcprobe`` alone does not.
"""

from .driver import AiortcDriver, signaling_url

__all__ = ["AiortcDriver", "signaling_url"]
