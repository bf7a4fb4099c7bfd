"""Hostile and broken clients, through a real gateway process: what clients choose (topics, names,
join_refs) never stays in a worker after they leave, every request that decodes is answered
even when its answer cannot be encoded as given, and WebSocket framing follows RFC 6455
(fragments reassembled, RSV bits and invalid close codes closed with 1002, oversize 1009)."""

import asyncio
import json
import struct
import sys

import pytest
from picows import WSMsgType

from genapi._core import wire
from support.configs import DEMO_ECHO
from support.gateway_proc import GatewayProcess, wait_until
from support.rawclient import Raw, request

EV = "phoenix_gen_api"

CONFIG = (
    """
[gateway]
topics = ["api:*"]
max_topic_bytes = 32
max_payload_bytes = 2000

[auth]
require_verified_user_id = false
"""
    + DEMO_ECHO
    + """
[[functions]]
service = "demo"
request_type = "note"
nodes = "local"
mfa = "genapi.demo:note"
arg_types = { text = ["string", 200] }
response_type = "none"
timeout = 1000
"""
)

# the default payload limit (1 MB), so one frame may carry a topic or a name of about 2 MB
FLOOD_CONFIG = """
[gateway]
topics = ["api:*", "room:?"]

[auth]
require_verified_user_id = false

[[functions]]
service = "demo"
request_type = "echo"
nodes = "local"
mfa = "genapi.demo:echo"
arg_types = { text = "string" }
timeout = 5000
"""


@pytest.fixture(scope="module")
def gateway():
    gw = GatewayProcess(CONFIG)
    yield gw
    assert gw.stop() == 0


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


# --------------------------------------------------------------------------- what clients choose
def test_topic_length_is_limited(gateway, run):
    async def go():
        c = await Raw.connect(gateway.url)
        too_long = "api:" + "x" * 29  # 33 bytes
        assert await c.join(too_long, "1") == [
            None,
            "1",
            too_long,
            "phx_reply",
            {"status": "error", "response": {"reason": "topic is longer than 32 bytes (max_topic_bytes)"}},
        ]
        wide = "api:" + "é" * 15  # 19 characters, 34 UTF-8 bytes
        assert (await c.join(wide, "2"))[4]["response"]["reason"].startswith("topic is longer than 32 bytes")
        exact = "api:" + "x" * 28  # 32 bytes
        assert (await c.join(exact, "3"))[4] == {"status": "ok", "response": {}}
        c.send(["3", "4", exact, EV, request("r")])
        push, reply = await c.recv_n(2)
        assert push[4]["success"] is True and reply[4]["status"] == "ok"
        # a request on the refused topic is told the topic is not joined
        c.send(["1", "5", too_long, EV, request("r")])
        assert (await c.recv())[4] == {"status": "error", "response": {"reason": "unmatched topic"}}
        await c.close()

    run(go())


def test_join_ref_is_bounded(gateway, run):
    async def go():
        c = await Raw.connect(gateway.url)
        reason = "join_ref must be null, a number or a string of at most 64 characters"
        for bad in ("j" * 65, ["a", "list"], {"an": "object"}, 10**30):
            c.send([bad, "1", "api:x", "phx_join", {}])
            assert await c.recv() == [
                None,
                "1",
                "api:x",
                "phx_reply",
                {"status": "error", "response": {"reason": reason}},
            ]
        for i, ok in enumerate(("j" * 64, 7, 2.5, None)):
            c.send([ok, "2", f"api:{i}", "phx_join", {}])
            assert await c.recv() == [ok, "2", f"api:{i}", "phx_reply", {"status": "ok", "response": {}}]
        await c.close()

    run(go())


def test_config_rule_for_max_topic_bytes():
    from genapi.config import parse
    from genapi.errors import ConfigError

    assert parse("").gateway.max_topic_bytes == 256
    for bad in ("0", "70000", '"long"'):
        with pytest.raises(ConfigError) as e:
            parse(f"[gateway]\nmax_topic_bytes = {bad}")
        assert "[gateway] key max_topic_bytes: must be between 1 and 65536 (bytes)" in str(e.value)


def test_unique_topics_and_names_leave_nothing_behind(run):
    """Floods of joins with unique ~1.9 MB topics (allowed and refused patterns) and of requests
    with unique ~480 KB service/request_type names: the worker's memory comes back down once the
    clients leave (before the bounds, this flood kept ~280 MiB and ~200 MiB for good)."""
    gw = GatewayProcess(FLOOD_CONFIG)
    try:

        async def topics(conn_no: int, count: int = 75):
            c = await Raw.connect(gw.url)
            for i in range(count):
                prefix = "api:" if i % 2 else "nope:"  # allowed and refused patterns alike
                topic = f"{prefix}{conn_no}-{i}-" + "t" * 1_900_000
                c.send([str(i), str(i), topic, "phx_join", {}])
                reply = await c.recv()
                assert reply[4]["response"] == {"reason": "topic is longer than 256 bytes (max_topic_bytes)"}
            await c.close()

        async def names(conn_no: int, count: int = 150):
            c = await Raw.connect(gw.url)
            assert (await c.join("api:n"))[4]["status"] == "ok"
            for i in range(count):
                unique = f"{conn_no}-{i}-" + "n" * 480_000
                service, rt = (unique, "echo") if i % 2 else ("demo", unique)
                c.send(["1", str(i), "api:n", EV, request(str(i), rt, service=service)])
                push, _reply = await c.recv_n(2)
                assert push[4]["error"].startswith("unsupported function")
            await c.close()

        async def together(*coros):
            await asyncio.gather(*coros)

        # the same sizes once first, so the allocator's own slack is in the baseline
        run(together(topics(0, 10), topics(-1, 10), names(0, 10), names(-1, 10)), timeout=60)
        before = rss_mib(gw.pid)
        run(together(topics(1), topics(2)), timeout=120)
        run(together(names(1), names(2)), timeout=120)
        after = rss_mib(gw.pid)
        assert gw.alive()
        # what was read is freed; allocator slack stays well below one flood's worth (~280 MiB)
        assert after - before < 100, (before, after)
    finally:
        assert gw.stop() == 0


# --------------------------------------------------------------------------- every request answered
@pytest.fixture
def deep_client():
    """This test process reads the deep refs echoed back: more recursion room while it runs."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(5000)
    yield
    sys.setrecursionlimit(limit)


def test_deep_ref_is_answered(gateway, run, deep_client):
    """A ref nested nearly as deep as the decoder allows decodes, but the encoder (called deeper
    in the stack, from a Task) may not take it: the answer comes with ref null and a reason."""

    async def go():
        c = await Raw.connect(gateway.url)
        assert (await c.join("api:x", "1"))[4]["status"] == "ok"
        salvaged = 0
        for depth in range(975, 1000):
            deep = "[" * depth + "]" * depth
            # fire-and-forget (a Task): the phx_reply is its only answer
            c.send(f'["1", {deep}, "api:x", "{EV}", {json.dumps(request("r", "note", {"text": "t"}))}]')
            answer = await c.recv()
            if answer[3] == "phx_error":  # too deep to decode: a frame error, also an answer
                assert answer[4] == {"reason": "invalid frame: JSON is nested too deeply"}
                continue
            assert answer[3] == "phx_reply"
            if answer[1] is None:
                salvaged += 1
                assert answer[4]["status"] == "error"
                assert answer[4]["response"]["reason"].startswith("the answer's ref could not be encoded as JSON")
            else:
                assert answer[4] == {"status": "ok", "response": "note"}
        assert salvaged > 0
        # heartbeats, joins and leaves with a deep ref are answered too
        deep = "[" * 985 + "]" * 985
        for frame, events in (
            (f'[null, {deep}, "phoenix", "heartbeat", {{}}]', ["phx_reply"]),
            (f'["2", {deep}, "api:y", "phx_join", {{}}]', ["phx_reply"]),
            (f'["2", {deep}, "api:y", "phx_leave", {{}}]', ["phx_reply", "phx_close"]),
            (f'[null, {deep}, "api:unjoined", "{EV}", {{}}]', ["phx_reply"]),
        ):
            c.send(frame)
            assert [m[3] for m in await c.recv_n(len(events))] == events
        c.send(["1", "9", "api:x", EV, request("after")])
        assert (await c.recv_n(2))[1] == ["1", "9", "api:x", "phx_reply", {"status": "ok", "response": "echo"}]
        await c.close()

    run(go())


def _nested(depth: int) -> list:
    v: list = []
    for _ in range(depth):
        v = [v]
    return v


def test_unencodable_parts_of_an_answer_become_null():
    """The frame builders themselves: a ref or join_ref deeper than the encoder goes is sent as
    null (a reply then says why); the rest of the frame is kept."""
    deep = _nested(5000)

    def frames(data: bytes) -> list:
        out, pos = [], 0
        while pos < len(data):
            n, pos = data[pos + 1], pos + 2
            if n == 126:
                n, pos = int.from_bytes(data[pos : pos + 2], "big"), pos + 2
            out.append(json.loads(data[pos : pos + n]))
            pos += n
        return out

    [reply] = frames(wire.reply_v2("1", deep, "api:x", "ok", "echo"))
    assert reply[:4] == ["1", None, "api:x", "phx_reply"] and reply[4]["status"] == "error"
    assert reply[4]["response"]["reason"].startswith("the answer's ref could not be encoded as JSON (RecursionError")
    [reply] = frames(wire.reply_v2(deep, deep, "api:x", "ok", {}))
    assert reply[:2] == [None, None] and "join_ref, ref" in reply[4]["response"]["reason"]
    [msg] = frames(wire.message_v2(None, deep, "phoenix", "phx_error", {"reason": "bad"}))
    assert msg == [None, None, "phoenix", "phx_error", {"reason": "bad"}]
    push, reply = frames(wire.answer_v1(None, deep, "api:x", EV, {"ok": 1}, "ok", "echo"))
    assert push == {"topic": "api:x", "event": EV, "payload": {"ok": 1}, "ref": None}
    assert reply["ref"] is None and reply["payload"]["status"] == "error"
    [msg] = frames(wire.message_v1(None, "3", "api:x", "custom", deep))
    assert msg["ref"] == "3" and msg["payload"]["reason"].startswith("the answer's payload could not be encoded")


# --------------------------------------------------------------------------- WebSocket framing
def test_fragmented_text_message_is_reassembled(gateway, run):
    async def go():
        c = await Raw.connect(gateway.url)
        assert (await c.join("api:x", "1"))[4]["status"] == "ok"
        data = json.dumps(["1", "2", "api:x", EV, request("frag", args={"text": "é" * 300})]).encode()
        t = c.transport
        t.send(WSMsgType.TEXT, data[:7], fin=False)
        t.send_ping(b"between")  # control frames may come between fragments
        t.send(WSMsgType.CONTINUATION, data[7:500], fin=False)
        t.send(WSMsgType.CONTINUATION, b"", fin=False)
        t.send(WSMsgType.CONTINUATION, data[500:], fin=True)
        push, reply = await c.recv_n(2)
        assert push[4]["request_id"] == "frag" and push[4]["result"] == {"text": "é" * 300, "n": 1}
        assert reply == ["1", "2", "api:x", "phx_reply", {"status": "ok", "response": "echo"}]
        # split inside a multi-byte character
        raw = json.dumps(["1", "3", "api:x", EV, request("utf8", args={"text": "é"})], ensure_ascii=False).encode()
        mid = raw.index("é".encode()) + 1
        t.send(WSMsgType.TEXT, raw[:mid], fin=False)
        t.send(WSMsgType.CONTINUATION, raw[mid:], fin=True)
        push, reply = await c.recv_n(2)
        assert push[4]["result"] == {"text": "é", "n": 1} and reply[1] == "3"
        # a fragmented binary message is reassembled and answered like one binary frame
        head = b"\x00\x01\x01\x05" + bytes([len(EV)]) + b"14api:x" + EV.encode()
        t.send(WSMsgType.BINARY, head[:5], fin=False)
        t.send(WSMsgType.CONTINUATION, head[5:] + b"data", fin=True)
        err = await c.recv()
        assert err[1] == "4" and "binary payloads are not supported" in err[4]["response"]["reason"]
        # the connection goes on with whole frames
        c.send(["1", "5", "api:x", EV, request("after")])
        assert (await c.recv_n(2))[1][1] == "5"
        await c.close()

    run(go())


def test_oversize_fragmented_message_closes_1009(gateway, run):
    async def go():
        c = await Raw.connect(gateway.url)
        t = c.transport
        chunk = b"x" * 30_000  # max_payload_bytes 2000: messages up to 2 * 2000 + 65536 bytes
        t.send(WSMsgType.TEXT, b'["1","2","api:x","' + chunk, fin=False)
        t.send(WSMsgType.CONTINUATION, chunk, fin=False)
        t.send(WSMsgType.CONTINUATION, chunk, fin=False)
        assert await asyncio.wait_for(c.closed, 5) == 1009
        assert c.close_reason == b"message exceeds 69536 bytes (2 * max_payload_bytes + 65536)"

    run(go())


@pytest.mark.parametrize("bits", [{"rsv1": True}, {"rsv2": True}, {"rsv3": True}])
def test_rsv_bits_close_1002(gateway, run, bits):
    async def go():
        c = await Raw.connect(gateway.url)
        c.transport.send(WSMsgType.TEXT, json.dumps([None, "1", "phoenix", "heartbeat", {}]), **bits)
        assert await asyncio.wait_for(c.closed, 5) == 1002
        assert c.close_reason == b"RSV bits set without a negotiated extension"
        assert c.frames.empty()  # the frame was not served

    run(go())


def test_rsv_bits_on_ping_and_continuation_close_1002(gateway, run):
    async def go():
        c = await Raw.connect(gateway.url)
        c.transport.send(WSMsgType.PING, b"p", rsv1=True)
        assert await asyncio.wait_for(c.closed, 5) == 1002
        c = await Raw.connect(gateway.url)
        c.transport.send(WSMsgType.TEXT, b'[null, "1", ', fin=False)
        c.transport.send(WSMsgType.CONTINUATION, b'"phoenix", "heartbeat", {}]', fin=True, rsv1=True)
        assert await asyncio.wait_for(c.closed, 5) == 1002

    run(go())


@pytest.mark.parametrize("code", [5000, 65535, 1004, 1005, 1006, 1015, 1016, 2999, 999, 0])
def test_invalid_close_codes_close_1002(gateway, run, code):
    async def go():
        c = await Raw.connect(gateway.url)
        c.transport.send(WSMsgType.CLOSE, struct.pack("!H", code))
        assert await asyncio.wait_for(c.closed, 5) == 1002

    run(go())


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1011, 1014, 3000, 4999])
def test_valid_close_codes_are_echoed(gateway, run, code):
    async def go():
        c = await Raw.connect(gateway.url)
        c.transport.send(WSMsgType.CLOSE, struct.pack("!H", code) + b"bye")
        assert await asyncio.wait_for(c.closed, 5) == code

    run(go())


def test_fragment_order_errors_close_1002(gateway, run):
    async def go():
        c = await Raw.connect(gateway.url)  # a continuation with nothing to continue
        c.transport.send(WSMsgType.CONTINUATION, b"[]", fin=True)
        assert await asyncio.wait_for(c.closed, 5) == 1002
        assert c.close_reason == b"continuation frame without a fragmented message to continue"
        c = await Raw.connect(gateway.url)  # a new message before the fragmented one ended
        c.transport.send(WSMsgType.TEXT, b'[null, "1", ', fin=False)
        c.transport.send(WSMsgType.TEXT, json.dumps([None, "2", "phoenix", "heartbeat", {}]))
        assert await asyncio.wait_for(c.closed, 5) == 1002
        assert c.close_reason == b"new data frame before the fragmented message finished"

    run(go())


def test_pings_are_answered(gateway, run):
    async def go():
        c = await Raw.connect(gateway.url)
        c.transport.send_ping(b"hello")  # a WebSocket ping: the pong echoes its payload
        assert await asyncio.wait_for(c.pongs.get(), 5) == b"hello"
        c.send([None, "1", "phoenix", "heartbeat", {}])  # a Phoenix heartbeat: its phx_reply
        assert await c.recv() == [None, "1", "phoenix", "phx_reply", {"status": "ok", "response": {}}]
        assert not c.closed.done()
        await c.close()

    run(go())


def _metric(gw: GatewayProcess, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://{gw.host}:{gw.port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_clients_protocol_errors_are_not_errors_in_the_log():
    """picows reports a peer's protocol error (a frame over the limit, a reserved opcode) at
    ERROR; a hostile client must not fill the operator's error log: INFO, counted in /metrics."""
    with GatewayProcess(CONFIG, extra_args=["--log-level", "info"]) as gw:

        async def go():
            c = await Raw.connect(gw.url)
            c.transport.send(WSMsgType.TEXT, b"x" * 100_000)  # one frame over the 69536-byte limit
            assert await asyncio.wait_for(c.closed, 5) == 1009
            c = await Raw.connect(gw.url)
            c.transport.underlying_transport.write(bytes([0x83, 0x80, 0, 0, 0, 0]))  # FIN, opcode 3: reserved
            assert await asyncio.wait_for(c.closed, 5) == 1002

        asyncio.run(go())

        def told() -> list[str]:
            return [line for line in gw.read_stderr().splitlines() if "WS parser error" in line]

        # counted as picows reports them (it may report one error twice, a moment apart)
        assert wait_until(lambda: _metric(gw, "genapi_protocol_errors_total") == len(told()) >= 2, 5)
        assert any("1009" in line for line in told()) and any("opcode=0x3" in line for line in told()), told()
        assert all(" INFO picows " in line for line in told()), told()  # still told, at info
        assert [line for line in gw.read_stderr().splitlines() if " ERROR " in line] == []
