"""The service node the remote tests run (`genapi service run nodeapp:svc`). Each function tells
which node answered (NODE_NAME from the environment), so tests can see the node selection."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator

from genapi.service import Service

NODE = os.environ.get("NODE_NAME", "node")
MARKS = os.environ.get("NODE_MARKS")  # a directory where cancelled calls leave a file
svc = Service("inv", config_version=os.environ.get("NODE_CONFIG_VERSION", "1.0.0"), version="1.0.0")


def _mark(name: str) -> None:
    if MARKS:
        with open(os.path.join(MARKS, f"{NODE}-{name}"), "w") as f:
            f.write(str(time.time()))


@svc.api(response_type="sync", timeout=5000)
async def echo(text: str, n: int = 1) -> dict:
    return {"text": text, "n": n, "node": NODE}


@svc.api(response_type="sync")
def where(key: str = "") -> str:
    return NODE


@svc.api(response_type="sync", choose_node_mode={"hash": "key"}, request_type="where_hash")
def where_hash(key: str) -> str:
    return NODE


@svc.api(response_type="sync", choose_node_mode="round_robin", request_type="where_rr")
def where_rr() -> str:
    return NODE


@svc.api(response_type="sync", choose_node_mode={"sticky": "key"}, request_type="where_sticky")
def where_sticky(key: str) -> str:
    return NODE


@svc.api(response_type="sync", retry={"all_nodes": 2}, request_type="where_retry")
def where_retry() -> str:
    return NODE


@svc.api(response_type="sync")
def boom(reason: str) -> None:
    raise ValueError(reason)


@svc.api(response_type="async", timeout=2000)
async def slow(ms: int) -> dict:
    try:
        await asyncio.sleep(ms / 1000)
    except asyncio.CancelledError:
        _mark("slow-cancelled")
        raise
    return {"slept": ms, "node": NODE}


@svc.api(response_type="sync", timeout=300)
async def too_slow() -> str:
    try:
        await asyncio.sleep(5)
    except asyncio.CancelledError:
        _mark("too_slow-cancelled")
        raise
    return "late"


@svc.api(response_type="stream", timeout=10000)
async def count(n: int, delay_ms: int = 0) -> AsyncIterator[int]:
    try:
        for i in range(1, n + 1):
            if delay_ms:
                await asyncio.sleep(delay_ms / 1000)
            yield i
    except asyncio.CancelledError:
        _mark("count-cancelled")
        raise


@svc.api(response_type="stream")
def count_plain(n: int) -> Iterator[int]:
    yield from range(1, n + 1)


NOTES: list[str] = []


@svc.api(response_type="none")
def note(text: str) -> None:
    NOTES.append(text)


@svc.api(response_type="sync")
def notes() -> list:
    return list(NOTES)


@svc.api(response_type="sync", check_permission="any_authenticated", request_info=True)
def whoami(request_info: dict) -> dict:
    return {"user_id": request_info["user_id"], "node": NODE}


SEEN: dict[str, int] = {}


def _flaky(key: str) -> str:
    """Raises the first time this node sees `key`; answers the second time."""
    SEEN[key] = SEEN.get(key, 0) + 1
    if SEEN[key] < 2:
        raise RuntimeError(f"first try of {key} on {NODE}")
    return NODE


@svc.api(response_type="sync", retry={"same_node": 1}, request_type="flaky_same")
def flaky_same(key: str) -> str:
    return _flaky(key)


@svc.api(response_type="sync", retry={"all_nodes": 2}, request_type="flaky_all")
def flaky_all(key: str) -> str:
    return _flaky(key)


@svc.api(response_type="sync")
async def trace_async() -> str | None:
    """The caller's traceparent, as the node's function sees it (async, inline)."""
    from genapi import trace

    return trace.current()


@svc.api(response_type="sync")
def trace_thread() -> str | None:
    """The same from a plain function (run in the node's thread pool)."""
    from genapi import trace

    return trace.current()
