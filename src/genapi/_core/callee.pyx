# cython: language_level=3
"""The call step's one interface, and the local implementation behind it.

A `Callee` calls one function with the function's deadline, streams from it, and is cancelled
by cancelling the Task awaiting it. The pipeline only talks to this interface, so remote service
nodes add a callee beside `LocalCallee` without touching the pipeline. Timeout and error texts
come from the callee (`local execution timed out after Nms` is the local one's).

- `start(reply, request, args)`: a sync-response call answered straight to `reply` (the fast
  path): no Task where the callee can avoid one. The request's slot passes to the callee, which
  releases it once answered.
- `plan(request)`: what the retries of one request share (a remote callee's node order), made
  once per request; None for callees that need nothing.
- `await call(args, request, plan, reply)`: the result, or `CallError` (timeout, unavailable), or
  the function's exception. `reply` is where the answer goes (the caller's connection and
  topic), for callees that act on them (relay groups); the others ignore it.
- `await stream(args, handle, request)`: pushes chunks through the `StreamHandle`.
"""
import asyncio
import inspect
from time import monotonic

from genapi import log
from genapi._core.turns import pass_turn, resume
from genapi.errors import CallError, CallTimeout, internal, local_timeout
from genapi.loader import kind_of
from genapi.structs import Response

from genapi._core.handoff cimport ThreadPool
from genapi._core.reply cimport Reply
from genapi._core.vocab cimport ASYNC, ASYNCGEN, GEN, SYNC

from cpython.ref cimport Py_DECREF, PyObject

from genapi._core.coro cimport PYGEN_RETURN, PyIter_Send

cdef int _SYNC = SYNC, _ASYNC = ASYNC, _GEN = GEN, _ASYNCGEN = ASYNCGEN


def retries(retry):
    """How many times a failed call is re-run: `N`, `{same_node = N}` or `{all_nodes = N}`."""
    if retry is None:
        return 0
    if isinstance(retry, dict):
        return int(next(iter(retry.values())))
    return int(retry)


def backoff(int attempt):
    """Seconds to wait before re-run number `attempt` (1, 2, ...): 50 ms doubling, at most 1 s."""
    return min(0.05 * 2 ** (attempt - 1), 1.0)


cdef class Callee:
    """Base of every callee: the default `start` runs `call` in a Task owned by the request's topic."""

    def __init__(self, timeout_ms, bint detail_error=False):
        self.timeout_ms = timeout_ms
        self.timeout = None if timeout_ms is None else timeout_ms / 1000
        self.detail_error = detail_error

    cpdef start(self, Reply reply, object request, list args):
        reply.conn.spawn(reply, self._answer(reply, request, args))

    async def _answer(self, Reply reply, request, list args):
        try:
            resp = Response(request.request_id, await self.call(args, request, self.plan(request), reply))
        except CallError as exc:
            resp = Response.fail(request.request_id, exc.text, exc.can_retry)
        except Exception as exc:
            resp = self.failure(request, exc)
        reply.answer(resp)

    cpdef plan(self, object request):
        return None

    async def call(self, list args, request=None, plan=None, reply=None):
        raise NotImplementedError

    async def stream(self, list args, handle, request=None):
        raise NotImplementedError

    cpdef failure(self, object request, object exc):
        """The Response for a call that raised (logged with what was called)."""
        # the traceback with the warning when details are shown anyway, else only at debug
        log.warning("call_raised", exc_info=exc if self.detail_error else None, request_id=request.request_id,
                    service=request.service, request_type=request.request_type,
                    error=f"{type(exc).__name__}: {exc}")
        if not self.detail_error:
            log.debug("call_raised_traceback", exc_info=exc, request_id=request.request_id)
        return Response.fail(request.request_id, internal(exc, self.detail_error))

    cpdef timed_out(self, object request):
        return Response.fail(request.request_id, self.timeout_error())

    def timeout_error(self):
        return f"execution timed out after {self.timeout_ms}ms"


cdef int BATCH = 64  # chunks a stream sends per turn of the event loop, corked into one write


async def _agen_stream(agen, handle):
    """Sends what `agen` yields. Each `__anext__` is stepped by hand: chunks that come without
    suspending are corked (one write per turn), and after BATCH of them, or when the client is
    not keeping up, the loop gets its turn (a generator that never awaits cannot hold the worker,
    and its timeout fires). When the generator suspends, what was corked goes out first."""
    cdef PyObject* out = NULL
    cdef int sent
    cdef int n = 0
    cdef bint corked = False
    anext = agen.__anext__
    try:
        while not handle.closed:
            step = anext()
            try:
                sent = PyIter_Send(step, None, &out)
            except StopAsyncIteration:
                break
            value = <object>out
            Py_DECREF(value)
            if sent != PYGEN_RETURN:  # it awaits something: flush, then wait with it
                if corked:
                    corked = False
                    handle.uncork()
                try:
                    value = await resume(step, value)
                except StopAsyncIteration:
                    break
            if not corked:
                corked = handle.cork()
            handle.send(value)
            n += 1
            waiter = handle.drained()
            if waiter is not None or n >= BATCH:
                n = 0
                if corked:
                    corked = False
                    handle.uncork()
                    waiter = handle.drained()  # the write may have filled the socket
                if waiter is not None:
                    await waiter
                else:
                    await pass_turn()
    finally:
        if corked:
            handle.uncork()


cdef double BURST_S = 0.005  # how long one thread job of a plain generator stream may run


def _gen_burst(gen, handle):
    """In a thread: sends what `gen` yields, each item as it comes, until the generator ends
    (True), or the client is not keeping up, the stream is over, or BURST_S has passed (False:
    the loop waits for the client, then hands the generator to a thread again). So a stream
    holds a thread only while it produces, never while its client is not reading."""
    deadline = monotonic() + BURST_S
    for item in gen:
        if not handle.offer(item) or monotonic() > deadline:
            return False
    return True


def _collect(gen_fn, args):
    return list(gen_fn(*args))


cdef class LocalCallee(Callee):
    """A Python function inside the gateway: `async def` on the loop (inline when it finishes
    without suspending), plain `def` through the thread handoff, generators for streams."""

    def __init__(self, fn, timeout_ms, ThreadPool pool, bint detail_error=False):
        Callee.__init__(self, timeout_ms, detail_error)
        self.fn = fn
        self.kind = kind_of(fn)
        self.pool = pool

    def timeout_error(self):
        return local_timeout(self.timeout_ms)

    cpdef start(self, Reply reply, object request, list args):
        cdef PyObject* out = NULL
        cdef int sent
        if self.kind == _ASYNC:
            try:
                coro = self.fn(*args)
                sent = PyIter_Send(coro, None, &out)  # a return needs no StopIteration
            except Exception as exc:
                reply.finish(self.failure(request, exc))
                return
            value = <object>out
            Py_DECREF(value)  # PyIter_Send gave a new reference; `value` holds its own
            if sent == PYGEN_RETURN:
                reply.finish(Response(request.request_id, value))
            else:  # it suspended: finish it in a Task
                reply.conn.spawn(reply, self._finish(reply, request, resume(coro, value)))
        elif self.kind == _SYNC:
            try:
                self.pool.submit(reply, request, self.fn, tuple(args), self.timeout, self)
            except CallError as exc:
                reply.finish(Response.fail(request.request_id, exc.text, exc.can_retry))
        else:
            Callee.start(self, reply, request, args)

    async def _finish(self, Reply reply, request, rest):
        cm = asyncio.timeout(self.timeout)
        try:
            async with cm:
                result = await rest
            resp = Response(request.request_id, result)
        except TimeoutError as exc:
            resp = self.timed_out(request) if cm.expired() else self.failure(request, exc)
        except Exception as exc:
            resp = self.failure(request, exc)
        reply.answer(resp)

    async def call(self, list args, request=None, plan=None, reply=None):
        cm = asyncio.timeout(self.timeout)
        try:
            async with cm:
                if self.kind == _SYNC:
                    return await self.pool.run(self.fn, *args)
                if self.kind == _ASYNC:
                    return await self.fn(*args)
                if self.kind == _ASYNCGEN:  # a generator called for a one-shot answer: collect it
                    out = []
                    async for item in self.fn(*args):
                        out.append(item)
                        if not len(out) & 255:
                            await pass_turn()  # one that never awaits still lets the loop (and its timeout) in
                    return out
                return await self.pool.run(_collect, self.fn, args)
        except TimeoutError:
            if cm.expired():
                raise CallTimeout(local_timeout(self.timeout_ms)) from None
            raise

    async def stream(self, list args, handle, request=None):
        cm = asyncio.timeout(self.timeout)
        try:
            async with cm:
                await self._stream(args, handle)
        except TimeoutError:
            if cm.expired():
                raise CallTimeout(local_timeout(self.timeout_ms)) from None
            raise

    async def _stream(self, list args, handle):
        """Between chunks a stream waits while its client is not reading (`handle.drained()`),
        and a generator that never awaits still gives the loop a turn, so other clients are
        served and the timeout fires wherever the stream is."""
        if self.kind == _ASYNCGEN:
            agen = self.fn(*args)
            try:
                await _agen_stream(agen, handle)
            finally:
                await agen.aclose()
        elif self.kind == _GEN:
            gen = self.fn(*args)
            try:
                while not handle.closed:
                    if await self.pool.run(_gen_burst, gen, handle):
                        break
                    waiter = handle.drained()
                    if waiter is not None:
                        await waiter
            finally:
                try:  # in a thread: the generator may still be inside `next` there
                    await self.pool.run(gen.close)
                except Exception:
                    log.debug("stream_generator_close_skipped")
        else:  # push-style (the handle gates a function in a thread; one on the loop awaits drain())
            out = self.fn(*args) if self.kind == _ASYNC else self.pool.run(self.fn, *args)
            result = await out
            if inspect.isasyncgen(result) or inspect.isgenerator(result):
                raise TypeError("a stream function must be a generator, not return one")
            if not handle.push_style and not handle.closed:
                handle.send_last(result)
            elif result is not None and not handle.closed:
                handle.send(result)
        if not handle.closed:
            if self.kind in (_GEN, _ASYNCGEN) or not handle.push_style:
                handle.complete()
            else:
                await handle.done  # push-style: the function closes the stream
