"""Remote functions: the callee of a function served by service nodes, and each worker's links
to those nodes.

A call picks the order of its nodes (`_core/select.Selector`: random, hash, round_robin, sticky,
custom), takes the first node whose breaker and in-flight bound admit it (`NodeState`), and
sends the call over that node's RPC connection (one per worker and node, made on first use).
A node that cannot take the call — down, lost mid-call, breaker open, full, or without the
function — hands it to the next one, all within the function's timeout. The retry policy
(pipeline.call) re-runs a failed call on the same node (`same_node`) or across all nodes.
Leaving the topic, disconnecting or the deadline sends CANCEL to the node: the function there
is cancelled too.
"""
from __future__ import annotations

import asyncio
from time import monotonic
from typing import Any

from . import errors, log, rpc
from ._core.callee import Callee
from ._core.reply import Reply
from ._core.select import ADMITTED, FULL, NodeState, Selector
from .calls import StreamHandle
from .config import ClusterSettings
from .errors import CallTimeout, RemoteFailure, Unavailable
from .loader import load_callable
from .structs import FunConfig, Request, Response, split_target

RESOLVE_TTL_S = 1.0  # how long a resolver's node list is reused


class NodeLink:
    """One node as this worker reaches it: its connection (made on first use and again after a
    loss) and its health (`state`: breaker and calls in flight)."""

    def __init__(self, address: str, nodes: Nodes) -> None:
        self.address = address
        self.nodes = nodes
        c = nodes.cluster
        self.state = NodeState(address, c.node_max_in_flight, c.breaker_threshold, c.breaker_cooldown_ms)
        self.peer: rpc.ClientPeer | None = None
        self._connecting: asyncio.Future[rpc.ClientPeer] | None = None

    def connected(self) -> rpc.ClientPeer | None:
        peer = self.peer
        if peer is not None and peer.ready:
            return peer
        return None

    async def connect(self) -> rpc.ClientPeer:
        """The live connection, made once for all callers waiting on it; RpcError if none."""
        peer = self.connected()
        if peer is not None:
            return peer
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        fut = self._connecting
        return await asyncio.shield(fut)

    async def _connect(self) -> rpc.ClientPeer:
        try:
            nodes = self.nodes
            peer = await rpc.connect(self.address, nodes.secret, nodes.name, nodes.cluster.connect_timeout_ms / 1000)
            self.peer = peer
            log.info("node_connected", node=self.address, name=peer.server_name)
            return peer
        except rpc.RpcError as exc:
            log.warning("node_unreachable", node=self.address, error=exc.text)
            raise
        finally:
            self._connecting = None

    def close(self) -> None:
        if self.peer is not None:
            self.peer.close()
            self.peer = None


class Nodes:
    """The links of one worker, one per node address, shared by every function on that node."""

    def __init__(self, cluster: ClusterSettings, secret: bytes | None, name: str) -> None:
        self.cluster = cluster
        self.secret = secret
        self.name = name
        self.links: dict[str, NodeLink] = {}

    def link(self, address: str) -> NodeLink:
        link = self.links.get(address)
        if link is None:
            rpc.split_address(address)  # ValueError naming the address
            link = self.links[address] = NodeLink(address, self)
        return link

    def status(self) -> list[dict[str, Any]]:
        return [dict(link.state.snapshot(), connected=link.connected() is not None)
                for link in self.links.values()]

    def close(self) -> None:
        for link in self.links.values():
            link.close()


class Plan:
    """What one request's attempts share: the node tried first, for `same_node` retries."""

    __slots__ = ("attempt", "first")

    def __init__(self) -> None:
        self.attempt = 0
        self.first: NodeLink | None = None


class RemoteCallee(Callee):
    """A function on service nodes."""

    def __init__(self, config: FunConfig, nodes: Nodes, detail_error: bool = False) -> None:
        Callee.__init__(self, config.timeout_ms(), detail_error)
        self.nodes = nodes
        self.target = split_target(config.mfa)[0]
        self.name = f"{config.service}.{config.request_type}"
        mode = config.choose_node_mode
        custom = None
        if isinstance(mode, str) and ":" in mode:
            custom, mode = load_callable(mode), "custom"
        self.selector = Selector(mode, custom)  # type: ignore[arg-type]
        retry = config.retry
        self.same_node = isinstance(retry, dict) and "same_node" in retry
        self._resolver = None
        self._static: list[NodeLink] = []
        if isinstance(config.nodes, list):
            self._static = [nodes.link(a) for a in config.nodes]
        else:
            self._resolver = load_callable(config.nodes)
        self._resolved: list[NodeLink] = []
        self._resolved_at = -RESOLVE_TTL_S

    def timeout_error(self) -> str:
        return errors.remote_timeout(self.timeout_ms)

    def links(self) -> list[NodeLink]:
        """The function's nodes: the configured list, or what the resolver answered (reused for
        RESOLVE_TTL_S; its failure keeps the last answer and is logged)."""
        if self._resolver is None:
            return self._static
        now = monotonic()
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

    def order(self, request: Request, plan: Plan | None) -> list[NodeLink]:
        """The nodes this attempt tries, in order."""
        links = self.links()
        if not links:
            return []
        if plan is None:
            return self.selector.order(links, request)
        attempt = plan.attempt
        plan.attempt += 1
        if attempt and self.same_node and plan.first is not None:
            return [plan.first]
        order = self.selector.order(links, request)
        if attempt:  # all_nodes: each retry starts one node further on
            k = attempt % len(order)
            order = order[k:] + order[:k]
        if plan.first is None:
            plan.first = order[0]
        return order

    def plan(self, request: Request) -> Plan:
        return Plan()

    def failure(self, request: Request, exc: BaseException) -> Response:
        if isinstance(exc, RemoteFailure):
            log.warning("remote_call_failed", request_id=request.request_id, function=self.name, error=exc.text)
            return Response.fail(request.request_id, errors.remote_failed(exc.text, self.detail_error))
        return Callee.failure(self, request, exc)

    # ----------------------------------------------------------------- calls
    def start(self, reply: Reply, request: Request, args: list[Any]) -> None:
        """The fast path: no Task; the call answers `reply` from the connection's callbacks."""
        call = RemoteCall(self, request, args, self.order(request, None), self._deadline(), reply=reply)
        reply.conn.track(reply, call)
        call.next_node()

    async def call(self, args: list[Any], request: Request | None = None, plan: Any = None) -> Any:
        assert request is not None
        fut = asyncio.get_running_loop().create_future()
        call = RemoteCall(self, request, args, self.order(request, plan), self._deadline(), future=fut)
        call.next_node()
        try:
            return await fut
        except asyncio.CancelledError:
            call.cancel()
            raise

    async def stream(self, args: list[Any], handle: StreamHandle, request: Request | None = None) -> None:
        assert request is not None
        fut = asyncio.get_running_loop().create_future()
        call = RemoteCall(self, request, args, self.order(request, None), self._deadline(), future=fut,
                          handle=handle)
        call.next_node()
        try:
            await fut
        except asyncio.CancelledError:
            call.cancel()
            raise
        if not handle.closed:
            handle.complete()

    def _deadline(self) -> float:
        return float("inf") if self.timeout is None else monotonic() + self.timeout


CREDIT_EVERY = rpc.STREAM_WINDOW // 2


class RemoteCall(rpc.Sink):
    """One attempt of one request on the nodes, answered by the connection's callbacks: to
    `reply` (the fast path), or into `future` (the general path). Streams send their chunks
    through `handle` and grant the node more as the client takes them."""

    __slots__ = (
        "args",
        "call_id",
        "callee",
        "chunks",
        "connecting",
        "finished",
        "future",
        "handle",
        "i",
        "last_error",
        "link",
        "order",
        "peer",
        "reply",
        "request",
        "started",
        "tried",
    )

    def __init__(self, callee: RemoteCallee, request: Request, args: list[Any], order: list[NodeLink],
                 deadline: float, reply: Reply | None = None, future: asyncio.Future[Any] | None = None,
                 handle: StreamHandle | None = None) -> None:
        rpc.Sink.__init__(self, deadline)
        self.callee = callee
        self.request = request
        self.args = args
        self.order = order
        self.i = 0
        self.reply = reply
        self.future = future
        self.handle = handle
        self.link: NodeLink | None = None
        self.peer: rpc.ClientPeer | None = None
        self.call_id = 0
        self.last_error: str | None = None
        self.tried = 0
        self.finished = False
        self.chunks = 0
        self.started = False  # a stream that sent a chunk is not moved to another node
        self.connecting: asyncio.Future[None] | None = None

    def next_node(self) -> None:
        """Sends the call to the next node that admits it, or ends with why none did."""
        order = self.order
        now = monotonic()
        while self.i < len(order):
            if now >= self.deadline:
                return self._timed_out()
            link = order[self.i]
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
        self._end_error(errors.CallError(errors.NO_TARGET_NODES))

    async def _connect_then_send(self, link: NodeLink) -> None:
        try:
            remaining = self.deadline - monotonic()
            async with asyncio.timeout(None if remaining == float("inf") else max(remaining, 0)):
                peer = await link.connect()
        except (rpc.RpcError, TimeoutError) as exc:
            if self.finished:
                link.state.forget()
                return
            link.state.done(True, monotonic())
            self.last_error = f"node {link.address}: " + (exc.text if isinstance(exc, rpc.RpcError) else
                                                          "connect timed out")
            self.link = None
            self.next_node()
            return
        if self.finished:
            link.state.forget()
            return
        self._send(peer)

    def _send(self, peer: rpc.ClientPeer) -> None:
        self.peer = peer
        self.call_id = peer.call(self.callee.target, self.args, self.callee.timeout_ms, self,
                                 self.handle is not None)

    # ----------------------------------------------------------------- the node's answer
    def result(self, value: Any) -> None:
        self._node_done(False)
        self._end(value)

    def error(self, code: str, text: str) -> None:
        link = self.link
        if code == rpc.RAISED:
            self._node_done(False)
            return self._end_error(RemoteFailure(text))
        if code == rpc.TIMEOUT:
            self._node_done(True)
            return self._timed_out()
        node_failed = code != rpc.UNKNOWN
        self._node_done(node_failed)
        self.last_error = f"node {link.address if link else '?'}: {text}"
        if self.started:  # a stream already under way ends here
            return self._end_error(RemoteFailure(self.last_error))
        self.next_node()

    def chunk(self, value: Any) -> None:
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
                waiter.add_done_callback(lambda _f: self._credit())

    def _credit(self) -> None:
        if not self.finished and self.peer is not None:
            self.peer.credit(self.call_id, CREDIT_EVERY)

    def end(self) -> None:
        self._node_done(False)
        self._end(None)

    def _node_done(self, node_failed: bool) -> None:
        if self.link is not None:
            self.link.state.done(node_failed, monotonic())
            self.link = None

    # ----------------------------------------------------------------- ending
    def _timed_out(self) -> None:
        self._end_error(CallTimeout(self.callee.timeout_error()))

    def _end(self, value: Any) -> None:
        if self.finished:
            return
        self.finished = True
        if self.future is not None:
            if not self.future.done():
                self.future.set_result(value)
            return
        reply = self.reply
        assert reply is not None
        reply.conn.untrack(reply, self)
        reply.finish(Response(self.request.request_id, value))

    def _end_error(self, exc: BaseException) -> None:
        if self.finished:
            return
        self.finished = True
        if self.future is not None:
            if not self.future.done():
                self.future.set_exception(exc)
            return
        reply = self.reply
        assert reply is not None
        reply.conn.untrack(reply, self)
        rid = self.request.request_id
        if isinstance(exc, errors.CallError):
            reply.finish(Response.fail(rid, exc.text, exc.can_retry))
        else:
            reply.finish(self.callee.failure(self.request, exc))

    def cancel(self) -> None:
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
