"""The real preflight through coturn on loopback against its floor: two bare aiortc peers.

Side by side in one run, because machines are noisy (medians of ``--runs``, default 5):

* time from start to ``mediaStarted`` (for the floors: to the first received video frame);
* total wall time against the requested duration (the overhead around the stats step);
* CPU seconds used per second of test (``time.process_time``);
* how long ``stop()`` in the middle of the stats step takes to close everything, the report's
  trip to the signaling server included.

The preflight is Twilio Video's topology (drivers/aiortc/driver.py): the embedded signaling server
hands out a coturn started once for the whole benchmark, the sender is relay-only, the receiver
gets the media back through TURN. Its time to media counts from the test's start (the report's
``mediaStarted``), so it includes acquiring the tracks and the signaling round trip.

The floors are the same media with nothing around it, ``getStats()`` once a second:

* "bare, TURN": a relay-only sender and an unrestricted receiver through the same coturn,
  connected with ``holdback.negotiate_pair`` as the driver does — the preflight minus signaling,
  the core and the report;
* "bare, host": the two peers over loopback host candidates, no TURN at all.

    python benchmarks/bench_preflight.py [--runs 5] [--duration 3] [--video 640x480@30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable, Coroutine
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.rtcconfiguration import RTCBundlePolicy, RTCIceTransportPolicy
from rtcprobe.core.config import MediaDemand, VideoSpec
from rtcprobe.core.errors import PreflightError
from rtcprobe.drivers.aiortc.holdback import negotiate_pair, release_when_connected
from rtcprobe.drivers.aiortc.loopback import confine_ice_to_loopback
from rtcprobe.drivers.aiortc.media import PatternTrack, ToneTrack

from rtcprobe.commands.video_option import parse_video
from rtcprobe.live import run_preflight
from rtcprobe.server.coturn import CoturnServer

Result = dict[str, float]


async def preflight_once(turn: CoturnServer, duration: float, video: VideoSpec) -> Result:
    loop = asyncio.get_running_loop()
    cpu0, t0 = time.process_time(), loop.time()
    test = run_preflight(duration=duration, media=MediaDemand(video=video), turn_urls=[turn.udp_url],
                         turn_secret=turn.secret)
    report = await test.wait()
    wall = loop.time() - t0
    assert report.ok and test.turn_tested, report.error
    started = next(e.duration for e in report.progress_events if e.name == "mediaStarted") / 1000
    return {"media": started, "wall": wall, "overhead": wall - duration, "cpu": (time.process_time() - cpu0) / wall}


async def preflight_stop(turn: CoturnServer, duration: float, video: VideoSpec) -> Result:
    """stop() right after the first stats sample: time until everything is closed."""
    loop = asyncio.get_running_loop()
    test = run_preflight(duration=duration, media=MediaDemand(video=video), turn_urls=[turn.udp_url],
                         turn_secret=turn.secret)
    stopped: list[float] = []

    def on_sample(index: int, total: int, level: int | None) -> None:
        if not stopped:
            stopped.append(loop.time())
            test.stop()

    test.on("sample", on_sample)
    try:
        await test.wait()
    except PreflightError as exc:
        assert exc.code == 99000
    return {"stop": loop.time() - stopped[0]}


async def floor_once(turn: CoturnServer | None, duration: float, video: VideoSpec) -> Result:
    """Two bare peers, same tracks, getStats() every second for ``duration``; through ``turn``
    (a relay-only sender, as the preflight's) or over host candidates (None)."""
    loop = asyncio.get_running_loop()
    cpu0, t0 = time.process_time(), loop.time()
    ice: list[RTCIceServer] = []
    if turn is not None:
        user, password = turn.credentials()
        ice = [RTCIceServer(urls=[turn.udp_url], username=user, credential=password)]
    policy = RTCIceTransportPolicy.RELAY if turn is not None else RTCIceTransportPolicy.ALL
    sender = RTCPeerConnection(RTCConfiguration(iceServers=ice, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
                                                iceTransportPolicy=policy))
    receiver = RTCPeerConnection(RTCConfiguration(iceServers=list(ice), bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    tracks = [ToneTrack(), PatternTrack(video)]
    first_video: asyncio.Future[float] = loop.create_future()
    tasks: list[asyncio.Task[None]] = []

    @receiver.on("track")
    def on_track(track: Any) -> None:
        async def drain() -> None:
            await track.recv()
            if track.kind == "video" and not first_video.done():
                first_video.set_result(loop.time())
            while True:
                await track.recv()

        tasks.append(asyncio.ensure_future(drain()))

    try:
        for track in tracks:
            sender.addTransceiver(track, direction="sendonly")
        held = await negotiate_pair(sender, receiver)
        tasks.append(asyncio.ensure_future(release_when_connected(sender, receiver, held)))
        media = await first_video - t0
        for _ in range(max(1, round(duration))):
            await asyncio.sleep(min(1.0, duration))
            await asyncio.gather(sender.getStats(), receiver.getStats())
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for track in tracks:
            track.stop()
        await sender.close()
        await receiver.close()
    wall = loop.time() - t0
    return {"media": media, "wall": wall, "overhead": wall - duration, "cpu": (time.process_time() - cpu0) / wall}


def run(make: Callable[[], Coroutine[Any, Any, Result]]) -> Result:
    with confine_ice_to_loopback():  # the floors' receivers, as the driver confines its own
        return asyncio.run(make())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--video", default="640x480@30")
    args = parser.parse_args()
    video = parse_video(args.video)

    pre: list[Result] = []
    turn_floor: list[Result] = []
    host_floor: list[Result] = []
    stops: list[Result] = []
    with CoturnServer() as turn:
        for _ in range(args.runs):  # interleaved, so drift in machine load hits all alike
            pre.append(run(lambda: preflight_once(turn, args.duration, video)))
            turn_floor.append(run(lambda: floor_once(turn, args.duration, video)))
            host_floor.append(run(lambda: floor_once(None, args.duration, video)))
            stops.append(run(lambda: preflight_stop(turn, max(args.duration, 5.0), video)))

    def med(rows: list[Result], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    print(f"preflight through coturn vs two bare aiortc peers: {args.runs} runs each, duration "
          f"{args.duration:g} s, video {video.width}x{video.height}@{video.fps:g} (medians)")
    print(f"{'metric':<34}{'preflight':>12}{'bare, TURN':>12}{'bare, host':>12}{'ratio':>9}")
    rows = [
        ("start -> media started (ms)", "media", 1000.0),
        ("wall - duration (ms)", "overhead", 1000.0),
        ("wall time (s)", "wall", 1.0),
        ("CPU s per s of test", "cpu", 1.0),
    ]
    for label, key, scale in rows:
        p, f, h = (med(rows_, key) * scale for rows_ in (pre, turn_floor, host_floor))
        print(f"{label:<34}{p:12.2f}{f:12.2f}{h:12.2f}{p / f if f else float('nan'):9.2f}")
    print(f"{'stop() mid-stats -> closed (ms)':<34}{med(stops, 'stop') * 1000:12.2f}{'-':>12}{'-':>12}{'-':>9}")
    print("ratio: preflight / bare peers through the same TURN")


if __name__ == "__main__":
    main()
