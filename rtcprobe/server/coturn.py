"""A coturn TURN server on loopback, started and stopped from Python (tests, ``run --driver aiortc``).

:class:`CoturnServer` runs the Debian package's ``turnserver`` with the flags of docs/references.md#coturn:
loopback only, the TURN REST API shared secret (``--use-auth-secret``), no DTLS, no admin CLI
(``--allow-loopback-peers`` refuses to start with it), and every file it writes (user database,
pid file) in a private temporary directory. TLS (``turns:``) is off unless asked for: then coturn
also listens with TLS on a port of its own (``--tls-listening-port``, ``--cert``, ``--pkey``),
with the caller's certificate or one made for the occasion (:func:`generate_certificate`: a CA
and a server certificate for 127.0.0.1 and localhost, the CA in :attr:`CoturnServer.ca_file` for
clients to trust). It picks free ports, waits until the server answers a STUN Binding request on
its UDP, TCP (and TLS) listeners, and stops it with SIGTERM (SIGKILL if it lingers).

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
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Final

import attrs
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
TRANSPORTS: Final = ("udp", "tcp", "tls")  # what a client may reach coturn over (tls: turns:)
CERTIFICATE_DAYS: Final = 30  # a generated certificate's validity (it lives as long as the server)


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


def _free_tcp_port(host: str, *, other_than: int) -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
        if port != other_than:
            return port
    raise CoturnStartError(f"no free TCP port on {host}")


@attrs.frozen
class TlsFiles:
    """PEM files for a TLS listener: the CA to trust (None when the caller brought its own
    certificate), the server certificate and its private key."""

    ca: Path | None
    cert: Path
    key: Path


def generate_certificate(directory: str | os.PathLike[str], *, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
                         days: int = CERTIFICATE_DAYS) -> TlsFiles:
    """Make a CA and a server certificate it signs, for ``hosts`` (IP addresses and DNS names,
    as subjectAltNames), in ``directory``: ``ca.pem``, ``cert.pem``, ``key.pem`` (mode 0600).

    EC P-256 keys: a few ms to make. The CA's key is never written, so the CA signs nothing else.
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not hosts:
        raise ConfigError("a certificate needs at least one host")
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)  # clock skew
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rtcprobe test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    out = Path(directory)
    files = TlsFiles(ca=out / "ca.pem", cert=out / "cert.pem", key=out / "key.pem")
    assert files.ca is not None
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(files.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return files


def _unverified_tls() -> ssl.SSLContext:
    """For readiness probes only: whether coturn answers, not whom to trust."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def stun_binding(host: str, port: int, *, transport: str = "udp", timeout: float = 0.5,
                 ssl_context: ssl.SSLContext | None = None) -> tuple[str, int]:
    """Send one STUN Binding request over ``transport`` (udp, tcp or tls); the XOR-MAPPED-ADDRESS
    of the success response. TLS verifies with ``ssl_context``, by default not at all.

    Raises OSError (including TimeoutError and ssl.SSLError) when nothing valid answers in ``timeout`` s.
    """
    if transport not in TRANSPORTS:
        raise ConfigError(f"transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    data = bytes(request)
    if transport == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(data, (host, port))
            reply = s.recv(2048)
    else:
        with contextlib.ExitStack() as stack:
            s = stack.enter_context(socket.create_connection((host, port), timeout=timeout))
            if transport == "tls":
                context = ssl_context if ssl_context is not None else _unverified_tls()
                s = stack.enter_context(context.wrap_socket(s, server_hostname=host))
            s.sendall(data)
            reply = b""
            while len(reply) < stun.HEADER_LENGTH or len(reply) < stun.HEADER_LENGTH + int.from_bytes(
                reply[2:4], "big"
            ):
                chunk = s.recv(2048)
                if not chunk:
                    raise ConnectionError(f"the TURN server closed the {transport.upper()} connection")
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

    TLS: ``tls=True`` adds a TLS listener (``tls_port``, None: a free one) with a certificate
    made for it (:func:`generate_certificate`; :attr:`ca_file` is its CA), or with ``cert`` and
    ``pkey`` (PEM files; giving them implies ``tls``). DTLS stays off: no client of ours uses it.
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
        tls: bool = False,
        tls_port: int | None = None,
        cert: str | os.PathLike[str] | None = None,
        pkey: str | os.PathLike[str] | None = None,
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
        if (cert is None) != (pkey is None):
            raise ConfigError("coturn's TLS needs both a certificate (cert) and its private key (pkey)")
        for what, path in (("certificate", cert), ("private key", pkey)):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"coturn's TLS {what} {str(path)!r} is not a file")
        if tls_port is not None and not 0 < tls_port < 65536:
            raise ConfigError(f"coturn TLS port must be 1..65535, got {tls_port}")
        self.tls = tls or cert is not None
        if tls_port is not None and not self.tls:
            raise ConfigError("a coturn TLS port needs tls=True")
        self._given_tls = (None if cert is None or pkey is None
                           else TlsFiles(ca=None, cert=Path(cert).resolve(), key=Path(pkey).resolve()))
        self._want_tls_port = tls_port
        self._tls_port: int | None = None
        self.tls_files: TlsFiles | None = None
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
        """Start coturn and return once it answers STUN on UDP and TCP, and TLS when enabled
        (blocks, ~0.1–1 s)."""
        if self._proc is not None:
            raise RuntimeError("this CoturnServer is already running")
        self._dir = Path(tempfile.mkdtemp(prefix="rtcprobe-coturn-"))
        if self.tls:
            self.tls_files = self._given_tls or generate_certificate(self._dir, hosts=(self.host, "localhost"))
        attempts = 1 if self._want_port is not None else START_ATTEMPTS
        last = ""
        for _ in range(attempts):
            port = self._want_port or _free_udp_tcp_port(self.host)
            tls_port = None
            if self.tls:
                tls_port = self._want_tls_port or _free_tcp_port(self.host, other_than=port)
            if self._want_relay is not None:
                relay = self._want_relay
            else:
                low = random.randrange(20000, 30000 - RELAY_PORT_SPAN)  # below Linux's ephemeral range
                relay = (low, low + RELAY_PORT_SPAN - 1)
            outcome = self._launch(port, tls_port, relay)
            if outcome is None:
                self._port, self._tls_port, self.relay_ports = port, tls_port, relay
                return self
            last = outcome
        self.stop()
        raise CoturnStartError(last)

    def _launch(self, port: int, tls_port: int | None, relay: tuple[int, int]) -> str | None:
        """One attempt: None when coturn is up, else why not (coturn stopped again)."""
        assert self._dir is not None
        for name in ("turndb", "turnserver.pid", "turnserver.log"):
            with contextlib.suppress(FileNotFoundError):
                (self._dir / name).unlink()
        self._log_path = self._dir / "turnserver.log"
        if tls_port is None:
            tls_args = ["--no-tls"]
        else:
            assert self.tls_files is not None
            tls_args = [f"--tls-listening-port={tls_port}", f"--cert={self.tls_files.cert}",
                        f"--pkey={self.tls_files.key}"]
        args = [
            self.binary, "-n",
            f"--listening-ip={self.host}", f"--relay-ip={self.host}", f"--listening-port={port}",
            "--use-auth-secret", f"--static-auth-secret={self.secret}", f"--realm={self.realm}",
            *tls_args, "--no-dtls", "--no-cli", "--allow-loopback-peers",
            f"--userdb={self._dir / 'turndb'}", f"--pidfile={self._dir / 'turnserver.pid'}",
            "--log-file=stdout", "--simple-log", f"--min-port={relay[0]}", f"--max-port={relay[1]}",
        ]
        with open(self._log_path, "wb") as log:
            self._proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self._dir,
                start_new_session=True,  # a Ctrl-C meant for us does not hit coturn first
            )
        deadline = time.monotonic() + self._timeout
        ready = {("udp", port): False, ("tcp", port): False}
        if tls_port is not None:
            ready["tls", tls_port] = False
        ports = str(port) if tls_port is None else f"{port} or {tls_port}"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                why = f"coturn exited with status {self._proc.returncode}"
                break
            if "Cannot bind" in self.log():
                why = f"coturn could not bind port {ports} (taken)"
                break
            for (transport, probe_port), ok in ready.items():
                if not ok:
                    with contextlib.suppress(OSError):
                        stun_binding(self.host, probe_port, transport=transport, timeout=STUN_PROBE_INTERVAL)
                        ready[transport, probe_port] = True
            if all(ready.values()):
                # A "Cannot bind" logged meanwhile means another server answered on our port.
                if "Cannot bind" not in self.log():
                    return None
                why = f"coturn could not bind port {ports} (taken)"
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

    @property
    def tls_port(self) -> int:
        if self._tls_port is None:
            raise RuntimeError("coturn is not running with TLS")
        return self._tls_port

    @property
    def ca_file(self) -> Path | None:
        """The CA of the generated certificate, for clients to trust (None without TLS, or when the
        certificate was the caller's)."""
        return None if self.tls_files is None else self.tls_files.ca

    @property
    def transports(self) -> tuple[str, ...]:
        """What clients can reach this server over: udp and tcp, and tls when enabled."""
        return TRANSPORTS if self.tls else TRANSPORTS[:2]

    def url(self, transport: str = "udp") -> str:
        """The TURN URL for ``transport``: ``turn:H:P?transport=udp|tcp``, ``turns:H:TLS_PORT?transport=tcp``
        for tls (the form a signaling server hands it out in)."""
        if transport == "tls":
            return f"turns:{self.host}:{self.tls_port}?transport=tcp"
        if transport not in TRANSPORTS:
            raise ConfigError(f"transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
        return f"turn:{self.host}:{self.port}?transport={transport}"

    @property
    def udp_url(self) -> str:
        return self.url("udp")

    @property
    def tcp_url(self) -> str:
        return self.url("tcp")

    @property
    def tls_url(self) -> str:
        return self.url("tls")

    @property
    def turn_urls(self) -> tuple[str, str]:
        """``(udp URL, tcp URL)``."""
        return self.udp_url, self.tcp_url

    def urls(self, transports: tuple[str, ...] | None = None) -> tuple[str, ...]:
        """The TURN URLs for ``transports`` (default: every one this server listens on)."""
        return tuple(self.url(t) for t in (self.transports if transports is None else transports))

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
    "INSTALL_HINT", "TRANSPORTS", "CoturnNotInstalled", "CoturnServer", "CoturnStartError", "TlsFiles",
    "find_turnserver", "generate_certificate", "stun_binding",
]
