"""``rtcprobe serve``: run the media-free signaling server until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from . import EXIT_OK, SECRET_ENV

if TYPE_CHECKING:
    from rtcprobe.server import SignalingServer

NAME = "serve"
HELP = "run the signaling server (tokens, TURN credentials, reports; no media)"
DESCRIPTION = """\
Run the signaling server until Ctrl-C. It checks access tokens (JWT HS256 signed with --secret),
hands out TURN credentials when --turn is given, holds each client's socket while the client runs
its test, and takes the client's report. It never touches media. It listens on 127.0.0.1 unless --host says otherwise.

Without --secret (or RTCPROBE_SECRET) a fresh secret is generated and printed together with a
ready-to-use token.

  rtcprobe serve --port 8765
  rtcprobe serve --turn turn:127.0.0.1:3478?transport=udp --turn-secret S

Browsers: /rtcprobe.js is always served (Twilio's runPreflight for web apps); --diagnostics adds
a test page at /, which takes its token from the URL (/#token=...) or, with --diagnostics-tokens,
asks the server for one. Pages may open the WebSocket only from the server's own origin unless
--allow-origin says otherwise (docs/browser.md).
"""

DEFAULT_PORT = 8765
TOKEN_IDENTITY = "rtcprobe-user"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on; 0 picks a free one (default: {DEFAULT_PORT})")
    parser.add_argument("--secret", help=f"token signing secret (default: ${SECRET_ENV}, else a generated one)")
    parser.add_argument("--issuer", default="rtcprobe", help="required token issuer (default: rtcprobe)")
    parser.add_argument("--turn", action="append", default=[], metavar="URL",
                        help="TURN URL to hand out, e.g. turn:HOST:3478?transport=udp (repeatable)")
    parser.add_argument("--turn-secret", metavar="S", help="the TURN server's REST API shared secret")
    parser.add_argument("--max-sessions", type=int, default=16,
                        help="concurrent sessions before refusing with 'server busy' (default: 16)")
    parser.add_argument("--diagnostics", action="store_true",
                        help="serve the diagnostics page at / (its token comes in the URL: /#token=...)")
    parser.add_argument("--diagnostics-tokens", action="store_true",
                        help="let the diagnostics page get its token from this server (POST /token, "
                             "rate-limited per address); implies --diagnostics")
    parser.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                        help="a web origin (https://app.example.com) whose pages may use the signaling "
                             "WebSocket; repeatable, '*' for any (default: only this server's own origin)")


def run(args: argparse.Namespace) -> int:
    import time

    from rtcprobe.core.errors import ConfigError
    from rtcprobe.server import SignalingServer, is_loopback, run_forever
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
    if not is_loopback(args.host):
        print(f"rtcprobe serve: warning: listening on {args.host}: reachable from other machines",
              file=sys.stderr)
    web = WebConfig(diagnostics=args.diagnostics, diagnostics_tokens=args.diagnostics_tokens,
                    allow_origins=tuple(args.allow_origin))
    server = SignalingServer(
        secret=secret, host=args.host, port=args.port, issuer=args.issuer, turn_urls=tuple(args.turn),
        turn_secret=args.turn_secret, max_sessions=args.max_sessions,
        max_connections=max(256, args.max_sessions), web=web,
    )

    def ready(srv: SignalingServer) -> None:
        print(f"url:    {srv.url}")
        page = srv.url.replace("ws://", "http://", 1).removesuffix("signaling")
        if generated:
            token = mint_token(secret, TOKEN_IDENTITY, now=time.time(), issuer=args.issuer)
            print(f"secret: {secret}")
            print(f"token:  {token}  (identity {TOKEN_IDENTITY}, valid 1 h)")
            print(f"try:    rtcprobe preflight --url {srv.url} --token {token}")
            if web.page and not web.diagnostics_tokens:
                page = f"{page}#token={token}"
        if web.page:
            print(f"page:   {page}")
        print("Ctrl-C to stop", flush=True)

    run_forever(server, ready)
    return EXIT_OK
