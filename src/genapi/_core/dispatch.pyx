# cython: language_level=3
"""The per-request entry of the pipeline, compiled: identity → decode → find the FunConfig →
in-flight cap, then either the inline fast path or a Task running `Pipeline.run`.

The fast path serves a plain `async def` sync function without hooks, permission callback or
retry: permission mode, argument validation and the call happen right here, and a coroutine that
finishes without suspending is answered in the same read batch with no Task at all.
"""
from genapi import log, permissions

from genapi._core.connection cimport Connection
from genapi._core.decode import DecodeError, decode_request
from genapi._core.validate import ArgumentError
from genapi.calls import ASYNC, resume
from genapi.registry import Disabled, NotFound
from genapi.structs import RESERVED_VERSION, Response

cdef str AUTH_REQUIRED = "Authentication required"
cdef str OK = "ok"
cdef str SYNC = "sync"
cdef int _ASYNC = ASYNC
cdef Py_ssize_t CACHE_MAX = 10_000


cdef class Dispatcher:
    """Bound to one Pipeline; `handle` is called by the connection for every request event."""

    cdef object pipeline
    cdef object registry
    cdef str event
    cdef bint require_verified
    cdef Py_ssize_t max_payload
    cdef int max_in_flight
    cdef dict cache
    cdef object seen_generation

    def __init__(self, pipeline):
        self.pipeline = pipeline
        self.registry = pipeline.registry
        self.event = pipeline.event
        self.require_verified = pipeline.require_verified
        self.max_payload = pipeline.max_payload
        self.max_in_flight = pipeline.max_in_flight
        self.cache = {}
        self.seen_generation = None

    cdef object _lookup(self, str service, str request_type, object version):
        """(config, fn) or an error text; cached until the registry changes."""
        gen = self.registry.generation
        if gen is not self.seen_generation:
            self.cache.clear()
            self.seen_generation = gen
        key = (service, request_type, version)
        hit = self.cache.get(key)
        if hit is None:
            try:
                hit = self.registry.lookup(service, request_type, version)
            except NotFound:
                hit = f"unsupported function: {request_type} version {version or RESERVED_VERSION}"
            except Disabled:
                hit = f"disabled function: {request_type} version {version or RESERVED_VERSION}"
            if len(self.cache) >= CACHE_MAX:
                self.cache.clear()
            self.cache[key] = hit
        return hit

    cpdef handle(self, Connection conn, join_ref, ref, str topic, payload, Py_ssize_t size):
        """Answers one request event: the push (if any) first, then the phx_reply."""
        ident = conn.identity
        ser = conn.ser
        if self.require_verified and ident.user_id is None:
            rid = payload.get("request_id") if type(payload) is dict else None
            conn.send(ser.answer(join_ref, ref, topic, self.event,
                                 Response.fail(rid if type(rid) is str and rid else "unknown", AUTH_REQUIRED),
                                 "error", AUTH_REQUIRED))
            return
        try:
            req = decode_request(payload, ident.user_id, ident.device_id, ident.roles, size, self.max_payload)
        except DecodeError as exc:
            msg = str(exc)
            log.info("request_invalid", request_id=exc.request_id, error=msg)
            conn.send(ser.answer(join_ref, ref, topic, self.event, Response.fail(exc.request_id, msg), "error", msg))
            return
        found = self._lookup(req.service, req.request_type, req.version)
        if type(found) is str:
            conn.send(ser.answer(join_ref, ref, topic, self.event, Response.fail(req.request_id, found), OK,
                                 req.request_type))
            return
        config, fn = <tuple>found
        if conn.in_flight >= self.max_in_flight:
            conn.send(ser.answer(join_ref, ref, topic, self.event, Response.fail(
                req.request_id, f"Too many requests in flight on this connection (max {self.max_in_flight})",
                True), OK, req.request_type))
            return
        if fn.simple and fn.kind == _ASYNC and config.response_type == SYNC:
            self._inline(conn, ser, join_ref, ref, topic, req, config, fn)
        else:
            conn.spawn(topic, self.pipeline.run(conn, join_ref, ref, topic, req, config, fn))

    cdef _inline(self, Connection conn, ser, join_ref, ref, str topic, req, config, fn):
        mode = config.check_permission
        if mode is not False and not permissions.check_mode(mode, req):
            permissions.log_denied(req, mode)
            resp = Response.fail(req.request_id, "Permission denied")
        else:
            try:
                args = fn.validator.convert(req.args) if fn.plain_args else fn.arguments(req)
            except ArgumentError as exc:
                resp = Response.fail(req.request_id, f"Invalid argument: {exc}")
            else:
                try:
                    coro = fn.fn(*args)
                    pending = coro.send(None)
                except StopIteration as stop:
                    resp = Response(req.request_id, stop.value)
                except Exception as exc:
                    resp = self.pipeline.internal_error(req, exc)
                else:  # it suspended: finish it in a Task
                    conn.spawn(topic, self.pipeline.finish(conn, join_ref, ref, topic, req, fn,
                                                           resume(coro, pending)))
                    return
        conn.send(ser.answer(join_ref, ref, topic, self.event, resp, OK, req.request_type))
