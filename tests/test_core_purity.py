"""The core stays sans-I/O: no module under core/ imports I/O, clocks or global randomness, and
importing rtcprobe.core pulls none of them in (checked in a fresh interpreter)."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

CORE = pathlib.Path(__file__).resolve().parent.parent / "core"
FORBIDDEN = {"asyncio", "trio", "aiortc", "aioice", "aiohttp", "socket", "time", "random", "select", "selectors",
             "threading", "subprocess", "ssl", "av", "scapy", "datetime", "os", "urllib", "http"}


def imported_modules(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            names.add("__import__")
    return names


def test_no_core_module_imports_io() -> None:
    files = sorted(CORE.rglob("*.py"))
    assert len(files) >= 6
    for f in files:
        bad = imported_modules(f) & (FORBIDDEN | {"__import__", "importlib"})
        assert not bad, f"{f.name} imports {sorted(bad)}"


def test_core_imports_only_attrs_numpy_stdlib() -> None:
    allowed = {"attrs", "numpy", "__future__", "collections", "enum", "json", "math", "re", "typing",
               "bisect", "functools", "itertools", "dataclasses", "heapq", "operator"}
    for f in sorted(CORE.rglob("*.py")):
        extra = imported_modules(f) - allowed
        assert not extra, f"{f.name} imports {sorted(extra)}"


def test_import_pulls_in_no_io_module() -> None:
    # Whatever numpy and attrs import themselves is their business; the core must add nothing.
    code = (
        "import sys; import numpy, attrs; base = set(sys.modules); import rtcprobe.core; "
        f"bad = sorted(m for m in {sorted(FORBIDDEN)!r} if m in sys.modules and m not in base); "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing rtcprobe.core imported {out}"
