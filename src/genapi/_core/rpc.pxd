# Declarations of the RPC connection, so the remote callee sends and is answered at C level.


cdef class Sink:
    cdef public double deadline

    cpdef result(self, object value)
    cpdef error(self, str code, str text)
    cpdef chunk(self, object value)
    cpdef end(self)


cdef class Waiter(Sink):
    cdef object future


cdef class Peer:
    cdef readonly object secret
    cdef readonly str name
    cdef readonly object transport
    cdef public bint ready
    cdef public bint closed
    cdef readonly str peername
    cdef readonly object gone
    cdef public object paused
    cdef bint server_side
    cdef bytearray _rbuf
    cdef bytearray _wbuf
    cdef bint _flushing
    cdef bytes _nonce
    cdef object _loop
    cdef object _write

    cdef _received(self, object data)
    cdef bint _foreign(self, object head) except -1
    cpdef send(self, object frame)
    cpdef fail(self, str code, str text)
    cdef _handshake(self, list frame)
    cdef frame(self, list frame)
    cpdef lost(self, str reason)


cdef class Gate:
    cdef readonly int limit
    cdef public int waiting


cdef class ServerPeer(Peer):
    cdef readonly object handler
    cdef object _timer
    cdef Gate _gate
    cdef bint _gated
    cdef bint _hailed
    cdef list _result                    # the one RESULT frame list, reused (no list per answer)

    cdef _ungate(self)

    cpdef result(self, object call_id, object value)
    cpdef error(self, object call_id, str code, str text)
    cpdef chunk(self, object call_id, object value)
    cpdef end(self, object call_id)


cdef class ClientPeer(Peer):
    cdef readonly str address
    cdef readonly dict pending
    cdef readonly object welcome
    cdef long long _ids
    cdef bint _sweeping
    cdef bytes _cnonce
    cdef readonly str server_name
    cdef public list corked              # client connections corked while a read batch is answered
    cdef object _greeting                # the timer of the greeting sent when no HELLO came
    cdef list _call                      # the one CALL frame list, reused (no list per call)

    cdef _refused(self, str text, str code=*)
    cpdef long long call(self, str target, list args, object timeout_ms, Sink sink, bint stream=*,
                         object trace=*) except -1
    cpdef cancel(self, long long call_id)
    cpdef credit(self, long long call_id, int n)
