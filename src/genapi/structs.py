"""The gateway's data: FunConfig (one callable API), Request (one client call), Response.

They are msgspec Structs so that config files, pushed configs and wire payloads are decoded and
encoded by one schema, as PhoenixGenApi's FunConfig/Request/Response are.
"""
from __future__ import annotations

from typing import Any

import msgspec

RESPONSE_TYPES = ("sync", "async", "stream", "none")
NODE_MODES = ("random", "hash", "round_robin")
TIMEOUT_MIN_MS = 100
TIMEOUT_MAX_MS = 300_000
RESERVED_VERSION = "0.0.0"


class Request(msgspec.Struct, array_like=False):
    """A decoded client call. `user_id`, `device_id` and `user_roles` come from the connection's
    identity (never the payload) wherever the identity has them."""

    request_id: str
    service: str
    request_type: str
    args: dict = {}
    version: str | None = None
    user_id: str | None = None
    device_id: str | None = None
    user_roles: list[str] | None = None


class Response(msgspec.Struct, rename={"async_": "async"}):
    """What the client receives; all seven keys are always on the wire."""

    request_id: str
    result: Any = None
    success: bool = True
    error: str | None = None
    async_: bool = False
    has_more: bool = False
    can_retry: bool = False

    @classmethod
    def sync(cls, request_id: str, result: Any) -> "Response":
        return cls(request_id, result)

    @classmethod
    def ack(cls, request_id: str) -> "Response":
        return cls(request_id, None, True, None, True)

    @classmethod
    def chunk(cls, request_id: str, result: Any, has_more: bool = True) -> "Response":
        return cls(request_id, result, True, None, True, has_more)

    @classmethod
    def stream_end(cls, request_id: str) -> "Response":
        return cls(request_id, None, True, None, True, False)

    @classmethod
    def fail(cls, request_id: str, error: str, can_retry: bool = False) -> "Response":
        return cls(request_id, None, False, error, False, False, can_retry)


class FunConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How the gateway calls one function: PhoenixGenApi's FunConfig, field for field.

    `nodes = "local"` with `mfa = "module:function"` (or `["module:function", [predefined args]]`)
    runs the function inside the gateway worker.
    """

    service: str
    request_type: str
    nodes: str | list[str]
    timeout: int | str
    mfa: str | list[Any]
    choose_node_mode: str | dict[str, str] = "random"
    arg_types: dict[str, Any] | None = None
    arg_orders: list[str] | str = []
    response_type: str = "sync"
    check_permission: bool | str | dict[str, Any] = False
    permission_callback: str | list[Any] | None = None
    version: str | None = None
    disabled: bool = False
    retry: int | float | dict[str, int] | None = None
    before_execute: str | list[Any] | None = None
    after_execute: str | list[Any] | None = None
    hook_timeout: int = 5000
    request_info: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.service, self.request_type)

    def timeout_ms(self) -> int | None:
        """The call timeout in ms, None for `infinity`."""
        return None if self.timeout == "infinity" else int(self.timeout)

    def errors(self) -> list[str]:
        """Every problem with this config, each naming the field (empty when valid)."""
        errs: list[str] = []
        if not self.request_type:
            errs.append("request_type: must be a non-empty string")
        if not self.service:
            errs.append("service: must be a non-empty string")
        if isinstance(self.nodes, str):
            if self.nodes != "local":
                errs.append(f'nodes: must be "local" or a list of node addresses, got "{self.nodes}"')
        elif not self.nodes or not all(isinstance(n, str) and n for n in self.nodes):
            errs.append("nodes: must be a non-empty list of node addresses")
        if isinstance(self.timeout, str):
            if self.timeout != "infinity":
                errs.append(f'timeout: must be an integer in ms or "infinity", got "{self.timeout}"')
        elif isinstance(self.timeout, bool) or not TIMEOUT_MIN_MS <= self.timeout <= TIMEOUT_MAX_MS:
            errs.append(f"timeout: must be between {TIMEOUT_MIN_MS} and {TIMEOUT_MAX_MS} ms "
                        f'or "infinity", got {self.timeout}')
        errs.extend(_callable_errors("mfa", self.mfa, required=True))
        errs.extend(_callable_errors("permission_callback", self.permission_callback))
        errs.extend(_callable_errors("before_execute", self.before_execute))
        errs.extend(_callable_errors("after_execute", self.after_execute))
        mode = self.choose_node_mode
        if isinstance(mode, str):
            if mode not in NODE_MODES:
                errs.append(f"choose_node_mode: must be one of {', '.join(NODE_MODES)}, "
                            f'{{hash = ARG}} or {{sticky = ARG}}, got "{mode}"')
        elif len(mode) != 1 or next(iter(mode)) not in ("hash", "sticky"):
            errs.append("choose_node_mode: a table must be {hash = ARG} or {sticky = ARG}")
        if self.response_type not in RESPONSE_TYPES:
            errs.append(f"response_type: must be one of {', '.join(RESPONSE_TYPES)}, "
                        f'got "{self.response_type}"')
        errs.extend(_permission_errors(self.check_permission))
        if isinstance(self.arg_orders, str) and self.arg_orders != "map":
            errs.append(f'arg_orders: must be a list of argument names or "map", got "{self.arg_orders}"')
        if self.version is not None and (not self.version or self.version == RESERVED_VERSION):
            errs.append(f'version: "{self.version}" is reserved; use a real version such as "1.0.0"')
        r = self.retry
        if r is not None:
            if isinstance(r, bool) or (isinstance(r, (int, float)) and r < 0):
                errs.append(f"retry: must be a non-negative number, {{same_node = N}} or {{all_nodes = N}}, got {r}")
            elif isinstance(r, dict) and (len(r) != 1 or next(iter(r)) not in ("same_node", "all_nodes")
                                          or not isinstance(next(iter(r.values())), int)
                                          or next(iter(r.values())) < 0):
                errs.append("retry: a table must be {same_node = N} or {all_nodes = N} with N >= 0")
        if isinstance(self.hook_timeout, bool) or self.hook_timeout <= 0:
            errs.append(f"hook_timeout: must be a positive number of ms, got {self.hook_timeout}")
        return errs


def _callable_errors(field: str, value: Any, required: bool = False) -> list[str]:
    if value is None:
        return [f'{field}: is required ("module:function")'] if required else []
    target = value
    if isinstance(value, list):
        if len(value) != 2 or not isinstance(value[1], list):
            return [f'{field}: the list form is ["module:function", [extra args]]']
        target = value[0]
    if not isinstance(target, str) or target.count(":") != 1 or not all(target.split(":")):
        return [f'{field}: must be "module:function", got {target!r}']
    return []


def _permission_errors(mode: Any) -> list[str]:
    if mode is False or mode == "any_authenticated":
        return []
    if isinstance(mode, dict) and len(mode) == 1:
        (kind, val), = mode.items()
        if kind == "arg" and isinstance(val, str) and val:
            return []
        if kind == "role" and isinstance(val, list) and val and all(isinstance(x, str) for x in val):
            return []
    return ['check_permission: must be false, "any_authenticated", {arg = NAME} or '
            f"{{role = [ROLES]}}, got {mode!r}"]


def split_target(value: str | list[Any]) -> tuple[str, list[Any]]:
    """`"mod:fn"` or `["mod:fn", [extra]]` → ("mod:fn", extra)."""
    if isinstance(value, list):
        return value[0], list(value[1])
    return value, []
