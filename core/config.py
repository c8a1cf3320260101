"""Configuration of a preflight test: frozen, validated at construction (misuse raises at once)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from .errors import ConfigError

# A region is 'gll' (the global edge) or a regional edge name such as 'de1' or 'us-east-1':
# lower-case letters, digits and dashes, as Twilio Video's region names are.
_REGION = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def _positive(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"{attribute.name} must be a positive number, got {value!r}")
    if value != value or value == float("inf"):
        raise ConfigError(f"{attribute.name} must be finite, got {value!r}")


def _positive_int(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{attribute.name} must be a positive integer, got {value!r}")


def _region(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or len(value) > 32 or not _REGION.match(value):
        raise ConfigError(
            f"region must be 'gll' or a regional edge name (lower-case letters, digits, dashes), got {value!r}"
        )


#: A media kind a preflight publishes (and subscribes back).
Kind = Literal["audio", "video"]


@attrs.frozen
class VideoSpec:
    """A synthetic video stream: its resolution and frame rate (the demand it puts on the network)."""

    width: int = attrs.field(default=640, validator=_positive_int)
    height: int = attrs.field(default=480, validator=_positive_int)
    fps: float = attrs.field(default=30.0, validator=_positive)

    @property
    def pixels(self) -> int:
        return self.width * self.height


@attrs.frozen
class MediaDemand:
    """What a preflight publishes (and subscribes back): audio and/or one video stream."""

    audio: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    video: VideoSpec | None = attrs.field(
        factory=VideoSpec, validator=attrs.validators.optional(attrs.validators.instance_of(VideoSpec))
    )

    @property
    def kinds(self) -> tuple[Kind, ...]:
        audio: tuple[Kind, ...] = ("audio",) if self.audio else ()
        video: tuple[Kind, ...] = ("video",) if self.video is not None else ()
        return audio + video


@attrs.frozen
class PreflightConfig:
    """Options of one preflight test (Twilio Video's ``runPreflight(token, options)``).

    ``duration`` is the length of the stats-collection step in seconds (Twilio's default
    10 s); every step times out after ``duration + 10`` seconds.
    """

    duration: float = attrs.field(default=10.0, validator=_positive)
    region: str = attrs.field(default="gll", validator=_region)
    media: MediaDemand = attrs.field(factory=MediaDemand, validator=attrs.validators.instance_of(MediaDemand))
    # Twilio's preflight publisher is always relay-only. Ours is relay-only when told (True), never
    # (False), or — None, the default — exactly when signaling hands out a TURN server: a loopback
    # run with no TURN must still connect over host candidates.
    relay_only: bool | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(bool))
    )
    # Verbosity of the stats carried by networkQualityLevelChanged events (Twilio's local
    # verbosity: 1 minimal .. 3 detailed). The report always carries the detailed stats.
    network_quality_verbosity: int = attrs.field(default=1)

    @network_quality_verbosity.validator
    def _check_verbosity(self, attribute: attrs.Attribute[Any], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 3:
            raise ConfigError(f"network_quality_verbosity must be 1, 2 or 3, got {value!r}")

    def __attrs_post_init__(self) -> None:
        if not self.media.kinds:
            raise ConfigError("media must publish audio, video or both")

    @property
    def step_timeout(self) -> float:
        return self.duration + 10.0

    @property
    def sample_interval(self) -> float:
        return min(1.0, self.duration)

    @property
    def sample_count(self) -> int:
        return max(1, round(self.duration / self.sample_interval))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreflightConfig:
        """Build from plain data (e.g. parsed JSON/TOML); unknown keys are an error."""
        known = {"duration", "region", "media", "relay_only", "network_quality_verbosity"}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown preflight option(s): {', '.join(sorted(unknown))}")
        kwargs: dict[str, Any] = {k: v for k, v in data.items() if k != "media"}
        media = data.get("media")
        if media is not None:
            if not isinstance(media, Mapping):
                raise ConfigError("media must be a table")
            video = media.get("video", True)
            if video is True:
                video_spec: VideoSpec | None = VideoSpec()
            elif video is False or video is None:
                video_spec = None
            elif isinstance(video, Mapping):
                video_spec = VideoSpec(**video)
            else:
                raise ConfigError(f"media.video must be true, false or a table, got {video!r}")
            kwargs["media"] = MediaDemand(audio=media.get("audio", True), video=video_spec)
        try:
            return cls(**kwargs)
        except TypeError as exc:  # wrong field names inside media.video
            raise ConfigError(str(exc)) from None
