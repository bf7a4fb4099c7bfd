"""The access log: at `info`, connect/join/leave/disconnect lines and one `call` line per request
(connection, user, function, version, outcome, duration); nothing of it at the default level."""

from __future__ import annotations

import asyncio
import re
import socket

from support.configs import echo
from support.gateway_proc import GatewayProcess
from support.rawclient import Raw, request

EV = "phoenix_gen_api"


def _exercise(gw: GatewayProcess, run) -> None:
    async def go() -> None:
        c = await Raw.connect(gw.url)
        await c.join("api:log")
        c.send(["1", "2", "api:log", EV, request("ok1", "echo", {"text": "a"})])
        await c.recv_n(2)
        c.send(["1", "3", "api:log", EV, request("bad1", "nope", {})])
        await c.recv_n(2)
        c.send(["1", "4", "api:log", EV, {"service": "demo"}])
        await c.recv_n(2)
        c.send(["1", "5", "api:log", EV, request("as1", "slow_echo", {"text": "b", "delay_ms": 10})])
        await c.recv_n(3)
        c.send(["1", "6", "api:log", EV, request("st1", "count", {"n": 2})])
        await c.recv_n(5)
        c.send(["1", "7", "api:log", EV, request("nt1", "note", {"text": "n"})])
        await c.recv()
        c.send(["1", "8", "api:log", EV, request("pl1", "blocking_sleep", {"ms": 1})])
        await c.recv_n(2)
        c.send(["1", "9", "api:log", "phx_leave", {}])
        await c.recv_n(2)
        await c.close()

    run(go())


def test_one_call_line_per_request_at_info(run) -> None:
    gw = GatewayProcess(extra_args=["--log-level", "info"])
    try:
        _exercise(gw, run)
    finally:
        assert gw.stop() == 0
    err = gw.read_stderr()
    calls = [ln for ln in err.splitlines() if " INFO call " in ln]
    by_id = {re.search(r"request_id=(\S+)", ln).group(1): ln for ln in calls}  # type: ignore[union-attr]
    assert set(by_id) == {"ok1", "bad1", "unknown", "as1", "st1", "nt1", "pl1"}, calls
    assert len(calls) == 7
    conn = re.search(r"conn=(\S+)", by_id["ok1"]).group(1)  # type: ignore[union-attr]
    assert all(f"conn={conn} " in ln for ln in calls)
    assert "fn=demo.echo " in by_id["ok1"] and "outcome=ok" in by_id["ok1"] and re.search(r" ms=[\d.]+", by_id["ok1"])
    assert re.search(r"queued_ms=[\d.]+$", by_id["ok1"])  # the wait for a slot, apart from the run time
    assert "outcome=error" in by_id["bad1"] and 'error="unsupported function: nope version 0.0.0"' in by_id["bad1"]
    assert "outcome=error" in by_id["unknown"] and "Missing required fields" in by_id["unknown"]
    for rid, fn in (
        ("as1", "demo.slow_echo"),
        ("st1", "demo.count"),
        ("nt1", "demo.note"),
        ("pl1", "demo.blocking_sleep"),
    ):
        assert f"fn={fn} " in by_id[rid] and "outcome=ok" in by_id[rid], by_id[rid]
    assert re.search(rf"INFO connect conn={re.escape(conn)} peer=\S+ user=None vsn=2.0.0", err)
    assert f"INFO join conn={conn} topic=api:log" in err and f"INFO leave conn={conn} topic=api:log" in err
    assert f"INFO disconnect conn={conn} " in err


def test_quiet_at_the_default_level(run) -> None:
    gw = GatewayProcess()
    try:
        _exercise(gw, run)
    finally:
        assert gw.stop() == 0
    err = gw.read_stderr()
    assert " call " not in err and " connect " not in err and " join " not in err


JSON_CONFIG = """
[gateway]
detail_error = {detail}

[auth]
require_verified_user_id = false

[[functions]]
service = "t"
request_type = "boom"
nodes = "local"
mfa = "testapi:boom"
arg_types = {{ text = "string" }}
timeout = 1000
"""


def _boom(gw: GatewayProcess, run) -> None:
    async def go() -> None:
        c = await Raw.connect(gw.url)
        await c.join("api:j")
        c.send(["1", "2", "api:j", EV, request("b1", "boom", {"text": "x\nforged"}, service="t")])
        await c.recv_n(2)
        await c.close()

    run(go())


def test_json_lines_and_tracebacks_of_raised_functions(run) -> None:
    import json

    gw = GatewayProcess(JSON_CONFIG.format(detail="true"), extra_args=["--log-level", "info", "--log-format", "json"])
    try:
        _boom(gw, run)
    finally:
        assert gw.stop() == 0
    records = [json.loads(ln) for ln in gw.read_stderr().splitlines() if ln.strip()]  # every line is JSON
    by_event = {r["event"]: r for r in records}
    raised = by_event["call_raised"]
    assert raised["level"] == "WARNING" and raised["service"] == "t" and raised["request_type"] == "boom"
    assert "RuntimeError: exploded on x\nforged" in raised["traceback"]  # with detail_error: at warning
    call = by_event["call"]
    assert (call["fn"], call["request_id"], call["outcome"]) == ("t.boom", "b1", "error")
    assert call["error"] == "Internal Server Error: RuntimeError: exploded on x\nforged"


def test_tracebacks_only_at_debug_without_detail_error(run) -> None:
    gw = GatewayProcess(JSON_CONFIG.format(detail="false"), extra_args=["--log-level", "warning"])
    try:
        _boom(gw, run)
    finally:
        assert gw.stop() == 0
    err = gw.read_stderr()
    assert "call_raised" in err and "Traceback" not in err
    gw = GatewayProcess(JSON_CONFIG.format(detail="false"), extra_args=["--log-level", "debug"])
    try:
        _boom(gw, run)
    finally:
        assert gw.stop() == 0
    err = gw.read_stderr()
    assert "call_raised_traceback" in err and "RuntimeError: exploded on x" in err
    assert "\nforged" not in err  # the client's newline stays escaped in text lines


def test_queue_wait_is_logged_apart_from_run_time(run) -> None:
    gw = GatewayProcess(
        """
[gateway]
max_in_flight = 1

[auth]
require_verified_user_id = false

[[functions]]
service = "t"
request_type = "sleep"
mfa = "testapi:sleep"
arg_types = { ms = "num" }
"""
        + echo("t"),
        extra_args=["--log-level", "info"],
    )

    async def go() -> None:
        c = await Raw.connect(gw.url)
        await c.join("api:q")
        c.send(["1", "2", "api:q", EV, request("slow", "sleep", {"ms": 300}, service="t")])
        c.send(["1", "3", "api:q", EV, request("waiter", "echo", {"text": "x"}, service="t")])
        await c.recv_n(4)
        await c.close()

    try:
        run(go())
    finally:
        assert gw.stop() == 0
    line = next(ln for ln in gw.read_stderr().splitlines() if " call " in ln and "request_id=waiter" in ln)
    queued = float(re.search(r"queued_ms=([\d.]+)", line).group(1))  # type: ignore[union-attr]
    total = float(re.search(r" ms=([\d.]+)", line).group(1))  # type: ignore[union-attr]
    assert queued >= 250 and total >= queued  # it waited for the slow call's slot, then ran at once


def _from(source: str):
    """A picows socket_factory: the client's socket bound to `source` (another loopback address)."""

    async def factory(parsed) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.bind((source, 0))
        await asyncio.get_running_loop().sock_connect(sock, (parsed.host, parsed.port))
        return sock

    return factory


def test_behind_a_trusted_proxy_the_log_names_the_forwarded_client(run) -> None:
    """[gateway] trusted_proxies: a connect from a listed proxy is logged with the client its
    X-Forwarded-For names (the address rate limits and ip_address use) and the proxy beside it;
    from any other peer the header is the client's word: ignored, the TCP peer is logged."""
    gw = GatewayProcess(
        '[gateway]\ntrusted_proxies = ["127.0.0.1"]\n\n[auth]\nrequire_verified_user_id = false\n' + echo("t"),
        extra_args=["--log-level", "info"],
    )

    async def go() -> None:
        for source, forwarded, rid in (
            ("127.0.0.1", "192.0.2.66, 203.0.113.7", "via-proxy"),  # the rightmost untrusted hop counts
            ("127.0.0.2", "203.0.113.99", "direct"),  # 127.0.0.2 is no trusted proxy
        ):
            c = await Raw.connect(gw.url, headers={"X-Forwarded-For": forwarded}, socket_factory=_from(source))
            await c.join("api:p")
            c.send(["1", "2", "api:p", EV, request(rid, "echo", {"text": "x"}, service="t")])
            await c.recv_n(2)
            await c.close()

    try:
        run(go())
    finally:
        assert gw.stop() == 0
    err = gw.read_stderr()
    connects = {m.group(1): m.group(2) for m in re.finditer(r" INFO connect conn=(\S+) (.*)$", err, re.M)}
    calls = {m.group(2): m.group(1) for m in re.finditer(r" INFO call conn=(\S+) .*request_id=(\S+)", err)}
    assert re.fullmatch(
        r"peer=203\.0\.113\.7 user=None vsn=2\.0\.0 proxy=127\.0\.0\.1:\d+", connects[calls["via-proxy"]]
    )
    assert re.fullmatch(r"peer=127\.0\.0\.2:\d+ user=None vsn=2\.0\.0", connects[calls["direct"]])
    assert "203.0.113.99" not in err and "192.0.2.66" not in err
