"""Rate limits: `[rate_limiter]` compiled for the request path, the shared table's life, and
their runtime control (status, reset, add or remove a global limit, replace the whole config).

PhoenixGenApi's sliding windows: global limits apply to every request, per-API limits to one
(service, request_type); each counts per value of its `key` (`user_id`, `device_id`,
`ip_address`, or an argument's name); a request is counted only if every limit allows it.
genapi differs: the counters live in one shared-memory table (`_core/ratelimit.pyx`) that every
worker of the host maps, so a limit of L per window admits L across all workers, never L + 1.
The per-request check is compiled (`_core/limits.pyx`) and runs in the one request path.

`RateLimits` is the single-host rate-limit store: it implements `engine.limits.RateLimitStore`.
Limits of `scope = "cluster"` (`[engine] type = "redis"`) are not in the table: they are counted
in Redis by `engine.cluster_limits.ClusterLimiter`, which `RateLimits` configures beside it, and
the control verbs (status, reset) act on both.
"""

from __future__ import annotations

from typing import Any

import msgspec
import xxhash

from genapi import telemetry
from genapi._core.limits import RequestLimiter
from genapi._core.ratelimit import Table, unlink
from genapi.config import ApiLimit, EngineSettings, GlobalLimit, RateLimiterSettings
from genapi.engine.cluster_limits import ClusterLimiter, ClusterRule
from genapi.engine.limits import RateLimitStore
from genapi.errors import ConfigError
from genapi.host.snapshot import default_path

FIXED_KEYS = ("user_id", "device_id", "ip_address")


def table_path(host: str, port: int) -> str:
    """Beside the config snapshot: one table per listening address."""
    return default_path(host, port).rsplit(".", 1)[0] + ".ratelimit"


def limit_id(limit: GlobalLimit | ApiLimit) -> int:
    """Stable across workers and restarts: the limit's own words. A changed limit counts anew."""
    scope = f"{limit.service}|{limit.request_type}" if isinstance(limit, ApiLimit) else "*"
    return xxhash.xxh3_64_intdigest(f"{scope}|{limit.key}|{limit.max_requests}|{limit.window_ms}".encode()) or 1


def limits_wanted(cfg: RateLimiterSettings) -> bool:
    """A table is made only for a config with limits: a gateway without any reserves no shared memory."""
    return cfg.enabled and bool(cfg.global_limits or cfg.api_limits)


def ring_for(cfg: RateLimiterSettings) -> int:
    """Admissions each key remembers: the largest max_requests the table must count exactly
    (of the host's limits: a cluster limit's log is in Redis)."""
    limits: list[GlobalLimit] = [*cfg.global_limits, *cfg.api_limits]
    return max([cfg.max_requests_cap, *(lim.max_requests for lim in limits if lim.scope == "host")])


def _rule(limit: GlobalLimit) -> tuple[int, str, int, int]:
    return (limit_id(limit), limit.key, limit.max_requests, limit.window_ms)


class RateLimits(RateLimitStore):
    """The single-host store: one process's view of the host's shared table, and the compiled
    limiter configured from `settings`."""

    def __init__(
        self, settings: RateLimiterSettings, table: Table, engine: EngineSettings | None = None, host_id: str = ""
    ) -> None:
        self.table = table
        self.settings = settings
        self._limiter = RequestLimiter(table, settings.fail_open)
        # the cluster limits' half, with the redis engine (None: every limit is the host's)
        self.cluster = ClusterLimiter(engine, host_id) if engine is not None and engine.type == "redis" else None
        self.apply(settings)

    @property
    def limiter(self) -> RequestLimiter:
        return self._limiter

    @classmethod
    def create(
        cls, settings: RateLimiterSettings, path: str, engine: EngineSettings | None = None, host_id: str = ""
    ) -> RateLimits:
        """The owner (the master, or a lone worker) makes the table; ConfigError when it cannot."""
        ring = ring_for(settings)
        try:
            table = Table.create(path, slots=settings.table_slots, ring=ring)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"[rate_limiter]: cannot create the shared rate-limit table {path} "
                f"({settings.table_slots} slots x {ring} admissions x 8 bytes): {exc}; lower "
                "table_slots or max_requests_cap, or set enabled = false"
            ) from None
        return cls(settings, table, engine, host_id)

    @classmethod
    def open(
        cls, settings: RateLimiterSettings, path: str, engine: EngineSettings | None = None, host_id: str = ""
    ) -> RateLimits:
        """A worker maps its master's table."""
        return cls(settings, Table.open(path), engine, host_id)

    def apply(self, settings: RateLimiterSettings) -> None:
        """Takes a whole new config at once (refused, naming the limit, when the table cannot count it)."""
        ring = self.table.ring
        every: list[GlobalLimit] = [*settings.global_limits, *settings.api_limits]
        clustered = [lim for lim in every if lim.scope == "cluster"]
        if clustered and self.cluster is None:
            raise ConfigError(
                f'[rate_limiter] limit {clustered[0].key}: scope = "cluster" counts across hosts in Redis; this '
                'gateway runs without it ([engine] type = "memory"): set [engine] type = "redis" and restart'
            )
        too_big = [lim for lim in every if lim.scope == "host" and lim.max_requests > ring]
        if too_big:
            raise ConfigError(
                f"[rate_limiter] limit {too_big[0].key}: max_requests {too_big[0].max_requests} "
                f"is over what the running table counts ({ring}, the largest max_requests or "
                "max_requests_cap at start); raise max_requests_cap and restart"
            )
        api: dict[tuple[str, str], list[tuple[int, str, int, int]]] = {}
        for lim in settings.api_limits:
            if lim.scope == "host":
                api.setdefault((lim.service, lim.request_type), []).append(_rule(lim))
        host_globals = [_rule(g) for g in settings.global_limits if g.scope == "host"]
        self._limiter.configure(settings.enabled, settings.fail_open, host_globals, api)
        if self.cluster is not None:
            self.cluster.configure(
                settings.enabled,
                settings.fail_open,
                [
                    ClusterRule(
                        limit_id(lim),
                        lim.key,
                        lim.max_requests,
                        lim.window_ms,
                        (lim.service, lim.request_type) if isinstance(lim, ApiLimit) else None,
                    )
                    for lim in clustered
                ],
            )
            self._limiter.set_cluster(self.cluster if self.cluster.enabled else None)
        self.settings = settings

    def config(self) -> dict[str, Any]:
        return msgspec.to_builtins(self.settings)

    def update(self, raw: Any) -> RateLimiterSettings:
        """`update_config`: the whole config replaced (validated first)."""
        try:
            settings = msgspec.convert(raw, RateLimiterSettings)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"[rate_limiter]: {exc}") from None
        settings = msgspec.structs.replace(
            settings, table_slots=self.settings.table_slots, max_requests_cap=self.settings.max_requests_cap
        )
        self.apply(settings)
        return settings

    def add_global(self, raw: Any) -> RateLimiterSettings:
        """A global limit more (one on the same key is replaced)."""
        try:
            limit = msgspec.convert(raw, GlobalLimit)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"global limit: {exc}") from None
        kept = [g for g in self.settings.global_limits if g.key != limit.key]
        settings = msgspec.structs.replace(self.settings, global_limits=[*kept, limit])
        self.apply(settings)
        return settings

    def remove_global(self, key: str) -> RateLimiterSettings:
        kept = [g for g in self.settings.global_limits if g.key != key]
        if len(kept) == len(self.settings.global_limits):
            raise ConfigError(f"no global limit on key {key!r}")
        settings = msgspec.structs.replace(self.settings, global_limits=kept)
        self.apply(settings)
        return settings

    def _limits_on(self, key: str, service: str | None, request_type: str | None) -> list[GlobalLimit]:
        """The host-scope limits on `key` (global, or of one function)."""
        if service is None:
            return [g for g in self.settings.global_limits if g.key == key and g.scope == "host"]
        return [
            a
            for a in self.settings.api_limits
            if a.key == key and a.service == service and a.request_type == request_type and a.scope == "host"
        ]

    def status(
        self, key: str, value: str, service: str | None = None, request_type: str | None = None
    ) -> list[dict[str, Any]]:
        """`rl_status`: for each limit on `key` (global, or of one function), the value's use."""
        out = []
        for lim in self._limits_on(key, service, request_type):
            st = self.table.status(f"{key}:{value}", limit_id(lim), lim.max_requests, lim.window_ms)
            out.append(
                {
                    "key": key,
                    "value": value,
                    "service": service,
                    "request_type": request_type,
                    "max_requests": lim.max_requests,
                    "window_ms": lim.window_ms,
                    **st,
                }
            )
        return out

    def reset(self, key: str, value: str) -> int:
        """Forgets `value`'s use under every host limit on `key`: how many counters were freed."""
        freed = int(self.table.reset(f"{key}:{value}"))
        telemetry.execute("genapi.rate_limiter.reset", {"freed": freed}, {"key": value, "rate_limit_key": key})
        return freed

    @property
    def shared(self) -> bool:
        return self.cluster is not None

    async def status_all(
        self, key: str, value: str, service: str | None = None, request_type: str | None = None
    ) -> list[dict[str, Any]]:
        """`status` with the cluster limits' rows (`"scope": "cluster"`) after the host's (theirs as
        Redis holds them)."""
        rows = self.status(key, value, service, request_type)
        if self.cluster is not None:
            rows += await self.cluster.status(key, value, service, request_type)
        return rows

    async def reset_all(self, key: str, value: str) -> int:
        """`reset` on this host's table and, on every host, the cluster limits' logs."""
        freed = self.reset(key, value)
        if self.cluster is not None:
            freed += await self.cluster.reset(key, value)
        return freed

    def close(self, owner: bool = False) -> None:
        path = self.table.path
        self.table.close()
        if owner:
            unlink(path)
        self._limiter.set_cluster(None)

    async def aclose(self, owner: bool = False) -> None:
        """`close`, and the cluster limits' connections closed."""
        self.close(owner)
        if self.cluster is not None:
            await self.cluster.close()
