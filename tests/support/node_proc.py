"""Starts and stops real service-node processes (`genapi service run`) for tests and benchmarks,
and asks a gateway's control port what it holds."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any

from genapi.nodes import rpc
from support.gateway_proc import SUPPORT, TESTS, ChildProcess

BANNER = re.compile(r"genapi service (\S+) listening on ([\d.]+:\d+) \(pid=(\d+)")


class NodeProcess(ChildProcess):
    """A `genapi service run MODULE:ATTR` child on a free loopback port, stopped by its pid."""

    def __init__(
        self,
        gateways: list[str],
        *,
        service: str = "nodeapp:svc",
        name: str = "node",
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
        listen: str = "127.0.0.1:0",
        cpu: int | None = None,
    ) -> None:
        args = [sys.executable, "-m", "genapi", "service", "run", service, "--listen", listen]
        for g in gateways:
            args += ["--gateway", g]
        args += extra_args or []
        if cpu is not None:
            args = ["taskset", "-c", str(cpu), *args]
        pp = [str(SUPPORT)] + [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(pp), "NODE_NAME": name}
        full_env.update(env or {})
        self.name = name
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=self.stderr, env=full_env, cwd=str(TESTS), text=True
        )
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        m = BANNER.search(line)
        if not m:
            self.proc.wait(10)
            raise RuntimeError(f"service node did not start: {line!r} {self.read_stderr()}")
        self.address = m.group(2)
        self.pid = self.proc.pid


def control(
    address: str, target: str, args: list[Any] | None = None, secret: str | None = None, timeout: float = 5.0
) -> Any:
    """One control request to a gateway (or a node's built-in), answered synchronously."""

    async def go() -> Any:
        peer = await rpc.connect(address, secret.encode() if secret else None, "test", timeout)
        try:
            return await peer.request(target, args or [], timeout)
        finally:
            peer.close()

    return asyncio.run(go())


def wait_pushed(
    gateway_control: str, service: str, nodes: list[str], timeout: float = 10.0, secret: str | None = None
) -> dict[str, Any]:
    """Waits until the gateway serves `service` from every address in `nodes`."""
    deadline = time.monotonic() + timeout
    status: Any = None
    while time.monotonic() < deadline:
        status = control(gateway_control, "$pushed", secret=secret).get(service)
        if status is not None and all(n in status["nodes"] for n in nodes):
            return status
        time.sleep(0.05)
    raise AssertionError(f"{service} not pushed from {nodes} within {timeout}s: {status}")
