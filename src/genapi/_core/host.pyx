# cython: language_level=3
"""A service node's call handler, compiled: every call a gateway sends a node runs through
`FunctionHost.call`.

Only functions the Service declared ever run (a call names its function by the `mfa` the SDK
gave it). `async def` functions run on the loop, inline when they finish without suspending
(stepped with PyIter_Send: no Task, no StopIteration), plain ones in the thread handoff,
generators stream with flow control: a stream sends at most STREAM_WINDOW chunks ahead of what
the gateway has granted. A CANCEL from the gateway (its client left, disconnected, or the
deadline passed) cancels the function: a Task is cancelled, a generator closed, a thread's
result dropped. A lost gateway connection cancels all of its calls. A call also ends on its own
when its `timeout_ms` (and DEADLINE_GRACE_S) has passed here, answered `timeout`: a gateway that
vanished without a word (its CANCEL or FIN never came) does not leave work running forever.
"""
import asyncio

import contextvars
from functools import partial

import msgspec

from genapi import log
from genapi.errors import ArgumentError
from genapi.trace import CURRENT, valid as _valid_trace
from genapi.loader import kind_of
from genapi._core import vocab
from genapi._core.turns import resume

from genapi._core.vocab cimport ASYNC, ASYNCGEN, GEN, STREAM_WINDOW, SYNC
from genapi._core.clock cimport monotonic

from genapi._core.handoff cimport ThreadPool
from genapi._core.rpc cimport ServerPeer

from cpython.ref cimport Py_DECREF, PyObject
from cpython.sequence cimport PySequence_Fast_ITEMS

cdef extern from "Python.h":
    object PyObject_Vectorcall(object callable, PyObject** args, size_t nargsf, PyObject* kwnames)

from genapi._core.coro cimport PYGEN_RETURN, PyIter_Send

cdef int _SYNC = SYNC, _ASYNC = ASYNC, _GEN = GEN, _ASYNCGEN = ASYNCGEN
cdef int GEN_BURST = 64           # items a plain generator yields per thread job
cdef str RAISED = vocab.RAISED
cdef str INVALID = vocab.INVALID
cdef str UNKNOWN = vocab.UNKNOWN
cdef str PROTOCOL = vocab.PROTOCOL
cdef str TIMEOUT = vocab.TIMEOUT
cdef double DEADLINE_GRACE_S = 0.5  # past timeout_ms: the gateway's own CANCEL comes first
cdef double SWEEP_S = 0.05          # how often running calls' deadlines are checked


cdef str _raised(exc):
    return f"{type(exc).__name__}: {exc}"


cdef class Declared:
    """One declared function as the node runs it: the callable, how it runs, which arguments
    are rebuilt from their wire form (`genapi.nodes.node.converters`: (position, wire type,
    convert, name) of each; a value is rebuilt only when it arrives as the wire type, a UUID as
    a str, a list of UUIDs as a list)."""
    cdef readonly object fn
    cdef readonly int kind
    cdef readonly list convert

    def __init__(self, fn, list convert):
        self.fn = fn
        self.kind = kind_of(fn)
        self.convert = convert


cdef class Running:
    """A call in progress on this node: what cancelling it means."""
    cdef public object task
    cdef public object future
    cdef public int credit
    cdef public object granted
    cdef public double deadline   # monotonic seconds; 0: none
    cdef public object peer
    cdef public object cid
    cdef public object timeout_ms

    def __cinit__(self):
        self.credit = STREAM_WINDOW

    cpdef cancel(self):
        for f in (self.task, self.future):
            if f is not None and not f.done():
                f.cancel()
        if self.granted is not None:
            self.granted.set()


def _burst(gen):
    """In a thread: up to GEN_BURST items of `gen`, and whether it has more."""
    items = []
    for item in gen:
        items.append(item)
        if len(items) >= GEN_BURST:
            return items, True
    return items, False


cdef class FunctionHost:
    """The RPC handler of a node: runs the Service's functions, and answers the gateway's pulls
    (`$config`, `$config_version`) and pings."""
    cdef readonly object service
    cdef readonly list advertised
    cdef ThreadPool pool
    cdef dict declared
    cdef readonly dict running
    cdef readonly long long calls
    cdef bint _sweeping

    def __init__(self, service, list advertised, ThreadPool pool, converters):
        self.service = service
        self.advertised = advertised
        self.pool = pool
        self.declared = {t: Declared(fn, converters(fn)) for t, fn in service.functions.items()}
        self.running = {}
        self.calls = 0

    @property
    def functions(self):
        return {t: d.fn for t, d in self.declared.items()}

    # ----------------------------------------------------------------- rpc handler
    def call(self, ServerPeer peer, cid, target, args, timeout_ms, stream, trace=None):
        """One CALL; `trace` (the caller's traceparent) is what `genapi.trace.current()` reads
        while the function runs."""
        if trace is not None and _valid_trace(trace) is not None:
            token = CURRENT.set(trace)
            try:
                return self._call(peer, cid, target, args, timeout_ms, stream, True)
            finally:
                CURRENT.reset(token)
        return self._call(peer, cid, target, args, timeout_ms, stream, False)

    cdef _call(self, ServerPeer peer, cid, target, args, timeout_ms, stream, bint traced):
        cdef Declared d = self.declared.get(target)
        cdef PyObject* out = NULL
        cdef int sent
        if d is None:
            if type(target) is str and target.startswith("$"):
                return self._builtin(peer, cid, target, args)
            return peer.error(cid, UNKNOWN, f"no function {target!r} on this node")
        if type(args) is not list:
            return peer.error(cid, PROTOCOL, "args must be a list")
        if d.convert:
            for i, wire, convert, name in d.convert:
                if i < len(args):
                    value = args[i]
                    if type(value) is wire or (wire is object and value is not None):
                        try:
                            args[i] = convert(value)
                        except msgspec.ValidationError as exc:
                            return peer.error(cid, RAISED, f"ValidationError: argument {name!r}: {exc}")
                        except ArgumentError as exc:  # the gateway tells the client, as its own validator's
                            return peer.error(cid, INVALID, str(exc))
        self.calls += 1
        fn = d.fn
        if stream:
            return self._track(peer, cid, self._stream(peer, cid, fn, d.kind, args), timeout_ms)
        if d.kind == _ASYNC:
            try:
                coro = PyObject_Vectorcall(fn, PySequence_Fast_ITEMS(args), len(<list>args), NULL)  # no tuple
                sent = PyIter_Send(coro, None, &out)  # a return needs no StopIteration
            except Exception as exc:
                return peer.error(cid, RAISED, _raised(exc))
            value = <object>out
            Py_DECREF(value)  # PyIter_Send gave a new reference; `value` holds its own
            if sent == PYGEN_RETURN:
                return peer.result(cid, value)
            return self._track(peer, cid, self._finish(peer, cid, resume(coro, value)), timeout_ms)
        if d.kind == _SYNC:
            try:
                fut = self.pool.run(contextvars.copy_context().run, fn, *args) if traced else self.pool.run(fn, *args)
            except Exception as exc:
                return peer.error(cid, RAISED, _raised(exc))
            running = Running()
            running.future = fut
            key = (id(peer), cid)
            self.running[key] = running
            self._deadline(running, peer, cid, timeout_ms)
            fut.add_done_callback(partial(self._thread_done, peer, cid, key))  # no closure: _call allocates none
            return
        self._track(peer, cid, self._collect(peer, cid, fn, d.kind, args), timeout_ms)

    def _thread_done(self, ServerPeer peer, cid, key, fut):
        self.running.pop(key, None)
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is None:
            peer.result(cid, fut.result())
        else:
            peer.error(cid, RAISED, _raised(exc))

    cdef _track(self, ServerPeer peer, cid, coro, timeout_ms):
        running = Running()
        key = (id(peer), cid)
        self.running[key] = running
        running.task = asyncio.ensure_future(self._guard(peer, cid, key, coro))
        self._deadline(running, peer, cid, timeout_ms)

    cdef _deadline(self, Running running, ServerPeer peer, cid, timeout_ms):
        """The call's own deadline on the node (none without a positive `timeout_ms`)."""
        if type(timeout_ms) is not int or timeout_ms <= 0:
            return
        running.deadline = monotonic() + timeout_ms / 1000 + DEADLINE_GRACE_S
        running.peer = peer
        running.cid = cid
        running.timeout_ms = timeout_ms
        if not self._sweeping:
            self._sweeping = True
            asyncio.get_running_loop().call_later(SWEEP_S, self._sweep)

    def _sweep(self):
        """Ends the calls whose deadline passed (answered `timeout`); runs every SWEEP_S while
        any running call has a deadline."""
        cdef double now = monotonic()
        cdef Running r
        expired = [(k, r) for k, r in self.running.items() if 0 < (<Running>r).deadline <= now]
        for key, r in expired:
            self.running.pop(key, None)
            r.cancel()
            log.warning("call_deadline_passed", target_cid=r.cid, timeout_ms=r.timeout_ms,
                        note="no CANCEL from the gateway: the call was ended on the node")
            (<ServerPeer>r.peer).error(r.cid, TIMEOUT, f"the call's timeout of {r.timeout_ms} ms passed on the node")
        if any((<Running>r).deadline > 0 for r in self.running.values()):
            asyncio.get_running_loop().call_later(SWEEP_S, self._sweep)
        else:
            self._sweeping = False

    async def _guard(self, ServerPeer peer, cid, key, coro):
        try:
            await coro
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            peer.error(cid, RAISED, _raised(exc))
        finally:
            self.running.pop(key, None)

    async def _finish(self, ServerPeer peer, cid, rest):
        peer.result(cid, await rest)

    async def _collect(self, ServerPeer peer, cid, fn, int kind, list args):
        """A generator called for a one-shot answer: its items as a list."""
        if kind == _ASYNCGEN:
            peer.result(cid, [item async for item in fn(*args)])
        else:
            peer.result(cid, await self.pool.run(lambda: list(fn(*args))))

    async def _stream(self, ServerPeer peer, cid, fn, int kind, list args):
        cdef Running running = self.running[(id(peer), cid)]
        if kind == _ASYNCGEN:
            agen = fn(*args)
            try:
                async for item in agen:
                    await self._take(running)
                    peer.chunk(cid, item)
            finally:
                await agen.aclose()
        elif kind == _GEN:
            gen = fn(*args)
            try:
                while True:
                    items, more = await self.pool.run(_burst, gen)
                    for item in items:
                        await self._take(running)
                        peer.chunk(cid, item)
                    if not more:
                        break
            finally:
                try:
                    await self.pool.run(gen.close)
                except Exception:
                    log.debug("stream_generator_close_skipped")
        else:  # a plain or async function declared as a stream: its result is the one chunk
            value = await fn(*args) if kind == _ASYNC else await self.pool.run(fn, *args)
            peer.chunk(cid, value)
        peer.end(cid)

    async def _take(self, Running running):
        """Waits until the gateway has granted one more chunk."""
        while running.credit <= 0:
            if running.granted is None:
                running.granted = asyncio.Event()
            running.granted.clear()
            await running.granted.wait()
        running.credit -= 1

    def cancel(self, ServerPeer peer, cid):
        running = self.running.pop((id(peer), cid), None)
        if running is not None:
            running.cancel()

    def credit(self, ServerPeer peer, cid, n):
        cdef Running running = self.running.get((id(peer), cid))
        if running is not None and type(n) is int and n > 0:
            running.credit += n
            if running.granted is not None:
                running.granted.set()

    def lost(self, ServerPeer peer):
        """The gateway is gone: its calls stop here too."""
        pid = id(peer)
        for key in [k for k in self.running if k[0] == pid]:
            self.running.pop(key).cancel()

    def _builtin(self, ServerPeer peer, cid, str target, args):
        if target == "$config":
            peer.result(cid, self.service.push_config(self.advertised))
        elif target == "$config_version":
            peer.result(cid, self.service.config_version)
        elif target == "$ping":
            peer.result(cid, "pong")
        else:
            peer.error(cid, UNKNOWN, f"no built-in {target!r} on a service node")
