"""The preflight test's steps, as data.

Theory of operation
-------------------
A preflight is a fixed sequence of steps (REFERENCE.md A). Each step has one completion condition,
one error it fails with when its timer (``duration + 10 s``) runs out, and one successor:

    ACQUIRING_MEDIA -> CONNECTING_SIGNALING -> CONNECTING_MEDIA -> SUBSCRIBING
        -> STARTING_MEDIA -> COLLECTING_STATS -> COMPLETED

Observations are facts ("the publisher's ICE is connected", "a video track arrived"). The machine
records a fact whenever the table below says the current state accepts that kind of observation,
then advances through every step whose condition now holds. Recording facts rather than
expecting them in one order is what keeps the machine robust: aiortc fires ``track`` before ICE
connects, yet ``mediaSubscribed`` is reported when the subscribe step is reached, as the anchor
reports it (its promise is already resolved by then). Observations a state does not accept are
ignored and counted, never raised: they come from the network, which may be late or odd.

From any non-terminal state, a TransportError, a terminal ICE/DTLS/connection failure, a stop
request or a step timeout leads to FAILED with exactly one error code. COMPLETED and FAILED are
terminal and ignore everything.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs

from . import errors
from .errors import PreflightErrorInfo
from .observations import (
    ConnectionStateChanged,
    DtlsStateChanged,
    IceStateChanged,
    MediaAcquired,
    MediaStarted,
    SignalingConnected,
    StatsObserved,
    StepUnobservable,
    StopRequested,
    TrackSubscribed,
    TransportError,
)


class State(enum.Enum):
    NEW = "new"
    ACQUIRING_MEDIA = "acquiringMedia"
    CONNECTING_SIGNALING = "connectingSignaling"
    CONNECTING_MEDIA = "connectingMedia"
    SUBSCRIBING = "subscribing"
    STARTING_MEDIA = "startingMedia"
    COLLECTING_STATS = "collectingStats"
    COMPLETED = "completed"
    FAILED = "failed"


TERMINAL = frozenset({State.COMPLETED, State.FAILED})


@attrs.frozen
class Step:
    condition: str  # what must hold to leave the step (documentation and diagrams)
    next: State
    timeout_error: PreflightErrorInfo
    progress: tuple[str, ...]  # progress events this step is about


STEPS: Mapping[State, Step] = {
    State.ACQUIRING_MEDIA: Step(
        "synthetic tracks acquired", State.CONNECTING_SIGNALING, errors.MEDIA_CONNECTION, ("mediaAcquired",)
    ),
    State.CONNECTING_SIGNALING: Step(
        "signaling accepted the token and returned ICE servers",
        State.CONNECTING_MEDIA, errors.SIGNALING_TIMEOUT, ("connected",),
    ),
    State.CONNECTING_MEDIA: Step(
        "publisher ICE connected, DTLS connected and connection connected (unless unobservable)",
        State.SUBSCRIBING, errors.MEDIA_CONNECTION,
        ("iceConnected", "dtlsConnected", "peerConnectionConnected"),
    ),
    State.SUBSCRIBING: Step(
        "one subscribed track per published track", State.STARTING_MEDIA, errors.MEDIA_CONNECTION,
        ("mediaSubscribed",),
    ),
    State.STARTING_MEDIA: Step(
        "received video (or audio when no video is published) started", State.COLLECTING_STATS,
        errors.MEDIA_CONNECTION, ("mediaStarted",),
    ),
    State.COLLECTING_STATS: Step(
        "every stats sample of the duration taken", State.COMPLETED, errors.MEDIA_CONNECTION, ()
    ),
}

_LIVE = frozenset(STEPS)
_MEDIA = frozenset({State.CONNECTING_MEDIA, State.SUBSCRIBING, State.STARTING_MEDIA, State.COLLECTING_STATS})

# Which states record which kind of observation; everywhere else it is ignored.
ACCEPTS: Mapping[type, frozenset[State]] = {
    MediaAcquired: frozenset({State.ACQUIRING_MEDIA}),
    SignalingConnected: frozenset({State.CONNECTING_SIGNALING}),
    IceStateChanged: _MEDIA,
    DtlsStateChanged: _MEDIA,
    ConnectionStateChanged: _MEDIA,
    TrackSubscribed: _MEDIA,
    MediaStarted: _MEDIA,
    StepUnobservable: _LIVE,
    StatsObserved: frozenset({State.COLLECTING_STATS}),
    TransportError: _LIVE,
    StopRequested: _LIVE,
}


def diagram() -> str:
    """The step graph in Graphviz dot, generated from the tables above."""
    lines = ["digraph preflight {", '  rankdir=LR; node [shape=box];', '  new -> acquiringMedia [label="start"];']
    for state, step in STEPS.items():
        lines.append(f'  {state.value} -> {step.next.value} [label="{step.condition}"];')
        lines.append(f'  {state.value} -> failed [style=dashed, label="timeout {step.timeout_error.code}"];')
    lines.append("}")
    return "\n".join(lines)
