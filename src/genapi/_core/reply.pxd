# Declarations of the reply object, so the dispatcher, callees and the thread handoff answer at C level.
from genapi._core.connection cimport Connection
from genapi._core.stats cimport MetricRow

cimport cython


@cython.no_gc  # one per request; it forms no cycles that outlive the request
cdef class Reply:
    cdef readonly object conn
    cdef readonly object ser
    cdef readonly object join_ref
    cdef readonly object ref
    cdef readonly str topic
    cdef readonly str event
    cdef public str request_type
    cdef public object request           # the decoded Request (None when decoding failed)
    cdef public object outcome           # the last Response sent (the access log's outcome)
    cdef double started
    cdef double running                  # when it took its slot (after waiting in the queue)
    cdef bint logged
    cdef public MetricRow row            # where /metrics counts it (its function's); None: not found
    cdef Connection _conn
    cdef bint v2

    cdef _send(self, bytes data)

    cpdef answer(self, object response, str status=*, object reply=*)
    cpdef push(self, object response)
    cpdef reply(self, str status, object response)
    cpdef finish(self, object response)
    cpdef release(self)
    cpdef bint live(self)
    cpdef done(self)
    cdef void slot_taken(self) noexcept
    cpdef object drained(self)
    cpdef bint cork(self)
    cpdef uncork(self)


cdef Reply reply_to(Connection conn, object join_ref, object ref, str topic, object request)
