# Declarations of node selection and per-node protection, so the callee decides at C level.
cimport cython


cdef enum:
    # NodeState.admit() outcomes (the same names are module constants for Python callers)
    ADMITTED = 0
    FULL = 1
    OPEN = 2


@cython.final
cdef class NodeState:
    cdef readonly str address
    cdef readonly Py_ssize_t in_flight
    cdef readonly Py_ssize_t failures       # consecutive node failures
    cdef readonly Py_ssize_t max_in_flight
    cdef readonly Py_ssize_t threshold
    cdef readonly double cooldown_s
    cdef int _breaker                       # BREAKER_CLOSED / _OPEN / _HALF_OPEN
    cdef double _opened_at
    cdef bint _probing                      # half-open: the one probe call is out

    cpdef int admit(self, double now)
    cpdef void done(self, bint node_failed, double now)
    cpdef void forget(self)


@cython.final
cdef class Selector:
    cdef int _mode
    cdef readonly str arg                   # the argument of {hash = ARG} / {sticky = ARG}, else None
    cdef object _custom
    cdef unsigned long long _counter        # round_robin
    cdef unsigned long long _rng            # xorshift64* state (random, custom fallback)
    cdef dict _sticky                       # key bytes -> address, insertion order = age
    cdef Py_ssize_t _sticky_max
    cdef bint _warned

    cdef Py_ssize_t _random(self, Py_ssize_t n) noexcept
    cdef Py_ssize_t _hash_index(self, object request, Py_ssize_t n) except -1
    cdef Py_ssize_t _sticky_index(self, list nodes, object request) except -1
    cdef list _custom_order(self, list nodes, object request)
    cpdef list order(self, list nodes, object request)
    cdef Py_ssize_t first(self, list nodes, object request) except -2
