"""rtcprobe.netem: network impairment models, link simulation and the scenario file format.

Sans-I/O like the core: links take time as an argument and randomness from an injected
``numpy.random.Generator``. Only the scenario/trace loaders read files.
"""

from __future__ import annotations

from .expect import Expect
from .link import Link
from .models import GilbertElliott, JitterDistribution, LinkConfig, LinkCounters, ScenarioError
from .scenario import Scenario, ScenarioPhases
from .trace import MTU_BYTES, Trace, TraceFormatError, generate_trace, parse_trace, write_trace

__all__ = [
    "MTU_BYTES",
    "Expect",
    "GilbertElliott",
    "JitterDistribution",
    "Link",
    "LinkConfig",
    "LinkCounters",
    "Scenario",
    "ScenarioError",
    "ScenarioPhases",
    "Trace",
    "TraceFormatError",
    "generate_trace",
    "parse_trace",
    "write_trace",
]
