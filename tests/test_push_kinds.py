"""Every push says what it is (issue 21 item 4): the `kind` beside the reference's seven keys, for
each kind a client meets (answer, error, async acknowledgement, stream start, chunk, last chunk,
stream end, relayed message), seen by the Python client and by phoenix.js running the README's
handler, against one real gateway."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from genapi import client as client_module
from genapi.client import Client
from genapi.structs import PUSH_KINDS, Relayed, Response
from support.configs import RELAY_CHAT
from support.gateway_proc import GatewayProcess

CONFIG = (
    RELAY_CHAT
    + """
[[functions]]
service = "t"
request_type = "echo"
mfa = "testapi:echo"
arg_types = { text = "string" }

[[functions]]
service = "t"
request_type = "slow"
mfa = "testapi:sleep"
arg_types = { ms = "num" }
response_type = "async"

[[functions]]
service = "t"
request_type = "gen"
mfa = "testapi:gen"
arg_types = { n = "num" }
response_type = "stream"

[[functions]]
service = "t"
request_type = "value"
mfa = "testapi:stream_value"
arg_types = { text = "string" }
response_type = "stream"

[[functions]]
service = "t"
request_type = "broken"
mfa = "testapi:agen_fail"
arg_types = { n = "num" }
response_type = "stream"
"""
)

TOPIC = "room:kinds"
ERROR_TEXT = 'Invalid argument: invalid argument type for "text", expected :string, got 1'
JS = Path(__file__).resolve().parent / "js"


@pytest.fixture(scope="module")
def gw() -> Iterator[GatewayProcess]:
    g = GatewayProcess(CONFIG)
    yield g
    g.stop()


async def member(gw: GatewayProcess, name: str) -> Client:
    c = await Client.connect(gw.url, params={"token": "let-me-in", "user": name})
    await c.join(TOPIC)
    return c


async def pushes_of(c: Client, service: str, request_type: str, args: dict[str, Any], n: int) -> list[Response]:
    """The first `n` Responses of one call, as the client decoded them (low level: no guessing)."""
    rid = f"{request_type}-{next(_ids)}"
    _, q = await c.request(service, request_type, args, request_id=rid)
    try:
        out = []
        for _ in range(n):
            item = await asyncio.wait_for(q.get(), 20)
            assert isinstance(item, Response), item
            out.append(item)
        return out
    finally:
        c.forget(rid)


_ids = itertools.count(1)


def test_python_client_sees_the_marker_on_every_kind(gw: GatewayProcess, run: Any) -> None:
    async def go() -> None:
        c = await member(gw, "alice")
        try:
            (answer,) = await pushes_of(c, "t", "echo", {"text": "hi"}, 1)
            assert (answer.kind, answer.result) == ("answer", {"text": "hi", "n": 1})
            (error,) = await pushes_of(c, "t", "echo", {"text": 1}, 1)
            assert (error.kind, error.success, error.error) == ("error", False, ERROR_TEXT)
            ack, final = await pushes_of(c, "t", "slow", {"ms": 20}, 2)
            assert [(r.kind, r.result) for r in (ack, final)] == [("ack", None), ("answer", "slept")]
            got = await pushes_of(c, "t", "gen", {"n": 2}, 4)
            assert [(r.kind, r.result, r.has_more) for r in got] == [
                ("start", "init", True),
                ("chunk", 0, True),
                ("chunk", 10, True),
                ("end", None, False),
            ]
            got = await pushes_of(c, "t", "value", {"text": "hi"}, 2)
            assert [(r.kind, r.result, r.has_more) for r in got] == [("start", "init", True), ("last", "HI", False)]
            got = await pushes_of(c, "t", "broken", {"n": 1}, 3)
            assert [(r.kind, r.result) for r in got] == [("start", "init"), ("chunk", 0), ("error", None)]
            # the high-level calls switch on it: call() past the ack, stream() to the end of each kind
            assert (await c.call("t", "slow", {"ms": 20})).kind == "answer"  # type: ignore[union-attr]
            assert [r.kind async for r in c.stream("t", "gen", {"n": 1})] == ["chunk", "end"]
            assert [r.kind async for r in c.stream("t", "value", {"text": "x"})] == ["last"]
            assert [r.kind async for r in c.stream("t", "broken", {"n": 1})] == ["chunk", "error"]
        finally:
            await c.close()

    run(go())


def test_python_client_routes_a_relayed_message_to_pushes_never_to_the_call(gw: GatewayProcess, run: Any) -> None:
    async def go() -> None:
        alice, bob = await member(gw, "alice"), await member(gw, "bob")
        try:
            group = f"py-{next(_ids)}"
            await alice.call("chat", "create_group", {"group_id": group, "group_type": "public"})
            await bob.call("chat", "join_group", {"group_id": group})
            # alice's own copy carries the request_id of the call that sent it, and arrives right
            # after its answer: it must not be taken for a second push of that call
            sent = await pushes_of(alice, "chat", "handle_relay", {"group_id": group, "message": "Hello!"}, 1)
            assert [(r.kind, r.result) for r in sent] == [("answer", {"status": "relayed", "recipients_count": 2})]
            for c in (alice, bob):
                push = await asyncio.wait_for(c.pushes.get(), 20)
                assert (push.event, push.payload["kind"], push.payload["request_id"]) == (
                    "phoenix_gen_api",
                    "relay",
                    sent[0].request_id,
                )
                assert push.payload["result"]["message"] == "Hello!"
        finally:
            await alice.close()
            await bob.close()

    run(go())


REFERENCE_SHAPES = [  # behavior.md §1's constructors, as PhoenixGenApi sends them (no kind)
    ({"result": 1, "success": True, "async": False, "has_more": False}, "answer"),
    ({"result": None, "success": False, "error": "x", "async": False, "has_more": False}, "error"),
    ({"result": None, "success": True, "async": True, "has_more": False}, "ack"),  # or a stream end
    ({"result": "init", "success": True, "async": True, "has_more": True}, "start"),
    ({"result": 2, "success": True, "async": True, "has_more": True}, "chunk"),
    ({"result": 3, "success": True, "async": True, "has_more": False}, "last"),
    (
        {
            "result": {"group_id": "g", "from_user_id": "u", "message": "m", "timestamp": "2025-01-15T10:30:00Z"},
            "success": True,
            "async": False,
            "has_more": False,
        },
        "relay",
    ),
]


@pytest.mark.parametrize(("shape", "kind"), REFERENCE_SHAPES, ids=[k for _, k in REFERENCE_SHAPES])
def test_without_the_marker_the_client_reads_the_reference_flags(shape: dict[str, Any], kind: str) -> None:
    payload = {"request_id": "r", "error": None, "can_retry": False, **shape}
    cls = client_module._kind_of(payload)
    assert cls is not None and msgspec.convert(payload, cls).kind == kind
    # with the marker, the marker decides (here: every shape said to be a relayed message)
    assert client_module._kind_of({**payload, "kind": "relay"}) is Relayed
    assert client_module._kind_of({**payload, "kind": "no-such-kind"}) is None  # left to `pushes`


def test_phoenix_js_runs_the_readme_handler_on_every_kind(gw: GatewayProcess) -> None:
    if not (JS / "node_modules" / "phoenix").is_dir() or not (JS / "node_modules" / "ws").is_dir():
        pytest.fail("tests/js/node_modules is missing (phoenix, ws): run `npm ci --prefix tests/js`", pytrace=False)
    node = shutil.which("node")
    if node is None:
        pytest.fail("`node` (Node.js 20+) is not on PATH; it is needed for tests/js", pytrace=False)
    proc = subprocess.run(
        [node, str(JS / "push_kinds.js")],
        env={**os.environ, "GENAPI_URL": gw.url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"push_kinds.js failed\n{proc.stderr}\n--- gateway ---\n{gw.read_stderr()[-3000:]}"
    out = json.loads(proc.stdout)
    group = out["events"]["alice-create_group-7"][0][1]["group_id"]
    relayed = ["answer", {"status": "relayed", "recipients_count": 2}]
    assert out["events"] == {
        "alice-echo-1": [["answer", {"text": "hi", "n": 1}]],
        "alice-echo-2": [["error", ERROR_TEXT]],
        "alice-slow-3": [["accepted"], ["answer", "slept"]],
        "alice-gen-4": [["started"], ["chunk", 0], ["chunk", 10], ["end"]],
        "alice-value-5": [["started"], ["chunk", "HI"], ["end"]],
        "alice-broken-6": [["started"], ["chunk", 0], ["error", "Internal Server Error"]],
        "alice-create_group-7": [
            ["answer", {"group_id": group, "group_type": "public", "status": "active", "roles": ["admin"]}]
        ],
        "alice-handle_relay-8": [relayed],
        "bob-join_group-1": [["answer", {"group_id": group, "status": "active"}]],
        "bob-handle_relay-2": [relayed],
    }
    # each member got both relayed messages, its own included, in the order they were sent
    assert out["relays"] == {
        "alice": [["alice", "Hello!"], ["bob", "Hi alice"]],
        "bob": [["alice", "Hello!"], ["bob", "Hi alice"]],
    }
    # and on the wire every push had its kind; a relayed copy carries its sender's request_id
    assert wire_kinds(out["raw"]["alice"]) == {
        "alice-echo-1": ["answer"],
        "alice-echo-2": ["error"],
        "alice-slow-3": ["ack", "answer"],
        "alice-gen-4": ["start", "chunk", "chunk", "end"],
        "alice-value-5": ["start", "last"],
        "alice-broken-6": ["start", "chunk", "error"],
        "alice-create_group-7": ["answer"],
        "alice-handle_relay-8": ["answer", "relay"],
        "bob-handle_relay-2": ["relay"],
    }
    assert wire_kinds(out["raw"]["bob"]) == {
        "bob-join_group-1": ["answer"],
        "alice-handle_relay-8": ["relay"],
        "bob-handle_relay-2": ["answer", "relay"],
    }


def wire_kinds(raw: list[list[str]]) -> dict[str, list[str]]:
    """The kinds of the pushes one member saw, by request_id, in arrival order."""
    out: dict[str, list[str]] = {}
    for rid, kind in raw:
        out.setdefault(rid, []).append(kind)
    return out


def test_the_readme_documents_every_kind() -> None:
    """The README's table of kinds lists exactly the kinds the gateway sends, and its handler names each."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("### Telling pushes apart: `kind`", 1)[1].split("\n## ", 1)[0]
    table = re.findall(r"^\| `(\w+)` \|", section, re.M)
    assert table == ["kind", *PUSH_KINDS]  # the header, then one row per kind
    handler = section.split("<!-- push-kinds-handler -->", 1)[1].split("```", 2)[1]
    assert sorted(re.findall(r'"(\w+)"', handler)) == sorted([*PUSH_KINDS, "phoenix_gen_api"])
