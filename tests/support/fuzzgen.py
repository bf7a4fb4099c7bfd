"""Seeded hostile inputs for a running gateway, and the driver that sends them and checks what
comes back. Used by tests/test_fuzz.py (a few thousand inputs in the default run) and by
benchmarks/fuzz_run.py (a million and more).

The generator (`ConnFuzzer`, one per connection, all drawing from one `random.Random(seed)`)
produces frames as bytes plus what the server must do with them. It keeps a model of the
connection's channels (joins, leaves, stale join_refs) so that it knows, frame by frame:

* `exact`: the frame decodes to a Phoenix message the server must answer with exactly one
  `phx_reply` carrying the frame's ref (requests on a joined topic, heartbeats, joins, leaves,
  unknown events, pushes on unjoined topics, V2 binary pushes);
* `allow`: the frame may get at most one `phx_reply` with that ref (malformed frames whose ref
  could be read, requests on topics that the fuzzer may leave while they run);
* `terminal`: an input after which the connection must end with one of `close_codes`
  (protocol violations, client close frames, frames over the size limit).

What decides whether a frame decodes is msgspec, the JSON parser the gateway uses; the Phoenix
rules on top (V2 = array of 5, V1 = object with topic/event/payload/ref, topic and event strings,
channel bookkeeping) are written out here from the protocol, independently of the gateway.

Each connection joins two "stable" topics first; the fuzzer never leaves or re-joins them (a
frame that would is regenerated), so every request on them must be answered exactly once.
Frames leave as ready-made masked WebSocket frames (mask key 0), so the fuzzer can also send
what a client library refuses to: RSV bits, reserved opcodes, unmasked or fragmented control
frames, orphan continuations, bad lengths, any close code.
"""

from __future__ import annotations

import asyncio
import random
import re
import struct
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import msgspec
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

EVENT = "phoenix_gen_api"
SERVICE = "demo"
STABLE_PREFIX = "fz:stable:"

_decode = msgspec.json.Decoder().decode
_canon = msgspec.json.Encoder(order="sorted").encode
MAX_TOPIC_BYTES = 256  # the gateway's default max_topic_bytes
JOIN_REF_MAX_CHARS = 64  # the longest string join_ref a channel keeps


def _keepable(join_ref: Any) -> bool:
    """The join_refs a gateway keeps for a channel: null, a bool, a float, a 64-bit int, a short string."""
    if join_ref is None or type(join_ref) in (bool, float):
        return True
    if type(join_ref) is int:
        return -(1 << 63) <= join_ref < (1 << 64)
    return type(join_ref) is str and len(join_ref) <= JOIN_REF_MAX_CHARS


_MISSING = object()

# ----------------------------------------------------------------------------- values
ODD_PIECES = [
    "",
    " ",
    "\n",
    "\r\n",
    "\r",
    "\t",
    "\x00",
    "\x01",
    "\x07",
    "\x1b[31mred\x1b[0m",
    "\x7f",
    "\x85",
    "\u2028",
    "\u2029",
    "\u202e",
    "\u200b",
    "\ufeff",
    "\ufffd",
    "é",
    "ü",
    "日本",
    "😀",
    "👩‍👩‍👧",
    "e\u0301",
    "\\",
    '"',
    "'",
    "`",
    "=",
    "a=b",
    'k="v"',
    " key=value level=ERROR",
    "%s%d%n",
    "{}",
    "[]",
    "null",
    "<script>",
    "../../etc/passwd",
    "\n2024-01-01 00:00:00,000 ERROR forged_event",
    "\r\nX-Injected: 1",
    "phx_reply",
    "phoenix",
    EVENT,
    "demo",
    "echo",
    "1.0.0",
    "😀" * 20,
]
EDGE_NUMBERS: list[Any] = [
    0,
    -0.0,
    1,
    -1,
    0.5,
    -0.5,
    1e-7,
    5e-324,
    2.2250738585072014e-308,
    1.7976931348623157e308,
    -1.7976931348623157e308,
    2**31 - 1,
    2**31,
    2**32,
    2**53,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    -(2**63),
    -(2**63) - 1,
    10**30,
    -(10**30),
    123456789.123456789,
    1e16,
    1e300,
    -1e-300,
]
# JSON number texts msgspec may refuse or read oddly; sent verbatim
RAW_NUMBERS = ["1e400", "-1e400", "1E5", "1e-400", "-0", "0.0e0", "10" * 200, "1" + "0" * 400, "0e10"]
BAD_NUMBERS = ["01", "1.", ".5", "+1", "NaN", "Infinity", "-Infinity", "0x10", "1e", "--1"]


Raw = msgspec.Raw  # JSON text inserted verbatim (deep nesting, odd numbers)
_encode = msgspec.json.Encoder().encode
_non_ascii = re.compile("[^\x00-\x7f]")


def _u_escape(m: re.Match[str]) -> str:
    o = ord(m.group())
    if o < 0x10000:
        return f"\\u{o:04x}"
    o -= 0x10000
    return f"\\u{0xD800 + (o >> 10):04x}\\u{0xDC00 + (o & 0x3FF):04x}"


def dumps(obj: Any, ascii_only: bool = False) -> str:
    """JSON text of obj (`Raw` pieces verbatim); `ascii_only` escapes every non-ASCII character."""
    text = _encode(obj).decode()
    return _non_ascii.sub(_u_escape, text) if ascii_only else text


def canon(value: Any) -> bytes:
    """The key a ref is counted under (the same value decoded on either side gives the same key)."""
    try:
        return _deeper(_canon, value)
    except (TypeError, ValueError, OverflowError, RecursionError):
        return b"?"


def _deeper(fn: Any, arg: Any) -> Any:
    """fn(arg); on RecursionError once more with room for 3000 more levels (the client must
    read whatever the gateway could write, whatever this process's stack depth)."""
    try:
        return fn(arg)
    except RecursionError:
        old = sys.getrecursionlimit()
        sys.setrecursionlimit(old + 3000)
        try:
            return fn(arg)
        finally:
            sys.setrecursionlimit(old)


# ----------------------------------------------------------------------------- frames
def ws_frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, masked: bool = True, length: int | None = None
) -> bytes:
    """One client frame with mask key 0 (the payload stays as is). `rsv` = the 3 RSV bits;
    `length` overrides the declared length (the payload is still appended as given)."""
    n = len(payload) if length is None else length
    head = bytearray([(0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)])
    m = 0x80 if masked else 0
    if length is not None and length >= 2**16:
        head += bytes([m | 127]) + struct.pack("!Q", n)
    elif n < 126 and length is None:
        head.append(m | n)
    elif n < 2**16:
        head += bytes([m | 126]) + struct.pack("!H", n)
    else:
        head += bytes([m | 127]) + struct.pack("!Q", n)
    if masked:
        head += b"\0\0\0\0"
    return bytes(head) + payload


TEXT, BINARY, CONT, CLOSE, PING, PONG = 1, 2, 0, 8, 9, 10


@dataclass(slots=True)
class Input:
    """One fuzz input: the bytes to write and what the server must do about them."""

    kind: str
    data: bytes
    exact: list[tuple[bytes, str]] = field(default_factory=list)  # (key, category): exactly one reply
    allow: list[bytes] = field(default_factory=list)  # keys that may get at most one reply
    pongs: list[bytes] = field(default_factory=list)  # ping payloads that must come back as pongs
    terminal: str | None = None  # category of a connection-ending input
    close_codes: frozenset[int | None] = frozenset()  # acceptable close codes after it (None = no code)
    deep_ref: bytes | None = None  # ref key of a request that is answered, or refused as nested too deeply
    too_deep: bool = False  # certainly refused as nested too deeply (a phx_error without a ref)


# ----------------------------------------------------------------------------- demo functions
def _small(rng: random.Random, hi: int) -> Any:
    return rng.choice([0, 1, 2, rng.randint(0, hi), -1, 0.5, "3", None, True, [], {}])


class ConnFuzzer:
    """Inputs for one connection, with its channel model."""

    def __init__(self, gen: FuzzGen, v2: bool, max_channels: int, conn_no: int, rng: random.Random) -> None:
        self.gen = gen
        self.rng = rng
        self._id = 0
        self.v2 = v2
        self.max_channels = max_channels
        self.channels: dict[str, Any] = {}
        self.stable = [f"{STABLE_PREFIX}{conn_no}:{i}" for i in range(2)]
        self.stable_refs = {t: f"j{conn_no}.{i}" for i, t in enumerate(self.stable)}
        self.volatile: list[str] = []

    def next_id(self) -> int:
        self._id += 1
        return self._id

    # -------------------------------------------------------------- strings, numbers, values
    def s(self, allow_bad: bool = False) -> str:
        r = self.rng
        roll = r.random()
        if roll < 0.35:
            return r.choice(["hi", "hello", "x", "abc", "Ünïcödé", "😀"])
        if roll < 0.85:
            return "".join(r.choice(ODD_PIECES) for _ in range(r.randint(1, 4)))
        if roll < 0.95:
            return r.choice(self.gen.random_strings)
        if roll < 0.99:
            return r.choice("ab\n\x00😀") * r.randint(100, 1500)
        return "\ud800 lone surrogate" if allow_bad else "x" * r.randint(3000, 3100)

    def num(self) -> Any:
        r = self.rng.random()
        if r < 0.6:
            return self.rng.choice(EDGE_NUMBERS)
        if r < 0.9:
            return self.rng.uniform(-1e6, 1e6) if self.rng.random() < 0.5 else self.rng.randint(-1000, 1000)
        return Raw(self.rng.choice(RAW_NUMBERS))

    def value(self, depth: int = 0) -> Any:
        r = self.rng.random()
        if r < 0.25:
            return self.s()
        if r < 0.45:
            return self.num()
        if r < 0.55:
            return self.rng.choice([True, False, None])
        if depth < 3 and r < 0.75:
            return [self.value(depth + 1) for _ in range(self.rng.randint(0, 4))]
        if depth < 3 and r < 0.93:
            return {self.s(): self.value(depth + 1) for _ in range(self.rng.randint(0, 4))}
        if r < 0.97:
            return self.deep(self.rng.choice([10, 100, self.rng.randint(200, 900)]))
        return self.rng.choice(["", [], {}, 0, "null"])

    def deep(self, depth: int, inner: str = "1") -> Raw:
        """Nested arrays/objects `depth` levels deep, as raw text (no recursion here)."""
        if self.rng.random() < 0.5:
            return Raw("[" * depth + inner + "]" * depth)
        return Raw('{"a":' * depth + inner + "}" * depth)

    # -------------------------------------------------------------- refs
    def ref(self, odd: bool = False) -> Any:
        c = self.next_id()
        if not odd:
            return str(c) if self.rng.random() < 0.8 else c
        r = self.rng
        k = r.randint(0, 12)
        if k == 0:
            return f"r{c}" + "".join(r.choice(ODD_PIECES) for _ in range(3))
        if k == 1:
            return c + 0.25
        if k == 2:
            return [c]
        if k == 3:
            return {"r": c, "x": self.value(2)}
        if k == 4:
            return self.deep(r.randint(2, 60), str(c))
        if k == 5:
            return self.deep(r.randint(100, 900), str(c))
        if k == 6:
            return f"r{c}-" + "y" * r.randint(200, 3000)
        if k == 7:
            return -c
        if k == 8:
            return 10**20 + c
        if k == 9:
            return f"😀{c}\u202e"
        if k == 10:
            return [c, None, True, {"a": [self.s()]}]
        if k == 11:
            return float(c) * 1e200
        return r.choice([None, True, False, "", [], {}, 0])  # refs that are not unique

    # -------------------------------------------------------------- payloads
    def args_for(self, rt: str) -> Any:
        r = self.rng
        s, n = self.s, self.num
        specs: dict[str, dict[str, Any]] = {
            "echo": {"text": s, "n": n},
            "echo_plain": {"text": s, "n": n},
            "register": {
                "name": s,
                "age": n,
                "active": lambda: r.choice([True, False]),
                "id": lambda: r.choice(
                    ["6f1c2b3a-1d2e-4f5a-8b9c-0d1e2f3a4b5c", self.s(), "00000000-0000-0000-0000-000000000000"]
                ),
                "tags": lambda: [self.s() for _ in range(r.randint(0, 12))],
            },
            # time-taking arguments stay small: the fuzzer looks for wrong answers, not for a
            # function that legitimately runs for its whole timeout
            "slow_echo": {"text": s, "delay_ms": lambda: r.choice([0, 1, r.randint(0, 30), -5, -1e308, "10", None])},
            "count": {"n": lambda: _small(r, 12), "delay_ms": lambda: r.choice([0, 1, -1, "1", None])},
            "note": {"text": s},
            "notes": {},
            "blocking_sleep": {"ms": lambda: r.choice([0, 1, r.randint(0, 10), -1, 1e308, -1e308, "5", None, 10**30])},
            "whoami": {},
            "admin_stats": {},
            "kinds": {
                "id": lambda: r.choice(["6f1c2b3a-1d2e-4f5a-8b9c-0d1e2f3a4b5c", self.s()]),
                "at": lambda: r.choice(
                    [
                        "2024-01-01T00:00:00Z",
                        "2024-01-01T00:00:00+25:00",
                        "9999-12-31T23:59:59.999999+00:00",
                        self.s(),
                        "0000-00-00T00:00:00Z",
                    ]
                ),
                "day": lambda: r.choice(["2024-02-29T12:00:00", "2023-02-29T12:00:00", self.s()]),
                "tags": lambda: [self.s() for _ in range(r.randint(0, 7))],
                "scores": lambda: [self.num() for _ in range(r.randint(0, 5))],
                "meta": lambda: r.choice(
                    [{"name": self.s()}, {"name": self.s(), "email": self.s(), "x": 1}, {}, self.value(1)]
                ),
                "flag": lambda: r.choice([True, False, None, 0]),
                "rows": lambda: [self.value(1) for _ in range(r.randint(0, 12))],
                "anything": lambda: self.value(1),
            },
            "shout": {"text": lambda: r.choice(["", "quiet", self.s()])},
        }
        spec = specs.get(rt)
        if spec is None:
            return {self.s(): self.value(1) for _ in range(r.randint(0, 3))}
        args: dict[str, Any] = {}
        for name, make in spec.items():
            roll = r.random()
            if roll < 0.08:
                continue  # missing
            args[name] = self.value(1) if roll < 0.2 and rt not in ("count", "blocking_sleep", "slow_echo") else make()
        if r.random() < 0.1:
            args[self.s()] = self.value(1)
        if r.random() < 0.03:
            return r.choice([None, [], "args", 1, [args]])
        return args

    def payload(self) -> Any:
        r = self.rng
        rt = r.choice(FUNCTIONS) if r.random() < 0.85 else self.s()
        p: dict[str, Any] = {
            "request_id": self.s() if r.random() < 0.5 else f"q{self.next_id()}",
            "service": SERVICE if r.random() < 0.9 else self.s(),
            "request_type": rt,
            "args": self.args_for(rt),
        }
        if r.random() < 0.6:
            p["version"] = r.choice(["1.0.0", "1.0.0", "0.0.0", "", "2.0", self.s(), 1, None])
        roll = r.random()
        if roll < 0.15:
            del p[r.choice(list(p))]
        elif roll < 0.3:
            p[r.choice(list(p))] = self.value(1)
        elif roll < 0.38:
            p[r.choice(["user_id", "device_id", "user_roles", "__proto__", "request_info", "stream"])] = self.value(1)
        elif roll < 0.4:
            return self.value()
        if r.random() < 0.005:  # over max_payload_bytes, under the frame limit
            p["pad"] = "p" * r.randint(self.gen.max_payload, self.gen.max_payload + 10_000)
        return p

    # -------------------------------------------------------------- frames
    def msg(self, join_ref: Any, ref: Any, topic: Any, event: Any, payload: Any) -> Any:
        if self.v2:
            return [join_ref, ref, topic, event, payload]
        d = {"topic": topic, "event": event, "payload": payload, "ref": ref}
        if join_ref is not None:
            d["join_ref"] = join_ref
        return d

    def encode(self, msg: Any, corrupt: bool = False) -> bytes:
        r = self.rng
        text = dumps(msg, ascii_only=r.random() < 0.3)
        if r.random() < 0.05:
            text = r.choice([" ", "\n", "\t", "\r\n"]) + text + r.choice(["", " ", "\n"])
        data = text.encode("utf-8", "surrogatepass")
        if not corrupt:
            return data
        k = r.randint(0, 7)
        if k == 0 and data:
            return data[: r.randint(0, len(data) - 1)]
        if k == 1:
            i = r.randint(0, len(data))
            return data[:i] + bytes([r.randint(0, 255)]) + data[i:]
        if k == 2:
            return data + r.choice([b"x", b",", b"]", b"}", b"\x00", b" 1", b"[]"])
        if k == 3:
            return r.choice([b"\xef\xbb\xbf", b"\xff", b"\xc0\x80", b"\xed\xa0\x80"]) + data
        if k == 4:
            i = r.randint(0, len(data))
            return data[:i] + r.choice([b"\xff", b"\xc3", b"\xe2\x82", b"\xf4\x90\x80\x80", b"\xed\xb0\x80"]) + data[i:]
        if k == 5:
            return r.choice(
                [
                    b"",
                    b" ",
                    b"null",
                    b"[]",
                    b"{}",
                    b"1",
                    b'"s"',
                    b"[[",
                    b"[1,2,3,4,5,6]",
                    b'["1","2"]',
                    b'{"topic":1}',
                    b"\x00" * 10,
                ]
            ) + (b"" if r.random() < 0.7 else data)
        if k == 6:
            return data.replace(b",", b", ", 1).replace(b"1", r.choice(BAD_NUMBERS).encode(), 1)
        return r.randbytes(r.randint(1, 64))

    def mutate(self, msg: Any) -> Any:
        """Wrong types, missing or extra elements, another JSON type altogether."""
        r = self.rng
        k = r.randint(0, 5)
        if self.v2:
            lst = list(msg)
            if k == 0:
                return lst[: r.randint(0, 4)]
            if k in (1, 2):
                lst[r.randint(0, 4)] = self.value(1)
                return lst
            if k == 3:
                return lst + [self.value(1) for _ in range(r.randint(1, 3))]
            if k == 4:
                return {"topic": lst[2], "event": lst[3], "payload": lst[4], "ref": lst[1]}
            return self.value()
        d = dict(msg)
        if k == 0 and d:
            del d[r.choice(list(d))]
            return d
        if k in (1, 2) and d:
            d[r.choice(list(d))] = self.value(1)
            return d
        if k == 3:
            d[self.s()] = self.value(1)
            return d
        if k == 4:
            return [d.get("join_ref"), d.get("ref"), d.get("topic"), d.get("event"), d.get("payload")]
        return self.value()

    def opening(self) -> list[Input]:
        """Well-formed joins of the stable topics."""
        out = []
        for topic in self.stable:
            jr = self.stable_refs[topic]
            inp = self.judge("opening", dumps(self.msg(jr, jr, topic, "phx_join", {})).encode())
            assert inp is not None and inp.exact, inp
            out.append(inp)
        return out

    def next(self) -> Input:
        """The next non-terminal input."""
        while True:
            inp = self._next()
            if inp is not None:
                return inp

    def _topic(self) -> str:
        r = self.rng
        roll = r.random()
        if roll < 0.4 and self.volatile:
            return r.choice(self.volatile)
        if roll < 0.7:
            return f"fz:v:{r.randint(0, 30)}"
        t = r.choice(["phoenix", "", " ", "api:lobby", "room:" + self.s()]) if r.random() < 0.5 else self.s()
        return t if not t.startswith(STABLE_PREFIX) else "x" + t

    def _next(self) -> Input | None:
        r = self.rng
        roll = r.random()
        stable = r.choice(self.stable)
        sjr = self.stable_refs[stable]
        if roll < 0.34:  # request on a stable topic
            return self.judge(
                "request",
                self.encode(self.msg(sjr if r.random() < 0.8 else None, self.ref(), stable, EVENT, self.payload())),
            )
        if roll < 0.395:  # request with an odd ref
            return self.judge("odd_ref", self.encode(self.msg(sjr, self.ref(odd=True), stable, EVENT, self.payload())))
        if roll < 0.40:
            return self.deep_ref(stable, sjr)
        if roll < 0.46:  # requests elsewhere: a volatile or unjoined topic, a stale join_ref
            jr = r.choice([None, "stale", 0, sjr, self.value(1)])
            return self.judge(
                "request_elsewhere",
                self.encode(self.msg(jr, self.ref(), r.choice([self._topic(), stable]), EVENT, self.payload())),
            )
        if roll < 0.52:  # heartbeat
            if r.random() < 0.8:
                return self.judge("heartbeat", self.encode(self.msg(None, self.ref(), "phoenix", "heartbeat", {})))
            return self.judge(
                "heartbeat_odd",
                self.encode(
                    self.msg(
                        self.value(1),
                        self.ref(r.random() < 0.3),
                        r.choice(["phoenix", self._topic()]),
                        "heartbeat",
                        self.value(),
                    )
                ),
            )
        if roll < 0.58:  # join
            t = self._topic()
            return self.judge(
                "join",
                self.encode(
                    self.msg(
                        self.ref() if r.random() < 0.8 else self.value(1),
                        self.ref(),
                        t,
                        "phx_join",
                        self.value() if r.random() < 0.3 else {},
                    )
                ),
            )
        if roll < 0.63:  # leave: a joined volatile topic, an unjoined one, a stable one with a stale join_ref
            k = r.random()
            if k < 0.5 and self.volatile:
                t = r.choice(self.volatile)
                # the join_ref as the server decoded it, sent back as JSON text (it may be deeply nested)
                jr = Raw(msgspec.json.encode(self.channels.get(t)).decode()) if r.random() < 0.7 else None
            elif k < 0.8:
                t, jr = stable, r.choice(["stale", 1, [sjr], sjr + "x"])
            else:
                t, jr = self._topic(), self.value(1)
            return self.judge(
                "leave", self.encode(self.msg(jr, self.ref(), t, "phx_leave", self.value() if r.random() < 0.3 else {}))
            )
        if roll < 0.67:  # unknown events
            ev = r.choice(
                ["phx_reply", "phx_close", "phx_error", "presence_diff", "", "PHX_JOIN", "phoenix_gen_api ", self.s()]
            )
            return self.judge(
                "unknown_event",
                self.encode(
                    self.msg(
                        r.choice([sjr, None, "x"]), self.ref(), r.choice([stable, self._topic()]), ev, self.value()
                    )
                ),
            )
        if roll < 0.79:  # structurally wrong frames
            base = self.msg(sjr, self.ref(), stable, EVENT, self.payload())
            return self.judge("malformed", self.encode(self.mutate(base)))
        if roll < 0.86:  # corrupted bytes
            base = self.msg(sjr, self.ref(), stable, EVENT, self.payload())
            return self.judge("corrupt", self.encode(base, corrupt=True))
        if roll < 0.88:  # deep nesting in the payload; too deep for any parser half the time
            depth = r.choice([r.randint(50, 900), r.randint(1100, 5000)])
            p = {
                "request_id": "deep",
                "service": SERVICE,
                "request_type": "kinds",
                "args": {"anything": self.deep(depth)},
            }
            inp = self.judge("deep", self.encode(self.msg(sjr, self.ref(), stable, EVENT, p)))
            if inp is not None:
                inp.too_deep = depth >= 1100
            return inp
        if roll < 0.93:
            return self.binary(stable, sjr)
        if roll < 0.96:  # ping / unsolicited pong
            body = f"p{self.next_id()}".encode() + r.randbytes(r.randint(0, 100))
            if r.random() < 0.7:
                return Input("ping", ws_frame(PING, body), pongs=[body])
            return Input("pong", ws_frame(PONG, body))
        return self.fragmented(stable, sjr)

    def deep_ref(self, stable: str, sjr: str) -> Input:
        """A well-formed echo request whose ref is nested 960..998 levels deep: right at the JSON
        parser's depth limit, so whether the gateway can read it depends on its stack. Either way
        it must answer: with the phx_reply, or with a phx_error "nested too deeply" (counted per
        connection, as that error carries no ref)."""
        c = self.next_id()
        depth = self.rng.randint(960, 998)
        ref = "[" * depth + f'"d{c}"' + "]" * depth
        rid = f"deep{c}"
        body = dumps(
            self.msg(
                sjr,
                Raw(ref),
                stable,
                EVENT,
                {"request_id": rid, "service": SERVICE, "request_type": "echo", "args": {"text": "deep"}},
            )
        )
        key = ref.encode()
        return Input("deep_ref", ws_frame(TEXT, body.encode()), allow=[key], deep_ref=key)

    def binary(self, stable: str, sjr: str) -> Input:
        r = self.rng

        def b(s: Any) -> bytes:
            return str(s).encode("utf-8", "surrogatepass")[:255]

        jr, ref = b(r.choice([sjr, "", "stale", self.s()])), b(self.next_id())
        topic, event = b(r.choice([stable, self._topic()])), b(r.choice([EVENT, "x", self.s()]))
        body = r.choice([b"", b"\x00\x01", dumps(self.payload()).encode("utf-8", "surrogatepass")])
        data = bytes([0, len(jr), len(ref), len(topic), len(event)]) + jr + ref + topic + event + body
        k = r.random()
        if k < 0.15:
            data = bytes([r.randint(0, 255)]) + data[1:]
        elif k < 0.3:
            data = data[: r.randint(0, 8)]
        elif k < 0.4:
            data = r.randbytes(r.randint(0, 40))
        inp = Input("binary", ws_frame(BINARY, data))
        self._judge_binary(inp, data)
        return inp

    def fragmented(self, stable: str, sjr: str) -> Input:
        """A well-formed request split over a TEXT frame and CONTINUATION frames (RFC 6455 §5.4),
        sometimes with a ping between the fragments (control frames may be interleaved)."""
        r = self.rng
        data = dumps(self.msg(sjr, self.ref(), stable, EVENT, self.payload())).encode("utf-8", "surrogatepass")
        cuts = sorted(r.sample(range(1, len(data)), min(len(data) - 1, r.randint(1, 4))))
        parts = [data[i:j] for i, j in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        frames = []
        pongs = []
        for i, part in enumerate(parts):
            frames.append(ws_frame(TEXT if i == 0 else CONT, part, fin=i == len(parts) - 1))
            if i < len(parts) - 1 and r.random() < 0.2:
                body = f"fp{self.next_id()}".encode()
                frames.append(ws_frame(PING, body))
                pongs.append(body)
        judged = self.judge("fragmented", data)
        assert judged is not None
        judged.data = b"".join(frames)
        judged.pongs = pongs
        return judged

    # -------------------------------------------------------------- endings
    def terminal(self, kind: int | None = None, variant: int | None = None) -> Input:
        """An input after which the connection must end, with the close codes allowed. Its
        frames may carry a well-formed request, which may get at most one reply."""
        stable = self.stable[0]
        ref = self.ref()
        req = dumps(
            self.msg(
                self.stable_refs[stable],
                ref,
                stable,
                EVENT,
                {"request_id": "t", "service": SERVICE, "request_type": "echo", "args": {"text": "t"}},
            )
        ).encode()
        inp = self._terminal(req, kind, variant)
        inp.allow.append(canon(ref))
        return inp

    def _terminal(self, req: bytes, kind: int | None, variant: int | None) -> Input:
        r = self.rng

        def pick(options: list[int]) -> int:
            return r.choice(options) if variant is None else options[variant % len(options)]

        protocol = frozenset({1002})
        k = r.randint(0, TERMINAL_KINDS - 1) if kind is None else kind
        if k == 0:  # RSV bits without a negotiated extension: RFC 6455 §5.2 says fail the connection
            return Input(
                "rsv", ws_frame(TEXT, req, rsv=r.choice([1, 2, 4, 3, 7])), terminal="rsv", close_codes=protocol
            )
        if k == 1:  # a continuation with no message to continue
            return Input(
                "orphan_continuation", ws_frame(CONT, req), terminal="orphan_continuation", close_codes=protocol
            )
        if k == 2:  # a new TEXT frame while a fragmented message is open
            return Input(
                "interrupted_fragments",
                ws_frame(TEXT, req[:5], fin=False) + ws_frame(TEXT, req),
                terminal="interrupted_fragments",
                close_codes=protocol,
            )
        if k == 3:
            body = r.choice(
                [
                    ws_frame(r.choice([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]), b"x"),  # reserved opcode
                    ws_frame(TEXT, req, masked=False),  # unmasked
                    ws_frame(PING, b"p", fin=False),  # fragmented control frame
                    ws_frame(PING, b"p" * 126),  # control frame over 125 bytes
                    ws_frame(TEXT, b"x", length=100)[:2]
                    + struct.pack("!H", 5)
                    + b"\0\0\0\0hello",  # 16-bit length < 126
                ]
            )
            return Input("bad_frame", body, terminal="bad_frame", close_codes=protocol)
        if k == 4:  # declared over the frame size limit
            return Input(
                "oversize",
                ws_frame(TEXT, b"[", length=r.choice([10**8, 2**40])),
                terminal="oversize",
                close_codes=frozenset({1009}),
            )
        if k == 5:  # a close with a code a client may send: echoed, or answered with 1000
            code = pick(VALID_CLOSE_CODES)
            return Input(
                "close_valid",
                ws_frame(CLOSE, struct.pack("!H", code) + self.s().encode()[:100]),
                terminal="close_valid",
                close_codes=frozenset({code, 1000}),
            )
        if k == 6:  # a close with a code no endpoint may send (RFC 6455 §7.4): a protocol error
            code = pick(INVALID_CLOSE_CODES)
            return Input(
                "close_invalid",
                ws_frame(CLOSE, struct.pack("!H", code)),
                terminal="close_invalid",
                close_codes=protocol,
            )
        if k == 7:  # an empty close: answered with an empty close or 1000
            return Input(
                "close_empty", ws_frame(CLOSE, b""), terminal="close_empty", close_codes=frozenset({None, 1000})
            )
        if k == 8:  # a close reason that is not UTF-8, or a 1-byte close payload
            body = r.choice([struct.pack("!H", 1000) + b"\xff\xfe", b"\x03"])
            return Input(
                "close_malformed",
                ws_frame(CLOSE, body),
                terminal="close_malformed",
                close_codes=frozenset({1002, 1007}),
            )
        return Input("eof_mid_frame", ws_frame(TEXT, req)[: r.randint(1, 10)], terminal=None)

    # -------------------------------------------------------------- the oracle
    def judge(self, kind: str, data: bytes) -> Input | None:
        """What the server must do with text frame `data`; None when the frame would join or
        leave a stable topic (the caller draws another)."""
        inp = Input(kind, ws_frame(TEXT, data))
        try:
            msg = _decode(data)
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
            return inp  # not JSON: a phx_error without a ref
        if self.v2:
            if type(msg) is not list:
                return inp
            n = len(msg)
            if n < 5 or type(msg[2]) is not str or type(msg[3]) is not str:
                if n > 2 and type(msg[2]) is str:
                    inp.allow.append(canon(msg[1]))
                return inp
            join_ref, ref, topic, event = msg[0], msg[1], msg[2], msg[3]
        else:
            if type(msg) is not dict:
                return inp
            if (
                any(k not in msg for k in ("topic", "event", "payload", "ref"))
                or type(msg["topic"]) is not str
                or type(msg["event"]) is not str
            ):
                if type(msg.get("topic")) is str:
                    inp.allow.append(canon(msg.get("ref")))
                return inp
            join_ref, ref, topic, event = msg.get("join_ref"), msg["ref"], msg["topic"], msg["event"]
        key = canon(ref)
        cur = self.channels.get(topic, _MISSING)
        matches = cur is not _MISSING and (join_ref is None or join_ref == cur)
        stable = topic.startswith(STABLE_PREFIX) and topic in self.stable_refs and cur is not _MISSING
        if event == EVENT:
            if cur is _MISSING:
                inp.exact.append((key, "unmatched_topic"))
            elif matches:
                if stable:
                    inp.exact.append(
                        (key, "fragmented" if kind == "fragmented" else "odd_ref" if kind == "odd_ref" else "request")
                    )
                else:
                    inp.allow.append(key)  # the fuzzer may leave this topic before the answer
            return inp
        if event == "heartbeat" and topic == "phoenix":
            inp.exact.append((key, "heartbeat"))
            return inp
        if event == "phx_join":
            if topic in self.stable_refs and (kind != "opening" or cur is not _MISSING):
                return None  # the stable topics are joined once, by `opening`
            if len(topic.encode("utf-8", "surrogatepass")) > MAX_TOPIC_BYTES or not _keepable(join_ref):
                inp.exact.append((key, "control"))  # refused: what a channel keeps is bounded
                return inp
            if cur is _MISSING and len(self.channels) >= self.max_channels:
                inp.exact.append((key, "control"))
                return inp
            self.channels[topic] = join_ref
            if cur is _MISSING and topic not in self.stable_refs:
                self.volatile.append(topic)
            inp.exact.append((key, "control"))
            return inp
        if event == "phx_leave":
            if cur is _MISSING:
                inp.exact.append((key, "control"))
            elif matches:
                if stable:
                    return None
                del self.channels[topic]
                self.volatile.remove(topic)
                inp.exact.append((key, "control"))
            return inp
        if cur is _MISSING or matches:
            inp.exact.append((key, "control"))
        return inp

    def _judge_binary(self, inp: Input, data: bytes) -> None:
        if not self.v2 or len(data) < 5 or data[0] != 0:
            return
        lj, lr, lt, le = data[1], data[2], data[3], data[4]
        if 5 + lj + lr + lt + le > len(data):
            return
        try:
            fields = [
                data[a:b].decode() for a, b in ((5, 5 + lj), (5 + lj, 5 + lj + lr), (5 + lj + lr, 5 + lj + lr + lt))
            ]
            data[5 + lj + lr + lt : 5 + lj + lr + lt + le].decode()
        except UnicodeDecodeError:
            return
        jr, ref, topic = fields[0] or None, fields[1] or None, fields[2]
        cur = self.channels.get(topic, _MISSING)
        if cur is _MISSING or jr is None or jr == cur:
            inp.exact.append((canon(ref), "binary"))


TERMINAL_KINDS = 10  # ConnFuzzer.terminal(kind) for kind in range(TERMINAL_KINDS)
VALID_CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]
INVALID_CLOSE_CODES = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535]
TERMINAL_VARIANTS = {5: len(VALID_CLOSE_CODES), 6: len(INVALID_CLOSE_CODES)}
FUNCTIONS = [
    "echo",
    "echo_plain",
    "register",
    "slow_echo",
    "count",
    "note",
    "notes",
    "blocking_sleep",
    "whoami",
    "admin_stats",
    "kinds",
    "shout",
]


class FuzzGen:
    """The seeded source of every connection's inputs."""

    def __init__(
        self,
        seed: int,
        *,
        max_channels: int = 100,
        max_payload: int = 1_000_000,
        terminal_rate: float = 0.3,
        v1_rate: float = 0.3,
    ) -> None:
        self.rng = random.Random(seed)
        self.max_channels = max_channels
        self.max_payload = max_payload
        self.terminal_rate = terminal_rate
        self.v1_rate = v1_rate
        self.seed = seed
        self._conns = 0
        # random code points from every plane (no surrogates), drawn from a pool for speed
        r = self.rng
        self.random_strings = [
            "".join(
                chr(r.choice([r.randint(0, 0x7F), r.randint(0x80, 0xD7FF), r.randint(0xE000, 0x10FFFF)]))
                for _ in range(r.randint(1, 30))
            )
            for _ in range(2000)
        ]

    def connection(self) -> tuple[str, ConnFuzzer]:
        """(query string, fuzzer) for the next connection. Connection k draws everything from
        its own Random(seed/k), so its inputs are the same on every run, however the
        connections running at once interleave."""
        self._conns += 1
        rng = random.Random(f"{self.seed}/{self._conns}")
        v2 = rng.random() >= self.v1_rate
        query = "vsn=2.0.0" if v2 else rng.choice(["vsn=1.0.0", "", "vsn=1.0.0&x=%00%0a"])
        if v2 and rng.random() < 0.1:
            query = rng.choice(["vsn=2.0.0&vsn=2.0.0", "vsn=2.0.0-rc.1", "vsn=2.0.0&token=", "vsn=2.0.0&%ff=%ff"])
            v2 = "vsn=2.0.0" in query or "2.0.0-rc" in query
        return query, ConnFuzzer(self, v2, self.max_channels, self._conns, rng)

    @staticmethod
    def odd_handshake(r: random.Random) -> tuple[str, dict[str, str]]:
        """A query and headers for a connect attempt that may well be refused."""
        query = r.choice(
            [
                "vsn=3.0.0",
                "vsn=abc",
                "vsn=",
                "vsn=2",
                "token=garbage&vsn=2.0.0",
                "vsn=2.0.0&" + "a=b&" * 200,
                "vsn=%E0%A4%A",
                "vsn=2.0.0#frag",
                "vsn=1.0.0&vsn=9.9.9",
            ]
        )
        headers = r.choice(
            [
                {},
                {"Sec-WebSocket-Protocol": "phoenix, base64url.bearer.phx.!!!"},
                {"Sec-WebSocket-Protocol": "x" * 300},
                {"X-Forwarded-For": "1.2.3.4\r\nX-A: b"[:13]},
                {"Origin": "null"},
            ]
        )
        return query, headers


# ============================================================================= the driver
@dataclass
class Stats:
    """What a campaign sent and saw. `violations` holds (category, text) pairs."""

    inputs: int = 0
    bytes_sent: int = 0
    replies: int = 0
    pushes: int = 0
    other_frames: int = 0
    connections: int = 0
    handshakes_refused: int = 0
    kinds: Counter = field(default_factory=Counter)
    expected: Counter = field(default_factory=Counter)  # category -> exact replies expected
    answered: Counter = field(default_factory=Counter)  # category -> exact replies received
    endings: Counter = field(default_factory=Counter)  # "kind -> code" of terminal inputs
    violations: list[tuple[str, str]] = field(default_factory=list)
    violation_counts: Counter = field(default_factory=Counter)
    heartbeats: int = 0
    heartbeat_max_s: float = 0.0

    def violate(self, category: str, text: str) -> None:
        self.violation_counts[category] += 1
        if self.violation_counts[category] <= 20:
            self.violations.append((category, text[:600]))

    def summary(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "bytes_sent": self.bytes_sent,
            "replies": self.replies,
            "pushes": self.pushes,
            "connections": self.connections,
            "handshakes_refused": self.handshakes_refused,
            "expected": dict(self.expected),
            "answered": dict(self.answered),
            "endings": dict(self.endings),
            "violations": dict(self.violation_counts),
            "heartbeats": self.heartbeats,
            "heartbeat_max_s": round(self.heartbeat_max_s, 3),
        }


class _Listener(WSListener):
    def __init__(self, conn: FuzzConn) -> None:
        self.conn = conn

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        self.conn.on_frame(frame)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.conn.closed.done():
            self.conn.closed.set_result(None)


NON_UNIQUE = {canon(v) for v in (None, True, False, "", [], {}, 0)}


class FuzzConn:
    """One connection's ledger: exact replies owed, replies allowed, pongs owed."""

    def __init__(self, stats: Stats, v2: bool) -> None:
        self.stats = stats
        self.v2 = v2
        self.allowed: Counter[bytes] = Counter()
        self.received: Counter[bytes] = Counter()
        self.owed: dict[bytes, list[str]] = {}  # key -> categories still owed a reply
        self.owed_n = 0
        self.pongs: Counter[bytes] = Counter()
        self.transport: WSTransport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.close_code: int | str | None = "none"  # "none" until a close frame arrives
        self.progress = asyncio.Event()
        self.buf: list[bytes] = []
        self.inputs: dict[bytes, str] = {}  # key -> a short repr of the input owed (for reports)
        self.markers: dict[bytes, asyncio.Future[None]] = {}
        self.deep_refs: set[bytes] = set()  # deep_ref inputs not answered yet
        self.deep_sent = 0
        self.too_deep_sent = 0  # inputs certainly refused as too deep
        self.too_deep_seen = 0  # phx_error "nested too deeply" received
        self.ref_nulled_seen = 0  # replies whose ref could not be encoded (sent as null, with the reason)
        self.marker_no = 0

    @classmethod
    async def open(
        cls, url: str, query: str, stats: Stats, v2: bool, headers: dict[str, str] | None = None
    ) -> FuzzConn:
        self = cls(stats, v2)
        full = url + "/websocket" + ("?" + query if query else "")
        self.transport, _ = await ws_connect(
            lambda: _Listener(self),
            full,
            extra_headers=headers,
            disconnect_on_exception=False,
            max_frame_size=64 * 2**20,
            websocket_handshake_timeout=10,
        )
        return self

    # -------------------------------------------------------------- inbound
    def on_frame(self, frame: WSFrame) -> None:
        st = self.stats
        mt = frame.msg_type
        if mt == WSMsgType.TEXT:
            raw = frame.get_payload_as_bytes()
            try:
                msg = _deeper(_decode, raw)
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                st.violate("server_frame", f"the server sent a text frame that is not JSON: {raw[:200]!r}")
                return
            if self.v2 and type(msg) is list and len(msg) == 5:
                ref, event = msg[1], msg[3]
            elif not self.v2 and type(msg) is dict:
                ref, event = msg.get("ref"), msg.get("event")
            else:
                st.violate("server_frame", f"the server sent a frame of the wrong shape: {raw[:200]!r}")
                return
            if event == "phx_reply" and ref is None and b"could not be encoded" in raw:
                st.replies += 1
                self.ref_nulled_seen += 1  # a deep ref answered with the ref sent as null (unencodable)
            elif event == "phx_reply":
                st.replies += 1
                self._reply(canon(ref), raw)
            elif event == EVENT:
                st.pushes += 1
            elif event == "phx_error" and b"nested too deeply" in raw:
                self.too_deep_seen += 1
                st.other_frames += 1
            else:
                st.other_frames += 1
        elif mt == WSMsgType.PONG:
            body = frame.get_payload_as_bytes()
            if self.pongs[body] > 0:
                self.pongs[body] -= 1
                if not self.pongs[body]:
                    del self.pongs[body]
                self.owed_n -= 1
                self.stats.answered["ping"] += 1
                self.progress.set()
        elif mt == WSMsgType.CLOSE:
            body = frame.get_payload_as_bytes()
            self.close_code = struct.unpack("!H", body[:2])[0] if len(body) >= 2 else None
            if self.transport is not None:
                self.transport.disconnect()
        elif mt == WSMsgType.BINARY:
            st.other_frames += 1

    def _reply(self, key: bytes, raw: bytes) -> None:
        self.received[key] += 1
        if self.received[key] > self.allowed[key]:
            self.stats.violate(
                "extra_reply",
                f"phx_reply #{self.received[key]} for ref {key[:200]!r} "
                f"(at most {self.allowed[key]} allowed): {raw[:300]!r}",
            )
        if self.deep_refs and key in self.deep_refs:
            self.deep_refs.discard(key)
            self.stats.answered["deep_ref"] += 1
        fut = self.markers.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result(None)
        cats = self.owed.get(key)
        if cats:
            self.stats.answered[cats.pop()] += 1
            if not cats:
                del self.owed[key]
                self.inputs.pop(key, None)
            self.owed_n -= 1
            self.progress.set()

    # -------------------------------------------------------------- outbound
    def add(self, inp: Input) -> None:
        """Books what `inp` is owed and queues its bytes (written by `flush`)."""
        st = self.stats
        st.inputs += 1
        st.bytes_sent += len(inp.data)
        st.kinds[inp.kind] += 1
        for key in inp.allow:
            self.allowed[key] += 1
        for key, cat in inp.exact:
            self.allowed[key] += 1
            if key in NON_UNIQUE:  # sent by many inputs: a reply cannot be told apart, at most checked
                continue
            self.owed.setdefault(key, []).append(cat)
            self.owed_n += 1
            st.expected[cat] += 1
            if key not in self.inputs:
                self.inputs[key] = f"{inp.kind}: {inp.data[:300]!r}"
        if inp.deep_ref is not None:
            self.deep_refs.add(inp.deep_ref)
            self.deep_sent += 1
            st.expected["deep_ref"] += 1
        if inp.too_deep:
            self.too_deep_sent += 1
        for body in inp.pongs:
            self.pongs[body] += 1
            self.owed_n += 1
            st.expected["ping"] += 1
        self.buf.append(inp.data)

    def marker(self) -> asyncio.Future[None]:
        """Queues a well-formed heartbeat; the future resolves at its reply. The server answers
        frames in order, so once it resolves every frame before it has been read."""
        self.marker_no += 1
        ref = f"m{self.marker_no}"
        key = canon(ref)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.markers[key] = fut
        msg = (
            [None, ref, "phoenix", "heartbeat", {}]
            if self.v2
            else {"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": ref}
        )
        self.add(Input("marker", ws_frame(TEXT, dumps(msg).encode()), exact=[(key, "heartbeat")]))
        self.stats.inputs -= 1  # markers pace the fuzzer; they are not fuzz inputs
        self.stats.kinds["marker"] -= 1
        return fut

    def flush(self) -> None:
        if self.buf and self.transport is not None and not self.transport.is_disconnected:
            self.transport.underlying_transport.write(b"".join(self.buf))
        self.buf.clear()

    async def wait_owed(self, at_most: int, timeout: float) -> bool:
        """Until at most `at_most` answers are owed; False on timeout or disconnect."""
        deadline = time.monotonic() + timeout
        while self.owed_n > at_most:
            if self.closed.done():
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.progress.clear()
            try:
                await asyncio.wait_for(self.progress.wait(), min(left, 0.5))
            except TimeoutError:
                pass
        return True

    def report_owed(self, why: str) -> None:
        for key, cats in list(self.owed.items()):
            for cat in cats:
                self.stats.violate(cat, f"{why}: no phx_reply for ref {key[:200]!r}; input {self.inputs.get(key, '?')}")
        # deep_ref frames the gateway could not read, or answered with the ref it could not encode as null
        refused = self.too_deep_seen - self.too_deep_sent + self.ref_nulled_seen
        self.ref_nulled_seen = 0
        self.stats.answered["deep_ref"] += refused
        missing = len(self.deep_refs) - refused
        if missing > 0:
            self.stats.violate(
                "deep_ref",
                f"{why}: {missing} of {self.deep_sent} requests with refs nested 960-998 "
                f"levels deep got neither a phx_reply nor a 'nested too deeply' error, e.g. "
                f"{sorted(self.deep_refs, key=len)[0][-40:]!r}",
            )
        self.deep_refs.clear()
        self.deep_sent = self.too_deep_sent = self.too_deep_seen = 0
        for body, n in self.pongs.items():
            for _ in range(n):
                self.stats.violate("ping", f"{why}: no pong for ping payload {body[:60]!r}")
        self.owed.clear()
        self.pongs.clear()
        self.owed_n = 0

    async def end(self, terminal: Input | None, timeout: float) -> None:
        """Ends the connection: a clean close, or the terminal input and the check of its outcome."""
        t = self.transport
        assert t is not None
        if terminal is None:
            if not t.is_disconnected:
                t.send_close()
            try:
                await asyncio.wait_for(asyncio.shield(self.closed), timeout)
            except TimeoutError:
                t.disconnect()
            return
        self.add(terminal)
        self.flush()
        if terminal.terminal is None:  # the client just stops mid-frame and hangs up
            t.disconnect()
            return
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        except TimeoutError:
            self.stats.violate(
                terminal.terminal,
                f"the connection stayed open {timeout:g} s after {terminal.kind}: {terminal.data[:120]!r}",
            )
            self.stats.endings[f"{terminal.terminal} -> still open"] += 1
            t.disconnect()
            return
        code = self.close_code
        self.stats.endings[f"{terminal.terminal} -> {'no close frame' if code == 'none' else code}"] += 1
        if code not in terminal.close_codes:
            want = sorted(terminal.close_codes, key=lambda c: -1 if c is None else c)
            self.stats.violate(
                terminal.terminal,
                f"after {terminal.kind} the server closed with "
                f"{'no close frame' if code == 'none' else code}, expected one of {want}: "
                f"{terminal.data[:120]!r}",
            )


async def drive_connection(
    url: str,
    plan: tuple[str, ConnFuzzer],
    stats: Stats,
    n_inputs: int,
    *,
    pace: int = 64,
    batch: int = 8,
    answer_timeout: float = 20.0,
    grace: float = 3.0,
    ending: int | None = None,
    variant: int | None = None,
) -> int:
    """One connection's life: open, join the stable topics, `n_inputs` fuzz inputs, check the
    answers, end (cleanly or with a terminal input). Returns the inputs sent.

    Pacing: a well-formed heartbeat (a marker) follows every `pace` inputs and the fuzzer runs at
    most two markers ahead of the server's answers, whatever else goes unanswered. At the end a
    last marker is sent; once it is answered every input has been read, and answers still owed
    get `grace` seconds more (calls running in threads or tasks) before they count as missing.
    """
    query, fz = plan
    if ending is not None:
        terminal: Input | None = fz.terminal(ending, variant)
    else:
        terminal = fz.terminal() if fz.rng.random() < fz.gen.terminal_rate else None
    try:
        conn = await FuzzConn.open(url, query, stats, fz.v2)
    except Exception as exc:  # the gateway must accept these
        stats.violate("handshake", f"connect with ?{query} failed: {exc!r}")
        return 1
    stats.connections += 1
    for inp in fz.opening():
        conn.add(inp)
    conn.flush()
    if not await conn.wait_owed(0, answer_timeout):
        conn.report_owed("joining the stable topics")
        conn.transport.disconnect()  # type: ignore[union-attr]
        return 2
    sent = 0
    since_marker = 0
    markers: deque[asyncio.Future[None]] = deque()
    alive = True
    while sent < n_inputs and alive and not conn.closed.done():
        for _ in range(min(batch, n_inputs - sent)):
            conn.add(fz.next())
            sent += 1
            since_marker += 1
        if since_marker >= pace:
            markers.append(conn.marker())
            since_marker = 0
        conn.flush()
        while len(markers) > 2 and alive:
            alive = await _marker(conn, markers.popleft(), answer_timeout)
        await asyncio.sleep(0)
    if conn.closed.done():
        stats.violate(
            "connection", f"the server closed a connection in the middle of fuzzing (close code {conn.close_code})"
        )
    elif alive:
        last = conn.marker()
        conn.flush()
        if await _marker(conn, last, answer_timeout):
            await conn.wait_owed(0, grace)
    conn.report_owed("after the last input was read")
    await conn.end(terminal, 5.0)
    return sent + 2


async def _marker(conn: FuzzConn, fut: asyncio.Future[None], timeout: float) -> bool:
    try:
        await asyncio.wait_for(asyncio.shield(fut), timeout)
        return True
    except TimeoutError:
        conn.stats.violate("heartbeat", f"a heartbeat sent while fuzzing got no reply in {timeout:g} s")
        return False


async def odd_handshake(url: str, rng: random.Random, stats: Stats) -> None:
    """A connect attempt with an odd query or headers: accepted or refused, never a hang."""
    query, headers = FuzzGen.odd_handshake(rng)
    stats.inputs += 1
    stats.kinds["handshake"] += 1
    try:
        conn = await asyncio.wait_for(FuzzConn.open(url, query, stats, True, headers), 15)
    except TimeoutError:
        stats.violate("handshake", f"connect with ?{query[:100]} {headers} got no answer in 15 s")
        return
    except Exception:
        stats.handshakes_refused += 1
        return
    await conn.end(None, 5.0)


async def heartbeat_watch(
    url: str, stats: Stats, stop: asyncio.Event, interval: float = 0.25, timeout: float = 5.0
) -> None:
    """A well-behaved client beside the fuzzers: every heartbeat must be answered in `timeout` s."""
    conn = await FuzzConn.open(url, "vsn=2.0.0", stats, True)
    n = 0
    while not stop.is_set():
        n += 1
        key = f"hb{n}"
        conn.add(
            Input(
                "watch",
                ws_frame(TEXT, dumps([None, key, "phoenix", "heartbeat", {}]).encode()),
                exact=[(canon(key), "watch_heartbeat")],
            )
        )
        stats.inputs -= 1  # the watchdog's heartbeats are not fuzz inputs
        conn.flush()
        t0 = time.monotonic()
        if not await conn.wait_owed(0, timeout):
            conn.report_owed(f"watchdog heartbeat, {timeout:g} s")
            break
        stats.heartbeats += 1
        stats.heartbeat_max_s = max(stats.heartbeat_max_s, time.monotonic() - t0)
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except TimeoutError:
            pass
    await conn.end(None, 2.0)


async def campaign(
    url: str,
    *,
    seed: int,
    inputs: int,
    connections: int,
    max_channels: int = 100,
    max_payload: int = 1_000_000,
    per_connection: tuple[int, int] = (100, 3000),
    handshake_rate: float = 0.02,
    stats: Stats | None = None,
    pace: int = 64,
    grace: float = 3.0,
) -> Stats:
    """Sends about `inputs` fuzz inputs over `connections` parallel connections (each replaced
    by a fresh one when it ends) and checks every answer; a heartbeat watchdog runs beside."""
    stats = stats if stats is not None else Stats()
    gen = FuzzGen(seed, max_channels=max_channels, max_payload=max_payload)
    stop = asyncio.Event()
    watch = asyncio.create_task(heartbeat_watch(url, stats, stop))
    remaining = [inputs]

    async def lane() -> None:
        while remaining[0] > 0:
            plan = gen.connection()
            rng = plan[1].rng
            if rng.random() < handshake_rate:
                remaining[0] -= 1
                await odd_handshake(url, rng, stats)
                continue
            n = min(remaining[0], rng.randint(*per_connection))
            remaining[0] -= n
            await drive_connection(url, plan, stats, n, pace=pace, grace=grace)

    try:
        await asyncio.gather(*(lane() for _ in range(connections)))
    finally:
        stop.set()
        await watch
    return stats


async def terminal_sweep(url: str, gen: FuzzGen, stats: Stats, inputs_each: int = 20) -> None:
    """Every kind of connection-ending input in each of its variants (every close code on the
    lists), each on its own connection after a few fuzz inputs, ten connections at a time."""
    todo = [(k, v) for k in range(TERMINAL_KINDS) for v in range(TERMINAL_VARIANTS.get(k, 2))]
    for i in range(0, len(todo), 10):
        await asyncio.gather(
            *(
                drive_connection(url, gen.connection(), stats, inputs_each, ending=k, variant=v, grace=1.0)
                for k, v in todo[i : i + 10]
            )
        )


def gateway_config(**gateway: Any) -> str:
    """The embedded demo config (genapi/default.toml) with its [gateway] table's keys replaced."""
    from importlib.resources import files

    text = files("genapi").joinpath("default.toml").read_text()
    head, sep, rest = text.partition("[auth]")
    lines = [ln for ln in head.splitlines() if ln.split("=")[0].strip() not in gateway]
    lines += [f"{k} = {_toml(v)}" for k, v in gateway.items()]
    return "\n".join(lines) + "\n\n" + sep + rest


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v + '"'
    return str(v)


async def deep_ref_probe(url: str, gen: FuzzGen, stats: Stats, answer_timeout: float = 10.0) -> None:
    """Requests with refs nested 960-998 levels deep that wait in the connection's queue (every
    slot held by a slow_echo first), then plain echo requests: each must be answered or refused
    (the deep ones), and the plain ones after them exactly once (category "after_deep")."""
    query, fz = gen.connection()
    query = "vsn=2.0.0"
    fz.v2 = True
    conn = await FuzzConn.open(url, query, stats, True)
    for inp in fz.opening():
        conn.add(inp)
    conn.flush()
    await conn.wait_owed(0, answer_timeout)
    stable = fz.stable[0]
    sjr = fz.stable_refs[stable]

    def req(ref: str, rt: str, args: dict[str, Any], cat: str) -> Input:
        body = dumps(
            [sjr, ref, stable, EVENT, {"request_id": ref, "service": SERVICE, "request_type": rt, "args": args}]
        )
        return Input(cat, ws_frame(TEXT, body.encode()), exact=[(canon(ref), cat)])

    for i in range(40):
        conn.add(req(f"slow{i}", "slow_echo", {"text": "hold", "delay_ms": 50}, "request"))
    for _ in range(40):
        conn.add(fz.deep_ref(stable, sjr))
    for i in range(40):
        conn.add(req(f"after{i}", "echo", {"text": "after"}, "after_deep"))
    last = conn.marker()
    conn.flush()
    if await _marker(conn, last, answer_timeout):
        await conn.wait_owed(0, answer_timeout)
    conn.report_owed("deep-ref probe")
    await conn.end(None, 5.0)
