"""Media the simulated peers move: RTP sources, receiver statistics, the REMB estimator.

Everything here works on numpy arrays of packets so that a whole stretch of media crosses a link
in one ``Link.send_batch`` call. Numbers are aiortc 1.16's (docs/references.md#aiortc-and-aioice)
unless a comment says otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

import numpy as np
from numpy.typing import NDArray
from rtcprobe.core.config import VideoSpec

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

AUDIO, VIDEO = 0, 1
KIND_NAMES: Final = ("audio", "video")
CLOCK_RATE: Final = (48_000, 90_000)  # Opus, VP8 RTP clocks

# Bytes around an RTP payload on the wire: RTP header 12 + header extensions (mid, abs-send-time)
# 12 + SRTP auth tag 10 + UDP 8 + IPv4 20. A TURN ChannelData header adds 4 on a relayed leg.
RTP_OVERHEAD: Final = 12 + 12 + 10 + 8 + 20
CHANNELDATA_OVERHEAD: Final = 4

OPUS_FRAME_S: Final = 0.020  # aiortc's audio track yields 20 ms frames
OPUS_BITRATE: Final = 96_000  # aiortc/codecs/opus.py sets bit_rate = 96000
OPUS_PAYLOAD: Final = OPUS_BITRATE * 20 // 8000  # 240 bytes per 20 ms

VP8_PACKET_MAX: Final = 1300  # aiortc/codecs/vpx.py PACKET_MAX (payload incl. the VP8 descriptor)
VP8_DESCRIPTOR: Final = 6  # descriptor with picture id: what _packetize takes out of PACKET_MAX
VP8_DEFAULT_BPS: Final = 500_000  # aiortc DEFAULT_BITRATE, for 640x480@30
VP8_MIN_BPS: Final = 250_000  # aiortc MIN_BITRATE
VP8_MAX_BPS: Final = 1_500_000  # aiortc MAX_BITRATE
# aiortc recreates the encoder (and so sends a keyframe) when the REMB target moves by > 10 %.
VP8_RECREATE_CHANGE: Final = 0.10
# What the synthetic moving pattern needs at 640x480@30 (~550 kbit/s measured, see
# docs/references.md#aiortc-and-aioice); other sizes scale by (pixels, fps)^0.75 — encoded bits
# grow sub-linearly with both, so a 320x180@15 stream undershoots aiortc's 250 kbit/s floor as
# libvpx's CBR (undershoot 100 %) does.
VP8_CONTENT_BPS: Final = 550_000
VP8_CONTENT_EXPONENT: Final = 0.75
VGA_PIXELS: Final = 640 * 480
# A VP8 keyframe is several delta frames' worth of bits (estimate for the synthetic pattern).
KEYFRAME_FACTOR: Final = 5.0
FRAME_SIZE_SPREAD: Final = 0.15  # delta frame sizes vary ±15 % around the rate's mean
ENCODE_S_PER_VGA: Final = 0.0025  # ~2.5 ms per 640x480 frame (docs/references.md#aiortc-and-aioice)


def initial_video_target(spec: VideoSpec) -> float:
    """aiortc's 500 kbit/s default scaled to the stream's pixel rate, clamped to its limits."""
    scale = spec.width * spec.height / VGA_PIXELS * spec.fps / 30.0
    return float(min(VP8_MAX_BPS, max(VP8_MIN_BPS, VP8_DEFAULT_BPS * scale)))


def content_bitrate(spec: VideoSpec) -> float:
    """The most the encoder spends on the synthetic pattern at this size and frame rate."""
    scale = (spec.width * spec.height / VGA_PIXELS) * (spec.fps / 30.0)
    return float(VP8_CONTENT_BPS * scale**VP8_CONTENT_EXPONENT)  # (float ** float is typed Any)


# Aligned (align=True: 7 padding bytes after ``key``, 80-byte records): a field view of packed
# 73-byte records is misaligned, and numpy runs ufuncs, searches and copies on misaligned data
# through a buffered path (0.1-0.45 us more per call on an interval's ~120 packets; the steady
# state makes 25-50 such calls an interval). Records are made from zeroed memory (np.zeros, or
# copies of such records: RAW copies take the padding along), so that a batch's bytes are a
# function of its fields alone.
PACKET: Final = np.dtype([
    ("t", np.float64),  # time the packet is offered to the current hop (or arrived, in a queue)
    ("size", np.int64),  # bytes on the wire
    ("payload", np.int64),  # RTP payload bytes (what getStats' byte counters count)
    ("kind", np.int64),  # AUDIO / VIDEO
    ("seq", np.int64),  # per-kind sequence number (unwrapped)
    ("ts", np.int64),  # RTP timestamp, clock units
    ("frame", np.int64),  # video frame number (-1 for audio)
    ("key", np.bool_),  # packet of a keyframe
    ("npk", np.int64),  # packets in this packet's frame (1 for audio)
    ("sent", np.float64),  # time the publisher sent it (one-way delay for the estimator)
], align=True)
# The same records as opaque bytes: numpy copies these without visiting each field, which makes
# joining and copying batches several times cheaper than on the structured dtype. (np.frombuffer
# reinterprets without the Python-level safety check that ndarray.view runs on structured dtypes.)
RAW = np.dtype((np.void, PACKET.itemsize))


def join(arrays: list[NDArray[np.void]]) -> NDArray[np.void]:
    """Packet arrays end to end (at least two)."""
    return np.frombuffer(np.concatenate([np.frombuffer(a, RAW) for a in arrays]), PACKET)


def copy(a: NDArray[np.void]) -> NDArray[np.void]:
    """Packet records copied (contiguous ones). ``ndarray.copy`` on PACKET goes field by field:
    several times slower, and it leaves the padding as it was in memory."""
    return np.frombuffer(np.frombuffer(a, RAW).copy(), PACKET)


def take(a: NDArray[np.void], index: NDArray[np.int64]) -> NDArray[np.void]:
    """Packet records ``a[index]`` (a contiguous ``a``), copied as raw bytes: ``ndarray.take``
    on PACKET goes field by field (about twice the time on an interval's ~120 records)."""
    return np.frombuffer(np.frombuffer(a, RAW).take(index), PACKET)


class Packets:
    """A batch of RTP packets: one structured numpy array, so that selecting, slicing and
    joining batches is one numpy call each (the simulator does it hundreds of times a run)."""

    __slots__ = ("a",)

    def __init__(self, a: NDArray[np.void]) -> None:
        self.a = a

    @classmethod
    def empty(cls) -> Packets:
        return cls(np.empty(0, dtype=PACKET))

    @classmethod
    def build(cls, **fields: object) -> Packets:
        t = np.asarray(fields["t"])
        a = np.zeros(len(t), dtype=PACKET)  # (zeroed padding: see PACKET)
        for name, value in fields.items():
            a[name] = value
        return cls(a)

    def __len__(self) -> int:
        return len(self.a)

    def take(self, index: NDArray[np.int64] | NDArray[np.bool_] | slice) -> Packets:
        if isinstance(index, slice):
            return Packets(self.a[index])
        # take/compress copy whole records (fancy indexing on the structured dtype goes field by field)
        if index.dtype == np.bool_:
            return Packets(self.a.compress(index))
        return Packets(self.a.take(index))

    @staticmethod
    def concat(parts: list[Packets]) -> Packets:
        arrays = [p.a for p in parts if len(p.a)]
        if not arrays:
            return Packets.empty()
        if len(arrays) == 1:
            return Packets(arrays[0])
        # Joined as raw records: on the structured dtype numpy promotes and copies field by field.
        return Packets(join(arrays))

    # Field views (no copies; typed through a local, as numpy's stubs type a field lookup loosely).
    @property
    def t(self) -> F64:
        field: F64 = self.a["t"]
        return field

    @t.setter
    def t(self, value: F64) -> None:
        self.a["t"] = value

    @property
    def size(self) -> I64:
        field: I64 = self.a["size"]
        return field

    @size.setter
    def size(self, value: I64) -> None:
        self.a["size"] = value

    @property
    def payload(self) -> I64:
        field: I64 = self.a["payload"]
        return field

    @property
    def kind(self) -> I64:
        field: I64 = self.a["kind"]
        return field

    @property
    def seq(self) -> I64:
        field: I64 = self.a["seq"]
        return field

    @property
    def ts(self) -> I64:
        field: I64 = self.a["ts"]
        return field

    @property
    def frame(self) -> I64:
        field: I64 = self.a["frame"]
        return field

    @property
    def key(self) -> NDArray[np.bool_]:
        field: NDArray[np.bool_] = self.a["key"]
        return field

    @property
    def npk(self) -> I64:
        field: I64 = self.a["npk"]
        return field

    @property
    def sent(self) -> F64:
        field: F64 = self.a["sent"]
        return field


def _count_from(anchor: float, k0: int, until: float, step: float) -> int:
    """How many of anchor + k·step for k = k0, k0 + 1, ... are <= until (exactly, despite rounding)."""
    n = math.floor((until - anchor) / step) + 1 - k0
    while n > 0 and anchor + (k0 + n - 1) * step > until:
        n -= 1
    while anchor + (k0 + n) * step <= until:
        n += 1
    return max(n, 0)


class AudioSource:
    """Opus: one packet per 20 ms frame from ``start`` on."""

    def __init__(self, start: float, wire_extra: int) -> None:
        self.start = start
        self.seq = 0
        self.payload = self.PAYLOAD
        self.size = self.payload + RTP_OVERHEAD + wire_extra

    PAYLOAD: int = OPUS_PAYLOAD  # bytes per 20 ms packet (a stack's model overrides it)

    @property
    def next_send(self) -> float:
        return self.start + self.seq * OPUS_FRAME_S

    def generate(self, until: float) -> Packets:
        """Every packet sent at or before ``until``."""
        n = _count_from(self.start, self.seq, until, OPUS_FRAME_S)
        if n <= 0:
            return Packets.empty()
        k = np.arange(self.seq, self.seq + n, dtype=np.int64)
        t = self.start + k * OPUS_FRAME_S  # from the anchor: no drift across batches
        self.seq += n
        # One record with the fields every packet shares, repeated as raw bytes (one copy), then
        # the per-packet fields: cheaper than filling ten fields one by one.
        one = np.zeros(1, dtype=PACKET)  # (zeroed padding: see PACKET)
        one[0] = (0.0, self.size, self.payload, AUDIO, 0, 0, -1, False, 1, 0.0)
        a = np.frombuffer(np.frombuffer(one, RAW).repeat(n), PACKET)
        a["t"] = t
        a["sent"] = t
        a["seq"] = k
        k *= 960
        a["ts"] = k
        return Packets(a)

    def records(self, until: float) -> list[tuple[Any, ...]]:
        """:meth:`generate`'s packets as Python records (what ``generate(until).a.tolist()``
        gives, with the same float operations: the anchor plus the packet number times the frame
        length), one at a time: for the event-driven phase, which takes a packet or two per call,
        where a numpy call costs more than the work. A subclass that overrides :meth:`generate`
        must override this too."""
        start, size, payload = self.start, self.size, self.payload
        k = self.seq
        t = start + k * OPUS_FRAME_S
        out: list[tuple[Any, ...]] = []
        while t <= until:  # (the count _count_from makes: these times never decrease)
            out.append((t, size, payload, AUDIO, k, k * 960, -1, False, 1, t))
            k += 1
            t = start + k * OPUS_FRAME_S
        self.seq = k
        return out

    def rewind(self, unsent: Packets) -> None:
        """Take back packets generated ahead but never sent."""
        self.seq = int(unsent.seq[0])

    def sent_from(self, first: int, until: float) -> int:
        """How many of its packets numbered ``first`` on leave at or before ``until`` (counted as
        :meth:`generate` counts them, so exactly those it gives)."""
        return _count_from(self.start, first, until, OPUS_FRAME_S)


class VideoSource:
    """VP8 as aiortc sends it: frames at ``fps``, each packetized at once and sent back to back.

    The encoder's rate is its codec's ``bit_rate``, which follows the REMB target only when it
    moves by more than 10 % (then the codec is recreated, which starts with a keyframe); it
    never spends more than the content needs. A PLI forces the next frame to be a keyframe.
    """

    PACKET_MAX: int = VP8_PACKET_MAX  # payload limit per RTP packet (a stack's model overrides it)

    def __init__(self, spec: VideoSpec, start: float, wire_extra: int, rng: np.random.Generator) -> None:
        self.spec = spec
        self.interval = 1.0 / spec.fps
        self.start = start
        self.frame = 0
        self.seq = 0
        self.rng = rng
        self.target = initial_video_target(spec)
        self.codec_rate = self.target
        self.content = content_bitrate(spec)
        self.force_key = True  # a new encoder starts with a keyframe
        self.encode_s = ENCODE_S_PER_VGA * spec.width * spec.height / VGA_PIXELS
        self.wire_extra = wire_extra
        self.keyframes = 0
        self._grid = np.empty(0, dtype=PACKET)  # one record per frame, see _frames
        self._spread: F64 = np.empty(0)  # frame size factors drawn ahead, see _spread_draws
        self._spread_at = 0

    @property
    def rate(self) -> float:
        return min(self.codec_rate, self.content)

    def rewind(self, unsent: Packets) -> None:
        """Take back frames generated ahead but never sent (a keyframe among them is owed again)."""
        self.frame, self.seq = int(unsent.frame[0]), int(unsent.seq[0])
        keys = len(set(unsent.frame[unsent.key].tolist()))  # (np.unique costs ten times more here)
        if keys:
            self.keyframes -= keys
            self.force_key = True

    def set_target(self, bps: float) -> None:
        """A REMB arrived: aiortc clamps it into the encoder's range."""
        self.target = min(VP8_MAX_BPS, max(VP8_MIN_BPS, bps))

    @property
    def next_send(self) -> float:
        return self.start + self.encode_s + self.frame * self.interval

    def generate(self, until: float, changes: Sequence[tuple[float | None, float | None]] = ()) -> Packets:
        """Every frame whose packets leave (capture + encode time) at or before ``until``.

        ``changes`` are what the encoder follows on the way, in order: (cut, bps) sends the frames
        up to ``cut`` first (None: none), then sets the target to ``bps`` (None: a PLI, the next
        frame is a keyframe). One call gives exactly what a ``generate(cut)`` per change, each
        followed by its change, then ``generate(until)`` would, joined (the frame sizes are one
        draw: the same numbers).
        """
        plan: list[tuple[int, float, bool]] = []  # (frames, mean frame size, starts with a keyframe)
        frame = self.frame
        for cut, bps in changes:
            if cut is not None:
                frame = self._plan(cut, frame, plan)
            if bps is None:
                self.force_key = True
            else:
                self.set_target(bps)
        self._plan(until, frame, plan)
        if not plan:
            return Packets.empty()
        n = frame = 0
        for k, _, _ in plan:
            n += k
        drawn = self._spread_draws(n)
        for k, mean, keyframe in plan:
            part = drawn[frame : frame + k]
            np.multiply(mean, part, out=part)
            if keyframe:
                part[0] = mean * KEYFRAME_FACTOR
            frame += k
        np.rint(drawn, out=drawn)  # (what ndarray.round() does)
        np.maximum(1.0, drawn, out=drawn)  # (a float scalar: no type resolution for a mixed call)
        sizes = drawn.astype(np.int64)
        packet_max = self.PACKET_MAX
        chunk = packet_max - VP8_DESCRIPTOR
        npk = sizes + (chunk - 1)
        npk //= chunk
        # One record per frame, repeated for the frame's packets; then each frame's last packet
        # gets the rest of the frame (the same integer and float operations as ever).
        wire = RTP_OVERHEAD + self.wire_extra
        fr = self._frames(self.frame, n)
        fr["npk"] = npk
        out = np.frombuffer(np.frombuffer(fr, RAW).repeat(npk), PACKET)  # (raw bytes: see RAW)
        ends = np.add.accumulate(npk)  # (cumsum, without its method dispatch)
        ends -= 1
        last = npk * -chunk  # sizes - (npk - 1) * chunk + VP8_DESCRIPTOR (integers: exact in any order)
        last += sizes
        last += chunk + VP8_DESCRIPTOR
        out["payload"][ends] = last
        last += wire
        out["size"][ends] = last
        total = len(out)
        out["seq"] = np.arange(self.seq, self.seq + total, dtype=np.int64)
        frame = 0
        for k, _, keyframe in plan:
            if keyframe:  # the keyframe's packets
                first = int(ends[frame]) + 1 - int(npk[frame])
                out["key"][first : first + int(npk[frame])] = True
            frame += k
        self.seq += total
        self.frame += n
        return Packets(out)

    def _spread_draws(self, n: int) -> F64:
        """The next ``n`` of ``rng.uniform(1 - FRAME_SIZE_SPREAD, 1 + FRAME_SIZE_SPREAD)``, drawn in
        blocks (numpy computes ``lo + (hi - lo) * random()``, one 64-bit output per draw: the same
        numbers in the same order as one call per batch). A view the caller may overwrite."""
        at = self._spread_at
        if at + n > len(self._spread):
            lo, hi = 1 - FRAME_SIZE_SPREAD, 1 + FRAME_SIZE_SPREAD
            fresh = self.rng.random(max(512, n))  # (a 10 s run at 30 fps: one block, one draw)
            np.multiply(hi - lo, fresh, out=fresh)
            np.add(lo, fresh, out=fresh)
            rest = self._spread[at:]
            self._spread = np.concatenate((rest, fresh)) if len(rest) else fresh
            at = 0
        self._spread_at = at + n
        return self._spread[at : at + n]

    def _frames(self, first: int, n: int) -> NDArray[np.void]:
        """Frames ``first`` to ``first + n - 1``: a view of the run's grid of frame records,
        whose fields but ``npk`` depend on the frame number only (a frame's records are copied
        out before the next call sets ``npk`` again), worked out once for all frames rather than
        once per call (the same operations, elementwise)."""
        grid = self._grid
        if first + n > len(grid):
            k = max(2 * len(grid), first + n, 512)  # (about a 10 s run at 30 fps or more: one call)
            frames = np.arange(len(grid), k, dtype=np.int64)
            fr = np.zeros(k - len(grid), dtype=PACKET)  # (zeroed padding: see PACKET)
            ft = frames * self.interval
            fr["ts"] = np.rint((self.start + ft) * CLOCK_RATE[VIDEO])
            ft += self.start + self.encode_s  # the send times, as _count_from counted them
            fr["t"] = ft
            fr["sent"] = ft
            fr["payload"] = self.PACKET_MAX
            fr["size"] = self.PACKET_MAX + RTP_OVERHEAD + self.wire_extra
            fr["kind"] = VIDEO
            fr["frame"] = frames
            fr["key"] = False
            self._grid = grid = join([grid, fr]) if len(grid) else fr
        return grid[first : first + n]

    def _plan(self, until: float, frame: int, plan: list[tuple[int, float, bool]]) -> int:
        """Plan the frames from ``frame`` up to ``until`` as :meth:`generate` used to make them
        one call at a time (the encoder's state moves as it did); returns the next frame."""
        n = _count_from(self.start + self.encode_s, frame, until, self.interval)
        if n <= 0:
            return frame
        if abs(self.target - self.codec_rate) / self.codec_rate > VP8_RECREATE_CHANGE:
            self.codec_rate = self.target
            self.force_key = True
        keyframe = self.force_key
        if keyframe:
            self.force_key = False
            self.keyframes += 1
        plan.append((n, self.rate / 8.0 / self.spec.fps, keyframe))
        return frame + n


# --- receiving ---------------------------------------------------------------------------------

_JITTER_A: Final = 15.0 / 16.0
_JITTER_BLOCK: Final = 256  # keeps (16/15)**k far from overflow
_SMALL: Final = 16  # below this many packets a Python loop beats numpy's per-call overhead


def rfc3550_jitter(j0: float, d: F64) -> float:
    """J after the updates J += (|D| - J)/16 for each D in ``d`` (RFC 3550 section 6.4.1).

    The recursion is linear, so J_n = a^n J_0 + (1/16) sum a^(n-k) |D_k| with a = 15/16; it is
    evaluated in blocks so the powers stay in range.
    """
    j = j0
    ad = np.abs(d)
    for s in range(0, len(ad), _JITTER_BLOCK):
        block = ad[s : s + _JITTER_BLOCK]
        n = len(block)
        powers = _JITTER_A ** np.arange(n - 1, -1, -1, dtype=np.float64)
        j = _JITTER_A**n * j + float(np.dot(powers, block)) / 16.0
    return j


class Snapshot(NamedTuple):
    """A receiver's statistics for one stream at one moment."""

    received: int
    bytes: int
    max_seq: int
    jitter_units: float  # RFC 3550 jitter, RTP clock units
    base_seq: int | None  # None: nothing received yet


class ReceiverStats:
    """aiortc's StreamStatistics for one SSRC, fed in arrival order, batch by batch."""

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self.received = 0
        self.bytes = 0
        self.base_seq: int | None = None
        self.max_seq = -1
        self.jitter_units = 0.0  # RTP clock units
        # The latest in-order packet (arrival in clock units, RTP timestamp): where jitter goes on.
        self.last_arrival: int | None = None
        self.last_ts: int | None = None

    def add(self, arrival: F64, seq: I64, ts: I64, payload: I64) -> None:
        n = len(arrival)
        if not n:
            return
        if n <= _SMALL:
            self._add_few(arrival.tolist(), seq.tolist(), ts.tolist(), payload.tolist())
            return
        self.received += n
        self.bytes += int(payload.sum())
        if self.base_seq is None:
            self.base_seq = int(seq[0])
        # Only in-order packets move max_seq and the jitter estimate (as aiortc does).
        prev_max = np.maximum.accumulate(np.concatenate(([self.max_seq], seq[:-1])))
        order = seq > prev_max
        if not order.any():
            return
        self.max_seq = max(self.max_seq, int(seq.max()))
        arr = np.floor(arrival[order] * self.clock_rate).astype(np.int64)
        tss = ts[order]
        last_a, last_t = self.last_arrival, self.last_ts  # (both None or both set)
        if last_a is None or last_t is None:
            prev_a = np.concatenate(([arr[0]], arr[:-1]))
            prev_t = np.concatenate(([tss[0]], tss[:-1]))
        else:
            prev_a = np.concatenate(([last_a], arr[:-1]))
            prev_t = np.concatenate(([last_t], tss[:-1]))
        changed = tss != prev_t
        d = (arr - prev_a)[changed] - (tss - prev_t)[changed]
        self.jitter_units = rfc3550_jitter(self.jitter_units, d.astype(np.float64))
        self.last_arrival, self.last_ts = int(arr[-1]), int(tss[-1])

    def _add_few(self, arrival: list[float], seq: list[int], ts: list[int], payload: list[int]) -> None:
        """The same as :meth:`add`, packet by packet: cheaper than numpy for a handful."""
        self.received += len(arrival)
        self.bytes += sum(payload)
        if self.base_seq is None:
            self.base_seq = seq[0]
        j = self.jitter_units
        for a, q, t in zip(arrival, seq, ts, strict=True):
            if q <= self.max_seq:
                continue
            self.max_seq = q
            units = math.floor(a * self.clock_rate)
            if self.last_arrival is not None and self.last_ts is not None and t != self.last_ts:
                j += (abs((units - self.last_arrival) - (t - self.last_ts)) - j) / 16.0
            self.last_arrival, self.last_ts = units, t
        self.jitter_units = j

    @property
    def expected(self) -> int:
        return 0 if self.base_seq is None else self.max_seq - self.base_seq + 1

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.received)

    def snapshot(self) -> Snapshot:
        return Snapshot(self.received, self.bytes, self.max_seq, self.jitter_units, self.base_seq)


class PlayoutStart:
    """When the subscriber can first play each stream: audio from its first packet, video from
    its first complete keyframe (its packets counted across batches, any order)."""

    def __init__(self) -> None:
        self.started: set[int] = set()
        self._key_counts: dict[int, int] = {}

    def arrived(self, kind: int, got: Packets) -> float | None:
        """Arrivals of a stream not started yet: the moment it starts (now noted), or None."""
        return self._noted(kind, self._playable_at(kind, got))

    def arrived_few(self, kind: int, first: float, keys: list[tuple[int, int, float]]) -> float | None:
        """:meth:`arrived` for a few arrivals as Python values: the first one's time and, in
        order, (frame, packets in the frame, arrival) of those that belong to a keyframe."""
        return self._noted(kind, first if kind == AUDIO else self._complete_key(keys))

    def _noted(self, kind: int, t: float | None) -> float | None:
        if t is not None:
            self.started.add(kind)
            self._key_counts.clear()
        return t

    def _playable_at(self, kind: int, got: Packets) -> float | None:
        if kind == AUDIO:
            return float(got.t[0])
        key = got.take(got.key)
        return self._complete_key(list(zip(key.frame.tolist(), key.npk.tolist(), key.t.tolist(), strict=True)))

    def _complete_key(self, keys: list[tuple[int, int, float]]) -> float | None:
        """When the first keyframe completes among these keyframe packets (None: not yet)."""
        for frame, n, last in keys:
            count = self._key_counts.get(frame, 0) + 1
            self._key_counts[frame] = count
            if count == n:
                return float(last)
        return None


# --- bandwidth estimation ----------------------------------------------------------------------

REMB_INTERVAL: Final = 0.5  # aiortc's AimdRateControl.feedback_interval(): 500 ms
OVERUSE_QUEUE_S: Final = 0.025  # queueing delay above which a growing queue means overuse
OVERUSE_HARD_S: Final = 0.100  # queueing delay that means overuse even when stable
DECREASE_BETA: Final = 0.85  # libwebrtc AIMD: new estimate = 0.85 x incoming rate
INCREASE_PER_S: Final = 1.08  # libwebrtc AIMD multiplicative increase: 8 %/s
THROUGHPUT_CAP: Final = 1.5  # libwebrtc: never above 1.5 x incoming + 10 kbit/s
THROUGHPUT_SLACK_BPS: Final = 10_000
LOSS_THRESHOLD: Final = 0.10  # libwebrtc's loss-based controller backs off above 10 % loss


class RembEstimator:
    """A receive-side estimate in the spirit of aiortc's RemoteBitrateEstimator (documented
    simplification): every 500 ms it looks at the video that arrived in the window — incoming
    rate, queueing delay (mean one-way delay above the lowest window mean seen) and its trend, and
    loss — and runs libwebrtc's AIMD rules on it."""

    def __init__(self) -> None:
        self.estimate: float | None = None
        self.first_arrival: float | None = None
        self._window_start = -math.inf
        self.min_owd = math.inf
        self.prev_queue = 0.0
        self._bytes = 0
        self._owd_sum = 0.0
        self._count = 0
        self._first_seq: int | None = None
        self._last_seq = -1

    def add(self, arrival: F64, sent: F64, seq: I64, size: I64) -> None:
        if not len(arrival):
            return
        self.first_video(float(arrival[0]))
        self._bytes += int(np.add.reduce(size))
        self._owd_sum += float(np.add.reduce(arrival - sent))  # (what .sum() does)
        self._count += len(arrival)
        if self._first_seq is None:
            self._first_seq = int(seq[0])
        self._last_seq = max(self._last_seq, int(np.maximum.reduce(seq)))

    def add_few(self, arrival: list[float], sent: list[float], seq: list[int], size: list[int]) -> None:
        """:meth:`add` for a few packets as Python lists (the event-driven pipeline's): the same
        sums (the one-way delays' still numpy's, pairwise)."""
        if not arrival:
            return
        self.first_video(arrival[0])
        if len(arrival) == 1:  # (a sum of one is that one: no numpy call needed for the same float)
            self._owd_sum += arrival[0] - sent[0]
        else:
            self._owd_sum += float(np.add.reduce(np.subtract(arrival, sent)))
        self._count += len(arrival)
        self._bytes += sum(size)
        if self._first_seq is None:
            self._first_seq = seq[0]
        self._last_seq = max(self._last_seq, *seq)

    def first_video(self, t: float) -> None:
        """Video arrived at ``t``: the first window starts with the first arrival."""
        if self.first_arrival is None:
            self.first_arrival = self._window_start = t

    def add_totals(self, count: int, nbytes: int, owd_sum: float, first_seq: Callable[[], int], max_seq: int
                   ) -> None:
        """What :meth:`add` does for ``count`` arrivals, from their totals (the steady state's
        timelines keep running sums); ``first_seq()`` gives the first one's sequence number."""
        self._count += count
        self._bytes += nbytes
        self._owd_sum += owd_sum
        if self._first_seq is None:
            self._first_seq = first_seq()
        self._last_seq = max(self._last_seq, max_seq)

    def batch_arrived(self, got: NDArray[np.void], rtt: float | None) -> None:
        """The steady state's arrivals of one interval (PACKET records, every stream, in arrival
        order; ``rtt``: the publisher's, if measured). Nothing here: this estimator works from the
        video timeline's sums (:meth:`add_totals`); one that needs every packet takes them here."""

    def update(self, now: float) -> float | None:
        """Close the window ending ``now``: the new estimate in bit/s, or None when there is none
        (no video in the window, or less than one window of it so far: aiortc's rate counter
        needs a full window before it reports a throughput)."""
        if self._count == 0 or self.first_arrival is None:
            self._window_start = now  # an empty window says nothing about the rate
            return None
        if now - self.first_arrival < REMB_INTERVAL:
            return None  # keep accumulating
        window = now - self._window_start
        self._window_start = now
        rate = 8.0 * self._bytes / window
        # Queueing delay: this window's mean one-way delay above the lowest window mean so far
        # (means, not single packets, so that jitter alone does not read as a queue).
        mean_owd = self._owd_sum / self._count
        self.min_owd = min(self.min_owd, mean_owd)
        queue = mean_owd - self.min_owd
        expected = self._last_seq - (self._first_seq or 0) + 1
        loss = max(0.0, 1.0 - self._count / expected) if expected > 0 else 0.0
        self.estimate = self._decide(now, window, rate, queue, loss)
        self.prev_queue = queue
        self._bytes, self._owd_sum, self._count = 0, 0.0, 0
        self._first_seq = None  # loss counts within a window: an outage's gap is not one window's loss
        return self.estimate

    def _decide(self, now: float, window: float, rate: float, queue: float, loss: float) -> float:
        """The new estimate from one closed window (libwebrtc's AIMD rules); a subclass swaps
        the rules, the window bookkeeping stays in :meth:`update`."""
        if self.estimate is None:
            return rate
        if queue > OVERUSE_HARD_S or (queue > OVERUSE_QUEUE_S and queue > self.prev_queue):
            return DECREASE_BETA * rate
        if loss > LOSS_THRESHOLD:
            return self.estimate * (1.0 - 0.5 * loss)
        grown: float = self.estimate * INCREASE_PER_S**window
        return min(grown, THROUGHPUT_CAP * rate + THROUGHPUT_SLACK_BPS)
