"""The service SDK (genapi.service): signatures mapped to FunConfigs, refusals at decoration
time, the configs as the gateway's own checks see them; and what a declared function receives
when a client calls it through a real gateway and a real `genapi service run` node (the node
rebuilds UUIDs and datetimes from their wire form as each parameter's annotation asks)."""

import asyncio
import importlib
import subprocess
import sys
import textwrap
import time
import types
from datetime import UTC, datetime
from typing import Any

import jwt
import msgspec
import pytest

from genapi._core.validate import Limits, Validator
from genapi.client import Client
from genapi.errors import ConfigError
from genapi.nodes.node import converters
from genapi.service import SUPPORTED_ANNOTATIONS, Service
from genapi.structs import FunConfig
from support.gateway_proc import GatewayProcess
from support.node_proc import NodeProcess, control, wait_pushed

U = "123e4567-e89b-12d3-a456-426614174000"
NODES = ["127.0.0.1:7001"]
HEADER = "import datetime, typing, uuid\nfrom typing import Any, Optional\n"


def declare(src: str, svc: Service | None = None, name: str = "apis") -> types.ModuleType:
    """Runs `src` as the body of a fresh module `name` (module-level functions, as a user's
    file has them), with `svc` in its namespace."""
    mod = types.ModuleType(name)
    mod.svc = svc or Service("inventory", config_version="1.0.0")
    exec(HEADER + textwrap.dedent(src), mod.__dict__)
    return mod


def only(mod: types.ModuleType) -> FunConfig:
    (cfg,) = mod.svc.configs(NODES)
    return cfg


def refused(src: str, svc: Service | None = None, exc: type[Exception] = ConfigError) -> str:
    with pytest.raises(exc) as info:
        declare(src, svc)
    return str(info.value)


def validator(cfg: FunConfig) -> Validator:
    """As the gateway's dispatch Entry builds it."""
    return Validator(cfg.arg_types, cfg.arg_orders, cfg.request_type, Limits(3000, 1000, 1000))


# --------------------------------------------------------------------------- the mapping


@pytest.mark.parametrize(
    ("annotation", "spec"),
    [
        ("str", "string"),
        ("int", "num"),
        ("float", "num"),
        ("int | float", "num"),
        ("bool", "boolean"),
        ("list[str]", "list_string"),
        ("typing.List[str]", "list_string"),
        ("list[int]", "list_num"),
        ("list[float]", "list_num"),
        ("list[int | float]", "list_num"),
        ("list[uuid.UUID]", "list_uuid"),
        ("list[dict]", "list_map"),
        ("list[dict[str, Any]]", "list_map"),
        ("list", "list"),
        ("list[Any]", "list"),
        ("dict", "map"),
        ("dict[str, int]", "map"),
        ("dict[str, Any]", "map"),
        ("typing.Dict[str, Any]", "map"),
        ("uuid.UUID", "uuid"),
        ("datetime.datetime", "datetime"),
        ("Any", "any"),
        ("str | None", {"type": "string", "allow_nil": True}),
        ("Optional[int]", {"type": "num", "allow_nil": True}),
        ("typing.Union[None, list[str]]", {"type": "list_string", "allow_nil": True}),
        ("dict[str, Any] | None", {"type": "map", "allow_nil": True}),
    ],
)
def test_annotation_maps_to_arg_type(annotation, spec):
    cfg = only(declare(f"@svc.api\ndef f(x: {annotation}): return x\n"))
    assert cfg.arg_types == {"x": spec}
    assert cfg.arg_orders == ["x"]
    validator(cfg)  # the gateway compiles it


@pytest.mark.parametrize(
    ("param", "spec"),
    [
        ("x: int = 1", {"type": "num", "default_value": 1}),
        ("x: float = 0.5", {"type": "num", "default_value": 0.5}),
        ("x: str = 'a'", {"type": "string", "default_value": "a"}),
        ("x: bool = False", {"type": "boolean", "default_value": False}),
        ("x: list[str] = ['a', 'b']", {"type": "list_string", "default_value": ["a", "b"]}),
        ("x: dict = {'k': 1}", {"type": "map", "default_value": {"k": 1}}),
        ("x: str | None = 'a'", {"type": "string", "default_value": "a", "allow_nil": True}),
        ("x: str | None = None", {"type": "string", "allow_nil": True}),
        ("x: int = None", {"type": "num", "allow_nil": True}),  # the function takes None
        ("x: uuid.UUID = uuid.UUID('" + U + "')", {"type": "uuid", "default_value": U}),
        (
            "x: datetime.datetime = datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.UTC)",
            {"type": "datetime", "default_value": "2024-05-01T12:00:00+00:00"},
        ),
        ("x: list[uuid.UUID] = [uuid.UUID('" + U + "')]", {"type": "list_uuid", "default_value": [U]}),
        (
            "x: dict[str, datetime.datetime] = {'k': datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC)}",
            {"type": "map", "default_value": {"k": "2024-05-01T00:00:00+00:00"}},
        ),
    ],
)
def test_default_value_is_the_extended_form(param, spec):
    cfg = only(declare(f"@svc.api\ndef f({param}): return x\n"))
    assert cfg.arg_types == {"x": spec}
    validator(cfg)


def test_missing_arguments_take_the_defaults_through_the_gateway_validator():
    mod = declare("""
        @svc.api
        def f(a: str, n: int = 3, tag: str | None = None,
              at: datetime.datetime = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)):
            return [a, n, tag, at]
    """)
    cfg = only(mod)
    assert mod.f(*validator(cfg).convert({"a": "x"})) == ["x", 3, None, datetime(2024, 1, 1, tzinfo=UTC)]


def test_the_issue_example():
    mod = declare("""
        @svc.api(response_type="sync", timeout=5000, check_permission="any_authenticated")
        def get_item(item_id: str, qty: int = 1) -> dict:
            return {"item_id": item_id, "qty": qty}
    """)
    cfg = only(mod)
    assert (cfg.service, cfg.request_type, cfg.mfa, cfg.nodes) == ("inventory", "get_item", "apis:get_item", NODES)
    assert (cfg.timeout, cfg.response_type, cfg.check_permission) == (5000, "sync", "any_authenticated")
    assert cfg.arg_types == {"item_id": "string", "qty": {"type": "num", "default_value": 1}}
    assert cfg.arg_orders == ["item_id", "qty"]
    assert mod.get_item(*validator(cfg).convert({"item_id": "a7"})) == {"item_id": "a7", "qty": 1}
    assert mod.get_item(*validator(cfg).convert({"item_id": "a7", "qty": 4})) == {"item_id": "a7", "qty": 4}


def test_positional_only_parameters_map():
    mod = declare("@svc.api\ndef f(a: str, /, b: int): return [a, b]\n")
    cfg = only(mod)
    assert cfg.arg_orders == ["a", "b"]
    assert mod.f(*validator(cfg).convert({"a": "x", "b": 1})) == ["x", 1]


# --------------------------------------------------------------------------- defaults and overrides


def test_defaults():
    mod = declare("@svc.api\ndef ping(): return 'pong'\n")
    cfg = only(mod)
    assert cfg.request_type == "ping"
    assert cfg.timeout == 5000
    assert cfg.arg_types is None and cfg.arg_orders == []
    assert (cfg.response_type, cfg.version, cfg.request_info, cfg.check_permission) == ("sync", None, False, False)
    assert validator(cfg).convert({}) == []
    assert mod.ping(*validator(cfg).convert(None)) == "pong"


def test_decorator_returns_the_function_unchanged_and_both_forms_work():
    svc = Service("s", config_version="1")
    mod = declare(
        """
        def plain(x: int): return x + 1
        bare = svc.api(plain)
        @svc.api(timeout=100)
        def called(x: int): return x * 2
    """,
        svc,
    )
    assert mod.bare is mod.plain and mod.plain(1) == 2 and mod.called(2) == 4
    assert [c.request_type for c in svc.configs(NODES)] == ["plain", "called"]
    assert svc.functions == {"apis:plain": mod.plain, "apis:called": mod.called}


def test_service_version_is_the_default_an_api_can_override():
    svc = Service("s", config_version="7", version="1.0.0")
    declare(
        """
        @svc.api
        def a(): ...
        @svc.api(version="2.0.0")
        def b(): ...
        @svc.api(version=None)
        def c(): ...
    """,
        svc,
    )
    assert [c.version for c in svc.configs(NODES)] == ["1.0.0", "2.0.0", None]
    assert (svc.name, svc.config_version) == ("s", "7")


def test_every_other_field_is_taken_as_given():
    fields = dict(
        request_type="lookup",
        timeout="infinity",
        choose_node_mode={"hash": "item_id"},
        response_type="async",
        check_permission={"arg": "item_id"},
        permission_callback="genapi.demo:echo",
        version="3",
        disabled=True,
        retry={"all_nodes": 2},
        before_execute="genapi.demo:echo",
        after_execute=["genapi.demo:echo", [1]],
        hook_timeout=250,
    )
    svc = Service("s", config_version="1")
    svc.api(**fields)(declare("def f(item_id: str): ...").f)
    cfg = svc.configs(NODES)[0]
    assert {k: getattr(cfg, k) for k in fields} == fields


def test_explicit_arg_types_and_orders_win_over_the_signature():
    mod = declare("""
        @svc.api(arg_types={"b": "num", "a": ["string", 10]}, arg_orders=["a", "b"])
        def f(a, b): return [a, b]
    """)
    cfg = only(mod)
    assert cfg.arg_types == {"b": "num", "a": ["string", 10]} and cfg.arg_orders == ["a", "b"]
    assert mod.f(*validator(cfg).convert({"a": "x", "b": 2})) == ["x", 2]


def test_explicit_arg_types_alone_take_the_signature_order_when_the_names_are_its_own():
    mod = declare("""
        @svc.api(arg_types={"b": "num", "a": "string"})
        def f(a, b): return [a, b]
        @svc.api(arg_types={"second": "num", "first": "string"})
        def g(x, y): return [x, y]
    """)
    f_cfg, g_cfg = mod.svc.configs(NODES)
    assert f_cfg.arg_orders == ["a", "b"]
    assert mod.f(*validator(f_cfg).convert({"a": "x", "b": 2})) == ["x", 2]
    assert g_cfg.arg_orders == ["second", "first"]  # not its names: the order written


def test_explicit_arg_orders_map_passes_one_dict():
    mod = declare("""
        @svc.api(arg_types={"a": "string", "b": "num"}, arg_orders="map")
        def f(args): return args
    """)
    cfg = only(mod)
    assert mod.f(*validator(cfg).convert({"a": "x", "b": 1})) == {"a": "x", "b": 1}


def test_explicit_arg_types_the_function_cannot_take_are_refused():
    text = refused('@svc.api(arg_types={"a": "string", "b": "num"}, arg_orders=["a", "b"])\ndef f(a): ...\n')
    assert "function apis.f" in text and "2 positional argument(s)" in text
    text = refused('@svc.api(arg_types={"a": "string"})\ndef f(a, *, key): ...\n')
    assert "function apis.f" in text and "key" in text


def test_explicit_arg_types_are_compiled_by_the_gateway_validator():
    text = refused('@svc.api(arg_types={"a": "strin"})\ndef f(a): ...\n')
    assert text == 'function apis.f: arg_types: argument "a": unknown type "strin"; did you mean "string"?'
    text = refused('@svc.api(arg_types={"a": "string"}, arg_orders=["a", "b"])\ndef f(a): ...\n')
    assert text.startswith("function apis.f: arg_orders: ") and '"b"' in text


# --------------------------------------------------------------------------- request_info


def test_request_info_parameter_is_not_mapped_and_switches_request_info_on():
    mod = declare("""
        @svc.api
        def whoami(greeting: str, request_info: dict):
            return [greeting, request_info["user_id"]]
    """)
    cfg = only(mod)
    assert cfg.request_info is True
    assert cfg.arg_types == {"greeting": "string"} and cfg.arg_orders == ["greeting"]
    info = {"request_id": "r1", "user_id": "u1", "device_id": "d1"}  # what the gateway appends
    assert mod.whoami(*validator(cfg).convert({"greeting": "hi"}), info) == ["hi", "u1"]


def test_request_info_true_with_the_parameter_is_accepted():
    cfg = only(declare("@svc.api(request_info=True)\ndef f(request_info): return request_info\n"))
    assert cfg.request_info is True and cfg.arg_types is None


@pytest.mark.parametrize(
    ("src", "words"),
    [
        ("@svc.api\ndef f(request_info: dict, x: int): ...\n", "must be the last positional parameter"),
        ("@svc.api(request_info=True)\ndef f(x: int, info: dict): ...\n", "name that parameter request_info"),
        ("@svc.api(request_info=False)\ndef f(x: int, request_info: dict): ...\n", "receives the request info"),
    ],
)
def test_request_info_misuse_is_refused(src, words):
    text = refused(src)
    assert "function apis.f" in text and words in text


# --------------------------------------------------------------------------- streams and kinds


@pytest.mark.parametrize(
    "src",
    [
        "def f(n: int):\n    yield n\n",
        "async def f(n: int):\n    yield n\n",
        "async def f(n: int):\n    return n\n",  # push-style: chunks through the request info's stream
        "def f(n: int):\n    return n\n",
    ],
)
def test_stream_response_type(src):
    cfg = only(declare('@svc.api(response_type="stream")\n' + src))
    assert cfg.response_type == "stream"


@pytest.mark.parametrize(
    ("src", "kind"),
    [
        ("@svc.api\ndef f(n: int):\n    yield n\n", "is a generator"),
        ('@svc.api(response_type="async")\ndef f(n: int):\n    yield n\n', "is a generator"),
        ('@svc.api(response_type="sync")\nasync def f(n: int):\n    yield n\n', "is an async generator"),
    ],
)
def test_generators_need_response_type_stream(src, kind):
    text = refused(src)
    assert text.startswith(f"function apis.f: {kind}") and 'response_type="stream"' in text


@pytest.mark.parametrize("response_type", ["sync", "async", "none"])
def test_async_functions_take_any_response_type(response_type):
    cfg = only(declare(f'@svc.api(response_type="{response_type}")\nasync def f(n: int): return n\n'))
    assert cfg.response_type == response_type


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("src", "words"),
    [
        ("def f(x): ...", "has no annotation"),
        ("def f(x: set[str]): ...", "unsupported annotation set[str]"),
        ("class Custom: ...\n@svc.api\ndef f(x: Custom): ...", "unsupported annotation apis.Custom"),
        ("def f(x: list[bool]): ...", "unsupported annotation list[bool]"),
        ("def f(x: list[list[int]]): ...", "unsupported annotation list[list[int]]"),
        ("def f(x: dict[int, str]): ...", "unsupported annotation dict[int, str]"),
        ("def f(x: int | str): ...", "unsupported annotation int | str"),
        ("def f(x: datetime.date): ...", "unsupported annotation datetime.date"),
        ("def f(x: 'NoSuchName'): ...", "annotation 'NoSuchName' cannot be resolved"),
    ],
)
def test_an_unmappable_annotation_is_refused_naming_function_parameter_and_the_supported_ones(src, words):
    if not src.startswith("class"):
        src = "@svc.api\n" + src
    text = refused(src + "\n")
    assert text.startswith("function apis.f, parameter 'x': ")
    assert words in text and f"supported annotations: {SUPPORTED_ANNOTATIONS}" in text


@pytest.mark.parametrize(
    ("src", "words"),
    [
        ("def f(a: int, *rest: int): ...", "parameter 'rest': *rest cannot be mapped"),
        ("def f(a: int, **extra: int): ...", "parameter 'extra': **extra cannot be mapped"),
        ("def f(a: int, *, key: str): ...", "parameter 'key': is keyword-only"),
        ("def f(x: list = (1, 2)): ...", "parameter 'x': default value (1, 2) is not JSON-like"),
        ("def f(x: str = b'raw'): ...", "parameter 'x': default value b'raw' is not JSON-like"),
    ],
)
def test_parameters_the_gateway_cannot_pass_are_refused(src, words):
    text = refused("@svc.api\n" + src + "\n")
    assert text.startswith("function apis.f, ") and words in text


def test_every_bad_parameter_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        declare("@svc.api\ndef f(a, b: set, c: int, *d): ...\n")
    assert [p.split(":")[0] for p in info.value.problems] == [
        "function apis.f, parameter 'a'",
        "function apis.f, parameter 'b'",
        "function apis.f, parameter 'd'",
    ]


def test_a_default_the_type_refuses_is_refused_by_the_gateway_validator():
    text = refused("@svc.api\ndef f(x: int = 'one'): ...\n")
    assert text.startswith('function apis.f: arg_types: argument "x": invalid default_value')
    text = refused("@svc.api\ndef f(x: datetime.datetime = datetime.datetime(2024, 1, 1)): ...\n")
    assert 'argument "x": invalid default_value' in text and "timezone" in text


@pytest.mark.parametrize("field", ["service", "mfa", "nodes"])
def test_fields_the_sdk_owns_are_refused(field):
    svc = Service("s", config_version="1")
    with pytest.raises(TypeError, match=f"api\\(\\) field {field}: set by the SDK"):
        svc.api(**{field: "x"})


def test_an_unknown_field_is_refused_with_a_suggestion():
    svc = Service("s", config_version="1")
    with pytest.raises(TypeError) as info:
        svc.api(timout=100)
    assert str(info.value) == "api() got an unknown field timout; did you mean timeout?"
    with pytest.raises(TypeError, match=r"unknown field zzz$"):
        svc.api(zzz=1)


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ("timeout=50", 'timeout: must be between 100 and 300000 ms or "infinity", got 50'),
        ("response_type='later'", 'response_type: must be one of sync, async, stream, none, got "later"'),
        ("version='0.0.0'", 'version: "0.0.0" is reserved'),
        ("request_type=''", "request_type: must be a non-empty string"),
        ("check_permission={'role': 'admin'}", "check_permission: must be false"),
        ("before_execute='no_colon'", 'before_execute: must be "module:function"'),
    ],
)
def test_field_values_are_checked_by_fun_config_rules(fields, problem):
    text = refused(f"@svc.api({fields})\ndef f(): ...\n")
    assert text.startswith(f"function apis.f: {problem}")


def test_duplicate_request_type_and_version_names_both_functions():
    svc = Service("s", config_version="1", version="1.0.0")
    text = refused(
        """
        @svc.api
        def get(): ...
        @svc.api(request_type="get")
        def get_v1(): ...
    """,
        svc,
    )
    assert (
        text
        == 'Service "s": request_type "get" version "1.0.0" is declared twice: by function apis.get and by apis.get_v1'
    )
    svc = Service("s", config_version="1")
    declare(
        """
        @svc.api
        def get(): ...
        @svc.api(request_type="get", version="2")
        def get_v2(): ...
    """,
        svc,
    )
    assert [(c.request_type, c.version) for c in svc.configs(NODES)] == [("get", None), ("get", "2")]


def test_one_function_may_serve_two_request_types():
    svc = Service("s", config_version="1")
    mod = declare(
        """
        def get(): return 1
        svc.api(get)
        svc.api(request_type="fetch")(get)
    """,
        svc,
    )
    assert [(c.request_type, c.mfa) for c in svc.configs(NODES)] == [("get", "apis:get"), ("fetch", "apis:get")]
    assert svc.functions == {"apis:get": mod.get}


@pytest.mark.parametrize(
    ("src", "words"),
    [
        ("f = svc.api(lambda: 1)", "apis.<lambda>: is a lambda"),
        (
            "def outer():\n    @svc.api\n    def inner(): ...\nouter()",
            "apis.outer.<locals>.inner: is defined inside a function",
        ),
        ("class C:\n    @svc.api\n    def m(self): ...", "apis.C.m: is defined in a class"),
    ],
)
def test_functions_without_a_stable_mfa_are_refused(src, words):
    text = refused(src + "\n")
    assert text.startswith(f"function {words}") and "only module-level functions" in text


@pytest.mark.parametrize(
    ("src", "what"),
    [
        ("class C:\n    def m(self): ...\nsvc.api(C().m)", "a bound method"),
        ("import functools\ndef g(a: int): ...\nsvc.api(functools.partial(g, 1))", "a partial"),
        ("svc.api(print)", "a builtin_function_or_method"),
    ],
)
def test_objects_that_are_not_functions_are_refused(src, what):
    text = refused(src + "\n", exc=TypeError)
    assert f"api() declares module-level functions, got {what}" in text


# --------------------------------------------------------------------------- the Service


def test_service_arguments_are_checked():
    with pytest.raises(ConfigError, match='Service config_version: must be a non-empty string, got ""'):
        Service("s", config_version="")
    with pytest.raises(ConfigError, match="Service name: must be a non-empty string"):
        Service("", config_version="1")
    with pytest.raises(TypeError, match="Service config_version: must be a str, got int"):
        Service("s", config_version=1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r'Service version: "0\.0\.0" is reserved'):
        Service("s", config_version="1", version="0.0.0")


def test_configs_take_the_nodes_given_and_check_them():
    mod = declare("@svc.api\ndef f(): ...\n")
    assert [c.nodes for c in mod.svc.configs(["a:1", "b:2"])] == [["a:1", "b:2"]]
    with pytest.raises(ConfigError, match="nodes: must be"):
        mod.svc.configs([])
    with pytest.raises(TypeError, match="nodes: must be a list of node addresses"):
        mod.svc.configs("a:1")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="nodes: must be"):
        Service("empty", config_version="1").configs([])


def test_push_config_is_plain_data_that_round_trips_into_fun_configs():
    mod = declare("""
        @svc.api(check_permission={"role": ["admin"]}, retry={"same_node": 1})
        def get_item(item_id: str, qty: int = 1, at: datetime.datetime | None = None) -> dict: ...
        @svc.api(response_type="stream", timeout="infinity")
        async def watch(ids: list[uuid.UUID], request_info: dict):
            yield ids
        @svc.api(response_type="none")
        def ping(): ...
    """)
    push = mod.svc.push_config(NODES)
    assert {k: push[k] for k in ("service", "config_version", "nodes")} == {
        "service": "inventory",
        "config_version": "1.0.0",
        "nodes": NODES,
    }
    assert msgspec.json.decode(msgspec.json.encode(push)) == push  # plain data
    wire = msgspec.msgpack.decode(msgspec.msgpack.encode(push))
    configs = mod.svc.configs(NODES)
    assert [c["request_type"] for c in wire["fun_configs"]] == ["get_item", "watch", "ping"]
    for item, cfg in zip(wire["fun_configs"], configs, strict=True):
        back = msgspec.convert(item, FunConfig)
        assert back == cfg and back.errors() == []
        assert back.service == "inventory" and back.nodes == NODES
        assert mod.svc.functions[back.mfa].__name__ == back.request_type
        validator(back)


# --------------------------------------------------------------------------- from __future__ import annotations

FUTURE_MODULE = """
from __future__ import annotations

import datetime
import uuid
from typing import Any, Optional

from genapi.service import Service

svc = Service("future", config_version="1.0.0")


@svc.api
def kinds(id: uuid.UUID, at: datetime.datetime, tags: list[str], meta: dict[str, Any],
          maybe: Optional[int], flag: bool = True, request_info: dict | None = None) -> dict:
    return {"id": id, "at": at, "tags": tags, "meta": meta, "maybe": maybe, "flag": flag,
            "user": (request_info or {}).get("user_id")}
"""


def test_string_annotations_of_a_future_annotations_module(tmp_path, monkeypatch):
    (tmp_path / "future_apis.py").write_text(FUTURE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = importlib.import_module("future_apis")
    try:
        (cfg,) = mod.svc.configs(NODES)
        assert cfg.mfa == "future_apis:kinds" and cfg.request_info is True
        assert cfg.arg_types == {
            "id": "uuid",
            "at": "datetime",
            "tags": "list_string",
            "meta": "map",
            "maybe": {"type": "num", "allow_nil": True},
            "flag": {"type": "boolean", "default_value": True},
        }
        assert cfg.arg_orders == ["id", "at", "tags", "meta", "maybe", "flag"]
        validator(cfg)  # the gateway compiles it; what the function receives: test_arguments_reach_*
    finally:
        sys.modules.pop("future_apis", None)


def test_an_unresolvable_string_annotation_is_refused_when_the_module_loads(tmp_path, monkeypatch):
    (tmp_path / "future_bad.py").write_text(FUTURE_MODULE.replace("maybe: Optional[int]", "maybe: Missing"))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as info:
        importlib.import_module("future_bad")
    sys.modules.pop("future_bad", None)
    assert str(info.value).startswith(
        "function future_bad.kinds, parameter 'maybe': annotation 'Missing' "
        "cannot be resolved (NameError: name 'Missing' is not defined)"
    )


def test_importing_the_sdk_does_not_import_uvloop():
    code = "import sys, genapi.service; print('uvloop' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# --------------------------------------------------------------------------- through a real gateway and node
# tests/support/argsapp.py: each function answers what it received with its Python types
# ("UUID:...", "datetime:<isoformat>", {"list": [...]}, {"dict": {...}}).

U2 = "123e4567-e89b-12d3-a456-426614174999"
D = "00000000-0000-4000-8000-0000000000d1"  # argsapp's default UUID
EPOCH = "datetime:2024-01-01T00:00:00+00:00"  # argsapp's default datetime
SECRET = "s3cret-for-the-sdk-tests-0123456789abcdef"
GATEWAY = f'[gateway]\ndetail_error = true\n[auth]\njwt_secret = "{SECRET}"\n'


def token(sub: str = "u1") -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def args_node():
    with GatewayProcess(GATEWAY) as gw, NodeProcess([gw.control], service="argsapp:svc", name="args") as node:
        wait_pushed(gw.control, "args", [node.address], timeout=30)
        yield gw, node
        assert node.stop() == 0, node.read_stderr()
        assert gw.stop() == 0, gw.read_stderr()


def calls(gw: GatewayProcess, *requests: tuple[str, dict | None]) -> list[Any]:
    """Each (request_type, args) called in turn on one client; the results, or the Responses of
    the calls that failed."""

    async def go() -> list[Any]:
        c = await Client.connect(gw.url, token=token())
        try:
            await c.join("api:args")
            out = []
            for request_type, args in requests:
                r = await c.call("args", request_type, args, topic="api:args", timeout=30, raise_on_error=False)
                out.append(r.result if r.success else r)
            return out
        finally:
            await c.close()

    return asyncio.run(go())


def call(gw: GatewayProcess, request_type: str, args: dict | None = None) -> Any:
    (out,) = calls(gw, (request_type, args))
    return out


def test_arguments_reach_the_node_as_single_uuid_and_datetime(args_node):
    gw, _ = args_node
    # a datetime travels as a msgpack timestamp: the same instant, in UTC
    assert call(gw, "single", {"id": U, "at": "2024-05-01T12:00:00+02:00"}) == [
        f"UUID:{U}",
        "datetime:2024-05-01T10:00:00+00:00",
    ]
    assert call(gw, "single", {"id": U.upper(), "at": "2024-05-01T12:00:00Z"}) == [
        f"UUID:{U}",  # a UUID, not the string the client sent
        "datetime:2024-05-01T12:00:00+00:00",
    ]


def test_arguments_reach_the_node_as_lists_of_uuid_and_maps_in_lists(args_node):
    gw, _ = args_node
    got = call(
        gw,
        "lists",
        {"ids": [U, U2], "rows": [{"owner": U}, {}], "events": [{"at": "2024-05-01T12:00:00+02:00"}]},
    )
    assert got == [
        {"list": [f"UUID:{U}", f"UUID:{U2}"]},
        {"list": [{"dict": {"owner": f"UUID:{U}"}}, {"dict": {}}]},
        # a map's value travels as the client's string: its offset is kept
        {"list": [{"dict": {"at": "datetime:2024-05-01T12:00:00+02:00"}}]},
    ]
    assert call(gw, "lists", {"ids": [], "rows": [], "events": []}) == [{"list": []}] * 3


def test_arguments_reach_the_node_as_maps_of_datetime_and_uuid(args_node):
    gw, _ = args_node
    got = call(
        gw,
        "maps",
        {
            "stamps": {"a": "2024-05-01T12:00:00Z", "b": "2024-05-01T12:00:00+02:00"},
            "owners": {"x": U},
            "mixed": {"u": U2, "n": 5},
        },
    )
    assert got == [
        {"dict": {"a": "datetime:2024-05-01T12:00:00+00:00", "b": "datetime:2024-05-01T12:00:00+02:00"}},
        {"dict": {"x": f"UUID:{U}"}},
        {"dict": {"u": f"UUID:{U2}", "n": "int:5"}},  # uuid.UUID | int: each value as what it is
    ]


def test_optional_arguments_present_absent_and_none(args_node):
    gw, _ = args_node
    present = {"id": U, "at": "2024-05-01T12:00:00Z", "ids": [U2], "stamps": {"k": "2024-05-01T12:00:00Z"}}
    got = calls(gw, ("optional", present), ("optional", {}), ("optional", dict.fromkeys(present)))
    assert got == [
        [
            f"UUID:{U}",
            "datetime:2024-05-01T12:00:00+00:00",
            {"list": [f"UUID:{U2}"]},
            {"dict": {"k": "datetime:2024-05-01T12:00:00+00:00"}},
        ],
        ["NoneType"] * 4,  # absent: X | None takes None
        ["NoneType"] * 4,  # None stays None
    ]


def test_missing_arguments_take_the_functions_defaults_with_their_types(args_node):
    gw, _ = args_node
    assert call(gw, "defaults", {}) == [
        f"UUID:{D}",
        EPOCH,
        {"list": [f"UUID:{D}"]},
        {"dict": {"from": EPOCH}},
        f"UUID:{D}",
        "NoneType",
        "int:3",
    ]
    given = {"id": U, "ids": [U, U2], "stamps": {}, "maybe": None, "gone": U2, "n": 4}
    assert call(gw, "defaults", given) == [
        f"UUID:{U}",
        EPOCH,
        {"list": [f"UUID:{U}", f"UUID:{U2}"]},
        {"dict": {}},
        "NoneType",  # None given for a UUID | None with a default: None, not the default
        f"UUID:{U2}",
        "int:4",
    ]


def test_every_type_family_reaches_the_node_as_its_annotation_asks(args_node):
    """Every type family the SDK maps, in one call through the gateway's validator and the node:
    what needs no conversion arrives as the client sent it."""
    gw, node = args_node
    args = {
        "id": U,
        "at": "2024-05-01T12:00:00Z",
        "name": "box",
        "n": 2,
        "ratio": 0.5,
        "flag": True,
        "tags": ["a"],
        "scores": [1, 2.5],
        "ids": [U],
        "rows": [{"k": 1}],
        "mixed": [1, "a"],
        "meta": {"k": "v"},
        "anything": [{"x": None}],
        "maybe": None,
    }
    assert call(gw, "kinds", args) == {
        "id": f"UUID:{U}",
        "at": "datetime:2024-05-01T12:00:00+00:00",
        "name": "str:box",
        "n": "int:2",
        "ratio": "float:0.5",
        "flag": "bool:True",
        "tags": {"list": ["str:a"]},
        "scores": {"list": ["int:1", "float:2.5"]},
        "ids": {"list": [f"UUID:{U}"]},
        "rows": {"list": [{"dict": {"k": "int:1"}}]},
        "mixed": {"list": ["int:1", "str:a"]},
        "meta": {"dict": {"k": "str:v"}},
        "anything": {"list": [{"dict": {"x": "NoneType"}}]},
        "maybe": "NoneType",
        "limit": "int:10",  # the default
    }
    pushed = {c["request_type"]: c for c in control(node.address, "$config")["fun_configs"]}
    assert pushed["kinds"]["arg_orders"] == [*args, "limit"]
    assert msgspec.convert(pushed["kinds"], FunConfig).errors() == []


def test_an_async_function_and_a_stream_receive_converted_arguments(args_node):
    gw, _ = args_node
    assert call(gw, "inline", {"ids": [U], "at": "2024-05-01T12:00:00Z"}) == [
        {"list": [f"UUID:{U}"]},
        "datetime:2024-05-01T12:00:00+00:00",
    ]

    async def stream() -> list[Any]:
        c = await Client.connect(gw.url, token=token())
        try:
            await c.join("api:args")
            return [r.result async for r in c.stream("args", "each", {"ids": [U, U2]}, topic="api:args") if r.has_more]
        finally:
            await c.close()

    assert asyncio.run(stream()) == [f"UUID:{U}", f"UUID:{U2}"]


def test_annotations_under_explicit_arg_types_are_converted_too(args_node):
    gw, _ = args_node
    got = calls(
        gw,
        ("explicit", {"x": [U], "day": "2024-05-01", "at": "2024-05-01T12:00:00+02:00"}),
        ("explicit", {"x": {"k": U2}, "day": "2024-05-02", "at": "2024-05-01T12:00:00"}),
        ("explicit", {"x": None, "day": "2024-05-03", "at": "2024-05-01T12:00:00"}),
    )
    assert got == [
        [{"list": [f"UUID:{U}"]}, "date:2024-05-01", "datetime:2024-05-01T12:00:00"],  # naive: the offset dropped
        [{"dict": {"k": f"UUID:{U2}"}}, "date:2024-05-02", "datetime:2024-05-01T12:00:00"],
        ["NoneType", "date:2024-05-03", "datetime:2024-05-01T12:00:00"],
    ]


def test_request_info_is_appended_unconverted_after_converted_arguments(args_node):
    gw, _ = args_node
    id_seen, flag_seen, info_seen = call(gw, "info", {"id": U})
    assert (id_seen, flag_seen) == (f"UUID:{U}", "bool:True")
    assert info_seen["dict"]["user_id"] == "str:u1"


def test_a_map_value_that_is_no_uuid_is_refused_by_the_node_naming_the_argument(args_node):
    """The gateway checks a map's values only as scalars: the node's conversion refuses what is
    no UUID, and the function does not run."""
    gw, _ = args_node
    r = call(gw, "maps", {"stamps": {}, "owners": {"x": "not-a-uuid"}, "mixed": {}})
    assert not r.success
    assert r.error.startswith("Internal Server Error: ValidationError: argument 'owners': Invalid UUID"), r.error
    r = call(gw, "maps", {"stamps": {"a": "yesterday"}, "owners": {}, "mixed": {}})
    assert not r.success and "argument 'stamps': Invalid RFC3339 encoded datetime" in r.error, r.error
    assert call(gw, "maps", {"stamps": {}, "owners": {}, "mixed": {}}) == [{"dict": {}}] * 3  # still serving


def test_a_parameter_that_needs_no_conversion_has_no_converter():
    """Converters are computed once, when the node builds its host: only the parameters whose
    annotation holds a UUID or datetime, or is an int (a float with a fraction refused), have
    one, so the others cost nothing per call."""
    from support import argsapp

    got = {fn.__name__: [(i, p) for i, _wire, _convert, p in converters(fn)] for fn in argsapp.svc.functions.values()}
    assert got["kinds"] == [(0, "id"), (1, "at"), (3, "n"), (8, "ids"), (13, "maybe"), (14, "limit")]
    assert got["info"] == [(0, "id")]  # not request_info
    # a union of containers arrives as either: its converter takes every value but None
    assert [(i, w) for i, w, _c, _n in converters(argsapp.explicit)] == [(0, object), (1, str), (2, str)]
    assert got["defaults"] == [(0, "id"), (1, "at"), (2, "ids"), (3, "stamps"), (4, "maybe"), (5, "gone"), (6, "n")]


@pytest.mark.parametrize(
    ("annotation", "wire"),
    [
        ("str", None),
        ("int | None", float),
        ("int", float),
        ("float", None),
        ("bool", None),
        ("list[int]", list),
        ("list[float]", None),
        ("list[int | float]", None),
        ("list[str]", None),
        ("list[dict[str, Any]]", None),
        ("dict[str, int]", None),
        ("Any", None),
        ("uuid.UUID", str),
        ("datetime.datetime | None", str),
        ("list[uuid.UUID]", list),
        ("Optional[list[uuid.UUID]]", list),
        ("list[dict[str, datetime.datetime]]", list),
        ("dict[str, uuid.UUID]", dict),
        ("dict[str, uuid.UUID | int] | None", dict),
    ],
)
def test_the_wire_type_a_converter_takes(annotation, wire):
    """A value is rebuilt only when it arrives as its wire type: a datetime that arrives as one,
    or None, is passed as it is."""
    mod = declare(f"@svc.api\ndef f(x: {annotation}): return x\n")
    got = converters(mod.f)
    assert [w for _i, w, _c, _n in got] == ([] if wire is None else [wire])


def test_an_int_parameter_refuses_a_fraction_as_the_gateway_refuses_a_wrong_type(args_node):
    """The SDK maps `int` to the gateway's `num` (any number): the node refuses 2.5 for an int
    parameter, and the client reads it as the gateway's own wrong-type error (shown without
    detail_error too: it is about the request, not the node). A whole float is the int."""
    gw, _ = args_node
    wrong = call(gw, "whole", {"n": "two", "ns": []})  # the gateway's validator: the wording to match
    assert wrong.error == 'Invalid argument: invalid argument type for "n", expected :num, got "two"'
    got = calls(
        gw,
        ("whole", {"n": 2.5, "ns": []}),
        ("whole", {"n": 2, "ns": [1, 2.25]}),
        ("whole", {"n": 2, "ns": [], "maybe": -0.5}),
        ("whole", {"n": 2.0, "ns": [1, 3.0], "maybe": 4.0}),
        ("whole", {"n": 7, "ns": [], "maybe": None}),
    )
    assert got[0].error == (
        'Invalid argument: invalid argument type for "n", expected :num (a whole number: the function takes an int), '
        "got 2.5"
    ), got[0]
    assert got[1].error == (
        'Invalid argument: invalid item in list_num argument "ns": expected a whole number (the function takes '
        "list[int]), got 2.25 at index 1"
    ), got[1]
    assert got[2].error.startswith('Invalid argument: invalid argument type for "maybe", expected :num'), got[2]
    assert got[3] == ["int:2", {"list": ["int:1", "int:3"]}, "int:4"]  # whole floats arrive as ints
    assert got[4] == ["int:7", {"list": []}, "NoneType"]
