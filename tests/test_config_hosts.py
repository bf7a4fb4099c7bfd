"""Configs on every host (`[engine] type = "redis"`, issue 25 item 5): a real redis-server, real
gateway hosts (one with two workers) and a real service node pushing to ONE host. Every other
host serves what it pushed; an older config_version is refused and `force` wins; a host started
later gets the configs from Redis; a host whose pub/sub was killed still converges; a push while
Redis is down is refused naming Redis (the hosts go on serving what they hold); a pulled service
is pulled by one host at a time."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from genapi.client import Client
from genapi.engine.shared_configs import STORE
from genapi.nodes import rpc
from support.gateway_proc import GatewayProcess, wait_until
from support.node_proc import NodeProcess, control
from support.redis_proc import RedisProcess

CONFIG = """
[gateway]
log_level = "{log_level}"

[auth]
require_verified_user_id = false

[engine]
type = "redis"
url = "{url}"
prefix = "{prefix}"
connect_timeout_ms = 500
command_timeout_ms = 2000
host_id = "{host_id}"

[cluster]
pull_interval_ms = {pull}
{extra}
"""
CONVERGE_S = 20.0  # generous for a loaded 2-core machine; the benchmark measures the real figure


def host(redis: RedisProcess, host_id: str, workers: int = 1, pull: int = 30000, extra: str = "", **kw: Any) -> Any:
    config = CONFIG.format(
        url=redis.url,
        prefix=kw.pop("prefix", f"t{os.getpid()}"),
        host_id=host_id,
        pull=pull,
        extra=extra,
        log_level=kw.pop("log_level", "warning"),
    )
    return GatewayProcess(config, extra_args=["--workers", str(workers)] if workers > 1 else None)


async def _call(gw: GatewayProcess, service: str, rt: str, args: dict[str, Any]) -> Any:
    c = await Client.connect(gw.url)
    try:
        await c.join("api:t")
        return await c.call(service, rt, args, topic="api:t", raise_on_error=False)
    finally:
        await c.close()


def call(gw: GatewayProcess, service: str = "inv", rt: str = "echo", args: dict[str, Any] | None = None) -> Any:
    return asyncio.run(_call(gw, service, rt, args if args is not None else {"text": "hi"}))


def serves(gw: GatewayProcess, service: str, version: str) -> bool:
    state = control(gw.control, "$pushed").get(service)
    return state is not None and state["config_version"] == version


def wait_serves(gws: list[GatewayProcess], service: str, version: str, timeout: float = CONVERGE_S) -> None:
    for gw in gws:
        assert wait_until(lambda gw=gw: serves(gw, service, version), timeout), (
            f"{gw.control} does not serve {service} {version}: {control(gw.control, '$pushed').get(service)}"
        )


def renamed(config: dict[str, Any], service: str, version: str) -> dict[str, Any]:
    """The node's push config as another service at another config_version."""
    out = copy.deepcopy(config)
    out["service"], out["config_version"] = service, version
    for f in out["fun_configs"]:
        if "service" in f:
            f["service"] = service
    return out


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "genapi", *args], capture_output=True, text=True, timeout=60, env={**os.environ}
    )


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisProcess]:
    with RedisProcess() as server:
        yield server


@pytest.fixture(scope="module")
def hosts(redis: RedisProcess) -> Iterator[tuple[GatewayProcess, GatewayProcess, NodeProcess]]:
    """Host A (two workers) and host B; a node pushing to A only."""
    a = host(redis, "host-a", workers=2)
    b = c = None
    try:
        b = host(redis, "host-b")
        c = NodeProcess([a.control], name="n1")
        yield a, b, c
    finally:
        for p in (c, b, a):
            if p is not None:
                p.stop()


def test_a_push_to_one_host_is_served_by_every_host(hosts: Any) -> None:
    a, b, node = hosts
    wait_serves([a, b], "inv", "1.0.0")
    assert wait_until(lambda: call(b).success, CONVERGE_S), call(b)
    r = call(b)
    assert r.result == {"text": "hi", "n": 1, "node": "n1"}
    for _ in range(4):  # over A's two workers
        assert call(a).result["node"] == "n1"
    state = control(b.control, "$pushed")["inv"]
    assert state["nodes"] == [node.address] and state["source"] == "push"


def test_an_older_version_is_refused_and_force_wins(hosts: Any) -> None:
    a, b, node = hosts
    config = control(node.address, "$config")
    first = control(b.control, "$push", [renamed(config, "v2", "2.0.0")])
    assert first["status"] == "accepted" and first["functions"] == len(config["fun_configs"])
    assert first["hosts"] == 2 and 1 <= first["acknowledged"] <= 2, first  # the live hosts, and those serving it
    assert set(first["not_acknowledged"]) <= {"host-a"}
    wait_serves([a, b], "v2", "2.0.0")
    assert wait_until(lambda: call(a, "v2").success, CONVERGE_S)
    for _ in range(4):  # over A's two workers
        assert call(a, "v2").success

    with pytest.raises(rpc.RpcError) as e:  # an older version, to the other host: refused
        control(a.control, "$push", [renamed(config, "v2", "1.9.9")])
    assert e.value.code == rpc.REFUSED
    assert "config_version 1.9.9 is older than 2.0.0" in e.value.text and "Redis" in e.value.text
    assert control(a.control, "$push", [renamed(config, "v2", "2.0.0")])["status"] == "skipped"
    assert control(a.control, "$push", [renamed(config, "v2", "2.0.10")])["status"] == "accepted"  # 10 > 9
    wait_serves([a, b], "v2", "2.0.10")

    forced = control(a.control, "$push", [renamed(config, "v2", "1.0.0"), True])
    assert forced["status"] == "accepted"
    wait_serves([a, b], "v2", "1.0.0")  # force wins, on every host

    shown = cli("admin", "hosts", "--control", b.control)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    for h in ("host-a", "host-b"):
        row = next(ln for ln in lines if ln.strip().startswith(f"{h} (alive)"))
        assert "v2 1.0.0" in row and "inv 1.0.0" in row, shown.stdout
    assert "v2: 1.0.0 stored by host-a (push)" in shown.stdout


def test_a_host_started_later_gets_the_configs_from_redis(hosts: Any, redis: RedisProcess) -> None:
    a, _b, _node = hosts
    with host(redis, "host-c") as c:
        wait_serves([c], "inv", "1.0.0")
        assert wait_until(lambda: call(c).success, CONVERGE_S)
        assert call(c).result["node"] == "n1"
        view = control(a.control, "$pushed_hosts")
        assert {h["host_id"] for h in view["hosts"] if h["alive"]} == {"host-a", "host-b", "host-c"}


def test_a_killed_subscription_still_converges(hosts: Any, redis: RedisProcess) -> None:
    a, b, node = hosts
    config = control(node.address, "$config")
    r = redis.client()
    assert wait_until(lambda: len(r.client_list(_type="pubsub")) >= 2, CONVERGE_S)
    assert r.client_kill_filter(_type="pubsub") >= 2
    control(a.control, "$push", [renamed(config, "v3", "1.0.0")])  # announced while B may not listen
    wait_serves([a, b], "v3", "1.0.0")
    assert wait_until(lambda: call(b, "v3").success, CONVERGE_S)


def test_a_lost_announcement_is_caught_up_by_the_periodic_reread(hosts: Any, redis: RedisProcess) -> None:
    """A record stored in Redis whose announcement nobody hears (published on another channel):
    every host still serves it, from its periodic re-read of the stamps."""
    a, b, node = hosts
    message = renamed(control(node.address, "$config"), "v3", "2.0.0")
    got = _store(redis, message, "nobody-listens")
    assert got[0] == b"stored"
    wait_serves([a, b], "v3", "2.0.0")


def test_what_redis_holds_is_checked_again_by_every_host(hosts: Any, redis: RedisProcess) -> None:
    """A record put into Redis that no host would have accepted as a push (a hook in a module
    outside allowed_modules): every host refuses it, serves nothing of it, and says so."""
    a, b, node = hosts
    message = renamed(control(node.address, "$config"), "evil", "1.0.0")
    for f in message["fun_configs"]:
        f["before_execute"] = "os:system"
    got = _store(redis, message, "evil-channel")
    assert got[0] == b"stored"

    def refused_everywhere() -> bool:
        serves = {h["host_id"]: h["serves"].get("evil") for h in control(a.control, "$pushed_hosts")["hosts"]}
        return all(serves.get(h) and serves[h]["error"] for h in ("host-a", "host-b"))

    assert wait_until(refused_everywhere, CONVERGE_S), control(a.control, "$pushed_hosts")
    for h in control(a.control, "$pushed_hosts")["hosts"]:
        if h["host_id"] in ("host-a", "host-b"):
            assert "os" in h["serves"]["evil"]["error"] and "allowed_modules" in h["serves"]["evil"]["error"]
    for gw in (a, b):
        assert "evil" not in control(gw.control, "$pushed")
        assert not any(f["service"] == "evil" for f in control(gw.control, "$functions"))
        assert "config_from_redis_refused service=evil" in gw.read_stderr()


def _store(redis: RedisProcess, message: dict[str, Any], channel: str, prefix: str | None = None) -> Any:
    """Stores `message` in Redis as a host would (the engine's own script), announced on `channel`."""
    tag = "{" + (prefix or f"t{os.getpid()}") + ":configs}"
    service = message["service"]
    return redis.client().register_script(STORE)(
        keys=[f"{tag}:rec:{service}", f"{tag}:index", f"{tag}:stamp"],
        args=[
            service,
            message["config_version"],
            "0",
            json.dumps(message["nodes"]),
            json.dumps(message["fun_configs"]),
            "test",
            "push",
            channel,
        ],
    )


def test_a_push_while_redis_is_down_is_refused_naming_redis(hosts: Any, redis: RedisProcess) -> None:
    a, b, node = hosts
    config = control(node.address, "$config")
    wait_serves([a, b], "inv", "1.0.0")
    redis.stop(signal.SIGKILL)
    try:
        with pytest.raises(rpc.RpcError) as e:
            control(a.control, "$push", [renamed(config, "v4", "1.0.0")])
        assert e.value.code == rpc.REFUSED
        assert "the config store (Redis at redis://127.0.0.1:" in e.value.text
        assert "nothing was applied on any host" in e.value.text
        assert "v4" not in control(a.control, "$pushed")  # nothing applied here either
        assert call(b).success and call(a).success  # what the hosts hold, they go on serving
    finally:
        redis.start()
    # Redis is back (empty: it persists nothing): the same push again lands on every host
    assert wait_until(lambda: _pushed(a, renamed(config, "v4", "1.0.0")), CONVERGE_S)
    wait_serves([a, b], "v4", "1.0.0")
    assert wait_until(lambda: call(b, "v4").success, CONVERGE_S)


def _pushed(gw: GatewayProcess, message: dict[str, Any]) -> bool:
    try:
        return control(gw.control, "$push", [message])["status"] == "accepted"
    except rpc.RpcError:
        return False


def pulls(gw: GatewayProcess) -> int:
    """The pulls of inv this host made (its log, at debug)."""
    return gw.read_stderr().count("config_pulled service=inv ")


def test_a_pulled_service_is_pulled_by_one_host(redis: RedisProcess) -> None:
    node = NodeProcess([], name="p1")  # pushes to no gateway: the hosts pull it
    extra = f'[[services]]\nservice = "inv"\nnodes = ["{node.address}"]\n'
    prefix = f"p{os.getpid()}"
    hs: list[GatewayProcess] = []
    try:
        for name in ("pull-a", "pull-b"):
            hs.append(host(redis, name, pull=200, extra=extra, prefix=prefix, log_level="debug"))
        wait_serves(hs, "inv", "1.0.0")
        assert wait_until(lambda: max(pulls(h) for h in hs) >= 5, CONVERGE_S)  # several rounds
        counts = [pulls(h) for h in hs]
        assert sorted(counts)[0] == 0, counts  # one host pulls; the other never did
        holder = redis.client().get("{" + prefix + ":configs}:puller:inv").decode()
        puller = hs[counts.index(max(counts))]
        assert holder == ("pull-a", "pull-b")[hs.index(puller)]
        other = hs[1 - hs.index(puller)]
        # a newer version pushed by hand: the puller, whose node still says 1.0.0, is fenced by
        # the version check (its pull refused and recorded), never taking the hosts back
        newer = renamed(control(node.address, "$config"), "inv", "2.0.0")
        assert control(other.control, "$push", [newer])["status"] == "accepted"
        wait_serves(hs, "inv", "2.0.0")
        assert wait_until(lambda: puller.read_stderr().count("config_pull_failed service=inv ") >= 2, CONVERGE_S)
        for h in hs:
            assert control(h.control, "$pushed")["inv"]["config_version"] == "2.0.0"
        state = control(puller.control, "$pushed")["inv"]
        assert state["pull_failures"] >= 1 and "config_version 1.0.0 is older than 2.0.0" in state["last_error"]
        puller.stop()  # its lease released: the other host pulls from now on (fenced too)
        assert wait_until(lambda: other.read_stderr().count("config_pull_failed service=inv ") >= 2, CONVERGE_S)
        assert control(other.control, "$pushed")["inv"]["config_version"] == "2.0.0"
        assert call(other).success
    finally:
        for h in hs:
            if h.alive():
                h.stop()
        node.stop()


def test_one_host_alone_shares_nothing() -> None:
    with GatewayProcess(CONFIG.split("[engine]")[0].format(log_level="warning")) as gw:
        assert control(gw.control, "$pushed_hosts") is None
        shown = cli("admin", "hosts", "--control", gw.control)
        assert shown.returncode == 0 and 'configs are not shared ([engine] type = "memory")' in shown.stdout
        assert json.loads(cli("admin", "pushed", "--json", "--control", gw.control).stdout) == {}
