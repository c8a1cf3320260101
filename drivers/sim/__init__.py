"""The simulated-network driver: a preflight over a scenario's links on a virtual clock.

* :func:`simulate` ``(scenario, seed=None) -> PreflightReport`` — ``scenario`` is a path to a
  scenario file, a built-in scenario's name, or a :class:`~rtcprobe.netem.scenario.Scenario`.
* :func:`run_simulation` — the same with everything else a run produced (:class:`SimResult`:
  the core's events, link counters, and the per-packet log when asked for).
* :func:`link_seed` — what the links draw from for a seed, for a relay to draw the same.

The endpoint the simulator models is the scenario's ``[media] stack``: a browser's
(``"libwebrtc"``, the default) or aiortc's sender (``"aiortc"``, what ``--driver aiortc`` runs);
``attrs.evolve(scenario, stack="aiortc")`` or ``rtcprobe run --stack aiortc`` chooses it.
The same scenario and seed give a byte-identical ``report.to_json()`` in any process.
"""

from __future__ import annotations

from pathlib import Path

from rtcprobe.core.report import PreflightReport
from rtcprobe.netem.scenario import Scenario

from ._net import PacketRecord
from .driver import SimDriver, SimResult, link_seed, run_simulation


def resolve(scenario: Scenario | str | Path) -> Scenario:
    """A Scenario from a Scenario, a path, or a built-in name (bad input: ScenarioError)."""
    if isinstance(scenario, Scenario):
        return scenario
    # Built-in names live in rtcprobe.scenarios (data plus a loader over netem): imported here,
    # lazily, so the driver itself never depends on the library.
    from rtcprobe.scenarios import load

    return load(scenario)


def simulate(scenario: Scenario | str | Path, seed: int | None = None) -> PreflightReport:
    """Run a preflight over a simulated network and return its report (deterministic)."""
    return run_simulation(resolve(scenario), seed=seed).report


__all__ = ["PacketRecord", "SimDriver", "SimResult", "link_seed", "resolve", "run_simulation", "simulate"]
