"""``rtcprobe preflight``: a real WebRTC preflight test (aiortc), against a server or the embedded one."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from rtcprobe.core.report import PreflightReport  # loaded already: rtcprobe/__init__.py exports it

from . import ReportOutput, add_output_arguments

NAME = "preflight"
HELP = "run a real WebRTC preflight test (embedded loopback server unless --url is given)"
DESCRIPTION = """\
Run a WebRTC preflight test as Twilio Video's runPreflight does: the signaling server hands out
TURN credentials, then two peer connections of this process send a synthetic tone and video to
each other through the TURN server (the sender relay-only), measuring jitter, round-trip time,
packet loss and network quality for --duration. Without --url an embedded server starts on
127.0.0.1 and, when coturn is installed (apt-get install coturn), a coturn on loopback for it to
hand out; without coturn the media runs on host candidates and TURN is not tested.

  rtcprobe preflight --duration 5s
  rtcprobe preflight --url ws://127.0.0.1:8765/signaling --token "$(rtcprobe token --secret S --identity me)"
  rtcprobe preflight --turn turn:127.0.0.1:3478?transport=udp --turn-secret S --json --out report.json

Progress goes to stderr, the summary (or with --json only the report JSON) to stdout.
Exit codes: 0 completed, 1 the preflight failed or was interrupted, 2 bad input.
"""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?\s*$")


def parse_duration(text: str) -> float:
    """``10``, ``10s``, ``1.5s`` or ``500ms`` → seconds; ConfigError otherwise."""
    from rtcprobe.core.errors import ConfigError

    m = _DURATION.match(text)
    if m is None:
        raise ConfigError(f"--duration must look like 10, 10s or 500ms, got {text!r}")
    value = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    if not 0 < value <= 3600:
        raise ConfigError(f"--duration must be more than 0 and at most 1 hour, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="signaling server URL (ws://HOST:PORT/signaling); default: embedded server")
    parser.add_argument("--token", help="access token for --url (see rtcprobe token)")
    parser.add_argument("--duration", default="10s", help="length of the stats step: 10, 10s, 500ms (default: 10s)")
    parser.add_argument("--region", default="gll", help="signaling region sent to the server (default: gll)")
    parser.add_argument("--turn", action="append", metavar="URL",
                        help="TURN URL for the embedded server, e.g. turn:127.0.0.1:3478?transport=udp (repeatable), "
                             "instead of a coturn of its own; the sender goes relay-only")
    parser.add_argument("--turn-secret", metavar="S", help="the TURN server's REST API shared secret")
    video = parser.add_mutually_exclusive_group()
    video.add_argument("--video", metavar="WxH@FPS", help="synthetic video to publish (default: 640x480@30)")
    video.add_argument("--no-video", action="store_true", help="publish audio only")
    add_output_arguments(parser)


# --- the summary -------------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _candidate(c: dict[str, Any]) -> str:
    via = f" via {c['url']}" if c.get("url") else ""
    return f"{c['candidateType']} {c['address']}:{c['port']}/{c['protocol']}{via}"


def turn_note(turn_tested: bool | None, *, embedded: bool) -> str | None:
    """The summary's line when the media did not go through TURN (None when it did, or when the
    test ended before the server handed out its ICE servers)."""
    if turn_tested is not False:
        return None
    if embedded:
        return ("TURN was not tested: no coturn to start (not installed, or it failed), so the media ran on "
                "host candidates (apt-get install coturn, or give --turn URL --turn-secret S)")
    return ("TURN was not tested: the server handed out no TURN server, so the media ran on host candidates "
            "(start it with rtcprobe serve --turn URL --turn-secret S)")


def summary(report: PreflightReport, *, notes: tuple[str, ...] = ()) -> str:
    """A readable summary of a (complete or partial) report, ``notes`` (one line each) last."""
    d = report.to_dict()
    lines: list[str] = []
    total = d["testTiming"].get("duration")
    took = "" if total is None else f" in {total / 1000:.2f} s"
    if report.error is None:
        lines.append(f"preflight completed{took}")
    else:
        lines.append(f"preflight FAILED{took}: {report.error.code} {report.error.name}: {report.error.message}")
    lines.append("")
    if d["progressEvents"]:
        lines.append("  progress (ms since start)")
        lines.extend(f"    {e['name']:<26}{e['duration']:9.1f}" for e in d["progressEvents"])
    order = ("connect", "ice", "dtls", "peerConnection", "media")  # the order they finish in
    timers = [(k, d["networkTiming"][k]) for k in order if "duration" in d["networkTiming"].get(k, {})]
    if timers:
        lines.append("  network timing (ms)")
        lines.extend(f"    {k:<26}{v['duration']:9.1f}" for k, v in timers)
    pair = d["selectedIceCandidatePairStats"]
    if pair is not None:
        lines.append(f"  selected pair   {_candidate(pair['localCandidate'])}")
        lines.append(f"               -> {_candidate(pair['remoteCandidate'])}")
    stats = d["stats"]
    if stats is not None:
        jitter, rtt, loss = stats["jitter"], stats["rtt"], stats["packetLoss"]
        lines.append("  jitter          " + ("-" if jitter is None else
                                             f"avg {_ms(jitter['average'])}  max {_ms(jitter['max'])}"))
        lines.append("  rtt             " + ("-" if rtt is None else
                                             f"avg {rtt['average']:.1f} ms  max {rtt['max']:.1f} ms"))
        lines.append("  packet loss     " + ("-" if loss is None else
                                             f"avg {loss['average']:.2f} %  max {loss['max']:.2f} %"))
    bitrate = d["bitrate"]
    if bitrate is not None and bitrate["outgoing"] is not None and bitrate["incoming"] is not None:
        lines.append(f"  bitrate         out {bitrate['outgoing']['average']:.0f} kbps"
                     f"  in {bitrate['incoming']['average']:.0f} kbps (average)")
    if report.network_quality_level is not None:
        lines.append(f"  network quality {report.network_quality_level} / 5")
    if notes:
        lines.append("")
        lines.extend(f"  {note}" for note in notes)
    return "\n".join(lines)


# --- run ---------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from rtcprobe.core.config import MediaDemand
    from rtcprobe.core.errors import PreflightError
    from rtcprobe.live import run_preflight
    from rtcprobe.progress import ProgressReporter

    from .video_option import parse_video

    duration = parse_duration(args.duration)
    media = MediaDemand(video=None) if args.no_video else MediaDemand(
        video=parse_video(args.video) if args.video else MediaDemand().video)
    output = ReportOutput.from_args(args)
    progress = ProgressReporter(sys.stderr)

    notes: tuple[str, ...] = ()

    async def main() -> PreflightReport:
        nonlocal notes
        loop = asyncio.get_running_loop()
        test = run_preflight(
            args.token, url=args.url, duration=duration, region=args.region, media=media,
            turn_urls=args.turn, turn_secret=args.turn_secret,
        )
        where = args.url or "the embedded server on 127.0.0.1"
        print(f"rtcprobe: preflight against {where}, {duration:g} s of stats (Ctrl-C stops)",
              file=sys.stderr, flush=True)
        test.on("event", progress)
        interrupted = False
        task = asyncio.current_task()
        assert task is not None

        def on_sigint() -> None:
            nonlocal interrupted
            if interrupted:  # a second Ctrl-C: stop waiting (tear-down still runs first)
                task.cancel()
                return
            interrupted = True
            progress.close()
            print("rtcprobe: interrupted: stopping (Ctrl-C again to abort)", file=sys.stderr, flush=True)
            test.stop()

        try:
            loop.add_signal_handler(signal.SIGINT, on_sigint)
        except (NotImplementedError, RuntimeError):  # not the main thread / no signal support
            pass
        try:
            try:
                return await test.wait()
            except PreflightError as exc:
                assert isinstance(exc.report, PreflightReport)  # the client always attaches it
                return exc.report
            finally:
                note = turn_note(test.turn_tested, embedded=args.url is None)
                notes = () if note is None else (note,)
        finally:
            try:
                loop.remove_signal_handler(signal.SIGINT)
            except (NotImplementedError, RuntimeError):
                pass

    try:
        report = asyncio.run(main())
    except asyncio.CancelledError:
        print("rtcprobe preflight: aborted", file=sys.stderr)
        return 130
    finally:
        progress.close()
    if output.json:  # the summary, which carries the notes, is not printed: stdout is the JSON alone
        for note in notes:
            print(f"rtcprobe: {note}", file=sys.stderr)
    return output.finish(report, lambda: summary(report, notes=notes))
