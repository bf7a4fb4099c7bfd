"""`genapi serve --workers N`: the master, SO_REUSEPORT workers, config broadcast over shared
memory and a pipe, supervision, graceful drain. Real processes and sockets throughout."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from genapi.client import Client
from genapi.host.snapshot import default_path
from support.configs import PID_CONFIG
from support.gateway_proc import GatewayProcess, children, pid_alive, wait_until
from support.node_proc import NodeProcess, control

CONFIG = (
    PID_CONFIG
    + """
[[functions]]
service = "w"
request_type = "sleep"
mfa = "testapi:sleep"
arg_types = { ms = "num" }
response_type = "async"
timeout = 10000
"""
)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def ready(gw: GatewayProcess) -> bool:
    """GET /ready answers 200: every worker alive, greeted and on the current config."""
    try:
        with urllib.request.urlopen(f"http://{gw.host}:{gw.port}/ready", timeout=5) as r:
            return r.status == 200
    except OSError:  # 503 (HTTPError) or not listening yet
        return False


async def pids(gw: GatewayProcess, n: int, rt: str = "pid", service: str = "w") -> list[Any]:
    """`n` fresh connections, one call each: what each answered (the worker's pid, or the error)."""
    out: list[Any] = []
    for start in range(0, n, 100):
        clients = await asyncio.gather(*(Client.connect(gw.url) for _ in range(min(100, n - start))))
        try:
            await asyncio.gather(*(c.join("api:w") for c in clients))
            resps = await asyncio.gather(*(c.call(service, rt, topic="api:w", raise_on_error=False) for c in clients))
            out += [r.result if r.success else r.error for r in resps]
        finally:
            await asyncio.gather(*(c.close() for c in clients))
    return out


@pytest.fixture
def three():
    gw = GatewayProcess(CONFIG, extra_args=["--workers", "3"])
    yield gw
    gw.stop()


def test_connections_spread_over_the_workers(three: GatewayProcess) -> None:
    got = Counter(run(pids(three, 1000)))
    workers = children(three.pid)
    assert set(got) == workers and len(workers) == 3
    assert all(250 <= n <= 417 for n in got.values()), got  # 1000 / 3 +- 25 %


def test_push_reaches_every_worker_before_it_returns(three: GatewayProcess) -> None:
    with NodeProcess([], name="n") as node:
        message = control(node.address, "$config")
        answer = control(three.control, "$push", [message, False])
        assert answer["status"] == "accepted" and answer["workers"] == 3 and answer["missing"] == []
        got = run(pids(three, 60, rt="where", service="inv"))  # at once, from every worker
        assert got == ["n"] * 60
        status = control(three.control, "$pushed")["inv"]  # the master's view
        assert status["nodes"] == [node.address]


def test_a_killed_worker_is_replaced_and_the_others_keep_serving(three: GatewayProcess) -> None:
    with NodeProcess([three.control], name="k") as node:
        wait_until(lambda: "inv" in control(three.control, "$pushed"), timeout=10)

        async def go() -> tuple[list[Any], list[Any]]:
            clients = [await Client.connect(three.url) for _ in range(30)]
            for c in clients:
                await c.join("api:w")
            before = [(await c.call("w", "pid", topic="api:w")).result for c in clients]
            victim = Counter(before).most_common(1)[0][0]
            os.kill(victim, signal.SIGKILL)
            await asyncio.sleep(0.3)
            survivors = [c for c, p in zip(clients, before, strict=True) if p != victim]
            after = [(await c.call("w", "pid", topic="api:w")).result for c in survivors]
            for c in clients:
                await c.close()
            return [victim, before], after

        (victim, before), after = run(go())
        assert after == [p for p in before if p != victim]  # untouched: same connections, same workers
        assert wait_until(lambda: len(children(three.pid)) == 3 and victim not in children(three.pid), timeout=5)
        replacement = (children(three.pid) - set(before)).pop()
        got = run(pids(three, 150, rt="where", service="inv"))  # the pushed function, on every worker
        assert got == ["k"] * 150
        assert replacement in set(run(pids(three, 150)))
        assert node.alive()


def test_sigterm_drains_in_flight_calls_and_leaves_nothing_behind() -> None:
    gw = GatewayProcess(CONFIG, extra_args=["--workers", "2", "--drain-timeout", "5"])
    workers = children(gw.pid)
    path = Path(default_path("127.0.0.1", gw.port))
    assert path.exists()

    async def go() -> Any:
        c = await Client.connect(gw.url)
        await c.join("api:w")
        call = asyncio.ensure_future(c.call("w", "sleep", {"ms": 800}, topic="api:w"))
        await asyncio.sleep(0.2)
        os.kill(gw.pid, signal.SIGTERM)
        result = await call
        await asyncio.wait_for(c.closed, 5)
        return result, c.close_code

    result, code = run(go())
    assert result.success and code == 1001
    assert gw.proc.wait(15) == 0
    assert not path.exists()
    assert not any(pid_alive(p) for p in workers)


def test_the_masters_death_takes_the_workers_down_and_a_restart_replaces_its_segment() -> None:
    gw = GatewayProcess(CONFIG, extra_args=["--workers", "2"])
    workers = children(gw.pid)
    port = gw.port
    os.kill(gw.pid, signal.SIGKILL)
    gw.proc.wait(5)
    assert wait_until(lambda: not any(pid_alive(p) for p in workers), timeout=15)
    path = Path(default_path("127.0.0.1", port))
    assert path.exists()  # the crashed master's segment
    again = GatewayProcess(CONFIG, extra_args=["--workers", "2", "--port", str(port)])
    try:
        assert "snapshot_stale_replaced" in again.read_stderr()
        got = run(pids(again, 20))
        assert len(got) == 20 and set(got) <= children(again.pid), got  # all answered, by the new workers
    finally:
        assert again.stop() == 0
    assert not path.exists()


def test_sighup_reloads_the_config_file_on_every_worker(tmp_path: Path) -> None:
    gw = GatewayProcess(CONFIG, extra_args=["--workers", "2"])
    try:
        assert set(run(pids(gw, 20, rt="pid2"))) == {"unsupported function: pid2 version 0.0.0"}
        assert gw.config_path is not None
        with open(gw.config_path, "a") as f:
            f.write('\n[[functions]]\nservice = "w"\nrequest_type = "pid2"\nmfa = "testapi:pid"\n')
        os.kill(gw.pid, signal.SIGHUP)
        assert wait_until(lambda: "config_reloaded" in gw.read_stderr(), timeout=10)
        got = run(pids(gw, 40, rt="pid2"))
        assert set(got) == children(gw.pid)  # answered, by both workers
    finally:
        assert gw.stop() == 0


def test_a_worker_that_keeps_crashing_is_restarted_with_backoff() -> None:
    gw = GatewayProcess(CONFIG, extra_args=["--workers", "2"])
    try:

        def slot0() -> int | None:
            for pid in children(gw.pid):
                try:
                    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                except OSError:  # gone meanwhile
                    continue
                if b"GENAPI_WORKER_INDEX=0" in env:
                    return pid
            return None

        for _ in range(3):  # the same slot dies three times within the crash window
            assert wait_until(lambda: len(children(gw.pid)) == 2 and slot0() is not None, timeout=10)
            os.kill(slot0(), signal.SIGKILL)  # type: ignore[arg-type]
            time.sleep(0.3)
        assert wait_until(lambda: "worker_crash_loop" in gw.read_stderr(), timeout=5)
        line = next(ln for ln in gw.read_stderr().splitlines() if "worker_crash_loop" in ln)
        assert "crashes=3" in line and "restart_in_s=1.0" in line
        assert wait_until(lambda: len(children(gw.pid)) == 2, timeout=10)  # back, after the backoff
        assert wait_until(lambda: ready(gw), timeout=30)  # and serving (greeted, on the current config)
        got = run(pids(gw, 60))
        assert set(got) == children(gw.pid), got  # every call answered, the restarted worker's too
        assert slot0() in got
    finally:
        assert gw.stop() == 0
