"""The real preflight (embedded server, loopback) against its floor: two bare aiortc peers.

Side by side in one run, because machines are noisy:

* time from start to ``mediaStarted`` (the floor: to the first received video frame);
* total wall time against the requested duration (the overhead around the stats step);
* CPU seconds used per second of test (``time.process_time``);
* how long ``stop()`` in the middle of the stats step takes to close everything.

The floor is what the same media costs with nothing around it: one publisher and one subscriber
connected directly, the same synthetic tracks, ``getStats()`` once a second. The preflight carries
more by design: signaling, and a server peer that decodes the publisher's media and re-encodes it
for the subscriber (MediaRelay), so about two encodes and two decodes instead of one of each.

    python benchmarks/bench_preflight.py [--runs 3] [--duration 3] [--video 640x480@30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable, Coroutine
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtcconfiguration import RTCBundlePolicy
from rtcprobe.core.config import MediaDemand, VideoSpec
from rtcprobe.core.errors import PreflightError
from rtcprobe.drivers.aiortc.loopback import confine_ice_to_loopback
from rtcprobe.drivers.aiortc.media import PatternTrack, ToneTrack

from rtcprobe.commands.video_option import parse_video
from rtcprobe.live import run_preflight

Result = dict[str, float]


async def preflight_once(duration: float, video: VideoSpec) -> Result:
    loop = asyncio.get_running_loop()
    cpu0, t0 = time.process_time(), loop.time()
    test = run_preflight(duration=duration, media=MediaDemand(video=video))
    started: list[float] = []
    test.on("progress", lambda name: started.append(loop.time()) if name == "mediaStarted" else None)
    report = await test.wait()
    wall = loop.time() - t0
    assert report.ok and started
    return {"media": started[0] - t0, "wall": wall, "overhead": wall - duration,
            "cpu": (time.process_time() - cpu0) / wall}


async def preflight_stop(duration: float, video: VideoSpec) -> Result:
    """stop() right after the first stats sample: time until everything is closed."""
    loop = asyncio.get_running_loop()
    test = run_preflight(duration=duration, media=MediaDemand(video=video))
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


async def floor_once(duration: float, video: VideoSpec) -> Result:
    """Two bare peers, same tracks, getStats() every second for ``duration``."""
    loop = asyncio.get_running_loop()
    cpu0, t0 = time.process_time(), loop.time()
    config = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    pub, sub = RTCPeerConnection(config), RTCPeerConnection(config)
    tracks = [ToneTrack(), PatternTrack(video)]
    first_video: asyncio.Future[float] = loop.create_future()
    readers: list[asyncio.Task[None]] = []

    @sub.on("track")
    def on_track(track: Any) -> None:
        async def drain() -> None:
            await track.recv()
            if track.kind == "video" and not first_video.done():
                first_video.set_result(loop.time())
            while True:
                await track.recv()

        readers.append(asyncio.ensure_future(drain()))

    try:
        for track in tracks:
            pub.addTransceiver(track, direction="sendonly")
        await pub.setLocalDescription(await pub.createOffer())
        await sub.setRemoteDescription(pub.localDescription)
        await sub.setLocalDescription(await sub.createAnswer())
        await pub.setRemoteDescription(sub.localDescription)
        media = await first_video - t0
        for _ in range(max(1, round(duration))):
            await asyncio.sleep(min(1.0, duration))
            await asyncio.gather(pub.getStats(), sub.getStats())
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        for track in tracks:
            track.stop()
        await pub.close()
        await sub.close()
    wall = loop.time() - t0
    return {"media": media, "wall": wall, "overhead": wall - duration, "cpu": (time.process_time() - cpu0) / wall}


def run(make: Callable[[], Coroutine[Any, Any, Result]]) -> Result:
    with confine_ice_to_loopback():
        return asyncio.run(make())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--video", default="640x480@30")
    args = parser.parse_args()
    video = parse_video(args.video)

    pre: list[Result] = []
    floor: list[Result] = []
    stops: list[Result] = []
    for _ in range(args.runs):  # interleaved, so drift in machine load hits both alike
        pre.append(run(lambda: preflight_once(args.duration, video)))
        floor.append(run(lambda: floor_once(args.duration, video)))
        stops.append(run(lambda: preflight_stop(max(args.duration, 5.0), video)))

    def med(rows: list[Result], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    print(f"preflight vs two bare aiortc peers: {args.runs} runs each, duration {args.duration:g} s, "
          f"video {video.width}x{video.height}@{video.fps:g} (medians)")
    print(f"{'metric':<34}{'preflight':>12}{'floor':>12}{'ratio':>9}")
    rows = [
        ("start -> media started (ms)", "media", 1000.0),
        ("wall - duration (ms)", "overhead", 1000.0),
        ("wall time (s)", "wall", 1.0),
        ("CPU s per s of test", "cpu", 1.0),
    ]
    for label, key, scale in rows:
        p, f = med(pre, key) * scale, med(floor, key) * scale
        print(f"{label:<34}{p:12.2f}{f:12.2f}{p / f if f else float('nan'):9.2f}")
    print(f"{'stop() mid-stats -> closed (ms)':<34}{med(stops, 'stop') * 1000:12.2f}{'-':>12}{'-':>9}")


if __name__ == "__main__":
    main()
