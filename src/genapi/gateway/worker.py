"""One worker process: the listening socket (accepting, and refusing cleanly at the open-files
limit), the upgrade (routing, vsn, authentication), the idle sweeper and shutdown, on the uvloop
event loop. Each accepted socket is served by the compiled `Connection` (`_core/connection.pyx`)."""
from __future__ import annotations

import asyncio
import errno
import gc
import itertools
import json
import logging
import os
import resource
import signal
import socket
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiofastnet
import msgspec
from picows import WSAutoPingStrategy, WSCloseCode, WSUpgradeRequest, WSUpgradeResponse, WSUpgradeResponseWithListener
from picows.picows import WSProtocol  # type: ignore[attr-defined]  # not in picows.pyi

from genapi import log, relay, trace
from genapi._core.connection import Connection
from genapi._core.reply import log_calls
from genapi.config import ConfigError, Settings
from genapi.errors import AT_CONNECTION_LIMIT, headers_too_large
from genapi.gateway.auth import Authenticator, Refused, choose_token, client_ip, token_from_subprotocols
from genapi.gateway.phoenix import origin_checker, serializer_for, topic_matcher
from genapi.host import metrics
from genapi.host.ratelimit import RateLimits, limits_wanted, table_path
from genapi.host.snapshot import SnapshotError, SnapshotReader, default_path
from genapi.relay.groups import Groups
from genapi.relay.seats import LocalRelay, PipeRelay
from genapi.request.pipeline import Pipeline


class Gateway:
    """Everything one worker process serves: settings, pipeline, authenticator, connections."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        gw = settings.gateway
        if gw.metrics:  # before the pipeline binds functions: each Entry holds its row
            metrics.start()
        self.pipeline = Pipeline(settings)
        self.auth = Authenticator(settings.auth)
        self.topic_allowed = topic_matcher(gw.topics)
        self.origin_allowed = origin_checker(gw.check_origin)
        self.trusted_proxies = frozenset(gw.trusted_proxies)
        self.ws_path = gw.path.rstrip("/") + "/websocket"
        self.connections: set[Connection] = set()
        self.aborted = 0  # connections dropped for not reading their output (Connection.abort)
        self.joins = 0    # channel joins accepted (for /metrics)
        self.accepted = 0  # connections upgraded (for /metrics)
        self._connection_ids = itertools.count(1)
        log_calls(log.enabled("info"))
        self.server: Listener | None = None
        self.control: Any = None  # the ControlPlane (control.py), once serving
        self.limits: Any = None   # ratelimit.RateLimits, with [rate_limiter] enabled
        self._sweeper: asyncio.Task | None = None
        self.index = int(os.environ.get("GENAPI_WORKER_INDEX", "0"))
        self.generation = 0
        self.host: Any = None  # async ready() and metrics(): the host's view (the master's, or this worker's)

    async def http(self, path: str) -> tuple[int, str, bytes]:
        """/health: this worker answers; /ready: every worker up and on the current config
        generation (503 otherwise); /metrics: the whole host's, in the Prometheus text format."""
        if path == "/health":
            return 200, "text/plain", b"ok\n"
        if path == "/ready":
            ready = await self.host.ready()
            return (200 if ready["ready"] else 503), "application/json", json.dumps(ready).encode() + b"\n"
        if not self.settings.gateway.metrics:
            return 503, "text/plain", b"metrics are off ([gateway] metrics = false)\n"
        return 200, metrics.CONTENT_TYPE, (await self.host.metrics()).encode()

    def metrics_snapshot(self) -> dict[str, Any]:
        return {**metrics.snapshot(self), "index": self.index, "pid": os.getpid(), "generation": self.generation}

    def next_connection_id(self) -> str:
        """`<pid>.<n>`: unique on the host, so log lines of one connection can be told apart."""
        return f"{os.getpid()}.{next(self._connection_ids)}"

    def upgrade(self, request: WSUpgradeRequest, peer: str | None = None) -> Any:
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
            identity = self.auth.authenticate(params, headers, choose_token(token, params.get("token")))
        except Refused as exc:
            log.warning("connect_refused", reason=str(exc))
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(403), None)
        except Exception:
            log.error("connect_crashed", exc_info=True)
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(403), None)
        ip = client_ip(peer, headers.get("x-forwarded-for"), self.trusted_proxies)
        if ip is not None:
            identity = msgspec.structs.replace(identity, ip=ip)
        tp = trace.valid(params.get("traceparent"))
        if tp is not None:
            identity = msgspec.structs.replace(identity, traceparent=tp)
        conn = Connection(self, ser, identity)
        self.accepted += 1
        if offered:
            return WSUpgradeResponseWithListener(
                WSUpgradeResponse.create_101_response({"Sec-WebSocket-Protocol": "phoenix"}), conn)
        return conn

    def protocol(self, peer: str | None = None) -> WSProtocol:
        """A new socket's picows protocol, as picows's `ws_create_server` builds it (picows is
        pinned: this is its 2.3.1 constructor); picows logs to genapi.picows (log.py formats it)."""
        gw = self.settings.gateway
        return WSProtocol(None, None, False, lambda request: self.upgrade(request, peer), _PICOWS_LOGGER,
                          False,   # disconnect_on_exception
                          10,      # websocket_handshake_timeout (s)
                          False, 20, 20, WSAutoPingStrategy.PING_WHEN_IDLE,  # no auto ping
                          False,   # enable_auto_pong: the connection answers pings (checks RSV bits)
                          gw.max_message_bytes,  # max_frame_size
                          None,    # extra_headers
                          16 * 1024)  # read_buffer_init_size

    async def start(self, sock: socket.socket | None = None) -> None:
        gw = self.settings.gateway
        if sock is None:
            sock = listening_socket(gw.host, gw.port)
        self.server = Listener(sock, self.protocol, self.http)
        self.server.start()
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

    async def stop(self, drain_s: float = 0.0) -> None:
        """Stops accepting; lets in-flight calls finish for up to `drain_s`; then closes every
        client with 1001 (so phoenix.js reconnects elsewhere), in batches so they do not all
        come back at once, and drops what did not close within a second."""
        if self.server is not None:
            self.server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_s
        # a client that is not reading its output holds calls that cannot finish: not waited for
        while loop.time() < deadline and any(c.in_flight and not c.writing_paused for c in self.connections):
            await asyncio.sleep(0.02)
        busy = sum(c.in_flight for c in self.connections if not c.writing_paused)
        if busy:
            log.warning("drain_timeout", in_flight=busy, drain_s=drain_s)
        conns = list(self.connections)
        for i in range(0, len(conns), CLOSE_BATCH):
            for conn in conns[i:i + CLOSE_BATCH]:
                conn.close(WSCloseCode.GOING_AWAY, b"server shutting down")
            if i + CLOSE_BATCH < len(conns):
                await asyncio.sleep(CLOSE_PAUSE_S)
        # a close waits for the client to read what is left: a moment for that, then drop the rest
        deadline = loop.time() + 1.0
        await asyncio.sleep(0.05)
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort("shutdown")
        self.pipeline.nodes.close()
        self.pipeline.pool.shutdown()


CLOSE_BATCH = 100     # clients closed at once when a worker stops
CLOSE_PAUSE_S = 0.02  # between batches: reconnects spread over time, not a stampede


_PICOWS_LOGGER = logging.getLogger("genapi.picows")
HEAD_LIMIT = 16 * 1024  # picows drops (without an answer) an upgrade request whose head reaches this


class Handshake(asyncio.Protocol):
    """Reads a new socket's HTTP upgrade request ahead of picows, only to answer 431 when its
    head reaches picows's 16 KB limit (picows would drop the socket without a word, e.g. on a
    100 KB token); a head under it is handed to picows, with the socket, after one look."""

    __slots__ = ("buf", "draining", "http", "transport", "ws")

    def __init__(self, ws: WSProtocol, http: Any = None) -> None:
        self.ws = ws
        self.http = http  # async (path) -> (status, content type, body): /health, /ready, /metrics
        self.buf = b""
        self.draining = False
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.ws.connection_made(transport)  # picows's handshake timeout runs from here

    def data_received(self, data: bytes) -> None:
        if self.draining:
            return
        buf = self.buf + data if self.buf else data
        end = buf.find(b"\r\n\r\n")
        if end < 0 and len(buf) < HEAD_LIMIT:
            self.buf = buf
            return
        self.buf = b""
        if end < 0 or end >= HEAD_LIMIT:
            self._refuse()
            return
        if self.http is not None and (path := _plain_get(buf[:end])) is not None:
            self.draining = True
            task = asyncio.ensure_future(self._answer(path))
            _answering.add(task)
            task.add_done_callback(_answering.discard)
            return
        ws = self.ws
        self.transport.set_protocol(ws)
        view = memoryview(buf)
        while view:  # picows is a buffered protocol: copy into its read buffer
            into = ws.get_buffer(len(view))
            n = min(len(into), len(view))
            into[:n] = view[:n]
            ws.buffer_updated(n)
            view = view[n:]

    async def _answer(self, path: str) -> None:
        """A plain HTTP GET of /health, /ready or /metrics (load balancers, probes, Prometheus)."""
        try:
            status, ctype, body = await self.http(path)
        except Exception:
            log.error("http_endpoint_failed", path=path, exc_info=True)
            status, ctype, body = 500, "text/plain", b"internal error\n"
        reason = {200: "OK", 503: "Service Unavailable"}.get(status, "Internal Server Error")
        self.transport.write(b"HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Type: %s\r\n"
                             b"Content-Length: %d\r\n\r\n%s"
                             % (status, reason.encode(), ctype.encode(), len(body), body))
        self.transport.close()

    def _refuse(self) -> None:
        log.warning("connect_refused", reason="request headers too large", limit=HEAD_LIMIT)
        body = headers_too_large(HEAD_LIMIT).encode()
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n"
                             b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        # read and drop what the client still sends, so closing does not reset the answer away
        self.draining = True
        self.transport.write_eof()
        asyncio.get_running_loop().call_later(2.0, self.transport.close)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.ws.connection_lost(exc)


HTTP_PATHS = frozenset({"/health", "/ready", "/metrics"})
_answering: set[asyncio.Future[None]] = set()  # plain HTTP answers under way (a reference each)


def _plain_get(head: bytes) -> str | None:
    """The path of a plain (not upgrade) `GET /health|/ready|/metrics`, else None."""
    line, _, rest = head.partition(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3 or parts[0] != b"GET" or b"upgrade:" in rest.lower():
        return None
    path = parts[1].split(b"?", 1)[0].decode("latin-1")
    return path if path in HTTP_PATHS else None


def raise_fd_limit() -> int:
    """Raises this process's soft RLIMIT_NOFILE to the hard limit (each connection holds one
    descriptor) and logs the figure; returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("fd_limit_not_raised", soft=soft, hard=hard, error=str(exc))
    log.info("fd_limit", open_files=soft, hard=hard)
    if soft < 4096:
        log.warning("fd_limit_low", open_files=soft,
                    hint="each connection holds one descriptor; raise the hard limit (ulimit -Hn)")
    return soft


_AT_LIMIT = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
            b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
            % (len(AT_CONNECTION_LIMIT), AT_CONNECTION_LIMIT.encode()))


class Listener:
    """Accepts connections on the listening socket and serves each with picows.

    At the open-files limit (accept fails with EMFILE) it never spins: one descriptor is kept in
    reserve; it is freed to accept each waiting connection, answer it 503 and close it, then
    taken again, so excess clients are refused at once instead of waiting in the backlog. Should
    even that fail, accepting pauses for PAUSE seconds. When connections leave, accepting just
    works again."""

    PAUSE = 0.5
    BATCH = 256  # accepts per readiness event, so one burst cannot hold up the loop

    def __init__(self, sock: socket.socket, protocol: Callable[[str | None], WSProtocol], http: Any = None) -> None:
        self.sock = sock
        self.protocol = protocol
        self.http = http
        self.loop = asyncio.get_running_loop()
        self.reserve: int | None = _reserve()
        self.paused: asyncio.TimerHandle | None = None
        self.serving = False
        self.refused = 0
        self._tasks: set[asyncio.Task] = set()

    def start(self) -> None:
        self.serving = True
        self.loop.add_reader(self.sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(self.BATCH):
            try:
                conn, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in _AT_LIMIT:
                    self._at_limit(exc)
                else:
                    log.error("accept_failed", error=f"{type(exc).__name__}: {exc}")
                    self._pause()
                return
            task = self.loop.create_task(self._serve(conn, addr[0] if isinstance(addr, tuple) else None))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, conn: socket.socket, peer: str | None) -> None:
        try:
            await aiofastnet.connect_accepted_socket(self.loop, lambda: Handshake(self.protocol(peer), self.http), conn)
        except Exception as exc:
            conn.close()
            log.warning("accept_failed", error=f"{type(exc).__name__}: {exc}")

    def _at_limit(self, exc: OSError) -> None:
        """Refuses every waiting connection with the reserve descriptor, or pauses."""
        refused = 0
        while self.reserve is not None:
            os.close(self.reserve)
            self.reserve = None
            try:
                conn, _addr = self.sock.accept()
            except OSError:
                conn = None
            if conn is not None:
                _refuse(conn)
                refused += 1
            self.reserve = _reserve()
            if conn is None:
                break
        self.refused += refused
        log.warning("accept_refused", reason=exc.strerror, refused=refused, total_refused=self.refused)
        if self.reserve is None:
            self._pause()

    def _pause(self) -> None:
        if self.paused is None and self.serving:
            self.loop.remove_reader(self.sock.fileno())
            self.paused = self.loop.call_later(self.PAUSE, self._resume)

    def _resume(self) -> None:
        self.paused = None
        if self.reserve is None:
            self.reserve = _reserve()
        if self.serving:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def close(self) -> None:
        if not self.serving:
            return
        self.serving = False
        if self.paused is not None:
            self.paused.cancel()
            self.paused = None
        else:
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        if self.reserve is not None:
            os.close(self.reserve)
            self.reserve = None


def _reserve() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def _refuse(conn: socket.socket) -> None:
    """503 and close, at once: read what the client already sent (so the close is not a reset
    that loses the answer), answer, close."""
    try:
        conn.setblocking(False)
        try:
            conn.recv(65536)
        except OSError:
            pass
        conn.send(_REFUSAL)
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        conn.close()


class PortInUse(OSError):
    """The port is held by another process (another genapi included): refused at start."""


_held_locks: list[Any] = []  # the port locks of this process, held until it exits


def listening_socket(host: str, port: int, listen: bool = True) -> socket.socket:
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
    if listen:  # a master holds the port bound without listening: it never takes a connection
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


async def serve(settings: Settings, sock: socket.socket | None = None, ready: Any = None,
                handle_sighup: bool = True, control: socket.socket | None = None,
                master: socket.socket | None = None) -> None:
    """Runs one worker until SIGINT/SIGTERM (or its master says drain, or is gone). Alone
    (`master` None), it also serves the control port's socket `control` and SIGHUP reloads the
    config file's functions. Under a master it loads the master's config snapshots."""
    from genapi.host.control import ControlPlane

    loop = asyncio.get_running_loop()
    loop.set_exception_handler(log.loop_exception)
    raise_fd_limit()
    gateway = Gateway(settings)
    stop = asyncio.Event()
    drain = [settings.gateway.shutdown_grace_ms / 1000]
    link = None
    if limits_wanted(settings.rate_limiter):  # the table is the master's (a lone worker's own)
        path = table_path(settings.gateway.host, settings.gateway.port)
        rl = settings.rate_limiter
        gateway.limits = RateLimits.open(rl, path) if master is not None else RateLimits.create(rl, path)
        gateway.pipeline.dispatcher.limiter = gateway.limits.limiter
    seats = gateway.pipeline.seats
    relay.use(seats)
    groups = None
    if master is not None:
        link = MasterLink(master, gateway, stop, drain)
        await link.start()  # the current snapshot, before a single connection is accepted
        sock = reuseport_socket(settings.gateway.host, settings.gateway.port)
    else:  # alone, this worker is the relay groups' authority
        local = LocalRelay(Groups(settings.relay, lambda _worker, tokens, payload: seats.deliver(tokens, payload)),
                           seats)
        seats.link = local
        groups = local.groups
    gateway.host = link.host if link is not None else LoneHost(gateway, groups)
    await gateway.start(sock)
    gateway.control = ControlPlane(gateway.pipeline, settings)
    gateway.control.limits = gateway.limits
    gateway.control.relay = groups
    if master is None:
        gateway.control.inspect = gateway.host.inspect
        await gateway.control.start(control)
    gc.freeze()  # what startup built lives forever: keep the collector's full passes off it
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if handle_sighup:
        loop.add_signal_handler(signal.SIGHUP, lambda: reload_functions(gateway))
    gw = settings.gateway
    if ready is not None:
        ready(gateway)
    log.info("worker_ready", pid=os.getpid(), host=gw.host, port=gw.port)
    await stop.wait()
    await gateway.control.stop()
    await gateway.stop(drain[0])
    if link is not None:
        link.close()
    if gateway.limits is not None:
        gateway.limits.close(owner=master is None)


def reload_functions(gateway: Gateway) -> None:
    """SIGHUP on a lone worker: the config file's functions again (pushed ones stay)."""
    from genapi.config import load

    settings = gateway.settings
    try:
        fresh = load(None if settings.source == "<embedded default>" else settings.source)
        old = [(c.service, c.request_type, c.version) for c in settings.functions]
        functions = fresh.functions if gateway.control is None else gateway.control.keep_disabled(fresh.functions)
        gateway.pipeline.replace(old, functions)
    except (ConfigError, ValueError) as exc:
        log.error("config_reload_failed", source=settings.source, error=str(exc))
        return
    gateway.settings = msgspec.structs.replace(settings, functions=fresh.functions)
    log.warning("config_reloaded", source=settings.source, functions=len(fresh.functions))


class LoneHost:
    """The host's view when this worker is the whole gateway (`--workers 1`)."""

    def __init__(self, gateway: Gateway, groups: Groups | None) -> None:
        self.gateway = gateway
        self.groups = groups

    def _up(self) -> bool:
        return self.gateway.server is not None and self.gateway.server.serving

    async def ready(self) -> dict[str, Any]:
        up = self._up()
        return {"ready": up, "workers": 1, "live": 1 if up else 0, "generation": self.gateway.generation,
                "behind": []}

    async def inspect(self) -> dict[str, Any]:
        """The host for `genapi admin status|nodes`: this one worker."""
        snap = self.gateway.metrics_snapshot()
        worker = {"index": 0, "pid": os.getpid(), "alive": True, "ready": self._up(),
                  "generation": self.gateway.generation, "restarts": 0, "recent_crashes": 0,
                  "connections": snap["connections"], "in_flight": snap["in_flight"], "nodes": snap["nodes"]}
        return {"generation": self.gateway.generation, "restarts": 0, "workers": [worker]}

    async def metrics(self) -> str:
        relay = self.groups.stats() if self.groups is not None else {}
        return metrics.render([self.gateway.metrics_snapshot()], {"generation": self.gateway.generation,
                                                                  "restarts": 0, "relay": relay})


class MasterHost:
    """The host's view under a master: asked over the pipe (the master knows every worker)."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self.write = write
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)

    async def _ask(self, what: str) -> Any:
        n = next(self._ids)
        fut = self.pending[n] = asyncio.get_running_loop().create_future()
        self.write(json.dumps({"host": what, "id": n}).encode() + b"\n")
        try:
            return await asyncio.wait_for(fut, 5.0)
        finally:
            self.pending.pop(n, None)

    async def ready(self) -> dict[str, Any]:
        return dict(await self._ask("ready"))

    async def metrics(self) -> str:
        return str(await self._ask("metrics"))

    def answered(self, message: dict[str, Any]) -> None:
        fut = self.pending.get(message.get("host_re", 0))
        if fut is not None and not fut.done():
            fut.set_result(message.get("out"))


class MasterLink:
    """A worker's pipe to its master: config generations in (loaded, then acknowledged), drain
    in, relay-group operations out and their answers and deliveries in; EOF means the master is
    gone, and the worker drains and exits."""

    def __init__(self, sock: socket.socket, gateway: Gateway, stop: asyncio.Event, drain: list[float]) -> None:
        self.sock = sock
        self.gateway = gateway
        self.stop = stop
        self.drain = drain
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.snapshots = SnapshotReader(default_path(gateway.settings.gateway.host, gateway.settings.gateway.port))
        self.seats = gateway.pipeline.seats
        self.relay = PipeRelay(self._write)
        self.host = MasterHost(self._write)
        self.task: asyncio.Task[None] | None = None

    def _write(self, line: bytes) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(line)

    async def start(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(sock=self.sock, limit=2 ** 24)
        self.seats.link = self.relay
        while True:  # the first generation, before serving
            message = await self._next()
            if message is None:
                raise SystemExit(0)  # the master went away before we served
            if self._handle(message) == "gen":
                break
        self.task = asyncio.ensure_future(self._read())

    async def _next(self) -> dict[str, Any] | None:
        assert self.reader is not None
        line = await self.reader.readline()
        if not line:
            return None
        try:
            if line.startswith(b'{"rd":'):  # a relayed message: its payload stays encoded
                d = _decode_delivery(line)
                self.seats.deliver(d.rd, bytes(d.p))
                return {}
            message = json.loads(line)
        except (ValueError, msgspec.ValidationError):
            log.warning("master_message_invalid", line=line[:200])
            return {}
        return message if isinstance(message, dict) else {}

    def _handle(self, message: dict[str, Any]) -> str | None:
        if "rr" in message:
            self.relay.answered(message)
            return "relay"
        if "collect" in message:  # the master gathers the host's metrics
            self._write(msgspec.json.encode({"collected": message["collect"], "m": self.gateway.metrics_snapshot()})
                        + b"\n")
            return "collect"
        if "host_re" in message:
            self.host.answered(message)
            return "host"
        if isinstance(message.get("gen"), int):
            self._load(message["gen"])
            return "gen"
        if "limits" in message:
            limits = self.gateway.limits
            if limits is not None:
                try:
                    limits.update(message["limits"])
                except (ConfigError, ValueError) as exc:
                    log.error("rate_limits_not_applied", error=str(exc))
            self._write(json.dumps({"limits_ack": message.get("seq", 0)}).encode() + b"\n")
            return "limits"
        if "drain" in message:
            self.drain[0] = float(message["drain"])
            self.stop.set()
            return "drain"
        return None

    def _load(self, gen: int) -> None:
        started = time.perf_counter()
        try:
            snap = self.snapshots.read(gen)
        except SnapshotError as exc:
            log.error("snapshot_unreadable", generation=gen, error=str(exc))
            return
        fresh = self.gateway.pipeline.load(snap.configs)
        self.gateway.generation = snap.generation
        self._write(json.dumps({"ack": snap.generation}).encode() + b"\n")
        log.info("config_loaded", generation=snap.generation, functions=len(snap.configs), bound=fresh,
                 ms=round((time.perf_counter() - started) * 1000, 3))

    async def _read(self) -> None:
        while True:
            message = await self._next()
            if message is None:
                log.warning("master_gone", pid=os.getpid(), note="draining and exiting")
                self.relay.lost()
                self.stop.set()
                return
            self._handle(message)

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.writer is not None:
            self.writer.close()


class _Delivery(msgspec.Struct):
    rd: list[int]
    p: msgspec.Raw


_decode_delivery = msgspec.json.Decoder(_Delivery).decode


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A worker's own listening socket on the shared port (the master holds the port): the
    kernel spreads new connections over the workers' sockets."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def run_worker() -> None:
    """A worker process under a master (`genapi serve --workers N`): the settings come first
    on the pipe whose descriptor is GENAPI_WORKER_FD."""
    import uvloop

    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the master reloads and broadcasts
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C reaches the master, which drains us
    sock = socket.socket(fileno=int(os.environ["GENAPI_WORKER_FD"]))
    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(1 << 20)
        if not chunk:
            return
        line += chunk
    settings = msgspec.json.decode(json.loads(line)["settings"], type=Settings)
    log.setup(settings.gateway.log_level, settings.gateway.log_format)
    os.environ.pop("GENAPI_WORKER_FD", None)
    sock.sendall(json.dumps({"hello": os.getpid()}).encode() + b"\n")  # the master waits for it to go on
    sock.setblocking(False)
    try:
        uvloop.run(serve(settings, None, handle_sighup=False, master=sock))
    except SystemExit:
        pass
