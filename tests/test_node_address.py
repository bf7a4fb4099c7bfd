"""A service node's (and `genapi admin`'s) addresses fail loudly (issue 21 item 3): each bad
host:port given to a real `genapi` process is refused at start, exit status 2, one line naming
the flag, the problem and the expected form; a node given the gateway's WebSocket port for its
control port says so at once with the control port's name, and the gateway logs it; a gateway
logs HTTP on its control port; a push that fails with any exception is logged and retried."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from genapi.address import AddressError, parse_address
from support.gateway_proc import SUPPORT, TESTS, GatewayProcess, wait_until
from support.node_proc import NodeProcess, wait_pushed


def genapi(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m genapi ARGS` as a user runs it (from the tests directory, the support modules
    importable)."""
    pp = [str(SUPPORT)] + [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(pp)}
    return subprocess.run(
        [sys.executable, "-m", "genapi", *args], capture_output=True, text=True, env=env, cwd=str(TESTS), timeout=60
    )


NODE = ("service", "run", "nodeapp:svc")

BAD = [
    # (the command's arguments, words its one line must hold)
    (
        [*NODE, "--gateway", "localhost"],
        ["--gateway 'localhost'", "the port is missing", "expected host:port", "localhost:4001"],
    ),
    (
        [*NODE, "--listen", "7001"],
        ["--listen '7001'", "only a port was given", "127.0.0.1:7001 (this machine only)", "0.0.0.0:7001"],
    ),
    ([*NODE, "--gateway", "4001"], ["--gateway '4001'", "only a port was given", "e.g. 127.0.0.1:4001"]),
    (
        [*NODE, "--gateway", "ws://127.0.0.1:4000/socket/websocket"],
        ["a URL (ws://) was given", "control port", "default port 4001", "e.g. 127.0.0.1:4001"],
    ),
    ([*NODE, "--gateway", "http://gw.internal"], ["a URL (http://) was given", "e.g. gw.internal:4001"]),
    ([*NODE, "--gateway", "127.0.0.1:70000"], ["the port 70000 is out of range (1-65535)"]),
    ([*NODE, "--gateway", "127.0.0.1:0"], ["the port 0 is out of range (1-65535)"]),
    ([*NODE, "--gateway", "127.0.0.1:http"], ["the port 'http' is not a number"]),
    ([*NODE, "--listen", "::1:7001"], ["an IPv6 address needs brackets", "e.g. [::1]:7001"]),
    ([*NODE, "--listen", "[::1]"], ["the port is missing", "[::1]:7001"]),
    ([*NODE, "--advertise", "node-a"], ["--advertise 'node-a'", "the port is missing", "node-a:7001"]),
    ([*NODE, "--gateway", ":4001"], ["the host is missing", "127.0.0.1:4001"]),
    (["admin", "status", "--control", "localhost"], ["--control 'localhost'", "the port is missing"]),
    (["admin", "functions", "--control", "ws://localhost:4000"], ["--control", "a URL (ws://)", "localhost:4001"]),
    (["ratelimit", "config", "--control", "4001"], ["--control '4001'", "only a port was given"]),
]


@pytest.mark.parametrize(("args", "words"), BAD, ids=[" ".join(a[-2:]) for a, _w in BAD])
def test_a_bad_address_is_refused_at_start_in_one_line(args, words):
    done = genapi(*args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("genapi: error: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "listening" not in done.stdout  # refused before anything started


@pytest.mark.parametrize(
    ("value", "listen", "expected"),
    [
        ("127.0.0.1:7001", False, ("127.0.0.1", 7001)),
        ("gw.internal:4001", False, ("gw.internal", 4001)),
        ("[::1]:4001", False, ("::1", 4001)),
        ("[::]:0", True, ("::", 0)),
        ("0.0.0.0:0", True, ("0.0.0.0", 0)),
        (" localhost:1 ", False, ("localhost", 1)),
    ],
)
def test_good_addresses_parse(value, listen, expected):
    assert parse_address(value, "--x", listen=listen) == expected


def test_the_gateway_connects_nodes_by_the_same_parser():
    """A node address the gateway is given is read by the same parser (one function)."""
    from genapi.nodes import rpc

    assert rpc.split_address("[::1]:7001") == ("::1", 7001)
    with pytest.raises(AddressError, match="node address 'n1@host': an Erlang node name"):
        rpc.split_address("n1@host")


# --------------------------------------------------------------------------- the wrong port


@pytest.fixture(scope="module")
def gw():
    with GatewayProcess() as g:
        yield g


def test_a_node_given_the_websocket_port_says_which_port_to_give(gw):
    """`--gateway HOST:4000` (the WebSocket port) is answered at once: the node logs that the
    address answered HTTP and names the control port; the gateway logs an RPC peer on its
    WebSocket port. Before, the node waited 5 s and said only "no connection"."""
    with NodeProcess([f"{gw.host}:{gw.port}"], name="wrong-port") as node:

        def said() -> list[str]:
            lines = node.read_stderr().splitlines()
            return [x for x in lines if "config_push_failed" in x and "answered in HTTP, not genapi RPC" in x]

        assert wait_until(said, timeout=30), node.read_stderr()
        line = said()[0]
        assert "WebSocket port" in line and "control port" in line and "default 4001" in line, line
        assert "within 5 s" not in node.read_stderr()
        logged = lambda: "websocket_port_got_rpc" in gw.read_stderr()  # noqa: E731
        assert wait_until(logged, timeout=30), gw.read_stderr()
        line = next(x for x in gw.read_stderr().splitlines() if "websocket_port_got_rpc" in x)
        assert "control port" in line and "default 4001" in line, line
        assert node.alive()  # it keeps trying: a gateway restarted on that address may be right


def test_http_on_the_control_port_is_logged_once_with_a_hint(gw):
    """A WebSocket client (an upgrade GET) on the control port: one warning for the connection,
    naming the port it belongs on; the peer is told the same (an RPC ERROR frame, as any peer
    sending what is not genapi RPC is) and the connection closed."""
    before = gw.read_stderr().count("rpc_port_got_http")
    host, port = gw.control.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(
            b"GET /socket/websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        s.sendall(b"more bytes after the request\r\n")
        said = b""
        try:
            while chunk := s.recv(4096):  # the gateway says why in RPC, and closes it
                said += chunk
        except ConnectionResetError:
            pass
    assert b"an HTTP request on a genapi RPC port" in said and b"WebSocket port" in said, said
    logged = lambda: gw.read_stderr().count("rpc_port_got_http") > before  # noqa: E731
    assert wait_until(logged, timeout=30), gw.read_stderr()
    lines = [x for x in gw.read_stderr().splitlines() if "rpc_port_got_http" in x]
    assert len(lines) == before + 1, lines
    assert "request=GET" in lines[-1] and "speaks genapi RPC" in lines[-1] and "WebSocket port" in lines[-1]
    assert "rpc_connection_failed" not in gw.read_stderr()  # said once, in its own words


def test_a_push_that_raises_is_logged_and_retried(gw):
    """A push that fails with an exception that is not an RPC error (here the push message
    cannot be built twice) is logged with the error and retried with backoff until it succeeds:
    before, the push task died silently and the node never pushed."""
    with NodeProcess([gw.control], service="nodeflaky:svc", name="flaky", env={"FLAKY_FAILS": "2"}) as node:
        wait_pushed(gw.control, "flaky", [node.address], timeout=60)
        failed = [x for x in node.read_stderr().splitlines() if "config_push_failed" in x]
        assert len(failed) == 2, node.read_stderr()
        assert all("RuntimeError: cannot build the push" in x and "retry_in_s=" in x for x in failed), failed
        assert "retry_in_s=0.5" in failed[0] and "retry_in_s=1.0" in failed[1], failed  # backing off
        assert wait_until(lambda: "config_pushed" in node.read_stderr(), timeout=30), node.read_stderr()
