import asyncio
from collections.abc import Callable
from typing import Any

from genapi._core.reply import Reply
from genapi.structs import Request

class ThreadPool:
    size: int
    limit: int
    name: str
    pending: set[Any]
    def __init__(self, size: int, queue_limit: int, name: str = "genapi-call") -> None: ...
    def submit(
        self,
        reply: Reply,
        request: Request,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        timeout: float | None,
        owner: Any,
    ) -> None: ...
    def run(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]: ...
    def shutdown(self) -> None: ...

class Job:
    """One call for the threads (internal; no Python-visible fields)."""
