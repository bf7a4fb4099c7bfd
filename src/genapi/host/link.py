"""A worker's end of the master–worker pipe (its messages: `host/pipe.py`)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from genapi import log
from genapi.config import ConfigError
from genapi.host import pipe
from genapi.host.snapshot import SnapshotError, SnapshotReader, default_path
from genapi.host.view import MasterHost
from genapi.relay.seats import PipeRelay

if TYPE_CHECKING:
    from genapi.gateway.worker import Gateway


class MasterLink:
    """A worker's pipe to its master: config generations in (loaded, then acknowledged), drain
    in, relay-group operations out and their answers and deliveries in; EOF means the master is
    gone, and the worker drains and exits."""

    def __init__(self, sock: socket.socket, gateway: Gateway, stop: asyncio.Event, drain: list[float]) -> None:
        self.sock = sock
        self.gateway = gateway
        self.stop = stop
        self.drain = drain
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.snapshots = SnapshotReader(default_path(gateway.settings.gateway.host, gateway.settings.gateway.port))
        self.seats = gateway.seats
        self.relay = PipeRelay(self._write)
        self.host = MasterHost(self._write)
        self.task: asyncio.Task[None] | None = None
        self.out: list[bytes] = []  # lines written this turn of the loop, sent together by `_flush`

    def _write(self, line: bytes) -> None:
        """Queues one line: the lines of one turn of the loop (the relay operations of one read
        batch, say) reach the master in one write, in order."""
        if self.writer is not None and not self.writer.is_closing():
            if not self.out:
                asyncio.get_running_loop().call_soon(self._flush)
            self.out.append(line)

    def _flush(self) -> None:
        out, self.out = self.out, []
        if out and self.writer is not None and not self.writer.is_closing():
            self.writer.write(out[0] if len(out) == 1 else b"".join(out))

    async def start(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(sock=self.sock, limit=2**24)
        self.seats.link = self.relay
        while True:  # the first generation, before serving
            message = await self._next()
            if message is None:
                raise SystemExit(0)  # the master went away before we served
            if message is not _INVALID:
                _HANDLERS[type(message)](self, message)
                if type(message) is pipe.Generation:
                    break
        self.task = asyncio.ensure_future(self._read())

    async def _next(self) -> Any:
        """The next message; None at EOF, `_INVALID` for a line that is none (logged)."""
        assert self.reader is not None
        line = await self.reader.readline()
        if not line:
            return None
        try:
            return pipe.decode_to_worker(line)
        except msgspec.DecodeError as exc:
            pipe.invalid("worker", self.gateway.index, line, exc)
            return _INVALID

    async def _read(self) -> None:
        """Every line until EOF (`_next` inlined: a relay delivery per line is the hot path)."""
        assert self.reader is not None
        readline, decode, handlers = self.reader.readline, pipe.decode_to_worker, _HANDLERS
        while True:
            line = await readline()
            if not line:
                log.warning("master_gone", pid=os.getpid(), note="draining and exiting")
                self.relay.lost()
                self.stop.set()
                return
            try:
                message = decode(line)
            except msgspec.DecodeError as exc:
                pipe.invalid("worker", self.gateway.index, line, exc)
                continue
            handlers[type(message)](self, message)

    # ------------------------------------------------------------------ handlers
    def _delivered(self, message: pipe.RelayDelivery) -> None:
        """A relayed message: its payload passed on as encoded."""
        self.seats.deliver(message.to, bytes(message.p))

    def _relay_answered(self, message: pipe.RelayAnswer) -> None:
        self.relay.answered(message)

    def _host_answered(self, message: pipe.HostAnswer) -> None:
        self.host.answered(message)

    def _collect(self, message: pipe.Collect) -> None:
        """The master gathers the host's metrics."""
        self._write(pipe.encode(pipe.Collected(message.seq, self.gateway.metrics_snapshot())))

    def _generation(self, message: pipe.Generation) -> None:
        """Loads config generation `gen` and acknowledges the generation served. Generations
        only move forward: one not newer than the one served is acknowledged again, never
        loaded. A delta is applied only to exactly its base generation; a worker serving
        another (it missed one) asks for the whole snapshot instead, so it never serves a
        table patched from the wrong generation."""
        started = time.perf_counter()
        gen, delta, have = message.gen, message.delta, self.gateway.generation
        if have and gen <= have:  # a delta the whole snapshot already overtook, or a repeat
            self._write(pipe.encode(pipe.Ack(have)))
            return
        if delta is not None:
            if delta.base != have:
                log.warning("config_delta_skipped", generation=gen, base=delta.base, serving=have)
                self._write(pipe.encode(pipe.Ack(have, whole=True)))
                return
            fresh = self.gateway.functions.apply(delta.put, delta.drop)
            changes, loaded = len(delta.put) + len(delta.drop), gen
        else:
            try:
                snap = self.snapshots.read(gen)
            except SnapshotError as exc:
                log.error("snapshot_unreadable", generation=gen, error=str(exc))
                return
            fresh = self.gateway.functions.load(snap.configs)
            changes, loaded = len(snap.configs), snap.generation
        self.gateway.generation = loaded
        self._write(pipe.encode(pipe.Ack(loaded)))
        log.info(
            "config_loaded",
            generation=loaded,
            **({"delta": changes} if delta is not None else {"functions": changes}),
            bound=fresh,
            ms=round((time.perf_counter() - started) * 1000, 3),
        )

    def _limits(self, message: pipe.Limits) -> None:
        limits = self.gateway.limits
        if limits is not None:
            try:
                limits.update(message.config)
            except (ConfigError, ValueError) as exc:
                log.error("rate_limits_not_applied", error=str(exc))
        self._write(pipe.encode(pipe.LimitsAck(message.seq)))

    def _drain(self, message: pipe.Drain) -> None:
        self.drain[0] = message.seconds
        self.stop.set()

    def _settings(self, message: pipe.Settings) -> None:
        """Settings come once, before the worker is built (`run_worker`); again is a mistake."""
        log.warning("pipe_message_unexpected", side="worker", index=self.gateway.index, message="settings")

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self._flush()
        if self.writer is not None:
            self.writer.close()


_INVALID: Any = object()  # a line that decoded to no message (already logged)

# what each message from the master does (MasterLink method, called with the message); every
# type of pipe.ToWorker has its row
_HANDLERS: dict[type[Any], Callable[[MasterLink, Any], None]] = {
    pipe.RelayDelivery: MasterLink._delivered,
    pipe.RelayAnswer: MasterLink._relay_answered,
    pipe.HostAnswer: MasterLink._host_answered,
    pipe.Collect: MasterLink._collect,
    pipe.Generation: MasterLink._generation,
    pipe.Limits: MasterLink._limits,
    pipe.Drain: MasterLink._drain,
    pipe.Settings: MasterLink._settings,
}
