# Declarations of the callee seam, so the dispatcher starts calls at C level.
from genapi._core.handoff cimport ThreadPool
from genapi._core.reply cimport Reply


cdef class Callee:
    cdef readonly object timeout
    cdef readonly object timeout_ms
    cdef readonly bint detail_error

    cpdef start(self, Reply reply, object request, list args)
    cpdef plan(self, object request)
    cpdef failure(self, object request, object exc)
    cpdef timed_out(self, object request)


cdef class LocalCallee(Callee):
    cdef readonly object fn
    cdef readonly int kind
    cdef ThreadPool pool
