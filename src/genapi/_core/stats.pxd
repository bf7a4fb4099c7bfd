# Declarations of the per-request counters, the access log switch and the telemetry hooks, so
# the reply, the rate-limit step, the thread handoff and the selector read them at C level.
cimport cython

cdef enum:
    NBOUNDS = 14   # latency histogram bounds (stats.pyx BOUNDS)


cdef class MetricRow:
    cdef readonly long long ok
    cdef readonly long long error
    cdef readonly double seconds
    cdef long long buckets[15]
    cdef void add(self, bint ok, double seconds) noexcept


@cython.final
cdef class Stats:
    # One per process (`stats()`); every switch is set from Python (metrics.py, telemetry.py,
    # the worker), read in C per request.
    cdef bint access               # the access log: one `call` line per request
    cdef bint timed                # access or on_stop or metrics: a request's duration is wanted
    cdef dict metrics              # (service, request_type) -> MetricRow while /metrics counts; else None
    cdef MetricRow unknown         # requests for no known function
    cdef dict errors               # error kind (errors.error_kind) -> answers, while /metrics counts
    cdef object on_start           # telemetry: f(request) at a request's start
    cdef object on_stop            # telemetry: f(request, response, seconds) once it is answered
    cdef object on_check           # telemetry: f(request, refusal or None, seconds) per rate-limit check
    cdef object on_exceeded        # telemetry: f(request, rule, value, retry_after_ms, scope)
    cdef bint task_events          # telemetry's worker_pool.task events
    cdef object emit               # telemetry.execute while any handler listens; else None

    cdef void _retime(self) noexcept
    cdef void finished(self, object cid, MetricRow row, object request, object outcome, double started,
                       double running)


cdef Stats stats()
cpdef object metric_row(str service, str request_type)
