"""The server is media-free: none of its code imports aiortc (or PyAV), read from the source, and a
process that serves whole sessions never loads either (``sys.modules`` of a real server process,
and the shared libraries mapped into ``rtcprobe serve``)."""

from __future__ import annotations

import ast
import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "rtcprobe" / "server"
MEDIA = ("aiortc", "av")  # PyAV: aiortc's codecs, decoders and encoders
# What the server may use from the aiortc driver's package: the modules that import neither.
SHARED = ("rtcprobe.drivers.aiortc.protocol", "rtcprobe.drivers.aiortc.turn_client")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in ``path``, relative ones resolved against rtcprobe.server."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = "rtcprobe.server".rsplit(".", node.level - 1)[0] if node.level > 1 else "rtcprobe.server"
                base = f"{package}.{base}" if base else package
            found += [(node.lineno, base)] + [(node.lineno, f"{base}.{a.name}") for a in node.names if not node.module]
    return found


def test_no_server_module_imports_aiortc() -> None:
    files = sorted(SERVER.rglob("*.py"))
    assert len(files) >= 8
    bad = []
    for path in files:
        for line, module in _imports(path):
            top = module.split(".")[0]
            if top in MEDIA or (module.startswith("rtcprobe.drivers.aiortc")
                                and module not in SHARED and module != "rtcprobe.drivers.aiortc"):
                bad.append(f"{path.relative_to(ROOT)}:{line}: {module}")
    assert not bad, "the server must not import media code:\n" + "\n".join(bad)


def test_the_shared_driver_modules_import_no_media_either() -> None:
    for module in SHARED:
        path = ROOT / "drivers" / "aiortc" / (module.rsplit(".", 1)[1] + ".py")
        tops = {m.split(".")[0] for _, m in _imports(path)}
        assert not tops & set(MEDIA), (module, tops)


SERVE_ONE_SESSION = textwrap.dedent("""
    import asyncio, json, sys, time
    import aiohttp
    from rtcprobe.server import SignalingServer
    from rtcprobe.server.tokens import mint_token

    SECRET = "s" * 40

    async def main():
        async with SignalingServer(secret=SECRET, turn_urls=("turn:127.0.0.1:3478",), turn_secret="t") as server:
            async with aiohttp.ClientSession() as http, http.ws_connect(server.url) as ws:
                await ws.send_str(json.dumps({"type": "ice", "token": mint_token(SECRET, "a", now=time.time()),
                                              "version": 2}))
                assert json.loads((await ws.receive()).data)["type"] == "iced"
                await ws.send_str(json.dumps({"type": "report", "report": {"testTiming": {"start": 0}}}))
                assert json.loads((await ws.receive()).data) == {"type": "reported", "stored": False}
                await ws.send_str(json.dumps({"type": "bye"}))
                await ws.receive()
            async with aiohttp.ClientSession() as http:
                async with http.get(server.url.replace("ws:", "http:").replace("/signaling", "/metrics")) as r:
                    assert "rtcprobe_preflights_total" in await r.text()

    asyncio.run(main())
    print(sorted(m for m in sys.modules if m.split(".")[0] in ("aiortc", "av")))
""")


def test_serving_a_session_loads_no_media_module() -> None:
    r = subprocess.run([sys.executable, "-c", SERVE_ONE_SESSION], capture_output=True, text=True, timeout=60,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc (Linux)")
def test_rtcprobe_serve_maps_no_media_library() -> None:
    # aiortc's and PyAV's compiled parts (libvpx, opus, ffmpeg) would show up in the process's
    # memory map as soon as either is imported.
    from test_server_cli import serving
    from test_server_support import good_session

    with serving("--port", "0") as server:
        token = server.info["token"].split()[0]
        assert asyncio.run(good_session(server.info["url"], token_value=token)).close_code == 1000
        maps = Path(f"/proc/{server.pid}/maps").read_text()
    libraries = {line.split()[-1] for line in maps.splitlines() if ".so" in line}
    assert any("_json" in lib or "_asyncio" in lib for lib in libraries), "the map lists Python's own extensions"
    media = sorted(lib for lib in libraries if "/aiortc/" in lib or "/av/" in lib or "libav" in lib or "vpx" in lib)
    assert not media, media
