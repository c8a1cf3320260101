"""The documentation's complete example is a valid scenario (the README cannot drift from the parser)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from rtcprobe.netem.scenario import Scenario

README = Path(__file__).resolve().parents[1] / "scenarios" / "README.md"


def test_readme_complete_example_parses() -> None:
    text = README.read_text()
    block = re.search(r"## A complete example\s+```toml\n(.*?)```", text, re.S)
    assert block is not None
    path = README.parent / "readme-example.toml"  # virtual: parsed from a string, traces resolve here
    sc = Scenario.from_dict(tomllib.loads(block.group(1)), source=str(path), base_dir=README.parent)
    assert sc.name == "lossy-wifi" and sc.seed == 1
    assert sc.downlink.trace is not None and sc.downlink.bandwidth_kbps is None
    assert sc.uplink.loss_model is not None
    assert [at for at, _ in sc.phases.uplink] == [4.0, 6.0]
    assert [at for at, _ in sc.phases.downlink] == [4.0, 6.0]
    assert sc.phases.downlink[1][1] == sc.downlink  # reset, and no downlink changes
    assert sc.phases.uplink[1][1] == sc.uplink.with_changes(bandwidth_kbps=500)
    assert sc.expect is not None and sc.expect.outcome == "completed"
