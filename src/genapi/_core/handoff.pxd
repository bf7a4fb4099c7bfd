# Declarations of the thread handoff, so callees submit calls at C level.
from genapi._core.reply cimport Reply


cimport cython


@cython.no_gc
cdef class Job:
    cdef object fn
    cdef tuple args
    cdef Reply reply
    cdef object request
    cdef object owner
    cdef object future
    cdef double deadline
    cdef object value
    cdef bint ok
    cdef bint skipped
    cdef bint settled
    cdef double ran       # when a thread started it, and for how long (for telemetry)
    cdef double took


cdef class ThreadPool:
    cdef readonly int size
    cdef readonly Py_ssize_t limit
    cdef readonly str name
    cdef object q
    cdef list done
    cdef object lock
    cdef bint scheduled
    cdef object loop
    cdef object _wake
    cdef readonly set pending
    cdef object sweeper
    cdef object staller
    cdef list threads
    cdef list sleepers
    cdef int awake
    cdef bint kicking      # a wake-up is scheduled for the end of this loop iteration's I/O
    cdef double progress
    cdef bint closed

    cdef _ready(self)
    cdef _push(self, Job job)
    cdef _wake_one(self)
    cpdef submit(self, Reply reply, object request, object fn, tuple args, object timeout, object owner)
