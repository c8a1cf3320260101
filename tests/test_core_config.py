from __future__ import annotations

import pytest
from rtcprobe.core import ConfigError, MediaDemand, PreflightConfig, VideoSpec


@pytest.mark.parametrize(
    "kwargs",
    [
        {"duration": -1}, {"duration": 0}, {"duration": float("nan")}, {"duration": float("inf")},
        {"duration": True}, {"duration": "10"},
        {"region": "GLL"}, {"region": ""}, {"region": "us east"}, {"region": "-x"}, {"region": "a" * 40},
        {"region": 5},
        {"network_quality_verbosity": 0}, {"network_quality_verbosity": 4}, {"network_quality_verbosity": 1.5},
        {"media": MediaDemand(audio=False, video=None)},
    ],
)
def test_invalid_config_raises_clear_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as info:
        PreflightConfig(**kwargs)  # type: ignore[arg-type]
    key = next(iter(kwargs))
    assert key.split("_")[0] in str(info.value) or "media" in str(info.value)


@pytest.mark.parametrize("region", ["gll", "de1", "us1", "us-east-1", "ie1"])
def test_valid_regions(region: str) -> None:
    assert PreflightConfig(region=region).region == region


def test_defaults_match_the_anchor() -> None:
    c = PreflightConfig()
    assert c.duration == 10.0 and c.region == "gll" and c.step_timeout == 20.0
    assert c.sample_interval == 1.0 and c.sample_count == 10
    assert c.media == MediaDemand(audio=True, video=VideoSpec(640, 480, 30))


def test_from_dict() -> None:
    c = PreflightConfig.from_dict({"duration": 2, "media": {"audio": False, "video": {"width": 320, "height": 180,
                                                                                     "fps": 15}}})
    assert c.media == MediaDemand(False, VideoSpec(320, 180, 15))
    with pytest.raises(ConfigError, match="unknown"):
        PreflightConfig.from_dict({"durtion": 2})
    with pytest.raises(ConfigError):
        PreflightConfig.from_dict({"media": {"video": {"width": -1, "height": 1, "fps": 1}}})


@pytest.mark.parametrize("bad", [{"width": 0}, {"height": -5}, {"fps": 0}, {"width": 1.5}])
def test_video_spec_validation(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        VideoSpec(**bad)  # type: ignore[arg-type]
