"""The endpoint models the simulator can run: a browser's, libwebrtc's (``[media] stack =
"libwebrtc"``, the default), and aiortc's sender (``stack = "aiortc"``, what ``--driver aiortc``
runs; its reports are the ones tests/golden/sim_reports.json pins).

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
  vectorized). A frame encoded before a batch's end whose packets leave after it finishes in the
  next batch (:attr:`LibwebrtcVideoSource.carry`).
* **Congestion control.** :class:`GccEstimator`, on the subscriber's arrivals, audio and video
  (send times included, as transport-wide feedback carries them; delay_based_bwe.cc puts audio
  packets through the same detector unless WebRTC-Bwe-SeparateAudioPackets is on, which it is
  not by default), one feedback every 100 ms
  (remote_estimator_proxy.cc's default interval). Delay-based, per feedback as libwebrtc runs it:
  packets sent within 5 ms form a group (inter_arrival_delta.cc, delay_based_bwe.cc
  kSendTimeGroupLength); each complete group's delay change against the previous one feeds the
  trendline (trendline_estimator.cc: accumulated, smoothed by 0.9, least-squares slope over the
  last 20 groups, times min(deltas, 60) and the gain 4), compared with the adaptive threshold
  (from 12.5, k_up 0.0087 / k_down 0.039, clamped to 6-600, not adapted past threshold + 15);
  overuse once the trend stays above it for more than 10 ms and two groups while not falling,
  underuse below minus the threshold. The rate control (aimd_rate_control.cc) then, at each
  feedback: on overuse, at most once per rtt (10-200 ms) unless the acked rate halved, 0.85 x the
  acked rate (never above the current estimate) and holds; on underuse holds; otherwise grows,
  8 %/s (multiplicative) until an overuse has located the link capacity
  (link_capacity_estimator.cc), then one packet per 2 x (rtt + 100 ms) (additive) until the acked
  rate leaves the capacity's +-3 deviations; never above 1.5 x the acked rate + 10 kbit/s. Loss-based
  (send_side_bandwidth_estimation.cc), on the loss of the original transmissions since the last
  estimate: above 10 % the estimate becomes itself x (1 - 0.5 loss); in between it holds (never
  above the delay-based one); below 2 % it is the delay-based estimate (libwebrtc's current
  loss_based_bwe_v2.cc lifts its limit once the loss is gone, where the classic rule regrew
  8 %/s; Chromium delivers 1.1 Mbit/s on short-outage, 14 s with a 3 s gap, which the classic
  rule cannot reach). Start-up probing
  (probe_controller.cc: clusters at 3x and 6x the start rate) is modelled by its outcome: the
  first estimate is what the 3 x 300 kbit/s probe measures: its rate, or 95 % of the path's
  bottleneck rate when the cluster arrives at under 90 % of it (probe_bitrate_estimator.cc: a
  saturated link's received rate times the target utilization). The 6x cluster is
  left out: calibrated against Chromium on the built-in scenarios
  (benchmarks/README.md#bench_calibrationpy), a model that takes it reaches 1.5 Mbit/s within a
  second where Chromium averages 0.4-0.8 Mbit/s over the first 8 s.
  Simplified: the estimate reaches the sender at the subscriber's 500 ms feedback points (the
  REMB schedule of :class:`~._media.RembEstimator`, one loop crossing later), the latest of the
  100 ms decisions each time (the steady state's 1 s batches apply a decision made inside an
  interval at the next one's start anyway, :mod:`._steady`: the 500 ms points cost at most a few
  hundred ms more); the acked rate is over a
  sliding 500 ms (acknowledged_bitrate_estimator.cc smooths 150 ms windows); groups are not merged
  into bursts and reordered packets are dropped from the trendline (the simulated links neither
  aggregate nor, mostly, reorder); before the steady state (:mod:`._steady`) only video reaches
  it (the event-driven pipeline hands over video alone; for this model that is at most the time
  until the handshakes are done); no periodic or ALR probing, no network-state predictor, no
  stream-timeout reset.
* **NACK/RTX and keyframe requests.** :class:`NackRtx`, in the steady state, which for this model
  starts as soon as the handshakes are done (:attr:`EndpointModel.early_batches`): NACK recovers
  the first keyframe's lost packets as it does later ones. A lost packet NACK cannot recover
  (its retransmission lost 10 times, or it has left the sender's 3 s history, as after a long
  outage) leaves its frame undecodable: the subscriber asks for a keyframe (a PLI, at most one
  per 500 ms), and the encoder's next frame is one. A retransmitted packet is restored for the
  decoder but stays out of the receive statistics (libwebrtc marks it recovered), so getStats'
  packetsLost counts the loss of the original transmissions, as Chromium reports it.
  Simplified: retransmissions are not held to the sender's retransmission rate limit (the target
  rate over 500 ms), so after an outage the lost seconds go out again at once.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import Final

import attrs
import numpy as np
from numpy.typing import NDArray
from rtcprobe.core.config import VideoSpec

from ._media import (
    F64,
    I64,
    REMB_INTERVAL,
    RTP_OVERHEAD,
    VIDEO,
    AudioSource,
    Packets,
    RembEstimator,
    VideoSource,
    copy,
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
PROBE_UNSATURATED: Final = 0.9  # probe_bitrate_estimator.cc kMinRatioForUnsaturatedLink
PROBE_UTILIZATION: Final = 0.95  # probe_bitrate_estimator.cc kTargetUtilizationFraction
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
    paced (see the module's docstring); ``generate(until)`` never returns a packet after
    ``until``."""

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
        self.codec_rate = self.target  # libvpx takes the new rate without a restart
        return super()._plan(until, frame, plan)

    def generate(self, until: float, changes: Sequence[tuple[float | None, float | None]] = ()) -> Packets:
        """Every packet that leaves by ``until``: the frames encoded by then, paced; the packets
        of the last one that leave later wait in :attr:`carry` (they come first next time: a
        frame's packets leave within PACE_SPAN of its interval, before the next frame's)."""
        a = super().generate(until, changes).a
        if len(a):
            self._pace(a)
        c = self.carry
        if len(c):
            a = join([c, a]) if len(a) else c
        k = int(a["t"].searchsorted(until, "right"))
        if k < len(a):
            self.carry, a = a[k:], a[:k]
        elif len(c):
            self.carry = c[:0]
        return Packets(a)

    def _pace(self, a: NDArray[np.void]) -> None:
        """Space each frame's packets at their size over PACING_FACTOR x the estimate."""
        frame = a["frame"]
        # each packet's place in its frame: its index less its frame's first here (packets come
        # in frame order, so a search finds that first)
        k = np.arange(len(a), dtype=np.int64)
        k -= frame.searchsorted(frame)
        # (a full packet's time for every packet of the frame: the smaller last one must not overtake)
        full = (RTP_PAYLOAD_MAX + RTP_OVERHEAD + self.wire_extra) * 8.0 / (PACING_FACTOR * self.estimate)
        step = np.minimum(full, PACE_SPAN * self.interval / a["npk"])
        t = a["t"] + k * step
        a["t"] = t
        a["sent"] = t

    def rewind(self, unsent: Packets) -> None:
        """Take back whole frames generated ahead (with what of them waits in :attr:`carry`); the
        rest of a frame partly sent stays on its way."""
        a = unsent.a
        first = int(a["frame"][0])
        k = int(np.count_nonzero(a["frame"] == first))
        c = self.carry
        tail = c if len(c) and int(c["frame"][0]) == first and k == len(a) else c[:0]
        if k + len(tail) < int(a["npk"][0]):  # partly sent: the rest of it still leaves
            self.carry = join([a[:k], tail]) if len(tail) else copy(a[:k])
            a = a[k:]
        else:
            self.carry = c[:0]
        if len(a):
            super().rewind(Packets(a))


# Google congestion control's delay-based estimate (modules/congestion_controller/goog_cc and
# modules/remote_bitrate_estimator; the file of each constant is named beside it).
FEEDBACK_S: Final = 0.1  # remote_estimator_proxy.cc: transport-wide feedback every 100 ms (default interval)
GROUP_S: Final = 0.005  # delay_based_bwe.cc kSendTimeGroupLength: packets sent within 5 ms are one group
TREND_WINDOW: Final = 20  # trendline_estimator.h kDefaultTrendlineWindowSize
TREND_SMOOTHING: Final = 0.9  # trendline_estimator.cc kDefaultTrendlineSmoothingCoeff
TREND_GAIN: Final = 4.0  # trendline_estimator.cc kDefaultTrendlineThresholdGain
MIN_NUM_DELTAS: Final = 60  # trendline_estimator.cc kMinNumDeltas
DELTA_COUNTER_MAX: Final = 1000  # trendline_estimator.cc kDeltaCounterMax
OVERUSE_TIME_MS: Final = 10.0  # trendline_estimator.cc kOverUsingTimeThreshold
THRESHOLD_START_MS: Final = 12.5  # trendline_estimator.cc: threshold_ starts at 12.5
THRESHOLD_MIN_MS: Final = 6.0  # trendline_estimator.cc UpdateThreshold: clamped to [6, 600]
THRESHOLD_MAX_MS: Final = 600.0
K_UP: Final = 0.0087  # trendline_estimator.cc k_up_
K_DOWN: Final = 0.039  # trendline_estimator.cc k_down_
MAX_ADAPT_OFFSET_MS: Final = 15.0  # trendline_estimator.cc kMaxAdaptOffsetMs
MAX_TIME_DELTA_MS: Final = 100.0  # trendline_estimator.cc UpdateThreshold kMaxTimeDeltaMs
BACKOFF: Final = 0.85  # aimd_rate_control.cc kDefaultBackoffFactor
DEFAULT_RTT_S: Final = 0.2  # aimd_rate_control.cc kDefaultRtt (until the sender has measured one)
MIN_INCREASE_BPS: Final = 4000.0  # aimd_rate_control.cc kMinIncreaseRateBpsPerSecond
MIN_BPS: Final = 5000.0  # congestion_controller::GetMinBitrate (bwe_defines.cc): 5 kbit/s
# acknowledged_bitrate_estimator.cc / bitrate_estimator.cc: the acked rate over 500 ms at first, then
# 150 ms windows through a Bayesian filter; simplified to one sliding 500 ms window of feedbacks.
ACKED_BINS: Final = 5
CAPACITY_ALPHA: Final = 0.05  # link_capacity_estimator.cc OnOveruseDetected: Update(sample, 0.05)
DEVIATION_MIN: Final = 0.4  # link_capacity_estimator.cc: deviation_kbps_ starts at and is clamped to 0.4-2.5
DEVIATION_MAX: Final = 2.5
NORMAL, UNDERUSING, OVERUSING = 0, 1, 2  # api/transport/bandwidth_usage.h
HOLD, INCREASE, DECREASE = 0, 1, 2  # aimd_rate_control.h RateControlState
_EMA_BLOCK: Final = 128  # keeps 0.9**-k far from overflow
_EMA_UP = (1.0 / TREND_SMOOTHING) ** np.arange(1, _EMA_BLOCK + 1, dtype=np.float64) * (1.0 - TREND_SMOOTHING)
_EMA_DOWN = TREND_SMOOTHING ** np.arange(1, _EMA_BLOCK + 1, dtype=np.float64)
# Detect's min(num_of_deltas, kMinNumDeltas) x threshold gain for the first deltas
_GAINS = np.arange(1, MIN_NUM_DELTAS + 1, dtype=np.float64) * TREND_GAIN


def smoothed_path(s0: float, a: F64) -> F64:
    """s_i = 0.9 s_(i-1) + 0.1 a_i from s_0 = ``s0``, for every i (the trendline's exponential
    filter; linear, so evaluated as scaled cumulative sums in blocks)."""
    out = np.empty(len(a))
    s = s0
    for b in range(0, len(a), _EMA_BLOCK):
        part = out[b : b + _EMA_BLOCK]
        m = len(part)
        np.multiply(a[b : b + m], _EMA_UP[:m], out=part)
        np.add.accumulate(part, out=part)
        part += s
        part *= _EMA_DOWN[:m]
        s = float(part[-1])
    return out


class GccEstimator(RembEstimator):
    """Google congestion control's estimate (module docstring), worked out on the subscriber's
    video arrivals. ``probe(t)`` is the path's bottleneck rate at ``t`` in bit/s (inf: none).

    :meth:`add` takes every video arrival (both simulator modes); :meth:`update` runs the
    transport-wide feedbacks due by then through the delay-based estimator (grouping, trendline,
    overuse detector, AIMD), one feedback per 100 ms, and returns the estimate the sender has
    after the last of them (the loss-based limit applied per call)."""

    def __init__(self, probe: Callable[[float], float]) -> None:
        super().__init__()
        self.probe = probe
        self.rtt = DEFAULT_RTT_S  # the sender's, as the steady state learns it
        self._buf: list[tuple[F64, F64, I64, I64]] = []  # arrivals not grouped yet
        # Feedback k is at first_arrival + k FEEDBACK_S (the same floats as k x FEEDBACK_S +
        # first_arrival, elementwise): _grid holds them past the latest arrival grouped, so each
        # arrival and delta learns its feedback once, when it is grouped.
        self._grid = np.empty(0)
        # Grouped arrivals, those from _k on not fed back yet: the feedback that reports each,
        # the wire bytes before each (_cum, one more: the total), sequence numbers (-1: audio).
        self._fb: list[int] = []
        self._cum: list[int] = [0]
        self._seq: I64 = np.empty(0, dtype=np.int64)
        self._k = 0
        # Deltas (as _group_deltas gives them), those from _kd on not through the detector yet:
        # the feedback that reports each, when it was computed (ms), send-time delta (ms),
        # modified trend, trend.
        self._d_fb: list[int] = []
        self._d_at: list[float] = []
        self._d_send: list[float] = []
        self._d_mod: list[float] = []
        self._d_trend: list[float] = []
        self._kd = 0
        self._detected = 0  # deltas through the detector so far
        # inter_arrival_delta.cc: the open group (first and last send time, last arrival) and the
        # last complete one (send, arrival); NaN: none.
        self._open = (math.nan, math.nan, math.nan)
        self._prev = (math.nan, math.nan)
        # trendline_estimator.cc
        self._deltas = 0
        self._acc = 0.0
        self._smoothed = 0.0
        self._hist_x = np.empty(0)
        self._hist_y = np.empty(0)
        self._threshold = THRESHOLD_START_MS
        self._last_update_ms = math.nan
        self._time_over = -1.0
        self._over_count = 0
        self._prev_trend = 0.0
        self.hypothesis = NORMAL
        # aimd_rate_control.cc
        self.delay_bps = float(START_BPS)
        self._state = HOLD
        self._last_change = -math.inf
        self._capacity = math.nan  # link_capacity_estimator.cc (NaN: no estimate)
        self._deviation = DEVIATION_MIN
        self._acked: list[tuple[int, int]] = []  # (feedback, wire bytes) of the last ACKED_BINS feedbacks
        self._acked_bytes = 0  # their sum
        self._max_seq = -1  # the highest video sequence number fed back so far
        self._next_fb = 0  # the next feedback to run
        self.overuses = 0  # feedbacks that found the path overused

    def add(self, arrival: F64, sent: F64, seq: I64, size: I64) -> None:
        """Video arrivals, in arrival order (as every other call's)."""
        if not len(arrival):
            return
        self.first_video(float(arrival[0]))
        self._buf.append((arrival, sent, seq, size))

    def add_few(self, arrival: list[float], sent: list[float], seq: list[int], size: list[int]) -> None:
        """:meth:`add` for arrivals given as Python lists (as an event-driven pipeline may hand
        over a few at a time): this estimator needs every packet, not only the window sums."""
        if arrival:
            self.add(np.array(arrival), np.array(sent), np.array(seq, dtype=np.int64), np.array(size, dtype=np.int64))

    def batch_arrived(self, got: NDArray[np.void], rtt: float | None) -> None:
        """Audio and video alike (transport-wide feedback reports every packet; only video's
        sequence numbers count toward the loss: audio's are marked -1)."""
        if rtt is not None:
            self.rtt = rtt
        if not len(got):
            return
        video = got["kind"] == VIDEO
        if self.first_arrival is None:
            i = int(video.argmax())  # (argmax and a look: .any() goes through numpy's Python wrapper)
            if not video[i]:
                return  # (the feedback starts with the video)
            self.first_video(float(got["t"][i]))
        # (times as contiguous copies: grouping searches them, which would copy each field view anyway)
        self._buf.append((got["t"].copy(), got["sent"].copy(), np.where(video, got["seq"], -1), got["size"]))

    def add_totals(self, count: int, nbytes: int, owd_sum: float, first_seq: Callable[[], int], max_seq: int
                   ) -> None:
        """(The steady state's window sums: this estimator takes every arrival from :meth:`batch_arrived`.)"""

    def _group(self, first: float) -> None:
        """Everything that arrived so far through the inter-arrival grouping and the trendline at
        once (they depend on the arrivals alone: the steady state's second update of an interval
        then only runs the detector and the rate control), each arrival and delta with the
        feedback that reports it: the first at or after its arrival."""
        buf, self._buf = self._buf, []
        if len(buf) == 1:
            t, sent, seq, size = buf[0]
        else:
            t, sent, seq, size = (np.concatenate([b[i] for b in buf]) for i in range(4))
        grid = self._grid
        if not len(grid) or grid[-1] < t[-1]:  # (10 s of feedbacks more than needed, at a time)
            grid = np.arange(int((float(t[-1]) - first) / FEEDBACK_S) + 100, dtype=np.float64)
            grid *= FEEDBACK_S
            grid += first
            self._grid = grid
        k = self._k
        cum = np.add.accumulate(size)
        cum += self._cum[-1]
        if k:  # (what is fed back already goes)
            self._fb = self._fb[k:]
            self._cum = self._cum[k:]
            self._seq = self._seq[k:]
            self._k = 0
        self._fb += grid.searchsorted(t).tolist()
        self._cum += cum.tolist()
        self._seq = np.concatenate((self._seq, seq)) if len(self._seq) else seq
        d = self._group_deltas(t, sent)
        if d is None:
            return
        at, rows = d
        if kd := self._kd:
            del self._d_fb[:kd], self._d_at[:kd], self._d_send[:kd], self._d_mod[:kd], self._d_trend[:kd]
            self._kd = 0
        self._d_fb += grid.searchsorted(at).tolist()
        at_ms, send_ms, modified, trend = rows.tolist()
        self._d_at += at_ms
        self._d_send += send_ms
        self._d_mod += modified
        self._d_trend += trend

    def update(self, now: float) -> float | None:
        first = self.first_arrival
        if first is None or now - first < REMB_INTERVAL:
            return None  # (the first estimate: once the start-up probes have been measured)
        if self._buf:
            self._group(first)
        fbs, k0 = self._fb, self._k
        if k0 == len(fbs):
            return None
        # The feedbacks due by now (one every FEEDBACK_S from the first arrival) and the packets
        # each reports: those that arrived after the previous one, up to it.
        b0, b1 = self._next_fb, math.floor((now - first) / FEEDBACK_S)
        self._next_fb = b1 + 1
        k = bisect_right(fbs, b1, k0)
        if k == k0:
            return None
        self._k = k
        est = self.estimate
        if est is None:  # the start-up probes' outcome (probe_bitrate_estimator.cc)
            got = min(float(PROBE_MAX_BPS), self.probe(now))
            if got < PROBE_UNSATURATED * PROBE_MAX_BPS:  # the probe filled the link: aim below it
                got *= PROBE_UTILIZATION
            self.delay_bps = est = max(float(START_BPS), got)
            self._last_change = now
        self._feedbacks(b0, b1, k0, k)
        # The loss transport feedback reports: of the sequence numbers new since the last call
        # (retransmissions of older ones do not repair it, as transport-wide numbers are per send).
        seq = self._seq[k0:k]
        # (extremes by argmax/argmin and a look: cheaper than setting up a ufunc reduction)
        top, seen = int(seq[seq.argmax()]), self._max_seq
        loss = 0.0
        if top > seen:
            fresh = seq > seen
            got = int(np.count_nonzero(fresh))
            if seen >= 0:
                expected = top - seen
            else:
                new = seq.compress(fresh)
                expected = top - int(new[new.argmin()]) + 1
            loss = max(0.0, 1.0 - got / expected)
            self._max_seq = top
        delay_based = self.delay_bps
        if loss > LOSS_HIGH:  # send_side_bandwidth_estimation.cc: the loss-based limit
            est = min(delay_based, est * (1.0 - 0.5 * loss))
        elif loss >= LOSS_LOW:
            est = min(delay_based, est)
        else:  # loss_based_bwe_v2.cc: without loss the delay-based estimate is the estimate
            est = delay_based
        self.estimate = est
        return est

    def _feedbacks(self, b0: int, b1: int, k0: int, k: int) -> None:
        """Feedbacks b0 to b1, which report arrivals k0 to k (those of them that report any),
        with the deltas their arrivals completed: detector, then rate control."""
        first = self.first_arrival
        assert first is not None
        fbs, cum = self._fb, self._cum
        d_fb, at_ms, ts_l, m_l, tr_l = self._d_fb, self._d_at, self._d_send, self._d_mod, self._d_trend
        i = self._kd
        n = self._kd = bisect_right(d_fb, b1, i)  # (those of a feedback that reports nothing are dropped)
        thr, last_upd, tover, count = self._threshold, self._last_update_ms, self._time_over, self._over_count
        hyp, prev_trend, n_deltas = self.hypothesis, self._prev_trend, self._detected
        acked = self._acked
        p = k0
        while p < k:
            b = fbs[p]
            if b < b0:  # (arrived before the first of these feedbacks: reported by it)
                b = b0
            q = bisect_right(fbs, b, p, k)
            e = bisect_right(d_fb, b, i, n)
            while i < e:  # trendline_estimator.cc Detect and UpdateThreshold, per delta
                mt, now_ms = m_l[i], at_ms[i]
                if thr == THRESHOLD_MIN_MS and -THRESHOLD_MIN_MS <= mt <= THRESHOLD_MIN_MS and now_ms >= last_upd \
                        and n_deltas:
                    # The common case, short: a delta within the threshold at its floor is normal,
                    # and the threshold moves down, back to its floor; so is each after it that is
                    # within the floor too and not computed before the one ahead.
                    r = i + 1
                    while r < e and -THRESHOLD_MIN_MS <= m_l[r] <= THRESHOLD_MIN_MS and at_ms[r] >= at_ms[r - 1]:
                        r += 1
                    n_deltas += r - i
                    i = r - 1
                    tover, count, hyp, prev_trend, last_upd = -1.0, 0, NORMAL, tr_l[i], at_ms[i]
                    i = r
                    continue
                n_deltas += 1
                if n_deltas < 2:
                    hyp = NORMAL
                    i += 1
                    continue
                tr = tr_l[i]
                if mt > thr:
                    tover = ts_l[i] / 2 if tover == -1 else tover + ts_l[i]
                    count += 1
                    if tover > OVERUSE_TIME_MS and count > 1 and tr >= prev_trend:
                        tover, count, hyp = 0.0, 0, OVERUSING
                elif mt < -thr:
                    tover, count, hyp = -1.0, 0, UNDERUSING
                else:
                    tover, count, hyp = -1.0, 0, NORMAL
                prev_trend = tr
                if last_upd != last_upd:
                    last_upd = now_ms
                am = mt if mt >= 0 else -mt
                if am <= thr + MAX_ADAPT_OFFSET_MS:
                    dt = now_ms - last_upd
                    if dt > MAX_TIME_DELTA_MS:
                        dt = MAX_TIME_DELTA_MS
                    thr += (K_DOWN if am < thr else K_UP) * (am - thr) * dt
                    if thr < THRESHOLD_MIN_MS:
                        thr = THRESHOLD_MIN_MS
                    elif thr > THRESHOLD_MAX_MS:
                        thr = THRESHOLD_MAX_MS
                last_upd = now_ms
                i += 1
            nbytes = cum[q] - cum[p]
            p = q
            acked.append((b, nbytes))
            self._acked_bytes += nbytes
            while acked[0][0] <= b - ACKED_BINS:
                self._acked_bytes -= acked.pop(0)[1]
            span = min(ACKED_BINS, b + 1) * FEEDBACK_S
            self._rate_control(first + b * FEEDBACK_S, 8.0 * self._acked_bytes / span, hyp)
        self._threshold, self._last_update_ms, self._time_over, self._over_count = thr, last_upd, tover, count
        self.hypothesis, self._prev_trend, self._detected = hyp, prev_trend, n_deltas

    def _group_deltas(self, t: F64, sent: F64) -> tuple[F64, F64] | None:
        """inter_arrival_delta.cc and trendline_estimator.cc UpdateTrendline, vectorized: the
        deltas between consecutive complete send-time groups these arrivals close — for each, when
        it was computed (the arrival that opened the next group), and as rows: that time in ms, its
        send-time delta in ms, the modified trend and the trend. Simplified: a packet sent before
        the latest one is dropped as reordered, and bursts are not merged (the simulated links do
        not aggregate)."""
        f0, s_open, a_open = self._open
        if f0 != f0:
            f0 = s_open = float(sent[0])
            a_open = float(t[0])
        # (in order, as usual, when no send time is below the one before it: one comparison and a
        # look by argmin, no ufunc reduction; the running maximum only when some is)
        rising = sent[1:] >= sent[:-1]
        if f0 > sent[0] or (len(rising) and not rising[rising.argmin()]):
            keep = sent == np.maximum.accumulate(sent)
            keep &= sent >= f0
            t, sent = t.compress(keep), sent.compress(keep)
        n = len(t)
        if not n:
            return None
        nxt = sent.searchsorted(sent + GROUP_S, "right").tolist()
        j = int(sent.searchsorted(f0 + GROUP_S, "right"))
        opened: list[int] = []
        while j < n:
            opened.append(j)
            j = nxt[j]
        if not opened:
            self._open = (f0, float(sent[-1]), float(t[-1]))
            return None
        last = opened[-1]
        self._open = (float(sent[last]), float(sent[-1]), float(t[-1]))
        # The groups these close (the open one, then each opened here but the last), after the
        # last complete one: their send times and arrivals.
        p_send, p_arr = self._prev
        head = opened[0] - 1
        if head >= 0:
            s_open, a_open = float(sent[head]), float(t[head])
        # (the list converted once, for both takes; the groups' ends taken into place, where
        # np.concatenate would convert a list for the first two as well)
        starts = np.fromiter(opened, np.int64, len(opened))
        at = t.take(starts)
        starts -= 1  # the groups' last packets
        g_send, g_arr = np.empty(len(opened) + 1), np.empty(len(opened) + 1)
        g_send[0], g_send[1], g_arr[0], g_arr[1] = p_send, s_open, p_arr, a_open
        sent.take(starts[1:], out=g_send[2:])
        t.take(starts[1:], out=g_arr[2:])
        self._prev = (float(g_send[-1]), float(g_arr[-1]))
        if p_send != p_send:  # (the first complete group: nothing to compare it with)
            g_send, g_arr, at = g_send[1:], g_arr[1:], at[1:]
            if not len(at):
                return None
        m = len(at)
        # What the detector takes, one row each (one conversion to lists for all): when each delta
        # was computed (ms), its send-time delta (ms), the modified trend, the trend.
        rows = np.empty((4, m))
        at_ms, send_ms, modified, trend = rows[0], rows[1], rows[2], rows[3]
        np.multiply(at, 1000.0, out=at_ms)
        np.subtract(g_send[1:], g_send[:-1], out=send_ms)
        send_ms *= 1000.0
        delta_ms = g_arr[1:] - g_arr[:-1]
        delta_ms *= 1000.0
        delta_ms -= send_ms
        n0 = self._deltas
        self._deltas = n0 + m
        first = self.first_arrival
        assert first is not None
        h = len(self._hist_x)
        # x: arrival (ms), y: the smoothed accumulated delay, after the kept history; and running
        # sums of x, y, x², xy (rows), for LinearFitSlope over every window of TREND_WINDOW points.
        sums = np.empty((4, h + m + 1))
        x, y, xx, xy = sums[0, 1:], sums[1, 1:], sums[2, 1:], sums[3, 1:]
        x[:h] = self._hist_x
        y[:h] = self._hist_y
        np.subtract(at, first, out=x[h:])
        x[h:] *= 1000.0
        acc = np.add.accumulate(delta_ms, out=delta_ms)
        acc += self._acc
        self._acc = float(acc[-1])
        if m <= _EMA_BLOCK:
            ys = y[h:]
            np.multiply(acc, _EMA_UP[:m], out=ys)
            np.add.accumulate(ys, out=ys)
            ys += self._smoothed
            ys *= _EMA_DOWN[:m]
        else:
            y[h:] = smoothed_path(self._smoothed, acc)
        self._smoothed = float(y[-1])
        self._hist_x, self._hist_y = x[1 - TREND_WINDOW:].copy(), y[1 - TREND_WINDOW:].copy()
        full = min(m, h + m - TREND_WINDOW + 1)  # windows that end at a new point
        if full <= 0:
            trend.fill(0.0)  # (before the window first fills the trend stays at its start, 0)
        else:
            # (moved next to the origin: the slope stays, the sums stay small)
            x -= x[0]
            y -= y[0]
            np.multiply(x, x, out=xx)
            np.multiply(x, y, out=xy)
            sums[:, 0] = 0.0
            np.add.accumulate(sums, axis=1, out=sums)
            # (into a new array: in place, numpy would copy the overlapping operand first; rows
            # by index: unpacking iterates the array, slower)
            c = h + m + 1 - full
            win = sums[:, c:] - sums[:, c - TREND_WINDOW : -TREND_WINDOW]
            sx, sy, sxx, sxy = win[0], win[1], win[2], win[3]
            sy *= sx
            sx *= sx
            sx *= 1.0 / TREND_WINDOW
            sxx -= sx  # the denominator, sum (x - mean)²
            sy *= 1.0 / TREND_WINDOW
            sxy -= sy  # the numerator
            np.maximum(sxx, 1e-300, out=sxx)  # (no spread: the slope is 0, not NaN)
            np.divide(sxy, sxx, out=trend[m - full :])
            if full < m:
                trend[: m - full] = 0.0
        if n0 + m <= MIN_NUM_DELTAS:
            np.multiply(trend, _GAINS[n0 : n0 + m], out=modified)
        elif n0 >= MIN_NUM_DELTAS:
            np.multiply(trend, MIN_NUM_DELTAS * TREND_GAIN, out=modified)
        else:
            gains = np.full(m, MIN_NUM_DELTAS * TREND_GAIN)
            gains[: MIN_NUM_DELTAS - n0] = _GAINS[n0:]
            np.multiply(trend, gains, out=modified)
        return at, rows

    def _rate_control(self, f: float, acked: float, hyp: int) -> None:
        """delay_based_bwe.cc MaybeUpdateEstimate and aimd_rate_control.cc, at feedback ``f``."""
        cur = self.delay_bps
        if hyp == OVERUSING:
            self.overuses += 1
            # aimd_rate_control.cc TimeToReduceFurther: once per rtt (clamped to 10-200 ms), or at
            # once when the acked rate fell below half the estimate
            if f - self._last_change < min(0.2, max(0.01, self.rtt)) and acked >= 0.5 * cur:
                return
            self._state = DECREASE
        elif hyp == NORMAL:
            if self._state == HOLD:
                self._last_change = f
                self._state = INCREASE
        else:
            self._state = HOLD
        new = cur
        cap = self._capacity
        if self._state == INCREASE:
            if cap == cap and acked > cap + 3.0 * math.sqrt(self._deviation * cap / 1000.0) * 1000.0:
                # link_capacity_estimator.cc UpperBound (estimate + 3 deviations) passed: look again
                cap = self._capacity = math.nan
            if cap == cap:
                # aimd_rate_control.cc GetNearMaxIncreaseRateBpsPerSecond: near the capacity, one
                # packet (of a 30 fps frame cut into <= 1200-byte packets) per 2 x (rtt + 100 ms)
                bits_per_frame = cur / 30.0
                per_packet = bits_per_frame / math.ceil(bits_per_frame / (8.0 * 1200))
                rate = max(MIN_INCREASE_BPS, per_packet / (2.0 * (self.rtt + 0.1)))
                new = cur + rate * (f - self._last_change)
            else:  # aimd_rate_control.cc MultiplicativeRateIncrease: 8 %/s, at least 1 kbit/s a step
                alpha = 1.08 ** min(f - self._last_change, 1.0)
                new = cur + max(cur * (alpha - 1.0), 1000.0)
            self._last_change = f
        elif self._state == DECREASE:
            new = acked * BACKOFF
            if new > cur:
                if cap == cap:
                    new = BACKOFF * cap
                new = min(new, cur)
            dev = 3.0 * math.sqrt(self._deviation * cap / 1000.0) * 1000.0 if cap == cap else 0.0
            if cap == cap and acked < cap - dev:
                cap = math.nan
            # link_capacity_estimator.cc OnOveruseDetected: smoothed, with its normalized deviation
            sample = acked / 1000.0
            est = sample if cap != cap else (1 - CAPACITY_ALPHA) * cap / 1000.0 + CAPACITY_ALPHA * sample
            err = est - sample
            self._deviation = min(DEVIATION_MAX, max(DEVIATION_MIN, (1 - CAPACITY_ALPHA) * self._deviation
                                                     + CAPACITY_ALPHA * err * err / max(est, 1.0)))
            self._capacity = est * 1000.0
            self._state = HOLD
            self._last_change = f
        limit = 1.5 * acked + 10_000  # ClampBitrate: no increase past 1.5 x the acked rate + 10 kbit/s
        if new > cur and new > limit:
            new = max(cur, limit)
        self.delay_bps = max(new, MIN_BPS)


@attrs.frozen
class EndpointModel:
    """What a stack's sender and receiver are, for the simulator's pipeline and steady state."""

    name: str
    audio: Callable[[float, int], AudioSource]
    video: Callable[[VideoSpec, float, int, np.random.Generator, bool], VideoSource]
    estimator: Callable[[Callable[[float], float]], RembEstimator]
    # Batches from the end of the handshakes on, not only once media started: the steady state's
    # NACK/RTX then recovers the first keyframe's lost packets too (libwebrtc NACKs from the first
    # packet; aiortc has no NACK, and its model's media start stays event by event).
    early_batches: bool = False


AIORTC: Final = EndpointModel(
    "aiortc", AudioSource, lambda spec, start, extra, rng, _audio: VideoSource(spec, start, extra, rng),
    lambda _probe: RembEstimator())
LIBWEBRTC: Final = EndpointModel("libwebrtc", LibwebrtcAudioSource, LibwebrtcVideoSource, GccEstimator,
                                 early_batches=True)
MODELS: Final = {m.name: m for m in (AIORTC, LIBWEBRTC)}


def unlimited(_t: float) -> float:
    return math.inf


RTX_HEADER: Final = 2  # RFC 4588: the original sequence number ahead of the payload
# A retransmission not there a round trip (+ 100 ms) after it left is lost: the subscriber asks for
# it again (nack_requester.cc), and once it gives up the frame cannot be decoded: it asks for a
# keyframe (rtp_video_stream_receiver2.cc RequestKeyFrame).
RTX_SLACK_S: Final = 0.1
MAX_NACK_RETRIES: Final = 10  # nack_requester.cc kMaxNackRetries
SENT_KEPT_S: Final = 3.0  # how long the sender keeps packets to retransmit (modules/rtp_rtcp packet history)


class NackRtx:
    """NACK/RTX for video in the steady state (modules/video_coding/nack_requester.cc and the RTP
    sender's packet history). The subscriber notices a gap when a later packet arrives and asks
    for the missing ones at once; the NACK crosses to the publisher in half the loop's rtt (as the
    publisher measures it) and the publisher sends each asked-for packet once more, as RTX (its
    own SSRC; the receiver restores it for the decoder, not into the media stream's receive
    statistics: :meth:`originals`). A retransmission that has not arrived a round trip (+ 100 ms)
    after it left is asked for again, up to 10 times (kMaxNackRetries); a lost packet it cannot
    recover (retries used up, or no longer in the 3 s history) raises :attr:`unrecoverable`, for
    the subscriber to ask for a keyframe.
    Simplification: a retransmission due inside an interval already sent goes out at the next
    interval's start (see :mod:`._steady`); reordered packets read as losses are asked for too."""

    def __init__(self, max_seq: int) -> None:
        self.max_seq = max_seq  # the highest video sequence number the subscriber has seen
        self.sent: NDArray[np.void] = Packets.empty().a  # the publisher's recent video, in seq order
        self.due: NDArray[np.void] = Packets.empty().a  # retransmissions, by send time
        self.retransmitted = 0
        # Retransmissions on their way (sequence numbers, when they are given up for lost): one
        # that does not arrive in time leaves its frame unrecoverable.
        self.awaited = np.empty(0, dtype=np.int64)
        self.awaited_until = np.empty(0, dtype=np.float64)
        self.unrecoverable = False  # a frame lost for good since the flag was last cleared
        self.patience = DEFAULT_RTT_S + RTX_SLACK_S  # how long after it left a retransmission is awaited
        self._tries: dict[int, int] = {}  # retransmissions so far of the packets asked for more than once

    def remember(self, video: NDArray[np.void], now: float) -> None:
        """The publisher sent ``video`` (its packets in sequence order)."""
        if not len(video):
            return
        s = self.sent
        if len(s):
            s = s[int(s["t"].searchsorted(now - SENT_KEPT_S)):]
        self.sent = join([s, video]) if len(s) else copy(video)

    def originals(self, video: NDArray[np.void]) -> NDArray[np.void]:
        """The subscriber's video arrivals without the retransmissions among them: libwebrtc
        restores an RTX packet as "recovered", which its receive statistics leave out
        (rtp_video_stream_receiver2.cc OnRtpPacket), so getStats' packetsLost still counts the
        original's loss."""
        aw = self.awaited
        if not len(aw):
            return video
        aw = aw.copy()
        aw.sort()
        seq = video["seq"]
        pos = aw.searchsorted(seq)
        np.minimum(pos, len(aw) - 1, out=pos)
        rtx = aw.take(pos) == seq
        return video.compress(~rtx) if rtx[rtx.argmax()] else video  # (argmax and a look: .any() is a Python wrapper)

    def arrived(self, seq: I64, t: F64, rtt: float) -> None:
        """Video packets (sequence numbers ``seq``) reached the subscriber at ``t``."""
        if not len(seq):
            return
        self.patience = rtt + RTX_SLACK_S
        seen = self.max_seq
        prev = np.maximum.accumulate(np.concatenate(([seen], seq[:-1])))  # the highest seen before each
        gap = seq - prev  # (more than 1: the numbers in between are missing)
        if len(self.awaited):  # (a few retransmissions on their way: plain Python)
            # An awaited number is below the highest seen when it was asked for, so it can only
            # be among the arrivals that are not new.
            got = set(seq.compress(gap <= 0).tolist())
            last = float(t[-1])
            lost: list[int] = []
            lost_at: list[float] = []
            keep: list[int] = []
            keep_until: list[float] = []
            for q, until in zip(self.awaited.tolist(), self.awaited_until.tolist(), strict=True):
                if q not in got:
                    if until < last:
                        lost.append(q)
                        lost_at.append(until)
                    else:
                        keep.append(q)
                        keep_until.append(until)
            if lost:  # asked again, one round trip after the last ask, up to kMaxNackRetries
                self._ask_again(lost, lost_at, rtt)
            self.awaited, self.awaited_until = np.array(keep, dtype=np.int64), np.array(keep_until, dtype=np.float64)
        self.max_seq = max(int(prev[-1]), int(seq[-1]))
        has = gap > 1
        if seen < 0:
            has &= prev >= 0  # (nothing seen before: no gap to ask for)
        where = has.nonzero()[0].tolist()
        if not where:
            return
        s = self.sent
        if not len(s):
            return
        # The missing numbers (as places in the sender's history), each asked for when the packet
        # that showed the gap arrived (a few gaps an interval: plain Python, a range each).
        s0, ns, half = int(s["seq"][0]), len(s), rtt / 2
        idx: list[int] = []
        asked: list[float] = []
        for i in where:
            lo = int(prev[i]) + 1 - s0
            hi = lo + int(gap[i]) - 1
            if lo < 0 or hi > ns:  # no longer (or not yet) in the sender's history
                self.unrecoverable = True
                lo, hi = max(lo, 0), min(hi, ns)
            if lo < hi:
                idx += range(lo, hi)
                asked += [float(t[i]) + half] * (hi - lo)
        if not idx:
            return
        rtx = s.take(idx)
        rtx["t"] = asked
        rtx["sent"] = rtx["t"]
        rtx["size"] += RTX_HEADER
        self.retransmitted += len(rtx)
        if len(self.due):
            due = join([self.due, rtx])
            self.due = due.take(due["t"].argsort(kind="stable"))
        else:  # (asked in arrival order: in time order already)
            self.due = rtx

    def _ask_again(self, seq: list[int], at: list[float], rtt: float) -> None:
        """Retransmissions of ``seq`` were lost: the subscriber asks again at ``at``."""
        tries = self._tries
        s = self.sent
        first = int(s["seq"][0]) if len(s) else 0
        again: list[int] = []
        when: list[float] = []
        for q, a in zip(seq, at, strict=True):
            n = tries.pop(q, 1)
            if n >= MAX_NACK_RETRIES or not 0 <= q - first < len(s):
                self.unrecoverable = True  # given up, or no longer in the sender's history
            else:
                tries[q] = n + 1
                again.append(q - first)
                when.append(a + rtt / 2)
        if again:
            rtx = s.take(again)
            rtx["t"] = when
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
        out, self.due = copy(d[:k]), d[k:]
        if out["t"][0] < start:  # (in send order: the first is the earliest)
            out["t"] = np.maximum(out["t"], start)
            out["sent"] = out["t"]
        self.awaited = np.concatenate((self.awaited, out["seq"]))
        self.awaited_until = np.concatenate((self.awaited_until, out["t"] + self.patience))
        return out
