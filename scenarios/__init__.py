"""The built-in scenario library: ``*.toml`` files beside this module (schema: README.md here).

``load(name_or_path)`` takes a built-in name (``"lossy-wifi"``) or a path to any scenario file.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from rtcprobe.netem.scenario import Scenario, ScenarioError

HERE = Path(__file__).resolve().parent


def builtin_names() -> list[str]:
    """Names of the built-in scenarios, sorted."""
    return sorted(p.stem for p in HERE.glob("*.toml"))


def path_of(name: str) -> Path:
    """The file of a built-in scenario (ScenarioError naming the close matches if unknown)."""
    path = HERE / f"{name}.toml"
    if not name or "/" in name or "\\" in name or not path.is_file():
        names = builtin_names()
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"built-in scenarios: {', '.join(names)}"
        raise ScenarioError(name, "", f"no such scenario file or built-in scenario ({hint})")
    return path


def load(name_or_path: str | Path) -> Scenario:
    """A scenario from a path to a file, or from a built-in name."""
    text = str(name_or_path)
    candidate = Path(name_or_path)
    if isinstance(name_or_path, Path) or candidate.suffix == ".toml" or candidate.exists():
        return Scenario.from_toml(candidate)
    return Scenario.from_toml(path_of(text))


__all__ = ["builtin_names", "load", "path_of"]
