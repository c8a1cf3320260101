"""The signaling server (``rtcprobe serve``, and the embedded one a preflight without ``--url`` starts).

It is media-free: it checks tokens, hands out TURN REST credentials, holds each client's socket
while the client runs both of its peer connections itself (as Twilio Video's preflight does) and
collects the report the client sends at the end; in rooms, it scores the participants of live
calls from the stats samples their clients send. Nothing here imports aiortc (a test checks it).

It is no driver: it sits in the top layer and uses what it shares with the client from the aiortc
driver (the protocol's messages, TURN URLs), never the other way round
(docs/architecture.md#the-aiortc-driver-and-the-server).

Modules, one responsibility each:

* ``app``: the aiohttp application (:class:`SignalingServer`), its limits, ``/metrics`` and shutdown;
* ``session``: one WebSocket connection walking the protocol, and the :class:`ServerStats` counters;
* ``coremode``: core mode, the client's preflight core run in the server for browsers
  (docs/signaling.md#core-mode-browsers);
* ``rooms``: rooms, the Network Quality API of live calls: every participant's level, pushed to
  everyone at the verbosity each asked for (docs/signaling.md#rooms);
* ``web``: what browsers get: ``rtcprobe.js``, the diagnostics page, page tokens, the Origin allowlist;
* ``reports``: a client's report checked against the report's schema, and the reports file;
* ``metrics``: the Prometheus metrics, one registry per server;
* ``config``: :class:`ServerConfig`, the settings checked once;
* ``tokens``: access tokens (JWT HS256), minted and verified;
* ``credentials``: TURN REST API credentials and the ICE servers handed out;
* ``coturn``: a real coturn ``turnserver`` on loopback, started and stopped from Python;
* ``embedded``: a server on loopback for one test, yielding the URL and token a driver is given.
"""

from .app import SignalingServer, run_forever
from .config import ServerConfig, is_loopback
from .session import ServerStats

__all__ = ["ServerConfig", "ServerStats", "SignalingServer", "is_loopback", "run_forever"]
