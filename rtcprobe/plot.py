"""Plot a preflight report: rtt, jitter, packet loss, bitrates and quality level over time.

matplotlib is an optional extra (``pip install 'rtcprobe[plot]'``); without it
:func:`plot_report` raises :class:`PlotUnavailable`, a ConfigError, so the CLI exits 2 with one
clear line. The Agg backend is used: no display needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rtcprobe.core.errors import ConfigError
from rtcprobe.core.report import PreflightReport

INSTALL_HINT = "plotting needs matplotlib: pip install 'rtcprobe[plot]'"


class PlotUnavailable(ConfigError):
    """matplotlib is not installed."""


def require_matplotlib() -> Any:
    """matplotlib.pyplot on the Agg backend, or PlotUnavailable (a ConfigError) if not installed."""
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable(INSTALL_HINT) from None
    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    return plt


def plot_report(report: PreflightReport | Mapping[str, Any], path: str | Path) -> Path:
    """Draw the report's per-second samples to ``path`` (PNG); returns the path."""
    data = report.to_dict() if isinstance(report, PreflightReport) else dict(report)
    plt = require_matplotlib()
    samples = data.get("samples") or []
    t = [s["time"] / 1000 for s in samples]

    def series(key: str, scale: float = 1.0) -> list[float]:
        return [float("nan") if s.get(key) is None else s[key] * scale for s in samples]

    fig, axes = plt.subplots(5, 1, figsize=(9, 11), sharex=True, constrained_layout=True)
    panels: list[tuple[str, list[tuple[str, list[float], str | None]]]] = [
        ("rtt (ms)", [("rtt", series("rtt"), None)]),
        ("jitter (ms)", [("jitter", series("jitter", 1000.0), None)]),
        ("packet loss (%)", [("loss", series("packetLoss"), None)]),
        ("bitrate (kbps)", [("outgoing", series("outgoingBitrate"), None),
                            ("incoming", series("incomingBitrate"), "--")]),
        ("quality level", [("level", series("level"), None)]),
    ]
    for ax, (label, lines) in zip(axes, panels, strict=True):
        for name, ys, style in lines:
            if label == "quality level":
                ax.step(t, ys, where="post", marker="o", label=name)
            else:
                ax.plot(t, ys, style or "-", marker="o", markersize=3, label=name)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        if len(lines) > 1:
            ax.legend(loc="upper right", fontsize=8)
    axes[-1].set_ylim(-0.3, 5.3)
    axes[-1].set_yticks(range(6))
    axes[-1].set_xlabel("time since the test started (s)")
    marks: list[tuple[float, list[str]]] = []  # steps landing together share one mark and label
    for event in data.get("progressEvents") or []:
        x = event["duration"] / 1000
        if marks and x - marks[-1][0] < 0.02:
            marks[-1][1].append(event["name"])
        else:
            marks.append((x, [event["name"]]))
    for x, names in marks:
        for ax in axes:
            ax.axvline(x, color="grey", linestyle=":", linewidth=0.8)
        label = axes[0].annotate(", ".join(names), (x, 0.98), xycoords=("data", "axes fraction"), rotation=90,
                                 fontsize=7, va="top", ha="right", color="grey")
        label.set_in_layout(False)  # long labels must not squeeze the panels
    run = data.get("run") or {}
    error = data.get("error")
    title = f"rtcprobe preflight — {run.get('scenario') or run.get('driver') or 'report'}"
    title += f": failed {error['code']} {error['name']}" if error else ""
    nq = data.get("networkQuality") or {}
    if nq.get("level") is not None:
        title += f" (final level {nq['level']})"
    fig.suptitle(title)
    out = Path(path)
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
    return out
