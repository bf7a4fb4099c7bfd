from typing import Any

from genapi._core.connection import Connection

class Seat:
    seats: Any
    conn: Connection
    topic: str
    token: int
    placed: bool
    dropped: int
    def __init__(self, seats: Any, conn: Connection, topic: str, token: int) -> None: ...
    def cancel(self) -> None: ...

class Fanout:
    by_token: dict[int, Seat]
    delivered: int
    dropped: int
    def __init__(self) -> None: ...
    def deliver(self, tokens: list[int], payload: bytes) -> None: ...
    def flush(self) -> None: ...
