"""The general request path driven in-process through the Reply object, without a socket: a
`Sink` stands in for the connection and records the frames the pipeline sends."""

from __future__ import annotations

import asyncio
import json

import pytest

from genapi._core.dispatch import Entry
from genapi._core.handoff import ThreadPool
from genapi._core.reply import Reply
from genapi.config import parse
from genapi.gateway.phoenix import V1, V2
from genapi.relay.seats import Seats
from genapi.request.bind import Binder, Functions, node_links, value_limits
from genapi.request.pipeline import GeneralPath
from genapi.request.registry import Registry
from genapi.structs import Request
from support.configs import t

EV = "phoenix_gen_api"

CONFIG = (
    """
[gateway]
detail_error = true
thread_pool_size = 2
"""
    + t("echo")
    + t("plain")
    + t("sleep", "slow", response_type="async", timeout=200)
    + t("block", timeout=200)
    + t("gen")
    + t("echo", "mine", check_permission="any_authenticated")
    + t("echo", "rejected", before_execute="testapi:before_reject")
    + t("plain", "fire", response_type="none")
)


class Sink:
    """Receives what a connection would write: ready WebSocket text frames."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.frames.append(data)

    def messages(self) -> list:
        """Every frame, decoded (one write may hold several frames: an answer is push + reply)."""
        out = []
        data = b"".join(self.frames)
        pos = 0
        while pos < len(data):
            n = data[pos + 1] & 0x7F
            if n == 126:
                n, pos = int.from_bytes(data[pos + 2 : pos + 4], "big"), pos + 4
            elif n == 127:
                n, pos = int.from_bytes(data[pos + 2 : pos + 10], "big"), pos + 10
            else:
                pos += 2
            out.append(json.loads(data[pos : pos + n]))
            pos += n
        return out


def drive(request_type: str, args: dict, user_id: str | None = None, ser=V2) -> list:
    """Runs one request through GeneralPath.run and returns the decoded frames it sent."""

    async def go() -> list:
        settings = parse(CONFIG)
        gw = settings.gateway
        pool = ThreadPool(gw.thread_pool_size, gw.thread_queue_limit)
        registry: Registry[Entry] = Registry()
        binder = Binder(registry, value_limits(settings), node_links(settings), gw.detail_error, pool, Seats())
        Functions(registry, binder, settings.functions)
        general = GeneralPath(binder, pool, None, gw.detail_error)
        try:
            entry = registry.lookup("t", request_type, None)[1]
            sink = Sink()
            reply = Reply(sink, ser, "1", "7", "api:t", EV, request_type)
            req = Request(f"r-{request_type}", "t", request_type, args, user_id=user_id)
            await general.run(reply, req, entry)
            return sink.messages()
        finally:
            pool.shutdown()

    return asyncio.run(go())


def ok(rid: str, result, kind: str = "answer", **kw) -> dict:
    base = {
        "kind": kind,
        "request_id": rid,
        "result": result,
        "success": True,
        "error": None,
        "async": False,
        "has_more": False,
        "can_retry": False,
    }
    base.update(kw)
    return base


def fail(rid: str, error: str, **kw) -> dict:
    return ok(rid, None, "error", success=False, error=error, **kw)


def test_sync_answer_is_push_then_reply():
    assert drive("echo", {"text": "a"}) == [
        ["1", None, "api:t", EV, ok("r-echo", {"text": "a", "n": 1})],
        ["1", "7", "api:t", "phx_reply", {"status": "ok", "response": "echo"}],
    ]


def test_plain_function_goes_through_the_thread_handoff():
    push, _ = drive("plain", {"text": "a"})
    assert push[4]["result"]["thread"].startswith("genapi-call")


def test_async_ack_reply_then_final_push():
    frames = drive("slow", {"ms": 10})
    assert [f[3] for f in frames] == [EV, "phx_reply", EV]
    assert frames[0][4] == ok("r-slow", None, "ack", **{"async": True})
    assert frames[2][4] == ok("r-slow", "slept")


def test_timeout_text_comes_from_the_callee():
    frames = drive("slow", {"ms": 1000})
    assert frames[2][4] == fail("r-slow", "local execution timed out after 200ms")
    push, _ = drive("block", {"ms": 600})
    assert push[4] == fail("r-block", "local execution timed out after 200ms")


def test_stream_from_a_plain_generator():
    frames = drive("gen", {"n": 2})
    body = [(f[4]["result"], f[4]["has_more"]) for f in frames if f[3] == EV]
    assert body == [("init", True), (0, True), (10, True), (None, False)]


def test_refusals_in_the_reference_order():
    assert drive("mine", {"text": "a"})[0][4] == fail("r-mine", "Permission denied")
    assert drive("mine", {"text": "a"}, user_id="u1")[0][4] == ok("r-mine", {"text": "a", "n": 1})
    assert drive("rejected", {"text": "a"})[0][4] == fail("r-rejected", "hook rejected: not today")
    assert drive("echo", {"text": 5})[0][4] == fail(
        "r-echo", 'Invalid argument: invalid argument type for "text", expected :string, got 5'
    )


def test_fire_and_forget_sends_only_the_reply():
    assert drive("fire", {"text": "a"}) == [["1", "7", "api:t", "phx_reply", {"status": "ok", "response": "fire"}]]


def test_v1_serializer_through_the_same_reply():
    frames = drive("echo", {"text": "a"}, ser=V1)
    assert frames[0] == {"topic": "api:t", "event": EV, "payload": ok("r-echo", {"text": "a", "n": 1}), "ref": None}
    assert frames[1]["event"] == "phx_reply" and frames[1]["ref"] == "7"


@pytest.mark.parametrize(
    "method,expected",
    [
        ("push", [["1", None, "api:t", EV, ok("x", 1)]]),
        ("reply", [["1", "7", "api:t", "phx_reply", {"status": "ok", "response": "rt"}]]),
    ],
)
def test_reply_methods(method, expected):
    sink = Sink()
    reply = Reply(sink, V2, "1", "7", "api:t", EV, "rt")
    from genapi.structs import Response

    if method == "push":
        reply.push(Response("x", 1))
    else:
        reply.reply("ok", "rt")
    assert sink.messages() == expected
    assert reply.live()  # not a connection: nothing to leave
