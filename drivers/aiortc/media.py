"""Synthetic media for the preflight: a tone and a moving pattern (docs/references.md#twilio-video-preflight).

Twilio Video's preflight API publishes an oscillator and a 640×480 canvas painted with random
50×50 rectangles.
These tracks do the same with numpy: frames are built from preallocated buffers, so producing
them costs far less than encoding them. Both tracks pace their timestamps in real time, the way
aiortc's own ``AudioStreamTrack``/``VideoStreamTrack`` do, against the event loop's clock.
"""

from __future__ import annotations

import asyncio
import fractions

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame
from rtcprobe.core.config import VideoSpec
from rtcprobe.core.errors import ConfigError

AUDIO_RATE = 48000  # Opus' clock: no resampling before the encoder
AUDIO_PTIME = 0.020  # 20 ms frames, as WebRTC audio is packetized
AUDIO_SAMPLES = int(AUDIO_RATE * AUDIO_PTIME)
VIDEO_CLOCK = 90000
RECT = 50  # twilio-video.js's rectangle size, in pixels
MAX_VIDEO = VideoSpec(3840, 2160, 60.0)  # the most the synthetic video may ask of the encoder


def check_video(video: VideoSpec) -> None:
    """ConfigError (one line) unless :class:`PatternTrack` can paint ``video``: an even size (4:2:0
    chroma), at least 16x16, at most :data:`MAX_VIDEO`. The one check of a video's size, for the
    public API and the CLI alike."""
    if video.width % 2 or video.height % 2 or video.width < 16 or video.height < 16:
        raise ConfigError(f"video size must be even and at least 16x16, got {video.width}x{video.height}")
    if video.width > MAX_VIDEO.width or video.height > MAX_VIDEO.height or video.fps > MAX_VIDEO.fps:
        raise ConfigError(f"video must be at most {MAX_VIDEO.width}x{MAX_VIDEO.height}@{MAX_VIDEO.fps:g}, "
                          f"got {video.width}x{video.height}@{video.fps:g}")


class _Paced(MediaStreamTrack):
    """Shared real-time pacing: frame ``n`` is released at ``start + n * period``."""

    def __init__(self, period: float) -> None:
        super().__init__()
        self._period = period
        self._n = -1
        self._start = 0.0

    async def _next(self) -> int:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        self._n += 1
        if self._n == 0:
            self._start = loop.time()
        else:
            wait = self._start + self._n * self._period - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
        return self._n


class ToneTrack(_Paced):
    """A sine tone (mono s16, 48 kHz, 20 ms frames), ready for the Opus encoder."""

    kind = "audio"

    def __init__(self, frequency: float = 440.0, amplitude: float = 0.25) -> None:
        super().__init__(AUDIO_PTIME)
        # One second of tone: with an integer frequency it loops seamlessly, so each frame is a
        # slice of this table rather than a fresh sin() over 960 samples.
        t = np.arange(AUDIO_RATE) / AUDIO_RATE
        self._table = (np.sin(2 * np.pi * round(frequency) * t) * amplitude * 32767).astype(np.int16)
        self._time_base = fractions.Fraction(1, AUDIO_RATE)

    async def recv(self) -> AudioFrame:
        n = await self._next()
        offset = (n * AUDIO_SAMPLES) % AUDIO_RATE
        samples = self._table[offset : offset + AUDIO_SAMPLES]  # 48000 is a multiple of 960
        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = n * AUDIO_SAMPLES
        frame.time_base = self._time_base
        return frame


class PatternTrack(_Paced):
    """A moving pattern: random 50×50 rectangles painted over the previous frame (YUV 4:2:0).

    ``rects`` rectangles per frame keep the picture changing everywhere over time, so the encoder
    has real work to do, like twilio-video.js's canvas. The generator is seeded: the same seed paints
    the same sequence.
    """

    kind = "video"

    def __init__(self, spec: VideoSpec | None = None, *, seed: int = 0, rects: int = 4) -> None:
        spec = spec if spec is not None else VideoSpec()
        check_video(spec)
        super().__init__(1.0 / spec.fps)
        self.spec = spec
        self._rng = np.random.default_rng(seed)
        self._rects = rects
        w, h = spec.width, spec.height
        # One buffer in the yuv420p layout PyAV expects from an ndarray: Y rows, then U, then V.
        self._canvas = np.full((h * 3 // 2, w), 128, dtype=np.uint8)
        self._canvas[:h] = 16
        self._time_base = fractions.Fraction(1, VIDEO_CLOCK)

    def _paint(self) -> None:
        w, h = self.spec.width, self.spec.height
        rw, rh = min(RECT, w) & ~1, min(RECT, h) & ~1  # even, so chroma lines up
        flat = self._canvas.reshape(-1)  # a view: the chroma planes are not whole rows of it
        y = self._canvas[:h]
        c = (h // 2) * (w // 2)
        u = flat[h * w : h * w + c].reshape(h // 2, w // 2)
        v = flat[h * w + c :].reshape(h // 2, w // 2)
        xs = self._rng.integers(0, (w - rw) // 2 + 1, self._rects) * 2
        ys = self._rng.integers(0, (h - rh) // 2 + 1, self._rects) * 2
        colors = self._rng.integers(16, 240, (self._rects, 3), dtype=np.uint8)
        for x, yy, (cy, cu, cv) in zip(xs, ys, colors, strict=True):
            y[yy : yy + rh, x : x + rw] = cy
            u[yy // 2 : (yy + rh) // 2, x // 2 : (x + rw) // 2] = cu
            v[yy // 2 : (yy + rh) // 2, x // 2 : (x + rw) // 2] = cv

    async def recv(self) -> VideoFrame:
        n = await self._next()
        self._paint()
        frame = VideoFrame.from_ndarray(self._canvas, format="yuv420p")  # copies: encoding runs in a thread
        frame.pts = round(n * VIDEO_CLOCK / self.spec.fps)
        frame.time_base = self._time_base
        return frame
