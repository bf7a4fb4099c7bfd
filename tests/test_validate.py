"""Tests of genapi._core.validate: argument validation and conversion (ArgumentHandler port)."""

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genapi._core.validate import ArgumentError, Limits, Validator

UUID = "123e4567-e89b-12d3-a456-426614174000"
UUID2 = "AF0C1B2E-0000-4ABC-8DEF-0123456789AB"
ALL_TYPES = [
    "string",
    "num",
    "boolean",
    "uuid",
    "datetime",
    "naive_datetime",
    "map",
    "list",
    "list_string",
    "list_num",
    "list_uuid",
    "list_map",
    "any",
]
LIST_TYPES = ["list", "list_string", "list_num", "list_uuid", "list_map"]


def one(spec, value, *, limits=None):
    """Convert {"x": value} for a single argument "x" of the given spec."""
    return Validator({"x": spec}, limits=limits).convert({"x": value})


def err(validator, args):
    with pytest.raises(ArgumentError) as info:
        validator.convert(args)
    return str(info.value)


def err1(spec, value, *, limits=None):
    return err(Validator({"x": spec}, limits=limits), {"x": value})


def spec_error(*a, **kw):
    with pytest.raises(ValueError) as info:
        Validator(*a, **kw)
    assert not isinstance(info.value, ArgumentError)
    return str(info.value)


# --------------------------------------------------------------------------- basics


def test_argument_error_is_value_error():
    assert issubclass(ArgumentError, ValueError)


def test_limits_defaults_and_custom():
    lim = Limits()
    assert (lim.string_max_bytes, lim.list_max_items, lim.map_max_items) == (3000, 1000, 1000)
    lim = Limits(string_max_bytes=10, list_max_items=2, map_max_items=3)
    assert (lim.string_max_bytes, lim.list_max_items, lim.map_max_items) == (10, 2, 3)
    assert Limits(1, 2, 3) == Limits(1, 2, 3)
    assert Limits(1, 2, 3) != Limits(1, 2, 4)
    assert "string_max_bytes=1" in repr(Limits(1, 2, 3))


@pytest.mark.parametrize("bad", [0, -1, True, "5", 1.5, None])
@pytest.mark.parametrize("field", ["string_max_bytes", "list_max_items", "map_max_items"])
def test_limits_rejects_non_positive_int(field, bad):
    with pytest.raises(ValueError, match=field):
        Limits(**{field: bad})


def test_names_property():
    v = Validator({"b": "num", "a": "string"}, ["a", "b"])
    assert v.names == ("b", "a")
    assert Validator(None).names == ()
    assert Validator({}).names == ()


# --------------------------------------------------------------------------- result shapes


@pytest.mark.parametrize("arg_types", [None, {}])
def test_no_arguments(arg_types):
    v = Validator(arg_types, request_type="ping")
    assert v.convert(None) == []
    assert v.convert({}) == []
    assert err(v, {"a": 1}) == 'extra arguments for "ping", extra: ["a"]'
    assert err(v, {"b": 1, "a": 2}) == 'extra arguments for "ping", extra: ["a", "b"]'


def test_no_arguments_with_map_orders():
    assert Validator({}, "map").convert({}) == []


def test_single_argument_without_orders():
    assert Validator({"name": "string"}).convert({"name": "bob"}) == ["bob"]
    assert Validator({"name": "string"}, []).convert({"name": "bob"}) == ["bob"]
    assert Validator({"name": "string"}, ["name"]).convert({"name": "bob"}) == ["bob"]


def test_ordered_arguments_follow_arg_orders():
    v = Validator({"a": "string", "b": "num", "c": "boolean"}, ["c", "a", "b"])
    assert v.convert({"a": "x", "b": 1, "c": False}) == [False, "x", 1]


def test_tuple_arg_orders_accepted():
    v = Validator({"a": "string", "b": "num"}, ("b", "a"))
    assert v.convert({"a": "x", "b": 1}) == [1, "x"]


def test_map_orders():
    v = Validator(
        {"a": "string", "b": {"type": "num", "default_value": 7}, "c": {"type": "num", "allow_nil": True}},
        "map",
    )
    out = v.convert({"a": "x"})
    assert out == [{"a": "x", "b": 7, "c": None}]
    assert list(out[0]) == ["a", "b", "c"]


def test_many_arguments_beyond_stack_slots():
    names = [f"a{i:02d}" for i in range(40)]
    v = Validator({n: "num" for n in names}, list(reversed(names)), "big")
    args = {n: i for i, n in enumerate(names)}
    assert v.convert(args) == list(reversed(range(40)))
    assert err(v, {**args, "zz": 1}) == 'extra arguments for "big", extra: ["zz"]'
    del args["a05"]
    assert err(v, args) == 'missing argument "a05" in "big"'


def test_args_none_means_empty():
    v = Validator({"a": {"type": "num", "default_value": 1}})
    assert v.convert(None) == [1]
    assert err(Validator({"a": "num"}, request_type="t"), None) == 'missing argument "a" in "t"'


def test_args_not_a_dict():
    v = Validator({"a": "num"}, request_type="t")
    assert err(v, [1]) == 'invalid arguments for "t", expected a map, got [1]'
    assert err(Validator({}, request_type="t"), "x") == 'invalid arguments for "t", expected a map, got "x"'


def test_validator_is_reusable_and_does_not_mutate_args():
    v = Validator({"a": "string", "b": "num"}, ["a", "b"])
    args = {"a": "x", "b": 1}
    for _ in range(3):
        assert v.convert(args) == ["x", 1]
    assert args == {"a": "x", "b": 1}


# --------------------------------------------------------------------------- extra / missing / nil


def test_extra_arguments_sorted_and_checked_first():
    v = Validator({"age": "num", "name": "string"}, ["name", "age"], "user.create")
    # Extra args are reported before the (also present) type error and missing argument.
    assert err(v, {"age": "bad", "zeta": 1, "alpha": 2}) == (
        'extra arguments for "user.create", extra: ["alpha", "zeta"]'
    )


def test_extra_argument_with_non_str_key():
    v = Validator({"a": "num"}, request_type="t")
    assert err(v, {"a": 1, 5: 2}) == 'extra arguments for "t", extra: [5]'


def test_missing_argument():
    v = Validator({"age": "num", "name": "string"}, ["name", "age"], "user.create")
    assert err(v, {"name": "x"}) == 'missing argument "age" in "user.create"'
    assert err(v, {}) == 'missing argument "age" in "user.create"'  # declaration order


def test_missing_argument_default_request_type():
    assert err(Validator({"a": "num"}), {}) == 'missing argument "a" in ""'


def test_nil_value_not_accepted():
    v = Validator({"age": "num"})
    assert err(v, {"age": None}) == 'nil value not accepted for argument "age"'


def test_validation_in_declaration_order():
    v = Validator({"b": "num", "a": "num"}, ["a", "b"])
    assert err(v, {"a": "x", "b": "y"}) == 'invalid argument type for "b", expected :num, got "y"'


@pytest.mark.parametrize("key", ["allow_nil", "allow_nil?"])
def test_allow_nil(key):
    v = Validator({"a": {"type": "string", key: True}, "b": "num"}, ["a", "b"])
    assert v.convert({"a": None, "b": 1}) == [None, 1]
    assert v.convert({"b": 1}) == [None, 1]
    assert v.convert({"a": "s", "b": 1}) == ["s", 1]
    assert err(v, {"a": 5, "b": 1}) == 'invalid argument type for "a", expected :string, got 5'


def test_allow_nil_false_explicit():
    v = Validator({"a": {"type": "string", "allow_nil": False}})
    assert err(v, {"a": None}) == 'nil value not accepted for argument "a"'
    assert err(v, {}) == 'missing argument "a" in ""'


def test_both_allow_nil_keys_agreeing():
    v = Validator({"a": {"type": "num", "allow_nil": True, "allow_nil?": True}})
    assert v.convert({}) == [None]


def test_default_value():
    v = Validator({"a": {"type": "num", "default_value": 18}})
    assert v.convert({}) == [18]
    assert v.convert({"a": 3}) == [3]
    assert err(v, {"a": None}) == 'nil value not accepted for argument "a"'


def test_default_value_and_allow_nil():
    v = Validator({"a": {"type": "num", "default_value": 18, "allow_nil": True}})
    assert v.convert({}) == [18]  # absent -> default wins
    assert v.convert({"a": None}) == [None]  # explicit nil allowed
    assert v.convert({"a": 2.5}) == [2.5]


def test_default_value_none_means_no_default():
    v = Validator({"a": {"type": "num", "default_value": None}})
    assert err(v, {}) == 'missing argument "a" in ""'
    v = Validator({"a": {"type": "num", "default_value": None, "allow_nil": True}})
    assert v.convert({}) == [None]


def test_default_value_used_as_is():
    default = ["x", "y"]
    v = Validator({"a": {"type": "list_string", "default_value": default}})
    assert v.convert({})[0] is default


def test_default_value_datetime_is_converted():
    v = Validator({"a": {"type": "datetime", "default_value": "2024-01-01T00:00:00Z"}})
    assert v.convert({}) == [datetime(2024, 1, 1, tzinfo=UTC)]


def test_present_value_ignores_default():
    v = Validator({"a": {"type": "string", "default_value": "d"}})
    assert err(v, {"a": 1}) == 'invalid argument type for "a", expected :string, got 1'


# --------------------------------------------------------------------------- string


def test_string_ok():
    assert one("string", "hello") == ["hello"]
    assert one("string", "") == [""]


@pytest.mark.parametrize("value,got", [(5, "5"), (1.5, "1.5"), (True, "true"), ([1], "[1]"), ({"a": 1}, '{"a":1}')])
def test_string_wrong_type(value, got):
    assert err1("string", value) == f'invalid argument type for "x", expected :string, got {got}'


def test_string_default_max_bytes():
    assert one("string", "a" * 3000) == ["a" * 3000]
    assert err1("string", "a" * 3001) == 'invalid argument size for "x", max 3000 bytes'
    assert one("string", "é" * 1500) == ["é" * 1500]
    assert err1("string", "é" * 1500 + "a") == 'invalid argument size for "x", max 3000 bytes'


@pytest.mark.parametrize("spec", [["string", 100], {"type": "string", "max_bytes": 100}])
def test_string_max_bytes_multibyte(spec):
    assert one(spec, "é" * 50) == ["é" * 50]  # 100 bytes, 50 chars
    assert err1(spec, "é" * 50 + "a") == 'invalid argument size for "x", max 100 bytes'
    assert one(spec, "a" * 100) == ["a" * 100]
    assert err1(spec, "a" * 101) == 'invalid argument size for "x", max 100 bytes'


@pytest.mark.parametrize("char,nbytes", [("é", 2), ("€", 3), ("😀", 4), ("\ud800", 3)])
def test_string_utf8_byte_length(char, nbytes):
    n = 12
    max_bytes = n * nbytes
    assert one(["string", max_bytes], char * n) == [char * n]
    assert err1(["string", max_bytes], char * n + "a") == f'invalid argument size for "x", max {max_bytes} bytes'
    assert err1(["string", max_bytes - 1], char * n) == f'invalid argument size for "x", max {max_bytes - 1} bytes'


def test_string_mixed_widths_at_limit():
    s = "a" + "é" + "€" + "😀"  # 1 + 2 + 3 + 4 = 10 bytes, 4 chars
    assert one(["string", 10], s) == [s]
    assert err1(["string", 9], s) == 'invalid argument size for "x", max 9 bytes'


def test_string_custom_limits():
    lim = Limits(string_max_bytes=4)
    assert one("string", "abcd", limits=lim) == ["abcd"]
    assert err1("string", "abcde", limits=lim) == 'invalid argument size for "x", max 4 bytes'
    # an explicit max_bytes overrides the limit
    assert one(["string", 10], "abcdefghij", limits=lim) == ["abcdefghij"]


def test_string_subclass_accepted():
    class S(str):
        pass

    assert one("string", S("abc")) == ["abc"]


# --------------------------------------------------------------------------- num / boolean


@pytest.mark.parametrize("value", [0, -5, 3.25, 10**40, -0.0, float("inf")])
def test_num_ok(value):
    assert one("num", value) == [value]


@pytest.mark.parametrize(
    "value,got",
    [
        (True, "true"),
        (False, "false"),
        ("thirty", '"thirty"'),
        ("5", '"5"'),
        ([5], "[5]"),
        ({}, "{}"),
    ],
)
def test_num_wrong_type(value, got):
    assert err1("num", value) == f'invalid argument type for "x", expected :num, got {got}'


def test_num_error_example():
    v = Validator({"age": "num"})
    assert err(v, {"age": "thirty"}) == 'invalid argument type for "age", expected :num, got "thirty"'


@pytest.mark.parametrize("value", [True, False])
def test_boolean_ok(value):
    assert one("boolean", value)[0] is value


@pytest.mark.parametrize("value,got", [(0, "0"), (1, "1"), ("true", '"true"'), (None, None), ([True], "[true]")])
def test_boolean_wrong_type(value, got):
    if value is None:
        assert err1("boolean", value) == 'nil value not accepted for argument "x"'
    else:
        assert err1("boolean", value) == f'invalid argument type for "x", expected :boolean, got {got}'


# --------------------------------------------------------------------------- uuid


@pytest.mark.parametrize("value", [UUID, UUID2, UUID.upper(), "00000000-0000-0000-0000-000000000000"])
def test_uuid_ok(value):
    assert one("uuid", value) == [value]


@pytest.mark.parametrize(
    "value",
    [
        UUID[:-1],  # 35 chars
        UUID + "0",  # 37 chars
        UUID.replace("-", ""),  # no dashes
        "123e4567-e89b-12d3-a456-42661417400g",  # non-hex
        "123e4567e-89b-12d3-a456-426614174000",  # misplaced dash
        "123e4567-e89b-12d3-a456-42661417400é",  # non-ASCII, 36 chars
        "{123e4567-e89b-12d3-a456-426614174000}",
        "",
    ],
)
def test_uuid_invalid_value(value):
    assert err1("uuid", value) == 'invalid argument value for "x", require a UUID format string'


@pytest.mark.parametrize("value,got", [(5, "5"), (True, "true"), ([UUID], f'["{UUID}"]')])
def test_uuid_wrong_type(value, got):
    assert err1("uuid", value) == f'invalid argument type for "x", expected :uuid, got {got}'


# --------------------------------------------------------------------------- datetime


@pytest.mark.parametrize(
    "value,expected",
    [
        ("2024-01-02T03:04:05Z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02T03:04:05+00:00", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        (
            "2024-01-02T03:04:05.123456+07:00",
            datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=timezone(timedelta(hours=7))),
        ),
        ("2024-01-02 03:04:05-05:30", datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(-timedelta(hours=5, minutes=30)))),
    ],
)
def test_datetime_ok(value, expected):
    (out,) = one("datetime", value)
    assert isinstance(out, datetime)
    assert out.tzinfo is not None
    assert out == expected
    assert out.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize("value", ["2024-01-02T03:04:05", "2024-01-02"])
def test_datetime_requires_offset(value):
    assert err1("datetime", value) == ('datetime must include timezone offset (e.g. "Z" or "+00:00") for argument "x"')


@pytest.mark.parametrize("value", ["nope", "", "2024-13-01T00:00:00Z", "2024-01-01T25:00:00Z"])
def test_datetime_unparseable(value):
    assert err1("datetime", value) == f'invalid datetime format for "x": "{value}"'


@pytest.mark.parametrize("value,got", [(5, "5"), (True, "true"), (["2024-01-01"], '["2024-01-01"]')])
def test_datetime_wrong_type(value, got):
    assert err1("datetime", value) == (
        f'invalid argument type for "x", expected :datetime (ISO 8601 string), got {got}'
    )


def test_naive_datetime_ok():
    (out,) = one("naive_datetime", "2024-01-02T03:04:05.5")
    assert out == datetime(2024, 1, 2, 3, 4, 5, 500000)
    assert out.tzinfo is None


@pytest.mark.parametrize("value", ["2024-01-02T03:04:05+02:00", "2024-01-02T03:04:05Z"])
def test_naive_datetime_drops_offset(value):
    (out,) = one("naive_datetime", value)
    assert out == datetime(2024, 1, 2, 3, 4, 5)  # wall time kept, offset dropped
    assert out.tzinfo is None


def test_naive_datetime_unparseable():
    assert err1("naive_datetime", "soon") == 'invalid naive_datetime format for "x": "soon"'


def test_naive_datetime_wrong_type():
    assert err1("naive_datetime", 5) == (
        'invalid argument type for "x", expected :naive_datetime (ISO 8601 string), got 5'
    )


# --------------------------------------------------------------------------- map


def test_map_ok_scalars_and_identity():
    value = {"s": "x", "i": 1, "f": 1.5, "b": True, "n": None}
    out = one("map", value)
    assert out == [value]
    assert out[0] is value
    assert one("map", {}) == [{}]


@pytest.mark.parametrize("value,got", [([1], "[1]"), ("x", '"x"'), (1, "1"), (True, "true")])
def test_map_wrong_type(value, got):
    assert err1("map", value) == f'invalid argument type for "x", expected :map, got {got}'


def test_map_non_str_key():
    assert err1("map", {1: 2}) == 'invalid argument type for "x", expected :map, got {"1":2}'
    assert err1({"type": "map", "accept": ["a"]}, {("t",): 2}).startswith(
        'invalid argument type for "x", expected :map, got '
    )


def test_map_default_max_items():
    ok = {str(i): i for i in range(1000)}
    assert one("map", ok) == [ok]
    assert err1("map", {**ok, "k": 0}) == 'map argument exceeds max items of 1000 (argument "x")'


@pytest.mark.parametrize("spec", [["map", 2], {"type": "map", "max_items": 2}])
def test_map_max_items(spec):
    assert one(spec, {"a": 1, "b": 2}) == [{"a": 1, "b": 2}]
    assert err1(spec, {"a": 1, "b": 2, "c": 3}) == 'map argument exceeds max items of 2 (argument "x")'


def test_map_custom_limits():
    lim = Limits(map_max_items=1, string_max_bytes=3)
    assert one("map", {"a": "abc"}, limits=lim) == [{"a": "abc"}]
    assert err1("map", {"a": 1, "b": 2}, limits=lim) == 'map argument exceeds max items of 1 (argument "x")'
    assert err1("map", {"a": "abcd"}, limits=lim) == (
        'nested map string value exceeds max byte size for key "a" (argument "x")'
    )


def test_map_string_value_limit():
    assert one("map", {"k": "é" * 1500}) == [{"k": "é" * 1500}]
    assert err1("map", {"k": "é" * 1500 + "a"}) == (
        'nested map string value exceeds max byte size for key "k" (argument "x")'
    )


def test_map_nested_values_refused():
    assert err1("map", {"a": {"b": 1}}) == 'nested map is not supported yet (argument "x")'
    assert err1("map", {"a": [1]}) == 'nested list is not supported yet (argument "x")'


def test_map_unsupported_python_value():
    assert err1("map", {"a": b"x"}).startswith("unsupported type ")


def test_map_required():
    spec = {"type": "map", "required": ["a", "b", "c"]}
    assert one(spec, {"a": 1, "b": 2, "c": 3, "d": 4}) == [{"a": 1, "b": 2, "c": 3, "d": 4}]
    assert err1(spec, {"c": 1}) == 'map argument missing required keys: ["a", "b"] (argument "x")'
    spec = {"type": "map", "required": ["z", "a"]}
    assert err1(spec, {}) == 'map argument missing required keys: ["z", "a"] (argument "x")'


def test_map_accept():
    spec = {"type": "map", "accept": ["a", "b"]}
    assert one(spec, {"a": 1}) == [{"a": 1}]
    assert one(spec, {}) == [{}]
    assert err1(spec, {"zz": 1, "a": 1, "c": 2}) == 'map argument contains rejected keys: ["c", "zz"] (argument "x")'


def test_map_empty_accept_is_unrestricted():
    assert one({"type": "map", "accept": []}, {"q": 1}) == [{"q": 1}]


def test_map_check_order_size_required_accept_values():
    spec = {"type": "map", "max_items": 2, "required": ["a"], "accept": ["a", "b"]}
    assert err1(spec, {"x": 1, "y": 2, "z": 3}) == 'map argument exceeds max items of 2 (argument "x")'
    assert err1(spec, {"x": {}}) == 'map argument missing required keys: ["a"] (argument "x")'
    assert err1(spec, {"a": 1, "x": {}}) == 'map argument contains rejected keys: ["x"] (argument "x")'
    assert err1(spec, {"a": 1, "b": {}}) == 'nested map is not supported yet (argument "x")'


# --------------------------------------------------------------------------- list


def test_list_ok():
    value = ["s", 1, 2.5, True, None]
    out = one("list", value)
    assert out == [value] and out[0] is value
    assert one("list", []) == [[]]


@pytest.mark.parametrize("type_name", LIST_TYPES)
@pytest.mark.parametrize("value,got", [({"a": 1}, '{"a":1}'), ("abc", '"abc"'), (1, "1"), ((1,), "[1]")])
def test_list_types_wrong_type(type_name, value, got):
    assert err1(type_name, value) == f'invalid argument type for "x", expected :{type_name}, got {got}'


ITEM_FOR = {"list": 1, "list_string": "s", "list_num": 1, "list_uuid": UUID, "list_map": {"a": 1}}


@pytest.mark.parametrize("type_name", LIST_TYPES)
def test_list_types_default_max_items(type_name):
    item = ITEM_FOR[type_name]
    assert len(one(type_name, [item] * 1000)[0]) == 1000
    assert err1(type_name, [item] * 1001) == (f'{type_name} argument exceeds max items of 1000 (argument "x")')


@pytest.mark.parametrize("type_name", LIST_TYPES)
@pytest.mark.parametrize("form", ["tuple", "extended"])
def test_list_types_max_items(type_name, form):
    spec = [type_name, 3] if form == "tuple" else {"type": type_name, "max_items": 3}
    item = ITEM_FOR[type_name]
    assert one(spec, [item] * 3) == [[item] * 3]
    assert err1(spec, [item] * 4) == f'{type_name} argument exceeds max items of 3 (argument "x")'


@pytest.mark.parametrize("type_name", LIST_TYPES)
def test_list_types_custom_limits(type_name):
    lim = Limits(list_max_items=2)
    item = ITEM_FOR[type_name]
    assert one(type_name, [item] * 2, limits=lim) == [[item] * 2]
    assert err1(type_name, [item] * 3, limits=lim) == (f'{type_name} argument exceeds max items of 2 (argument "x")')


def test_list_string_item_limit():
    assert one("list", ["é" * 1500]) == [["é" * 1500]]
    assert err1("list", [1, "é" * 1500 + "a"]) == ('string item in list exceeds max byte size of 3000 (argument "x")')
    lim = Limits(string_max_bytes=2)
    assert one("list", ["é"], limits=lim) == [["é"]]
    assert err1("list", ["éa"], limits=lim) == 'string item in list exceeds max byte size of 2 (argument "x")'


def test_list_nested_refused():
    assert err1("list", [1, [2]]) == 'nested list is not supported yet (argument "x")'
    assert err1("list", [{"a": 1}]) == 'nested map is not supported yet (argument "x")'


def test_list_unsupported_python_item():
    assert err1("list", [b"x"]).startswith("unsupported type ")


# --------------------------------------------------------------------------- list_string


def test_list_string_ok():
    assert one("list_string", ["a", "", "é"]) == [["a", "", "é"]]


@pytest.mark.parametrize("item,got", [(1, "1"), (None, "null"), (True, "true"), (["a"], '["a"]')])
def test_list_string_bad_item(item, got):
    assert err1("list_string", ["ok", item]) == (
        f'invalid item in list_string argument "x": expected string, got {got}'
    )


def test_list_string_default_max_item_bytes():
    assert one("list_string", ["a" * 3000]) == [["a" * 3000]]
    assert err1("list_string", ["a" * 3001]) == (
        'string item in list_string exceeds max byte size of 3000 (argument "x")'
    )
    lim = Limits(string_max_bytes=5)
    assert err1("list_string", ["abcdef"], limits=lim) == (
        'string item in list_string exceeds max byte size of 5 (argument "x")'
    )


def test_list_string_max_item_bytes_multibyte():
    spec = {"type": "list_string", "max_item_bytes": 100, "max_items": 2}
    assert one(spec, ["é" * 50, "a" * 100]) == [["é" * 50, "a" * 100]]
    assert err1(spec, ["a", "é" * 50 + "a"]) == (
        'string item in list_string exceeds max byte size of 100 (argument "x")'
    )


def test_list_string_tuple_form_sets_max_items_only():
    assert one(["list_string", 1], ["a" * 3000]) == [["a" * 3000]]
    assert err1(["list_string", 1], ["a", "b"]) == 'list_string argument exceeds max items of 1 (argument "x")'


# --------------------------------------------------------------------------- list_num / list_uuid / list_map


def test_list_num():
    assert one("list_num", [1, 2.5, -3, 10**30]) == [[1, 2.5, -3, 10**30]]
    assert err1("list_num", [1, True]) == 'invalid item in list_num argument "x": expected num, got true'
    assert err1("list_num", ["1"]) == 'invalid item in list_num argument "x": expected num, got "1"'
    assert err1("list_num", [None]) == 'invalid item in list_num argument "x": expected num, got null'


def test_list_uuid():
    assert one("list_uuid", [UUID, UUID2]) == [[UUID, UUID2]]
    assert err1("list_uuid", [UUID, "nope"]) == 'invalid item in list_uuid argument "x": expected uuid, got "nope"'
    assert err1("list_uuid", [5]) == 'invalid item in list_uuid argument "x": expected uuid, got 5'


def test_list_map_ok():
    value = [{"lat": 1.5, "lng": 2}, {}, {"name": "x", "ok": None}]
    assert one("list_map", value) == [value]


def test_list_map_bad_items():
    assert err1("list_map", [{"a": 1}, 3]) == 'invalid item in list_map argument "x": expected map, got 3'
    assert err1("list_map", [[1]]) == 'invalid item in list_map argument "x": expected map, got [1]'
    assert err1("list_map", [{1: 2}]) == 'invalid item in list_map argument "x": expected map, got {"1":2}'
    assert err1("list_map", [{"a": {"b": 1}}]) == 'nested map is not supported yet (argument "x")'
    assert err1("list_map", [{"a": [1]}]) == 'nested list is not supported yet (argument "x")'


def test_list_map_items_use_map_limits():
    lim = Limits(map_max_items=2, string_max_bytes=3)
    assert one("list_map", [{"a": 1, "b": "abc"}], limits=lim) == [[{"a": 1, "b": "abc"}]]
    assert err1("list_map", [{"a": 1, "b": 2, "c": 3}], limits=lim) == (
        'map argument exceeds max items of 2 (argument "x")'
    )
    assert err1("list_map", [{"a": "abcd"}], limits=lim) == (
        'nested map string value exceeds max byte size for key "a" (argument "x")'
    )


# --------------------------------------------------------------------------- any


@pytest.mark.parametrize("value", [1, "s", [[1], {"a": [2]}], {"a": {"b": {}}}, True, 2.5])
def test_any(value):
    out = one("any", value)
    assert out == [value] and out[0] is value


def test_any_still_refuses_nil_unless_allowed():
    assert err1("any", None) == 'nil value not accepted for argument "x"'
    assert one({"type": "any", "allow_nil": True}, None) == [None]


# --------------------------------------------------------------------------- rendering of <got>


def test_got_rendering_truncated():
    got = '"' + "a" * 59 + "..."
    assert err1("num", "a" * 100) == f'invalid argument type for "x", expected :num, got {got}'
    assert err1("num", "a" * 58) == 'invalid argument type for "x", expected :num, got "' + "a" * 58 + '"'
    long_list = list(range(100))
    rendered = "[" + ",".join(map(str, long_list))
    assert err1("string", long_list) == (f'invalid argument type for "x", expected :string, got {rendered[:60]}...')


def test_got_rendering_compact_json():
    assert err1("num", {"a": [1, None, False], "b": "é"}) == (
        'invalid argument type for "x", expected :num, got {"a":[1,null,false],"b":"é"}'
    )


def test_got_rendering_deep_nesting_does_not_blow_up():
    value = []
    for _ in range(5000):
        value = [value]
    msg = err1("num", value)
    assert msg == 'invalid argument type for "x", expected :num, got ' + "[" * 60 + "..."


def test_got_rendering_of_unprintable_huge_int():
    assert err1("string", 10**5000) == 'invalid argument type for "x", expected :string, got <int>'
    v = Validator({"a": "num"}, request_type="t")
    assert err(v, {"a": 1, 10**5000: 2}) == 'extra arguments for "t", extra: [<int>]'
    assert err(v, {"a": 1, 10**5000: 2, "b": 3}) == 'extra arguments for "t", extra: ["b", <int>]'


def test_argument_names_and_request_type_quoted():
    v = Validator({'we"ird': "num"}, request_type="a.b")
    assert err(v, {}) == 'missing argument "we\\"ird" in "a.b"'


# --------------------------------------------------------------------------- compile-time errors


@pytest.mark.parametrize(
    "spec,needle",
    [
        ("strnig", 'unknown type "strnig"'),
        (["strnig", 3], 'unknown type "strnig"'),
        ({"type": "strnig"}, 'unknown type "strnig"'),
        ({"type": "string", "maxbytes": 3}, 'unknown option "maxbytes"; did you mean "max_bytes"?'),
        ("strnig", 'unknown type "strnig"; did you mean "string"?'),
        ({"max_bytes": 3}, "type"),
        ({"type": 5}, "type"),
        (5, "spec"),
        (None, "spec"),
        (["string"], "[type, limit]"),
        (["string", 1, 2], "[type, limit]"),
        (["num", 3], "num"),
        (["string", 0], "max_bytes"),
        (["list", -1], "max_items"),
        (["map", True], "max_items"),
        ({"type": "string", "max_bytes": 0}, "max_bytes"),
        ({"type": "string", "max_bytes": -5}, "max_bytes"),
        ({"type": "string", "max_bytes": "10"}, "max_bytes"),
        ({"type": "string", "max_bytes": 1.5}, "max_bytes"),
        ({"type": "string", "max_bytes": True}, "max_bytes"),
        ({"type": "list", "max_items": 0}, "max_items"),
        ({"type": "list_string", "max_item_bytes": 0}, "max_item_bytes"),
        ({"type": "num", "max_bytes": 3}, "max_bytes"),
        ({"type": "string", "max_items": 3}, "max_items"),
        ({"type": "list", "max_item_bytes": 3}, "max_item_bytes"),
        ({"type": "list", "required": ["a"]}, "required"),
        ({"type": "string", "accept": ["a"]}, "accept"),
        ({"type": "list_map", "accept": ["a"]}, "accept"),
        ({"type": "map", "required": "a"}, "required"),
        ({"type": "map", "required": [1]}, "required"),
        ({"type": "map", "accept": [None]}, "accept"),
        ({"type": "map", "required": ["a", "a"]}, "required"),
        ({"type": "map", "required": ["a"], "accept": ["b"]}, "required keys not in accept"),
        ({"type": "num", "allow_nil": "yes"}, "allow_nil"),
        ({"type": "num", "allow_nil?": 1}, "allow_nil?"),
        ({"type": "num", "allow_nil": True, "allow_nil?": False}, "allow_nil"),
        ({"type": "num", "default_value": "x"}, "default_value"),
        ({"type": "num", "default_value": True}, "default_value"),
        ({"type": "string", "max_bytes": 2, "default_value": "abc"}, "default_value"),
        ({"type": "list_num", "default_value": [1, "2"]}, "default_value"),
        ({"type": "uuid", "default_value": "nope"}, "default_value"),
        ({"type": "datetime", "default_value": "2024-01-01T00:00:00"}, "default_value"),
        ({"type": "map", "required": ["a"], "default_value": {}}, "default_value"),
    ],
)
def test_bad_spec(spec, needle):
    msg = spec_error({"myarg": spec})
    assert '"myarg"' in msg
    assert needle in msg


def test_bad_default_value_message():
    msg = spec_error({"age": {"type": "num", "default_value": "x"}})
    assert msg == ('argument "age": invalid default_value: invalid argument type for "age", expected :num, got "x"')


def test_unknown_option_message():
    assert spec_error({"a": {"type": "string", "foo": 1}}) == 'argument "a": unknown option "foo"'


def test_arg_orders_errors():
    types = {"a": "num", "b": "num", "c": "num"}
    assert spec_error(types, ["a", "b"]) == 'arg_orders is missing argument(s): ["c"]'
    assert spec_error(types) == 'arg_orders is missing argument(s): ["a", "b", "c"]'
    assert spec_error(types, []) == 'arg_orders is missing argument(s): ["a", "b", "c"]'
    assert spec_error(types, ["a", "b", "c", "d"]) == 'arg_orders names undeclared argument(s): ["d"]'
    assert spec_error({"a": "num"}, ["b"]) == 'arg_orders names undeclared argument(s): ["b"]'
    assert spec_error({}, ["b"]) == 'arg_orders names undeclared argument(s): ["b"]'
    assert spec_error(types, ["a", "b", "c", "a"]) == 'arg_orders lists argument "a" more than once'
    assert "arg_orders" in spec_error(types, "list")
    assert "arg_orders" in spec_error(types, 5)


def test_other_constructor_errors():
    assert "arg_types" in spec_error(["a"])
    assert "argument names" in spec_error({1: "num"})
    assert "limits" in spec_error({"a": "num"}, limits={"string_max_bytes": 3})
    assert "request_type" in spec_error({"a": "num"}, request_type=None)


@pytest.mark.parametrize("type_name", ALL_TYPES)
def test_every_type_compiles_in_all_forms(type_name):
    Validator({"a": type_name})
    Validator({"a": {"type": type_name, "allow_nil": True}})
    Validator({"a": {"type": type_name, "allow_nil?": False}})


@pytest.mark.parametrize(
    "type_name,default",
    [
        ("string", "d"),
        ("num", 0),
        ("boolean", False),
        ("uuid", UUID),
        ("naive_datetime", "2024-01-01T00:00:00"),
        ("map", {"a": 1}),
        ("list", [1, "a"]),
        ("list_string", ["a"]),
        ("list_num", [1]),
        ("list_uuid", [UUID]),
        ("list_map", [{"a": 1}]),
        ("any", {"deep": [[1]]}),
    ],
)
def test_defaults_of_every_type(type_name, default):
    out = Validator({"a": {"type": type_name, "default_value": default}}).convert({})
    if type_name == "naive_datetime":
        assert out == [datetime(2024, 1, 1)]
    else:
        assert out == [default]


# --------------------------------------------------------------------------- property tests

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.uuids().map(str)
    | st.datetimes(timezones=st.none() | st.just(UTC)).map(lambda d: d.isoformat())
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=6), children, max_size=6),
    max_leaves=25,
)


def _check_converted(type_name, allow_nil, out):
    assert isinstance(out, list) and len(out) == 1
    (value,) = out
    if value is None:
        assert allow_nil
        return
    if type_name in ("string", "uuid"):
        assert isinstance(value, str)
    elif type_name == "num":
        assert isinstance(value, (int, float)) and not isinstance(value, bool)
    elif type_name == "boolean":
        assert isinstance(value, bool)
    elif type_name == "datetime":
        assert isinstance(value, datetime) and value.tzinfo is not None
    elif type_name == "naive_datetime":
        assert isinstance(value, datetime) and value.tzinfo is None
    elif type_name == "map":
        assert isinstance(value, dict)
        assert all(isinstance(k, str) for k in value)
        assert not any(isinstance(v, (list, dict)) for v in value.values())
    elif type_name == "list":
        assert isinstance(value, list)
        assert not any(isinstance(v, (list, dict)) for v in value)
    elif type_name == "list_string":
        assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    elif type_name == "list_num":
        assert isinstance(value, list)
        assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    elif type_name == "list_uuid":
        assert isinstance(value, list) and all(isinstance(v, str) and len(v) == 36 for v in value)
    elif type_name == "list_map":
        assert isinstance(value, list) and all(isinstance(v, dict) for v in value)


@pytest.mark.parametrize("allow_nil", [False, True])
@pytest.mark.parametrize("type_name", ALL_TYPES)
@settings(max_examples=150, deadline=None)
@given(value=json_values)
def test_property_converted_or_argument_error(type_name, allow_nil, value):
    v = Validator({"x": {"type": type_name, "allow_nil": allow_nil}}, request_type="prop")
    try:
        out = v.convert({"x": value})
    except ArgumentError as exc:
        assert str(exc)
        return
    _check_converted(type_name, allow_nil, out)


@pytest.mark.parametrize("type_name", ALL_TYPES)
@settings(max_examples=100, deadline=None)
@given(args=st.dictionaries(st.sampled_from(["x", "y", "z", "extra"]) | st.text(max_size=3), json_values, max_size=5))
def test_property_random_args_dict(type_name, args):
    v = Validator(
        {"x": type_name, "y": {"type": "num", "allow_nil": True}, "z": {"type": "string", "default_value": "d"}},
        ["z", "x", "y"],
    )
    try:
        out = v.convert(args)
    except ArgumentError as exc:
        msg = str(exc)
        if set(args) - {"x", "y", "z"}:
            assert msg.startswith("extra arguments for ")
        return
    assert set(args) <= {"x", "y", "z"}
    assert len(out) == 3
    assert out[0] == args.get("z", "d")
    _check_converted(type_name, False, [out[1]])


@settings(max_examples=300, deadline=None)
@given(s=st.text(), max_bytes=st.integers(min_value=1, max_value=80))
def test_property_string_byte_limit(s, max_bytes):
    nbytes = len(s.encode("utf-8", "surrogatepass"))
    v = Validator({"x": ["string", max_bytes]})
    if nbytes <= max_bytes:
        assert v.convert({"x": s}) == [s]
    else:
        assert err(v, {"x": s}) == f'invalid argument size for "x", max {max_bytes} bytes'


UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@settings(max_examples=300, deadline=None)
@given(s=st.text(alphabet="0123456789abcdefABCDEFg-é", min_size=34, max_size=38) | st.uuids().map(str))
def test_property_uuid_format(s):
    v = Validator({"x": "uuid"})
    if UUID_RE.fullmatch(s):
        assert v.convert({"x": s}) == [s]
    else:
        assert err(v, {"x": s}) == 'invalid argument value for "x", require a UUID format string'


@settings(max_examples=100, deadline=None)
@given(value=json_values)
def test_property_got_rendering_bounded(value):
    try:
        Validator({"x": "boolean"}).convert({"x": value})
    except ArgumentError as exc:
        prefix = 'invalid argument type for "x", expected :boolean, got '
        msg = str(exc)
        if msg.startswith(prefix):
            assert len(msg) - len(prefix) <= 63
