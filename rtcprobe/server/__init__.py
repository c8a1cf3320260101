"""The signaling server (``rtcprobe serve``, and the embedded one a preflight without ``--url`` starts).

It is no driver: it sits in the top layer and uses what it shares with the client from the aiortc
driver (the protocol's messages, TURN URLs, loopback-only ICE, the bounded close of a peer
connection), never the other way round (docs/architecture.md#the-aiortc-driver-and-the-server).

Modules, one responsibility each:

* ``app``: the aiohttp application (:class:`SignalingServer`), its limits and shutdown;
* ``session``: one WebSocket connection walking the protocol, with its server-side aiortc peers,
  and the :class:`ServerStats` counters;
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
