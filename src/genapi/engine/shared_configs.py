"""Configs on every host (`[engine] type = "redis"`): a push to any host is served by every host.

The host that receives a push checks it as on one host (`ConfigSync.check`: the trust boundary,
`allowed_modules` and the bounds), then stores it in Redis with one script, a compare-and-set on
the service's `config_version` (accepted only when newer, or with `force`; the same version from
another node adds that node), which numbers it (a stamp, one counter for every service) and
announces `"<stamp> <service>"` on the channel `<prefix>:configs`. Every host's listener hears
it, reads the record back (bounded: a record larger than MAX_RECORD_BYTES, or an index of more
services than `[cluster] max_services`, is refused and logged; Redis is a trust boundary too),
checks it again as a push and serves it (the master broadcasts it to its workers), then acks:
it adds its host id to the stamp's ack set and records what it serves in its `served:<host>`
hash. Announcements can be lost (a pub/sub reconnect): each host re-reads the index of stamps
after every (re)subscribe and every HEARTBEAT_S, and applies what it is behind on.

The receiving host answers the push once it serves it itself, saying how many of the live
hosts acknowledged within ACK_WAIT_S (live: a heartbeat in `hosts` within ALIVE_S).

While Redis cannot be reached a push is refused with an error naming Redis (nothing applied
anywhere: a service node's pusher retries with backoff and lands once Redis is back); the
hosts go on serving what they hold.

Pulls (`[[services]]`, and pushed services refreshed from their nodes): one host pulls a
service at a time, the holder of its lease `puller:<service>` (SET NX PX, renewed each round);
what it pulls goes through the same compare-and-set, so a stale puller cannot go back a version.

Keys (under one hash tag, `{<prefix>:configs}`):

    rec:<service>     hash   version, nodes (JSON), body (the fun_configs, JSON), stamp, by, source, at
    index             hash   service -> stamp of its record
    stamp             string the last stamp: one more than the last, and at least Redis TIME in
                             microseconds, so stamps keep growing across a Redis that lost its data
    ack:<stamp>       set    the host ids serving that stamp (expires after ACK_TTL_S)
    served:<host id>  hash   service -> {"version", "stamp", "at", "error"} as that host serves it
    hosts             zset   host id -> its last heartbeat (ms, Redis TIME)
    puller:<service>  string the host id pulling that service (expires unless renewed)
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from genapi import log
from genapi.config import Settings
from genapi.engine import redis as engine_redis

MAX_RECORD_BYTES = 64 * 1024 * 1024  # a service's record read from Redis, nodes and fun_configs
HEARTBEAT_S = 1.0  # each host's heartbeat, and its re-read of the stamps
ALIVE_S = 3.0  # a host whose heartbeat is older is not waited for
ACK_WAIT_S = 1.0  # a push waits this long at most for the live hosts' acks
ACK_TTL_S = 3600
SERVED_TTL_S = 86400
FORGOTTEN_S = 86400  # a host silent this long leaves `hosts`

_VERSIONS = """
local function parts(v)
  local out = {}
  for s in string.gmatch(v, "[^%.%-%+_]+") do out[#out + 1] = s end
  return out
end
local function cmp(a, b)
  local pa, pb = parts(a), parts(b)
  for i = 1, math.max(#pa, #pb) do
    local x, y = pa[i], pb[i]
    if x == nil then return -1 end
    if y == nil then return 1 end
    if x ~= y then
      local nx = string.match(x, "^%d+$") and tonumber(x)
      local ny = string.match(y, "^%d+$") and tonumber(y)
      if nx and ny then
        if nx ~= ny then return nx < ny and -1 or 1 end
      else
        return x < y and -1 or 1
      end
    end
  end
  if a == b then return 0 end
  return a < b and -1 or 1
end
"""

# KEYS: rec, index, stamp. ARGV: service, version, force, nodes, body, host, source, channel
STORE = (
    _VERSIONS
    + """
local cur = redis.call('HGET', KEYS[1], 'version')
local nodes = ARGV[4]
if cur and ARGV[3] ~= '1' then
  local c = cmp(ARGV[2], cur)
  if c < 0 then return {'older', cur} end
  if c == 0 then
    local held = cjson.decode(redis.call('HGET', KEYS[1], 'nodes'))
    local seen, added = {}, false
    for _, n in ipairs(held) do seen[n] = true end
    for _, n in ipairs(cjson.decode(ARGV[4])) do
      if not seen[n] then held[#held + 1] = n; seen[n] = true; added = true end
    end
    if not added then return {'same', cur} end
    nodes = cjson.encode(held)
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stamp = string.format('%.0f', math.max(tonumber(redis.call('GET', KEYS[3]) or '0') + 1, now * 1000))
redis.call('SET', KEYS[3], stamp)
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'nodes', nodes, 'body', ARGV[5], 'stamp', stamp,
  'by', ARGV[6], 'source', ARGV[7], 'at', string.format('%.0f', now))
redis.call('HSET', KEYS[2], ARGV[1], stamp)
redis.call('PUBLISH', ARGV[8], stamp .. ' ' .. ARGV[1])
return {'stored', stamp, nodes}
"""
)

# KEYS: rec. ARGV: max bytes
READ = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'none'} end
local size = redis.call('HSTRLEN', KEYS[1], 'body') + redis.call('HSTRLEN', KEYS[1], 'nodes')
if size > tonumber(ARGV[1]) then return {'too_large', tostring(size)} end
local r = redis.call('HMGET', KEYS[1], 'version', 'nodes', 'stamp', 'by', 'source', 'body')
return {'ok', r[1], r[2], r[3], r[4], r[5], r[6]}
"""

# KEYS: hosts, index. ARGV: host, max services, forgotten ms. The heartbeat, and the stamps.
HEARTBEAT = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[3]))
local n = redis.call('HLEN', KEYS[2])
if n > tonumber(ARGV[2]) then return {'too_many', tostring(n)} end
local out = redis.call('HGETALL', KEYS[2])
table.insert(out, 1, 'ok')
return out
"""

# KEYS: hosts, ack set. ARGV: alive ms. The live hosts and those of them that acked.
ACKS = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local alive = redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')
local acked = {}
for _, h in ipairs(alive) do
  if redis.call('SISMEMBER', KEYS[2], h) == 1 then acked[#acked + 1] = h end
end
return {alive, acked}
"""

# KEYS: lease. ARGV: host, ttl ms. 1: this host pulls (taken or renewed), 0: another does.
LEASE = """
local h = redis.call('GET', KEYS[1])
if h == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if h then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: lease. ARGV: host.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class SharedConfigs:
    """This host's side of the configs every host shares through Redis, beside its ConfigSync
    (`host/configsync.py`), whose checks and registry it uses."""

    def __init__(self, sync: Any, settings: Settings, on_change: Any) -> None:
        self.sync = sync
        self.on_change = on_change  # the master's broadcast to its workers (None: a lone worker)
        self.engine = settings.engine
        self.host = settings.engine.host_name(settings.gateway.port)
        self.max_services = settings.cluster.max_services
        interval = settings.cluster.pull_interval_ms
        self.lease_ms = max(3 * interval, 1000)
        prefix = settings.engine.prefix
        self.tag = "{" + prefix + ":configs}"
        self.channel = f"{prefix}:configs"
        self.applied: dict[str, int] = {}  # service -> the stamp this host serves
        self.lock = asyncio.Lock()  # one change at a time on this host
        self.redis: Any = None
        self.scripts: dict[str, Any] = {}
        self.subscribed = False
        self.too_many_logged = False
        self._tasks: list[asyncio.Task[None]] = []
        self._reconciling: asyncio.Task[None] | None = None
        self._again = False
        self._applying: set[asyncio.Future[None]] = set()

    def key(self, *parts: str) -> str:
        return ":".join((self.tag, *parts))

    # ----------------------------------------------------------------- running
    async def start(self) -> None:
        """Reads what Redis holds (serving it before the control port answers, when Redis can
        be reached), then listens for announcements and beats."""
        self.redis = engine_redis.client(self.engine)
        for name, text in (("store", STORE), ("read", READ), ("heartbeat", HEARTBEAT), ("acks", ACKS)):
            self.scripts[name] = self.redis.register_script(text)
        self.scripts["lease"] = self.redis.register_script(LEASE)
        self.scripts["release"] = self.redis.register_script(RELEASE)
        try:
            await self._beat()
        except engine_redis.errors() as exc:
            log.error("configs_engine_unreachable", host_id=self.host, error=f"{type(exc).__name__}: {exc}")
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._listen()), loop.create_task(self._heartbeat())]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._reconciling is not None:
            self._reconciling.cancel()
        if self.redis is not None:
            try:
                await self.redis.zrem(self.key("hosts"), self.host)
                for service in self.sync.store.names():
                    await self.scripts["release"](keys=[self.key("puller", service)], args=[self.host])
            except engine_redis.errors():
                pass
            await self.redis.aclose()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self._beat()
            except engine_redis.errors() as exc:
                log.debug("configs_heartbeat_failed", error=f"{type(exc).__name__}: {exc}")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.error("configs_heartbeat_failed", exc_info=True)

    async def _beat(self) -> None:
        """The heartbeat, and a re-read of the stamps: applies what this host is behind on."""
        got = await self.scripts["heartbeat"](
            keys=[self.key("hosts"), self.key("index")],
            args=[self.host, self.max_services, FORGOTTEN_S * 1000],
        )
        if _s(got[0]) == "too_many":
            if not self.too_many_logged:
                log.error(
                    "configs_in_redis_over_bound",
                    services=int(got[1]),
                    max_services=self.max_services,
                    note="the index of stamps is not read; announced services still are",
                )
                self.too_many_logged = True
            return
        self.too_many_logged = False
        pairs = got[1:]
        for i in range(0, len(pairs) - 1, 2):
            service, stamp = _s(pairs[i]), int(pairs[i + 1])
            if stamp > self.applied.get(service, 0):
                await self.apply(service, stamp)

    async def _listen(self) -> None:
        """One pub/sub connection; after each (re)subscribe the stamps are read again."""
        backoff = 0.05
        while True:
            conn = engine_redis.client(self.engine, blocking=True)
            pubsub = conn.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                self.subscribed = True
                backoff = 0.05
                self.reconcile_soon()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self._announced(message.get("data"))
            except engine_redis.errors() as exc:
                if self.subscribed:
                    log.warning("configs_subscription_lost", host_id=self.host, error=f"{type(exc).__name__}: {exc}")
            finally:
                self.subscribed = False
                try:
                    await pubsub.aclose()
                    await conn.aclose()
                except engine_redis.errors():
                    pass
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    def _announced(self, data: Any) -> None:
        try:
            stamp_text, _, service = _s(data).partition(" ")
            stamp = int(stamp_text)
        except ValueError:
            log.warning("configs_announcement_invalid", data=repr(data)[:200])
            return
        if service and stamp > self.applied.get(service, 0):
            task = asyncio.ensure_future(self._apply_logged(service, stamp))
            self._applying.add(task)
            task.add_done_callback(self._applying.discard)

    def reconcile_soon(self) -> None:
        """A re-read of the stamps now (one at a time; asked again while one runs: once more)."""
        if self._reconciling is not None and not self._reconciling.done():
            self._again = True
            return
        self._reconciling = asyncio.ensure_future(self._reconcile())

    async def _reconcile(self) -> None:
        while True:
            self._again = False
            try:
                await self._beat()
            except engine_redis.errors() as exc:
                log.debug("configs_reread_failed", error=f"{type(exc).__name__}: {exc}")
            except Exception:
                log.error("configs_reread_failed", exc_info=True)
            if not self._again:
                return

    async def _apply_logged(self, service: str, stamp: int) -> None:
        try:
            await self.apply(service, stamp)
        except engine_redis.errors() as exc:
            log.warning("configs_read_failed", service=service, error=f"{type(exc).__name__}: {exc}")
        except Exception:
            log.error("configs_apply_failed", service=service, exc_info=True)

    # ----------------------------------------------------------------- applying what Redis holds
    async def apply(self, service: str, stamp: int) -> None:
        """Serves `service` as Redis holds it (at `stamp` or later), checked again as a push."""
        from genapi.host.configsync import Refused

        async with self.lock:
            if stamp <= self.applied.get(service, 0):
                return
            got = await self.scripts["read"](keys=[self.key("rec", service)], args=[MAX_RECORD_BYTES])
            kind = _s(got[0])
            if kind == "none":
                return
            if kind == "too_large":
                log.error("config_in_redis_too_large", service=service, bytes=int(got[1]), max_bytes=MAX_RECORD_BYTES)
                await self._served(service, None, stamp, f"record of {int(got[1])} bytes over {MAX_RECORD_BYTES}")
                self.applied[service] = stamp
                return
            version, nodes, held, by, source, body = (_s(v) for v in got[1:7])
            source = source if source in ("push", "pull") else "push"
            held_stamp = int(held)
            try:
                message = self.sync.message(
                    {
                        "service": service,
                        "config_version": version,
                        "nodes": json.loads(nodes),
                        "fun_configs": json.loads(body),
                    }
                )
                self.sync.commit(message, self.sync.check(message), True, source)
            except (Refused, ValueError) as exc:
                log.error("config_from_redis_refused", service=service, stamp=held_stamp, by=by, error=str(exc))
                self.applied[service] = held_stamp  # not tried again until a newer record
                await self._served(service, version, held_stamp, str(exc))
                return
            if self.on_change is not None:
                await self.on_change()
            self.applied[service] = held_stamp
            log.info("config_from_redis", service=service, config_version=version, stamp=held_stamp, by=by)
            await self._served(service, version, held_stamp, None)

    async def _served(self, service: str, version: str | None, stamp: int, error: str | None) -> None:
        """This host serves `stamp` (or refused it, `error`): its ack, and its row for admin."""
        row = json.dumps({"version": version, "stamp": stamp, "at": time.time(), "error": error})
        served = self.key("served", self.host)
        async with self.redis.pipeline(transaction=False) as p:
            if error is None:
                p.sadd(self.key("ack", str(stamp)), self.host)
                p.expire(self.key("ack", str(stamp)), ACK_TTL_S)
            p.hset(served, service, row)
            p.expire(served, SERVED_TTL_S)
            await p.execute()

    # ----------------------------------------------------------------- a push (or pull) received here
    async def push(self, raw: Any, force: bool, source: str) -> dict[str, Any]:
        """Checks `raw`, stores it in Redis (compare-and-set), serves it here, and answers with
        how many live hosts serve it (waiting up to ACK_WAIT_S for them)."""
        from genapi.host.configsync import Refused

        message = self.sync.message(raw)
        name = message.service
        sent: dict[str, Any] = {}
        async with self.lock:
            configs = self.sync.check(message)  # the trust boundary, before anything is stored
            try:
                got = await self.scripts["store"](
                    keys=[self.key("rec", name), self.key("index"), self.key("stamp")],
                    args=[
                        name,
                        message.config_version,
                        "1" if force else "0",
                        json.dumps(message.nodes),
                        json.dumps(message.fun_configs),
                        self.host,
                        source,
                        self.channel,
                    ],
                )
            except engine_redis.errors() as exc:
                raise Refused(
                    f"{source} of {name} refused: the config store (Redis at {engine_redis.redacted(self.engine.url)}) "
                    f"cannot be reached ({type(exc).__name__}: {exc}); nothing was applied on any host, "
                    "push again once Redis is back"
                ) from None
            kind = _s(got[0])
            if kind == "older":
                raise Refused(
                    f"{source} of {name} refused: config_version {message.config_version} is older than "
                    f"{_s(got[1])}, the version the hosts hold (in Redis); push a newer config_version, or force"
                )
            if kind == "same":
                state = self.sync.store.get(name)
                if state is None or state.config_version != message.config_version:
                    self.reconcile_soon()  # held in Redis, not served here yet
                return {"status": "skipped", "reason": "version_matches"}
            stamp, nodes = int(got[1]), json.loads(_s(got[2]))
            if nodes != message.nodes:  # the same version from another node: served by all of them
                message.nodes = nodes
                configs = self.sync.check(message)
            result = self.sync.commit(message, configs, force, source)
            if self.on_change is not None:
                out = await self.on_change()
                sent = {
                    "generation": out["generation"],
                    "workers": out["workers"],
                    "missing": out["missing"],
                    "broadcast_ms": out["ms"],
                }
            self.applied[name] = stamp
            try:
                await self._served(name, message.config_version, stamp, None)
            except engine_redis.errors():
                pass
        hosts = await self.wait_acks(stamp)
        return {**result, **sent, "stamp": stamp, **hosts}

    async def wait_acks(self, stamp: int) -> dict[str, Any]:
        """The live hosts, and which of them serve `stamp`, once all do or after ACK_WAIT_S."""
        deadline = time.monotonic() + ACK_WAIT_S
        alive: list[str] = []
        acked: list[str] = []
        while True:
            try:
                got = await self.scripts["acks"](
                    keys=[self.key("hosts"), self.key("ack", str(stamp))], args=[int(ALIVE_S * 1000)]
                )
            except engine_redis.errors():
                break
            alive, acked = sorted(_s(h) for h in got[0]), sorted(_s(h) for h in got[1])
            if len(acked) >= len(alive) or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.005)
        return {
            "hosts": len(alive),
            "acknowledged": len(acked),
            "not_acknowledged": [h for h in alive if h not in acked],
        }

    # ----------------------------------------------------------------- pulls
    async def may_pull(self, service: str) -> bool:
        """This host holds (took or renewed) the lease to pull `service`; False while Redis
        cannot be reached (what it would pull could not be stored)."""
        try:
            return bool(
                await self.scripts["lease"](keys=[self.key("puller", service)], args=[self.host, self.lease_ms])
            )
        except engine_redis.errors():
            return False

    # ----------------------------------------------------------------- every host, for admin
    async def hosts(self) -> dict[str, Any]:
        """Every host known to Redis: alive or not, what it serves; and each service's record."""
        now = await self.redis.time()
        now_ms = now[0] * 1000 + now[1] // 1000
        rows = await self.redis.zrange(self.key("hosts"), 0, 999, withscores=True)
        async with self.redis.pipeline(transaction=False) as p:
            for host, _seen in rows:
                p.hgetall(self.key("served", _s(host)))
            p.hgetall(self.key("index"))
            got = await p.execute()
        index = {_s(k): int(v) for k, v in got[-1].items()}
        async with self.redis.pipeline(transaction=False) as p:
            for service in sorted(index)[: self.max_services]:
                p.hmget(self.key("rec", service), "version", "by", "source", "stamp")
                p.get(self.key("puller", service))
            recs = await p.execute()
        services = {}
        for i, service in enumerate(sorted(index)[: self.max_services]):
            version, by, source, stamp = recs[2 * i]
            puller = recs[2 * i + 1]
            services[service] = {
                "version": _s(version) if version is not None else None,
                "stamp": int(stamp) if stamp is not None else None,
                "by": _s(by) if by is not None else None,
                "source": _s(source) if source is not None else None,
                "puller": _s(puller) if puller is not None else None,
            }
        hosts = []
        for (host, seen), served in zip(rows, got[:-1], strict=True):
            hosts.append(
                {
                    "host_id": _s(host),
                    "alive": now_ms - seen <= ALIVE_S * 1000,
                    "seen_s_ago": round((now_ms - seen) / 1000, 3),
                    "serves": {_s(k): json.loads(_s(v)) for k, v in sorted(served.items())},
                }
            )
        return {"host_id": self.host, "hosts": hosts, "services": services}
