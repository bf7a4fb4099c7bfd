"""The general path of a request, in PhoenixGenApi's order (reference/behavior.md §2):

before hook → rate limit → permission (callback or mode) → dispatch on response_type →
arguments → call with timeout and retry → after hook → push.

The steps every request takes are compiled (`_core/dispatch.pyx`): identity, decode, lookup,
the in-flight slot and, for functions that need no Task, the whole call inline. What needs a
Task runs here, calling those same compiled steps: hooks, the permission callback, async,
stream and fire-and-forget responses, and retries. Calls go through the function's callee
(`_core/callee.pyx`), whatever runs it.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from genapi import errors, log, relay, telemetry
from genapi._core.callee import Callee, LocalCallee
from genapi._core.dispatch import Dispatcher, Entry, arguments, permitted_by_mode
from genapi._core.handoff import ThreadPool
from genapi._core.reply import Reply
from genapi._core.validate import Limits
from genapi._core.wire import on_unencodable
from genapi.config import Settings
from genapi.errors import ArgumentError, CallError, HookRejected
from genapi.loader import load_callable
from genapi.nodes import rpc
from genapi.nodes.remote import Nodes, RemoteCallee
from genapi.relay.seats import Seats
from genapi.request import discovery, hooks, permissions
from genapi.request.calls import StreamHandle, backoff
from genapi.request.registry import NotFound, Registry
from genapi.structs import FunConfig, Request, Response, split_target


class Pipeline:
    """The request path of one worker: the registry of bound functions, the thread pool, the
    compiled dispatcher (`handle`, `start`) and the general path (`run`)."""

    def __init__(self, settings: Settings) -> None:
        gw = settings.gateway
        self.settings = settings
        self.detail_error = gw.detail_error
        self.limits = Limits(gw.string_max_bytes, gw.list_max_items, gw.map_max_items)
        self.pool = ThreadPool(gw.thread_pool_size, gw.thread_queue_limit)
        self.registry: Registry[Entry] = Registry()
        self.seats = Seats()  # this worker's relay-group members (linked to the groups by the worker)
        self.nodes = Nodes(settings.cluster, rpc.secret_from(settings.cluster.secret), f"gateway@{os.getpid()}")
        for cfg in settings.functions:
            self.add(cfg)
        self.dispatcher = Dispatcher(self.registry, settings, self.run)
        self.handle = self.dispatcher.handle
        self.start = self.dispatcher.start
        on_unencodable(self._unencodable)

    def _unencodable(self, payload: Any, exc: BaseException) -> Any:
        """A result that is not JSON-serializable becomes an Internal Server Error Response."""
        if not isinstance(payload, Response):
            raise exc
        log.warning("result_not_encodable", request_id=payload.request_id, error=f"{type(exc).__name__}: {exc}")
        return Response.fail(payload.request_id, errors.not_serializable(exc, self.detail_error))

    def callee(self, config: FunConfig) -> Callee:
        """The callee that runs `config`'s function (raises ValueError naming what is wrong)."""
        if config.nodes != "local":
            try:
                return RemoteCallee(config, self.nodes, self.detail_error)
            except ValueError as exc:
                raise ValueError(f"{config.service}.{config.request_type}: {exc}") from None
        fn = load_callable(split_target(config.mfa)[0])
        if fn is discovery.list_apis:  # answers from this worker's registry
            return discovery.ListApisCallee(config, self.registry, self.limits)
        op = relay.op_of(fn)
        if op is not None:  # genapi.relay's operations act on the caller's connection
            try:
                return relay.RelayCallee(op, config, self.seats)
            except ValueError as exc:
                raise ValueError(f"{config.service}.{config.request_type}: {exc}") from None
        return LocalCallee(fn, config.timeout_ms(), self.pool, self.detail_error)

    def bind(self, config: FunConfig) -> Entry:
        return Entry(config, self.callee(config), self.limits)

    def add(self, config: FunConfig) -> None:
        """Binds and registers one config (raises ValueError naming the function and field)."""
        self.registry.add(config, self.bind(config))

    def replace(self, old: list[tuple[str, str, str | None]], configs: list[FunConfig]) -> None:
        """Swaps a service's functions in one step: every new config is bound first (a
        ValueError naming the function leaves the registry as it was), then the old keys go and
        the new ones come, with no await between, so no request sees half of it. A config equal
        to the one it replaces keeps the old object and its Entry (nothing to rebind, and a
        snapshot publishes it without encoding it again)."""
        wanted = set(old)
        current = {
            key: (c, e) for c, e in self.registry.items() if (key := (c.service, c.request_type, c.version)) in wanted
        }
        bound = []
        for cfg in configs:
            same = current.get((cfg.service, cfg.request_type, cfg.version))
            bound.append(same if same is not None and same[0] == cfg else (cfg, self.bind(cfg)))
        for service, request_type, version in old:
            try:
                self.registry.delete(service, request_type, version)
            except NotFound:
                pass
        for cfg, entry in bound:
            self.registry.add(cfg, entry)

    def load(self, configs: list[FunConfig]) -> int:
        """Serves exactly `configs` from now on (a config snapshot), in one step (no await). A
        config that is the one already served (the snapshot reader hands unchanged configs back
        as the same objects), or equal to it, keeps its compiled Entry; one that cannot be bound
        here is logged and left out. A few changes among many are applied one by one, else the
        registry is rebuilt. Returns how many were bound anew."""
        items = self.registry.items()
        by_id = {id(item[0]): item for item in items}
        kept: set[int] = set()
        changed = []
        for cfg in configs:
            if id(cfg) in by_id:
                kept.add(id(cfg))
            else:
                changed.append(cfg)
        if not changed and len(kept) == len(items):
            return 0  # the same registry
        fresh = 0
        bound = []
        for cfg in changed:
            old = self.registry.item(cfg.service, cfg.request_type, cfg.version)
            if old is not None and old[0] == cfg:
                bound.append((cfg, old[1]))
                continue
            try:
                bound.append((cfg, self.bind(cfg)))
                fresh += 1
            except ValueError as exc:
                log.error(
                    "config_not_bound",
                    service=cfg.service,
                    request_type=cfg.request_type,
                    version=cfg.version,
                    error=str(exc),
                )
        removed = [item[0] for item in items if id(item[0]) not in kept]
        if len(bound) + len(removed) > 64:
            self.registry.replace_all([by_id[i] for i in kept] + bound)
            return fresh
        for cfg in removed:  # gone, or replaced by a changed one
            try:
                self.registry.delete(cfg.service, cfg.request_type, cfg.version)
            except NotFound:
                pass
        for cfg, entry in bound:
            self.registry.add(cfg, entry)
        return fresh

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
                entry = self.bind(new_cfg)
            req = new_req
        refusal = self.dispatcher.limit(req, entry, getattr(reply.conn, "identity", None))
        if refusal is not None:
            await self._after(entry, req, refusal)
            return reply.answer(refusal)
        if not await self._permitted(entry, req):
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
            reply.answer(Response.chunk(req.request_id, "init"))
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
        if entry.permission is None:
            return permitted_by_mode(entry, req)
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
            args = arguments(entry, req)
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
                args = arguments(entry, req, handle)
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
