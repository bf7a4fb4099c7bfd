"""The service node the argument-conversion tests run (`genapi service run argsapp:svc`): one
function per annotation shape the SDK maps, each answering what it received with its Python
types (see `seen`), so a test asserts the types that arrived, not only the values. The
annotations are strings (`from __future__ import annotations`), as the node must resolve them."""

from __future__ import annotations

import datetime
import typing
import uuid
from collections.abc import AsyncIterator
from typing import Any, Optional

from genapi.service import Service

svc = Service("args", config_version="1.0.0")

D = uuid.UUID("00000000-0000-4000-8000-0000000000d1")  # the defaults' UUID
EPOCH = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)


def seen(x: Any) -> Any:
    """`x` as its function saw it: "TYPE:VALUE" for a scalar (a datetime's isoformat, a UUID's
    str), {"list": [...]} and {"dict": {...}} for containers, item by item."""
    if isinstance(x, list):
        return {"list": [seen(v) for v in x]}
    if isinstance(x, dict):
        return {"dict": {k: seen(v) for k, v in x.items()}}
    if isinstance(x, (datetime.datetime, datetime.date, datetime.time)):
        return f"{type(x).__name__}:{x.isoformat()}"
    if x is None:
        return "NoneType"
    return f"{type(x).__name__}:{x}"


@svc.api
def single(id: uuid.UUID, at: datetime.datetime) -> list:
    return [seen(id), seen(at)]


@svc.api
def lists(ids: list[uuid.UUID], rows: list[dict[str, uuid.UUID]], events: list[dict[str, datetime.datetime]]) -> list:
    return [seen(ids), seen(rows), seen(events)]


@svc.api
def maps(stamps: dict[str, datetime.datetime], owners: dict[str, uuid.UUID], mixed: dict[str, uuid.UUID | int]) -> list:
    return [seen(stamps), seen(owners), seen(mixed)]


@svc.api
def optional(
    id: uuid.UUID | None,
    at: Optional[datetime.datetime],  # noqa: UP045 (the spellings the SDK maps, each)
    ids: list[uuid.UUID] | None,
    stamps: typing.Union[dict[str, datetime.datetime], None],  # noqa: UP007
) -> list:
    return [seen(id), seen(at), seen(ids), seen(stamps)]


@svc.api
def defaults(
    id: uuid.UUID = D,
    at: datetime.datetime = EPOCH,
    ids: list[uuid.UUID] = [D],  # noqa: B006 (never mutated: the gateway sends the default)
    stamps: dict[str, datetime.datetime] = {"from": EPOCH},  # noqa: B006
    maybe: uuid.UUID | None = D,
    gone: uuid.UUID | None = None,
    n: int = 3,
) -> list:
    return [seen(id), seen(at), seen(ids), seen(stamps), seen(maybe), seen(gone), seen(n)]


@svc.api(response_type="sync", timeout=5000, check_permission="any_authenticated")
def kinds(
    id: uuid.UUID,
    at: datetime.datetime,
    name: str,
    n: int,
    ratio: float,
    flag: bool,
    tags: list[str],
    scores: list[float],
    ids: list[uuid.UUID],
    rows: list[dict],
    mixed: list,
    meta: dict[str, Any],
    anything: Any,
    maybe: int | None,
    limit: int = 10,
) -> dict:
    """Every type family the SDK maps, in one signature (what a gateway's validator checks)."""
    return {
        "id": seen(id),
        "at": seen(at),
        "name": seen(name),
        "n": seen(n),
        "ratio": seen(ratio),
        "flag": seen(flag),
        "tags": seen(tags),
        "scores": seen(scores),
        "ids": seen(ids),
        "rows": seen(rows),
        "mixed": seen(mixed),
        "meta": seen(meta),
        "anything": seen(anything),
        "maybe": seen(maybe),
        "limit": seen(limit),
    }


@svc.api
async def inline(ids: list[uuid.UUID], at: datetime.datetime) -> list:
    """An `async def` that never suspends: the node runs it inline, not in a thread."""
    return [seen(ids), seen(at)]


@svc.api(response_type="stream")
async def each(ids: list[uuid.UUID]) -> AsyncIterator[Any]:
    for i in ids:
        yield seen(i)


@svc.api(check_permission="any_authenticated")
def info(id: uuid.UUID, flag: bool = True, request_info: dict | None = None) -> list:
    """request_info is appended after the arguments: it is never converted."""
    return [seen(id), seen(flag), seen(request_info)]


@svc.api(
    arg_types={"x": {"type": "any", "allow_nil": True}, "day": "string", "at": "naive_datetime"},
    arg_orders=["x", "day", "at"],
)
def explicit(x: list[uuid.UUID] | dict[str, uuid.UUID] | None, day: datetime.date, at: datetime.datetime) -> list:
    """Explicit arg_types leave the annotations to the function: the node still rebuilds what
    they ask (a union of containers, a date sent as a string, a naive datetime)."""
    return [seen(x), seen(day), seen(at)]


@svc.api
def whole(n: int, ns: list[int], maybe: int | None = None) -> list:
    """`int` parameters: the gateway checks only that each is a number (`num`); the node refuses
    a fraction and passes a whole float as the int."""
    return [seen(n), seen(ns), seen(maybe)]
