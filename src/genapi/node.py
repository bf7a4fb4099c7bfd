"""A service node's runtime: the RPC listener that runs a `Service`'s declared functions for
gateways, and the pushers that keep each gateway's copy of its configs current.

Only functions the Service declared ever run (a call names its function by the `mfa` the SDK
gave it). `async def` functions run on the loop (inline when they finish without suspending),
plain ones in a thread pool, generators stream with flow control: a stream sends at most
`rpc.STREAM_WINDOW` chunks ahead of what the gateway has granted. A CANCEL from the gateway (its
client left, disconnected, or the deadline passed) cancels the function: a Task is cancelled, a
generator closed, a thread's result dropped.
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

import msgspec

from . import log, rpc
from ._core.handoff import ThreadPool
from .calls import resume
from .loader import ASYNC, ASYNCGEN, GEN, SYNC, kind_of

GEN_BURST = 64       # items a plain generator yields per thread job
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


class _Running:
    """A call in progress on this node: what cancelling it means."""

    __slots__ = ("credit", "future", "granted", "task")

    def __init__(self) -> None:
        self.task: asyncio.Future[Any] | None = None
        self.future: asyncio.Future[Any] | None = None
        self.credit = rpc.STREAM_WINDOW
        self.granted: asyncio.Event | None = None

    def cancel(self) -> None:
        for f in (self.task, self.future):
            if f is not None and not f.done():
                f.cancel()
        if self.granted is not None:
            self.granted.set()


class FunctionHost:
    """The RPC handler of a node: runs the Service's functions, and answers the gateway's pulls
    (`$config`, `$config_version`) and pings."""

    def __init__(self, service: Any, advertised: list[str], pool: ThreadPool) -> None:
        self.service = service
        self.advertised = advertised
        self.pool = pool
        self.functions: dict[str, Callable[..., Any]] = dict(service.functions)
        self.kinds = {t: kind_of(fn) for t, fn in self.functions.items()}
        self.convert = {t: converters(fn) for t, fn in self.functions.items()}
        self.running: dict[tuple[int, int], _Running] = {}
        self.calls = 0

    # ----------------------------------------------------------------- rpc handler
    def call(self, peer: rpc.ServerPeer, cid: int, target: str, args: Any, timeout_ms: Any, stream: bool) -> None:
        fn = self.functions.get(target)
        if fn is None:
            if type(target) is str and target.startswith("$"):
                return self._builtin(peer, cid, target, args)
            return peer.error(cid, rpc.UNKNOWN, f"no function {target!r} on this node")
        if type(args) is not list:
            return peer.error(cid, rpc.PROTOCOL, "args must be a list")
        conv = self.convert[target]
        if conv:
            try:
                for i, ann in conv:
                    if i < len(args) and type(args[i]) is str:
                        args[i] = msgspec.convert(args[i], ann, strict=False)
            except msgspec.ValidationError as exc:
                return peer.error(cid, rpc.RAISED, f"ValidationError: {exc}")
        self.calls += 1
        kind = self.kinds[target]
        if stream:
            return self._track(peer, cid, self._stream(peer, cid, fn, kind, args))
        if kind == ASYNC:
            try:
                coro = fn(*args)
                pending = coro.send(None)
            except StopIteration as stop:
                return peer.result(cid, stop.value)
            except Exception as exc:
                return peer.error(cid, rpc.RAISED, f"{type(exc).__name__}: {exc}")
            return self._track(peer, cid, self._finish(peer, cid, resume(coro, pending)))
        if kind == SYNC:
            try:
                fut = self.pool.run(fn, *args)
            except Exception as exc:
                return peer.error(cid, rpc.RAISED, f"{type(exc).__name__}: {exc}")
            running = _Running()
            running.future = fut
            key = (id(peer), cid)
            self.running[key] = running
            fut.add_done_callback(lambda f: self._thread_done(peer, cid, key, f))
            return
        self._track(peer, cid, self._collect(peer, cid, fn, kind, args))

    def _thread_done(self, peer: rpc.ServerPeer, cid: int, key: tuple[int, int], fut: asyncio.Future[Any]) -> None:
        self.running.pop(key, None)
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is None:
            peer.result(cid, fut.result())
        else:
            peer.error(cid, rpc.RAISED, f"{type(exc).__name__}: {exc}")

    def _track(self, peer: rpc.ServerPeer, cid: int, coro: Any) -> None:
        running = _Running()
        key = (id(peer), cid)
        self.running[key] = running
        task = asyncio.ensure_future(self._guard(peer, cid, key, coro))
        running.task = task

    async def _guard(self, peer: rpc.ServerPeer, cid: int, key: tuple[int, int], coro: Any) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            peer.error(cid, rpc.RAISED, f"{type(exc).__name__}: {exc}")
        finally:
            self.running.pop(key, None)

    async def _finish(self, peer: rpc.ServerPeer, cid: int, rest: Any) -> None:
        peer.result(cid, await rest)

    async def _collect(self, peer: rpc.ServerPeer, cid: int, fn: Callable[..., Any], kind: int,
                       args: list[Any]) -> None:
        """A generator called for a one-shot answer: its items as a list."""
        if kind == ASYNCGEN:
            peer.result(cid, [item async for item in fn(*args)])
        else:
            peer.result(cid, await self.pool.run(lambda: list(fn(*args))))

    async def _stream(self, peer: rpc.ServerPeer, cid: int, fn: Callable[..., Any], kind: int,
                      args: list[Any]) -> None:
        running = self.running[(id(peer), cid)]
        if kind == ASYNCGEN:
            agen = fn(*args)
            try:
                async for item in agen:
                    await self._take(running)
                    peer.chunk(cid, item)
            finally:
                await agen.aclose()
        elif kind == GEN:
            gen = fn(*args)
            try:
                while True:
                    items, more = await self.pool.run(_burst, gen)
                    for item in items:
                        await self._take(running)
                        peer.chunk(cid, item)
                    if not more:
                        break
            finally:
                try:
                    await self.pool.run(gen.close)
                except Exception:
                    log.debug("stream_generator_close_skipped")
        else:  # a plain or async function declared as a stream: its result is the one chunk
            value = await fn(*args) if kind == ASYNC else await self.pool.run(fn, *args)
            peer.chunk(cid, value)
        peer.end(cid)

    async def _take(self, running: _Running) -> None:
        """Waits until the gateway has granted one more chunk."""
        while running.credit <= 0:
            if running.granted is None:
                running.granted = asyncio.Event()
            running.granted.clear()
            await running.granted.wait()
        running.credit -= 1

    def cancel(self, peer: rpc.ServerPeer, cid: int) -> None:
        running = self.running.pop((id(peer), cid), None)
        if running is not None:
            running.cancel()

    def credit(self, peer: rpc.ServerPeer, cid: int, n: int) -> None:
        running = self.running.get((id(peer), cid))
        if running is not None and type(n) is int and n > 0:
            running.credit += n
            if running.granted is not None:
                running.granted.set()

    def lost(self, peer: rpc.ServerPeer) -> None:
        """The gateway is gone: its calls stop here too."""
        pid = id(peer)
        for key in [k for k in self.running if k[0] == pid]:
            self.running.pop(key).cancel()

    def _builtin(self, peer: rpc.ServerPeer, cid: int, target: str, args: Any) -> None:
        if target == "$config":
            peer.result(cid, self.service.push_config(self.advertised))
        elif target == "$config_version":
            peer.result(cid, self.service.config_version)
        elif target == "$ping":
            peer.result(cid, "pong")
        else:
            peer.error(cid, rpc.UNKNOWN, f"no built-in {target!r} on a service node")


def _burst(gen: Any) -> tuple[list[Any], bool]:
    """In a thread: up to GEN_BURST items of `gen`, and whether it has more."""
    items = []
    for item in gen:
        items.append(item)
        if len(items) >= GEN_BURST:
            return items, True
    return items, False


async def push_forever(service: Any, gateway: str, advertised: list[str], secret: bytes | None,
                       force: bool = False) -> None:
    """Pushes the Service's configs to one gateway, and again whenever that gateway comes back
    (the connection is kept open to notice). Failures are logged and retried with backoff."""
    delay = 0.5
    name = f"{service.name}@{advertised[0]}"
    while True:
        try:
            peer = await rpc.connect(gateway, secret, name)
            try:
                answer = await peer.request("$push", [service.push_config(advertised), force], PUSH_TIMEOUT_S)
                log.info("config_pushed", gateway=gateway, service=service.name,
                         config_version=service.config_version, status=answer.get("status"))
                delay = 0.5
                await peer.gone
                log.warning("gateway_lost", gateway=gateway, note="will push again when it is back")
            finally:
                peer.close()
        except rpc.RpcError as exc:
            level = log.error if exc.code in (rpc.REFUSED, rpc.AUTH_FAILED) else log.warning
            level("config_push_failed", gateway=gateway, service=service.name, code=exc.code, error=exc.text)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)


async def serve(service: Any, listen: str, gateways: list[str], *, advertise: str | None = None,
                secret: str | None = None, force: bool = False, threads: int = 32,
                ready: Callable[[str], None] | None = None) -> None:
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
    host_obj = FunctionHost(service, holder, pool)
    sock = rpc.listening_socket(host, port)
    server = await rpc.listen(sock, key, f"{service.name}@{listen}", host_obj)
    bound = sock.getsockname()
    address = advertise or f"{bound[0]}:{bound[1]}"
    holder.append(address)
    pushers = [asyncio.ensure_future(push_forever(service, g, holder, key, force)) for g in gateways]
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("service_node_ready", service=service.name, address=address, pid=os.getpid(),
             functions=len(host_obj.functions))
    if ready is not None:
        ready(address)
    await stop.wait()
    for p in pushers:
        p.cancel()
    server.close()
    pool.shutdown()
