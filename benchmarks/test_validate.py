"""Micro-benchmarks of the compiled per-request hot spots: argument validation and decoding."""

from __future__ import annotations

import msgspec
import pytest

from genapi._core.decode import decode_request, decode_v2
from genapi._core.validate import Validator

ARG_TYPES = {
    "name": "string",
    "age": "num",
    "active": "boolean",
    "id": "uuid",
    "tags": {"type": "list_string", "max_items": 10},
}
ARG_ORDERS = ["name", "age", "active", "id", "tags"]
ARGS = {
    "name": "Ada Lovelace",
    "age": 36,
    "active": True,
    "id": "123e4567-e89b-12d3-a456-426614174000",
    "tags": ["math", "poetry", "engines"],
}

FRAME = msgspec.json.encode(
    [
        "1",
        "42",
        "api:bench",
        "phoenix_gen_api",
        {
            "request_id": "42",
            "service": "demo",
            "request_type": "echo",
            "version": "1.0.0",
            "args": {"text": "hello", "n": 1},
        },
    ]
)
MAX_SIZE = 1 << 20


@pytest.mark.benchmark(group="validate")
def test_validator_convert_5_args(benchmark):
    v = Validator(ARG_TYPES, ARG_ORDERS, "bench")
    expected = [ARGS[k] for k in ARG_ORDERS]
    assert v.convert(ARGS) == expected
    result = benchmark(v.convert, ARGS)
    assert result == expected


@pytest.mark.benchmark(group="decode")
def test_decode_v2_frame(benchmark):
    join_ref, ref, topic, event, payload = benchmark(decode_v2, FRAME)
    assert (join_ref, ref, topic, event) == ("1", "42", "api:bench", "phoenix_gen_api")
    assert payload["service"] == "demo"


@pytest.mark.benchmark(group="decode")
def test_decode_request(benchmark):
    payload = decode_v2(FRAME)[4]
    req = benchmark(decode_request, payload, None, None, [], len(FRAME), MAX_SIZE)
    assert (req.request_id, req.service, req.request_type, req.version) == ("42", "demo", "echo", "1.0.0")
    assert req.args == {"text": "hello", "n": 1}


@pytest.mark.benchmark(group="decode")
def test_decode_frame_and_request(benchmark):
    """Both steps, as the gateway runs them for every request frame."""

    def decode(frame):
        return decode_request(decode_v2(frame)[4], None, None, [], len(frame), MAX_SIZE)

    req = benchmark(decode, FRAME)
    assert req.request_type == "echo"
