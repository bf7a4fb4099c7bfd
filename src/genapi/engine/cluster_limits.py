"""Rate limits exact across hosts (`scope = "cluster"`): the same sliding log as the host's table,
kept in Redis, one sorted set of admission times per (limit, key value), the clock Redis `TIME`.

One Lua script (`CHECK`) takes a batch of requests; for each it checks every cluster limit that
applies and records in every one only if all admit (a refusal records nothing), answering the
refusing limit and its retry-after (from the entry that must leave the window). Each worker
sends one script call per loop iteration carrying every check pending in it (EVALSHA, loading
the script on NOSCRIPT), and while one call is out the next iteration's checks wait for it,
so a worker has at most one call in flight and never a round trip per request.

After a refusal the (limit, value) is refused here, without asking Redis, until its retry-after
(exact: a full log can only age, and nothing else frees it but a reset, which every worker hears
on the `<prefix>:rl:reset` channel). While Redis cannot be reached, checks are answered at once
per `fail_open` (admit, or "Rate limit service unavailable" with can_retry), counted, and the
outage logged once; the next attempt is the first batch a second later.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import time
from typing import Any

from genapi import log
from genapi.config import EngineSettings
from genapi.engine import redis as engine_redis
from genapi.errors import RATE_LIMIT_UNAVAILABLE, rate_limited
from genapi.structs import Response

RETRY_DOWN_S = 1.0  # after a failed call, checks are answered without Redis this long
REFUSALS_MAX = 65536  # (limit, value) refusals remembered locally

# Times are µs of Redis TIME (written with %.0f: Lua's own number format keeps 14 digits).
# KEYS: the logs of the batch. ARGV: a member tag unique to the call, the number of checks, then
# per check its number of limits k and k triples (KEYS index, max_requests, window_ms).
# Returns per check two integers: the index of the refusing limit (-1: admitted and recorded in
# every limit) and the retry-after in ms.
CHECK = """
local function s(x) return string.format('%.0f', x) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tag = ARGV[1]
local n = tonumber(ARGV[2])
local out = {}
local p = 3
for c = 1, n do
  local k = tonumber(ARGV[p])
  p = p + 1
  local base = p
  local refused, retry = -1, 0
  for j = 0, k - 1 do
    if refused < 0 then
      local key = KEYS[tonumber(ARGV[p])]
      local max = tonumber(ARGV[p + 1])
      local win = tonumber(ARGV[p + 2]) * 1000
      redis.call('ZREMRANGEBYSCORE', key, '-inf', s(now - win))
      local used = redis.call('ZCARD', key)
      if used >= max then
        local oldest = redis.call('ZRANGE', key, used - max, used - max, 'WITHSCORES')
        refused = j
        retry = math.ceil((tonumber(oldest[2]) + win - now) / 1000)
        if retry < 1 then retry = 1 end
      end
    end
    p = p + 3
  end
  if refused < 0 then
    for j = 0, k - 1 do
      local q = base + 3 * j
      local key = KEYS[tonumber(ARGV[q])]
      redis.call('ZADD', key, s(now), tag .. c)
      redis.call('PEXPIRE', key, tonumber(ARGV[q + 2]))
    end
  end
  out[2 * c - 1] = refused
  out[2 * c] = retry
end
return out
"""

# KEYS: the logs of one value under each limit; ARGV: per key its window_ms. Per key: the
# admissions in the window and the ms until the oldest of them leaves it.
STATUS = """
local function s(x) return string.format('%.0f', x) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i, key in ipairs(KEYS) do
  local win = tonumber(ARGV[i]) * 1000
  local used = redis.call('ZCOUNT', key, '(' .. s(now - win), '+inf')
  local resets = 0
  if used > 0 then
    local oldest = redis.call('ZRANGEBYSCORE', key, '(' .. s(now - win), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    resets = math.ceil((tonumber(oldest[2]) + win - now) / 1000)
  end
  out[2 * i - 1] = used
  out[2 * i] = resets
end
return out
"""


class ClusterRule:
    """One cluster limit: its id (the host table's words, `host.ratelimit.limit_id`), the key it
    counts by, its max and window, and where it applies (None: every request)."""

    __slots__ = ("api", "key", "limit_id", "max_requests", "window_ms")

    def __init__(
        self, limit_id: int, key: str, max_requests: int, window_ms: int, api: tuple[str, str] | None = None
    ) -> None:
        self.limit_id = limit_id
        self.key = key
        self.max_requests = max_requests
        self.window_ms = window_ms
        self.api = api


def _value(rule: ClusterRule, request: Any, identity: Any) -> str | None:
    key = rule.key
    if key == "user_id":
        return request.user_id
    if key == "device_id":
        return request.device_id
    if key == "ip_address":
        return identity.ip if identity is not None else None
    args = request.args
    value = args.get(key) if type(args) is dict else None
    return value if value is None or type(value) is str else str(value)


class ClusterLimiter:
    """The cluster limits of one process: the per-request check (batched, see the module's
    words), and the control verbs' status and reset."""

    def __init__(self, engine: EngineSettings, host_id: str) -> None:
        self.engine = engine
        self.host_id = host_id
        self.prefix = f"{engine.prefix}:rl:"
        self.channel = f"{engine.prefix}:rl:reset"
        self.enabled = False
        self.fail_open = True
        self.globals: list[ClusterRule] = []
        self.apis: dict[tuple[str, str], list[ClusterRule]] = {}
        self.redis: Any = None
        self.script: Any = None
        self.pending: list[tuple[list[tuple[str, ClusterRule, str]], asyncio.Future[Any], Any]] = []
        self.scheduled = False
        self.in_flight = False
        self.refusals: dict[str, float] = {}  # log key -> monotonic time it admits again
        self.up = True
        self.retry_at = 0.0
        self.down_since = 0.0
        self.unavailable_before = 0  # `unavailable` when the outage began
        self._tag = f"{host_id}:{os.getpid()}:"
        self._calls = itertools.count(1)
        self._listener: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # counters (for /metrics and `genapi admin status`)
        self.checks = 0  # requests checked against cluster limits
        self.refused = 0  # refused by a cluster limit (by Redis or locally)
        self.refused_locally = 0  # of those, refused without asking Redis
        self.unavailable = 0  # answered without Redis (per fail_open)
        self.calls = 0  # script calls sent
        self.outages = 0  # episodes of Redis unreachable, seen by this process's checks

    # ------------------------------------------------------------------ configuration
    def configure(self, enabled: bool, fail_open: bool, rules: list[ClusterRule]) -> None:
        self.globals = [r for r in rules if r.api is None]
        apis: dict[tuple[str, str], list[ClusterRule]] = {}
        for r in rules:
            if r.api is not None:
                apis.setdefault(r.api, []).append(r)
        self.apis = apis
        self.fail_open = fail_open
        self.enabled = enabled and bool(rules)
        self.refusals.clear()  # a changed limit counts anew

    def key_of(self, rule: ClusterRule, value: str) -> str:
        return f"{self.prefix}{rule.limit_id:x}:{rule.key}:{value}"

    def _connect(self) -> None:
        if self.redis is None:
            self.redis = engine_redis.client(self.engine)
            self.script = self.redis.register_script(CHECK)

    def start(self) -> None:
        """Listens for resets (from any host) on the reset channel: a worker's local refusals
        of that value are forgotten. Call from the process's event loop."""
        self._connect()
        if self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(self._listen())

    async def _listen(self) -> None:
        sub = engine_redis.client(self.engine, blocking=True)
        while True:
            pubsub = sub.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.refusals.clear()  # a reset may have gone unheard while unsubscribed
                async for message in pubsub.listen():
                    self._heard_reset(message.get("data"))
            except asyncio.CancelledError:
                await pubsub.aclose()
                await sub.aclose()
                raise
            except engine_redis.errors():
                await pubsub.aclose()
                await asyncio.sleep(RETRY_DOWN_S)

    def _heard_reset(self, data: Any) -> None:
        if not isinstance(data, bytes):
            return
        key, _, value = data.decode(errors="replace").partition("\0")
        for rule in [*self.globals, *(r for rules in self.apis.values() for r in rules)]:
            if rule.key == key:
                self.refusals.pop(self.key_of(rule, value), None)

    # ------------------------------------------------------------------ the per-request check
    def applies(self, request: Any) -> bool:
        return self.enabled and bool(self.globals or self.apis.get((request.service, request.request_type)))

    def check(self, request: Any, identity: Any) -> Any:
        """None (no cluster limit counts this request), a refusal Response at once (refused
        locally, or Redis unreachable and fail_open false), or a Future of None / the refusal,
        answered with the loop iteration's batch."""
        limits: list[tuple[str, ClusterRule, str]] = []
        for rules in (self.globals, self.apis.get((request.service, request.request_type))):
            if rules:
                for rule in rules:
                    value = _value(rule, request, identity)
                    if value is not None:
                        limits.append((self.key_of(rule, value), rule, value))
        if not limits:
            return None
        self.checks += 1
        now = time.monotonic()
        if self.refusals:
            for lkey, rule, value in limits:
                until = self.refusals.get(lkey)
                if until is not None:
                    if until > now:
                        self.refused_locally += 1
                        return self._refuse(request, rule, value, math.ceil((until - now) * 1000))
                    del self.refusals[lkey]
        if not self.up and now < self.retry_at:
            return self._unavailable(request)
        fut = asyncio.get_running_loop().create_future()
        self.pending.append((limits, fut, request))
        if not self.scheduled and not self.in_flight:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return fut

    def _refuse(self, request: Any, rule: ClusterRule, value: str, retry_ms: int) -> Response:
        self.refused += 1
        log.info(
            "rate_limited",
            request_id=request.request_id,
            key=rule.key,
            value=value,
            max_requests=rule.max_requests,
            window_ms=rule.window_ms,
            scope="cluster",
        )
        return Response.fail(request.request_id, rate_limited(math.ceil(retry_ms / 1000)), True)

    def _unavailable(self, request: Any) -> Response | None:
        self.unavailable += 1
        return None if self.fail_open else Response.fail(request.request_id, RATE_LIMIT_UNAVAILABLE, True)

    def _flush(self) -> None:
        self.scheduled = False
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        self.in_flight = True
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[list[tuple[str, ClusterRule, str]], asyncio.Future[Any], Any]]) -> None:
        try:
            self._connect()
            index: dict[str, int] = {}
            keys: list[str] = []
            args: list[Any] = [f"{self._tag}{next(self._calls)}:", len(batch)]
            for limits, _fut, _req in batch:
                args.append(len(limits))
                for lkey, rule, _value in limits:
                    i = index.get(lkey)
                    if i is None:
                        keys.append(lkey)
                        i = index[lkey] = len(keys)
                    args += (i, rule.max_requests, rule.window_ms)
            self.calls += 1
            try:
                out = await self.script(keys=keys, args=args)
            except engine_redis.errors() as exc:
                self._down(exc)
                for _limits, fut, req in batch:
                    if not fut.done():
                        fut.set_result(self._unavailable(req))
                return
            if not self.up:
                self._back()
            now = time.monotonic()
            for n, (limits, fut, req) in enumerate(batch):
                refused, retry_ms = out[2 * n], out[2 * n + 1]
                if refused < 0:
                    answer = None
                else:
                    lkey, rule, value = limits[refused]
                    if len(self.refusals) >= REFUSALS_MAX:
                        self.refusals = {k: t for k, t in self.refusals.items() if t > now}
                        if len(self.refusals) >= REFUSALS_MAX:
                            self.refusals.clear()
                    self.refusals[lkey] = now + retry_ms / 1000
                    answer = self._refuse(req, rule, value, retry_ms)
                if not fut.done():
                    fut.set_result(answer)
        finally:
            self.in_flight = False
            if self.pending and not self.scheduled:
                self.scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)

    def _down(self, exc: BaseException) -> None:
        now = time.monotonic()
        self.retry_at = now + RETRY_DOWN_S
        if self.up:
            self.up = False
            self.down_since = now
            self.unavailable_before = self.unavailable
            self.outages += 1
            log.error(
                "rate_limit_engine_unreachable",
                url=engine_redis.redacted(self.engine.url),
                error=f"{type(exc).__name__}: {exc}",
                fail_open=self.fail_open,
                answer="admitted" if self.fail_open else "refused (Rate limit service unavailable)",
            )

    def _back(self) -> None:
        self.up = True
        self.refusals.clear()  # Redis may have lost its logs (a restart): ask it afresh
        log.warning(
            "rate_limit_engine_reachable",
            url=engine_redis.redacted(self.engine.url),
            down_s=round(time.monotonic() - self.down_since, 3),
            answered_without=self.unavailable - self.unavailable_before,
        )

    # ------------------------------------------------------------------ control verbs
    def rules_on(self, key: str, service: str | None, request_type: str | None) -> list[ClusterRule]:
        if service is None:
            return [r for r in self.globals if r.key == key]
        return [r for r in self.apis.get((service, request_type or ""), []) if r.key == key]

    async def status(
        self, key: str, value: str, service: str | None = None, request_type: str | None = None
    ) -> list[dict[str, Any]]:
        """For each cluster limit on `key` (global, or of one function): the value's use, as Redis holds it."""
        rules = self.rules_on(key, service, request_type)
        if not rules:
            return []
        self._connect()
        out = await self.redis.eval(
            STATUS, len(rules), *(self.key_of(r, value) for r in rules), *(r.window_ms for r in rules)
        )
        return [
            {
                "key": key,
                "value": value,
                "service": service,
                "request_type": request_type,
                "max_requests": r.max_requests,
                "window_ms": r.window_ms,
                "scope": "cluster",
                "used": min(int(out[2 * i]), r.max_requests),
                "remaining": max(r.max_requests - int(out[2 * i]), 0),
                "resets_in_ms": int(out[2 * i + 1]),
            }
            for i, r in enumerate(rules)
        ]

    async def reset(self, key: str, value: str) -> int:
        """Forgets `value`'s use under every cluster limit on `key` (global and per function), on
        every host: the logs deleted, the reset announced; how many logs there were."""
        rules = [r for r in [*self.globals, *(r for rs in self.apis.values() for r in rs)] if r.key == key]
        for rule in rules:
            self.refusals.pop(self.key_of(rule, value), None)
        self._connect()
        freed = int(await self.redis.delete(*(self.key_of(r, value) for r in rules))) if rules else 0
        await self.redis.publish(self.channel, f"{key}\0{value}")
        return freed

    def stats(self) -> dict[str, Any]:
        return {
            "checks": self.checks,
            "refused": self.refused,
            "refused_locally": self.refused_locally,
            "unavailable": self.unavailable,
            "calls": self.calls,
            "outages": self.outages,
            "up": self.up,
        }

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            self._listener = None
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None
