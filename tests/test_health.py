"""GET /health, /ready and /metrics on the gateway's own port: plain HTTP beside the WebSocket
endpoint, for load balancers, Kubernetes probes and Prometheus. Real gateway processes."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from genapi.client import Client
from support.configs import PID_CONFIG
from support.gateway_proc import GatewayProcess, children, wait_until
from support.node_proc import NodeProcess, control

CONFIG = PID_CONFIG


def get(gw: GatewayProcess, path: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://{gw.host}:{gw.port}{path}", timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{re.escape(name)}{re.escape('{' + want + '}') if want else ''} (\S+)$", text, re.M)
    assert m, f"{name} {labels} not in metrics"
    return float(m.group(1))


@pytest.fixture(scope="module")
def three() -> Any:
    gw = GatewayProcess(CONFIG, extra_args=["--workers", "3"])
    yield gw
    gw.stop()


def test_health_and_ready(three: GatewayProcess) -> None:
    assert get(three, "/health")[:1] == (200,)
    status, ctype, body = get(three, "/ready")
    assert status == 200 and ctype == "application/json"
    held = control(three.control, "$status")  # the master's generation, and what each worker acknowledged
    assert json.loads(body) == {"ready": True, "workers": 3, "live": 3, "generation": held["generation"], "behind": []}
    assert [w["generation"] for w in held["workers"]] == [held["generation"]] * 3
    with NodeProcess([], name="h") as node:  # a push makes a new generation; /ready follows it
        pushed = control(three.control, "$push", [control(node.address, "$config"), True])
    assert pushed["status"] == "accepted" and pushed["missing"] == []
    assert pushed["generation"] > held["generation"]
    ready = json.loads(get(three, "/ready")[2])
    assert (ready["ready"], ready["generation"], ready["behind"]) == (True, pushed["generation"], [])
    assert get(three, "/nope")[0] == 404  # other paths stay the WebSocket endpoint's (404)


def test_metrics_add_up_over_the_workers(three: GatewayProcess) -> None:
    n = 60

    async def main() -> set[int]:
        pids = set()
        clients = await asyncio.gather(*(Client.connect(three.url) for _ in range(n)))
        await asyncio.gather(*(c.join("api:w") for c in clients))
        for c in clients:
            pids.add((await c.call("w", "pid")).result)  # type: ignore[union-attr]
        before = get(three, "/metrics")[2]
        assert sample(before, "genapi_connections") == n
        assert sample(before, "genapi_channels") == n
        assert sample(before, "genapi_joins_total") >= n and sample(before, "genapi_accepted_total") >= n
        await asyncio.gather(*(c.close() for c in clients))
        return pids

    before_text = get(three, "/metrics")[2]
    base = (
        sample(before_text, "genapi_requests_total", service="w", request_type="pid", outcome="ok")
        if 'request_type="pid"' in before_text
        else 0
    )
    pids = asyncio.run(main())
    assert len(pids) >= 2  # the calls were spread over workers
    status, ctype, text = get(three, "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    assert sample(text, "genapi_requests_total", service="w", request_type="pid", outcome="ok") == base + n
    assert sample(text, "genapi_request_duration_seconds_count", service="w", request_type="pid") == base + n
    assert (
        sample(text, "genapi_request_duration_seconds_bucket", service="w", request_type="pid", le="+Inf") == base + n
    )
    assert sample(text, "genapi_workers") == 3
    assert "# TYPE genapi_request_duration_seconds histogram" in text
    for i in range(3):
        assert sample(text, "genapi_worker_config_generation", worker=str(i)) == sample(
            text, "genapi_config_generation"
        )


def test_ready_is_false_while_a_worker_is_down() -> None:
    gw = GatewayProcess(CONFIG, extra_args=["--workers", "2"])
    try:
        seen_down = False
        victim = sorted(children(gw.pid))[0]
        for i in range(3):  # the same worker dies three times: its restart waits (crash-loop backoff)
            before = children(gw.pid)
            os.kill(victim, signal.SIGKILL)
            if i == 2:
                break
            assert wait_until(lambda b=before: len(children(gw.pid) - b) == 1 and len(children(gw.pid)) == 2, 10)
            victim = (children(gw.pid) - before).pop()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not seen_down:
            status, _, body = get(gw, "/ready")
            if status == 503:
                seen_down = json.loads(body)["live"] < 2
        assert seen_down
        assert wait_until(lambda: get(gw, "/ready")[0] == 200, 40)
    finally:
        gw.stop()


def test_one_worker_serves_its_own_view() -> None:
    gw = GatewayProcess(CONFIG)
    try:
        assert get(gw, "/health")[0] == 200
        assert json.loads(get(gw, "/ready")[2])["ready"] is True

        async def call() -> None:
            c = await Client.connect(gw.url)
            await c.join("api:w")
            await c.call("w", "pid")
            await c.close()

        asyncio.run(call())
        assert (
            sample(get(gw, "/metrics")[2], "genapi_requests_total", service="w", request_type="pid", outcome="ok") == 1
        )
    finally:
        gw.stop()
