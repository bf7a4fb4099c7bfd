"""Telemetry's attach API and the three events tests/test_telemetry.py does not see:
`genapi.executor.request.exception` (a request that crashes in the pipeline),
`genapi.worker_pool.circuit_breaker.close` (a node's breaker closing when it is back) and
`genapi.config.batch_add` (a worker loading a config snapshot of many changes), each where it
really happens, in a real gateway; handlers there are attached with `attach_category` and
`attach_many` (tests/support/telemetry_api_probe.py). `attach_category`, `attach_many`,
`detach` and `attach_default_logger` are also checked in this process, against `execute`."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest

from genapi import telemetry
from genapi.client import Client
from support.configs import PID, echo
from support.gateway_proc import GatewayProcess, children, free_port, wait_until
from support.node_proc import NodeProcess

NODE = f"127.0.0.1:{free_port()}"  # where t.remote's node listens, once the test starts it

PROBE = """
[[functions]]
service = "probe"
request_type = "events"
mfa = "telemetry_api_probe:events"
arg_types = { clear = "boolean" }

[[functions]]
service = "probe"
request_type = "attach"
mfa = "telemetry_api_probe:attach"
arg_types = { handler_id = "string" }

[[functions]]
service = "probe"
request_type = "detach"
mfa = "telemetry_api_probe:detach"
arg_types = { handler_id = "string" }
"""

CONFIG = (
    f"""
[auth]
require_verified_user_id = false

[cluster]
pull_interval_ms = 30000
breaker_threshold = 1
breaker_cooldown_ms = 200

[[functions]]
service = "t"
request_type = "remote"
mfa = "nodeapp:echo"
arg_types = {{ text = "string" }}
nodes = ["{NODE}"]
timeout = 2000
"""
    + PROBE
    + echo("t", "crash", before_execute="telemetry_api_probe:before_unbindable")
    + echo("t")
    + PID
)


@pytest.fixture(scope="module")
def gw() -> Any:
    g = GatewayProcess(CONFIG)
    yield g
    assert g.stop() == 0


async def call(c: Client, service: str, rt: str, args: dict[str, Any] | None = None) -> Any:
    resp = await c.call(service, rt, args or {}, topic=f"api:{service}", raise_on_error=False)
    assert resp is not None
    return resp


async def events(c: Client, name: str | None = None) -> list[dict[str, Any]]:
    got = (await call(c, "probe", "events", {"clear": True})).result
    return [e for e in got if name is None or e["event"] == name]


# --------------------------------------------------------------------------- in a real gateway
def test_request_exception_when_a_request_crashes(gw: GatewayProcess) -> None:
    async def main() -> None:
        c = await Client.connect(gw.url)
        await c.join("api:t")
        await c.join("api:probe")
        await events(c)
        resp = await call(c, "t", "crash", {"text": "x"})
        assert not resp.success
        evs = await events(c)
        crashed = [e for e in evs if e["event"] == "genapi.executor.request.exception"]
        assert len(crashed) == 1 and crashed[0]["handler"] == "many", evs
        meta = crashed[0]["metadata"]
        assert (meta["service"], meta["request_type"], meta["request_id"]) == ("t", "crash", resp.request_id)
        assert meta["kind"] == "error" and "no_such_function" in meta["reason"], meta
        # attach_many named three events: a plain call delivers none of them
        assert (await call(c, "t", "echo", {"text": "ok"})).success
        assert await events(c) == []
        await c.close()

    asyncio.run(main())
    err = gw.read_stderr()
    assert "request_crashed" in err
    # the default logger (attached at warning by the probe) writes structured lines (how many is
    # up to the log's rate limit per kind) and is never detached for failing
    assert any(ln.split()[2:4] == ["WARNING", "telemetry"] for ln in err.splitlines()), err[-2000:]
    assert "telemetry_event=genapi.config.add service=t request_type=crash" in err
    assert "telemetry_handler_detached" not in err


def test_breaker_open_then_close_when_the_node_is_back(gw: GatewayProcess) -> None:
    async def main() -> None:
        c = await Client.connect(gw.url)
        await c.join("api:t")
        await c.join("api:probe")
        await events(c)
        assert not (await call(c, "t", "remote", {"text": "x"})).success  # nothing listens: it opens
        opened = await events(c, "genapi.worker_pool.circuit_breaker.open")
        assert [(e["handler"], e["metadata"]["pool_name"]) for e in opened] == [("many", NODE)]
        nowhere = f"127.0.0.1:{free_port()}"
        with NodeProcess([nowhere], name="back", listen=NODE):
            got: list[dict[str, Any]] = []
            for _ in range(300):  # after the cooldown a probe call goes through and closes it
                resp = await call(c, "t", "remote", {"text": "y"})
                got += await events(c)
                if resp.success:
                    break
                await asyncio.sleep(0.1)
            assert resp.success and resp.result["node"] == "back", resp
            closed = [e for e in got if e["event"] == "genapi.worker_pool.circuit_breaker.close"]
            assert [(e["handler"], e["metadata"]["pool_name"]) for e in closed] == [("many", NODE)], got
            assert closed[0]["measurements"] == {}
        await c.close()

    asyncio.run(main())


def test_detach_in_the_gateway_stops_delivery(gw: GatewayProcess) -> None:
    async def main() -> None:
        c = await Client.connect(gw.url)
        await c.join("api:t")
        await c.join("api:probe")
        assert (await call(c, "probe", "attach", {"handler_id": "temp"})).result is True
        await events(c)
        await call(c, "t", "crash", {"text": "x"})
        assert sorted(e["handler"] for e in await events(c)) == ["many", "temp"]
        assert (await call(c, "probe", "detach", {"handler_id": "temp"})).result is True
        assert (await call(c, "probe", "detach", {"handler_id": "temp"})).result is False
        await call(c, "t", "crash", {"text": "x"})
        assert [e["handler"] for e in await events(c)] == ["many"]  # the other attachment still gets it
        await c.close()

    asyncio.run(main())


def test_config_category_and_batch_add_on_a_snapshot_load() -> None:
    """With two workers the master reloads the config file on SIGHUP and each worker loads the
    snapshot; over 64 changes it rebuilds its registry in one step: genapi.config.batch_add."""
    g = GatewayProcess(CONFIG, extra_args=["--workers", "2"])
    try:
        assert g.config_path is not None
        added = 70
        with open(g.config_path, "a") as f:
            for i in range(added):
                f.write(echo("bulk", f"e{i}"))
        workers = children(g.pid)
        assert len(workers) == 2

        async def per_worker() -> dict[int, list[dict[str, Any]]]:
            out: dict[int, list[dict[str, Any]]] = {}
            for _ in range(40):
                c = await Client.connect(g.url)
                try:
                    await c.join("api:probe")
                    await c.join("api:w")
                    evs = await events(c)
                    pid = (await c.call("w", "pid", topic="api:w")).result  # type: ignore[union-attr]
                finally:
                    await c.close()
                out.setdefault(pid, []).extend(evs)
                if set(out) >= workers:
                    return out
            raise AssertionError(f"not every worker answered: {set(out)}")

        asyncio.run(per_worker())  # cleared: what came before the reload
        os.kill(g.pid, signal.SIGHUP)
        assert wait_until(lambda: "config_reloaded" in g.read_stderr(), timeout=20)
        seen: dict[int, list[dict[str, Any]]] = {}

        def both_loaded() -> bool:
            for pid, evs in asyncio.run(per_worker()).items():
                seen.setdefault(pid, []).extend(evs)
            return all(any(e["event"] == "genapi.config.batch_add" for e in seen.get(w, [])) for w in workers)

        assert wait_until(both_loaded, timeout=30, interval=0.2), seen
        for w in workers:
            batch = [e for e in seen[w] if e["event"] == "genapi.config.batch_add"]
            assert [e["handler"] for e in batch] == ["category"], batch
            assert batch[0]["measurements"]["count"] >= added, batch
            assert all(e["event"].startswith("genapi.config.") for e in seen[w]), seen[w]
    finally:
        assert g.stop() == 0


# --------------------------------------------------------------------------- in this process
@pytest.fixture
def clean() -> Any:
    yield
    for handler_id in ("t-cat", "t-many", "t-one", telemetry.DEFAULT_LOGGER):
        telemetry.detach(handler_id)


def test_attach_category_and_attach_many_deliver_what_they_name(clean: None) -> None:
    got: list[tuple[str, str]] = []
    telemetry.attach_category("t-cat", "rate_limiter", lambda e, m, md, cfg: got.append((cfg, e)), "cat")
    telemetry.attach_many(
        "t-many",
        ["genapi.config.push", "genapi.executor.retry"],
        lambda e, m, md, cfg: got.append((cfg, e)),
        "many",
    )
    for name in telemetry.list_events():
        telemetry.execute(name, {}, {})
    assert sorted(got) == sorted(
        [("cat", e) for e in telemetry.CATEGORIES["rate_limiter"]]
        + [("many", "genapi.config.push"), ("many", "genapi.executor.retry")]
    )
    with pytest.raises(ValueError, match="unknown telemetry category"):
        telemetry.attach_category("t-one", "nope", lambda *a: None)
    with pytest.raises(ValueError, match="already attached"):
        telemetry.attach_many("t-cat", ["genapi.config.add"], lambda *a: None)


def test_detach_stops_delivery_and_says_whether_it_was_attached(clean: None) -> None:
    got: list[str] = []
    telemetry.attach_many("t-many", ["genapi.config.add", "genapi.config.delete"], lambda e, *a: got.append(e))
    telemetry.execute("genapi.config.add", {}, {})
    assert got == ["genapi.config.add"]
    assert telemetry.listening("genapi.config.delete")
    assert telemetry.detach("t-many") is True
    telemetry.execute("genapi.config.add", {}, {})
    telemetry.execute("genapi.config.delete", {}, {})
    assert got == ["genapi.config.add"]
    assert not telemetry.listening("genapi.config.add") and not telemetry.listening("genapi.config.delete")
    assert telemetry.detach("t-many") is False
    assert telemetry.detach("never-attached") is False
    telemetry.attach_many("t-many", ["genapi.config.add"], lambda e, *a: got.append(e))  # the id is free again
    telemetry.execute("genapi.config.add", {}, {})
    assert got == ["genapi.config.add", "genapi.config.add"]


def test_default_logger_writes_one_line_per_event_at_its_level(warnings: list[str], clean: None) -> None:
    telemetry.attach_default_logger("warning")
    telemetry.execute("genapi.config.push", {"count": 3}, {"service": "inv", "version": "1.0.0"})
    telemetry.execute("genapi.rate_limiter.reset", {}, {"key": "user_id"})
    assert warnings == [
        "telemetry telemetry_event=genapi.config.push count=3 service=inv version=1.0.0",
        "telemetry telemetry_event=genapi.rate_limiter.reset key=user_id",
    ]
    assert all(telemetry.listening(e) for e in telemetry.list_events())
    assert telemetry.detach_default_logger() is True
    telemetry.execute("genapi.config.push", {"count": 1}, {"service": "inv", "version": "1.0.0"})
    assert len(warnings) == 2
    telemetry.attach_default_logger()  # debug: below what the fixture's logger lets through
    telemetry.execute("genapi.config.push", {"count": 1}, {"service": "inv", "version": "1.0.0"})
    assert len(warnings) == 2
    assert telemetry.detach(telemetry.DEFAULT_LOGGER) is True
