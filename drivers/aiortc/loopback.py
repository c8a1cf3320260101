"""Confine ICE host candidates to loopback.

aioice leaves 127.0.0.1 out of its host candidates (docs/references.md#aiortc-and-aioice), so two
peers that must talk over loopback only (the client's two peer connections when no TURN is in
use, every test) would otherwise offer the machine's real addresses — and find nothing to talk
over when none exists (a host whose only interface is loopback). :func:`confine_ice_to_loopback`
swaps aioice's host-address discovery for one that answers 127.0.0.1 only;
:func:`has_host_address` tells whether aioice's own discovery finds anything, and
:func:`is_loopback_host` whether a server's host name is on this machine's loopback (the drivers
confine ICE, or keep Chromium's candidates local, when it is).

The patch is process-wide (aioice reads a module global), so it is reference-counted: nested and
overlapping uses (a server and a client in one process) are fine, and the original function comes
back when the last one exits. Relay-only peers are unaffected: they gather no host candidates.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import aioice.ice

LOOPBACK_V4 = "127.0.0.1"


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is on this machine's loopback."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() == "localhost"

_lock = threading.Lock()
_depth = 0


class _HostAddresses(Protocol):
    """aioice's ``get_host_addresses``, parameter names included (it may be called by keyword)."""

    def __call__(self, use_ipv4: bool, use_ipv6: bool) -> list[str]: ...


_original: _HostAddresses | None = None


def _loopback_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    # IPv4 only: aiortc peers talk IPv4 to coturn and to each other, and ::1 would add a
    # second, useless candidate per component.
    return [LOOPBACK_V4] if use_ipv4 else []


def is_confined() -> bool:
    """Whether host gathering is currently confined to loopback."""
    return _depth > 0


def depth() -> int:
    """For diagnostics: how many :func:`confine_ice_to_loopback` blocks are open now (a server
    whose start failed must have given its block back)."""
    return _depth


def has_host_address() -> bool:
    """Whether aioice's own host discovery (not the confined one) finds an address besides
    loopback: when it finds none, an unconfined peer gathers no host candidate at all."""
    with _lock:
        discover = _original if _original is not None else aioice.ice.get_host_addresses
    return bool(discover(use_ipv4=True, use_ipv6=True))


@contextmanager
def confine_ice_to_loopback() -> Iterator[None]:
    """Inside this block every aioice agent in the process gathers 127.0.0.1 as its only host
    address. Candidates gathered inside keep working after the block ends."""
    global _depth, _original
    with _lock:
        if _depth == 0:
            _original = aioice.ice.get_host_addresses
            aioice.ice.get_host_addresses = _loopback_host_addresses
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _original is not None:
                aioice.ice.get_host_addresses = _original
                _original = None
