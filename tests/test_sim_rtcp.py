"""The simulator's RTCP rules (one function each, applied by both of its modes) and its event loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
from rtcprobe.drivers.sim._media import ReceiverStats
from rtcprobe.drivers.sim._net import EventLoop, Tag, Transaction
from rtcprobe.drivers.sim._rtcp import (
    DLSR_UNIT,
    Prior,
    ReportBlock,
    next_pli_at,
    pli_due,
    receiver_report,
    rtt_sample,
    smoothed_rtt,
)


def test_a_receiver_report_covers_the_loss_since_the_previous_one() -> None:
    stats = ReceiverStats(90_000)
    assert receiver_report(stats.snapshot(), Prior(), None, 0.0) is None  # nothing heard: no report
    stats.add(np.array([0.1, 0.2]), np.array([0, 3]), np.array([0, 3]), np.array([1, 1]))
    first = receiver_report(stats.snapshot(), Prior(), None, 0.25)
    assert first is not None
    block, prior = first
    assert block.fraction_lost == (2 << 8) // 4 and block.lost == 2 and block.lsr is None and block.dlsr == 0
    stats.add(np.array([0.3]), np.array([4]), np.array([4]), np.array([1]))
    second = receiver_report(stats.snapshot(), prior, None, 0.35)
    assert second is not None
    assert second[0].fraction_lost == 0 and second[0].lost == 2  # no new loss; still 2 in all


def test_a_receiver_report_echoes_the_latest_sender_report_with_its_delay() -> None:
    stats = ReceiverStats(48_000)
    stats.add(np.array([1.0]), np.array([7]), np.array([0]), np.array([10]))
    got = receiver_report(stats.snapshot(), Prior(), (0.9, 1.05), 1.3)
    assert got is not None
    assert got[0].lsr == 0.9 and got[0].dlsr == int(0.25 * DLSR_UNIT)


def test_rtt_comes_only_from_a_report_echoing_the_latest_sender_report() -> None:
    block = ReportBlock(0, 0, 0, lsr=2.0, dlsr=int(0.1 * DLSR_UNIT))
    assert rtt_sample(block, 2.3, latest_sr=2.0) == pytest.approx(0.2, abs=1e-4)
    assert rtt_sample(block, 2.3, latest_sr=2.5) is None  # an older SR: aiortc ignores it
    assert rtt_sample(block._replace(dlsr=0), 2.3, latest_sr=2.0) is None
    assert rtt_sample(block._replace(lsr=None), 2.3, latest_sr=None) is None
    assert smoothed_rtt(None, 0.2) == 0.2
    assert smoothed_rtt(0.2, 0.4) == pytest.approx(0.85 * 0.2 + 0.15 * 0.4)


def test_keyframe_requests_are_spaced() -> None:
    assert not pli_due(1.2, last_pli=1.0, up_at=0.5)
    assert pli_due(1.5, last_pli=1.0, up_at=0.5)
    assert not pli_due(1.5, last_pli=-math.inf, up_at=1.2)  # not in the first 500 ms of the subscriber's DTLS
    assert next_pli_at(1.2, last_pli=1.0, up_at=0.5) == 1.5
    assert next_pli_at(3.0, last_pli=1.0, up_at=0.5) == 3.0


def test_the_event_loop_says_what_is_pending_and_gives_entries_up_in_firing_order() -> None:
    loop = EventLoop()
    ran: list[str] = []
    loop.at(2.0, ran.append, "b", tag=Tag.OBSERVE)
    loop.at(1.0, ran.append, "a", tag=Tag.CONSENT)
    loop.at(2.0, ran.append, "c", tag=Tag.CONSENT)
    assert {(p.time, p.tag, p.args) for p in loop.pending()} == {
        (1.0, Tag.CONSENT, ("a",)), (2.0, Tag.OBSERVE, ("b",)), (2.0, Tag.CONSENT, ("c",))}
    taken = loop.remove(lambda p: p.tag is Tag.CONSENT)
    assert [p.args for p in taken] == [("a",), ("c",)]
    while loop.peek() is not None:
        loop.run_next()
    assert ran == ["b"] and loop.now == 2.0


def test_a_transaction_shows_as_a_pending_retry_until_it_finishes() -> None:
    loop = EventLoop()
    sent: list[float] = []
    tx = Transaction(loop, lambda _: sent.append(loop.now), lambda: None, rto=0.5, retransmissions=2).start()
    [retry] = list(loop.pending())
    assert retry.tag is Tag.RETRY and retry.args == (tx,) and retry.time == 0.5
    loop.run_next()
    tx.succeed()
    assert next(loop.pending()).args[0].done
    while loop.peek() is not None:
        loop.run_next()
    assert sent == [0.0, 0.5]
