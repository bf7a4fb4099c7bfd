"""A service node's runtime: the RPC listener that runs a `Service`'s declared functions for
gateways (`_core/host.pyx`: every call runs there), and the pushers that keep each gateway's
copy of its configs current.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import inspect
import json
import os
import types
import typing
import uuid
from collections.abc import Callable
from typing import Any

import msgspec

from genapi import log
from genapi._core.handoff import ThreadPool
from genapi._core.host import FunctionHost
from genapi.address import parse_address
from genapi.errors import ArgumentError
from genapi.host.control_client import ControlClient
from genapi.nodes import rpc

PUSH_TIMEOUT_S = 10.0
# Types msgpack does not carry as themselves: a UUID arrives as its string; a datetime the
# gateway's validator parsed arrives as a msgpack timestamp (a datetime again, in UTC), but one
# inside a map or a naive one as its ISO string; a date or time (explicit arg_types) as a string.
_CONVERTED = (uuid.UUID, datetime.datetime, datetime.date, datetime.time)
_UNIONS = (typing.Union, types.UnionType)

# One converted parameter: (position, wire, convert, name). The host rebuilds args[position] with
# convert(value) when type(value) is wire (str for a UUID or datetime, list or dict for a container
# of them); a value of any other type (None, a datetime that arrived as one) is already right.
# wire is ANY_WIRE when the annotation's values come in several wire types (a union of them):
# then convert takes every value but None.
ANY_WIRE = object
Converter = tuple[int, type, Callable[[Any], Any], str]


def _needs_convert(annotation: Any) -> bool:
    """Whether a value of `annotation` holds a type msgpack does not carry as itself, at any depth."""
    try:
        if annotation in _CONVERTED:
            return True
    except TypeError:  # an annotation object that refuses comparison: not one of them
        return False
    return any(_needs_convert(a) for a in typing.get_args(annotation))


def _wire_type(annotation: Any) -> type | None:
    """The type a value of `annotation` arrives as when it needs rebuilding, or None."""
    if annotation in _CONVERTED:
        return str
    origin = typing.get_origin(annotation)
    if origin is list or origin is dict:
        return origin
    return None


def converter(annotation: Any) -> tuple[type, Callable[[Any], Any]] | None:
    """(wire, convert) for a parameter annotated `annotation`, or None when its values arrive as
    the annotation asks (every str, int, float, bool, list, dict and Any the SDK maps, when they
    hold no UUID or datetime). `X | None`: None is passed as it is."""
    if not _needs_convert(annotation):
        return None
    if typing.get_origin(annotation) in _UNIONS:
        wires = {_wire_type(a) for a in typing.get_args(annotation) if a is not type(None) and _needs_convert(a)}
    else:
        wires = {_wire_type(annotation)}
    known = {w for w in wires if w is not None}
    if len(known) < len(wires):  # a shape msgspec would build (a tuple, a class): not a wire form of ours
        return None
    try:
        msgspec.json.Decoder(annotation)  # msgspec can build it; refused types stay as they arrive
    except TypeError:
        return None
    wire = known.pop() if len(known) == 1 else ANY_WIRE
    return wire, functools.partial(msgspec.convert, type=annotation)


def _whole(name: str, value: Any) -> int:
    """A float for an `int` parameter: a whole one (2.0, as JSON clients send 2 from JavaScript,
    where no number is an int) becomes the int; one with a fraction (2.5) is refused, in the
    gateway's words for a wrong type. The gateway's `num` takes either (the SDK maps `int` to it)."""
    if value.is_integer():
        return int(value)
    raise ArgumentError(
        f"invalid argument type for {json.dumps(name)}, expected :num (a whole number: the function "
        f"takes an int), got {value!r}"
    )


def _whole_items(name: str, value: list[Any]) -> list[Any]:
    """The items of a `list[int]` parameter, each as `_whole` takes a float (an int stays)."""
    if not any(type(v) is float for v in value):
        return value
    out = []
    for i, v in enumerate(value):
        if type(v) is float:
            if not v.is_integer():
                raise ArgumentError(
                    f"invalid item in list_num argument {json.dumps(name)}: expected a whole number "
                    f"(the function takes list[int]), got {v!r} at index {i}"
                )
            v = int(v)
        out.append(v)
    return out


def int_converter(annotation: Any, name: str) -> tuple[type, Callable[[Any], Any]] | None:
    """(wire, convert) for a parameter annotated `int`, `int | None`, `list[int]` or
    `list[int] | None`: the gateway checks only that such a value is a number (`num`), so the
    node refuses a fraction itself (the gateway tells the client, as for its own types)."""
    if typing.get_origin(annotation) in _UNIONS:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) != 1:
            return None
        annotation = members[0]
    if annotation is int:
        return float, functools.partial(_whole, name)
    if typing.get_origin(annotation) is list and typing.get_args(annotation) == (int,):
        return list, functools.partial(_whole_items, name)
    return None


def converters(fn: Callable[..., Any]) -> list[Converter]:
    """The converters of `fn`'s parameters that need one, computed once when the node builds its
    host: a parameter that needs none costs nothing per call. An annotation that cannot be
    resolved (explicit arg_types leave the annotations unchecked) converts nothing."""
    globalns = getattr(inspect.unwrap(fn), "__globals__", {})
    out: list[Converter] = []
    for i, p in enumerate(inspect.signature(fn).parameters.values()):
        if p.annotation is p.empty:
            continue
        try:
            holder = types.SimpleNamespace(__annotations__={p.name: p.annotation})
            annotation = typing.get_type_hints(holder, globalns=globalns)[p.name]
        except Exception:
            continue
        found = converter(annotation) or int_converter(annotation, p.name)
        if found is not None:
            out.append((i, found[0], found[1], p.name))
    return out


async def push_forever(
    service: Any, gateway: str, advertised: list[str], secret: bytes | None, force: bool = False
) -> None:
    """Pushes the Service's configs to one gateway, and again whenever that gateway comes back
    (the connection is kept open to notice). Failures are logged and retried with backoff."""
    delay = 0.5
    name = f"{service.name}@{advertised[0]}"
    while True:
        try:
            async with ControlClient(gateway, secret, name=name, timeout_s=PUSH_TIMEOUT_S) as control:
                answer = await control.push(service.push_config(advertised), force)
                log.info(
                    "config_pushed",
                    gateway=gateway,
                    service=service.name,
                    config_version=service.config_version,
                    status=answer.get("status"),
                )
                delay = 0.5
                await control.gone
                log.warning("gateway_lost", gateway=gateway, note="will push again when it is back")
        except rpc.RpcError as exc:
            level = log.error if exc.code in (rpc.REFUSED, rpc.AUTH_FAILED, rpc.PROTOCOL) else log.warning
            level(
                "config_push_failed",
                gateway=gateway,
                service=service.name,
                code=exc.code,
                error=exc.text,
                retry_in_s=delay,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never a silent end: whatever it was is said, and the push retried
            log.error(
                "config_push_failed",
                gateway=gateway,
                service=service.name,
                error=f"{type(exc).__name__}: {exc}",
                retry_in_s=delay,
                exc_info=exc,
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)


async def serve(
    service: Any,
    listen: str,
    gateways: list[str],
    *,
    advertise: str | None = None,
    secret: str | None = None,
    force: bool = False,
    threads: int = 32,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Runs a service node until SIGINT/SIGTERM: listens on `listen` ("host:port"; port 0 picks
    one), pushes to every gateway, answers calls. `advertise` is the address gateways call
    (default: the listening address)."""
    import signal

    key = rpc.secret_from(secret)
    host, port = parse_address(listen, "--listen", port=7001, listen=True)
    for gateway in gateways:
        parse_address(gateway, "--gateway")
    if advertise is not None:
        parse_address(advertise, "--advertise", port=7001)
    host = rpc.loopback_only(host, key, "service node")
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(log.loop_exception)
    pool = ThreadPool(threads, 1000)
    holder: list[str] = []
    host_obj = FunctionHost(service, holder, pool, converters)
    sock = rpc.listening_socket(host, port)
    server = await rpc.listen(sock, key, f"{service.name}@{listen}", host_obj)
    bound = sock.getsockname()
    address = advertise or f"{bound[0]}:{bound[1]}"
    holder.append(address)
    pushers = [asyncio.ensure_future(push_forever(service, g, holder, key, force)) for g in gateways]
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "service_node_ready", service=service.name, address=address, pid=os.getpid(), functions=len(host_obj.functions)
    )
    if ready is not None:
        ready(address)
    await stop.wait()
    for p in pushers:
        p.cancel()
    server.close()
    pool.shutdown()
