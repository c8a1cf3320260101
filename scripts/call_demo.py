"""Three ``rtcprobe call`` participants in one room, one of them impaired part of the time: every
participant's view of every level, side by side, as a table and a plot (docs/call-levels.png).

What runs, all on 127.0.0.1:

* a coturn (``CoturnServer``) and ``rtcprobe serve`` handing out its TURN URLs (a process of
  its own: its CPU time during the call is read from /proc);
* three ``rtcprobe call --json`` processes (ann, ben, imp) in room ``demo``, each a mesh
  participant with synthetic audio and 320x240@15 video, every peer connection relay-only
  through coturn. ``imp`` runs ``--scenario``: the impairment relay in front of coturn, clean
  for ``--clean`` seconds, then ``--loss`` both ways for ``--impaired`` seconds, then clean again.

Each process prints one JSON line per level change it sees (its own and the others'). This
script stamps every line with its own clock as it arrives (the three processes' ``time`` fields
count from their own starts), then prints the levels each participant saw of each participant,
second by second, side by side, and plots them.

    python scripts/call_demo.py [--duration 40] [--clean 10] [--impaired 15] [--loss 0.2]
                                [--png docs/call-levels.png] [--lines levels.jsonl]

Needs coturn (apt-get install coturn) and matplotlib.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

SECRET = "call-demo-secret-0123456789abcdef0123456789"
PEOPLE = ("ann", "ben", "imp")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def scenario_toml(clean: float, impaired: float, loss: float) -> str:
    return f"""\
name = "call-demo"
description = "clean for {clean:g} s, then {loss:.0%} loss both ways for {impaired:g} s, then clean"
duration = {clean + impaired + 60:g}

[network]
delay_ms = 10
jitter_ms = 1

[[phase]]
at = {clean:g}
loss = {loss:g}

[[phase]]
at = {clean + impaired:g}
reset = true
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


async def read_lines(name: str, proc: asyncio.subprocess.Process, start: float, out: list[dict[str, Any]]) -> None:
    assert proc.stdout is not None
    async for raw in proc.stdout:
        line = json.loads(raw)
        out.append({"at": time.monotonic() - start, "viewer": name, **line})


async def run_call(args: argparse.Namespace, url: str, scenario: Path) -> tuple[list[dict[str, Any]], dict[str, str]]:
    start = time.monotonic()
    lines: list[dict[str, Any]] = []
    procs: dict[str, asyncio.subprocess.Process] = {}
    readers = []
    for name in PEOPLE:
        extra = ["--scenario", str(scenario)] if name == "imp" else []
        procs[name] = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rtcprobe", "call", "--room", "demo", "--url", url, "--secret", SECRET,
            "--identity", name, "--duration", str(args.duration), "--json", *extra,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        readers.append(asyncio.ensure_future(read_lines(name, procs[name], start, lines)))
        await asyncio.sleep(0.5)
    errors = await asyncio.gather(*(p.stderr.read() for p in procs.values() if p.stderr is not None))
    await asyncio.gather(*readers)
    for name, proc in procs.items():
        if await proc.wait() != 0:
            print(f"{name} exited with {proc.returncode}", file=sys.stderr)
    return lines, {name: err.decode() for name, err in zip(procs, errors, strict=True)}


def timeline(lines: list[dict[str, Any]], end: float) -> dict[tuple[str, str], list[tuple[float, int]]]:
    """(viewer, subject) -> [(time, level)] in order."""
    views: dict[tuple[str, str], list[tuple[float, int]]] = {}
    for line in sorted(lines, key=lambda item: item["at"]):
        views.setdefault((line["viewer"], line["identity"]), []).append((line["at"], line["level"]))
    return views


def level_at(points: list[tuple[float, int]], t: float) -> int | None:
    level = None
    for at, value in points:
        if at > t:
            break
        level = value
    return level


def table(views: dict[tuple[str, str], list[tuple[float, int]]], end: float) -> str:
    head = "     t | " + " | ".join(f"{v} sees  " + " ".join(f"{s:>3}" for s in PEOPLE) for v in PEOPLE)
    rows = [head, "-" * len(head)]
    for second in range(int(end) + 1):
        cells = []
        for viewer in PEOPLE:
            levels = [level_at(views.get((viewer, subject), []), second) for subject in PEOPLE]
            cells.append(" " * (len(viewer) + 7) + " ".join(f"{'-' if x is None else x:>3}" for x in levels))
        rows.append(f"{second:4d} s | " + " | ".join(cells))
    return "\n".join(rows)


Views = dict[tuple[str, str], list[tuple[float, int]]]


def plot(views: Views, end: float, png: Path, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(PEOPLE), 1, figsize=(9, 7), sharex=True)
    styles = {"ann": ("tab:blue", "-"), "ben": ("tab:green", "--"), "imp": ("tab:red", ":")}
    for ax, subject in zip(axes, PEOPLE, strict=True):
        for viewer in PEOPLE:
            points = views.get((viewer, subject), [])
            if not points:
                continue
            xs = [t for t, _ in points] + [end]
            ys = [lvl for _, lvl in points] + [points[-1][1]]
            color, style = styles[viewer]
            ax.step(xs, ys, where="post", color=color, linestyle=style, linewidth=2, label=f"as {viewer} sees it")
        ax.axvspan(args.clean_at, args.clean_at + args.impaired, color="tab:red", alpha=0.08)
        ax.set_ylim(-0.3, 5.3)
        ax.set_yticks(range(6))
        ax.set_ylabel(f"{subject}'s level")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
    axes[0].set_title(f"rtcprobe call: three participants, imp's TURN path loses {args.loss:.0%} both ways "
                      f"(shaded)", fontsize=10)
    axes[-1].set_xlabel("seconds since the first participant started")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=40.0)
    parser.add_argument("--clean", type=float, default=10.0, help="s of clean network before imp's loss starts")
    parser.add_argument("--impaired", type=float, default=15.0, help="s of loss")
    parser.add_argument("--loss", type=float, default=0.2)
    parser.add_argument("--png", type=Path, default=Path("docs/call-levels.png"))
    parser.add_argument("--lines", type=Path, help="also write every merged JSON line here")
    args = parser.parse_args()

    from rtcprobe.server.coturn import CoturnServer

    with CoturnServer() as turn, tempfile.TemporaryDirectory() as tmp:
        scenario = Path(tmp) / "call-demo.toml"
        scenario.write_text(scenario_toml(args.clean, args.impaired, args.loss))
        env = {**os.environ, "RTCPROBE_TURN_SECRET": turn.secret}
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rtcprobe", "serve", "--port", "0", "--secret", SECRET, "--turn", turn.udp_url,
            "--log-level", "warning", stdout=asyncio.subprocess.PIPE, env=env)
        assert server.stdout is not None
        url = ""
        while not url:
            line = (await server.stdout.readline()).decode()
            if line.startswith("url:"):
                url = line.split()[1]
        metrics = url.replace("ws://", "http://").replace("/signaling", "/metrics")
        cpu_before = cpu_seconds(server.pid)
        wall_before = time.monotonic()
        try:
            lines, stderr = await run_call(args, url, scenario)
            cpu = cpu_seconds(server.pid) - cpu_before
            wall = time.monotonic() - wall_before
            text = await asyncio.to_thread(lambda: urllib.request.urlopen(metrics, timeout=5).read().decode())
        finally:
            server.terminate()
            await server.wait()
    # imp's scenario clock started when its relay did (its stderr says when, on its own clock).
    offset = min((line["at"] - line["time"] for line in lines if line["viewer"] == "imp"), default=1.0)
    relay_at = next((float(line.split()[0]) for line in stderr["imp"].splitlines()
                     if "impairment relay running" in line), 0.0)
    args.clean_at = offset + relay_at + args.clean
    end = max((line["at"] for line in lines), default=args.duration)
    end = max(end, args.duration)
    views = timeline(lines, end)
    print(table(views, end))
    print()
    for name in PEOPLE:
        tail = [line for line in stderr[name].splitlines() if "relay" in line or "error" in line]
        if tail:
            print(f"{name}: " + "\n     ".join(tail))
    def metric(prefix: str) -> float:
        return next((float(x.split()[-1]) for x in text.splitlines() if x.startswith(prefix)), 0.0)

    samples = metric("rtcprobe_room_samples_total")
    messages = {d: metric(f'rtcprobe_room_messages_total{{direction="{d}"}}') for d in ("in", "out")}
    print(f"server: {cpu:.2f} s CPU over {wall:.1f} s ({100 * cpu / wall:.2f} % of a core, "
          f"{1000 * cpu / wall / len(PEOPLE):.2f} ms CPU per participant per second); "
          f"{samples:.0f} samples, {messages['in']:.0f} room messages in, {messages['out']:.0f} out")
    if args.lines is not None:
        args.lines.write_text("".join(json.dumps(line) + "\n" for line in lines))
    plot(views, end, args.png, args)
    print(f"plot: {args.png}")


if __name__ == "__main__":
    asyncio.run(main())
