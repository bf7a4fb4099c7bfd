"""GET /metrics after traffic that moves every series the README lists (test_health.py checks the
sums over workers and /ready): calls ok and failing, a rate-limit refusal, node calls (one in
flight, one node whose breaker opened), requests in flight and queued, relay groups, members,
messages, deliveries and drops, an aborted client, connections and joins, a worker restart; each
series present with the value the traffic implies. And `[gateway] metrics = false`. Real gateways
(`--workers 2` and one worker), a real service node, real sockets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from genapi.client import Client
from genapi.errors import ERROR_KINDS
from support.gateway_proc import GatewayProcess, children, free_port, wait_until
from support.node_proc import NodeProcess
from support.sockclient import SockClient

# Every series README "Operating it: health, metrics, telemetry, traces" lists, with its type.
DOCUMENTED = {
    "genapi_requests_total": "counter",
    "genapi_request_duration_seconds": "histogram",
    "genapi_errors_total": "counter",
    "genapi_connections": "gauge",
    "genapi_channels": "gauge",
    "genapi_in_flight": "gauge",
    "genapi_queued": "gauge",
    "genapi_accepted_total": "counter",
    "genapi_joins_total": "counter",
    "genapi_aborted_total": "counter",
    "genapi_rate_limited_total": "counter",
    "genapi_node_in_flight": "gauge",
    "genapi_node_breaker_open": "gauge",
    "genapi_relay_groups": "gauge",
    "genapi_relay_members": "gauge",
    "genapi_relay_messages_total": "counter",
    "genapi_relay_delivered_total": "counter",
    "genapi_relay_dropped_total": "counter",
    "genapi_worker_config_generation": "gauge",
    "genapi_config_generation": "gauge",
    "genapi_workers": "gauge",
    "genapi_worker_restarts_total": "counter",
}

CONFIG = """
[gateway]
max_in_flight = 1
max_unsent_bytes = 1000000
drain_timeout_ms = 300000  # the non-reading relay member is not aborted while the test looks at it
idle_timeout_ms = 300000

[auth]
callback = "testapi:auth_callback"
require_verified_user_id = false

[cluster]
breaker_threshold = 1
breaker_cooldown_ms = 300000

[relay]
service = "chat"

[rate_limiter]
[[rate_limiter.api_limits]]
service = "w"
request_type = "keyed"
key = "text"
max_requests = 1
window_ms = 60000

[[functions]]
service = "w"
request_type = "pid"
mfa = "testapi:pid"

[[functions]]
service = "w"
request_type = "keyed"
mfa = "testapi:echo"
arg_types = {{ text = "string" }}

[[functions]]
service = "t"
request_type = "boom"
mfa = "testapi:boom"
arg_types = {{ text = "string" }}

[[functions]]
service = "t"
request_type = "sleep"
mfa = "testapi:sleep"
arg_types = {{ ms = "num" }}
timeout = 120000

[[functions]]
service = "t"
request_type = "big"
mfa = "testapi:big"
arg_types = {{ n = "num" }}

[[functions]]
service = "n"
request_type = "slow"
mfa = "nodeapp:slow"
nodes = ["{node}"]
arg_types = {{ ms = "num" }}
timeout = 120000

[[functions]]
service = "n"
request_type = "dead"
mfa = "nodeapp:where"
nodes = ["{dead}"]
arg_types = {{ key = "string" }}
"""

TOPIC = "room:1"
WAIT = 30.0  # generous: a loaded 2-core machine


def get(gw: GatewayProcess, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://{gw.host}:{gw.port}{path}", timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def scrape(gw: GatewayProcess) -> dict[str, float]:
    """Every sample of /metrics by its name and labels as rendered (`name{a="x",b="y"}`)."""
    status, ctype, text = get(gw, "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4"), (status, text)
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            assert key not in out, f"{key} twice"
            out[key] = float(value)
    return out


def series(name: str, **labels: str) -> str:
    return name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")


def req(name: str, service: str, rt: str, outcome: str) -> str:
    return series(name, service=service, request_type=rt, outcome=outcome)


async def until(gw: GatewayProcess, pred: Callable[[dict[str, float]], bool], what: str) -> dict[str, float]:
    """Scrapes until `pred` holds (a gauge or a counter the host updates after answering)."""
    end = time.monotonic() + WAIT
    while True:
        m = await asyncio.to_thread(scrape, gw)
        if pred(m):
            return m
        if time.monotonic() > end:
            gauges = {k: v for k, v in m.items() if not k.startswith("genapi_request")}
            raise AssertionError(f"{what}: not reached in {WAIT} s; last scrape (requests left out): {gauges}")
        await asyncio.sleep(0.05)


async def user(gw: GatewayProcess, name: str) -> Client:
    c = await Client.connect(gw.url, params={"token": "let-me-in", "user": name})
    await c.join(TOPIC)
    return c


def raw_member(gw: GatewayProcess, name: str, group_id: str) -> SockClient:
    """A member on a plain socket with a small receive buffer that joins `group_id` and then stops reading."""
    c = SockClient(
        gw.host, gw.port, path=f"/socket/websocket?vsn=2.0.0&token=let-me-in&user={name}", rcvbuf=4096, timeout=WAIT
    )
    c.send(["1", "1", TOPIC, "phx_join", {}])
    assert c.recv()[4]["status"] == "ok"
    request = {"request_id": "j", "service": "chat", "request_type": "join_group", "args": {"group_id": group_id}}
    c.send(["1", "2", TOPIC, "phoenix_gen_api", request])
    while True:  # the push with the answer (the reply to the frame comes too, in either order)
        msg = c.recv()
        if msg[3] == "phoenix_gen_api":
            assert msg[4]["success"] is True, msg
            return c


@pytest.mark.parametrize("workers", [2, 1])
def test_every_documented_series_counts_the_traffic(workers: int) -> None:
    node_address = f"127.0.0.1:{free_port()}"
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there: its breaker opens (threshold 1)
    with NodeProcess([], name="m", listen=node_address) as node:
        gw = GatewayProcess(CONFIG.format(node=node.address, dead=dead), extra_args=["--workers", str(workers)])
        try:
            restarts = 0
            if workers > 1:  # a worker dies before any traffic (its counters go with it) and is restarted
                before = children(gw.pid)
                os.kill(min(before), signal.SIGKILL)
                assert wait_until(lambda: len(children(gw.pid)) == workers and children(gw.pid) != before, WAIT)
                assert wait_until(lambda: get(gw, "/ready")[0] == 200, WAIT)
                restarts = 1
            asyncio.run(traffic(gw, workers, node.address, dead, restarts))
        finally:
            assert gw.stop() == 0


async def traffic(gw: GatewayProcess, workers: int, node: str, dead: str, restarts: int) -> None:
    accepted = joins = 0
    alice, bob, carol = [await user(gw, n) for n in ("alice", "bob", "carol")]
    accepted += 3
    joins += 3

    async def call(c: Client, service: str, rt: str, args: dict[str, Any] | None = None) -> Any:
        return await c.call(service, rt, args, topic=TOPIC, raise_on_error=False, timeout=WAIT)

    assert [(await call(alice, "w", "pid")).success for _ in range(3)] == [True] * 3
    assert [(await call(alice, "t", "boom", {"text": "x"})).success for _ in range(2)] == [False] * 2
    first, second = [await call(alice, "w", "keyed", {"text": "k"}) for _ in range(2)]
    assert first.success and not second.success and second.error.startswith("Rate limit exceeded")
    assert (await call(alice, "n", "slow", {"ms": 1})).result == {"slept": 1, "node": "m"}
    assert not (await call(alice, "n", "dead", {"key": ""})).success  # on one worker: its breaker opens

    # relay: two groups, four members; every member reads, then one stops reading
    assert (await call(alice, "chat", "create_group", {"group_id": "g", "group_type": "public"})).success
    assert (await call(bob, "chat", "join_group", {"group_id": "g"})).success
    assert (await call(carol, "chat", "join_group", {"group_id": "g"})).success
    assert (await call(bob, "chat", "create_group", {"group_id": "g2", "group_type": "public"})).success
    recipients = 0
    for i in range(2):
        r = await call(alice, "chat", "handle_relay", {"group_id": "g", "message": f"m{i}"})
        assert r.result == {"status": "relayed", "recipients_count": 3}
        recipients += 3
    m = await until(gw, lambda m: m["genapi_relay_delivered_total"] == 6, "deliveries")
    assert (m["genapi_relay_groups"], m["genapi_relay_members"], m["genapi_relay_messages_total"]) == (2, 4, 2)
    assert m["genapi_relay_dropped_total"] == 0
    slow = await asyncio.to_thread(raw_member, gw, "slow", "g")
    accepted += 1
    joins += 1
    big = "x" * 2900
    relayed = 2
    while "relay_member_slow" not in gw.read_stderr():  # until the non-reader's output is backed up
        assert relayed < 20000, "the member that does not read never backed up"
        got = await asyncio.gather(
            *(call(alice, "chat", "handle_relay", {"group_id": "g", "message": f"{i} {big}"}) for i in range(50))
        )
        assert all(r.result == {"status": "relayed", "recipients_count": 4} for r in got)
        relayed += 50
        recipients += 200
    m = await until(
        gw,
        lambda m: m["genapi_relay_delivered_total"] + m["genapi_relay_dropped_total"] == recipients,
        "every relayed message delivered or dropped",
    )
    assert m["genapi_relay_messages_total"] == relayed and m["genapi_relay_dropped_total"] >= 1
    assert (m["genapi_relay_groups"], m["genapi_relay_members"]) == (2, 5)
    slow.close()  # its member leaves with its connection
    await until(gw, lambda m: m["genapi_relay_members"] == 4 and m["genapi_connections"] == 3, "slow member gone")

    # requests in flight and queued: one connection (max_in_flight = 1) with two sleeps, another
    # with a node call that does not end
    sleeper, waiter = await user(gw, "sleeper"), await user(gw, "waiter")
    accepted += 2
    joins += 2
    pending = [
        asyncio.ensure_future(call(sleeper, "t", "sleep", {"ms": 100000})),
        asyncio.ensure_future(call(sleeper, "t", "sleep", {"ms": 100000})),
        asyncio.ensure_future(call(waiter, "n", "slow", {"ms": 100000})),
    ]
    m = await until(
        gw,
        lambda m: (
            (m["genapi_in_flight"], m["genapi_queued"], m.get(series("genapi_node_in_flight", node=node))) == (2, 1, 1)
        ),
        "two in flight (one of them at the node), one queued",
    )
    await asyncio.gather(sleeper.close(), waiter.close())
    for p in pending:
        p.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await until(
        gw,
        lambda m: (
            (m["genapi_in_flight"], m["genapi_queued"], m[series("genapi_node_in_flight", node=node)]) == (0, 0, 0)
            and m["genapi_connections"] == 3
        ),
        "nothing in flight once they left",
    )

    # a client that does not read answers piling up past max_unsent_bytes is aborted
    def flood() -> SockClient:
        c = SockClient(
            gw.host, gw.port, path="/socket/websocket?vsn=2.0.0&token=let-me-in&user=flood", rcvbuf=4096, timeout=WAIT
        )
        c.send(["1", "1", "api:big", "phx_join", {}])
        assert c.recv()[4]["status"] == "ok"
        reqs = [
            {"request_id": f"b{i}", "service": "t", "request_type": "big", "args": {"n": 400_000}} for i in range(20)
        ]
        c.send_many([["1", str(i + 2), "api:big", "phoenix_gen_api", r] for i, r in enumerate(reqs)])
        return c

    nonreader = await asyncio.to_thread(flood)
    accepted += 1
    joins += 1
    await until(gw, lambda m: m["genapi_aborted_total"] == 1 and m["genapi_connections"] == 3, "the non-reader aborted")
    nonreader.close()

    status, _, text = await asyncio.to_thread(get, gw, "/metrics")
    assert status == 200
    for name, kind in DOCUMENTED.items():
        assert f"# TYPE {name} {kind}\n" in text, f"{name} ({kind}) not rendered"
    m = await asyncio.to_thread(scrape, gw)
    want = {
        req("genapi_requests_total", "w", "pid", "ok"): 3,
        req("genapi_requests_total", "w", "pid", "error"): 0,
        req("genapi_requests_total", "t", "boom", "ok"): 0,
        req("genapi_requests_total", "t", "boom", "error"): 2,
        req("genapi_requests_total", "w", "keyed", "ok"): 1,
        req("genapi_requests_total", "w", "keyed", "error"): 1,  # the refusal is an answer too
        req("genapi_requests_total", "n", "dead", "error"): 1,
        series("genapi_request_duration_seconds_count", service="w", request_type="pid"): 3,
        series("genapi_request_duration_seconds_bucket", service="t", request_type="boom", le="+Inf"): 2,
        "genapi_connections": 3,
        "genapi_channels": 3,
        "genapi_in_flight": 0,
        "genapi_queued": 0,
        "genapi_accepted_total": accepted,
        "genapi_joins_total": joins,
        "genapi_aborted_total": 1,
        "genapi_rate_limited_total": 1,
        series("genapi_node_in_flight", node=node): 0,
        series("genapi_node_breaker_open", node=node): 0,
        series("genapi_node_in_flight", node=dead): 0,
        series("genapi_node_breaker_open", node=dead): 1,  # the one worker that called it
        "genapi_relay_groups": 2,
        "genapi_relay_members": 4,
        "genapi_relay_messages_total": relayed,
        "genapi_workers": workers,
        "genapi_worker_restarts_total": restarts,
    }
    assert {k: m.get(k) for k in want} == want
    kinds = {kind: m.get(series("genapi_errors_total", kind=kind)) for kind in ERROR_KINDS}
    # errors by kind: t.boom raised (internal, 2), the keyed refusal (rate_limited), the dead
    # node (unavailable), the sleep and the node call ended unanswered by their clients leaving
    # (cancelled; the queued sleep never started)
    assert kinds == {
        **dict.fromkeys(ERROR_KINDS, 0),
        "internal": 2,
        "rate_limited": 1,
        "unavailable": 1,
        "cancelled": 2,
    }
    assert m["genapi_relay_delivered_total"] + m["genapi_relay_dropped_total"] == recipients
    assert m[req("genapi_requests_total", "n", "slow", "ok")] == 1  # the one that ended
    assert m[req("genapi_requests_total", "chat", "handle_relay", "ok")] == relayed
    assert m[req("genapi_requests_total", "chat", "create_group", "ok")] == 2
    generation = m["genapi_config_generation"]
    assert generation >= (1 if workers > 1 else 0)  # a master counts from 1; a lone worker serves its file
    assert [m.get(series("genapi_worker_config_generation", worker=str(i))) for i in range(workers)] == [
        generation
    ] * workers
    ready = json.loads((await asyncio.to_thread(get, gw, "/ready"))[2])
    assert ready["generation"] == generation
    await asyncio.gather(alice.close(), bob.close(), carol.close())
    await until(
        gw,
        lambda m: (
            (m["genapi_connections"], m["genapi_channels"], m["genapi_relay_groups"], m["genapi_relay_members"])
            == (0, 0, 0, 0)
        ),
        "everyone gone",
    )


def test_metrics_off() -> None:
    """`[gateway] metrics = false`: /metrics answers 503 with its reason, on every worker, whatever the traffic."""
    config = """
[gateway]
metrics = false

[auth]
require_verified_user_id = false

[[functions]]
service = "w"
request_type = "pid"
mfa = "testapi:pid"
"""
    gw = GatewayProcess(config, extra_args=["--workers", "2"])
    try:

        async def calls() -> set[int]:
            pids: set[int] = set()
            for _ in range(100):  # until both workers answered (connections land where the kernel puts them)
                c = await Client.connect(gw.url)
                await c.join("api:w")
                pids.add((await c.call("w", "pid", topic="api:w")).result)  # type: ignore[union-attr]
                await c.close()
                if len(pids) == 2:
                    break
            return pids

        assert len(asyncio.run(calls())) == 2  # both workers answered calls
        for _ in range(8):  # the scrape lands on either worker: each refuses
            status, ctype, body = get(gw, "/metrics")
            assert (status, ctype, body) == (503, "text/plain", "metrics are off ([gateway] metrics = false)\n")
        assert get(gw, "/health")[0] == 200 and get(gw, "/ready")[0] == 200
    finally:
        assert gw.stop() == 0
