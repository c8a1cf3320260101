"""Shared fixtures.

``coturn``: one real coturn TURN server on 127.0.0.1 for the whole session (a
:class:`rtcprobe.server.coturn.CoturnServer`: ``.turn_urls``, ``.udp_url``, ``.tcp_url``,
``.secret``, ``.credentials()``). ``coturn_tls``: another one that also listens with TLS
(``.tls_url``, ``turns:``), with the certificate of ``tls_files`` (a CA and a server certificate
for 127.0.0.1/localhost the tests generate; trust ``tls_files.ca``). Where coturn is missing,
tests using it are skipped with "coturn not installed: apt-get install coturn" — except under CI
(env ``CI`` set to anything but empty/0/false), where a missing coturn fails them: CI installs it,
so a skip would hide a broken setup.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from rtcprobe.server.coturn import CoturnServer, TlsFiles

INSTALL_HINT = "coturn not installed: apt-get install coturn"


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def coturn_binary() -> str:
    """The turnserver path; skips (or fails under CI) when coturn is not installed."""
    # Imported here: collecting tests that never use coturn must not pull in aiortc.
    from rtcprobe.server.coturn import CoturnNotInstalled, find_turnserver

    try:
        return find_turnserver()
    except CoturnNotInstalled as exc:
        if running_in_ci():
            pytest.fail(f"{exc} (CI is set, so TURN tests must run)", pytrace=False)
        pytest.skip(INSTALL_HINT)


@pytest.fixture(scope="session")
def coturn(coturn_binary: str) -> Iterator[CoturnServer]:
    """A coturn on 127.0.0.1 (UDP and TCP listener, REST shared secret) for the session."""
    from rtcprobe.server.coturn import CoturnServer

    with CoturnServer(binary=coturn_binary) as server:
        yield server


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A CA and a server certificate it signs for 127.0.0.1 and localhost (PEM files)."""
    from rtcprobe.server.coturn import generate_certificate

    return generate_certificate(tmp_path_factory.mktemp("tls"), hosts=("127.0.0.1", "localhost"))


@pytest.fixture(scope="session")
def coturn_tls(coturn_binary: str, tls_files: TlsFiles) -> Iterator[CoturnServer]:
    """A coturn on 127.0.0.1 listening on UDP, TCP and TLS (``tls_files``' certificate)."""
    from rtcprobe.server.coturn import CoturnServer

    with CoturnServer(binary=coturn_binary, cert=tls_files.cert, pkey=tls_files.key) as server:
        yield server


@pytest.fixture(scope="session")
def tshark() -> str:
    """The tshark path; skips (or fails under CI, which installs it) when it is missing."""
    import shutil

    path = shutil.which("tshark")
    if path is None:
        if running_in_ci():
            pytest.fail("tshark not installed: apt-get install tshark (CI is set)", pytrace=False)
        pytest.skip("tshark not installed: apt-get install tshark")
    return path
