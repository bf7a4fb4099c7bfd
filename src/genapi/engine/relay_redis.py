"""Relay groups across hosts (`[engine] type = "redis"`): Redis orders every group operation, each
host delivers to its own members in that order.

Every operation (create, join, accept, mute, unmute, leave, send, delete, and the read-only info)
is one call of one Lua script (`SCRIPT`) on the group's keys, all under the hash tag
`{<prefix>:g:<group_id>}`: it checks `relay/groups.py`'s permission matrix (same refusals, same
texts), and a change bumps the group's `seq`, is appended to the group's capped stream (its id
is `<seq>-1`, `XADD MAXLEN ~ STREAM_MAX`) and published with sharded pub/sub (SPUBLISH) as one
event: a JSON head `{"e": epoch, "s": seq, "o": op, ...}`, a newline, then (for a send) the
message as members receive it, encoded once by the sender's host. No host delivers before Redis
numbered a message. The ops a host issues in one loop iteration go in one pipeline, one pipeline
out at a time (so a sender's operations reach Redis in the order sent); deliveries that arrive
while a pipeline is out wait for its answers, so a sender reads its answer before its own copy.

Each host (its master, or its single worker) mirrors the groups that have a member here: the
local members (place and status), the group's epoch (chosen at its creation) and the last seq
applied. It subscribes once per such group on its one pub/sub connection and applies events in
seq order: a seq already applied is skipped, a gap (or a reconnect, or a subscription just made)
is filled from the stream (the `sync` op); past the stream's retention, or when the group's
epoch or the server (its run_id: a failover, a restart) changed, the group is resynced (its
local members reloaded) and that is logged. An idle subscription is probed with a PING every
PROBE_S; no answer within PROBE_TIMEOUT_S means it is dead: reconnect, resubscribe, replay.

Members carry their host (`run`: host id and a random id per start). Each host holds a lease key
(`SET PX LEASE_MS`, renewed every RENEW_S); a host whose lease was found expired at two looks in
a row (RENEW_S apart: a Redis that stalled longer than a lease gives every host a renewal before
anyone reaps) is reaped by one survivor (`SET NX PX` lock): its members leave through the same
ordered leave script.

While Redis cannot be reached every operation is refused at once with a `can_retry` error
(`relay_unreachable`); nothing is delivered out of order, and with Redis back the hosts
resubscribe and replay. `[relay] max_groups` is counted in one key outside the groups' hash
tags (`<prefix>:relay:groups`), the one key a group script touches outside its slot.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable
from typing import Any

import msgspec

from genapi import log
from genapi.config import EngineSettings, RelaySettings
from genapi.engine import redis as engine_redis
from genapi.errors import (
    RelayError,
    internal,
    relay_argument,
    relay_error,
    relay_group_full,
    relay_group_id_too_long,
    relay_group_type,
    relay_too_many_groups,
    relay_unreachable,
)
from genapi.relay.groups import GROUP_ID_MAX_BYTES, GROUP_TYPES, Deliver, Place, _iso
from genapi.structs import Response

STREAM_MAX = 10_000  # events a group's stream keeps (approximately): a host further behind resyncs
LEASE_MS = 6_000  # a host's lease: it is dead this long after its last renewal
RENEW_S = 2.0  # lease renewal (and the reaper's look at the others' leases)
PROBE_S = 1.0  # an idle subscription is pinged this often
PROBE_TIMEOUT_S = 3.0  # no pong this long after a ping: the subscription is dead
DOWN_S = 0.5  # after a failed pipeline, operations are refused at once this long
SYNC_MAX = 1000  # events one sync call returns

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode

# KEYS: 1 meta (hash: t type, e epoch, c created_at, seq, p pending count), 2 members (hash: user →
# JSON {s status, r role, h host run, w worker, t token, j joined_at}), 3 stream, 4 the groups count.
# ARGV: 1 op, 2 channel, 3 stream max, 4 max_groups, 5 max_members, 6 group_id, 7 user, 8.. per op.
# Returns {0, code} (refused, or {0, "skip"}: a leave whose member sits elsewhere now) or {1, seq, x}.
SCRIPT = r"""
local op = ARGV[1]
local meta, mem, stream, count = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local user = ARGV[7]

local function emit(head, payload)
  head.e = redis.call('HGET', meta, 'e')
  local seq = redis.call('HINCRBY', meta, 'seq', 1)
  head.s = seq
  local data = cjson.encode(head) .. '\n' .. (payload or '')
  redis.call('XADD', stream, 'MAXLEN', '~', ARGV[3], seq .. '-1', 'd', data)
  redis.call('SPUBLISH', ARGV[2], data)
  return seq
end

local function member(uid)
  local raw = redis.call('HGET', mem, uid)
  if not raw then return nil end
  return cjson.decode(raw)
end

local function drop_group()
  redis.call('DEL', meta, mem)
  redis.call('PEXPIRE', stream, 60000)
  if tonumber(redis.call('DECR', count)) < 0 then redis.call('SET', count, 0) end
end

if op == 'create' then
  if redis.call('EXISTS', meta) == 1 then return {0, 'already_exists'} end
  if tonumber(redis.call('GET', count) or '0') >= tonumber(ARGV[4]) then return {0, 'too_many_groups'} end
  redis.call('DEL', stream)
  redis.call('HSET', meta, 't', ARGV[8], 'e', ARGV[9], 'c', ARGV[10], 'seq', 0, 'p', 0)
  redis.call('INCR', count)
  local m = cjson.decode(ARGV[11])
  m.s = 'active'; m.r = 'admin'
  redis.call('HSET', mem, user, cjson.encode(m))
  local seq = emit({o = 'join', u = user, st = 'active', h = m.h, w = m.w, t = m.t})
  return {1, seq, ARGV[9]}
end

local gtype = redis.call('HGET', meta, 't')
if not gtype then return {0, 'not_found'} end

if op == 'info' then
  if user ~= '' and gtype ~= 'public' and redis.call('HEXISTS', mem, user) == 0 then return {0, 'not_member'} end
  return {1, 0, cjson.encode({t = gtype, c = redis.call('HGET', meta, 'c'), m = redis.call('HGETALL', mem)})}
end

if op == 'sync' then
  -- ARGV 8 epoch, 9 last applied, 10 host run, 11 max events
  local epoch = redis.call('HGET', meta, 'e')
  local seq = tonumber(redis.call('HGET', meta, 'seq'))
  local last = tonumber(ARGV[9])
  if epoch == ARGV[8] and seq == last then return {1, seq, epoch} end
  if epoch == ARGV[8] and seq > last then
    local got = redis.call('XRANGE', stream, (last + 1) .. '-1', '+', 'COUNT', ARGV[11])
    if #got > 0 and got[1][1] == (last + 1) .. '-1' then
      local out = {2, seq, epoch}
      for i = 1, #got do out[#out + 1] = got[i][2][2] end
      return out
    end
  end
  -- past the stream's retention, another epoch, or numbered back (a server behind this host):
  -- this host's members as they are now
  local out = {3, seq, epoch}
  local all = redis.call('HGETALL', mem)
  for i = 1, #all, 2 do
    local m = cjson.decode(all[i + 1])
    if m.h == ARGV[10] then out[#out + 1] = all[i]; out[#out + 1] = all[i + 1] end
  end
  return out
end

if op == 'join' then
  local fresh = 'pending'
  if gtype == 'public' then fresh = 'active' end
  local old = member(user)
  if not old then
    if redis.call('HLEN', mem) >= tonumber(ARGV[5]) then return {0, 'group_full'} end
  elseif old.s == 'active' or old.s == fresh then
    return {0, 'already_member'}
  elseif old.s == 'pending' then
    redis.call('HINCRBY', meta, 'p', -1)
  end
  local m = cjson.decode(ARGV[8])
  m.s = fresh; m.r = 'member'
  redis.call('HSET', mem, user, cjson.encode(m))
  if fresh == 'pending' then redis.call('HINCRBY', meta, 'p', 1) end
  local seq = emit({o = 'join', u = user, st = fresh, h = m.h, w = m.w, t = m.t})
  return {1, seq, fresh, redis.call('HGET', meta, 'e')}
end

if op == 'leave' then
  -- ARGV 8: '' or the member's expected host run; 9, 10: '' or its expected worker and token
  local old = member(user)
  if not old then
    if ARGV[8] ~= '' then return {0, 'skip'} end
    return {0, 'user_not_in_group'}
  end
  if ARGV[8] ~= '' then
    if old.h ~= ARGV[8] then return {0, 'skip'} end
    if ARGV[9] ~= '' and (tostring(old.w) ~= ARGV[9] or tostring(old.t) ~= ARGV[10]) then return {0, 'skip'} end
  end
  redis.call('HDEL', mem, user)
  if old.s == 'pending' then redis.call('HINCRBY', meta, 'p', -1) end
  local seq = emit({o = 'leave', u = user})
  if redis.call('HLEN', mem) == 0 then
    seq = emit({o = 'delete', u = ''})
    drop_group()
  end
  return {1, seq, ''}
end

local function admin(uid)
  local a = member(uid)
  if not a or a.s ~= 'active' or a.r ~= 'admin' then return false end
  return true
end

if op == 'delete' then
  if user ~= '' and not admin(user) then return {0, 'not_admin'} end
  local seq = emit({o = 'delete', u = user})
  drop_group()
  return {1, seq, ''}
end

if op == 'send' then
  local s = member(user)
  if not s then return {0, 'not_member'} end
  if s.s ~= 'active' then return {0, s.s} end
  local seq = emit({o = 'send', u = user}, ARGV[8])
  return {1, seq, redis.call('HLEN', mem) - tonumber(redis.call('HGET', meta, 'p'))}
end

-- accept, mute, unmute: ARGV 8 the target
local target = ARGV[8]
local after
if op == 'accept' then
  local a = member(user)
  if not a then return {0, 'not_member'} end
  if a.s ~= 'active' then return {0, 'not_active'} end
  if gtype == 'strict_private' and a.r ~= 'admin' then return {0, 'not_admin'} end
  local m = member(target)
  if not m then return {0, 'user_not_in_group'} end
  if m.s ~= 'pending' then return {0, 'user_not_pending'} end
  redis.call('HINCRBY', meta, 'p', -1)
  after = 'active'
  m.s = after
  redis.call('HSET', mem, target, cjson.encode(m))
else
  -- mute / unmute: ARGV 9 before, 10 after, 11 the refusal
  if gtype ~= 'strict_private' then return {0, 'not_strict_private'} end
  if not admin(user) then return {0, 'not_admin'} end
  local m = member(target)
  if not m then return {0, 'user_not_in_group'} end
  if m.s ~= ARGV[9] then return {0, ARGV[11]} end
  after = ARGV[10]
  m.s = after
  redis.call('HSET', mem, target, cjson.encode(m))
end
local seq = emit({o = 'status', u = target, st = after})
return {1, seq, after}
"""

_MUTES = {
    "mute_member": ("active", "muted", "cannot_mute"),
    "unmute_member": ("muted", "active", "not_muted"),
}


class Mirror:
    """A group as this host follows it: its local members, its epoch and the last seq applied."""

    __slots__ = ("epoch", "expect", "last", "last_event", "members", "subscribed", "suspect")

    def __init__(self, epoch: str, last: int) -> None:
        self.epoch = epoch
        self.last = last
        self.expect = last  # the highest seq a local answer announced: not dropped before it is applied
        self.members: dict[str, tuple[int, int, str]] = {}  # user → (worker, token, status)
        self.subscribed = False
        self.last_event: bytes | None = None  # the event applied last, as Redis holds it
        self.suspect = False  # the server changed (failover, restart): check its history first


class Pending:
    __slots__ = ("args", "finish", "group_id", "op")

    def __init__(self, op: str, group_id: str, args: list[Any], finish: Any) -> None:
        self.op = op
        self.group_id = group_id
        self.args = args
        self.finish = finish


class RedisAuthority:
    """The relay authority of one host when several share Redis (see the module's text)."""

    def __init__(self, relay: RelaySettings, engine: EngineSettings, host_id: str, deliver: Deliver) -> None:
        self.relay = relay
        self.engine = engine
        self.host_id = host_id
        self.run = f"{host_id}/{os.urandom(6).hex()}"
        self.deliver = deliver
        self.prefix = engine.prefix
        self.count_key = f"{self.prefix}:relay:groups"
        self.hosts_key = f"{self.prefix}:relay:hosts"
        self.mirrors: dict[str, Mirror] = {}
        self.at: dict[Place, set[tuple[str, str]]] = {}
        self.unleft: list[tuple[str, str, str, str, str]] = []  # leaves refused while Redis was away
        self.missing: set[str] = set()  # hosts whose lease had expired at the last look
        self.held: list[tuple[int, list[int], bytes]] = []  # deliveries waiting for a batch's answers
        self.batch: list[Pending] = []
        self.sending = False
        self.down_until = 0.0
        self.down = False  # the last pipeline failed: an outage, logged once
        self.relayed = 0
        self.deliveries = 0
        self.resyncs = 0
        self.replayed = 0
        self.reconnects = 0
        self.reaped = 0
        self.redis: Any = None
        self.script: Any = None
        self.ps: Any = None
        self.server_run: str | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self.redis is not None:
            return
        self._loop = asyncio.get_running_loop()
        self.redis = engine_redis.client(self.engine)
        self.sub_redis = engine_redis.client(self.engine, blocking=True)
        self.script = self.redis.register_script(SCRIPT)
        self._tasks = [self._loop.create_task(self._listen()), self._loop.create_task(self._lease())]

    async def aclose(self) -> None:
        """Waits (briefly) for the operations still queued (the leaves of a drain), then ends the
        lease so the others need not wait for it to expire."""
        deadline = time.monotonic() + 2.0
        while (self.batch or self.sending) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.redis is not None:
            try:
                await self.redis.delete(self._lease_key(self.run))
                await self.redis.srem(self.hosts_key, self.run)
            except engine_redis.errors():
                pass
            await self.redis.aclose()
            await self.sub_redis.aclose()

    # ------------------------------------------------------------------ keys
    def _keys(self, group_id: str) -> list[str]:
        tag = f"{{{self.prefix}:g:{group_id}}}"
        return [f"{tag}:meta", f"{tag}:m", f"{tag}:s", self.count_key]

    def _channel(self, group_id: str) -> str:
        return f"{{{self.prefix}:g:{group_id}}}:c"

    def _lease_key(self, run: str) -> str:
        return f"{self.prefix}:relay:lease:{run}"

    # ------------------------------------------------------------------ asking
    def ask(self, op: str, args: Any, place: Place | None, done: Any) -> None:
        try:
            if not isinstance(args, dict):
                raise RelayError("invalid_argument", f"{op}: the arguments must be an object")
            if op == "stats":
                done(self.stats())
                return
            pending = self._build(op, args, place, done)
        except RelayError as exc:
            done(exc)
            return
        except KeyError as exc:
            done(relay_argument(op, str(exc.args[0])))
            return
        except Exception as exc:
            log.error("relay_op_crashed", exc_info=True, op=op)
            done(RelayError("internal", internal(exc, False)))
            return
        self._queue(pending)

    def _queue(self, pending: Pending) -> None:
        if time.monotonic() < self.down_until:
            pending.finish(None)
            return
        self.batch.append(pending)
        if not self.sending and len(self.batch) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _build(self, op: str, a: dict[str, Any], place: Place | None, done: Any) -> Pending:
        """The script call of `op` (the checks that need no state made here, as groups.py makes
        them, in its order) and what turns its reply into the answer."""
        me = {"h": self.run if place else "", "w": place[0] if place else 0, "t": place[1] if place else 0}
        if op == "create_group":
            group_id, group_type, user = a["group_id"], a["group_type"], a["user_id"]
            _need(op, group_id=group_id, user_id=user)
            if len(group_id) > GROUP_ID_MAX_BYTES or len(group_id.encode()) > GROUP_ID_MAX_BYTES:
                raise relay_group_id_too_long(GROUP_ID_MAX_BYTES)
            if group_type not in GROUP_TYPES:
                raise relay_group_type(group_type)
            now = time.time()
            me["j"] = now
            epoch = os.urandom(8).hex()
            argv = [group_type, epoch, repr(now), _encode(me)]

            def created(r: list[Any]) -> dict[str, Any]:
                log.info("relay_group_created", group=group_id, type=group_type, creator=user)
                self._placed(group_id, user, place, int(r[1]), _s(r[2]))
                return {"group_id": group_id, "group_type": group_type, "status": "active", "roles": ["admin"]}

            return self._pending("create", group_id, user, argv, done, created)
        if op == "join_group":
            group_id, user = a["group_id"], a["user_id"]
            _need(op, group_id=group_id, user_id=user)
            me["j"] = time.time()

            def joined(r: list[Any]) -> dict[str, Any]:
                self._placed(group_id, user, place, int(r[1]), _s(r[3]))
                return {"group_id": group_id, "status": _s(r[2])}

            return self._pending("join", group_id, user, [_encode(me)], done, joined)
        if op == "leave_group":
            group_id, user = a["group_id"], a["user_id"]
            return self._pending(
                "leave", group_id, user, ["", "", ""], done, lambda r: {"group_id": group_id, "status": "left"}
            )
        if op == "accept_member":
            group_id, user, target = a["group_id"], a["user_id"], a["target"]
            return self._pending(
                "accept",
                group_id,
                user,
                [_str(target)],
                done,
                lambda r: {"group_id": group_id, "user_id": target, "status": "active"},
            )
        if op in _MUTES:
            group_id, user, target = a["group_id"], a["user_id"], a["target"]
            before, after, refusal = _MUTES[op]
            return self._pending(
                "mute",
                group_id,
                user,
                [_str(target), before, after, refusal],
                done,
                lambda r: {"group_id": group_id, "user_id": target, "status": after},
            )
        if op == "delete_group":
            group_id, user = a["group_id"], a.get("user_id")

            def deleted(r: list[Any]) -> dict[str, Any]:
                log.info("relay_group_deleted", group=group_id, by=user)
                return {"group_id": group_id, "status": "deleted"}

            return self._pending("delete", group_id, user or "", [], done, deleted)
        if op == "get_group_info":
            group_id, user = a["group_id"], a.get("user_id")
            return self._pending("info", group_id, user or "", [], done, lambda r: _info(group_id, r[2]))
        if op == "handle_relay":
            group_id, user, message = a["group_id"], a["user_id"], a["message"]
            payload = _encode(  # kind "relay", as on one host: a client tells it from the sender's answer
                Response.relayed(
                    a.get("request_id") or "relay",
                    {"group_id": group_id, "from_user_id": user, "message": message, "timestamp": _iso(time.time())},
                )
            )

            def relayed(r: list[Any]) -> dict[str, Any]:
                self.relayed += 1
                return {"status": "relayed", "recipients_count": int(r[2])}

            return self._pending("send", group_id, user, [payload], done, relayed)
        raise RelayError("unknown_op", f"no relay operation {op!r}")

    def _pending(self, op: str, group_id: Any, user: Any, extra: list[Any], done: Any, ok: Any) -> Pending:
        if type(group_id) is not str:
            raise relay_error("not_found")  # as a dict lookup of groups.py finds no such group

        def finish(reply: Any) -> None:
            if reply is None:
                done(relay_unreachable())
            elif isinstance(reply, BaseException):
                log.error("relay_script_failed", op=op, group=group_id, error=str(reply))
                done(RelayError("internal", internal(reply, False)))
            elif int(reply[0]) == 0:
                done(self._refusal(_s(reply[1])))
            else:
                try:
                    out = ok(reply)
                except Exception as exc:
                    log.error("relay_op_crashed", exc_info=True, op=op)
                    out = RelayError("internal", internal(exc, False))
                done(out)

        argv = [op, self._channel(group_id), STREAM_MAX, self.relay.max_groups, self.relay.max_members, group_id]
        return Pending(op, group_id, [*argv, _str(user), *extra], finish)

    def _refusal(self, code: str) -> RelayError:
        if code == "too_many_groups":
            log.warning("relay_groups_full", max_groups=self.relay.max_groups)
            return relay_too_many_groups(self.relay.max_groups)
        if code == "group_full":
            return relay_group_full(self.relay.max_members)
        if code == "skip":
            return RelayError("skip", "the member sits elsewhere now")
        return relay_error(code)

    def _flush(self) -> None:
        if self.sending or not self.batch:
            return
        batch, self.batch = self.batch, []
        self.sending = True
        task = asyncio.get_running_loop().create_task(self._send(batch))
        task.add_done_callback(lambda _t: None)

    async def _send(self, batch: list[Pending]) -> None:
        """One pipeline for the batch; every operation answered from its reply (or refused with
        can_retry when Redis could not be reached: a pipeline cut off may have run some of them)."""
        replies: list[Any] | None = None
        try:
            replies = await self._run(batch)
            missing = [i for i, r in enumerate(replies) if type(r).__name__ == "NoScriptError"]
            if missing:  # a server restarted (or flushed its scripts): none of these ran
                await self.redis.script_load(SCRIPT)
                again = await self._run([batch[i] for i in missing])
                for i, r in zip(missing, again, strict=True):
                    replies[i] = r
        except engine_redis.errors() as exc:
            self.down_until = time.monotonic() + DOWN_S
            if not self.down:  # once per outage
                self.down = True
                log.error(
                    "relay_engine_unreachable",
                    ops=len(batch),
                    error=f"{type(exc).__name__}: {exc}",
                    note="relay operations are refused (can_retry) until Redis answers again",
                )
        finally:
            self.sending = False
        if replies is not None and self.down:
            self.down = False
            log.warning("relay_engine_reachable")
        for i, p in enumerate(batch):
            p.finish(None if replies is None else replies[i])
        held, self.held = self.held, []
        for worker, tokens, payload in held:
            self.deliver(worker, tokens, payload)
        if self.batch:
            self._flush()

    async def _run(self, batch: list[Pending]) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        sha = self.script.sha
        for p in batch:
            pipe.execute_command("EVALSHA", sha, 4, *self._keys(p.group_id), *p.args)
        return list(await pipe.execute(raise_on_error=False))

    # ------------------------------------------------------------------ places
    def _placed(self, group_id: str, user: str, place: Place | None, seq: int, epoch: str) -> None:
        """A create or join seated `user` here at `place`, numbered `seq`: the group is followed
        (subscribed, caught up from seq) and the place remembered for when it goes."""
        if place is None:
            return
        self.at.setdefault(place, set()).add((group_id, user))
        m = self.mirrors.get(group_id)
        if m is None or m.epoch != epoch:
            if m is not None:  # the group was deleted and made again meanwhile
                self._drop_mirror(group_id, m)
                self.at.setdefault(place, set()).add((group_id, user))
            m = self.mirrors[group_id] = Mirror(epoch, seq - 1)
            self._subscribe([group_id])
        m.expect = max(m.expect, seq)

    def drop_places(self, worker: int, tokens: Iterable[int]) -> None:
        n = 0
        for token in tokens:
            for group_id, user in self.at.pop((worker, token), ()):
                n += 1
                self._leave_quietly(group_id, user, self.run, str(worker), str(token))
        if n:
            log.info("relay_members_left", worker=worker, memberships=n, reason="connection gone")

    def drop_worker(self, worker: int) -> None:
        tokens = [t for (w, t) in self.at if w == worker]
        if tokens:
            log.warning("relay_worker_members_dropped", worker=worker, places=len(tokens))
        self.drop_places(worker, tokens)

    def _leave_quietly(self, group_id: str, user: str, run: str, worker: str, token: str) -> None:
        def done(out: Any) -> None:
            if isinstance(out, RelayError) and out.code == "engine_unavailable":
                self.unleft.append((group_id, user, run, worker, token))  # sent again once Redis answers
            elif isinstance(out, RelayError) and out.code not in ("skip", "not_found"):
                log.warning("relay_leave_failed", group=group_id, user=user, error=out.text)

        self._queue(self._pending("leave", group_id, user, [run, worker, token], done, lambda r: {"status": "left"}))

    def stats(self) -> dict[str, Any]:
        return {
            "groups": len(self.mirrors),
            "members": sum(len(m.members) for m in self.mirrors.values()),
            "relayed": self.relayed,
            "deliveries": self.deliveries,
            "resyncs": self.resyncs,
            "replayed": self.replayed,
            "reconnects": self.reconnects,
            "reaped": self.reaped,
        }

    # ------------------------------------------------------------------ following groups
    def _subscribe(self, group_ids: list[str]) -> None:
        if self.ps is not None and self._loop is not None:
            self._loop.create_task(self._ssub(self.ps, group_ids))

    async def _ssub(self, ps: Any, group_ids: list[str]) -> None:
        try:
            await ps.ssubscribe(*[self._channel(g) for g in group_ids])
        except engine_redis.errors():
            pass  # the listener reconnects and subscribes every followed group again

    def _unfollow(self, group_id: str) -> None:
        self.mirrors.pop(group_id, None)
        ps = self.ps
        if ps is not None and self._loop is not None:

            async def unsub() -> None:
                try:
                    await ps.sunsubscribe(self._channel(group_id))
                except engine_redis.errors():
                    pass

            self._loop.create_task(unsub())

    async def _listen(self) -> None:
        """The host's one pub/sub connection: (re)connects, subscribes every followed group,
        catches each up from the stream, then applies events as they come; probes when idle."""
        first = True
        while True:
            ps = None
            try:
                ps = self.sub_redis.pubsub()
                run_id = (await self.redis.info("server")).get("run_id")
                if self.server_run is not None and run_id != self.server_run:
                    log.warning("relay_engine_new_epoch", run_id=run_id, groups=len(self.mirrors))
                    for m in self.mirrors.values():
                        m.suspect = True  # its history checked on its catch-up
                self.server_run = run_id
                self.ps = ps
                if not first:
                    self.reconnects += 1
                    log.warning("relay_subscription_restored", groups=len(self.mirrors))
                first = False
                # the idle channel keeps the connection subscribed (and probed) with no group followed
                await ps.ssubscribe(f"{{{self.prefix}:relay}}:idle", *[self._channel(g) for g in self.mirrors])
                await self._read(ps)
            except asyncio.CancelledError:
                if ps is not None:
                    await _close(ps)
                raise
            except Exception as exc:
                if not isinstance(exc, (*engine_redis.errors(), _Dead)):
                    log.error("relay_listener_crashed", exc_info=True)
                    self.ps = None
                    if ps is not None:
                        await _close(ps)
                    await asyncio.sleep(0.5)
                    continue
                if self.ps is not None:
                    log.warning("relay_subscription_lost", error=f"{type(exc).__name__}: {exc}")
                self.ps = None
                if ps is not None:
                    await _close(ps)
                await asyncio.sleep(0.2)

    async def _read(self, ps: Any) -> None:
        pinged = 0.0
        heard = time.monotonic()
        while True:
            msg = await ps.get_message(timeout=PROBE_S)
            now = time.monotonic()
            if msg is None:
                if pinged and now - pinged > PROBE_TIMEOUT_S:
                    raise _Dead("no answer to the subscription's probe")
                if not pinged and now - heard >= PROBE_S:
                    await ps.ping("genapi-probe")
                    pinged = now
                continue
            heard = now
            kind = msg.get("type")
            if kind == b"smessage" or kind == "smessage":
                await self._event(_s(msg["channel"]), msg["data"])
            elif kind in ("pong", b"pong"):
                pinged = 0.0
            elif kind in ("ssubscribe", b"ssubscribe"):
                group_id = self._group_of(_s(msg["channel"]))
                m = self.mirrors.get(group_id) if group_id is not None else None
                if m is not None:
                    m.subscribed = True
                    await self._catch_up(group_id, m)  # type: ignore[arg-type]

    def _group_of(self, channel: str) -> str | None:
        head = f"{{{self.prefix}:g:"
        if channel.startswith(head) and channel.endswith("}:c"):
            return channel[len(head) : -3]
        return None

    async def _event(self, channel: str, data: bytes) -> None:
        group_id = self._group_of(channel)
        m = self.mirrors.get(group_id) if group_id is not None else None
        if m is None:
            return
        head, _, payload = data.partition(b"\n")
        h = _decode(head)
        seq = int(h["s"])
        if seq <= m.last:
            return  # applied already (from the stream)
        if seq != m.last + 1 or (m.epoch and h["e"] != m.epoch):
            await self._catch_up(group_id, m)  # type: ignore[arg-type]
            return
        self._apply(group_id, m, h, payload, data)  # type: ignore[arg-type]

    async def _catch_up(self, group_id: str, m: Mirror) -> None:
        """Everything after m.last from the stream, in order; past its retention (or another
        epoch) the group's local members reloaded."""
        if m.suspect:
            # a new server: replay only if it holds the event applied last as it was (a replica
            # behind its primary, or a restart that lost it, would renumber): else resync
            m.suspect = False
            try:
                got = await self.redis.xrange(self._keys(group_id)[2], f"{m.last}-1", f"{m.last}-1")
            except engine_redis.errors() as exc:
                m.suspect = True
                raise _Dead(f"sync of {group_id}: {exc}") from None
            if m.last_event is None or not got or got[0][1].get(b"d") != m.last_event:
                m.epoch = "?"  # the sync below resyncs
        while self.mirrors.get(group_id) is m:
            p = self._pending("sync", group_id, self.run, [m.epoch, m.last, self.run, SYNC_MAX], None, None)
            try:
                r = await self.script(keys=self._keys(group_id), args=p.args)
            except engine_redis.errors() as exc:
                raise _Dead(f"sync of {group_id}: {exc}") from None
            kind = int(r[0])
            if kind == 0:  # the group is gone
                log.warning("relay_group_resynced", group=group_id, reason="gone", members=len(m.members))
                self.resyncs += 1
                self._drop_mirror(group_id, m)
                return
            seq, epoch = int(r[1]), _s(r[2])
            if kind == 1:
                m.epoch = epoch
                return
            if kind == 2:
                for data in r[3:]:
                    head, _, payload = data.partition(b"\n")
                    h = _decode(head)
                    if int(h["s"]) == m.last + 1:
                        m.epoch = epoch
                        self._apply(group_id, m, h, payload, data)
                        self.replayed += 1
                if m.last >= seq:
                    return
                continue
            # 3: resync
            before = set(m.members)
            m.members = {}
            for i in range(3, len(r), 2):
                user, rec = _s(r[i]), _decode(r[i + 1])
                m.members[user] = (int(rec["w"]), int(rec["t"]), rec["s"])
            missed = seq - m.last
            m.epoch, m.last, m.last_event = epoch, seq, None
            m.expect = max(m.expect, seq) if m.expect <= seq else m.expect
            self.resyncs += 1
            log.warning(
                "relay_group_resynced",
                group=group_id,
                reason="past the stream's retention, or a new epoch",
                missed=missed,
                members_before=len(before),
                members=len(m.members),
            )
            for gone in before - set(m.members):
                self._unplace(group_id, gone, None)
            if not m.members and m.last >= m.expect:
                self._unfollow(group_id)
            return

    def _apply(self, group_id: str, m: Mirror, h: dict[str, Any], payload: bytes, data: bytes) -> None:
        m.last = int(h["s"])
        m.last_event = data
        if not m.epoch:
            m.epoch = h["e"]
        op = h["o"]
        user = h.get("u", "")
        if op == "send":
            by_worker: dict[int, list[int]] = {}
            for worker, token, status in m.members.values():
                if status != "pending":
                    by_worker.setdefault(worker, []).append(token)
            for worker, tokens in by_worker.items():
                self.deliveries += len(tokens)
                if self.sending:  # perhaps a message of the batch out: after its answers
                    self.held.append((worker, tokens, payload))
                else:
                    self.deliver(worker, tokens, payload)
            return
        if op == "join":
            if h.get("h") == self.run:
                m.members[user] = (int(h["w"]), int(h["t"]), h["st"])
            elif user in m.members:
                self._unplace(group_id, user, m.members.pop(user))
        elif op == "status":
            old = m.members.get(user)
            if old is not None:
                m.members[user] = (old[0], old[1], h["st"])
        elif op == "leave":
            old = m.members.pop(user, None)
            if old is not None:
                self._unplace(group_id, user, old)
        elif op == "delete":
            self._drop_mirror(group_id, m)
            return
        if not m.members and m.last >= m.expect:
            self._unfollow(group_id)

    def _drop_mirror(self, group_id: str, m: Mirror) -> None:
        for user, rec in list(m.members.items()):
            self._unplace(group_id, user, rec)
        m.members = {}
        self._unfollow(group_id)

    def _unplace(self, group_id: str, user: str, rec: tuple[int, int, str] | None) -> None:
        if rec is None:
            return
        held = self.at.get((rec[0], rec[1]))
        if held is not None:
            held.discard((group_id, user))
            if not held:
                del self.at[(rec[0], rec[1])]

    # ------------------------------------------------------------------ leases
    async def _lease(self) -> None:
        """Renews this host's lease every RENEW_S; reaps hosts whose lease expired."""
        key = self._lease_key(self.run)
        while True:
            try:
                await self.redis.set(key, self.host_id, px=LEASE_MS)
                await self.redis.sadd(self.hosts_key, self.run)
                if self.unleft:  # members whose seats went while Redis was away leave now
                    unleft, self.unleft = self.unleft, []
                    log.info("relay_members_left", memberships=len(unleft), reason="connection gone during an outage")
                    for args in unleft:
                        self._leave_quietly(*args)
                missing = set()
                for raw in await self.redis.smembers(self.hosts_key):
                    run = _s(raw)
                    if run != self.run and not await self.redis.exists(self._lease_key(run)):
                        missing.add(run)
                        if run in self.missing:  # gone at two looks in a row: not a stall of Redis
                            await self._reap(run)
                self.missing = missing
            except engine_redis.errors():
                pass  # the probe logs the outage; the next renewal tries again
            except Exception:
                log.error("relay_lease_failed", exc_info=True)
            await asyncio.sleep(RENEW_S)

    async def _reap(self, run: str) -> None:
        """Host `run` is dead: if this host wins the lock, its members leave every group, each
        through the ordered leave script."""
        lock = f"{self.prefix}:relay:reap:{run}"
        if not await self.redis.set(lock, self.run, nx=True, px=LEASE_MS * 5):
            return
        n = 0
        cursor = 0
        pattern = f"{{{self.prefix}:g:*}}:m"
        while True:
            cursor, keys = await self.redis.scan(cursor, match=pattern, count=500)
            for key in keys:
                k = _s(key)
                group_id = k[len(self.prefix) + 4 : -3]
                for user, raw in (await self.redis.hgetall(k)).items():
                    if _decode(raw).get("h") == run:
                        n += 1
                        self._leave_quietly(group_id, _s(user), run, "", "")
            if not cursor:
                break
        await self.redis.srem(self.hosts_key, run)
        self.reaped += n
        log.warning("relay_host_reaped", host=run, memberships=n, by=self.run)


class _Dead(Exception):
    """The subscription stopped answering (or a catch-up failed): reconnect."""


async def _close(ps: Any) -> None:
    try:
        await ps.aclose()
    except Exception:
        pass


def _need(op: str, **values: Any) -> None:
    for name, value in values.items():
        if type(value) is not str or not value:
            raise relay_argument(op, name)


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _str(x: Any) -> str:
    return x if type(x) is str else str(x)


def _info(group_id: str, raw: Any) -> dict[str, Any]:
    got = _decode(raw)
    flat = got["m"]
    members = {}
    for i in range(0, len(flat), 2):
        rec = _decode(flat[i + 1])
        members[flat[i]] = {
            "roles": [rec["r"]],
            "status": rec["s"],
            "joined_at": _iso(float(rec.get("j") or 0)),
            "connected": bool(rec.get("h")),
        }
    return {"group_id": group_id, "group_type": got["t"], "created_at": _iso(float(got["c"])), "members": members}
