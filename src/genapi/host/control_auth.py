"""The control port's authentication, in one place: who may talk to a gateway's control port.

- **The secret** is the cluster secret: the gateway's `[cluster] secret` as its config
  resolved it (GENAPI_CLUSTER_SECRET or GENAPI_CLUSTER_SECRET_FILE over the file's `secret` or
  `secret_file`), else none (`rpc.secret_from`; the same secret the gateway and its service
  nodes use for node RPC). A client (`ControlClient`: `genapi admin`, `genapi ratelimit`,
  `genapi apis`, `RelayClient`, a node's pushes) passes one explicitly or takes
  GENAPI_CLUSTER_SECRET, else GENAPI_CLUSTER_SECRET_FILE's contents.
- **The proof** is the RPC handshake's challenge–response, shared with node RPC and compiled
  (`_core/rpc.pyx`): the server's HELLO carries a nonce, the client answers
  HMAC(secret, "client" nonce cnonce) and the server proves itself back with
  HMAC(secret, "server" nonce cnonce); the secret itself is never sent. A connection that fails
  it is closed with ERROR `auth` before the control plane sees a frame.
- **Without a secret** the control port listens on loopback only: any other `[gateway]
  control_host` becomes 127.0.0.1, said at start (`listener_loopback_only`), so only this host
  may connect.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from genapi.config import Settings
from genapi.nodes import rpc

SERVER_NAME = "genapi-control"  # what the control port says it is in its HELLO


def server_secret(settings: Settings) -> bytes | None:
    """The secret the control port demands: [cluster] secret (the config folded GENAPI_CLUSTER_SECRET in), else none."""
    return rpc.secret_from(settings.cluster.secret)


def client_secret(given: str | bytes | None) -> bytes | None:
    """The secret a control client proves: the one given, else GENAPI_CLUSTER_SECRET(_FILE), else none."""
    return rpc.secret_from(given.decode() if isinstance(given, bytes) else given)


def control_host(settings: Settings) -> str:
    """The address the control port may listen on: `[gateway] control_host`, or loopback when
    there is no secret (said at start)."""
    return rpc.loopback_only(settings.gateway.control_host, server_secret(settings), "control port")


async def serve(sock: socket.socket, secret: bytes | None, handler: Any) -> asyncio.Server:
    """Serves the control port's `sock`: a connection reaches `handler` only once it proved `secret`."""
    return await rpc.listen(sock, secret, SERVER_NAME, handler)


async def connect(address: str, secret: bytes | None, name: str, timeout_s: float = 5.0) -> rpc.ClientPeer:
    """A connection to the control port at "host:port" that proved `secret`; RpcError(LOST or
    AUTH_FAILED) otherwise."""
    return await rpc.connect(address, secret, name, timeout_s)
