"""One worker process: what it serves (Gateway: functions, dispatcher, authenticator,
connections), the upgrade (routing, vsn, authentication), the idle sweeper, shutdown, and the
worker's composition root `serve` (every part built once, in one written order, and handed to
what uses it), run on the uvloop event loop by `run_worker`. Each accepted socket is served by
the compiled `Connection` (`_core/connection.pyx`), which sees the worker only through its
`ConnectionContext`."""

from __future__ import annotations

import asyncio
import gc
import hmac
import json
import logging
import os
import signal
import socket
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl, urlsplit

import msgspec
from picows import WSAutoPingStrategy, WSCloseCode, WSUpgradeRequest, WSUpgradeResponse, WSUpgradeResponseWithListener
from picows.picows import WSProtocol  # type: ignore[attr-defined]  # not in picows.pyi

from genapi import log, relay, trace
from genapi._core.connection import Connection, ConnectionContext
from genapi._core.dispatch import Dispatcher, Entry
from genapi._core.handoff import ThreadPool
from genapi._core.stats import log_calls
from genapi._core.wire import on_unencodable
from genapi.config import ConfigError, Settings
from genapi.engine.relay import MemoryAuthority, RelayAuthority
from genapi.gateway import dashboard, pages
from genapi.gateway.auth import Authenticator, Refused, choose_token, client_ip, token_from_subprotocols
from genapi.gateway.listener import Listener, listening_socket, raise_fd_limit, reuseport_socket
from genapi.gateway.phoenix import origin_checker, serializer_for, topic_matcher
from genapi.gateway.tls import server_context
from genapi.host import metrics, pipe
from genapi.host.link import MasterLink
from genapi.host.ratelimit import RateLimits, limits_wanted, table_path
from genapi.host.view import LoneHost
from genapi.relay.groups import Groups
from genapi.relay.seats import LocalRelay, Seats
from genapi.request.bind import Binder, Functions, node_links, value_limits
from genapi.request.pipeline import GeneralPath
from genapi.request.registry import Registry

if TYPE_CHECKING:
    from genapi.host.control import ControlPlane

_PICOWS_LOGGER = logging.getLogger("genapi.picows")


class HostView(Protocol):
    """The host as a worker's HTTP endpoints see it (`host/view.py`: LoneHost, MasterHost)."""

    async def ready(self) -> dict[str, Any]: ...

    async def metrics(self) -> str: ...

    async def dashboard(self, ask: list[Any]) -> Any: ...


class Gateway:
    """Everything one worker process serves, given by `serve`: its functions (the bound
    registry), the dispatcher, the connections' context (`conns`: counters, open connections),
    the rate limits, the relay seats and its index among the host's workers."""

    def __init__(
        self,
        settings: Settings,
        functions: Functions,
        dispatcher: Dispatcher,
        conns: ConnectionContext,
        limits: RateLimits | None,
        seats: Seats,
        index: int,
    ) -> None:
        self.settings = settings
        gw = settings.gateway
        self.functions = functions
        self.seats = seats
        self.dispatcher = dispatcher
        self.conns = conns
        self.limits = limits
        self.index = index
        self.auth = Authenticator(settings.auth)
        self.origin_allowed = origin_checker(gw.check_origin)
        self.trusted_proxies = frozenset(gw.trusted_proxies)
        self.ws_path = gw.path.rstrip("/") + "/websocket"
        self.accepted = 0  # connections upgraded (for /metrics)
        self.generation = 0
        self.server: Listener | None = None
        self.host: HostView | None = None  # given to `start`: the host's view (the master's, or this worker's)
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def connections(self) -> set[Connection]:
        return self.conns.connections

    @property
    def aborted(self) -> int:
        """Connections dropped for not reading their output (Connection.abort)."""
        return self.conns.aborted

    @property
    def joins(self) -> int:
        """Channel joins accepted (for /metrics)."""
        return self.conns.joins

    async def http(
        self, path: str, authorization: str | None = None, method: str = "GET", body: bytes = b""
    ) -> tuple[int, str, bytes]:
        """/health: this worker answers; /ready: every worker up and on the current config
        generation (503 otherwise); /metrics: the whole host's, in the Prometheus text format.
        With `[gateway] metrics_token`, /ready and /metrics answer 401 unless `authorization` is
        `Bearer <that token>` (compared in constant time); /health (liveness) stays open.
        Under /dashboard: the operators' page and its JSON (gateway/dashboard.py)."""
        if dashboard.wants(path):
            return await dashboard.http(self, method, path, authorization, body)
        if path == "/health":
            return 200, "text/plain", b"ok\n"
        if path in pages.PATHS:
            return pages.answer(path, self.settings.gateway)
        token = self.settings.gateway.metrics_token
        if token is not None and not bearer_matches(authorization, token):
            log.warning("http_unauthorized", path=path, authorization="wrong" if authorization else "missing")
            return 401, "text/plain", b"unauthorized: send Authorization: Bearer <[gateway] metrics_token>\n"
        assert self.host is not None  # the listener serves these only once started
        if path == "/ready":
            ready = await self.host.ready()
            return (200 if ready["ready"] else 503), "application/json", json.dumps(ready).encode() + b"\n"
        if not self.settings.gateway.metrics:
            return 503, "text/plain", b"metrics are off ([gateway] metrics = false)\n"
        return 200, metrics.CONTENT_TYPE, (await self.host.metrics()).encode()

    def metrics_snapshot(self) -> dict[str, Any]:
        return {**metrics.snapshot(self), "index": self.index, "pid": os.getpid(), "generation": self.generation}

    def upgrade(self, request: WSUpgradeRequest, peer: str | None = None) -> Any:
        """Routes and authenticates an upgrade: 404 for other paths, 403 for an Origin that
        check_origin refuses, a bad vsn or a refused connect, else the connection (echoing
        `Sec-WebSocket-Protocol: phoenix`)."""
        target = urlsplit(request.path.decode("latin-1"))
        if target.path != self.ws_path:
            return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(404, b"not found"), None)
        headers = {k.lower(): v for k, v in request.headers.items()}
        origin = headers.get("origin")
        if (
            origin is not None
            and self.origin_allowed is not None
            and not self.origin_allowed(origin, headers.get("host"))
        ):
            check = self.settings.gateway.check_origin
            log.warning(
                "connect_refused",
                reason="origin not allowed",
                origin=origin,
                check_origin=check if check is not True else f"true (host {headers.get('host')})",
                hint="list the origin in [gateway] check_origin",
            )
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
        conn = Connection(self.conns, ser, identity)
        self.accepted += 1
        if offered:
            return WSUpgradeResponseWithListener(
                WSUpgradeResponse.create_101_response({"Sec-WebSocket-Protocol": "phoenix"}), conn
            )
        return conn

    def protocol(self, peer: str | None = None) -> WSProtocol:
        """A new socket's picows protocol, as picows's `ws_create_server` builds it (picows is
        pinned: this is its 2.3.1 constructor); picows logs to genapi.picows (log.py formats it)."""
        gw = self.settings.gateway
        return WSProtocol(
            None,
            None,
            False,
            lambda request: self.upgrade(request, peer),
            _PICOWS_LOGGER,
            False,  # disconnect_on_exception
            10,  # websocket_handshake_timeout (s)
            False,
            20,
            20,
            WSAutoPingStrategy.PING_WHEN_IDLE,  # no auto ping
            False,  # enable_auto_pong: the connection answers pings (checks RSV bits)
            gw.max_message_bytes,  # max_frame_size
            None,  # extra_headers
            16 * 1024,
        )  # read_buffer_init_size

    async def start(self, host: HostView, sock: socket.socket | None = None) -> None:
        """Serves the port (`sock`, else a socket of its own); `host`: the host's view that
        /ready and /metrics answer from."""
        gw = self.settings.gateway
        self.host = host
        if sock is None:
            sock = listening_socket(gw.host, gw.port)
        tls = None
        if gw.tls_certfile is not None and gw.tls_keyfile is not None:  # checked at start (tls_problems)
            tls = server_context(gw.tls_certfile, gw.tls_keyfile)
        self.server = Listener(sock, self.protocol, self.http, tls)
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
            for conn in conns[i : i + CLOSE_BATCH]:
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


def bearer_matches(authorization: str | None, token: str) -> bool:
    """`Authorization: Bearer <token>` (the scheme in any case), compared in constant time."""
    if authorization is None:
        return False
    scheme, _, credentials = authorization.strip().partition(" ")
    given = credentials.strip().encode("latin-1", "replace")
    return hmac.compare_digest(given, token.encode()) and scheme.lower() == "bearer"


CLOSE_BATCH = 100  # clients closed at once when a worker stops
CLOSE_PAUSE_S = 0.02  # between batches: reconnects spread over time, not a stampede


async def serve(
    settings: Settings,
    sock: socket.socket | None = None,
    ready: Any = None,
    handle_sighup: bool = True,
    control: socket.socket | None = None,
    master: socket.socket | None = None,
) -> None:
    """The worker's composition root: builds every part once, in this order, each given what it
    uses, then runs until SIGINT/SIGTERM (or its master says drain, or is gone). Alone (`master`
    None), it also serves the control port's socket `control`, holds the relay groups and SIGHUP
    reloads the config file's functions. Under a master it loads the master's config snapshots."""
    from genapi.host.control import ControlPlane

    loop = asyncio.get_running_loop()
    loop.set_exception_handler(log.loop_exception)
    raise_fd_limit()
    gw = settings.gateway
    lone = master is None
    log_calls(log.enabled("info"))
    if gw.metrics:  # before any function is bound: each Entry holds its metrics row
        metrics.start()
    limits = None
    host_id = settings.engine.host_name(gw.port)
    if limits_wanted(settings.rate_limiter):  # the table is the master's (a lone worker's own)
        path = table_path(gw.host, gw.port)
        make = RateLimits.create if lone else RateLimits.open
        limits = make(settings.rate_limiter, path, settings.engine, host_id)
        if limits.cluster is not None:
            limits.cluster.start()  # hears resets of cluster limits from every host
    limiter = limits.limiter if limits is not None else None
    probe = None
    if lone and settings.engine.type == "redis":  # the host's view of Redis (a master keeps its own)
        from genapi.engine.redis import EngineProbe

        probe = EngineProbe(settings.engine, host_id)
        probe.start()
    pool = ThreadPool(gw.thread_pool_size, gw.thread_queue_limit)
    seats = Seats()  # this worker's relay-group members
    relay.register_worker(seats)
    registry: Registry[Entry] = Registry()
    binder = Binder(registry, value_limits(settings), node_links(settings), gw.detail_error, pool, seats)
    functions = Functions(registry, binder, settings.functions)
    general = GeneralPath(binder, pool, limiter, gw.detail_error)
    on_unencodable(general.unencodable)
    dispatcher = Dispatcher(registry, settings, general.run, limiter)
    conns = ConnectionContext(gw, dispatcher, topic_matcher(gw.topics))
    authority: RelayAuthority | None = None
    if lone:  # alone, this worker is the relay groups' authority: every place is in this process

        def deliver(_worker: int, tokens: list[int], payload: bytes) -> None:
            seats.deliver(tokens, payload)

        authority = MemoryAuthority(Groups(settings.relay, deliver))
        if settings.engine.type == "redis":  # shared with the other hosts, ordered by Redis
            from genapi.engine.relay_redis import RedisAuthority

            authority = RedisAuthority(settings.relay, settings.engine, host_id, deliver)
        authority.start()
        seats.link = LocalRelay(authority, seats)
    index = int(os.environ.get("GENAPI_WORKER_INDEX", "0"))
    gateway = Gateway(settings, functions, dispatcher, conns, limits, seats, index)
    stop = asyncio.Event()
    drain = [gw.shutdown_grace_ms / 1000]
    link = None
    host: HostView
    if master is not None:
        # listening before the first config is acknowledged (the master announces the host once
        # every worker has): a client connecting then waits in the backlog, never refused
        sock = reuseport_socket(gw.host, gw.port)
        link = MasterLink(master, gateway, stop, drain)
        await link.start()  # the current snapshot, before a single connection is accepted
        host = link.host
        plane = None  # the master serves the control port
    else:
        alone = LoneHost(gateway, authority, probe)
        plane = ControlPlane(functions, settings, limits=limits, relay=authority, inspect=alone.inspect)
        alone.plane = plane  # the dashboard's verbs
        host = alone
    await gateway.start(host, sock)
    if plane is not None:
        await plane.start(control)
    gc.freeze()  # what startup built lives forever: keep the collector's full passes off it
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if handle_sighup:
        loop.add_signal_handler(signal.SIGHUP, lambda: reload_functions(gateway, plane))
    if ready is not None:
        ready(gateway)
    log.info("worker_ready", pid=os.getpid(), host=gw.host, port=gw.port)
    await stop.wait()
    if plane is not None:
        await plane.stop()
    await gateway.stop(drain[0])
    functions.nodes.close()
    pool.shutdown()
    if link is not None:
        link.close()
    if limits is not None:
        await limits.aclose(owner=lone)
    if authority is not None:
        await authority.aclose()
    if probe is not None:
        await probe.close()


def reload_functions(gateway: Gateway, plane: ControlPlane | None) -> None:
    """SIGHUP on a lone worker: the config file's functions again (pushed ones stay, and those
    disabled by hand through the control plane stay disabled)."""
    from genapi.config import load

    settings = gateway.settings
    try:
        fresh = load(None if settings.source == "<embedded default>" else settings.source)
        old = [(c.service, c.request_type, c.version) for c in settings.functions]
        functions = fresh.functions if plane is None else plane.keep_disabled(fresh.functions)
        gateway.functions.replace(old, functions)
    except (ConfigError, ValueError) as exc:
        log.error("config_reload_failed", source=settings.source, error=str(exc))
        return
    gateway.settings = msgspec.structs.replace(settings, functions=fresh.functions)
    log.warning("config_reloaded", source=settings.source, functions=len(fresh.functions))


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
    try:
        first = pipe.decode_to_worker(line)
        if not isinstance(first, pipe.Settings):
            raise msgspec.ValidationError(f"expected the settings first, got {type(first).__name__}")
    except msgspec.DecodeError as exc:  # nothing to serve without them
        log.setup()
        pipe.invalid("worker", int(os.environ.get("GENAPI_WORKER_INDEX", "0")), line, exc)
        raise SystemExit(1) from None
    settings = first.settings
    log.setup(settings.gateway.log_level, settings.gateway.log_format)
    os.environ.pop("GENAPI_WORKER_FD", None)
    sock.sendall(pipe.encode(pipe.Hello(os.getpid())))  # the master waits for it to go on
    sock.setblocking(False)
    try:
        uvloop.run(serve(settings, None, handle_sighup=False, master=sock))
    except SystemExit:
        pass
