"""The browser pages on the gateway's own port (GET /explorer, /dashboard and their files):
static files shipped in the package (src/genapi/pages), read once and answered from memory, with
no build step and nothing fetched from elsewhere. What the dashboard shows and does is
gateway/dashboard.py's."""

from __future__ import annotations

from importlib import resources

from genapi.config import GatewaySettings

# The URL paths served, each a file of src/genapi/pages and its content type. A page's own files
# are under its path ("/explorer/explorer.js"): the page names them relatively ("explorer/...").
FILES: dict[str, tuple[str, str]] = {
    "/explorer": ("explorer.html", "text/html; charset=utf-8"),
    "/explorer/": ("explorer.html", "text/html; charset=utf-8"),
    "/explorer/explorer.js": ("explorer.js", "text/javascript; charset=utf-8"),
    "/explorer/explorer.css": ("explorer.css", "text/css; charset=utf-8"),
    "/explorer/phoenix.js": ("phoenix.js", "text/javascript; charset=utf-8"),
    "/dashboard": ("dashboard.html", "text/html; charset=utf-8"),
    "/dashboard/": ("dashboard.html", "text/html; charset=utf-8"),
    "/dashboard/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
PATHS = frozenset(FILES)

# What a page may load and where it may connect: itself and its own gateway only (no CDN).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

DASHBOARD_OFF = b"the dashboard is off ([gateway] dashboard = false)\n"

_cache: dict[str, bytes] = {}


def read(name: str) -> bytes:
    """A file of src/genapi/pages (package data), read once."""
    body = _cache.get(name)
    if body is None:
        body = _cache[name] = (resources.files("genapi") / "pages" / name).read_bytes()
    return body


def answer(path: str, gateway: GatewaySettings) -> tuple[int, str, bytes]:
    """The (status, content type, body) of a GET of one of PATHS."""
    name, ctype = FILES[path]
    if path.startswith("/explorer") and not gateway.explorer:
        return 404, "text/plain", b"the API explorer is off ([gateway] explorer = false)\n"
    if path.startswith("/dashboard") and not gateway.dashboard:
        return 404, "text/plain; charset=utf-8", DASHBOARD_OFF
    return 200, ctype, read(name)
