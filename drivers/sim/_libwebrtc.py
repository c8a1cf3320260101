"""The endpoint models the simulator can run: aiortc's sender (the default, what the golden reports
pin) and a browser's, libwebrtc's (``[media] stack = "libwebrtc"``).

The libwebrtc model is a documented simplification of libwebrtc's published source and design:

* **Bitrates.** Google congestion control starts the call at 300 kbit/s
  (api/transport/bitrate_settings.h, the default start bitrate; with an aiortc answerer Chrome
  falls back to REMB and starts there too, docs/references.md#chromium). The bitrate allocator
  gives Opus its 32 kbit/s first (media/engine/webrtc_voice_engine.cc: the default Opus bitrate
  for a mono stream) and the rest to video, between VP8's floor of 30 kbit/s
  (kDefaultMinVideoBitrateBps, media/engine/webrtc_video_engine.cc) and the resolution's ceiling
  (GetMaxDefaultVideoBitrateKbps in the same file: 600 kbit/s up to 320x240, 1700 up to 640x480,
  2000 up to 960x540, 2500 above). The encoder follows the target without restarting (no
  keyframe on a rate change, unlike aiortc), and never spends more than the content needs:
  Chrome's fake capture at 640x480@30 settles at 1.3-1.6 Mbit/s on a clean link
  (docs/references.md#chromium).
* **Packets.** VP8 in RTP payloads of at most 1200 bytes (the RTP sender's default max packet
  size, modules/rtp_rtcp/source/rtp_sender.cc, IP_PACKET_SIZE 1500 minus transport overhead
  headroom); Opus in 20 ms packets of 80 bytes (32 kbit/s). In-band FEC (useinbandfec=1, the
  browser's default) repairs a single lost audio packet in the decoder; getStats' packetsLost still
  counts it, so the counters do not change.
* **Pacer.** modules/pacing/pacing_controller.cc sends in 5 ms bursts at the estimate times the
  pacing factor 2.5 (kDefaultPacingFactor, modules/pacing/pacing_controller.h). Simplified: a
  frame's packets leave spaced at their size over 2.5 x the estimate, spread over at most
  PACE_SPAN of the frame interval (a keyframe paced at 2.5 x would spill into the next frame's
  slot; here it is squeezed into its own, so frames never interleave and the model stays
  vectorized).
* **Congestion control.** The estimate runs on the receiver's arrivals once per feedback window
  (the windows of :class:`~._media.RembEstimator`: transport-wide feedback moves the same arrival
  times to the sender one loop crossing later, as REMB does). Delay-based
  (modules/congestion_controller/goog_cc/delay_based_bwe.cc, trendline_estimator.cc,
  aimd_rate_control.cc): overuse (a queue that grows past the threshold) sets the estimate to
  0.85 x the acknowledged rate; otherwise it grows 8 %/s multiplicatively, but never above
  1.5 x the acknowledged rate + 10 kbit/s (it is kept, not lowered, when already above).
  Loss-based (loss_based_bwe, send_side_bandwidth_estimation.cc): above 10 % loss the estimate
  becomes rate x (1 - 0.5 loss); below 2 % it may grow; in between it holds. The estimate is the
  smaller of the two. Start-up probing (probe_controller.cc: clusters at 3x and 6x the start
  rate) is modelled by its outcome: the first estimate is what the 3 x 300 kbit/s probe measures,
  the path's bottleneck rate when it is below that (probe_bitrate_estimator.cc takes the
  received rate of the cluster). The 6x cluster is left out: calibrated against Chromium on the
  built-in scenarios (benchmarks/README.md#bench_calibrationpy), a model that takes it reaches
  1.5 Mbit/s within a second where Chromium averages 0.4-0.8 Mbit/s over the first 8 s.
* **NACK/RTX.** :class:`NackRtx` (steady state only: before media started a lost keyframe
  packet is recovered by a keyframe request, as in the aiortc model).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Final

import attrs
import numpy as np
from numpy.typing import NDArray
from rtcprobe.core.config import VideoSpec

from ._media import (
    F64,
    I64,
    OVERUSE_HARD_S,
    OVERUSE_QUEUE_S,
    RTP_OVERHEAD,
    AudioSource,
    Packets,
    RembEstimator,
    VideoSource,
    join,
)

OPUS_BPS: Final = 32_000  # media/engine/webrtc_voice_engine.cc: default Opus bitrate (mono)
OPUS_PAYLOAD: Final = OPUS_BPS * 20 // 8000  # 80 bytes per 20 ms packet
START_BPS: Final = 300_000  # api/transport/bitrate_settings.h: the default start bitrate
VP8_MIN_BPS: Final = 30_000  # media/engine/webrtc_video_engine.cc kDefaultMinVideoBitrateBps
RTP_PAYLOAD_MAX: Final = 1200  # modules/rtp_rtcp: the default max RTP packet payload
PACING_FACTOR: Final = 2.5  # modules/pacing/pacing_controller.h kDefaultPacingFactor
PACE_SPAN: Final = 0.9  # a frame's packets leave within 90 % of its interval (simplification)
PROBE_MAX_BPS: Final = 3 * START_BPS  # probe_controller.cc: the first exponential probe, 3 x start
LOSS_HIGH: Final = 0.10  # send_side_bandwidth_estimation.cc: decrease above 10 % loss
LOSS_LOW: Final = 0.02  # ... and increase below 2 %
# What Chrome's fake 640x480@30 capture needs (1.3-1.6 Mbit/s measured, docs/references.md#chromium);
# other sizes scale as the aiortc model's content does.
CHROME_CONTENT_BPS: Final = 1_450_000


def max_video_bps(spec: VideoSpec) -> float:
    """webrtc_video_engine.cc GetMaxDefaultVideoBitrateKbps: the ceiling for the resolution."""
    pixels = spec.width * spec.height
    kbps = 600 if pixels <= 320 * 240 else 1700 if pixels <= 640 * 480 else 2000 if pixels <= 960 * 540 else 2500
    return kbps * 1000.0


class LibwebrtcAudioSource(AudioSource):
    """Opus as a browser sends it: 32 kbit/s in 20 ms packets."""

    PAYLOAD = OPUS_PAYLOAD


class LibwebrtcVideoSource(VideoSource):
    """VP8 as libwebrtc sends it: rate from the allocator (the estimate minus audio, within VP8's
    range for the resolution), no encoder restart on a rate change, ≤ 1200-byte payloads, and
    paced (see the module's docstring). A frame is handed out once its last packet has left
    (``generate(until)`` never returns a packet after ``until``)."""

    PACKET_MAX = RTP_PAYLOAD_MAX

    def __init__(self, spec: VideoSpec, start: float, wire_extra: int, rng: np.random.Generator,
                 audio: bool) -> None:
        super().__init__(spec, start, wire_extra, rng)
        # The estimate counts packets on the wire; the allocator hands the encoders what is left
        # after each stream's packet overhead (WebRTC-SendSideBwe-WithOverhead, on by default).
        wire = RTP_OVERHEAD + wire_extra
        self.audio_bps = (OPUS_PAYLOAD + wire) * 8 / 0.020 if audio else 0.0
        self.payload_share = RTP_PAYLOAD_MAX / (RTP_PAYLOAD_MAX + wire)
        self.max_bps = max_video_bps(spec)
        scale = (spec.width * spec.height / (640 * 480)) * (spec.fps / 30.0)
        self.content = float(CHROME_CONTENT_BPS * scale**0.75)
        self.estimate = float(START_BPS)
        self.target = self.codec_rate = self._video_share(self.estimate)
        self.carry: NDArray[np.void] = Packets.empty().a  # the rest of a frame already on its way

    def _video_share(self, bps: float) -> float:
        return min(self.max_bps, max(VP8_MIN_BPS, (bps - self.audio_bps) * self.payload_share))

    def set_target(self, bps: float) -> None:
        """A new estimate reached the sender."""
        self.estimate = bps
        self.target = self._video_share(bps)

    @property
    def next_send(self) -> float:
        nominal = self.start + self.encode_s + self.frame * self.interval
        return min(float(self.carry["t"][0]), nominal) if len(self.carry) else nominal

    def _plan(self, until: float, frame: int, plan: list[tuple[int, float, bool]]) -> int:
        # A frame counts once its last (paced) packet left: until minus the pacing span.
        self.codec_rate = self.target  # libvpx takes the new rate without a restart
        return super()._plan(until - PACE_SPAN * self.interval, frame, plan)

    def generate(self, until: float, changes: Sequence[tuple[float | None, float | None]] = ()) -> Packets:
        a = super().generate(until, changes).a
        if len(a):
            self._pace(a)
        if len(self.carry):
            c = self.carry
            k = int(c["t"].searchsorted(until, "right"))
            if k:
                self.carry = c[k:]
                a = join([c[:k], a]) if len(a) else c[:k]
        return Packets(a)

    def _pace(self, a: NDArray[np.void]) -> None:
        """Space each frame's packets at their size over PACING_FACTOR x the estimate."""
        n = len(a)
        idx = np.arange(n, dtype=np.int64)
        frame = a["frame"]
        first = np.empty(n, dtype=np.bool_)
        first[0] = True
        np.not_equal(frame[1:], frame[:-1], out=first[1:])
        k = idx - np.maximum.accumulate(np.where(first, idx, 0))
        # (a full packet's time for every packet of the frame: the smaller last one must not overtake)
        full = (RTP_PAYLOAD_MAX + RTP_OVERHEAD + self.wire_extra) * 8.0 / (PACING_FACTOR * self.estimate)
        step = np.minimum(full, PACE_SPAN * self.interval / a["npk"])
        t = a["t"] + k * step
        a["t"] = t
        a["sent"] = t

    def rewind(self, unsent: Packets) -> None:
        """Take back whole frames generated ahead; the rest of a frame partly sent stays on its way."""
        a = unsent.a
        k = int(np.count_nonzero(a["frame"] == a["frame"][0]))
        if k < int(a["npk"][0]):
            self.carry = a[:k].copy()
            a = a[k:]
        if len(a):
            super().rewind(Packets(a))


class GccEstimator(RembEstimator):
    """Google congestion control's estimate (module docstring), on the windows of the REMB
    estimator. ``probe(t)`` is the path's bottleneck rate at ``t`` in bit/s (inf: none)."""

    def __init__(self, probe: Callable[[float], float]) -> None:
        super().__init__()
        self.probe = probe

    def _decide(self, now: float, window: float, rate: float, queue: float, loss: float) -> float:
        est = self.estimate
        if est is None:  # the start-up probes' outcome
            est = max(float(START_BPS), min(float(PROBE_MAX_BPS), self.probe(now)))
        elif queue > OVERUSE_HARD_S or (queue > OVERUSE_QUEUE_S and queue > self.prev_queue):
            est = min(est, 0.85 * rate)  # aimd_rate_control.cc kDefaultBackoffFactor
        else:
            cap = 1.5 * rate + 10_000  # aimd_rate_control.cc: no increase past 1.5 x acked + 10 kbit/s
            delay_based = max(est, min(est * 1.08**window, cap)) if est < cap else est
            if loss > LOSS_HIGH:
                est = min(delay_based, est * (1.0 - 0.5 * loss))
            elif loss >= LOSS_LOW:
                est = min(delay_based, est)
            else:
                est = delay_based
        return est


@attrs.frozen
class EndpointModel:
    """What a stack's sender and receiver are, for the simulator's pipeline and steady state."""

    name: str
    audio: Callable[[float, int], AudioSource]
    video: Callable[[VideoSpec, float, int, np.random.Generator, bool], VideoSource]
    estimator: Callable[[Callable[[float], float]], RembEstimator]


AIORTC: Final = EndpointModel(
    "aiortc", AudioSource, lambda spec, start, extra, rng, _audio: VideoSource(spec, start, extra, rng),
    lambda _probe: RembEstimator())
LIBWEBRTC: Final = EndpointModel("libwebrtc", LibwebrtcAudioSource, LibwebrtcVideoSource, GccEstimator)
MODELS: Final = {m.name: m for m in (AIORTC, LIBWEBRTC)}


def unlimited(_t: float) -> float:
    return math.inf


RTX_HEADER: Final = 2  # RFC 4588: the original sequence number ahead of the payload
SENT_KEPT_S: Final = 3.0  # how long the sender keeps packets to retransmit (modules/rtp_rtcp packet history)


class NackRtx:
    """NACK/RTX for video in the steady state (modules/video_coding/nack_requester.cc and the RTP
    sender's packet history). The subscriber notices a gap when a later packet arrives and asks
    for the missing ones at once; the NACK crosses to the publisher in half the loop's rtt (as the
    publisher measures it) and the publisher sends each asked-for packet once more, as RTX (its
    own SSRC; the receiver restores it, so it counts as received on the media stream). One
    retransmission per lost packet (the requester's rtt-limited repeats are left out).
    Simplification: a retransmission due inside an interval already sent goes out at the next
    interval's start (see :mod:`._steady`); reordered packets read as losses are asked for too."""

    def __init__(self, max_seq: int) -> None:
        self.max_seq = max_seq  # the highest video sequence number the subscriber has seen
        self.sent: NDArray[np.void] = Packets.empty().a  # the publisher's recent video, in seq order
        self.due: NDArray[np.void] = Packets.empty().a  # retransmissions, by send time
        self.retransmitted = 0

    def remember(self, video: NDArray[np.void], now: float) -> None:
        """The publisher sent ``video`` (its packets in sequence order)."""
        if not len(video):
            return
        s = self.sent
        if len(s):
            s = s[int(s["t"].searchsorted(now - SENT_KEPT_S)):]
        self.sent = join([s, video]) if len(s) else video.copy()

    def arrived(self, seq: I64, t: F64, rtt: float) -> None:
        """Video packets (sequence numbers ``seq``) reached the subscriber at ``t``."""
        if not len(seq):
            return
        prev = np.maximum.accumulate(np.concatenate(([self.max_seq], seq[:-1])))
        gap = seq - prev - 1
        gap[prev < 0] = 0  # (nothing seen before: no gap to ask for)
        self.max_seq = max(self.max_seq, int(seq.max()))
        has = gap > 0
        if not has.any():
            return
        n = gap.compress(has)
        first = (prev + 1).compress(has)
        at = t.compress(has)
        missing = np.repeat(first, n) + (np.arange(int(n.sum())) - np.repeat(n.cumsum() - n, n))
        asked = np.repeat(at, n) + rtt / 2
        s = self.sent
        if not len(s):
            return
        idx = missing - int(s["seq"][0])
        ok = (idx >= 0) & (idx < len(s))
        if not ok.any():
            return
        rtx = s.take(idx.compress(ok))
        rtx["t"] = asked.compress(ok)
        rtx["sent"] = rtx["t"]
        rtx["size"] = rtx["size"] + RTX_HEADER
        self.retransmitted += len(rtx)
        due = join([self.due, rtx]) if len(self.due) else rtx
        self.due = due.take(due["t"].argsort(kind="stable"))

    def take(self, start: float, until: float) -> NDArray[np.void]:
        """Retransmissions that leave by ``until`` (any already due leave at ``start``)."""
        d = self.due
        k = int(d["t"].searchsorted(until, "right"))
        if not k:
            return d[:0]
        out, self.due = d[:k].copy(), d[k:]
        late = out["t"] < start
        if late.any():
            out["t"] = np.maximum(out["t"], start)
            out["sent"] = out["t"]
        return out
