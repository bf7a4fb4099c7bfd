"""Relay groups as the host's one authority holds them: group types, member states and roles,
PhoenixGenApi's permission matrix, and who receives a relayed message.

One `Groups` per host: in the master of `genapi serve --workers N` (workers forward every
operation over their pipe, in order), in the worker itself with `--workers 1`. Everything here
is synchronous and does no I/O: a relay computes its recipients' places and queues the
deliveries (`outbox`), which the owner sends after answering the sender.

A member's place is (worker, seat): the worker process (its pid) and its seat there (one
client connection on one topic, `seats.py`). Members added from Python (service nodes, the
control port) have no place: they are members, but nothing reaches them.

| op | public | private | strict_private |
|---|---|---|---|
| join | active | pending | pending |
| accept | - | any active member | admin only |
| send | active | active | active (not muted) |
| receive | active + muted | active + muted | active + muted |
| mute / unmute | - | - | admin only |

genapi differs from the original where it matters on a multi-worker host: pending members
never receive (the original's registry reaches them too), a group whose last member left is
deleted (nothing could reach it again, and clients could otherwise fill the host with empty
groups), a client may read a non-public group's info only as a member, and a client deletes
a group only as its admin.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import msgspec

from genapi import log
from genapi.config import RelaySettings
from genapi.errors import (
    RelayError,
    internal,
    relay_argument,
    relay_error,
    relay_group_full,
    relay_group_id_too_long,
    relay_group_type,
    relay_too_many_groups,
)
from genapi.structs import Response

GROUP_TYPES = ("public", "private", "strict_private")
GROUP_ID_MAX_BYTES = 256  # ids are held for the group's life: a client's id is bounded
Place = tuple[int, int]  # (worker pid, seat token)
Deliver = Callable[[int, list[int], bytes], None]  # (worker, seat tokens, encoded Response)
Receivers = tuple[int, list[tuple[int, list[int]]]]  # (receiving members, [(worker, their seat tokens)])

_encode = msgspec.json.Encoder().encode


class Member:
    __slots__ = ("joined_at", "place", "roles", "status")

    def __init__(self, roles: tuple[str, ...], status: str, place: Place | None) -> None:
        self.roles = roles
        self.status = status
        self.place = place
        self.joined_at = time.time()

    def info(self) -> dict[str, Any]:
        return {
            "roles": list(self.roles),
            "status": self.status,
            "joined_at": _iso(self.joined_at),
            "connected": self.place is not None,
        }


class Group:
    __slots__ = ("created_at", "group_id", "group_type", "members", "receivers")

    def __init__(self, group_id: str, group_type: str) -> None:
        self.group_id = group_id
        self.group_type = group_type
        self.members: dict[str, Member] = {}
        self.created_at = time.time()
        self.receivers: Receivers | None = None  # who a relay reaches, kept until the members change

    def changed(self) -> None:
        """A member came, went or changed status: the receivers are computed again on the next relay."""
        self.receivers = None

    def reach(self) -> Receivers:
        """(how many members receive, [(worker, seat tokens)] of those with a place): computed
        once per change of the members, not per message. The token lists are never changed
        afterwards (a change makes new ones), so deliveries may hold them."""
        got = self.receivers
        if got is None:
            count = 0
            by_worker: dict[int, list[int]] = {}
            for member in self.members.values():
                if member.status == "pending":
                    continue
                count += 1
                if member.place is not None:
                    worker, token = member.place
                    tokens = by_worker.get(worker)
                    if tokens is None:
                        tokens = by_worker[worker] = []
                    tokens.append(token)
            got = self.receivers = (count, list(by_worker.items()))
        return got


class Groups:
    """The groups of one host and the places of their members."""

    def __init__(self, settings: RelaySettings, deliver: Deliver) -> None:
        self.max_groups = settings.max_groups
        self.max_members = settings.max_members
        self.deliver = deliver
        self.groups: dict[str, Group] = {}
        self.at: dict[Place, set[tuple[str, str]]] = {}  # place → its (group, user) memberships
        self.outbox: list[tuple[int, list[int], bytes]] = []
        self.relayed = 0  # messages relayed
        self.deliveries = 0  # deliveries sent to places (each reaches one connection)

    # ------------------------------------------------------------------ the one entry
    def apply(self, op: str, args: dict[str, Any], place: Place | None = None) -> dict[str, Any]:
        """Runs operation `op` with `args` (the names of the Python API); raises RelayError.
        `place` is where the acting user's connection sits, for create and join."""
        fn = _OPS.get(op)
        if fn is None:
            raise RelayError("unknown_op", f"no relay operation {op!r}")
        try:
            return fn(self, args, place)
        except KeyError as exc:
            raise relay_argument(op, str(exc.args[0])) from None
        except TypeError as exc:  # e.g. an unhashable group_id from Python
            raise RelayError("invalid_argument", f"{op}: {exc}") from None

    def answer(self, op: str, args: Any, place: Place | None = None) -> dict[str, Any] | RelayError:
        """`apply` for whoever relays an operation (a worker's pipe, the control port, a lone
        worker): its result, or the RelayError to answer with (a bug included, logged), never a raise."""
        try:
            if not isinstance(args, dict):
                raise RelayError("invalid_argument", f"{op}: the arguments must be an object")
            return self.apply(op, args, place)
        except RelayError as exc:
            return exc
        except Exception as exc:
            log.error("relay_op_crashed", exc_info=True, op=op)
            return RelayError("internal", internal(exc, False))

    def flush(self) -> None:
        """Sends the queued deliveries (after the sender was answered, so it reads its answer
        before its own copy)."""
        out, self.outbox = self.outbox, []
        for worker, tokens, payload in out:
            self.deliver(worker, tokens, payload)

    # ------------------------------------------------------------------ lifecycle
    def create_group(self, group_id: str, group_type: str, user_id: str, place: Place | None = None) -> dict[str, Any]:
        _need("create_group", group_id=group_id, user_id=user_id)
        if len(group_id) > GROUP_ID_MAX_BYTES or len(group_id.encode()) > GROUP_ID_MAX_BYTES:
            raise relay_group_id_too_long(GROUP_ID_MAX_BYTES)
        if group_type not in GROUP_TYPES:
            raise relay_group_type(group_type)
        if group_id in self.groups:
            raise relay_error("already_exists")
        if len(self.groups) >= self.max_groups:
            log.warning("relay_groups_full", max_groups=self.max_groups)
            raise relay_too_many_groups(self.max_groups)
        group = self.groups[group_id] = Group(group_id, group_type)
        self._seat(group, user_id, Member(("admin",), "active", place))
        log.info("relay_group_created", group=group_id, type=group_type, creator=user_id)
        return {"group_id": group_id, "group_type": group_type, "status": "active", "roles": ["admin"]}

    def delete_group(self, group_id: str, user_id: str | None = None) -> dict[str, Any]:
        """`user_id` given (a client): only an active admin of the group may; None: the admin side."""
        group = self._group(group_id)
        if user_id is not None:
            _admin(group, user_id)
        for uid in list(group.members):
            self._unseat(group, uid)
        self.groups.pop(group_id, None)
        log.info("relay_group_deleted", group=group_id, by=user_id)
        return {"group_id": group_id, "status": "deleted"}

    def get_group_info(self, group_id: str, user_id: str | None = None) -> dict[str, Any]:
        """`user_id` given (a client): a non-public group's info only for its members."""
        group = self._group(group_id)
        if user_id is not None and group.group_type != "public" and user_id not in group.members:
            raise relay_error("not_member")
        return {
            "group_id": group_id,
            "group_type": group.group_type,
            "created_at": _iso(group.created_at),
            "members": {uid: m.info() for uid, m in group.members.items()},
        }

    # ------------------------------------------------------------------ membership
    def join_group(self, group_id: str, user_id: str, place: Place | None = None) -> dict[str, Any]:
        _need("join_group", group_id=group_id, user_id=user_id)
        group = self._group(group_id)
        fresh = "active" if group.group_type == "public" else "pending"
        old = group.members.get(user_id)
        if old is None:
            if len(group.members) >= self.max_members:
                raise relay_group_full(self.max_members)
        elif old.status == "active" or old.status == fresh:
            raise relay_error("already_member")
        else:  # a muted member joining again starts over (the original's re-join)
            self._unseat(group, user_id)
        self._seat(group, user_id, Member(("member",), fresh, place))
        return {"group_id": group_id, "status": fresh}

    def leave_group(self, group_id: str, user_id: str) -> dict[str, Any]:
        group = self._group(group_id)
        if user_id not in group.members:
            raise relay_error("user_not_in_group")
        self._unseat(group, user_id)
        self._drop_if_empty(group)
        return {"group_id": group_id, "status": "left"}

    def accept_member(self, group_id: str, user_id: str, target: str) -> dict[str, Any]:
        """private: any active member accepts; strict_private: an admin only."""
        group = self._group(group_id)
        actor = group.members.get(user_id)
        if actor is None:
            raise relay_error("not_member")
        if actor.status != "active":
            raise relay_error("not_active")
        if group.group_type == "strict_private" and "admin" not in actor.roles:
            raise relay_error("not_admin")
        member = self._target(group, target)
        if member.status != "pending":
            raise relay_error("user_not_pending")
        member.status = "active"
        group.changed()
        return {"group_id": group_id, "user_id": target, "status": "active"}

    def mute_member(self, group_id: str, user_id: str, target: str) -> dict[str, Any]:
        return self._mute(group_id, user_id, target, "active", "muted", "cannot_mute")

    def unmute_member(self, group_id: str, user_id: str, target: str) -> dict[str, Any]:
        return self._mute(group_id, user_id, target, "muted", "active", "not_muted")

    def _mute(self, group_id: str, user_id: str, target: str, before: str, after: str, refusal: str) -> dict[str, Any]:
        """strict_private only, by an admin: `target` goes from `before` to `after`."""
        group = self._strict(group_id, user_id)
        member = self._target(group, target)
        if member.status != before:
            raise relay_error(refusal)
        member.status = after
        group.changed()
        return {"group_id": group_id, "user_id": target, "status": after}

    # ------------------------------------------------------------------ relay
    def handle_relay(self, group_id: str, user_id: str, message: Any, request_id: str = "relay") -> dict[str, Any]:
        """Queues one delivery per worker holding receivers (active and muted members with a
        place); answers {"status": "relayed", "recipients_count": N}."""
        group = self.groups.get(group_id)
        if group is None:
            raise relay_error("not_found")
        sender = group.members.get(user_id)
        if sender is None:
            raise relay_error("not_member")
        if sender.status != "active":
            raise relay_error("pending" if sender.status == "pending" else "muted")
        payload = _encode(  # kind "relay": a client tells it from the sender's own answer
            Response.relayed(
                request_id,
                {"group_id": group_id, "from_user_id": user_id, "message": message, "timestamp": _iso(time.time())},
            )
        )
        count, by_worker = group.reach()
        for worker, tokens in by_worker:
            self.outbox.append((worker, tokens, payload))
            self.deliveries += len(tokens)
        self.relayed += 1
        return {"status": "relayed", "recipients_count": count}

    # ------------------------------------------------------------------ places going away
    def drop_places(self, worker: int, tokens: Iterable[int]) -> int:
        """Seats closed on `worker` (a connection closed, a topic left): their members leave
        their groups (the original's auto-cleanup). Returns how many memberships ended."""
        n = 0
        for token in tokens:
            for group_id, user_id in self.at.pop((worker, token), ()):
                group = self.groups.get(group_id)
                if group is not None and (m := group.members.get(user_id)) is not None and m.place == (worker, token):
                    del group.members[user_id]
                    group.changed()
                    n += 1
                    self._drop_if_empty(group)
        if n:
            log.info("relay_members_left", worker=worker, memberships=n, reason="connection gone")
        return n

    def drop_worker(self, worker: int) -> int:
        """A worker died: every member seated there leaves its groups."""
        n = self.drop_places(worker, [t for (w, t) in self.at if w == worker])
        if n:
            log.warning("relay_worker_members_dropped", worker=worker, memberships=n)
        return n

    def stats(self) -> dict[str, Any]:
        return {
            "groups": len(self.groups),
            "members": sum(len(g.members) for g in self.groups.values()),
            "relayed": self.relayed,
            "deliveries": self.deliveries,
        }

    # ------------------------------------------------------------------ helpers
    def _group(self, group_id: str) -> Group:
        group = self.groups.get(group_id)
        if group is None:
            raise relay_error("not_found")
        return group

    def _strict(self, group_id: str, user_id: str) -> Group:
        group = self._group(group_id)
        if group.group_type != "strict_private":
            raise relay_error("not_strict_private")
        _admin(group, user_id)
        return group

    @staticmethod
    def _target(group: Group, target: str) -> Member:
        member = group.members.get(target)
        if member is None:
            raise relay_error("user_not_in_group")
        return member

    def _seat(self, group: Group, user_id: str, member: Member) -> None:
        group.members[user_id] = member
        group.changed()
        if member.place is not None:
            self.at.setdefault(member.place, set()).add((group.group_id, user_id))

    def _unseat(self, group: Group, user_id: str) -> None:
        member = group.members.pop(user_id, None)
        group.changed()
        if member is not None and member.place is not None:
            held = self.at.get(member.place)
            if held is not None:
                held.discard((group.group_id, user_id))
                if not held:
                    del self.at[member.place]

    def _drop_if_empty(self, group: Group) -> None:
        if not group.members and self.groups.get(group.group_id) is group:
            del self.groups[group.group_id]
            log.info("relay_group_deleted", group=group.group_id, reason="last member left")


def _admin(group: Group, user_id: str) -> None:
    member = group.members.get(user_id)
    if member is None or member.status != "active" or "admin" not in member.roles:
        raise relay_error("not_admin")


def _need(op: str, **values: Any) -> None:
    for name, value in values.items():
        if type(value) is not str or not value:
            raise relay_argument(op, name)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# op name → how `apply` calls it: the Python API's argument names
_OPS: dict[str, Callable[[Groups, dict[str, Any], Place | None], dict[str, Any]]] = {
    "create_group": lambda g, a, p: g.create_group(a["group_id"], a["group_type"], a["user_id"], p),
    "join_group": lambda g, a, p: g.join_group(a["group_id"], a["user_id"], p),
    "leave_group": lambda g, a, p: g.leave_group(a["group_id"], a["user_id"]),
    "accept_member": lambda g, a, p: g.accept_member(a["group_id"], a["user_id"], a["target"]),
    "mute_member": lambda g, a, p: g.mute_member(a["group_id"], a["user_id"], a["target"]),
    "unmute_member": lambda g, a, p: g.unmute_member(a["group_id"], a["user_id"], a["target"]),
    "get_group_info": lambda g, a, p: g.get_group_info(a["group_id"], a.get("user_id")),
    "delete_group": lambda g, a, p: g.delete_group(a["group_id"], a.get("user_id")),
    "handle_relay": lambda g, a, p: g.handle_relay(
        a["group_id"], a["user_id"], a["message"], a.get("request_id") or "relay"
    ),
    "stats": lambda g, a, p: g.stats(),
}
OPS = tuple(_OPS)
