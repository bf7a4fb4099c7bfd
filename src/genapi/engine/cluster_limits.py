"""Rate limits exact across hosts (`scope = "cluster"`): the same sliding log as the host's table,
kept in Redis, one sorted set of admission times per (limit, key value), the clock Redis `TIME`.

One Lua script (`CHECK`) takes a batch of requests; for each it checks every cluster limit that
applies and records in every one only if all admit (a refusal records nothing), answering the
refusing limit and its retry-after (from the entry that must leave the window). Each worker
sends one script call per loop iteration carrying every check pending in it (EVALSHA, loading
the script on NOSCRIPT), with at most MAX_IN_FLIGHT calls out (the next iteration's checks wait
for one to come back): never a round trip per request. The inline request path goes on from
each check's callback, the batch's answers corked into one write per connection
(`_core/dispatch.pyx`); the general path awaits the check (`Pending`).

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
from collections.abc import Generator
from typing import Any

import msgspec

from genapi import log
from genapi.config import EngineSettings
from genapi.engine import redis as engine_redis
from genapi.errors import RATE_LIMIT_UNAVAILABLE, rate_limited
from genapi.structs import Response

_pack = msgspec.msgpack.Encoder().encode
MAX_IN_FLIGHT = 2  # script calls a worker has out at once (each on its own connection)
RETRY_DOWN_S = 1.0  # after a failed call, checks are answered without Redis this long
REFUSALS_MAX = 65536  # (limit, value) refusals remembered locally

# Times are µs of Redis TIME (written with %.0f: Lua's own number format keeps 14 digits).
# KEYS: the logs the batch touches. ARGV[1]: a member tag unique to the call; ARGV[2]: msgpack of
# per key its max_requests and window_ms (flat); ARGV[3]: msgpack of the checks (flat: per check
# its number of limits k, then the k KEYS indexes); ARGV[4]: msgpack of admissions to forget first
# (flat: KEYS index, member), those of requests a host limit refused after the cluster admitted.
# Each log is trimmed and counted once per call and its admissions added at the end in one ZADD
# (all at `now`): per check the script does table work, not commands. Returns the refusals only,
# three integers each: the check's number (from 1), the index of the refusing limit in it (from
# 0) and the retry-after in ms (from the entry that must leave the window: one stored, or one
# admitted earlier in this call, at `now`); every other check was admitted and recorded in every
# limit.
CHECK = """
local function s(x) return string.format('%.0f', x) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tag = ARGV[1]
local limits = cmsgpack.unpack(ARGV[2])
local checks = cmsgpack.unpack(ARGV[3])
local forget = cmsgpack.unpack(ARGV[4])
for f = 1, #forget, 2 do
  redis.call('ZREM', KEYS[forget[f]], forget[f + 1])
end
local maxes, wins, used, stored, adds = {}, {}, {}, {}, {}
for i = 1, #KEYS do
  maxes[i] = limits[2 * i - 1]
  wins[i] = limits[2 * i] * 1000
end
local out = {}
local p = 1
local c = 0
local last = #checks
while p <= last do
  c = c + 1
  local k = checks[p]
  local refused, retry = -1, 0
  for j = 1, k do
    local i = checks[p + j]
    local u = used[i]
    if u == nil then
      redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', s(now - wins[i]))
      u = redis.call('ZCARD', KEYS[i])
      used[i] = u
      stored[i] = u
    end
    if u >= maxes[i] then
      local idx = u - maxes[i]
      local score = now
      if idx < stored[i] then
        score = tonumber(redis.call('ZRANGE', KEYS[i], idx, idx, 'WITHSCORES')[2])
      end
      refused = j - 1
      retry = math.ceil((score + wins[i] - now) / 1000)
      if retry < 1 then retry = 1 end
      break
    end
  end
  if refused < 0 then
    for j = 1, k do
      local i = checks[p + j]
      used[i] = used[i] + 1
      local a = adds[i]
      if a == nil then
        a = {}
        adds[i] = a
      end
      a[#a + 1] = tag .. c
    end
  else
    out[#out + 1] = c
    out[#out + 1] = refused
    out[#out + 1] = retry
  end
  p = p + k + 1
end
local score = s(now)
for i, a in pairs(adds) do
  local args = {}
  for m = 1, #a do
    args[#args + 1] = score
    args[#args + 1] = a[m]
    if #args >= 1000 then
      redis.call('ZADD', KEYS[i], unpack(args))
      args = {}
    end
  end
  if #args > 0 then
    redis.call('ZADD', KEYS[i], unpack(args))
  end
  redis.call('PEXPIRE', KEYS[i], s(wins[i] / 1000))
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

    __slots__ = ("api", "key", "limit_id", "max_requests", "prefix", "window_ms")

    def __init__(
        self, limit_id: int, key: str, max_requests: int, window_ms: int, api: tuple[str, str] | None = None
    ) -> None:
        self.limit_id = limit_id
        self.key = key
        self.max_requests = max_requests
        self.window_ms = window_ms
        self.api = api
        self.prefix = ""  # its logs' keys, but for the value (set by the limiter that holds it)


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


Limit = tuple[str, ClusterRule, str]  # (the log's key, the limit, the value it counts)


class Pending:
    """One request's cluster check, waiting for its batch. The inline request path sets `then`,
    called with (this, `corked`) once answered or cancelled (a list to append a connection it
    corked to, which is uncorked once the whole batch is answered: the batch's answers go out
    in one write per connection; None when cancelled); the general path awaits it. `answer`:
    None (admitted) or the refusal Response."""

    __slots__ = ("answer", "cancelled", "done", "future", "host", "identity", "limits", "request", "then")

    def __init__(self, limits: list[Limit], request: Any, identity: Any, host: Any) -> None:
        self.limits = limits
        self.request = request
        self.identity = identity
        self.host = host  # the host's RequestLimiter, to record in once the cluster admits (None: none)
        self.then: Any = None
        self.future: asyncio.Future[Any] | None = None
        self.answer: Response | None = None
        self.done = False
        self.cancelled = False

    def __await__(self) -> Generator[Any, None, Response | None]:
        if not self.done:
            self.future = asyncio.get_running_loop().create_future()
            yield from self.future
        return self.answer

    def settle(self, answer: Response | None, corked: list[Any]) -> None:
        if self.done:
            return
        self.done = True
        self.answer = answer
        if self.then is not None:
            try:
                self.then(self, corked)
            except Exception:
                log.error("cluster_limit_answer_crashed", exc_info=True, request_id=self.request.request_id)
        elif self.future is not None and not self.future.done():
            self.future.set_result(answer)

    def cancel(self) -> None:
        """Its topic was left or closed (the connection tracks it as a running call)."""
        if self.done:
            return
        self.done = self.cancelled = True
        if self.then is not None:
            self.then(self, None)
        elif self.future is not None:
            self.future.cancel()


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
        self.pending: list[Pending] = []
        self.forget: list[tuple[str, ClusterRule, str]] = []  # admissions to take back (log key, limit, member)
        self.scheduled = False
        self.in_flight = 0  # script calls out (at most MAX_IN_FLIGHT)
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
        for r in rules:
            r.prefix = f"{self.prefix}{r.limit_id:x}:{r.key}:"
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
        """The key of `value`'s log under `rule`: `<prefix>:rl:<limit id>:<key>:<value>`."""
        return rule.prefix + value

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
    def check(self, request: Any, identity: Any, host: Any = None) -> Any:
        """None (admitted: no cluster limit counts this request, or Redis is unreachable and
        fail_open true), a refusal Response at once (refused locally, or Redis unreachable and
        fail_open false), or a `Pending` answered with the loop iteration's batch. `host`: the
        host's RequestLimiter whose limits admitted the request without recording it; they are
        recorded once the cluster limits admit it (and if they refuse it then, which another
        worker's admission in between can cause, the cluster's records are forgotten again)."""
        limits: list[Limit] = []
        for rules in (self.globals, self.apis.get((request.service, request.request_type))):
            if rules:
                for rule in rules:
                    value = _value(rule, request, identity)
                    if value is not None:
                        limits.append((rule.prefix + value, rule, value))
        if not limits:
            return host.check(request, identity, True) if host is not None else None
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
            return self._unavailable(request, identity, host)
        pending = Pending(limits, request, identity, host)
        self.pending.append(pending)
        if not self.scheduled and self.in_flight < MAX_IN_FLIGHT:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return pending

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

    def _unavailable(self, request: Any, identity: Any, host: Any) -> Response | None:
        self.unavailable += 1
        if not self.fail_open:
            return Response.fail(request.request_id, RATE_LIMIT_UNAVAILABLE, True)
        return host.check(request, identity, True) if host is not None else None

    def _flush(self) -> None:
        self.scheduled = False
        if not self.pending and not self.forget:
            return
        batch, self.pending = self.pending, []
        self.in_flight += 1
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[Pending]) -> None:
        corked: list[Any] = []
        try:
            self._connect()
            index: dict[str, int] = {}
            keys: list[str] = []
            limits_of: list[int] = []
            checks: list[int] = []
            forget: list[Any] = []
            forgets, self.forget = self.forget, []
            for lkey, rule, member in forgets:
                i = index.get(lkey)
                if i is None:
                    keys.append(lkey)
                    i = index[lkey] = len(keys)
                    limits_of += (rule.max_requests, rule.window_ms)
                forget += (i, member)
            for p in batch:
                checks.append(len(p.limits))
                for lkey, rule, _value in p.limits:
                    i = index.get(lkey)
                    if i is None:
                        keys.append(lkey)
                        i = index[lkey] = len(keys)
                        limits_of += (rule.max_requests, rule.window_ms)
                    checks.append(i)
            tag = f"{self._tag}{next(self._calls)}:"
            args = (tag, _pack(limits_of), _pack(checks), _pack(forget))
            self.calls += 1
            try:
                out = await self.script(keys=keys, args=args)
            except engine_redis.errors() as exc:
                self._down(exc)
                for p in batch:  # (forgets are dropped: the logs over-count until they age)
                    if not p.done:
                        p.settle(self._unavailable(p.request, p.identity, p.host), corked)
                return
            if not self.up:
                self._back()
            now = time.monotonic()
            for r in range(0, len(out), 3):
                p = batch[out[r] - 1]
                lkey, rule, value = p.limits[out[r + 1]]
                retry_ms = out[r + 2]
                if len(self.refusals) >= REFUSALS_MAX:
                    self.refusals = {k: t for k, t in self.refusals.items() if t > now}
                    if len(self.refusals) >= REFUSALS_MAX:
                        self.refusals.clear()
                self.refusals[lkey] = now + retry_ms / 1000
                if not p.done:
                    p.settle(self._refuse(p.request, rule, value, retry_ms), corked)
            for c, p in enumerate(batch, 1):  # the rest were admitted (and recorded) by the cluster
                if p.done:
                    continue
                answer = None
                if p.host is not None:  # and now the host's limits record it, or refuse it after all
                    answer = p.host.check(p.request, p.identity, True)
                    if answer is not None:
                        self.forget += [(lkey, rule, f"{tag}{c}") for lkey, rule, _value in p.limits]
                p.settle(answer, corked)
        finally:
            for conn in corked:
                conn.uncork()
            self.in_flight -= 1
            if (self.pending or self.forget) and not self.scheduled:
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
        """Stops listening and sending; the connections closed."""
        tasks = [*self._tasks, *([self._listener] if self._listener is not None else [])]
        self._listener = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None
