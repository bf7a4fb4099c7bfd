# cython: language_level=3
"""The genapi RPC connection, both sides, compiled: every call and every answer between a
gateway and its service nodes crosses `data_received` and `send`. The frames and the handshake
are described in `genapi/nodes/rpc.py` (the Python face: connect, listen, secrets, addresses).

Writes are batched: what one turn of the event loop sends leaves in one write. A gateway's
`ClientPeer` corks the client connections it answers while it handles one read, so a batch of
results is one write per client connection too.
"""
import asyncio
import hashlib
import hmac
import os
import socket
from time import monotonic

import msgspec

from genapi import log
from genapi.address import parse_address
from genapi.errors import RpcError
from genapi._core import vocab

# The frame kinds are a `cpdef enum`: a bare member used as a Python object is built as an
# IntEnum instance (a Python-level call), and msgspec encodes one by its `.value` attribute.
# Every use here is `<int>KIND`: a small int, cached, compared and encoded at C level.
from genapi._core.vocab cimport AUTH, CALL, CANCEL, CHUNK, CREDIT, END, ERROR, HELLO, RESULT, WELCOME

from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.string cimport memcpy

cdef object _ENCODER = msgspec.msgpack.Encoder()
cdef object _encode_into = _ENCODER.encode_into
cdef object _decode = msgspec.msgpack.Decoder().decode
cdef object _DecodeError = msgspec.DecodeError
cdef double INF = float("inf")

cdef str RAISED = vocab.RAISED
cdef str UNKNOWN = vocab.UNKNOWN
cdef str TIMEOUT = vocab.TIMEOUT
cdef str LOST = vocab.LOST
cdef str AUTH_FAILED = vocab.AUTH_FAILED
cdef str PROTOCOL = vocab.PROTOCOL

cdef Py_ssize_t MAX_FRAME_BYTES = 64 * 1024 * 1024  # once the peer proved the secret
cdef Py_ssize_t PREAUTH_FRAME_BYTES = 4096  # before: HELLO, AUTH and WELCOME are under 200 bytes
cdef double HANDSHAKE_TIMEOUT = 3.0
cdef double GREET_AFTER = 1.0  # a client that has no HELLO by then speaks first (ClientPeer._greet)
# how an HTTP request starts (a WebSocket upgrade is a GET): what a genapi RPC port refuses by name
RPC_NOT_HTTP = ("this port speaks genapi RPC (service nodes, genapi admin); WebSocket clients connect to "
                "the gateway's WebSocket port (ws://HOST:PORT/socket/websocket), not its control port")
HTTP_METHODS = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"PATCH ", b"CONNECT ", b"PRI * ")
MAX_UNAUTHENTICATED = 64  # connections of one listener that have not proved the secret yet
cdef double SWEEP_S = 0.01


cdef bytes _proof(object secret, bytes side, bytes nonce, bytes cnonce):
    if secret is None:
        return b""
    return hmac.new(secret, side + nonce + cnonce, hashlib.sha256).digest()


cdef inline unsigned int _be32(const unsigned char* p) noexcept:
    return (<unsigned int>p[0] << 24) | (<unsigned int>p[1] << 16) | (<unsigned int>p[2] << 8) | p[3]


cdef class Sink:
    """Where one call's answer goes, by callbacks run on the loop from the connection. The
    deadline (monotonic seconds, inf for none) is checked by the connection's sweep."""

    def __init__(self, double deadline=INF):
        self.deadline = deadline

    cpdef result(self, object value):
        raise NotImplementedError

    cpdef error(self, str code, str text):
        raise NotImplementedError

    cpdef chunk(self, object value):
        raise NotImplementedError

    cpdef end(self):
        raise NotImplementedError


cdef class Waiter(Sink):
    """A Sink that fills a Future (control requests)."""

    def __init__(self, future, double deadline):
        Sink.__init__(self, deadline)
        self.future = future

    cpdef result(self, object value):
        if not self.future.done():
            self.future.set_result(value)

    cpdef error(self, str code, str text):
        if not self.future.done():
            self.future.set_exception(RpcError(code, text))

    cpdef chunk(self, object value):
        self.error(PROTOCOL, "a stream chunk for a plain request")

    cpdef end(self):
        self.error(PROTOCOL, "a stream end for a plain request")


cdef class Peer:
    """One RPC connection: framing, the handshake, and writes batched per loop iteration.
    Subclasses say what a frame means (`frame`) and what a lost connection means (`lost`).
    An asyncio protocol by its methods."""

    def __init__(self, secret, str name):
        self.secret = secret
        self.name = name
        self.transport = None
        self.ready = False
        self.closed = False
        self.peername = "?"
        self._rbuf = bytearray()
        self._wbuf = bytearray()
        self._flushing = False
        self._nonce = b""
        self._loop = asyncio.get_running_loop()
        self.paused = None
        self.gone = self._loop.create_future()  # done when the connection closes
        self.server_side = False

    # ----------------------------------------------------------------- transport
    def connection_made(self, transport):
        self.transport = transport
        self._write = transport.write
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        peer = transport.get_extra_info("peername")
        self.peername = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    def data_received(self, data):
        self._received(data)

    cdef _received(self, object data):
        cdef bytearray buf = self._rbuf
        cdef const unsigned char[::1] view
        cdef Py_ssize_t pos = 0, n, size, end
        if len(buf):
            buf += data
            data = buf
        n = len(data)
        view = data
        cdef Py_ssize_t limit = MAX_FRAME_BYTES if self.ready else PREAUTH_FRAME_BYTES
        try:
            while n - pos >= 4:
                size = _be32(&view[pos])
                if size > limit:
                    raise ValueError(f"frame of {size} bytes is over the limit of {limit}"
                                     + ("" if self.ready else " before authentication"))
                end = pos + 4 + size
                if end > n:
                    break
                # decoded from a copy: a bytes object costs less than a slice of the buffer
                # (a memoryview object per frame), and msgspec reads bytes without the buffer protocol
                frame = _decode(PyBytes_FromStringAndSize(<const char*>&view[pos + 4], size))
                pos = end
                if type(frame) is not list or not frame:
                    raise ValueError("a frame must be a non-empty msgpack array")
                if self.ready:
                    self.frame(<list>frame)
                else:
                    self._handshake(<list>frame)
                if self.closed:
                    return
        except (ValueError, TypeError, IndexError, _DecodeError) as exc:
            view = None
            if not self.ready and pos == 0 and self._foreign(bytes(data[:8])):
                return
            self.fail(PROTOCOL, f"malformed frame from {self.peername}: {exc}")
            return
        view = None
        if len(buf):
            del buf[:pos]
        elif pos < n:
            self._rbuf = bytearray(data[pos:])

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        self.closed = True
        self.ready = False
        if not self.gone.done():
            self.gone.set_result(None)
        if self.paused is not None and not self.paused.done():
            self.paused.set_result(None)
        self.lost(f"connection to {self.peername} lost" + (f": {exc}" if exc else ""))

    def pause_writing(self):
        if self.paused is None or self.paused.done():
            self.paused = self._loop.create_future()

    def resume_writing(self):
        if self.paused is not None and not self.paused.done():
            self.paused.set_result(None)
        self.paused = None

    # ----------------------------------------------------------------- writing
    cpdef send(self, object frame):
        """Queues one frame; what one loop iteration queues leaves in one write."""
        cdef bytearray buf = self._wbuf
        cdef Py_ssize_t start, size
        cdef unsigned char header[4]
        if self.closed:
            return
        start = len(buf)
        _encode_into(frame, buf, start + 4)  # past the end: msgspec extends the buffer (the header goes in the gap)
        size = len(buf) - start - 4
        header[0] = (size >> 24) & 0xff
        header[1] = (size >> 16) & 0xff
        header[2] = (size >> 8) & 0xff
        header[3] = size & 0xff
        memcpy(<char*>buf + start, header, 4)
        if not self._flushing:
            self._flushing = True
            self._loop.call_soon(self.flush)

    def flush(self):
        self._flushing = False
        buf = self._wbuf
        if len(buf) and not self.closed and self.transport is not None:
            self._wbuf = bytearray()
            self._write(buf)

    def close(self):
        if self.transport is not None and not self.closed:
            self.flush()
            self.transport.close()
        self.closed = True

    cpdef fail(self, str code, str text):
        """Tells the peer why, logs it, and closes."""
        log.warning("rpc_connection_refused" if code == AUTH_FAILED else "rpc_connection_failed",
                    peer=self.peername, side="server" if self.server_side else "client", code=code, error=text)
        self.send([<int>ERROR, 0, code, text])
        self.close()

    cdef bint _foreign(self, object head) except -1:
        """The first bytes of the connection are not genapi RPC: True when that was said and
        the connection closed (a subclass knows what the peer is likely to be)."""
        return False

    cdef _handshake(self, list frame):
        raise NotImplementedError

    cdef frame(self, list frame):
        raise NotImplementedError

    cpdef lost(self, str reason):
        pass


cdef class Gate:
    """One listener's count of connections that have not proved the secret yet, and its bound:
    what an unauthenticated peer may cost is bounded before it is trusted (a small first frame,
    a short deadline, and this many at once)."""

    def __init__(self, int limit=MAX_UNAUTHENTICATED):
        self.limit = limit
        self.waiting = 0


cdef class ServerPeer(Peer):
    """The listening side: sends HELLO, checks the client's proof, then hands every CALL,
    CANCEL and CREDIT to its `handler`."""

    def __init__(self, secret, str name, handler, Gate gate=None):
        Peer.__init__(self, secret, name)
        self.server_side = True
        self._result = [<int>RESULT, None, None]  # every RESULT frame, filled and encoded in turn
        self.handler = handler
        self._timer = None
        self._gate = gate
        self._gated = False
        self._hailed = False

    def connection_made(self, transport):
        Peer.connection_made(self, transport)
        if self._gate is not None:
            if self._gate.waiting >= self._gate.limit:
                self.closed = True
                log.warning("rpc_connection_refused", peer=self.peername, listener=self.name,
                            reason=f"{self._gate.limit} connections are already waiting to authenticate")
                transport.abort()
                return
            self._gate.waiting += 1
            self._gated = True
        self._nonce = os.urandom(32)
        self.send([<int>HELLO, self._nonce, self.secret is not None, self.name])
        self._timer = self._loop.call_later(HANDSHAKE_TIMEOUT, self._too_slow)

    def _too_slow(self):
        if not self.ready:
            self.fail(AUTH_FAILED, f"no authentication within {HANDSHAKE_TIMEOUT:g} s")

    cdef bint _foreign(self, object head) except -1:
        """HTTP (a WebSocket client, a browser, curl) on a genapi RPC port: said once, with where
        such clients belong, and closed."""
        if not head.startswith(HTTP_METHODS):
            return False
        log.warning("rpc_port_got_http", peer=self.peername, listener=self.name,
                    request=head.split(b" ", 1)[0].decode("latin-1"), hint=RPC_NOT_HTTP)
        self.send([<int>ERROR, 0, PROTOCOL, f"an HTTP request on a genapi RPC port: {RPC_NOT_HTTP}"])
        self.close()
        return True

    cdef _handshake(self, list frame):
        if frame[0] == <int>HELLO and not self._hailed:  # the client's greeting: once, before AUTH
            self._hailed = True
            return
        if frame[0] != <int>AUTH or len(frame) < 3:
            return self.fail(AUTH_FAILED, "expected AUTH as the first frame")
        proof, cnonce = frame[1], frame[2]
        if type(proof) is not bytes or type(cnonce) is not bytes or len(cnonce) != 32:
            return self.fail(AUTH_FAILED, "malformed AUTH frame")
        if self.secret is None:
            if proof:
                return self.fail(AUTH_FAILED, "the peer sent a cluster-secret proof, but this side has no "
                                              "cluster secret; configure the same secret on both sides")
        elif not hmac.compare_digest(proof, _proof(self.secret, b"client", self._nonce, cnonce)):
            return self.fail(AUTH_FAILED, "wrong cluster secret (or none) from the peer")
        if self._timer is not None:
            self._timer.cancel()
        self._ungate()
        self.ready = True
        self.send([<int>WELCOME, _proof(self.secret, b"server", self._nonce, cnonce)])
        log.debug("rpc_peer_accepted", peer=self.peername, listener=self.name)

    cdef frame(self, list frame):
        kind = frame[0]
        if kind == <int>CALL:
            if len(frame) > 6:  # with the caller's traceparent
                self.handler.call(self, frame[1], frame[2], frame[3], frame[4], frame[5], frame[6])
            else:
                self.handler.call(self, frame[1], frame[2], frame[3], frame[4], frame[5])
        elif kind == <int>CANCEL:
            self.handler.cancel(self, frame[1])
        elif kind == <int>CREDIT:
            self.handler.credit(self, frame[1], frame[2])
        else:
            raise ValueError(f"unexpected frame kind {kind!r} from a client")

    cdef _ungate(self):
        if self._gated:
            self._gated = False
            self._gate.waiting -= 1

    cpdef lost(self, str reason):
        if self._timer is not None:
            self._timer.cancel()
        self._ungate()
        self.handler.lost(self)

    # replies
    cpdef result(self, object call_id, object value):
        cdef list frame = self._result
        frame[1] = call_id
        frame[2] = value
        try:
            self.send(frame)
        finally:
            frame[1] = frame[2] = None

    cpdef error(self, object call_id, str code, str text):
        self.send([<int>ERROR, call_id, code, text])

    cpdef chunk(self, object call_id, object value):
        self.send([<int>CHUNK, call_id, value])

    cpdef end(self, object call_id):
        self.send([<int>END, call_id])


cdef class ClientPeer(Peer):
    """The calling side: proves the secret, then multiplexes calls by id. Each pending call's
    Sink gets its answer; a deadline that passes cancels the call on the server and tells the
    Sink `error(TIMEOUT)`; a lost connection tells every pending Sink `error(LOST)`."""

    def __init__(self, secret, str name, str address):
        Peer.__init__(self, secret, name)
        self._call = [<int>CALL, None, None, None, None, False]  # every CALL frame without a trace, filled in turn
        self.address = address
        self.pending = {}
        self.welcome = self._loop.create_future()
        self._ids = 0
        self._sweeping = False
        self._cnonce = b""
        self.server_name = ""
        self.corked = None
        self._greeting = None

    def connection_made(self, transport):
        Peer.connection_made(self, transport)
        self._greeting = self._loop.call_later(GREET_AFTER, self._greet)

    def _greet(self):
        """No HELLO yet: a genapi server sends it on accept, so this is likely not one (an HTTP
        server waits for a request). The client speaks, so such a server answers now (the
        gateway's WebSocket port answers HTTP 400 naming the control port) instead of the
        connection waiting out its timeout in silence. A genapi server takes the greeting
        (once, before AUTH); it is only sent late, so servers that predate it never see it
        from a peer that got their HELLO."""
        self._greeting = None
        if not self._nonce and not self.closed:
            self.send([<int>HELLO, b"", self.secret is not None, self.name])

    def data_received(self, data):
        """Answers what one read brought; the client connections answered leave corked, one
        write each (a batch of 800 results would otherwise be 800 writes)."""
        cdef list corked = []
        self.corked = corked
        try:
            self._received(data)
        finally:
            self.corked = None
            for conn in corked:
                conn.uncork()

    cdef _handshake(self, list frame):
        kind = frame[0]
        if kind == <int>ERROR:
            return self._refused(frame[3])
        if kind == <int>HELLO and not self._nonce:
            if self._greeting is not None:
                self._greeting.cancel()
                self._greeting = None
            nonce, secured = frame[1], frame[2]
            self.server_name = str(frame[3]) if len(frame) > 3 else ""
            if type(nonce) is not bytes or len(nonce) != 32:
                return self.fail(PROTOCOL, "malformed HELLO frame")
            if secured and self.secret is None:
                return self._refused("the peer requires the cluster secret, and none is configured here "
                                     "([cluster] secret or GENAPI_CLUSTER_SECRET)")
            if not secured and self.secret is not None:
                return self._refused("the peer has no cluster secret configured; it cannot prove it is ours")
            self._nonce = nonce
            self._cnonce = os.urandom(32)
            self.send([<int>AUTH, _proof(self.secret, b"client", nonce, self._cnonce), self._cnonce])
        elif kind == <int>WELCOME and self._nonce:
            if not hmac.compare_digest(frame[1], _proof(self.secret, b"server", self._nonce, self._cnonce)):
                return self._refused("the peer's proof of the cluster secret is wrong")
            self.ready = True
            if not self.welcome.done():
                self.welcome.set_result(self)
        else:
            self.fail(PROTOCOL, f"unexpected frame kind {kind!r} during the handshake")

    cdef bint _foreign(self, object head) except -1:
        if not head.startswith(b"HTTP/"):
            return False
        self._refused(f"{self.address} answered in HTTP, not genapi RPC: is it the gateway's WebSocket "
                      f"port? Give the gateway's control port ([gateway] control_port, default 4001)",
                      PROTOCOL)
        return True

    cdef _refused(self, str text, str code=AUTH_FAILED):
        self.fail(code, text)
        if not self.welcome.done():
            self.welcome.set_exception(RpcError(code, text))

    cdef frame(self, list frame):
        cdef Sink sink
        kind = frame[0]
        call_id = frame[1]
        if kind == <int>RESULT:
            sink = self.pending.pop(call_id, None)
            if sink is not None:
                sink.result(frame[2])
        elif kind == <int>CHUNK:
            sink = self.pending.get(call_id)
            if sink is not None:
                sink.chunk(frame[2])
        elif kind == <int>END:
            sink = self.pending.pop(call_id, None)
            if sink is not None:
                sink.end()
        elif kind == <int>ERROR:
            if call_id == 0:
                log.warning("rpc_peer_error", peer=self.address, code=frame[2], error=frame[3])
                return
            sink = self.pending.pop(call_id, None)
            if sink is not None:
                sink.error(frame[2], frame[3])
        else:
            raise ValueError(f"unexpected frame kind {kind!r} from a server")

    cpdef lost(self, str reason):
        cdef Sink sink
        if self._greeting is not None:
            self._greeting.cancel()
            self._greeting = None
        if not self.welcome.done():
            self.welcome.set_exception(RpcError(LOST, reason))
            self.welcome.exception()  # retrieved: nobody may be waiting any more
        pending, self.pending = self.pending, {}
        for sink in pending.values():
            sink.error(LOST, reason)

    # ----------------------------------------------------------------- calls
    cpdef long long call(self, str target, list args, object timeout_ms, Sink sink, bint stream=False,
                         object trace=None) except -1:
        """Sends one call; its answer goes to `sink`. Returns the call's id (for `cancel`).
        `trace`: the caller's W3C traceparent, an optional last element of the CALL frame."""
        self._ids += 1
        cdef long long call_id = self._ids
        cdef list frame
        self.pending[call_id] = sink
        if trace is None:
            frame = self._call
            frame[1] = call_id
            frame[2] = target
            frame[3] = args
            frame[4] = timeout_ms
            frame[5] = stream
            try:
                self.send(frame)
            finally:
                frame[1] = frame[2] = frame[3] = frame[4] = None
        else:
            self.send([<int>CALL, call_id, target, args, timeout_ms, stream, trace])
        if not self._sweeping and sink.deadline != INF:
            self._sweeping = True
            self._loop.call_later(SWEEP_S, self._sweep)
        return call_id

    cpdef cancel(self, long long call_id):
        """The caller is gone: the server stops the call; its answer, if any, is dropped."""
        if self.pending.pop(call_id, None) is not None:
            self.send([<int>CANCEL, call_id])

    cpdef credit(self, long long call_id, int n):
        if call_id in self.pending:
            self.send([<int>CREDIT, call_id, n])

    def _sweep(self):
        """Times out the calls whose deadline passed; runs every SWEEP_S while any has one."""
        cdef double now = monotonic()
        cdef Sink sink
        expired = [(cid, s) for cid, s in self.pending.items() if (<Sink>s).deadline <= now]
        for cid, sink in expired:
            self.cancel(cid)
            sink.error(TIMEOUT, "deadline passed")
        if self.pending and not self.closed:
            self._loop.call_later(SWEEP_S, self._sweep)
        else:
            self._sweeping = False

    async def request(self, str target, list args, double timeout_s):
        """One call awaited: its result, or RpcError."""
        fut = self._loop.create_future()
        self.call(target, args, int(timeout_s * 1000), Waiter(fut, monotonic() + timeout_s))
        return await fut


def split_address(str address):
    """ "host:port" (or "[v6]:port") → (host, port); ValueError (genapi.address.AddressError)
    naming the address, its problem and the expected form otherwise."""
    return parse_address(address, "node address")


async def connect(str address, secret, str name, double timeout_s=5.0):
    """An authenticated connection to a server at "host:port"; RpcError(LOST or AUTH_FAILED) if none."""
    host, port = split_address(address)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            _t, peer = await loop.create_connection(lambda: ClientPeer(secret, name, address), host, port)
            return await peer.welcome
    except TimeoutError:
        raise RpcError(LOST, f"no connection to {address} within {timeout_s:g} s") from None
    except OSError as exc:
        raise RpcError(LOST, f"cannot connect to {address}: {exc.strerror or exc}") from None
