from typing import Any

from genapi.errors import ArgumentError as ArgumentError

class Limits:
    string_max_bytes: int
    list_max_items: int
    map_max_items: int
    def __init__(self, string_max_bytes: int = 3000, list_max_items: int = 1000, map_max_items: int = 1000) -> None: ...

class Validator:
    def __init__(
        self,
        arg_types: dict[str, Any] | None,
        arg_orders: list[str] | str | None = None,
        request_type: str = "",
        limits: Limits | None = None,
    ) -> None: ...
    @property
    def names(self) -> tuple[str, ...]: ...
    def convert(self, args: dict[str, Any] | None) -> list[Any]: ...
