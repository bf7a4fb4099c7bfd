"""Rate limits end to end: `[rate_limiter]` over real workers sharing one table, the reference's
refusal, runtime control through the control port and `genapi ratelimit`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from typing import Any

from genapi.client import Client
from support.configs import PID_CONFIG
from support.gateway_proc import GatewayProcess, children, wait_until
from support.node_proc import control

BASE = (
    PID_CONFIG
    + """
[[functions]]
service = "w"
request_type = "keyed"
mfa = "testapi:echo"
arg_types = {{ text = "string" }}

[rate_limiter]
{limits}
"""
)


def gateway(limits: str, workers: int = 3) -> GatewayProcess:
    return GatewayProcess(BASE.format(limits=limits), extra_args=["--workers", str(workers)])


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def calls(
    gw: GatewayProcess, n: int, rt: str = "pid", args: dict[str, Any] | None = None, connections: int = 30
) -> list[Any]:
    """`n` calls spread over `connections` fresh connections (so over the workers)."""
    clients = await asyncio.gather(*(Client.connect(gw.url) for _ in range(connections)))
    try:
        await asyncio.gather(*(c.join("api:r") for c in clients))
        out = []
        for i in range(n):
            out.append(await clients[i % connections].call("w", rt, args, topic="api:r", raise_on_error=False))
        return out
    finally:
        await asyncio.gather(*(c.close() for c in clients))


def test_a_limit_holds_exactly_across_the_workers() -> None:
    gw = gateway('[[rate_limiter.global_limits]]\nkey = "ip_address"\nmax_requests = 20\nwindow_ms = 60000\n')
    try:
        got = run(calls(gw, 45))
        ok = [r for r in got if r.success]
        refused = [r for r in got if not r.success]
        assert len(ok) == 20
        assert len(Counter(r.result for r in ok)) >= 2  # admitted by more than one worker
        assert {re.sub(r"\d+", "N", r.error) for r in refused} == {"Rate limit exceeded. Please retry after N seconds."}
        assert {r.error for r in refused} <= {
            f"Rate limit exceeded. Please retry after {s} seconds." for s in range(1, 61)
        }
        assert all(r.can_retry for r in refused)
    finally:
        assert gw.stop() == 0


def test_the_window_slides() -> None:
    """3 per 3 s on one key: the 4th is refused (retry after at most the window), the window's
    admissions leave it (seen through `$rl_status`, however slow the machine) and 3 more pass."""
    gw = gateway(
        '[[rate_limiter.api_limits]]\nservice = "w"\nrequest_type = "keyed"\nkey = "text"\n'
        "max_requests = 3\nwindow_ms = 3000\n",
        workers=2,
    )
    try:

        async def go() -> list[Any]:
            out = []
            for text in ("a", "a", "a", "a", "b"):
                out.append((await calls(gw, 1, "keyed", {"text": text}, connections=1))[0])
            return out

        def used(value: str) -> int:
            return int(control(gw.control, "$rl_status", ["text", value, "w", "keyed"])[0]["used"])

        first = run(go())
        assert [r.success for r in first] == [True, True, True, False, True]  # "b" counts apart
        assert re.fullmatch(r"Rate limit exceeded\. Please retry after [1-3] seconds\.", first[3].error), first[3]
        assert used("a") == 3
        assert wait_until(lambda: used("a") == 0, timeout=30, interval=0.1)  # the three admissions left the window
        again = run(calls(gw, 4, "keyed", {"text": "a"}, connections=2))
        assert [r.success for r in again] == [True, True, True, False]
    finally:
        assert gw.stop() == 0


def test_global_and_api_limits_combine_and_only_admitted_requests_count() -> None:
    limits = (
        '[[rate_limiter.global_limits]]\nkey = "ip_address"\nmax_requests = 6\nwindow_ms = 60000\n'
        '[[rate_limiter.api_limits]]\nservice = "w"\nrequest_type = "keyed"\nkey = "ip_address"\n'
        "max_requests = 2\nwindow_ms = 60000\n"
    )
    gw = gateway(limits)
    try:
        keyed = run(calls(gw, 5, "keyed", {"text": "x"}, connections=5))
        assert [r.success for r in keyed] == [True, True, False, False, False]  # the API limit
        status = control(gw.control, "$rl_status", ["ip_address", "127.0.0.1"])
        assert status[0]["used"] == 2 and status[0]["remaining"] == 4  # refused requests were not counted
        other = run(calls(gw, 6, "pid"))
        assert [r.success for r in other] == [True] * 4 + [False] * 2  # the global limit's remaining 4
    finally:
        assert gw.stop() == 0


def genapi(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "genapi", *args], capture_output=True, text=True, timeout=30)


def test_runtime_changes_reach_every_worker_and_the_cli_controls_them() -> None:
    gw = gateway('[[rate_limiter.global_limits]]\nkey = "device_id"\nmax_requests = 5\nwindow_ms = 1000\n')
    try:
        assert all(r.success for r in run(calls(gw, 12)))  # no limit yet
        out = genapi("ratelimit", "add-global", "ip_address", "3", "60000", "--control", gw.control, "--json")
        assert out.returncode == 0, out.stderr
        answer = json.loads(out.stdout)
        assert answer["missing"] == [] and answer["workers"] == 3
        got = run(calls(gw, 9))
        assert [r.success for r in got].count(True) == 3
        st = genapi("ratelimit", "status", "ip_address", "127.0.0.1", "--control", gw.control)
        assert st.returncode == 0 and "ip_address=127.0.0.1: 3/3 used per 60000 ms, 0 remaining" in st.stdout
        assert genapi("ratelimit", "reset", "ip_address", "127.0.0.1", "--control", gw.control).returncode == 0
        assert [r.success for r in run(calls(gw, 4))] == [True, True, True, False]
        assert genapi("ratelimit", "remove-global", "ip_address", "--control", gw.control).returncode == 0
        assert all(r.success for r in run(calls(gw, 9)))
        bad = genapi("ratelimit", "remove-global", "ip_address", "--control", gw.control)
        assert bad.returncode == 2 and "no global limit on key 'ip_address'" in bad.stderr
        cfg = json.loads(genapi("ratelimit", "config", "--control", gw.control, "--json").stdout)
        assert [g["key"] for g in cfg["global_limits"]] == ["device_id"] and cfg["fail_open"] is True
    finally:
        assert gw.stop() == 0


def test_a_worker_killed_mid_traffic_leaves_the_table_usable() -> None:
    gw = gateway('[[rate_limiter.global_limits]]\nkey = "text"\nmax_requests = 400\nwindow_ms = 60000\n', workers=2)
    try:

        async def traffic() -> list[Any]:
            clients = await asyncio.gather(*(Client.connect(gw.url) for _ in range(20)))
            await asyncio.gather(*(c.join("api:r") for c in clients))
            out: list[Any] = []

            async def one(c: Client) -> None:
                for _ in range(40):
                    try:
                        out.append(await c.call("w", "keyed", {"text": "k"}, topic="api:r", raise_on_error=False))
                    except Exception:  # its worker was killed under it
                        return

            killer = asyncio.get_running_loop().call_later(0.2, lambda: os.kill(max(children(gw.pid)), signal.SIGKILL))
            await asyncio.gather(*(one(c) for c in clients))
            killer.cancel()
            for c in clients:
                await c.close()
            return out

        got = run(traffic())
        assert sum(r.success for r in got) <= 400
        assert wait_until(lambda: len(children(gw.pid)) == 2, timeout=10)
        status = control(gw.control, "$rl_status", ["text", "k"])[0]
        after = run(calls(gw, 500, "keyed", {"text": "k"}, connections=10))
        assert sum(r.success for r in after) == status["remaining"]  # exact again, nothing wedged
    finally:
        assert gw.stop() == 0


def test_ip_address_behind_a_trusted_proxy_is_the_forwarded_one() -> None:
    from support.rawclient import Raw

    limit = '[[rate_limiter.global_limits]]\nkey = "ip_address"\nmax_requests = 2\nwindow_ms = 60000\n'

    async def three_each(gw: GatewayProcess) -> list[bool]:
        out = []
        for forwarded in ("203.0.113.7", "198.51.100.9"):
            c = await Raw.connect(gw.url, headers={"X-Forwarded-For": f"10.9.9.9, {forwarded}"})
            await c.join("api:r")
            for i in range(3):
                c.send(
                    [
                        "1",
                        str(i + 2),
                        "api:r",
                        "phoenix_gen_api",
                        {"request_id": f"r{i}", "service": "w", "request_type": "pid", "args": {}},
                    ]
                )
                push, _reply = await c.recv_n(2)
                out.append(push[4]["success"])
            await c.close()
        return out

    trusted = GatewayProcess(
        BASE.format(limits=limit).replace("[auth]", '[gateway]\ntrusted_proxies = ["127.0.0.1"]\n\n[auth]')
    )
    try:  # the proxy (127.0.0.1) is trusted: each forwarded client has its own 2
        assert run(three_each(trusted)) == [True, True, False, True, True, False]
    finally:
        assert trusted.stop() == 0
    direct = GatewayProcess(BASE.format(limits=limit))
    try:  # not trusted: the header is the client's word, and ignored
        assert run(three_each(direct)) == [True, True, False, False, False, False]
    finally:
        assert direct.stop() == 0
