"""The event-driven pipeline's packet queues (Python records) follow the steady state's
``Queue`` (PACKET arrays) exactly: the same packets out, in the same order, at every step, and
the same queue handed over at the switch. Reordering links, drops, ties in arrival time, the
DTLS cut-off and the sent-before rule at equal times included."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from rtcprobe.drivers.sim._media import PACKET, Packets
from rtcprobe.drivers.sim._pipeline import _Flight
from rtcprobe.drivers.sim._streams import Queue


def _batch(rng: random.Random, t0: float, seq0: int, n: int) -> list[tuple[object, ...]]:
    """n packets sent from t0 on, some at the very same moment (a frame's packets)."""
    out = []
    t = t0
    for i in range(n):
        if rng.random() < 0.6:
            t += rng.choice([0.001, 0.02, 0.0005])
        out.append((t, 100 + i, 88 + i, i % 2, seq0 + i, 960 * (seq0 + i), -1, False, 1, t))
    return out


@pytest.mark.parametrize("reorder", [False, True])
@pytest.mark.parametrize("seed", range(12))
def test_flight_is_queue(reorder: bool, seed: int) -> None:
    rng = random.Random(seed)
    flight, queue = _Flight(reorder), Queue(reorder)
    now, seq = 0.0, 0
    for _ in range(40):
        if rng.random() < 0.6:
            sent = _batch(rng, now, seq, rng.randint(1, 6))
            seq += len(sent)
            # delivery: a delay, jitter that may reorder (only used when the link reorders), drops
            arrival = []
            for r in sent:
                d = float(r[0]) + 0.03 + (rng.choice([0.0, 0.0, 0.004, -0.004, 0.01]) if reorder else 0.0)
                arrival.append(math.nan if rng.random() < 0.15 else d)
            if not reorder:  # a FIFO link never delivers out of order
                arrival = [a if a != a else max([a] + [b for b in arrival[:i] if b == b])
                           for i, a in enumerate(arrival)]
            flight.arrive(sent, arrival)
            queue.arrive(Packets(np.array(sent, dtype=PACKET)), np.array(arrival))
        else:
            now += rng.choice([0.0, 0.005, 0.02, 0.05])
            t = now if rng.random() < 0.5 or not flight.recs else flight.recs[0][0]
            accept_at = rng.choice([-math.inf, -math.inf, now - 0.01])
            sent_before = rng.choice([math.inf, math.inf, now - 0.02])
            got = flight.pop_until(t, accept_at, sent_before)
            want = queue.pop_until(t, accept_at, sent_before).a.tolist()
            assert got == want
        assert flight.min == queue.min
    handed = flight.queue()
    assert handed.a.tolist() == queue.a.tolist() and handed.min == queue.min
    # The handed-over queue goes on as the one that was a queue throughout.
    for _ in range(3):
        sent = _batch(rng, now, seq, 200)
        seq += len(sent)
        arrival = np.array([float(r[0]) + 0.03 for r in sent])
        for q in (handed, queue):
            q.arrive(Packets(np.array(sent, dtype=PACKET)), arrival)
        now += 0.05
        assert handed.pop_until(now, -math.inf).a.tolist() == queue.pop_until(now, -math.inf).a.tolist()
        assert handed.a.tolist() == queue.a.tolist() and handed.min == queue.min
