"""genapi RPC: the wire protocol between a gateway and its service nodes, both sides.

TCP, one connection per (gateway worker, node), every frame `4-byte big-endian length + a
msgpack array` whose first item is its kind. Many calls are multiplexed on a connection by id;
the frames one turn of the event loop produces leave in one write. The server side is a service
node's listener (calls) or the gateway's control port (pushes); the client side is the gateway
calling a node, or a node pushing to a gateway.

    HELLO   server → client  [0, nonce, secured, name]          first frame of every connection
            client → server  [0, b"", secured, name]            the client's greeting, only when no HELLO
                                                                came within 1 s: a server that is not
                                                                genapi RPC (HTTP) answers it at once
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
sent); without one the proofs are empty and the listeners bind to loopback only (the control
port's use of both rules: `host/control_auth.py`). The connection itself (framing, handshake,
batching, deadlines) is compiled: `_core/rpc.pyx`.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

from genapi import log
from genapi._core.rpc import ClientPeer, Gate, Peer, ServerPeer, Sink, connect, split_address
from genapi._core.vocab import (
    AUTH,
    AUTH_FAILED,
    CALL,
    CANCEL,
    CHUNK,
    CREDIT,
    END,
    ERROR,
    HELLO,
    INVALID,
    LOST,
    PROTOCOL,
    RAISED,
    REFUSED,
    RESULT,
    STREAM_WINDOW,
    TIMEOUT,
    UNKNOWN,
    WELCOME,
)
from genapi.errors import RpcError

__all__ = [
    "AUTH",
    "AUTH_FAILED",
    "CALL",
    "CANCEL",
    "CHUNK",
    "CREDIT",
    "END",
    "ERROR",
    "HELLO",
    "INVALID",
    "LOST",
    "PROTOCOL",
    "RAISED",
    "REFUSED",
    "RESULT",
    "STREAM_WINDOW",
    "TIMEOUT",
    "UNKNOWN",
    "WELCOME",
    "ClientPeer",
    "Peer",
    "RpcError",
    "ServerPeer",
    "Sink",
    "connect",
    "listen",
    "listening_socket",
    "loopback_only",
    "secret_from",
    "split_address",
]

# The frame kinds, the ERROR codes and STREAM_WINDOW are the compiled core's vocabulary
# (`_core/vocab.pxd`), named here for Python callers.


def secret_from(configured: str | None) -> bytes | None:
    """The cluster secret: the configured one, else GENAPI_CLUSTER_SECRET, else the contents of
    GENAPI_CLUSTER_SECRET_FILE, else none (`environment.cluster_secret_from_env`: a gateway's config
    has folded these in already, by the same rules)."""
    from genapi.environment import cluster_secret_from_env

    value = configured if configured else cluster_secret_from_env()
    return value.encode() if value else None


def loopback_only(host: str, secret: bytes | None, what: str) -> str:
    """Without a secret a listener serves this host only: any other address becomes loopback, said at start."""
    if secret is not None or host in ("127.0.0.1", "::1", "localhost"):
        return host
    log.warning(
        "listener_loopback_only",
        listener=what,
        requested_host=host,
        host="127.0.0.1",
        note="no cluster secret is set ([cluster] secret or GENAPI_CLUSTER_SECRET), so only this "
        "host may connect; set one to listen beyond loopback",
    )
    return "127.0.0.1"


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket (made before the loop runs, so a busy port is refused at start)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=1024, reuse_port=False)


async def listen(sock: socket.socket, secret: bytes | None, name: str, handler: Any) -> asyncio.Server:
    """Serves `sock`; its connections must prove the secret before `handler` sees a frame.
    `handler` has call(peer, id, target, args, timeout_ms, stream), cancel(peer, id),
    credit(peer, id, n) and lost(peer)."""
    loop = asyncio.get_running_loop()
    gate = Gate()  # this listener's connections still to authenticate, bounded
    factory: Callable[[], ServerPeer] = lambda: ServerPeer(secret, name, handler, gate)  # noqa: E731
    return await loop.create_server(factory, sock=sock)
