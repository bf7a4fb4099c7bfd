"""The Python client (genapi.client) against real gateways."""

import asyncio
import os
import signal
import time

import pytest

from genapi.client import (
    CallFailed,
    Client,
    ClientError,
    ConnectionLost,
    PhoenixError,
    ReplyTimeout,
    StreamRequired,
    phoenix_backoff,
)
from genapi.errors import GenapiError
from support.gateway_proc import GatewayProcess

RESTRICTED = """
[gateway]
topics = ["api:*"]

[auth]
require_verified_user_id = false

[[functions]]
service = "demo"
request_type = "echo"
nodes = "local"
mfa = "genapi.demo:echo"
arg_types = { text = "string" }
timeout = 1000
"""


def test_client_join_errors_pushes_and_v1(run):
    with GatewayProcess(RESTRICTED) as gw:

        async def go():
            c = await Client.connect(gw.url)
            with pytest.raises(PhoenixError) as e:
                await c.join("room:1")
            assert e.value.response == {"reason": "unmatched topic"}
            with pytest.raises(RuntimeError):
                await c.call("demo", "echo", {"text": "x"})  # nothing joined yet
            await c.join("api:a")
            assert await c.heartbeat() == {"status": "ok", "response": {}}
            # a topic that is not joined: the reply is an error, there is no push
            with pytest.raises(PhoenixError) as e:
                await c.call("demo", "echo", {"text": "x"}, topic="api:other")
            assert e.value.response == {"reason": "unmatched topic"}
            # a server push that answers no call lands in `pushes`: phx_close after a leave
            await c.leave("api:a")
            push = await asyncio.wait_for(c.pushes.get(), 5)
            assert (push.topic, push.event) == ("api:a", "phx_close")
            await c.close()
            await asyncio.wait_for(c.closed, 5)  # the disconnect is seen, not left hanging

            v1 = await Client.connect(gw.url, vsn=None)  # no vsn: V1 objects
            await v1.join("api:v1")
            r = await v1.call("demo", "echo", {"text": "v1"})
            assert r.result == {"text": "v1", "n": 1}
            await v1.close()

        run(go())


def test_client_sees_server_shutdown(run):
    gw = GatewayProcess(RESTRICTED)

    async def go():
        c = await Client.connect(gw.url)
        await c.join("api:x")
        gw.proc.terminate()
        await asyncio.wait_for(c.closed, 5)
        assert c.close_code.value == 1001
        with pytest.raises(ConnectionError):
            c.push("api:x", "phoenix_gen_api", {})

    run(go())
    assert gw.stop() == 0


# ---------------------------------------------------------------------------------------------
# heartbeats, typed errors, timeouts, reconnect
IDLE_MS = 600
DEMO = f"""
[gateway]
topics = ["api:*"]
idle_timeout_ms = {IDLE_MS}

[auth]
require_verified_user_id = false

[[functions]]
service = "demo"
request_type = "echo"
nodes = "local"
mfa = "genapi.demo:echo"
arg_types = {{ text = "string", n = {{ type = "num", default_value = 1 }} }}
arg_orders = ["text", "n"]
timeout = 5000

[[functions]]
service = "demo"
request_type = "slow_echo"
nodes = "local"
mfa = "genapi.demo:slow_echo"
arg_types = {{ text = "string", delay_ms = "num" }}
arg_orders = ["text", "delay_ms"]
response_type = "async"
timeout = 30000

[[functions]]
service = "demo"
request_type = "count"
nodes = "local"
mfa = "genapi.demo:count"
arg_types = {{ n = "num", delay_ms = {{ type = "num", default_value = 0 }} }}
arg_orders = ["n", "delay_ms"]
response_type = "stream"
timeout = 30000
"""


def test_heartbeats_keep_an_idle_connection_past_the_idle_timeout(run):
    with GatewayProcess(DEMO) as gw:

        async def go():
            beating = await Client.connect(gw.url, heartbeat_interval=IDLE_MS / 1000 / 3)
            silent = await Client.connect(gw.url, heartbeat_interval=None)
            await beating.join("api:hb")
            await silent.join("api:hb")
            # the silent client is closed by the gateway's idle sweeper (1001, "idle timeout")
            assert (await asyncio.wait_for(silent.closed, 10)).value == 1001
            with pytest.raises(ConnectionLost, match="closed by the server with code 1001"):
                await silent.call("demo", "echo", {"text": "x"})
            # the beating one sent nothing but heartbeats for longer than 3 idle timeouts
            await asyncio.sleep(3 * IDLE_MS / 1000)
            assert not beating.closed.done()
            assert (await beating.call("demo", "echo", {"text": "still here"})).result == {"text": "still here", "n": 1}
            await beating.close()

        run(go())


def test_heartbeat_interval_must_be_positive(run):
    async def go():
        with pytest.raises(ValueError, match="heartbeat_interval must be a positive number of seconds or None, got 0"):
            await Client.connect("ws://127.0.0.1:9/socket", heartbeat_interval=0)

    run(go())


def test_a_stopped_server_is_detected_by_its_missing_heartbeat_reply(run):
    gw = GatewayProcess(DEMO)
    interval = 0.3

    async def go():
        c = await Client.connect(gw.url, heartbeat_interval=interval)
        await c.join("api:dead")
        assert (await c.call("demo", "echo", {"text": "a"})).success
        os.kill(gw.pid, signal.SIGSTOP)  # the process holds its socket but answers nothing
        t0 = time.monotonic()
        with pytest.raises(ConnectionLost) as e:
            await c.call("demo", "echo", {"text": "b"}, timeout=30, request_id="r-dead")
        waited = time.monotonic() - t0
        assert str(e.value) == (
            f"connection to {gw.url}/websocket closed: no heartbeat reply within {interval} s "
            "(heartbeat_interval); the server is unreachable or stopped"
        )
        assert isinstance(e.value, ClientError) and isinstance(e.value, ConnectionError)
        assert waited < 10  # the heartbeat found it, not the call's 30 s timeout
        await asyncio.wait_for(c.closed, 5)
        with pytest.raises(ConnectionLost):
            await c.call("demo", "echo", {"text": "c"})

    try:
        run(go())
    finally:
        os.kill(gw.pid, signal.SIGCONT)
        assert gw.stop() == 0


@pytest.mark.parametrize(
    "sig,text",
    [(signal.SIGTERM, "closed by the server with code 1001"), (signal.SIGKILL, "lost")],
    ids=["SIGTERM", "SIGKILL"],
)
def test_pending_calls_fail_when_the_server_goes(run, sig, text):
    gw = GatewayProcess(DEMO)

    async def go():
        c = await Client.connect(gw.url)
        await c.join("api:gone")
        pending = asyncio.ensure_future(c.call("demo", "slow_echo", {"text": "x", "delay_ms": 20000}, timeout=30))
        await asyncio.sleep(0.2)
        os.kill(gw.pid, sig)
        with pytest.raises(ConnectionLost) as e:
            await pending
        assert str(e.value) == f"connection to {gw.url}/websocket {text}"
        await asyncio.wait_for(c.closed, 5)

    try:
        run(go())
    finally:
        gw.stop(expect=0 if sig == signal.SIGTERM else -signal.SIGKILL)


def test_call_raises_typed_errors(run, demo_gateway):
    async def go():
        c = await Client.connect(demo_gateway.url)
        await c.join("api:errors")
        # a failed Response raises CallFailed, which carries it
        with pytest.raises(CallFailed) as e:
            await c.call("demo", "echo", {"text": 1}, request_id="bad-1")
        err = e.value
        assert isinstance(err, GenapiError) and isinstance(err, ClientError)
        assert err.error == 'Invalid argument: invalid argument type for "text", expected :string, got 1'
        assert (err.request_id, err.can_retry) == ("bad-1", False)
        assert (err.response.success, err.response.error, err.response.request_id) == (False, err.error, "bad-1")
        assert str(err) == (
            'demo.echo (request bad-1) failed: Invalid argument: invalid argument type for "text", '
            "expected :string, got 1"
        )
        with pytest.raises(CallFailed, match=r"unsupported function: nope version 0\.0\.0"):
            await c.call("demo", "nope")
        # raise_on_error=False returns the Response as a value
        r = await c.call("demo", "echo", {"text": 1}, raise_on_error=False)
        assert (r.success, r.error) == (False, err.error)
        # a stream function refuses call() and points to stream()
        with pytest.raises(StreamRequired) as e:
            await c.call("demo", "count", {"n": 3, "delay_ms": 20}, request_id="s-1")
        assert str(e.value) == (
            "demo.count is a stream function (request s-1 started a stream): "
            'read it with client.stream("demo", "count", ...) instead of call()'
        )
        assert isinstance(e.value, TypeError)
        # the stream went on in the gateway; its chunks are dropped, not left in `pushes`
        assert [x.result async for x in c.stream("demo", "count", {"n": 3})] == [1, 2, 3, None]
        await asyncio.sleep(0.2)
        assert c.pushes.empty()
        # a timeout names the function and the request id; the late answer is dropped
        with pytest.raises(ReplyTimeout) as e:
            await c.call("demo", "slow_echo", {"text": "late", "delay_ms": 500}, timeout=0.2, request_id="r1")
        assert str(e.value) == "no reply to demo.slow_echo (request r1) within 0.2 s"
        assert isinstance(e.value, TimeoutError) and e.value.request_id == "r1"
        with pytest.raises(
            ReplyTimeout,
            match=r"^no reply to demo.count \(request s-2\) within 0.2 s "
            r"\(waiting for the next chunk\)$",
        ):
            async for _ in c.stream("demo", "count", {"n": 2, "delay_ms": 500}, timeout=0.2, request_id="s-2"):
                pass
        # a sync call that times out before its push and its reply: both are dropped when they come
        with pytest.raises(ReplyTimeout, match=r"^no reply to demo.blocking_sleep \(request b-1\) within 0.1 s$"):
            await c.call("demo", "blocking_sleep", {"ms": 300}, timeout=0.1, request_id="b-1")
        await asyncio.sleep(0.6)
        assert c.pushes.empty()
        assert (await c.call("demo", "echo", {"text": "fine"})).result == {"text": "fine", "n": 1}
        await c.close()
        with pytest.raises(ConnectionLost, match="the client was closed"):
            await c.call("demo", "echo", {"text": "x"})

    run(go())


def test_reconnect_rejoins_after_a_gateway_restart_on_the_same_port(run):
    first = GatewayProcess(DEMO, extra_args=["--drain-timeout", "0.2"])  # the pending call is not waited for
    port = first.port
    holder: dict[str, GatewayProcess] = {}

    async def go():
        c = await Client.connect(first.url, reconnect=True, reconnect_after=lambda tries: 0.1, heartbeat_interval=1)
        await c.join("api:a", {"hello": "a"})
        await c.join("api:b")
        pending = asyncio.ensure_future(c.call("demo", "slow_echo", {"text": "x", "delay_ms": 20000}, timeout=30))
        await asyncio.sleep(0.2)
        assert first.stop() == 0  # SIGTERM: every client is closed with 1001
        with pytest.raises(ConnectionLost, match="closed by the server with code 1001"):
            await pending
        assert not c.connected.is_set() and not c.closed.done()
        with pytest.raises(ReplyTimeout) as e:
            await c.call("demo", "echo", {"text": "x"}, timeout=0.3, request_id="down-1")
        assert str(e.value) == "no reply to demo.echo (request down-1) within 0.3 s (not connected: reconnecting)"
        # a call made while the gateway is down waits for the reconnection (within its timeout)
        waiting = asyncio.ensure_future(c.call("demo", "echo", {"text": "queued"}, topic="api:b", timeout=30))
        await asyncio.sleep(0.3)
        holder["gw"] = await asyncio.to_thread(GatewayProcess, DEMO, extra_args=["--port", str(port)])
        assert (await waiting).result == {"text": "queued", "n": 1}
        assert c.reconnects == 1 and c.connected.is_set()
        # both topics were joined again: calls on them work without a join
        assert (await c.call("demo", "echo", {"text": "a"}, topic="api:a")).result == {"text": "a", "n": 1}
        assert (await c.call("demo", "echo", {"text": "b"}, topic="api:b")).result == {"text": "b", "n": 1}
        await c.leave("api:a")
        await c.close()
        assert c.closed.done()

    try:
        run(go())
    finally:
        first.stop()
        if "gw" in holder:
            assert holder["gw"].stop() == 0


def test_phoenix_backoff():
    assert [phoenix_backoff(n) for n in range(1, 12)] == [0.01, 0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 1, 2, 5, 5]
