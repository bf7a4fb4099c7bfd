"""The master–worker pipe: every message either end may send, declared once.

A socketpair per worker carries newline-delimited msgspec JSON, one message a line. Each
message is a tagged `Struct` (the tag in `"t"`, first on the line); `ToWorker` and `ToMaster`
are the two directions' unions, each with one encoder and one decoder. Each side dispatches a
decoded message by its type through one handler table (`Master`, `MasterLink`); a line that
does not decode is logged as `pipe_message_invalid` (`invalid`) and skipped, never fatal.

Master → worker: `Settings` (first, once), `Generation`, `Limits`, `Drain`, `Collect`,
`HostAnswer`, `RelayAnswer`, `RelayDelivery`. Worker → master: `Hello` (once, after its
settings: the pipe is free for more), `Ack`, `LimitsAck`, `Collected`, `HostAsk`, `RelayAsk`,
`RelayGone`.

A relayed message is passed on, never read, by the master and the worker: `RelayDelivery`
keeps it raw. The master encoded it once (`groups.py`) and frames each worker's line around it
with `DELIVERY_HEAD` / `DELIVERY_MID` / `DELIVERY_END` (the hot path: one line per relayed
message per worker); the worker decodes the line and hands the payload's bytes on as they are.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from genapi import log
from genapi.config import Settings as GatewaySettings
from genapi.host.snapshot import Delta


class _Message(msgspec.Struct, tag_field="t", omit_defaults=True):
    """A line on the pipe; `t` names its type."""


# ------------------------------------------------------------------ master → worker
class Settings(_Message, tag="settings"):
    """The worker's settings: the first line it reads, before it builds anything."""

    settings: GatewaySettings


class Generation(_Message, tag="gen"):
    """Config generation `gen` is published: load it, then `Ack` it. Without `delta` it is in
    shared memory, whole; with one, only what changed since generation `delta.base` comes on the
    pipe, applied by a worker serving exactly that generation (any other asks for the whole
    file: `Ack` with `whole`)."""

    gen: int
    delta: Delta | None = None


class Limits(_Message, tag="limits"):
    """The rate limits changed (`[rate_limiter]` as pushed): apply, then `LimitsAck` `seq`."""

    config: dict[str, Any]
    seq: int


class Drain(_Message, tag="drain"):
    """Stop accepting, let in-flight calls finish for up to `seconds`, close clients, exit."""

    seconds: float


class Collect(_Message, tag="collect"):
    """Send this worker's metrics snapshot (`Collected` `seq`)."""

    seq: int


class HostAnswer(_Message, tag="host_re"):
    """The answer to `HostAsk` `id`: the host's readiness (an object) or metrics (text)."""

    id: int
    out: Any


class RelayAnswer(_Message, tag="rr"):
    """The answer to `RelayAsk` `id`: its result `ok`, or the refusal `err` (a code) and `text`."""

    id: int
    ok: Any = None
    err: str | None = None
    text: str | None = None
    retry: bool = False  # the refusal's can_retry (the engine unreachable)


class RelayDelivery(_Message, tag="rd"):
    """A relayed message for this worker's seats `to`; `p` is the encoded Response, passed on raw."""

    to: list[int]
    p: msgspec.Raw


ToWorker = Settings | Generation | Limits | Drain | Collect | HostAnswer | RelayAnswer | RelayDelivery

# RelayDelivery as the master writes it (pre-framed, the payload not re-encoded):
#   DELIVERY_HEAD + json(tokens) + DELIVERY_MID + payload + DELIVERY_END
DELIVERY_HEAD = b'{"t":"rd","to":'
DELIVERY_MID = b',"p":'
DELIVERY_END = b"}\n"


# ------------------------------------------------------------------ worker → master
class Hello(_Message, tag="hello"):
    """The worker read its settings (it is process `pid`): the master may send more."""

    pid: int


class Ack(_Message, tag="ack"):
    """Config generation `gen` is loaded: the worker serves it. `whole`: it could not apply the
    delta it was sent (it serves another generation than the delta's base): the master writes
    the current generation whole and sends it as a `Generation` without delta."""

    gen: int
    whole: bool = False


class LimitsAck(_Message, tag="limits_ack"):
    """`Limits` `seq` is applied."""

    seq: int


class Collected(_Message, tag="collected"):
    """The answer to `Collect` `seq`: this worker's metrics snapshot."""

    seq: int
    metrics: dict[str, Any]


class HostAsk(_Message, tag="host"):
    """A worker serving GET /ready or /metrics asks for the whole host's view (`HostAnswer`)."""

    id: int
    what: Literal["ready", "metrics", "dashboard"]
    args: list[Any] = []  # "dashboard": [op, *args] (host/dashboard.py)


class RelayAsk(_Message, tag="relay"):
    """A relay-group operation for the authority (`RelayAnswer` `id`); `seat` is the acting
    connection's seat on this worker, for the operations that seat a member."""

    id: int
    op: str
    args: Any
    seat: int | None = None


class RelayGone(_Message, tag="relay_gone"):
    """These seats of the worker are gone: their members leave their groups."""

    seats: list[int]


ToMaster = Hello | Ack | LimitsAck | Collected | HostAsk | RelayAsk | RelayGone


# ------------------------------------------------------------------ encoding
_encoder = msgspec.json.Encoder()


def encode(message: _Message) -> bytes:
    """One line: `message` and its newline."""
    return _encoder.encode(message) + b"\n"


decode_to_worker = msgspec.json.Decoder(ToWorker).decode
"""A line the worker read; raises msgspec.DecodeError (malformed, unknown type, wrong fields)."""

decode_to_master = msgspec.json.Decoder(ToMaster).decode
"""A line the master read; raises msgspec.DecodeError (malformed, unknown type, wrong fields)."""


def invalid(side: str, index: int | None, line: bytes, error: Exception) -> None:
    """A line that is no message of its direction: logged, then skipped by the reader."""
    log.warning(
        "pipe_message_invalid", side=side, index=index, error=str(error), line=line[:200].decode(errors="replace")
    )
