"""Output files (reports, plots, captures) are checked before a run starts, so that a typo costs
one error line instead of the whole run. Kept apart from pcap.py: that one pulls in scapy."""

from __future__ import annotations

from pathlib import Path

from rtcprobe.core.errors import ConfigError

__all__ = ["writable_path"]


def writable_path(path: str | Path, what: str) -> Path:
    """``path`` as a Path if a file can be created there; a one-line ConfigError naming ``what``
    (``--out``, ``pcap file``) and the path as given if not."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a directory")
    if not p.parent.is_dir():
        raise ConfigError(f"{what} {str(path)!r}: directory {str(p.parent)!r} does not exist")
    return p
