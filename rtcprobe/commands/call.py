"""``rtcprobe call``: a synthetic participant in a room's peer-to-peer mesh, printing every
network quality level change (its own and the others')."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from . import EXIT_FAILED, EXIT_OK, SECRET_ENV, parse_seed

if TYPE_CHECKING:
    from rtcprobe.call import Participant, Room
    from rtcprobe.core.quality import NetworkQualityStats

NAME = "call"
HELP = "join a room as a synthetic participant (audio + video, peer-to-peer mesh) and print levels"
DESCRIPTION = """\
Join a room of an rtcprobe serve as a participant that sends a tone and a moving pattern (default
320x240@15) to every other participant over one peer connection each (a mesh of up to 4,
negotiated through the server), through TURN when the server hands it out. Every second it
sends the server a stats sample of its peer connections; the server scores every participant
and pushes the levels back. Every level change is printed: this participant's own and every
other participant's (Twilio Video's remote network quality), with --json one JSON object per line:
{"time": s, "identity": "...", "local": true|false, "level": n, "stats": {...}}.

  rtcprobe call --room demo --identity alice                  # embedded server on 127.0.0.1:8765
  rtcprobe call --room demo --url ws://127.0.0.1:8765/signaling --secret S --identity bob
  rtcprobe call --url wss://rtc.example.com/signaling --token "$(rtcprobe token --room demo ...)"
  rtcprobe call --room demo --url ... --token T --scenario lossy-wifi --json

Without --url an embedded server starts on 127.0.0.1:--port (with a coturn on loopback when
coturn is installed) and prints how others join it; it lives as long as this participant.
--scenario puts the impairment relay, running that scenario, between this participant and the
TURN server the server hands out (TURN over UDP): every peer connection is then relay-only
through it. Events go to stderr, levels to stdout. Exit codes: 0 the call ran, 1 the room could
not be joined or was lost, 2 bad input.
"""

DEFAULT_PORT = 8765


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--room", metavar="NAME", help="the room to join (default: the token's room grant)")
    parser.add_argument("--url", help="signaling server URL (ws://HOST:PORT/signaling); default: an embedded server")
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--token", help="access token for --url (rtcprobe token --room NAME ...)")
    who.add_argument("--identity", help="mint a token for this identity with --secret (or $RTCPROBE_SECRET)")
    parser.add_argument("--secret", help=f"the server's token secret, with --identity (default: ${SECRET_ENV}; the "
                                         "embedded server generates one)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"the embedded server's port (without --url; default: {DEFAULT_PORT}, 0 for any)")
    parser.add_argument("--duration", default="30s", help="how long to stay: 30, 30s, 1500ms (default: 30s)")
    parser.add_argument("--scenario", metavar="S",
                        help="a scenario (built-in name or file) run by an impairment relay in front of TURN")
    parser.add_argument("--seed", type=parse_seed, help="the scenario's seed (default: the scenario's own)")
    video = parser.add_mutually_exclusive_group()
    video.add_argument("--video", metavar="WxH@FPS", default="320x240@15",
                       help="synthetic video to send (default: 320x240@15)")
    video.add_argument("--no-video", action="store_true", help="send audio only")
    parser.add_argument("--local-verbosity", type=int, choices=(1, 2, 3), default=3,
                        help="detail of this participant's own stats (Twilio's networkQuality.local; default 3)")
    parser.add_argument("--remote-verbosity", type=int, choices=(0, 1, 2, 3), default=3,
                        help="detail of the others' (networkQuality.remote; 0: none; default 3)")
    parser.add_argument("--relay-only", choices=("auto", "yes", "no"), default="auto",
                        help="relay-only peer connections: auto = when the server hands out TURN (default)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per level change")


def _detail(stats: NetworkQualityStats | None) -> str:
    if stats is None:
        return ""
    parts = []
    for kind in ("audio", "video"):
        media = getattr(stats, kind)
        if media is not None:
            parts.append(f"{kind} send {media.send if media.send is not None else '-'} "
                         f"recv {media.recv if media.recv is not None else '-'}")
    return f"  ({', '.join(parts)})" if parts else ""


class Printer:
    """Every level change as a line (text or JSON), times in seconds since the start."""

    def __init__(self, *, as_json: bool, start: float) -> None:
        self.as_json = as_json
        self.start = start

    def now(self) -> float:
        return round(time.monotonic() - self.start, 3)

    def level(self, participant: Participant, local: bool, level: int, stats: NetworkQualityStats | None) -> None:
        if self.as_json:
            line: dict[str, Any] = {"time": self.now(), "identity": participant.identity, "local": local,
                                    "level": level, "stats": None if stats is None else stats.to_dict()}
            print(json.dumps(line, separators=(",", ":")), flush=True)
        else:
            who = f"{participant.identity} (local)" if local else participant.identity
            print(f"{self.now():8.2f} s  {who:<24} level {level}{_detail(stats)}", flush=True)

    def event(self, text: str) -> None:
        print(f"{self.now():8.2f} s  {text}", file=sys.stderr, flush=True)

    def watch(self, room: Room) -> None:
        """Subscribe to every participant's level changes, the local one's and the others'."""
        local = room.local_participant
        local.on("networkQualityLevelChanged", lambda level, stats: self.level(local, True, level, stats))

        def watch_remote(p: Participant) -> None:
            p.on("networkQualityLevelChanged", lambda level, stats: self.level(p, False, level, stats))

        for remote in room.participants.values():
            watch_remote(remote)
        # Levels the server pushed while the room was being joined: print them as the first changes.
        everyone: list[tuple[Participant, bool]] = [(local, True), *((p, False) for p in room.participants.values())]
        for participant, is_local in everyone:
            if participant.network_quality_level is not None:
                self.level(participant, is_local, participant.network_quality_level,
                           participant.network_quality_stats)

        def connected(p: Participant) -> None:
            self.event(f"{p.identity} connected")
            watch_remote(p)

        room.on("participantConnected", connected)
        room.on("participantDisconnected", lambda p: self.event(f"{p.identity} disconnected"))
        room.on("participantReconnecting", lambda p: self.event(f"{p.identity} reconnecting"))
        room.on("participantReconnected", lambda p: self.event(f"{p.identity} reconnected"))
        room.on("error", lambda info: self.event(f"the server refused a message: {info.get('message')}"))
        self.event(f"joined room {room.name!r} as {local.identity}; "
                   f"others: {', '.join(room.participants) or 'none yet'}")


def run(args: argparse.Namespace) -> int:
    import asyncio

    from rtcprobe.core.config import MediaDemand
    from rtcprobe.core.errors import ConfigError

    from .preflight import parse_duration
    from .video_option import parse_video

    duration = parse_duration(args.duration)
    media = MediaDemand(video=None if args.no_video else parse_video(args.video))
    scenario = None
    if args.scenario is not None:
        from rtcprobe.scenarios import load

        scenario = load(args.scenario)
    secret = args.secret if args.secret is not None else os.environ.get(SECRET_ENV)
    if args.url is not None and args.token is None and args.identity is None:
        raise ConfigError("--url needs --token, or --identity with --secret")
    if args.identity is not None and args.url is not None and not secret:
        raise ConfigError(f"--identity needs the server's --secret (or ${SECRET_ENV})")
    if args.url is None and args.token is not None:
        raise ConfigError("--token needs --url: the embedded server mints its own tokens (use --identity)")
    if args.url is None and args.room is None:
        raise ConfigError("--room is required with the embedded server")
    if args.token is None and args.identity is None:
        args.identity = "rtcprobe-caller"
    relay_only = {"auto": None, "yes": True, "no": False}[args.relay_only]
    import logging

    # A lossy scenario makes aiortc's decoder warn about every broken frame: that is the scenario.
    logging.getLogger("aiortc.rtcrtpreceiver").setLevel(logging.ERROR)
    printer = Printer(as_json=args.json, start=time.monotonic())
    options = {"media": media, "scenario": scenario, "seed": args.seed, "relay_only": relay_only,
               "network_quality": {"local": args.local_verbosity, "remote": args.remote_verbosity}}
    try:
        return asyncio.run(_main(args, secret, duration, printer, options))
    except KeyboardInterrupt:
        return EXIT_OK


async def _main(args: argparse.Namespace, secret: str | None, duration: float, printer: Printer,
                options: dict[str, Any]) -> int:
    import asyncio
    import contextlib

    from rtcprobe.call import RoomConnectError, join_call
    from rtcprobe.core.errors import UsageError
    from rtcprobe.server.tokens import generate_secret, mint_token

    async with contextlib.AsyncExitStack() as stack:
        url = args.url
        if url is None:
            secret = secret or generate_secret()
            url = await stack.enter_async_context(_embedded(args.port, secret, printer, args.room))
        token = args.token or mint_token(secret or "", args.identity, now=time.time(), room=args.room)
        lost = asyncio.Event()
        try:
            call = await join_call(token, url=url, name=args.room, on_room=lambda room: _watch(room, printer, lost),
                                   **options)
        except RoomConnectError as exc:
            print(f"rtcprobe call: error {exc.code}: {exc.message}", file=sys.stderr)
            return EXIT_FAILED
        except UsageError as exc:  # the mesh is full
            print(f"rtcprobe call: {exc}", file=sys.stderr)
            return EXIT_FAILED
        if call.impaired is not None:
            printer.event(f"impairment relay running scenario {options['scenario'].name!r} in front of TURN "
                          "(its clock starts now)")
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), duration)
        finally:
            await call.leave()
        if call.relay_summary:
            printer.event(f"impairment relay: {call.relay_summary}")
        return EXIT_FAILED if lost.is_set() else EXIT_OK
    return EXIT_OK  # unreachable: the block returns


def _watch(room: Room, printer: Printer, lost: Any) -> None:
    printer.watch(room)

    def disconnected(_: Room, error: Exception | None) -> None:
        if error is not None:
            printer.event(f"the room was lost: {error}")
            lost.set()

    room.on("disconnected", disconnected)


def _embedded(port: int, secret: str, printer: Printer, room: str | None) -> Any:
    import asyncio
    import contextlib

    from rtcprobe.server import SignalingServer
    from rtcprobe.server.coturn import CoturnNotInstalled, CoturnServer, CoturnStartError

    @contextlib.asynccontextmanager
    async def server() -> Any:
        async with contextlib.AsyncExitStack() as stack:
            turn_urls: tuple[str, ...] = ()
            turn_secret = None
            try:
                coturn = CoturnServer()
                await asyncio.to_thread(coturn.start)
                stack.push_async_callback(asyncio.to_thread, coturn.stop)
                turn_urls, turn_secret = tuple(coturn.turn_urls), coturn.secret
            except (CoturnNotInstalled, CoturnStartError, OSError) as exc:
                printer.event(f"no TURN server ({exc}): peer connections use host candidates")
            srv = await stack.enter_async_context(SignalingServer(
                secret=secret, host="127.0.0.1", port=port, turn_urls=turn_urls, turn_secret=turn_secret))
            printer.event(f"embedded server at {srv.url}; others join with: rtcprobe call --room {room} "
                          f"--url {srv.url} --secret {secret} --identity NAME")
            yield srv.url

    return server()
