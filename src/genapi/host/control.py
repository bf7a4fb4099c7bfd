"""The gateway's control plane: configs pushed by service nodes to the control port, configs
pulled from the nodes of `[[services]]`, and the status of both.

PhoenixGenApi's semantics (ConfigReceiver / ConfigPuller): a push is idempotent by
`config_version` (the same version again is skipped unless `force`), `verify` answers matched /
mismatch / not_found, a pushed service is then refreshed by pulls from its nodes, and a pull
first asks the node's config version and fetches the configs only when it changed. Failed
pulls are recorded and retried with exponential backoff (up to PULL_BACKOFF_MAX_S).

genapi differs: several nodes pushing the same service and version are merged (the service is
served by all of them), where the original keeps the first; a newer version replaces the node
list with its pusher's. A pushed config may not be `nodes = "local"` (that would run code of the
gateway's choosing named by a remote peer).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from genapi import __version__, log, telemetry
from genapi.config import NonEmpty, Settings
from genapi.errors import ConfigError, RelayError
from genapi.nodes import rpc
from genapi.relay.groups import Groups
from genapi.request.pipeline import Pipeline
from genapi.structs import FunConfig

PULL_BACKOFF_MAX_S = 300.0


class PushMessage(msgspec.Struct, forbid_unknown_fields=True):
    """What a service node pushes (PhoenixGenApi's PushConfig)."""

    service: NonEmpty
    config_version: NonEmpty
    nodes: list[NonEmpty]
    fun_configs: list[dict[str, Any]]


class ServiceState:
    """One pushed or pulled service as the gateway holds it."""

    def __init__(self, message: PushMessage, keys: list[tuple[str, str, str | None]], source: str) -> None:
        self.service = message.service
        self.config_version = message.config_version
        self.nodes = list(message.nodes)
        self.fun_configs = message.fun_configs
        self.keys = keys
        self.source = source
        self.updated_at = time.time()
        self.pulled_at: float | None = None
        self.pull_failures = 0
        self.last_error: str | None = None

    def status(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "config_version": self.config_version,
            "nodes": self.nodes,
            "functions": [f"{rt}@{v}" if v else rt for _s, rt, v in self.keys],
            "source": self.source,
            "updated_at": self.updated_at,
            "pulled_at": self.pulled_at,
            "pull_failures": self.pull_failures,
            "last_error": self.last_error,
        }


class Refused(Exception):
    """A push that cannot be applied; the text names every problem."""


class ControlPlane:
    """Receives pushes on the control port and runs the pull loops, for one gateway process."""

    def __init__(
        self, pipeline: Pipeline, settings: Settings, on_change: Callable[[], Awaitable[dict[str, Any]]] | None = None
    ) -> None:
        self.pipeline = pipeline
        self.on_change = on_change  # the master's broadcast: a change is answered once every worker has it
        self.limits: Any = None  # ratelimit.RateLimits, when [rate_limiter] is enabled
        self.relay: Groups | None = None  # the host's relay groups, where this process holds them
        self.on_limits: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = None
        # the process holding this plane (master, or lone worker): its config generation, restarts
        # and workers (index, pid, alive, generation, restarts, connections, nodes) for `$status`/`$nodes`
        self.inspect: Callable[[], Awaitable[dict[str, Any]]] | None = None
        self.held_disabled: set[tuple[str, str, str | None]] = set()  # disabled by hand (admin)
        self.started = time.monotonic()
        self.cluster = settings.cluster
        self.secret = rpc.secret_from(settings.cluster.secret)
        self.services: dict[str, ServiceState] = {}
        self.pullers: dict[str, asyncio.Task[None]] = {}
        self.configured = {src.service: list(src.nodes) for src in settings.services}
        self.server: asyncio.Server | None = None
        self.address = ""
        self._tasks: set[asyncio.Future[None]] = set()

    async def start(self, sock: socket.socket | None) -> None:
        """Serves the control port's socket (None: no control port) and starts the configured pulls."""
        if sock is not None:
            self.server = await rpc.listen(sock, self.secret, "genapi-control", self)
            bound = sock.getsockname()
            self.address = f"{bound[0]}:{bound[1]}"
            log.info("control_port_ready", address=self.address, secured=self.secret is not None)
        for service, nodes in self.configured.items():
            self._pull_from(service, nodes, first_delay=0.0)

    async def stop(self) -> None:
        for task in self.pullers.values():
            task.cancel()
        if self.server is not None:
            self.server.close()

    # ----------------------------------------------------------------- rpc handler
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
            if target == "$push":
                message, force = [*args, False][:2]
                result = self.push(message, bool(force), "push")
                if self.on_change is None or result["status"] != "accepted":
                    peer.result(cid, result)
                else:
                    self._tasks.add(task := asyncio.ensure_future(self._announce(peer, cid, result)))
                    task.add_done_callback(self._tasks.discard)
            elif target == "$verify":
                peer.result(cid, self.verify(*args[:2]))
            elif target == "$pushed":
                peer.result(cid, self.status())
            elif target == "$functions":
                peer.result(cid, [msgspec.to_builtins(cfg) for cfg in self.pipeline.registry.list()])
            elif target in ("$nodes", "$status"):
                self._later(self._inspect(peer, cid, target))
            elif target in ("$fn_disable", "$fn_enable", "$fn_delete"):
                service, request_type, version = [*args, None, None, None][:3]
                result = self.change_function(target[4:], str(service), str(request_type), version)
                if self.on_change is None:
                    peer.result(cid, result)
                else:
                    self._later(self._announce(peer, cid, result))
            elif target == "$ping":
                peer.result(cid, "pong")
            elif target == "$relay":
                self._relay(peer, cid, args)
            elif target.startswith("$rl_"):
                self._rate_limits(peer, cid, target, args)
            else:
                peer.error(cid, rpc.UNKNOWN, f"no control request {target!r}")
        except (Refused, ConfigError) as exc:
            log.warning("control_request_refused", peer=peer.peername, target=target, error=str(exc))
            peer.error(cid, rpc.REFUSED, str(exc))
        except (TypeError, ValueError, IndexError, KeyError, AttributeError) as exc:
            peer.error(cid, rpc.REFUSED, f"bad arguments for {target}: {type(exc).__name__}: {exc}")

    def _later(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _inspect(self, peer: rpc.ServerPeer, cid: int, target: str) -> None:
        """`$status` (the gateway and its workers) or `$nodes` (the node pool, per node over the
        workers: only the workers hold live node links)."""
        try:
            view: dict[str, Any] = (
                await self.inspect()
                if self.inspect is not None
                else {
                    "generation": 0,
                    "restarts": 0,
                    "workers": [{"index": 0, "pid": os.getpid(), "alive": True, "nodes": self.pipeline.nodes.status()}],
                }
            )
            if target == "$nodes":
                answer: Any = merge_nodes(view["workers"])
            else:
                answer = {
                    "pid": os.getpid(),
                    "version": __version__,
                    "uptime_s": round(time.monotonic() - self.started, 3),
                    "generation": view["generation"],
                    "functions": len(self.pipeline.registry),
                    "pushed": len(self.services),
                    "restarts": view["restarts"],
                    "workers": [{k: v for k, v in w.items() if k != "nodes"} for w in view["workers"]],
                }
        except Exception as exc:  # answered, logged; the control port goes on
            log.error("control_inspect_failed", target=target, exc_info=True)
            return peer.error(cid, rpc.REFUSED, f"{target}: {type(exc).__name__}: {exc}")
        peer.result(cid, answer)

    def change_function(self, op: str, service: str, request_type: str, version: Any) -> dict[str, Any]:
        """Disables, enables or deletes a function in the authoritative registry (PhoenixGenApi's
        ConfigDb disable/enable/delete): one version, or every version when `version` is None.
        A function disabled by hand stays disabled when its service pushes or is pulled again,
        changed or not, until it is enabled (or deleted) by hand: an operator's switch is not
        undone by a node's routine re-push."""
        if version is not None and not isinstance(version, str):
            raise Refused(f"$fn_{op}: version must be a string or null, got {version!r}")
        registry = self.pipeline.registry
        versions = [
            cfg.version for cfg in registry.list() if cfg.service == service and cfg.request_type == request_type
        ]
        if version is not None:
            versions = [v for v in versions if v == version]
        if not versions:
            which = f"{service}.{request_type}" + (f" version {version}" if version is not None else "")
            raise Refused(f"$fn_{op}: no function {which}")
        for v in versions:
            key = (service, request_type, v)
            if op == "disable":
                registry.disable(service, request_type, v)
                self.held_disabled.add(key)
            elif op == "enable":
                registry.enable(service, request_type, v)
                self.held_disabled.discard(key)
            else:
                registry.delete(service, request_type, v)
                self.held_disabled.discard(key)
                state = self.services.get(service)
                if state is not None and key in state.keys:
                    state.keys = [k for k in state.keys if k != key]
        log.warning("function_changed_by_admin", op=op, service=service, request_type=request_type, versions=versions)
        return {"status": f"{op}d", "service": service, "request_type": request_type, "versions": versions}

    def keep_disabled(self, configs: list[FunConfig]) -> list[FunConfig]:
        """`configs` with the functions disabled by hand disabled (a push, a pull, a reload)."""
        if not self.held_disabled:
            return configs
        return [
            msgspec.structs.replace(c, disabled=True)
            if not c.disabled and (c.service, c.request_type, c.version) in self.held_disabled
            else c
            for c in configs
        ]

    def _relay(self, peer: rpc.ServerPeer, cid: int, args: list[Any]) -> None:
        """A relay-group operation from Python (RelayClient) or the CLI: `[op, {args}]`, with
        the acting user named in the args (none for the admin side's delete and info). A
        refusal by the group rules is an answer: {"error": code, "text": ...}."""
        if self.relay is None:
            raise Refused("relay groups are not held by this process")
        out = self.relay.answer(str(args[0]), args[1] if len(args) > 1 else {})
        peer.result(cid, {"error": out.code, "text": out.text} if isinstance(out, RelayError) else out)
        self.relay.flush()

    def _rate_limits(self, peer: rpc.ServerPeer, cid: int, target: str, args: list[Any]) -> None:
        """rl_status, rl_reset, rl_config (read), and the changes: rl_update (the whole config),
        rl_global_add, rl_global_remove. A change is answered once every worker has it."""
        limits = self.limits
        if limits is None:
            raise Refused(
                "rate limiting is off: [rate_limiter] enabled = false, or no limit was configured at "
                "start (the shared table is made at start: configure a limit and restart)"
            )
        if target == "$rl_status":
            key, value, service, request_type = [*args, None, None][:4]
            return peer.result(cid, limits.status(str(key), str(value), service, request_type))
        if target == "$rl_reset":
            return peer.result(cid, {"freed": limits.reset(str(args[0]), str(args[1]))})
        if target == "$rl_config":
            return peer.result(cid, limits.config())
        if target == "$rl_update":
            limits.update(args[0])
        elif target == "$rl_global_add":
            limits.add_global(args[0])
        elif target == "$rl_global_remove":
            limits.remove_global(str(args[0]))
        else:
            return peer.error(cid, rpc.UNKNOWN, f"no control request {target!r}")
        log.warning("rate_limits_changed", by=peer.peername, request=target)
        if self.on_limits is None:
            return peer.result(cid, {"config": limits.config()})
        task = asyncio.ensure_future(self._announce_limits(peer, cid, limits.config()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _announce_limits(self, peer: rpc.ServerPeer, cid: int, config: dict[str, Any]) -> None:
        assert self.on_limits is not None
        sent = await self.on_limits(config)
        peer.result(cid, {"config": config, "workers": sent["workers"], "missing": sent["missing"]})

    async def _announce(self, peer: rpc.ServerPeer, cid: int, result: dict[str, Any]) -> None:
        """Answers a change (a push, an admin's disable/enable/delete) once every worker serves
        it (or says which did not)."""
        assert self.on_change is not None
        sent = await self.on_change()
        peer.result(
            cid,
            {
                **result,
                "generation": sent["generation"],
                "workers": sent["workers"],
                "missing": sent["missing"],
                "broadcast_ms": sent["ms"],
            },
        )

    def cancel(self, peer: rpc.ServerPeer, cid: int) -> None:
        pass

    def credit(self, peer: rpc.ServerPeer, cid: int, n: int) -> None:
        pass

    def lost(self, peer: rpc.ServerPeer) -> None:
        pass

    # ----------------------------------------------------------------- push, verify, status
    def push(self, raw: Any, force: bool = False, source: str = "push") -> dict[str, Any]:
        """Applies a pushed (or pulled) service config; raises Refused naming every problem."""
        try:
            message = msgspec.convert(raw, PushMessage)
        except msgspec.ValidationError as exc:
            raise Refused(f"push: {exc}") from None
        state = self.services.get(message.service)
        if state is not None and state.config_version == message.config_version and not force:
            new_nodes = [n for n in message.nodes if n not in state.nodes]
            if not new_nodes:
                return {"status": "skipped", "reason": "version_matches"}
            message.nodes = state.nodes + new_nodes  # another node of the same version: serve from all
        configs = self.keep_disabled(self._configs(message, state))
        old = state.keys if state is not None else []
        try:
            self.pipeline.replace(old, configs)
        except ValueError as exc:
            raise Refused(f"push of {message.service}: {exc}") from None
        keys = [(c.service, c.request_type, c.version) for c in configs]
        fresh = ServiceState(message, keys, source)
        if state is not None:
            fresh.pulled_at, fresh.pull_failures = state.pulled_at, state.pull_failures
        self.services[message.service] = fresh
        log.info(
            "config_applied",
            service=message.service,
            config_version=message.config_version,
            functions=len(configs),
            nodes=message.nodes,
            source=source,
            forced=force,
        )
        if message.service not in self.configured:  # refreshed by pulls from its nodes from now on
            self._pull_from(message.service, fresh.nodes, first_delay=self.cluster.pull_interval_ms / 1000)
        if source == "push":
            telemetry.execute(
                "genapi.config.push",
                {"count": len(configs)},
                {"service": message.service, "version": message.config_version},
            )
        return {"status": "accepted", "functions": len(configs)}

    def _configs(self, message: PushMessage, state: ServiceState | None) -> list[FunConfig]:
        """The push's FunConfigs, every problem at once. One pushed exactly as before (same map,
        same nodes) is the config already held: not checked again (a 10 000-function service
        pushed again with one change costs one check)."""
        problems: list[str] = []
        configs: list[FunConfig] = []
        seen: set[tuple[Any, Any]] = set()
        before: dict[Any, dict[str, Any]] = {}
        if state is not None and state.nodes == message.nodes:
            before = {(r.get("request_type"), r.get("version")): r for r in state.fun_configs if isinstance(r, dict)}
        for i, raw in enumerate(message.fun_configs, 1):
            label = f"fun_configs #{i}" + (f" ({raw.get('request_type')})" if isinstance(raw, dict) else "")
            if not isinstance(raw, dict):
                problems.append(f"{label}: must be a map")
                continue
            ident = (raw.get("request_type"), raw.get("version"))
            if before.get(ident) == raw and ident not in seen:
                held = self.pipeline.registry.item(message.service, str(ident[0]), ident[1])
                if held is not None:
                    seen.add(ident)
                    configs.append(held[0])
                    continue
            raw = dict(raw)
            if raw.setdefault("service", message.service) != message.service:
                problems.append(f"{label}: service {raw['service']!r} is not the pushed service {message.service!r}")
                continue
            if raw.get("nodes") == "local":
                problems.append(f'{label}: nodes: a pushed function runs on its nodes, never "local"')
                continue
            if raw.get("nodes") is None or isinstance(raw.get("nodes"), list):
                raw["nodes"] = list(message.nodes)  # the push's nodes serve its functions (merged per version)
            try:
                cfg = msgspec.convert(raw, FunConfig)
            except msgspec.ValidationError as exc:
                problems.append(f"{label}: {exc}")
                continue
            problems += [f"{label}: {p}" for p in cfg.errors()]
            ident = (cfg.request_type, cfg.version)
            if ident in seen:
                problems.append(f"{label}: duplicate function {cfg.request_type} version {cfg.version}")
            seen.add(ident)
            configs.append(cfg)
        if problems:
            raise Refused(f"push of {message.service} refused: " + "; ".join(problems))
        return configs

    def verify(self, service: str, config_version: str) -> dict[str, Any]:
        state = self.services.get(service)
        if state is None:
            return {"status": "not_found"}
        if state.config_version == config_version:
            return {"status": "matched"}
        return {"status": "mismatch", "version": state.config_version}

    def status(self) -> dict[str, Any]:
        """Pushed-services status: per service its version, nodes, functions and pull record."""
        return {name: state.status() for name, state in sorted(self.services.items())}

    # ----------------------------------------------------------------- pulls
    def _pull_from(self, service: str, nodes: list[str], first_delay: float) -> None:
        if service in self.pullers:
            return
        self.pullers[service] = asyncio.ensure_future(self._pull_loop(service, nodes, first_delay))

    async def _pull_loop(self, service: str, nodes: list[str], delay: float) -> None:
        interval = self.cluster.pull_interval_ms / 1000
        failures = 0
        while True:
            await asyncio.sleep(delay)
            state = self.services.get(service)
            current = state.nodes if state is not None and service not in self.configured else nodes
            try:
                outcome = await self.pull(service, current)
                failures = 0
                log.debug("config_pulled", service=service, outcome=outcome)
            except (rpc.RpcError, Refused) as exc:
                failures += 1
                text = exc.text if isinstance(exc, rpc.RpcError) else str(exc)
                log.warning("config_pull_failed", service=service, failures=failures, error=text)
                state = self.services.get(service)
                if state is not None:
                    state.pull_failures += 1
                    state.last_error = text
            delay = min(interval * 2**failures, max(PULL_BACKOFF_MAX_S, interval))

    async def pull(self, service: str, nodes: list[str]) -> str:
        """One pull: asks each node in turn for its config version, and for the configs only when
        the version differs from the one held. "unchanged", "accepted" or "skipped"."""
        started = time.perf_counter()
        telemetry.execute("genapi.config.pull.start", {"system_time": time.time_ns()}, {"service": service})
        count, version = 0, None
        try:
            outcome = await self._pull(service, nodes)
            state = self.services.get(service)
            if state is not None and outcome != "unchanged":
                count, version = len(state.keys), state.config_version
            elif state is not None:
                version = state.config_version
            return outcome
        finally:
            telemetry.execute(
                "genapi.config.pull.stop",
                {"duration_us": int((time.perf_counter() - started) * 1e6), "count": count},
                {"service": service, "version": version},
            )

    async def _pull(self, service: str, nodes: list[str]) -> str:
        timeout = self.cluster.pull_timeout_ms / 1000
        last: rpc.RpcError | None = None
        for address in nodes:
            try:
                peer = await rpc.connect(address, self.secret, "genapi-puller", timeout)
            except rpc.RpcError as exc:
                last = exc
                continue
            try:
                version = await peer.request("$config_version", [], timeout)
                state = self.services.get(service)
                if state is not None and state.config_version == version:
                    state.pulled_at = time.time()
                    state.pull_failures = 0
                    state.last_error = None
                    return "unchanged"
                message = await peer.request("$config", [], timeout)
                if not isinstance(message, dict) or message.get("service") != service:
                    got = message.get("service") if isinstance(message, dict) else message
                    raise Refused(f"node {address} answered a config for {got!r}, not {service!r}")
                outcome = self.push(message, False, "pull")["status"]
                if outcome == "accepted" and self.on_change is not None:
                    await self.on_change()
                state = self.services[service]
                state.pulled_at = time.time()
                state.pull_failures = 0
                state.last_error = None
                return str(outcome)
            except rpc.RpcError as exc:
                last = exc
            finally:
                peer.close()
        raise last or rpc.RpcError(rpc.LOST, f"no nodes to pull {service} from")


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
