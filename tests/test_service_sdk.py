"""The declaration half of the service SDK (genapi.service): signatures mapped to FunConfigs,
refusals at decoration time, and the configs as the gateway's own checks see them."""

import importlib
import subprocess
import sys
import textwrap
import types
from datetime import UTC, datetime

import msgspec
import pytest

from genapi._core.validate import Limits, Validator
from genapi.errors import ConfigError
from genapi.service import SUPPORTED_ANNOTATIONS, Service
from genapi.structs import FunConfig

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


def test_every_type_family_is_accepted_and_converted_into_a_call():
    """The gateway's validator takes the generated arg_types and turns a client's args into the
    positional arguments the function takes."""
    mod = declare("""
        @svc.api(response_type="sync", timeout=5000, check_permission="any_authenticated")
        def kinds(id: uuid.UUID, at: datetime.datetime, name: str, n: int, ratio: float, flag: bool,
                  tags: list[str], scores: list[float], ids: list[uuid.UUID], rows: list[dict],
                  mixed: list, meta: dict[str, Any], anything: Any, maybe: int | None,
                  limit: int = 10):
            return dict(id=id, at=at, name=name, n=n, ratio=ratio, flag=flag, tags=tags, scores=scores,
                        ids=ids, rows=rows, mixed=mixed, meta=meta, anything=anything, maybe=maybe,
                        limit=limit)
    """)
    cfg = only(mod)
    assert cfg.errors() == []
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
    got = mod.kinds(*validator(cfg).convert(args))
    assert got == {**args, "at": datetime(2024, 5, 1, 12, tzinfo=UTC), "limit": 10}
    assert list(cfg.arg_orders) == [*args, "limit"]


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
        args = validator(cfg).convert({"id": U, "at": "2024-05-01T00:00:00+02:00", "tags": [], "meta": {}})
        got = mod.svc.functions[cfg.mfa](*args, {"request_id": "r", "user_id": "u", "device_id": None})
        assert got["at"].isoformat() == "2024-05-01T00:00:00+02:00"
        assert (got["id"], got["maybe"], got["flag"], got["user"]) == (U, None, True, "u")
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
