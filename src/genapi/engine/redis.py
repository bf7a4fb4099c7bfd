"""The Redis engine's connections (`[engine] type = "redis"`): redis-py's asyncio client with hiredis
parsing replies, built from `[engine]` (url, timeouts), and the host's probe of the server (up or
down, each episode logged once) that `/ready`, `/metrics` and `genapi admin status` show.

A process holds a few long-lived connections (`client`: one per purpose, each a pool that a
purpose uses one at a time), never one per request: what the request path sends goes in one
script call per loop iteration (`engine/cluster_limits.py`). redis-py retries nothing here: a
failed command is answered at once (per `fail_open` for rate limits), and the next attempt is
the next batch's.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from genapi import log
from genapi.config import EngineSettings
from genapi.errors import ConfigError


def _redis() -> Any:
    try:
        import redis.asyncio
    except ImportError:
        raise ConfigError(
            '[engine] type = "redis" needs redis-py: pip install "genapi-gateway[redis]" (redis-py with hiredis)'
        ) from None
    return redis.asyncio


def client(engine: EngineSettings, *, blocking: bool = False) -> Any:
    """A redis-py asyncio client of `engine.url`; commands time out after command_timeout_ms
    (`blocking`: none, for a pub/sub connection that waits for messages)."""
    ra = _redis()
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    assert engine.url is not None
    return ra.Redis.from_url(
        engine.url,
        socket_connect_timeout=engine.connect_timeout_ms / 1000,
        socket_timeout=None if blocking else engine.command_timeout_ms / 1000,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0 if not blocking else 30,
    )


def errors() -> tuple[type[BaseException], ...]:
    """What a command to an unreachable or failing server raises."""
    ra = _redis()
    return (ra.RedisError, OSError, asyncio.TimeoutError)


def redacted(url: str | None) -> str:
    """The url without its password (for logs and status)."""
    if not url or "@" not in url:
        return url or ""
    scheme, _, rest = url.partition("://")
    auth, _, where = rest.rpartition("@")
    user = auth.split(":", 1)[0]
    return f"{scheme}://{user + ':' if user else ':'}***@{where}"


class EngineProbe:
    """The host's view of the Redis server: a PING every `interval_s` (and whenever asked),
    `reachable` or not since when; each outage is logged once when it starts and once when it
    ends, with how long it lasted."""

    def __init__(self, engine: EngineSettings, host_id: str, interval_s: float = 1.0) -> None:
        self.engine = engine
        self.host_id = host_id
        self.interval_s = interval_s
        self.redis: Any = None
        self.reachable = True
        self.since = time.time()
        self.episodes = 0  # outages seen
        self.last_error: str | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self.redis = client(self.engine)
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self.ping()
            await asyncio.sleep(self.interval_s)

    async def ping(self) -> bool:
        try:
            await self.redis.ping()
        except errors() as exc:
            self.went(False, f"{type(exc).__name__}: {exc}")
        else:
            self.went(True)
        return self.reachable

    def went(self, up: bool, error: str | None = None) -> None:
        if up == self.reachable:
            return
        now = time.time()
        if up:
            log.warning(
                "engine_reachable",
                url=redacted(self.engine.url),
                host_id=self.host_id,
                down_s=round(now - self.since, 3),
            )
        else:
            self.episodes += 1
            self.last_error = error
            log.error("engine_unreachable", url=redacted(self.engine.url), host_id=self.host_id, error=error)
        self.reachable = up
        self.since = now

    def state(self) -> dict[str, Any]:
        """For /ready and `genapi admin status`."""
        return {
            "type": "redis",
            "url": redacted(self.engine.url),
            "prefix": self.engine.prefix,
            "host_id": self.host_id,
            "reachable": self.reachable,
            "since": self.since,
            "outages": self.episodes,
            "last_error": self.last_error,
        }

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self.redis is not None:
            await self.redis.aclose()
