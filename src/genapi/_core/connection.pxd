# Declarations of the compiled connection, so the dispatcher can call it at C level.
from picows.picows cimport WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport


cdef class Handler:
    """What the connection hands request events to (the dispatcher), called at C level."""
    cpdef handle(self, Connection conn, object join_ref, object ref, str topic, object payload,
                 Py_ssize_t size)


cdef class ConnectionContext:
    """What a connection reads of its worker, built once by the worker's composition root."""
    cdef readonly str event
    cdef readonly Handler handler       # the dispatcher: request events go to its `handle`
    cdef readonly object start          # the dispatcher's `start`: a queued request takes its slot
    cdef readonly object topic_allowed  # topic → may a client join it
    cdef readonly int max_channels
    cdef readonly int max_in_flight
    cdef readonly Py_ssize_t max_queued
    cdef readonly Py_ssize_t max_queued_bytes
    cdef readonly Py_ssize_t max_topic_bytes
    cdef readonly Py_ssize_t max_message
    cdef readonly Py_ssize_t max_unsent_bytes
    cdef readonly double drain_timeout
    cdef readonly set connections       # the worker's open connections
    cdef public long long aborted       # connections dropped for not reading their output
    cdef public long long joins         # channel joins accepted
    cdef object _ids

    cpdef str next_id(self)


cdef class Connection(WSListener):

    cdef readonly ConnectionContext ctx
    cdef readonly object ser
    cdef readonly bint v2                # the V2 (array) serializer, else V1
    cdef public object identity
    cdef readonly object cid             # this worker's id of the connection, for the logs
    cdef readonly str event
    cdef readonly dict channels          # topic → join_ref
    cdef readonly dict tasks             # topic → set of running calls (Tasks, or tracked remote calls)
    cdef public int in_flight            # requests holding a slot (running or answering)
    cdef readonly object queue           # requests waiting for a slot, in arrival order
    cdef Py_ssize_t queued_bytes
    cdef bint pumping
    cdef public int idle_ticks
    cdef list out
    cdef Py_ssize_t out_bytes
    cdef bint batching
    cdef object _write
    cdef Handler _handler
    cdef object _topic_allowed
    cdef int _max_channels
    cdef int _max_in_flight
    cdef Py_ssize_t _max_queued
    cdef Py_ssize_t _max_queued_bytes
    cdef Py_ssize_t _max_topic_bytes
    cdef Py_ssize_t _max_message        # largest frame or reassembled message (max_message_bytes)
    cdef int _rx                        # RX_* in connection.pyx: between messages, in a fragmented one, closed
    cdef bytearray _frag                # the fragmented message read so far
    cdef object _start
    cdef readonly WSTransport transport
    cdef readonly bint writing_paused   # the transport is over its high-water mark (client not keeping up)
    cdef readonly bint aborted
    cdef double _paused_at
    cdef list _waiters                  # Futures of streams waiting for the output to drain
    cdef object _timer                  # drain_timeout_ms while paused, or after a close
    cdef object _loop
    cdef object _unsent                 # the transport's get_write_buffer_size
    cdef Py_ssize_t _max_unsent_bytes
    cdef double _drain_timeout

    cpdef send(self, bytes data)
    cpdef flush(self)
    cpdef bint cork(self)
    cpdef uncork(self)
    cpdef bint enqueue(self, object item, Py_ssize_t size)
    cpdef release(self)
    cdef _pump(self)
    cdef dispatch(self, tuple msg, Py_ssize_t size)
    cdef _join(self, join_ref, ref, str topic, params)
    cdef dict _joined(self, params)
    cdef _leave(self, join_ref, ref, str topic)
    cdef _text(self, object data, Py_ssize_t size)
    cdef _other_frame(self, WSTransport transport, WSFrame frame, WSMsgType mt)
    cdef _protocol_close(self, WSCloseCode code, str reason)
    cdef _binary(self, object data)
    cdef _frame_error(self, exc)
    cdef tuple _peer(self)
    cpdef track(self, reply, object call)
    cpdef untrack(self, reply, object call)
    cpdef _cancel(self, str topic)
    cpdef close(self, WSCloseCode code, bytes reason=*)
    cpdef object drained(self)
    cpdef abort(self, str reason)
    cdef _wake_writers(self)
    cdef _stop_timer(self)
