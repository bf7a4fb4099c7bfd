# cython: language_level=3
"""What is counted and reported per request, in one place: the per-function counters and
latency histogram that /metrics reads (host/metrics.py), the access log switch, and the hooks
through which the compiled path emits telemetry (set by telemetry.py while handlers listen).

The core never imports telemetry: it calls the hooks kept here, and a hook that is None costs
one pointer test. Everything lives on one `Stats` object per process, read at C level.
"""
cimport cython

from genapi._core.clock cimport monotonic as _now

from genapi import log
from genapi.errors import error_kind

cdef double[14] BOUNDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
cdef Py_ssize_t METRIC_ROWS = 4096  # functions counted apart; the rest share one row (bounded memory)


cdef class MetricRow:
    """One function's request counts and latency histogram, updated in C per answered request."""

    cdef void add(self, bint ok, double seconds) noexcept:
        cdef int i
        if ok:
            self.ok += 1
        else:
            self.error += 1
        self.seconds += seconds
        for i in range(NBOUNDS):
            if seconds <= BOUNDS[i]:
                self.buckets[i] += 1
                return
        self.buckets[NBOUNDS] += 1

    def row(self):
        """[ok, error, seconds, per-bucket counts (the last: above every bound)]."""
        return [self.ok, self.error, self.seconds] + [self.buckets[i] for i in range(NBOUNDS + 1)]


@cython.final
cdef class Stats:
    """This process's switches and counters (see the module docstring)."""

    def __cinit__(self):
        self.unknown = MetricRow()
        self.errors = {}

    cdef void _retime(self) noexcept:
        self.timed = self.access or self.on_stop is not None or self.metrics is not None

    cdef void finished(self, object cid, MetricRow row, object request, object outcome, double started,
                       double running):
        """A request is answered: its count and latency, its telemetry stop event, its access line."""
        cdef double took
        if request is not None and started:
            took = _now() - started
            if self.metrics is not None:
                ok = outcome is not None and outcome.success
                (row if row is not None else self.unknown).add(ok, took)
                if not ok:  # by kind: only on the error path
                    kind = error_kind(outcome.error if outcome is not None else None)
                    self.errors[kind] = self.errors.get(kind, 0) + 1
            if self.on_stop is not None:
                self.on_stop(request, outcome, took)
        if not self.access:
            return
        ok = outcome is not None and outcome.success
        req = request
        out = outcome
        log.info("call", conn=cid,
                 user=req.user_id if req is not None else None,
                 fn=f"{req.service}.{req.request_type}" if req is not None else None,
                 version=req.version if req is not None else None,
                 request_id=req.request_id if req is not None else (out.request_id if out is not None else None),
                 outcome="ok" if ok else "error",
                 error=None if ok or out is None else out.error,
                 ms=round((_now() - started) * 1000, 3),
                 queued_ms=round((running - started) * 1000, 3) if running else 0)


cdef Stats _STATS = Stats()


cdef Stats stats():
    """The process's Stats (modules keep it in a C global at import)."""
    return _STATS


def request_metrics(bint on):
    """Counts every answered request per function (calls by outcome, latency histogram) for
    /metrics; returns the live table (None when off)."""
    _STATS.metrics = {} if on else None
    _STATS.errors = {}
    _STATS._retime()
    return _STATS.metrics


def error_counts():
    """Errors answered by kind (errors.ERROR_KINDS) since counting started."""
    return dict(_STATS.errors) if _STATS.errors is not None else {}


def latency_buckets():
    return tuple(BOUNDS[i] for i in range(NBOUNDS))


cpdef object metric_row(str service, str request_type):
    """The row a function's requests are counted in (shared by every Entry of that name), or
    None while requests are not counted."""
    cdef dict table = _STATS.metrics
    if table is None:
        return None
    key = (service, request_type)
    row = table.get(key)
    if row is None:
        if len(table) >= METRIC_ROWS:
            key = ("_other", "_other")
            row = table.get(key)
        if row is None:
            row = table[key] = MetricRow()
    return row


def unknown_row():
    return _STATS.unknown


def log_calls(bint on):
    """Turns the access log (one `call` line per request, at info) on or off for this process."""
    _STATS.access = on
    _STATS._retime()


def request_events(start, stop):
    """The telemetry of every request: f(request) at its start, f(request, response, seconds)
    once answered (telemetry.py sets them while handlers listen; None: off)."""
    _STATS.on_start = start
    _STATS.on_stop = stop
    _STATS._retime()


def limit_events(check, exceeded):
    """The rate limiter's telemetry (telemetry.py sets them while handlers listen; None: off)."""
    _STATS.on_check = check
    _STATS.on_exceeded = exceeded


def task_events(bint on):
    """The thread handoff's worker_pool.task events, while a handler listens."""
    _STATS.task_events = on


def telemetry_events(emit):
    """`emit(event, measurements, metadata)` for the core's other events (thread pool rejections,
    node breakers): telemetry.execute while any handler listens, None otherwise."""
    _STATS.emit = emit
