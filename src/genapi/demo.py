"""The embedded `demo` service: one function per response type, type family and feature, so a
newcomer can call something the moment `genapi serve` starts (see default.toml)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from genapi.request.hooks import Reject
from genapi.structs import FunConfig, Request, Response

NOTES: list[str] = []


async def echo(text: str, n: float = 1) -> dict[str, Any]:
    """sync: returns its arguments."""
    return {"text": text, "n": n}


def echo_plain(text: str, n: float = 1) -> dict[str, Any]:
    """sync: `echo` as a plain `def` (runs in the thread pool); measures the plain-function path."""
    return {"text": text, "n": n}


async def register(name: str, age: float, active: bool, id: str, tags: list[str]) -> dict[str, Any]:
    """sync, five validated arguments (the end-to-end validation benchmark)."""
    return {"name": name, "age": age, "active": active, "id": id, "tags": tags}


async def slow_echo(text: str, delay_ms: float) -> dict[str, Any]:
    """async: answers after delay_ms."""
    await asyncio.sleep(delay_ms / 1000)
    return {"text": text, "delay_ms": delay_ms}


async def count(n: float, delay_ms: float = 0) -> AsyncIterator[int]:
    """stream: yields 1..n."""
    for i in range(1, int(n) + 1):
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        yield i


def note(text: str) -> None:
    """none (fire-and-forget): remembers the note; read them back with `notes`."""
    NOTES.append(text)
    del NOTES[:-100]


async def notes() -> list[str]:
    return list(NOTES)


def blocking_sleep(ms: float) -> dict[str, Any]:
    """A plain function that blocks: it runs in the thread pool, other clients are unaffected."""
    time.sleep(ms / 1000)
    return {"slept_ms": ms}


async def whoami(info: dict[str, Any]) -> dict[str, Any]:
    """Needs an authenticated user; gets the request info (request_info = true)."""
    return {"user_id": info["user_id"], "device_id": info["device_id"], "request_id": info["request_id"]}


async def admin_stats() -> dict[str, Any]:
    """Only for users with the admin role."""
    return {"notes": len(NOTES)}


async def kinds(
    id: str,
    at: datetime,
    day: datetime,
    tags: list[str],
    scores: list[float],
    meta: dict[str, Any],
    flag: bool,
    rows: list[dict[str, Any]],
    anything: Any,
) -> dict[str, Any]:
    """One argument of every type family; returns what the function received, converted."""
    return {
        "id": id,
        "at": at.isoformat(),
        "day": day.isoformat(),
        "tags": tags,
        "scores": scores,
        "meta": meta,
        "flag": flag,
        "rows": rows,
        "anything": anything,
        "types": {"at": type(at).__name__, "tz": at.utcoffset() is not None},
    }


async def shout(text: str) -> str:
    """Hooked: the before hook refuses empty text and upper-cases the rest."""
    return text


def shout_before(request: Request, config: FunConfig) -> Any:
    import msgspec

    text = request.args.get("text")
    if text == "":
        return Reject("text must not be empty")
    if isinstance(text, str):
        return msgspec.structs.replace(request, args={**request.args, "text": text.upper()}), config
    return None


def shout_after(request: Request, config: FunConfig, response: Response) -> None:
    NOTES.append(f"shout {request.request_id} success={response.success}")
    del NOTES[:-100]
