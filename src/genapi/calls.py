"""What every callee shares: the stream handle, the retry policy, and `resume` (the way an
`async def` that was stepped once by hand continues without a Task of its own).

The callee interface itself (`Callee`, `LocalCallee`) is compiled: `_core/callee.pyx`.
"""
from __future__ import annotations

import asyncio
import threading
import types
from collections.abc import Callable
from typing import Any

from .structs import Response


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


def retries(retry: Any) -> int:
    """How many times a failed call is re-run: `N`, `{same_node = N}` or `{all_nodes = N}`."""
    if retry is None:
        return 0
    if isinstance(retry, dict):
        return int(next(iter(retry.values())))
    return int(retry)


def backoff(attempt: int) -> float:
    """Seconds to wait before re-run number `attempt` (1, 2, ...): 50 ms doubling, at most 1 s."""
    return min(0.05 * 2 ** (attempt - 1), 1.0)


class StreamHandle:
    """Push-style streaming for functions that get it through request info: `send(chunk)`,
    `send_last(chunk)`, `complete()`, `error(reason)`. Safe to call from worker threads.

    `push_style` is true when the function holds the handle (it ends the stream itself)."""

    def __init__(self, emit: Callable[[Response], None], request_id: str,
                 loop: asyncio.AbstractEventLoop, push_style: bool = False) -> None:
        self._emit = emit
        self._rid = request_id
        self._loop = loop
        self._thread = threading.get_ident()
        self.done = loop.create_future()
        self.push_style = push_style

    def _post(self, resp: Response, final: bool) -> None:
        if threading.get_ident() != self._thread:
            self._loop.call_soon_threadsafe(self._post, resp, final)
            return
        if self.done.done():
            return
        self._emit(resp)
        if final:
            self.done.set_result(resp)

    def send(self, chunk: Any) -> None:
        self._post(Response.chunk(self._rid, chunk, True), False)

    def send_last(self, chunk: Any) -> None:
        self._post(Response.chunk(self._rid, chunk, False), True)

    def complete(self) -> None:
        self._post(Response.stream_end(self._rid), True)

    def error(self, reason: Any) -> None:
        self._post(Response.fail(self._rid, str(reason)), True)

    def end(self, response: Response) -> None:
        """Ends the stream with a ready Response (the gateway's own errors)."""
        self._post(response, True)

    @property
    def closed(self) -> bool:
        return self.done.done()
