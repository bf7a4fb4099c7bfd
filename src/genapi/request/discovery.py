"""API discovery: `genapi.list_apis` answers the functions the caller may call, each with its
arguments as a JSON Schema (draft 2020-12), so clients can build forms, typed stubs or checks
without reading the gateway's config.

The schemas say what the gateway's validator (`_core/validate.pyx`) accepts, limits included
(the `[gateway]` defaults where a spec sets none). JSON Schema cannot say two things exactly:
`maxLength` counts characters where the gateway counts UTF-8 bytes (exact for ASCII; the byte
limit is also given as `x-maxBytes`), and `format: date-time` is an annotation (the gateway
parses with Python's `datetime.fromisoformat`). `x-genapi-type` names the gateway's own type.

Who sees what (the permission rules of `_core/dispatch.pyx`, judged on the caller's identity):
`check_permission = false` → everyone; `"any_authenticated"` and `{arg = NAME}` → callers with a
user (the argument is checked per call: the entry says `per_call: {"arg": NAME}`); `{role = [..]}`
→ callers with one of the roles; a `permission_callback` → everyone (it can only decide on a
call: `per_call: "callback"`). Disabled versions and list_apis itself are never listed.

One entry per (service, request_type) and shape: versions whose response_type, arguments and
per-call check are the same share an entry (`versions`, ascending; null = unversioned);
`latest` marks the entry holding the version a call without `version` runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import msgspec

from genapi import log
from genapi._core.callee import Callee
from genapi._core.validate import Limits, Validator
from genapi.config import DISCOVERY_SERVICE, DISCOVERY_TARGET
from genapi.request.registry import Registry, version_key
from genapi.structs import FunConfig, Response, split_target

DRAFT = "https://json-schema.org/draft/2020-12/schema"
# the sizes a spec's tuple form ["type", n] sets (as validate.pyx reads it)
_TUPLE_OPTION = {
    "string": "max_bytes",
    "list": "max_items",
    "list_string": "max_items",
    "list_num": "max_items",
    "list_uuid": "max_items",
    "list_map": "max_items",
    "map": "max_items",
}
_UUID = {
    "type": "string",
    "minLength": 36,
    "maxLength": 36,  # the lengths: "$" also matches before a final "\n"
    "pattern": "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
    "format": "uuid",
}


@dataclass(frozen=True)
class Caller:
    """Who asks: the connection's verified user (None when anonymous) and roles."""

    user_id: str | None = None
    roles: Sequence[str] = ()


def _scalar(max_bytes: int) -> dict[str, Any]:
    """An item of `list` or a value of a map: no nesting; strings up to the gateway's limit."""
    return {"type": ["string", "number", "boolean", "null"], "maxLength": max_bytes, "x-maxBytes": max_bytes}


def _normalise(raw: Any) -> tuple[str, dict[str, Any]]:
    """The three spec forms as (type, options): "t", ["t", n], {type = "t", ...}."""
    if isinstance(raw, str):
        return raw, {}
    if isinstance(raw, (list, tuple)):
        return raw[0], {_TUPLE_OPTION[raw[0]]: raw[1]}
    opts = dict(raw)
    return opts.pop("type"), opts


def _type_schema(kind: str, opts: dict[str, Any], limits: Limits) -> dict[str, Any]:
    string_max = limits.string_max_bytes
    items = opts.get("max_items", limits.map_max_items if kind == "map" else limits.list_max_items)
    if kind == "string":
        size = opts.get("max_bytes", string_max)
        return {"type": "string", "maxLength": size, "x-maxBytes": size}
    if kind == "num":
        return {"type": "number"}
    if kind == "boolean":
        return {"type": "boolean"}
    if kind == "uuid":
        return dict(_UUID)
    if kind == "datetime":
        return {"type": "string", "format": "date-time", "description": "ISO 8601 with a UTC offset"}
    if kind == "naive_datetime":
        return {"type": "string", "description": "ISO 8601 (an offset is dropped)"}
    if kind == "map":
        out: dict[str, Any] = {"type": "object", "maxProperties": items, "additionalProperties": _scalar(string_max)}
        if opts.get("required"):
            out["required"] = list(opts["required"])
        if opts.get("accept"):  # an empty accept list is no restriction
            out["propertyNames"] = {"enum": sorted(opts["accept"])}
        return out
    if kind == "list":
        return {"type": "array", "maxItems": items, "items": _scalar(string_max)}
    if kind == "list_string":
        size = opts.get("max_item_bytes", string_max)
        return {"type": "array", "maxItems": items, "items": {"type": "string", "maxLength": size, "x-maxBytes": size}}
    if kind == "list_num":
        return {"type": "array", "maxItems": items, "items": {"type": "number"}}
    if kind == "list_uuid":
        return {"type": "array", "maxItems": items, "items": dict(_UUID)}
    if kind == "list_map":
        item = {"type": "object", "maxProperties": limits.map_max_items, "additionalProperties": _scalar(string_max)}
        return {"type": "array", "maxItems": items, "items": item}
    return {"not": {"type": "null"}}  # any: but null only with allow_nil


def arg_schema(arg_types: dict[str, Any] | None, arg_orders: list[str] | str | None, limits: Limits) -> dict[str, Any]:
    """The JSON Schema of a request's `args` under these specs. Raises ValueError (naming the
    argument) for a spec the gateway's validator refuses, so it never describes one it would not run."""
    Validator(arg_types, arg_orders, "", limits)
    specs = arg_types or {}
    names = list(arg_orders) if isinstance(arg_orders, list) and arg_orders else list(specs)
    properties: dict[str, Any] = {}
    required = []
    for name in names:
        kind, opts = _normalise(specs[name])
        prop = _type_schema(kind, opts, limits)
        nil = opts.get("allow_nil", opts.get("allow_nil?", False))
        if nil and kind == "any":
            prop = {}
        elif nil:
            prop["type"] = [*([prop["type"]] if isinstance(prop["type"], str) else prop["type"]), "null"]
        prop["x-genapi-type"] = kind
        default = opts.get("default_value")
        if default is not None:  # None is no default, as in the reference
            prop["default"] = msgspec.to_builtins(default)
        elif not nil:
            required.append(name)
        properties[name] = prop
    out: dict[str, Any] = {"$schema": DRAFT, "type": "object", "properties": properties}
    if required:
        out["required"] = required
    out["additionalProperties"] = False
    return out


def is_discovery(cfg: FunConfig) -> bool:
    return split_target(cfg.mfa)[0] == DISCOVERY_TARGET


def catalog(configs: Iterable[FunConfig], limits: Limits) -> list[tuple[FunConfig, dict[str, Any]]]:
    """Every enabled function with its argument schema, ordered by service, request_type and
    version: the caller-independent part of a listing, built once per registry change."""
    out = []
    for cfg in configs:
        if cfg.disabled or is_discovery(cfg):
            continue
        try:
            out.append((cfg, arg_schema(cfg.arg_types, cfg.arg_orders, limits)))
        except ValueError as exc:  # not in a registry (its Entry compiled the same specs); a bad file
            log.warning(
                "discovery_schema_failed",
                service=cfg.service,
                request_type=cfg.request_type,
                version=cfg.version,
                error=str(exc),
            )
    out.sort(key=lambda item: (item[0].service, item[0].request_type, version_key(item[0].version)))
    return out


def visible(cfg: FunConfig, caller: Caller) -> bool:
    """Whether `caller` may call `cfg`, as far as its identity decides."""
    if cfg.permission_callback is not None:
        return True  # the callback decides on each call (and the mode is then not used)
    mode = cfg.check_permission
    if mode is False:
        return True
    user = isinstance(caller.user_id, str) and caller.user_id != ""
    if mode == "any_authenticated":
        return user
    if isinstance(mode, dict) and "arg" in mode:
        return user
    if isinstance(mode, dict) and "role" in mode:
        return any(role in caller.roles for role in mode["role"])
    return False  # what dispatch would deny


def _access(cfg: FunConfig, caller: Caller | None) -> Any:
    """What the entry says about permission: for a caller, what is decided per call; for the
    admin view (no caller), the config's own rules."""
    mode = cfg.check_permission
    if caller is None:
        rules: dict[str, Any] = {}
        if mode is not False:
            rules["check_permission"] = mode
        if cfg.permission_callback is not None:
            rules["permission_callback"] = msgspec.to_builtins(cfg.permission_callback)
        return rules or None
    if cfg.permission_callback is not None:
        return "callback"
    if isinstance(mode, dict) and "arg" in mode:
        return {"arg": mode["arg"]}
    return None


def listing(
    described: Sequence[tuple[FunConfig, dict[str, Any]]], caller: Caller | None, service: str | None = None
) -> list[dict[str, Any]]:
    """The entries of `catalog()` output `caller` may call (None: all of them, the admin view)."""
    latest: dict[tuple[str, str], str | None] = {}
    for cfg, _ in described:  # ascending versions: the last one seen is the highest enabled
        latest[cfg.key] = cfg.version
    out: list[dict[str, Any]] = []
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    key_name = "permission" if caller is None else "per_call"
    for cfg, schema in described:
        if service is not None and cfg.service != service:
            continue
        if caller is not None and not visible(cfg, caller):
            continue
        access = _access(cfg, caller)
        shape = json.dumps([cfg.response_type, schema, access], sort_keys=True)
        entry = groups.get((cfg.service, cfg.request_type, shape))
        if entry is None:
            entry = {
                "service": cfg.service,
                "request_type": cfg.request_type,
                "versions": [],
                "latest": False,
                "response_type": cfg.response_type,
                "args": schema,
            }
            if access is not None:
                entry[key_name] = access
            groups[(cfg.service, cfg.request_type, shape)] = entry
            out.append(entry)
        entry["versions"].append(cfg.version)
        if latest[cfg.key] == cfg.version:
            entry["latest"] = True
    return out


def apis(
    configs: Iterable[FunConfig], limits: Limits, caller: Caller | None = None, service: str | None = None
) -> list[dict[str, Any]]:
    """The listing of `configs` for `caller` (None: every enabled function, the admin view)."""
    return listing(catalog(configs, limits), caller, service)


def list_apis(limits: dict[str, int], service: str | None = None) -> NoReturn:
    """The `mfa` of genapi.list_apis: the pipeline serves it with `ListApisCallee`, which answers
    from its worker's registry; there is nothing to call outside a gateway."""
    raise RuntimeError(
        "genapi.request.discovery:list_apis is served by the gateway (genapi.list_apis); "
        "elsewhere use genapi.request.discovery.apis(configs, limits)"
    )


class ListApisCallee(Callee):
    """Answers genapi.list_apis from the registry of the worker it runs in, for the request's
    caller. The schemas are built once per registry change, the filter on each call; answered
    without a Task."""

    def __init__(self, config: FunConfig, registry: Registry[Any], limits: Limits) -> None:
        super().__init__(config.timeout_ms())
        self.registry = registry
        self.limits = limits
        self._generation: object = None
        self._described: list[tuple[FunConfig, dict[str, Any]]] = []

    def answer(self, request: Any, args: list[Any]) -> list[dict[str, Any]]:
        generation = self.registry.generation
        if generation is not self._generation:
            self._described = catalog(self.registry.configs(), self.limits)
            self._generation = generation
        service = args[-1] if args and (args[-1] is None or isinstance(args[-1], str)) else None
        caller = Caller(request.user_id, tuple(request.user_roles or ()))
        return listing(self._described, caller, service)

    def start(self, reply: Any, request: Any, args: list[Any]) -> None:
        try:
            out = Response(request.request_id, self.answer(request, args))
        except Exception as exc:  # a bug here still answers the client and frees the slot
            out = self.failure(request, exc)
        reply.finish(out)

    async def call(self, args: list[Any], request: Any = None, plan: Any = None, reply: Any = None) -> Any:
        return self.answer(request, args)


def _limits_of(configs: Sequence[FunConfig]) -> Limits | None:
    """The gateway's argument limits, from its genapi.list_apis config (config.discovery_function)."""
    for cfg in configs:
        target, extra = split_target(cfg.mfa)
        if target == DISCOVERY_TARGET and extra and isinstance(extra[0], dict):
            return Limits(**extra[0])
    return None


async def from_control(control: str, secret: str | None = None) -> tuple[list[FunConfig], Limits | None]:
    """A running gateway's functions (`$functions` on its control port) and its argument limits
    (None when its discovery is off: then they are not known)."""
    from genapi.host.control_client import ControlClient

    async with ControlClient(control, secret, name="genapi-cli") as client:
        raw = await client.functions()
    configs = [msgspec.convert(item, FunConfig) for item in raw]
    return configs, _limits_of(configs)


def _arg_text(name: str, prop: dict[str, Any], required: bool) -> str:
    kind = prop.get("x-genapi-type", "any")
    size = prop.get("x-maxBytes", prop.get("maxItems", prop.get("maxProperties")))
    text = f"{name}: {kind}" + (f"({size})" if size is not None and kind != "uuid" else "")
    if isinstance(prop.get("type"), list) and "null" in prop["type"]:
        text += " | null"
    if "default" in prop:
        text += f" = {json.dumps(prop['default'])}"
    elif not required and kind == "any":
        text += " (optional)"
    return text


def summary(entry: dict[str, Any]) -> str:
    """One entry as one line: `svc.get 1.0.0,2.0.0 (latest) sync (id: uuid, n: num = 1) [role: admin]`;
    `(n)` is a string's byte limit or a list's or map's item limit."""
    versions = ",".join("-" if v is None else v for v in entry["versions"])
    args = entry["args"]
    required = set(args.get("required", ()))
    parts = [_arg_text(name, prop, name in required) for name, prop in args.get("properties", {}).items()]
    line = (
        f"{entry['service']}.{entry['request_type']} {versions}{' (latest)' if entry['latest'] else ''} "
        f"{entry['response_type']} ({', '.join(parts)})"
    )
    rules = entry.get("permission") or {}
    mode = rules.get("check_permission")
    if isinstance(mode, dict) and "role" in mode:
        line += f" [role: {', '.join(mode['role'])}]"
    elif isinstance(mode, dict):
        line += f" [arg {mode['arg']} = the caller's user id]"
    elif mode is not None:
        line += f" [{mode}]"
    if "permission_callback" in rules:
        callback = rules["permission_callback"]
        line += f" [callback {callback[0] if isinstance(callback, list) else callback}]"
    per_call = entry.get("per_call")
    if isinstance(per_call, dict):
        line += f" [arg {per_call['arg']} = your user id]"
    elif per_call is not None:
        line += " [decided per call]"
    return line


__all__ = [
    "DISCOVERY_SERVICE",
    "Caller",
    "ListApisCallee",
    "apis",
    "arg_schema",
    "catalog",
    "from_control",
    "is_discovery",
    "list_apis",
    "listing",
    "summary",
    "visible",
]
