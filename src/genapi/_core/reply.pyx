# cython: language_level=3
"""Where an answer goes: the connection, its serializer, the channel's join_ref, the request's
ref, topic and event. The pipeline, callees and the thread handoff answer through it, so a
request can be driven without a socket (any object with `send(bytes)` stands in for the
connection) and a call's slot on its connection is released exactly once.
"""
cimport cython

from genapi._core.clock cimport monotonic as _now

from genapi._core.connection cimport Connection
from genapi._core.stats cimport Stats, stats

from genapi._core.wire cimport answer_v1, answer_v2, push_v1, push_v2, reply_v1, reply_v2

cdef object _LEFT = object()  # a channel not joined (a V1 join keeps join_ref None)

cdef str OK = "ok"
cdef Stats _stats = stats()  # the counters, the access log switch, the telemetry hooks


@cython.no_gc  # as reply.pxd declares: Cython applies the decorator here, where the class is defined
cdef class Reply:
    """The destination of one request's answers."""

    def __init__(self, conn, ser, join_ref, ref, str topic, str event, str request_type=None):
        self.conn = conn
        self.ser = ser
        self.join_ref = join_ref
        self.ref = ref
        self.topic = topic
        self.event = event
        self.request_type = request_type
        self.started = _now() if _stats.timed else 0.0
        self._conn = conn if isinstance(conn, Connection) else None
        self.v2 = ser.vsn == "2.0.0"

    cdef _send(self, bytes data):
        if self._conn is not None:
            self._conn.send(data)
        else:
            self.conn.send(data)

    cpdef answer(self, object response, str status="ok", object reply=None):
        """The Response push, then the phx_reply (`reply` defaults to the request_type)."""
        if reply is None:
            reply = self.request_type
        if _stats.timed:
            self.outcome = response
        if self.v2:
            self._send(answer_v2(self.join_ref, self.ref, self.topic, self.event, response, status, reply))
        else:
            self._send(answer_v1(self.join_ref, self.ref, self.topic, self.event, response, status, reply))

    cpdef push(self, object response):
        """A later push for the same request (async results, stream chunks)."""
        if _stats.timed:
            self.outcome = response
        if self.v2:
            self._send(push_v2(self.join_ref, self.topic, self.event, response))
        else:
            self._send(push_v1(self.join_ref, self.topic, self.event, response))

    cpdef reply(self, str status, object response):
        """The phx_reply alone (fire-and-forget)."""
        if self.v2:
            self._send(reply_v2(self.join_ref, self.ref, self.topic, status, response))
        else:
            self._send(reply_v1(self.join_ref, self.ref, self.topic, status, response))

    cpdef finish(self, object response):
        """Answers and gives the request's in-flight slot back to its connection (even when the
        answer fails, so a connection never loses a slot)."""
        try:
            self.answer(response)
        finally:
            self.release()

    cpdef release(self):
        """Gives the request's slot back (once its last answer is out) and logs the call."""
        if self._conn is not None:
            self._conn.release()
        if _stats.timed:
            self.done()

    cdef void slot_taken(self) noexcept:
        """Notes when the request started running, so the access log tells queue wait from run time."""
        if _stats.access:
            self.running = _now()

    cpdef done(self):
        """Once: this request's count and latency, its telemetry stop event and its access line
        (connection, user, function, outcome, duration), all kept in `_core/stats.pyx`."""
        if self.logged or not _stats.timed:
            return
        self.logged = True
        _stats.finished(self._conn.cid if self._conn is not None else None, self.row, self.request, self.outcome,
                        self.started, self.running)

    cpdef bint live(self):
        """Whether the channel this request came on is still joined (answers to a left channel are dropped)."""
        if self._conn is None:
            return True
        return self._conn.transport is not None and not self._conn.transport.is_disconnected and \
            not self._conn.aborted and self._conn.channels.get(self.topic, _LEFT) is self.join_ref

    cpdef object drained(self):
        """None while the client keeps up with its output; else a Future done once the output
        drains (streams wait on it between chunks). Always None without a real connection."""
        if self._conn is None:
            return None
        return self._conn.drained()

    cpdef bint cork(self):
        """Holds this connection's output until `uncork` (see Connection.cork); False when
        nothing was corked (already corked, or no real connection)."""
        return self._conn is not None and self._conn.cork()

    cpdef uncork(self):
        if self._conn is not None:
            self._conn.uncork()

    def __repr__(self):
        return f"<Reply {self.topic} ref={self.ref!r} {self.request_type}>"


cdef Reply reply_to(Connection conn, object join_ref, object ref, str topic, object request):
    """The fast constructor, for the dispatcher."""
    cdef Reply r = Reply.__new__(Reply)
    if request is not None:
        r.request = request
        r.request_type = request.request_type
        if _stats.on_start is not None:
            _stats.on_start(request)
    if _stats.timed:
        r.started = _now()
    r.conn = conn
    r._conn = conn
    r.ser = conn.ser
    r.v2 = conn.v2
    r.join_ref = join_ref
    r.ref = ref
    r.topic = topic
    r.event = conn.event
    return r
