"""Starts and stops a real nginx (Debian's; `.ci/run` installs it) in front of gateway hosts, for
tests: the SHIPPED example config, examples/nginx/genapi.conf, with only its upstream servers
and its listen port replaced (so the example cannot rot unseen), included in the http block of a
minimal main config that keeps everything else in a temporary directory (pid, error and access
logs, temp paths). A child process (`daemon off`), on a free loopback port, stopped by its pid.
No nginx on the PATH is an error, never a skip.

    with NginxProcess(["127.0.0.1:4101", "127.0.0.1:4102"]) as ngx:
        ngx.url                    # "ws://127.0.0.1:PORT/socket"
        ngx.access_log()           # one line per request: client, X-Forwarded-For sent, upstream
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from support.gateway_proc import CLEAN, ChildProcess, free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nginx" / "genapi.conf"

UPSTREAM = re.compile(r"(upstream genapi \{\n)(.*?)(\n\})", re.S)
SERVER_LINE = re.compile(r"^([ \t]*)server \S+(.*;)$", re.M)
LISTEN = re.compile(r"^([ \t]*)listen 80;$", re.M)

MAIN = """\
worker_processes 2;
error_log {dir}/error.log info;
events {{
    worker_connections 1024;
}}
http {{
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    log_format test '$remote_addr "$request_method $uri" $status xff="$proxy_add_x_forwarded_for" up=$upstream_addr';
    access_log {dir}/access.log test;
    include {dir}/genapi.conf;
}}
"""


def nginx() -> str:
    """The nginx binary, or an error saying how to get one."""
    path = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if path is None:
        raise RuntimeError("nginx is not on the PATH: install Debian's (apt-get install nginx; .ci/run does)")
    return path


def example_for(upstreams: list[str], listen: str) -> str:
    """The shipped example with its upstream servers replaced by `upstreams` (each keeping the
    example's parameters) and its `listen 80;` by `listen <listen>;`: an error if the example no
    longer has that shape."""
    text = EXAMPLE.read_text()
    block = UPSTREAM.search(text)
    if block is None or not SERVER_LINE.search(block.group(2)):
        raise AssertionError(f"{EXAMPLE}: no `upstream genapi {{ ... server ...; }}` block to point at the hosts")
    first = SERVER_LINE.search(block.group(2))
    assert first is not None
    indent, params = first.group(1), first.group(2)
    servers = "\n".join(f"{indent}server {u}{params}" for u in upstreams)
    kept = [line for line in block.group(2).splitlines() if not SERVER_LINE.match(line)]
    text = text[: block.start(2)] + "\n".join([*kept, servers]) + text[block.end(2) :]
    text, n = LISTEN.subn(rf"\g<1>listen {listen};", text)
    if n != 1:
        raise AssertionError(f"{EXAMPLE}: expected one `listen 80;` to replace, found {n}")
    return text


class NginxProcess(ChildProcess):
    """nginx in front of `upstreams` ("host:port" each), listening on a free loopback port."""

    def __init__(self, upstreams: list[str], start_timeout: float = 30.0) -> None:
        self.binary = nginx()
        self.port = free_port()
        self.tmp = tempfile.TemporaryDirectory(prefix="genapi-nginx-")
        self.dir = Path(self.tmp.name)
        (self.dir / "genapi.conf").write_text(example_for(upstreams, f"127.0.0.1:{self.port}"))
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(MAIN.format(dir=self.dir))
        self.url = f"ws://127.0.0.1:{self.port}/socket"
        self.http = f"http://127.0.0.1:{self.port}"
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [
                self.binary,
                "-p",
                str(self.dir),
                "-e",
                str(self.dir / "error.log"),
                "-c",
                str(self.conf),
                "-g",
                f"daemon off; pid {self.dir}/nginx.pid;",
            ],
            stdout=self.stderr,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.pid = self.proc.pid
        deadline = time.monotonic() + start_timeout
        while not self._listening():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise RuntimeError(
                    f"nginx did not listen on port {self.port}:\n{self.read_stderr()}\n{self.error_log()}"
                )
            time.sleep(0.02)

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def access_log(self) -> str:
        """nginx's access log so far (lines are written when a request, a WebSocket included, ends)."""
        path = self.dir / "access.log"
        return path.read_text() if path.exists() else ""

    def error_log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text() if path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30, expect: Any = CLEAN) -> int:
        """Stops nginx by its master's pid (SIGTERM: a fast shutdown, exit 0; its workers exit with it)."""
        return ChildProcess.stop(self, sig, timeout, expect)

    def close(self) -> None:
        self.stop()
        self.tmp.cleanup()

    def __exit__(self, *exc: object) -> None:
        self.close()
