"""How many concurrent sessions the signaling server holds on this machine.

The server runs as ``rtcprobe serve`` in its own process; this process runs the clients: N
concurrent sessions, each a real aiortc client pair publishing a tone and a small moving video
and receiving them back through the server. N grows step by step until a session fails to
negotiate or its media stops flowing (received video or audio below half the sent rate). Printed
side by side per step: setup time, delivered/sent frame ratios, and the CPU the server and the
clients used (fractions of one core) — on a small machine the clients compete with the server for
the same cores, so the figure is for this machine, server and clients together.

    python benchmarks/bench_server.py [--steps 1,2,4,6,8,12,16] [--hold 4] [--size 320x240]
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
import attrs
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from av import AudioFrame, VideoFrame
from rtcprobe.drivers.aiortc.loopback import confine_ice_to_loopback
from rtcprobe.drivers.aiortc.protocol import Answer, Bye, Ice, Iced, Offer, encode, parse_message

from rtcprobe.server.tokens import mint_token

SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
AUDIO_RATE = 48000
AUDIO_FPS = 50  # 20 ms frames
VIDEO_FPS = 30
HEALTHY = 0.5  # a session whose media arrives at less than this fraction of the sent rate failed
CLEAN = 0.95  # ... and one at this fraction or more lost (almost) nothing


class Tone(MediaStreamTrack):
    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._t0 = time.monotonic()
        self._n = 0

    async def recv(self) -> AudioFrame:
        samples = AUDIO_RATE // AUDIO_FPS
        await asyncio.sleep(max(0.0, self._t0 + self._n / AUDIO_RATE - time.monotonic()))
        t = (self._n + np.arange(samples)) / AUDIO_RATE
        frame = AudioFrame.from_ndarray((8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16).reshape(1, -1),
                                        format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, self._n, fractions.Fraction(1, AUDIO_RATE)
        self._n += samples
        return frame


class Pattern(MediaStreamTrack):
    """A moving gradient: content that changes every frame, so the encoder really works."""

    kind = "video"

    def __init__(self, width: int, height: int) -> None:
        super().__init__()
        self._base = (np.add.outer(np.arange(height), np.arange(width)) % 256).astype(np.uint8)
        self._chroma = np.full((height // 2, width), 128, dtype=np.uint8)
        self._t0 = time.monotonic()
        self._i = 0

    async def recv(self) -> VideoFrame:
        await asyncio.sleep(max(0.0, self._t0 + self._i / VIDEO_FPS - time.monotonic()))
        y = np.roll(self._base, 4 * self._i, axis=1)
        frame = VideoFrame.from_ndarray(np.vstack([y, self._chroma]), format="yuv420p")
        frame.pts, frame.time_base = self._i * 3000, fractions.Fraction(1, 90000)
        self._i += 1
        return frame


@attrs.frozen
class SessionStats:
    ok: bool
    setup: float = 0.0  # s from connect to the subscriber's answer applied
    first_video: float = 0.0  # s from connect to the first relayed video frame
    video_ratio: float = 0.0  # relayed video frames per second / sent
    audio_ratio: float = 0.0
    error: str = ""


async def count_frames(track: MediaStreamTrack, until: float, times: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        try:
            await asyncio.wait_for(track.recv(), max(0.01, until - loop.time()))
        except (TimeoutError, Exception):
            return
        times.append(loop.time())


async def session(url: str, index: int, hold: float, size: tuple[int, int]) -> SessionStats:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    pub = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    sub = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            await ws.send_str(encode(Ice(token=mint_token(SECRET, f"bench{index}", now=time.time()))))
            reply = parse_message((await ws.receive(timeout=20)).data)
            if not isinstance(reply, Iced):
                return SessionStats(ok=False, error=f"ice: {reply}")
            pub.addTransceiver(Tone(), direction="sendonly")
            pub.addTransceiver(Pattern(*size), direction="sendonly")
            received: dict[str, MediaStreamTrack] = {}
            sub.on("track", lambda track: received.setdefault(track.kind, track))
            sub.addTransceiver("audio", direction="recvonly")
            sub.addTransceiver("video", direction="recvonly")
            for name, pc in (("publisher", pub), ("subscriber", sub)):
                await pc.setLocalDescription(await pc.createOffer())
                await ws.send_str(encode(Offer(pc=name, sdp=pc.localDescription.sdp)))  # type: ignore[arg-type]
                answer = parse_message((await ws.receive(timeout=20)).data)
                if not isinstance(answer, Answer):
                    return SessionStats(ok=False, error=f"{name}: {answer}")
                await pc.setRemoteDescription(RTCSessionDescription(answer.sdp, "answer"))
            setup = loop.time() - t0
            try:
                await asyncio.wait_for(received["video"].recv(), 20)
            except Exception as exc:
                return SessionStats(ok=False, setup=setup, error=f"no video: {type(exc).__name__}")
            first = loop.time() - t0
            video: list[float] = []
            audio: list[float] = []
            until = loop.time() + hold
            await asyncio.gather(count_frames(received["video"], until, video),
                                 count_frames(received["audio"], until, audio))
            await ws.send_str(encode(Bye()))
            # Rates over the second half of the hold: the steady state, after any start-up burst.
            half = until - hold / 2
            v = sum(1 for t in video if t >= half) / (hold / 2) / VIDEO_FPS
            a = sum(1 for t in audio if t >= half) / (hold / 2) / AUDIO_FPS
            ok = v >= HEALTHY and a >= HEALTHY
            return SessionStats(ok=ok, setup=setup, first_video=first, video_ratio=v, audio_ratio=a,
                                error="" if ok else f"media below {HEALTHY:.0%} of the sent rate")
    except Exception as exc:
        return SessionStats(ok=False, error=f"{type(exc).__name__}: {exc}")
    finally:
        await pub.close()
        await sub.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def server_process(max_sessions: int) -> Iterator[tuple[str, int]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtcprobe", "serve", "--port", "0", "--secret", SECRET,
         "--max-sessions", str(max_sessions)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        url = ""
        for line in proc.stdout:
            if line.startswith("url:"):
                url = line.split(None, 1)[1].strip()
            if line.startswith("Ctrl-C"):
                break
        if not url:
            raise SystemExit("the server did not start")
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(10)


async def step(url: str, server_pid: int, n: int, hold: float, size: tuple[int, int]) -> list[SessionStats]:
    wall, server_cpu, own_cpu = time.monotonic(), cpu_seconds(server_pid), time.process_time()
    results = await asyncio.gather(*(session(url, i, hold, size) for i in range(n)))
    wall = time.monotonic() - wall
    s_cpu = (cpu_seconds(server_pid) - server_cpu) / wall
    c_cpu = (time.process_time() - own_cpu) / wall
    good = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]

    def p50(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:.0f}" if values else "-"

    vr = [r.video_ratio for r in results if r.setup]
    ar = [r.audio_ratio for r in results if r.setup]
    print(f"{n:>8} {len(good):>4} {p50([r.setup for r in good]):>10} {p50([r.first_video for r in good]):>12} "
          f"{min(vr, default=0):>9.2f} {statistics.fmean(vr) if vr else 0:>9.2f} {min(ar, default=0):>9.2f} "
          f"{s_cpu:>10.2f} {c_cpu:>11.2f}", flush=True)
    for r in failed[:3]:
        print(f"{'':>8}   failed: {r.error}", flush=True)
    return list(results)


async def main(steps: list[int], hold: float, size: tuple[int, int]) -> None:
    print(f"cores: {os.cpu_count()}, hold {hold:g} s per step, video {size[0]}x{size[1]}@{VIDEO_FPS} + "
          f"48 kHz tone; ratios are relayed frames per second / sent (1.00 = every frame)")
    print(f"{'sessions':>8} {'ok':>4} {'setup ms':>10} {'1st video ms':>12} {'video min':>9} {'video avg':>9} "
          f"{'audio min':>9} {'server CPU':>10} {'clients CPU':>11}")
    held, clean, failed_at = 0, 0, None
    with server_process(max(steps)) as (url, pid):
        for n in steps:
            results = await step(url, pid, n, hold, size)
            if all(r.ok for r in results):
                held = n
                if all(min(r.video_ratio, r.audio_ratio) >= CLEAN for r in results):
                    clean = n
            else:
                failed_at = n
                break
            await asyncio.sleep(1)  # let the server release the previous step's sessions
    verdict = f"first failure at {failed_at}" if failed_at else "no failure up to the last step"
    print(f"\nheld {held} concurrent sessions with media flowing ({clean} with >= {CLEAN:.0%} of every frame "
          f"relayed); {verdict}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default="1,2,4,6,8,10,12,16", help="session counts to try, in order")
    parser.add_argument("--hold", type=float, default=4.0, help="seconds of media per step")
    parser.add_argument("--size", default="320x240", help="video WIDTHxHEIGHT")
    return parser.parse_args()


if __name__ == "__main__":
    args = parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    with confine_ice_to_loopback():
        asyncio.run(main([int(s) for s in args.steps.split(",")], args.hold, (w, h)))
