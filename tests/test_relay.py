"""Relay groups with `--workers 3`: members on different workers, the permission matrix of
every group type, order per sender, cleanup when a connection goes or a worker dies, a slow
member bounded, and the Python sides (RelayClient on the control port, in-worker functions).
Real gateway processes and sockets throughout."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest

from genapi.client import Client, Push
from genapi.errors import PERMISSION_DENIED, RELAY_TEXTS, RelayError
from genapi.relay import RelayClient
from support.configs import RELAY_CHAT
from support.gateway_proc import GatewayProcess, children

CONFIG = (
    RELAY_CHAT
    + """
[[functions]]
service = "t"
request_type = "pid"
mfa = "testapi:pid"

[[functions]]
service = "t"
request_type = "kick"
mfa = "testapi:relay_kick"
arg_types = { group_id = "string", user_id = "string" }
arg_orders = ["group_id", "user_id"]
"""
)

TOPIC = "room:1"
_ids = itertools.count(1)


def gid(name: str) -> str:
    return f"{name}-{next(_ids)}"


@pytest.fixture(scope="module")
def gw() -> Any:
    g = GatewayProcess(CONFIG, extra_args=["--workers", "3"])
    yield g
    g.stop()


async def user(gw: GatewayProcess, name: str, avoid: set[int] | None = None) -> tuple[Client, int]:
    """`name` connected and joined to TOPIC, on a worker not in `avoid` (reconnecting until so)."""
    for _ in range(200):
        c = await Client.connect(gw.url, params={"token": "let-me-in", "user": name})
        await c.join(TOPIC)
        pid = (await c.call("t", "pid")).result  # type: ignore[union-attr]
        if not avoid or pid not in avoid:
            return c, pid
        await c.close()
    raise AssertionError("could not land on another worker")


async def spread(gw: GatewayProcess, *names: str) -> list[Client]:
    """One client per name, each on a different worker while there are workers left."""
    out, used = [], set()
    for name in names:
        c, pid = await user(gw, name, used if len(used) < 3 else None)
        used.add(pid)
        out.append(c)
    return out


async def ok(c: Client, op: str, **args: Any) -> Any:
    resp = await c.call("chat", op, args)
    assert resp is not None and resp.success, resp
    return resp.result


async def refused(c: Client, op: str, **args: Any) -> str:
    resp = await c.call("chat", op, args, raise_on_error=False)
    assert resp is not None and not resp.success, resp
    return str(resp.error)


async def received(c: Client, timeout: float = 5) -> dict[str, Any]:
    """The next relayed message this client got (its `result`)."""
    push: Push = await asyncio.wait_for(c.pushes.get(), timeout)
    assert push.topic == TOPIC and push.event == "phoenix_gen_api", push
    assert push.payload["success"] is True and isinstance(push.payload["request_id"], str), push
    return push.payload["result"]  # type: ignore[no-any-return]


async def close_all(*clients: Client) -> None:
    await asyncio.gather(*(c.close() for c in clients))


async def eventually(pred: Callable[[], Any], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await pred():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.05)


def test_public_group_reaches_members_on_every_worker(gw: GatewayProcess) -> None:
    async def main() -> None:
        alice, bob, carol = await spread(gw, "alice", "bob", "carol")
        g = gid("pub")
        assert await ok(alice, "create_group", group_id=g, group_type="public") == {
            "group_id": g,
            "group_type": "public",
            "status": "active",
            "roles": ["admin"],
        }
        assert await ok(bob, "join_group", group_id=g) == {"group_id": g, "status": "active"}
        assert await ok(carol, "join_group", group_id=g) == {"group_id": g, "status": "active"}
        assert await refused(bob, "join_group", group_id=g) == RELAY_TEXTS["already_member"]
        resp = await alice.call("chat", "handle_relay", {"group_id": g, "message": {"text": "hi", "n": [1]}})
        assert resp is not None and resp.result == {"status": "relayed", "recipients_count": 3}
        for c in (alice, bob, carol):  # the sender too, exactly once each
            got = await received(c)
            assert (
                got["group_id"] == g and got["from_user_id"] == "alice" and got["message"] == {"text": "hi", "n": [1]}
            )
            assert got["timestamp"].endswith("Z")
        assert await ok(bob, "handle_relay", group_id=g, message="from bob") == {
            "status": "relayed",
            "recipients_count": 3,
        }
        for c in (alice, bob, carol):
            got = await received(c)
            assert (got["from_user_id"], got["message"]) == ("bob", "from bob")
            assert c.pushes.empty()
        # public groups: no accept, no mute
        assert await refused(alice, "accept_member", group_id=g, user_id="bob") == RELAY_TEXTS["user_not_pending"]
        assert await refused(alice, "mute_member", group_id=g, user_id="bob") == RELAY_TEXTS["not_strict_private"]
        assert await refused(alice, "unmute_member", group_id=g, user_id="bob") == RELAY_TEXTS["not_strict_private"]
        await close_all(alice, bob, carol)

    asyncio.run(main())


def test_private_group_matrix(gw: GatewayProcess) -> None:
    async def main() -> None:
        alice, bob, carol, dave = await spread(gw, "alice", "bob", "carol", "dave")
        g = gid("priv")
        await ok(alice, "create_group", group_id=g, group_type="private")
        assert await ok(bob, "join_group", group_id=g) == {"group_id": g, "status": "pending"}
        assert await refused(bob, "join_group", group_id=g) == RELAY_TEXTS["already_member"]
        # pending: cannot send, does not receive, cannot accept
        assert await refused(bob, "handle_relay", group_id=g, message="x") == RELAY_TEXTS["pending"]
        assert await ok(alice, "handle_relay", group_id=g, message="before") == {
            "status": "relayed",
            "recipients_count": 1,
        }
        assert (await received(alice))["message"] == "before"
        await ok(carol, "join_group", group_id=g)
        assert await refused(bob, "accept_member", group_id=g, user_id="carol") == RELAY_TEXTS["not_active"]
        assert await refused(dave, "accept_member", group_id=g, user_id="carol") == RELAY_TEXTS["not_member"]
        assert await refused(alice, "accept_member", group_id=g, user_id="dave") == RELAY_TEXTS["user_not_in_group"]
        assert await ok(alice, "accept_member", group_id=g, user_id="bob") == {
            "group_id": g,
            "user_id": "bob",
            "status": "active",
        }
        assert await refused(alice, "accept_member", group_id=g, user_id="bob") == RELAY_TEXTS["user_not_pending"]
        # any active member accepts in a private group
        assert (await ok(bob, "accept_member", group_id=g, user_id="carol"))["status"] == "active"
        assert await refused(alice, "mute_member", group_id=g, user_id="bob") == RELAY_TEXTS["not_strict_private"]
        assert (await ok(bob, "handle_relay", group_id=g, message="after"))["recipients_count"] == 3
        for c in (alice, bob, carol):  # bob's first message is "after": "before" never reached him
            assert (await received(c))["message"] == "after"
        # a non-public group's info is for its members
        assert await refused(dave, "get_group_info", group_id=g) == RELAY_TEXTS["not_member"]
        info = await ok(bob, "get_group_info", group_id=g)
        assert {u: m["status"] for u, m in info["members"].items()} == {
            "alice": "active",
            "bob": "active",
            "carol": "active",
        }
        assert info["members"]["alice"]["roles"] == ["admin"] and info["members"]["bob"]["roles"] == ["member"]
        assert await refused(bob, "delete_group", group_id=g) == RELAY_TEXTS["not_admin"]
        await close_all(alice, bob, carol, dave)

    asyncio.run(main())


def test_strict_private_group_matrix(gw: GatewayProcess) -> None:
    async def main() -> None:
        alice, bob, carol, dave = await spread(gw, "alice", "bob", "carol", "dave")
        g = gid("strict")
        await ok(alice, "create_group", group_id=g, group_type="strict_private")
        for c in (bob, carol, dave):
            assert (await ok(c, "join_group", group_id=g))["status"] == "pending"
        await ok(alice, "accept_member", group_id=g, user_id="bob")
        # only an admin accepts, mutes and unmutes
        assert await refused(bob, "accept_member", group_id=g, user_id="carol") == RELAY_TEXTS["not_admin"]
        await ok(alice, "accept_member", group_id=g, user_id="carol")
        assert await refused(bob, "mute_member", group_id=g, user_id="carol") == RELAY_TEXTS["not_admin"]
        assert await refused(alice, "mute_member", group_id=g, user_id="dave") == RELAY_TEXTS["cannot_mute"]
        assert await refused(alice, "mute_member", group_id=g, user_id="erin") == RELAY_TEXTS["user_not_in_group"]
        assert await refused(alice, "unmute_member", group_id=g, user_id="bob") == RELAY_TEXTS["not_muted"]
        assert (await ok(alice, "mute_member", group_id=g, user_id="carol"))["status"] == "muted"
        assert await refused(bob, "unmute_member", group_id=g, user_id="carol") == RELAY_TEXTS["not_admin"]
        # muted: receives, cannot send; pending (dave): neither
        assert await refused(carol, "handle_relay", group_id=g, message="x") == RELAY_TEXTS["muted"]
        assert await refused(dave, "handle_relay", group_id=g, message="x") == RELAY_TEXTS["pending"]
        assert (await ok(bob, "handle_relay", group_id=g, message="m1"))["recipients_count"] == 3
        for c in (alice, bob, carol):
            assert (await received(c))["message"] == "m1"
        assert (await ok(alice, "unmute_member", group_id=g, user_id="carol"))["status"] == "active"
        assert (await ok(carol, "handle_relay", group_id=g, message="m2"))["recipients_count"] == 3
        for c in (alice, bob, carol):
            assert (await received(c))["message"] == "m2"
        assert dave.pushes.empty()
        # a muted member who joins again starts over as pending
        await ok(alice, "mute_member", group_id=g, user_id="carol")
        assert (await ok(carol, "join_group", group_id=g))["status"] == "pending"
        assert await refused(carol, "handle_relay", group_id=g, message="x") == RELAY_TEXTS["pending"]
        # delete: admin only; then the group is gone for everyone
        assert await refused(bob, "delete_group", group_id=g) == RELAY_TEXTS["not_admin"]
        assert await ok(alice, "delete_group", group_id=g) == {"group_id": g, "status": "deleted"}
        assert await refused(bob, "handle_relay", group_id=g, message="x") == RELAY_TEXTS["not_found"]
        assert await refused(bob, "join_group", group_id=g) == RELAY_TEXTS["not_found"]
        await close_all(alice, bob, carol, dave)

    asyncio.run(main())


def test_bad_input_is_refused_clearly(gw: GatewayProcess) -> None:
    async def main() -> None:
        (alice,) = await spread(gw, "alice")
        g = gid("bad")
        error = await refused(alice, "create_group", group_id=g, group_type="secret")
        assert "group_type must be one of public, private, strict_private" in error and "'secret'" in error
        assert (
            await refused(alice, "create_group", group_id="é" * 129, group_type="public")
            == "group_id must be at most 256 bytes"
        )
        await ok(alice, "create_group", group_id=g, group_type="public")
        assert await refused(alice, "create_group", group_id=g, group_type="public") == RELAY_TEXTS["already_exists"]
        assert await refused(alice, "leave_group", group_id=gid("none")) == RELAY_TEXTS["not_found"]
        assert "group_id" in await refused(alice, "join_group")  # a missing argument is named
        # a connection without a user cannot take part ([relay] service: any_authenticated)
        anon = await Client.connect(gw.url, params={"token": "anon"})
        await anon.join(TOPIC)
        assert await refused(anon, "join_group", group_id=g) == PERMISSION_DENIED
        await close_all(alice, anon)

    asyncio.run(main())


def test_order_per_sender_across_workers(gw: GatewayProcess) -> None:
    async def main() -> None:
        alice, bob, carol = await spread(gw, "alice", "bob", "carol")
        g = gid("order")
        await ok(alice, "create_group", group_id=g, group_type="public")
        await ok(bob, "join_group", group_id=g)
        await ok(carol, "join_group", group_id=g)
        n = 150

        async def burst(c: Client, who: str) -> None:
            calls = [
                asyncio.ensure_future(c.call("chat", "handle_relay", {"group_id": g, "message": f"{who}{i}"}))
                for i in range(n)
            ]
            for resp in await asyncio.gather(*calls):
                assert resp is not None and resp.success, resp

        await asyncio.gather(burst(alice, "a"), burst(bob, "b"))
        for c in (alice, bob, carol):
            got = [(await received(c))["message"] for _ in range(2 * n)]
            assert [m for m in got if m[0] == "a"] == [f"a{i}" for i in range(n)]
            assert [m for m in got if m[0] == "b"] == [f"b{i}" for i in range(n)]
            assert c.pushes.empty()
        await close_all(alice, bob, carol)

    asyncio.run(main())


def test_members_leave_when_their_connection_or_topic_goes(gw: GatewayProcess) -> None:
    async def main() -> None:
        alice, bob, carol = await spread(gw, "alice", "bob", "carol")
        g = gid("gone")
        await ok(alice, "create_group", group_id=g, group_type="private")
        await ok(bob, "join_group", group_id=g)
        await ok(alice, "accept_member", group_id=g, user_id="bob")
        await ok(carol, "join_group", group_id=g)

        def members() -> Callable[[], Any]:
            async def now() -> set[str]:
                return set((await ok(alice, "get_group_info", group_id=g))["members"])

            return now

        now = members()
        assert await now() == {"alice", "bob", "carol"}
        await bob.close()
        await eventually(lambda: _is(now, {"alice", "carol"}))
        await carol.leave(TOPIC)  # leaving the topic ends the membership made on it
        await eventually(lambda: _is(now, {"alice"}))
        assert (await ok(alice, "handle_relay", group_id=g, message="alone"))["recipients_count"] == 1
        # the last member gone: the group goes too
        await alice.leave(TOPIC)
        await alice.join(TOPIC)

        async def deleted() -> bool:
            resp = await alice.call("chat", "get_group_info", {"group_id": g}, raise_on_error=False)
            return resp is not None and resp.error == RELAY_TEXTS["not_found"]

        await eventually(deleted)
        await close_all(alice, carol)

    asyncio.run(main())


async def _is(now: Callable[[], Any], want: set[str]) -> bool:
    return await now() == want  # type: ignore[no-any-return]


def test_a_killed_worker_takes_its_members_out(gw: GatewayProcess) -> None:
    async def main() -> None:
        alice, bob, carol = await spread(gw, "alice", "bob", "carol")
        bob_pid = (await bob.call("t", "pid")).result  # type: ignore[union-attr]
        g = gid("kill")
        await ok(alice, "create_group", group_id=g, group_type="public")
        await ok(bob, "join_group", group_id=g)
        await ok(carol, "join_group", group_id=g)
        os.kill(bob_pid, signal.SIGKILL)

        async def bob_out() -> bool:
            return set((await ok(alice, "get_group_info", group_id=g))["members"]) == {"alice", "carol"}

        await eventually(bob_out)
        assert (await ok(alice, "handle_relay", group_id=g, message="still here"))["recipients_count"] == 2
        for c in (alice, carol):
            assert (await received(c))["message"] == "still here"

        async def three() -> bool:  # the worker is back (the other tests share the gateway)
            return len(children(gw.pid)) == 3

        await eventually(three, 10)
        await close_all(alice, bob, carol)

    asyncio.run(main())


def test_a_slow_member_is_bounded(gw: GatewayProcess) -> None:
    """A member that stops reading gets nothing more once its connection's buffer is full: the
    overflow is dropped and logged (never queued without bound), the others get everything, and
    it receives again once it reads."""

    async def main() -> None:
        alice, slow = await spread(gw, "alice", "slow")
        g = gid("slow")
        await ok(alice, "create_group", group_id=g, group_type="public")
        await ok(slow, "join_group", group_id=g)
        assert slow.transport is not None
        slow.transport.underlying_transport.pause_reading()
        big = "x" * 2900  # under string_max_bytes; the flood is ~ n × 3 KB
        n = 2000
        for start in range(0, n, 100):
            calls = [
                alice.call("chat", "handle_relay", {"group_id": g, "message": f"{i} {big}"})
                for i in range(start, start + 100)
            ]
            await asyncio.gather(*calls)
        got = [(await received(alice))["message"].split()[0] for _ in range(n)]
        assert got == [str(i) for i in range(n)]
        assert "relay_member_slow" in gw.read_stderr()
        slow.transport.underlying_transport.resume_reading()
        seen = 0
        while True:  # what fitted in the buffers arrives, the rest was dropped
            got_one = (await received(slow))["message"].split()[0]
            if got_one == "last":
                break
            seen += 1
            if seen == 1:  # caught up: the next message comes through
                await ok(alice, "handle_relay", group_id=g, message="last")
        assert 0 < seen < n
        await close_all(alice, slow)

    asyncio.run(main())


def test_python_sides(gw: GatewayProcess) -> None:
    """RelayClient on the control port (service nodes, scripts, the admin side) and the
    in-worker functions (a local function calling genapi.relay) act on the same groups."""

    async def main() -> None:
        bob, carol = await spread(gw, "bob", "carol")
        g = gid("ops")
        async with RelayClient(gw.control) as rc:
            assert (await rc.create_group(g, "strict_private", "system"))["roles"] == ["admin"]
            await ok(bob, "join_group", group_id=g)
            await ok(carol, "join_group", group_id=g)
            assert (await rc.accept_member(g, "system", "bob"))["status"] == "active"
            assert (await rc.accept_member(g, "system", "carol"))["status"] == "active"
            with pytest.raises(RelayError) as exc:
                await rc.accept_member(g, "bob", "carol")
            assert exc.value.code == "not_admin" and exc.value.text == RELAY_TEXTS["not_admin"]
            assert (await rc.handle_relay(g, "system", {"notice": 1}))["recipients_count"] == 3
            for c in (bob, carol):  # the system member has no connection: the others get it
                got = await received(c)
                assert got["from_user_id"] == "system" and got["message"] == {"notice": 1}
            # a local function in the gateway removes a member through genapi.relay
            resp = await bob.call("t", "kick", {"group_id": g, "user_id": "carol"})
            assert resp is not None and resp.result == {"group_id": g, "status": "left"}
            info = await rc.get_group_info(g)
            assert set(info["members"]) == {"system", "bob"} and info["members"]["system"]["connected"] is False
            stats = await rc.stats()
            assert stats["groups"] >= 1 and stats["relayed"] >= 1
            assert await rc.delete_group(g) == {"group_id": g, "status": "deleted"}
            with pytest.raises(RelayError) as exc:
                await rc.get_group_info(g)
            assert exc.value.code == "not_found"
        await close_all(bob, carol)

    asyncio.run(main())


def test_one_worker_is_its_own_authority() -> None:
    g = GatewayProcess(CONFIG)
    try:

        async def main() -> None:
            alice, _ = await user(g, "alice")
            bob, _ = await user(g, "bob")
            await ok(alice, "create_group", group_id="solo", group_type="private")
            await ok(bob, "join_group", group_id="solo")
            await ok(alice, "accept_member", group_id="solo", user_id="bob")
            assert (await ok(bob, "handle_relay", group_id="solo", message="hey"))["recipients_count"] == 2
            for c in (alice, bob):
                assert (await received(c))["message"] == "hey"
            await bob.close()
            async with RelayClient(g.control) as rc:

                async def bob_out() -> bool:
                    return set((await rc.get_group_info("solo"))["members"]) == {"alice"}

                await eventually(bob_out)
            await alice.close()

        asyncio.run(main())
    finally:
        g.stop()


def test_a_relay_function_missing_an_argument_is_refused_at_start() -> None:
    with pytest.raises(RuntimeError) as exc:
        GatewayProcess("""
[auth]
require_verified_user_id = false

[[functions]]
service = "chat"
request_type = "send"
mfa = "genapi.relay:handle_relay"
arg_types = { group_id = "string" }
""")
    assert "genapi.relay:handle_relay needs argument(s) message in arg_types and arg_orders" in str(exc.value)


def test_the_nine_operations_are_the_same_everywhere() -> None:
    """The operations are declared once (config.RELAY_ARGS: their client arguments); the rules
    (Groups), the in-worker functions and RelayClient each have exactly those, so a new or
    renamed operation cannot be half added."""
    from genapi.config import RELAY_ARGS
    from genapi.relay import groups, ops

    names = set(RELAY_ARGS)
    assert len(names) == 9
    assert {n for n in dir(ops) if ops.op_of(getattr(ops, n)) is not None} == names
    assert set(ops.CLIENT_ARGS) == names and ops.SEATING <= names
    assert set(groups._OPS) - {"stats"} == names  # stats: the admin side's figures, no group rule
    client = {n for n in dir(RelayClient) if not n.startswith("_")} - {"close", "stats"}
    assert client == names
