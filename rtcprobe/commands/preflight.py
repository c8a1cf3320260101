"""``rtcprobe preflight``: a real WebRTC preflight test (aiortc, or Chromium), against a server or the embedded one."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtcprobe.core.report import PreflightReport  # loaded already: rtcprobe/__init__.py exports it

from . import EXIT_FAILED, EXIT_OK, ReportOutput, add_output_arguments

if TYPE_CHECKING:
    from rtcprobe.live import PreflightTest, TransportReport

NAME = "preflight"
HELP = "run a real WebRTC preflight test (embedded loopback server unless --url is given)"
DESCRIPTION = """\
Run a WebRTC preflight test as Twilio Video's runPreflight does: the signaling server hands out
TURN credentials, then two peer connections of this process send a synthetic tone and video to
each other through the TURN server (the sender relay-only), measuring jitter, round-trip time,
packet loss and network quality for --duration. Without --url an embedded server starts on
127.0.0.1 and, when coturn is installed (apt-get install coturn), a coturn on loopback for it to
hand out; without coturn the media runs on host candidates and TURN is not tested.

One loopback per TURN transport: with several TURN transports handed out (the --turn URLs, or
those of the --url server), or with --transports, the loopback runs once per transport, one after
the other, the sender relay-only through a TURN URL of that transport (udp:
turn:H:P?transport=udp, tcp: turn:H:P?transport=tcp, tls: turns:H:P), and a verdict table ends
the output: a network that blocks UDP but lets TLS through on 443 shows as such. The embedded
coturn serves UDP only, unless --transports asks for more (tls with a certificate made for the
run); on loopback every transport passes, so that is a check of the setup, not of the network.

  rtcprobe preflight --duration 5s
  rtcprobe preflight --driver chromium
  rtcprobe preflight --url ws://127.0.0.1:8765/signaling --token "$(rtcprobe token --secret S --identity me)"
  rtcprobe preflight --turn turn:127.0.0.1:3478?transport=udp --turn-secret S --json --out report.json
  rtcprobe preflight --turn turn:T:3478?transport=udp,turn:T:3478?transport=tcp,turns:T:443 --turn-secret S \
      --turn-ca ca.pem --transports udp,tcp,tls

--driver chromium runs the same test in a headless Chromium (rtcprobe.js, the server running the
core): libwebrtc instead of aiortc. It needs apt-get install chromium and pip install playwright.

Progress goes to stderr, the summary (or with --json only the report JSON) to stdout. One loopback
writes one report; per transport (several run, or --transports given, even one) the JSON is
{"transports": {"udp": REPORT, ...}, "turnUrls": {"udp": URL, ...}} (--out writes the same, --plot
one FILE-TRANSPORT.png each).
Exit codes: 0 completed (per transport: every transport run completed), 1 the preflight (or any
transport's) failed or was interrupted, 2 bad input.
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


def parse_transports(text: str) -> tuple[str, ...]:
    """``--transports udp,tcp,tls`` → the transports, in order, once each; ConfigError otherwise."""
    from rtcprobe.core.errors import ConfigError
    from rtcprobe.drivers.aiortc.turn_client import CLIENT_TRANSPORTS

    names = [t.strip().lower() for t in text.split(",")]
    bad = [t for t in names if t not in CLIENT_TRANSPORTS]
    if not text.strip() or bad:
        raise ConfigError(f"--transports takes a comma-separated list of {', '.join(CLIENT_TRANSPORTS)}, got {text!r}")
    return tuple(dict.fromkeys(names))


def split_turn_urls(values: Sequence[str] | None) -> list[str] | None:
    """``--turn`` values (repeatable, each possibly comma-separated) → the URLs, in order."""
    if values is None:
        return None
    return [url.strip() for value in values for url in value.split(",") if url.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="signaling server URL (ws://HOST:PORT/signaling); default: embedded server")
    parser.add_argument("--token", help="access token for --url (see rtcprobe token)")
    parser.add_argument("--duration", default="10s", help="length of the stats step: 10, 10s, 500ms (default: 10s)")
    parser.add_argument("--region", default="gll", help="signaling region sent to the server (default: gll)")
    parser.add_argument("--turn", action="append", metavar="URL",
                        help="TURN URL for the embedded server, e.g. turn:127.0.0.1:3478?transport=udp (repeatable, "
                             "or comma-separated), instead of a coturn of its own; the sender goes relay-only")
    parser.add_argument("--turn-secret", metavar="S", help="the TURN server's REST API shared secret")
    parser.add_argument("--transports", metavar="LIST",
                        help="one loopback per TURN transport, each a verdict: comma-separated udp, tcp, tls "
                             "(default: every transport handed out)")
    parser.add_argument("--turn-ca", metavar="FILE",
                        help="trust the CA certificates in FILE (PEM), instead of the system's, for turns: servers")
    parser.add_argument("--driver", choices=("aiortc", "chromium"), default="aiortc",
                        help="aiortc: this process's peer connections (default); chromium: rtcprobe.js in a headless "
                             "Chromium (needs chromium and playwright)")
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


def _media_started(d: dict[str, Any]) -> str:
    started = next((e["duration"] for e in d["progressEvents"] if e["name"] == "mediaStarted"), None)
    return "-" if started is None else f"{started:.0f} ms"


def verdict_table(results: Sequence[TransportReport]) -> str:
    """One line per transport (outcome or error code, mediaStarted, rtt, loss, level, TURN URL),
    then each failure's message."""
    rows = [("transport", "outcome", "mediaStarted", "rtt", "loss", "level", "TURN URL")]
    failures: list[str] = []
    for result in results:
        report, d = result.report, result.report.to_dict()
        name = result.transport or "host"
        stats = d["stats"] or {}
        rtt, loss = stats.get("rtt"), stats.get("packetLoss")
        level = report.network_quality_level
        rows.append((
            name,
            "passed" if report.error is None else f"FAILED {report.error.code}",
            _media_started(d),
            "-" if rtt is None else f"{rtt['average']:.1f} ms",
            "-" if loss is None else f"{loss['average']:.2f} %",
            "-" if level is None else f"{level}/5",
            result.turn_url or ("none (host candidates)" if result.transport is None else "none handed out"),
        ))
        if report.error is not None:
            failures.append(f"{name}: {report.error.code} {report.error.name}: {report.error.message}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
             for row in rows]
    return "\n".join([*lines, *(["", *failures] if failures else [])])


def transports_json(results: Sequence[TransportReport]) -> str:
    """The per-transport JSON: each transport's canonical report, and the TURN URL it went through."""
    import json

    return json.dumps({
        "transports": {r.transport or "host": r.report.to_dict() for r in results},
        "turnUrls": {r.transport or "host": r.turn_url for r in results},
    }, sort_keys=True, indent=2, allow_nan=False)


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


def _plot_path(plot: Path, transport: str) -> Path:
    return plot.with_name(f"{plot.stem}-{transport}{plot.suffix}")


def _finish_transports(output: ReportOutput, results: Sequence[TransportReport], notes: tuple[str, ...]) -> int:
    """Per transport: --out/--json get the transports object, --plot a file each; the summaries
    and the verdict table otherwise. 0 only when every transport run completed."""
    from rtcprobe.core.errors import ConfigError

    text = transports_json(results)
    if output.out is not None:
        try:
            output.out.write_text(text + "\n")
        except OSError as exc:
            raise ConfigError(f"--out {str(output.out)!r}: {exc.strerror}") from None
    if output.plot is not None:
        from rtcprobe.plot import plot_report

        for result in results:
            plot_report(result.report, _plot_path(output.plot, result.transport or "host"))
    if output.json:
        for note in notes:
            print(f"rtcprobe: {note}", file=sys.stderr)
        print(text)
    else:
        parts = []
        for result in results:
            where = f" through {result.turn_url}" if result.turn_url else ""
            parts.append(f"== {result.transport or 'host'}{where}\n{summary(result.report)}")
        parts.append("verdicts per transport\n" + verdict_table(results)
                     + "".join(f"\n  {note}" for note in notes))
        print("\n\n".join(parts))
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


def run(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from rtcprobe.core.config import MediaDemand
    from rtcprobe.live import run_transport_preflights
    from rtcprobe.progress import ProgressReporter

    from .video_option import parse_video

    duration = parse_duration(args.duration)
    transports = None if args.transports is None else parse_transports(args.transports)
    turn_urls = split_turn_urls(args.turn)
    media = MediaDemand(video=None) if args.no_video else MediaDemand(
        video=parse_video(args.video) if args.video else MediaDemand().video)
    output = ReportOutput.from_args(args)
    reporters: list[ProgressReporter] = []
    current: list[PreflightTest] = []
    interrupted = False

    def on_test(test: PreflightTest) -> None:
        if reporters:
            reporters[-1].close()
        else:  # the options were all checked by now: bad input prints nothing but its one line
            where = args.url or "the embedded server on 127.0.0.1"
            client = " in Chromium" if args.driver == "chromium" else ""
            print(f"rtcprobe: preflight{client} against {where}, {duration:g} s of stats (Ctrl-C stops)",
                  file=sys.stderr, flush=True)
        if test.transport is not None:
            print(f"rtcprobe: loopback through TURN over {test.transport}", file=sys.stderr, flush=True)
        progress = ProgressReporter(sys.stderr, prefix="rtcprobe" if test.transport is None
                                    else f"rtcprobe[{test.transport}]")
        reporters.append(progress)
        current.append(test)
        test.on("event", progress)
        if interrupted:  # Ctrl-C came between two loopbacks
            test.stop()

    async def main() -> tuple[TransportReport, ...]:
        nonlocal interrupted
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def on_sigint() -> None:
            nonlocal interrupted
            if interrupted:  # a second Ctrl-C: stop waiting (tear-down still runs first)
                task.cancel()
                return
            interrupted = True
            if reporters:
                reporters[-1].close()
            print("rtcprobe: interrupted: stopping (Ctrl-C again to abort)", file=sys.stderr, flush=True)
            if current:
                current[-1].stop()

        try:
            loop.add_signal_handler(signal.SIGINT, on_sigint)
        except (NotImplementedError, RuntimeError):  # not the main thread / no signal support
            pass
        try:
            return await run_transport_preflights(
                args.token, url=args.url, transports=transports, duration=duration, region=args.region,
                media=media, turn_urls=turn_urls, turn_secret=args.turn_secret, turn_ca=args.turn_ca,
                on_test=on_test, driver=args.driver,
            )
        finally:
            try:
                loop.remove_signal_handler(signal.SIGINT)
            except (NotImplementedError, RuntimeError):
                pass

    try:
        results = asyncio.run(main())
    except asyncio.CancelledError:
        print("rtcprobe preflight: aborted", file=sys.stderr)
        return 130
    finally:
        for progress in reporters:
            progress.close()
    note = turn_note(current[-1].turn_tested, embedded=args.url is None) if current else None
    notes = () if note is None else (note,)
    if transports is not None or len(results) > 1:
        return _finish_transports(output, results, notes)
    report = results[0].report
    if output.json:  # the summary, which carries the notes, is not printed: stdout is the JSON alone
        for line in notes:
            print(f"rtcprobe: {line}", file=sys.stderr)
    return output.finish(report, lambda: summary(report, notes=notes))
