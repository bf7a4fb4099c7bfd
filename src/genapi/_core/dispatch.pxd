# Declarations of the request entry, so other compiled modules can read an Entry at C level.
from genapi._core.callee cimport Callee
from genapi._core.connection cimport Connection, Handler
from genapi._core.limits cimport RequestLimiter
from genapi._core.validate cimport Validator
from genapi._core.reply cimport Reply


cdef class Entry:
    cdef readonly object config
    cdef readonly Callee callee
    cdef readonly Validator validator
    cdef readonly list predefined
    cdef readonly bint request_info
    cdef readonly object before
    cdef readonly object after
    cdef readonly object permission
    cdef readonly object mode
    cdef readonly int retries
    cdef readonly str response_type
    cdef readonly bint inline
    cdef readonly bint plain_args
    cdef readonly object row             # the MetricRow its requests are counted in (None: not counted)

    cpdef object admit(self, object request, object identity, RequestLimiter limiter)
    cpdef list arguments(self, object request, object stream=*)


cdef class Dispatcher(Handler):
    cdef object registry
    cdef object general
    cdef str event
    cdef bint require_verified
    cdef Py_ssize_t max_payload
    cdef int max_in_flight
    cdef int max_queued
    cdef dict cache
    cdef object seen_generation
    cdef readonly RequestLimiter limiter

    cdef object _lookup(self, str service, str request_type, object version)
    cpdef handle(self, Connection conn, join_ref, ref, str topic, payload, Py_ssize_t size)
    cpdef start(self, Reply reply, object request, Entry entry)
    cdef _go(self, Reply reply, object request, Entry entry)


cpdef bint permitted_by_mode(Entry entry, object request)
