"""GET /explorer: the API explorer page, served on the gateway's own port by every worker from
the package's files (src/genapi/pages), behind `[gateway] explorer` (on by default). Real
gateway processes over real HTTP; the page in a real Chromium is tests/test_explorer_browser.py."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from importlib import resources
from typing import Any

import pytest

from genapi.client import Client
from support.gateway_proc import GatewayProcess

DEMO = (resources.files("genapi") / "default.toml").read_text()
FILES = {
    "/explorer": ("explorer.html", "text/html; charset=utf-8"),
    "/explorer/explorer.js": ("explorer.js", "text/javascript; charset=utf-8"),
    "/explorer/explorer.css": ("explorer.css", "text/css; charset=utf-8"),
    "/explorer/phoenix.js": ("phoenix.js", "text/javascript; charset=utf-8"),
}


def get(gw: GatewayProcess, path: str) -> tuple[int, Any, bytes]:
    try:
        with urllib.request.urlopen(f"http://{gw.host}:{gw.port}{path}", timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def demo_config(**gateway: str) -> str:
    """The demo config (default.toml) with lines added to its [gateway] table."""
    extra = "".join(f"{k} = {v}\n" for k, v in gateway.items())
    assert DEMO.count("[gateway]\n") == 1
    return DEMO.replace("[gateway]\n", "[gateway]\n" + extra)


@pytest.fixture(scope="module")
def two() -> Any:
    gw = GatewayProcess(extra_args=["--workers", "2"])  # the demo, explorer on by default
    yield gw
    gw.stop()


def test_the_page_and_its_files_are_the_packages(two: GatewayProcess) -> None:
    for path, (name, ctype) in FILES.items():
        want = (resources.files("genapi") / "pages" / name).read_bytes()
        for _ in range(6):  # the workers share the port: each answers some of these
            status, headers, body = get(two, path)
            assert (status, headers["Content-Type"], body) == (200, ctype, want), path
            assert headers["X-Content-Type-Options"] == "nosniff"
    html = get(two, "/explorer")
    assert get(two, "/explorer/")[2] == html[2]
    csp = html[1]["Content-Security-Policy"]  # the page loads nothing from elsewhere
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    for name in ("explorer/explorer.js", "explorer/phoenix.js", "explorer/explorer.css"):
        assert name.encode() in html[2]  # named relatively, so a path prefix in front of the gateway works
    for name, _ in FILES.values():  # nothing fetched from elsewhere (no CDN): no absolute URL in any file
        text = (resources.files("genapi") / "pages" / name).read_bytes()
        assert b"http://" not in text and b"https://" not in text, name
    assert b'src="//' not in html[2] and b'href="//' not in html[2]  # nor scheme-relative
    assert get(two, "/explorer/nope.js")[0] == 404  # only the files named: the WebSocket endpoint's 404
    assert get(two, "/explorer/../default.toml")[0] == 404


def test_explorer_off() -> None:
    with GatewayProcess(demo_config(explorer="false")) as gw:
        for path in FILES:
            status, _, body = get(gw, path)
            assert (status, body) == (404, b"the API explorer is off ([gateway] explorer = false)\n"), path
        assert get(gw, "/health")[0] == 200

        async def echo() -> Any:
            c = await Client.connect(gw.url)
            await c.join("api:explorer")
            try:
                return (await c.call("demo", "echo", {"text": "hi"})).result
            finally:
                await c.close()

        assert asyncio.run(echo())  # the WebSocket endpoint is unchanged
