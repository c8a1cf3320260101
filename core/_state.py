"""The preflight test's state machine, as data: the table is the machine.

Theory of operation
-------------------
A preflight is a fixed sequence of steps (docs/references.md#twilio-video-preflight,
docs/architecture.md#the-step-table):

    ACQUIRING_MEDIA -> CONNECTING_SIGNALING -> CONNECTING_MEDIA -> SUBSCRIBING
        -> STARTING_MEDIA -> COLLECTING_STATS -> COMPLETED

Everything that decides a transition is in the two tables below, :data:`RULES` and :data:`STEPS`;
the machine (:class:`rtcprobe.core.PreflightMachine`) is an interpreter that looks them up and
executes the effects they list, in the spirit of h11's ``_state.py``.

* :data:`RULES` says, for each observation type, in which states it is accepted and what it does
  there: a tuple of :data:`Effect` values. Observations with enumerated fields (ICE, DTLS and
  peer-connection states, media kinds, unobservable steps) have one entry per possible value, so
  the table lists every (role, state) a driver can report and what it means: record a
  :class:`Fact`, start or stop a connection timer, emit a progress event, mark a connection
  reconnecting, or fail with an error code. An observation a state does not accept is ignored and
  counted, never raised: it comes from the network, which may be late or odd.
* :data:`STEPS` says, for each live state, the condition to leave it (a pure predicate over the
  :class:`Facts`, with the same condition in words), the successor, the error its timer
  (``duration + 10 s``) fails with, and the effects run on entry and on exit: the actions asked of
  the driver and the progress events that mark the step.
* The machine records facts rather than expecting observations in one order, then advances
  through every step whose condition holds. That keeps it robust: aiortc fires ``track`` before
  ICE connects, yet ``mediaSubscribed`` is reported when the subscribe step is reached, as Twilio
  Video reports it (its promise is already resolved by then).

Every edge to FAILED comes from the tables: a rule whose effects contain :class:`Fail` (ICE
failed/closed, DTLS failed or closed, connection failed/closed, stop) or :class:`FailAsTold` (a
TransportError fails with the code it carries), in every state that accepts it, and each step's
timeout. COMPLETED and FAILED are terminal and ignore everything. :func:`edges` lists every
transition the machine can take and :func:`diagram` draws them (docs/preflight-states.dot).

The effects are plain data; what executing one means (a timer is a monotonic-clock pair, a sample
feeds the scorer) is in the interpreter, which has no other logic of its own.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Final, TypeVar

import attrs

from . import errors
from .config import Kind
from .errors import PreflightErrorInfo
from .observations import (
    CONNECTION_STATES,
    DTLS_STATES,
    ICE_STATES,
    KINDS,
    OBSERVATION_TYPES,
    ConnectionState,
    ConnectionStateChanged,
    DtlsState,
    DtlsStateChanged,
    IceServer,
    IceState,
    IceStateChanged,
    MediaAcquired,
    MediaStarted,
    Observation,
    ProgressName,
    Role,
    SignalingConnected,
    StatsObserved,
    StepUnobservable,
    StopRequested,
    TrackSubscribed,
    TransportError,
    UnobservableStep,
)
from .report import TimerName


class State(enum.Enum):
    # Members are singletons: hash by identity in C, not Enum's Python-level hash of the name
    # (the tables are looked up by state and fact on every call into the machine).
    __hash__ = object.__hash__

    NEW = "new"
    ACQUIRING_MEDIA = "acquiringMedia"
    CONNECTING_SIGNALING = "connectingSignaling"
    CONNECTING_MEDIA = "connectingMedia"
    SUBSCRIBING = "subscribing"
    STARTING_MEDIA = "startingMedia"
    COLLECTING_STATS = "collectingStats"
    COMPLETED = "completed"
    FAILED = "failed"


TERMINAL: Final = frozenset({State.COMPLETED, State.FAILED})

# --- Facts: what the machine has learned, the input of every step's condition -------------------


class Fact(enum.Enum):
    __hash__ = object.__hash__  # as State's

    MEDIA_ACQUIRED = "media acquired"
    ICE_CONNECTED = "publisher ICE connected"
    DTLS_CONNECTED = "publisher DTLS connected"
    PEER_CONNECTION_CONNECTED = "publisher connection connected"
    DTLS_UNOBSERVABLE = "DTLS state unobservable"
    PEER_CONNECTION_UNOBSERVABLE = "connection state unobservable"
    AUDIO_SUBSCRIBED = "audio track subscribed"
    VIDEO_SUBSCRIBED = "video track subscribed"
    AUDIO_STARTED = "received audio started"
    VIDEO_STARTED = "received video started"


SUBSCRIBED: Final[Mapping[Kind, Fact]] = {"audio": Fact.AUDIO_SUBSCRIBED, "video": Fact.VIDEO_SUBSCRIBED}
STARTED: Final[Mapping[Kind, Fact]] = {"audio": Fact.AUDIO_STARTED, "video": Fact.VIDEO_STARTED}
UNOBSERVABLE: Final[Mapping[UnobservableStep, Fact]] = {
    "dtlsConnected": Fact.DTLS_UNOBSERVABLE,
    "peerConnectionConnected": Fact.PEER_CONNECTION_UNOBSERVABLE,
}


@attrs.frozen
class Facts:
    """Everything a step's condition may read: what the test publishes and what has been seen."""

    published: tuple[Kind, ...]  # the media kinds the test publishes (and subscribes back)
    samples_wanted: int
    seen: frozenset[Fact] = frozenset()
    ice_servers: tuple[IceServer, ...] | None = None  # None until signaling hands them out
    samples_taken: int = 0

    def __contains__(self, fact: Fact) -> bool:
        return fact in self.seen

    # Built field by field rather than with attrs.evolve, which introspects the class on every
    # call: the stats step counts a sample this way ten times a second of test.
    def with_fact(self, fact: Fact) -> Facts:
        if fact in self.seen:
            return self
        return Facts(self.published, self.samples_wanted, self.seen | {fact}, self.ice_servers, self.samples_taken)

    def with_sample(self) -> Facts:
        """One more stats sample taken."""
        return Facts(self.published, self.samples_wanted, self.seen, self.ice_servers, self.samples_taken + 1)


# --- Effects: what a rule or a step does; the machine executes them in order ---------------------
# Every effect is idempotent where it can be reached twice (a fact recorded, a progress event
# emitted, a timer started or stopped at most once), so a repeated observation changes nothing.


@attrs.frozen
class Record:
    """Remember a fact."""

    fact: Fact


@attrs.frozen
class LearnIceServers:
    """Remember the ICE servers signaling handed out (a SignalingConnected rule)."""


@attrs.frozen
class Emit:
    """Emit a progress event (once per test)."""

    name: ProgressName


@attrs.frozen
class StartTimer:
    """Start a connection timer of the report's ``networkTiming`` (once)."""

    name: TimerName


@attrs.frozen
class StopTimer:
    """Stop a running connection timer."""

    name: TimerName


@attrs.frozen
class Lap:
    """Stop a connection timer; a driver that never reported its start state (ICE 'checking', DTLS
    'connecting') gets it timed from when the peer connections were opened."""

    name: TimerName


@attrs.frozen
class Reconnecting:
    """Mark one connection as reconnecting (or back): network quality is 0 while any is."""

    role: Role
    on: bool


@attrs.frozen
class Fail:
    """End the test with this error."""

    error: PreflightErrorInfo


@attrs.frozen
class FailAsTold:
    """End the test with the error the observation carries (a TransportError)."""


@attrs.frozen
class RequestMedia:
    """Ask the driver for the synthetic tracks (:class:`~rtcprobe.core.observations.AcquireMedia`)."""


@attrs.frozen
class RequestSignaling:
    """Ask the driver to connect to signaling (:class:`~rtcprobe.core.observations.ConnectSignaling`)."""


@attrs.frozen
class RequestPeerConnections:
    """Ask the driver to open both peer connections with the learned ICE servers
    (:class:`~rtcprobe.core.observations.OpenPeerConnections`)."""


@attrs.frozen
class StartSampling:
    """Start the stats clock: one sample request per sample interval from now."""


@attrs.frozen
class TakeSample:
    """Measure the observed stats sample, if one was requested (else ignore it: the count stays
    exact)."""


Effect = (
    Record
    | LearnIceServers
    | Emit
    | StartTimer
    | StopTimer
    | Lap
    | Reconnecting
    | Fail
    | FailAsTold
    | RequestMedia
    | RequestSignaling
    | RequestPeerConnections
    | StartSampling
    | TakeSample
)
Effects = tuple[Effect, ...]

# --- Rules: what each observation does, and where -----------------------------------------------

@attrs.frozen
class Rule:
    """What observations of one type do in the states that accept them.

    Either every observation of the type has the same ``effects``, or (enumerated types) the
    table has one entry per possible observation in ``by_value``.
    """

    label: str  # how the diagram names this kind of observation
    accepted_in: frozenset[State]
    effects: Effects = ()
    by_value: Mapping[Observation, Effects] | None = None

    def effects_for(self, observation: Observation) -> Effects:
        return self.effects if self.by_value is None else self.by_value[observation]


_LIVE: Final = frozenset(
    {
        State.ACQUIRING_MEDIA,
        State.CONNECTING_SIGNALING,
        State.CONNECTING_MEDIA,
        State.SUBSCRIBING,
        State.STARTING_MEDIA,
        State.COLLECTING_STATS,
    }
)
_MEDIA: Final = frozenset({State.CONNECTING_MEDIA, State.SUBSCRIBING, State.STARTING_MEDIA, State.COLLECTING_STATS})

_PUB, _SUB = Role.PUBLISHER, Role.SUBSCRIBER
_NOTHING: Final[Mapping[Role, Effects]] = {_PUB: (), _SUB: ()}


def _both(*effects: Effect) -> Mapping[Role, Effects]:
    return {role: effects for role in Role}


def _fail_on_both(error: PreflightErrorInfo, message: str) -> Mapping[Role, Effects]:
    """Fail on either connection; ``message`` names it as ``{role}``."""
    return {role: (Fail(error.with_message(message.format(role=role.value))),) for role in Role}


_ICE_CONNECTED: Final[Mapping[Role, Effects]] = {
    _PUB: (Reconnecting(_PUB, False), Record(Fact.ICE_CONNECTED), Lap("ice"), Emit("iceConnected")),
    _SUB: (Reconnecting(_SUB, False),),
}
ICE_RULES: Final[Mapping[IceState, Mapping[Role, Effects]]] = {
    "new": _NOTHING,
    "checking": {_PUB: (StartTimer("ice"),), _SUB: ()},
    "connected": _ICE_CONNECTED,
    "completed": _ICE_CONNECTED,
    "failed": _fail_on_both(errors.MEDIA_CONNECTION, "ICE failed on the {role} connection"),
    "disconnected": {role: (Reconnecting(role, True),) for role in Role},
    "closed": _fail_on_both(errors.MEDIA_CONNECTION, "ICE closed on the {role} connection"),
}
DTLS_RULES: Final[Mapping[DtlsState, Mapping[Role, Effects]]] = {
    "new": _NOTHING,
    "connecting": {_PUB: (StartTimer("dtls"),), _SUB: ()},
    "connected": {_PUB: (Record(Fact.DTLS_CONNECTED), Lap("dtls"), Emit("dtlsConnected")), _SUB: ()},
    "closed": _fail_on_both(errors.MEDIA_CONNECTION, "DTLS transport closed on the {role} connection"),
    "failed": _fail_on_both(errors.MEDIA_DTLS_FAILED, "DTLS handshake failed on the {role} connection"),
}
CONNECTION_RULES: Final[Mapping[ConnectionState, Mapping[Role, Effects]]] = {
    "new": _NOTHING,
    "connecting": {_PUB: (StartTimer("peerConnection"),), _SUB: ()},
    "connected": {
        _PUB: (
            Reconnecting(_PUB, False),
            Record(Fact.PEER_CONNECTION_CONNECTED),
            Lap("peerConnection"),
            Emit("peerConnectionConnected"),
        ),
        _SUB: (Reconnecting(_SUB, False),),
    },
    "disconnected": {role: (Reconnecting(role, True),) for role in Role},
    "failed": _fail_on_both(errors.MEDIA_CONNECTION, "peer connection failed ({role})"),
    "closed": _fail_on_both(errors.MEDIA_CONNECTION, "peer connection closed ({role})"),
}

_StateObs = TypeVar("_StateObs", IceStateChanged, DtlsStateChanged, ConnectionStateChanged)
_S = TypeVar("_S", bound=str)


def _per_role_and_state(
    make: Callable[[Role, _S], _StateObs], states: tuple[_S, ...], spec: Mapping[_S, Mapping[Role, Effects]]
) -> dict[Observation, Effects]:
    """One entry per (role, state); a state or role missing from ``spec`` fails at import."""
    if set(spec) != set(states):
        raise AssertionError(f"rules for {sorted(set(states) ^ set(spec))} are missing or unknown")
    table: dict[Observation, Effects] = {}
    for state in states:
        if set(spec[state]) != set(Role):
            raise AssertionError(f"state {state!r}: every role needs a rule")
        for role in Role:
            table[make(role, state)] = spec[state][role]
    return table


RULES: Final[Mapping[type[Observation], Rule]] = {
    MediaAcquired: Rule("media acquired", frozenset({State.ACQUIRING_MEDIA}), (Record(Fact.MEDIA_ACQUIRED),)),
    SignalingConnected: Rule("signaling connected", frozenset({State.CONNECTING_SIGNALING}), (LearnIceServers(),)),
    IceStateChanged: Rule("ICE", _MEDIA, by_value=_per_role_and_state(IceStateChanged, ICE_STATES, ICE_RULES)),
    DtlsStateChanged: Rule("DTLS", _MEDIA, by_value=_per_role_and_state(DtlsStateChanged, DTLS_STATES, DTLS_RULES)),
    ConnectionStateChanged: Rule(
        "connection", _MEDIA, by_value=_per_role_and_state(ConnectionStateChanged, CONNECTION_STATES, CONNECTION_RULES)
    ),
    TrackSubscribed: Rule(
        "track subscribed", _MEDIA, by_value={TrackSubscribed(k): (Record(SUBSCRIBED[k]),) for k in KINDS}
    ),
    MediaStarted: Rule("media started", _MEDIA, by_value={MediaStarted(k): (Record(STARTED[k]),) for k in KINDS}),
    StepUnobservable: Rule(
        "step unobservable", _LIVE, by_value={StepUnobservable(s): (Record(f),) for s, f in UNOBSERVABLE.items()}
    ),
    StatsObserved: Rule("stats", frozenset({State.COLLECTING_STATS}), (TakeSample(),)),
    TransportError: Rule("TransportError", _LIVE, (FailAsTold(),)),
    StopRequested: Rule("stop", _LIVE, (Fail(errors.STOPPED),)),
}

if set(RULES) != set(OBSERVATION_TYPES):  # the one list of observation types is the union
    raise AssertionError(f"observation types without a rule: {set(OBSERVATION_TYPES) ^ set(RULES)}")

# --- Steps: when each step is done, what it does on entry and exit ------------------------------


def _media_acquired(f: Facts) -> bool:
    return Fact.MEDIA_ACQUIRED in f


def _signaling_connected(f: Facts) -> bool:
    return f.ice_servers is not None


def _media_connected(f: Facts) -> bool:
    return (
        Fact.ICE_CONNECTED in f
        and (Fact.DTLS_CONNECTED in f or Fact.DTLS_UNOBSERVABLE in f)
        and (Fact.PEER_CONNECTION_CONNECTED in f or Fact.PEER_CONNECTION_UNOBSERVABLE in f)
    )


def _all_subscribed(f: Facts) -> bool:
    return all(SUBSCRIBED[kind] in f for kind in f.published)


def _media_started(f: Facts) -> bool:
    return STARTED["video" if "video" in f.published else "audio"] in f


def _all_samples_taken(f: Facts) -> bool:
    return f.samples_taken >= f.samples_wanted


@attrs.frozen
class Step:
    condition: str  # what must hold to leave the step, in words (diagram, timeout message)
    done: Callable[[Facts], bool]  # the same, as a pure predicate
    next: State
    timeout_error: PreflightErrorInfo
    on_entry: Effects = ()
    on_exit: Effects = ()

    def timed_out(self, after: float) -> PreflightErrorInfo:
        """The error of this step's timer running out after ``after`` seconds."""
        e = self.timeout_error
        return e.with_message(f"{e.message} (timed out after {after:g} s waiting for: {self.condition})")


STEPS: Final[Mapping[State, Step]] = {
    State.ACQUIRING_MEDIA: Step(
        "synthetic tracks acquired", _media_acquired, State.CONNECTING_SIGNALING, errors.MEDIA_CONNECTION,
        on_entry=(RequestMedia(),),
        on_exit=(Emit("mediaAcquired"),),
    ),
    State.CONNECTING_SIGNALING: Step(
        "signaling accepted the token and returned ICE servers", _signaling_connected, State.CONNECTING_MEDIA,
        errors.SIGNALING_TIMEOUT,
        on_entry=(StartTimer("connect"), RequestSignaling()),
        on_exit=(StopTimer("connect"), Emit("connected")),
    ),
    State.CONNECTING_MEDIA: Step(
        "publisher ICE connected, DTLS connected and connection connected (unless unobservable)",
        _media_connected, State.SUBSCRIBING, errors.MEDIA_CONNECTION,
        on_entry=(StartTimer("media"), RequestPeerConnections()),
    ),
    State.SUBSCRIBING: Step(
        "one subscribed track per published track", _all_subscribed, State.STARTING_MEDIA, errors.MEDIA_CONNECTION,
        on_exit=(Emit("mediaSubscribed"),),
    ),
    State.STARTING_MEDIA: Step(
        "received video (or audio when no video is published) started", _media_started, State.COLLECTING_STATS,
        errors.MEDIA_CONNECTION,
        on_exit=(StopTimer("media"), Emit("mediaStarted")),
    ),
    State.COLLECTING_STATS: Step(
        "every stats sample of the duration taken", _all_samples_taken, State.COMPLETED, errors.MEDIA_CONNECTION,
        on_entry=(StartSampling(),),
    ),
}

if frozenset(STEPS) != _LIVE:
    raise AssertionError("every live state is a step")

# --- Edges and the diagram, generated from the tables -------------------------------------------


@attrs.frozen
class Edge:
    """One transition the machine can take; ``label`` names its trigger (and error code)."""

    source: State
    target: State
    label: str

    @property
    def failure(self) -> bool:
        return self.target is State.FAILED


def _failure_labels(rule: Rule) -> list[str]:
    """The rule's failures, one per error code: 'ICE failed/closed 53405', 'stop 99000'."""
    if rule.by_value is None:
        return [
            f"{rule.label} (its code)" if isinstance(e, FailAsTold) else f"{rule.label} {e.error.code}"
            for e in rule.effects
            if isinstance(e, Fail | FailAsTold)
        ]
    triggers: dict[int, list[str]] = {}
    roles: dict[int, set[Role]] = {}
    for observation, effects in rule.by_value.items():
        for e in effects:
            if isinstance(e, Fail):
                # The observation's enumerated value(s) other than its role: 'failed', 'closed'.
                values = [str(v) for v in attrs.astuple(observation, recurse=False) if not isinstance(v, Role)]
                names = triggers.setdefault(e.error.code, [])
                if " ".join(values) not in names:
                    names.append(" ".join(values))
                roles.setdefault(e.error.code, set()).update(
                    v for v in attrs.astuple(observation, recurse=False) if isinstance(v, Role)
                )
    labels = []
    for code, names in triggers.items():
        who = "" if roles[code] in (set(), set(Role)) else " (" + "/".join(sorted(r.value for r in roles[code])) + ")"
        labels.append(f"{rule.label} {'/'.join(names)}{who} {code}")
    return labels


def edges() -> tuple[Edge, ...]:
    """Every transition the machine can take: start, each step's success, and every failure."""
    out = [Edge(State.NEW, State.ACQUIRING_MEDIA, "start")]
    for state, step in STEPS.items():
        emits = [e.name for e in step.on_exit if isinstance(e, Emit)]
        out.append(Edge(state, step.next, step.condition + (f" / {', '.join(emits)}" if emits else "")))
    for state, step in STEPS.items():
        for rule in RULES.values():
            if state in rule.accepted_in:
                out.extend(Edge(state, State.FAILED, label) for label in _failure_labels(rule))
        out.append(Edge(state, State.FAILED, f"timeout {step.timeout_error.code}"))
    return tuple(out)


def diagram() -> str:
    """The machine in Graphviz dot, generated from the tables (docs/preflight-states.dot).

    One arrow per (source, target): a failure arrow lists each of its triggers on a line of its
    label (``\\l``: left-justified lines).
    """
    lines = [
        "digraph preflight {",
        '  node [shape=box, fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
        f"  {State.COMPLETED.value} [peripheries=2];",
        f"  {State.FAILED.value} [peripheries=2];",
    ]
    arrows: dict[tuple[State, State], list[str]] = {}
    for e in edges():
        arrows.setdefault((e.source, e.target), []).append(e.label)
    for (source, target), labels in arrows.items():
        if target is State.FAILED:
            attributes = "style=dashed, label=\"" + "".join(label + "\\l" for label in labels) + "\""
        else:
            attributes = "label=\"" + " | ".join(labels) + "\""
        lines.append(f"  {source.value} -> {target.value} [{attributes}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
