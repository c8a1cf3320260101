"""The ``--video WxH@FPS`` option of ``rtcprobe preflight`` (a helper module, not a subcommand)."""

from __future__ import annotations

from rtcprobe.core.config import VideoSpec
from rtcprobe.core.errors import ConfigError


def parse_video(spec: str) -> VideoSpec:
    """``WxH@FPS`` (``@FPS`` optional, 30 by default) → VideoSpec; ConfigError when malformed.

    The size limits are the synthetic video's (:func:`rtcprobe.drivers.aiortc.media.check_video`),
    checked here too so that a bad ``--video`` fails before anything starts.
    """
    from rtcprobe.drivers.aiortc.media import check_video  # pulls in aiortc: only when parsing

    size, _, fps = spec.partition("@")
    w, sep, h = size.lower().partition("x")
    try:
        if not sep:
            raise ValueError
        video = VideoSpec(int(w), int(h), float(fps) if fps else 30.0)
    except (ValueError, TypeError):
        raise ConfigError(f"video must look like 640x480@30, got {spec!r}") from None
    check_video(video)
    return video


__all__ = ["parse_video"]
