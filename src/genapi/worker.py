"""One worker process: the picows listener, client connections and the uvloop event loop.

Every frame answering one read batch is gathered and written with a single `write` (the lesson
of bench/README.md); frames produced later by running calls are written at once.
"""
from __future__ import annotations

import asyncio
import os
import signal
import socket
from typing import Any, Coroutine
from urllib.parse import parse_qsl, urlsplit

from picows import (WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest,
                    WSUpgradeResponse, WSUpgradeResponseWithListener, ws_create_server)

from . import log
from ._core.decode import FrameError
from .auth import Authenticator, Identity, Refused, token_from_subprotocols
from .config import Settings
from .phoenix import CLOSE, HEARTBEAT, JOIN, LEAVE, OK_EMPTY, topic_matcher
from .phoenix import serializer_for
from .pipeline import Pipeline

TEXT = WSMsgType.TEXT
BINARY = WSMsgType.BINARY
WS_CLOSE = WSMsgType.CLOSE


class Connection(WSListener):
    """One client socket: its identity, joined topics and running calls."""

    def __init__(self, gateway: "Gateway", ser: Any, identity: Identity) -> None:
        self.gw = gateway
        self.pipeline = gateway.pipeline
        self.event = gateway.pipeline.event
        self.ser = ser
        self.identity = identity
        self.channels: dict[str, Any] = {}          # topic → join_ref
        self.tasks: dict[str, set[asyncio.Task]] = {}  # topic → running calls
        self.in_flight = 0
        self.out: list[bytes] = []
        self.batching = False
        self.idle_ticks = 0
        self.transport: WSTransport | None = None
        self._write: Any = None

    # ------------------------------------------------------------------ picows callbacks
    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self._write = transport.underlying_transport.write
        self.gw.connections.add(self)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.gw.connections.discard(self)
        for topic in list(self.tasks):
            self._cancel(topic)
        self._write = None

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        self.idle_ticks = 0
        self.batching = True
        try:
            mt = frame.msg_type
            if mt is TEXT:
                try:
                    msg = self.ser.decode(frame.get_payload_as_memoryview())
                except FrameError as exc:
                    self._frame_error(exc)
                else:
                    self.dispatch(msg, frame.payload_size)
            elif mt is BINARY:
                self._binary(frame)
            elif mt is WS_CLOSE:
                code = frame.get_close_code()
                # a close without a status code is answered with 1000, never with "code 0"
                transport.send_close(WSCloseCode.OK if code is WSCloseCode.NO_INFO else code)
                transport.disconnect()
        except Exception:  # a client's message never takes the worker down
            log.error("frame_handler_crashed", exc_info=True)
        if frame.last_in_buffer:
            self.batching = False
            if self.out:
                self.flush()

    # ------------------------------------------------------------------ output
    def send(self, data: bytes) -> None:
        self.out.append(data)
        if not self.batching:
            self.flush()

    def flush(self) -> None:
        out = self.out
        if self._write is not None:
            self._write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    # ------------------------------------------------------------------ protocol
    def dispatch(self, msg: tuple, size: int) -> None:
        join_ref, ref, topic, event, payload = msg
        ser = self.ser
        if event == self.event:
            current = self.channels.get(topic, _MISSING)
            if current is _MISSING:
                self.send(ser.reply(None, ref, topic, "error", {"reason": "unmatched topic"}))
            elif join_ref is None or join_ref == current:
                self.pipeline.handle(self, current, ref, topic, payload, size)
            return
        if topic == "phoenix" and event == HEARTBEAT:
            self.send(ser.reply(None, ref, "phoenix", "ok", {}))
        elif event == JOIN:
            self._join(join_ref, ref, topic)
        elif event == LEAVE:
            self._leave(join_ref, ref, topic)
        else:
            current = self.channels.get(topic, _MISSING)
            if current is _MISSING:
                self.send(ser.reply(None, ref, topic, "error", {"reason": "unmatched topic"}))
            elif join_ref is None or join_ref == current:
                self.send(ser.reply(current, ref, topic, "error", {
                    "reason": f'unsupported event "{event}"; requests use the event "{self.event}"'}))

    def _join(self, join_ref: Any, ref: Any, topic: str) -> None:
        ser = self.ser
        if not self.gw.topic_allowed(topic):
            log.warning("join_unmatched_topic", topic=topic)
            self.send(ser.reply(None, ref, topic, "error", {"reason": "unmatched topic"}))
            return
        old = self.channels.get(topic, _MISSING)
        if old is _MISSING and len(self.channels) >= self.gw.settings.gateway.max_channels:
            self.send(ser.reply(join_ref, ref, topic, "error", {"reason": "too many channels joined"}))
            return
        self.channels[topic] = join_ref
        self.send(ser.reply(join_ref, ref, topic, "ok", {}))
        if old is not _MISSING:  # duplicate join: close the old one after the new reply
            self._cancel(topic)
            self.send(ser.message(old, old, topic, CLOSE, {}))

    def _leave(self, join_ref: Any, ref: Any, topic: str) -> None:
        ser = self.ser
        current = self.channels.get(topic, _MISSING)
        if current is _MISSING:
            self.send(ser.reply(join_ref, ref, topic, "ok", {}))
        elif join_ref is None or join_ref == current:
            del self.channels[topic]
            self._cancel(topic)
            self.send(ser.reply(current, ref, topic, "ok", {}))
            self.send(ser.message(current, current, topic, CLOSE, {}))
        # a stale join_ref gets no answer (the client raced a server close)

    def _binary(self, frame: WSFrame) -> None:
        if self.ser.decode_binary is None:
            self.send(self.ser.message(None, None, "phoenix", "phx_error",
                                       {"reason": "binary frames need the V2 serializer (vsn=2.0.0)"}))
            return
        try:
            join_ref, ref, topic, event, _data = self.ser.decode_binary(frame.get_payload_as_memoryview())
        except FrameError as exc:
            self._frame_error(exc)
            return
        current = self.channels.get(topic, _MISSING)
        if current is _MISSING:
            self.send(self.ser.reply(None, ref, topic, "error", {"reason": "unmatched topic"}))
        elif join_ref is None or join_ref == current:
            self.send(self.ser.reply(current, ref, topic, "error", {
                "reason": "binary payloads are not supported; send the request as a JSON text frame"}))

    def _frame_error(self, exc: FrameError) -> None:
        log.info("frame_invalid", error=str(exc))
        reason = f"invalid frame: {exc}"
        if exc.ref is not None and exc.topic is not None:
            self.send(self.ser.reply(self.channels.get(exc.topic), exc.ref, exc.topic, "error", {"reason": reason}))
        else:
            self.send(self.ser.message(None, exc.ref, "phoenix", "phx_error", {"reason": reason}))

    # ------------------------------------------------------------------ running calls
    def spawn(self, topic: str, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        bucket = self.tasks.get(topic)
        if bucket is None:
            bucket = self.tasks[topic] = set()
        bucket.add(task)
        self.in_flight += 1
        task.add_done_callback(lambda t: self._task_done(topic, t))

    def _task_done(self, topic: str, task: asyncio.Task) -> None:
        self.in_flight -= 1
        bucket = self.tasks.get(topic)
        if bucket is not None:
            bucket.discard(task)
            if not bucket:
                del self.tasks[topic]
        if not task.cancelled() and task.exception() is not None:
            log.error("task_crashed", error=repr(task.exception()))

    def _cancel(self, topic: str) -> None:
        for task in self.tasks.pop(topic, ()):
            task.cancel()

    def close(self, code: WSCloseCode, reason: bytes = b"") -> None:
        t = self.transport
        if t is not None and not t.is_disconnected:
            t.send_close(code, reason)
            t.disconnect()


_MISSING = object()


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
        self.server: asyncio.base_events.Server | None = None

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
        asyncio.get_running_loop().create_task(self._idle_sweeper())

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
        for conn in list(self.connections):
            conn.close(WSCloseCode.GOING_AWAY, b"server shutting down")
        await asyncio.sleep(0.05)
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
