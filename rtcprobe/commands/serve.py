"""``rtcprobe serve``: run the media-free signaling server until Ctrl-C (or SIGTERM)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from . import EXIT_OK, SECRET_ENV

TURN_SECRET_ENV = "RTCPROBE_TURN_SECRET"  # secrets in the environment stay out of ps and /proc/PID/cmdline

if TYPE_CHECKING:
    from rtcprobe.server import SignalingServer

NAME = "serve"
HELP = "run the signaling server (tokens, TURN credentials, reports; no media)"
DESCRIPTION = """\
Run the signaling server until Ctrl-C or SIGTERM. It checks access tokens (JWT HS256 signed with
--secret), hands out TURN REST credentials for every --turn URL, holds each client's WebSocket
while the client runs its two peer connections itself, and takes the report the client sends at
the end. No media ever reaches it. It listens on 127.0.0.1 unless --host says otherwise.

It also hosts rooms: Twilio Video's Network Quality API in live calls. Participants join with a
token (rtcprobe token --room NAME), send stats samples of their own peer connections, and get
every participant's level pushed back; media never reaches the server (docs/signaling.md#rooms).

Without --secret (or $RTCPROBE_SECRET) a fresh secret is generated and printed together with a
ready-to-use token. Endpoints: ws://HOST:PORT/signaling (protocol: docs/signaling.md),
GET /health, GET /metrics (Prometheus). Deployment: docs/deployment.md.

examples:
  rtcprobe serve --port 8765
  RTCPROBE_TURN_SECRET=... rtcprobe serve --turn turn:turn.example.com:3478?transport=udp \\
                 --turn turns:turn.example.com:5349?transport=tcp
  rtcprobe serve --host 0.0.0.0 --reports /var/lib/rtcprobe/reports.jsonl --hold-timeout 300
  RTCPROBE_SECRET=... rtcprobe token --identity alice      # a token this server accepts
  rtcprobe serve --diagnostics-tokens --turn ...          # a test page at / for anyone

Browsers: GET /rtcprobe.js is always served (Twilio's runPreflight for web apps); --diagnostics
adds a test page at /, which takes its token from the URL (/#token=...) or, with
--diagnostics-tokens, asks the server for one. Pages may open the WebSocket only from the
server's own origin unless --allow-origin says otherwise (docs/browser.md).
"""

DEFAULT_PORT = 8765
TOKEN_IDENTITY = "rtcprobe-user"
# The server's defaults, repeated here so that --help imports nothing heavy (a test keeps them equal).
DEFAULT_HOLD_TIMEOUT = 600.0
DEFAULT_IDLE_TIMEOUT = 30.0
DEFAULT_MAX_SESSIONS = 4000
DEFAULT_MAX_CONNECTIONS = 8000
DEFAULT_MAX_ROOMS = 1000
DEFAULT_ROOM_SIZE = 16
DEFAULT_RECONNECT_TIMEOUT = 30.0
FD_HEADROOM = 64  # descriptors beyond one per connection: listening socket, log, reports, Python's own


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on; 0 picks a free one (default: {DEFAULT_PORT})")
    parser.add_argument("--secret", help=f"token signing secret (default: ${SECRET_ENV}, else a generated one)")
    parser.add_argument("--issuer", default="rtcprobe", help="required token issuer (default: rtcprobe)")
    parser.add_argument("--turn", action="append", default=[], metavar="URL",
                        help="TURN URL to hand out, e.g. turn:HOST:3478?transport=udp (repeatable: every "
                             "URL goes to every client under one set of credentials)")
    parser.add_argument("--turn-secret", metavar="S",
                        help="the TURN servers' REST API shared secret (coturn --static-auth-secret; "
                             f"default: ${TURN_SECRET_ENV})")
    parser.add_argument("--turn-ttl", type=int, default=3600, metavar="S",
                        help="lifetime of the TURN credentials handed out, seconds (default: 3600)")
    parser.add_argument("--reports", metavar="FILE",
                        help="append every accepted report to FILE, one JSON line each (created 0640)")
    parser.add_argument("--hold-timeout", type=float, default=DEFAULT_HOLD_TIMEOUT, metavar="S",
                        help="close a session silent this long after 'iced' "
                             f"(default: {DEFAULT_HOLD_TIMEOUT:g})")
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT, metavar="S",
                        help=f"close a connection that sends no hello this long (default: {DEFAULT_IDLE_TIMEOUT:g})")
    parser.add_argument("--max-sessions", type=int, default=DEFAULT_MAX_SESSIONS,
                        help=f"authenticated sessions before refusing with 'server busy' "
                             f"(default: {DEFAULT_MAX_SESSIONS})")
    parser.add_argument("--max-connections", type=int, default=None,
                        help="open WebSockets before refusing (default: twice --max-sessions, at least "
                             f"{DEFAULT_MAX_CONNECTIONS})")
    parser.add_argument("--max-rooms", type=int, default=DEFAULT_MAX_ROOMS,
                        help=f"open rooms before refusing new ones (default: {DEFAULT_MAX_ROOMS})")
    parser.add_argument("--room-size", type=int, default=DEFAULT_ROOM_SIZE,
                        help=f"participants per room (default: {DEFAULT_ROOM_SIZE})")
    parser.add_argument("--reconnect-timeout", type=float, default=DEFAULT_RECONNECT_TIMEOUT, metavar="S",
                        help="seconds a room participant whose signaling dropped stays (level 0) before it is "
                             f"removed (default: {DEFAULT_RECONNECT_TIMEOUT:g})")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                        help="log to stderr from this level on (default: info)")
    parser.add_argument("--diagnostics", action="store_true",
                        help="serve the diagnostics page at / (its token comes in the URL: /#token=...)")
    parser.add_argument("--diagnostics-tokens", action="store_true",
                        help="let the diagnostics page get its token from this server (POST /token, "
                             "rate-limited per address); implies --diagnostics")
    parser.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                        help="a web origin (https://app.example.com) whose pages may use the signaling "
                             "WebSocket; repeatable, '*' for any (default: only this server's own origin)")


def raise_fd_limit(wanted: int) -> str | None:
    """Raise this process's soft RLIMIT_NOFILE towards ``wanted`` (never above the hard limit);
    a warning when even the hard limit is short of it, else None."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (OSError, ValueError):  # a sandbox (seccomp) may forbid it: the warning below says what to do
            pass
    if soft != resource.RLIM_INFINITY and soft < wanted:
        return (f"the file descriptor limit ({soft}) is below the {wanted} that --max-connections needs: "
                "raise it (ulimit -n, or LimitNOFILE= in the systemd unit)")
    return None


def run(args: argparse.Namespace) -> int:
    import logging
    import time

    from rtcprobe.core.errors import ConfigError
    from rtcprobe.core.room import RoomConfig
    from rtcprobe.server import SignalingServer, is_loopback, run_forever
    from rtcprobe.server.rooms import RoomsConfig
    from rtcprobe.server.tokens import MIN_SECRET_BYTES, generate_secret, mint_token
    from rtcprobe.server.web import WebConfig

    secret = args.secret if args.secret is not None else os.environ.get(SECRET_ENV)
    generated = secret is None
    if secret is None:
        secret = generate_secret()
    elif not secret:
        raise ConfigError("--secret must not be empty")
    elif len(secret.encode()) < MIN_SECRET_BYTES:
        print(f"rtcprobe serve: warning: a secret shorter than {MIN_SECRET_BYTES} bytes is weak for HS256",
              file=sys.stderr)
    turn_secret = args.turn_secret if args.turn_secret is not None else os.environ.get(TURN_SECRET_ENV) or None
    max_connections = args.max_connections
    if max_connections is None:
        max_connections = max(DEFAULT_MAX_CONNECTIONS, 2 * args.max_sessions)
    web = WebConfig(diagnostics=args.diagnostics, diagnostics_tokens=args.diagnostics_tokens,
                    allow_origins=tuple(args.allow_origin))
    server = SignalingServer(
        secret=secret, host=args.host, port=args.port, issuer=args.issuer, turn_urls=tuple(args.turn),
        turn_secret=turn_secret, turn_ttl=args.turn_ttl, max_sessions=args.max_sessions,
        max_connections=max_connections, reports=args.reports, hold_timeout=args.hold_timeout,
        idle_timeout=args.idle_timeout, web=web,
        rooms=RoomsConfig(room=RoomConfig(max_participants=args.room_size, reconnect_timeout=args.reconnect_timeout),
                          max_rooms=args.max_rooms),
    )
    if not is_loopback(args.host):
        print(f"rtcprobe serve: warning: listening on {args.host}: reachable from other machines "
              "(put TLS in front of it: docs/deployment.md)", file=sys.stderr)
    if (warning := raise_fd_limit(max_connections + FD_HEADROOM)) is not None:
        print(f"rtcprobe serve: warning: {warning}", file=sys.stderr)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def ready(srv: SignalingServer) -> None:
        base = srv.url.removesuffix("/signaling").replace("ws://", "http://", 1)
        print(f"url:     {srv.url}")
        print(f"metrics: {base}/metrics")
        if args.reports is not None:
            print(f"reports: {args.reports}")
        page = f"{base}/"
        if generated:
            token = mint_token(secret, TOKEN_IDENTITY, now=time.time(), issuer=args.issuer)
            print(f"secret:  {secret}")
            print(f"token:   {token}  (identity {TOKEN_IDENTITY}, valid 1 h)")
            print(f"try:     rtcprobe preflight --url {srv.url} --token {token}")
            if web.page and not web.diagnostics_tokens:
                page = f"{page}#token={token}"
        if web.page:
            print(f"page:    {page}")
        print("Ctrl-C to stop", flush=True)

    run_forever(server, ready)
    return EXIT_OK
