"""A coturn TURN server on loopback, started and stopped from Python (tests, ``run --driver aiortc``).

:class:`CoturnServer` runs the Debian package's ``turnserver`` with the flags of docs/references.md#coturn:
loopback only, the TURN REST API shared secret (``--use-auth-secret``), no TLS/DTLS, no admin CLI
(``--allow-loopback-peers`` refuses to start with it), and every file it writes (user database,
pid file) in a private temporary directory. It picks free ports, waits until the server answers
a STUN Binding request on its UDP and TCP listener, and stops it with SIGTERM (SIGKILL if it
lingers).

coturn does not exit when its listening port is taken: it logs "Cannot bind" and keeps retrying.
A port grabbed by someone else between our check and coturn's bind is therefore detected from the
log, and the start is retried on other ports.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Final

from aioice import stun

from rtcprobe.core.errors import ConfigError

from .credentials import mint_turn_credentials

INSTALL_HINT: Final = "coturn not installed: apt-get install coturn"
BINARY: Final = "turnserver"
BINARY_ENV: Final = "RTCPROBE_TURNSERVER"  # names the binary when it is not turnserver on $PATH
DEFAULT_REALM: Final = "rtcprobe.local"
RELAY_PORT_SPAN: Final = 200  # relay ports per server: a preflight allocates 2, tests a few more
START_ATTEMPTS: Final = 4  # fresh ports each time: only a race for a port makes an attempt fail
STUN_PROBE_INTERVAL: Final = 0.05  # s between readiness probes


class CoturnNotInstalled(ConfigError):
    """The ``turnserver`` binary is missing (bad environment: the CLI maps it to exit 2)."""


class CoturnStartError(RuntimeError):
    """coturn was found but did not come up; the message carries the end of its log."""


def find_turnserver(binary: str | None = None) -> str:
    """The path of coturn's ``turnserver``: ``binary`` if given, else $RTCPROBE_TURNSERVER, else
    ``turnserver`` on $PATH or in /usr/bin.

    Raises :class:`CoturnNotInstalled` (one line telling how to install it) when there is none.
    """
    if binary is None:
        binary = os.environ.get(BINARY_ENV) or None
    if binary is not None:
        found = shutil.which(binary)
        if found is None:
            raise CoturnNotInstalled(f"{INSTALL_HINT} ({binary!r} is not an executable)")
        return found
    # Debian installs it in /usr/bin, which a minimal PATH (cron, some CI runners) may lack.
    found = shutil.which(BINARY) or shutil.which(BINARY, path="/usr/bin:/usr/local/bin")
    if found is None:
        raise CoturnNotInstalled(INSTALL_HINT)
    return found


def _free_udp_tcp_port(host: str) -> int:
    """A port free for both UDP and TCP on ``host`` (coturn listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise CoturnStartError(f"no port free for both UDP and TCP on {host}")


def stun_binding(host: str, port: int, *, transport: str = "udp", timeout: float = 0.5) -> tuple[str, int]:
    """Send one STUN Binding request; the XOR-MAPPED-ADDRESS of the success response.

    Raises OSError (including TimeoutError) when nothing valid answers in ``timeout`` s.
    """
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    data = bytes(request)
    if transport == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(data, (host, port))
            reply = s.recv(2048)
    else:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(data)
            reply = b""
            while len(reply) < stun.HEADER_LENGTH or len(reply) < stun.HEADER_LENGTH + int.from_bytes(
                reply[2:4], "big"
            ):
                chunk = s.recv(2048)
                if not chunk:
                    raise ConnectionError("the TURN server closed the TCP connection")
                reply += chunk
    try:
        response = stun.parse_message(reply)
    except ValueError as exc:
        raise ConnectionError(f"not a STUN reply: {exc}") from None
    if response.transaction_id != request.transaction_id or response.message_class != stun.Class.RESPONSE:
        raise ConnectionError("unexpected STUN reply")
    mapped = response.attributes["XOR-MAPPED-ADDRESS"]
    return str(mapped[0]), int(mapped[1])


class CoturnServer:
    """coturn on loopback with a REST API shared secret. Use as a context manager::

        with CoturnServer(secret="s3cret") as turn:
            run_preflight(turn_urls=[turn.udp_url], turn_secret=turn.secret)

    ``port`` None picks a free one; ``relay_ports`` None picks a random block of
    :data:`RELAY_PORT_SPAN` ports (coturn skips relay ports that are taken).
    """

    def __init__(
        self,
        secret: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        realm: str = DEFAULT_REALM,
        relay_ports: tuple[int, int] | None = None,
        binary: str | None = None,
        startup_timeout: float = 10.0,
    ) -> None:
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(f"coturn host must be an IPv4 address, got {host!r}") from None
        if addr.version != 4:
            raise ConfigError(f"coturn host must be an IPv4 address, got {host!r}")
        if port is not None and not 0 < port < 65536:
            raise ConfigError(f"coturn port must be 1..65535, got {port}")
        if relay_ports is not None and not 1024 <= relay_ports[0] <= relay_ports[1] < 65536:
            raise ConfigError(f"coturn relay ports must be a range within 1024..65535, got {relay_ports}")
        if secret is not None and (not secret or any(c.isspace() for c in secret)):
            raise ConfigError("the TURN secret must be non-empty and contain no whitespace")
        self.binary = find_turnserver(binary)
        self.host = host
        self.realm = realm
        # A fresh random secret by default: nothing outside this process can use the server.
        self.secret = secret if secret is not None else os.urandom(16).hex()
        self._want_port = port
        self._want_relay = relay_ports
        self._timeout = startup_timeout
        self._port: int | None = None
        self.relay_ports: tuple[int, int] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._log_path: Path | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> CoturnServer:
        """Start coturn and return once it answers STUN on UDP and TCP (blocks, ~0.1–1 s)."""
        if self._proc is not None:
            raise RuntimeError("this CoturnServer is already running")
        self._dir = Path(tempfile.mkdtemp(prefix="rtcprobe-coturn-"))
        attempts = 1 if self._want_port is not None else START_ATTEMPTS
        last = ""
        for _ in range(attempts):
            port = self._want_port or _free_udp_tcp_port(self.host)
            if self._want_relay is not None:
                relay = self._want_relay
            else:
                low = random.randrange(20000, 30000 - RELAY_PORT_SPAN)  # below Linux's ephemeral range
                relay = (low, low + RELAY_PORT_SPAN - 1)
            outcome = self._launch(port, relay)
            if outcome is None:
                self._port, self.relay_ports = port, relay
                return self
            last = outcome
        self.stop()
        raise CoturnStartError(last)

    def _launch(self, port: int, relay: tuple[int, int]) -> str | None:
        """One attempt: None when coturn is up, else why not (coturn stopped again)."""
        assert self._dir is not None
        for name in ("turndb", "turnserver.pid", "turnserver.log"):
            with contextlib.suppress(FileNotFoundError):
                (self._dir / name).unlink()
        self._log_path = self._dir / "turnserver.log"
        args = [
            self.binary, "-n",
            f"--listening-ip={self.host}", f"--relay-ip={self.host}", f"--listening-port={port}",
            "--use-auth-secret", f"--static-auth-secret={self.secret}", f"--realm={self.realm}",
            "--no-tls", "--no-dtls", "--no-cli", "--allow-loopback-peers",
            f"--userdb={self._dir / 'turndb'}", f"--pidfile={self._dir / 'turnserver.pid'}",
            "--log-file=stdout", "--simple-log", f"--min-port={relay[0]}", f"--max-port={relay[1]}",
        ]
        with open(self._log_path, "wb") as log:
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self._dir,
                start_new_session=True,  # a Ctrl-C meant for us does not hit coturn first
            )
        deadline = time.monotonic() + self._timeout
        ready = {"udp": False, "tcp": False}
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                why = f"coturn exited with status {self._proc.returncode}"
                break
            if "Cannot bind" in self.log():
                why = f"coturn could not bind port {port} (taken)"
                break
            for transport, ok in ready.items():
                if not ok:
                    with contextlib.suppress(OSError):
                        stun_binding(self.host, port, transport=transport, timeout=STUN_PROBE_INTERVAL)
                        ready[transport] = True
            if all(ready.values()):
                # A "Cannot bind" logged meanwhile means another server answered on our port.
                if "Cannot bind" not in self.log():
                    return None
                why = f"coturn could not bind port {port} (taken)"
                break
            time.sleep(STUN_PROBE_INTERVAL)
        else:
            why = f"coturn did not answer STUN on {self.host}:{port} within {self._timeout:g} s"
        tail = "\n".join(self.log().splitlines()[-8:])
        self._terminate()
        return f"{why}; its log ends with:\n{tail}"

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        """Stop coturn and delete its files. Idempotent."""
        self._terminate()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> CoturnServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- facts ---------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None and self._port is not None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("coturn is not running")
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def url(self, transport: str = "udp") -> str:
        if transport not in ("udp", "tcp"):
            raise ConfigError(f"transport must be udp or tcp, got {transport!r}")
        return f"turn:{self.host}:{self.port}?transport={transport}"

    @property
    def udp_url(self) -> str:
        return self.url("udp")

    @property
    def tcp_url(self) -> str:
        return self.url("tcp")

    @property
    def turn_urls(self) -> tuple[str, str]:
        """``(udp URL, tcp URL)``."""
        return self.udp_url, self.tcp_url

    def credentials(self, identity: str = "rtcprobe", ttl: float = 3600.0) -> tuple[str, str]:
        """Fresh TURN REST API (username, password) this server accepts."""
        return mint_turn_credentials(self.secret, identity, ttl, time.time())

    def log(self) -> str:
        """What coturn logged so far (its stdout and stderr)."""
        if self._log_path is None:
            return ""
        try:
            return self._log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


__all__ = [
    "INSTALL_HINT", "CoturnNotInstalled", "CoturnServer", "CoturnStartError", "find_turnserver", "stun_binding",
]
