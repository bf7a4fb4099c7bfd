"""What a pushed or pulled config may make the gateway itself run: `[gateway] allowed_modules`.

Every gateway-side callable a push names (hooks, the permission callback, a custom node mode, a
node resolver) must fall under an allowed module prefix, checked before anything of the push is
imported; the default allows none. Real gateway, real node, real control port."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from genapi.client import Client
from genapi.errors import RpcError
from genapi.host.control_client import ControlClient
from support.gateway_proc import SUPPORT, GatewayProcess
from support.node_proc import NodeProcess, wait_pushed

ANON = """
[auth]
require_verified_user_id = false
{gateway}
"""


def push(gw: GatewayProcess, message: dict[str, Any]) -> Any:
    async def go() -> Any:
        async with ControlClient(gw.control) as c:
            return await c.push(message, True)

    return asyncio.run(go())


def refusal(gw: GatewayProcess, message: dict[str, Any]) -> str:
    with pytest.raises(RpcError) as exc:
        push(gw, message)
    assert exc.value.code == "refused", exc.value
    return exc.value.text


def pushed(gw: GatewayProcess) -> dict[str, Any]:
    async def go() -> Any:
        async with ControlClient(gw.control) as c:
            return await c.pushed()

    return asyncio.run(go())


def message(service: str, **fields: Any) -> dict[str, Any]:
    """A push of one remote function (its node need not exist: a refused push never calls it)."""
    return {
        "service": service,
        "config_version": "1",
        "nodes": ["127.0.0.1:9"],
        "fun_configs": [
            {"request_type": "fine", "mfa": "app:fine"},
            {"request_type": "hooked", "mfa": "app:hooked", **fields},
        ],
    }


@pytest.fixture(scope="module")
def marks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A module whose top-level code leaves a file when it is imported (anywhere)."""
    folder = tmp_path_factory.mktemp("marks")
    (folder / "leaves_mark.py").write_text(
        f"open({str(folder / 'imported')!r}, 'w').close()\n\ndef hook(request, config):\n    return request, config\n"
    )
    return folder


@pytest.fixture(scope="module")
def closed(marks: Path) -> Any:
    """A gateway with the default allowlist (empty), the marking module on its import path."""
    pythonpath = os.pathsep.join([str(marks), str(SUPPORT), *filter(None, [os.environ.get("PYTHONPATH")])])
    with GatewayProcess(ANON.format(gateway=""), env={"PYTHONPATH": pythonpath}) as gw:
        yield gw


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"before_execute": "os:abort"}, "before_execute: module 'os'"),
        ({"after_execute": ["os:_exit", [1]]}, "after_execute: module 'os'"),
        ({"permission_callback": "os:getcwd"}, "permission_callback: module 'os'"),
        ({"choose_node_mode": "nodepick:last"}, "choose_node_mode: module 'nodepick'"),
        ({"nodes": "tempfile:mkdtemp"}, "nodes: module 'tempfile'"),
    ],
)
def test_a_push_naming_code_for_the_gateway_is_refused_whole(closed: GatewayProcess, fields: Any, named: str) -> None:
    text = refusal(closed, message("evil", **fields))
    assert f"fun_configs #2 (hooked): {named} is not under [gateway] allowed_modules (empty" in text, text
    assert "evil" not in pushed(closed)  # not even its harmless function
    assert closed.alive()


def test_a_refused_push_imports_nothing(closed: GatewayProcess, marks: Path) -> None:
    """The check comes before binding: the module's top-level code never runs."""
    text = refusal(closed, message("marking", before_execute="leaves_mark:hook"))
    assert "before_execute: module 'leaves_mark'" in text, text
    assert not (marks / "imported").exists()
    assert closed.alive()


def test_the_gateways_own_file_is_trusted(marks: Path) -> None:
    """Configs from the operator's file are not checked against the allowlist (as before)."""
    config = ANON.format(gateway="") + (
        '\n[[functions]]\nservice = "t"\nrequest_type = "echo"\nmfa = "testapi:echo"\n'
        'arg_types = {text = "string"}\nbefore_execute = "testapi:before_upper"\n'
    )
    with GatewayProcess(config) as gw:
        resp = asyncio.run(call(gw, "t", "echo"))
        assert resp.success, resp
        assert resp.result == {"text": "HI", "n": 1}  # the file's hook ran


def test_an_allowed_hook_runs_on_a_pushed_function() -> None:
    """With the hook's module allowed, a pushed function's before hook runs in the gateway."""
    config = ANON.format(gateway='[gateway]\nallowed_modules = ["testapi"]')
    with GatewayProcess(config) as gw, NodeProcess([gw.control]) as node:
        wait_pushed(gw.control, "inv", [node.address])
        held = asyncio.run(_functions(gw))
        cfg = next(c for c in held if c["service"] == "inv" and c["request_type"] == "echo")
        hooked = {k: cfg[k] for k in ("request_type", "mfa", "arg_types", "arg_orders", "timeout", "version")}
        hooked["before_execute"] = "testapi:before_upper"
        out = push(gw, {"service": "inv", "config_version": "hooked", "nodes": [node.address], "fun_configs": [hooked]})
        assert out["status"] == "accepted", out

        resp = asyncio.run(call(gw, "inv", "echo"))
        assert resp.success, resp
        assert resp.result["text"] == "HI"  # the gateway-side hook ran before the node's function


def test_a_prefix_covers_its_submodules_only() -> None:
    from genapi.host.configsync import module_allowed

    assert module_allowed("myapp", ("myapp",))
    assert module_allowed("myapp.hooks", ("myapp",))
    assert not module_allowed("myapp_evil", ("myapp",))
    assert not module_allowed("os", ())


async def call(gw: GatewayProcess, service: str, request_type: str) -> Any:
    c = await Client.connect(gw.url)
    try:
        await c.join("api:t")
        return await c.call(service, request_type, {"text": "hi"}, topic="api:t")
    finally:
        await c.close()


async def _functions(gw: GatewayProcess) -> list[dict[str, Any]]:
    async with ControlClient(gw.control) as c:
        return await c.functions()


def service(name: str, functions: int, version: str = "1") -> dict[str, Any]:
    return {
        "service": name,
        "config_version": version,
        "nodes": ["127.0.0.1:9"],
        "fun_configs": [{"request_type": f"f{i}", "mfa": f"app:f{i}"} for i in range(functions)],
    }


def test_pushed_services_and_functions_are_bounded() -> None:
    """What peers may make the gateway hold is bounded ([cluster] max_services, max_functions):
    past either a push is refused naming both, and what is held stays served."""
    config = ANON.format(gateway="") + "\n[cluster]\nmax_services = 3\nmax_functions = 20\n"
    with GatewayProcess(config) as gw:
        for name in ("s1", "s2", "s3"):
            assert push(gw, service(name, 2))["status"] == "accepted"
        text = refusal(gw, service("s4", 1))
        assert "push of s4 refused: the gateway would hold 4 services" in text, text
        assert "[cluster] max_services = 3, max_functions = 20" in text, text
        assert push(gw, service("s1", 3, "2"))["status"] == "accepted"  # a held service may change
        text = refusal(gw, service("s2", 40, "2"))
        assert "push of s2 refused: the gateway would hold 3 services and " in text, text
        assert "max_functions = 20" in text, text
        held = pushed(gw)
        assert sorted(held) == ["s1", "s2", "s3"]
        assert len(held["s2"]["functions"]) == 2 and held["s2"]["config_version"] == "1"  # kept as it was
        assert gw.alive()


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def cut_off(sock: Any, deadline_s: float = 10.0) -> bool:
    """Whether the server closed `sock` (EOF or reset) within `deadline_s`; what it sent is read away."""
    import time

    sock.settimeout(0.2)
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def test_unauthenticated_peers_cost_little_and_are_cut_off() -> None:
    """Before a peer proves the cluster secret it may send one small frame: six peers announcing
    60 MB frames to the control port are cut off at the announcement, and the gateway's memory
    does not grow by their buffers."""
    import socket as _socket
    import struct

    with GatewayProcess(
        ANON.format(gateway=""), env={"GENAPI_CLUSTER_SECRET": "s3cret-0123456789abcdef0123456789abcdef"}
    ) as gw:
        host, port = gw.control.rsplit(":", 1)
        before = rss(gw.pid)
        peers = []
        for _ in range(6):
            s = _socket.create_connection((host, int(port)), timeout=5)
            s.recv(4096)  # HELLO
            s.sendall(struct.pack(">I", 60_000_000))
            peers.append(s)
        junk = b"\0" * (1 << 20)
        for s in peers:  # what a peer may push before it is cut off
            try:
                for _ in range(8):
                    s.sendall(junk)
            except OSError:
                pass
        during = rss(gw.pid)  # before the handshake deadline would free what was buffered
        assert during - before < 10 * (1 << 20), (before, during)
        assert all(cut_off(s) for s in peers)
        assert "before authentication" in gw.read_stderr() or "rpc_connection_refused" in gw.read_stderr()
        for s in peers:
            s.close()

        async def proved() -> Any:
            async with ControlClient(gw.control, "s3cret-0123456789abcdef0123456789abcdef") as c:
                return await c.ping()

        assert asyncio.run(proved()) == "pong"  # the control port still answers a peer that proves the secret


def test_connections_waiting_to_authenticate_are_capped_and_timed_out() -> None:
    """A listener holds at most MAX_UNAUTHENTICATED connections that have not proved the secret
    (more are refused at once) and gives each a short deadline."""
    import socket as _socket

    from genapi._core.rpc import MAX_UNAUTHENTICATED

    with GatewayProcess(
        ANON.format(gateway=""), env={"GENAPI_CLUSTER_SECRET": "s3cret-0123456789abcdef0123456789abcdef"}
    ) as gw:
        host, port = gw.control.rsplit(":", 1)
        waiting = [_socket.create_connection((host, int(port)), timeout=5) for _ in range(MAX_UNAUTHENTICATED)]
        for s in waiting:
            assert s.recv(4096)  # each got its HELLO
        extra = _socket.create_connection((host, int(port)), timeout=5)
        extra.settimeout(2)  # well under the 3 s deadline: refused at once, before any HELLO
        try:
            first = extra.recv(4096)
        except ConnectionResetError:
            first = b""
        assert first == b"", first
        assert "connections are already waiting to authenticate" in gw.read_stderr()
        assert all(cut_off(s, 10) for s in waiting)  # none authenticated within the deadline
        for s in [*waiting, extra]:
            s.close()

        async def proved() -> Any:
            async with ControlClient(gw.control, "s3cret-0123456789abcdef0123456789abcdef") as c:
                return await c.ping()

        assert asyncio.run(proved()) == "pong"  # their places are free again


def test_services_of_one_source_are_pulled_by_one_task_over_one_connection() -> None:
    """Pulls are per source (the node list), not per service: twenty services a peer pushed
    naming the same node are pulled in one round over one connection, each failure recorded on
    its service."""
    import time

    config = ANON.format(gateway="") + "\n[cluster]\npull_interval_ms = 200\n"
    with GatewayProcess(config) as gw, NodeProcess([gw.control], extra_args=["--log-level", "debug"]) as node:
        wait_pushed(gw.control, "inv", [node.address])
        for i in range(20):
            push(gw, {**service(f"s{i}", 1), "nodes": [node.address]})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and min(pushed(gw)[f"s{i}"]["pull_failures"] for i in range(20)) < 3:
            time.sleep(0.1)
        held = pushed(gw)
        rounds = max(held[f"s{i}"]["pull_failures"] for i in range(20))
        assert rounds >= 3, held
        assert all("answered a config for 'inv', not 's" in held[f"s{i}"]["last_error"] for i in range(20)), held
        accepted = node.read_stderr().count("rpc_peer_accepted")
        assert accepted <= rounds + 3, (accepted, rounds)  # one connection a round (per service: 21 a round)


def test_a_peer_pushing_too_fast_is_refused() -> None:
    """One peer address may push [cluster] max_pushes_per_minute times in any 60 s; the next is
    refused naming the bound, and what was pushed stays."""
    config = ANON.format(gateway="") + "\n[cluster]\nmax_pushes_per_minute = 5\n"
    with GatewayProcess(config) as gw:

        async def go() -> list[Any]:
            out: list[Any] = []
            async with ControlClient(gw.control) as c:
                for i in range(6):
                    try:
                        out.append((await c.push(service("fast", 1, str(i)), True))["status"])
                    except RpcError as exc:
                        out.append(exc.text)
            return out

        out = asyncio.run(go())
        assert out[:5] == ["accepted"] * 5, out
        assert "push from 127.0.0.1 refused: over [cluster] max_pushes_per_minute = 5 in the last 60 s" in out[5], out
        assert pushed(gw)["fast"]["config_version"] == "4"
