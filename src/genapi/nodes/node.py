"""A service node's runtime: the RPC listener that runs a `Service`'s declared functions for
gateways (`_core/host.pyx`: every call runs there), and the pushers that keep each gateway's
copy of its configs current.
"""

from __future__ import annotations

import asyncio
import datetime
import inspect
import os
import typing
import uuid
from collections.abc import Callable
from typing import Any

from genapi import log
from genapi._core.handoff import ThreadPool
from genapi._core.host import FunctionHost
from genapi.host.control_client import ControlClient
from genapi.nodes import rpc

PUSH_TIMEOUT_S = 10.0
_CONVERTED = (uuid.UUID, datetime.datetime, datetime.date, datetime.time)


def _needs_convert(annotation: Any) -> bool:
    """Types msgpack does not carry as themselves (a UUID arrives as str, a naive datetime as str)."""
    if annotation in _CONVERTED:
        return True
    return any(_needs_convert(a) for a in typing.get_args(annotation))


def converters(fn: Callable[..., Any]) -> list[tuple[int, Any]]:
    """(position, annotation) of each parameter whose value is rebuilt from its wire form."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        return []
    out = []
    for i, name in enumerate(inspect.signature(fn).parameters):
        ann = hints.get(name)
        if ann is not None and _needs_convert(ann):
            out.append((i, ann))
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
            level = log.error if exc.code in (rpc.REFUSED, rpc.AUTH_FAILED) else log.warning
            level("config_push_failed", gateway=gateway, service=service.name, code=exc.code, error=exc.text)
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
    host, port = rpc.split_address(listen) if not listen.endswith(":0") else (listen.rpartition(":")[0], 0)
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
