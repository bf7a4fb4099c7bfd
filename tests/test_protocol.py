"""Phoenix Channels protocol through a real gateway process (reference/phoenix-protocol.md)."""

import asyncio
import json
import signal
import socket
import struct
import time
import urllib.error
import urllib.request

import pytest
from picows import WSError

from support.configs import DEMO_ECHO
from support.gateway_proc import GatewayProcess
from support.rawclient import Raw, request
from support.sockclient import SockClient

EV = "phoenix_gen_api"

TOPICS_CONFIG = (
    """
[gateway]
topics = ["api:*", "room:?"]
idle_timeout_ms = 600
max_channels = 3
max_payload_bytes = 2000

[auth]
require_verified_user_id = false
"""
    + DEMO_ECHO
)


@pytest.fixture(scope="module")
def topics_gateway():
    gw = GatewayProcess(TOPICS_CONFIG)
    yield gw
    assert gw.stop() == 0


def test_v2_join_heartbeat_call_leave(demo_gateway, run):
    async def go():
        c = await Raw.connect(demo_gateway.url)
        assert await c.join("api:x", "5") == ["5", "5", "api:x", "phx_reply", {"status": "ok", "response": {}}]
        c.send([None, "6", "phoenix", "heartbeat", {}])
        assert await c.recv() == [None, "6", "phoenix", "phx_reply", {"status": "ok", "response": {}}]
        c.send(["5", "7", "api:x", EV, request("r1")])
        push, reply = await c.recv_n(2)
        assert push == [
            "5",
            None,
            "api:x",
            EV,
            {
                "kind": "answer",
                "request_id": "r1",
                "result": {"text": "hi", "n": 1},
                "success": True,
                "error": None,
                "async": False,
                "has_more": False,
                "can_retry": False,
            },
        ]
        assert reply == ["5", "7", "api:x", "phx_reply", {"status": "ok", "response": "echo"}]
        c.send(["5", "8", "api:x", "phx_leave", {}])
        assert await c.recv_n(2) == [
            ["5", "8", "api:x", "phx_reply", {"status": "ok", "response": {}}],
            ["5", "5", "api:x", "phx_close", {}],
        ]
        # after leaving, the topic is not joined any more
        c.send(["5", "9", "api:x", EV, request("r2")])
        assert await c.recv() == [
            None,
            "9",
            "api:x",
            "phx_reply",
            {"status": "error", "response": {"reason": "unmatched topic"}},
        ]
        await c.close()

    run(go())


def test_v1_objects_and_no_join_ref(demo_gateway, run):
    async def go():
        for query in ("", "vsn=1.0.0"):
            c = await Raw.connect(demo_gateway.url, query)
            c.send({"topic": "api:v1", "event": "phx_join", "payload": {}, "ref": "1", "join_ref": "1"})
            assert await c.recv() == {
                "topic": "api:v1",
                "event": "phx_reply",
                "ref": "1",
                "payload": {"status": "ok", "response": {}},
            }
            c.send({"topic": "api:v1", "event": EV, "payload": request("a"), "ref": "2"})
            push, reply = await c.recv_n(2)
            assert push["event"] == EV and push["ref"] is None and "join_ref" not in push
            assert push["payload"]["result"] == {"text": "hi", "n": 1}
            assert reply == {
                "topic": "api:v1",
                "event": "phx_reply",
                "ref": "2",
                "payload": {"status": "ok", "response": "echo"},
            }
            c.send({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "3"})
            assert (await c.recv())["payload"] == {"status": "ok", "response": {}}
            # a V1 frame missing a required key is answered, the connection stays
            c.send({"topic": "api:v1", "event": EV, "ref": "4"})
            err = await c.recv()
            assert err["payload"]["status"] == "error" and "payload" in err["payload"]["response"]["reason"]
            c.send({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "5"})
            assert (await c.recv())["ref"] == "5"
            await c.close()

    run(go())


@pytest.mark.parametrize("vsn", ["3.0.0", "123.1.1", "abc", "2.1.0"])
def test_unsupported_vsn_is_403(demo_gateway, run, vsn):
    async def go():
        with pytest.raises(WSError) as e:
            await Raw.connect(demo_gateway.url, f"vsn={vsn}")
        assert "403" in str(e.value)

    run(go())


def test_wrong_path_is_404(demo_gateway):
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{demo_gateway.port}/nope", timeout=5)
    assert e.value.code == 404


def test_subprotocol_phoenix_echoed_with_auth_token(demo_gateway, run):
    import base64

    import jwt

    from genapi.config import load

    token = jwt.encode({"sub": "u", "exp": int(time.time()) + 60}, load(None).auth.jwt_secret, algorithm="HS256")
    b64 = base64.b64encode(token.encode()).decode().rstrip("=")

    async def go():
        c = await Raw.connect(
            demo_gateway.url, headers={"Sec-WebSocket-Protocol": f"phoenix, base64url.bearer.phx.{b64}"}
        )
        assert c.response.headers.get("Sec-WebSocket-Protocol") == "phoenix"
        await c.close()
        plain = await Raw.connect(demo_gateway.url)
        assert plain.response.headers.get("Sec-WebSocket-Protocol") is None
        await plain.close()

    run(go())


def test_a_join_asking_for_its_identity_gets_who_the_gateway_sees(demo_gateway, run):
    """`{"identity": true}` in the join params: the reply names the user, roles and device the
    gateway took from the token (the explorer shows it); any other params keep the reply `{}`."""
    import jwt

    from genapi.config import load

    claims = {"sub": "ann", "roles": ["ops"], "device_id": "d1", "exp": int(time.time()) + 60}
    token = jwt.encode(claims, load(None).auth.jwt_secret, algorithm="HS256")

    async def go():
        c = await Raw.connect(demo_gateway.url, query=f"vsn=2.0.0&token={token}")
        ok = {"status": "ok", "response": {"identity": {"user_id": "ann", "roles": ["ops"], "device_id": "d1"}}}
        assert await c.join("api:a", "1", {"identity": True}) == ["1", "1", "api:a", "phx_reply", ok]
        for i, params in enumerate([{}, {"identity": "yes"}, {"identity": 1}, {"other": True}], start=2):
            got = await c.join(f"api:b{i}", str(i), params)
            assert got == [str(i), str(i), f"api:b{i}", "phx_reply", {"status": "ok", "response": {}}], params
        c.send(["9", "9", "api:c", "phx_join", [True]])  # params not a map: a plain join
        assert await c.recv() == ["9", "9", "api:c", "phx_reply", {"status": "ok", "response": {}}]
        await c.close()
        anon = await Raw.connect(demo_gateway.url)
        nobody = {"identity": {"user_id": None, "roles": [], "device_id": None}}
        assert await anon.join("api:a", "1", {"identity": True}) == [
            "1",
            "1",
            "api:a",
            "phx_reply",
            {"status": "ok", "response": nobody},
        ]
        await anon.close()

    run(go())


def test_unmatched_topic_duplicate_join_and_stale_refs(topics_gateway, run):
    async def go():
        c = await Raw.connect(topics_gateway.url)
        assert await c.join("nope:x", "1") == [
            None,
            "1",
            "nope:x",
            "phx_reply",
            {"status": "error", "response": {"reason": "unmatched topic"}},
        ]
        assert (await c.join("room:1", "2"))[4]["status"] == "ok"
        assert (await c.join("room:12", "3"))[4]["response"] == {"reason": "unmatched topic"}
        assert (await c.join("api:x", "4"))[4]["status"] == "ok"
        # duplicate join: new reply first, then the old join_ref's phx_close
        c.send(["5", "5", "api:x", "phx_join", {}])
        assert await c.recv_n(2) == [
            ["5", "5", "api:x", "phx_reply", {"status": "ok", "response": {}}],
            ["4", "4", "api:x", "phx_close", {}],
        ]
        # stale join_ref: no answer; null join_ref: accepted
        c.send(["4", "6", "api:x", EV, request("stale")])
        assert await c.nothing()
        c.send([None, "7", "api:x", EV, request("nulljr")])
        push, reply = await c.recv_n(2)
        assert push[0] == "5" and push[4]["request_id"] == "nulljr"
        assert reply == ["5", "7", "api:x", "phx_reply", {"status": "ok", "response": "echo"}]
        # a push on a topic that is not joined
        c.send([None, "8", "api:other", EV, request("x")])
        assert await c.recv() == [
            None,
            "8",
            "api:other",
            "phx_reply",
            {"status": "error", "response": {"reason": "unmatched topic"}},
        ]
        # leave of a topic never joined: ok with the join_ref echoed
        c.send(["9", "9", "api:never", "phx_leave", {}])
        assert await c.recv() == ["9", "9", "api:never", "phx_reply", {"status": "ok", "response": {}}]
        # stale leave: no answer
        c.send(["4", "10", "api:x", "phx_leave", {}])
        assert await c.nothing()
        # channel limit (3): room:1, api:x joined; one more fits, the next is refused
        assert (await c.join("api:y", "11"))[4]["status"] == "ok"
        assert (await c.join("api:z", "12"))[4] == {
            "status": "error",
            "response": {"reason": "too many channels joined"},
        }
        # an unknown event on a joined topic gets an error reply naming the request event
        c.send(["5", "13", "api:x", "whatever", {}])
        r = await c.recv()
        assert r[1] == "13" and r[4]["status"] == "error" and EV in r[4]["response"]["reason"]
        await c.close()

    run(go())


def test_idle_connection_is_closed(topics_gateway, run):
    async def go():
        loop = asyncio.get_running_loop()
        t0 = loop.time()  # before `quiet` connects: its idle time is at most loop.time() - t0
        quiet = await Raw.connect(topics_gateway.url)
        talk = await Raw.connect(topics_gateway.url)
        # heartbeats every 0.1 s keep `talk` open past the 0.6 s idle limit until `quiet` is closed
        i = 0
        while not quiet.closed.done() and loop.time() < t0 + 30:
            i += 1
            talk.send([None, str(i), "phoenix", "heartbeat", {}])
            await talk.recv()
            await asyncio.sleep(0.1)
        assert quiet.closed.done() and loop.time() - t0 >= 0.5  # closed for idling, not before the limit
        code = await quiet.closed
        assert code == 1001
        assert not talk.closed.done()
        await talk.close()

    run(go())


BAD_FRAMES = [
    ("not json", b"{nope", None),
    ("not an array", b'{"a": 1}', None),
    ("short array", b'["1", "2", "api:x"]', "2"),
    ("number topic", b'["1", "2", 5, "phx_join", {}]', None),
    ("empty", b"", None),
    ("invalid utf8", b'["1","2","api:x","\xff\xfe",{}]', None),
]


@pytest.mark.parametrize("name,frame,ref", BAD_FRAMES, ids=[b[0] for b in BAD_FRAMES])
def test_bad_frames_get_an_error_and_connection_survives(demo_gateway, run, name, frame, ref):
    async def go():
        c = await Raw.connect(demo_gateway.url)
        assert (await c.join("api:x"))[4]["status"] == "ok"
        c.send(frame)
        err = await c.recv()
        assert err[3] == ("phx_error" if ref is None else "phx_reply")  # a reply when the ref was read
        body = err[4].get("response", err[4]) if err[3] == "phx_reply" else err[4]
        assert "invalid frame" in body["reason"]
        if ref is not None:
            assert err[1] == ref
        c.send(["1", "3", "api:x", EV, request("after")])
        push, reply = await c.recv_n(2)
        assert push[4]["success"] is True and reply[4]["status"] == "ok"
        await c.close()

    run(go())


def test_binary_frames(demo_gateway, run):
    async def go():
        c = await Raw.connect(demo_gateway.url)
        assert (await c.join("api:bin", "5"))[4]["status"] == "ok"
        # a well-formed V2 binary push: refused with a clear reason on its ref
        c.send_binary(bytes([0, 1, 1, 7, 15]) + b"56api:bin" + EV.encode() + b"\xde\xad")
        r = await c.recv()
        assert r[:4] == ["5", "6", "api:bin", "phx_reply"] and r[4]["status"] == "error"
        assert "binary payloads are not supported" in r[4]["response"]["reason"]
        # garbage binary
        c.send_binary(b"\x07\x01")
        r = await c.recv()
        assert r[3] == "phx_error" and "invalid frame" in r[4]["reason"]
        c.send(["5", "7", "api:bin", EV, request("ok")])
        assert (await c.recv_n(2))[1][4]["status"] == "ok"
        await c.close()

    run(go())


def test_oversize_payload_is_refused_and_connection_survives(topics_gateway, run):
    async def go():
        c = await Raw.connect(topics_gateway.url)
        await c.join("api:big")
        c.send(["1", "2", "api:big", EV, request("big", args={"text": "x" * 3000})])
        push, reply = await c.recv_n(2)
        assert push[4]["error"].startswith("Invalid request: Request payload exceeds maximum size of 2000 bytes (got ")
        assert push[4]["request_id"] == "big"
        assert reply[4]["status"] == "error" and reply[4]["response"] == push[4]["error"]
        c.send(["1", "3", "api:big", EV, request("small")])
        assert (await c.recv_n(2))[0][4]["success"] is True
        # far beyond the frame limit the socket is closed with 1009 (message too big)
        c.send(["1", "4", "api:big", EV, request("huge", args={"text": "x" * 200_000})])
        assert await asyncio.wait_for(c.closed, 5) == 1009

    run(go())


def test_sigterm_closes_clients_with_1001_and_exits_0(run):
    gw = GatewayProcess()

    async def go():
        c = await Raw.connect(gw.url)
        await c.join("api:x")
        await asyncio.sleep(0.1)
        gw.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(c.closed, 5) == 1001

    run(go())
    assert gw.proc.wait(10) == 0
    assert gw.stop() == 0


def test_sigint_exits_0(run):
    gw = GatewayProcess()
    assert gw.stop(signal.SIGINT) == 0


def data_segments_in(sock):
    """The TCP segments carrying data that `sock` has received (Linux TCP_INFO tcpi_data_segs_in)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 160)
    return struct.unpack_from("I", info, 152)[0]


def test_many_requests_in_one_read_batch(demo_gateway):
    """Fifty requests in one TCP write reach the gateway as one read batch: each is answered, in
    order, and the answers leave together: one write, so one TCP segment on loopback (a write per
    answer would be a hundred segments, less what the kernel's autocorking merges)."""
    c = SockClient(demo_gateway.host, demo_gateway.port)
    try:
        c.send(["1", "1", "api:batch", "phx_join", {}])
        assert c.recv()[4]["status"] == "ok"
        before = data_segments_in(c.sock)
        c.send_many([["1", str(100 + i), "api:batch", EV, request(f"b{i}", args={"text": str(i)})] for i in range(50)])
        got = [c.recv() for _ in range(100)]
        segments = data_segments_in(c.sock) - before
    finally:
        c.close()
    replies = [f for f in got if f[3] == "phx_reply"]
    pushes = [f for f in got if f[3] == EV]
    assert [r[1] for r in replies] == [str(100 + i) for i in range(50)]
    assert all(r[4]["status"] == "ok" for r in replies)
    assert [p[4]["result"]["text"] for p in pushes] == [str(i) for i in range(50)]
    assert segments <= 3, f"the answers to one read batch came in {segments} TCP segments"


def test_several_workers_share_the_port(run):
    gw = GatewayProcess(extra_args=["--workers", "2"])

    async def go():
        clients = [await Raw.connect(gw.url) for _ in range(8)]
        for i, c in enumerate(clients):
            await c.join("api:w")
            c.send(["1", "2", "api:w", EV, request(f"w{i}", args={"text": str(i)})])
            push, reply = await c.recv_n(2)
            assert push[4]["result"]["text"] == str(i) and reply[4]["status"] == "ok"
        return clients

    run(go())
    import subprocess

    children = subprocess.run(["pgrep", "-P", str(gw.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) == 2
    assert gw.stop() == 0
    import os

    for pid in children:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_supervisor_restarts_a_dead_worker(run):
    import os
    import subprocess

    from support.gateway_proc import wait_until

    gw = GatewayProcess(extra_args=["--workers", "2"])

    def children():
        return set(subprocess.run(["pgrep", "-P", str(gw.pid)], capture_output=True, text=True).stdout.split())

    assert wait_until(lambda: len(children()) == 2)
    before = children()
    victim = sorted(before)[0]
    os.kill(int(victim), signal.SIGKILL)
    assert wait_until(lambda: len(children()) == 2 and victim not in children(), timeout=10)

    async def go():
        for i in range(6):
            c = await Raw.connect(gw.url)
            await c.join("api:r")
            c.send(["1", "2", "api:r", EV, request(f"r{i}")])
            assert (await c.recv_n(2))[1][4]["status"] == "ok"
            await c.close()

    run(go())
    assert gw.stop() == 0


def test_client_that_does_not_read_gets_every_answer_later(demo_gateway):
    """Backpressure: a client that sends thousands of requests without reading is paused, not
    buffered without bound, and every answer still arrives once it reads."""
    import base64
    import os
    import socket

    sock = socket.create_connection(("127.0.0.1", demo_gateway.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101")
    rest = head.split(b"\r\n\r\n", 1)[1]

    def frame(text: str) -> bytes:
        data = text.encode()
        n = len(data)
        hdr = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
        return hdr + b"\0\0\0\0" + data  # an all-zero mask key leaves the payload as is

    n = 20000
    big = "x" * 2000
    sock.sendall(frame(json.dumps(["1", "1", "api:bp", "phx_join", {}])))
    sender_done = []

    import threading

    frames = [
        frame(json.dumps(["1", str(i + 2), "api:bp", EV, request(f"q{i}", args={"text": big})])) for i in range(n)
    ]

    def send_all():
        for i in range(0, n, 100):
            sock.sendall(b"".join(frames[i : i + 100]))
        sender_done.append(True)

    def rss_kb() -> int:
        with open(f"/proc/{demo_gateway.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))

    rss_before = rss_kb()
    t = threading.Thread(target=send_all, daemon=True)
    t.start()
    import time

    time.sleep(1.5)  # not reading: the server must pause us instead of buffering everything
    grown_mb = (rss_kb() - rss_before) / 1024
    assert not sender_done, "the server read 40 MB of requests from a client that reads nothing"
    assert grown_mb < 30, f"the gateway buffered {grown_mb:.0f} MB for a client that does not read"
    buf = bytearray(rest)
    replies = 0
    sock.settimeout(30)
    while replies < n + 1:
        chunk = sock.recv(1 << 20)
        assert chunk, "connection closed early"
        buf += chunk
        while len(buf) >= 2:
            ln = buf[1] & 0x7F
            off = 2
            if ln == 126:
                if len(buf) < 4:
                    break
                ln, off = int.from_bytes(buf[2:4], "big"), 4
            elif ln == 127:
                if len(buf) < 10:
                    break
                ln, off = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < off + ln:
                break
            msg = json.loads(bytes(buf[off : off + ln]))
            del buf[: off + ln]
            if msg[3] == "phx_reply":
                assert msg[4]["status"] == "ok"
                replies += 1
    t.join(10)
    assert sender_done and replies == n + 1
    sock.close()
    assert demo_gateway.alive()
