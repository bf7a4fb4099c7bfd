"""The gateway's data: FunConfig (one callable API), Request (one client call), Response.

They are msgspec Structs so that config files, pushed configs and wire payloads are decoded and
encoded by one schema, as PhoenixGenApi's FunConfig/Request/Response are.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from genapi.address import AddressError, parse_address
from genapi.schema import literal_values, render, table_problems

TIMEOUT_MIN_MS = 100
TIMEOUT_MAX_MS = 300_000
DEFAULT_TIMEOUT_MS = 5000
RESERVED_VERSION = "0.0.0"


class Request(msgspec.Struct, gc=False):
    """A decoded client call. `user_id`, `device_id` and `user_roles` come from the connection's
    identity (never the payload) wherever the identity has them. One per call and never part of
    a cycle, so it is kept out of the garbage collector (gc=False), as is Response."""

    request_id: str
    service: str
    request_type: str
    args: dict = {}
    version: str | None = None
    user_id: str | None = None
    device_id: str | None = None
    user_roles: list[str] | None = None
    traceparent: str | None = None  # W3C trace context, passed on to service nodes (trace.py)


class Response(msgspec.Struct, rename={"async_": "async"}, gc=False, tag_field="kind", tag="answer"):
    """What the client receives: the reference's seven keys, always on the wire, and `kind`, which
    says what the push is (genapi's marker, beside them: a client switches on it). One subclass
    per kind; msgspec writes the kind as a constant prefix of the encoded object (a tag), so the
    marker costs an answer nothing measurable. `Response(request_id, result)` is an answer."""

    request_id: str
    result: Any = None
    success: bool = True
    error: str | None = None
    async_: bool = False
    has_more: bool = False
    can_retry: bool = False

    @property
    def kind(self) -> str:
        """answer, error, ack, start, chunk, last, end or relay (PUSH_KINDS)."""
        return self.__struct_config__.tag  # type: ignore[return-value]

    @classmethod
    def sync(cls, request_id: str, result: Any) -> Response:
        return Response(request_id, result)

    @classmethod
    def ack(cls, request_id: str) -> Response:
        return Ack(request_id, None, True, None, True)

    @classmethod
    def start(cls, request_id: str) -> Response:
        return StreamStart(request_id, "init", True, None, True, True)

    @classmethod
    def chunk(cls, request_id: str, result: Any, has_more: bool = True) -> Response:
        if has_more:
            return Chunk(request_id, result, True, None, True, True)
        return LastChunk(request_id, result, True, None, True, False)

    @classmethod
    def stream_end(cls, request_id: str) -> Response:
        return StreamEnd(request_id, None, True, None, True, False)

    @classmethod
    def fail(cls, request_id: str, error: str, can_retry: bool = False) -> Response:
        return Failure(request_id, None, False, error, False, False, can_retry)

    @classmethod
    def relayed(cls, request_id: str, message: dict[str, Any]) -> Response:
        return Relayed(request_id, message)


class Failure(Response, tag="error"):
    """A call failed (`error`, `can_retry`); it ends the call, a stream included."""


class Ack(Response, tag="ack"):
    """An async call was accepted: its answer (or error) follows."""


class StreamStart(Response, tag="start"):
    """A stream began (the reference's first chunk, `result: "init"`): chunks follow."""


class Chunk(Response, tag="chunk"):
    """One chunk of a stream (`has_more: true`)."""


class LastChunk(Response, tag="last"):
    """A stream's last chunk (`has_more: false`): the stream is over."""


class StreamEnd(Response, tag="end"):
    """A stream is over (`result: null`)."""


class Relayed(Response, tag="relay"):
    """A message relayed to a group this connection is a member of: `result` is {group_id,
    from_user_id, message, timestamp}; `request_id` is the sender's call (the reference's)."""


RESPONSE_KINDS: dict[str, type[Response]] = {
    c.__struct_config__.tag: c  # type: ignore[misc]
    for c in (Response, Failure, Ack, StreamStart, Chunk, LastChunk, StreamEnd, Relayed)
}
PUSH_KINDS = tuple(RESPONSE_KINDS)  # every value of a push's "kind"


# The rules of a function config, in its types; schema.py words what fails. No Meta(pattern=...):
# msgspec 0.22.0 segfaults converting a non-matching str against `Annotated[str, Meta(pattern=...)] | list`,
# so "module:function" is checked by _target_rule below.
ResponseType = Literal["sync", "async", "stream", "none"]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
_NODES = 'must be "local", a non-empty list of "host:port" node addresses, or a resolver "module:function"'
Nodes = Annotated[NonEmpty | Annotated[list[NonEmpty], msgspec.Meta(min_length=1)], msgspec.Meta(description=_NODES)]
Timeout = Annotated[
    Annotated[int, msgspec.Meta(ge=TIMEOUT_MIN_MS, le=TIMEOUT_MAX_MS)] | Literal["infinity"],
    msgspec.Meta(description=f'must be between {TIMEOUT_MIN_MS} and {TIMEOUT_MAX_MS} ms or "infinity"'),
]
_ONE = msgspec.Meta(min_length=1, max_length=1)  # a one-key table such as {hash = ARG}
_TARGET = 'must be "module:function" or ["module:function", [extra args]]'
Target = Annotated[
    str | Annotated[list[Any], msgspec.Meta(min_length=2, max_length=2)], msgspec.Meta(description=_TARGET)
]
# The node selection modes as help text, written once (the compiled selector, `_core/select.pyx`, says it too).
NODE_MODES = "random, hash, round_robin, {hash = ARG}, {sticky = ARG}"
_NODE_MODE = f'must be one of {NODE_MODES} or a custom "module:function"'
NodeMode = Annotated[
    NonEmpty | Annotated[dict[Literal["hash", "sticky"], NonEmpty], _ONE], msgspec.Meta(description=_NODE_MODE)
]
NODE_MODE_NAMES = ("random", "hash", "round_robin")
ArgOrders = Annotated[list[str] | Literal["map"], msgspec.Meta(description='must be a list of argument names or "map"')]
_PERMISSION = 'must be false, "any_authenticated", {arg = NAME} or {role = [ROLES]}'
_Roles = Annotated[list[str], msgspec.Meta(min_length=1)]
Permission = Annotated[
    bool | Literal["any_authenticated"] | Annotated[dict[Literal["arg", "role"], NonEmpty | _Roles], _ONE],
    msgspec.Meta(description=_PERMISSION),
]
_NonNegative = msgspec.Meta(ge=0)
Retry = Annotated[
    Annotated[int, _NonNegative]
    | Annotated[float, _NonNegative]
    | Annotated[dict[Literal["same_node", "all_nodes"], Annotated[int, _NonNegative]], _ONE]
    | None,
    msgspec.Meta(description="must be a non-negative number, {same_node = N} or {all_nodes = N}"),
]
HookTimeout = Annotated[int, msgspec.Meta(gt=0, description="must be a positive number of ms")]

RESPONSE_TYPES = literal_values(ResponseType)


class FunConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How the gateway calls one function: PhoenixGenApi's FunConfig, field for field.

    `nodes = "local"` (the default) with `mfa = "module:function"` (or `["module:function",
    [predefined args]]`) runs the function inside the gateway worker, with `timeout` ms (default
    5000) to answer. The rules of each field are in its type.
    """

    service: NonEmpty
    request_type: NonEmpty
    mfa: Target
    nodes: Nodes = "local"
    timeout: Timeout = DEFAULT_TIMEOUT_MS
    choose_node_mode: NodeMode = "random"
    arg_types: dict[str, Any] | None = None
    arg_orders: ArgOrders = []
    response_type: ResponseType = "sync"
    check_permission: Permission = False
    permission_callback: Target | None = None
    version: NonEmpty | None = None
    disabled: bool = False
    retry: Retry = None
    before_execute: Target | None = None
    after_execute: Target | None = None
    hook_timeout: HookTimeout = 5000
    request_info: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.service, self.request_type)

    def timeout_ms(self) -> int | None:
        """The call timeout in ms, None for `infinity`."""
        return None if self.timeout == "infinity" else int(self.timeout)

    def gateway_targets(self) -> list[tuple[str, str]]:
        """The `(field, "module:function")` pairs the gateway itself imports and runs for this
        function (not `mfa` of a function on nodes, which runs there): hooks, the permission
        callback, a custom node mode, a node resolver, and `mfa` when `nodes = "local"`."""
        out = []
        for field in ("before_execute", "after_execute", "permission_callback"):
            value = getattr(self, field)
            if value is not None:
                out.append((field, split_target(value)[0]))
        if isinstance(self.choose_node_mode, str) and _is_target(self.choose_node_mode):
            out.append(("choose_node_mode", self.choose_node_mode))
        if self.nodes == "local":
            out.append(("mfa", split_target(self.mfa)[0]))
        elif isinstance(self.nodes, str):
            out.append(("nodes", self.nodes))
        return out

    def errors(self) -> list[str]:
        """Every problem with this config, each `"field: ..."` (empty when valid). Checks the
        values against the field types, so a config built in code (or pushed) is held to the
        same rules as one read from a file; then the few rules a type cannot say."""
        problems = dict(table_problems(FunConfig, msgspec.structs.asdict(self), FUN_CONFIG_RULES)[0])
        return [problems[name] for name in _REPORT_ORDER if name in problems]


def _target_rule(value: Any) -> str | None:
    """A target is `"module:function"`, alone or first in `[target, [extra args]]`."""
    if value is None:
        return None
    target, extra = (value[0], value[1]) if isinstance(value, list) else (value, [])
    if isinstance(target, str) and target.count(":") == 1 and all(target.split(":")) and isinstance(extra, list):
        return None
    return f"{_TARGET}, got {render(value)}"


def _is_target(value: Any) -> bool:
    return isinstance(value, str) and value.count(":") == 1 and all(value.split(":"))


def _nodes_rule(nodes: Any) -> str | None:
    """ "local", a resolver "module:function", or "host:port" addresses."""
    if nodes == "local" or (isinstance(nodes, str) and _is_target(nodes) and not nodes.split(":")[1].isdigit()):
        return None
    if isinstance(nodes, list):
        return next(filter(None, map(address_problem, nodes)), None)
    return f"{_NODES}, got {render(nodes)}"


def function_label(i: int, raw: Any) -> str:
    """`[[functions]] #i (service.request_type)`: how every problem of one entry is named."""
    if isinstance(raw, FunConfig):
        raw = {"service": raw.service, "request_type": raw.request_type}
    label = f"[[functions]] #{i}"
    if isinstance(raw, dict) and raw.get("service") and raw.get("request_type"):
        label += f" ({raw['service']}.{raw['request_type']})"
    return label


def version_words(version: str | None) -> str:
    """A function's version in the user's words: "version 1.0.0", or "unversioned" (never the
    reserved "0.0.0" a client may ask for, nor a dash)."""
    return "unversioned" if version is None else f"version {version}"


def address_problem(node: Any) -> str | None:
    """A node address's problem in the words of `genapi.address` (the one parser), or None."""
    try:
        parse_address(node, "node address", port=7001)
    except AddressError as exc:
        return str(exc)
    return None


def _node_mode_rule(mode: Any) -> str | None:
    if isinstance(mode, dict) or mode in NODE_MODE_NAMES or _is_target(mode):
        return None
    return f"{_NODE_MODE}, got {render(mode)}"


def _permission_rule(mode: Any) -> str | None:
    """true is no mode; {arg = NAME} names one argument, {role = [..]} lists roles."""
    if mode is False or mode == "any_authenticated":
        return None
    if isinstance(mode, dict):
        ((kind, val),) = mode.items()
        if (kind == "arg") == isinstance(val, str):
            return None
    return f"{_PERMISSION}, got {render(mode)}"


def _version_rule(version: str | None) -> str | None:
    if version == RESERVED_VERSION:
        return f'"{version}" is reserved; use a real version such as "1.0.0"'
    return None


FUN_CONFIG_RULES = (
    ("mfa", _target_rule),
    ("permission_callback", _target_rule),
    ("before_execute", _target_rule),
    ("after_execute", _target_rule),
    ("check_permission", _permission_rule),
    ("version", _version_rule),
    ("nodes", _nodes_rule),
    ("choose_node_mode", _node_mode_rule),
)
# the order errors() has always reported in
_REPORT_ORDER = (
    "request_type",
    "service",
    "nodes",
    "timeout",
    "mfa",
    "permission_callback",
    "before_execute",
    "after_execute",
    "choose_node_mode",
    "response_type",
    "check_permission",
    "arg_orders",
    "version",
    "retry",
    "hook_timeout",
    "arg_types",
    "disabled",
    "request_info",
)


def split_target(value: str | list[Any]) -> tuple[str, list[Any]]:
    """`"mod:fn"` or `["mod:fn", [extra]]` → ("mod:fn", extra)."""
    if isinstance(value, list):
        return value[0], list(value[1])
    return value, []
