"""Time a Twilio-style preflight connection through coturn on loopback.

Two RTCPeerConnections in this process: a relay-only sender (offerer, audio + video) and a
receiver (answerer, host candidates on 127.0.0.1, optionally TURN too), max-bundle, non-trickle
offer/answer. Prints, per run, the milestones in ms since the start (before createOffer):

    gathered  the sender's setLocalDescription returned (TURN allocation done)
    ice       checking/completed per PC
    dtls      connecting/connected per PC
    media     first received audio/video frame

and the median of start -> first video frame over the runs.

    python scripts/probe_dtls_turn.py --runs 5 [--holdback] [--transport tcp] [--receiver-turn]

``--holdback`` negotiates through drivers/aiortc/holdback.py (the fix); without it the offer goes
over whole, as before. ``--debug`` logs aioice/aiortc; ``--pause S`` leaves time to start
``tshark -i lo -f "udp port <coturn port>"`` (the port is printed first).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import sys

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcconfiguration import RTCBundlePolicy, RTCIceTransportPolicy
from rtcprobe.drivers.aiortc.holdback import negotiate_pair, release_when_connected
from rtcprobe.drivers.aiortc.loopback import confine_ice_to_loopback
from rtcprobe.drivers.aiortc.media import PatternTrack, ToneTrack

from rtcprobe.server.coturn import CoturnServer


async def one_run(turn: CoturnServer, args: argparse.Namespace) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    marks: dict[str, float] = {}
    t0 = loop.time()

    def mark(name: str) -> None:
        marks.setdefault(name, (loop.time() - t0) * 1000)

    user, password = turn.credentials()
    ice = [RTCIceServer(urls=[turn.url(args.transport)], username=user, credential=password)]
    sender = RTCPeerConnection(RTCConfiguration(
        iceServers=ice, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
        iceTransportPolicy=RTCIceTransportPolicy.RELAY))
    receiver = RTCPeerConnection(RTCConfiguration(
        iceServers=list(ice) if args.receiver_turn else [], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
    tracks: list[MediaStreamTrack] = [ToneTrack(), PatternTrack()]
    for track in tracks:
        sender.addTransceiver(track, direction="sendonly")
    first_video = loop.create_future()
    consumers: list[asyncio.Task[None]] = []

    async def consume(track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            await track.recv()
            mark(f"media.{track.kind}")
            if track.kind == "video" and not first_video.done():
                first_video.set_result(None)
            while True:
                await track.recv()

    @receiver.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        consumers.append(asyncio.ensure_future(consume(track)))

    for name, pc in (("snd", sender), ("rcv", receiver)):
        def watch(name: str = name, pc: RTCPeerConnection = pc) -> None:
            @pc.on("iceconnectionstatechange")
            def _ice() -> None:
                mark(f"{name}.ice.{pc.iceConnectionState}")

            @pc.on("connectionstatechange")
            def _conn() -> None:
                mark(f"{name}.conn.{pc.connectionState}")
        watch()

    watched: set[str] = set()

    def watch_dtls(name: str, pc: RTCPeerConnection) -> None:
        if name in watched or not pc.getTransceivers():
            return
        watched.add(name)
        transport = pc.getTransceivers()[0].sender.transport
        transport.on("statechange", lambda: mark(f"{name}.dtls.{transport.state}"))

    watch_dtls("snd", sender)
    release_task = None
    if args.holdback:
        held = await negotiate_pair(
            sender, receiver, on_description_set=lambda pc: watch_dtls("rcv", receiver))
        mark("negotiated")

        async def release() -> None:
            await release_when_connected(sender, receiver, held)
            mark("rcv.released")

        release_task = asyncio.ensure_future(release())
    else:
        await sender.setLocalDescription(await sender.createOffer())
        mark("snd.gathered")
        await receiver.setRemoteDescription(sender.localDescription)
        watch_dtls("rcv", receiver)
        await receiver.setLocalDescription(await receiver.createAnswer())
        mark("rcv.answered")
        await sender.setRemoteDescription(receiver.localDescription)
        mark("negotiated")
    watch_dtls("rcv", receiver)
    try:
        await asyncio.wait_for(first_video, args.timeout)
    except TimeoutError:
        mark("timeout")
    if release_task is not None:
        await release_task
    ice = receiver.getTransceivers()[0].receiver.transport.transport
    marks["rcv.remote"] = ",".join(sorted(c.type for c in ice.getRemoteCandidates()))  # type: ignore[assignment]
    for track in tracks:
        track.stop()
    await asyncio.gather(sender.close(), receiver.close())
    for task in consumers:
        task.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)
    return marks


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    parser.add_argument("--receiver-turn", action="store_true", help="the receiver gathers a relay candidate too")
    parser.add_argument("--holdback", action="store_true", help="hold the relay candidates back from the receiver")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--debug", action="store_true", help="aioice/aiortc DEBUG logs on stderr")
    parser.add_argument("--pause", type=float, default=0.0, help="s to sleep before the runs (start tshark)")
    args = parser.parse_args()
    if args.debug:
        logging.basicConfig(level=logging.DEBUG, format="%(relativeCreated)8.1f %(name)s %(message)s")
        for noisy in ("aiortc.rtcrtpsender", "aiortc.rtcrtpreceiver", "aiortc.codecs"):
            logging.getLogger(noisy).setLevel(logging.INFO)
    totals: list[float] = []
    dtls: list[float] = []
    with CoturnServer() as turn, confine_ice_to_loopback():
        print(f"coturn on {turn.host}:{turn.port} ({args.transport})", file=sys.stderr)
        if args.pause:
            await asyncio.sleep(args.pause)
        for i in range(args.runs):
            marks = await one_run(turn, args)
            remote = marks.pop("rcv.remote")
            ordered = sorted(marks.items(), key=lambda kv: kv[1])
            print(f"run {i}: " + "  ".join(f"{k}={v:.0f}" for k, v in ordered) + f"  rcv.remote=[{remote}]")
            totals.append(marks.get("media.video", float("nan")))
            dtls.append(marks.get("snd.dtls.connected", float("nan")) - marks.get("snd.dtls.connecting", float("nan")))
            await asyncio.sleep(0.2)
    print(f"start->first video, median of {len(totals)}: {statistics.median(totals):.0f} ms "
          f"(all: {', '.join(f'{t:.0f}' for t in totals)}); "
          f"sender DTLS connecting->connected (networkTiming.dtls) median {statistics.median(dtls):.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
