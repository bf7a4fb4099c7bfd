"""Starts and stops real `genapi serve` processes for tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SUPPORT = Path(__file__).resolve().parent  # on the child's PYTHONPATH: the app modules configs name (testapi:pid)
TESTS = SUPPORT.parent  # the child's cwd
BANNER = re.compile(
    r"genapi listening on wss?://([\d.]+):(\d+)(\S*) \(workers=(\d+), pid=(\d+)\)"
    r"(?: control on ([\d.]+:\d+))?"
)


CLEAN: Any = object()  # stop()'s default `expect`: 0 after SIGTERM/SIGINT, unchecked after another signal


class ChildProcess:
    """A child process of a test (`proc`, `stderr`), stopped by its pid."""

    proc: subprocess.Popen
    stderr: Any
    pid: int
    stopped = False  # stop() was called (its check made)

    def read_stderr(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30, expect: Any = CLEAN) -> int:
        """Signals the process by pid (if it still runs), waits for it and returns its exit code.

        The exit code is checked: `expect` is the code the process must have exited with, by
        default 0 after SIGTERM or SIGINT (a clean stop) and unchecked after any other signal (a
        SIGKILL on purpose). A test that killed the process itself, or expects a non-zero exit,
        says so: `stop(expect=None)` (unchecked) or `stop(expect=-9)`. A process still running
        `timeout` s after the signal is SIGKILLed, which fails the check too. A later stop() (the
        `with` exit after a test's stop(SIGKILL)) returns the code unchecked again. No check while an
        exception is already on its way out (a `finally` or `__exit__` after a failed test): the
        test's own failure is the one to see."""
        if self.stopped and expect is CLEAN:  # a second stop (`with` after stop(SIGKILL)): checked once
            return self.proc.returncode
        self.stopped = True
        if self.proc.poll() is None:
            os.kill(self.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait()
        code = self.proc.returncode
        want = (0 if sig in (signal.SIGTERM, signal.SIGINT) else None) if expect is CLEAN else expect
        if want is not None and code != want and sys.exc_info()[0] is None:
            raise AssertionError(
                f"{type(self).__name__} pid {self.pid} exited with {code} after {signal.Signals(sig).name}, "
                f"expected {want}\n--- its stderr (tail) ---\n{self.read_stderr()[-3000:]}"
            )
        return code

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()  # checked: 0 after SIGTERM (unchecked if the `with` body raised)


class GatewayProcess(ChildProcess):
    """A `genapi serve` child process on a free loopback port, stopped by its pid."""

    def __init__(
        self,
        config: str | None = None,
        *,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        cpu: int | None = None,
        nofile: int | None = None,
    ) -> None:
        """`nofile`: the process's open-files limit (soft and hard, as `ulimit -n`)."""
        self.config_path: str | None = None
        if config is not None:
            fd, self.config_path = tempfile.mkstemp(suffix=".toml", prefix="genapi-test-")
            with os.fdopen(fd, "w") as f:
                f.write(textwrap.dedent(config))
        args = [sys.executable, "-m", "genapi", "serve", "--port", "0", "--host", "127.0.0.1", "--control-port", "0"]
        if self.config_path:
            args += ["--config", self.config_path]
        args += extra_args or []
        if cpu is not None:
            args = ["taskset", "-c", str(cpu), *args]
        pp = [str(SUPPORT)] + [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(pp)}
        full_env.update(env or {})
        self.stderr = tempfile.TemporaryFile()
        limit = None if nofile is None else (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)))
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=self.stderr, env=full_env, cwd=str(TESTS), text=True, preexec_fn=limit
        )
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        m = BANNER.search(line)
        if not m:
            self.proc.wait(10)
            raise RuntimeError(f"gateway did not start: {line!r} {self.read_stderr()}")
        self.host, self.port = m.group(1), int(m.group(2))
        scheme = "wss" if m.group(0).startswith("genapi listening on wss:") else "ws"  # built-in TLS
        self.url = f"{scheme}://{self.host}:{self.port}/socket"
        self.control = m.group(6)  # "host:port" of the control port (workers=1)
        self.pid = self.proc.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30, expect: Any = CLEAN) -> int:
        try:
            return ChildProcess.stop(self, sig, timeout, expect)
        finally:
            if self.config_path:
                try:
                    os.unlink(self.config_path)
                except OSError:
                    pass


@contextlib.contextmanager
def several_hosts(config: str, *workers: int) -> Iterator[tuple[GatewayProcess, ...]]:
    """Gateway hosts on one config, one per entry of `workers` (its --workers), started in
    order and all stopped (each stop checked) however the test ends."""
    with contextlib.ExitStack() as stack:
        hosts = []
        for n in workers:
            gw = GatewayProcess(config, extra_args=["--workers", str(n)] if n > 1 else None)
            stack.callback(gw.stop)
            hosts.append(gw)
        yield tuple(hosts)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return open(f"/proc/{pid}/stat").read().split()[2] != "Z"
    except OSError:
        return False


def children(pid: int) -> set[int]:
    """The live child processes of `pid` (a master's workers)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return {int(p) for p in out}


def free_port() -> int:
    """A loopback port nothing listens on (for a server a test starts later, or never)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until(pred, timeout: float = 5.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()
