"""Local calls: a FunConfig bound to its Python callable, run on the event loop (async def),
in a bounded thread pool (plain functions, which may block), or streamed (generators)."""
from __future__ import annotations

import asyncio
import inspect
import threading
import types
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from ._core.validate import Limits, Validator
from .loader import load_callable
from .structs import FunConfig, Request, Response, split_target

SYNC, ASYNC, GEN, ASYNCGEN = 0, 1, 2, 3


class PoolFull(Exception):
    """The thread pool and its queue are at their limit."""


class ThreadPool:
    """A bounded pool for plain (possibly blocking) functions: `size` threads, `queue_limit`
    waiting calls; beyond that callers get PoolFull instead of an unbounded backlog."""

    def __init__(self, size: int, queue_limit: int) -> None:
        self._executor = ThreadPoolExecutor(size, thread_name_prefix="genapi-call")
        self._limit = size + queue_limit
        self.pending = 0

    def _done(self, _fut: Any) -> None:
        self.pending -= 1

    def run(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future:
        if self.pending >= self._limit:
            raise PoolFull()
        self.pending += 1
        fut = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        fut.add_done_callback(self._done)
        return fut

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


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


def _kind(fn: Callable[..., Any]) -> int:
    target = inspect.unwrap(fn)
    if inspect.isasyncgenfunction(target):
        return ASYNCGEN
    if inspect.isgeneratorfunction(target):
        return GEN
    if inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(getattr(target, "__call__", None)):
        return ASYNC
    return SYNC


class Hook:
    """A `module:function` hook or callback with its extra args and kind."""

    __slots__ = ("fn", "extra", "is_async", "target")

    def __init__(self, value: str | list[Any]) -> None:
        self.target, self.extra = split_target(value)
        self.fn = load_callable(self.target)
        self.is_async = _kind(self.fn) == ASYNC


class LocalFunction:
    """A FunConfig compiled for calling: callable, validator, predefined args, hooks."""

    __slots__ = ("config", "fn", "kind", "validator", "predefined", "timeout", "timeout_ms",
                 "request_info", "before", "after", "permission", "simple", "plain_args")

    def __init__(self, config: FunConfig, limits: Limits) -> None:
        if config.nodes != "local":
            raise ValueError(f"{config.service}.{config.request_type}: nodes: only \"local\" "
                             "functions are served by this version of genapi")
        target, self.predefined = split_target(config.mfa)
        self.config = config
        self.fn = load_callable(target)
        self.kind = _kind(self.fn)
        try:
            self.validator = Validator(config.arg_types, config.arg_orders, config.request_type, limits)
        except ValueError as exc:
            raise ValueError(f"{config.service}.{config.request_type}: arg_types: {exc}") from None
        self.timeout_ms = config.timeout_ms()
        self.timeout = None if self.timeout_ms is None else self.timeout_ms / 1000
        self.request_info = config.request_info
        self.before = Hook(config.before_execute) if config.before_execute else None
        self.after = Hook(config.after_execute) if config.after_execute else None
        self.permission = Hook(config.permission_callback) if config.permission_callback else None
        self.plain_args = not self.predefined and not self.request_info  # args = validator output
        self.simple = (self.before is None and self.after is None and self.permission is None
                       and not config.retry)

    def arguments(self, request: Request, stream: "StreamHandle | None" = None) -> list[Any]:
        """predefined args ++ validated args ++ [request info]; raises ArgumentError."""
        args = self.validator.convert(request.args)
        if self.predefined:
            args = self.predefined + args
        if self.request_info:
            info = {"request_id": request.request_id, "user_id": request.user_id,
                    "device_id": request.device_id}
            if stream is not None:
                info["stream"] = stream
            args.append(info)
        return args


class StreamHandle:
    """Push-style streaming for functions that get it through request info: `send(chunk)`,
    `send_last(chunk)`, `complete()`, `error(reason)`. Safe to call from worker threads."""

    def __init__(self, emit: Callable[[Response], None], request_id: str,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._emit = emit
        self._rid = request_id
        self._loop = loop
        self._thread = threading.get_ident()
        self.done = loop.create_future()
        self.used = False

    def _post(self, resp: Response, final: bool) -> None:
        if threading.get_ident() != self._thread:
            self._loop.call_soon_threadsafe(self._post, resp, final)
            return
        if self.done.done():
            return
        self.used = True
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
