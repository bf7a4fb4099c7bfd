"""Service nodes end to end: real gateways, real `genapi service run` nodes, real sockets."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from typing import Any

import pytest

from genapi.client import Client
from genapi.nodes import rpc
from support.gateway_proc import SUPPORT, GatewayProcess, free_port
from support.node_proc import NodeProcess, control, wait_pushed

ANON = """
[gateway]
detail_error = {detail}

[auth]
require_verified_user_id = false

[cluster]
pull_interval_ms = {pull}
breaker_threshold = 2
breaker_cooldown_ms = 400
{secret}
{extra}
"""


def gateway(
    detail: bool = False, pull: int = 30000, extra: str = "", secret: str | None = None, **kw: Any
) -> GatewayProcess:
    line = f'secret = "{secret}"' if secret else ""
    return GatewayProcess(ANON.format(detail=str(detail).lower(), pull=pull, extra=extra, secret=line), **kw)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def client(gw: GatewayProcess) -> Client:
    c = await Client.connect(gw.url)
    await c.join("api:t")
    return c


def wait_for(predicate: Any, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not met within {timeout}s")


@pytest.fixture(scope="module")
def one_node():
    with gateway(detail=True) as gw, NodeProcess([gw.control], name="a") as node:
        wait_pushed(gw.control, "inv", [node.address])
        yield gw, node


def test_every_response_type_through_a_node(one_node: Any) -> None:
    gw, _node = one_node

    async def go() -> None:
        c = await client(gw)
        try:
            r = await c.call("inv", "echo", {"text": "hi", "n": 2}, topic="api:t")
            assert r.result == {"text": "hi", "n": 2, "node": "a"}
            r = await c.call("inv", "echo", {"text": "d"}, topic="api:t")
            assert r.result["n"] == 1  # the default the SDK declared
            r = await c.call("inv", "slow", {"ms": 10}, topic="api:t")  # async: ack, then the result
            assert r.result == {"slept": 10, "node": "a"} and not r.async_
            chunks = [x async for x in c.stream("inv", "count", {"n": 5}, topic="api:t")]
            assert [x.result for x in chunks[:-1]] == [1, 2, 3, 4, 5] and chunks[-1].has_more is False
            chunks = [x async for x in c.stream("inv", "count_plain", {"n": 200}, topic="api:t")]
            assert [x.result for x in chunks if x.result is not None] == list(range(1, 201))
            assert await c.call("inv", "note", {"text": "n1"}, topic="api:t") is None
            wait = time.monotonic() + 5
            while (await c.call("inv", "notes", topic="api:t")).result != ["n1"]:
                assert time.monotonic() < wait
                await asyncio.sleep(0.05)
            r = await c.call("inv", "boom", {"reason": "bad"}, topic="api:t", raise_on_error=False)
            assert not r.success and r.error == "Internal Server Error: ValueError: bad"
            r = await c.call("inv", "echo", {"text": 5}, topic="api:t", raise_on_error=False)
            assert not r.success and r.error.startswith("Invalid argument")  # checked by the gateway
            r = await c.call("inv", "whoami", topic="api:t", raise_on_error=False)
            assert r.error == "Permission denied"
        finally:
            await c.close()

    run(go())


def test_cancel_reaches_the_node(tmp_path: Any) -> None:
    """The deadline, the client leaving the topic, and the client disconnecting each cancel
    the function on the node."""
    marks = tmp_path
    with gateway(detail=True) as gw2, NodeProcess([gw2.control], name="m", env={"NODE_MARKS": str(marks)}) as node:
        wait_pushed(gw2.control, "inv", [node.address])

        async def go() -> None:
            c = await client(gw2)
            try:
                t0 = time.monotonic()
                r = await c.call("inv", "too_slow", topic="api:t", raise_on_error=False)
                assert r.error == "remote execution timed out after 300ms"
                assert time.monotonic() - t0 < 4  # at the 300 ms deadline, not when too_slow ends (5 s)
                # async call, then the client leaves the topic: the node's function is cancelled
                await c.request("inv", "slow", {"ms": 1500}, topic="api:t")
                await asyncio.sleep(0.2)
                await c.leave("api:t")
                await c.join("api:t")
                # a stream, then the client disconnects
                await c.request("inv", "count", {"n": 1000, "delay_ms": 20}, topic="api:t")
                await asyncio.sleep(0.2)
            finally:
                await c.close()

        run(go())
        for mark in ("too_slow-cancelled", "slow-cancelled", "count-cancelled"):
            wait_for(lambda m=mark: (marks / f"m-{m}").exists(), what=mark)
        assert node.alive()


def test_push_skip_force_verify_and_status(one_node: Any) -> None:
    gw, node = one_node
    message = control(node.address, "$config")
    assert message["service"] == "inv" and message["config_version"] == "1.0.0"
    assert message["nodes"] == [node.address]
    assert control(gw.control, "$push", [message, False]) == {"status": "skipped", "reason": "version_matches"}
    assert control(gw.control, "$push", [message, True])["status"] == "accepted"
    assert control(gw.control, "$verify", ["inv", "1.0.0"]) == {"status": "matched"}
    assert control(gw.control, "$verify", ["inv", "0.9.0"]) == {"status": "mismatch", "version": "1.0.0"}
    assert control(gw.control, "$verify", ["nope", "1.0.0"]) == {"status": "not_found"}
    status = control(gw.control, "$pushed")["inv"]
    assert status["config_version"] == "1.0.0" and "echo@1.0.0" in status["functions"]
    bad = dict(
        message,
        fun_configs=[dict(message["fun_configs"][0], nodes="local"), dict(message["fun_configs"][1], timeout=5)],
    )
    with pytest.raises(rpc.RpcError) as err:
        control(gw.control, "$push", [bad, True])
    assert err.value.code == rpc.REFUSED
    assert 'never "local"' in err.value.text and "timeout" in err.value.text
    assert control(gw.control, "$verify", ["inv", "1.0.0"]) == {"status": "matched"}  # nothing half-applied


def test_pull_with_version_check(tmp_path: Any) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    nowhere = f"127.0.0.1:{free_port()}"  # the node's pushes go nowhere: only pulls reach the gateway
    extra = f'[[services]]\nservice = "inv"\nnodes = ["{address}"]\n'
    with NodeProcess([nowhere], name="p1", listen=address) as node:
        with gateway(pull=200, extra=extra) as gw:
            status = wait_pushed(gw.control, "inv", [address])
            assert status["source"] == "pull" and status["config_version"] == "1.0.0"
            updated = status["updated_at"]
            wait_for(
                lambda: (control(gw.control, "$pushed")["inv"]["pulled_at"] or 0) > updated + 0.3, what="a later pull"
            )
            assert control(gw.control, "$pushed")["inv"]["updated_at"] == updated  # same version: not re-applied

            async def call() -> Any:
                c = await client(gw)
                try:
                    return (await c.call("inv", "echo", {"text": "x"}, topic="api:t")).result
                finally:
                    await c.close()

            assert run(call())["node"] == "p1"
            node.stop()
            wait_for(lambda: control(gw.control, "$pushed")["inv"]["pull_failures"] > 0, what="a failed pull")
            with NodeProcess([nowhere], name="p2", listen=address, env={"NODE_CONFIG_VERSION": "2.0.0"}):
                wait_for(
                    lambda: control(gw.control, "$pushed")["inv"]["config_version"] == "2.0.0",
                    what="the new version pulled",
                )
                assert control(gw.control, "$pushed")["inv"]["pull_failures"] == 0
                assert run(call())["node"] == "p2"


RETRIES = """
[[functions]]
service = "probe"
request_type = "retries"
mfa = "telemetry_counter:retries"
arg_types = { clear = "boolean" }
"""


@pytest.fixture(scope="module")
def three_nodes():
    with (
        gateway(extra=RETRIES) as gw,
        NodeProcess([gw.control], name="n1") as a,
        NodeProcess([gw.control], name="n2") as b,
        NodeProcess([gw.control], name="n3") as c,
    ):
        wait_pushed(gw.control, "inv", [a.address, b.address, c.address])
        yield gw, [a, b, c]


def test_selection_modes(three_nodes: Any) -> None:
    gw, _nodes = three_nodes

    async def go() -> dict[str, Any]:
        c = await client(gw)
        out: dict[str, Any] = {}
        try:

            async def who(rt: str, args: dict[str, Any] | None = None) -> str:
                return (await c.call("inv", rt, args, topic="api:t")).result

            out["rr"] = Counter([await who("where_rr") for _ in range(30)])
            out["random"] = Counter([await who("where") for _ in range(90)])
            out["hash"] = {k: {await who("where_hash", {"key": k}) for _ in range(5)} for k in map(str, range(30))}
            out["sticky"] = {k: {await who("where_sticky", {"key": k}) for _ in range(5)} for k in map(str, range(30))}
        finally:
            await c.close()
        return out

    out = run(go())
    assert out["rr"] == {"n1": 10, "n2": 10, "n3": 10}
    assert set(out["random"]) == {"n1", "n2", "n3"} and min(out["random"].values()) >= 10
    assert all(len(v) == 1 for v in out["hash"].values())  # stable per key
    assert len({next(iter(v)) for v in out["hash"].values()}) == 3  # and spread over the nodes
    assert all(len(v) == 1 for v in out["sticky"].values())
    assert len({next(iter(v)) for v in out["sticky"].values()}) >= 2


def test_retry_same_node_and_all_nodes(three_nodes: Any) -> None:
    """A function that fails the first time a node sees a key: `same_node` retries on the node
    that failed (which then answers); `all_nodes` moves on to the next node each time (where it
    is a first time again), so its two retries fail too. The gateway's `genapi.executor.retry`
    events show each retry happened: without them, `all_nodes` would fail the same way."""
    gw, _nodes = three_nodes

    async def go() -> tuple[list[Any], list[str], list[Any], list[str]]:
        c = await client(gw)
        try:
            await c.call("probe", "retries", {"clear": True})
            same = [
                await c.call("inv", "flaky_same", {"key": f"s{i}"}, topic="api:t", raise_on_error=False)
                for i in range(6)
            ]
            same_retries = (await c.call("probe", "retries", {"clear": True})).result
            every = [
                await c.call("inv", "flaky_all", {"key": f"a{i}"}, topic="api:t", raise_on_error=False)
                for i in range(6)
            ]
            every_retries = (await c.call("probe", "retries", {"clear": True})).result
            # a second call of each key: every node saw it once (two retries), so the first answers
            again = [(await c.call("inv", "flaky_all", {"key": f"a{i}"}, topic="api:t")).result for i in range(6)]
            again_retries = (await c.call("probe", "retries", {"clear": True})).result
            return same, same_retries, every, [every_retries, again, again_retries]
        finally:
            await c.close()

    same, same_retries, every, (every_retries, again, again_retries) = run(go())
    assert all(r.success and r.result in {"n1", "n2", "n3"} for r in same), same
    assert len(same_retries) == 6 and all("same_node" in m for m in same_retries), same_retries  # one each
    assert all(not r.success and r.error == "Internal Server Error" for r in every), every
    assert len(every_retries) == 12 and all("all_nodes" in m for m in every_retries), every_retries  # two each
    assert set(again) <= {"n1", "n2", "n3"} and len(again) == 6 and again_retries == []


def test_another_node_answers_after_a_kill(three_nodes: Any) -> None:
    gw, nodes = three_nodes
    nodes[0].stop(signal.SIGKILL)

    async def go() -> list[str]:
        c = await client(gw)
        try:
            got = []
            for _ in range(30):
                got.append((await c.call("inv", "where_retry", topic="api:t")).result)
                got.append((await c.call("inv", "where_rr", topic="api:t")).result)
            return got
        finally:
            await c.close()

    got = run(go())
    assert set(got) == {"n2", "n3"}  # every call answered, none by the dead node
    nodes_status = control(gw.control, "$nodes")
    dead = next(n for n in nodes_status if n["address"] == nodes[0].address)
    assert dead["state"] == "open"  # its breaker opened after breaker_threshold failures


def test_breaker_opens_and_recovers() -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    extra = f"""
[[functions]]
service = "fixed"
request_type = "where"
mfa = "nodeapp:where"
nodes = ["{address}"]
arg_types = {{ key = "string" }}
"""
    with gateway(extra=extra) as gw:

        async def calls(n: int) -> list[Any]:
            c = await client(gw)
            try:
                return [
                    await c.call("fixed", "where", {"key": ""}, topic="api:t", raise_on_error=False) for _ in range(n)
                ]
            finally:
                await c.close()

        first = run(calls(3))
        assert [r.error for r in first[:2]] == ["no target nodes available"] * 2
        assert first[2].error == "Service temporarily unavailable" and first[2].can_retry
        with NodeProcess([], name="late", listen=address):
            time.sleep(0.5)  # the cooldown (400 ms) passes: the next call is the half-open probe
            later = run(calls(3))
            assert [r.result for r in later] == ["late"] * 3
            state = next(n for n in control(gw.control, "$nodes") if n["address"] == address)
            assert state["state"] == "closed"


def test_node_killed_mid_stream() -> None:
    with gateway(detail=True) as gw, NodeProcess([gw.control], name="k") as node:
        wait_pushed(gw.control, "inv", [node.address])

        async def go() -> list[Any]:
            c = await client(gw)
            got = []
            try:
                async for item in c.stream("inv", "count", {"n": 10000, "delay_ms": 5}, topic="api:t", timeout=5):
                    got.append(item)
                    if len(got) == 20:
                        node.stop(signal.SIGKILL)
                r = await c.call("inv", "echo", {"text": "after"}, topic="api:t", raise_on_error=False)
                got.append(r)
            finally:
                await c.close()
            return got

        got = run(go())
        end = got[-2]
        assert not end.success and end.error.startswith("Internal Server Error: node ") and "lost" in end.error
        assert got[-1].error == "no target nodes available"
        assert gw.alive()


def test_cluster_secret() -> None:
    with gateway(secret="s3cret-0123456789abcdef0123456789abcdef") as gw:
        # no secret: refused at the handshake, both ways of asking
        with pytest.raises(rpc.RpcError) as err:
            control(gw.control, "$pushed")
        assert err.value.code == rpc.AUTH_FAILED
        with pytest.raises(rpc.RpcError):
            control(gw.control, "$pushed", secret="wrong")
        assert control(gw.control, "$pushed", secret="s3cret-0123456789abcdef0123456789abcdef") == {}
        with NodeProcess([gw.control], name="nosecret", env={"GENAPI_CLUSTER_SECRET": ""}) as stranger:
            with NodeProcess(
                [gw.control], name="ok", env={"GENAPI_CLUSTER_SECRET": "s3cret-0123456789abcdef0123456789abcdef"}
            ) as friend:
                status = wait_pushed(
                    gw.control, "inv", [friend.address], secret="s3cret-0123456789abcdef0123456789abcdef"
                )
                assert stranger.address not in status["nodes"]
                assert "config_push_failed" in stranger.read_stderr()
                # the node's listener wants the secret too
                with pytest.raises(rpc.RpcError):
                    control(friend.address, "$config_version")
                assert (
                    control(friend.address, "$config_version", secret="s3cret-0123456789abcdef0123456789abcdef")
                    == "1.0.0"
                )
        assert "rpc_connection_refused" in gw.read_stderr()


def test_listeners_without_a_secret_stay_on_loopback() -> None:
    cfg = ANON.format(detail="false", pull=30000, extra="", secret="").replace(
        "[gateway]\n", '[gateway]\ncontrol_host = "0.0.0.0"\n'
    )
    with GatewayProcess(cfg) as gw:
        assert gw.control.startswith("127.0.0.1:")
        assert "listener_loopback_only" in gw.read_stderr()


def test_service_run_refuses_what_is_not_a_service() -> None:
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(SUPPORT)}
    for target, words in (
        ("nodeapp:nope", "cannot load nodeapp:nope"),
        ("nodeapp:NODE", "not a genapi.service.Service"),
        ("nomodule:svc", "cannot load"),
    ):
        p = subprocess.run(
            [sys.executable, "-m", "genapi", "service", "run", target],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert p.returncode == 2 and words in p.stderr, p.stderr


def test_readme_service_quick_start(tmp_path: Any) -> None:
    """The README's service-node quick start, as written: the node from the shell block (run in
    the background), then the Python and the phoenix.js calls, each printing what the README says."""
    import re
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    blocks = re.findall(r"<!-- readme-service -->\n```(\w+)\n(.*?)```", (repo / "README.md").read_text(), re.S)
    assert [lang for lang, _ in blocks] == ["sh", "python", "js"]
    (_, sh), (_, py), (_, js) = blocks
    node_address = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    with GatewayProcess() as gw:  # the embedded demo config, as `genapi serve`

        def here(code: str) -> str:
            return (
                code.replace("127.0.0.1:4001", gw.control)
                .replace("127.0.0.1:4000", f"127.0.0.1:{gw.port}")
                .replace("127.0.0.1:7001", node_address)
            )

        node = subprocess.Popen(
            ["bash", "-c", here(sh)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            banner = node.stdout.readline()  # type: ignore[union-attr]
            assert f"genapi service inventory listening on {node_address}" in banner, node.stderr.read()  # type: ignore[union-attr]
            wait_pushed(gw.control, "inventory", [node_address])
            out = subprocess.run(
                [sys.executable, "-"], input=here(py), capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
            )
            expected = next(ln.strip()[2:] for ln in py.splitlines() if ln.strip().startswith("# {"))
            assert out.stdout.splitlines() == [expected], out.stdout + out.stderr
            nodejs = shutil.which("node")
            assert nodejs is not None, "`node` (Node.js 20+) is needed for the phoenix.js example"
            script = tmp_path / "call.js"
            script.write_text(here(js))
            out = subprocess.run(
                [nodejs, str(script)],
                capture_output=True,
                text=True,
                timeout=60,
                env={**env, "NODE_PATH": str(repo / "tests" / "js" / "node_modules")},
            )
            expected = next(ln[3:] for ln in js.splitlines() if ln.startswith("// {"))
            assert out.stdout.splitlines() == [expected], out.stdout + out.stderr
        finally:
            os.killpg(node.pid, signal.SIGTERM)
            node.wait(10)


def test_resolver_custom_selector_and_in_flight_bound() -> None:
    a, b = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    extra = """
[[functions]]
service = "fixed"
request_type = "where"
mfa = "nodeapp:where"
nodes = "nodepick:nodes"
choose_node_mode = "nodepick:last"
arg_types = { key = "string" }

[[functions]]
service = "fixed"
request_type = "slow"
mfa = "nodeapp:slow"
nodes = "nodepick:nodes"
choose_node_mode = "nodepick:last"
arg_types = { ms = "num" }
"""
    cfg = ANON.format(detail="false", pull=30000, extra=extra, secret="").replace(
        "breaker_threshold", "node_max_in_flight = 1\nbreaker_threshold"
    )
    with (
        NodeProcess([], name="A", listen=a),
        NodeProcess([], name="B", listen=b),
        GatewayProcess(cfg, env={"NODEPICK_NODES": f"{a},{b}"}) as gw,
    ):

        async def go() -> list[Any]:
            c = await client(gw)
            try:
                who = [(await c.call("fixed", "where", {"key": ""}, topic="api:t")).result for _ in range(5)]
                # one call in flight on B (the bound is 1): the next goes to A, the one after finds both full
                first = asyncio.ensure_future(c.call("fixed", "slow", {"ms": 600}, topic="api:t"))
                second = asyncio.ensure_future(c.call("fixed", "slow", {"ms": 600}, topic="api:t"))
                await asyncio.sleep(0.2)
                third = await c.call("fixed", "slow", {"ms": 10}, topic="api:t", raise_on_error=False)
                return [who, (await first).result["node"], (await second).result["node"], third]
            finally:
                await c.close()

        who, first, second, third = run(go())
        assert who == ["B"] * 5  # the resolver's list, the custom selector's pick
        assert (first, second) == ("B", "A")  # B at its bound: the next node takes the call
        assert third.error == "Service temporarily unavailable" and third.can_retry


def test_node_pushes_again_when_the_gateway_comes_back() -> None:
    control_port = free_port()
    with NodeProcess([f"127.0.0.1:{control_port}"], name="r") as node:
        for _ in range(2):  # a gateway that starts after the node, then one that restarts
            with gateway(extra_args=["--control-port", str(control_port)]) as gw:
                status = wait_pushed(gw.control, "inv", [node.address])
                assert status["source"] == "push"


def test_a_node_runs_only_what_it_declared() -> None:
    with NodeProcess([], name="d") as node:

        async def go() -> list[Any]:
            peer = await rpc.connect(node.address, None, "test")
            out = []
            for target, args in (
                ("os:getcwd", []),
                ("nodeapp:_mark", ["x"]),
                ("$nope", []),
                ("nodeapp:echo", ["hi", 2]),
            ):
                try:
                    out.append(await peer.request(target, args, 5))
                except rpc.RpcError as exc:
                    out.append((exc.code, exc.text))
            peer.close()
            return out

        out = run(go())
        assert out[0] == ("unknown", "no function 'os:getcwd' on this node")
        assert out[1] == ("unknown", "no function 'nodeapp:_mark' on this node")
        assert out[2][0] == "unknown"
        assert out[3] == {"text": "hi", "n": 2, "node": "d"}


def test_hostile_peers_get_an_answer_and_nothing_dies() -> None:
    """Garbage on the control port and on a node's listener: malformed frames close that
    connection, bad requests are refused with a reason; gateway and node keep serving."""
    import socket as sk
    import struct

    with gateway() as gw, NodeProcess([gw.control], name="h") as node:
        wait_pushed(gw.control, "inv", [node.address])
        for address in (gw.control, node.address):
            host, port = address.rsplit(":", 1)
            for junk in (
                b"\xff" * 64,
                struct.pack(">I", 2**31) + b"x",
                struct.pack(">I", 3) + b"\x93\x01\x02",
                b"GET / HTTP/1.1\r\n\r\n",
            ):
                s = sk.create_connection((host, int(port)), timeout=5)
                s.sendall(junk)
                s.settimeout(10)
                said = b""
                try:  # the peer says why and closes this connection (a reset counts); a timeout fails
                    while chunk := s.recv(65536):
                        said += chunk
                except ConnectionResetError:
                    pass
                s.close()
                why = b"an HTTP request on a genapi RPC port" if junk.startswith(b"GET") else b"malformed frame"
                assert why in said, (address, junk, said)
        for target, args, code, text in (
            ("$push", ["not a map"], rpc.REFUSED, "push: Expected `object`, got `str`"),
            ("$push", [], rpc.REFUSED, "bad arguments for $push: ValueError"),
            ("$verify", [], rpc.REFUSED, "bad arguments for $verify: TypeError"),
            ("$rl_status", [], rpc.REFUSED, "rate limiting is off"),
            ("$nope", [], rpc.UNKNOWN, "no control request '$nope'"),
        ):
            with pytest.raises(rpc.RpcError) as refused:
                control(gw.control, target, args)
            assert (refused.value.code, refused.value.text[: len(text)]) == (code, text), (target, args)
        assert control(gw.control, "$ping") == "pong" and control(node.address, "$ping") == "pong"
        assert gw.alive() and node.alive()
        assert "Traceback" not in gw.read_stderr() and "Traceback" not in node.read_stderr()

        async def still() -> Any:
            c = await client(gw)
            try:
                return (await c.call("inv", "echo", {"text": "ok"}, topic="api:t")).result
            finally:
                await c.close()

        assert run(still())["text"] == "ok"


def test_a_node_ends_a_call_past_its_timeout_without_a_cancel(tmp_path: Any) -> None:
    """A node enforces each call's timeout_ms itself: a gateway that vanished without a word (no
    CANCEL, no FIN) does not leave its calls running there forever. Here the caller sends a call
    with timeout_ms = 300 and never cancels it; the node ends it and answers `timeout`."""
    from genapi._core.rpc import Waiter

    marks = tmp_path / "marks"
    marks.mkdir()
    with NodeProcess([], name="d", env={"NODE_MARKS": str(marks)}) as node:

        async def go() -> tuple[str, str, float]:
            peer = await rpc.connect(node.address, None, "test", 5)
            try:
                fut = asyncio.get_running_loop().create_future()
                t0 = time.monotonic()
                peer.call("nodeapp:slow", [30_000], 300, Waiter(fut, float("inf")))  # no deadline here
                with pytest.raises(rpc.RpcError) as exc:
                    await asyncio.wait_for(fut, 20)
                return exc.value.code, exc.value.text, time.monotonic() - t0
            finally:
                peer.close()

        code, text, took = asyncio.run(go())
        assert code == "timeout", (code, text)
        assert "300 ms" in text, text
        assert took >= 0.3, took  # not before its timeout
        assert (marks / "d-slow-cancelled").exists()  # the function was cancelled on the node
        assert "call_deadline_passed" in node.read_stderr()
