"""Telemetry: each event fires with the reference's keys, from the compiled fast path and the
general path alike; a failing handler is detached without touching the request. Handlers live
in the gateway process (tests/support/telemetry_probe.py, imported by the config)."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from genapi import telemetry
from genapi.client import Client
from support.configs import echo
from support.gateway_proc import GatewayProcess
from support.node_proc import control

CONFIG = (
    """
[auth]
require_verified_user_id = false

[gateway]
thread_pool_size = 1
thread_queue_limit = 1

[cluster]
pull_interval_ms = 100
breaker_threshold = 1

[[services]]
service = "ghost"
nodes = ["127.0.0.1:1"]

[rate_limiter]
[[rate_limiter.api_limits]]
service = "t"
request_type = "limited"
key = "ip_address"
max_requests = 1
window_ms = 60000

[[functions]]
service = "probe"
request_type = "events"
mfa = "telemetry_probe:events"
arg_types = { clear = "boolean" }

[[functions]]
service = "probe"
request_type = "attached"
mfa = "telemetry_probe:attached"
arg_types = { event = "string" }

"""
    + echo("t")
    + echo("t", "limited")
    + echo(
        "t", "hooked", before_execute="testapi:before_upper", after_execute="testapi:after_raise", response_type="async"
    )
    + """
[[functions]]
service = "t"
request_type = "flaky"
mfa = "testapi:boom"
arg_types = { text = "string" }
retry = 2
"""
    + echo("t", "bfail", before_execute="testapi:before_raise")
    + """
[[functions]]
service = "t"
request_type = "pboom"
mfa = "testapi:plain_boom"
"""
    + echo("t", "spare")
    + """
[[functions]]
service = "t"
request_type = "down"
mfa = "inv:echo"
nodes = ["127.0.0.1:1"]

[[functions]]
service = "t"
request_type = "block"
mfa = "testapi:block"
arg_types = { ms = "num" }
"""
)


@pytest.fixture(scope="module")
def gw() -> Any:
    g = GatewayProcess(CONFIG)
    yield g
    g.stop()


async def events(c: Client) -> list[dict[str, Any]]:
    resp = await c.call("probe", "events", {"clear": True})
    assert resp is not None
    return [e for e in resp.result if e["service"] != "probe"]  # the probe's own calls are left out


def keys(evs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in evs if e["event"] == name]


def test_event_catalog() -> None:
    assert len(telemetry.list_events()) == len(set(telemetry.EVENTS))
    for category, names in telemetry.CATEGORIES.items():
        assert all(n.startswith("genapi.") for n in names), category
    with pytest.raises(ValueError, match="unknown telemetry event"):
        telemetry.attach("x", "genapi.nope", lambda *a: None)


SRC = Path(__file__).resolve().parent.parent / "src" / "genapi"
EMITTED = re.compile(r'"(genapi\.(?:executor|rate_limiter|hook|worker_pool|config)\.[a-z_.]*)"')


def test_every_event_emitted_is_declared() -> None:
    """The event names written at the emit sites (the compiled core cannot import telemetry.py,
    so they are literals there) are the ones telemetry.py declares: a misspelt name is an event
    no handler could ever attach to. A literal ending in "." is a prefix the site completes."""
    sites = [p for p in SRC.rglob("*") if p.suffix in (".py", ".pyx") and p.name != "telemetry.py"]
    found = {(p.relative_to(SRC).as_posix(), name) for p in sites for name in EMITTED.findall(p.read_text())}
    assert len(found) > 10, found  # the sites are where this test looks for them
    undeclared = sorted(
        (where, name)
        for where, name in found
        if (
            not any(e.startswith(name) for e in telemetry.EVENTS)
            if name.endswith(".")
            else name not in telemetry.EVENTS
        )
    )
    assert not undeclared, undeclared


def test_request_events_fast_and_general_path(gw: GatewayProcess) -> None:
    async def main() -> None:
        c = await Client.connect(gw.url)
        await c.join("api:t")
        await events(c)
        await c.call("t", "echo", {"text": "hi"})  # the compiled inline path
        await c.call("t", "hooked", {"text": "hi"})  # the general path: hooks, async
        await c.call("t", "bfail", {"text": "x"}, raise_on_error=False)
        await c.call("t", "pboom", raise_on_error=False)
        evs = await events(c)
        for _ in range(50):  # an async call's stop comes once its Task ends, just after its push
            if len(keys(evs, "genapi.executor.request.stop")) >= 4:
                break
            await asyncio.sleep(0.02)
            evs += await events(c)
        starts = keys(evs, "genapi.executor.request.start")
        stops = keys(evs, "genapi.executor.request.stop")
        assert len(starts) == 4 and len(stops) == 4
        assert starts[0]["measurements"] == ["system_time"]
        assert starts[0]["metadata"] == ["request_id", "request_type", "service", "user_id"]
        assert stops[0]["measurements"] == ["duration_us"]
        assert {"request_id", "request_type", "service", "user_id", "success", "async"} <= set(stops[0]["metadata"])
        assert [s["success"] for s in stops].count(True) == 2 and stops[0]["config"] == {"tag": 1}
        before_exc = keys(evs, "genapi.hook.before.exception")
        assert before_exc and before_exc[0]["measurements"] == ["duration_us"] and before_exc[0]["kind"] == "error"
        task_exc = keys(evs, "genapi.worker_pool.task.exception")
        assert task_exc and {"pool_name", "kind", "reason"} <= set(task_exc[0]["metadata"])
        for kind in ("before", "after"):
            assert keys(evs, f"genapi.hook.{kind}.start")[0]["metadata"] == ["function", "module", "type"]
        assert keys(evs, "genapi.hook.before.stop")[0]["measurements"] == ["duration_us"]
        exc = keys(evs, "genapi.hook.after.exception")  # testapi:after_raise raises
        assert exc and exc[0]["kind"] == "error" and {"reason", "kind"} <= set(exc[0]["metadata"])
        await c.close()

    asyncio.run(main())


def test_a_failing_handler_is_detached_and_the_request_unaffected(gw: GatewayProcess) -> None:
    async def main() -> None:
        c = await Client.connect(gw.url)
        await c.join("api:t")
        for _ in range(3):
            resp = await c.call("t", "echo", {"text": "ok"})
            assert resp is not None and resp.result == {"text": "ok", "n": 1}
        resp = await c.call("probe", "attached", {"event": "genapi.executor.request.stop"})
        assert resp is not None and resp.result is True  # the probe's handler stays
        resp = await c.call("probe", "attached", {"event": "genapi.executor.request.start"})
        assert resp is not None and resp.result is True  # the probe's, not the slow one's any more
        await c.close()

    asyncio.run(main())
    err = gw.read_stderr()
    assert "telemetry_handler_detached" in err and "handler bug" in err
    assert "handler_id=slow" in err and "over the 50 ms a handler may take" in err


def test_rate_limiter_retry_and_pool_events(gw: GatewayProcess) -> None:
    async def main() -> None:
        c = await Client.connect(gw.url)
        await c.join("api:t")
        await events(c)
        await c.call("t", "limited", {"text": "1"}, raise_on_error=False)
        await c.call("t", "limited", {"text": "2"}, raise_on_error=False)
        resp = await c.call("t", "flaky", {"text": "x"}, raise_on_error=False)
        assert resp is not None and not resp.success
        blockers = [asyncio.ensure_future(c.call("t", "block", {"ms": 300}, raise_on_error=False)) for _ in range(4)]
        outs = await asyncio.gather(*blockers)
        assert any(o is not None and o.can_retry for o in outs)  # the one-thread pool refused some
        evs = await events(c)
        checks = keys(evs, "genapi.rate_limiter.check")
        assert checks and checks[0]["measurements"] == ["duration_us"]
        exceeded = keys(evs, "genapi.rate_limiter.exceeded")
        assert len(exceeded) == 1 and exceeded[0]["measurements"] == ["retry_after_ms"]
        assert {"key", "scope", "max_requests", "request_id", "user_id"} <= set(exceeded[0]["metadata"])
        retries = keys(evs, "genapi.executor.retry")
        assert len(retries) == 2 and retries[0]["measurements"] == ["attempt"]
        exhausted = keys(evs, "genapi.executor.retry.exhausted")
        assert len(exhausted) == 1 and {"request_id", "mode", "last_error"} <= set(exhausted[0]["metadata"])
        assert keys(evs, "genapi.worker_pool.task.start")[0]["measurements"] == ["system_time"]
        stop = keys(evs, "genapi.worker_pool.task.stop")
        assert stop and stop[0]["measurements"] == ["duration_us"] and stop[0]["metadata"] == ["pool_name"]
        rejected = keys(evs, "genapi.worker_pool.task.rejected")
        assert rejected and {"pool_name", "reason"} <= set(rejected[0]["metadata"])
        await c.close()
        with urllib.request.urlopen(f"http://{gw.host}:{gw.port}/metrics", timeout=5) as r:
            assert re.search(r"^genapi_rate_limited_total 1$", r.read().decode(), re.M)

    asyncio.run(main())


def test_config_events_on_push_and_reset(gw: GatewayProcess) -> None:
    async def main() -> None:
        c = await Client.connect(gw.url)
        await c.join("api:t")
        await events(c)
        message = {
            "service": "pushed",
            "config_version": "1",
            "nodes": ["127.0.0.1:1"],
            "fun_configs": [{"request_type": "a", "mfa": "m:f", "nodes": ["127.0.0.1:1"]}],
        }
        assert (await asyncio.to_thread(control, gw.control, "$push", [message]))["status"] == "accepted"
        await asyncio.to_thread(control, gw.control, "$rl_reset", ["ip_address", "127.0.0.1"])
        resp = await c.call("probe", "events", {"clear": True})
        assert resp is not None
        evs = resp.result
        push = keys(evs, "genapi.config.push")
        assert push and push[0]["measurements"] == ["count"] and push[0]["metadata"] == ["service", "version"]
        assert any(e["metadata"] == ["request_type", "service", "version"] for e in keys(evs, "genapi.config.add"))
        reset = keys(evs, "genapi.rate_limiter.reset")
        assert reset and {"key", "rate_limit_key"} <= set(reset[0]["metadata"])
        await c.close()

    asyncio.run(main())


def test_breaker_pull_and_registry_events(gw: GatewayProcess) -> None:
    async def main() -> None:
        c = await Client.connect(gw.url)
        await c.join("api:t")
        await events(c)
        resp = await c.call("t", "down", raise_on_error=False)  # nothing listens there: its breaker opens
        assert resp is not None and not resp.success
        for op in ("$fn_disable", "$fn_enable", "$fn_delete"):
            await asyncio.to_thread(control, gw.control, op, ["t", "spare", None])
        evs: list[dict[str, Any]] = []
        for _ in range(100):  # the pulls of [[services]] ghost come every 100 ms (then backing off)
            evs += (await c.call("probe", "events", {"clear": True})).result  # type: ignore[union-attr]
            if keys(evs, "genapi.config.pull.stop"):
                break
            await asyncio.sleep(0.05)
        opened = keys(evs, "genapi.worker_pool.circuit_breaker.open")
        assert opened and opened[0]["measurements"] == ["consecutive_failures"]
        assert opened[0]["metadata"] == ["pool_name"]
        for name in ("disable", "enable", "delete"):
            got = keys(evs, f"genapi.config.{name}")
            assert got and got[0]["metadata"] == ["request_type", "service", "version"], name
        start = keys(evs, "genapi.config.pull.start")
        stop = keys(evs, "genapi.config.pull.stop")
        assert start and start[0]["measurements"] == ["system_time"] and start[0]["metadata"] == ["service"]
        assert stop and stop[0]["measurements"] == ["count", "duration_us"]
        assert stop[0]["metadata"] == ["service", "version"]
        await c.close()

    asyncio.run(main())
