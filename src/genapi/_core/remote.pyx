# cython: language_level=3
"""The callee of a function served by service nodes, compiled: it runs for every remote call.

A call picks the order of its nodes (`Selector`: random, hash, round_robin, sticky, custom),
takes the first node whose breaker and in-flight bound admit it (`NodeState`), and sends the
call over that node's RPC connection (`NodeLink`: one per worker and node, made on first use).
A node that cannot take the call -- down, lost mid-call, breaker open, full, or without the
function -- hands it to the next one, all within the function's timeout. The retry policy
(pipeline.call) re-runs a failed call on the same node (`same_node`) or across all nodes.
Leaving the topic, disconnecting or the deadline sends CANCEL to the node: the function there
is cancelled too. The fast path (`start`) needs no Task: the connection's callbacks answer.
"""
import asyncio

cimport cython

from genapi import errors, log
from genapi.errors import ArgumentError, CallError, CallTimeout, RemoteFailure, RpcError, Unavailable
from genapi.loader import load_callable
from genapi.structs import Response, split_target
from genapi._core import vocab
from genapi._core.rpc import connect

from genapi._core.callee cimport Callee
from genapi._core.clock cimport monotonic
from genapi._core.connection cimport Connection
from genapi._core.reply cimport Reply
from genapi._core.rpc cimport ClientPeer, Sink
from genapi._core.select cimport ADMITTED, FULL, NodeState, Selector
from genapi._core.vocab cimport STREAM_WINDOW

cdef double INF = float("inf")
cdef double RESOLVE_TTL_S = 1.0  # how long a resolver's node list is reused
cdef int CREDIT_EVERY = STREAM_WINDOW // 2
cdef str RAISED = vocab.RAISED
cdef str INVALID = vocab.INVALID
cdef str TIMEOUT = vocab.TIMEOUT
cdef str UNKNOWN = vocab.UNKNOWN


cdef class NodeLink:
    """One node as this worker reaches it: its connection (made on first use and again after a
    loss) and its health (`state`: breaker and calls in flight)."""

    def __init__(self, str address, nodes):
        self.address = address
        self.nodes = nodes
        c = nodes.cluster
        self.state = NodeState(address, c.node_max_in_flight, c.breaker_threshold, c.breaker_cooldown_ms)
        self.peer = None
        self._connecting = None

    cpdef ClientPeer connected(self):
        cdef ClientPeer peer = self.peer
        if peer is not None and peer.ready:
            return peer
        return None

    async def connect(self):
        """The live connection, made once for all callers waiting on it; RpcError if none."""
        peer = self.connected()
        if peer is not None:
            return peer
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        return await asyncio.shield(self._connecting)

    async def _connect(self):
        nodes = self.nodes
        try:
            peer = await connect(self.address, nodes.secret, nodes.name, nodes.cluster.connect_timeout_ms / 1000)
            self.peer = peer
            log.info("node_connected", node=self.address, name=peer.server_name)
            return peer
        except RpcError as exc:
            log.warning("node_unreachable", node=self.address, error=exc.text)
            raise
        finally:
            self._connecting = None

    def close(self):
        if self.peer is not None:
            self.peer.close()
            self.peer = None


cdef class Plan:
    """What one request's attempts share: the node tried first, for `same_node` retries."""

    def __cinit__(self):
        self.attempt = 0
        self.first = None


cdef class RemoteCallee(Callee):
    """A function on service nodes."""

    def __init__(self, config, nodes, bint detail_error=False):
        Callee.__init__(self, config.timeout_ms(), detail_error)
        self.nodes = nodes
        self.target = split_target(config.mfa)[0]
        self.name = f"{config.service}.{config.request_type}"
        mode = config.choose_node_mode
        custom = None
        if isinstance(mode, str) and ":" in mode:
            custom, mode = load_callable(mode), "custom"
        self.selector = Selector(mode, custom)
        retry = config.retry
        self.same_node = isinstance(retry, dict) and "same_node" in retry
        self._resolver = None
        self._static = []
        if isinstance(config.nodes, list):
            self._static = [nodes.link(a) for a in config.nodes]
        else:
            self._resolver = load_callable(config.nodes)
        self._resolved = []
        self._resolved_at = -RESOLVE_TTL_S

    def timeout_error(self):
        return errors.remote_timeout(self.timeout_ms)

    cpdef list links(self):
        """The function's nodes: the configured list, or what the resolver answered (reused for
        RESOLVE_TTL_S; its failure keeps the last answer and is logged)."""
        if self._resolver is None:
            return self._static
        cdef double now = monotonic()
        if now - self._resolved_at >= RESOLVE_TTL_S:
            self._resolved_at = now
            try:
                found = self._resolver()
                if isinstance(found, str):
                    found = [found]
                self._resolved = [self.nodes.link(str(a)) for a in found]
            except Exception as exc:
                log.warning("node_resolver_failed", function=self.name, error=f"{type(exc).__name__}: {exc}")
        return self._resolved

    cdef list order(self, object request, Plan plan, Py_ssize_t* first):
        """The nodes this attempt tries: order[first], then on around the ring (first is 0 but
        for a first attempt without a plan, which walks the function's own node list from the
        chosen node: no list per call)."""
        cdef list links = self.links()
        cdef list order
        cdef int attempt, k
        first[0] = 0
        if not links:
            return []
        if plan is None:
            first[0] = self.selector.first(links, request)
            if first[0] < 0:  # a custom selector's own order
                first[0] = 0
                return self.selector._custom_order(links, request)
            return links
        attempt = plan.attempt
        plan.attempt += 1
        if attempt == 0 or plan.first is None:
            order = self.selector.order(links, request)
            plan.first = order[0]
            plan.order = order
            return order
        if self.same_node:
            return [plan.first]
        # all_nodes: each retry starts one node further on in the first attempt's order (nodes
        # the resolver no longer names are left out, new ones come last)
        order = [link for link in plan.order if link in links]
        order += [link for link in links if link not in order]
        k = attempt % len(order)
        return order[k:] + order[:k]

    cpdef plan(self, object request):
        return Plan()

    cpdef failure(self, object request, object exc):
        if isinstance(exc, ArgumentError):
            return Response.fail(request.request_id, errors.invalid_argument(exc))
        if isinstance(exc, RemoteFailure):
            log.warning("remote_call_failed", request_id=request.request_id, function=self.name, error=exc.text)
            return Response.fail(request.request_id, errors.remote_failed(exc.text, self.detail_error))
        return Callee.failure(self, request, exc)

    cdef double _deadline(self, double now):
        return INF if self.timeout is None else now + <double>self.timeout

    # ----------------------------------------------------------------- calls
    cpdef start(self, Reply reply, object request, list args):
        """The fast path: no Task; the call answers `reply` from the connection's callbacks."""
        cdef RemoteCall call = RemoteCall.__new__(RemoteCall)
        cdef double now = monotonic()
        call.setup(self, request, args, self.order(request, None, &call.first), self._deadline(now))
        call.reply = reply
        reply._conn.track(reply, call)
        call.next_node_at(now)

    async def call(self, list args, request=None, plan=None, reply=None):
        fut = asyncio.get_running_loop().create_future()
        cdef RemoteCall call = RemoteCall.__new__(RemoteCall)
        call.setup(self, request, args, self.order(request, plan, &call.first), self._deadline(monotonic()))
        call.future = fut
        call.next_node()
        try:
            return await fut
        except asyncio.CancelledError:
            call.cancel()
            raise

    async def stream(self, list args, handle, request=None):
        cdef Py_ssize_t last = len(args) - 1  # (compiled without wraparound: no args[-1])
        if last >= 0 and type(args[last]) is dict and "stream" in args[last]:  # request info: the handle stays here
            args[last] = {k: v for k, v in args[last].items() if k != "stream"}
        fut = asyncio.get_running_loop().create_future()
        cdef RemoteCall call = RemoteCall.__new__(RemoteCall)
        call.setup(self, request, args, self.order(request, None, &call.first), self._deadline(monotonic()))
        call.future = fut
        call.handle = handle
        call.next_node()
        try:
            await fut
        except asyncio.CancelledError:
            call.cancel()
            raise
        if not handle.closed:
            handle.complete()


# no_gc here, not only in the .pxd: Cython applies the decorator where the class is defined
# (the .pxd's alone left every in-flight call tracked, and collected over, by the collector)
@cython.no_gc
cdef class RemoteCall(Sink):
    """One attempt of one request on the nodes, answered by the connection's callbacks: to
    `reply` (the fast path), or into `future` (the general path). Streams send their chunks
    through `handle` and grant the node more as the client takes them."""

    cdef setup(self, RemoteCallee callee, object request, list args, list order, double deadline):
        self.deadline = deadline
        self.callee = callee
        self.request = request
        self.args = args
        self.order = order

    cdef next_node(self):
        """Sends the call to the next node that admits it, or ends with why none did."""
        self.next_node_at(monotonic())

    cdef next_node_at(self, double now):
        """`next_node` with the clock already read (a call's start reads it once)."""
        cdef list order = self.order
        cdef Py_ssize_t n = len(order), j
        cdef NodeLink link
        cdef int admitted
        cdef ClientPeer peer
        while self.i < n:
            if now >= self.deadline:
                return self._timed_out()
            j = self.first + self.i  # around the ring from the chosen node
            if j >= n:
                j -= n
            link = <NodeLink>order[j]
            self.i += 1
            admitted = link.state.admit(now)
            if admitted != ADMITTED:
                self.last_error = f"node {link.address}: " + ("at its in-flight bound" if admitted == FULL
                                                              else "circuit breaker open")
                continue
            self.link = link
            self.tried += 1
            peer = link.connected()
            if peer is None:
                self.connecting = asyncio.ensure_future(self._connect_then_send(link))
                return
            self._send(peer)
            return
        if self.tried == 0 and order:  # every node refused at its breaker or bound: no capacity now
            return self._end_error(Unavailable())
        if self.last_error is not None:
            log.warning("remote_nodes_failed", request_id=self.request.request_id, function=self.callee.name,
                        error=self.last_error)
        self._end_error(CallError(errors.NO_TARGET_NODES))

    async def _connect_then_send(self, NodeLink link):
        cdef double remaining
        try:
            remaining = self.deadline - monotonic()
            async with asyncio.timeout(None if remaining == INF else max(remaining, 0)):
                peer = await link.connect()
        except (RpcError, TimeoutError) as exc:
            self.connecting = None  # no cycle left through the Task (RemoteCall is not collected)
            if self.finished:
                link.state.forget()
                return
            link.state.done(True, monotonic())
            self.last_error = f"node {link.address}: " + (exc.text if isinstance(exc, RpcError) else
                                                          "connect timed out")
            self.link = None
            self.next_node()
            return
        self.connecting = None
        if self.finished:
            link.state.forget()
            return
        self._send(peer)

    cdef _send(self, ClientPeer peer):
        self.peer = peer
        self.call_id = peer.call(self.callee.target, self.args, self.callee.timeout_ms, self,
                                 self.handle is not None, self.request.traceparent)

    # ----------------------------------------------------------------- the node's answer
    cpdef result(self, object value):
        self._node_done(False)
        self._end(value)

    cpdef error(self, str code, str text):
        cdef NodeLink link = self.link
        if code == RAISED:
            self._node_done(False)
            return self._end_error(RemoteFailure(text))
        if code == INVALID:  # an argument the function's annotation refuses (an SDK int given 2.5)
            self._node_done(False)
            return self._end_error(ArgumentError(text))
        if code == TIMEOUT:
            self._node_done(True)
            return self._timed_out()
        self._node_done(code != UNKNOWN)
        self.last_error = f"node {link.address if link is not None else '?'}: {text}"
        if self.started:  # a stream already under way ends here
            return self._end_error(RemoteFailure(self.last_error))
        self.next_node()

    cpdef chunk(self, object value):
        handle = self.handle
        if handle is None or handle.closed:
            return
        self.started = True
        handle.send(value)
        self.chunks += 1
        if self.chunks >= CREDIT_EVERY:
            self.chunks = 0
            waiter = handle.drained()
            if waiter is None:
                self._credit()
            else:
                waiter.add_done_callback(self._credit_after)

    def _credit_after(self, _fut):
        self._credit()

    cdef _credit(self):
        if not self.finished and self.peer is not None:
            self.peer.credit(self.call_id, CREDIT_EVERY)

    cpdef end(self):
        self._node_done(False)
        self._end(None)

    cdef _node_done(self, bint node_failed):
        if self.link is not None:  # the breaker reads the clock only for a failure
            self.link.state.done(node_failed, monotonic() if node_failed else 0.0)
            self.link = None

    # ----------------------------------------------------------------- ending
    cdef _timed_out(self):
        self._end_error(CallTimeout(self.callee.timeout_error()))

    cdef Reply _release_reply(self):
        """The fast path's reply, untracked; corked when a read batch of results is being answered."""
        cdef Reply reply = self.reply
        cdef Connection conn = reply._conn
        conn.untrack(reply, self)
        corked = self.peer.corked if self.peer is not None else None
        if corked is not None and conn.cork():
            corked.append(conn)
        return reply

    cdef _end(self, object value):
        if self.finished:
            return
        self.finished = True
        if self.future is not None:
            if not self.future.done():
                self.future.set_result(value)
            return
        self._release_reply().finish(Response(self.request.request_id, value))

    cdef _end_error(self, object exc):
        if self.finished:
            return
        self.finished = True
        if self.future is not None:
            if not self.future.done():
                self.future.set_exception(exc)
            return
        reply = self._release_reply()
        if isinstance(exc, CallError):
            reply.finish(Response.fail(self.request.request_id, exc.text, exc.can_retry))
        else:
            reply.finish(self.callee.failure(self.request, exc))

    def cancel(self):
        """The caller is gone (topic left, disconnected, Task cancelled): the node stops the call."""
        if self.finished:
            return
        self.finished = True
        if self.peer is not None and self.link is not None:
            self.peer.cancel(self.call_id)
        if self.link is not None:
            self.link.state.forget()
            self.link = None
        if self.reply is not None:
            self.reply.release()
