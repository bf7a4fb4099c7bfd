"""The listening socket of a worker: the port's ownership (a lock and a probe bind), SO_REUSEPORT
sockets, the open-files limit, and the accept loop that refuses cleanly (503) at that limit."""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import socket
import ssl
from collections.abc import Callable
from typing import Any

import aiofastnet
from picows.picows import WSProtocol  # type: ignore[attr-defined]  # not in picows.pyi

from genapi import log
from genapi.errors import AT_CONNECTION_LIMIT
from genapi.gateway.handshake import Handshake
from genapi.gateway.tls import HANDSHAKE_TIMEOUT_S


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
        log.warning(
            "fd_limit_low",
            open_files=soft,
            hint="each connection holds one descriptor; raise the hard limit (ulimit -Hn)",
        )
    return soft


_AT_LIMIT = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
    b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
    % (len(AT_CONNECTION_LIMIT), AT_CONNECTION_LIMIT.encode())
)


class Listener:
    """Accepts connections on the listening socket and serves each with picows.

    At the open-files limit (accept fails with EMFILE) it never spins: one descriptor is kept in
    reserve; it is freed to accept each waiting connection, answer it 503 and close it, then
    taken again, so excess clients are refused at once instead of waiting in the backlog. Should
    even that fail, accepting pauses for PAUSE seconds. When connections leave, accepting just
    works again."""

    PAUSE = 0.5
    BATCH = 256  # accepts per readiness event, so one burst cannot hold up the loop

    def __init__(
        self,
        sock: socket.socket,
        protocol: Callable[[str | None], WSProtocol],
        http: Any = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.sock = sock
        self.protocol = protocol
        self.http = http
        self.tls = tls  # built-in TLS: each accepted socket is wrapped (the handshake first)
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
            await aiofastnet.connect_accepted_socket(
                self.loop,
                lambda: Handshake(self.protocol(peer), self.http),
                conn,
                ssl=self.tls,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S if self.tls is not None else None,
            )
        except Exception as exc:
            conn.close()
            if self.tls is not None and isinstance(exc, (ssl.SSLError, ConnectionError, TimeoutError)):
                # a client speaking plain ws:// or HTTP to the TLS port, or one that gave up: its fault
                log.info("tls_handshake_failed", peer=peer, error=f"{type(exc).__name__}: {exc}")
                return
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
                raise PortInUse(
                    exc.errno,
                    "address already in use (another process listens on it: stop it or choose another --port)",
                ) from None
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
        raise PortInUse(
            errno.EADDRINUSE,
            f"address already in use (by another genapi, pid {owner or '?'}: stop it or choose another --port)",
        ) from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    _held_locks.append(f)


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
