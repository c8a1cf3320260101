"""Closing an aiortc peer connection so that nothing it started keeps running.

The client driver (``driver.py``) uses it for its two peer connections (the signaling server
holds none). It also holds the one done callback every task the driver spawns or adopts gets
(:func:`own`).

Theory of operation
-------------------
``RTCPeerConnection.close()`` alone leaves work behind when it lands in the middle of setup (ICE
checks, the DTLS handshake) or when a TURN server is gone, because aiortc and aioice race with it.
:func:`close_peer_connection` runs, for one peer connection, each step below in this order; each
step exists for one race:

1. **aiortc's connect task.** ``setLocalDescription``/``setRemoteDescription`` spawn
   ``RTCPeerConnection.__connect`` (ICE, DTLS, then senders/receivers) as their last act and keep
   no reference to it. It resumes after ``close()``: it may raise InvalidStateError ("RTCIceTransport
   is closed"; asyncio then logs "Task exception was never retrieved") or start senders/receivers
   on the closed connection. :func:`adopt_connect_tasks`, called right after each of those two
   calls (also when they raise), keeps the task and retrieves its outcome (:func:`own`);
   after ``close()`` it is awaited (up to ``late_start_timeout``), and cancelled past that.
2. **A bounded close.** aioice closes a relayed candidate by deleting its TURN allocation (a
   Refresh with lifetime 0) and waits for the answer through every STUN retransmission: ~30 s per
   allocation when nobody answers. Past ``close_timeout`` each deletion still in flight is given
   up (cancelled: aioice then closes the allocation's socket, and the server lets the allocation
   expire), so ``close()`` goes on and finishes normally — states to "closed", listeners removed.
   Only if it still does not finish within a second ``close_timeout`` is ``close()`` itself
   cancelled (a warning). Peers without TURN have no deletion: the bound never bites.
3. **A late ICE start.** ``close()`` makes an interrupted ``RTCIceTransport.start()`` return, but
   a loop turn later; the consent task of step 5 only exists once it has. Its "started" event is
   awaited within what is left of ``late_start_timeout`` (a fallback for a connect task that was
   not adopted: the adopted one has awaited ``start()`` already).
4. **Senders/receivers started late.** The connect task may start them (RTCP loops, decoder
   threads) after ``close()`` stopped them. Stopping every sender and receiver again is idempotent
   and ends whatever started late.
5. **aioice's consent loop.** When ``close()`` lands after the check list completed but before
   ``Connection.connect()`` resumed, ``connect()`` still starts its consent-freshness loop on the
   closed connection, which then sleeps and wakes forever. It is cancelled.

:func:`tasks_of` finds what still runs a method of given aiortc/aioice objects.

Private state
-------------
Every access to aiortc/aioice private state made for tear-down is in this module, each marked
``# private:`` with the version detail it relies on (aiortc 1.16, aioice 0.13). Another layout
makes that step find nothing (an empty list, ``None``) rather than raise: the close then behaves
as aiortc made it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from aiortc import RTCPeerConnection

if TYPE_CHECKING:
    Log = logging.Logger | logging.LoggerAdapter[Any]

CLOSE_POLL = 0.05  # s between looks for the next TURN deallocation to give up, once past the bound

_log = logging.getLogger(__name__)


# --- finding tasks nobody keeps ------------------------------------------------------------------


def task_owner(task: asyncio.Task[Any]) -> object | None:
    """The object whose method ``task`` runs (its coroutine's ``self``), or None."""
    # private: CPython coroutines expose their frame (cr_frame) and its locals until they finish.
    frame = getattr(task.get_coro(), "cr_frame", None)
    return None if frame is None else frame.f_locals.get("self")


def tasks_of(owners: Iterable[object]) -> list[asyncio.Task[Any]]:
    """The pending tasks running a method of one of ``owners``."""
    ids = {id(o) for o in owners}  # the caller holds the owners: their ids stay unique meanwhile
    found = []
    for task in asyncio.all_tasks():
        owner = task_owner(task)
        if owner is not None and id(owner) in ids and not task.done():
            found.append(task)
    return found


def _dtls_transports(pc: RTCPeerConnection) -> list[Any]:
    """The peer connection's distinct DTLS transports (one with max-bundle)."""
    found: list[Any] = []
    candidates = [t.sender.transport for t in pc.getTransceivers()]
    candidates += [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        candidates.append(pc.sctp.transport)
    for dtls in candidates:
        if dtls is not None and all(dtls is not seen for seen in found):
            found.append(dtls)
    return found


def _ice_connection(ice: Any) -> Any | None:
    """The aioice ``Connection`` under an RTCIceTransport, or None."""
    # private: aiortc 1.16's RTCIceTransport keeps its gatherer's aioice Connection as ``_connection``.
    return getattr(ice, "_connection", None)


def _ice_connections(pc: RTCPeerConnection) -> list[Any]:
    return [c for dtls in _dtls_transports(pc) if (c := _ice_connection(dtls.transport)) is not None]


# --- retrieving and cancelling -------------------------------------------------------------------


def retrieve(task: asyncio.Future[Any], log: Log = _log) -> None:
    """Done callback: fetch the outcome, so asyncio never logs "exception was never retrieved"
    (``functools.partial(retrieve, log=...)`` to log elsewhere)."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        name = task.get_name() if isinstance(task, asyncio.Task) else repr(task)
        log.debug("task %s ended with %r", name, exc)


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], *, timeout: float, log: Log) -> None:
    """Cancel ``tasks`` (but the current one) and wait for them to end, up to ``timeout``."""
    current = asyncio.current_task()
    waiting = [t for t in tasks if t is not current]
    for task in waiting:
        task.cancel()  # a no-op for a task that is done already
        task.add_done_callback(lambda t: retrieve(t, log))
    if waiting:
        _, pending = await asyncio.wait(waiting, timeout=timeout)
        if pending:
            log.warning("%d task(s) did not end %g s after being cancelled: %s", len(pending), timeout, pending)


def own(task: asyncio.Task[Any], owned: set[asyncio.Task[Any]],
        on_failure: Callable[[asyncio.Task[Any], BaseException], None]) -> None:
    """Keep ``task`` in ``owned`` until it ends, then retrieve its outcome (so asyncio never logs
    "exception was never retrieved") and hand an exception, not a cancellation, to ``on_failure``.

    The one done callback of the tasks the driver spawns for its work, and of aiortc's connect
    tasks it adopts: each owner keeps the set it cancels and awaits when it closes, and says what a
    failure means to it.
    """

    def done(finished: asyncio.Task[Any]) -> None:
        owned.discard(finished)
        if not finished.cancelled() and (exc := finished.exception()) is not None:
            on_failure(finished, exc)

    owned.add(task)
    task.add_done_callback(done)


def log_failure(log: Log, *, closing: Callable[[], bool], what: str = "task",
                level: int = logging.ERROR) -> Callable[[asyncio.Task[Any], BaseException], None]:
    """An ``on_failure`` for :func:`own` that only logs: at debug level while ``closing()`` (e.g.
    InvalidStateError: a connect task resuming on a closed connection), at ``level`` otherwise."""

    def on_failure(task: asyncio.Task[Any], exc: BaseException) -> None:
        if closing():
            log.debug("%s %s ended with %r while closing", what, task.get_name(), exc)
        else:
            log.log(level, "%s %s failed", what, task.get_name(), exc_info=exc)

    return on_failure


def adopt_connect_tasks(pc: RTCPeerConnection, adopted: set[asyncio.Task[Any]], *,
                        closing: Callable[[], bool], log: Log) -> set[asyncio.Task[Any]]:
    """Add to ``adopted`` the tasks aiortc just spawned for ``pc`` and does not keep, and return
    the new ones (step 1 of the module docstring).

    Call it right after ``setLocalDescription``/``setRemoteDescription`` (in a ``finally``): they
    spawn the connect task as their last act, so it is still pending then. Each adopted task
    leaves ``adopted`` when it ends, its outcome retrieved: an exception is logged at debug level
    while ``closing()`` (a connect task resuming on a closed connection), as a warning otherwise.
    """
    on_failure = log_failure(log, closing=closing, what="aiortc task", level=logging.WARNING)
    # private: aiortc 1.16 spawns RTCPeerConnection.__connect with asyncio.ensure_future and keeps
    # no reference; only its coroutine's ``self`` (see task_owner) ties it to ``pc``.
    new = {t for t in tasks_of([pc]) if t not in adopted}
    for task in new:
        own(task, adopted, on_failure)
    return new


# --- closing -------------------------------------------------------------------------------------


async def close_peer_connection(pc: RTCPeerConnection, *, connect_tasks: Iterable[asyncio.Task[Any]],
                                close_timeout: float, late_start_timeout: float, log: Log) -> None:
    """Close ``pc`` and end what aiortc and aioice start after ``close()`` (the module docstring's
    five steps). Waits at most ``2 * close_timeout`` for the close and about ``late_start_timeout``
    per later step (all at once in the usual case); raises only when cancelled, logs the rest.
    ``connect_tasks``: what :func:`adopt_connect_tasks` adopted for ``pc``."""
    loop = asyncio.get_running_loop()
    await _close_bounded(pc, close_timeout, log)
    await asyncio.sleep(0)  # an interrupted connect task resumes now
    deadline = loop.time() + late_start_timeout
    # 1. the connect task: close() makes it return (or raise) within a few loop turns
    connect = [t for t in connect_tasks if not t.done()]
    if connect:
        _, pending = await asyncio.wait(connect, timeout=late_start_timeout)
        await cancel_and_wait(pending, timeout=late_start_timeout, log=log)
    # 3. a late ICE start
    for dtls in _dtls_transports(pc):
        # private: aiortc 1.16's RTCIceTransport.start() sets its ``__start`` Event when it returns.
        started = getattr(dtls.transport, "_RTCIceTransport__start", None)
        if isinstance(started, asyncio.Event) and not started.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(started.wait(), max(deadline - loop.time(), 0))
    # 4. senders/receivers started late
    for transceiver in pc.getTransceivers():
        for part in (transceiver.sender, transceiver.receiver):
            try:
                await part.stop()
            except Exception:
                log.exception("stopping a %s", type(part).__name__)
    # 5. aioice's consent loop
    for connection in _ice_connections(pc):
        # private: aioice 0.13's Connection.connect() ends by starting ``_query_consent_task``.
        consent = getattr(connection, "_query_consent_task", None)
        if isinstance(consent, asyncio.Task) and not consent.done():
            await cancel_and_wait([consent], timeout=late_start_timeout, log=log)


async def _close_bounded(pc: RTCPeerConnection, close_timeout: float, log: Log) -> None:
    """``pc.close()``, giving up its TURN deallocations past ``close_timeout`` and close() itself
    past twice that (step 2 of the module docstring); an exception it raises is logged."""
    loop = asyncio.get_running_loop()
    closing = asyncio.ensure_future(pc.close())
    give_up = loop.time() + close_timeout
    try:
        while not closing.done():
            now = loop.time()
            if now >= give_up + close_timeout:
                log.warning("closing a peer connection did not finish; abandoning it")
                closing.cancel()
                break
            await asyncio.wait({closing}, timeout=give_up - now if now < give_up else CLOSE_POLL)
            if not closing.done() and loop.time() >= give_up:
                for task in turn_deletions(pc):
                    log.info("giving up on TURN: %s (no answer from the TURN server)", task.get_name())
                    task.cancel()
    finally:
        if not closing.done():  # the tear-down itself was cancelled
            closing.cancel()
        (outcome,) = await asyncio.gather(closing, return_exceptions=True)
    if isinstance(outcome, Exception):
        log.error("closing a peer connection failed", exc_info=outcome)


def turn_deletions(pc: RTCPeerConnection) -> list[asyncio.Task[Any]]:
    """The TURN allocation deletions of ``pc`` still in flight, with their transports' pending
    sends (cancelled too: the deletion, which would cancel them after it, will not get there)."""
    found: list[asyncio.Task[Any]] = []
    for connection in _ice_connections(pc):
        # private: aioice 0.13's Connection keeps its StunProtocols in ``_protocols``; a relayed
        # one's ``transport`` is a TurnTransport, whose close() runs the deletion as ``__close_task``
        # and then cancels the sends waiting for a channel binding (``__send_tasks``).
        for protocol in list(getattr(connection, "_protocols", None) or ()):
            transport = getattr(protocol, "transport", None)
            task = getattr(transport, "_TurnTransport__close_task", None)
            if isinstance(task, asyncio.Task) and not task.done():
                found.append(task)
                sends = getattr(transport, "_TurnTransport__send_tasks", None)
                found.extend(t for t in list(sends or ()) if isinstance(t, asyncio.Task) and not t.done())
    return found


__all__ = [
    "CLOSE_POLL", "adopt_connect_tasks", "cancel_and_wait", "close_peer_connection", "log_failure", "own",
    "retrieve", "task_owner", "tasks_of", "turn_deletions",
]
