"""The general path of a request, in PhoenixGenApi's order (reference/behavior.md §2):

before hook → admit (rate limit → permission mode → cluster rate limits) → permission callback →
dispatch on response_type → arguments → call with timeout and retry → after hook → push.

The steps every request takes are compiled (`_core/dispatch.pyx`): identity, decode, lookup,
the in-flight slot and, for functions that need no Task, the whole call inline. What needs a
Task runs here, calling the same steps, which are the Entry's methods (`Entry.admit`,
`Entry.arguments`): hooks, the permission callback, async, stream and fire-and-forget
responses, and retries. Calls go through the function's callee (`_core/callee.pyx`), whatever
runs it. Binding configs to entries is `request/bind.py`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from genapi import errors, log, telemetry
from genapi._core.callee import backoff
from genapi._core.dispatch import Entry
from genapi._core.handoff import ThreadPool
from genapi._core.limits import RequestLimiter
from genapi._core.reply import Reply
from genapi.engine.cluster_limits import Pending
from genapi.errors import ArgumentError, CallError, HookRejected
from genapi.request import hooks, permissions
from genapi.request.bind import Binder
from genapi.request.calls import StreamHandle
from genapi.structs import Request, Response


class GeneralPath:
    """The requests of one worker that need a Task (`run`). `binder` rebinds a config a before
    hook changed; `pool` runs plain `def` hooks; `limiter`: the compiled RequestLimiter of
    `[rate_limiter]` (None without a table), the same the dispatcher checks inline."""

    def __init__(self, binder: Binder, pool: ThreadPool, limiter: RequestLimiter | None, detail_error: bool) -> None:
        self.binder = binder
        self.pool = pool
        self.limiter = limiter
        self.detail_error = detail_error

    def unencodable(self, payload: Any, exc: BaseException) -> Any:
        """A result that is not JSON-serializable becomes an Internal Server Error Response
        (registered with `_core.wire.on_unencodable` by the worker's composition root)."""
        if not isinstance(payload, Response):
            raise exc
        log.warning("result_not_encodable", request_id=payload.request_id, error=f"{type(exc).__name__}: {exc}")
        return Response.fail(payload.request_id, errors.not_serializable(exc, self.detail_error))

    # ------------------------------------------------------------------ general path
    async def run(self, reply: Reply, req: Request, entry: Entry) -> None:
        """One request that needs a Task, answered through `reply`."""
        try:
            await self._run(reply, req, entry)
        except asyncio.CancelledError:
            log.debug("request_cancelled", request_id=req.request_id)
            raise
        except Exception as exc:
            log.error("request_crashed", exc_info=True, request_id=req.request_id)
            telemetry.execute(
                "genapi.executor.request.exception",
                {},
                {
                    "request_id": req.request_id,
                    "request_type": req.request_type,
                    "service": req.service,
                    "user_id": req.user_id,
                    "kind": "error",
                    "reason": f"{type(exc).__name__}: {exc}",
                },
            )
            reply.answer(Response.fail(req.request_id, errors.REQUEST_FAILED))

    async def _run(self, reply: Reply, req: Request, entry: Entry) -> None:
        if entry.before is not None:
            try:
                new_req, new_cfg = await hooks.run_before(entry.before, req, entry.config, self.pool)
            except HookRejected as exc:
                return await self._refuse(reply, req, entry, errors.hook_rejected(exc.reason))
            if new_cfg is not entry.config:
                entry = self.binder.bind(new_cfg)
            req = new_req
        refusal = entry.admit(req, getattr(reply.conn, "identity", None), self.limiter)
        if isinstance(refusal, Pending):  # the cluster limits' batch answers it
            refusal = await refusal
        if refusal is not None:
            await self._after(entry, req, refusal)
            return reply.answer(refusal)
        if entry.permission is not None and not await self._permitted(entry, req):
            return await self._refuse(reply, req, entry, errors.PERMISSION_DENIED)
        rtype = entry.response_type
        if rtype == "sync":
            resp = await self.call(entry, req, reply)
            await self._after(entry, req, resp)
            reply.answer(resp)
        elif rtype == "async":
            reply.answer(Response.ack(req.request_id))
            resp = await self.call(entry, req, reply)
            await self._after(entry, req, resp)
            reply.push(resp)
        elif rtype == "none":
            reply.reply("ok", req.request_type)
            resp = await self.call(entry, req, reply)
            reply.outcome = resp  # never sent: the access log still tells how it went
            if not resp.success:
                log.warning(
                    "call_failed",
                    request_id=req.request_id,
                    service=req.service,
                    request_type=req.request_type,
                    error=resp.error,
                )
            await self._after(entry, req, resp)
        elif rtype == "stream":
            reply.answer(Response.start(req.request_id))
            resp = await self.stream(entry, req, reply.push, reply)
            await self._after(entry, req, resp)
        else:
            log.error("response_type_unsupported", request_id=req.request_id, response_type=rtype)
            await self._refuse(reply, req, entry, errors.unsupported_response_type(rtype))

    async def _refuse(self, reply: Reply, req: Request, entry: Entry, text: str) -> None:
        resp = Response.fail(req.request_id, text)
        await self._after(entry, req, resp)
        reply.answer(resp)

    async def _permitted(self, entry: Entry, req: Request) -> bool:
        """The permission callback (a function with one; the mode is checked in `Entry.admit`)."""
        assert entry.permission is not None
        ok = await permissions.check_callback(entry.permission, req, entry.config.hook_timeout / 1000)
        if not ok:
            permissions.log_denied(req, f"callback {entry.permission.target}")
        return ok

    async def _after(self, entry: Entry, req: Request, resp: Response | None) -> None:
        if entry.after is not None:
            await hooks.run_after(entry.after, req, entry.config, resp, self.pool)

    # ------------------------------------------------------------------ calls
    async def call(self, entry: Entry, req: Request, reply: Reply | None = None) -> Response:
        """Arguments, then the callee with its deadline, re-run per the retry policy; always a
        Response. `reply`: where the answer goes, for callees that act on the caller's connection."""
        try:
            args = entry.arguments(req)
        except ArgumentError as exc:
            return Response.fail(req.request_id, errors.invalid_argument(exc))
        callee = entry.callee
        plan = callee.plan(req)
        resp: Response | None = None
        for attempt in range(1 + entry.retries):
            if attempt:
                await asyncio.sleep(backoff(attempt))
                log.info("call_retry", request_id=req.request_id, attempt=attempt)
                telemetry.execute(
                    "genapi.executor.retry",
                    {"attempt": entry.retries - attempt},
                    {
                        "request_id": req.request_id,
                        "mode": entry.config.retry,
                        "type": "local" if entry.config.nodes == "local" else "remote",
                    },
                )
            try:
                return Response(req.request_id, await callee.call(args, req, plan, reply))
            except CallError as exc:
                resp = Response.fail(req.request_id, exc.text, exc.can_retry)
                if exc.can_retry:  # no capacity now: the client retries, not us
                    return resp
            except Exception as exc:
                resp = callee.failure(req, exc)
        assert resp is not None
        if entry.retries:
            telemetry.execute(
                "genapi.executor.retry.exhausted",
                {},
                {"request_id": req.request_id, "mode": entry.config.retry, "last_error": resp.error},
            )
        return resp

    async def stream(self, entry: Entry, req: Request, emit: Any, flow: Reply | None = None) -> Response:
        """Pushes each chunk through `emit`; returns the final Response (end, last chunk or error).
        `flow` (the request's Reply) tells the stream when the client is not keeping up."""
        handle = StreamHandle(
            emit, req.request_id, asyncio.get_running_loop(), push_style=entry.request_info, flow=flow
        )
        try:
            try:
                args = entry.arguments(req, handle)
            except ArgumentError as exc:
                resp = Response.fail(req.request_id, errors.invalid_argument(exc))
                emit(resp)
                return resp
            try:
                await entry.callee.stream(args, handle, req)
            except CallError as exc:
                handle.end(Response.fail(req.request_id, exc.text, exc.can_retry))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                handle.end(entry.callee.failure(req, exc))
            return handle.done.result() if handle.done.done() else Response.stream_end(req.request_id)
        finally:
            handle.stop()
