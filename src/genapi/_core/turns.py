"""How a coroutine stepped once by hand goes on (`resume`) and how a busy stream lets the loop
run (`pass_turn`). Plain Python on purpose: both must be real generator-based coroutines
(`types.coroutine`), which a compiled generator is not."""

from __future__ import annotations

import types
from typing import Any


@types.coroutine
def resume(coro: Any, pending: Any) -> Any:
    """Continues a coroutine that was stepped once by hand and yielded `pending`, so an async
    function that finishes without suspending costs no Task at all."""
    while True:
        try:
            yield pending
        except BaseException as exc:  # cancellation and timeouts reach the function itself
            try:
                pending = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                pending = coro.send(None)
            except StopIteration as stop:
                return stop.value


@types.coroutine
def pass_turn() -> Any:
    """Lets the event loop run once (what `asyncio.sleep(0)` does, without its checks): a stream
    that produces without awaiting still lets other clients and its own timeout through."""
    yield
