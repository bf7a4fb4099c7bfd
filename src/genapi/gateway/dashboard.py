"""/dashboard on the gateway's own port, for operators: off unless `[gateway] dashboard = true`.

    GET  /dashboard, /dashboard/dashboard.{js,css}   the page (gateway/pages.py), open:
                                                     it holds nothing; it asks for a credential
    GET  /dashboard/state                            the host's state, JSON (host/dashboard.py)
    POST /dashboard/action  {"op": ..., "args": [...]}  disable / enable a function, reset a limit

State and actions need admin authentication: `Authorization: Bearer <credential>`, the
credential being a JWT the gateway verifies ([auth]) carrying the role `[gateway]
dashboard_role` (default "admin"), or the cluster secret itself (compared in constant time).
None or an unverifiable one is answered 401; a verified token without the role 403.
What is shown and done is asked of the host (the master, or a lone worker) and goes through
the control port's verbs, as `genapi admin` would.
"""

from __future__ import annotations

import hmac
import json
from typing import TYPE_CHECKING, Any

from genapi import log
from genapi.gateway import pages
from genapi.gateway.auth import Refused
from genapi.nodes import rpc

if TYPE_CHECKING:
    from genapi.gateway.worker import Gateway

PREFIX = "/dashboard"
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"

Answer = tuple[int, str, bytes]


def wants(path: str) -> bool:
    """`path` is the dashboard's (the handshake answers it in plain HTTP)."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def authorize(gateway: Gateway, authorization: str | None) -> Answer | None:
    """None when `authorization` proves an admin; else the refusal (401 or 403)."""
    role = gateway.settings.gateway.dashboard_role
    scheme, _, credential = (authorization or "").strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        return _refused(
            401, "missing", "send Authorization: Bearer <a token with the dashboard role, or the cluster secret>"
        )
    secret = rpc.secret_from(gateway.settings.cluster.secret)
    if secret is not None and hmac.compare_digest(credential.encode("utf-8", "replace"), secret):
        return None
    try:
        identity = gateway.auth.authenticate({}, {}, credential)
    except Refused as exc:
        return _refused(401, "invalid", f"the credential is neither a valid token nor the cluster secret ({exc})")
    if identity.user_id is None:
        return _refused(401, "invalid", "the credential is neither a valid token nor the cluster secret")
    if role not in (identity.roles or ()):
        return _refused(403, "no_role", f"the token does not carry the role {role!r} ([gateway] dashboard_role)")
    return None


def _refused(status: int, why: str, text: str) -> Answer:
    log.warning("dashboard_refused", status=status, reason=why)
    return status, JSON, _json({"error": "unauthorized" if status == 401 else "forbidden", "text": text})


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=str).encode() + b"\n"


async def http(gateway: Gateway, method: str, path: str, authorization: str | None, body: bytes) -> Answer:
    """The answer to a request under /dashboard."""
    if not gateway.settings.gateway.dashboard:
        return 404, TEXT, pages.DASHBOARD_OFF
    if path in pages.PATHS:  # the page itself: open, it holds nothing
        return pages.answer(path, gateway.settings.gateway) if method == "GET" else (405, TEXT, b"GET only\n")
    if path not in ("/dashboard/state", "/dashboard/action"):
        return 404, TEXT, b"not found\n"
    refused = authorize(gateway, authorization)
    if refused is not None:
        return refused
    assert gateway.host is not None  # the listener serves HTTP only once started
    if path == "/dashboard/state":
        if method != "GET":
            return 405, TEXT, b"GET only\n"
        return 200, JSON, _json(await gateway.host.dashboard(["state"]))
    if method != "POST":
        return 405, TEXT, b"POST only\n"
    try:
        action = json.loads(body or b"null")
        op, args = action["op"], action.get("args", [])
        if not isinstance(op, str) or op == "state" or not isinstance(args, list):
            raise TypeError
    except (ValueError, TypeError, KeyError, AttributeError):
        return 400, JSON, _json({"error": "bad_request", "text": 'send {"op": "disable|enable|reset", "args": [...]}'})
    out = await gateway.host.dashboard([op, *args])
    log.warning("dashboard_action", op=op, args=args, outcome="refused" if "error" in out else "done")
    return (409 if "error" in out else 200), JSON, _json(out)
