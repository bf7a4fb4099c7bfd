"""Starts and stops a real `redis-server` for tests and benchmarks: Debian's (`.ci/run` installs
it), on a free loopback port, with nothing persisted (`--save "" --appendonly no`, its files in a
temporary directory), stopped by its pid. No redis-server on the PATH is an error, never a skip:
the tests of the redis engine must run wherever the suite runs.

    with RedisProcess() as r:      # answers PING once the constructor returns
        r.url                      # "redis://127.0.0.1:PORT"
        r.client().dbsize()        # a plain (sync) redis-py client
        r.stop(signal.SIGKILL)     # kill it, as a fault; r.start() again on the same port
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any

from support.gateway_proc import ChildProcess, free_port


def redis_server() -> str:
    """The redis-server binary, or an error saying how to get one."""
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError(
            "redis-server is not on the PATH: install Debian's (apt-get install redis-server; .ci/run does) "
            'to run the tests of [engine] type = "redis"'
        )
    return path


def ping(port: int, timeout: float = 1.0) -> bool:
    """The server on `port` answers PING (a raw RESP exchange, no client library)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisProcess(ChildProcess):
    """A `redis-server` child on a loopback port (free, or `port`), persisting nothing."""

    def __init__(self, port: int | None = None, start_timeout: float = 30.0, cpu: int | None = None) -> None:
        """`cpu`: pinned to that CPU (taskset), as the benchmarks pin their servers."""
        self.binary = redis_server()
        self.cpu = cpu
        self.port = port or free_port()
        self.dir = tempfile.TemporaryDirectory(prefix="genapi-redis-")
        self.url = f"redis://127.0.0.1:{self.port}"
        self.start(start_timeout)

    def start(self, timeout: float = 30.0) -> None:
        """Starts (or restarts, after a stop) the server on its port; returns once it answers PING."""
        self.stopped = False
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [
                *(["taskset", "-c", str(self.cpu)] if self.cpu is not None else []),
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir.name,
                "--protected-mode",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=self.stderr,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.pid = self.proc.pid
        deadline = time.monotonic() + timeout
        while not ping(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise RuntimeError(f"redis-server did not answer PING on port {self.port}: {self.read_stderr()}")
            time.sleep(0.02)

    def client(self) -> Any:
        """A plain (sync) redis-py client of this server."""
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30, expect: Any = None) -> int:
        """Stops the server by its pid (unchecked exit code: redis exits 0 on SIGTERM, -9 killed)."""
        return ChildProcess.stop(self, sig, timeout, expect)

    def close(self) -> None:
        self.stop()
        self.dir.cleanup()

    def __exit__(self, *exc: object) -> None:
        self.close()
