# cython: language_level=3
"""Where an answer goes: the connection, its serializer, the channel's join_ref, the request's
ref, topic and event. The pipeline, callees and the thread handoff answer through it, so a
request can be driven without a socket (any object with `send(bytes)` stands in for the
connection) and a call's slot on its connection is released exactly once.
"""
from genapi._core.clock cimport monotonic as _now

from genapi import log

from genapi._core.connection cimport Connection
from genapi._core.wire cimport answer_v1, answer_v2, push_v1, push_v2, reply_v1, reply_v2

cdef str OK = "ok"
cdef bint _access = False
cdef object _on_start = None  # telemetry: f(request) at a request's start, while a handler listens
cdef object _on_stop = None   # telemetry: f(request, response, seconds) once it is answered
cdef dict _metrics = None     # (service, request_type) -> MetricRow, while /metrics counts requests
cdef double[14] BOUNDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
cdef Py_ssize_t METRIC_ROWS = 4096  # functions counted apart; the rest share one row (bounded memory)
cdef MetricRow _unknown = MetricRow()  # requests for no known function (a client's names are not kept)


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


def request_metrics(bint on):
    """Counts every answered request per function (calls by outcome, latency histogram) for
    /metrics; returns the live table (None when off)."""
    global _metrics
    _metrics = {} if on else None
    return _metrics


def latency_buckets():
    return tuple(BOUNDS[i] for i in range(NBOUNDS))


cpdef object metric_row(str service, str request_type):
    """The row a function's requests are counted in (shared by every Entry of that name), or
    None while requests are not counted."""
    if _metrics is None:
        return None
    key = (service, request_type)
    row = _metrics.get(key)
    if row is None:
        if len(_metrics) >= METRIC_ROWS:
            key = ("_other", "_other")
            row = _metrics.get(key)
        if row is None:
            row = _metrics[key] = MetricRow()
    return row


def unknown_row():
    return _unknown


def log_calls(bint on):
    """Turns the access log (one `call` line per request, at info) on or off for this process."""
    global _access
    _access = on


def request_events(start, stop):
    """The telemetry of every request (telemetry.py sets them while handlers listen; None: off)."""
    global _on_start, _on_stop
    _on_start = start
    _on_stop = stop


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
        self.started = _now() if _access or _on_stop is not None or _metrics is not None else 0.0
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
        if _access or _on_stop is not None or _metrics is not None:
            self.outcome = response
        if self.v2:
            self._send(answer_v2(self.join_ref, self.ref, self.topic, self.event, response, status, reply))
        else:
            self._send(answer_v1(self.join_ref, self.ref, self.topic, self.event, response, status, reply))

    cpdef push(self, object response):
        """A later push for the same request (async results, stream chunks)."""
        if _access or _on_stop is not None or _metrics is not None:
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
        if _access or _on_stop is not None or _metrics is not None:
            self.done()

    cdef void slot_taken(self) noexcept:
        """Notes when the request started running, so the access log tells queue wait from run time."""
        if _access:
            self.running = _now()

    cpdef done(self):
        """The access line of this request, once: connection, user, function, outcome, duration;
        and its telemetry stop event."""
        if self.logged or not (_access or _on_stop is not None or _metrics is not None):
            return
        self.logged = True
        req = self.request
        out = self.outcome
        cdef double took
        if req is not None and self.started:
            took = _now() - self.started
            if _metrics is not None:
                (self.row if self.row is not None else _unknown).add(out is not None and out.success, took)
            if _on_stop is not None:
                _on_stop(req, out, took)
        if not _access:
            return
        ok = out is not None and out.success
        log.info("call", conn=self._conn.cid if self._conn is not None else None,
                 user=req.user_id if req is not None else None,
                 fn=f"{req.service}.{req.request_type}" if req is not None else None,
                 version=req.version if req is not None else None,
                 request_id=req.request_id if req is not None else (out.request_id if out is not None else None),
                 outcome="ok" if ok else "error",
                 error=None if ok or out is None else out.error,
                 ms=round((_now() - self.started) * 1000, 3),
                 queued_ms=round((self.running - self.started) * 1000, 3) if self.running else 0)

    cpdef bint live(self):
        """Whether the channel this request came on is still joined (answers to a left channel are dropped)."""
        if self._conn is None:
            return True
        return self._conn.transport is not None and not self._conn.transport.is_disconnected and \
            not self._conn.aborted and self._conn.channels.get(self.topic) is self.join_ref

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
        if _on_start is not None:
            _on_start(request)
    if _access or _on_stop is not None or _metrics is not None:
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
