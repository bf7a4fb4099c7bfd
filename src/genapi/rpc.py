"""genapi RPC: the wire protocol between a gateway and its service nodes, both sides.

TCP, one connection per (gateway worker, node), every frame `4-byte big-endian length + a
msgpack array` whose first item is its kind. Many calls are multiplexed on a connection by id;
the frames one turn of the event loop produces leave in one write. The server side is a service
node's listener (calls) or the gateway's control port (pushes); the client side is the gateway
calling a node, or a node pushing to a gateway.

    HELLO   server → client  [0, nonce, secured, name]          first frame of every connection
    AUTH    client → server  [1, proof, cnonce]                 proof = HMAC(secret, "client" nonce cnonce)
    WELCOME server → client  [2, proof]                         proof = HMAC(secret, "server" nonce cnonce)
    CALL    client → server  [3, id, target, args, timeout_ms, stream]
    RESULT  server → client  [4, id, value]
    ERROR   either           [5, id, code, text]                id 0: about the connection itself
    CHUNK   server → client  [6, id, value]                     a stream's item
    END     server → client  [7, id]                            a stream's end
    CANCEL  client → server  [8, id]                            the call's caller is gone
    CREDIT  client → server  [9, id, n]                         a stream may send n more chunks

With a cluster secret both sides prove they know it (challenge–response: the secret is never
sent); without one the proofs are empty and the listeners bind to loopback only.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import socket
import struct
from collections.abc import Callable
from time import monotonic
from typing import Any

import msgspec

from . import log

HELLO, AUTH, WELCOME, CALL, RESULT, ERROR, CHUNK, END, CANCEL, CREDIT = range(10)

# ERROR codes: why a call failed (the text says what happened)
RAISED = "raised"          # the function raised; text = "Type: message"
UNKNOWN = "unknown"        # the node has no such function
TIMEOUT = "timeout"        # the deadline passed
LOST = "lost"              # the connection closed before the answer
REFUSED = "refused"        # a control request was refused (text: why)
AUTH_FAILED = "auth"       # the handshake failed
PROTOCOL = "protocol"      # a malformed frame

STREAM_WINDOW = 64         # chunks a stream may send before the gateway grants more
MAX_FRAME_BYTES = 64 * 1024 * 1024
HANDSHAKE_TIMEOUT = 5.0
SWEEP_S = 0.01             # how often deadlines are checked while calls are pending

_HEADER = struct.Struct(">I")
_unpack_from = _HEADER.unpack_from
_pack_into = _HEADER.pack_into
_ENCODER = msgspec.msgpack.Encoder()
_encode_into = _ENCODER.encode_into
_decode = msgspec.msgpack.Decoder().decode


class RpcError(Exception):
    """A call or control request that failed: `code` (one of the ERROR codes) and `text`."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text


def secret_from(configured: str | None) -> bytes | None:
    """The cluster secret: the configured one, else GENAPI_CLUSTER_SECRET, else none."""
    value = configured if configured else os.environ.get("GENAPI_CLUSTER_SECRET") or None
    return value.encode() if value else None


def _proof(secret: bytes | None, side: bytes, nonce: bytes, cnonce: bytes) -> bytes:
    if secret is None:
        return b""
    return hmac.new(secret, side + nonce + cnonce, hashlib.sha256).digest()


def loopback_only(host: str, secret: bytes | None, what: str) -> str:
    """Without a secret a listener serves this host only: any other address becomes loopback, said at start."""
    if secret is not None or host in ("127.0.0.1", "::1", "localhost"):
        return host
    log.warning("listener_loopback_only", listener=what, requested_host=host, host="127.0.0.1",
                note="no cluster secret is set ([cluster] secret or GENAPI_CLUSTER_SECRET), so only this "
                     "host may connect; set one to listen beyond loopback")
    return "127.0.0.1"


class Peer(asyncio.Protocol):
    """One RPC connection: framing, the handshake, and writes batched per loop iteration.
    Subclasses say what a frame means (`frame`) and what a lost connection means (`lost`)."""

    server_side = False

    def __init__(self, secret: bytes | None, name: str) -> None:
        self.secret = secret
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.ready = False
        self.closed = False
        self.peername = "?"
        self._rbuf = bytearray()
        self._wbuf = bytearray()
        self._flushing = False
        self._nonce = b""
        self._loop = asyncio.get_running_loop()
        self.paused: asyncio.Future[None] | None = None
        self.gone: asyncio.Future[None] = self._loop.create_future()  # done when the connection closes

    # ----------------------------------------------------------------- transport
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        peer = transport.get_extra_info("peername")
        self.peername = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    def data_received(self, data: bytes) -> None:
        buf = self._rbuf
        if buf:
            buf += data
            data = buf  # type: ignore[assignment]
        pos = 0
        n = len(data)
        try:
            with memoryview(data) as view:
                while n - pos >= 4:
                    size = _unpack_from(data, pos)[0]
                    if size > MAX_FRAME_BYTES:
                        raise ValueError(f"frame of {size} bytes is over the limit of {MAX_FRAME_BYTES}")
                    end = pos + 4 + size
                    if end > n:
                        break
                    frame = _decode(view[pos + 4:end])
                    pos = end
                    if type(frame) is not list or not frame:
                        raise ValueError("a frame must be a non-empty msgpack array")
                    if self.ready:
                        self.frame(frame)
                    else:
                        self._handshake(frame)
                    if self.closed:
                        return
        except (ValueError, TypeError, IndexError, msgspec.DecodeError) as exc:
            self.fail(PROTOCOL, f"malformed frame from {self.peername}: {exc}")
            return
        if buf:
            del buf[:pos]
        elif pos < n:
            self._rbuf = bytearray(data[pos:])

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.ready = False
        if not self.gone.done():
            self.gone.set_result(None)
        if self.paused is not None and not self.paused.done():
            self.paused.set_result(None)
        self.lost(f"connection to {self.peername} lost" + (f": {exc}" if exc else ""))

    def pause_writing(self) -> None:
        if self.paused is None or self.paused.done():
            self.paused = self._loop.create_future()

    def resume_writing(self) -> None:
        if self.paused is not None and not self.paused.done():
            self.paused.set_result(None)
        self.paused = None

    # ----------------------------------------------------------------- writing
    def send(self, frame: list[Any] | tuple[Any, ...]) -> None:
        """Queues one frame; what one loop iteration queues leaves in one write."""
        if self.closed:
            return
        buf = self._wbuf
        start = len(buf)
        buf += b"\0\0\0\0"
        _encode_into(frame, buf, start + 4)
        _pack_into(buf, start, len(buf) - start - 4)
        if not self._flushing:
            self._flushing = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flushing = False
        buf = self._wbuf
        if buf and not self.closed and self.transport is not None:
            self._wbuf = bytearray()
            self.transport.write(buf)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.flush()
            self.transport.close()
        self.closed = True

    def fail(self, code: str, text: str) -> None:
        """Tells the peer why, logs it, and closes."""
        log.warning("rpc_connection_refused" if code == AUTH_FAILED else "rpc_connection_failed",
                    peer=self.peername, side="server" if self.server_side else "client", code=code, error=text)
        self.send([ERROR, 0, code, text])
        self.close()

    # ----------------------------------------------------------------- handshake
    def _handshake(self, frame: list[Any]) -> None:
        raise NotImplementedError

    def frame(self, frame: list[Any]) -> None:
        raise NotImplementedError

    def lost(self, reason: str) -> None:
        pass


class ServerPeer(Peer):
    """The listening side: sends HELLO, checks the client's proof, then hands every CALL,
    CANCEL and CREDIT to its `handler`."""

    server_side = True

    def __init__(self, secret: bytes | None, name: str, handler: Any) -> None:
        super().__init__(secret, name)
        self.handler = handler
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._nonce = os.urandom(32)
        self.send([HELLO, self._nonce, self.secret is not None, self.name])
        self._timer = self._loop.call_later(HANDSHAKE_TIMEOUT, self._too_slow)

    def _too_slow(self) -> None:
        if not self.ready:
            self.fail(AUTH_FAILED, f"no authentication within {HANDSHAKE_TIMEOUT:g} s")

    def _handshake(self, frame: list[Any]) -> None:
        if frame[0] != AUTH or len(frame) < 3:
            return self.fail(AUTH_FAILED, "expected AUTH as the first frame")
        proof, cnonce = frame[1], frame[2]
        if not isinstance(proof, bytes) or not isinstance(cnonce, bytes) or len(cnonce) != 32:
            return self.fail(AUTH_FAILED, "malformed AUTH frame")
        if self.secret is None:
            if proof:
                return self.fail(AUTH_FAILED, "the peer sent a cluster-secret proof, but this side has no "
                                              "cluster secret; configure the same secret on both sides")
        elif not hmac.compare_digest(proof, _proof(self.secret, b"client", self._nonce, cnonce)):
            return self.fail(AUTH_FAILED, "wrong cluster secret (or none) from the peer")
        if self._timer is not None:
            self._timer.cancel()
        self.ready = True
        self.send([WELCOME, _proof(self.secret, b"server", self._nonce, cnonce)])
        log.debug("rpc_peer_accepted", peer=self.peername, listener=self.name)

    def frame(self, frame: list[Any]) -> None:
        kind = frame[0]
        if kind == CALL:
            self.handler.call(self, frame[1], frame[2], frame[3], frame[4], frame[5])
        elif kind == CANCEL:
            self.handler.cancel(self, frame[1])
        elif kind == CREDIT:
            self.handler.credit(self, frame[1], frame[2])
        else:
            raise ValueError(f"unexpected frame kind {kind!r} from a client")

    def lost(self, reason: str) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.handler.lost(self)

    # replies
    def result(self, call_id: int, value: Any) -> None:
        self.send([RESULT, call_id, value])

    def error(self, call_id: int, code: str, text: str) -> None:
        self.send([ERROR, call_id, code, text])

    def chunk(self, call_id: int, value: Any) -> None:
        self.send([CHUNK, call_id, value])

    def end(self, call_id: int) -> None:
        self.send([END, call_id])


class Sink:
    """Where one call's answer goes, by callbacks run on the loop from the connection. The
    deadline (monotonic seconds, inf for none) is checked by the connection's sweep."""

    __slots__ = ("deadline",)

    def __init__(self, deadline: float = float("inf")) -> None:
        self.deadline = deadline

    def result(self, value: Any) -> None:
        raise NotImplementedError

    def error(self, code: str, text: str) -> None:
        raise NotImplementedError

    def chunk(self, value: Any) -> None:
        raise NotImplementedError

    def end(self) -> None:
        raise NotImplementedError


class _Waiter(Sink):
    """A Sink that fills a Future (control requests and plain awaited calls)."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[Any], deadline: float) -> None:
        super().__init__(deadline)
        self.future = future

    def result(self, value: Any) -> None:
        if not self.future.done():
            self.future.set_result(value)

    def error(self, code: str, text: str) -> None:
        if not self.future.done():
            self.future.set_exception(RpcError(code, text))

    def chunk(self, value: Any) -> None:
        self.error(PROTOCOL, "a stream chunk for a plain request")

    end = chunk  # type: ignore[assignment]


class ClientPeer(Peer):
    """The calling side: proves the secret, then multiplexes calls by id. Each pending call's
    Sink gets its answer; a deadline that passes cancels the call on the server and tells the
    Sink `error(TIMEOUT)`; a lost connection tells every pending Sink `error(LOST)`."""

    def __init__(self, secret: bytes | None, name: str, address: str) -> None:
        super().__init__(secret, name)
        self.address = address
        self.pending: dict[int, Sink] = {}
        self.welcome: asyncio.Future[ClientPeer] = self._loop.create_future()
        self._ids = 0
        self._sweeping = False
        self._cnonce = b""
        self.server_name = ""

    def _handshake(self, frame: list[Any]) -> None:
        kind = frame[0]
        if kind == ERROR:
            return self._refused(frame[3])
        if kind == HELLO and not self._nonce:
            nonce, secured = frame[1], frame[2]
            self.server_name = str(frame[3]) if len(frame) > 3 else ""
            if not isinstance(nonce, bytes) or len(nonce) != 32:
                return self.fail(PROTOCOL, "malformed HELLO frame")
            if secured and self.secret is None:
                return self._refused("the peer requires the cluster secret, and none is configured here "
                                     "([cluster] secret or GENAPI_CLUSTER_SECRET)")
            if not secured and self.secret is not None:
                return self._refused("the peer has no cluster secret configured; it cannot prove it is ours")
            self._nonce = nonce
            self._cnonce = os.urandom(32)
            self.send([AUTH, _proof(self.secret, b"client", nonce, self._cnonce), self._cnonce])
        elif kind == WELCOME and self._nonce:
            if not hmac.compare_digest(frame[1], _proof(self.secret, b"server", self._nonce, self._cnonce)):
                return self._refused("the peer's proof of the cluster secret is wrong")
            self.ready = True
            if not self.welcome.done():
                self.welcome.set_result(self)
        else:
            self.fail(PROTOCOL, f"unexpected frame kind {kind!r} during the handshake")

    def _refused(self, text: str) -> None:
        self.fail(AUTH_FAILED, text)
        if not self.welcome.done():
            self.welcome.set_exception(RpcError(AUTH_FAILED, text))

    def frame(self, frame: list[Any]) -> None:
        kind = frame[0]
        call_id = frame[1]
        if kind == RESULT:
            sink = self.pending.pop(call_id, None)
            if sink is not None:
                sink.result(frame[2])
        elif kind == CHUNK:
            sink = self.pending.get(call_id)
            if sink is not None:
                sink.chunk(frame[2])
        elif kind == END:
            sink = self.pending.pop(call_id, None)
            if sink is not None:
                sink.end()
        elif kind == ERROR:
            if call_id == 0:
                log.warning("rpc_peer_error", peer=self.address, code=frame[2], error=frame[3])
                return
            sink = self.pending.pop(call_id, None)
            if sink is not None:
                sink.error(frame[2], frame[3])
        else:
            raise ValueError(f"unexpected frame kind {kind!r} from a server")

    def lost(self, reason: str) -> None:
        if not self.welcome.done():
            self.welcome.set_exception(RpcError(LOST, reason))
            self.welcome.exception()  # retrieved: nobody may be waiting any more
        pending, self.pending = self.pending, {}
        for sink in pending.values():
            sink.error(LOST, reason)

    # ----------------------------------------------------------------- calls
    def call(self, target: str, args: list[Any], timeout_ms: int | None, sink: Sink, stream: bool = False) -> int:
        """Sends one call; its answer goes to `sink`. Returns the call's id (for `cancel`)."""
        self._ids += 1
        call_id = self._ids
        self.pending[call_id] = sink
        self.send([CALL, call_id, target, args, timeout_ms, stream])
        if not self._sweeping and sink.deadline != float("inf"):
            self._sweeping = True
            self._loop.call_later(SWEEP_S, self._sweep)
        return call_id

    def cancel(self, call_id: int) -> None:
        """The caller is gone: the server stops the call; its answer, if any, is dropped."""
        if self.pending.pop(call_id, None) is not None:
            self.send([CANCEL, call_id])

    def credit(self, call_id: int, n: int) -> None:
        if call_id in self.pending:
            self.send([CREDIT, call_id, n])

    def _sweep(self) -> None:
        """Times out the calls whose deadline passed; runs every SWEEP_S while any has one."""
        now = monotonic()
        expired = [(cid, sink) for cid, sink in self.pending.items() if sink.deadline <= now]
        for cid, sink in expired:
            self.cancel(cid)
            sink.error(TIMEOUT, "deadline passed")
        if self.pending and not self.closed:
            self._loop.call_later(SWEEP_S, self._sweep)
        else:
            self._sweeping = False

    async def request(self, target: str, args: list[Any], timeout_s: float) -> Any:
        """One call awaited: its result, or RpcError."""
        fut: asyncio.Future[Any] = self._loop.create_future()
        self.call(target, args, int(timeout_s * 1000), _Waiter(fut, monotonic() + timeout_s))
        return await fut


def split_address(address: str) -> tuple[str, int]:
    """"host:port" (or "[v6]:port") → (host, port); ValueError naming the address otherwise."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'node address {address!r} must be "host:port"')
    return host.strip("[]"), int(port)


async def connect(address: str, secret: bytes | None, name: str, timeout_s: float = 5.0) -> ClientPeer:
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


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket (made before the loop runs, so a busy port is refused at start)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=1024, reuse_port=False)


async def listen(sock: socket.socket, secret: bytes | None, name: str, handler: Any) -> asyncio.Server:
    """Serves `sock`; its connections must prove the secret before `handler` sees a frame.
    `handler` has call(peer, id, target, args, timeout_ms, stream), cancel(peer, id),
    credit(peer, id, n) and lost(peer)."""
    loop = asyncio.get_running_loop()
    factory: Callable[[], ServerPeer] = lambda: ServerPeer(secret, name, handler)  # noqa: E731
    return await loop.create_server(factory, sock=sock)
