"""Drive the core's PreflightMachine by hand: explicit ``now``, timers fired at their exact deadlines
(like trio's MockClock), actions and events collected in order."""

from __future__ import annotations

from collections.abc import Callable

from rtcprobe.core import (
    Action,
    ConnectionStateChanged,
    DtlsStateChanged,
    Event,
    IceServer,
    IceStateChanged,
    InboundStats,
    MediaAcquired,
    MediaStarted,
    OutboundStats,
    PreflightConfig,
    PreflightMachine,
    Role,
    SampleStats,
    SignalingConnected,
    StatsObserved,
    StatsSample,
    TrackSubscribed,
)

T0 = 100.0  # an arbitrary monotonic origin: nothing may assume time starts at 0
EPOCH_MS = 1_700_000_000_000.0


class Harness:
    def __init__(self, config: PreflightConfig | None = None) -> None:
        self.test = PreflightMachine(config or PreflightConfig(duration=3.0))
        self.now = T0
        self.actions: list[Action] = []
        self.events: list[Event] = []

    def pump(self) -> None:
        self.actions.extend(self.test.actions())
        self.events.extend(self.test.events())

    def start(self) -> Harness:
        self.test.start(self.now, epoch_ms=EPOCH_MS)
        self.pump()
        return self

    def feed(self, obs: object, dt: float = 0.0) -> None:
        self.advance(dt)
        self.test.handle(obs, self.now)  # type: ignore[arg-type]
        self.pump()

    def advance(self, dt: float, on_sample: Callable[[SampleStats], None] | None = None) -> None:
        """Move time forward by dt, firing every timer at its exact deadline on the way."""
        target = self.now + dt
        while (t := self.test.get_timer()) is not None and t <= target:
            self.now = max(self.now, t)
            before = len(self.actions)
            self.test.handle_timer(self.now)
            self.pump()
            if on_sample is not None:
                for a in self.actions[before:]:
                    if isinstance(a, SampleStats):
                        on_sample(a)
        self.now = target

    def names(self) -> list[str]:
        return [type(e).__name__ for e in self.events]

    def progress(self) -> list[str]:
        return [e.name for e in self.events if type(e).__name__ == "Progress"]  # type: ignore[attr-defined]


def connect_media(h: Harness) -> None:
    """Feed what a healthy driver observes from OpenPeerConnections to mediaStarted."""
    pub = Role.PUBLISHER
    h.feed(TrackSubscribed("audio"), 0.005)  # aiortc fires track before ICE connects
    h.feed(TrackSubscribed("video"), 0.0)
    h.feed(IceStateChanged(pub, "checking"), 0.005)
    h.feed(ConnectionStateChanged(pub, "connecting"), 0.0)
    h.feed(IceStateChanged(pub, "completed"), 0.030)
    h.feed(DtlsStateChanged(pub, "connecting"), 0.001)
    h.feed(DtlsStateChanged(pub, "connected"), 0.020)
    h.feed(ConnectionStateChanged(pub, "connected"), 0.001)
    h.feed(IceStateChanged(Role.SUBSCRIBER, "completed"), 0.010)
    h.feed(MediaStarted("audio"), 0.020)
    h.feed(MediaStarted("video"), 0.030)


def to_stats_phase(config: PreflightConfig | None = None) -> Harness:
    h = Harness(config).start()
    h.feed(MediaAcquired(), 0.010)
    h.feed(SignalingConnected((IceServer(("turn:192.0.2.1:3478",), "u", "p"),)), 0.050)
    connect_media(h)
    return h


class CounterSource:
    """Cumulative counters growing like a healthy 1 s stats cadence (audio 50 pkt/s, video 100)."""

    def __init__(self, loss_every: int = 0, rtt: float = 0.04, jitter: float = 0.002) -> None:
        self.n = 0
        self.loss_every = loss_every
        self.rtt, self.jitter = rtt, jitter

    def sample(self) -> StatsSample:
        self.n += 1
        n = self.n
        lost_v = n * 100 // self.loss_every if self.loss_every else 0
        return StatsSample(
            audio_out=OutboundStats(packets_sent=50 * n, bytes_sent=50 * 120 * n, remote_rtt=self.rtt,
                                    remote_jitter=self.jitter, remote_fraction_lost=0.0),
            video_out=OutboundStats(packets_sent=100 * n, bytes_sent=100 * 1000 * n, remote_rtt=self.rtt,
                                    remote_jitter=self.jitter, remote_fraction_lost=0.0),
            audio_in=InboundStats(packets_received=50 * n, packets_lost=0, bytes_received=50 * 120 * n,
                                  jitter=self.jitter),
            video_in=InboundStats(packets_received=100 * n - lost_v, packets_lost=lost_v,
                                  bytes_received=100 * 1000 * n, jitter=self.jitter * 2),
        )


def answer_with(h: Harness, source: CounterSource) -> Callable[[SampleStats], None]:
    def on_sample(_: SampleStats) -> None:
        h.test.handle(StatsObserved(source.sample()), h.now)
        h.pump()

    return on_sample
