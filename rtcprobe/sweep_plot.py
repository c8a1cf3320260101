"""Heatmaps of a sweep: one metric over two axes, the median over seeds (and any axis not
shown), one panel per value of a third axis. matplotlib is the optional extra ``[plot]``."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from rtcprobe.core.errors import ConfigError

from .plot import require_matplotlib
from .sweep_table import METRIC_COLUMNS, axis_cell, cell_label

__all__ = ["PlotChoice", "choose", "plot_heatmaps"]

LEVEL_METRICS = ("level", "level_min", "level_median")


@attrs.frozen
class PlotChoice:
    x: str
    y: str | None
    panel: str | None
    metric: str


def _axes_of(meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The point columns with their values in spec order (seed last, like in the table)."""
    axes = [dict(a) for a in meta["axes"]]
    axes.append({"path": "seed", "kind": "int", "values": list(meta["seeds"])})
    return axes


def _pick(name: str, known: Sequence[str], flag: str) -> str:
    if name in known:
        return name
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}?" if close else f"one of: {', '.join(known)}"
    raise ConfigError(f"{flag} {name!r}: not a column of this sweep ({hint})")


def choose(meta: Mapping[str, Any], x: str | None = None, y: str | None = None, panel: str | None = None,
           metric: str = "level") -> PlotChoice:
    """Validate the choice (ConfigError with a did-you-mean); unset axes default to the spec's
    first, second and third axes."""
    paths = [a["path"] for a in _axes_of(meta)]
    metric = _pick(metric, METRIC_COLUMNS, "--metric")
    x = None if x is None else _pick(x, paths, "--x")
    y = None if y is None else _pick(y, paths, "--y")
    panel = None if panel is None else _pick(panel, paths, "--panel")
    rest = [a["path"] for a in meta["axes"] if a["path"] not in (x, y, panel)]
    if x is None:
        if not rest:
            raise ConfigError("a heatmap needs an axis: give --x (this sweep has only seeds)")
        x = rest.pop(0)
    if y is None and rest:
        y = rest.pop(0)
    if panel is None and rest:
        panel = rest.pop(0)
    chosen = [c for c in (x, y, panel) if c is not None]
    if len(set(chosen)) != len(chosen):
        raise ConfigError(f"--x, --y and --panel must be different columns, got {', '.join(chosen)}")
    return PlotChoice(x, y, panel, metric)


def _median(values: list[float]) -> float:
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def _ink(cmap: Any, norm: Any, value: float) -> str:
    """Black on light cells, white on dark ones."""
    if not math.isfinite(value):
        return "black"
    r, g, b, _ = cmap(norm(value))
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def plot_heatmaps(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any], choice: PlotChoice,
                  path: str | Path, *, title: str | None = None) -> Path:
    """Draw the heatmaps to ``path`` (PNG). A cell whose every run has no value for the metric
    (a level when the preflight failed before scoring) is grey and says so."""
    plt = require_matplotlib()
    from matplotlib.colors import Normalize

    axes = {a["path"]: a for a in _axes_of(meta)}

    def cells(name: str | None) -> list[Any]:
        if name is None:
            return [None]
        a = axes[name]
        return [axis_cell(a["kind"], v) for v in a["values"]]

    xs, ys, panels = cells(choice.x), cells(choice.y), cells(choice.panel)
    grids: list[list[list[float]]] = []
    for p in panels:
        grid: list[list[float]] = []
        for yv in ys:
            line = []
            for xv in xs:
                vals = [float(r[choice.metric]) for r in rows
                        if r[choice.x] == xv and (choice.y is None or r[choice.y] == yv)
                        and (choice.panel is None or r[choice.panel] == p) and r[choice.metric] is not None]
                line.append(_median(vals) if vals else math.nan)
            grid.append(line)
        grids.append(grid)

    level = choice.metric in LEVEL_METRICS
    finite = [v for g in grids for line in g for v in line if math.isfinite(v)]
    norm = Normalize(0, 5) if level else Normalize(min(finite, default=0.0), max(finite, default=1.0))
    cmap = plt.get_cmap("RdYlGn" if level else "viridis").with_extremes(bad="#bbbbbb")

    n = len(panels)
    width = max(3.6, 1.6 + 0.85 * len(xs))
    fig, axs = plt.subplots(1, n, figsize=(1.4 + width * n, max(3.4, 2.0 + 0.5 * len(ys))),
                            squeeze=False, constrained_layout=True)
    image = None
    for ax, p, grid in zip(axs[0], panels, grids, strict=True):
        image = ax.imshow([[v if math.isfinite(v) else math.nan for v in line] for line in grid],
                          cmap=cmap, norm=norm, origin="lower", aspect="auto")
        for yi, line in enumerate(grid):
            for xi, v in enumerate(line):
                text = "no value" if not math.isfinite(v) else (f"{v:g}" if level else f"{v:.3g}")
                ax.text(xi, yi, text, ha="center", va="center", fontsize=8, color=_ink(cmap, norm, v))
        ax.set_xticks(range(len(xs)), [cell_label(axes[choice.x]["kind"], v) for v in xs])
        ax.set_xlabel(choice.x)
        if choice.y is not None:
            ax.set_yticks(range(len(ys)), [cell_label(axes[choice.y]["kind"], v) for v in ys])
            ax.set_ylabel(choice.y)
        else:
            ax.set_yticks([])
        if choice.panel is not None:
            ax.set_title(f"{choice.panel} = {cell_label(axes[choice.panel]['kind'], p)}", fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=axs[0].tolist(), label=choice.metric, shrink=0.9)
    over = [c for c in axes if c not in (choice.x, choice.y, choice.panel) and len(axes[c]["values"]) > 1]
    subtitle = f"median over {', '.join(over)}" if over else "one run per cell"
    fig.suptitle(title or f"{choice.metric}: sweep of {meta.get('scenario') or meta.get('base')}\n({subtitle})",
                 fontsize=11)
    out = Path(path)
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
    return out
