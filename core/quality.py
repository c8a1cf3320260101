"""Network quality scorer: a level 0..5 relative to what the session demands.

Theory of operation
===================

The scorer answers one question, once per stats sample: *can this network carry the media this
session demands, and how well?*  The answer is a level, as in the Twilio Video network quality
API (docs/references.md#twilio-video-network-quality): 5 very good, 4 good, 3 fair, 2 bad,
1 very bad, 0 broken (reconnecting).

**Sides.**  The demand (:class:`QualityDemand`) names up to four *sides*: audio and video, each
sent and/or received.  A side carries demand when its demanded bitrate is positive.  Each sample
(:class:`QualityInput`) may carry one :class:`SideMetrics` per side; any field may be ``None``
(not observed).

**Components.**  Every side is judged on three components, each first turned into a *score* on
the 0..100 scale of the E-model's transmission rating factor R, then into a level by one table
(:attr:`ScorerConfig.level_thresholds`, the ITU-T G.107/G.109 user-satisfaction bands):

* *bandwidth*: ``score = 100 + slope * ln(min(1, bps / demanded))`` (LiveKit's
  ``100 - 20 ln(expected/actual)``), computed for the measured bitrate and, when known, for the
  available-bandwidth estimate; the component is the worse of the two.  The demanded bitrate of
  video comes from its resolution (a table of Jitsi's VP8 targets) scaled by fps/30; audio has a
  fixed demand.
* *latency*: rtt and jitter through the Twilio voice effective latency
  ``EL = rtt + 2 jitter + 10 ms`` and its E-model-style delay impairment (R with no loss).
* *fractionLost*: ``score = 100 - weight * loss%``, with half LiveKit's codec weights (Opus 8,
  video 10 -> audio 4, video 5, the same 4:5 ratio).  LiveKit's buckets are 20 to 40 points wide,
  ours 10, so its full weights would put 4 % video loss at level 1 where LiveKit says GOOD; halved,
  the video edges land on LiveKit's own (EXCELLENT < 2 %, POOR < 8 % loss) and on the diagnostics
  app's "poor" at 8 %, and the audio edges near Jitsi's audio-only table
  (docs/references.md#twilio-video-preflight, docs/references.md#quality-scoring).

The same latency model serves video: interactivity suffers from delay whatever the media.  A
missing rtt or jitter counts as 0 while the other is known (aiortc reports no rtt until an RTCP
receiver report echoes a sender report).

With the defaults, the edges of levels 5 / 4 / 3 / 2 (below the last: 1) are:

==================  =========  =========  =========  =========
bitrate / demand    >= 61 %    >= 37 %    >= 22 %    >= 14 %
effective latency   <= 168 ms  <= 268 ms  <= 368 ms  <= 468 ms   (rtt + 2 jitter + 10 ms)
audio loss          <= 2.5 %   <= 5 %     <= 7.5 %   <= 10 %
video loss          <= 2 %     <= 4 %     <= 6 %     <= 8 %
==================  =========  =========  =========  =========

A side's level is the minimum of its *known* components; the raw level is the minimum over the
sides that carry demand (:func:`raw_level`).  Special cases, in this order: reconnecting -> 0; no
demand at all -> 5; demand but not one known component -> *unknown* (:func:`raw_level` says 5:
no evidence of a problem; the scorer keeps its previous level).  A component with no data is
never scored red: the Jitsi issue tracker's lesson (docs/references.md#quality-scoring).  Metrics that arrive in a
reconnecting sample are stale and are not recorded.

**Smoothing** (:class:`NetworkQualityScorer`, driven only by the ``now`` the caller passes):

* rtt and jitter enter the score as the lower median of the observations of the last
  ``latency_window`` seconds, so one spike never moves the level: a rise counts once it is seen
  in more than half of the window (the Twilio voice SDK raises a warning on 3 of the last 5
  one-second samples; LiveKit dropped rtt/jitter from its score because single samples made it
  flap).  Bitrate and loss are already averages over a sampling interval and enter as they are.
* hysteresis on the level: a drop shows at once; a rise happens one level at a time, each after
  the raw level has stayed above the current level for ``rise_interval`` seconds (measured
  between the samples that saw it; with one sample a second, 3 samples in a row).  A sample
  whose raw level is equal or lower restarts the clock; a sample with no known data changes
  nothing.  So a metric oscillating around a threshold makes the level drop once and stay down,
  instead of flapping: it never stays above for a whole rise interval.  The same rule applies
  after a reconnection or a bad spell: 0 -> 5 takes 5 rise intervals, 10 s with the defaults,
  one preflight of Twilio Video's default duration, so a single bad sample cannot pin a 10 s test
  at its floor.  The shape is Jitsi's and LiveKit's (rises gradual, drops at once); their rates
  are slower (Jitsi's +2 points/s would be 5 s per 10-point level) because they score calls that
  last minutes, not a 10 s test.

Verbosity (docs/references.md#twilio-video-network-quality) trims the output: 0 and 1 give the
level only (rtcprobe always knows its own level, so "none" keeps it), 2 adds the per-media
send/recv levels, 3 everything.

The output, :class:`NetworkQualityStats`, has the shape of Twilio's ``NetworkQualityStats``
(bandwidth in bps, jitter and rtt in seconds).  Its top ``level`` is the smoothed level; the
per-media ``send``/``recv`` levels and the component levels are those of the latest sample
(after the rtt/jitter window), so they show *why* the level is what it is.

This module is pure (docs/architecture.md#the-sans-io-contract): no I/O, no clock, no randomness.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Mapping
from typing import Any, Final, Literal

import attrs

from .config import MediaDemand, VideoSpec
from .errors import ConfigError

Media = Literal["audio", "video"]
Direction = Literal["send", "recv"]

MEDIA: Final[tuple[Media, ...]] = ("audio", "video")
DIRECTIONS: Final[tuple[Direction, ...]] = ("send", "recv")

# --------------------------------------------------------------------------------------------
# Levels
# --------------------------------------------------------------------------------------------

#: The best level.  Also the level before any sample and the level of a session with no demand:
#: nothing has shown a problem (docs/references.md#twilio-video-network-quality: "no tracks -> 5";
#: LiveKit: no tracks -> excellent).
LEVEL_MAX: Final = 5
#: The worst level a connected network gets (Twilio Video's "very bad").
LEVEL_MIN: Final = 1
#: Broken: the connection is reconnecting (Twilio Video's level 0).
LEVEL_BROKEN: Final = 0

# --------------------------------------------------------------------------------------------
# Reference formulas (docs/references.md#quality-scoring).  The references' own constants, not tunables.
# --------------------------------------------------------------------------------------------

#: Twilio voice SDK (mos.ts): R of a perfect call (the G.107 default R0 93.2, as Twilio tuned it).
TWILIO_R0: Final = 94.768
#: Twilio voice effective latency: jitter counts twice (the jitter buffer holds about 2x jitter).
EL_JITTER_FACTOR: Final = 2.0
#: Twilio voice effective latency: fixed codec and processing delay added to rtt, in ms.
EL_OVERHEAD_MS: Final = 10.0
#: Below this effective latency (ms) delay costs 1 R per EL_SLOPE_LOW_MS, above it 1 R per
#: EL_SLOPE_HIGH_MS (the E-model's Id knee, 177.3 ms one way, as Twilio approximated it).
EL_KNEE_MS: Final = 160.0
EL_SLOPE_LOW_MS: Final = 40.0
EL_SLOPE_HIGH_MS: Final = 10.0
#: Offset of the steep branch: the two branches meet at the knee (160/40 = (160 - 120)/10 = 4 R).
EL_HIGH_OFFSET_MS: Final = 120.0
#: At or beyond this effective latency (ms) Twilio's R is 0: a conversation is impossible.
EL_MAX_MS: Final = 1000.0
#: Twilio voice: each percent of packet loss costs 2.5 R.
LOSS_R_PER_PCT: Final = 2.5
#: Twilio voice: the R floor while loss does not exceed R/2.5 (MOS(6.52) is 1.0, the minimum).
R_FLOOR: Final = 6.52
#: ITU-T G.107 MOS scale limits.
MOS_MIN: Final = 1.0
MOS_MAX: Final = 4.5
#: ITU-T G.107 (simplified): R0 with default parameters.
EMODEL_R0: Final = 93.2
#: ITU-T G.107 delay impairment Id = 0.024 d + 0.11 (d - 177.3) H(d - 177.3), d one-way ms.
ID_SLOPE: Final = 0.024
ID_KNEE_MS: Final = 177.3
ID_EXTRA_SLOPE: Final = 0.11
#: ITU-T G.113 Bpl of G.711 with packet loss concealment: the default robustness for emodel_r.
G711_PLC_BPL: Final = 25.1


def mos_from_r(r: float) -> float:
    """ITU-T G.107 R -> MOS: ``1 + 0.035 R + 7e-6 R (R - 60) (100 - R)``, clamped to 1..4.5."""
    if r <= 0:
        return MOS_MIN
    if r >= 100:
        return MOS_MAX
    mos = 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r)
    return min(MOS_MAX, max(MOS_MIN, mos))


def twilio_voice_r(rtt_ms: float, jitter_ms: float, loss_pct: float) -> float:
    """The Twilio voice SDK's R factor from rtt (ms), jitter (ms) and loss (percent)."""
    el = rtt_ms + EL_JITTER_FACTOR * jitter_ms + EL_OVERHEAD_MS
    if el < EL_KNEE_MS:
        r = TWILIO_R0 - el / EL_SLOPE_LOW_MS
    elif el < EL_MAX_MS:
        r = TWILIO_R0 - (el - EL_HIGH_OFFSET_MS) / EL_SLOPE_HIGH_MS
    else:
        r = 0.0
    if loss_pct <= r / LOSS_R_PER_PCT:
        return max(r - LOSS_R_PER_PCT * loss_pct, R_FLOOR)
    return 0.0


def twilio_voice_mos(rtt_ms: float, jitter_ms: float, loss_pct: float) -> float:
    """The Twilio voice SDK's MOS: (20, 5, 0) -> 4.42; (200, 30, 3) -> 3.70; (400, 30, 5) -> 2.43."""
    return mos_from_r(twilio_voice_r(rtt_ms, jitter_ms, loss_pct))


def emodel_r(
    one_way_delay_ms: float,
    loss_pct: float = 0.0,
    *,
    ie: float = 0.0,
    bpl: float = G711_PLC_BPL,
    burst_r: float = 1.0,
) -> float:
    """Simplified ITU-T G.107 R = 93.2 - Id - Ie_eff (Ie_eff = Ie + (95 - Ie) Ppl / (Ppl/BurstR + Bpl))."""
    d = one_way_delay_ms
    i_d = ID_SLOPE * d + (ID_EXTRA_SLOPE * (d - ID_KNEE_MS) if d > ID_KNEE_MS else 0.0)
    ie_eff = ie + (95 - ie) * loss_pct / (loss_pct / burst_r + bpl)
    return EMODEL_R0 - i_d - ie_eff


def emodel_mos(
    one_way_delay_ms: float,
    loss_pct: float = 0.0,
    *,
    ie: float = 0.0,
    bpl: float = G711_PLC_BPL,
    burst_r: float = 1.0,
) -> float:
    """MOS of :func:`emodel_r` (R 93.2 -> 4.41, 80 -> 4.02, 70 -> 3.60, 60 -> 3.10, 50 -> 2.58)."""
    return mos_from_r(emodel_r(one_way_delay_ms, loss_pct, ie=ie, bpl=bpl, burst_r=burst_r))


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def _finite_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _positive(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not _finite_number(value) or not value > 0:  # type: ignore[operator]
        raise ConfigError(f"{attribute.name} must be a positive finite number, got {value!r}")


def _thresholds(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if (
        not isinstance(value, tuple)
        or len(value) != LEVEL_MAX - LEVEL_MIN
        or not all(_finite_number(t) and 0 < t <= 100 for t in value)
        or any(a <= b for a, b in itertools.pairwise(value))
    ):
        raise ConfigError(
            f"{attribute.name} must be {LEVEL_MAX - LEVEL_MIN} strictly decreasing scores in (0, 100] "
            f"(the lowest scores for levels {LEVEL_MAX}..{LEVEL_MIN + 1}), got {value!r}"
        )


def _bitrate_row(row: object) -> bool:
    return (
        isinstance(row, tuple)
        and len(row) == 2
        and isinstance(row[0], int)
        and not isinstance(row[0], bool)
        and row[0] > 0
        and _finite_number(row[1])
        and row[1] > 0
    )


def _bitrate_table(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if (
        not isinstance(value, tuple)
        or not value
        or not all(_bitrate_row(row) for row in value)
        or not all(a[0] < b[0] and a[1] <= b[1] for a, b in itertools.pairwise(value))
    ):
        raise ConfigError(
            f"{attribute.name} must be a non-empty tuple of (max_pixels: int > 0, bps > 0) rows with "
            f"max_pixels strictly increasing and bps non-decreasing, got {value!r}"
        )


@attrs.frozen
class ScorerConfig:
    """Every tunable of the scorer, with its reasoning and reference.  Frozen, validated at once.

    The validators keep the scorer's guarantees true for *any* valid configuration: levels
    bounded, never better when a metric or the demand gets worse.
    """

    #: Lowest score (0..100, the E-model R scale) of levels 5, 4, 3, 2; below the last is level 1.
    #: ITU-T G.109 / G.107 Annex B user-satisfaction bands: R >= 90 very satisfied, 80 satisfied,
    #: 70 some users dissatisfied, 60 many dissatisfied, below: nearly all dissatisfied.
    level_thresholds: tuple[float, float, float, float] = attrs.field(
        default=(90.0, 80.0, 70.0, 60.0), validator=_thresholds
    )
    #: Bandwidth score = 100 + slope * ln(bps / demanded): LiveKit's 100 - 20 ln(expected/actual).
    #: With the bands above: >= 61 % of demand -> 5, 37 % -> 4, 22 % -> 3, 14 % -> 2.
    bandwidth_log_slope: float = attrs.field(default=20.0, validator=_positive)
    #: Loss score = 100 - weight * loss%.  Half LiveKit's Opus weight 8, keeping its audio:video
    #: ratio 8:10 = 4:5: even plain Opus (aiortc sends no FEC, no RED) conceals isolated losses
    #: better than VP8 recovers a lost frame.  <= 2.5 % -> 5, 5 % -> 4, 7.5 % -> 3, 10 % -> 2, close
    #: to Jitsi's audio-only table (<= 2 % -> 100, <= 4 -> 70, <= 6 -> 50, <= 8 -> 30, <= 12 -> 10).
    audio_loss_weight: float = attrs.field(default=4.0, validator=_positive)
    #: Half LiveKit's video weight 10, because our levels are 10 points wide and its buckets wider:
    #: the edges <= 2 % -> 5, 4 % -> 4, 6 % -> 3, 8 % -> 2 fall on LiveKit's own with weight 10
    #: (EXCELLENT > 80: < 2 %, GOOD > 40: < 6 %, POOR > 20: < 8 %) and the diagnostics app's
    #: packet-loss grades (good 1 %, suboptimal 3 %, poor 8 %: beyond 8 % we say 1, very bad).
    video_loss_weight: float = attrs.field(default=5.0, validator=_positive)
    #: Audio demand in bps: libwebrtc's default Opus bitrate for mono voice (32 kbit/s).  aiortc's
    #: Opus encoder always sends 96 kbit/s, so with aiortc the actual bitrate exceeds the demand and
    #: a link too thin for it shows up as loss, not as a bandwidth shortfall.
    audio_demand_bps: float = attrs.field(default=32_000.0, validator=_positive)
    #: Video demand at ``video_reference_fps``: (max pixels, bps) rows, the first row whose
    #: max_pixels >= width*height applies, beyond the last row its bps.  Jitsi's resolution classes
    #: (ConnectionQuality: 180p/270p low, 360p/540p standard, 720p high) with its VP8 targets
    #: (low 200, standard 500, high 1500, fullHd 3000, ultraHd 6000 kbit/s).  500 kbit/s is also
    #: aiortc's default VP8 target (its synthetic 640x480@30 sends ~550 kbit/s) and 1.5 Mbit/s
    #: aiortc's maximum, so aiortc cannot meet demands beyond 720p@30.
    video_bitrate_table: tuple[tuple[int, float], ...] = attrs.field(
        default=(
            (480 * 270, 200_000.0),
            (960 * 540, 500_000.0),
            (1280 * 720, 1_500_000.0),
            (1920 * 1080, 3_000_000.0),
            (3840 * 2160, 6_000_000.0),
        ),
        validator=_bitrate_table,
    )
    #: The frame rate the table's bitrates are for; a demand scales by fps / this (Jitsi's targets
    #: are for 30 fps; bits per second are roughly proportional to frames per second).
    video_reference_fps: float = attrs.field(default=30.0, validator=_positive)
    #: Seconds of rtt/jitter observations whose lower median is scored (an observation at exactly
    #: ``now - window`` is out).  LiveKit scores 5 s windows; at one sample per second this is the
    #: Twilio voice SDK's "3 of the last 5 samples" rule, so one spike never moves the level.
    latency_window: float = attrs.field(default=5.0, validator=_positive)
    #: Seconds the raw level must stay above the smoothed level for each +1 step: 0 -> 5 in 10 s,
    #: one preflight of Twilio Video's default duration, so one bad sample cannot pin the whole test
    #: at its floor; an oscillating raw level still never rises (equal or lower restarts the clock).
    #: Jitsi (rises capped at +2 points/s) and LiveKit (rise factor 0.4 per 5 s window) give the
    #: shape, gradual rises and immediate drops; their slower rates (Jitsi's would be 5 s per
    #: 10-point level) are for calls lasting minutes, not a 10 s test.
    rise_interval: float = attrs.field(default=2.0, validator=_positive)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScorerConfig:
        """Build from plain data (e.g. a scenario's TOML table); lists become tuples."""
        known = {f.name for f in attrs.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown scorer option(s): {', '.join(sorted(unknown))}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key == "level_thresholds" and isinstance(value, list):
                value = tuple(value)
            elif key == "video_bitrate_table" and isinstance(value, list):
                value = tuple(tuple(row) if isinstance(row, list) else row for row in value)
            kwargs[key] = value
        return cls(**kwargs)


DEFAULT_CONFIG: Final = ScorerConfig()


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def _optional_nonnegative(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None or (type(value) is float and 0.0 <= value < math.inf):  # the common case, fast
        return
    if value is not None and (not _finite_number(value) or value < 0):  # type: ignore[operator]
        raise ConfigError(f"{attribute.name} must be None or a finite number >= 0, got {value!r}")


def _optional_fraction(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None or (type(value) is float and 0.0 <= value <= 1.0):  # the common case, fast
        return
    if value is not None and (not _finite_number(value) or not 0 <= value <= 1):  # type: ignore[operator]
        raise ConfigError(f"{attribute.name} must be None or a fraction in 0..1, got {value!r}")


@attrs.frozen
class SideMetrics:
    """One media, one direction, one sample.  ``None`` = not observed (never scored red).

    A driver that has not measured a bitrate yet must say ``None``, not 0: 0 means nothing flows.
    """

    actual_bps: float | None = attrs.field(default=None, validator=_optional_nonnegative)
    available_bps: float | None = attrs.field(default=None, validator=_optional_nonnegative)
    rtt: float | None = attrs.field(default=None, validator=_optional_nonnegative)  # seconds
    jitter: float | None = attrs.field(default=None, validator=_optional_nonnegative)  # seconds
    fraction_lost: float | None = attrs.field(default=None, validator=_optional_fraction)  # 0..1


_side = attrs.validators.optional(attrs.validators.instance_of(SideMetrics))
_NOTHING: Final = SideMetrics()  # a side with nothing observed


@attrs.frozen
class QualityInput:
    """One stats sample: metrics per side (``None`` = that side not observed)."""

    audio_send: SideMetrics | None = attrs.field(default=None, validator=_side)
    audio_recv: SideMetrics | None = attrs.field(default=None, validator=_side)
    video_send: SideMetrics | None = attrs.field(default=None, validator=_side)
    video_recv: SideMetrics | None = attrs.field(default=None, validator=_side)
    reconnecting: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))

    def side(self, media: Media, direction: Direction) -> SideMetrics | None:
        _check_side(media, direction)
        value: SideMetrics | None = getattr(self, f"{media}_{direction}")
        return value


# Fast constructors for the core's hot path (a preflight builds ~50 SideMetrics and ~15
# QualityInputs): the validators' common case (a float in range or None; a SideMetrics or None and
# a bool) checked inline and the fields set through the slots' descriptors, as attrs' own __init__
# sets them. Anything else goes through the class itself, so its validators raise as they would:
# equally strict, about a third of the cost.
_set_actual, _set_available, _set_rtt, _set_jitter, _set_fraction_lost = (
    SideMetrics.__dict__[a.name].__set__ for a in attrs.fields(SideMetrics)
)
_set_audio_send, _set_audio_recv, _set_video_send, _set_video_recv, _set_reconnecting = (
    QualityInput.__dict__[a.name].__set__ for a in attrs.fields(QualityInput)
)
_new = object.__new__
_INF: Final = math.inf


def _side_metrics(
    actual_bps: float | None,
    available_bps: float | None,
    rtt: float | None,
    jitter: float | None,
    fraction_lost: float | None,
) -> SideMetrics:
    """``SideMetrics(actual_bps, available_bps, rtt, jitter, fraction_lost)``, faster."""
    if (
        (actual_bps is None or (type(actual_bps) is float and 0.0 <= actual_bps < _INF))
        and (available_bps is None or (type(available_bps) is float and 0.0 <= available_bps < _INF))
        and (rtt is None or (type(rtt) is float and 0.0 <= rtt < _INF))
        and (jitter is None or (type(jitter) is float and 0.0 <= jitter < _INF))
        and (fraction_lost is None or (type(fraction_lost) is float and 0.0 <= fraction_lost <= 1.0))
    ):
        m = _new(SideMetrics)
        _set_actual(m, actual_bps)
        _set_available(m, available_bps)
        _set_rtt(m, rtt)
        _set_jitter(m, jitter)
        _set_fraction_lost(m, fraction_lost)
        return m
    return SideMetrics(actual_bps, available_bps, rtt, jitter, fraction_lost)


def _quality_input(
    audio_send: SideMetrics | None,
    audio_recv: SideMetrics | None,
    video_send: SideMetrics | None,
    video_recv: SideMetrics | None,
    reconnecting: bool,
) -> QualityInput:
    """``QualityInput(audio_send, audio_recv, video_send, video_recv, reconnecting)``, faster."""
    if (
        (audio_send is None or type(audio_send) is SideMetrics)
        and (audio_recv is None or type(audio_recv) is SideMetrics)
        and (video_send is None or type(video_send) is SideMetrics)
        and (video_recv is None or type(video_recv) is SideMetrics)
        and (reconnecting is True or reconnecting is False)
    ):
        q = _new(QualityInput)
        _set_audio_send(q, audio_send)
        _set_audio_recv(q, audio_recv)
        _set_video_send(q, video_send)
        _set_video_recv(q, video_recv)
        _set_reconnecting(q, reconnecting)
        return q
    return QualityInput(audio_send, audio_recv, video_send, video_recv, reconnecting)


def _check_side(media: object, direction: object) -> None:
    if media not in MEDIA or direction not in DIRECTIONS:
        raise ConfigError(f"no such side: media={media!r} direction={direction!r}")


def video_demand_bps(spec: VideoSpec, config: ScorerConfig = DEFAULT_CONFIG) -> float:
    """Demanded bitrate of a video stream: its resolution's row of the table, scaled by fps."""
    pixels = spec.width * spec.height
    table = config.video_bitrate_table
    bps = next((row_bps for max_pixels, row_bps in table if pixels <= max_pixels), table[-1][1])
    return bps * spec.fps / config.video_reference_fps


_video = attrs.validators.optional(attrs.validators.instance_of(VideoSpec))
_bool = attrs.validators.instance_of(bool)


@attrs.frozen
class QualityDemand:
    """What the session demands, per direction.  ``QualityDemand()`` demands nothing (idle)."""

    audio_send: bool = attrs.field(default=False, validator=_bool)
    audio_recv: bool = attrs.field(default=False, validator=_bool)
    video_send: VideoSpec | None = attrs.field(default=None, validator=_video)
    video_recv: VideoSpec | None = attrs.field(default=None, validator=_video)

    @classmethod
    def symmetric(cls, media: MediaDemand) -> QualityDemand:
        """The preflight publishes ``media`` and subscribes to the same media back."""
        return cls(audio_send=media.audio, audio_recv=media.audio, video_send=media.video, video_recv=media.video)

    def demanded_bps(self, media: Media, direction: Direction, config: ScorerConfig = DEFAULT_CONFIG) -> float:
        """Demanded bitrate of one side in bps; 0 when that side carries no demand."""
        _check_side(media, direction)
        if media == "audio":
            return config.audio_demand_bps if getattr(self, f"audio_{direction}") else 0.0
        spec: VideoSpec | None = getattr(self, f"video_{direction}")
        return 0.0 if spec is None else video_demand_bps(spec, config)

    @property
    def idle(self) -> bool:
        """Nothing published, nothing subscribed."""
        return not (self.audio_send or self.audio_recv or self.video_send or self.video_recv)


# --------------------------------------------------------------------------------------------
# Output: the shape of Twilio's NetworkQualityStats (bandwidth bps, jitter and rtt seconds)
# --------------------------------------------------------------------------------------------


@attrs.frozen
class NetworkQualityBandwidthStats:
    actual: float | None
    available: float | None
    level: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"actual": self.actual, "available": self.available, "level": self.level}


@attrs.frozen
class NetworkQualityLatencyStats:
    jitter: float | None
    rtt: float | None
    level: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"jitter": self.jitter, "rtt": self.rtt, "level": self.level}


@attrs.frozen
class NetworkQualityFractionLostStats:
    fraction_lost: float | None
    level: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"fractionLost": self.fraction_lost, "level": self.level}


@attrs.frozen
class NetworkQualitySendOrRecvStats:
    bandwidth: NetworkQualityBandwidthStats
    latency: NetworkQualityLatencyStats
    fraction_lost: NetworkQualityFractionLostStats

    @property
    def level(self) -> int | None:
        """The side's level: the worst known component, ``None`` when none is known."""
        known = [c.level for c in (self.bandwidth, self.latency, self.fraction_lost) if c.level is not None]
        return min(known) if known else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "bandwidth": self.bandwidth.to_dict(),
            "latency": self.latency.to_dict(),
            "fractionLost": self.fraction_lost.to_dict(),
        }


@attrs.frozen
class NetworkQualityMediaStats:
    send: int | None
    recv: int | None
    send_stats: NetworkQualitySendOrRecvStats | None
    recv_stats: NetworkQualitySendOrRecvStats | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "send": self.send,
            "recv": self.recv,
            "sendStats": None if self.send_stats is None else self.send_stats.to_dict(),
            "recvStats": None if self.recv_stats is None else self.recv_stats.to_dict(),
        }


@attrs.frozen
class NetworkQualityStats:
    """``level`` is the smoothed level; media and component levels are the latest sample's."""

    level: int
    audio: NetworkQualityMediaStats | None
    video: NetworkQualityMediaStats | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "audio": None if self.audio is None else self.audio.to_dict(),
            "video": None if self.video is None else self.video.to_dict(),
        }


#: Verbosity levels (docs/references.md#twilio-video-network-quality): none, minimal (level only),
#: moderate (+ media send/recv levels), detailed (+ per-side stats).
VERBOSITY_NONE: Final = 0
VERBOSITY_MINIMAL: Final = 1
VERBOSITY_MODERATE: Final = 2
VERBOSITY_DETAILED: Final = 3
#: Twilio Video's defaults: the local participant reports minimal, remote participants none.
LOCAL_VERBOSITY_DEFAULT: Final = VERBOSITY_MINIMAL
REMOTE_VERBOSITY_DEFAULT: Final = VERBOSITY_NONE


def normalize_verbosity(value: object, *, local: bool) -> int:
    """Twilio Video's rule: a valid value (local 1..3, remote 0..3) is kept, anything else falls
    back to the default (local 1, remote 0).  For API layers taking user options."""
    low, default = (VERBOSITY_MINIMAL, LOCAL_VERBOSITY_DEFAULT) if local else (VERBOSITY_NONE, REMOTE_VERBOSITY_DEFAULT)
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= VERBOSITY_DETAILED:
        return value
    return default


# --------------------------------------------------------------------------------------------
# Scores and levels: pure functions
# --------------------------------------------------------------------------------------------


def level_for_score(score: float, config: ScorerConfig = DEFAULT_CONFIG) -> int:
    """Map a 0..100 score to 5..1 with ``config.level_thresholds`` (score >= threshold)."""
    level = LEVEL_MAX
    for threshold in config.level_thresholds:  # (one per level from LEVEL_MAX down to LEVEL_MIN + 1)
        if score >= threshold:
            return level
        level -= 1
    return LEVEL_MIN


def bandwidth_score(bps: float, demanded_bps: float, config: ScorerConfig = DEFAULT_CONFIG) -> float:
    """100 when ``bps`` meets the demand, ``100 + slope ln(bps/demanded)`` below it (-inf at 0)."""
    if demanded_bps <= 0 or bps >= demanded_bps:
        return 100.0
    ratio = bps / demanded_bps
    if ratio <= 0:  # nothing flows (or a ratio too small for a float)
        return -math.inf
    return 100.0 + config.bandwidth_log_slope * math.log(ratio)


def latency_score(rtt: float | None, jitter: float | None) -> float | None:
    """Twilio voice R with no loss, from rtt and jitter in seconds; a missing one counts as 0,
    both missing -> ``None`` (unknown)."""
    if rtt is None and jitter is None:
        return None
    return twilio_voice_r(1000.0 * (rtt or 0.0), 1000.0 * (jitter or 0.0), 0.0)


def loss_score(fraction_lost: float, media: Media, config: ScorerConfig = DEFAULT_CONFIG) -> float:
    """``100 - weight * loss%`` with the codec weight of ``media``."""
    weight = config.audio_loss_weight if media == "audio" else config.video_loss_weight
    return 100.0 - weight * 100.0 * fraction_lost


def bandwidth_level(metrics: SideMetrics, demanded_bps: float, config: ScorerConfig = DEFAULT_CONFIG) -> int | None:
    """The worse of actual-vs-demand and available-vs-demand; ``None`` when neither is known."""
    worst: int | None = None
    for bps in (metrics.actual_bps, metrics.available_bps):
        if bps is not None:
            level = level_for_score(bandwidth_score(bps, demanded_bps, config), config)
            if worst is None or level < worst:
                worst = level
    return worst


def latency_level(metrics: SideMetrics, config: ScorerConfig = DEFAULT_CONFIG) -> int | None:
    score = latency_score(metrics.rtt, metrics.jitter)
    return None if score is None else level_for_score(score, config)


def fraction_lost_level(metrics: SideMetrics, media: Media, config: ScorerConfig = DEFAULT_CONFIG) -> int | None:
    if metrics.fraction_lost is None:
        return None
    return level_for_score(loss_score(metrics.fraction_lost, media, config), config)


def side_level(
    media: Media, metrics: SideMetrics, demanded_bps: float, config: ScorerConfig = DEFAULT_CONFIG
) -> int | None:
    """``assess_side(...).level`` without building the stats: the worst known component."""
    values = (metrics.actual_bps, metrics.available_bps, metrics.rtt, metrics.jitter, metrics.fraction_lost)
    return _values_level(media, values, demanded_bps, config)


# A side's metrics as plain values, in SideMetrics' field order (the scorer's hot path).
_Values = tuple[float | None, float | None, float | None, float | None, float | None]
_NO_VALUES: Final[_Values] = (None, None, None, None, None)


def _bandwidth_level(actual: float | None, available: float | None, demanded_bps: float,
                     config: ScorerConfig) -> int | None:
    """The bandwidth component's level: the worse of what was sent and what was available."""
    worst: int | None = None
    for bps in (actual, available):
        if bps is not None:
            level = level_for_score(bandwidth_score(bps, demanded_bps, config), config)
            if worst is None or level < worst:
                worst = level
    return worst


def _values_level(media: Media, values: _Values, demanded_bps: float, config: ScorerConfig) -> int | None:
    """:func:`side_level` on plain values: the component levels of bandwidth_level, latency_level
    and fraction_lost_level, the worst of the known ones."""
    actual, available, rtt, jitter, fraction_lost = values
    worst = _bandwidth_level(actual, available, demanded_bps, config)
    score = latency_score(rtt, jitter)
    if score is not None:
        level = level_for_score(score, config)
        if worst is None or level < worst:
            worst = level
    if fraction_lost is not None:
        level = level_for_score(loss_score(fraction_lost, media, config), config)
        if worst is None or level < worst:
            worst = level
    return worst


def assess_side(
    media: Media, metrics: SideMetrics | None, demanded_bps: float, config: ScorerConfig = DEFAULT_CONFIG
) -> NetworkQualitySendOrRecvStats:
    """The three components of one side, values and levels (``None`` where unknown)."""
    if metrics is None:
        return _assess(media, _NO_VALUES, demanded_bps, config)
    m = metrics
    return _assess(media, (m.actual_bps, m.available_bps, m.rtt, m.jitter, m.fraction_lost), demanded_bps, config)


def _assess(media: Media, values: _Values, demanded_bps: float, config: ScorerConfig) -> NetworkQualitySendOrRecvStats:
    """:func:`assess_side` on plain values: bandwidth_level, latency_level and fraction_lost_level."""
    actual, available, rtt, jitter, fraction_lost = values
    bandwidth = _bandwidth_level(actual, available, demanded_bps, config)
    latency = latency_score(rtt, jitter)
    return NetworkQualitySendOrRecvStats(
        bandwidth=NetworkQualityBandwidthStats(actual, available, bandwidth),
        latency=NetworkQualityLatencyStats(jitter, rtt, None if latency is None else level_for_score(latency, config)),
        fraction_lost=NetworkQualityFractionLostStats(
            fraction_lost,
            None if fraction_lost is None else level_for_score(loss_score(fraction_lost, media, config), config),
        ),
    )


def raw_level_or_none(demand: QualityDemand, sample: QualityInput, config: ScorerConfig = DEFAULT_CONFIG) -> int | None:
    """The unsmoothed level, or ``None`` when demand exists but no component is known."""
    if sample.reconnecting:
        return LEVEL_BROKEN
    if demand.idle:
        return LEVEL_MAX
    levels = []
    for media in MEDIA:
        for direction in DIRECTIONS:
            demanded = demand.demanded_bps(media, direction, config)
            if demanded > 0:
                metrics = sample.side(media, direction)
                level = side_level(media, metrics if metrics is not None else _NOTHING, demanded, config)
                if level is not None:
                    levels.append(level)
    return min(levels) if levels else None


def raw_level(demand: QualityDemand, sample: QualityInput, config: ScorerConfig = DEFAULT_CONFIG) -> int:
    """The unsmoothed level 0..5 of one sample; 5 when nothing is known (no evidence of trouble)."""
    level = raw_level_or_none(demand, sample, config)
    return LEVEL_MAX if level is None else level


def build_stats(
    level: int,
    demand: QualityDemand,
    sample: QualityInput,
    verbosity: int = VERBOSITY_DETAILED,
    config: ScorerConfig = DEFAULT_CONFIG,
) -> NetworkQualityStats:
    """:class:`NetworkQualityStats` trimmed to ``verbosity`` (0 and 1: level only; 2: + media
    send/recv levels; 3: + per-side stats).  A media carrying no demand is ``None``; a side
    carrying no demand has level and stats ``None``.  Verbosity outside 0..3 is caller misuse."""
    sides = [(media, demand.demanded_bps(media, direction, config)) for media in MEDIA for direction in DIRECTIONS]
    values = [None if (m := sample.side(media, direction)) is None
              else (m.actual_bps, m.available_bps, m.rtt, m.jitter, m.fraction_lost)
              for media in MEDIA for direction in DIRECTIONS]
    return _stats(level, sides, values, verbosity, config)


def _stats(
    level: int,
    sides: list[tuple[Media, float]],
    values: list[_Values | None],
    verbosity: int,
    config: ScorerConfig,
) -> NetworkQualityStats:
    """:func:`build_stats` from each side's media and demand and its values (``None``: not
    observed), in MEDIA x DIRECTIONS order."""
    if isinstance(verbosity, bool) or not isinstance(verbosity, int) or not 0 <= verbosity <= VERBOSITY_DETAILED:
        raise ConfigError(f"verbosity must be an int in 0..3, got {verbosity!r}")
    if verbosity <= VERBOSITY_MINIMAL:
        return NetworkQualityStats(level, None, None)
    assessed = [
        _assess(media, _NO_VALUES if v is None else v, demanded, config) if demanded > 0 else None
        for (media, demanded), v in zip(sides, values, strict=True)
    ]
    detailed = verbosity >= VERBOSITY_DETAILED
    media_stats: list[NetworkQualityMediaStats | None] = []
    for send, recv in ((assessed[0], assessed[1]), (assessed[2], assessed[3])):
        if send is None and recv is None:
            media_stats.append(None)
            continue
        media_stats.append(NetworkQualityMediaStats(
            send=None if send is None else send.level,
            recv=None if recv is None else recv.level,
            send_stats=send if detailed else None,
            recv_stats=recv if detailed else None,
        ))
    return NetworkQualityStats(level, media_stats[0], media_stats[1])


# --------------------------------------------------------------------------------------------
# The stateful scorer
# --------------------------------------------------------------------------------------------


class _Window:
    """Timestamped observations of one metric; the lower median of those newer than the window."""

    def __init__(self) -> None:
        self._times: deque[float] = deque()
        self._values: deque[float] = deque()

    def observe(self, now: float, value: float | None, window: float) -> float | None:
        """Add ``value`` (unless None) seen at ``now``, drop what is ``window`` seconds old or
        older, and return the lower median of what is left (None: nothing)."""
        times, values = self._times, self._values
        if value is not None:
            times.append(now)
            values.append(value)
        while times and now - times[0] >= window:
            times.popleft()
            values.popleft()
        if not values:
            return None
        # The lower median, by hand: the stdlib ``statistics`` module imports ``random``.
        return sorted(values)[(len(values) - 1) // 2]


class NetworkQualityScorer:
    """Smoothed network quality level, fed one :class:`QualityInput` per stats sample.

    ``now`` (seconds, monotonic, chosen by the caller) must never go backwards.
    """

    def __init__(self, demand: QualityDemand, config: ScorerConfig = DEFAULT_CONFIG) -> None:
        if not isinstance(demand, QualityDemand):
            raise ConfigError(f"demand must be a QualityDemand, got {demand!r}")
        if not isinstance(config, ScorerConfig):
            raise ConfigError(f"config must be a ScorerConfig, got {config!r}")
        self._demand = demand
        self._config = config
        self._level = LEVEL_MAX
        self._raw: int | None = None
        self._now: float | None = None
        self._rise_since: float | None = None
        # Per side, in MEDIA x DIRECTIONS order (QualityInput's field order): what update() reads
        # (the demand never changes).
        audio, video_send, video_recv = config.audio_demand_bps, demand.video_send, demand.video_recv
        self._side_demands: list[tuple[Media, float]] = [  # demanded_bps of each, without its checks
            ("audio", audio if demand.audio_send else 0.0),
            ("audio", audio if demand.audio_recv else 0.0),
            ("video", 0.0 if video_send is None else video_demand_bps(video_send, config)),
            ("video", 0.0 if video_recv is None else video_demand_bps(video_recv, config)),
        ]
        self._sides = [
            (_Window(), _Window(), demanded, config.audio_loss_weight if m == "audio" else config.video_loss_weight)
            for m, demanded in self._side_demands
        ]
        # The latest sample as scored (rtt and jitter from the windows), per side: what stats() shows.
        self._scored: list[_Values | None] = [None, None, None, None]

    @property
    def demand(self) -> QualityDemand:
        return self._demand

    @property
    def config(self) -> ScorerConfig:
        return self._config

    @property
    def level(self) -> int:
        """The smoothed level 0..5 (5 before any sample)."""
        return self._level

    @property
    def raw(self) -> int | None:
        """The latest sample's unsmoothed level (``None``: no sample yet, or nothing known)."""
        return self._raw

    @property
    def rise_deadline(self) -> float | None:
        """When the level rises by one if every sample until then keeps the raw level above it."""
        return None if self._rise_since is None else self._rise_since + self._config.rise_interval

    def update(self, now: float, sample: QualityInput) -> int:
        """Score one sample taken at ``now``; returns the smoothed level."""
        if (type(now) is not float or now - now != 0.0) and (  # a finite float, inline (inf - inf is NaN)
            isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now)
        ):
            raise ValueError(f"now must be a finite number of seconds, got {now!r}")
        if self._now is not None and now < self._now:
            raise ValueError(f"now went backwards: {now!r} < {self._now!r}")
        if not isinstance(sample, QualityInput):
            raise TypeError(f"sample must be a QualityInput, got {sample!r}")
        self._now = now
        window = self._config.latency_window
        reconnecting = sample.reconnecting
        scored: list[_Values | None] = []
        # The sample as scored (rtt and jitter from the windows), as plain values: stats() reads
        # them without building a QualityInput. The raw level is raw_level_or_none's,
        # worked out from the sides' worst score: level_for_score is monotonic, so the level of
        # the lowest score is the lowest level (and no score is NaN: every metric is a finite
        # number >= 0, every demand > 0), one lookup instead of one per component.
        config = self._config
        slope = config.bandwidth_log_slope
        worst = math.inf  # no component known (every score is below: at most 100)
        inputs = (sample.audio_send, sample.audio_recv, sample.video_send, sample.video_recv)
        for metrics, (rtt_w, jitter_w, demanded, loss_weight) in zip(inputs, self._sides, strict=True):
            if metrics is None:
                rtt, jitter = rtt_w.observe(now, None, window), jitter_w.observe(now, None, window)
                values: _Values = (None, None, rtt, jitter, None)
            else:
                if reconnecting:  # stale: not recorded
                    rtt, jitter = rtt_w.observe(now, None, window), jitter_w.observe(now, None, window)
                else:
                    rtt = rtt_w.observe(now, metrics.rtt, window)
                    jitter = jitter_w.observe(now, metrics.jitter, window)
                values = (metrics.actual_bps, metrics.available_bps, rtt, jitter, metrics.fraction_lost)
            scored.append(None if values == _NO_VALUES else values)
            if demanded > 0 and not reconnecting:
                # The component scores of _values_level, the same operations.
                for bps in (values[0], values[1]):
                    if bps is not None:
                        if bps < demanded:
                            ratio = bps / demanded
                            score = -math.inf if ratio <= 0 else 100.0 + slope * math.log(ratio)
                        else:
                            score = 100.0
                        if score < worst:
                            worst = score
                if rtt is not None or jitter is not None:
                    score = twilio_voice_r(1000.0 * (rtt or 0.0), 1000.0 * (jitter or 0.0), 0.0)
                    if score < worst:
                        worst = score
                fraction_lost = values[4]
                if fraction_lost is not None:
                    score = 100.0 - loss_weight * 100.0 * fraction_lost
                    if score < worst:
                        worst = score
        self._scored = scored
        if reconnecting:
            self._raw = LEVEL_BROKEN
        elif self._demand.idle:
            self._raw = LEVEL_MAX
        else:
            self._raw = None if worst == math.inf else level_for_score(worst, config)
        self._step(now, self._raw)
        return self._level

    def _step(self, now: float, raw: int | None) -> None:
        if raw is None:  # nothing known: no evidence either way
            return
        if raw <= self._level:
            self._level = raw
            self._rise_since = None
        elif self._rise_since is None:
            self._rise_since = now
        elif now - self._rise_since >= self._config.rise_interval:
            self._level += 1
            self._rise_since = now if raw > self._level else None

    def stats(self, verbosity: int = VERBOSITY_DETAILED) -> NetworkQualityStats:
        """The latest stats at ``verbosity`` (0..3; anything else raises :class:`ConfigError`).

        rtt and jitter are the windowed values that were scored, not the latest raw ones.
        """
        return _stats(self._level, self._side_demands, self._scored, verbosity, self._config)
