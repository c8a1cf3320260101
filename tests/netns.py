"""A host whose only interface is loopback, for real: a fresh network namespace (``unshare -rn``)."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def loopback_only(*command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in a fresh network namespace whose only interface is loopback (brought
    up): a host with no network but 127.0.0.1. Skips where namespaces are not allowed."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip")
    if unshare is None or ip is None:
        pytest.skip("unshare (util-linux) and ip (iproute2) are needed for a loopback-only namespace")
    probe = subprocess.run([unshare, "-rn", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no network namespace for this user: {probe.stderr.decode().strip()}")
    script = f'{ip} link set lo up && exec "$@"'
    return subprocess.run([unshare, "-rn", "sh", "-c", script, "sh", *command],
                          capture_output=True, text=True, timeout=timeout)
