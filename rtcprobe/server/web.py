"""What ``rtcprobe serve`` gives browsers (docs/browser.md): ``rtcprobe.js``, the diagnostics page,
test tokens for that page, and the ``Origin`` allowlist of the signaling WebSocket.

* ``GET /rtcprobe.js`` (and the modules it imports, and ``/rtcprobe.global.js`` for a plain
  ``<script>`` tag), always: static ES modules, ``text/javascript; charset=utf-8``, readable from
  any origin (``Access-Control-Allow-Origin: *``: a module imported by another site's page is
  fetched with CORS; the code is public).
* ``GET /`` with ``--diagnostics``: the diagnostics page and its files, under a Content Security
  Policy that allows no inline script and no other origin (``script-src 'self'``);
  ``GET /diagnostics.json`` tells the page which TURN transports to test and whether it may ask
  for a token.
* ``POST /token`` with ``--diagnostics-tokens``: a short-lived access token for the page, at
  most :attr:`WebConfig.token_burst` at once per client address, refilled one per
  :attr:`WebConfig.token_refill` seconds (429 past that). Other methods get 405.
* Every response carries ``X-Content-Type-Options: nosniff``.

The Origin check (a middleware, so a refused WebSocket gets its 403 before any upgrade): a request
to a protected path (the signaling WebSocket, ``/token``) that carries an ``Origin`` header must
come from an allowed origin. By default that is the server's own origin, i.e. the origin whose
host and port are those of the request's ``Host`` header; a server listening on loopback further
requires that ``Host`` name loopback (``localhost``, ``127.0.0.0/8``, ``::1``), so a page whose DNS
name was rebound to 127.0.0.1 is refused. ``--allow-origin ORIGIN`` (repeatable) replaces that
rule with an explicit list (``*`` allows every origin). A request without ``Origin`` is not from a
browser page (the Python client, curl) and is let through: the token is what authenticates.

Nothing here logs a token: the page receives it in the URL fragment, which never reaches a
server, and ``/token`` logs only that it minted one, for which address.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from importlib import resources
from typing import Final
from urllib.parse import urlsplit

import attrs
from aiohttp import web

from rtcprobe.core._version import __version__
from rtcprobe.core.errors import ConfigError
from rtcprobe.drivers.aiortc.turn_client import TurnUrl

from .tokens import mint_token

log = logging.getLogger("rtcprobe.server")

JS: Final = "text/javascript"
#: Served always: rtcprobe.js and the modules it imports, and the <script>-tag wrapper.
LIBRARY: Final = ("rtcprobe.js", "rtcprobe.global.js", "stats.js", "ice.js", "emitter.js", "rooms.js", "room-stats.js")
#: Served with --diagnostics: the page's own files (``index.html`` at ``/``).
PAGE: Final = ("index.html", "diagnostics.js", "diagnostics.css", "verdict.js", "charts.js")
CONTENT_TYPES: Final = {".js": JS, ".css": "text/css", ".html": "text/html"}
PAGE_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
TOKEN_PATH: Final = "/token"
CONFIG_PATH: Final = "/diagnostics.json"
TOKEN_IDENTITY_PREFIX: Final = "diagnostics-"
MAX_BUCKETS: Final = 10_000  # client addresses remembered by the token rate limit (oldest dropped)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def normalize_origin(origin: str) -> str:
    """``scheme://host[:port]`` in canonical form (lower case, default port dropped); ConfigError
    for anything that is not a web origin. ``*`` stays ``*``."""
    if origin == "*":
        return origin
    parts = urlsplit(origin.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"an origin is http(s)://HOST[:PORT], got {origin!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(f"an origin has no path, query or user: {origin!r}")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"bad port in origin {origin!r}") from None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    default = 443 if parts.scheme == "https" else 80
    return f"{parts.scheme}://{host}" + ("" if port in (None, default) else f":{port}")


def _split_host(hostport: str, default_port: int) -> tuple[str, int] | None:
    """(host, port) of a ``Host`` header value, or None when it is malformed."""
    try:
        parts = urlsplit(f"//{hostport.strip()}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    return host.lower(), default_port if port is None else port


def _loopback_name(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origins(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(normalize_origin(o) for o in values)


@attrs.frozen
class WebConfig:
    """The browser-facing options of ``rtcprobe serve``; ConfigError for a bad one."""

    diagnostics: bool = False  # serve the diagnostics page at /
    diagnostics_tokens: bool = False  # POST /token mints tokens for the page (implies the page)
    allow_origins: tuple[str, ...] = attrs.field(default=(), converter=_origins)
    token_ttl: int = 900  # s a minted page token stays valid (a page runs up to three tests)
    token_burst: int = 5  # tokens a client address may take at once
    token_refill: float = 12.0  # s for one more

    def __attrs_post_init__(self) -> None:
        if self.token_ttl <= 0 or self.token_burst < 1:
            raise ConfigError("token_ttl and token_burst must be positive")
        if not math.isfinite(self.token_refill) or self.token_refill <= 0:
            raise ConfigError("token_refill must be a positive number of seconds")

    @property
    def page(self) -> bool:
        return self.diagnostics or self.diagnostics_tokens


class OriginPolicy:
    """Which browser origins may use the protected paths (the module docstring has the rule)."""

    def __init__(self, allowed: Iterable[str], *, loopback_server: bool) -> None:
        self.allowed = frozenset(allowed)
        self.loopback_server = loopback_server

    def allows(self, origin: str | None, host_header: str | None) -> bool:
        if origin is None:
            return True  # not a page: nothing to protect against (the token authenticates)
        if "*" in self.allowed:
            return True
        try:
            canonical = normalize_origin(origin)
        except ConfigError:
            return False  # "null" (a sandboxed frame, a file: page) and anything malformed
        if self.allowed:
            return canonical in self.allowed
        parts = urlsplit(canonical)
        default = 443 if parts.scheme == "https" else 80
        own = _split_host(host_header or "", default)
        if own is None or parts.hostname is None:
            return False
        if self.loopback_server and not _loopback_name(own[0]):
            return False  # a rebound DNS name pointing at our loopback listener
        return (parts.hostname.lower(), parts.port or default) == own


class TokenBuckets:
    """A token bucket per key (a client address): ``burst`` at once, one more per ``refill`` s.
    At most ``limit`` keys are remembered; the least recently seen is dropped first."""

    def __init__(self, burst: int, refill: float, *, limit: int = MAX_BUCKETS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst, self.refill, self.limit, self.clock = burst, refill, limit, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """Take one; 0.0 when granted, else the seconds until one is available."""
        now = self.clock()
        level, last = self._buckets.pop(key, (float(self.burst), now))
        level = min(float(self.burst), level + (now - last) / self.refill)
        wait = 0.0
        if level >= 1.0:
            level -= 1.0
        else:
            wait = (1.0 - level) * self.refill
        self._buckets[key] = (level, now)
        while len(self._buckets) > self.limit:
            self._buckets.popitem(last=False)
        return wait


def _static(name: str) -> bytes:
    return resources.files("rtcprobe.server").joinpath("static", name).read_bytes()


def _content_type(name: str) -> str:
    return CONTENT_TYPES[name[name.rindex("."):]]


class BrowserSide:
    """The routes and the Origin middleware of one server (see the module docstring)."""

    def __init__(self, web_config: WebConfig, *, secret: str, issuer: str, turn_urls: Iterable[TurnUrl],
                 host: str, protected: Iterable[str]) -> None:
        self.config = web_config
        self._secret, self._issuer = secret, issuer
        self._transports = sorted({"tls" if u.scheme == "turns" else u.transport for u in turn_urls},
                                  key=("udp", "tcp", "tls").index)
        self._protected = frozenset(protected) | {TOKEN_PATH}
        loopback = _loopback_name(host.strip("[]").lower())
        self.origins = OriginPolicy(web_config.allow_origins, loopback_server=loopback)
        self.buckets = TokenBuckets(web_config.token_burst, web_config.token_refill)
        names = LIBRARY + (PAGE if web_config.page else ())
        self._files = {name: _static(name) for name in names}  # read once: a missing file fails at start

    def install(self, app: web.Application) -> None:
        app.middlewares.append(self._middleware)
        for name in self._files:
            app.router.add_get("/" if name == "index.html" else f"/{name}", self._file_handler(name))
        if self.config.page:
            app.router.add_get(CONFIG_PATH, self._page_config)
        if self.config.diagnostics_tokens:
            app.router.add_post(TOKEN_PATH, self._mint)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in self._protected:
            origin = request.headers.get("Origin")
            if not self.origins.allows(origin, request.headers.get("Host")):
                log.info("refused %s %s from origin %s", request.method, request.path, origin)
                return _with_security(web.Response(status=403, text=f"origin not allowed: {origin}\n"))
        return _with_security(await handler(request))

    def _file_handler(self, name: str) -> Handler:
        body, content_type = self._files[name], _content_type(name)

        async def handler(request: web.Request) -> web.StreamResponse:
            response = web.Response(body=body, content_type=content_type, charset="utf-8")
            response.headers["Cache-Control"] = "no-cache"
            if content_type == JS and name in LIBRARY:
                response.headers["Access-Control-Allow-Origin"] = "*"
            if content_type == "text/html":
                response.headers["Content-Security-Policy"] = PAGE_CSP
                response.headers["Referrer-Policy"] = "no-referrer"
            return response

        return handler

    async def _page_config(self, request: web.Request) -> web.StreamResponse:
        body = {"transports": self._transports, "tokens": self.config.diagnostics_tokens, "version": __version__}
        response = web.Response(text=json.dumps(body), content_type="application/json", charset="utf-8")
        response.headers["Cache-Control"] = "no-store"
        return response

    async def _mint(self, request: web.Request) -> web.StreamResponse:
        address = request.remote or "?"
        wait = self.buckets.take(address)
        if wait > 0:
            log.info("token refused for %s: rate limit", address)
            response = web.json_response({"error": "too many tokens from this address, try again later"}, status=429)
            response.headers["Retry-After"] = str(math.ceil(wait))
            return response
        identity = TOKEN_IDENTITY_PREFIX + secrets.token_hex(6)
        token = mint_token(self._secret, identity, now=time.time(), ttl=self.config.token_ttl, issuer=self._issuer)
        log.info("minted a diagnostics token (%s) for %s", identity, address)
        response = web.json_response({"token": token, "ttl": self.config.token_ttl})
        response.headers["Cache-Control"] = "no-store"
        return response


def _with_security(response: web.StreamResponse) -> web.StreamResponse:
    if not response.prepared:  # a WebSocket response has sent its headers already
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


__all__ = ["LIBRARY", "PAGE", "PAGE_CSP", "BrowserSide", "OriginPolicy", "TokenBuckets", "WebConfig",
           "normalize_origin"]
