# cython: language_level=3
"""The batched thread handoff for plain (possibly blocking) functions.

A plain `def` may block, so it never runs on the event loop. Calls go to a fixed set of threads
through one queue; finished calls are collected and the loop is woken once for every batch of
them (not once per call), and the answers of that batch leave corked, one write per connection.
Calls that answer a client directly (`submit`) need no Future and no Task; `run` gives a Future
for the general path (hooks, retries, generator streams).

Bounded: at most `size` running and `queue_limit` waiting; beyond that `Unavailable`. A call
past its deadline is answered with the callee's timeout error by a sweep; the thread finishes it
anyway (threads cannot be interrupted) and its late result is dropped.
"""
cimport cython

import asyncio
import threading
from collections import deque

from genapi._core.clock cimport monotonic as _now

from time import time_ns

from genapi import log
from genapi.errors import Unavailable

from genapi._core.connection cimport Connection
from genapi._core.reply cimport Reply
from genapi._core.stats cimport Stats, stats

from genapi.structs import Response

cdef double INF = float("inf")
cdef double SWEEP_S = 0.02   # how often deadlines of calls in threads are checked
cdef double STALL_S = 0.005  # waiting calls and none started this long: wake another thread


cdef Stats _stats = stats()  # task_events: telemetry's worker_pool.task events, while a handler listens


cdef void _task_event(str pool, Job job) noexcept:
    """A thread job ended: its worker_pool.task start and stop (or exception), emitted on the loop."""
    emit = _stats.emit
    if emit is None:
        return
    try:
        meta = {"pool_name": pool}
        emit("genapi.worker_pool.task.start", {"system_time": time_ns() - int(job.took * 1e9)}, meta)
        if job.ok:
            emit("genapi.worker_pool.task.stop", {"duration_us": int(job.took * 1e6)}, meta)
        else:
            exc = job.value
            emit("genapi.worker_pool.task.exception", {"duration_us": int(job.took * 1e6)},
                 {**meta, "kind": "error", "reason": f"{type(exc).__name__}: {exc}"})
    except Exception:
        pass


@cython.no_gc  # one per call: not worth the collector's time, and it forms no cycles
cdef class Job:
    """One call for the threads: either answered through `reply` or settled into `future`."""


cdef inline Job _job(object fn, tuple args):
    cdef Job job = Job.__new__(Job)
    job.fn = fn
    job.args = args
    job.deadline = INF
    return job


cdef class ThreadPool:
    """Up to `size` threads and `queue_limit` waiting calls, shared by every connection of a worker.

    Threads are woken one at a time: one awake thread runs calls back to back while the loop
    keeps the GIL free for it, so fast functions cost no thread ping-pong. Another thread is
    woken only when calls wait and no call has started for `STALL_S` (a blocking function holds
    the awake ones), so one slow function never stalls the calls queued behind it.
    """

    def __init__(self, int size, int queue_limit, str name="genapi-call"):
        self.size = size
        self.limit = size + queue_limit
        self.name = name
        self.q = deque()
        self.done = []
        self.lock = threading.Lock()
        self.scheduled = False
        self.pending = set()
        self.threads = []
        self.sleepers = []
        self.awake = 0
        self.progress = 0.0
        self.closed = False

    cdef _ready(self):
        """Binds to the running loop on first use (threads start only when calls come)."""
        if self.loop is None:
            if self.closed:
                raise Unavailable()
            self.loop = asyncio.get_running_loop()
            self._wake = self.loop.call_soon_threadsafe
        if len(self.pending) >= self.limit:
            if _stats.emit is not None:
                _stats.emit("genapi.worker_pool.task.rejected", {"system_time": time_ns()},
                            {"pool_name": "threads", "reason": "queue_full", "limit": self.limit})
            raise Unavailable()

    cdef _push(self, Job job):
        self.pending.add(job)
        if not self.q:
            self.progress = _now()
        self.q.append(job)
        if self.awake == 0:
            # Woken once the loop has read this batch, not per call: a thread woken now would
            # wait for the GIL and take it at every I/O callback's end (uvloop releases it
            # between callbacks), two GIL handoffs per call instead of a few per batch.
            if not self.kicking:
                self.kicking = True
                self.loop.call_soon(self._kick)
        elif _now() - self.progress > STALL_S:
            self._wake_one()
        elif self.staller is None:
            self.staller = self.loop.call_later(STALL_S, self._unstall)

    cdef _wake_one(self):
        if self.sleepers:
            self.awake += 1
            (<object>self.sleepers.pop()).release()
        elif len(self.threads) < self.size and not self.closed:
            self.awake += 1
            lock = threading.Lock()
            lock.acquire()
            t = threading.Thread(target=self._work, args=(lock,), name=f"{self.name}-{len(self.threads)}",
                                 daemon=True)
            self.threads.append(t)
            t.start()

    def _kick(self):
        """After the loop's I/O callbacks: one thread wakes for what they queued."""
        self.kicking = False
        if self.q and self.awake == 0 and not self.closed:
            self._wake_one()

    def _unstall(self):
        """Calls are waiting: if none started for STALL_S, the awake threads are blocked; wake one more."""
        self.staller = None
        if self.q and not self.closed:
            if _now() - self.progress > STALL_S:
                self._wake_one()
            self.staller = self.loop.call_later(STALL_S, self._unstall)

    cpdef submit(self, Reply reply, object request, object fn, tuple args, object timeout, object owner):
        """Runs `fn(*args)` in a thread and answers `reply` with the result; the reply's slot is
        released once answered. `owner` words failures: `owner.failure(request, exc)` and
        `owner.timed_out(request)`. Raises Unavailable when the pool is full."""
        self._ready()
        cdef Job job = _job(fn, args)
        job.reply = reply
        job.request = request
        job.owner = owner
        if timeout is not None:
            job.deadline = self.loop.time() + <double>timeout
            if self.sweeper is None:
                self.sweeper = self.loop.call_later(SWEEP_S, self._sweep)
        self._push(job)

    def run(self, fn, *args):
        """Runs `fn(*args)` in a thread; a Future of its result. Raises Unavailable when full."""
        self._ready()
        cdef Job job = _job(fn, args)
        job.future = self.loop.create_future()
        self._push(job)
        return job.future

    def _work(self, lock):
        cdef Job job
        cdef bint wake
        q = self.q
        done_lock = self.lock
        while True:
            while not q:
                self.awake -= 1
                self.sleepers.append(lock)
                lock.acquire()  # until _wake_one releases it (awake was counted there)
                if self.closed:
                    return
            job = q.popleft()
            self.progress = _now()
            if job.settled or (job.future is not None and job.future.done()) or \
                    (job.reply is not None and not job.reply.live()):
                job.skipped = True  # timed out, cancelled or its client left before it started
            else:
                job.ran = _now()
                try:
                    job.value = job.fn(*job.args)
                    job.ok = True
                except StopIteration as exc:  # cannot travel through a Future
                    job.value = RuntimeError(f"StopIteration: {exc}")
                except BaseException as exc:
                    job.value = exc
                job.took = _now() - job.ran
            with done_lock:
                self.done.append(job)
                wake = not self.scheduled
                self.scheduled = True
            if wake:
                try:
                    self._wake(self._drain)
                except RuntimeError:  # the loop is closed: the worker is exiting
                    return

    def _drain(self):
        """On the loop: settles every call finished since the last wake-up, answers corked."""
        cdef Job job
        cdef list items
        cdef list corked = []
        cdef Connection conn
        with self.lock:
            items = self.done
            self.done = []
            self.scheduled = False
        for job in items:
            self.pending.discard(job)
            if _stats.task_events and not job.skipped:
                _task_event(self.name, job)
            if job.settled:
                continue
            job.settled = True
            try:
                if job.future is not None:
                    if not job.future.done():
                        if job.ok:
                            job.future.set_result(job.value)
                        elif job.skipped:
                            job.future.cancel()
                        else:
                            job.future.set_exception(job.value)
                    continue
                conn = job.reply._conn
                if conn is not None and conn.cork():
                    corked.append(conn)
                if not job.skipped and job.reply.live():
                    job.reply.answer(Response(job.request.request_id, job.value) if job.ok
                                     else job.owner.failure(job.request, job.value))
            except Exception:
                log.error("handoff_answer_crashed", exc_info=True)
            finally:
                if job.reply is not None:
                    job.reply.release()
            job.value = None
        for conn in corked:
            conn.uncork()

    def _sweep(self):
        """Answers calls that ran past their deadline with the callee's timeout error."""
        cdef Job job
        cdef list corked = []
        cdef Connection conn
        self.sweeper = None
        if not self.pending:
            return
        now = self.loop.time()
        for job in list(self.pending):
            if job.settled or job.deadline > now:
                continue
            job.settled = True
            try:
                conn = job.reply._conn
                if conn is not None and conn.cork():
                    corked.append(conn)
                if job.reply.live():
                    job.reply.answer(job.owner.timed_out(job.request))
            except Exception:
                log.error("handoff_timeout_crashed", exc_info=True)
            finally:
                job.reply.release()
        for conn in corked:
            conn.uncork()
        if self.pending and not self.closed:
            self.sweeper = self.loop.call_later(SWEEP_S, self._sweep)

    def shutdown(self):
        """Lets the threads exit after their current call (they are daemons: exit never waits)."""
        self.closed = True
        for timer in (self.sweeper, self.staller):
            if timer is not None:
                timer.cancel()
        self.sweeper = self.staller = None
        while self.sleepers:
            self.sleepers.pop().release()
