"""Closed-loop WebSocket load generator for the gateway benchmarks.

Run it as its own process, pinned to the core the server does not use:

    taskset -c 1 python benchmarks/loadgen.py --port PORT --mode echo
    taskset -c 1 python benchmarks/loadgen.py --port PORT --mode phoenix -c 50 -p 16

`-c` connections each keep `-p` requests in flight; every completed request sends the next
one at once (closed loop). After `--warmup` seconds the completions of a `--duration` window
are counted and timed. The result is one JSON line on stdout:

    {"mode": ..., "calls_per_s": ..., "p50_us": ..., "p99_us": ..., "errors": ..., ...}

and the exit status is 1 when there were errors or no completed call was measured.

Modes:

* ``echo``    -- a masked text frame; a call completes when its frame comes back; every echoed
  frame is checked byte for byte.
* ``phoenix`` -- each connection joins ``--topic`` with ``["1","1",TOPIC,"phx_join",{}]``, then
  sends ``["1","<ref>",TOPIC,"phoenix_gen_api",{"request_id":"<ref>",...}]`` requests. A call
  completes at the ``phx_reply`` frame carrying its ref, in any order (replies of one
  connection may come out of order, e.g. from a thread pool); the reply must have
  ``"status":"ok"`` and come after a push with ``"success":true`` whose ``request_id`` is the
  ref (the Response). Replies are told from pushes by finding ``"phx_reply"`` in the frame's
  head; no JSON is parsed beyond the ref and the request_id.

Why it is fast enough to measure a server on one core with a client on the other:

* raw ``asyncio.Protocol`` on uvloop, hand-written framing; no WebSocket library;
* requests are pre-built, pre-masked frames (fixed mask key) -- one per ref of a ring of
  ``RING`` refs -- so sending is a list lookup and one ``write`` per read batch;
* replies are found with ``bytes.find`` over the frame's head; one clock read per read batch;
* the garbage collector is off during the run (nothing here makes reference cycles).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import re
import sys
import time
from collections import deque

perf_counter_ns = time.perf_counter_ns

MASK_KEY = b"\x5a\xc3\x1e\x97"
RING = 4096  # refs 2 .. RING+1 cycle per connection (far more than ever in flight)
HEAD_LIM = 96  # the event sits in a frame's first bytes: ["1","<ref>","TOPIC","phx_reply" (set per topic)
REF_RE = re.compile(rb'\[\s*(?:"[^"]*"|null)\s*,\s*"([^"]*)"')  # a frame's ref, any JSON spacing
WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="

# ----------------------------------------------------------------------------- run state
# Completed-call latencies (ns) go to REC: a throwaway list's append outside the window, the
# measured list's append inside it. SENDING turns false at the end so the loop drains.
_discard: list[int] = []
REC = _discard.append
SENDING = True


def _rec_reset() -> None:
    _discard.clear()


def ws_client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One final client frame carrying `payload`, masked with MASK_KEY."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    if n:
        key = (MASK_KEY * (n // 4 + 1))[:n]
        body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    else:
        body = b""
    return head + MASK_KEY + body


def ws_server_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """What an unmasked server frame carrying `payload` looks like (for the echo check)."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big") + payload


CLOSE_FRAME = ws_client_frame(b"\x03\xe8", 0x8)


class Failure(Exception):
    pass


# ----------------------------------------------------------------------------- setup
class Setup(asyncio.Protocol):
    """HTTP upgrade, then (phoenix) the channel join; resolves `ready` with leftover bytes."""

    def __init__(self, request: bytes, join: bytes | None) -> None:
        self.request = request
        self.join = join
        self.buf = b""
        self.upgraded = False
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        transport.write(self.request)

    def _fail(self, msg: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(Failure(msg))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buf = self.buf[:end], self.buf[end + 4 :]
            if not head.startswith(b"HTTP/1.1 101"):
                return self._fail(f"upgrade refused: {head[:200]!r}")
            self.upgraded = True
            if self.join is None:
                if not self.ready.done():
                    self.ready.set_result(self.buf)
                return
            self.transport.write(self.join)  # type: ignore[union-attr]
        buf = self.buf
        if len(buf) < 2:
            return
        b1 = buf[1] & 0x7F
        h = 2 if b1 < 126 else 4 if b1 == 126 else 10
        if len(buf) < h:
            return
        n = b1 if b1 < 126 else int.from_bytes(buf[2:h], "big")
        if len(buf) < h + n:
            return
        frame = buf[h : h + n]
        if (
            buf[0] != 0x81
            or b'"phx_reply"' not in frame
            or not (b'"status":"ok"' in frame or b'"status": "ok"' in frame)
        ):
            return self._fail(f"join refused: {frame[:300]!r}")
        if not self.ready.done():
            self.ready.set_result(buf[h + n :])

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"connection lost during setup: {exc!r}")


# ----------------------------------------------------------------------------- hot loops
class Base(asyncio.Protocol):
    def __init__(self, transport: asyncio.Transport, rest: bytes) -> None:
        self.transport = transport
        self.write = transport.write
        self.rest = rest
        self.sent: deque[int] = deque()
        self.errors = 0
        self.first_error: str | None = None
        self.closed: asyncio.Future = asyncio.get_running_loop().create_future()
        self.closing = False

    def error(self, msg: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = msg

    def odd_frame(self, data: bytes, pos: int, h: int, end: int) -> None:
        """Anything but a final text frame: ping (ignored), close or other (errors)."""
        op = data[pos] & 0x0F
        if op == 0x9 or op == 0xA:
            return
        if op == 0x8:
            if not self.closing:
                self.error(f"server closed the connection: {data[h:end]!r}")
            return
        self.error(f"unexpected frame opcode {op:#x} fin={data[pos] >> 7}")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.error(f"connection lost: {exc!r}")
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        self.closing = True
        self.write(CLOSE_FRAME)


class EchoConn(Base):
    """Counts each echoed frame; it must equal the sent payload, unmasked."""

    def __init__(self, transport, rest, frame: bytes, expect: bytes) -> None:
        super().__init__(transport, rest)
        self.frame = frame
        self.expect = expect
        self.elen = len(expect)

    def start(self, p: int) -> None:
        t = perf_counter_ns()
        self.sent.extend([t] * p)
        self.write(self.frame * p)
        if self.rest:
            rest, self.rest = self.rest, b""
            self.data_received(rest)

    def data_received(self, data: bytes) -> None:
        t = perf_counter_ns()
        if self.rest:
            data = self.rest + data
            self.rest = b""
        expect = self.expect
        elen = self.elen
        n = len(data)
        if n == elen and data == expect:  # the common case at P=1: one whole frame
            REC(t - self.sent.popleft())
            if SENDING:
                self.sent.append(t)
                self.write(self.frame)
            return
        popleft = self.sent.popleft
        rec = REC
        pos = 0
        k = 0
        while n - pos >= 2:
            b1 = data[pos + 1]
            if b1 < 126:
                h = pos + 2
                end = h + b1
            elif b1 == 126:
                if n - pos < 4:
                    break
                h = pos + 4
                end = h + ((data[pos + 2] << 8) | data[pos + 3])
            else:
                if n - pos < 10:
                    break
                h = pos + 10
                end = h + int.from_bytes(data[pos + 2 : h], "big")
            if end > n:
                break
            if data[pos] != 0x81 or end - pos != elen or not data.startswith(expect, pos):
                if data[pos] == 0x81:
                    self.error(f"echoed frame differs: {data[pos:end][:200]!r}")
                else:
                    self.odd_frame(data, pos, h, end)
                pos = end
                continue
            if not self.sent:
                self.error("echo without a request in flight")
            else:
                rec(t - popleft())
                k += 1
            pos = end
        if pos < n:
            self.rest = data[pos:]
        if k and SENDING:
            self.sent.extend([t] * k)
            self.write(self.frame if k == 1 else self.frame * k)


class PhoenixConn(Base):
    """Sends requests from the pre-built ring; matches each phx_reply to its request by ref and
    each push to its request by request_id, in whatever order they come (a server may answer
    requests of one connection out of order, e.g. from a thread pool)."""

    def __init__(
        self, transport, rest, frames: list[bytes], refs: list[bytes], reply_prefix: bytes, push_head: bytes
    ) -> None:
        super().__init__(transport, rest)
        self.frames = frames
        self.refs = refs
        self.reply_prefix = reply_prefix  # b'["1","': the compact head of a reply, before the ref
        self.push_head = push_head
        self.sent: dict[bytes, int] = {}  # ref -> send time, the requests in flight
        self.pushed: dict[bytes, int] = {}  # ref -> pushes received for a request in flight
        self.si = 0  # ring index of the next request to send
        self.replies = 0

    def start(self, p: int) -> None:
        t = perf_counter_ns()
        self.send(p, t)
        if self.rest:
            rest, self.rest = self.rest, b""
            self.data_received(rest)

    def send(self, k: int, t: int) -> None:
        si = self.si
        nxt = si + k
        sent = self.sent
        refs = self.refs
        for i in range(si, nxt):
            ref = refs[i if i < RING else i - RING]
            if ref in sent:
                self.error(f"ref {ref!r} still in flight {RING} requests later")
            sent[ref] = t
        if k == 1:
            self.write(self.frames[si])
        elif nxt <= RING:
            self.write(b"".join(self.frames[si:nxt]))
        else:
            self.write(b"".join(self.frames[si:] + self.frames[: nxt - RING]))
        self.si = nxt if nxt < RING else nxt - RING

    def reply_ref(self, data: bytes, h: int, lim: int) -> bytes | None:
        """The ref of the reply frame at data[h:]: its second element."""
        if data.startswith(self.reply_prefix, h):
            q = data.find(b'"', h + 6, lim)
            return data[h + 6 : q] if q > 0 else None
        m = REF_RE.match(data, h, lim)
        return m.group(1) if m else None

    def data_received(self, data: bytes) -> None:
        t = perf_counter_ns()
        if self.rest:
            data = self.rest + data
            self.rest = b""
        n = len(data)
        find = data.find
        pos = 0
        k = 0
        sent = self.sent
        pushed = self.pushed
        push_head = self.push_head
        rec = REC
        while n - pos >= 2:
            b1 = data[pos + 1]
            if b1 < 126:
                h = pos + 2
                end = h + b1
            elif b1 == 126:
                if n - pos < 4:
                    break
                h = pos + 4
                end = h + ((data[pos + 2] << 8) | data[pos + 3])
            else:
                if n - pos < 10:
                    break
                h = pos + 10
                end = h + int.from_bytes(data[pos + 2 : h], "big")
            if end > n:
                break
            if data[pos] != 0x81:
                self.odd_frame(data, pos, h, end)
                pos = end
                continue
            lim = h + HEAD_LIM
            if lim > end:
                lim = end
            if not data.startswith(push_head, h) and find(b'"phx_reply"', h, lim) >= 0:
                ref = self.reply_ref(data, h, lim)
                t0 = sent.pop(ref, None)  # type: ignore[arg-type]
                if t0 is None:
                    self.error(f"reply to no request in flight: {data[h:end][:300]!r}")
                else:
                    if not pushed.pop(ref, 0):  # type: ignore[arg-type]
                        self.error(f"reply without a push before it: {data[h:end][:300]!r}")
                    if find(b'"status":"ok"', h, end) < 0 and find(b'"status": "ok"', h, end) < 0:
                        self.error(f"reply not ok: {data[h:end][:300]!r}")
                    rec(t - t0)
                    k += 1
            else:
                i = find(b'"request_id":', h, end)
                rid = None
                if i >= 0:
                    i += 13
                    while i < end and data[i] == 0x20:
                        i += 1
                    if i < end and data[i] == 0x22:
                        q = find(b'"', i + 1, end)
                        if q > 0:
                            rid = data[i + 1 : q]
                if rid is None or rid not in sent:
                    self.error(f"push for no request in flight: {data[h:end][:300]!r}")
                else:
                    pushed[rid] = pushed.get(rid, 0) + 1
                if find(b'"success":true', h, end) < 0 and find(b'"success": true', h, end) < 0:
                    self.error(f"push without success: {data[h:end][:300]!r}")
            pos = end
        if pos < n:
            self.rest = data[pos:]
        if k:
            self.replies += k
            if SENDING:
                self.send(k, t)


# ----------------------------------------------------------------------------- driver
def percentile(sorted_ns: list[int], p: float) -> float:
    if not sorted_ns:
        return 0.0
    i = min(len(sorted_ns) - 1, max(0, round(p / 100.0 * len(sorted_ns)) - 1))
    return sorted_ns[i] / 1000.0


async def run(a: argparse.Namespace) -> dict:
    global REC, SENDING, HEAD_LIM
    loop = asyncio.get_running_loop()
    path = a.path if a.path is not None else ("/socket/websocket?vsn=2.0.0" if a.mode == "phoenix" else "/")
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {a.host}:{a.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY.decode()}\r\n"
        f"Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    join = None
    if a.mode == "phoenix":
        topic = a.topic
        HEAD_LIM = 64 + len(json.dumps(topic).encode())
        join = ws_client_frame(json.dumps(["1", "1", topic, "phx_join", {}], separators=(",", ":")).encode())
        args = json.loads(a.args)
        frames, refs = [], []
        push_head = ('["1",null,' + json.dumps(topic) + ',"phoenix_gen_api",{').encode()
        for i in range(RING):
            ref = str(i + 2)
            msg = [
                "1",
                ref,
                topic,
                "phoenix_gen_api",
                {
                    "request_id": ref,
                    "service": a.service,
                    "request_type": a.request_type,
                    "version": a.version,
                    "args": args,
                },
            ]
            frames.append(ws_client_frame(json.dumps(msg, separators=(",", ":")).encode()))
            refs.append(ref.encode())
    else:
        payload = a.payload.encode()
        echo_frame = ws_client_frame(payload)
        echo_expect = ws_server_frame(payload)

    t0 = time.perf_counter()
    setups = []
    try:
        for _ in range(a.connections):
            setups.append(await loop.create_connection(lambda: Setup(request, join), a.host, a.port))
        await asyncio.wait_for(asyncio.gather(*(pr.ready for _, pr in setups)), a.timeout)
    except (TimeoutError, OSError, Failure) as exc:
        for tr, _ in setups:
            tr.abort()
        failed = sum(1 for _, pr in setups if not pr.ready.done() or pr.ready.exception())
        return {
            "mode": a.mode,
            "calls_per_s": 0.0,
            "p50_us": 0.0,
            "p99_us": 0.0,
            "errors": max(1, failed + a.connections - len(setups)),
            "replies": 0,
            "connections": a.connections,
            "pipeline": a.pipeline,
            "first_error": f"setup failed: {exc!r}"[:500],
        }
    conns: list[Base] = []
    for tr, pr in setups:
        rest = pr.ready.result()
        if a.mode == "phoenix":
            c: Base = PhoenixConn(tr, rest, frames, refs, b'["1","', push_head)
        else:
            c = EchoConn(tr, rest, echo_frame, echo_expect)
        tr.set_protocol(c)
        conns.append(c)
    connect_s = time.perf_counter() - t0

    gc.collect()
    gc.disable()
    if a.spin:

        def spin() -> None:
            if SENDING:
                loop.call_soon(spin)

        loop.call_soon(spin)
    try:
        for c in conns:
            c.start(a.pipeline)
        await asyncio.sleep(a.warmup)
        lat: list[int] = []
        REC = lat.append
        _rec_reset()
        m0 = time.perf_counter()
        cpu0 = time.process_time()
        await asyncio.sleep(a.duration)
        REC = _discard.append
        m1 = time.perf_counter()
        cpu1 = time.process_time()
        SENDING = False
        # let the calls in flight finish, then close every connection cleanly
        deadline = time.perf_counter() + 2.0
        while time.perf_counter() < deadline and any(c.sent for c in conns if not c.errors):
            await asyncio.sleep(0.01)
    finally:
        gc.enable()
    for c in conns:
        c.close()
    _done, _ = await asyncio.wait([c.closed for c in conns], timeout=2.0)
    for c in conns:
        if not c.closed.done():
            c.transport.close()
    _rec_reset()

    window = m1 - m0
    lat.sort()
    in_flight = sum(len(c.sent) for c in conns)
    errors = sum(c.errors for c in conns) + in_flight  # a call never answered is a failure
    result = {
        "mode": a.mode,
        "calls_per_s": round(len(lat) / window, 1) if window > 0 else 0.0,
        "p50_us": round(percentile(lat, 50), 1),
        "p99_us": round(percentile(lat, 99), 1),
        "errors": errors,
        "replies": len(lat),
        "connections": a.connections,
        "pipeline": a.pipeline,
        "window_s": round(window, 3),
        "connect_s": round(connect_s, 3),
        "client_cpu_pct": round(100.0 * (cpu1 - cpu0) / window, 1) if window > 0 else 0.0,
        "unanswered": in_flight,
    }
    if a.mode == "phoenix":
        result["pushes_unmatched"] = sum(len(c.pushed) for c in conns)  # of unanswered requests
    first = next((c.first_error for c in conns if c.first_error), None)
    if first:
        result["first_error"] = first[:500]
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mode", choices=("echo", "phoenix"), default="echo")
    ap.add_argument("-c", "--connections", type=int, default=50)
    ap.add_argument("-p", "--pipeline", type=int, default=1, help="requests in flight per connection")
    ap.add_argument("-w", "--warmup", type=float, default=1.0, help="seconds before the window")
    ap.add_argument("-d", "--duration", type=float, default=3.0, help="measured window, seconds")
    ap.add_argument(
        "--path",
        default=None,
        help="upgrade request path (default / for echo, /socket/websocket?vsn=2.0.0 for phoenix)",
    )
    ap.add_argument("--payload", default='{"id":1,"x":"hello"}', help="echo mode: the frame's text")
    ap.add_argument("--topic", default="api:bench")
    ap.add_argument("--service", default="demo")
    ap.add_argument("--request-type", default="echo")
    ap.add_argument("--version", default="1.0.0")
    ap.add_argument("--args", default='{"text":"hello","n":1}', help="phoenix mode: the args JSON object")
    ap.add_argument(
        "--spin", action="store_true", help="never sleep in the poller (spares the server cross-CPU wakeups)"
    )
    ap.add_argument("--timeout", type=float, default=10.0, help="setup timeout per connection")
    a = ap.parse_args(argv)
    if a.connections < 1 or not 1 <= a.pipeline < RING // 2:
        ap.error(f"need -c >= 1 and 1 <= -p < {RING // 2}")
    try:
        import uvloop
    except ImportError:  # still works, just slower
        result = asyncio.run(run(a))
    else:
        result = uvloop.run(run(a))
    print(json.dumps(result), flush=True)
    return 0 if result["errors"] == 0 and result["replies"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
