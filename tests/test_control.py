"""The control port as one surface: every verb through `ControlClient` against a real gateway
(one worker: the control plane in the worker), an unknown verb, refusals, and the cluster secret."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from genapi.host.control_client import ControlClient
from genapi.nodes import rpc
from support.configs import PID_CONFIG
from support.gateway_proc import GatewayProcess

CONFIG = (
    PID_CONFIG
    + """
[rate_limiter]
[[rate_limiter.global_limits]]
key = "user_id"
max_requests = 100
window_ms = 60000
"""
)

PUSH = {
    "service": "ctl",
    "config_version": "1",
    "nodes": ["127.0.0.1:9"],
    "fun_configs": [
        {"request_type": "echo", "mfa": "ctlnode:echo", "arg_types": {"text": "string"}, "version": "1.0.0"}
    ],
}


@pytest.fixture(scope="module")
def gw():
    g = GatewayProcess(CONFIG)
    yield g
    assert g.stop() == 0


def ask(gw: GatewayProcess, fn: Any, secret: str | None = None) -> Any:
    """`fn(client)` over one ControlClient connection to `gw`'s control port."""

    async def go() -> Any:
        async with ControlClient(gw.control, secret, name="test") as client:
            return await fn(client)

    return asyncio.run(go())


def test_config_sync_verbs(gw: GatewayProcess) -> None:
    assert ask(gw, lambda c: c.verify("ctl", "1")) == {"status": "not_found"}
    assert ask(gw, lambda c: c.push(PUSH)) == {"status": "accepted", "functions": 1}
    assert ask(gw, lambda c: c.push(PUSH)) == {"status": "skipped", "reason": "version_matches"}
    assert ask(gw, lambda c: c.push(PUSH, True))["status"] == "accepted"
    assert ask(gw, lambda c: c.verify("ctl", "1")) == {"status": "matched"}
    assert ask(gw, lambda c: c.verify("ctl", "0")) == {"status": "mismatch", "version": "1"}
    pushed = ask(gw, lambda c: c.pushed())["ctl"]
    assert pushed["config_version"] == "1" and pushed["nodes"] == ["127.0.0.1:9"]
    assert pushed["functions"] == ["echo@1.0.0"] and pushed["source"] == "push"
    functions = ask(gw, lambda c: c.functions())
    echo = next(f for f in functions if f["service"] == "ctl")
    assert echo["request_type"] == "echo" and echo["nodes"] == ["127.0.0.1:9"]


def test_gateway_and_registry_verbs(gw: GatewayProcess) -> None:
    assert ask(gw, lambda c: c.ping()) == "pong"
    status = ask(gw, lambda c: c.status())
    assert status["pid"] == gw.pid and [w["pid"] for w in status["workers"]] == [gw.pid]
    for node in ask(gw, lambda c: c.nodes()):  # the pushed service's node, when pushed first
        assert node["address"] == "127.0.0.1:9" and node["workers"][0]["pid"] == gw.pid
    done = ask(gw, lambda c: c.fn_disable("w", "pid"))
    assert done == {"status": "disabled", "service": "w", "request_type": "pid", "versions": [None]}
    assert next(f for f in ask(gw, lambda c: c.functions()) if f["request_type"] == "pid")["disabled"] is True
    assert ask(gw, lambda c: c.fn_enable("w", "pid"))["status"] == "enabled"
    assert next(f for f in ask(gw, lambda c: c.functions()) if f["request_type"] == "pid")["disabled"] is False
    with pytest.raises(rpc.RpcError) as exc:
        ask(gw, lambda c: c.fn_delete("w", "nope"))
    assert exc.value.code == rpc.REFUSED and exc.value.text == "no function w.nope to delete"


def test_relay_verb(gw: GatewayProcess) -> None:
    async def go(c: ControlClient) -> tuple[Any, Any, Any]:
        made = await c.relay("create_group", {"group_id": "ctl-g", "group_type": "public", "user_id": "system"})
        again = await c.relay("create_group", {"group_id": "ctl-g", "group_type": "public", "user_id": "system"})
        gone = await c.relay("delete_group", {"group_id": "ctl-g"})
        return made, again, gone

    made, again, gone = ask(gw, go)
    assert made["roles"] == ["admin"]
    assert again["error"] == "already_exists" and again["text"]  # a rule's refusal is an answer
    assert gone == {"group_id": "ctl-g", "status": "deleted"}


def test_rate_limit_verbs(gw: GatewayProcess) -> None:
    assert ask(gw, lambda c: c.rl_config())["global_limits"][0]["key"] == "user_id"
    [row] = ask(gw, lambda c: c.rl_status("user_id", "alice"))
    assert row["used"] == 0 and row["max_requests"] == 100
    assert ask(gw, lambda c: c.rl_reset("user_id", "alice")) == {"freed": 0}
    added = ask(gw, lambda c: c.rl_global_add({"key": "device_id", "max_requests": 5, "window_ms": 1000}))
    assert {lim["key"] for lim in added["config"]["global_limits"]} == {"user_id", "device_id"}
    removed = ask(gw, lambda c: c.rl_global_remove("device_id"))
    assert [lim["key"] for lim in removed["config"]["global_limits"]] == ["user_id"]
    config = ask(gw, lambda c: c.rl_config())
    assert ask(gw, lambda c: c.rl_update(config))["config"] == config


def test_unknown_verb_and_refusals(gw: GatewayProcess) -> None:
    with pytest.raises(rpc.RpcError) as exc:
        ask(gw, lambda c: c.request("$nope", []))
    assert exc.value.code == rpc.UNKNOWN and exc.value.text == "no control request '$nope'"
    with pytest.raises(rpc.RpcError) as exc:
        ask(gw, lambda c: c.request("$verify", []))
    assert exc.value.code == rpc.REFUSED and exc.value.text.startswith("bad arguments for $verify: TypeError")
    with pytest.raises(rpc.RpcError) as exc:
        ask(gw, lambda c: c.push({"service": "x"}))
    assert exc.value.code == rpc.REFUSED and exc.value.text.startswith("push: ")
    assert ask(gw, lambda c: c.ping()) == "pong"  # the port goes on


def test_the_cluster_secret() -> None:
    with GatewayProcess(PID_CONFIG, env={"GENAPI_CLUSTER_SECRET": "s3cret-0123456789abcdef0123456789abcdef"}) as g:
        assert ask(g, lambda c: c.ping(), secret="s3cret-0123456789abcdef0123456789abcdef") == "pong"
        assert ask(g, lambda c: c.ping(), secret=b"s3cret-0123456789abcdef0123456789abcdef") == "pong"
        with pytest.raises(rpc.RpcError) as exc:
            ask(g, lambda c: c.ping(), secret="wrong")
        assert exc.value.code == rpc.AUTH_FAILED and exc.value.text == "wrong cluster secret (or none) from the peer"
