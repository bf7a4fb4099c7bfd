"""Config broadcast latency with `--workers 2`: a push of N FunConfigs, from the master
publishing the snapshot to every worker's acknowledgement (the push's `broadcast_ms`), and the
whole push as the pushing node sees it (validation and binding in the master included).

Run: `pytest benchmarks/test_broadcast.py --benchmark-only` (part of `pytest benchmarks`).
"""

from __future__ import annotations

import time

import pytest

CONFIG = """
[auth]
require_verified_user_id = false
"""


def message(service: str, n: int, version: str) -> dict:
    fun = {
        "mfa": "inventory:get_item",
        "nodes": ["127.0.0.1:7001"],
        "response_type": "sync",
        "arg_types": {"item_id": "string", "qty": {"type": "num", "default_value": 1}, "tags": "list_string"},
        "arg_orders": ["item_id", "qty", "tags"],
        "version": "1.0.0",
        "timeout": 5000,
    }
    return {
        "service": service,
        "config_version": version,
        "nodes": ["127.0.0.1:7001"],
        "fun_configs": [dict(fun, request_type=f"fn{i}") for i in range(n)],
    }


@pytest.fixture(scope="module")
def two_workers():
    from support.gateway_proc import GatewayProcess

    gw = GatewayProcess(CONFIG, extra_args=["--workers", "2"])
    yield gw
    gw.stop()


@pytest.mark.benchmark(group="broadcast")
@pytest.mark.parametrize("n", [10, 1000, 10000])
def test_broadcast(benchmark, two_workers, n):
    """A service of `n` functions pushed once (all new: every worker binds them), then pushed
    again with one function changed per round (what a deploy of one change does): the broadcast
    (publish + every worker's acknowledgement) of each."""
    from support.node_proc import control

    msg = message(f"bc{n}", n, "v0")
    first = control(two_workers.control, "$push", [msg, False], timeout=120)
    assert first["status"] == "accepted" and first["missing"] == [] and first["workers"] == 2
    rounds = iter(range(1, 1000))
    out = {"first_push_broadcast_ms": first["broadcast_ms"]}

    def run():
        k = next(rounds)
        msg["config_version"] = f"v{k}"
        msg["fun_configs"][0]["timeout"] = 1000 + k
        started = time.perf_counter()
        answer = control(two_workers.control, "$push", [msg, False], timeout=60)
        out["push_ms"] = (time.perf_counter() - started) * 1000
        assert answer["status"] == "accepted" and answer["missing"] == [] and answer["workers"] == 2
        out["broadcast_ms"] = answer["broadcast_ms"]

    benchmark.pedantic(run, rounds=5, iterations=1)
    benchmark.extra_info.update(out)
    print(
        f"\n{n} FunConfigs: one changed: broadcast {out['broadcast_ms']:.1f} ms (whole push "
        f"{out['push_ms']:.1f} ms); first push of all {n}: broadcast {out['first_push_broadcast_ms']:.1f} ms"
    )
