"""`[relay] max_groups` and `max_members` through a real gateway (one worker: it holds the groups;
`--workers 2`: the master does): the group past max_groups and the member past max_members are
refused with errors.py's texts, and the refusal loses nothing (the existing groups and members
go on working, and a freed place can be taken again)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from genapi.client import Client, Push
from genapi.errors import RELAY_TEXTS, relay_group_full, relay_too_many_groups
from support.gateway_proc import GatewayProcess

MAX_GROUPS = 3
MAX_MEMBERS = 3

CONFIG = f"""
[auth]
callback = "testapi:auth_callback"
require_verified_user_id = false

[relay]
service = "chat"
max_groups = {MAX_GROUPS}
max_members = {MAX_MEMBERS}
"""

TOPIC = "room:1"


@pytest.fixture(scope="module", params=[1, 2], ids=["one-worker", "two-workers"])
def gw(request: Any) -> Any:
    g = GatewayProcess(CONFIG, extra_args=["--workers", str(request.param)])
    yield g
    assert g.stop() == 0


async def user(gw: GatewayProcess, name: str) -> Client:
    c = await Client.connect(gw.url, params={"token": "let-me-in", "user": name})
    await c.join(TOPIC)
    return c


async def ok(c: Client, op: str, **args: Any) -> Any:
    resp = await c.call("chat", op, args, raise_on_error=False)
    assert resp is not None and resp.success, resp
    return resp.result


async def refused(c: Client, op: str, **args: Any) -> str:
    resp = await c.call("chat", op, args, raise_on_error=False)
    assert resp is not None and not resp.success, resp
    return str(resp.error)


async def received(c: Client, timeout: float = 10) -> dict[str, Any]:
    push: Push = await asyncio.wait_for(c.pushes.get(), timeout)
    assert push.topic == TOPIC and push.payload["success"] is True, push
    return push.payload["result"]  # type: ignore[no-any-return]


def test_the_group_past_max_groups_is_refused_and_the_others_go_on(gw: GatewayProcess) -> None:
    async def main() -> None:
        alice, bob = await user(gw, "alice"), await user(gw, "bob")
        made = [f"bounded-{i}" for i in range(MAX_GROUPS)]
        for g in made:
            assert (await ok(alice, "create_group", group_id=g, group_type="public"))["status"] == "active"
        text = await refused(bob, "create_group", group_id="one-too-many", group_type="public")
        assert text == relay_too_many_groups(MAX_GROUPS).text
        assert text == f"Too many relay groups on this gateway ([relay] max_groups = {MAX_GROUPS})"
        # the refused group does not exist, and bob holds nothing in it
        assert await refused(bob, "get_group_info", group_id="one-too-many") == RELAY_TEXTS["not_found"]
        assert await refused(bob, "handle_relay", group_id="one-too-many", message="x") == RELAY_TEXTS["not_found"]
        # every existing group still works: joined, relayed to its members
        for g in made:
            assert await ok(bob, "join_group", group_id=g) == {"group_id": g, "status": "active"}
            assert await ok(bob, "handle_relay", group_id=g, message=g) == {"status": "relayed", "recipients_count": 2}
            for c in (alice, bob):
                got = await received(c)
                assert (got["group_id"], got["from_user_id"], got["message"]) == (g, "bob", g)
        # a deleted group frees its place: the next create fits, the one after is refused again
        assert await ok(alice, "delete_group", group_id=made[0]) == {"group_id": made[0], "status": "deleted"}
        await ok(bob, "create_group", group_id="one-too-many", group_type="private")
        assert (
            await refused(alice, "create_group", group_id="two-too-many", group_type="public")
            == relay_too_many_groups(MAX_GROUPS).text
        )
        # clean up for the next test: bob's group and alice's remaining ones
        await ok(bob, "delete_group", group_id="one-too-many")
        for g in made[1:]:
            await ok(alice, "delete_group", group_id=g)
        await asyncio.gather(alice.close(), bob.close())

    asyncio.run(main())


def test_the_member_past_max_members_is_refused_and_the_members_go_on(gw: GatewayProcess) -> None:
    async def main() -> None:
        names = ["alice", "bob", "carol", "dave"]
        alice, bob, carol, dave = [await user(gw, n) for n in names]
        g = "full-house"
        await ok(alice, "create_group", group_id=g, group_type="public")
        await ok(bob, "join_group", group_id=g)
        await ok(carol, "join_group", group_id=g)  # alice (admin), bob, carol: MAX_MEMBERS
        text = await refused(dave, "join_group", group_id=g)
        assert text == relay_group_full(MAX_MEMBERS).text
        assert text == f"Group is full ([relay] max_members = {MAX_MEMBERS})"
        # dave is not in the group: the members are the three, dave can neither send nor leave
        info = await ok(alice, "get_group_info", group_id=g)
        assert {u: m["status"] for u, m in info["members"].items()} == {
            "alice": "active",
            "bob": "active",
            "carol": "active",
        }
        assert await refused(dave, "handle_relay", group_id=g, message="x") == RELAY_TEXTS["not_member"]
        assert await refused(dave, "leave_group", group_id=g) == RELAY_TEXTS["user_not_in_group"]
        # the members still get every message, dave none
        assert await ok(carol, "handle_relay", group_id=g, message="still here") == {
            "status": "relayed",
            "recipients_count": 3,
        }
        for c in (alice, bob, carol):
            assert (await received(c))["message"] == "still here"
        # a member that leaves frees its place for dave; then the group is full again
        assert await ok(bob, "leave_group", group_id=g) == {"group_id": g, "status": "left"}
        assert await ok(dave, "join_group", group_id=g) == {"group_id": g, "status": "active"}
        assert await refused(bob, "join_group", group_id=g) == relay_group_full(MAX_MEMBERS).text
        assert (await ok(dave, "handle_relay", group_id=g, message="in"))["recipients_count"] == 3
        for c in (alice, carol, dave):
            assert (await received(c))["message"] == "in"
        assert all(c.pushes.empty() for c in (alice, bob, carol, dave))  # bob got nothing after leaving
        await ok(alice, "delete_group", group_id=g)
        await asyncio.gather(*(c.close() for c in (alice, bob, carol, dave)))

    asyncio.run(main())
