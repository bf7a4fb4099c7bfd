"""The rate-limit store: what admits or refuses a request against all of its limits at once, and
what the control port's rate-limit verbs need (status, reset, config, update, add or remove a
global limit).

The implementation is `host.ratelimit.RateLimits`: a shared-memory table (`_core/ratelimit.pyx`)
that every worker of the host maps, checked per request by the compiled
`_core.limits.RequestLimiter`, for limits of `scope = "host"`; limits of `scope = "cluster"` are
counted in Redis (`engine/cluster_limits.py`), checked after the host's, batched per loop
iteration, by the requests they count (the others pay nothing for them).
"""

from __future__ import annotations

from typing import Any, Protocol

from genapi.config import RateLimiterSettings
from genapi.structs import Response


class Admission(Protocol):
    """The per-request step (the dispatcher calls `check` on every request while `enabled`)."""

    @property
    def enabled(self) -> bool: ...

    @property
    def refused(self) -> int:
        """Requests this process refused (for /metrics)."""
        ...

    def check(self, request: Any, identity: Any) -> Response | None:
        """None to go on, or the refusal Response; a request is counted only if every limit
        that applies to it admits it (all checked and recorded in one step)."""
        ...


class RateLimitStore(Protocol):
    """Where the limits' counters live and how the control verbs change them."""

    settings: RateLimiterSettings

    @property
    def limiter(self) -> Admission:
        """The per-request step over this store."""
        ...

    def apply(self, settings: RateLimiterSettings) -> None:
        """Takes a whole new config at once (ConfigError when the store cannot count it)."""
        ...

    def config(self) -> dict[str, Any]:
        """`rl_config`: the config in force, JSON-ready."""
        ...

    def update(self, raw: Any) -> RateLimiterSettings:
        """`update_config`: the whole config replaced (validated first)."""
        ...

    def add_global(self, raw: Any) -> RateLimiterSettings:
        """A global limit more (one on the same key is replaced)."""
        ...

    def remove_global(self, key: str) -> RateLimiterSettings:
        """The global limit on `key` removed (ConfigError when there is none)."""
        ...

    def status(
        self, key: str, value: str, service: str | None = None, request_type: str | None = None
    ) -> list[dict[str, Any]]:
        """`rl_status`: for each limit on `key` (global, or of one function), the value's use."""
        ...

    def reset(self, key: str, value: str) -> int:
        """Forgets `value`'s use under every limit on `key`: how many counters were freed."""
        ...

    @property
    def shared(self) -> bool:
        """Some limits live beyond this host (`scope = "cluster"`): use the `_all` verbs."""
        ...

    async def status_all(
        self, key: str, value: str, service: str | None = None, request_type: str | None = None
    ) -> list[dict[str, Any]]:
        """`status`, with the rows of the limits shared by every host."""
        ...

    async def reset_all(self, key: str, value: str) -> int:
        """`reset`, and the shared limits' use forgotten on every host."""
        ...

    def close(self, owner: bool = False) -> None:
        """Lets go of the store (`owner`: the process that made it removes it too)."""
        ...
