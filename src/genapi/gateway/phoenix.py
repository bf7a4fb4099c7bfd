"""Phoenix Channels wire codec (V1 JSON objects, V2 JSON arrays): the serializer a connection
negotiates by `vsn`, the topic patterns clients may join and the origins they may connect from.
Frames are built (compiled, `_core/wire.pyx`) as ready-to-write WebSocket text frames, so a
connection can gather every frame answering one read batch and write them at once."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from urllib.parse import urlsplit

from genapi._core import wire
from genapi._core.decode import decode_binary, decode_v1, decode_v2


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


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
Origin = tuple["str | None", "str | None", "int | None"]


def parse_origin(origin: str) -> Origin:
    """`scheme://host:port` → (scheme, host, port), as Phoenix reads an origin (Elixir's
    URI.parse): None for a part not given; the port defaults from the scheme."""
    try:
        u = urlsplit(origin.strip())
        port = u.port
    except ValueError:
        return None, None, None
    scheme = u.scheme.lower() or None
    if port is None and scheme is not None:
        port = _DEFAULT_PORTS.get(scheme)
    return scheme, u.hostname, port


def origin_checker(check_origin: bool | list[str]) -> Callable[[str, str | None], bool] | None:
    """Phoenix's `check_origin` for the Origin header of an upgrade: None when every origin is
    allowed (false), else `allowed(origin, host_header)`. A request without Origin (not a
    browser) is not checked. `true`: the Origin's host must be the host the client connected to
    (the Host header; Phoenix compares with the endpoint's url host). A list: an origin passes
    when some entry's scheme, host and port match, a part the entry leaves out matching anything
    (`"//example.com"`: any scheme and port); `*.example.com` matches every subdomain of
    example.com (not example.com itself)."""
    if check_origin is False:
        return None
    if check_origin is True:

        def same_host(origin: str, host: str | None) -> bool:
            origin_host = parse_origin(origin)[1]
            return origin_host is not None and host is not None and origin_host == parse_origin("//" + host)[1]

        return same_host
    allowed = [parse_origin(entry) for entry in check_origin]

    def listed(origin: str, _host: str | None) -> bool:
        scheme, host, port = parse_origin(origin)
        if host is None:
            return False
        for a_scheme, a_host, a_port in allowed:
            if (
                (a_scheme is None or a_scheme == scheme)
                and (a_port is None or a_port == port)
                and (a_host == host or (a_host is not None and a_host.startswith("*.") and host.endswith(a_host[1:])))
            ):
                return True
        return False

    return listed
