"""Phoenix Channels wire codec (V1 JSON objects, V2 JSON arrays): the serializer a connection
negotiates by `vsn`, and the topic patterns clients may join. Frames are built (compiled, `_core/wire.pyx`) as
ready-to-write WebSocket text frames, so a connection can gather every frame answering one read
batch and write them at once."""
from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable

from ._core import wire
from ._core.decode import decode_binary, decode_v1, decode_v2


class V2:
    """`[join_ref, ref, topic, event, payload]`; binary pushes allowed."""

    vsn = "2.0.0"
    decode = staticmethod(decode_v2)
    decode_binary = staticmethod(decode_binary)
    message = staticmethod(wire.message_v2)
    push = staticmethod(wire.push_v2)
    reply = staticmethod(wire.reply_v2)
    answer = staticmethod(wire.answer_v2)


class V1:
    """`{"topic", "event", "payload", "ref"}`; join_ref is never sent; no binary frames."""

    vsn = "1.0.0"
    decode = staticmethod(decode_v1)
    decode_binary = None
    message = staticmethod(wire.message_v1)
    push = staticmethod(wire.push_v1)
    reply = staticmethod(wire.reply_v1)
    answer = staticmethod(wire.answer_v1)


def serializer_for(vsn: str | None) -> type[V1] | type[V2] | None:
    """Phoenix's negotiation: missing → V1, `~> 1.0.0` → V1, `~> 2.0.0` → V2, else None (403)."""
    if vsn is None:
        return V1
    m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)(?:[-+][0-9A-Za-z.\-+]*)?", vsn)
    if not m:
        return None
    major, minor = int(m.group(1)), int(m.group(2))
    if (major, minor) == (1, 0):
        return V1
    if (major, minor) == (2, 0):
        return V2
    return None


def topic_matcher(patterns: list[str]) -> Callable[[str], bool]:
    """Glob patterns (`api:*`, `room:?`, `*`) → a predicate. Nothing is cached: topics are the
    clients' choice (a cache would keep what they tried), and a join is rare next to requests."""
    if "*" in patterns:
        return lambda topic: True
    if not patterns:
        return lambda topic: False
    match = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)).match
    return lambda topic: match(topic) is not None
