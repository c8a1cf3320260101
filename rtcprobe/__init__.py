"""rtcprobe: an open, self-hostable WebRTC preflight test and network quality scorer.

Public API:

* ``rtcprobe.simulate(scenario, seed=None) -> PreflightReport``: a preflight over a simulated
  network described by a scenario file (deterministic).
* ``rtcprobe.run_preflight(token, *, url=None, ...) -> PreflightTest`` (inside a running asyncio
  loop) and the blocking ``rtcprobe.preflight(...)``: a real WebRTC preflight with aiortc.
* ``rtcprobe.connect(token, *, url, network_quality=...) -> Room`` (inside a running asyncio loop):
  join a room of ``rtcprobe serve`` and get every participant's network quality level in a live
  call, for the app's own aiortc peer connections (``room.monitor(pc, remote)``).
* ``rtcprobe.core``: the sans-I/O core every driver feeds.

Heavy drivers are imported lazily, so ``import rtcprobe`` stays fast and never pulls in aiortc.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .core._version import __version__
from .core.errors import ConfigError, PreflightError, PreflightErrorInfo
from .core.report import PreflightReport

_LAZY = {
    "simulate": "rtcprobe.drivers.sim",
    "Scenario": "rtcprobe.netem.scenario",
    "ScenarioError": "rtcprobe.netem.scenario",
    "run_preflight": "rtcprobe.live",
    "preflight": "rtcprobe.live",
    "PreflightTest": "rtcprobe.live",
    "connect": "rtcprobe.call",
    "Room": "rtcprobe.call",
    "LocalParticipant": "rtcprobe.call",
    "RemoteParticipant": "rtcprobe.call",
    "RoomConnectError": "rtcprobe.call",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rtcprobe' has no attribute {name!r}")
    return getattr(import_module(module), name)


__all__ = [
    "ConfigError", "LocalParticipant", "PreflightError", "PreflightErrorInfo", "PreflightReport", "PreflightTest",
    "RemoteParticipant", "Room", "RoomConnectError", "Scenario", "ScenarioError", "__version__", "connect",
    "preflight", "run_preflight", "simulate",
]
