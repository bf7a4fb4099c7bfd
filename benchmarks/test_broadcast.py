"""Config broadcast latency with `--workers 2`: a push of N FunConfigs, from the master
publishing the change to every worker's acknowledgement (the push's `broadcast_ms`), and the
whole push as the pushing node sees it (validation and binding in the master included).

The issue-23 row is the 10 000-function service with one function changed (goal: broadcast
<= 10 ms). Each size first pushes all N functions at once (every worker binds them all: the
whole snapshot, the baseline of the same run), then ROUNDS pushes with one function changed
each (what a deploy of one change does: a delta); the best and the median of those are
printed, with how much of the cores other processes took meanwhile (over the rounds and IDLE_S
before them; above OTHER_WARN_PCT of a core the line says the figures are unreliable).

Run: `pytest benchmarks/test_broadcast.py --benchmark-only -s` (part of `pytest benchmarks`).
"""

from __future__ import annotations

import os
import statistics
import time

import pytest

CONFIG = """
[auth]
require_verified_user_id = false
"""
ROUNDS = 5
GOAL_MS = 10.0  # the 10 000-function row
OTHER_WARN_PCT = 10.0  # percent of one core
IDLE_S = 0.5  # ours idle just before the rounds: other processes' load is measured over it and the rounds
_TICK = os.sysconf("SC_CLK_TCK")


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


def busy_s() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / _TICK  # all but idle and iowait


def cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes `pids` used so far."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read().rpartition(")")[2].split()
        except FileNotFoundError:
            continue
        total += int(stat[11]) + int(stat[12])
    return total / _TICK


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
    from support.gateway_proc import children
    from support.node_proc import control

    msg = message(f"bc{n}", n, "v0")
    first = control(two_workers.control, "$push", [msg, False], timeout=120)
    assert first["status"] == "accepted" and first["missing"] == [] and first["workers"] == 2
    rounds = iter(range(1, 1000))
    broadcasts: list[float] = []
    pushes: list[float] = []
    generation = [first["generation"]]

    def run():
        k = next(rounds)
        msg["config_version"] = f"v{k}"
        msg["fun_configs"][0]["timeout"] = 1000 + k
        started = time.perf_counter()
        answer = control(two_workers.control, "$push", [msg, False], timeout=60)
        pushes.append((time.perf_counter() - started) * 1000)
        assert answer["status"] == "accepted" and answer["missing"] == [] and answer["workers"] == 2
        assert answer["generation"] == generation[0] + 1  # one generation per push, acknowledged by both
        generation[0] = answer["generation"]
        broadcasts.append(answer["broadcast_ms"])

    pids = [two_workers.pid, *children(two_workers.pid), os.getpid()]
    busy0, ours0, wall0 = busy_s(), cpu_s(pids), time.perf_counter()
    time.sleep(IDLE_S)  # the window other processes are measured over is at least this (clock ticks are 10 ms)
    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    wall = time.perf_counter() - wall0
    other_pct = max(0.0, (busy_s() - busy0) - (cpu_s(pids) - ours0)) / wall * 100
    out = {
        "broadcast_ms_best": min(broadcasts),
        "broadcast_ms_median": statistics.median(broadcasts),
        "push_ms_best": min(pushes),
        "first_push_broadcast_ms": first["broadcast_ms"],
        "other_cpu_pct": round(other_pct, 1),
    }
    benchmark.extra_info.update(out)
    goal = f" (goal <= {GOAL_MS:g} ms)" if n == 10000 else ""
    print(
        f"\nbroadcast, one of {n:,} functions changed (--workers 2): best {out['broadcast_ms_best']:.1f} ms, "
        f"median {out['broadcast_ms_median']:.1f} ms of {ROUNDS}{goal}; whole push best {out['push_ms_best']:.1f} ms"
        f"\n  baseline, first push of all {n:,} (bound by every worker): broadcast {first['broadcast_ms']:.1f} ms"
        f"\n  other processes took {other_pct:.0f}% of a core during the rounds (and {IDLE_S:g} s before)"
        + (" -- WARNING: the cores were shared, figures unreliable" if other_pct > OTHER_WARN_PCT else "")
    )
