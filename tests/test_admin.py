"""`genapi admin ...` against running gateways (real processes, the real control port): status,
the registry (list, show, disable, enable, delete) served by every worker, pushed services, the
node pool over the workers, rate limits; human output and `--json`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest

from genapi.cli import main
from genapi.client import Client
from support.configs import PID_CONFIG
from support.gateway_proc import GatewayProcess, children, wait_until
from support.node_proc import NodeProcess, wait_pushed

CONFIG = (
    PID_CONFIG
    + """
[[functions]]
service = "w"
request_type = "who"
mfa = "testapi:pid"
"""
)

VERSIONED = """
[[functions]]
service = "w"
request_type = "v"
mfa = "testapi:pid"
version = "1.0.0"

[[functions]]
service = "w"
request_type = "v"
mfa = "testapi:echo"
arg_types = { text = "string" }
version = "2.0.0"

[rate_limiter]
[[rate_limiter.global_limits]]
key = "user_id"
max_requests = 100
window_ms = 60000
"""


def admin(capsys: pytest.CaptureFixture[str], control: str, *args: str, code: int = 0) -> str:
    """`genapi admin ARGS --control CONTROL`, run as the command runs it; its output."""
    assert main(["admin", *args, "--control", control]) == code
    out = capsys.readouterr()
    return out.out if code == 0 else out.err


def admin_json(capsys: pytest.CaptureFixture[str], control: str, *args: str) -> Any:
    return json.loads(admin(capsys, control, *args, "--json"))


async def answers(gw: GatewayProcess, n: int, rt: str, service: str = "w", **call: Any) -> dict[int, list[Any]]:
    """`n` fresh connections, each asking `w.who` (its worker's pid), then `w.<rt>`: per
    worker pid what `w.<rt>` answered (result, or error text)."""
    clients = await asyncio.gather(*(Client.connect(gw.url) for _ in range(n)))
    try:
        await asyncio.gather(*(c.join("api:w") for c in clients))
        who = await asyncio.gather(*(c.call("w", "who", topic="api:w") for c in clients))
        got = await asyncio.gather(*(c.call(service, rt, topic="api:w", raise_on_error=False, **call) for c in clients))
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    out: dict[int, list[Any]] = {}
    for w, r in zip(who, got, strict=True):
        out.setdefault(w.result, []).append(r.result if r.success else r.error)
    return out


def every_worker(gw: GatewayProcess, rt: str, **call: Any) -> dict[int, list[Any]]:
    """What `w.<rt>` answers on each worker (connections until every worker answered)."""
    workers = children(gw.pid) or {gw.pid}
    seen: dict[int, list[Any]] = {}
    for _ in range(20):
        for pid, got in asyncio.run(answers(gw, 20, rt, **call)).items():
            seen.setdefault(pid, []).extend(got)
        if workers <= set(seen):
            return seen
    raise AssertionError(f"not every worker answered: {set(seen)} of {workers}")


@pytest.fixture
def two():
    gw = GatewayProcess(CONFIG, extra_args=["--workers", "2"])
    yield gw
    gw.stop()


def test_status_of_the_gateway_and_its_workers(two: GatewayProcess, capsys: pytest.CaptureFixture[str]) -> None:
    async def with_connections() -> Any:
        clients = await asyncio.gather(*(Client.connect(two.url) for _ in range(6)))
        try:
            return await asyncio.to_thread(admin_json, capsys, two.control, "status")
        finally:
            await asyncio.gather(*(c.close() for c in clients))

    status = asyncio.run(with_connections())
    assert (
        status["pid"] == two.pid and status["functions"] == 3 and status["pushed"] == 0
    )  # w.pid, w.who, genapi.list_apis
    assert status["uptime_s"] > 0 and status["version"]
    workers = status["workers"]
    assert [w["index"] for w in workers] == [0, 1]
    assert {w["pid"] for w in workers} == children(two.pid)
    assert all(w["alive"] and w["ready"] and w["generation"] == status["generation"] for w in workers)
    assert sum(w["connections"] for w in workers) == 6

    human = admin(capsys, two.control, "status")
    assert f"gateway pid {two.pid}" in human and "3 functions" in human
    for w in workers:
        assert any(line.split()[:3] == [str(w["index"]), str(w["pid"]), "yes"] for line in human.splitlines())

    victim = workers[1]["pid"]
    os.kill(victim, signal.SIGKILL)
    assert wait_until(
        lambda: (
            (s := admin_json(capsys, two.control, "status"))["restarts"] == 1
            and s["workers"][1]["pid"] != victim
            and s["workers"][1]["ready"]
        ),
        timeout=10,
    )
    status = admin_json(capsys, two.control, "status")
    assert status["workers"][1]["restarts"] == 1 and status["workers"][0]["restarts"] == 0


def test_disable_enable_delete_reach_every_worker(two: GatewayProcess, capsys: pytest.CaptureFixture[str]) -> None:
    before = every_worker(two, "pid")
    assert all(got == [pid] * len(got) for pid, got in before.items())

    done = admin_json(capsys, two.control, "functions", "disable", "w.pid")
    assert done["status"] == "disabled" and done["versions"] == [None]
    assert done["workers"] == 2 and done["missing"] == []
    off = every_worker(two, "pid")
    assert {e for got in off.values() for e in got} == {"disabled function: pid version 0.0.0"}
    listed = admin_json(capsys, two.control, "functions")
    assert [f["disabled"] for f in listed if f["request_type"] == "pid"] == [True]
    assert "w.pid - sync testapi:pid () (disabled)" in admin(capsys, two.control, "functions", "list")

    # a worker started after the change loads it from the snapshot
    victim = max(off)
    os.kill(victim, signal.SIGKILL)
    assert wait_until(
        lambda: (
            len(children(two.pid) - {victim}) == 2
            and all(w["ready"] for w in admin_json(capsys, two.control, "status")["workers"])
        ),
        timeout=10,
    )
    restarted = every_worker(two, "pid")
    assert victim not in restarted
    assert {e for got in restarted.values() for e in got} == {"disabled function: pid version 0.0.0"}

    shown = admin(capsys, two.control, "functions", "show", "w.pid")
    assert shown.startswith("w.pid unversioned (disabled)\n"), shown  # the user's words, not "-" or "0.0.0"
    out = admin(capsys, two.control, "functions", "enable", "w.pid")
    assert out.startswith("enabled w.pid (unversioned): config generation") and "served by 2 workers" in out
    on = every_worker(two, "pid")
    assert all(got == [pid] * len(got) for pid, got in on.items())

    out = admin(capsys, two.control, "functions", "delete", "w.pid")
    assert out.startswith("deleted w.pid")
    gone = every_worker(two, "pid")
    assert {e for got in gone.values() for e in got} == {"unsupported function: pid version 0.0.0"}
    assert [f["request_type"] for f in admin_json(capsys, two.control, "functions") if f["service"] == "w"] == ["who"]
    err = admin(capsys, two.control, "functions", "delete", "w.pid", code=2)
    assert err.strip() == "genapi admin functions delete: no function w.pid to delete", err  # no "$fn_delete"


def test_pushed_and_nodes_over_the_workers(two: GatewayProcess, capsys: pytest.CaptureFixture[str]) -> None:
    assert admin(capsys, two.control, "pushed").strip() == "no pushed services"
    assert admin(capsys, two.control, "nodes").strip() == "no service nodes"
    with NodeProcess([two.control], name="a") as a:
        wait_pushed(two.control, "inv", [a.address])
        pushed = admin_json(capsys, two.control, "pushed")
        assert pushed["inv"]["nodes"] == [a.address] and "echo@1.0.0" in pushed["inv"]["functions"]
        human = admin(capsys, two.control, "pushed")
        assert human.startswith(f"inv 1.0.0 (push), nodes {a.address};")

        got = every_worker(two, "echo", service="inv", args={"text": "x"})  # every worker links to the node
        assert all(r == {"text": "x", "n": 1, "node": "a"} for rs in got.values() for r in rs)
        nodes = admin_json(capsys, two.control, "nodes")
        assert [n["address"] for n in nodes] == [a.address]
        node = nodes[0]
        assert node["state"] == "closed" and node["connected"] and node["in_flight"] == 0
        assert sorted(w["index"] for w in node["workers"]) == [0, 1]
        assert {w["pid"] for w in node["workers"]} == children(two.pid)
        assert all(w["state"] == "closed" and w["connected"] for w in node["workers"])
        row = next(line for line in admin(capsys, two.control, "nodes").splitlines() if line.startswith(a.address))
        assert row.split()[1:5] == ["closed", "0", "0", "yes"]

        # disabled by hand: a second node pushing the same service does not enable it again
        admin(capsys, two.control, "functions", "disable", "inv.echo")
        with NodeProcess([two.control], name="b") as b:
            wait_pushed(two.control, "inv", [a.address, b.address])
            off = every_worker(two, "echo", service="inv", args={"text": "x"})
            assert all(e == "disabled function: echo version 0.0.0" for rs in off.values() for e in rs), off
            shown = admin_json(capsys, two.control, "functions", "show", "inv.echo")
            assert (
                len(shown) == 1 and shown[0]["disabled"] and sorted(shown[0]["nodes"]) == sorted([a.address, b.address])
            )


def test_one_worker_and_the_cluster_secret(capsys: pytest.CaptureFixture[str]) -> None:
    with GatewayProcess(
        CONFIG + VERSIONED, env={"GENAPI_CLUSTER_SECRET": "s3cret-0123456789abcdef0123456789abcdef"}
    ) as gw:
        os.environ["GENAPI_CLUSTER_SECRET"] = "s3cret-0123456789abcdef0123456789abcdef"
        try:
            status = admin_json(capsys, gw.control, "status")
            assert status["pid"] == gw.pid and status["functions"] == 5  # with genapi.list_apis
            assert [(w["index"], w["pid"], w["alive"]) for w in status["workers"]] == [(0, gw.pid, True)]
            assert "worker  pid" in admin(capsys, gw.control, "status")

            shown = admin_json(capsys, gw.control, "functions", "show", "w.v", "--version", "2.0.0")
            assert [(c["version"], c["mfa"]) for c in shown] == [("2.0.0", "testapi:echo")]
            human = admin(capsys, gw.control, "functions", "show", "w.v")
            assert "w.v version 1.0.0\n" in human and "w.v version 2.0.0\n" in human
            assert "no function w.nope" in admin(capsys, gw.control, "functions", "show", "w.nope", code=2)
            assert "SERVICE.REQUEST_TYPE" in admin(capsys, gw.control, "functions", "disable", "nodot", code=2)

            done = admin_json(capsys, gw.control, "functions", "disable", "w.v", "--version", "2.0.0")
            assert done["versions"] == ["2.0.0"] and "generation" not in done  # no workers to wait for
            got = asyncio.run(answers(gw, 1, "v"))
            assert got == {gw.pid: [gw.pid]}  # the latest enabled version answers: 1.0.0
            got = asyncio.run(answers(gw, 1, "v", version="2.0.0", args={"text": "t"}))
            assert got == {gw.pid: ["disabled function: v version 2.0.0"]}
            assert "w.v 2.0.0 sync testapi:echo (text: string) (disabled)" in admin(capsys, gw.control, "functions")
            admin(capsys, gw.control, "functions", "enable", "w.v", "--version", "2.0.0")
            got = asyncio.run(answers(gw, 1, "v", args={"text": "t"}))
            assert got == {gw.pid: [{"text": "t", "n": 1}]}

            assert admin_json(capsys, gw.control, "pushed") == {} and admin_json(capsys, gw.control, "nodes") == []
            assert main(["admin", "ratelimit", "config", "--control", gw.control, "--json"]) == 0
            limits = json.loads(capsys.readouterr().out)
            assert limits["global_limits"][0]["key"] == "user_id"
        finally:
            del os.environ["GENAPI_CLUSTER_SECRET"]

        # the installed command, without the secret: refused, exit status 2
        env = {k: v for k, v in os.environ.items() if k != "GENAPI_CLUSTER_SECRET"}
        proc = subprocess.run(
            [sys.executable, "-m", "genapi", "admin", "status", "--control", gw.control],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
        assert proc.returncode == 2 and proc.stderr.startswith("genapi admin status: ")
        proc = subprocess.run(
            [sys.executable, "-m", "genapi", "admin", "pushed", "--control", gw.control],
            capture_output=True,
            text=True,
            env={**env, "GENAPI_CLUSTER_SECRET": "s3cret-0123456789abcdef0123456789abcdef"},
            timeout=30,
        )
        assert proc.returncode == 0 and proc.stdout.strip() == "no pushed services"
