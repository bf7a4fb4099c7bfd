"""The master of `genapi serve --workers N`: N worker processes share one port, the master keeps
them alive and in step. It serves no client: it owns the authoritative registry, the control
port (pushes, verify, the CLI), the pull loop and the workers.

Each worker binds the port itself with SO_REUSEPORT (the kernel spreads connections over them);
the master only holds the port (bound, not listening, so it never takes a connection). On every
registry change the master makes a new generation (`snapshot.py`) and announces it on each
worker's pipe with what changed since the last one (a delta: the configs put and the keys
dropped); a worker serving the delta's base generation applies it in one step and
acknowledges, so a push returns once every live worker serves it. The whole registry goes
to shared memory only when a worker needs it whole: a (re)started worker loads it before it
accepts a connection, a worker that missed a delta asks for it (`Ack` with `whole`), and a
large change is published whole.

The pipe is a socketpair per worker; its messages (settings first, config generations and
their acks, rate limits, drain, metrics and the host's view, relay operations, answers and
deliveries) are declared in `host/pipe.py`, each dispatched here by its type through one table
(`_HANDLERS`). A worker whose master is gone (EOF) drains and exits, so a killed master leaves
no orphans.

The master is also the relay groups' authority (`engine/relay.py`, `relay/groups.py`): workers
send each operation up their pipe and say when members' seats go; the master applies them in
order, answers, and sends each worker holding receivers one delivery, the relayed message
encoded once. A dead worker's members leave their groups. With `[engine] type = "redis"` the
authority is `RedisAuthority` (`engine/relay_redis.py`): Redis orders the operations of every
host and the master delivers what it hears from Redis to its workers the same way.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec

from genapi import log
from genapi.config import ConfigError, Settings
from genapi.engine.relay import MemoryAuthority, RelayAuthority
from genapi.errors import RelayError
from genapi.host import dashboard, metrics, pipe
from genapi.host.control import ControlPlane
from genapi.host.pipe import DELIVERY_END, DELIVERY_HEAD, DELIVERY_MID
from genapi.host.snapshot import Delta, Ident, SnapshotWriter, default_path
from genapi.host.view import engine_view
from genapi.relay.groups import Groups
from genapi.request.bind import Functions
from genapi.structs import FunConfig

ACK_TIMEOUT_S = 5.0
RELAY_PIPE_MAX_BYTES = 64 * 1024 * 1024  # relayed messages a worker may have unread on its pipe
RESTART_WINDOW_S = 10.0  # crashes within this window count towards a crash loop
CRASH_LOOP = 3  # this many crashes in the window: restart with backoff
BACKOFF_MAX_S = 30.0


class WorkerHandle:
    """One worker process as the master sees it: its process, its pipe, what it acknowledged."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.pipe: socket.socket | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.acked = 0
        self.limits_acked = 0
        self.greeted = False  # it has read its settings: the pipe may carry more
        self.acks: dict[int, asyncio.Future[None]] = {}
        self.crashes: list[float] = []
        self.restarts = 0  # times this worker was restarted after dying
        self.relay_dropped = 0  # relay deliveries dropped while its pipe was full
        self.relay_to: tuple[list[int] | None, bytes] = (None, b"")  # the last seat tokens sent, encoded
        self.out: list[bytes] = []  # lines written this turn of the loop, sent together by `_flush`
        self.out_bytes = 0
        self.restart_at = 0.0
        self.task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send(self, message: pipe.ToWorker) -> None:
        self.write(pipe.encode(message))

    def write(self, line: bytes) -> None:
        """Queues one line: the lines of one turn of the loop (a burst of relayed messages, say)
        reach the worker in one write, in order."""
        if self.writer is not None and not self.writer.is_closing():
            if not self.out:
                asyncio.get_running_loop().call_soon(self._flush)
            self.out.append(line)
            self.out_bytes += len(line)

    def _flush(self) -> None:
        out, self.out, self.out_bytes = self.out, [], 0
        if out and self.writer is not None and not self.writer.is_closing():
            self.writer.write(out[0] if len(out) == 1 else b"".join(out))

    def backlog(self) -> int:
        """Bytes written to the pipe that the worker has not read yet."""
        return self.out_bytes + (self.writer.transport.get_write_buffer_size() if self.writer is not None else 0)


class Master:
    """Spawns, watches and restarts the workers; publishes config; drains on SIGTERM."""

    def __init__(
        self, settings: Settings, workers: int, control_sock: socket.socket | None, drain_timeout: float, banner: str
    ) -> None:
        self.settings = settings
        self.count = workers
        self.control_sock = control_sock
        self.drain_timeout = drain_timeout
        self.banner = banner
        gw = settings.gateway
        self.snapshots = SnapshotWriter(default_path(gw.host, gw.port))
        # the master's composition root: the authoritative registry (binding validates a push;
        # nothing here calls a function, so no thread pool or seats), the rate-limit table every
        # worker maps, the relay groups (the host's one authority), then the control plane
        self.functions = Functions.checked(settings)
        self.functions.registry.record()  # each broadcast publishes what changed since the last
        self.limits = None
        from genapi.host.ratelimit import limits_wanted

        if limits_wanted(settings.rate_limiter):  # the one table every worker maps
            from genapi.host.ratelimit import RateLimits, table_path

            self.limits = RateLimits.create(
                settings.rate_limiter, table_path(gw.host, gw.port), settings.engine, settings.engine.host_name(gw.port)
            )
        self.probe = None  # the host's view of Redis, with [engine] type = "redis" (started in `run`)
        if settings.engine.type == "redis":
            from genapi.engine.redis import EngineProbe

            self.probe = EngineProbe(settings.engine, settings.engine.host_name(gw.port))
        self.groups = Groups(settings.relay, self._deliver)
        self.relay: RelayAuthority = MemoryAuthority(self.groups)  # the host's one relay authority
        if settings.engine.type == "redis":  # relay groups shared with the other hosts, ordered by Redis
            from genapi.engine.relay_redis import RedisAuthority

            self.relay = RedisAuthority(
                settings.relay, settings.engine, settings.engine.host_name(gw.port), self._deliver
            )
        self.control = ControlPlane(
            self.functions,
            settings,
            on_change=self.broadcast,
            limits=self.limits,
            on_limits=self.broadcast_limits,
            relay=self.relay,
            inspect=self.inspect,
        )
        self.limits_seq = 0
        self.workers = [WorkerHandle(i) for i in range(workers)]
        self._collect_seq = 0
        self._collecting: dict[tuple[int, int], asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self.stopping = False
        self.settings_line = pipe.encode(pipe.Settings(settings))  # every (re)started worker's first line

    # ----------------------------------------------------------------- running
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(log.loop_exception)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        if self.probe is not None:
            self.probe.start()
        self.relay.start()
        try:
            self._publish()  # the first generation: written whole
            for w in self.workers:
                await self._spawn(w)
            await self._wait_acked(self.snapshots.generation, time.monotonic() + 30)
            await self.control.start(self.control_sock)
            print(f"{self.banner} control on {self.control.address or '-'}", flush=True)
            log.info("master_ready", pid=os.getpid(), workers=[w.pid for w in self.workers])
            watcher = asyncio.ensure_future(self._watch())
            await stop.wait()
            watcher.cancel()
            await self._drain()
        finally:
            self.snapshots.close()
            await self.relay.aclose()
            if self.limits is not None:
                await self.limits.aclose(owner=True)
            if self.probe is not None:
                await self.probe.close()
        return 0

    async def _spawn(self, w: WorkerHandle) -> None:
        """Starts worker `w`: its pipe, its process, then its settings and the current generation."""
        ours, theirs = socket.socketpair()
        env = {**os.environ, "GENAPI_WORKER_FD": str(theirs.fileno()), "GENAPI_WORKER_INDEX": str(w.index)}
        w.proc = subprocess.Popen(
            [sys.executable, "-c", "from genapi.gateway.worker import run_worker; run_worker()"],
            pass_fds=[theirs.fileno()],
            env=env,
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        w.pipe = ours
        w.reader, w.writer = await asyncio.open_connection(sock=ours, limit=2**24)
        w.acked = 0
        w.greeted = False
        w.write(self.settings_line)
        w.task = asyncio.ensure_future(self._read_acks(w, w.reader))
        log.info("worker_started", index=w.index, pid=w.pid)

    async def _read_acks(self, w: WorkerHandle, reader: asyncio.StreamReader) -> None:
        """The worker's hello (it has read its settings: the pipe is free for more), then every
        message it sends, each to its handler (`_HANDLERS`)."""
        try:
            hello = await asyncio.wait_for(reader.readline(), 60)
        except TimeoutError:
            hello = b""
        try:
            greeted = type(pipe.decode_to_master(hello)) is pipe.Hello
        except msgspec.DecodeError as exc:
            if hello:
                pipe.invalid("master", w.index, hello, exc)
            greeted = False
        if not greeted:
            log.error("worker_start_failed", index=w.index, pid=w.pid)
            if w.proc is not None and w.alive():
                w.proc.kill()  # the watcher restarts it
            return
        w.greeted = True
        if self.limits is not None and self.limits_seq:  # changed since start: the current limits first
            w.send(pipe.Limits(self.limits.config(), self.limits_seq))
        self._send_whole(w)
        decode, handlers = pipe.decode_to_master, _HANDLERS
        while True:
            line = await reader.readline()
            if not line:
                return
            try:
                message = decode(line)
            except msgspec.DecodeError as exc:
                pipe.invalid("master", w.index, line, exc)
                continue
            handlers[type(message)](self, w, message)

    # ------------------------------------------------------------------ a worker's messages
    def _send_whole(self, w: WorkerHandle) -> None:
        """The current generation to worker `w` whole: written to shared memory first if it
        went out as a delta (a new or restarted worker, or one that missed a delta). A write
        that fails is logged and nothing is sent: the worker serves nothing newer, and /ready
        names it behind."""
        try:
            gen = self.snapshots.flush()
        except OSError as exc:
            log.error("snapshot_write_failed", index=w.index, pid=w.pid, path=self.snapshots.path, error=str(exc))
            return
        w.send(pipe.Generation(gen))

    def _acked(self, w: WorkerHandle, message: pipe.Ack) -> None:
        """Worker `w` serves config generation `gen`: whoever waits for it may go on. One that
        could not apply a delta (`whole`) is sent the current generation whole."""
        if message.whole:
            log.warning("config_delta_refused", index=w.index, pid=w.pid, serving=message.gen)
            self._send_whole(w)
        gen = message.gen
        w.acked = max(w.acked, gen)
        for g in [g for g in w.acks if g <= gen]:
            fut = w.acks.pop(g)
            if not fut.done():
                fut.set_result(None)

    def _limits_acked(self, w: WorkerHandle, message: pipe.LimitsAck) -> None:
        w.limits_acked = max(w.limits_acked, message.seq)

    def _collected(self, w: WorkerHandle, message: pipe.Collected) -> None:
        fut = self._collecting.get((w.index, message.seq))
        if fut is not None and not fut.done():
            fut.set_result(message.metrics)

    def _host_asked(self, w: WorkerHandle, message: pipe.HostAsk) -> None:
        task = asyncio.ensure_future(self._host_view(w, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _relay_gone(self, w: WorkerHandle, message: pipe.RelayGone) -> None:
        if w.pid is not None:
            self.relay.drop_places(w.pid, message.seats)

    def _hello_again(self, w: WorkerHandle, message: pipe.Hello) -> None:
        log.warning("pipe_message_unexpected", side="master", index=w.index, message="hello")

    async def _host_view(self, w: WorkerHandle, message: pipe.HostAsk) -> None:
        """A worker serving GET /ready or /metrics asks for the whole host's view."""
        if message.what == "ready":
            out: Any = self.readiness()
        elif message.what == "dashboard":
            reading = not message.args or message.args[0] == "state"  # an action needs no metrics
            snapshots = await self.collect() if reading else []
            out = await dashboard.answer(self.control, snapshots, self.relay.stats(), message.args)
        else:
            out = metrics.render(
                await self.collect(),
                {
                    "generation": self.snapshots.generation,
                    "restarts": self.restarts(),
                    "relay": self.relay.stats(),
                    **engine_view(self.probe),
                },
            )
        w.send(pipe.HostAnswer(message.id, out))

    def readiness(self) -> dict[str, Any]:
        """Ready: every worker alive, greeted and on the current config generation."""
        gen = self.snapshots.generation
        live = [w for w in self.workers if w.alive() and w.greeted]
        behind = [w.index for w in live if w.acked < gen]
        ready = len(live) == self.count and not behind and not self.stopping
        out = {"ready": ready, "workers": self.count, "live": len(live), "generation": gen, "behind": behind}
        return {**out, **engine_view(self.probe)}

    async def collect(self, timeout_s: float = 2.0) -> list[dict[str, Any]]:
        """Every live worker's metrics snapshot (those that answer within `timeout_s`)."""
        self._collect_seq += 1
        seq = self._collect_seq
        loop = asyncio.get_running_loop()
        futs = []
        for w in self.workers:
            if w.alive() and w.greeted:
                fut = self._collecting[(w.index, seq)] = loop.create_future()
                futs.append(fut)
                w.send(pipe.Collect(seq))
        if futs:
            await asyncio.wait(futs, timeout=timeout_s)
        for w in self.workers:
            self._collecting.pop((w.index, seq), None)
        return [f.result() for f in futs if f.done() and isinstance(f.result(), dict)]

    def restarts(self) -> int:
        return sum(w.restarts for w in self.workers)

    async def inspect(self) -> dict[str, Any]:
        """The host for `genapi admin status|nodes`: each worker as the master sees it, with
        what only the worker knows (connections, node links) from its metrics snapshot."""
        snaps = {s.get("index"): s for s in await self.collect()}
        workers = []
        for w in self.workers:
            snap = snaps.get(w.index, {})
            workers.append(
                {
                    "index": w.index,
                    "pid": w.pid,
                    "alive": w.alive(),
                    "ready": w.alive() and w.greeted,
                    "generation": w.acked,
                    "restarts": w.restarts,
                    "recent_crashes": len(w.crashes),
                    "connections": snap.get("connections"),
                    "in_flight": snap.get("in_flight"),
                    "nodes": snap.get("nodes", []),
                    **({"cluster_limits": snap["cluster_limits"]} if "cluster_limits" in snap else {}),
                }
            )
        return {
            "generation": self.snapshots.generation,
            "restarts": self.restarts(),
            "workers": workers,
            **engine_view(self.probe),
        }

    def _relay(self, w: WorkerHandle, message: pipe.RelayAsk) -> None:
        """A relay-group operation from worker `w`: applied in arrival order (so a sender's
        messages reach everyone in the order sent), answered, then its deliveries sent."""
        rid, seat = message.id, message.seat

        def answer(got: Any) -> None:
            w.send(
                pipe.RelayAnswer(rid, err=got.code, text=got.text, retry=got.can_retry)
                if isinstance(got, RelayError)
                else pipe.RelayAnswer(rid, got)
            )

        self.relay.ask(message.op, message.args, (w.pid, seat) if seat is not None and w.pid else None, answer)

    def _deliver(self, pid: int, tokens: list[int], payload: bytes) -> None:
        """One relayed message to worker `pid`'s seats `tokens`; dropped (counted, logged) while
        that worker is not reading its pipe, so a stuck worker cannot grow the master."""
        for w in self.workers:
            if w.pid == pid and w.writer is not None:  # a dead worker's pipe is closed by the watcher
                if w.backlog() > RELAY_PIPE_MAX_BYTES:
                    if not w.relay_dropped:
                        log.warning(
                            "relay_worker_slow",
                            index=w.index,
                            pid=pid,
                            backlog_bytes=w.backlog(),
                            note="relayed messages to its members are dropped until it catches up",
                        )
                    w.relay_dropped += len(tokens)
                    return
                if w.relay_dropped:
                    log.warning("relay_worker_caught_up", index=w.index, pid=pid, dropped=w.relay_dropped)
                    w.relay_dropped = 0
                last, encoded = w.relay_to
                if tokens is not last:  # a group's tokens are one list until its members change
                    encoded = _encode(tokens)
                    w.relay_to = (tokens, encoded)
                w.write(DELIVERY_HEAD + encoded + DELIVERY_MID + payload + DELIVERY_END)
                return

    async def _wait_acked(self, gen: int, deadline: float) -> list[int]:
        """Waits until every live worker acknowledged `gen` (or the deadline); the indexes that did not."""
        loop = asyncio.get_running_loop()
        waits = []
        for w in self.workers:
            if w.alive() and w.acked < gen:
                fut = w.acks.get(gen)
                if fut is None:
                    fut = w.acks[gen] = loop.create_future()
                waits.append(fut)
        if waits:
            await asyncio.wait(waits, timeout=max(deadline - time.monotonic(), 0))
        return [w.index for w in self.workers if w.alive() and w.acked < gen]

    async def broadcast(self) -> dict[str, Any]:
        """Publishes the registry and returns once every live worker serves it (or ACK_TIMEOUT_S)."""
        started = time.perf_counter()
        delta = self._publish()
        gen = self.snapshots.generation
        line = pipe.encode(pipe.Generation(gen, delta))  # encoded once for every worker
        for w in self.workers:
            if w.alive() and w.greeted:  # one still starting gets the newest generation after its hello
                w.write(line)
        missing = await self._wait_acked(gen, time.monotonic() + ACK_TIMEOUT_S)
        ms = round((time.perf_counter() - started) * 1000, 3)
        if missing:
            log.warning("config_not_acknowledged", generation=gen, workers=missing, timeout_s=ACK_TIMEOUT_S)
        else:
            log.info("config_broadcast", generation=gen, functions=len(self.functions.registry), ms=ms)
        return {"generation": gen, "workers": sum(w.alive() for w in self.workers), "missing": missing, "ms": ms}

    def _publish(self) -> Delta | None:
        """The registry as the next generation: what changed since the last one (the keys the
        registry says changed, so a push of one function among 10 000 costs one), or None when
        it was written whole (the first, a large change)."""
        registry = self.functions.registry
        keys = registry.changes()
        if keys is None:  # swapped whole: every config compared
            return self.snapshots.advance(registry.configs())

        def held(ident: Ident) -> FunConfig | None:
            item = registry.item(*ident)
            return item[0] if item is not None else None

        return self.snapshots.advance_keys(keys, held)

    async def broadcast_limits(self, config: dict[str, Any]) -> dict[str, Any]:
        """Rate-limit config changed in the master: every worker applies it; returns once they
        acknowledged (or ACK_TIMEOUT_S, naming those that did not)."""
        self.limits_seq += 1
        seq = self.limits_seq
        for w in self.workers:
            if w.alive() and w.greeted:
                w.send(pipe.Limits(config, seq))
        deadline = time.monotonic() + ACK_TIMEOUT_S
        while time.monotonic() < deadline and any(
            w.alive() and w.greeted and w.limits_acked < seq for w in self.workers
        ):
            await asyncio.sleep(0.005)
        missing = [w.index for w in self.workers if w.alive() and w.limits_acked < seq]
        return {"workers": sum(w.alive() for w in self.workers), "missing": missing}

    async def _watch(self) -> None:
        """Restarts a dead worker within a second, with backoff when it keeps crashing."""
        while not self.stopping:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            for w in self.workers:
                if w.proc is None or w.alive() or self.stopping:
                    continue
                if w.restart_at == 0.0:
                    code = w.proc.returncode
                    w.crashes = [t for t in w.crashes if now - t < RESTART_WINDOW_S] + [now]
                    delay = 0.0
                    if len(w.crashes) >= CRASH_LOOP:
                        delay = min(2.0 ** (len(w.crashes) - CRASH_LOOP), BACKOFF_MAX_S)
                        log.error(
                            "worker_crash_loop",
                            index=w.index,
                            pid=w.pid,
                            exit=code,
                            crashes=len(w.crashes),
                            window_s=RESTART_WINDOW_S,
                            restart_in_s=delay,
                        )
                    else:
                        log.warning("worker_exited", index=w.index, pid=w.pid, exit=code)
                    w.restart_at = now + delay
                    self._close_pipe(w)
                    w.restarts += 1
                    if w.pid is not None:
                        self.relay.drop_worker(w.pid)
                if now >= w.restart_at:
                    w.restart_at = 0.0
                    await self._spawn(w)

    def _close_pipe(self, w: WorkerHandle) -> None:
        if w.task is not None:
            w.task.cancel()
        if w.writer is not None:
            w.writer.close()
        w.writer = w.reader = None
        w.out, w.out_bytes = [], 0  # its unsent lines go with it, never to the worker started next
        for fut in w.acks.values():
            if not fut.done():
                fut.set_result(None)
        w.acks.clear()

    async def reload(self) -> None:
        """SIGHUP: re-reads the config file's functions and broadcasts them (pushed ones stay)."""
        from genapi.config import load

        source = self.settings.source
        try:
            fresh = load(None if source == "<embedded default>" else source)
            old = [(c.service, c.request_type, c.version) for c in self.settings.functions]
            self.functions.replace(old, self.control.keep_disabled(fresh.functions))
        except (ConfigError, ValueError) as exc:
            log.error("config_reload_failed", source=source, error=str(exc))
            return
        self.settings = msgspec.structs.replace(self.settings, functions=fresh.functions)
        result = await self.broadcast()
        log.warning("config_reloaded", source=source, functions=len(fresh.functions), generation=result["generation"])

    async def _drain(self) -> None:
        """SIGTERM: no more pushes; every worker drains (in-flight calls finish up to the drain
        timeout, then its clients are closed with 1001 in batches) and exits."""
        self.stopping = True
        await self.control.stop()
        for w in self.workers:
            if w.alive() and w.greeted:
                w.send(pipe.Drain(self.drain_timeout))
            elif w.alive() and w.proc is not None:
                w.proc.terminate()  # still starting: it serves nothing yet
        deadline = time.monotonic() + self.drain_timeout + 10
        while any(w.alive() for w in self.workers) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for w in self.workers:
            if w.alive() and w.proc is not None:
                log.warning("worker_killed", index=w.index, pid=w.pid, reason="did not drain in time")
                w.proc.kill()
                w.proc.wait()
            self._close_pipe(w)
        log.info("master_stopped", pid=os.getpid())


_encode = msgspec.json.Encoder().encode

# what each message from a worker does (Master method, called with the worker and the message);
# every type of pipe.ToMaster has its row
_HANDLERS: dict[type[Any], Callable[[Master, WorkerHandle, Any], None]] = {
    pipe.RelayAsk: Master._relay,
    pipe.RelayGone: Master._relay_gone,
    pipe.Ack: Master._acked,
    pipe.LimitsAck: Master._limits_acked,
    pipe.Collected: Master._collected,
    pipe.HostAsk: Master._host_asked,
    pipe.Hello: Master._hello_again,
}
