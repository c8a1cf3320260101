"""The simulator's seeding (drivers/sim/_seeds.py) is numpy's SeedSequence, word for word: every
random stream of a run draws what ``np.random.default_rng(seed).spawn`` would give it."""

from __future__ import annotations

import random

import numpy as np
import pytest
from rtcprobe.drivers.sim._seeds import Seeds, generators

# Small, word-boundary and multi-word seeds (more than the 4-word pool too), and random ones.
SEEDS = [0, 1, 7, 42, 2**32 - 1, 2**32, 2**64 + 5, 2**127 + 3, 2**128, 2**130 + 99]
SEEDS += [random.Random(12).getrandbits(bits) for bits in (8, 31, 33, 64, 100, 129, 200) for _ in range(3)]


@pytest.mark.parametrize("seed", SEEDS)
def test_words_are_numpys(seed: int) -> None:
    ours, numpys = Seeds(seed), np.random.SeedSequence(seed)
    for n in (1, 4, 5, 9):
        assert ours.generate_state(n).tolist() == numpys.generate_state(n).tolist()
        assert ours.generate_state(n, np.uint64).tolist() == numpys.generate_state(n, np.uint64).tolist()
    # a spawn tree three levels deep, spawning twice at each level (the child numbers go on)
    level = [(ours, numpys)]
    for _ in range(3):
        below = []
        for a, b in level:
            for k in (2, 3):
                for x, y in zip(a.spawn(k), b.spawn(k), strict=True):
                    assert x.spawn_key == y.spawn_key
                    assert x.generate_state(4, np.uint64).tolist() == y.generate_state(4, np.uint64).tolist()
                    below.append((x, y))
        level = below[::4]


@pytest.mark.parametrize("seed", SEEDS[:6])
def test_generators_draw_what_default_rng_spawns_draw(seed: int) -> None:
    for ours, numpys in zip(generators(seed, 5), np.random.default_rng(seed).spawn(5), strict=True):
        assert ours.random(4).tolist() == numpys.random(4).tolist()
        # the links spawn their own streams from theirs
        for a, b in zip(ours.spawn(2), numpys.spawn(2), strict=True):
            assert a.integers(0, 1 << 40, 3).tolist() == b.integers(0, 1 << 40, 3).tolist()


def test_negative_seeds_are_refused_as_numpy_does() -> None:
    with pytest.raises(ValueError):
        np.random.SeedSequence(-1)
    with pytest.raises(ValueError):
        Seeds(-1)


def test_a_seed_seen_before_gives_the_same_words_and_fresh_arrays() -> None:
    """The per-process memory of seeds is invisible: the same words again (against numpy's), in
    arrays of their own (a caller writing into one changes nothing for the next)."""
    seed = 2**70 + 11
    first = [s.generate_state(4, np.uint64) for s in Seeds(seed).spawn(3)]
    first[0][:] = 0
    again = [s.generate_state(4, np.uint64).tolist() for s in Seeds(seed).spawn(3)]
    numpys = [s.generate_state(4, np.uint64).tolist() for s in np.random.SeedSequence(seed).spawn(3)]
    assert again == numpys
    assert [a.tolist() for a in first[1:]] == numpys[1:]
