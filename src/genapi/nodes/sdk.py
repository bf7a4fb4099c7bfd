"""The service SDK: a service node declares its functions with `Service` and `@svc.api`.

    svc = Service("inventory", config_version="1.0.0")

    @svc.api(response_type="sync", timeout=5000, check_permission="any_authenticated")
    def get_item(item_id: str, qty: int = 1) -> dict: ...

Each declaration becomes a FunConfig, checked when the module loads, by the rules the gateway
holds pushed configs to, so a node never pushes a config the gateway refuses and never fails its
first call with a signature the gateway cannot feed. The arguments' spec comes from the type
annotations (see `annotation_type`); the mfa is `"module:qualname"`, which is what the gateway
sends back in a call and what the node looks up in `Service.functions`: a node only ever runs a
function it declared, never an arbitrary import path.

Two kinds of refusal: `TypeError` for a wrong use of the decorator itself (an unknown keyword, a
field the SDK owns, an object that is not a function), as Python does for a bad call;
`genapi.errors.ConfigError` for a function whose declaration cannot be served (a parameter the
SDK cannot map, a field value out of its rules, a duplicate), because that is the error the
gateway raises for the same problems in a config file, so `genapi service run` reports both alike.
"""

from __future__ import annotations

import datetime
import inspect
import types
import typing
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

import msgspec

from genapi.errors import ConfigError
from genapi.loader import ASYNCGEN, GEN, kind_of
from genapi.request.signatures import declared_arguments
from genapi.schema import did_you_mean, render
from genapi.structs import DEFAULT_TIMEOUT_MS, FunConfig

__all__ = ["REQUEST_INFO", "SUPPORTED_ANNOTATIONS", "Service", "annotation_type"]

F = TypeVar("F", bound=Callable[..., Any])

# The parameter that receives the request info dict (request_id, user_id, device_id) the gateway
# appends after the arguments when `request_info = true`; never an argument of the request.
REQUEST_INFO = "request_info"

# FunConfig fields the SDK sets itself: the service is the Service's, the mfa names the function,
# the nodes are the addresses the node listens on (known only when it runs).
_OWNED = ("service", "mfa", "nodes")
_FIELDS = tuple(f.name for f in msgspec.structs.fields(FunConfig))

_PLAIN: dict[Any, str] = {
    str: "string",
    int: "num",
    float: "num",
    bool: "boolean",
    uuid.UUID: "uuid",
    datetime.datetime: "datetime",
    dict: "map",
    list: "list",
    typing.Any: "any",
}
_ITEMS: dict[Any, str] = {
    str: "list_string",
    int: "list_num",
    float: "list_num",
    uuid.UUID: "list_uuid",
    dict: "list_map",
    typing.Any: "list",
}
SUPPORTED_ANNOTATIONS = (
    "str, int, float, bool, uuid.UUID, datetime.datetime, dict, dict[str, X], list, "
    "list[str], list[int], list[float], list[uuid.UUID], list[dict], typing.Any, "
    "and X | None of these"
)
_UNIONS = (typing.Union, types.UnionType)


def annotation_type(annotation: Any) -> tuple[str, bool] | None:
    """The validator type of an annotation and whether it allows nil (`X | None`), or None when
    the gateway has no type that checks what the annotation promises the function."""
    allow_nil = False
    if typing.get_origin(annotation) in _UNIONS:
        members = typing.get_args(annotation)
        allow_nil = type(None) in members
        names = {_type_name(m) for m in members if m is not type(None)}
        if len(names) != 1:  # int | str: no one type to check against
            return None
        name = names.pop()
    else:
        name = _type_name(annotation)
    return None if name is None else (name, allow_nil)


def _type_name(annotation: Any) -> str | None:
    try:
        if annotation in _PLAIN:
            return _PLAIN[annotation]
    except TypeError:  # unhashable: not a type we know
        return None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is dict:
        return "map" if not args or args[0] in (str, typing.Any) else None
    if origin is list:
        if not args:
            return "list"
        item = args[0]
        if typing.get_origin(item) is dict:
            return "list_map" if _type_name(item) == "map" else None
        if typing.get_origin(item) in _UNIONS:  # list[int | float]
            return "list_num" if set(typing.get_args(item)) <= {int, float} else None
        try:
            return _ITEMS.get(item)
        except TypeError:
            return None
    return None


def _wire_default(value: Any) -> Any:
    """A default as the gateway sends it: a datetime or UUID as its string form, in lists and
    maps too (the node rebuilds them from the annotation, as it does the arguments)."""
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list):
        return [_wire_default(v) for v in value]
    if isinstance(value, dict):
        return {k: _wire_default(v) for k, v in value.items()}
    return value


def _json_like(value: Any) -> bool:
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, list):
        return all(_json_like(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_like(v) for k, v in value.items())
    return False


class Service:
    """The functions one service node declares, and the FunConfigs it pushes for them.

    `name` is every FunConfig's `service`; `config_version` is the push's version (a gateway
    skips a push whose version it already has); `version` is the default FunConfig `version`
    of every api (an api may give its own).
    """

    def __init__(self, name: str, config_version: str, *, version: str | None = None) -> None:
        for field, value in (("name", name), ("config_version", config_version)):
            if not isinstance(value, str):
                raise TypeError(f"Service {field}: must be a str, got {type(value).__name__}")
        problems = [
            f"Service {field}: must be a non-empty string, got {render(value)}"
            for field, value in (("name", name), ("config_version", config_version))
            if not value
        ]
        if not problems:  # the version's rules are FunConfig's
            probe = FunConfig(service=name, request_type="-", mfa="m:f", version=version)
            problems = [f"Service {p}" for p in probe.errors() if p.startswith("version")]
        if problems:
            raise ConfigError(problems)
        self.name = name
        self.config_version = config_version
        self.version = version
        self._configs: list[FunConfig] = []
        self._functions: dict[str, Callable[..., Any]] = {}
        self._declared: dict[tuple[str, str | None], str] = {}  # (request_type, version) -> function

    def __repr__(self) -> str:
        return f"<Service {self.name} {self.config_version}: {len(self._configs)} api(s)>"

    @overload
    def api(self, fn: F, /, **fields: Any) -> F: ...
    @overload
    def api(self, fn: None = None, /, **fields: Any) -> Callable[[F], F]: ...

    def api(self, fn: Callable[..., Any] | None = None, /, **fields: Any) -> Any:
        """Declares `fn` as an api of this service (`@svc.api` or `@svc.api(**fields)`); returns
        it unchanged, so it stays callable and testable. `fields` are FunConfig fields, except
        `service`, `mfa` and `nodes`, which the SDK sets."""
        for key in fields:
            if key in _OWNED:
                raise TypeError(
                    f"api() field {key}: set by the SDK (service = the Service's name, mfa = "
                    "the function, nodes = the addresses the node listens on), not by the api"
                )
            if key not in _FIELDS:
                raise TypeError(
                    f"api() got an unknown field {key}{did_you_mean(key, [f for f in _FIELDS if f not in _OWNED])}"
                )

        def declare(fn: F) -> F:
            self._declare(fn, fields)
            return fn

        return declare if fn is None else declare(fn)

    @property
    def functions(self) -> dict[str, Callable[..., Any]]:
        """mfa target (`"module:qualname"`) -> function: the only functions the node runs."""
        return dict(self._functions)

    def configs(self, nodes: list[str]) -> list[FunConfig]:
        """The FunConfigs to push, served by `nodes` (the `"host:port"` addresses of this
        node's RPC listener), in declaration order."""
        if isinstance(nodes, str) or not isinstance(nodes, Iterable):
            raise TypeError(f"nodes: must be a list of node addresses, got {render(nodes)}")
        out = [msgspec.structs.replace(cfg, nodes=list(nodes)) for cfg in self._configs]
        probe = out[0] if out else FunConfig(service=self.name, request_type="-", mfa="m:f", nodes=list(nodes))
        problems = [p for p in probe.errors() if p.startswith("nodes")]
        if problems:
            raise ConfigError(problems)
        return out

    def push_config(self, nodes: list[str]) -> dict[str, Any]:
        """The config push message body as plain data (what the gateway's control port takes)."""
        return {
            "service": self.name,
            "config_version": self.config_version,
            "nodes": list(nodes),
            "fun_configs": [msgspec.to_builtins(cfg) for cfg in self.configs(nodes)],
        }

    # ----------------------------------------------------------------------- running the node
    def run(
        self,
        listen: str = "127.0.0.1:7001",
        gateways: list[str] | tuple[str, ...] = ("127.0.0.1:4001",),
        *,
        advertise: str | None = None,
        secret: str | None = None,
        force: bool = False,
    ) -> None:
        """Serves this node until SIGINT/SIGTERM: listens for gateway calls on `listen` (port 0
        picks one) and pushes the configs to each gateway's control port, again whenever one
        comes back. `secret` defaults to GENAPI_CLUSTER_SECRET; `advertise` is the address
        gateways call (default: the listening one). Prints one line once serving."""
        import os

        import uvloop

        from genapi.nodes import node

        def ready(address: str) -> None:
            print(
                f"genapi service {self.name} listening on {address} (pid={os.getpid()}, "
                f"functions={len(self._functions)})",
                flush=True,
            )

        uvloop.run(
            node.serve(self, listen, list(gateways), advertise=advertise, secret=secret, force=force, ready=ready)
        )

    # ----------------------------------------------------------------------- declaration
    def _declare(self, fn: Callable[..., Any], fields: dict[str, Any]) -> None:
        if not inspect.isfunction(fn):
            what = "a bound method" if inspect.ismethod(fn) else f"a {type(fn).__name__}"
            raise TypeError(
                f"Service {self.name!r}: api() declares module-level functions, got {what} "
                f"({fn!r}): the gateway calls a function by its module and name"
            )
        qualified = f"{fn.__module__}.{fn.__qualname__}"
        label = f"function {qualified}"
        if "<" in fn.__qualname__ or "." in fn.__qualname__:
            where = (
                "a lambda"
                if fn.__name__ == "<lambda>"
                else "defined inside a function"
                if "<locals>" in fn.__qualname__
                else "defined in a class"
            )
            raise ConfigError(
                f"{label}: is {where}; only module-level functions can be declared, "
                "as the gateway calls a function by its module and name (the mfa)"
            )
        values: dict[str, Any] = {"request_type": fn.__name__, "timeout": DEFAULT_TIMEOUT_MS, "version": self.version}
        values.update(fields)

        kind = kind_of(fn)
        if kind in (GEN, ASYNCGEN) and values.get("response_type") != "stream":
            gen = "an async generator" if kind == ASYNCGEN else "a generator"
            raise ConfigError(
                f'{label}: is {gen}, so it streams: declare it with response_type="stream" '
                f"(got {render(values.get('response_type', 'sync'))})"
            )

        sig = inspect.signature(fn)
        params = list(sig.parameters.values())
        problems = self._request_info(label, params, values)
        if "arg_types" not in values and "arg_orders" not in values:
            mapped, mapping_problems = _map_signature(label, fn, params)
            problems += mapping_problems
            values["arg_types"] = mapped or None
            values["arg_orders"] = list(mapped)
        elif "arg_orders" not in values and isinstance(values["arg_types"], dict):
            # the arguments go by position: in the signature's order when the names are its own
            names = [p.name for p in params if p.name != REQUEST_INFO]
            declared = list(values["arg_types"])
            values["arg_orders"] = names if sorted(names) == sorted(declared) else declared
        if problems:
            raise ConfigError(problems)

        mfa = f"{fn.__module__}:{fn.__qualname__}"
        cfg = FunConfig(service=self.name, mfa=mfa, **values)
        problems = [f"{label}: {p}" for p in cfg.errors()]
        if not problems:
            problems = _callable_problems(label, fn, sig, cfg)
        if problems:
            raise ConfigError(problems)

        key = (cfg.request_type, cfg.version)
        if key in self._declared:
            version = f" version {render(cfg.version)}" if cfg.version is not None else ""
            raise ConfigError(
                f'Service "{self.name}": request_type {render(cfg.request_type)}{version} is '
                f"declared twice: by function {self._declared[key]} and by {qualified}"
            )
        self._declared[key] = qualified
        self._configs.append(cfg)
        self._functions[mfa] = fn

    @staticmethod
    def _request_info(label: str, params: list[inspect.Parameter], values: dict[str, Any]) -> list[str]:
        """A `request_info` parameter takes the request info the gateway appends last: it
        switches `request_info` on, and must be the last positional parameter."""
        named = [p for p in params if p.name == REQUEST_INFO]
        if not named:
            if values.get(REQUEST_INFO) is True and "arg_types" not in values and "arg_orders" not in values:
                return [
                    f"{label}: request_info=True appends the request info as the last argument: "
                    f"name that parameter {REQUEST_INFO}"
                ]
            return []
        if values.setdefault(REQUEST_INFO, True) is not True:
            return [
                f"{label}: parameter {REQUEST_INFO!r} receives the request info, which "
                f"request_info={values[REQUEST_INFO]!r} does not pass: drop the field or rename the parameter"
            ]
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if not positional or positional[-1] is not named[0]:
            return [
                f"{label}: parameter {REQUEST_INFO!r} must be the last positional parameter: "
                "the gateway appends the request info after the arguments"
            ]
        return []


def _map_signature(
    label: str, fn: Callable[..., Any], params: list[inspect.Parameter]
) -> tuple[dict[str, Any], list[str]]:
    """arg_types from the parameters (in signature order) and the problems of those it cannot map.
    A default of None becomes `allow_nil` (the validator reads `default_value = None` as no
    default, and the function accepts None); a datetime or UUID default is sent as its string,
    in a list or map default too."""
    arg_types: dict[str, Any] = {}
    problems: list[str] = []
    globalns = getattr(inspect.unwrap(fn), "__globals__", {})
    for p in params:
        if p.name == REQUEST_INFO:
            continue
        where = f"{label}, parameter {p.name!r}"
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            star = "*" if p.kind == p.VAR_POSITIONAL else "**"
            problems.append(
                f"{where}: {star}{p.name} cannot be mapped: each argument needs a name and a type "
                "(or give arg_types and arg_orders explicitly)"
            )
            continue
        if p.kind == p.KEYWORD_ONLY:
            problems.append(f"{where}: is keyword-only, but the gateway passes arguments by position")
            continue
        if p.annotation is p.empty:
            problems.append(f"{where}: has no annotation; supported annotations: {SUPPORTED_ANNOTATIONS}")
            continue
        try:  # one at a time, so an unresolvable string annotation names its parameter
            holder = types.SimpleNamespace(__annotations__={p.name: p.annotation})
            annotation = typing.get_type_hints(holder, globalns=globalns)[p.name]
        except Exception as exc:
            problems.append(
                f"{where}: annotation {p.annotation!r} cannot be resolved "
                f"({type(exc).__name__}: {exc}); supported annotations: {SUPPORTED_ANNOTATIONS}"
            )
            continue
        found = annotation_type(annotation)
        if found is None:
            problems.append(
                f"{where}: unsupported annotation {inspect.formatannotation(annotation)}; "
                f"supported annotations: {SUPPORTED_ANNOTATIONS}"
            )
            continue
        name, allow_nil = found
        spec: dict[str, Any] = {"type": name}
        if p.default is not p.empty:
            default = _wire_default(p.default)
            if default is None:  # the function takes None: a missing argument is passed as nil
                allow_nil = True
            elif not _json_like(default):
                problems.append(
                    f"{where}: default value {p.default!r} is not JSON-like (str, int, float, bool, "
                    "None, list, dict, or a datetime or UUID, sent as its string form)"
                )
                continue
            else:
                spec["default_value"] = default
        if allow_nil:
            spec["allow_nil"] = True
        arg_types[p.name] = spec if len(spec) > 1 else name
    return arg_types, problems


def _callable_problems(label: str, fn: Callable[..., Any], sig: inspect.Signature, cfg: FunConfig) -> list[str]:
    """The gateway's own checks: its validator compiles the arguments' spec (defaults
    included), and the function takes the positional arguments the validator produces."""
    from genapi._core.validate import Validator

    try:
        Validator(cfg.arg_types, cfg.arg_orders, cfg.request_type)
    except ValueError as exc:
        key = "arg_orders" if str(exc).startswith("arg_orders") else "arg_types"
        return [f"{label}: {key}: {exc}"]
    n, why = declared_arguments(cfg)
    if cfg.request_info:
        n, why = n + 1, f"{why} + request_info"
    try:
        sig.bind(*range(n))
    except TypeError as exc:
        return [f"{label}: cannot take the {n} positional argument(s) the gateway passes ({why}): {exc}"]
    return []
