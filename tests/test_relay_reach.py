"""Who a relay reaches, with `--workers 2`, where the authority keeps each group's receivers
between messages and a worker builds each message's frame once per envelope (topic, join_ref)
shared by its members: every membership change after a relay (join, leave, accept, mute and
join again, a connection gone) is seen by the next relay, and members of one group on one
worker with different topics and join_refs each get the message in their own envelope. Real
gateway processes and sockets throughout."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from genapi.client import Client, Push
from support.configs import RELAY_CHAT
from support.gateway_proc import GatewayProcess, children
from support.rawclient import Raw

CONFIG = (
    RELAY_CHAT
    + """
[[functions]]
service = "t"
request_type = "pid"
mfa = "testapi:pid"
"""
)

TOPIC = "room:1"
WAIT_S = 10.0  # for a relayed message, or a membership change, on a loaded 2-core machine


@pytest.fixture(scope="module")
def gw() -> Any:
    g = GatewayProcess(CONFIG, extra_args=["--workers", "2"])
    yield g
    g.stop()


async def user(gw: GatewayProcess, name: str, topics: list[str], on: int | None = None) -> tuple[Client, int]:
    """`name` connected and joined to `topics` in order, on worker `on` when given (reconnecting
    until so)."""
    for _ in range(200):
        c = await Client.connect(gw.url, params={"token": "let-me-in", "user": name})
        for topic in topics:
            await c.join(topic)
        pid = (await c.call("t", "pid", topic=topics[-1])).result  # type: ignore[union-attr]
        if on is None or pid == on:
            return c, pid
        await c.close()
    raise AssertionError(f"could not land {name} on worker {on}")


async def ok(c: Client, op: str, topic: str = TOPIC, **args: Any) -> Any:
    resp = await c.call("chat", op, args, topic=topic)
    assert resp is not None and resp.success, resp
    return resp.result


async def relay(c: Client, group: str, message: str) -> int:
    """Sends `message` to `group`; how many members it reached."""
    return (await ok(c, "handle_relay", group_id=group, message=message))["recipients_count"]  # type: ignore[no-any-return]


async def next_push(c: Client) -> Push:
    return await asyncio.wait_for(c.pushes.get(), WAIT_S)


async def next_message(c: Client) -> Any:
    """The message of the next relayed push this client got."""
    push = await next_push(c)
    assert push.event == "phoenix_gen_api" and push.payload["success"] is True, push
    return push.payload["result"]["message"]


async def members(c: Client, group: str) -> set[str]:
    return set((await ok(c, "get_group_info", group_id=group))["members"])


async def until_members(c: Client, group: str, want: set[str]) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + WAIT_S
    while (got := await members(c, group)) != want:
        assert loop.time() < end, f"members {got}, not {want}"
        await asyncio.sleep(0.05)


def test_every_membership_change_after_a_relay_is_seen_by_the_next(gw: GatewayProcess) -> None:
    async def main() -> None:
        alice, a_pid = await user(gw, "alice", [TOPIC])
        bob, _ = await user(gw, "bob", [TOPIC], on=next(p for p in _workers(gw) if p != a_pid))
        carol, _ = await user(gw, "carol", [TOPIC])

        # a public group: join, leave, a connection gone, each after a relay
        await ok(alice, "create_group", group_id="pub", group_type="public")
        assert await relay(alice, "pub", "p1") == 1
        assert await next_message(alice) == "p1"
        await ok(bob, "join_group", group_id="pub")
        assert await relay(alice, "pub", "p2") == 2
        assert [await next_message(c) for c in (alice, bob)] == ["p2", "p2"]  # bob's first: p1 never reached him
        await ok(bob, "leave_group", group_id="pub")
        assert await relay(alice, "pub", "p3") == 1
        assert await next_message(alice) == "p3"
        await ok(carol, "join_group", group_id="pub")
        assert await relay(alice, "pub", "p4") == 2
        assert [await next_message(c) for c in (alice, carol)] == ["p4", "p4"]
        await carol.close()
        await until_members(alice, "pub", {"alice"})
        assert await relay(alice, "pub", "p5") == 1
        assert await next_message(alice) == "p5"

        # a strict_private group: accept, mute, join again (pending), accept, each after a relay
        await ok(alice, "create_group", group_id="strict", group_type="strict_private")
        assert (await ok(bob, "join_group", group_id="strict"))["status"] == "pending"
        assert await relay(alice, "strict", "s1") == 1
        assert await next_message(alice) == "s1"
        await ok(alice, "accept_member", group_id="strict", user_id="bob")
        assert await relay(alice, "strict", "s2") == 2
        assert [await next_message(c) for c in (alice, bob)] == ["s2", "s2"]  # not p3..p5 nor s1
        await ok(alice, "mute_member", group_id="strict", user_id="bob")
        assert await relay(alice, "strict", "s3") == 2  # muted members receive
        assert [await next_message(c) for c in (alice, bob)] == ["s3", "s3"]
        assert (await ok(bob, "join_group", group_id="strict"))["status"] == "pending"  # starts over
        assert await relay(alice, "strict", "s4") == 1
        assert await next_message(alice) == "s4"
        await ok(alice, "accept_member", group_id="strict", user_id="bob")
        assert await relay(alice, "strict", "s5") == 2
        assert [await next_message(c) for c in (alice, bob)] == ["s5", "s5"]  # s4 never reached bob
        assert alice.pushes.empty() and bob.pushes.empty()
        await asyncio.gather(alice.close(), bob.close())

    asyncio.run(main())


def test_members_on_one_worker_get_their_own_topic_and_join_ref(gw: GatewayProcess) -> None:
    """Seats in membership order on one worker: room:1 with join_ref A, room:2, room:1 with
    another join_ref, room:1 with join_ref A again: four envelopes, three frames, each right."""

    async def main() -> None:
        alice, pid = await user(gw, "alice", [TOPIC])
        bob, _ = await user(gw, "bob", ["room:2"], on=pid)
        carol, _ = await user(gw, "carol", ["lobby", TOPIC], on=pid)  # a later join: another join_ref
        dave, _ = await user(gw, "dave", [TOPIC], on=pid)
        seats = {alice: TOPIC, bob: "room:2", carol: TOPIC, dave: TOPIC}
        names = {alice: "alice", bob: "bob", carol: "carol", dave: "dave"}
        refs = {c: c._joined[topic] for c, topic in seats.items()}  # the join_ref each joined with
        assert refs[alice] == refs[dave] != refs[carol], refs

        await ok(alice, "create_group", group_id="envelopes", group_type="public")
        for c in (bob, carol, dave):
            await ok(c, "join_group", topic=seats[c], group_id="envelopes")
        for n in range(3):  # each message: the frames built for it, none kept from the one before
            assert await relay(dave, "envelopes", f"e{n}") == 4
            for c, topic in seats.items():
                push = await next_push(c)
                assert (push.topic, push.join_ref) == (topic, refs[c]), (names[c], push)
                assert push.payload["result"]["message"] == f"e{n}", push
        for c in seats:
            assert c.pushes.empty()
        await asyncio.gather(*(c.close() for c in seats))

    asyncio.run(main())


def test_a_v1_member_joined_without_a_join_ref_is_reached(gw: GatewayProcess) -> None:
    """Phoenix V1 (JSON objects) may join without a join_ref: the channel's join_ref is then
    null, and the member is still joined, so relayed messages reach it (and its calls are
    answered); once it leaves the topic they stop."""

    async def main() -> None:
        alice, _ = await user(gw, "alice", [TOPIC])
        await ok(alice, "create_group", group_id="v1", group_type="public")
        vic = await Raw.connect(gw.url, query="vsn=1.0.0&token=let-me-in&user=vic")
        vic.send({"topic": TOPIC, "event": "phx_join", "payload": {}, "ref": "1"})
        assert (await vic.recv(WAIT_S))["payload"] == {"status": "ok", "response": {}}
        join = {"request_id": "j", "service": "chat", "request_type": "join_group", "args": {"group_id": "v1"}}
        vic.send({"topic": TOPIC, "event": "phoenix_gen_api", "payload": join, "ref": "2"})
        push, reply = await vic.recv_n(2, WAIT_S)
        assert push["payload"]["success"] is True and reply["payload"]["status"] == "ok", (push, reply)
        assert await relay(alice, "v1", "hello v1") == 2
        assert await next_message(alice) == "hello v1"
        got = await vic.recv(WAIT_S)
        assert (got["topic"], got["event"], got["payload"]["result"]["message"]) == (
            TOPIC,
            "phoenix_gen_api",
            "hello v1",
        ), got
        vic.send({"topic": TOPIC, "event": "phx_leave", "payload": {}, "ref": "3"})
        left, closed = await vic.recv_n(2, WAIT_S)
        assert left["payload"]["status"] == "ok" and closed["event"] == "phx_close", (left, closed)
        await relay(alice, "v1", "after leaving")
        assert await next_message(alice) == "after leaving"
        assert await vic.nothing(0.5)
        await asyncio.gather(alice.close(), vic.close())

    asyncio.run(main())


def _workers(gw: GatewayProcess) -> set[int]:
    got = children(gw.pid)
    assert len(got) == 2, got
    return got
