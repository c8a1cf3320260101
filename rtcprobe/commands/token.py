"""``rtcprobe token``: mint an access token for a signaling server that shares the secret."""

from __future__ import annotations

import argparse
import os

from . import EXIT_OK, SECRET_ENV

NAME = "token"
HELP = "print an access token (JWT HS256) for rtcprobe serve"
DESCRIPTION = """\
Print an access token signed with the server's secret: claims iss, sub, iat, exp, jti and a video
grant carrying the identity (and, with --room, the one room the token may join).

  rtcprobe token --secret S --identity alice --ttl 600
  rtcprobe token --secret S --identity alice --room standup
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--secret", help=f"the server's token secret (default: ${SECRET_ENV})")
    parser.add_argument("--identity", required=True, help="the identity the token grants")
    parser.add_argument("--ttl", type=float, default=3600, help="seconds the token stays valid (default: 3600)")
    parser.add_argument("--issuer", default="rtcprobe", help="token issuer (default: rtcprobe)")
    parser.add_argument("--room", metavar="NAME",
                        help="a room grant: the token joins this room only (default: no grant, any room)")


def run(args: argparse.Namespace) -> int:
    import time

    from rtcprobe.core.errors import ConfigError
    from rtcprobe.server.tokens import mint_token

    secret = args.secret if args.secret is not None else os.environ.get(SECRET_ENV)
    if not secret:
        raise ConfigError(f"--secret is required (or set {SECRET_ENV})")
    print(mint_token(secret, args.identity, now=time.time(), ttl=args.ttl, issuer=args.issuer, room=args.room))
    return EXIT_OK
