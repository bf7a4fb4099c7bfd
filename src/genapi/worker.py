"""One worker process: the listening socket, the upgrade (routing, vsn, authentication), the
idle sweeper and shutdown, on the uvloop event loop. Each accepted socket is served by the
compiled `Connection` (`_core/connection.pyx`)."""
from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from picows import WSCloseCode, WSUpgradeRequest, WSUpgradeResponse, WSUpgradeResponseWithListener, ws_create_server

from . import log
from ._core.connection import Connection
from .auth import Authenticator, Refused, token_from_subprotocols
from .config import Settings
from .phoenix import serializer_for, topic_matcher
from .pipeline import Pipeline


class Gateway:
    """Everything one worker process serves: settings, pipeline, authenticator, connections."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        gw = settings.gateway
        self.pipeline = Pipeline(settings)
        self.auth = Authenticator(settings.auth)
        self.topic_allowed = topic_matcher(gw.topics)
        self.ws_path = gw.path.rstrip("/") + "/websocket"
        self.connections: set[Connection] = set()
        self.aborted = 0  # connections dropped for not reading their output (Connection.abort)
        self.server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.Task | None = None

    def upgrade(self, request: WSUpgradeRequest) -> Any:
        """Routes and authenticates an upgrade: 404 for other paths, 403 for a bad vsn or a
        refused connect, else the connection (echoing `Sec-WebSocket-Protocol: phoenix`)."""
        target = urlsplit(request.path.decode("latin-1"))
        if target.path != self.ws_path:
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(404, b"not found"), None)
        params = dict(parse_qsl(target.query, keep_blank_values=True))
        ser = serializer_for(params.get("vsn"))
        if ser is None:
            log.warning("connect_refused", reason="unsupported vsn", vsn=params.get("vsn"))
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(403), None)
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            token, offered = token_from_subprotocols(headers.get("sec-websocket-protocol"))
            identity = self.auth.authenticate(params, headers, token or params.get("token"))
        except Refused as exc:
            log.warning("connect_refused", reason=str(exc))
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(403), None)
        except Exception:
            log.error("connect_crashed", exc_info=True)
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(403), None)
        conn = Connection(self, ser, identity)
        if offered:
            return WSUpgradeResponseWithListener(
                WSUpgradeResponse.create_101_response({"Sec-WebSocket-Protocol": "phoenix"}), conn)
        return conn

    async def start(self, sock: socket.socket | None = None) -> None:
        gw = self.settings.gateway
        kwargs: dict[str, Any] = dict(
            disconnect_on_exception=False, enable_auto_ping=False, websocket_handshake_timeout=10,
            max_frame_size=2 * gw.max_payload_bytes + 65536, logger_name="genapi.picows")
        if sock is not None:
            self.server = await ws_create_server(self.upgrade, sock=sock, **kwargs)
        else:
            self.server = await ws_create_server(self.upgrade, gw.host, gw.port, reuse_port=True, **kwargs)
        self._sweeper = asyncio.get_running_loop().create_task(self._idle_sweeper())  # keep a reference

    async def _idle_sweeper(self) -> None:
        """Closes connections that sent no frame for idle_timeout_ms (Phoenix: 60 s); one that
        is not reading its output is aborted instead (`Connection.close`)."""
        idle_ms = self.settings.gateway.idle_timeout_ms
        tick = max(min(idle_ms / 4000, 5.0), 0.05)
        limit = max(1, round(idle_ms / 1000 / tick))
        while True:
            await asyncio.sleep(tick)
            for conn in list(self.connections):
                conn.idle_ticks += 1
                if conn.idle_ticks > limit:
                    if conn.idle_ticks == limit + 1:
                        log.info("connection_idle_closed")
                    conn.close(WSCloseCode.GOING_AWAY, b"idle timeout")

    async def stop(self) -> None:
        """Closes every client with 1001 (so phoenix.js reconnects elsewhere) and the listener."""
        if self.server is not None:
            self.server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(self.connections):
            conn.close(WSCloseCode.GOING_AWAY, b"server shutting down")
        # a close waits for the client to read what is left: a moment for that, then drop the rest
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.0
        await asyncio.sleep(0.05)
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort("shutdown")
        self.pipeline.pool.shutdown()


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening SO_REUSEPORT socket that several workers can share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve(settings: Settings, sock: socket.socket | None = None, ready: Any = None) -> None:
    """Runs one worker until SIGINT/SIGTERM."""
    gateway = Gateway(settings)
    await gateway.start(sock)
    gc.freeze()  # what startup built lives forever: keep the collector's full passes off it
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    gw = settings.gateway
    if ready is not None:
        ready(gateway)
    log.info("worker_ready", pid=os.getpid(), host=gw.host, port=gw.port)
    await stop.wait()
    await gateway.stop()
