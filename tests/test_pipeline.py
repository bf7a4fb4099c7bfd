"""The request pipeline through a real gateway: lookup, versions, response modes, errors,
timeouts, retries, hooks, permissions, concurrency and cancellation (behavior.md §1-5)."""

import asyncio
import os
import tempfile
import time

import pytest

from genapi.client import Client
from support.configs import t
from support.gateway_proc import GatewayProcess, wait_until
from support.rawclient import Raw, request

EV = "phoenix_gen_api"
TMP = tempfile.mkdtemp(prefix="genapi-pipeline-")
AFTER_LOG = os.path.join(TMP, "after.log")

CONFIG = f"""
[gateway]
detail_error = true
max_in_flight = 4
max_queued = 2
max_queued_bytes = 2000
thread_pool_size = 2
thread_queue_limit = 2

[auth]
require_verified_user_id = false
{t("echo", version="1.0.0")}

[[functions]]
service = "t"
request_type = "echo"
version = "2.0.0"
nodes = "local"
mfa = "testapi:echo"
arg_types = {{ text = "string", n = "num" }}
arg_orders = ["text", "n"]
timeout = 1000

[[functions]]
service = "t"
request_type = "echo"
version = "10.0.0"
nodes = "local"
mfa = "testapi:echo"
arg_types = {{ text = "string", n = "num" }}
arg_orders = ["text", "n"]
timeout = 1000
disabled = true

[[functions]]
service = "t"
request_type = "gone"
version = "1.0.0"
nodes = "local"
mfa = "testapi:echo"
timeout = 1000
disabled = true
{t("plain")}
{t("block")}
{t("block", "block_short", timeout=300)}
{t("sleep")}
{t("sleep", "sleep_async", response_type="async")}
{t("sleep", "sleep_forever", timeout="infinity")}
{t("boom")}

[[functions]]
service = "t"
request_type = "plain_boom"
nodes = "local"
mfa = "testapi:plain_boom"
timeout = 1000

[[functions]]
service = "t"
request_type = "flaky"
nodes = "local"
mfa = "testapi:flaky"
arg_types = {{ key = "string" }}
retry = 2
timeout = 1000

[[functions]]
service = "t"
request_type = "flaky_no_retry"
nodes = "local"
mfa = "testapi:flaky"
arg_types = {{ key = "string" }}
retry = {{ same_node = 1 }}
timeout = 1000

[[functions]]
service = "t"
request_type = "info"
nodes = "local"
mfa = ["testapi:info", ["pre"]]
arg_types = {{ text = "string" }}
request_info = true
timeout = 1000

[[functions]]
service = "t"
request_type = "predefined"
nodes = "local"
mfa = ["testapi:predefined", [1, "two"]]
arg_types = {{ text = "string" }}
timeout = 1000

[[functions]]
service = "t"
request_type = "as_map"
nodes = "local"
mfa = "testapi:as_map"
arg_types = {{ a = "string", b = {{ type = "num", default_value = 7 }} }}
arg_orders = "map"
timeout = 1000

[[functions]]
service = "t"
request_type = "nothing"
nodes = "local"
mfa = "testapi:nothing"
timeout = 1000

[[functions]]
service = "t"
request_type = "fire"
nodes = "local"
mfa = "testapi:after_record"
arg_types = {{ request = "string", config = "string", response = "string", path = "string" }}
arg_orders = ["request", "config", "response", "path"]
response_type = "none"
timeout = 1000

[[functions]]
service = "t"
request_type = "watch"
nodes = "local"
mfa = "testapi:watch_cancel"
arg_types = {{ path = "string", ms = "num" }}
arg_orders = ["path", "ms"]
response_type = "async"
timeout = 10000

[[functions]]
service = "t"
request_type = "watch_stream"
nodes = "local"
mfa = "testapi:stream_watch"
arg_types = {{ path = "string", n = "num" }}
arg_orders = ["path", "n"]
response_type = "stream"
timeout = 10000

[[functions]]
service = "t"
request_type = "agen"
nodes = "local"
mfa = "testapi:agen"
arg_types = {{ n = "num" }}
response_type = "stream"
timeout = 1000

[[functions]]
service = "t"
request_type = "gen"
nodes = "local"
mfa = "testapi:gen"
arg_types = {{ n = "num" }}
response_type = "stream"
timeout = 1000

[[functions]]
service = "t"
request_type = "agen_fail"
nodes = "local"
mfa = "testapi:agen_fail"
arg_types = {{ n = "num" }}
response_type = "stream"
timeout = 1000

[[functions]]
service = "t"
request_type = "push_style"
nodes = "local"
mfa = "testapi:push_style"
arg_types = {{ n = "num" }}
request_info = true
response_type = "stream"
timeout = 1000

[[functions]]
service = "t"
request_type = "push_complete"
nodes = "local"
mfa = "testapi:push_style_complete"
request_info = true
response_type = "stream"
timeout = 1000

[[functions]]
service = "t"
request_type = "push_error"
nodes = "local"
mfa = "testapi:push_style_error"
request_info = true
response_type = "stream"
timeout = 1000

[[functions]]
service = "t"
request_type = "stream_value"
nodes = "local"
mfa = "testapi:stream_value"
arg_types = {{ text = "string" }}
response_type = "stream"
timeout = 1000

[[functions]]
service = "t"
request_type = "stream_slow"
nodes = "local"
mfa = "testapi:stream_watch"
arg_types = {{ path = "string", n = "num" }}
arg_orders = ["path", "n"]
response_type = "stream"
timeout = 200

[[functions]]
service = "t"
request_type = "hook_upper"
nodes = "local"
mfa = "testapi:echo"
arg_types = {{ text = "string" }}
before_execute = "testapi:before_upper"
after_execute = ["testapi:after_record", ["{AFTER_LOG}"]]
timeout = 1000

[[functions]]
service = "t"
request_type = "hook_reject"
nodes = "local"
mfa = "testapi:echo"
arg_types = {{ text = "string" }}
before_execute = "testapi:before_reject"
after_execute = ["testapi:after_record", ["{AFTER_LOG}"]]
timeout = 1000

[[functions]]
service = "t"
request_type = "hook_tuple"
nodes = "local"
mfa = "testapi:echo"
arg_types = {{ text = "string" }}
before_execute = "testapi:before_error_tuple"
timeout = 1000

[[functions]]
service = "t"
request_type = "hook_raise"
nodes = "local"
mfa = "testapi:echo"
arg_types = {{ text = "string" }}
before_execute = "testapi:before_raise"
timeout = 1000

[[functions]]
service = "t"
request_type = "hook_slow"
nodes = "local"
mfa = "testapi:echo"
arg_types = {{ text = "string" }}
before_execute = "testapi:before_slow"
hook_timeout = 200
timeout = 1000

[[functions]]
service = "t"
request_type = "hook_ignored"
nodes = "local"
mfa = "testapi:echo"
arg_types = {{ text = "string" }}
before_execute = "testapi:before_ignored"
after_execute = "testapi:after_raise"
timeout = 1000

[[functions]]
service = "t"
request_type = "hook_extra"
nodes = "local"
mfa = "testapi:echo"
arg_types = {{ text = "string" }}
before_execute = ["testapi:before_extra", ["tag"]]
timeout = 1000

[[functions]]
service = "t"
request_type = "hook_switch"
nodes = "local"
mfa = "testapi:echo"
arg_types = {{ text = "string" }}
before_execute = "testapi:before_switch_mode"
timeout = 1000

[[functions]]
service = "t"
request_type = "hook_async_fn"
nodes = "local"
mfa = "testapi:echo"
arg_types = {{ text = "string" }}
before_execute = "testapi:before_upper"
response_type = "async"
timeout = 1000

[[functions]]
service = "t"
request_type = "unencodable"
nodes = "local"
mfa = "testapi:unencodable"
timeout = 1000

[[functions]]
service = "t"
request_type = "plain_unencodable"
nodes = "local"
mfa = "testapi:plain_unencodable"
response_type = "async"
timeout = 1000

[[functions]]
service = "t"
request_type = "agen_unencodable"
nodes = "local"
mfa = "testapi:agen_unencodable"
response_type = "stream"
timeout = 1000

[[functions]]
service = "t"
request_type = "weird"
nodes = "local"
mfa = "testapi:echo"
arg_types = {{ text = "string" }}
before_execute = "testapi:before_upper"
timeout = 1000
"""


@pytest.fixture(scope="module")
def gw():
    g = GatewayProcess(CONFIG)
    yield g
    assert g.stop() == 0


async def connect(gw, topic="api:t"):
    c = await Client.connect(gw.url)
    await c.join(topic)
    return c


def test_versions_latest_disabled_and_unknown(gw, run):
    async def go():
        c = await connect(gw)
        assert (await c.call("t", "echo", {"text": "a"}, version="1.0.0")).result == {"text": "a", "n": 1}
        # latest enabled is 2.0.0 (10.0.0 is disabled), numeric ordering
        assert (await c.call("t", "echo", {"text": "a", "n": 5})).result == {"text": "a", "n": 5}
        assert (await c.call("t", "echo", {"text": "a", "n": 5}, version="0.0.0")).result == {"text": "a", "n": 5}
        r = await c.call("t", "echo", {"text": "a", "n": 5}, version="10.0.0", raise_on_error=False)
        assert (r.success, r.error) == (False, "disabled function: echo version 10.0.0")
        r = await c.call("t", "echo", {"text": "a"}, version="3.0.0", raise_on_error=False)
        assert r.error == "unsupported function: echo version 3.0.0"
        r = await c.call("t", "gone", raise_on_error=False)
        assert r.error == "disabled function: gone version 0.0.0"
        r = await c.call("nope", "echo", {"text": "a"}, raise_on_error=False)
        assert r.error == "unsupported function: echo version 0.0.0"
        await c.close()

    run(go())


def test_decode_errors_reply_error_with_push(gw, run):
    async def go():
        c = await Raw.connect(gw.url)
        await c.join("api:t")
        cases = [
            (
                {"service": "t", "args": {}},
                "unknown",
                "Invalid request: Missing required fields: request_type, request_id",
            ),
            ({"request_id": "r", "request_type": "echo"}, "r", "Invalid request: Missing required fields: service"),
            (
                {"request_id": "r", "request_type": "", "service": "t"},
                "r",
                "Invalid request: Missing required fields: request_type",
            ),
            ([1, 2], "unknown", "Invalid request: payload must be a JSON object, got array"),
            ("str", "unknown", "Invalid request: payload must be a JSON object, got string"),
            (
                {"request_id": "r", "request_type": "echo", "service": "t", "args": [1]},
                "r",
                "Invalid request: args must be a JSON object, got array",
            ),
            (
                {"request_id": 5, "request_type": "echo", "service": "t"},
                "unknown",
                "Invalid request: request_id must be a string, got number",
            ),
            (
                {"request_id": "r", "request_type": "echo", "service": "t", "version": 2},
                "r",
                "Invalid request: version must be a string, got number",
            ),
        ]
        for i, (payload, rid, msg) in enumerate(cases):
            c.send(["1", str(10 + i), "api:t", EV, payload])
            push, reply = await c.recv_n(2)
            assert push[3] == EV and push[4] == {
                "kind": "error",
                "request_id": rid,
                "result": None,
                "success": False,
                "error": msg,
                "async": False,
                "has_more": False,
                "can_retry": False,
            }
            assert reply == ["1", str(10 + i), "api:t", "phx_reply", {"status": "error", "response": msg}]
        # unknown payload keys are ignored
        c.send(
            [
                "1",
                "30",
                "api:t",
                EV,
                request("u", "echo", {"text": "x"}, service="t", version="1.0.0", whatever={"a": 1}),
            ]
        )
        assert (await c.recv_n(2))[0][4]["result"] == {"text": "x", "n": 1}
        await c.close()

    run(go())


def test_argument_errors_are_invalid_argument(gw, run):
    async def go():
        c = await connect(gw)
        r = await c.call("t", "echo", {"text": 1}, version="1.0.0", raise_on_error=False)
        assert r.error == 'Invalid argument: invalid argument type for "text", expected :string, got 1'
        r = await c.call("t", "echo", {"text": "a", "zzz": 1}, version="1.0.0", raise_on_error=False)
        assert r.error == 'Invalid argument: extra arguments for "echo", extra: ["zzz"]'
        r = await c.call("t", "echo", {}, version="1.0.0", raise_on_error=False)
        assert r.error == 'Invalid argument: missing argument "text" in "echo"'
        r = await c.call("t", "echo", {"text": None}, version="1.0.0", raise_on_error=False)
        assert r.error == 'Invalid argument: nil value not accepted for argument "text"'
        r = await c.call("t", "echo", {"text": "é" * 1501}, version="1.0.0", raise_on_error=False)
        assert r.error == 'Invalid argument: invalid argument size for "text", max 3000 bytes'
        assert (await c.call("t", "echo", {"text": "é" * 1500}, version="1.0.0")).success
        await c.close()

    run(go())


def test_errors_with_detail_error(gw, run):
    async def go():
        c = await connect(gw)
        r = await c.call("t", "boom", {"text": "x"}, raise_on_error=False)
        assert (r.success, r.error, r.can_retry) == (False, "Internal Server Error: RuntimeError: exploded on x", False)
        r = await c.call("t", "plain_boom", raise_on_error=False)
        assert r.error == "Internal Server Error: ValueError: plain failure"
        await c.close()

    run(go())


def test_plain_functions_run_in_threads_and_dont_block(gw, run):
    async def go():
        c = await connect(gw)
        r = await c.call("t", "plain", {"text": "x"})
        assert r.result["text"] == "x" and r.result["thread"].startswith("genapi-call")
        other = await connect(gw)
        blocker = asyncio.ensure_future(c.call("t", "block", {"ms": 4000}))
        await asyncio.sleep(0.1)
        # answered while the 4 s block still runs (on another connection, then on its own)
        assert (await other.call("t", "echo", {"text": "fast"}, version="1.0.0")).success
        assert not blocker.done()
        # requests on one connection run concurrently too
        assert (await c.call("t", "echo", {"text": "fast"}, version="1.0.0")).success
        assert not blocker.done()
        assert (await blocker).result == "blocked"
        await c.close()
        await other.close()

    run(go())


def test_pool_full_is_service_unavailable(gw, run):
    async def go():
        c = await connect(gw, "api:pool")
        d = await connect(gw, "api:pool2")
        # pool of 2 threads + queue of 2: the 5th concurrent blocking call is refused
        calls = [asyncio.ensure_future(c.call("t", "block", {"ms": 400})) for _ in range(4)]
        await asyncio.sleep(0.1)
        r = await d.call("t", "block", {"ms": 1}, raise_on_error=False)
        assert (r.success, r.error, r.can_retry) == (False, "Service temporarily unavailable", True)
        assert all(x.result == "blocked" for x in await asyncio.gather(*calls))
        await c.close()
        await d.close()

    run(go())


def test_requests_over_the_in_flight_cap_queue_in_order(gw, run):
    async def go():
        c = await Raw.connect(gw.url)
        await c.join("api:t")
        # 4 slots (max_in_flight) taken by slow calls, 2 more wait (max_queued), the 7th is refused
        for i in range(4):
            c.send(["1", f"s{i}", "api:t", EV, request(f"s{i}", "sleep_forever", {"ms": 300}, service="t")])
        # a request bigger than the queue's byte budget (max_queued_bytes) is refused at once
        c.send(["1", "big", "api:t", EV, request("big", "echo", {"text": "x" * 2500}, service="t", version="1.0.0")])
        push, _reply = await c.recv_n(2)
        assert push[4]["request_id"] == "big" and push[4]["can_retry"] is True
        for i in range(2):
            c.send(
                ["1", f"q{i}", "api:t", EV, request(f"q{i}", "echo", {"text": f"q{i}"}, service="t", version="1.0.0")]
            )
        c.send(["1", "over", "api:t", EV, request("over", "echo", {"text": "x"}, service="t", version="1.0.0")])
        push, _reply = await c.recv_n(2)
        assert push[4]["request_id"] == "over" and push[4]["can_retry"] is True and push[4]["success"] is False
        assert push[4]["error"] == (
            "Too many requests on this connection: 4 in flight and 2 waiting (max_in_flight, max_queued)"
        )
        # the connection keeps answering other frames while requests wait
        c.send([None, "hb", "phoenix", "heartbeat", {}])
        assert (await c.recv())[1] == "hb"
        frames = await c.recv_n(12)
        pushes = [f[4]["request_id"] for f in frames if f[3] == EV]
        # a waiting request starts only when a slow one gives its slot back, in arrival order
        assert sorted(pushes) == ["q0", "q1", "s0", "s1", "s2", "s3"]
        assert pushes[0].startswith("s") and pushes.index("q0") < pushes.index("q1")
        assert all(f[4]["success"] for f in frames if f[3] == EV)
        await c.close()

    run(go())


def test_timeouts(gw, run):
    async def go():
        c = await connect(gw)
        r = await c.call("t", "sleep", {"ms": 1000}, raise_on_error=False)
        assert (r.success, r.error, r.can_retry) == (False, "local execution timed out after 300ms", False)
        assert (await c.call("t", "sleep", {"ms": 10})).result == "slept"
        # a plain function in a thread: answered at its deadline, the thread finishes it anyway
        t0 = time.monotonic()
        r = await c.call("t", "block_short", {"ms": 4000}, raise_on_error=False)
        assert (r.success, r.error) == (False, "local execution timed out after 300ms")
        assert 0.28 < time.monotonic() - t0 < 3.5  # not when the thread ends (4 s)
        assert (await c.call("t", "block_short", {"ms": 1})).result == "blocked"
        r = await c.call("t", "sleep_async", {"ms": 1000}, raise_on_error=False)
        assert (r.error, r.async_) == ("local execution timed out after 300ms", False)
        assert (await c.call("t", "sleep_forever", {"ms": 400})).result == "slept"
        chunks = [x async for x in c.stream("t", "stream_slow", {"path": os.path.join(TMP, "slow"), "n": 100})]
        assert chunks[-1].error == "local execution timed out after 200ms" and not chunks[-1].success
        await c.close()

    run(go())


def test_retry(gw, run):
    async def go():
        c = await connect(gw)
        assert (await c.call("t", "flaky", {"key": "k1"})).result == 3
        r = await c.call("t", "flaky_no_retry", {"key": "k2"}, raise_on_error=False)
        assert r.error == "Internal Server Error: RuntimeError: not yet"
        await c.close()

    run(go())


def test_argument_conversion_shapes(gw, run):
    async def go():
        c = await connect(gw)
        r = await c.call("t", "info", {"text": "x"})
        assert r.result["values"] == ["pre", "x"]
        assert r.result["info"] == {"request_id": r.request_id, "user_id": None, "device_id": None}
        # device_id from the payload is used when the identity has none
        raw = await Raw.connect(gw.url)
        await raw.join("api:t")
        raw.send(
            [
                "1",
                "2",
                "api:t",
                EV,
                request("dev", "info", {"text": "y"}, service="t", device_id="d9", user_id="forged"),
            ]
        )
        push = (await raw.recv_n(2))[0]
        assert push[4]["result"]["info"] == {"request_id": "dev", "user_id": None, "device_id": "d9"}
        await raw.close()
        assert (await c.call("t", "predefined", {"text": "z"})).result == [1, "two", "z"]
        assert (await c.call("t", "as_map", {"a": "q"})).result == {"a": "q", "b": 7}
        assert (await c.call("t", "nothing")).result == "nothing"
        r = await c.call("t", "nothing", {"x": 1}, raise_on_error=False)
        assert r.error == 'Invalid argument: extra arguments for "nothing", extra: ["x"]'
        await c.close()

    run(go())


def test_async_order(gw, run):
    async def go():
        c = await Raw.connect(gw.url)
        await c.join("api:t")
        c.send(["1", "2", "api:t", EV, request("a1", "sleep_async", {"ms": 50}, service="t")])
        ack, reply, final = await c.recv_n(3)
        assert ack[4] == {
            "kind": "ack",
            "request_id": "a1",
            "result": None,
            "success": True,
            "error": None,
            "async": True,
            "has_more": False,
            "can_retry": False,
        }
        assert reply[3] == "phx_reply" and reply[4] == {"status": "ok", "response": "sleep_async"}
        assert final[4] == {
            "kind": "answer",
            "request_id": "a1",
            "result": "slept",
            "success": True,
            "error": None,
            "async": False,
            "has_more": False,
            "can_retry": False,
        }
        # an argument error of an async call comes after the ack, as the final push
        c.send(["1", "3", "api:t", EV, request("a2", "sleep_async", {"ms": "x"}, service="t")])
        ack, reply, final = await c.recv_n(3)
        assert ack[4]["async"] is True and final[4]["error"].startswith("Invalid argument:")
        await c.close()

    run(go())


def test_fire_and_forget(gw, run):
    async def go():
        c = await Raw.connect(gw.url)
        await c.join("api:t")
        path = os.path.join(TMP, "fire.log")
        c.send(
            [
                "1",
                "2",
                "api:t",
                EV,
                request("f1", "fire", {"request": "f1", "config": "c", "response": "r", "path": path}, service="t"),
            ]
        )
        assert await c.recv() == ["1", "2", "api:t", "phx_reply", {"status": "ok", "response": "fire"}]
        assert wait_until(lambda: os.path.exists(path))
        assert await c.nothing(0.3)
        await c.close()

    run(go())


def test_streams(gw, run):
    async def go():
        c = await Raw.connect(gw.url)
        await c.join("api:t")
        c.send(["1", "2", "api:t", EV, request("s1", "agen", {"n": 2}, service="t")])
        frames = await c.recv_n(5)
        body = [f[4] for f in frames if f[3] == EV]
        assert frames[1][3] == "phx_reply" and frames[1][4] == {"status": "ok", "response": "agen"}
        assert [(b["result"], b["has_more"], b["async"], b["success"]) for b in body] == [
            ("init", True, True, True),
            ({"i": 0}, True, True, True),
            ({"i": 1}, True, True, True),
            (None, False, True, True),
        ]
        await c.close()

        cl = await connect(gw)
        got = [(r.result, r.has_more) async for r in cl.stream("t", "gen", {"n": 3})]
        assert got == [(0, True), (10, True), (20, True), (None, False)]
        got = [(r.result, r.has_more, r.success, r.error) async for r in cl.stream("t", "agen_fail", {"n": 2})]
        assert got == [
            (0, True, True, None),
            (1, True, True, None),
            (None, False, False, "Internal Server Error: RuntimeError: stream broke"),
        ]
        got = [(r.result, r.has_more) async for r in cl.stream("t", "push_style", {"n": 2})]
        assert got == [(0, True), (1, True), ("last", False)]
        got = [(r.result, r.has_more) async for r in cl.stream("t", "push_complete")]
        assert got == [("a", True), (None, False)]
        got = [(r.result, r.success, r.error) async for r in cl.stream("t", "push_error")]
        assert got == [("a", True, None), (None, False, "custom failure")]
        got = [(r.result, r.has_more) async for r in cl.stream("t", "stream_value", {"text": "v"})]
        assert got == [("V", False)]
        got = [(r.success, r.error) async for r in cl.stream("t", "agen", {"n": "x"})]
        assert got == [(False, 'Invalid argument: invalid argument type for "n", expected :num, got "x"')]
        await cl.close()

    run(go())


def _state(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def test_cancel_on_leave_and_disconnect(gw, run):
    async def go():
        p1, p2, p3, p4 = (os.path.join(TMP, f"cancel{i}") for i in range(4))
        c = await Raw.connect(gw.url)
        await c.join("api:c1", "1")
        c.send(["1", "2", "api:c1", EV, request("w1", "watch", {"path": p1, "ms": 5000}, service="t")])
        c.send(["1", "3", "api:c1", EV, request("w2", "watch_stream", {"path": p2, "n": 1000}, service="t")])
        await c.recv_n(4)
        c.send(["1", "4", "api:c1", "phx_leave", {}])
        assert wait_until(lambda: _state(p1) == "cancelled" and _state(p2) == "cancelled")
        await c.join("api:c2", "5")
        c.send(["5", "6", "api:c2", EV, request("w3", "watch", {"path": p3, "ms": 5000}, service="t")])
        c.send(["5", "7", "api:c2", EV, request("w4", "watch_stream", {"path": p4, "n": 1000}, service="t")])
        await c.recv_n(4)  # both started (however slow the machine), then the client goes
        await c.close()
        assert wait_until(lambda: _state(p3) == "cancelled" and _state(p4) == "cancelled")
        # a call left alone finishes
        p5 = os.path.join(TMP, "cancel5")
        d = await connect(gw)
        assert (await d.call("t", "watch", {"path": p5, "ms": 50})).result is None
        assert wait_until(lambda: _state(p5) == "finished")
        await d.close()

    run(go())


def test_an_answer_to_a_topic_left_is_dropped_for_v1_too(gw, run):
    """A plain function still running in a thread when its client leaves the topic: its late
    answer is dropped. A Phoenix V1 join may carry no join_ref (the channel's join_ref is null);
    it is left all the same."""

    async def go():
        c = await Raw.connect(gw.url, query="vsn=1.0.0")
        c.send({"topic": "api:v1", "event": "phx_join", "payload": {}, "ref": "1"})
        assert (await c.recv())["payload"]["status"] == "ok"
        call = request("late", "block", {"ms": 400}, service="t")
        c.send({"topic": "api:v1", "event": EV, "payload": call, "ref": "2"})
        c.send({"topic": "api:v1", "event": "phx_leave", "payload": {}, "ref": "3"})
        left, closed = await c.recv_n(2)
        assert (left["ref"], left["payload"]["status"], closed["event"]) == ("3", "ok", "phx_close"), (left, closed)
        assert await c.nothing(1.5)  # the block ends after 400 ms: its answer is not sent
        await c.close()

    run(go())


def test_hooks(gw, run):
    async def go():
        c = await connect(gw)
        r = await c.call("t", "hook_upper", {"text": "abc"}, request_id="h1")
        assert r.result == {"text": "ABC", "n": 1}
        r = await c.call("t", "hook_reject", {"text": "abc"}, request_id="h2", raise_on_error=False)
        assert r.error == "hook rejected: not today"
        assert wait_until(lambda: "h2 False hook rejected: not today" in (_state(AFTER_LOG) or ""))
        assert "h1 True None" in _state(AFTER_LOG)
        assert (
            await c.call("t", "hook_tuple", {"text": "a"}, raise_on_error=False)
        ).error == "hook rejected: tuple says no"
        assert (
            await c.call("t", "hook_raise", {"text": "a"}, raise_on_error=False)
        ).error == "hook rejected: hook blew up"
        assert (
            await c.call("t", "hook_slow", {"text": "a"}, raise_on_error=False)
        ).error == "hook rejected: hook timed out after 200ms"
        assert (await c.call("t", "hook_ignored", {"text": "a"})).result == {"text": "a", "n": 1}
        assert (await c.call("t", "hook_extra", {"text": "a"})).result == {"text": "tag:a", "n": 1}
        # a before hook may change the config: here it demands an authenticated user
        assert (await c.call("t", "hook_switch", {"text": "a"}, raise_on_error=False)).error == "Permission denied"
        assert (await c.call("t", "hook_async_fn", {"text": "a"})).result == {"text": "A", "n": 1}
        await c.close()

    run(go())


def test_unencodable_results_are_errors_not_silence(gw, run):
    async def go():
        c = await connect(gw)
        r = await c.call("t", "unencodable", raise_on_error=False)
        assert r.error.startswith("Internal Server Error: result is not JSON-serializable")
        r = await c.call("t", "plain_unencodable", raise_on_error=False)
        assert r.error.startswith("Internal Server Error: result is not JSON-serializable")
        got = [(x.result, x.success) async for x in c.stream("t", "agen_unencodable")]
        assert got[0] == (1, True) and got[1][1] is False
        assert (await c.call("t", "echo", {"text": "still fine"}, version="1.0.0")).success
        await c.close()
        raw = await Raw.connect(gw.url)
        await raw.join("api:t")
        raw.send(b"[" * 50000 + b"]" * 50000)
        err = await raw.recv()
        assert err[3] == "phx_error" and "nested too deeply" in err[4]["reason"]
        await raw.close()

    run(go())


def test_worker_survives_everything(gw):
    assert gw.alive()
