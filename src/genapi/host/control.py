"""The gateway's control port: a table of verbs, each a typed handler, served to clients that
proved the cluster secret (`control_auth.py`); `ControlClient` (`control_client.py`) is its
client, one method per verb.

    $push $verify $pushed                        config sync (configsync.py): service nodes push
    $pushed_hosts                                every host's configs (engine/shared_configs.py)
    $functions $status $nodes                    the registry, the gateway and its workers, the node pool
    $fn_disable $fn_enable $fn_delete            an operator's switches on the registry
    $ping                                        "pong"
    $relay                                       a relay-group operation (RelayClient)
    $rl_status $rl_reset $rl_config              rate limits: read and reset
    $rl_update $rl_global_add $rl_global_remove  rate limits: change

Each request is `target` (the verb) and `args` (a list). A verb not in the table is answered
ERROR `unknown`; a request that cannot be applied (bad arguments, a refused push, a feature
that is off) ERROR `refused` with the reason. A change (a push, a switch, a rate-limit change)
is answered once every worker serves it, where the process has workers.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import msgspec

from genapi import __version__, log
from genapi.config import Settings
from genapi.engine.configs import ConfigStore, HostConfigs
from genapi.engine.limits import RateLimitStore
from genapi.engine.relay import RelayAuthority
from genapi.errors import ConfigError, RelayError, push_rate_exceeded
from genapi.host import control_auth
from genapi.host.configsync import ConfigSync, Refused
from genapi.nodes import rpc
from genapi.request.bind import Functions
from genapi.structs import FunConfig

__all__ = ["ControlPlane", "Handler", "Refused", "merge_nodes"]

# A verb's handler: the peer (for logs) and the request's args → the answer, or a coroutine
# answering once the change is served (a push announced to the workers, the workers' status).
Handler = Callable[[rpc.ServerPeer, list[Any]], Any]
Broadcast = Callable[[], Awaitable[dict[str, Any]]]


class ControlPlane:
    """Serves the control port for one gateway process (the master, or a lone worker): routes
    each verb to its handler; config sync runs beside it (`self.sync`)."""

    def __init__(
        self,
        functions: Functions,
        settings: Settings,
        on_change: Broadcast | None = None,
        *,
        limits: RateLimitStore | None = None,
        on_limits: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = None,
        relay: RelayAuthority | None = None,
        inspect: Broadcast | None = None,
        store: ConfigStore | None = None,
    ) -> None:
        self.functions = functions
        self.on_change = on_change  # the master's broadcast: a change is answered once every worker has it
        self.limits = limits  # when [rate_limiter] is enabled
        self.on_limits = on_limits  # the master's broadcast of a rate-limit change
        self.relay = relay  # the host's relay authority, where this process holds it
        # the process holding this plane (master, or lone worker): its config generation, restarts
        # and workers (index, pid, alive, generation, restarts, connections, nodes) for `$status`/`$nodes`
        self.inspect = inspect
        self.secret = control_auth.server_secret(settings)
        self.store: ConfigStore = store if store is not None else HostConfigs()
        self.sync = ConfigSync(functions, settings, self.store, self.secret, on_change)
        if settings.engine.type == "redis":  # configs on every host: a push here is stored in Redis
            from genapi.engine.shared_configs import SharedConfigs

            self.sync.shared = SharedConfigs(self.sync, settings, on_change)
        self.started = time.monotonic()
        self.cluster = settings.cluster
        self._pushes: dict[str, deque[float]] = {}  # per peer address: its pushes' times, the last 60 s
        self.server: asyncio.Server | None = None
        self.address = ""
        self._tasks: set[asyncio.Future[None]] = set()
        self.verbs: dict[str, Handler] = {
            "$push": self._push,
            "$verify": self._verify,
            "$pushed": self._pushed,
            "$pushed_hosts": self._pushed_hosts,
            "$functions": self._functions,
            "$status": self._status,
            "$nodes": self._nodes,
            "$fn_disable": self._fn_disable,
            "$fn_enable": self._fn_enable,
            "$fn_delete": self._fn_delete,
            "$ping": self._ping,
            "$relay": self._relay,
            "$rl_status": self._rl_status,
            "$rl_reset": self._rl_reset,
            "$rl_config": self._rl_config,
            "$rl_update": self._rl_update,
            "$rl_global_add": self._rl_global_add,
            "$rl_global_remove": self._rl_global_remove,
        }

    async def start(self, sock: socket.socket | None) -> None:
        """Serves the control port's socket (None: no control port) and starts the configured pulls."""
        if sock is not None:
            self.server = await control_auth.serve(sock, self.secret, self)
            bound = sock.getsockname()
            self.address = f"{bound[0]}:{bound[1]}"
            log.info("control_port_ready", address=self.address, secured=self.secret is not None)
        if self.sync.shared is not None:
            await self.sync.shared.start()
        self.sync.start()

    async def stop(self) -> None:
        self.sync.stop()
        if self.sync.shared is not None:
            await self.sync.shared.close()
        if self.server is not None:
            self.server.close()

    def keep_disabled(self, configs: list[FunConfig]) -> list[FunConfig]:
        """`configs` with the functions an operator disabled disabled (a reload keeps them so)."""
        return self.sync.keep_disabled(configs)

    # ----------------------------------------------------------------- the rpc handler
    def call(
        self,
        peer: rpc.ServerPeer,
        cid: int,
        target: str,
        args: Any,
        timeout_ms: Any,
        stream: bool,
        trace: str | None = None,
    ) -> None:
        try:
            if type(args) is not list:
                raise Refused("args must be a list")
            handler = self.verbs.get(target)
            if handler is None:
                return peer.error(cid, rpc.UNKNOWN, f"no control request {target!r}")
            answer = handler(peer, args)
        except (Refused, ConfigError) as exc:
            return self._refused(peer, cid, target, exc)
        except (TypeError, ValueError, IndexError, KeyError, AttributeError) as exc:
            return peer.error(cid, rpc.REFUSED, f"bad arguments for {target}: {type(exc).__name__}: {exc}")
        if asyncio.iscoroutine(answer):
            task = asyncio.ensure_future(self._answer_later(peer, cid, target, answer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            peer.result(cid, answer)

    async def _answer_later(
        self, peer: rpc.ServerPeer, cid: int, target: str, answer: Coroutine[Any, Any, Any]
    ) -> None:
        try:
            value = await answer
        except (Refused, ConfigError) as exc:
            return self._refused(peer, cid, target, exc)
        except Exception as exc:  # answered, logged; the control port goes on
            log.error("control_request_failed", target=target, exc_info=True)
            return peer.error(cid, rpc.REFUSED, f"{target}: {type(exc).__name__}: {exc}")
        peer.result(cid, value)

    def _refused(self, peer: rpc.ServerPeer, cid: int, target: str, exc: Exception) -> None:
        log.warning("control_request_refused", peer=peer.peername, target=target, error=str(exc))
        peer.error(cid, rpc.REFUSED, str(exc))

    def cancel(self, peer: rpc.ServerPeer, cid: int) -> None:
        pass

    def credit(self, peer: rpc.ServerPeer, cid: int, n: int) -> None:
        pass

    def lost(self, peer: rpc.ServerPeer) -> None:
        pass

    # ----------------------------------------------------------------- config sync
    def _push(self, peer: rpc.ServerPeer, args: list[Any]) -> Any:
        """[message, force?]: {"status": "accepted", "functions": n} (with the broadcast's
        generation, workers, missing, broadcast_ms under a master) or {"status": "skipped", ...}."""
        self._push_rate(peer)
        message, force = [*args, False][:2]
        if self.sync.shared is not None:  # checked here, stored in Redis, served by every host
            return self.sync.shared.push(message, bool(force), "push")
        result = self.sync.push(message, bool(force), "push")
        if self.on_change is None or result["status"] != "accepted":
            return result
        return self._announce(result)

    def _push_rate(self, peer: rpc.ServerPeer) -> None:
        """At most `[cluster] max_pushes_per_minute` pushes from one peer address in any 60 s:
        each push may rebind and republish a whole service to every worker."""
        host = peer.peername.rpartition(":")[0] or peer.peername
        now = time.monotonic()
        times = self._pushes.setdefault(host, deque())
        while times and now - times[0] >= 60:
            times.popleft()
        limit = self.cluster.max_pushes_per_minute
        if len(times) >= limit:
            raise Refused(push_rate_exceeded(host, limit))
        times.append(now)

    def _verify(self, peer: rpc.ServerPeer, args: list[Any]) -> dict[str, Any]:
        """[service, config_version]: matched, mismatch (with the held version) or not_found."""
        return self.sync.verify(*args[:2])

    def _pushed(self, peer: rpc.ServerPeer, args: list[Any]) -> dict[str, dict[str, Any]]:
        return self.sync.status()

    def _pushed_hosts(self, peer: rpc.ServerPeer, args: list[Any]) -> Any:
        """Every host sharing the configs (`[engine] type = "redis"`; None on one host): per host
        alive or not and the version it serves of each service, and each service's record."""
        if self.sync.shared is None:
            return None
        return self._configs_engine(self.sync.shared.hosts())

    async def _configs_engine(self, answer: Coroutine[Any, Any, Any]) -> Any:
        from genapi.engine import redis as engine_redis

        try:
            return await answer
        except engine_redis.errors() as exc:
            raise Refused(f"the config store (Redis) cannot be reached: {type(exc).__name__}: {exc}") from None

    # ----------------------------------------------------------------- the registry, the gateway
    def _functions(self, peer: rpc.ServerPeer, args: list[Any]) -> list[Any]:
        return [msgspec.to_builtins(cfg) for cfg in self.functions.registry.list()]

    async def _status(self, peer: rpc.ServerPeer, args: list[Any]) -> dict[str, Any]:
        """The gateway (pid, version, uptime, generation, functions, pushed) and its workers."""
        view = await self._view()
        return {
            "pid": os.getpid(),
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "generation": view["generation"],
            "functions": len(self.functions.registry),
            "pushed": len(self.store),
            "restarts": view["restarts"],
            "workers": [{k: v for k, v in w.items() if k != "nodes"} for w in view["workers"]],
            **({"engine": view["engine"]} if "engine" in view else {}),
        }

    async def _nodes(self, peer: rpc.ServerPeer, args: list[Any]) -> list[dict[str, Any]]:
        """The node pool, per node over the workers (only the workers hold live node links)."""
        return merge_nodes((await self._view())["workers"])

    async def _view(self) -> dict[str, Any]:
        if self.inspect is not None:
            return await self.inspect()
        return {
            "generation": 0,
            "restarts": 0,
            "workers": [{"index": 0, "pid": os.getpid(), "alive": True, "nodes": self.functions.nodes.status()}],
        }

    def _fn_disable(self, peer: rpc.ServerPeer, args: list[Any]) -> Any:
        """[service, request_type, version or null (every version)]; held across re-pushes."""
        return self._change_function("disable", args)

    def _fn_enable(self, peer: rpc.ServerPeer, args: list[Any]) -> Any:
        return self._change_function("enable", args)

    def _fn_delete(self, peer: rpc.ServerPeer, args: list[Any]) -> Any:
        return self._change_function("delete", args)

    def _change_function(self, op: str, args: list[Any]) -> Any:
        service, request_type, version = [*args, None, None, None][:3]
        result = self.sync.change_function(op, str(service), str(request_type), version)
        return result if self.on_change is None else self._announce(result)

    def _ping(self, peer: rpc.ServerPeer, args: list[Any]) -> str:
        return "pong"

    async def _announce(self, result: dict[str, Any]) -> dict[str, Any]:
        """A change (a push, an admin's disable/enable/delete) answered once every worker serves
        it (or says which did not)."""
        assert self.on_change is not None
        sent = await self.on_change()
        return {
            **result,
            "generation": sent["generation"],
            "workers": sent["workers"],
            "missing": sent["missing"],
            "broadcast_ms": sent["ms"],
        }

    # ----------------------------------------------------------------- relay groups
    def _relay(self, peer: rpc.ServerPeer, args: list[Any]) -> Any:
        """[op, {args}]: a relay-group operation from Python (RelayClient) or the CLI, with the
        acting user named in the args (none for the admin side's delete and info). A refusal
        by the group rules is an answer: {"error": code, "text": ...}."""
        if self.relay is None:
            raise Refused("relay groups are not held by this process")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.relay.ask(str(args[0]), args[1] if len(args) > 1 else {}, None, fut.set_result)
        return _relay_answer(fut.result()) if fut.done() else self._relay_later(fut)

    async def _relay_later(self, fut: asyncio.Future[Any]) -> Any:
        """An authority that answers later (one shared by several hosts)."""
        return _relay_answer(await fut)

    # ----------------------------------------------------------------- rate limits
    def _limits(self) -> RateLimitStore:
        if self.limits is None:
            raise Refused(
                "rate limiting is off: [rate_limiter] enabled = false, or no limit was configured at "
                "start (the shared table is made at start: configure a limit and restart)"
            )
        return self.limits

    def _rl_status(self, peer: rpc.ServerPeer, args: list[Any]) -> Any:
        """[key, value, service?, request_type?]: the value's use under each limit on that key."""
        limits = self._limits()
        key, value, service, request_type = [*args, None, None][:4]
        if limits.shared:
            return self._engine(limits.status_all(str(key), str(value), service, request_type))
        return limits.status(str(key), str(value), service, request_type)

    def _rl_reset(self, peer: rpc.ServerPeer, args: list[Any]) -> Any:
        limits = self._limits()
        if limits.shared:
            return self._engine(limits.reset_all(str(args[0]), str(args[1])), lambda freed: {"freed": freed})
        return {"freed": limits.reset(str(args[0]), str(args[1]))}

    async def _engine(self, answer: Coroutine[Any, Any, Any], shape: Callable[[Any], Any] = lambda a: a) -> Any:
        """A verb that asks Redis (`[engine] type = "redis"`): refused, saying so, while it cannot."""
        from genapi.engine import redis as engine_redis

        try:
            return shape(await answer)
        except engine_redis.errors() as exc:
            raise Refused(f"the rate-limit engine (Redis) cannot be reached: {type(exc).__name__}: {exc}") from None

    def _rl_config(self, peer: rpc.ServerPeer, args: list[Any]) -> dict[str, Any]:
        return self._limits().config()

    def _rl_update(self, peer: rpc.ServerPeer, args: list[Any]) -> Any:
        """[the whole [rate_limiter] config]."""
        limits = self._limits()
        limits.update(args[0])
        return self._limits_changed(peer, "update", limits)

    def _rl_global_add(self, peer: rpc.ServerPeer, args: list[Any]) -> Any:
        """[{"key", "max_requests", "window_ms"}]."""
        limits = self._limits()
        limits.add_global(args[0])
        return self._limits_changed(peer, "add-global", limits)

    def _rl_global_remove(self, peer: rpc.ServerPeer, args: list[Any]) -> Any:
        """[key]."""
        limits = self._limits()
        limits.remove_global(str(args[0]))
        return self._limits_changed(peer, "remove-global", limits)

    def _limits_changed(self, peer: rpc.ServerPeer, target: str, limits: RateLimitStore) -> Any:
        """A rate-limit change is answered once every worker has it."""
        log.warning("rate_limits_changed", by=peer.peername, change=target)
        if self.on_limits is None:
            return {"config": limits.config()}
        return self._announce_limits(limits.config())

    async def _announce_limits(self, config: dict[str, Any]) -> dict[str, Any]:
        assert self.on_limits is not None
        sent = await self.on_limits(config)
        return {"config": config, "workers": sent["workers"], "missing": sent["missing"]}


_BREAKER_ORDER = {"closed": 0, "half_open": 1, "open": 2}


def merge_nodes(workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per node over the workers (each holds its own links and breakers): the worst breaker
    state, calls in flight and failures summed, connected from any worker, and each worker's own."""
    merged: dict[str, dict[str, Any]] = {}
    for w in workers:
        for n in w.get("nodes") or []:
            row = merged.setdefault(
                n["address"],
                {
                    "address": n["address"],
                    "state": "closed",
                    "in_flight": 0,
                    "failures": 0,
                    "connected": False,
                    "workers": [],
                },
            )
            if _BREAKER_ORDER.get(n.get("state"), 0) > _BREAKER_ORDER.get(row["state"], 0):
                row["state"] = n["state"]
            row["in_flight"] += n.get("in_flight", 0)
            row["failures"] += n.get("failures", 0)
            row["connected"] = row["connected"] or bool(n.get("connected"))
            row["workers"].append(
                {
                    "index": w.get("index"),
                    "pid": w.get("pid"),
                    **{k: n.get(k) for k in ("state", "in_flight", "failures", "connected", "opened_ms_ago")},
                }
            )
    return [merged[a] for a in sorted(merged)]


def _relay_answer(out: Any) -> Any:
    """A refusal by the group rules is an answer: {"error": code, "text": ...}."""
    if isinstance(out, RelayError):
        return {"error": out.code, "text": out.text, **({"can_retry": True} if out.can_retry else {})}
    return out
