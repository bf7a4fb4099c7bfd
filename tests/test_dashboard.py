"""/dashboard, the operators' page, its server side over real HTTP against real gateways (one
worker alone, and two under a master): off by default; admin authentication (a JWT carrying
`[gateway] dashboard_role`, or the cluster secret; 401 without, 403 with a token lacking the
role); GET /dashboard/state moving with real calls; the actions (disable / enable a function,
reset a rate limit) going through the control verbs and seen by real clients."""

from __future__ import annotations

import asyncio
import json
import re
import select
import socket
import time
import urllib.error
import urllib.request
from typing import Any

import jwt
import pytest

from genapi.client import Client
from genapi.errors import ERROR_KINDS
from support.configs import PID_CONFIG, echo
from support.gateway_proc import GatewayProcess

JWT_SECRET = "dashboard-jwt-secret-0123456789abcdef"
CLUSTER_SECRET = "dashboard-cluster-secret-0123456789"
TOPIC = "api:dash"
WAIT = 30.0  # generous: a loaded 2-core machine
CONFIG = (
    f"""
[gateway]
dashboard = true

[auth]
jwt_secret = "{JWT_SECRET}"
require_verified_user_id = false

[cluster]
secret = "{CLUSTER_SECRET}"

[rate_limiter]
[[rate_limiter.api_limits]]
service = "d"
request_type = "limited"
key = "text"
max_requests = 1
window_ms = 600000
"""
    + echo("d")
    + echo("d", "limited")
)


def token(roles: list[str] | None = None, key: str = JWT_SECRET, sub: str = "op") -> str:
    claims: dict[str, Any] = {"sub": sub, "exp": int(time.time()) + 3600}
    if roles is not None:
        claims["roles"] = roles
    return jwt.encode(claims, key, algorithm="HS256")


ADMIN = f"Bearer {token(['admin'])}"


def request(
    gw: GatewayProcess, path: str, authorization: str | None = None, body: Any = None, method: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(f"http://{gw.host}:{gw.port}{path}", data=data, method=method)
    if authorization is not None:
        req.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(req, timeout=WAIT) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def state(gw: GatewayProcess, authorization: str = ADMIN) -> dict[str, Any]:
    status, _, body = request(gw, "/dashboard/state", authorization)
    assert status == 200, (status, body)
    return dict(json.loads(body))


def action(gw: GatewayProcess, op: str, *args: Any) -> tuple[int, dict[str, Any]]:
    status, _, body = request(gw, "/dashboard/action", ADMIN, {"op": op, "args": list(args)})
    return status, json.loads(body)


def until(pred: Any, what: str) -> Any:
    deadline = time.monotonic() + WAIT
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {WAIT} s")
        time.sleep(0.05)


async def calls(gw: GatewayProcess, rt: str, n: int, text: str = "x") -> list[Any]:
    c = await Client.connect(gw.url)
    try:
        await c.join(TOPIC)
        return [
            await c.call("d", rt, {"text": text}, topic=TOPIC, raise_on_error=False, timeout=WAIT) for _ in range(n)
        ]
    finally:
        await c.close()


def row(snapshot: dict[str, Any], rt: str) -> dict[str, Any]:
    return next(
        (r for r in snapshot["requests"] if (r["service"], r["request_type"]) == ("d", rt)), {"ok": 0, "error": 0}
    )


@pytest.fixture(scope="module", params=[1, 2], ids=["lone", "master"])
def gw(request: Any) -> Any:
    g = GatewayProcess(CONFIG, extra_args=["--workers", str(request.param)])
    g.workers = request.param
    yield g
    assert g.stop() == 0


def test_off_by_default() -> None:
    g = GatewayProcess(PID_CONFIG)
    try:
        for path in ("/dashboard", "/dashboard/state", "/dashboard/dashboard.js"):
            status, _, body = request(g, path)
            assert status == 404 and b"[gateway] dashboard = false" in body, (path, status, body)
        status, _, body = request(g, "/dashboard/action", body={"op": "disable", "args": ["w", "pid"]})
        assert status == 404, (status, body)
        assert asyncio.run(_pid(g)).success  # nothing was disabled
    finally:
        assert g.stop() == 0


async def _pid(g: GatewayProcess) -> Any:
    async with await Client.connect(g.url) as c:
        await c.join(TOPIC)
        return await c.call("w", "pid", {}, topic=TOPIC, raise_on_error=False, timeout=WAIT)


def test_refused_without_admin_credentials(gw: GatewayProcess) -> None:
    wrong_secret = CLUSTER_SECRET[:-1] + ("x" if CLUSTER_SECRET[-1] != "x" else "y")  # one character off
    unauthorized = (
        None,
        "",
        "Bearer",
        f"Basic {CLUSTER_SECRET}",
        CLUSTER_SECRET,
        f"Bearer {wrong_secret}",
        f"Bearer {CLUSTER_SECRET}x",
        f"Bearer {token(['admin'], key='another-key-0123456789abcdef0123')}",  # not ours
        f"Bearer {JWT_SECRET}",
    )
    for path, body in (("/dashboard/state", None), ("/dashboard/action", {"op": "disable", "args": ["d", "echo"]})):
        for authorization in unauthorized:
            for _ in range(gw.workers * 2):  # the kernel spreads the requests over the workers
                status, headers, out = request(gw, path, authorization, body)
                assert status == 401, (path, authorization, status, out)
                assert headers["WWW-Authenticate"] == 'Bearer realm="genapi"'
                assert CLUSTER_SECRET.encode() not in out
        for roles in (None, [], ["ops"], ["Admin"]):
            status, _, out = request(gw, path, f"Bearer {token(roles)}", body)
            assert status == 403 and json.loads(out)["error"] == "forbidden", (roles, status, out)
    assert not any(f["disabled"] for f in state(gw)["functions"])  # no refused action was applied
    assert "dashboard_refused" in gw.read_stderr()


def test_admitted_with_the_role_or_the_cluster_secret(gw: GatewayProcess) -> None:
    for authorization in (ADMIN, f"bearer {token(['ops', 'admin'])}", f"Bearer {CLUSTER_SECRET}"):
        snap = state(gw, authorization)
        assert len(snap["status"]["workers"]) == gw.workers
        assert all(w["alive"] for w in snap["status"]["workers"])
        assert {(f["service"], f["request_type"]) for f in snap["functions"]} >= {("d", "echo"), ("d", "limited")}
        assert snap["rate_limits"]["config"]["api_limits"], snap["rate_limits"]
        assert len(snap["latency_buckets"]) > 3


def test_state_moves_with_calls(gw: GatewayProcess) -> None:
    before = row(state(gw), "echo")
    results = asyncio.run(calls(gw, "echo", 7))
    assert all(r.success for r in results)
    after = until(lambda: (r := row(state(gw), "echo"))["ok"] >= before["ok"] + 7 and r, "7 more echo calls counted")
    assert after["ok"] == before["ok"] + 7 and after["error"] == before["error"]
    assert sum(after["buckets"]) == after["ok"] + after["error"]
    totals = state(gw)["totals"]
    assert totals["accepted"] >= 1 and totals["joins"] >= 1


def errors(gw: GatewayProcess) -> dict[str, int]:
    return dict(state(gw)["errors"])


def test_disable_then_enable_a_function(gw: GatewayProcess) -> None:
    before = errors(gw)
    assert set(before) == set(ERROR_KINDS)
    status, out = action(gw, "disable", "d", "echo", None)
    assert status == 200 and out["ok"], out
    disabled = next(f for f in state(gw)["functions"] if f["request_type"] == "echo")
    assert disabled["disabled"] is True
    for _ in range(gw.workers * 2):  # every worker serves the change before the answer
        (r,) = asyncio.run(calls(gw, "echo", 1))
        assert not r.success and "disabled" in r.error, r
    # errors by kind: every refusal counted as "disabled", nothing else moved
    n = gw.workers * 2
    after = until(lambda: (e := errors(gw))["disabled"] >= before["disabled"] + n and e, f"{n} disabled counted")
    assert after == {**before, "disabled": before["disabled"] + n}
    status, out = action(gw, "enable", "d", "echo", None)
    assert status == 200 and out["ok"], out
    assert not next(f for f in state(gw)["functions"] if f["request_type"] == "echo")["disabled"]
    for _ in range(gw.workers * 2):
        (r,) = asyncio.run(calls(gw, "echo", 1))
        assert r.success, r


def test_reset_a_limit(gw: GatewayProcess) -> None:
    text = f"k{gw.workers}"
    before = errors(gw)["rate_limited"]
    first, second = asyncio.run(calls(gw, "limited", 2, text))
    assert first.success and not second.success and second.error.startswith("Rate limit exceeded"), second
    until(lambda: errors(gw)["rate_limited"] == before + 1, "the refusal counted as rate_limited")
    status, out = action(gw, "limit_status", "text", text, "d", "limited")
    assert status == 200 and out["result"][0]["used"] >= 1, out
    status, out = action(gw, "reset", "text", text)
    assert status == 200 and out["result"]["freed"] >= 1, out
    (again,) = asyncio.run(calls(gw, "limited", 1, text))
    assert again.success, again


def test_bad_actions_are_refused(gw: GatewayProcess) -> None:
    status, out = action(gw, "delete", "d", "echo")
    assert status == 409 and out["error"] == "refused" and "delete" in out["text"], out
    status, out = action(gw, "disable", "d", "nope", None)
    assert status == 409 and out["error"] == "refused", out
    status, _, body = request(gw, "/dashboard/action", ADMIN, b"{not json")
    assert status == 400, body
    assert request(gw, "/dashboard/action", ADMIN)[0] == 405  # a GET
    assert request(gw, "/dashboard/state", ADMIN, {"op": "state"})[0] == 405  # a POST
    assert request(gw, "/dashboard/nothing", ADMIN)[0] == 404
    assert all(r.success for r in asyncio.run(calls(gw, "echo", 2)))


def test_the_page_is_served_from_the_package(gw: GatewayProcess) -> None:
    status, headers, html = request(gw, "/dashboard")
    assert status == 200 and headers["Content-Type"].startswith("text/html"), (status, html[:200])
    assert b'src="/dashboard/dashboard.js"' in html and b'href="/dashboard/dashboard.css"' in html
    for path, ctype in (("/dashboard/dashboard.js", "text/javascript"), ("/dashboard/dashboard.css", "text/css")):
        status, headers, body = request(gw, path)
        assert status == 200 and headers["Content-Type"].startswith(ctype) and len(body) > 500, (path, status)
    # nothing fetched from elsewhere: no CDN, every reference relative to the gateway
    for path in ("/dashboard", "/dashboard/dashboard.js", "/dashboard/dashboard.css"):
        body = request(gw, path)[2].decode()
        assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", body), path
        assert not re.search(r"""(fetch|import)\s*\(\s*["'](https?:)?//""", body), path


def test_a_body_arriving_after_the_head_is_waited_for(gw: GatewayProcess) -> None:
    """A POST whose body comes in a later segment than its head is answered once the body is
    in (not as an empty body): the head alone draws no answer, the body then the action's."""
    body = json.dumps({"op": "limit_status", "args": ["text", "nobody", "d", "limited"]}).encode()
    head = (
        f"POST /dashboard/action HTTP/1.1\r\nHost: x\r\nAuthorization: {ADMIN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((gw.host, gw.port), timeout=WAIT) as s:
        s.sendall(head)
        early, _, _ = select.select([s], [], [], 0.5)
        assert not early, s.recv(4096)  # nothing answered on the head alone
        s.sendall(body)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK", answer[:300]
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["ok"] is True


def test_the_role_is_configurable() -> None:
    g = GatewayProcess(CONFIG.replace("dashboard = true", 'dashboard = true\ndashboard_role = "ops"', 1))
    try:
        assert request(g, "/dashboard/state", ADMIN)[0] == 403  # "admin" is no longer the role
        assert request(g, "/dashboard/state", f"Bearer {token(['ops'])}")[0] == 200
        assert request(g, "/dashboard/state", f"Bearer {CLUSTER_SECRET}")[0] == 200
    finally:
        assert g.stop() == 0
