"""Relay fan-out across two hosts (issue 25): the harness of benchmarks/test_relay.py, with the
1 000 members of one public group spread over two gateway hosts sharing a Redis
(`[engine] type = "redis"`): the sender and the first helper's members on host A, the second
helper's on host B. Every message is numbered by the group's Lua script in Redis and reaches
each host over its sharded pub/sub subscription; each host fans out to its own members.

Each host runs `--workers 1` (its worker holds the relay authority; BENCH_RELAY_HOST_WORKERS=2:
two workers under a master that holds it): on a 2-core machine Redis, two hosts, the helpers and
the sender share both cores. The CPU figure "gateway" covers both
hosts and Redis. A missing, duplicated or failed delivery fails the test, as in test_relay.py.

Run: `pytest benchmarks/test_relay_hosts.py --benchmark-only -s` (~20 s).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import pytest

from .test_relay import (
    CONFIG,
    GROUP,
    HELPERS,
    HERE,
    MEMBERS,
    MESSAGES,
    ROUNDS,
    TOPIC,
    Fanout,
    Member,
    _cpu_line,
    _latencies,
    _pct,
    burst_figures,
    connect,
)

WORKERS = os.environ.get("BENCH_RELAY_HOST_WORKERS", "1")  # --workers of each host

ENGINE = """
[engine]
type = "redis"
url = "{url}"
prefix = "bench{pid}"
"""


class TwoHostFanout(Fanout):
    """The group over hosts `gw` (A: the sender, even helpers) and `other` (B: odd helpers)."""

    def __init__(self, gw: Any, other: Any, redis_pid: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(gw, loop)
        self.other = other
        self.redis_pid = redis_pid

    async def start(self) -> None:
        self.sender = await connect(self.gw.url, "sender", TOPIC)
        await self.sender.call("chat", "create_group", {"group_id": GROUP, "group_type": "public"})
        Member(self.rec, self.sender)
        users = [f"m{n:05d}" for n in range(1, MEMBERS)]
        for i in range(HELPERS):
            url = (self.gw if i % 2 == 0 else self.other).url
            argv = [sys.executable, str(HERE / "relay_members.py"), url, GROUP, TOPIC, *users[i::HELPERS]]
            self.helpers.append(
                await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=self.stderr[i],
                    limit=2**28,
                )
            )
        for i in range(HELPERS):
            await self._hear(i)
        info = (await self.sender.call("chat", "get_group_info", {"group_id": GROUP})).result
        assert len(info["members"]) == MEMBERS, f"the group has {len(info['members'])} members, not {MEMBERS}"
        from support.gateway_proc import children

        hosts = [self.gw.pid, self.other.pid]
        self.gateway_pids = [*hosts, *(p for h in hosts for p in children(h)), self.redis_pid]
        await self.burst(10)  # warm-up (and the first check that every member gets every message)


@pytest.fixture(scope="module")
def fanout2():
    import uvloop

    from support.gateway_proc import GatewayProcess
    from support.redis_proc import RedisProcess

    redis = RedisProcess()
    config = CONFIG + ENGINE.format(url=redis.url, pid=os.getpid())
    args = ["--workers", WORKERS, "--log-level", "warning"]
    a = GatewayProcess(config, extra_args=args)
    b = GatewayProcess(config, extra_args=args)
    loop = uvloop.new_event_loop()
    f = TwoHostFanout(a, b, redis.pid, loop)
    try:
        loop.run_until_complete(f.start())
        yield f
        loop.run_until_complete(f.stop())
    finally:
        for h in f.helpers:
            if h.returncode is None:
                h.kill()
                loop.run_until_complete(h.wait())
        loop.close()
        codes = b.stop(), a.stop()
        redis.close()
    assert codes == (0, 0), f"gateways exited with {codes}: {a.read_stderr()[-2000:]} {b.read_stderr()[-2000:]}"


@pytest.mark.benchmark(group="relay-hosts")
def test_relay_fanout_across_two_hosts(benchmark, fanout2):
    """MESSAGES messages pipelined by one sender on host A to MEMBERS members over hosts A and
    B: deliveries/s from the first send to the last delivery (best of ROUNDS)."""
    best: dict[str, Any] = {}

    def run() -> None:
        out = burst_figures(fanout2.loop.run_until_complete(fanout2.burst(MESSAGES)))
        if out["deliveries_per_s"] > best.get("deliveries_per_s", -1):
            best.clear()
            best.update(out)

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    benchmark.extra_info.update(best)
    print(
        f"\nrelay fan-out across two hosts: {MESSAGES} messages x {MEMBERS} members: "
        f"{best['deliveries_per_s']:,} deliveries/s ({best['messages_per_s']:,} messages/s, "
        f"{best['elapsed_s'] * 1000:.0f} ms, p99 delivery {best['p99_delivery_ms']} ms); "
        f"{_cpu_line(best).replace('gateway', 'gateways + Redis', 1)}; best of {ROUNDS}"
    )
    assert best["deliveries"] == MESSAGES * MEMBERS


@pytest.mark.benchmark(group="relay-hosts")
def test_relay_paced_latency_across_two_hosts(benchmark, fanout2):
    """Paced messages (one every 50 ms): p99 to the last member (goal <= 50 ms)."""
    from .test_relay import INTERVAL_MS, PACED

    out: dict[str, Any] = {}

    def run() -> None:
        r = fanout2.loop.run_until_complete(fanout2.paced(PACED, INTERVAL_MS / 1000))
        every, last = _latencies(r)
        out.update(
            {
                "p50_delivery_ms": round(_pct(every, 0.50), 2),
                "p99_delivery_ms": round(_pct(every, 0.99), 2),
                "p99_last_member_ms": round(_pct(last, 0.99), 2),
            }
        )

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(out)
    print(
        f"\nrelay paced across two hosts: {PACED} messages one every {INTERVAL_MS:g} ms to {MEMBERS} members: "
        f"p50 {out['p50_delivery_ms']} ms, p99 {out['p99_delivery_ms']} ms, "
        f"p99 to the last member {out['p99_last_member_ms']} ms"
    )
