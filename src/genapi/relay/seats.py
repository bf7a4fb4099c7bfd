"""A worker's side of relay groups: seats (a client connection on one topic that is a member of
groups) and the delivery of relayed messages to them.

A seat is tracked by its connection like a running call (`Connection.track`), so leaving the
topic, joining it again or closing the connection vacates it, and the authority (`groups.py`,
in the master or in this process) is told that its memberships ended.

Deliveries arrive in batches (tokens of this worker's seats and the message, encoded once) and
are written on the next turn of the loop, after the answers that came with them (a sender
reads its answer before its own copy), corked so a connection gets one write per batch; that
loop, and the seats it reads, are compiled (`_core/fanout.pyx`). A seat whose connection is not
reading its output (the transport is over its high-water mark) gets nothing more until it
catches up: the relay's queue per member is that buffer, and what does not fit is dropped,
counted and logged.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable
from typing import Any

from genapi._core.connection import Connection
from genapi._core.fanout import Fanout, Seat
from genapi.engine.relay import Done, RelayAuthority, RelayLink
from genapi.errors import RelayError, relay_error
from genapi.host import pipe


class Seats(Fanout):
    """The seats of one worker and the link to the groups' authority; their deliveries are
    compiled (`_core/fanout.pyx`: `deliver`, `by_token`, `delivered`, `dropped`)."""

    def __init__(self) -> None:
        super().__init__()
        self.worker = os.getpid()
        self.link: RelayLink | None = None  # LocalRelay, or PipeRelay under a master
        self.by_place: dict[tuple[Connection, str], Seat] = {}
        self._tokens = itertools.count(1)
        self._gone: list[int] = []

    def seat(self, reply: Any) -> int | None:
        """The token of the seat of `reply`'s connection and topic (made on first use), marked
        as placed; None without a real connection."""
        conn = reply.conn
        if not isinstance(conn, Connection):
            return None
        key = (conn, reply.topic)
        s = self.by_place.get(key)
        if s is None:
            s = Seat(self, conn, reply.topic, next(self._tokens))
            self.by_place[key] = s
            self.by_token[s.token] = s
            conn.track(reply, s)
        s.placed = True
        return s.token

    def vacate(self, seat: Seat) -> None:
        self.by_token.pop(seat.token, None)
        self.by_place.pop((seat.conn, seat.topic), None)
        if seat.placed and self.link is not None:
            if not self._gone:  # a drain closes many at once: one message for them
                asyncio.get_running_loop().call_soon(self._send_gone)
            self._gone.append(seat.token)

    def _send_gone(self) -> None:
        gone, self._gone = self._gone, []
        if gone and self.link is not None:
            self.link.gone(gone)

    def stats(self) -> dict[str, int]:
        return {"seats": len(self.by_token), "delivered": self.delivered, "dropped": self.dropped}


class LocalRelay:
    """The link of a worker that holds the authority itself (`--workers 1`)."""

    def __init__(self, authority: RelayAuthority, seats: Seats) -> None:
        self.authority = authority
        self.seats = seats

    def ask(self, op: str, args: dict[str, Any], token: int | None, done: Done) -> None:
        self.authority.ask(op, args, None if token is None else (self.seats.worker, token), done)

    def gone(self, tokens: list[int]) -> None:
        self.authority.drop_places(self.seats.worker, tokens)


class PipeRelay:
    """The link of a worker under a master, the authority: operations go up the pipe in order
    (`pipe.RelayAsk`), answers (`pipe.RelayAnswer`) and deliveries come back on it.
    `write(bytes)` writes one line to the master."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self.write = write
        self.pending: dict[int, Done] = {}
        self._ids = itertools.count(1)

    def ask(self, op: str, args: dict[str, Any], token: int | None, done: Done) -> None:
        n = next(self._ids)
        self.pending[n] = done
        self.write(pipe.encode(pipe.RelayAsk(n, op, args, token)))

    def gone(self, tokens: list[int]) -> None:
        self.write(pipe.encode(pipe.RelayGone(tokens)))

    def answered(self, message: pipe.RelayAnswer) -> None:
        done = self.pending.pop(message.id, None)
        if done is None:
            return
        if message.err is not None:
            done(RelayError(message.err, str(message.text), message.retry))
        else:
            done(message.ok)

    def lost(self) -> None:
        """The master is gone: every waiting operation is refused."""
        pending, self.pending = self.pending, {}
        for done in pending.values():
            done(relay_error("unavailable"))
