"""API discovery (genapi.list_apis, `genapi apis`): what each caller may call, and argument
schemas that accept exactly what the gateway accepts, through real gateway processes."""

import json
import subprocess
import sys

import jsonschema
import pytest

from genapi._core.validate import Limits, Validator
from genapi.client import Client
from genapi.config import parse
from genapi.errors import ArgumentError
from genapi.request import discovery
from genapi.request.bind import Functions
from support.gateway_proc import GatewayProcess

UUID = "123e4567-e89b-12d3-a456-426614174000"

# every type, every limit form, nil and defaults (the gateway's limits changed, to be seen in the schemas)
KINDS = """
arg_orders = "map"
[functions.arg_types]
s = ["string", 5]
n = "num"
b = { type = "boolean", default_value = false }
u = "uuid"
dt = { type = "datetime", allow_nil = true }
l = ["list", 3]
ls = { type = "list_string", max_items = 2, max_item_bytes = 3 }
ln = "list_num"
lu = { type = "list_uuid", max_items = 1, allow_nil = true }
lm = { type = "list_map", max_items = 2, allow_nil = true }
m = { type = "map", max_items = 3, required = ["k"], accept = ["k", "v"], allow_nil = true }
free = { type = "map", allow_nil = true }
a = { type = "any", allow_nil = true }
a2 = { type = "any", default_value = "x" }
"""

CONFIG = f"""
[gateway]
workers = 2
string_max_bytes = 8
list_max_items = 4
map_max_items = 3

[auth]
callback = "testapi:auth_callback"
require_verified_user_id = false

[[functions]]
service = "pub"
request_type = "echo"
mfa = "testapi:echo"
arg_types = {{ text = ["string", 10] }}
version = "1.0.0"

[[functions]]
service = "pub"
request_type = "echo"
mfa = "testapi:echo"
arg_types = {{ text = ["string", 10] }}
version = "1.1.0"

[[functions]]
service = "pub"
request_type = "echo"
mfa = "testapi:echo"
arg_types = {{ text = "string", n = {{ type = "num", default_value = 2 }} }}
arg_orders = ["text", "n"]
version = "2.0.0"

[[functions]]
service = "pub"
request_type = "echo"
mfa = "testapi:echo"
arg_types = {{ text = "string" }}
version = "3.0.0"
disabled = true

[[functions]]
service = "pub"
request_type = "kinds"
mfa = "testapi:as_map"
{KINDS}

[[functions]]
service = "priv"
request_type = "users"
mfa = "testapi:nothing"
check_permission = "any_authenticated"

[[functions]]
service = "priv"
request_type = "readers"
mfa = "testapi:nothing"
check_permission = {{ role = ["reader", "ops"] }}

[[functions]]
service = "priv"
request_type = "admins"
mfa = "testapi:nothing"
check_permission = {{ role = ["admin"] }}

[[functions]]
service = "priv"
request_type = "own"
mfa = "testapi:echo"
arg_types = {{ text = "string", user_id = "string" }}
arg_orders = ["text", "user_id"]
check_permission = {{ arg = "user_id" }}

[[functions]]
service = "priv"
request_type = "cb"
mfa = "testapi:echo"
arg_types = {{ text = "string" }}
permission_callback = "testapi:allow_if_magic"
check_permission = {{ role = ["nobody"] }}

[[functions]]
service = "priv"
request_type = "off"
mfa = "testapi:nothing"
disabled = true
"""


def max_bytes(validator, limit, instance, schema):
    """`x-maxBytes`: the gateway's limit in UTF-8 bytes (maxLength counts characters)."""
    if isinstance(instance, str) and len(instance.encode("utf-8", "surrogatepass")) > limit:
        yield jsonschema.ValidationError(f"{instance!r} is longer than {limit} bytes")


# a standard validator taught the one keyword JSON Schema has no word for
Exact = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"x-maxBytes": max_bytes})


PUBLIC = {("pub", "echo"), ("pub", "kinds"), ("priv", "cb")}
USER = PUBLIC | {("priv", "users"), ("priv", "readers"), ("priv", "own")}  # auth_callback's users are readers


@pytest.fixture(scope="module")
def gw():
    g = GatewayProcess(CONFIG)
    yield g
    assert g.stop() == 0


async def connect(gw, user=None):
    params = {"token": "let-me-in", "user": user} if user else {"token": "anon"}
    c = await Client.connect(gw.url, params=params)
    await c.join("api:x")
    return c


async def listed(c, **args):
    return (await c.call("genapi", "list_apis", args or None)).result


def names(entries):
    return {(e["service"], e["request_type"]) for e in entries}


def test_lists_what_the_caller_may_call(gw, run):
    async def go():
        anon, alice = await connect(gw), await connect(gw, "alice")
        a, u = await listed(anon), await listed(alice)
        assert names(a) == PUBLIC and names(u) == USER
        # the listing is true: every listed function passes its permission check ...
        for c, entries in ((anon, a), (alice, u)):
            for e in entries:
                args = {"text": "magic", "user_id": "alice"} if e["request_type"] in ("own", "cb") else {}
                if e["request_type"] == "echo":
                    args = {"text": "hi"}
                if e["request_type"] == "kinds":
                    continue  # required args: checked by test_schemas_accept_what_the_gateway_accepts
                r = await c.call(e["service"], e["request_type"], args, raise_on_error=False)
                assert r.error != "Permission denied", (e, r)
        # ... and an unlisted one (not disabled) fails it
        for c, entries in ((anon, a), (alice, u)):
            for svc, rt in {("priv", "users"), ("priv", "readers"), ("priv", "admins"), ("priv", "own")} - names(
                entries
            ):
                r = await c.call(
                    svc, rt, {"text": "x", "user_id": "alice"} if rt == "own" else {}, raise_on_error=False
                )
                assert r.error == "Permission denied", (svc, rt, r)
        # per-call checks are said; list_apis itself and disabled functions are not listed
        by = {(e["service"], e["request_type"]): e for e in u}
        assert by[("priv", "own")]["per_call"] == {"arg": "user_id"}
        assert by[("priv", "cb")]["per_call"] == "callback"
        assert "per_call" not in by[("priv", "readers")] and "permission" not in by[("priv", "readers")]
        assert ("genapi", "list_apis") not in names(u) and ("priv", "off") not in names(u)
        # one service only
        assert names(await listed(alice, service="priv")) == {k for k in USER if k[0] == "priv"}
        await anon.close()
        await alice.close()

    run(go())


def test_versions_are_grouped_by_shape(gw, run):
    async def go():
        c = await connect(gw)
        echo = [e for e in await listed(c) if e["request_type"] == "echo"]
        assert [(e["versions"], e["latest"]) for e in echo] == [(["1.0.0", "1.1.0"], False), (["2.0.0"], True)]
        old, new = echo
        assert old["args"]["properties"]["text"]["maxLength"] == 10 and old["args"]["required"] == ["text"]
        assert new["args"]["properties"]["n"]["default"] == 2 and new["args"]["required"] == ["text"]
        assert new["args"]["properties"]["text"]["maxLength"] == 8  # [gateway] string_max_bytes
        # the latest entry's version is what a call without a version runs
        assert (await c.call("pub", "echo", {"text": "x"})).result == {"text": "x", "n": 2}
        await c.close()

    run(go())


BASE = {"s": "abcde", "n": 1, "u": UUID, "l": [], "ls": [], "ln": []}  # the required arguments
GONE = object()
# changes to BASE (GONE: the argument left out); each is sent to the gateway and checked against the schema
CHANGES = [
    {},
    {"s": "abcdef"},  # string over max_bytes
    {"s": "ééé"},  # 3 characters, 6 bytes
    {"s": "é€"},  # 5 bytes
    {"ls": ["é"]},
    {"ls": ["éé"]},
    {"m": {"k": "éééé"}},
    {"m": {"k": "éééée"}},  # value over string_max_bytes 8
    {"s": "", "n": 1.5, "u": UUID.upper(), "ln": [1, 2.5], "b": True},
    {"n": True},  # bool is not num
    {"n": "1"},
    {"u": UUID[:-1]},  # short uuid
    {"u": UUID[:-1] + "g"},
    {"u": UUID + "\n"},
    {"ln": GONE},  # a required argument missing
    {"extra": 1},  # undeclared argument
    {"s": None},  # null without allow_nil
    {"b": None},  # null although a default exists
    {"dt": None, "lu": None, "lm": None, "m": None, "free": None, "a": None},
    {"dt": 5},
    {"dt": "2024-05-01T10:00:00+02:00"},
    {"l": [1, "ab", None, True]},  # over list's max_items 3
    {"l": [1, "ab", None]},
    {"l": ["123456789"]},  # item over [gateway] string_max_bytes 8
    {"l": [[1]]},  # nested list
    {"l": [{"a": 1}]},
    {"l": "abc"},
    {"ls": ["abc", "d"]},
    {"ls": ["abcd"]},  # over max_item_bytes
    {"ls": ["a", "b", "c"]},  # over max_items
    {"ls": [1]},
    {"ln": ["1"]},
    {"ln": [1, 2, 3, 4, 5]},  # over [gateway] list_max_items 4
    {"lu": [UUID]},
    {"lu": [UUID, UUID]},
    {"lu": ["x"]},
    {"lm": [{"a": 1, "b": "x"}, {}]},
    {"lm": [{"a": 1, "b": 2, "c": 3, "d": 4}]},  # item over [gateway] map_max_items 3
    {"lm": [{"a": [1]}]},
    {"lm": [1]},
    {"m": {"k": 1, "v": "x"}},
    {"m": {"v": "x"}},  # required key missing
    {"m": {"k": 1, "z": 2}},  # key not accepted
    {"m": {"k": {"x": 1}}},  # nested map
    {"m": {"k": "123456789"}},  # value over string_max_bytes
    {"free": {"a": 1, "b": 2, "c": 3}},
    {"free": {"a": 1, "b": 2, "c": 3, "d": 4}},  # over map_max_items 3
    {"free": []},
    {"a": {"deep": [[{}]]}, "a2": [1]},
    {"a2": None},  # any takes null only with allow_nil
]
SAMPLES = [{k: v for k, v in {**BASE, **change}.items() if v is not GONE} for change in CHANGES]


def test_schemas_accept_what_the_gateway_accepts(gw, run):
    async def go():
        c = await connect(gw)
        (kinds,) = [e for e in await listed(c) if e["request_type"] == "kinds"]
        schema = kinds["args"]
        jsonschema.Draft202012Validator.check_schema(schema)
        check = Exact(schema)
        verdicts = []
        for args in SAMPLES:
            r = await c.call("pub", "kinds", args, raise_on_error=False)
            assert r.success or r.error.startswith("Invalid argument: "), r
            verdicts.append((args, r.success, check.is_valid(args), r.error))
        await c.close()
        wrong = [v for v in verdicts if v[1] != v[2]]
        assert not wrong, wrong
        assert sum(v[1] for v in verdicts) >= 10 and sum(not v[1] for v in verdicts) >= 25  # both sides covered

    run(go())


def test_schema_follows_the_validator_offline():
    """Same check without a gateway, on the spec forms of one argument at a time: the Validator
    is what the gateway runs."""
    limits = Limits(6, 2, 2)
    specs = [
        "string",
        ["string", 3],
        {"type": "string", "allow_nil": True, "default_value": "d"},
        "num",
        "boolean",
        "uuid",
        "any",
        ["list", 1],
        "list_num",
        ["map", 1],
        {"type": "map", "accept": []},
    ]
    values = [
        None,
        "",
        "abc",
        "abcd",
        "abcdefg",
        "éé",
        ["éé"],
        {"a": "éé"},
        0,
        -1.5,
        True,
        False,
        UUID,
        [],
        [1],
        [1, 2],
        ["x"],
        {},
        {"a": 1},
        {"a": 1, "b": 2},
        {"a": None},
        {"a": []},
    ]
    for spec in specs:
        schema = discovery.arg_schema({"x": spec}, None, limits)
        jsonschema.Draft202012Validator.check_schema(schema)
        plain, check = jsonschema.Draft202012Validator(schema), Exact(schema)
        v = Validator({"x": spec}, None, "t", limits)
        for value in [*values, ...]:
            args = {} if value is ... else {"x": value}
            try:
                v.convert(args)
                ok = True
            except ArgumentError:
                ok = False
            assert check.is_valid(args) == ok, (spec, value)
            if value not in ("éé", ["éé"]):  # only the byte limit needs x-maxBytes
                assert plain.is_valid(args) == ok, (spec, value)


def test_built_once_per_registry_change():
    settings = parse(CONFIG)
    p = Functions.checked(settings)
    entry = p.registry.lookup("genapi", "list_apis", None)[1]
    callee = entry.callee
    assert isinstance(callee, discovery.ListApisCallee)

    class Req:
        user_id, user_roles = "bob", ["ops"]

    before = names(callee.answer(Req, [{}, None]))
    assert ("priv", "readers") in before
    p.registry.disable("priv", "readers", None)
    assert names(callee.answer(Req, [{}, None])) == before - {("priv", "readers")}


def test_discovery_off_is_an_unknown_function(run):
    cfg = CONFIG.replace("workers = 2", "workers = 1\ndiscovery = false")
    with GatewayProcess(cfg) as g:

        async def go():
            c = await connect(g, "alice")
            r = await c.call("genapi", "list_apis", None, raise_on_error=False)
            assert r.error == "unsupported function: list_apis version 0.0.0"
            await c.close()

        run(go())


def genapi(*args):
    return subprocess.run([sys.executable, "-m", "genapi", *args], capture_output=True, text=True, timeout=30)


def test_cli_from_control_port_and_config(run):
    g = GatewayProcess(CONFIG.replace("workers = 2", "workers = 1"))
    try:
        out = genapi("apis", "--control", g.control, "--json")
        assert out.returncode == 0, out.stderr
        every = json.loads(out.stdout)
        assert names(every) == USER | {("priv", "admins")}  # the admin view: every enabled function
        by = {(e["service"], e["request_type"]): e for e in every}
        assert by[("priv", "admins")]["permission"] == {"check_permission": {"role": ["admin"]}}
        assert by[("pub", "kinds")]["args"]["properties"]["free"]["maxProperties"] == 3  # the gateway's limits

        async def alice():
            c = await connect(g, "alice")
            try:
                return await listed(c)
            finally:
                await c.close()

        as_user = genapi("apis", "--control", g.control, "--json", "--user", "alice", "--role", "reader")
        assert json.loads(as_user.stdout) == run(alice())  # the same list as the channel's

        human = genapi("apis", "--control", g.control, "--service", "pub")
        assert human.returncode == 0 and human.stdout.splitlines() == [
            "pub.echo 1.0.0,1.1.0 sync (text: string(10))",
            "pub.echo 2.0.0 (latest) sync (text: string(8), n: num = 2)",
            "pub.kinds - (latest) sync (s: string(5), n: num, b: boolean = false, u: uuid, dt: datetime | null, "
            "l: list(3), ls: list_string(2), ln: list_num(4), lu: list_uuid(1) | null, lm: list_map(2) | null, "
            'm: map(3) | null, free: map(3) | null, a: any (optional), a2: any = "x")',
        ]
        anon = genapi("apis", "--control", g.control, "--service", "priv", "--role", "nobody")
        assert anon.stdout.splitlines() == ["priv.cb - (latest) sync (text: string(8)) [decided per call]"]
        offline = genapi("apis", "--config", g.config_path, "--json")
        assert offline.returncode == 0 and json.loads(offline.stdout) == every
    finally:
        g.stop()
    down = genapi("apis", "--control", g.control)
    assert down.returncode == 2 and "cannot connect" in down.stderr
