"""Per-transport verdicts: one loopback through TURN over UDP, TCP and TLS (``turns:``) each, against
a real coturn with a certificate the tests generate; and a network that blocks UDP to the TURN
server (the impairment relay in front of coturn's UDP port, dropping everything) telling a failed
UDP verdict from passing TCP and TLS verdicts in one run.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rtcprobe.core.config import MediaDemand, VideoSpec
from rtcprobe.core.errors import ConfigError, PreflightError
from rtcprobe.core.observations import PROGRESS_NAMES

from rtcprobe.live import TransportReport, run_preflight, run_transport_preflights
from rtcprobe.server import SignalingServer
from rtcprobe.server.coturn import CoturnServer, TlsFiles, generate_certificate
from rtcprobe.server.tokens import mint_token

pytestmark = [pytest.mark.turn, pytest.mark.timeout(120)]

SMALL = MediaDemand(video=VideoSpec(160, 120, 15))
SECRET = "transports-test-secret-0123456789abcdef01234"
BLOCKED = """\
name = "udp-blocked"
description = "A network that drops every UDP datagram to and from the TURN server"
duration = 60

[network]
loss = 1.0
"""


def _check_relayed(d: dict[str, Any], turn: CoturnServer, transport: str) -> None:
    """The report went through ``turn`` over ``transport``: the receiver's selected pair ends at the
    sender's relayed address on coturn's relay ports, and the receiver's own relay candidate (it
    gathers with the same TURN URL) names that URL and transport."""
    assert "error" not in d, d.get("error")
    assert [e["name"] for e in d["progressEvents"]] == list(PROGRESS_NAMES)
    assert turn.relay_ports is not None
    low, high = turn.relay_ports
    remote = d["selectedIceCandidatePairStats"]["remoteCandidate"]
    assert (remote["candidateType"], remote["address"]) == ("relay", "127.0.0.1")
    assert low <= remote["port"] <= high
    own = [c for c in d["iceCandidateStats"] if c["url"] is not None]
    assert own and {(c["candidateType"], c["url"], c["relayProtocol"]) for c in own} == {
        ("relay", turn.url(transport), transport)}


# --- one loopback per transport --------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_the_loopback_through_coturn_over_each_transport_selects_a_relay_candidate(
    coturn_tls: CoturnServer, tls_files: TlsFiles, transport: str
) -> None:
    # Every URL handed out: the transport picks its own (the first TURN URL is UDP, so TCP and TLS
    # are only taken when selected).
    async def main() -> tuple[dict[str, Any], str | None, bool | None]:
        test = run_preflight(duration=1.0, media=SMALL, turn_urls=coturn_tls.urls(), turn_secret=coturn_tls.secret,
                             transport=transport, turn_ca=tls_files.ca)
        report = await test.wait()
        return report.to_dict(), test.turn_url, test.turn_tested

    d, turn_url, turn_tested = asyncio.run(main())
    assert turn_url == coturn_tls.url(transport) and turn_tested is True
    _check_relayed(d, coturn_tls, transport)
    started = next(e["duration"] for e in d["progressEvents"] if e["name"] == "mediaStarted")
    assert started < 500, d["progressEvents"]  # no TURN permission stall over any transport (holdback.py)


def test_tls_with_a_certificate_the_client_does_not_trust_fails_naming_it(
    coturn_tls: CoturnServer, tmp_path: Path
) -> None:
    other = generate_certificate(tmp_path)  # another CA: coturn's certificate is not signed by it
    for ca in (other.ca, None):  # None: the system's trust store, which knows no test CA either
        async def main(ca: Path | None = ca) -> PreflightError:
            with pytest.raises(PreflightError) as info:
                await run_preflight(duration=1.0, media=SMALL, turn_urls=[coturn_tls.tls_url],
                                    turn_secret=coturn_tls.secret, turn_ca=ca).wait()
            return info.value

        started = time.monotonic()
        error = asyncio.run(main())
        assert time.monotonic() - started < 5  # a handshake failure, not a timeout
        assert error.code == 53405
        assert f"TURN server {coturn_tls.tls_url}: its TLS certificate is not trusted" in error.error.message
        assert "--turn-ca" in error.error.message


def test_tls_to_a_server_that_does_not_speak_it_is_named(tls_files: TlsFiles) -> None:
    async def main() -> PreflightError:
        async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")  # not TLS: a plain TCP service
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(plain, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(PreflightError) as info:
                await run_preflight(duration=1.0, media=SMALL, turn_urls=[f"turns:127.0.0.1:{port}"],
                                    turn_secret="s", turn_ca=tls_files.ca).wait()
        finally:
            server.close()
        return info.value

    error = asyncio.run(main())
    assert error.code == 53405
    assert re.search(r"TLS with TURN server turns:127\.0\.0\.1:\d+\?transport=tcp failed \(.+\): "
                     r"does it speak TLS on that port\?", error.error.message), error.error.message


# --- several transports, one run ---------------------------------------------------------------------


class BlockedUdp:
    """The impairment relay (``rtcprobe relay``, a process of its own) in front of coturn's UDP
    port, dropping every datagram both ways: a network that blocks UDP to the TURN server."""

    def __init__(self, upstream_port: int, scenario: Path) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "rtcprobe", "relay", "--listen", "127.0.0.1:0",
             "--upstream", f"127.0.0.1:{upstream_port}", "--scenario", str(scenario)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert self._proc.stderr is not None
        line = self._proc.stderr.readline()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
        if m is None:
            self.stop()
            raise AssertionError(f"the relay did not start: {line!r}")
        self.url = f"turn:127.0.0.1:{m.group(1)}?transport=udp"
        self.counters = ""

    def stop(self) -> str:
        """Stop the relay (idempotent); what it counted."""
        if self._proc.returncode is None:
            self._proc.send_signal(signal.SIGINT)
            _, err = self._proc.communicate(timeout=30)
            self.counters = err
        return self.counters


@pytest.fixture
def udp_blocked(coturn_tls: CoturnServer, tmp_path: Path) -> Iterator[BlockedUdp]:
    scenario = tmp_path / "udp-blocked.toml"
    scenario.write_text(BLOCKED)
    relay = BlockedUdp(coturn_tls.port, scenario)
    try:
        yield relay
    finally:
        relay.stop()


def test_udp_blocked_fails_udp_promptly_and_passes_tcp_and_tls_in_one_run(
    coturn_tls: CoturnServer, tls_files: TlsFiles, udp_blocked: BlockedUdp, tmp_path: Path
) -> None:
    udp_url = udp_blocked.url
    out = tmp_path / "transports.json"
    urls = ",".join([udp_url, coturn_tls.tcp_url, coturn_tls.tls_url])  # comma-separated, in one --turn
    r = subprocess.run(
        [sys.executable, "-m", "rtcprobe", "preflight", "--turn", urls, "--turn-secret", coturn_tls.secret,
         "--turn-ca", str(tls_files.ca), "--duration", "2s", "--video", "160x120@15", "--out", str(out)],
        capture_output=True, text=True, timeout=100)
    # No --transports: every transport of the --turn list, in its order. One failed: exit 1.
    assert r.returncode == 1, r.stderr
    d = json.loads(out.read_text())
    assert list(d["transports"]) == ["tcp", "tls", "udp"]  # sorted keys (canonical JSON)
    assert d["turnUrls"] == {"udp": udp_url, "tcp": coturn_tls.tcp_url, "tls": coturn_tls.tls_url}
    udp = d["transports"]["udp"]
    # The UDP verdict: a clean 53405 naming the TURN server that did not answer, in the media
    # step, after ~5 s (aioice's gathering gives up; the diagnosis ran beside it, not after it),
    # far from the step's timeout (duration + 10 s).
    assert udp["error"]["code"] == 53405
    assert f"TURN server {udp_url} did not answer" in udp["error"]["message"]
    assert "gathered no ICE candidates" in udp["error"]["message"]
    assert [e["name"] for e in udp["progressEvents"]] == ["mediaAcquired", "connected"]
    assert udp["testTiming"]["duration"] < 6000, udp["testTiming"]  # measured: 5.0 s
    for transport in ("tcp", "tls"):
        _check_relayed(d["transports"][transport], coturn_tls, transport)
    # The table: one line per transport, in the order run, then the failure's message.
    table = r.stdout[r.stdout.index("verdicts per transport"):].splitlines()
    assert table[1].split() == ["transport", "outcome", "mediaStarted", "rtt", "loss", "level", "TURN", "URL"]
    rows = {line.split()[0]: line for line in table[2:5]}
    assert list(rows) == ["udp", "tcp", "tls"]
    assert "FAILED 53405" in rows["udp"] and rows["udp"].endswith(udp_url)
    for transport in ("tcp", "tls"):
        assert " passed " in rows[transport] and rows[transport].endswith(coturn_tls.url(transport))
        assert re.search(r" \d+ ms ", rows[transport]) and "5/5" in rows[transport]
    assert "udp: 53405 MediaConnectionError: " in r.stdout and "did not answer" in table[-1]
    # Each transport's progress on stderr, under its own prefix.
    for transport in ("tcp", "tls"):
        assert f"rtcprobe[{transport}]: mediaStarted" in r.stderr
    assert "rtcprobe[udp]: failed: 53405" in r.stderr
    print("\n".join(table), f"\nudp verdict after {udp['testTiming']['duration']:.0f} ms")  # pytest -s shows it
    # The relay received the UDP TURN traffic and dropped all of it: the cause is the network.
    counters = udp_blocked.stop()
    uplink = next(line for line in counters.splitlines() if line.startswith("uplink"))
    assert re.search(r"received [1-9]\d*  forwarded 0 ", uplink), counters


def test_a_remote_server_handing_out_every_transport_gets_a_verdict_for_each(
    coturn_tls: CoturnServer, tls_files: TlsFiles
) -> None:
    seen: list[str | None] = []

    async def main() -> tuple[tuple[TransportReport, ...], int]:
        async with SignalingServer(secret=SECRET, turn_urls=coturn_tls.urls(), turn_secret=coturn_tls.secret) as server:
            token = mint_token(SECRET, "ivan", now=time.time())
            results = await run_transport_preflights(
                token, url=server.url, turn_ca=tls_files.ca, duration=1.0, media=SMALL,
                on_test=lambda test: seen.append(test.transport))
            return results, server.stats.reports

    results, reports = asyncio.run(main())
    # The first loopback takes the first TURN URL handed out (its transport learnt from the
    # server's answer), then one per remaining transport; each report reached the server.
    assert seen == [None, "tcp", "tls"]
    assert [(r.transport, r.turn_url) for r in results] == [(t, coturn_tls.url(t)) for t in ("udp", "tcp", "tls")]
    assert all(r.ok for r in results) and reports == 3
    for result in results:
        assert result.transport is not None
        _check_relayed(result.report.to_dict(), coturn_tls, result.transport)


def test_a_transport_the_server_does_not_hand_out_fails_naming_what_it_did(coturn: CoturnServer) -> None:
    async def main() -> tuple[TransportReport, ...]:
        async with SignalingServer(secret=SECRET, turn_urls=(coturn.udp_url,), turn_secret=coturn.secret) as server:
            token = mint_token(SECRET, "judy", now=time.time())
            return await run_transport_preflights(token, url=server.url, transports=["tls"], duration=1.0,
                                                  media=SMALL)

    (result,) = asyncio.run(main())
    assert result.transport == "tls" and result.turn_url is None and not result.ok
    error = result.report.error
    assert error is not None and error.code == 53405
    assert error.message == (f"TURN over tls was not tested: the signaling server handed out no TURN URL over tls "
                             f"(it handed out {coturn.udp_url})")


def test_the_embedded_coturn_serves_the_transports_asked_for_tls_with_a_certificate_of_its_own(
    coturn_binary: str,
) -> None:
    async def main() -> tuple[TransportReport, ...]:
        return await run_transport_preflights(transports=("tls", "udp"), duration=1.0, media=SMALL)

    results = asyncio.run(main())
    assert [r.transport for r in results] == ["tls", "udp"] and all(r.ok for r in results)
    assert results[0].turn_url is not None and results[0].turn_url.startswith("turns:127.0.0.1:")
    own = [c for c in results[0].report.to_dict()["iceCandidateStats"] if c["url"] is not None]
    assert own and {c["relayProtocol"] for c in own} == {"tls"}


def test_a_stopped_loopback_ends_the_series_with_its_partial_report(coturn: CoturnServer) -> None:
    async def main() -> tuple[TransportReport, ...]:
        return await run_transport_preflights(
            turn_urls=coturn.turn_urls, turn_secret=coturn.secret, duration=5.0, media=SMALL,
            on_test=lambda test: test.on("progress", lambda name: test.stop() if name == "mediaStarted" else None))

    started = time.monotonic()
    results = asyncio.run(main())
    assert time.monotonic() - started < 5  # stopped at once, and TCP never started (Ctrl-C)
    (result,) = results
    assert result.transport == "udp" and result.report.error is not None and result.report.error.code == 99000


def test_the_embedded_default_is_still_one_udp_loopback(coturn_binary: str) -> None:
    async def main() -> tuple[TransportReport, ...]:
        return await run_transport_preflights(duration=1.0, media=SMALL)

    (result,) = asyncio.run(main())
    assert result.ok and result.transport == "udp"
    assert result.turn_url is not None and result.turn_url.startswith("turn:127.0.0.1:")


# --- bad input -----------------------------------------------------------------------------------


def test_misuse_raises_config_error_before_anything_runs(coturn: CoturnServer, tls_files: TlsFiles,
                                                        tmp_path: Path) -> None:
    garbage = tmp_path / "not-a-ca.pem"
    garbage.write_text("not a certificate\n")
    turn = {"turn_urls": [coturn.udp_url], "turn_secret": coturn.secret}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"transports": ["quic"]}, "udp, tcp, tls"),
        ({"transports": ["udp", "tcp"], **turn}, "no --turn URL goes over tcp"),
        ({"transports": []}, "at least one"),
        ({"transports": ["tls"], **turn}, "no --turn URL goes over tls (give one: turns:HOST:5349)"),
        ({"turn_ca": tmp_path / "missing.pem", **turn}, "does not exist"),
        ({"turn_ca": garbage, **turn}, "holds no usable PEM certificate"),
        ({"turn_ca": tls_files.ca}, "embedded coturn's own certificate is trusted already"),
        ({"transports": ["udp"], "relay_only": False, **turn}, "relay-only publisher"),
    ]

    async def main(options: dict[str, Any]) -> None:
        await run_transport_preflights(duration=1.0, **options)

    for options, message in cases:
        with pytest.raises(ConfigError, match=re.escape(message)):
            asyncio.run(main(options))

    async def single() -> None:
        run_preflight(transport="tcp", **turn)

    with pytest.raises(ConfigError, match=re.escape("no --turn URL goes over tcp")):
        asyncio.run(single())


def test_cli_bad_transports_exit_2_with_one_line() -> None:
    for args, message in (
        (["--transports", "udp,quic"], "--transports takes a comma-separated list of udp, tcp, tls"),
        (["--turn-ca", "/nonexistent-dir-for-rtcprobe/ca.pem", "--turn", "turns:127.0.0.1:5349",
          "--turn-secret", "s"], "does not exist"),
    ):
        r = subprocess.run([sys.executable, "-m", "rtcprobe", "preflight", *args], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 2, (r.stdout, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr


# --- the pieces ----------------------------------------------------------------------------------


def test_coturn_listens_with_tls_on_a_certificate_it_makes_and_only_its_ca_verifies_it(coturn_binary: str) -> None:
    import ssl

    from rtcprobe.server.coturn import stun_binding

    with CoturnServer(binary=coturn_binary, tls=True) as turn:
        assert turn.transports == ("udp", "tcp", "tls") and turn.ca_file is not None
        assert turn.tls_url == f"turns:127.0.0.1:{turn.tls_port}?transport=tcp" and turn.tls_port != turn.port
        trusted = ssl.create_default_context(cafile=str(turn.ca_file))
        assert stun_binding("127.0.0.1", turn.tls_port, transport="tls", ssl_context=trusted)[0] == "127.0.0.1"
        with pytest.raises(ssl.SSLCertVerificationError):
            stun_binding("127.0.0.1", turn.tls_port, transport="tls", ssl_context=ssl.create_default_context())
    with CoturnServer(binary=coturn_binary) as plain:  # TLS stays off unless asked for
        assert plain.transports == ("udp", "tcp") and plain.ca_file is None
        with pytest.raises(RuntimeError, match="not running with TLS"):
            plain.tls_url  # noqa: B018


def test_coturn_tls_options_are_checked(coturn_binary: str, tls_files: TlsFiles) -> None:
    with pytest.raises(ConfigError, match="both a certificate"):
        CoturnServer(binary=coturn_binary, cert=tls_files.cert)
    with pytest.raises(ConfigError, match="is not a file"):
        CoturnServer(binary=coturn_binary, cert=tls_files.cert.with_name("nope.pem"), pkey=tls_files.key)
    with pytest.raises(ConfigError, match="needs tls=True"):
        CoturnServer(binary=coturn_binary, tls_port=5349)


def test_select_transport_keeps_one_turn_url_of_that_transport_and_every_stun_url() -> None:
    from rtcprobe.core.observations import IceServer
    from rtcprobe.drivers.aiortc.turn_client import offered_transports, select_transport

    servers = (
        IceServer(urls=("stun:s:3478",)),
        IceServer(urls=("turn:a:3478?transport=udp", "turns:a:443?transport=tcp", "turn:a:3478?transport=tcp"),
                  username="u", credential="p"),
        IceServer(urls=("turns:b:5349",), username="u", credential="p"),
        IceServer(urls=("turn:c:3478?transport=tcp",)),  # no credentials: aiortc cannot use it
    )
    assert offered_transports(servers) == ("udp", "tls", "tcp")
    assert select_transport(servers, "tls") == (
        IceServer(urls=("stun:s:3478",)), IceServer(urls=("turns:a:443?transport=tcp",), username="u", credential="p"))
    assert select_transport(servers, "tcp")[1].urls == ("turn:a:3478?transport=tcp",)
    assert select_transport(servers[:1] + servers[3:], "tcp") == (IceServer(urls=("stun:s:3478",)),)


def test_verdict_table_and_json_name_each_transport() -> None:
    from rtcprobe.core.errors import MEDIA_CONNECTION
    from rtcprobe.core.report import PreflightReport, Timing

    from rtcprobe.commands.preflight import parse_transports, split_turn_urls, transports_json, verdict_table

    failed = PreflightReport(test_timing=Timing(0.0, 5000.0), error=MEDIA_CONNECTION.with_message("blocked"))
    passed = PreflightReport(test_timing=Timing(0.0, 2000.0), network_quality_level=4)
    results = (TransportReport("udp", "turn:h:1?transport=udp", failed), TransportReport("tls", None, passed))
    lines = verdict_table(results).splitlines()
    assert lines[1].split()[:3] == ["udp", "FAILED", "53405"] and lines[1].endswith("turn:h:1?transport=udp")
    assert lines[2].split()[:2] == ["tls", "passed"] and "4/5" in lines[2] and lines[2].endswith("none handed out")
    assert lines[-1] == "udp: 53405 MediaConnectionError: blocked"
    d = json.loads(transports_json(results))
    assert d["turnUrls"] == {"udp": "turn:h:1?transport=udp", "tls": None}
    assert PreflightReport.from_dict(d["transports"]["udp"]) == failed
    assert parse_transports(" TLS,udp,tls ") == ("tls", "udp")
    assert split_turn_urls(["turn:a:1?transport=udp,turns:a:2", "turn:b:3"]) == [
        "turn:a:1?transport=udp", "turns:a:2", "turn:b:3"]
    assert split_turn_urls(None) is None
