"""One worker process: the listening socket, the upgrade (routing, vsn, authentication), the
idle sweeper and shutdown, on the uvloop event loop. Each accepted socket is served by the
compiled `Connection` (`_core/connection.pyx`)."""
from __future__ import annotations

import asyncio
import errno
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
from .phoenix import origin_checker, serializer_for, topic_matcher
from .pipeline import Pipeline


class Gateway:
    """Everything one worker process serves: settings, pipeline, authenticator, connections."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        gw = settings.gateway
        self.pipeline = Pipeline(settings)
        self.auth = Authenticator(settings.auth)
        self.topic_allowed = topic_matcher(gw.topics)
        self.origin_allowed = origin_checker(gw.check_origin)
        self.ws_path = gw.path.rstrip("/") + "/websocket"
        self.connections: set[Connection] = set()
        self.server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.Task | None = None

    def upgrade(self, request: WSUpgradeRequest) -> Any:
        """Routes and authenticates an upgrade: 404 for other paths, 403 for an Origin that
        check_origin refuses, a bad vsn or a refused connect, else the connection (echoing
        `Sec-WebSocket-Protocol: phoenix`)."""
        target = urlsplit(request.path.decode("latin-1"))
        if target.path != self.ws_path:
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(404, b"not found"), None)
        headers = {k.lower(): v for k, v in request.headers.items()}
        origin = headers.get("origin")
        if origin is not None and self.origin_allowed is not None and not self.origin_allowed(
                origin, headers.get("host")):
            check = self.settings.gateway.check_origin
            log.warning("connect_refused", reason="origin not allowed", origin=origin,
                        check_origin=check if check is not True else f"true (host {headers.get('host')})",
                        hint="list the origin in [gateway] check_origin")
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(403), None)
        params = dict(parse_qsl(target.query, keep_blank_values=True))
        ser = serializer_for(params.get("vsn"))
        if ser is None:
            log.warning("connect_refused", reason="unsupported vsn", vsn=params.get("vsn"))
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(403), None)
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
        """Closes connections that sent no frame for idle_timeout_ms (Phoenix: 60 s)."""
        idle_ms = self.settings.gateway.idle_timeout_ms
        tick = max(min(idle_ms / 4000, 5.0), 0.05)
        limit = max(1, round(idle_ms / 1000 / tick))
        while True:
            await asyncio.sleep(tick)
            for conn in list(self.connections):
                conn.idle_ticks += 1
                if conn.idle_ticks > limit:
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
        await asyncio.sleep(0.05)
        self.pipeline.pool.shutdown()


class PortInUse(OSError):
    """The port is held by another process (another genapi included): refused at start."""


_held_locks: list[Any] = []  # the port locks of this process, held until it exits


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening SO_REUSEPORT socket that this gateway's workers share. Refused with
    PortInUse when another process holds the port: SO_REUSEPORT alone would let a second
    gateway (same user) bind beside the first and silently take half of its connections. So a
    fixed port is first locked (a lock file per host:port, against another genapi starting at
    the same moment) and probe-bound without SO_REUSEPORT (against any listener)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if port:
        _lock_port(host, port)
        probe = socket.socket(family, socket.SOCK_STREAM)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(exc.errno, "address already in use (another process listens on it: stop "
                                           "it or choose another --port)") from None
            raise
        finally:
            probe.close()
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _lock_port(host: str, port: int) -> None:
    """An exclusive lock on `<tmp>/genapi-<uid>/<host>-<port>.lock` for this process's life (its
    forked workers share it); the file holds the owner's pid for the message."""
    import fcntl
    import tempfile

    folder = os.path.join(tempfile.gettempdir(), f"genapi-{os.getuid()}")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    f = open(os.path.join(folder, f"{host.replace(':', '_')}-{port}.lock"), "a+")  # held for life
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        owner = f.read().strip()
        f.close()
        raise PortInUse(errno.EADDRINUSE, f"address already in use (by another genapi, pid {owner or '?'}: "
                                          "stop it or choose another --port)") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    _held_locks.append(f)


def sighup_ignored(*_args: object) -> None:
    """SIGHUP (a closed terminal, a reload by habit) never ends the gateway; reload is not
    supported yet, so it is logged and ignored."""
    log.warning("sighup_ignored", pid=os.getpid(),
                note="config reload is not supported yet: restart genapi to apply changes")


async def serve(settings: Settings, sock: socket.socket | None = None, ready: Any = None,
                handle_sighup: bool = True) -> None:
    """Runs one worker until SIGINT/SIGTERM. SIGHUP is logged and ignored (`handle_sighup`
    False: left as the caller set it, e.g. ignored in a supervisor's workers)."""
    gateway = Gateway(settings)
    await gateway.start(sock)
    gc.freeze()  # what startup built lives forever: keep the collector's full passes off it
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if handle_sighup:
        loop.add_signal_handler(signal.SIGHUP, sighup_ignored)
    gw = settings.gateway
    if ready is not None:
        ready(gateway)
    log.info("worker_ready", pid=os.getpid(), host=gw.host, port=gw.port)
    await stop.wait()
    await gateway.stop()
