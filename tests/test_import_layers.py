"""Imports flow one way, rtcprobe -> drivers -> scenarios -> netem -> core, and no modules import
each other in a circle (docs/architecture.md#layers).

Every module of every package pyproject.toml's ``package-dir`` maps is read with ``ast``; every
import counts, the ones inside function bodies too (a lazy import is still a dependency). Two
kinds of import are left out, each for a stated reason:

* ``if TYPE_CHECKING:`` imports are exempt from the cycle rule only: they never run, so they cannot
  take part in an import-time cycle, and annotations naming each other is ordinary. They still
  obey the direction rule, since mypy reads them and a lower layer naming a higher layer's types
  depends on that layer all the same.
* ``importlib.import_module(f"...")`` with a computed name cannot be read statically; a constant
  name is read like an ``import``.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parent.parent

# Lowest first. A module belongs to the layer of the longest prefix it starts with; the top
# package itself (cli, commands, plot, progress, server, ...) is the top layer.
LAYERS: tuple[str, ...] = ("rtcprobe.core", "rtcprobe.netem", "rtcprobe.scenarios", "rtcprobe.drivers", "rtcprobe")


@attrs.frozen
class Import:
    """One import statement's edge: ``source`` (module, file, line) imports ``target``."""

    source: str
    file: str
    line: int
    text: str  # the statement as written
    target: str
    type_checking: bool


def layer_of(module: str) -> int | None:
    """Index into LAYERS (0 = lowest), None for a module outside the project."""
    best: int | None = None
    for i, prefix in enumerate(LAYERS):
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(LAYERS[best])):
            best = i
    return best


def package_dirs(root: Path) -> dict[str, Path]:
    """pyproject.toml's ``[tool.setuptools] package-dir``: import name -> directory."""
    with open(root / "pyproject.toml", "rb") as f:
        mapping: dict[str, str] = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    return {name: root / directory for name, directory in mapping.items()}


def modules(root: Path) -> dict[str, Path]:
    """Every module under the mapped directories (subpackages not yet in pyproject too) by import
    name; a file belongs to the most specific mapping that contains it."""
    dirs = package_dirs(root)
    found: dict[str, Path] = {}
    for directory in dirs.values():
        for path in sorted(directory.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            owners = [(n, d) for n, d in dirs.items() if path.is_relative_to(d)]
            name, base = max(owners, key=lambda nd: len(nd[1].parts))
            parts = [name, *path.relative_to(base).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, guarded: bool = False) -> Iterator[tuple[ast.AST, bool]]:
    """Every node below ``node`` with whether it sits under ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        yield child, guarded
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield stmt, True
                yield from _walk(stmt, True)
            for stmt in child.orelse:
                yield stmt, guarded
                yield from _walk(stmt, guarded)
        else:
            yield from _walk(child, guarded)


def imports_of(module: str, path: Path, root: Path, known: set[str]) -> list[Import]:
    """Each project module that ``module`` (read from ``path``) imports, one edge per name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    file = path.relative_to(root).as_posix()
    edges: list[Import] = []

    def add(node: ast.stmt | ast.expr, target: str, guarded: bool) -> None:
        edge = Import(module, file, node.lineno, ast.unparse(node), target, guarded)
        if layer_of(target) is not None and edge not in edges:  # `from m import a, b`: one edge
            edges.append(edge)

    for node, guarded in _walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(node, alias.name, guarded)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            for alias in node.names:
                # ``from pkg import sub`` imports the submodule; ``from mod import name`` the module.
                sub = f"{origin}.{alias.name}"
                add(node, sub if sub in known else origin, guarded)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            add(node, node.args[0].value, guarded)
    return edges


def all_imports(root: Path) -> list[Import]:
    found = modules(root)
    known = set(found)
    return [edge for name, path in found.items() for edge in imports_of(name, path, root, known)]


def upward_imports(edges: list[Import]) -> list[str]:
    """One line per import of a higher layer: ``file:line: import ... (layer imports layer)``."""
    bad: list[str] = []
    for e in edges:
        src, dst = layer_of(e.source), layer_of(e.target)
        assert src is not None and dst is not None
        if dst > src:
            bad.append(f"{e.file}:{e.line}: `{e.text}`: {LAYERS[src]} must not import {LAYERS[dst]} ({e.target})")
    return bad


def import_cycles(edges: list[Import]) -> list[str]:
    """One block per set of modules that import each other in a circle (a strongly connected
    component), naming every import inside it. TYPE_CHECKING imports do not count."""
    graph: dict[str, list[Import]] = {}
    for e in edges:
        if not e.type_checking and e.target != e.source:
            graph.setdefault(e.source, []).append(e)
            graph.setdefault(e.target, [])
    # Tarjan's algorithm, iterative so a deep chain cannot hit the recursion limit.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, int]] = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            targets = graph[node]
            if i < len(targets):
                work.append((node, i + 1))
                nxt = targets[i].target
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    blocks: list[str] = []
    for component in sorted(components):
        members = set(component)
        inside = sorted(
            (e for m in component for e in graph[m] if e.target in members), key=lambda e: (e.file, e.line)
        )
        lines = [f"cycle between {', '.join(component)}:"]
        lines += [f"  {e.file}:{e.line}: `{e.text}` ({e.source} -> {e.target})" for e in inside]
        blocks.append("\n".join(lines))
    return blocks


# --- the project ---------------------------------------------------------------------------------


def test_the_project_is_read() -> None:
    found = modules(ROOT)
    for name in ("rtcprobe.cli", "rtcprobe.core.report", "rtcprobe.netem.expect", "rtcprobe.scenarios",
                 "rtcprobe.drivers.sim.driver", "rtcprobe.commands.run"):
        assert name in found, name
    assert len(all_imports(ROOT)) > 50


def test_no_upward_imports() -> None:
    bad = upward_imports(all_imports(ROOT))
    order = " -> ".join(reversed(LAYERS))
    assert not bad, f"imports against the layer order ({order}):\n" + "\n".join(bad)


def test_no_import_cycles() -> None:
    cycles = import_cycles(all_imports(ROOT))
    assert not cycles, "modules importing each other in a circle:\n" + "\n".join(cycles)


# --- the checker itself, on a made-up project -------------------------------------------------------


def _project(tmp_path: Path, files: dict[str, str]) -> Path:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools]\npackage-dir = { "rtcprobe" = "top", "rtcprobe.core" = "core", '
        '"rtcprobe.netem" = "net", "rtcprobe.drivers" = "drv", "rtcprobe.drivers.sim" = "drv/sim" }\n'
    )
    for name in ("top/__init__.py", "core/__init__.py", "net/__init__.py", "drv/__init__.py", "drv/sim/__init__.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_modules_follow_the_package_dir_mapping(tmp_path: Path) -> None:
    root = _project(tmp_path, {"drv/sim/engine.py": "", "top/server/app.py": "", "net/link.py": ""})
    assert set(modules(root)) == {
        "rtcprobe", "rtcprobe.core", "rtcprobe.netem", "rtcprobe.netem.link", "rtcprobe.drivers",
        "rtcprobe.drivers.sim", "rtcprobe.drivers.sim.engine", "rtcprobe.server.app",
    }


def test_an_upward_import_in_a_function_is_named_with_file_and_line(tmp_path: Path) -> None:
    root = _project(tmp_path, {
        "core/a.py": "import math\n\n\ndef f() -> None:\n    from ..netem.link import Link\n",
        "net/link.py": "from rtcprobe.core import a\nLink = 1\n",
    })
    bad = upward_imports(all_imports(root))
    assert bad == [
        "core/a.py:5: `from ..netem.link import Link`: rtcprobe.core must not import rtcprobe.netem "
        "(rtcprobe.netem.link)"
    ]


def test_type_checking_imports_obey_the_direction_rule(tmp_path: Path) -> None:
    root = _project(tmp_path, {
        "net/x.py": "from typing import TYPE_CHECKING\n"
                    "if TYPE_CHECKING:\n    from rtcprobe.drivers.sim import engine\n",
        "drv/sim/engine.py": "",
    })
    assert [b.split(":")[:2] for b in upward_imports(all_imports(root))] == [["net/x.py", "3"]]


def test_the_top_package_and_a_new_subpackage_are_the_top_layer(tmp_path: Path) -> None:
    root = _project(tmp_path, {
        "top/server/app.py": "from rtcprobe.drivers.sim import engine\nfrom rtcprobe.core import a\n",
        "drv/sim/engine.py": "import rtcprobe.server.app\nfrom rtcprobe import cli\n",
        "top/cli.py": "",
        "core/a.py": "",
    })
    bad = upward_imports(all_imports(root))
    assert [b.split(": ")[0] for b in bad] == ["drv/sim/engine.py:1", "drv/sim/engine.py:2"]
    assert "(rtcprobe.server.app)" in bad[0] and "(rtcprobe.cli)" in bad[1]


def test_a_constant_import_module_counts(tmp_path: Path) -> None:
    root = _project(tmp_path, {
        "core/a.py": "from importlib import import_module\nm = import_module('rtcprobe.drivers.sim')\n",
    })
    assert [b.split(": ")[0] for b in upward_imports(all_imports(root))] == ["core/a.py:2"]


def test_a_lazy_cycle_is_found_and_every_edge_named(tmp_path: Path) -> None:
    root = _project(tmp_path, {
        "core/a.py": "from . import b\n",
        "core/b.py": "def f() -> None:\n    from .c import x\n",
        "core/c.py": "import rtcprobe.core.a\nx = 1\n",
        "core/d.py": "from . import a\n",  # imports into the cycle, is not part of it
    })
    assert import_cycles(all_imports(root)) == [
        "cycle between rtcprobe.core.a, rtcprobe.core.b, rtcprobe.core.c:\n"
        "  core/a.py:1: `from . import b` (rtcprobe.core.a -> rtcprobe.core.b)\n"
        "  core/b.py:2: `from .c import x` (rtcprobe.core.b -> rtcprobe.core.c)\n"
        "  core/c.py:1: `import rtcprobe.core.a` (rtcprobe.core.c -> rtcprobe.core.a)"
    ]


def test_a_type_checking_cycle_is_not_a_cycle(tmp_path: Path) -> None:
    root = _project(tmp_path, {
        "core/a.py": "from . import b\n",
        "core/b.py": "import typing\nif typing.TYPE_CHECKING:\n    from .a import A\nelse:\n    pass\n",
    })
    assert import_cycles(all_imports(root)) == []
    (root / "core/b.py").write_text("import typing\nif typing.TYPE_CHECKING:\n    pass\nelse:\n    from .a import A\n")
    assert len(import_cycles(all_imports(root))) == 1


@pytest.mark.parametrize("module, layer", [
    ("rtcprobe.core._version", 0), ("rtcprobe.netem", 1), ("rtcprobe.scenarios", 2),
    ("rtcprobe.drivers.aiortc.client", 3), ("rtcprobe.server", 4), ("rtcprobe", 4), ("rtcprobe.cores", 4),
    ("numpy", None), ("rtcprobex", None),
])
def test_layer_of(module: str, layer: int | None) -> None:
    assert layer_of(module) == layer
