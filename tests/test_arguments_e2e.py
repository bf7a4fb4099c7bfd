"""Every argument type, option, boundary and error, driven both through a real gateway over a
socket and through the Python API of the compiled validator: the two must agree exactly."""

import json

import msgspec
import pytest

from genapi._core.validate import ArgumentError, Limits, Validator
from genapi.client import Client
from support.gateway_proc import GatewayProcess

MISSING = object()
U1 = "550e8400-e29b-41d4-a716-446655440000"
OK, ERR = "ok", "err"

# (case id, spec, value, expected result (JSON) or error text after "Invalid argument: ")
CASES = [
    ("string", "string", "hé", (OK, "hé")),
    ("string-at-3000", "string", "a" * 3000, (OK, "a" * 3000)),
    ("string-over-3000", "string", "a" * 3001, (ERR, 'invalid argument size for "v", max 3000 bytes')),
    ("string-tuple-limit", ["string", 4], "abcd", (OK, "abcd")),
    ("string-tuple-over", ["string", 4], "abcde", (ERR, 'invalid argument size for "v", max 4 bytes')),
    ("string-utf8-at-limit", {"type": "string", "max_bytes": 10}, "é" * 5, (OK, "é" * 5)),
    (
        "string-utf8-over",
        {"type": "string", "max_bytes": 10},
        "é" * 5 + "a",
        (ERR, 'invalid argument size for "v", max 10 bytes'),
    ),
    ("string-4byte-chars", {"type": "string", "max_bytes": 8}, "😀😀", (OK, "😀😀")),
    (
        "string-4byte-over",
        {"type": "string", "max_bytes": 7},
        "😀😀",
        (ERR, 'invalid argument size for "v", max 7 bytes'),
    ),
    ("string-wrong-type", "string", 5, (ERR, 'invalid argument type for "v", expected :string, got 5')),
    ("num-int", "num", 3, (OK, 3)),
    ("num-float", "num", 2.5, (OK, 2.5)),
    ("num-bool", "num", True, (ERR, 'invalid argument type for "v", expected :num, got true')),
    ("num-string", "num", "1", (ERR, 'invalid argument type for "v", expected :num, got "1"')),
    ("boolean", "boolean", False, (OK, False)),
    ("boolean-int", "boolean", 0, (ERR, 'invalid argument type for "v", expected :boolean, got 0')),
    ("uuid", "uuid", U1, (OK, U1)),
    ("uuid-upper", "uuid", U1.upper(), (OK, U1.upper())),
    (
        "uuid-bad",
        "uuid",
        "550e8400e29b41d4a716446655440000",
        (ERR, 'invalid argument value for "v", require a UUID format string'),
    ),
    ("datetime-z", "datetime", "2024-05-06T07:08:09Z", (OK, "2024-05-06T07:08:09Z")),
    ("datetime-offset", "datetime", "2024-05-06T07:08:09+07:00", (OK, "2024-05-06T07:08:09+07:00")),
    (
        "datetime-naive",
        "datetime",
        "2024-05-06T07:08:09",
        (ERR, 'datetime must include timezone offset (e.g. "Z" or "+00:00") for argument "v"'),
    ),
    ("datetime-garbage", "datetime", "yesterday", (ERR, 'invalid datetime format for "v": "yesterday"')),
    ("naive-datetime", "naive_datetime", "2024-05-06T07:08:09", (OK, "2024-05-06T07:08:09")),
    ("naive-drops-offset", "naive_datetime", "2024-05-06T07:08:09+07:00", (OK, "2024-05-06T07:08:09")),
    ("list", "list", [1, "a", True, None], (OK, [1, "a", True, None])),
    ("list-nested-list", "list", [[1]], (ERR, 'nested list is not supported yet (argument "v")')),
    ("list-nested-map", "list", [{"a": 1}], (ERR, 'nested map is not supported yet (argument "v")')),
    ("list-at-max", {"type": "list", "max_items": 3}, [1, 2, 3], (OK, [1, 2, 3])),
    (
        "list-over-max",
        {"type": "list", "max_items": 3},
        [1, 2, 3, 4],
        (ERR, 'list argument exceeds max items of 3 (argument "v")'),
    ),
    ("list-string", {"type": "list_string", "max_items": 2, "max_item_bytes": 4}, ["ab", "éé"], (OK, ["ab", "éé"])),
    (
        "list-string-item-over",
        {"type": "list_string", "max_item_bytes": 4},
        ["éé", "ééa"],
        (ERR, 'string item in list_string exceeds max byte size of 4 (argument "v")'),
    ),
    (
        "list-string-too-many",
        ["list_string", 2],
        ["a", "b", "c"],
        (ERR, 'list_string argument exceeds max items of 2 (argument "v")'),
    ),
    (
        "list-string-bad-item",
        "list_string",
        ["a", 1],
        (ERR, 'invalid item in list_string argument "v": expected string, got 1'),
    ),
    ("list-num", "list_num", [1, 2.5], (OK, [1, 2.5])),
    ("list-num-bool", "list_num", [1, False], (ERR, 'invalid item in list_num argument "v": expected num, got false')),
    ("list-uuid", "list_uuid", [U1], (OK, [U1])),
    ("list-uuid-bad", "list_uuid", ["x"], (ERR, 'invalid item in list_uuid argument "v": expected uuid, got "x"')),
    ("list-map", "list_map", [{"a": 1}, {}], (OK, [{"a": 1}, {}])),
    ("list-map-not-map", "list_map", [1], (ERR, 'invalid item in list_map argument "v": expected map, got 1')),
    ("list-map-nested", "list_map", [{"a": {"b": 1}}], (ERR, 'nested map is not supported yet (argument "v")')),
    ("list-wrong-type", "list", "abc", (ERR, 'invalid argument type for "v", expected :list, got "abc"')),
    ("map", "map", {"a": 1, "b": "x"}, (OK, {"a": 1, "b": "x"})),
    ("map-at-max", ["map", 2], {"a": 1, "b": 2}, (OK, {"a": 1, "b": 2})),
    ("map-over-max", ["map", 2], {"a": 1, "b": 2, "c": 3}, (ERR, 'map argument exceeds max items of 2 (argument "v")')),
    (
        "map-required",
        {"type": "map", "required": ["a", "b"]},
        {"c": 1},
        (ERR, 'map argument missing required keys: ["a", "b"] (argument "v")'),
    ),
    (
        "map-accept",
        {"type": "map", "accept": ["a"]},
        {"a": 1, "z": 2, "y": 3},
        (ERR, 'map argument contains rejected keys: ["y", "z"] (argument "v")'),
    ),
    ("map-required-accept-ok", {"type": "map", "required": ["a"], "accept": ["a", "b"]}, {"a": 1}, (OK, {"a": 1})),
    ("map-nested", "map", {"a": [1]}, (ERR, 'nested list is not supported yet (argument "v")')),
    ("map-wrong-type", "map", [1], (ERR, 'invalid argument type for "v", expected :map, got [1]')),
    ("any", "any", {"deep": [{"x": [1]}]}, (OK, {"deep": [{"x": [1]}]})),
    ("nil-refused", "string", None, (ERR, 'nil value not accepted for argument "v"')),
    ("nil-allowed", {"type": "string", "allow_nil": True}, None, (OK, None)),
    ("missing", "num", MISSING, (ERR, 'missing argument "v" in "c"')),
    ("missing-default", {"type": "num", "default_value": 42}, MISSING, (OK, 42)),
    ("missing-allow-nil", {"type": "num", "allow_nil": True}, MISSING, (OK, None)),
]


def toml(v):
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list):
        return "[" + ", ".join(toml(x) for x in v) + "]"
    return json.dumps(v)


def config():
    blocks = ["[auth]\nrequire_verified_user_id = false\n"]
    for i, (_, spec, _, _) in enumerate(CASES):
        blocks.append(f"""
[[functions]]
service = "args"
request_type = "c"
version = "{i + 1}.0.0"
nodes = "local"
mfa = "testapi:identity"
arg_types = {{ v = {toml(spec)} }}
timeout = 1000
""")
    return "".join(blocks)


@pytest.fixture(scope="module")
def results(run):
    """Runs every case through one gateway; returns {case id: Response}."""
    with GatewayProcess(config()) as gw:

        async def go():
            c = await Client.connect(gw.url)
            await c.join("api:args")
            out = {}
            for i, (cid, _, value, _) in enumerate(CASES):
                args = {} if value is MISSING else {"v": value}
                out[cid] = await c.call("args", "c", args, version=f"{i + 1}.0.0", raise_on_error=False)
            await c.close()
            return out

        out = run(go())
        assert gw.alive()
    return out


@pytest.fixture(scope="module")
def run():
    import uvloop

    return lambda coro: uvloop.run(coro)


@pytest.mark.parametrize("cid,spec,value,expected", CASES, ids=[c[0] for c in CASES])
def test_gateway_and_validator_agree(results, cid, spec, value, expected):
    kind, want = expected
    args = {} if value is MISSING else {"v": value}
    v = Validator({"v": spec}, None, "c", Limits())
    try:
        local = (OK, json.loads(msgspec.json.encode(v.convert(args)[0])))
    except ArgumentError as exc:
        local = (ERR, str(exc))
    assert local == (kind, want)
    resp = results[cid]
    if kind == OK:
        assert (resp.success, resp.result) == (True, want)
    else:
        assert (resp.success, resp.error) == (False, f"Invalid argument: {want}")


def test_default_limits_come_from_the_gateway_section(run):
    cfg = """
[gateway]
string_max_bytes = 10
list_max_items = 2
map_max_items = 1

[auth]
require_verified_user_id = false

[[functions]]
service = "lim"
request_type = "c"
nodes = "local"
mfa = "testapi:as_map"
arg_types.s = { type = "string", allow_nil = true }
arg_types.l = { type = "list_string", allow_nil = true }
arg_types.m = { type = "map", allow_nil = true }
arg_orders = "map"
timeout = 1000
"""
    with GatewayProcess(cfg) as gw:

        async def go():
            c = await Client.connect(gw.url)
            await c.join("api:lim")
            cases = [
                ({"s": "é" * 5}, None),
                ({"s": "é" * 5 + "a"}, 'invalid argument size for "s", max 10 bytes'),
                ({"l": ["a", "b"]}, None),
                ({"l": ["a", "b", "c"]}, 'list_string argument exceeds max items of 2 (argument "l")'),
                ({"l": ["x" * 11]}, 'string item in list_string exceeds max byte size of 10 (argument "l")'),
                ({"m": {"a": 1}}, None),
                ({"m": {"a": 1, "b": 2}}, 'map argument exceeds max items of 1 (argument "m")'),
            ]
            for args, err in cases:
                r = await c.call("lim", "c", args, raise_on_error=False)
                if err is None:
                    assert r.success, r.error
                else:
                    assert r.error == f"Invalid argument: {err}"
            await c.close()

        run(go())
