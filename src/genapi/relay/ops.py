"""Relay groups (PhoenixGenApi's `Relay`): a member sends a message to a group and every
receiving member's connection gets it, on whichever worker it landed.

Three ways in, one set of rules (`groups.py`):

- Clients call the operations as ordinary functions: a config names them as its `mfa`, e.g.
  `mfa = "genapi.relay:handle_relay"` with `arg_types = {group_id = "string", message = "string"}`.
  The caller is the connection's verified user; `create_group` and `join_group` seat the
  connection, on the topic it called from, as the member that receives. Client arguments:
  create_group(group_id, group_type), join_group / leave_group / get_group_info /
  delete_group(group_id), accept_member / mute_member / unmute_member(group_id, user_id of the
  target), handle_relay(group_id, message).
- Python inside a gateway worker (hooks, local functions) awaits the functions below with the
  acting user given: `await relay.join_group("room", "alice")`.
- Python anywhere else (service nodes, scripts, the admin side) uses `RelayClient` against the
  gateway's control port, with the same names and arguments.

Members added from Python have no connection: they count as members but nothing reaches them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from genapi._core.callee import Callee
from genapi.config import RELAY_ARGS
from genapi.errors import RelayError, relay_error
from genapi.host.control_client import ControlClient
from genapi.relay.seats import Seats
from genapi.structs import FunConfig, Response

# client argument names per operation (what a config's arg_orders must name)
CLIENT_ARGS: dict[str, tuple[str, ...]] = {op: tuple(args) for op, args in RELAY_ARGS.items()}
SEATING = frozenset({"create_group", "join_group"})  # these seat the caller's connection

# The one per-process registration of wiring left in the package, on purpose: the functions
# below are named by import path (`await genapi.relay.join_group(...)`) from user code (hooks,
# local functions), which passes no context but the acting user, so they cannot be handed the
# worker's seats. The worker's composition root (gateway/worker.py `serve`) registers them once
# at startup; everything else reaches the seats through constructors (RelayCallee via the Binder).
_worker_seats: Seats | None = None


def register_worker(seats: Seats) -> None:
    """Makes `seats` (this gateway worker's) the ones the awaitable operations act through.
    Called once, by the worker's composition root."""
    global _worker_seats
    _worker_seats = seats


def _resolver(fut: asyncio.Future[Any]) -> Callable[[Any], None]:
    """The link's callback for an awaited operation (a no-op once the waiter was cancelled)."""

    def done(out: Any) -> None:
        if not fut.done():
            fut.set_result(out)

    return done


async def _ask(op: str, **args: Any) -> dict[str, Any]:
    """One operation through this worker's link to the groups' authority."""
    seats = _worker_seats
    if seats is None or seats.link is None:
        raise RuntimeError(
            f"genapi.relay.{op} runs inside a gateway worker; elsewhere use "
            "genapi.relay.RelayClient (the gateway's control port)"
        )
    fut = asyncio.get_running_loop().create_future()
    seats.link.ask(op, args, None, _resolver(fut))
    out = await fut
    if isinstance(out, RelayError):
        raise out
    return cast(dict[str, Any], out)


async def create_group(group_id: str, group_type: str, user_id: str) -> dict[str, Any]:
    """A group with `user_id` as its active admin; raises RelayError (`already_exists`, ...)."""
    return await _ask("create_group", group_id=group_id, group_type=group_type, user_id=user_id)


async def join_group(group_id: str, user_id: str) -> dict[str, Any]:
    return await _ask("join_group", group_id=group_id, user_id=user_id)


async def leave_group(group_id: str, user_id: str) -> dict[str, Any]:
    return await _ask("leave_group", group_id=group_id, user_id=user_id)


async def accept_member(group_id: str, user_id: str, target: str) -> dict[str, Any]:
    """`user_id` accepts pending member `target`."""
    return await _ask("accept_member", group_id=group_id, user_id=user_id, target=target)


async def mute_member(group_id: str, user_id: str, target: str) -> dict[str, Any]:
    return await _ask("mute_member", group_id=group_id, user_id=user_id, target=target)


async def unmute_member(group_id: str, user_id: str, target: str) -> dict[str, Any]:
    return await _ask("unmute_member", group_id=group_id, user_id=user_id, target=target)


async def get_group_info(group_id: str) -> dict[str, Any]:
    return await _ask("get_group_info", group_id=group_id)


async def delete_group(group_id: str) -> dict[str, Any]:
    return await _ask("delete_group", group_id=group_id)


async def handle_relay(group_id: str, user_id: str, message: Any) -> dict[str, Any]:
    """Sends `message` to the group as `user_id` (who must be an active member)."""
    return await _ask("handle_relay", group_id=group_id, user_id=user_id, message=message)


for _fn in (
    create_group,
    join_group,
    leave_group,
    accept_member,
    mute_member,
    unmute_member,
    get_group_info,
    delete_group,
    handle_relay,
):
    setattr(_fn, "relay_op", _fn.__name__)  # noqa: B010  # how the pipeline knows an mfa names one
del _fn


def op_of(fn: Any) -> str | None:
    """The relay operation a loaded `mfa` target is, or None."""
    name = getattr(fn, "relay_op", None)
    return name if isinstance(name, str) and name in CLIENT_ARGS else None


class RelayCallee(Callee):
    """Runs a relay operation for a client: the acting user is the connection's, the seat its
    connection and topic. Answered by the authority's callback, without a Task."""

    def __init__(self, op: str, config: FunConfig, seats: Seats | None) -> None:
        super().__init__(config.timeout_ms())
        if config.response_type == "stream":
            raise ValueError(f'genapi.relay:{op} answers once: response_type must be "sync", "async" or "none"')
        types = config.arg_types or {}
        orders = config.arg_orders
        names = list(types) if not orders and len(types) == 1 else ([] if orders == "map" else list(orders))
        missing = [a for a in CLIENT_ARGS[op] if a not in names]
        if missing:
            raise ValueError(f"genapi.relay:{op} needs argument(s) {', '.join(missing)} in arg_types and arg_orders")
        self.op = op
        self.index = [names.index(a) for a in CLIENT_ARGS[op]]
        self.seats = seats

    def _args(self, reply: Any, request: Any, args: list[Any]) -> tuple[dict[str, Any], int | None]:
        user = request.user_id
        if type(user) is not str or not user:
            raise relay_error("no_user")
        got = [args[i] for i in self.index]
        op = self.op
        out: dict[str, Any] = {"group_id": got[0], "user_id": user}
        if op == "create_group":
            out["group_type"] = got[1]
        elif op == "handle_relay":
            out["message"] = got[1]
            out["request_id"] = request.request_id
        elif len(got) == 2:  # accept / mute / unmute: the target
            out["target"] = got[1]
        token = None
        if op in SEATING and reply is not None and self.seats is not None:
            token = self.seats.seat(reply)
        return out, token

    def _link(self) -> Any:
        if self.seats is None or self.seats.link is None:
            raise relay_error("unavailable")
        return self.seats.link

    def start(self, reply: Any, request: Any, args: list[Any]) -> None:
        rid = request.request_id
        try:
            link = self._link()
            op_args, token = self._args(reply, request, args)
        except RelayError as exc:
            reply.finish(Response.fail(rid, exc.text))
            return

        def done(out: Any) -> None:
            reply.finish(
                Response.fail(rid, out.text, out.can_retry) if isinstance(out, RelayError) else Response(rid, out)
            )

        link.ask(self.op, op_args, token, done)

    async def call(self, args: list[Any], request: Any = None, plan: Any = None, reply: Any = None) -> Any:
        link = self._link()
        op_args, token = self._args(reply, request, args)
        fut = asyncio.get_running_loop().create_future()
        link.ask(self.op, op_args, token, _resolver(fut))
        out = await fut
        if isinstance(out, RelayError):
            raise out
        return out


class RelayClient:
    """The relay operations over a gateway's control port, for service nodes, scripts and the
    admin side (authenticated with the cluster secret). Use `async with RelayClient(...)`."""

    def __init__(
        self, control: str = "127.0.0.1:4001", secret: str | bytes | None = None, timeout_s: float = 10.0
    ) -> None:
        self.control = control
        self.client = ControlClient(control, secret, name="genapi-relay", timeout_s=timeout_s)
        self.secret = self.client.secret
        self.timeout_s = timeout_s

    async def __aenter__(self) -> RelayClient:
        await self.client.connect()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    async def _ask(self, op: str, **args: Any) -> dict[str, Any]:
        out = await self.client.relay(op, args)
        if isinstance(out, dict) and "error" in out:
            raise RelayError(str(out["error"]), str(out.get("text")), bool(out.get("can_retry")))
        return cast(dict[str, Any], out)

    async def create_group(self, group_id: str, group_type: str, user_id: str) -> dict[str, Any]:
        return await self._ask("create_group", group_id=group_id, group_type=group_type, user_id=user_id)

    async def join_group(self, group_id: str, user_id: str) -> dict[str, Any]:
        return await self._ask("join_group", group_id=group_id, user_id=user_id)

    async def leave_group(self, group_id: str, user_id: str) -> dict[str, Any]:
        return await self._ask("leave_group", group_id=group_id, user_id=user_id)

    async def accept_member(self, group_id: str, user_id: str, target: str) -> dict[str, Any]:
        return await self._ask("accept_member", group_id=group_id, user_id=user_id, target=target)

    async def mute_member(self, group_id: str, user_id: str, target: str) -> dict[str, Any]:
        return await self._ask("mute_member", group_id=group_id, user_id=user_id, target=target)

    async def unmute_member(self, group_id: str, user_id: str, target: str) -> dict[str, Any]:
        return await self._ask("unmute_member", group_id=group_id, user_id=user_id, target=target)

    async def get_group_info(self, group_id: str) -> dict[str, Any]:
        return await self._ask("get_group_info", group_id=group_id)

    async def delete_group(self, group_id: str) -> dict[str, Any]:
        return await self._ask("delete_group", group_id=group_id)

    async def handle_relay(self, group_id: str, user_id: str, message: Any) -> dict[str, Any]:
        return await self._ask("handle_relay", group_id=group_id, user_id=user_id, message=message)

    async def stats(self) -> dict[str, Any]:
        """Groups, members, messages relayed and deliveries on the host."""
        return await self._ask("stats")
