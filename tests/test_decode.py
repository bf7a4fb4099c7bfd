"""The compiled request decoder: frame envelopes and request payloads, including property
tests (every input is either decoded or answered with a FrameError/DecodeError)."""

import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genapi._core.decode import DecodeError, FrameError, decode_binary, decode_request, decode_v1, decode_v2
from genapi.structs import Request

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)


def test_decode_v2_and_v1():
    assert decode_v2(b'["1","2","t","e",{"a":1},"extra"]') == ("1", "2", "t", "e", {"a": 1})
    assert decode_v2(b'[null,"2","phoenix","heartbeat",{}]') == (None, "2", "phoenix", "heartbeat", {})
    assert decode_v1(b'{"topic":"t","event":"e","payload":{},"ref":"1"}') == (None, "1", "t", "e", {})
    with pytest.raises(FrameError, match="5 elements"):
        decode_v2(b'["1","2","t"]')
    with pytest.raises(FrameError, match="missing the key"):
        decode_v1(b'{"topic":"t","event":"e","ref":"1"}')


def test_decode_binary():
    frame = bytes([0, 1, 1, 3, 2]) + b"56topev" + b"\x01\x02"
    assert decode_binary(frame) == ("5", "6", "top", "ev", b"\x01\x02")
    with pytest.raises(FrameError, match="kind 1"):
        decode_binary(bytes([1, 0, 0, 0, 0]))
    with pytest.raises(FrameError, match="exceed"):
        decode_binary(bytes([0, 9, 9, 9, 9]) + b"x")


def test_decode_request_identity_and_errors():
    p = {
        "request_id": "r",
        "service": "s",
        "request_type": "t",
        "args": {"a": 1},
        "version": "1.0.0",
        "user_id": "forged",
        "device_id": "pd",
        "user_roles": ["admin"],
    }
    r = decode_request(p, "u", None, ["reader"], 10, 1000)
    assert r == Request("r", "s", "t", {"a": 1}, "1.0.0", "u", "pd", ["reader"])
    assert decode_request(p, None, "id-dev", None, 10, 1000).user_id is None
    assert decode_request(p, None, "id-dev", None, 10, 1000).device_id == "id-dev"
    assert decode_request({"request_id": "r", "service": "s", "request_type": "t"}, None, None, None, 1, 99).args == {}
    with pytest.raises(DecodeError) as e:
        decode_request({"args": {}}, None, None, None, 1, 99)
    assert str(e.value) == "Invalid request: Missing required fields: request_type, request_id, service"
    big = {"request_id": "big", "service": "s", "request_type": "t", "args": {"x": "y" * 100}}
    with pytest.raises(DecodeError) as e:
        decode_request(big, None, None, None, 500, 50)
    size = len(msgspec.json.encode(big))
    assert str(e.value) == f"Invalid request: Request payload exceeds maximum size of 50 bytes (got {size} bytes)"
    assert e.value.request_id == "big"


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_any_json_frame_decodes_or_is_a_frame_error(value):
    data = json.dumps(value).encode()
    for decode in (decode_v2, decode_v1):
        try:
            out = decode(data)
        except FrameError:
            continue
        assert isinstance(out, tuple) and len(out) == 5 and isinstance(out[2], str) and isinstance(out[3], str)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_decode_or_frame_error(data):
    for decode in (decode_v2, decode_v1, decode_binary):
        try:
            decode(data)
        except FrameError:
            pass


@settings(max_examples=500, deadline=None)
@given(
    json_values
    | st.fixed_dictionaries(
        {"request_id": json_values, "service": json_values, "request_type": json_values},
        optional={"args": json_values, "version": json_values, "device_id": json_values},
    )
)
def test_any_payload_is_a_request_or_a_decode_error(payload):
    try:
        r = decode_request(payload, None, None, None, 10, 1_000_000)
    except DecodeError as exc:
        assert str(exc).startswith("Invalid request: ")
        assert isinstance(exc.request_id, str)
        return
    assert isinstance(r, Request) and isinstance(r.args, dict)
    assert all(isinstance(x, str) and x for x in (r.request_id, r.service, r.request_type))
