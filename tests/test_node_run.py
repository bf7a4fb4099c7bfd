"""A service node started both ways the README names: `genapi service run ... --advertise
HOST:PORT` and a script calling `svc.run(...)` (the SDK's blocking entry point). The advertised
address is a forwarding proxy the test runs in front of the node: the gateway must be pushed
that address, not the listening one, and its calls must reach the node through it."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path
from typing import Any

from genapi.client import Client
from support.gateway_proc import SUPPORT, TESTS, ChildProcess, GatewayProcess, free_port
from support.node_proc import BANNER, NodeProcess, control, wait_pushed

CONFIG = """
[auth]
require_verified_user_id = false

[cluster]
pull_interval_ms = 30000
"""


class Proxy:
    """Forwards every connection on a loopback port to `target` ("host:port"), and counts the
    connections it forwarded."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.target: str | None = None
        self.connections = 0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.target is None:
                conn.close()
                continue
            host, _, port = self.target.rpartition(":")
            try:
                upstream = socket.create_connection((host, int(port)), timeout=5)
            except OSError:
                conn.close()
                continue
            upstream.settimeout(None)
            self.connections += 1
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.closed = True
        self.sock.close()


class ScriptNode(ChildProcess):
    """A Python script that imports nodeapp and calls `svc.run(...)` itself."""

    def __init__(self, gateway: str, listen: str, advertise: str) -> None:
        script = textwrap.dedent(
            f"""
            from nodeapp import svc

            svc.run(listen={listen!r}, gateways=[{gateway!r}], advertise={advertise!r})
            """
        )
        fd, self.path = tempfile.mkstemp(suffix=".py", prefix="genapi-node-")
        with os.fdopen(fd, "w") as f:
            f.write(script)
        pp = [str(SUPPORT)] + [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(pp), "NODE_NAME": "script"}
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, self.path], stdout=subprocess.PIPE, stderr=self.stderr, env=env, cwd=str(TESTS), text=True
        )
        self.pid = self.proc.pid
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        m = BANNER.search(line)
        if not m:
            self.proc.wait(10)
            raise RuntimeError(f"svc.run() did not start: {line!r} {self.read_stderr()}")
        self.address = m.group(2)

    def stop(self, *args: Any, **kw: Any) -> int:
        code = ChildProcess.stop(self, *args, **kw)
        Path(self.path).unlink(missing_ok=True)
        return code


def call_echo(gw: GatewayProcess, text: str) -> Any:
    async def go() -> Any:
        c = await Client.connect(gw.url)
        try:
            await c.join("api:t")
            return (await c.call("inv", "echo", {"text": text}, topic="api:t")).result
        finally:
            await c.close()

    return asyncio.run(go())


def check_advertised(gw: GatewayProcess, proxy: Proxy, node: Any, listening: str, name: str) -> None:
    assert node.address == proxy.address  # the banner names the address pushed
    status = wait_pushed(gw.control, "inv", [proxy.address], timeout=30)
    assert status["nodes"] == [proxy.address]
    assert listening not in control(gw.control, "$pushed")["inv"]["nodes"]
    assert call_echo(gw, "hi") == {"text": "hi", "n": 1, "node": name}
    assert proxy.connections >= 1  # the call went through the advertised address


def test_service_run_advertise() -> None:
    proxy = Proxy()
    listening = proxy.target = f"127.0.0.1:{free_port()}"
    try:
        with (
            GatewayProcess(CONFIG) as gw,
            NodeProcess([gw.control], name="cli", listen=listening, extra_args=["--advertise", proxy.address]) as node,
        ):
            check_advertised(gw, proxy, node, listening, "cli")
            assert node.stop() == 0
    finally:
        proxy.close()


def test_svc_run_from_a_script() -> None:
    proxy = Proxy()
    listening = proxy.target = f"127.0.0.1:{free_port()}"
    try:
        with GatewayProcess(CONFIG) as gw, ScriptNode(gw.control, listening, proxy.address) as node:
            check_advertised(gw, proxy, node, listening, "script")
            assert node.stop() == 0
    finally:
        proxy.close()
