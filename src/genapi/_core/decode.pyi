from typing import Any

from genapi.errors import DecodeError as DecodeError
from genapi.errors import FrameError as FrameError
from genapi.structs import Request

def decode_v2(data: Any) -> tuple[Any, Any, str, str, Any]: ...
def decode_v1(data: Any) -> tuple[Any, Any, str, str, Any]: ...
def decode_binary(buf: bytes | memoryview) -> tuple[str | None, str | None, str, str, bytes]: ...
def decode_request(
    payload: Any,
    user_id: str | None,
    device_id: str | None,
    user_roles: list[str] | None,
    size: int,
    max_size: int,
    traceparent: str | None = None,
) -> Request: ...
