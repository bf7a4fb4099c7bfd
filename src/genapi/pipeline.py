"""One request, start to finish, in PhoenixGenApi's order (reference/behavior.md §2):

identity → decode → find FunConfig → before hook → (rate limit) → permission → dispatch on
response_type → validate and convert args → call with timeout and retry → after hook → push.

The first steps and the fast path run compiled (`_core/dispatch.pyx`, `Pipeline.handle`); this
module owns the registry and the general path: hooks, permission callbacks, async, stream and
fire-and-forget calls, timeouts, retries and the thread pool.
"""
from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING, Any

from . import hooks, log, permissions
from ._core import wire
from ._core.dispatch import Dispatcher
from ._core.validate import ArgumentError, Limits
from .calls import ASYNC, ASYNCGEN, GEN, SYNC, LocalFunction, PoolFull, StreamHandle, ThreadPool
from .config import Settings
from .registry import Registry
from .structs import FunConfig, Request, Response

if TYPE_CHECKING:
    from ._core.connection import Connection

_END = object()


class Pipeline:
    """The request path of one worker. Owns the registry of bound functions and the pool."""

    def __init__(self, settings: Settings) -> None:
        gw = settings.gateway
        self.settings = settings
        self.event = gw.event
        self.detail_error = gw.detail_error
        self.max_payload = gw.max_payload_bytes
        self.max_in_flight = gw.max_in_flight
        self.require_verified = settings.auth.require_verified_user_id
        self.limits = Limits(gw.string_max_bytes, gw.list_max_items, gw.map_max_items)
        self.pool = ThreadPool(gw.thread_pool_size, gw.thread_queue_limit)
        self.registry: Registry[LocalFunction] = Registry()
        for cfg in settings.functions:
            self.add(cfg)
        self.dispatcher = Dispatcher(self)
        self.handle = self.dispatcher.handle
        wire.on_unencodable(self._unencodable)

    def _unencodable(self, payload: Any, exc: BaseException) -> Any:
        """A result that is not JSON-serializable becomes an Internal Server Error Response."""
        if not isinstance(payload, Response):
            raise exc
        log.warning("result_not_encodable", request_id=payload.request_id, error=f"{type(exc).__name__}: {exc}")
        detail = f": result is not JSON-serializable: {exc}" if self.detail_error else ""
        return Response.fail(payload.request_id, f"Internal Server Error{detail}")

    def add(self, config: FunConfig) -> None:
        """Binds and registers one config (raises ValueError naming the function and field)."""
        self.registry.add(config, LocalFunction(config, self.limits))

    def _answer(self, conn: "Connection", join_ref: Any, ref: Any, topic: str, req: Request,
                resp: Response) -> None:
        conn.send(conn.ser.answer(join_ref, ref, topic, self.event, resp, "ok", req.request_type))

    async def finish(self, conn: "Connection", join_ref: Any, ref: Any, topic: str, req: Request,
                     fn: LocalFunction, rest: Any) -> None:
        """Completes a fast-path call whose coroutine suspended (`rest` resumes it)."""
        try:
            async with asyncio.timeout(fn.timeout):
                result = await rest
            resp = Response(req.request_id, result)
        except TimeoutError:
            resp = Response.fail(req.request_id, f"local execution timed out after {fn.timeout_ms}ms")
        except Exception as exc:
            resp = self.internal_error(req, exc)
        self._answer(conn, join_ref, ref, topic, req, resp)

    # ------------------------------------------------------------------ general path
    async def run(self, conn: "Connection", join_ref: Any, ref: Any, topic: str, req: Request,
                  config: FunConfig, fn: LocalFunction) -> None:
        ser, event = conn.ser, self.event
        resp: Response | None = None
        try:
            if fn.before is not None:
                try:
                    new_req, new_cfg = await hooks.run_before(fn.before, req, config, self.pool)
                except hooks.HookRejected as exc:
                    resp = Response.fail(req.request_id, f"hook rejected: {exc.reason}")
                    await self._after(fn, req, config, resp)
                    return self._answer(conn, join_ref, ref, topic, req, resp)
                if new_cfg is not config:
                    fn = LocalFunction(new_cfg, self.limits)
                req, config = new_req, new_cfg
            # (rate limits take their place here, between the before hook and the permission)
            if not await self._permitted(fn, config, req):
                resp = Response.fail(req.request_id, "Permission denied")
                await self._after(fn, req, config, resp)
                return self._answer(conn, join_ref, ref, topic, req, resp)
            rtype = config.response_type
            if rtype == "sync":
                resp = await self.call(fn, req)
                await self._after(fn, req, config, resp)
                self._answer(conn, join_ref, ref, topic, req, resp)
            elif rtype == "async":
                conn.send(ser.answer(join_ref, ref, topic, event, Response.ack(req.request_id), "ok", req.request_type))
                resp = await self.call(fn, req)
                await self._after(fn, req, config, resp)
                conn.send(ser.push(join_ref, topic, event, resp))
            elif rtype == "none":
                conn.send(ser.reply(join_ref, ref, topic, "ok", req.request_type))
                resp = await self.call(fn, req)
                if not resp.success:
                    log.warning("call_failed", request_id=req.request_id, request_type=req.request_type,
                                error=resp.error)
                await self._after(fn, req, config, resp)
            elif rtype == "stream":
                conn.send(ser.answer(join_ref, ref, topic, event, Response.chunk(req.request_id, "init"), "ok",
                                     req.request_type))
                resp = await self.stream(fn, req, lambda r: conn.send(ser.push(join_ref, topic, event, r)))
                await self._after(fn, req, config, resp)
            else:
                log.error("response_type_unsupported", request_id=req.request_id, response_type=rtype)
                resp = Response.fail(req.request_id, f"unsupported response type: {rtype}")
                await self._after(fn, req, config, resp)
                self._answer(conn, join_ref, ref, topic, req, resp)
        except asyncio.CancelledError:
            log.debug("request_cancelled", request_id=req.request_id)
            raise
        except Exception:
            log.error("request_crashed", exc_info=True, request_id=req.request_id)
            self._answer(conn, join_ref, ref, topic, req, Response.fail(req.request_id, "Request processing failed"))

    async def _permitted(self, fn: LocalFunction, config: FunConfig, req: Request) -> bool:
        if fn.permission is not None:
            ok = await permissions.check_callback(fn.permission, req, config.hook_timeout / 1000)
            mode: Any = f"callback {fn.permission.target}"
        else:
            mode = config.check_permission
            ok = mode is False or permissions.check_mode(mode, req)
        if not ok:
            permissions.log_denied(req, mode)
        return ok

    async def _after(self, fn: LocalFunction, req: Request, config: FunConfig, resp: Response | None) -> None:
        if fn.after is not None:
            await hooks.run_after(fn.after, req, config, resp, self.pool)

    def internal_error(self, req: Request, exc: BaseException) -> Response:
        log.warning("call_raised", request_id=req.request_id, request_type=req.request_type,
                    error=f"{type(exc).__name__}: {exc}")
        if self.detail_error:
            return Response.fail(req.request_id, f"Internal Server Error: {type(exc).__name__}: {exc}")
        return Response.fail(req.request_id, "Internal Server Error")

    # ------------------------------------------------------------------ calls
    async def call(self, fn: LocalFunction, req: Request) -> Response:
        """Validates, calls with the timeout, retries per the config; always returns a Response."""
        try:
            args = fn.arguments(req)
        except ArgumentError as exc:
            return Response.fail(req.request_id, f"Invalid argument: {exc}")
        attempts = 1 + _retries(fn.config.retry)
        resp: Response | None = None
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(min(0.05 * 2 ** (attempt - 1), 1.0))
                log.info("call_retry", request_id=req.request_id, attempt=attempt)
            try:
                return Response(req.request_id, await self._invoke(fn, args))
            except TimeoutError:
                resp = Response.fail(req.request_id, f"local execution timed out after {fn.timeout_ms}ms")
            except PoolFull:
                return Response.fail(req.request_id, "Service temporarily unavailable", can_retry=True)
            except Exception as exc:
                resp = self.internal_error(req, exc)
        assert resp is not None
        return resp

    async def _invoke(self, fn: LocalFunction, args: list[Any]) -> Any:
        async with asyncio.timeout(fn.timeout):
            if fn.kind == SYNC:
                return await self.pool.run(fn.fn, *args)
            if fn.kind == ASYNC:
                return await fn.fn(*args)
            # a generator function called for a sync/async response: collect what it yields
            if fn.kind == ASYNCGEN:
                return [item async for item in fn.fn(*args)]
            return await self.pool.run(lambda: list(fn.fn(*args)))

    async def stream(self, fn: LocalFunction, req: Request, emit: Any) -> Response:
        """Pushes each chunk through `emit`; returns the final Response (end, last chunk or error)."""
        loop = asyncio.get_running_loop()
        handle = StreamHandle(emit, req.request_id, loop)
        try:
            args = fn.arguments(req, handle)
        except ArgumentError as exc:
            resp = Response.fail(req.request_id, f"Invalid argument: {exc}")
            emit(resp)
            return resp
        try:
            async with asyncio.timeout(fn.timeout):
                if fn.kind == ASYNCGEN:
                    agen = fn.fn(*args)
                    try:
                        async for item in agen:
                            if handle.closed:
                                break
                            handle.send(item)
                    finally:
                        await agen.aclose()
                elif fn.kind == GEN:
                    gen = fn.fn(*args)
                    try:
                        while not handle.closed:
                            item = await self.pool.run(next, gen, _END)
                            if item is _END:
                                break
                            handle.send(item)
                    finally:
                        try:  # runs in a thread: the generator may still be inside `next` there
                            await self.pool.run(gen.close)
                        except (ValueError, PoolFull):
                            log.debug("stream_generator_close_skipped", request_id=req.request_id)
                else:
                    out = fn.fn(*args) if fn.kind == ASYNC else self.pool.run(fn.fn, *args)
                    result = await out
                    if inspect.isasyncgen(result) or inspect.isgenerator(result):
                        raise TypeError("a stream function must be a generator, not return one")
                    if not fn.request_info and not handle.closed:
                        handle.send_last(result)
                    elif result is not None and not handle.closed:
                        handle.send(result)
                if not handle.closed:
                    if fn.kind in (GEN, ASYNCGEN) or not fn.request_info:
                        handle.complete()
                    else:
                        await handle.done  # push-style: the function closes the stream
        except TimeoutError:
            handle.error(f"local execution timed out after {fn.timeout_ms}ms")
        except PoolFull:
            handle.end(Response.fail(req.request_id, "Service temporarily unavailable", can_retry=True))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            handle.end(self.internal_error(req, exc))
        return handle.done.result() if handle.done.done() else Response.stream_end(req.request_id)


def _retries(retry: Any) -> int:
    if retry is None:
        return 0
    if isinstance(retry, dict):
        return int(next(iter(retry.values())))
    return int(retry)
