"""A worker's end of the master–worker pipe."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import msgspec

from genapi import log
from genapi.config import ConfigError
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

    def _write(self, line: bytes) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(line)

    async def start(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(sock=self.sock, limit=2**24)
        self.seats.link = self.relay
        while True:  # the first generation, before serving
            message = await self._next()
            if message is None:
                raise SystemExit(0)  # the master went away before we served
            if self._handle(message) == "gen":
                break
        self.task = asyncio.ensure_future(self._read())

    async def _next(self) -> dict[str, Any] | None:
        assert self.reader is not None
        line = await self.reader.readline()
        if not line:
            return None
        try:
            if line.startswith(b'{"rd":'):  # a relayed message: its payload stays encoded
                d = _decode_delivery(line)
                self.seats.deliver(d.rd, bytes(d.p))
                return {}
            message = json.loads(line)
        except (ValueError, msgspec.ValidationError):
            log.warning("master_message_invalid", line=line[:200])
            return {}
        return message if isinstance(message, dict) else {}

    def _handle(self, message: dict[str, Any]) -> str | None:
        if "rr" in message:
            self.relay.answered(message)
            return "relay"
        if "collect" in message:  # the master gathers the host's metrics
            self._write(
                msgspec.json.encode({"collected": message["collect"], "m": self.gateway.metrics_snapshot()}) + b"\n"
            )
            return "collect"
        if "host_re" in message:
            self.host.answered(message)
            return "host"
        if isinstance(message.get("gen"), int):
            self._load(message["gen"])
            return "gen"
        if "limits" in message:
            limits = self.gateway.limits
            if limits is not None:
                try:
                    limits.update(message["limits"])
                except (ConfigError, ValueError) as exc:
                    log.error("rate_limits_not_applied", error=str(exc))
            self._write(json.dumps({"limits_ack": message.get("seq", 0)}).encode() + b"\n")
            return "limits"
        if "drain" in message:
            self.drain[0] = float(message["drain"])
            self.stop.set()
            return "drain"
        return None

    def _load(self, gen: int) -> None:
        started = time.perf_counter()
        try:
            snap = self.snapshots.read(gen)
        except SnapshotError as exc:
            log.error("snapshot_unreadable", generation=gen, error=str(exc))
            return
        fresh = self.gateway.functions.load(snap.configs)
        self.gateway.generation = snap.generation
        self._write(json.dumps({"ack": snap.generation}).encode() + b"\n")
        log.info(
            "config_loaded",
            generation=snap.generation,
            functions=len(snap.configs),
            bound=fresh,
            ms=round((time.perf_counter() - started) * 1000, 3),
        )

    async def _read(self) -> None:
        while True:
            message = await self._next()
            if message is None:
                log.warning("master_gone", pid=os.getpid(), note="draining and exiting")
                self.relay.lost()
                self.stop.set()
                return
            self._handle(message)

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.writer is not None:
            self.writer.close()


class _Delivery(msgspec.Struct):
    rd: list[int]
    p: msgspec.Raw


_decode_delivery = msgspec.json.Decoder(_Delivery).decode
