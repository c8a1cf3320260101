"""numpy's SeedSequence in Python integers, for the dozen random streams a run spawns.

A run spawns its streams from the seed (``SeedSequence(seed).spawn``, and the links spawn theirs
from one of those). numpy builds every SeedSequence with several small arrays and every
``generate_state`` under an ``errstate`` context: about 9 us a stream, a third of a run's setup,
for a few dozen 32-bit multiplications and shifts. :class:`Seeds` does the same arithmetic on
Python ints (O'Neill's seed_seq as numpy implements it: hash the entropy words into a 4-word
pool, mix the pool, then hash in the words beyond the pool's size). The words beyond the pool
are mixed in one after another, so a child carries on from its parent's pool and only mixes in
its own number; the hash constants, which do not depend on the data, are tabled. The words and
so the draws are numpy's own (tests/test_sim_seeds.py checks them against numpy's
SeedSequence); a PCG64 takes a Seeds as its seed sequence. A process keeps the pools and words
of the seeds it has seen (bounded): runs with a seed seen before skip the arithmetic altogether.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, TypeVar, cast

import numpy as np
from numpy.random.bit_generator import ISpawnableSeedSequence
from numpy.typing import NDArray

_MASK = 0xFFFFFFFF
_POOL = 4  # numpy's DEFAULT_POOL_SIZE
_INIT_A, _MULT_A = 0x43B0D7E5, 0x931E8875  # hashing the entropy into the pool
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED  # hashing the pool out into state words
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715


def _constants(init: int, mult: int, n: int) -> list[tuple[int, int]]:
    """The hash constant's sequence does not depend on the data: (before, after) each update."""
    out = []
    h = init
    for _ in range(n):
        nxt = (h * mult) & _MASK
        out.append((h, nxt))
        h = nxt
    return out


# Enough for the simulator's use (a 4-word state, spawn keys a few levels deep); beyond that the
# constants are computed on the way.
_OUT = _constants(_INIT_B, _MULT_B, 16)
_OUT8 = [c for pair in _OUT[:8] for c in pair]  # a PCG64's 4 uint64 words: 8 hashes, flat
_IN = _constants(_INIT_A, _MULT_A, 64)  # the entropy hash's: 16 before the words beyond the pool, then 4 a word
_PREFIX = 16  # entropy hashes before the words beyond the pool: one per pool word, 12 mixing it


def _in_constants(n: int) -> list[tuple[int, int]]:
    """The entropy hash's first ``n`` (before, after) constants."""
    global _IN
    if n > len(_IN):
        _IN = _constants(_INIT_A, _MULT_A, n)
    return _IN


def _words(n: int) -> list[int]:
    """An entropy integer as uint32 words, least significant first (numpy's coercion)."""
    if n < 0:
        raise ValueError("seeds must be non-negative")
    out = [n & _MASK]
    n >>= 32
    while n:
        out.append(n & _MASK)
        n >>= 32
    return out


def _mix_in(pool: Sequence[int], pos: int, words: list[int]) -> tuple[tuple[int, ...], int]:
    """``pool`` with each of ``words`` mixed into every pool word, the entropy hash having run
    ``pos`` times before, and how many times it ran after. (Unrolled over the 4 pool words.)"""
    c = _in_constants(pos + 4 * len(words))
    m, lm, rm = _MASK, _MIX_L, _MIX_R
    p0, p1, p2, p3 = pool
    for w in words:
        b, a = c[pos]
        v = ((w ^ b) * a) & m
        r = (lm * p0 - rm * (v ^ (v >> 16))) & m
        p0 = r ^ (r >> 16)
        b, a = c[pos + 1]
        v = ((w ^ b) * a) & m
        r = (lm * p1 - rm * (v ^ (v >> 16))) & m
        p1 = r ^ (r >> 16)
        b, a = c[pos + 2]
        v = ((w ^ b) * a) & m
        r = (lm * p2 - rm * (v ^ (v >> 16))) & m
        p2 = r ^ (r >> 16)
        b, a = c[pos + 3]
        v = ((w ^ b) * a) & m
        r = (lm * p3 - rm * (v ^ (v >> 16))) & m
        p3 = r ^ (r >> 16)
        pos += 4
    return (p0, p1, p2, p3), pos


def _prefix(seed: list[int]) -> list[int]:
    """The pool after the first pool-size entropy words (the seed's, zero
    padded: numpy pads a spawned sequence's run entropy to the pool size, and hashing a missing
    word is hashing 0) and the mixing of the pool."""
    h = _INIT_A
    pool = []
    for i in range(_POOL):
        v = (seed[i] if i < len(seed) else 0) ^ h
        h = (h * _MULT_A) & _MASK
        v = (v * h) & _MASK
        pool.append(v ^ (v >> 16))
    for s in range(_POOL):
        for d in range(_POOL):
            if s != d:
                v = pool[s] ^ h
                h = (h * _MULT_A) & _MASK
                v = (v * h) & _MASK
                v ^= v >> 16
                r = (_MIX_L * pool[d] - _MIX_R * v) & _MASK
                pool[d] = r ^ (r >> 16)
    assert h == _IN[_PREFIX][0]  # (16 hashes so far: where _mix_in carries on)
    return pool


# A run's streams are a pure function of its seed, and sweeps and repeated runs use the same few
# seeds over and over: each sequence's pool (by entropy and spawn key) and a PCG64's state words
# are kept per process, so that a seed seen before costs lookups (a run's 11 streams: ~60 us less).
# Never mutated once stored (pools are only copied, words handed out as copies); bounded (cleared
# when full: a sweep over thousands of seeds computes them as before).
_MEMO_MAX: Final = 4096
_K = TypeVar("_K")
_V = TypeVar("_V")
_POOLS: dict[tuple[int, tuple[int, ...]], tuple[tuple[int, ...], int]] = {}
_PCG64_WORDS: dict[tuple[int, tuple[int, ...]], NDArray[np.uint64]] = {}


def remember(memo: dict[_K, _V], key: _K, value: _V) -> _V:
    """Store ``value`` under ``key`` in a per-process memory of what a seed determines, emptied
    when full (bounded), and return it."""
    if len(memo) >= _MEMO_MAX:
        memo.clear()
    memo[key] = value
    return value


class Seeds(ISpawnableSeedSequence):
    """``SeedSequence(entropy, spawn_key=spawn_key)`` for an integer ``entropy`` (pool size 4),
    as far as a BitGenerator and spawning use it.

    The words beyond the pool (the seed's beyond four, then the spawn key's) are mixed in one
    after another, so a child carries on from its parent's pool with only its own number."""

    def __init__(self, entropy: int, spawn_key: tuple[int, ...] = ()) -> None:
        self._key = key = (entropy, spawn_key)
        known = _POOLS.get(key)
        if known is None:
            seed = _words(entropy)
            tail = seed[_POOL:]
            for k in spawn_key:
                tail += _words(k)
            known = remember(_POOLS, key, _mix_in(_prefix(seed), _PREFIX, tail))
        self.pool, self._pos = known
        self.entropy = entropy
        self.spawn_key = spawn_key
        self.n_children_spawned = 0

    def _child(self, i: int) -> Seeds:
        child = Seeds.__new__(Seeds)
        child.entropy = self.entropy
        child.spawn_key = spawn_key = (*self.spawn_key, i)
        child._key = key = (self.entropy, spawn_key)
        known = _POOLS.get(key)
        if known is None:
            known = remember(_POOLS, key, _mix_in(self.pool, self._pos, _words(i)))
        child.pool, child._pos = known
        child.n_children_spawned = 0
        return child

    def generate_state(self, n_words: int, dtype: Any = np.uint32) -> NDArray[Any]:
        wide = dtype is np.uint64 or np.dtype(dtype) == np.uint64
        if wide and n_words == 4:  # what a PCG64 asks for, unrolled
            known = _PCG64_WORDS.get(self._key)
            if known is not None:
                return known.copy()
            m = _MASK
            p0, p1, p2, p3 = self.pool
            b0, a0, b1, a1, b2, a2, b3, a3, b4, a4, b5, a5, b6, a6, b7, a7 = _OUT8
            w = [((p0 ^ b0) * a0) & m, ((p1 ^ b1) * a1) & m, ((p2 ^ b2) * a2) & m, ((p3 ^ b3) * a3) & m,
                 ((p0 ^ b4) * a4) & m, ((p1 ^ b5) * a5) & m, ((p2 ^ b6) * a6) & m, ((p3 ^ b7) * a7) & m]
            w = [v ^ (v >> 16) for v in w]
            words = np.array([w[0] | w[1] << 32, w[2] | w[3] << 32, w[4] | w[5] << 32, w[6] | w[7] << 32],
                             dtype=np.uint64)
            return remember(_PCG64_WORDS, self._key, words).copy()
        if not wide and np.dtype(dtype) != np.uint32:
            raise ValueError("only support uint32 or uint64")
        n = 2 * n_words if wide else n_words
        consts = _OUT if n <= len(_OUT) else _constants(_INIT_B, _MULT_B, n)
        pool = self.pool
        out = []
        for i in range(n):
            before, after = consts[i]
            v = ((pool[i & 3] ^ before) * after) & _MASK
            out.append(v ^ (v >> 16))
        if wide:  # numpy reads the uint32 words as little-endian pairs: low word first
            return np.array([lo | hi << 32 for lo, hi in zip(out[::2], out[1::2], strict=True)], dtype=np.uint64)
        return np.array(out, dtype=np.uint32)

    def spawn(self, n_children: int) -> list[Seeds]:
        if n_children < 0:
            raise ValueError("n_children must be non-negative")
        first = self.n_children_spawned
        self.n_children_spawned += n_children
        return [self._child(i) for i in range(first, first + n_children)]


def generator(seeds: Seeds) -> np.random.Generator:
    """``np.random.default_rng(seeds)``."""
    # (A BitGenerator takes any ISeedSequence; numpy's stubs only name SeedSequence.)
    return np.random.Generator(np.random.PCG64(cast(Any, seeds)))


def generators(seed: int, n: int) -> list[np.random.Generator]:
    """``np.random.default_rng(seed).spawn(n)``: the same generators, drawing the same numbers."""
    return [generator(s) for s in Seeds(seed).spawn(n)]
