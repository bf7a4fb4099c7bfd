# cython: language_level=3
"""One client socket, compiled: the picows listener that reads Phoenix frames, keeps the
channel bookkeeping (joins, leaves, duplicate joins, stale join_refs) and gathers every frame
answering one read batch into a single write. Requests are handed to the dispatcher.

A connection knows its worker only through a `ConnectionContext` (the settings it reads, the
dispatcher, the topic check, the worker's counters and connection ids), read once per connection.

It subclasses picows's `WSListener` at C level (cimport), so picows calls `on_ws_frame` through
the vtable and frame fields are read without Python attribute lookups.
"""
import asyncio
import itertools
import os
import socket
import struct
from collections import deque

from picows.picows cimport WSCloseCode, WSFrame, WSMsgType, WSTransport

from genapi import log
from genapi.errors import (JOIN_REF_MAX_CHARS, TOO_MANY_CHANNELS, UNMATCHED_TOPIC, WS_INTERLEAVED, WS_RSV_BITS,
                           WS_STRAY_CONTINUATION, FrameError, join_ref_invalid, topic_too_long, unsupported_event,
                           ws_invalid_close_code, ws_message_too_big)

from genapi._core.decode cimport decode_v1, decode_v2

cdef str JOIN = "phx_join"
cdef str LEAVE = "phx_leave"
cdef str HEARTBEAT = "heartbeat"
cdef str CLOSE = "phx_close"
cdef str PHOENIX = "phoenix"
cdef object _MISSING = object()
cdef Py_ssize_t FLUSH_BYTES = 65536  # a batch of answers is written once it holds this much

# what `_rx` says about the frames read so far
cdef enum:
    RX_IDLE = 0         # between messages (the common case)
    RX_TEXT = 1         # inside a fragmented text message
    RX_BINARY = 2       # inside a fragmented binary message
    RX_CLOSED = 3       # the connection was closed for a protocol error: ignore the rest


cdef inline bint _valid_close_code(int code):
    """RFC 6455 §7.4: the defined codes a peer may send, and 3000-4999 (registered and private)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


cdef inline bint _keepable_ref(object v):
    """A join_ref the connection keeps for the channel's life: a scalar of bounded size."""
    if v is None:
        return True
    t = type(v)
    if t is str:
        return len(<str>v) <= JOIN_REF_MAX_CHARS
    if t is int:
        return -(1 << 63) <= v < (1 << 64)
    return t is float or t is bool


cdef bytes _LINGER_RESET = struct.pack("ii", 1, 0)


cdef void _reset_on_close(object transport) noexcept:
    """SO_LINGER {1, 0} on an aborted connection's socket: its close then resets the connection
    and frees the kernel's buffers at once. Without it a peer that reads nothing keeps megabytes
    of unsent output in FIN_WAIT1 for minutes, per socket."""
    try:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    except Exception:
        pass

cdef class Handler:
    """Base of the dispatcher: the connection calls `handle` for every request event."""

    cpdef handle(self, Connection conn, object join_ref, object ref, str topic, object payload,
                 Py_ssize_t size):
        raise NotImplementedError


cdef class ConnectionContext:
    """What a connection reads of its worker: the `[gateway]` settings `gw`, the dispatcher
    `handler`, the topic check, the worker's counters and connection ids."""

    def __init__(self, gw, Handler handler not None, topic_allowed):
        self.event = gw.event
        self.handler = handler
        self.start = handler.start
        self.topic_allowed = topic_allowed
        self.max_channels = gw.max_channels
        self.max_in_flight = gw.max_in_flight
        self.max_queued = gw.max_queued
        self.max_queued_bytes = gw.max_queued_bytes
        self.max_topic_bytes = gw.max_topic_bytes
        self.max_message = gw.max_message_bytes
        self.max_unsent_bytes = gw.max_unsent_bytes
        self.drain_timeout = gw.drain_timeout_ms / 1000
        self.connections = set()
        self.aborted = 0
        self.joins = 0
        self._ids = itertools.count(1)

    cpdef str next_id(self):
        """`<pid>.<n>`: unique on the host, so log lines of one connection can be told apart."""
        return f"{os.getpid()}.{next(self._ids)}"


cdef class Connection(WSListener):
    """A client connection: its identity, serializer, joined topics and running calls."""

    def __init__(self, ConnectionContext ctx not None, ser, identity):
        self.ctx = ctx
        self.ser = ser
        self.v2 = ser.vsn == "2.0.0"
        self.identity = identity
        self.cid = ctx.next_id()
        self.event = ctx.event
        self.channels = {}
        self.tasks = {}
        self.in_flight = 0
        self.queue = deque()
        self.queued_bytes = 0
        self.pumping = False
        self.idle_ticks = 0
        self.out = []
        self.out_bytes = 0
        self.batching = False
        self._write = None
        self._handler = ctx.handler
        self._start = ctx.start
        self._topic_allowed = ctx.topic_allowed
        self._max_channels = ctx.max_channels
        self._max_in_flight = ctx.max_in_flight
        self._max_queued = ctx.max_queued
        self._max_queued_bytes = ctx.max_queued_bytes
        self._max_topic_bytes = ctx.max_topic_bytes
        self._max_message = ctx.max_message
        self._rx = RX_IDLE
        self._frag = None
        self._max_unsent_bytes = ctx.max_unsent_bytes
        self._drain_timeout = ctx.drain_timeout
        self.writing_paused = False
        self.aborted = False
        self._waiters = None
        self._timer = None

    # ------------------------------------------------------------------ picows callbacks
    cpdef on_ws_connected(self, WSTransport transport):
        self.transport = transport
        self._write = transport.underlying_transport.write
        self._unsent = transport.underlying_transport.get_write_buffer_size
        self._loop = asyncio.get_running_loop()
        self.ctx.connections.add(self)
        if log.enabled("info"):
            peer, proxy = self._peer()
            if proxy is None:
                log.info("connect", conn=self.cid, peer=peer, user=self.identity.user_id, vsn=self.ser.vsn)
            else:
                log.info("connect", conn=self.cid, peer=peer, user=self.identity.user_id, vsn=self.ser.vsn,
                         proxy=proxy)

    cdef tuple _peer(self):
        """(the client's address, the trusted proxy it came through or None), as logged: behind
        a trusted proxy the client is the X-Forwarded-For address that rate limits on
        `ip_address` count (Identity.ip); else the TCP peer's address and port."""
        tcp = self.transport.underlying_transport.get_extra_info("peername")
        shown = f"{tcp[0]}:{tcp[1]}" if type(tcp) is tuple else tcp
        ip = self.identity.ip
        if ip is None or type(tcp) is not tuple or ip == tcp[0]:
            return shown, None
        return ip, shown

    cpdef on_ws_disconnected(self, WSTransport transport):
        self.ctx.connections.discard(self)
        log.info("disconnect", conn=self.cid, channels=len(self.channels), in_flight=self.in_flight)
        self.queue.clear()
        self.queued_bytes = 0
        self._frag = None
        for topic in list(self.tasks):
            self._cancel(topic)
        self._write = None
        self.out.clear()
        self.out_bytes = 0
        self.writing_paused = False
        self._stop_timer()
        self._wake_writers()

    cpdef on_ws_frame(self, WSTransport transport, WSFrame frame):
        self.idle_ticks = 0
        self.batching = True
        cdef WSMsgType mt = frame.msg_type
        try:
            if mt == WSMsgType.TEXT and frame.fin and self._rx == RX_IDLE and \
                    not (frame.rsv1 | frame.rsv2 | frame.rsv3):  # one whole text frame: the common case
                self._text(frame.get_payload_as_memoryview(), frame.payload_size)
            else:
                self._other_frame(transport, frame, mt)
        except Exception:  # a client's message never takes the worker down
            log.error("frame_handler_crashed", exc_info=True)
        if frame.last_in_buffer:
            self.batching = False
            if self.out:
                self.flush()

    cpdef pause_writing(self):
        """The client reads slower than it asks (the transport holds more than its high-water
        mark): stop reading its requests, make streams wait (`drained`), and give it
        drain_timeout_ms to catch up before the connection is aborted."""
        if self.transport is None or self.aborted:
            return
        self.writing_paused = True
        self._paused_at = self._loop.time()
        self.transport.underlying_transport.pause_reading()
        self._stop_timer()
        self._timer = self._loop.call_later(self._drain_timeout, self._drain_expired)

    cpdef resume_writing(self):
        self.writing_paused = False
        self._stop_timer()
        self._wake_writers()
        if self.transport is not None and not self.transport.is_disconnected and not self.aborted:
            self.transport.underlying_transport.resume_reading()

    # ------------------------------------------------------------------ write-side backpressure
    cpdef object drained(self):
        """None while the client keeps up; else a Future done once the output drains (or the
        connection ends). One Future per waiter, made only while paused: a waiter that is
        cancelled (a timeout) cancels only its own."""
        if not self.writing_paused:
            return None
        fut = self._loop.create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(fut)
        return fut

    cdef _wake_writers(self):
        cdef list waiters = self._waiters
        if waiters is not None:
            self._waiters = None
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    cdef _stop_timer(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _drain_expired(self):
        self._timer = None
        if self.writing_paused:
            self.abort("drain_timeout")

    def _close_expired(self):
        self._timer = None
        if self.transport is not None and not self.transport.is_disconnected:
            self.abort("close_not_flushed")

    cpdef abort(self, str reason):
        """Drops the connection at once, unsent output included (a transport abort, not a
        close that waits for the client to read): counted and logged once per connection."""
        cdef WSTransport t = self.transport
        if self.aborted or t is None or t.is_disconnected:
            return
        self.aborted = True
        unsent = self._unsent()
        paused_ms = round((self._loop.time() - self._paused_at) * 1000) if self.writing_paused else 0
        self.ctx.aborted += 1
        peer, proxy = self._peer()
        if proxy is None:
            log.warning("connection_aborted", conn=self.cid, reason=reason, unsent_bytes=unsent,
                        paused_ms=paused_ms, peer=peer, total=self.ctx.aborted)
        else:
            log.warning("connection_aborted", conn=self.cid, reason=reason, unsent_bytes=unsent,
                        paused_ms=paused_ms, peer=peer, proxy=proxy, total=self.ctx.aborted)
        self._write = None
        self.out.clear()
        self.out_bytes = 0
        self._stop_timer()
        _reset_on_close(t.underlying_transport)
        t.disconnect(False)  # on_ws_disconnected follows: calls cancelled, waiters woken

    # ------------------------------------------------------------------ output
    cpdef send(self, bytes data):
        """Queues one ready frame; written with the rest of the read batch (at most
        FLUSH_BYTES held), or at once."""
        self.out.append(data)
        self.out_bytes += len(data)
        if not self.batching or self.out_bytes > FLUSH_BYTES:
            self.flush()

    cpdef flush(self):
        cdef list out = self.out
        if self._write is not None:
            self._write(out[0] if len(out) == 1 else b"".join(out))
            if self.writing_paused and self._unsent() > self._max_unsent_bytes:
                self.abort("max_unsent_bytes")
        out.clear()
        self.out_bytes = 0

    cpdef bint cork(self):
        """Holds frames sent from here on until `uncork` (for answers finished outside a read
        batch, e.g. results coming back from threads); False when already corked."""
        if self.batching:
            return False
        self.batching = True
        return True

    cpdef uncork(self):
        self.batching = False
        if self.out:
            self.flush()

    # ------------------------------------------------------------------ slots and the queue
    cpdef bint enqueue(self, object item, Py_ssize_t size):
        """Parks a request until a slot frees; False when the queue is at its bound (count or bytes)."""
        if len(self.queue) >= self._max_queued or self.queued_bytes + size > self._max_queued_bytes:
            return False
        self.queue.append((item, size))
        self.queued_bytes += size
        return True

    cpdef release(self):
        """A request gave its slot back: start the next waiting ones, in arrival order."""
        self.in_flight -= 1
        if self.queue and not self.pumping:
            self._pump()

    cdef _pump(self):
        cdef bint corked = self.cork()
        self.pumping = True
        try:
            while self.queue and self.in_flight < self._max_in_flight:
                item, size = self.queue.popleft()
                self.queued_bytes -= size
                try:
                    self._start(*item)
                except Exception:  # one request's failure never strands the rest of the queue
                    log.error("queued_request_crashed", exc_info=True)
        finally:
            self.pumping = False
            if corked:
                self.uncork()

    # ------------------------------------------------------------------ WebSocket framing
    cdef _text(self, object data, Py_ssize_t size):
        """One whole text message: decoded and dispatched, or answered with the frame error."""
        try:
            msg = decode_v2(data) if self.v2 else decode_v1(data)
        except FrameError as exc:
            self._frame_error(exc)
        else:
            self.dispatch(<tuple>msg, size)

    cdef _other_frame(self, WSTransport transport, WSFrame frame, WSMsgType mt):
        """Every frame but one whole text frame: fragments (reassembled up to max_message_bytes),
        binary, close, pong, and the protocol errors (RFC 6455) that close the connection."""
        if self._rx == RX_CLOSED:
            return
        if frame.rsv1 | frame.rsv2 | frame.rsv3:  # no extension is ever negotiated
            self._protocol_close(WSCloseCode.PROTOCOL_ERROR, WS_RSV_BITS)
            return
        if mt == WSMsgType.CLOSE:
            code = frame.get_close_code()
            if frame.payload_size >= 2 and not _valid_close_code(code):
                self._protocol_close(WSCloseCode.PROTOCOL_ERROR, ws_invalid_close_code(code))
                return
            # a close without a status code is answered with 1000, never with "code 0"
            transport.send_close(WSCloseCode.OK if frame.payload_size < 2 else code)
            transport.disconnect()
            return
        if mt == WSMsgType.CONTINUATION:
            if self._rx == RX_IDLE:
                self._protocol_close(WSCloseCode.PROTOCOL_ERROR, WS_STRAY_CONTINUATION)
                return
            if len(self._frag) + frame.payload_size > self._max_message:
                self._protocol_close(WSCloseCode.MESSAGE_TOO_BIG, ws_message_too_big(self._max_message))
                return
            self._frag += frame.get_payload_as_memoryview()
            if frame.fin:
                data = self._frag
                kind = self._rx
                self._frag = None
                self._rx = RX_IDLE
                if kind == RX_TEXT:
                    self._text(data, len(data))
                else:
                    self._binary(data)
            return
        if mt == WSMsgType.PING:  # answered here (not by picows) so its RSV bits are checked too
            transport.send_pong(frame.get_payload_as_bytes())
            return
        if mt != WSMsgType.TEXT and mt != WSMsgType.BINARY:
            return  # a pong needs nothing
        if self._rx != RX_IDLE:
            self._protocol_close(WSCloseCode.PROTOCOL_ERROR, WS_INTERLEAVED)
            return
        if not frame.fin:  # the first fragment (its size is within the frame limit picows enforces)
            self._frag = bytearray(frame.get_payload_as_memoryview())
            self._rx = RX_TEXT if mt == WSMsgType.TEXT else RX_BINARY
        elif mt == WSMsgType.TEXT:
            self._text(frame.get_payload_as_memoryview(), frame.payload_size)
        else:
            self._binary(frame.get_payload_as_memoryview())

    cdef _protocol_close(self, WSCloseCode code, str reason):
        """Closes the connection for a WebSocket protocol error; frames after it are ignored."""
        log.info("ws_protocol_error", code=<int>code, reason=reason)
        self._rx = RX_CLOSED
        self._frag = None
        if self.out:  # answers to earlier frames of this read go out before the close
            self.flush()
        cdef WSTransport t = self.transport
        if t is not None and not t.is_disconnected:
            t.send_close(code, reason.encode())
            t.disconnect()

    # ------------------------------------------------------------------ protocol
    cdef dispatch(self, tuple msg, Py_ssize_t size):
        join_ref, ref, topic, event, payload = msg
        ser = self.ser
        if event == self.event:
            current = self.channels.get(topic, _MISSING)
            if current is _MISSING:
                self.send(ser.reply(None, ref, topic, "error", {"reason": UNMATCHED_TOPIC}))
            elif join_ref is None or join_ref == current:
                self._handler.handle(self, current, ref, topic, payload, size)
            return
        if event == HEARTBEAT and topic == PHOENIX:
            self.send(ser.reply(None, ref, PHOENIX, "ok", {}))
        elif event == JOIN:
            self._join(join_ref, ref, topic, payload)
        elif event == LEAVE:
            self._leave(join_ref, ref, topic)
        else:
            current = self.channels.get(topic, _MISSING)
            if current is _MISSING:
                self.send(ser.reply(None, ref, topic, "error", {"reason": UNMATCHED_TOPIC}))
            elif join_ref is None or join_ref == current:
                self.send(ser.reply(current, ref, topic, "error", {"reason": unsupported_event(event, self.event)}))

    cdef _join(self, join_ref, ref, str topic, params):
        ser = self.ser
        # what a channel keeps (its topic and join_ref) is bounded before anything looks at it
        cdef Py_ssize_t n = len(topic)
        if n > self._max_topic_bytes or (n * 4 > self._max_topic_bytes and
                                         len(topic.encode()) > self._max_topic_bytes):
            log.info("join_topic_too_long", chars=n, max_topic_bytes=self._max_topic_bytes)
            self.send(ser.reply(None, ref, topic, "error", {"reason": topic_too_long(self._max_topic_bytes)}))
            return
        if not _keepable_ref(join_ref):
            log.info("join_ref_invalid", topic=topic)
            self.send(ser.reply(None, ref, topic, "error", {"reason": join_ref_invalid()}))
            return
        if not self._topic_allowed(topic):
            log.info("join_unmatched_topic", topic=topic)
            self.send(ser.reply(None, ref, topic, "error", {"reason": UNMATCHED_TOPIC}))
            return
        old = self.channels.get(topic, _MISSING)
        if old is _MISSING and len(self.channels) >= self._max_channels:
            self.send(ser.reply(join_ref, ref, topic, "error", {"reason": TOO_MANY_CHANNELS}))
            return
        self.channels[topic] = join_ref
        log.info("join", conn=self.cid, topic=topic)
        self.ctx.joins += 1
        self.send(ser.reply(join_ref, ref, topic, "ok", self._joined(params)))
        if old is not _MISSING:  # duplicate join: close the old one after the new reply
            self._cancel(topic)
            self.send(ser.message(old, old, topic, CLOSE, {}))

    cdef dict _joined(self, params):
        """The join reply's response: `{}`, or who the gateway takes the caller for when the
        join's params ask for it with `{"identity": true}` (the explorer shows it)."""
        if type(params) is not dict or (<dict>params).get("identity") is not True:
            return {}
        who = self.identity
        return {"identity": {"user_id": who.user_id, "roles": list(who.roles or ()), "device_id": who.device_id}}

    cdef _leave(self, join_ref, ref, str topic):
        ser = self.ser
        current = self.channels.get(topic, _MISSING)
        if current is _MISSING:
            self.send(ser.reply(join_ref, ref, topic, "ok", {}))
        elif join_ref is None or join_ref == current:
            del self.channels[topic]
            log.info("leave", conn=self.cid, topic=topic)
            self._cancel(topic)
            self.send(ser.reply(current, ref, topic, "ok", {}))
            self.send(ser.message(current, current, topic, CLOSE, {}))
        # a stale join_ref gets no answer (the client raced a server close)

    cdef _binary(self, object data):
        ser = self.ser
        if ser.decode_binary is None:
            self.send(ser.message(None, None, PHOENIX, "phx_error",
                                  {"reason": "binary frames need the V2 serializer (vsn=2.0.0)"}))
            return
        try:
            join_ref, ref, topic, _event, _data = ser.decode_binary(data)
        except FrameError as exc:
            self._frame_error(exc)
            return
        current = self.channels.get(topic, _MISSING)
        if current is _MISSING:
            self.send(ser.reply(None, ref, topic, "error", {"reason": UNMATCHED_TOPIC}))
        elif join_ref is None or join_ref == current:
            self.send(ser.reply(current, ref, topic, "error", {
                "reason": "binary payloads are not supported; send the request as a JSON text frame"}))

    cdef _frame_error(self, exc):
        log.info("frame_invalid", error=str(exc))
        reason = f"invalid frame: {exc}"
        if exc.ref is not None and exc.topic is not None:
            self.send(self.ser.reply(self.channels.get(exc.topic), exc.ref, exc.topic, "error", {"reason": reason}))
        else:
            self.send(self.ser.message(None, exc.ref, PHOENIX, "phx_error", {"reason": reason}))

    # ------------------------------------------------------------------ running calls
    def spawn(self, reply, object coro):
        """Runs a call that holds a slot as a Task owned by the reply's topic: cancelled when the
        topic is left or closed; the reply releases the slot when the Task ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self.track(reply, task)
        task.add_done_callback(lambda t: self._task_done(reply, t))

    def _task_done(self, reply, task):
        self.untrack(reply, task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task_crashed", error=repr(task.exception()))
        reply.release()

    cpdef track(self, reply, object call):
        """A running call without a Task of its own (a remote call answered by callbacks):
        `call.cancel()` runs when the topic is left or closed, as a Task's would. The call
        itself answers and releases the slot, and `untrack`s itself when it ends."""
        cdef str topic = reply.topic
        cdef set bucket = self.tasks.get(topic)  # typed: add/discard at C level (once per remote call)
        if bucket is None:
            bucket = self.tasks[topic] = set()
        bucket.add(call)

    cpdef untrack(self, reply, object call):
        cdef str topic = reply.topic
        cdef set bucket = self.tasks.get(topic)
        if bucket is not None:
            bucket.discard(call)
            if not bucket:
                del self.tasks[topic]

    cpdef _cancel(self, str topic):
        """Cancels the topic's running calls and drops its waiting ones."""
        for task in self.tasks.pop(topic, ()):
            task.cancel()
        if self.queue:
            kept = deque()
            for entry in self.queue:
                if entry[0][0].topic == topic:
                    self.queued_bytes -= entry[1]
                else:
                    kept.append(entry)
            self.queue = kept

    cpdef close(self, WSCloseCode code, bytes reason=b""):
        """Closes the socket with `code` (1001 for shutdown and idle: clients come back). A
        client that is not reading is aborted instead (a close would wait for it to read), and
        one that has not read the rest within drain_timeout_ms after the close is aborted then."""
        cdef WSTransport t = self.transport
        if t is None or t.is_disconnected or self.aborted:
            return
        if self.writing_paused:
            self.abort("not_draining_at_close")
            return
        if t.is_close_frame_sent:  # a close is under way: it gets drain_timeout_ms, not forever
            if self._timer is None:
                self._timer = self._loop.call_later(self._drain_timeout, self._close_expired)
            return
        if self.out:
            self.flush()
        t.send_close(code, reason)
        t.disconnect()
        self._write = None  # nothing follows a close frame
        if self._unsent():
            self._stop_timer()
            self._timer = self._loop.call_later(self._drain_timeout, self._close_expired)
