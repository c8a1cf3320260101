"""The state diagram is the machine: every transition the machine takes is drawn, every drawn
transition is one the machine takes, and the committed docs/preflight-states.dot (and its SVG) is
what ``diagram()`` generates.

The machine's transitions are found by driving it, not by reading its tables: every live state is
reached, then fed every observation a driver can make (every role × state of ICE, DTLS and the
peer connection, every kind, ...), stopped, and left to time out.

``RTCPROBE_UPDATE_DIAGRAM=1 pytest tests/test_core_diagram.py`` rewrites the .dot, and the .svg
when Graphviz's ``dot`` is installed.
"""

from __future__ import annotations

import collections
import html
import itertools
import os
import re
import shutil
import subprocess
from pathlib import Path

from core_harness import CounterSource, Harness, answer_with
from rtcprobe.core import (
    ConnectionStateChanged,
    DtlsStateChanged,
    Failed,
    IceServer,
    IceStateChanged,
    MediaAcquired,
    MediaDemand,
    MediaStarted,
    Observation,
    PreflightConfig,
    Role,
    SignalingConnected,
    State,
    StatsObserved,
    StepUnobservable,
    StopRequested,
    TrackSubscribed,
    TransportError,
    diagram,
    errors,
)
from rtcprobe.core.observations import CONNECTION_STATES, DTLS_STATES, ICE_STATES, KINDS, UNOBSERVABLE_STEPS
from test_core_machine import STEP_FEEDS, harness_in

DOCS = Path(__file__).resolve().parent.parent / "docs"
DOT, SVG = DOCS / "preflight-states.dot", DOCS / "preflight-states.svg"
UPDATE = os.environ.get("RTCPROBE_UPDATE_DIAGRAM") == "1"

# (source, target, trigger, code): trigger and code are None on a success edge, the code is
# "(its code)" for a TransportError, which fails with the code it carries.
EdgeKey = tuple[str, str, str | None, str | None]

EVERY_OBSERVATION: list[Observation] = [
    MediaAcquired(),
    SignalingConnected(()),
    SignalingConnected((IceServer(("turn:192.0.2.1:3478",), "u", "p"),)),
    *(IceStateChanged(role, s) for role in Role for s in ICE_STATES),
    *(DtlsStateChanged(role, s) for role in Role for s in DTLS_STATES),
    *(ConnectionStateChanged(role, s) for role in Role for s in CONNECTION_STATES),
    *(TrackSubscribed(k) for k in KINDS),
    *(MediaStarted(k) for k in KINDS),
    *(StepUnobservable(n) for n in UNOBSERVABLE_STEPS),
    StatsObserved(CounterSource().sample()),
    *(TransportError(e) for e in errors.ERRORS.values()),
    StopRequested(),
]


def _trigger(obs: Observation) -> str:
    """How the diagram names what made the machine fail (this test's own vocabulary)."""
    match obs:
        case IceStateChanged(state=s):
            return f"ICE {s}"
        case DtlsStateChanged(state=s):
            return f"DTLS {s}"
        case ConnectionStateChanged(state=s):
            return f"connection {s}"
        case TransportError():
            return "TransportError"
        case StopRequested():
            return "stop"
    raise AssertionError(f"{obs!r} made the machine fail")


def _edge(before: State, h: Harness, obs: Observation | None) -> EdgeKey | None:
    after = h.test.state
    if after is before:
        return None
    if after is not State.FAILED:
        return (before.value, after.value, None, None)
    failed = h.events[-1]
    assert isinstance(failed, Failed)
    if isinstance(obs, TransportError):
        assert failed.error == obs.error
        return (before.value, after.value, "TransportError", "(its code)")
    return (before.value, after.value, "timeout" if obs is None else _trigger(obs), str(failed.error.code))


def machine_edges() -> set[EdgeKey]:
    found: set[EdgeKey] = set()
    h = Harness()
    h.test.start(h.now)
    found.add((State.NEW.value, h.test.state.value, None, None))
    # The success path, one step at a time.
    states = list(STEP_FEEDS)
    for state, nxt in itertools.pairwise(states):
        h = harness_in(state)
        for obs in STEP_FEEDS[nxt][len(STEP_FEEDS[state]):]:
            before = h.test.state
            h.feed(obs, 0.01)
            if (e := _edge(before, h, obs)) is not None:
                found.add(e)
    h = harness_in(State.COLLECTING_STATS)
    h.advance(h.test.config.duration + 0.5, on_sample=answer_with(h, CounterSource()))
    found.add((State.COLLECTING_STATS.value, h.test.state.value, None, None))
    # Every observation and the timeout, in every live state.
    for state in states:
        for obs in EVERY_OBSERVATION:
            h = harness_in(state)
            h.feed(obs, 0.01)
            if (e := _edge(state, h, obs)) is not None:
                found.add(e)
        h = harness_in(state)
        h.advance(h.test.config.step_timeout)
        if (e := _edge(state, h, None)) is not None:
            found.add(e)
    return found


_ARROW = re.compile(r'^\s*(\w+) -> (\w+) \[(style=dashed, )?label="(.*)"\];$')
_FAILURE = re.compile(r"^(ICE|DTLS|connection|TransportError|stop|timeout)(?: ([a-z/]+))? (\d+|\(its code\))$")


def drawn_edges(dot: str) -> set[EdgeKey]:
    found: set[EdgeKey] = set()
    for line in dot.splitlines():
        m = _ARROW.match(line)
        if m is None:
            continue
        source, target, dashed, label = m.groups()
        if not dashed:
            found.add((source, target, None, None))
            continue
        for text in label.split("\\l"):
            if not text:
                continue
            f = _FAILURE.match(text)
            assert f is not None, f"unreadable failure label {text!r}"
            family, states, code = f.groups()
            for s in states.split("/") if states else [None]:
                found.add((source, target, family if s is None else f"{family} {s}", code))
    return found


def test_every_edge_the_machine_takes_is_drawn_and_every_drawn_edge_is_taken() -> None:
    taken, drawn = machine_edges(), drawn_edges(diagram())
    assert taken - drawn == set(), "the machine takes edges the diagram does not draw"
    assert drawn - taken == set(), "the diagram draws edges the machine never takes"
    # The failures the review listed, in every state that has peer connections.
    for state in ("connectingMedia", "subscribing", "startingMedia", "collectingStats"):
        for trigger, code in [("ICE failed", "53405"), ("ICE closed", "53405"), ("DTLS failed", "53407"),
                              ("DTLS closed", "53405"), ("connection failed", "53405"),
                              ("connection closed", "53405"), ("stop", "99000"), ("timeout", "53405"),
                              ("TransportError", "(its code)")]:
            assert (state, "failed", trigger, code) in taken


def test_audio_only_takes_no_other_edge() -> None:
    # The step conditions read the published kinds: an audio-only run takes the same edges.
    cfg = PreflightConfig(duration=1.0, media=MediaDemand(audio=True, video=None))
    h = harness_in(State.SUBSCRIBING, cfg)
    seen = []
    for obs in (TrackSubscribed("audio"), MediaStarted("audio")):
        before = h.test.state
        h.feed(obs, 0.01)
        seen.append(_edge(before, h, obs))
    assert seen == [("subscribing", "startingMedia", None, None), ("startingMedia", "collectingStats", None, None)]
    assert set(seen) <= drawn_edges(diagram())


def test_committed_dot_is_the_generated_diagram() -> None:
    if UPDATE:
        DOT.write_text(diagram())
        if shutil.which("dot"):
            subprocess.run(["dot", "-Tsvg", str(DOT), "-o", str(SVG)], check=True)
    assert DOT.read_text() == diagram(), (
        "docs/preflight-states.dot is stale: RTCPROBE_UPDATE_DIAGRAM=1 pytest tests/test_core_diagram.py"
    )


def test_committed_svg_draws_the_committed_dot() -> None:
    svg = SVG.read_text()
    dot = DOT.read_text()
    arrows = collections.Counter(f"{m[1]}->{m[2]}" for line in dot.splitlines() if (m := _ARROW.match(line)))
    titles = collections.Counter(
        html.unescape(t) for t in re.findall(r'<g id="edge\d+" class="edge">\s*<title>(.*?)</title>', svg)
    )
    assert titles == arrows, "docs/preflight-states.svg is stale: regenerate it from the .dot"
    texts = {html.unescape(t) for t in re.findall(r"<text[^>]*>(.*?)</text>", svg)}
    for line in dot.splitlines():
        if m := _ARROW.match(line):
            for text in m[4].split("\\l"):
                assert not text or text in texts, f"the SVG lacks the label {text!r}"

