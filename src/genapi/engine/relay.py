"""The relay authority: what orders relay-group operations and fans out their deliveries, and
what a worker's seats need from it.

Two seams. `RelayLink` is a worker's way to the authority (`Seats.link`): `LocalRelay` when the
worker holds it itself (`--workers 1`), `PipeRelay` when its master does (`seats.py`).
`RelayAuthority` is the authority as its holder (the master, over every worker's pipe) uses
it; `MemoryAuthority` is today's single-host one, the host's `Groups` in this process. Both
answer through a callback, so an authority that answers later (one a store shared by several
hosts orders) is an addition beside these, not a change to their users: `RedisAuthority`
(`engine/relay_redis.py`, `[engine] type = "redis"`) is that one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from genapi.errors import RelayError

if TYPE_CHECKING:  # relay/seats.py imports this seam: a runtime import of relay/ would be a cycle
    from genapi.relay.groups import Groups, Place

Done = Callable[[Any], None]
"""Gets an operation's result, or the RelayError refusing it."""


class RelayLink(Protocol):
    """A worker's way to the relay authority."""

    def ask(self, op: str, args: dict[str, Any], token: int | None, done: Done) -> None:
        """Operation `op` (`groups.py`'s names and arguments), for the member seated at this
        worker's seat `token` (or none); `done` gets its answer, before any delivery it caused."""
        ...

    def gone(self, tokens: list[int]) -> None:
        """These seats of the worker are gone: their members leave their groups."""
        ...


class RelayAuthority(Protocol):
    """Orders the relay-group operations of a host's places and fans out their deliveries
    (to the `Deliver` callback it was built with)."""

    def ask(self, op: str, args: Any, place: Place | None, done: Done) -> None:
        """Applies `op` in arrival order for a member at `place`; `done` gets the answer (a
        result, or the RelayError to answer with: never a raise), then the deliveries go."""
        ...

    def drop_places(self, worker: int, tokens: Iterable[int]) -> None:
        """Seats closed on `worker`: their members leave their groups."""
        ...

    def drop_worker(self, worker: int) -> None:
        """`worker` died: every member seated there leaves its groups."""
        ...

    def stats(self) -> dict[str, Any]:
        """Groups, members, messages relayed and deliveries sent (for /metrics)."""
        ...

    def start(self) -> None:
        """Called in the running loop before the first operation."""
        ...

    async def aclose(self) -> None:
        """Called on the way out, after the host's connections closed."""
        ...


class MemoryAuthority:
    """The single-host authority: the host's `Groups`, in this process, answered at once."""

    def __init__(self, groups: Groups) -> None:
        self.groups = groups

    def ask(self, op: str, args: Any, place: Place | None, done: Done) -> None:
        got: dict[str, Any] | RelayError = self.groups.answer(op, args, place)
        done(got)
        self.groups.flush()  # after the answer: a sender reads it before its own copy

    def drop_places(self, worker: int, tokens: Iterable[int]) -> None:
        self.groups.drop_places(worker, tokens)

    def drop_worker(self, worker: int) -> None:
        self.groups.drop_worker(worker)

    def stats(self) -> dict[str, Any]:
        return self.groups.stats()

    def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass
