"""Relay groups across hosts (`[engine] type = "redis"`): a real redis-server and two real gateway
hosts (A with two workers, whose master holds the relay authority; B with one, whose worker does),
clients on both in the same groups. The single-host relay tests (tests/test_relay.py) run here
unchanged against the pair, clients alternating between the hosts: the permission matrix answers
the same refusals with the same texts. Then: every member on both hosts gets every sender's
messages in order exactly once (senders stamp a counter, members check gaps, duplicates and
order); a host killed with SIGKILL has its members leave everyone's groups within its lease; with
Redis killed, relay operations are refused with can_retry, and with it back the hosts resubscribe
and replay; `CLIENT KILL TYPE pubsub` loses nothing and duplicates nothing; a host further behind
than the group's stream keeps resyncs the group and logs it."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import time
import urllib.request
from collections.abc import Iterator

import pytest

import test_relay
from genapi.client import Client
from genapi.errors import RELAY_UNREACHABLE
from genapi.relay import RelayClient
from support.gateway_proc import GatewayProcess, several_hosts
from support.redis_proc import RedisProcess
from test_relay import (
    TOPIC,
    close_all,
    eventually,
    gid,
    ok,
    received,
    refused,
    test_bad_input_is_refused_clearly,
    test_members_leave_when_their_connection_or_topic_goes,
    test_order_per_sender_across_workers,
    test_private_group_matrix,
    test_public_group_reaches_members_on_every_worker,
    test_strict_private_group_matrix,
)

__all__ = [  # the single-host tests, run here against two hosts sharing Redis
    "test_bad_input_is_refused_clearly",
    "test_members_leave_when_their_connection_or_topic_goes",
    "test_order_per_sender_across_workers",
    "test_private_group_matrix",
    "test_public_group_reaches_members_on_every_worker",
    "test_strict_private_group_matrix",
]

ENGINE = """
[engine]
type = "redis"
url = "{url}"
prefix = "{prefix}"
connect_timeout_ms = 500
command_timeout_ms = 2000
"""


class TwoHosts:
    """Hosts A and B as one gateway for test_relay's helpers: each `url` read is the next host's,
    so the clients of a test alternate between them; `control` is A's."""

    def __init__(self, a: GatewayProcess, b: GatewayProcess) -> None:
        self.a, self.b = a, b
        self._next = itertools.cycle((a, b))
        self.control = a.control

    @property
    def url(self) -> str:
        return next(self._next).url


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisProcess]:
    with RedisProcess() as server:
        yield server


def config(redis: RedisProcess) -> str:
    return test_relay.CONFIG + ENGINE.format(url=redis.url, prefix=f"t{os.getpid()}")


@pytest.fixture(scope="module")
def pair(redis: RedisProcess) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    with several_hosts(config(redis), 2, 1) as (a, b):
        yield a, b


@pytest.fixture
def gw(pair: tuple[GatewayProcess, GatewayProcess]) -> TwoHosts:
    return TwoHosts(*pair)


async def member(host: GatewayProcess, name: str) -> Client:
    c = await Client.connect(host.url, params={"token": "let-me-in", "user": name})
    await c.join(TOPIC)
    return c


async def drain_checked(c: Client, senders: dict[str, int], timeout: float = 30) -> None:
    """`c` receives, from each sender, messages "<sender>:0" .. "<sender>:<n-1>": each once, in
    order, nothing else (a gap, a duplicate or a reordering fails with what was seen)."""
    want = {s: 0 for s in senders}
    total = sum(senders.values())
    for _ in range(total):
        got = await received(c, timeout)
        sender, _, n = got["message"].partition(":")
        assert got["from_user_id"] == sender and sender in want, got
        assert int(n) == want[sender], f"{c}: from {sender} expected #{want[sender]}, got #{n}"
        want[sender] += 1
    assert want == senders
    await asyncio.sleep(0.2)
    assert c.pushes.empty(), "a message delivered twice"


async def burst(c: Client, sender: str, g: str, n: int, start: int = 0) -> None:
    calls = [
        asyncio.ensure_future(c.call("chat", "handle_relay", {"group_id": g, "message": f"{sender}:{i}"}))
        for i in range(start, start + n)
    ]
    for resp in await asyncio.gather(*calls):  # each the answer: it comes before the sender's own copy
        assert resp is not None and resp.success and resp.result["status"] == "relayed", resp


def test_every_sender_reaches_every_member_on_both_hosts_in_order_exactly_once(
    pair: tuple[GatewayProcess, GatewayProcess],
) -> None:
    a, b = pair

    async def main() -> None:
        names = [f"u{i}" for i in range(8)]
        clients = [await member(a if i % 2 == 0 else b, name) for i, name in enumerate(names)]
        g = gid("order2")
        await ok(clients[0], "create_group", group_id=g, group_type="public")
        for c in clients[1:]:
            await ok(c, "join_group", group_id=g)
        n = 200
        senders = {"u0": n, "u1": n, "u3": n}  # two on A... u0 on A, u1 and u3 on B
        await asyncio.gather(*(burst(clients[names.index(s)], s, g, n) for s in senders))
        await asyncio.gather(*(drain_checked(c, senders) for c in clients))
        await close_all(*clients)

    asyncio.run(main())


def test_python_sides_on_either_host(pair: tuple[GatewayProcess, GatewayProcess]) -> None:
    """RelayClient on A's control port and clients on B act on the same groups."""
    a, b = pair

    async def main() -> None:
        bob = await member(b, "bob")
        g = gid("ops2")
        async with RelayClient(a.control) as rc:
            await rc.create_group(g, "private", "system")
            assert await ok(bob, "join_group", group_id=g) == {"group_id": g, "status": "pending"}
            assert (await rc.accept_member(g, "system", "bob"))["status"] == "active"
            assert (await rc.handle_relay(g, "system", {"notice": 1}))["recipients_count"] == 2
            assert (await received(bob))["message"] == {"notice": 1}
            info = await rc.get_group_info(g)
            assert info["members"]["system"]["connected"] is False and info["members"]["bob"]["connected"] is True
            assert await rc.delete_group(g) == {"group_id": g, "status": "deleted"}
        assert await refused(bob, "handle_relay", group_id=g, message="x") == test_relay.RELAY_TEXTS["not_found"]
        await close_all(bob)

    asyncio.run(main())


def test_a_killed_host_takes_its_members_out_of_every_group(
    redis: RedisProcess, pair: tuple[GatewayProcess, GatewayProcess]
) -> None:
    """kill -9 of host C: within its lease (6 s) a survivor removes C's members through the
    ordered leave, so the members on A and B see them gone and lose nothing meanwhile."""
    a, b = pair
    c_host = GatewayProcess(config(redis))

    async def main() -> None:
        alice, bob = await member(a, "alice"), await member(b, "bob")
        carol, dave = await member(c_host, "carol"), await member(c_host, "dave")
        g = gid("dead")
        await ok(alice, "create_group", group_id=g, group_type="public")
        for c in (bob, carol, dave):
            await ok(c, "join_group", group_id=g)
        assert (await ok(bob, "handle_relay", group_id=g, message="bob:0"))["recipients_count"] == 4
        for c in (alice, bob, carol, dave):
            assert (await received(c))["message"] == "bob:0"
        c_host.stop(signal.SIGKILL, expect=None)
        killed = time.monotonic()

        async def gone() -> bool:
            return set((await ok(alice, "get_group_info", group_id=g))["members"]) == {"alice", "bob"}

        sent = 1
        while not await gone():  # bob keeps sending meanwhile: A and B lose nothing
            assert time.monotonic() - killed < 30, "the dead host's members were not removed"
            await ok(bob, "handle_relay", group_id=g, message=f"bob:{sent}")
            sent += 1
            await asyncio.sleep(0.2)
        assert time.monotonic() - killed >= 2.0  # removed by the lease's expiry, not by anything sooner
        assert (await ok(bob, "handle_relay", group_id=g, message=f"bob:{sent}"))["recipients_count"] == 2
        sent += 1
        for c in (alice, bob):
            for i in range(1, sent):
                assert (await received(c))["message"] == f"bob:{i}"
        await close_all(alice, bob)

    try:
        asyncio.run(main())
    finally:
        if c_host.proc.poll() is None:
            c_host.stop(signal.SIGKILL, expect=None)


def test_a_pubsub_connection_killed_loses_nothing_and_duplicates_nothing(
    redis: RedisProcess, pair: tuple[GatewayProcess, GatewayProcess]
) -> None:
    """`CLIENT KILL TYPE pubsub` cuts both hosts' subscriptions; what is sent while they are
    down is replayed from the streams: every member gets everything once, in order."""
    a, b = pair

    async def main() -> None:
        clients = [await member(a if i % 2 == 0 else b, f"p{i}") for i in range(4)]
        g = gid("kill-sub")
        await ok(clients[0], "create_group", group_id=g, group_type="public")
        for c in clients[1:]:
            await ok(c, "join_group", group_id=g)
        await burst(clients[0], "p0", g, 50)
        async with RelayClient(a.control) as ra, RelayClient(b.control) as rb:
            before = [await ra.stats(), await rb.stats()]
            killed = redis.client().execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            assert killed >= 2  # one subscription per host
            # sent while neither host is subscribed: only a replay from the stream brings them
            await burst(clients[1], "p1", g, 50)
            await burst(clients[0], "p0", g, 50, start=50)
            await asyncio.gather(*(drain_checked(c, {"p0": 100, "p1": 50}) for c in clients))
            after = [await ra.stats(), await rb.stats()]
        for x, y in zip(before, after, strict=True):
            assert y["reconnects"] > x["reconnects"]
        assert sum(y["replayed"] - x["replayed"] for x, y in zip(before, after, strict=True)) > 0
        for host in (a, b):  # shown in /metrics too
            with urllib.request.urlopen(f"http://{host.host}:{host.port}/metrics", timeout=10) as r:
                text = r.read().decode()
            assert re.search(r"^genapi_relay_reconnects_total [1-9]", text, re.M), text
        await close_all(*clients)

    asyncio.run(main())


def test_a_paused_redis_delays_but_loses_and_repeats_nothing(
    redis: RedisProcess, pair: tuple[GatewayProcess, GatewayProcess]
) -> None:
    """`CLIENT PAUSE` shorter than command_timeout_ms (and than a lease), with sends from both
    hosts in flight: every send is answered `relayed` once the pause ends, every member gets
    everything once, each sender's in order, and no member is reaped."""
    a, b = pair

    async def main() -> None:
        clients = [await member(a if i % 2 == 0 else b, f"z{i}") for i in range(4)]
        g = gid("pause")
        await ok(clients[0], "create_group", group_id=g, group_type="public")
        for c in clients[1:]:
            await ok(c, "join_group", group_id=g)
        await burst(clients[0], "z0", g, 20)
        await burst(clients[1], "z1", g, 20)
        assert redis.client().execute_command("CLIENT", "PAUSE", 800, "ALL") in (True, b"OK", "OK")
        t0 = time.monotonic()
        await asyncio.gather(burst(clients[0], "z0", g, 30, start=20), burst(clients[1], "z1", g, 30, start=20))
        assert time.monotonic() - t0 >= 0.5, "answered during the pause: Redis was not paused"
        await asyncio.gather(*(drain_checked(c, {"z0": 50, "z1": 50}) for c in clients))
        info = await clients[2].call("chat", "get_group_info", {"group_id": g})
        assert info is not None and info.success and len(info.result["members"]) == 4, info
        await close_all(*clients)

    asyncio.run(main())


def test_redis_down_refuses_with_can_retry_then_recovers(
    redis: RedisProcess, pair: tuple[GatewayProcess, GatewayProcess]
) -> None:
    """Redis killed (after a SAVE: as a failover to an up-to-date replica): sends are refused
    with the clear error and can_retry, nothing is delivered out of order; once it is back the
    hosts resubscribe and the group carries on, in order, on both hosts, and a member whose
    connection closed during the outage has left."""
    a, b = pair

    async def main() -> None:
        alice, bob, carol = await member(a, "alice"), await member(b, "bob"), await member(b, "carol")
        g = gid("outage")
        await ok(alice, "create_group", group_id=g, group_type="public")
        await ok(bob, "join_group", group_id=g)
        await ok(carol, "join_group", group_id=g)
        await burst(alice, "alice", g, 20)
        for c in (alice, bob, carol):
            for i in range(20):
                assert (await received(c))["message"] == f"alice:{i}"
        redis.client().save()
        redis.stop(signal.SIGKILL)
        try:
            for c in (alice, bob):
                resp = await c.call("chat", "handle_relay", {"group_id": g, "message": "lost"}, raise_on_error=False)
                assert resp is not None and not resp.success, resp
                assert resp.error == RELAY_UNREACHABLE and resp.can_retry is True, resp
            await carol.close()  # her membership ends once Redis answers again
            await asyncio.sleep(0.5)
        finally:
            redis.start()
        deadline = time.monotonic() + 30
        while True:
            resp = await alice.call(
                "chat", "handle_relay", {"group_id": g, "message": "alice:20"}, raise_on_error=False
            )
            assert resp is not None
            if resp.success:
                break
            assert resp.error == RELAY_UNREACHABLE and resp.can_retry is True, resp
            assert time.monotonic() < deadline, "relay did not recover"
            await asyncio.sleep(0.2)

        async def carol_gone() -> bool:
            return set((await ok(alice, "get_group_info", group_id=g))["members"]) == {"alice", "bob"}

        await eventually(carol_gone, 15)
        await burst(alice, "alice", g, 20, start=21)
        await burst(bob, "bob", g, 5)
        for c in (alice, bob):
            await drain_checked_after(c, 20, 41)
        await close_all(alice, bob)

    asyncio.run(main())


async def drain_checked_after(c: Client, start: int, end: int) -> None:
    """alice's start..end-1 and bob's 0..4, each sender's in order, once each."""
    want = {"alice": start, "bob": 0}
    for _ in range(end - start + 5):
        got = await received(c, 30)
        sender, _, n = got["message"].partition(":")
        assert int(n) == want[sender], got
        want[sender] += 1
    await asyncio.sleep(0.2)
    assert c.pushes.empty()


def test_a_host_behind_the_streams_retention_resyncs_and_says_so(
    redis: RedisProcess, pair: tuple[GatewayProcess, GatewayProcess]
) -> None:
    """Host B stopped (SIGSTOP) with its subscription cut, while the group's stream loses what
    was sent meanwhile (XTRIM, as its retention would): resumed, B cannot replay, so it resyncs
    the group (its members reloaded), logs it, and its members go on receiving; A lost nothing."""
    a, b = pair
    prefix = f"t{os.getpid()}"

    async def main() -> None:
        alice, bob = await member(a, "alice"), await member(b, "bob")
        g = gid("trim")
        await ok(alice, "create_group", group_id=g, group_type="public")
        await ok(bob, "join_group", group_id=g)
        await burst(alice, "alice", g, 5)
        for i in range(5):
            assert (await received(bob))["message"] == f"alice:{i}"
        async with RelayClient(a.control) as ra:
            reconnects = (await ra.stats())["reconnects"]
            os.kill(b.pid, signal.SIGSTOP)
            try:
                redis.client().execute_command("CLIENT", "KILL", "TYPE", "pubsub")

                async def a_back() -> bool:
                    return (await ra.stats())["reconnects"] > reconnects  # type: ignore[no-any-return]

                await eventually(a_back, 10)
                await burst(alice, "alice", g, 5, start=5)  # B is not subscribed: only its stream has them
                assert redis.client().xtrim(f"{{{prefix}:g:{g}}}:s", maxlen=0) >= 5
            finally:
                os.kill(b.pid, signal.SIGCONT)

        async def resynced() -> bool:  # B's log says so, naming the group
            return any(
                "relay_group_resynced" in line and f"group={g} " in line for line in b.read_stderr().splitlines()
            )

        await eventually(resynced, 15)
        await burst(alice, "alice", g, 5, start=10)
        for i in range(15):
            assert (await received(alice))["message"] == f"alice:{i}"
        for i in range(10, 15):  # 5..9 are gone for bob (past the stream's retention), the rest arrive
            assert (await received(bob))["message"] == f"alice:{i}"
        await asyncio.sleep(0.2)
        assert alice.pushes.empty() and bob.pushes.empty()
        await close_all(alice, bob)

    asyncio.run(main())


def test_a_silent_subscription_is_found_by_its_probe(
    redis: RedisProcess, pair: tuple[GatewayProcess, GatewayProcess]
) -> None:
    """Redis stopped (SIGSTOP: connections open, nothing answered) longer than the probe's
    timeout: each host finds its subscription dead by the PING it gets no answer to, reconnects
    once Redis answers again, and the group carries on in order on both hosts, its members kept
    (a stall longer than a lease reaps no one)."""
    a, b = pair

    async def main() -> None:
        alice, bob = await member(a, "alice"), await member(b, "bob")
        g = gid("silent")
        await ok(alice, "create_group", group_id=g, group_type="public")
        await ok(bob, "join_group", group_id=g)
        await burst(bob, "bob", g, 10)
        async with RelayClient(a.control) as ra, RelayClient(b.control) as rb:
            before = [(await ra.stats())["reconnects"], (await rb.stats())["reconnects"]]
            os.kill(redis.pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(6.5)  # the probe: a PING after 1 s idle, dead 3 s later
            finally:
                os.kill(redis.pid, signal.SIGCONT)

            async def found() -> bool:
                now = [(await ra.stats())["reconnects"], (await rb.stats())["reconnects"]]
                return all(n > m for n, m in zip(now, before, strict=True))

            await eventually(found, 20)
        deadline = time.monotonic() + 30
        while True:  # refused (can_retry) until the host's connection to Redis is back
            resp = await bob.call("chat", "handle_relay", {"group_id": g, "message": "bob:10"}, raise_on_error=False)
            assert resp is not None
            if resp.success:
                break
            assert resp.error == RELAY_UNREACHABLE and resp.can_retry is True, resp
            assert time.monotonic() < deadline, "relay did not recover"
            await asyncio.sleep(0.2)
        await burst(bob, "bob", g, 10, start=11)
        for c in (alice, bob):
            await drain_checked(c, {"bob": 21})
        assert set((await ok(alice, "get_group_info", group_id=g))["members"]) == {"alice", "bob"}
        await close_all(alice, bob)

    asyncio.run(main())
