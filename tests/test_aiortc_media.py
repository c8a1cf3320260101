"""Synthetic media: encodable frames, real-time pacing, a seeded moving pattern."""

from __future__ import annotations

import asyncio
import fractions

import numpy as np
import pytest
from aiortc.codecs import get_encoder
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from rtcprobe.core.config import VideoSpec
from rtcprobe.core.errors import ConfigError
from rtcprobe.drivers.aiortc.media import AUDIO_RATE, AUDIO_SAMPLES, PatternTrack, ToneTrack

pytestmark = pytest.mark.timeout(30)


def test_tone_frames_are_20ms_of_48khz_mono_with_contiguous_pts_and_opus_encodes_them() -> None:
    async def frames() -> list:
        track = ToneTrack(frequency=1000)
        out = [await track.recv() for _ in range(3)]
        track.stop()
        with pytest.raises(MediaStreamError):
            await track.recv()
        return out

    got = asyncio.run(frames())
    assert [f.pts for f in got] == [0, AUDIO_SAMPLES, 2 * AUDIO_SAMPLES]
    assert all(f.samples == 960 and f.sample_rate == AUDIO_RATE and f.layout.name == "mono" for f in got)
    assert got[0].time_base == fractions.Fraction(1, 48000)
    pcm = np.concatenate([f.to_ndarray().ravel() for f in got]).astype(float)
    # A 1 kHz tone: 60 ms hold 60 periods; its spectrum peaks at 1 kHz.
    spectrum = np.abs(np.fft.rfft(pcm))
    assert np.argmax(spectrum) * AUDIO_RATE / len(pcm) == pytest.approx(1000, abs=20)
    encoder = get_encoder(RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111))
    payloads, _ = encoder.encode(got[0])
    assert payloads and all(len(p) > 0 for p in payloads)


def test_pattern_frames_change_follow_the_seed_and_vp8_encodes_them() -> None:
    spec = VideoSpec(160, 120, 30)

    async def frames(seed: int) -> list:
        track = PatternTrack(spec, seed=seed)
        out = [await track.recv() for _ in range(4)]
        track.stop()
        return out

    a, b, c = asyncio.run(frames(1)), asyncio.run(frames(1)), asyncio.run(frames(2))
    assert [f.pts for f in a] == [0, 3000, 6000, 9000]  # 90 kHz clock at 30 fps
    assert all((f.width, f.height, f.format.name) == (160, 120, "yuv420p") for f in a)
    arrays = [f.to_ndarray() for f in a]
    assert not np.array_equal(arrays[0], arrays[3])  # it moves
    assert all(np.array_equal(x.to_ndarray(), y.to_ndarray()) for x, y in zip(a, b, strict=True))  # seeded
    assert not np.array_equal(arrays[3], c[3].to_ndarray())
    assert len(np.unique(arrays[3][:120])) > 2  # several rectangles of several colours on the background
    encoder = get_encoder(RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96))
    payloads, timestamp = encoder.encode(a[0])
    assert payloads and timestamp == 0


def test_tracks_are_paced_in_real_time_on_the_loop_clock() -> None:
    async def span() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        video, audio = PatternTrack(VideoSpec(64, 48, 50)), ToneTrack()
        t0 = loop.time()
        for _ in range(6):
            await video.recv()  # frame 0 at once, then one per 20 ms
        video_span = loop.time() - t0
        t0 = loop.time()
        for _ in range(6):
            await audio.recv()
        return video_span, loop.time() - t0

    video_span, audio_span = asyncio.run(span())
    # Pacing is a lower bound (the loop never wakes early): 5 periods of 20 ms each.
    assert video_span >= 0.1 - 1e-3 and audio_span >= 0.1 - 1e-3


@pytest.mark.parametrize("size", [(641, 480), (640, 481), (8, 8)])
def test_pattern_rejects_sizes_yuv420_cannot_hold(size: tuple[int, int]) -> None:
    with pytest.raises(ConfigError, match="video size"):
        PatternTrack(VideoSpec(*size, 30))
