# cython: language_level=3
"""The request path's steps, written once and compiled; every request takes them:

identity → decode → find the FunConfig → in-flight slot (or the connection's queue) →
[before hook] → admit (rate limit → permission mode → cluster rate limits) → [permission callback] →
arguments → call.

`Dispatcher.handle` runs the steps up to the slot for every request. A request whose function
needs nothing that takes a Task (hooks, permission callback, retry; sync response) goes on
right here, inline: `Entry.admit`, `Entry.arguments`, then `callee.start`, which answers
straight to the `Reply`. Every other request runs the general path (`pipeline.GeneralPath.run`,
a Task), which calls the same steps of its Entry, in the same order, with the Task-only steps
(hooks, the permission callback, retries) around them. The steps are the Entry's methods, so
neither path calls into the other. A request counted by a rate limit of `scope = "cluster"`
gets a `Pending` from `admit` (that limit's check in Redis, batched per loop iteration):
inline, the request goes on from its callback (`admitted`); the general path awaits it. A
request no cluster limit counts pays one pointer test for them.
"""
from functools import partial

from genapi import log
from genapi.errors import (AUTH_REQUIRED, PERMISSION_DENIED, ArgumentError, DecodeError, Disabled, NotFound,
                           disabled, invalid_argument, queue_full, unsupported)
from genapi.loader import Target
from genapi.structs import RESERVED_VERSION, Response, split_target
from genapi._core.callee import retries

from genapi._core.callee cimport Callee
from genapi._core.connection cimport Connection, Handler
from genapi._core.decode cimport decode_request
from genapi._core.limits cimport RequestLimiter
from genapi._core.validate cimport Validator
from genapi._core.reply cimport Reply, reply_to
from genapi._core.stats cimport metric_row

cdef str OK = "ok"
cdef str ERROR = "error"
cdef str SYNC = "sync"
cdef Py_ssize_t CACHE_MAX = 10_000


cdef class Entry:
    """A FunConfig compiled for calling: its callee, validator, predefined args and hooks."""

    def __init__(self, config, Callee callee, limits):
        self.config = config
        self.callee = callee
        self.predefined = split_target(config.mfa)[1]
        try:
            self.validator = Validator(config.arg_types, config.arg_orders, config.request_type, limits)
        except ValueError as exc:
            raise ValueError(f"{config.service}.{config.request_type}: arg_types: {exc}") from None
        self.request_info = config.request_info
        self.before = Target(config.before_execute) if config.before_execute else None
        self.after = Target(config.after_execute) if config.after_execute else None
        self.permission = Target(config.permission_callback) if config.permission_callback else None
        self.mode = config.check_permission
        self.retries = retries(config.retry)
        self.response_type = config.response_type
        self.plain_args = not self.predefined and not self.request_info  # args = validator output
        self.row = metric_row(config.service, config.request_type)  # /metrics counts its requests here
        self.inline = (self.before is None and self.after is None and self.permission is None
                       and self.retries == 0 and self.response_type == SYNC)

    def __repr__(self):
        return f"<Entry {self.config.service}.{self.config.request_type} {self.config.version}>"

    cpdef object admit(self, object request, object identity, RequestLimiter limiter):
        """The admission steps in their order: rate limit (`limiter`: the compiled RequestLimiter
        of `[rate_limiter]`, None without a table), then the permission mode, then the rate
        limits of `scope = "cluster"` (`limiter.cluster`, None without any). A refusal Response,
        None to go on, or (a request some cluster limit counts) a `Pending` (awaitable) of either,
        answered with this loop iteration's batch of checks in Redis. With a permission
        callback the mode is not checked: the general path awaits the callback next."""
        cdef object cluster = None
        if limiter is not None:
            cluster = limiter.cluster
            if limiter.enabled:
                # with cluster limits to ask, the host's are only looked at now: the cluster
                # check records them once it admits (all or nothing across both scopes)
                refusal = limiter.check(request, identity, cluster is None)
                if refusal is not None:
                    return refusal
        if self.permission is None and not permitted_by_mode(self, request):
            return Response.fail(request.request_id, PERMISSION_DENIED)
        if cluster is not None:
            return cluster.check(request, identity, limiter if limiter.enabled else None)
        return None

    cpdef list arguments(self, object request, object stream=None):
        """predefined args ++ validated args ++ [request info]; raises ArgumentError."""
        cdef list args = self.validator.convert(request.args)
        if self.predefined:
            args = self.predefined + args
        if self.request_info:
            info = {"request_id": request.request_id, "user_id": request.user_id,
                    "device_id": request.device_id}
            if stream is not None:
                info["stream"] = stream
            args.append(info)
        return args


cdef bint _mode_allows(object mode, object request):
    """false = public; any_authenticated; {arg = NAME}; {role = [..]}. Anything else denies."""
    if mode is False:
        return True
    uid = request.user_id
    if mode == "any_authenticated":
        return type(uid) is str and uid != ""
    if type(mode) is dict:
        if "arg" in mode:
            name = mode["arg"]
            args = request.args
            return type(uid) is str and uid != "" and name in args and args[name] == uid
        if "role" in mode:
            roles = request.user_roles or ()
            return any(r in roles for r in mode["role"])
    log.error("permission_mode_invalid", mode=mode, request_type=request.request_type)
    return False


cpdef log_denied(object request, object mode):
    """The permission_denied line (the general path's callback denials write it too)."""
    log.warning("permission_denied", user_id=request.user_id, request_id=request.request_id,
                request_type=request.request_type, mode=mode)


cpdef bint permitted_by_mode(Entry entry, object request):
    """The check_permission mode; a denial is logged."""
    if entry.mode is False or _mode_allows(entry.mode, request):
        return True
    log_denied(request, entry.mode)
    return False


cdef class Dispatcher(Handler):
    """The request entry of one worker. `general(reply, request, entry)` is the coroutine of the
    general path, run in a Task; the dispatcher knows nothing else of it. `limiter`: the
    compiled RequestLimiter of `[rate_limiter]`, None without a table."""

    def __init__(self, registry, settings, general, RequestLimiter limiter=None):
        gw = settings.gateway
        self.registry = registry
        self.general = general
        self.event = gw.event
        self.require_verified = settings.auth.require_verified_user_id
        self.max_payload = gw.max_payload_bytes
        self.max_in_flight = gw.max_in_flight
        self.max_queued = gw.max_queued
        self.cache = {}
        self.seen_generation = None
        self.limiter = limiter

    cdef object _lookup(self, str service, str request_type, object version):
        """The Entry, or the error text; cached until the registry changes. Only names the
        registry knows are cached (so the cache is bounded by the config, whatever clients
        send): an unknown name is looked up again each time and never kept."""
        gen = self.registry.generation
        if gen is not self.seen_generation:
            self.cache.clear()
            self.seen_generation = gen
        key = (service, request_type, version)
        hit = self.cache.get(key)
        if hit is None:
            try:
                hit = self.registry.lookup(service, request_type, version)[1]
            except NotFound:
                return unsupported(request_type, version or RESERVED_VERSION)
            except Disabled:
                hit = disabled(request_type, version or RESERVED_VERSION)
            if len(self.cache) >= CACHE_MAX:
                self.cache.clear()
            self.cache[key] = hit
        return hit

    cpdef handle(self, Connection conn, join_ref, ref, str topic, payload, Py_ssize_t size):
        """Answers one request event, or parks it in the connection's queue until a slot frees."""
        cdef Reply reply
        ident = conn.identity
        if self.require_verified and ident.user_id is None:
            rid = payload.get("request_id") if type(payload) is dict else None
            reply = reply_to(conn, join_ref, ref, topic, None)
            reply.answer(Response.fail(rid if type(rid) is str and rid else "unknown", AUTH_REQUIRED), ERROR,
                         AUTH_REQUIRED)
            reply.done()
            return
        try:
            req = decode_request(payload, ident.user_id, ident.device_id, ident.roles, size, self.max_payload,
                                 ident.traceparent)
        except DecodeError as exc:
            msg = str(exc)
            log.info("request_invalid", request_id=exc.request_id, error=msg)
            reply = reply_to(conn, join_ref, ref, topic, None)
            reply.answer(Response.fail(exc.request_id, msg), ERROR, msg)
            reply.done()
            return
        reply = reply_to(conn, join_ref, ref, topic, req)
        found = self._lookup(req.service, req.request_type, req.version)
        if type(found) is str:
            reply.answer(Response.fail(req.request_id, found))
            reply.done()
            return
        reply.row = (<Entry>found).row
        if conn.in_flight >= self.max_in_flight or conn.queue:
            if not conn.enqueue((reply, req, found), size):
                log.info("request_queue_full", request_id=req.request_id, request_type=req.request_type)
                reply.answer(Response.fail(req.request_id, queue_full(self.max_in_flight, self.max_queued), True))
                reply.done()
            return
        self.start(reply, req, <Entry>found)

    cpdef start(self, Reply reply, object request, Entry entry):
        """Takes a slot on the connection and runs the request: inline, or the general path."""
        cdef Connection conn = reply._conn
        conn.in_flight += 1
        reply.slot_taken()
        if not entry.inline:
            conn.spawn(reply, self.general(reply, request, entry))
            return
        refusal = entry.admit(request, conn.identity, self.limiter)
        if refusal is not None:
            if not isinstance(refusal, Response):  # pending (a Response is one of its kinds' subclasses)
                refusal.then = partial(self.admitted, reply, request, entry)
                conn.track(reply, refusal)  # a topic left or closed cancels the wait
                return
            reply.finish(refusal)
            return
        self._go(reply, request, entry)

    def admitted(self, Reply reply, object request, Entry entry, object pending, list corked):
        """The cluster rate limits answered a request `Entry.admit` left pending
        (`engine.cluster_limits.Pending`): it goes on inline, or gets its refusal, its answer
        held for the batch's one write (`corked`); cancelled (its topic left or closed), its
        slot comes back."""
        cdef Connection conn = reply._conn
        if conn is not None:
            conn.untrack(reply, pending)
            if corked is not None and conn.cork():
                corked.append(conn)
        if pending.cancelled:
            reply.release()
            return
        refusal = pending.answer
        if refusal is not None:
            reply.finish(refusal)
            return
        self._go(reply, request, entry)

    cdef _go(self, Reply reply, object request, Entry entry):
        """An admitted inline request: its arguments, then its callee."""
        try:
            args = entry.validator.convert(request.args) if entry.plain_args else entry.arguments(request)
        except ArgumentError as exc:
            reply.finish(Response.fail(request.request_id, invalid_argument(exc)))
            return
        try:
            entry.callee.start(reply, request, args)
        except Exception as exc:  # a callee bug: the client still gets an answer, the slot comes back
            log.error("callee_start_crashed", exc_info=True, request_id=request.request_id)
            reply.finish(entry.callee.failure(request, exc))
