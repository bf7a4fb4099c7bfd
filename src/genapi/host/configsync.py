"""Config sync: configs pushed by service nodes to the control port, configs pulled from the
nodes of `[[services]]`, and the functions an operator disabled by hand.

PhoenixGenApi's semantics (ConfigReceiver / ConfigPuller): a push is idempotent by
`config_version` (the same version again is skipped unless `force`), `verify` answers matched /
mismatch / not_found, a pushed service is then refreshed by pulls from its nodes, and a pull
first asks the node's config version and fetches the configs only when it changed. Failed
pulls are recorded and retried with exponential backoff (up to PULL_BACKOFF_MAX_S).

genapi differs: several nodes pushing the same service and version are merged (the service is
served by all of them), where the original keeps the first; a newer version replaces the node
list with its pusher's. A pushed config may not be `nodes = "local"` (that would run code of the
gateway's choosing named by a remote peer).

What is held per service lives in a config store (`engine/configs.py`); the control port's
verbs (`host/control.py`) call in here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from genapi import log, telemetry
from genapi.config import NonEmpty, Settings
from genapi.engine.configs import ConfigStore, FunctionKey, ServiceState
from genapi.errors import module_not_allowed, too_many_pushed
from genapi.nodes import rpc
from genapi.request.bind import Functions
from genapi.structs import FunConfig

if TYPE_CHECKING:
    from genapi.engine.shared_configs import SharedConfigs

__all__ = ["PULL_BACKOFF_MAX_S", "ConfigSync", "PushMessage", "Refused", "ServiceState"]

PULL_BACKOFF_MAX_S = 300.0
Source = tuple[str, ...]  # a pulled source: the node addresses its services are pulled from


class PushMessage(msgspec.Struct, forbid_unknown_fields=True):
    """What a service node pushes (PhoenixGenApi's PushConfig)."""

    service: NonEmpty
    config_version: NonEmpty
    nodes: list[NonEmpty]
    fun_configs: list[dict[str, Any]]


class Refused(Exception):
    """A control request that cannot be applied (a push: the text names every problem)."""


class ConfigSync:
    """Applies pushes and runs the pull loops into `functions`' (authoritative) registry, for
    the one process holding the control port."""

    def __init__(
        self,
        functions: Functions,
        settings: Settings,
        store: ConfigStore,
        secret: bytes | None,
        on_change: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    ) -> None:
        self.functions = functions
        self.store = store
        self.secret = secret  # the cluster secret the nodes pulled from demand
        self.on_change = on_change  # the master's broadcast, when there are workers
        self.cluster = settings.cluster
        self.allowed = tuple(settings.gateway.allowed_modules)  # what a push may name for the gateway to run
        self.configured = {src.service: list(src.nodes) for src in settings.services}
        self.held_disabled: set[FunctionKey] = set()  # disabled by hand (admin)
        self.pullers: dict[Source, asyncio.Task[None]] = {}  # one pull task per source (its node list)
        # [engine] type = "redis": the configs every host shares (set by the control plane)
        self.shared: SharedConfigs | None = None

    def start(self) -> None:
        """Starts the pulls of `[[services]]`."""
        for nodes in self.configured.values():
            self._pull_from(nodes, first_delay=0.0)

    def stop(self) -> None:
        for task in self.pullers.values():
            task.cancel()

    # ----------------------------------------------------------------- switches by hand
    def change_function(self, op: str, service: str, request_type: str, version: Any) -> dict[str, Any]:
        """Disables, enables or deletes a function in the authoritative registry (PhoenixGenApi's
        ConfigDb disable/enable/delete): one version, or every version when `version` is None.
        A function disabled by hand stays disabled when its service pushes or is pulled again,
        changed or not, until it is enabled (or deleted) by hand: an operator's switch is not
        undone by a node's routine re-push."""
        if version is not None and not isinstance(version, str):
            raise Refused(
                f"cannot {op} {service}.{request_type}: version must be a string or null "
                f"(every version), got {version!r}"
            )
        registry = self.functions.registry
        versions = [
            cfg.version for cfg in registry.list() if cfg.service == service and cfg.request_type == request_type
        ]
        if version is not None:
            versions = [v for v in versions if v == version]
        if not versions:
            which = f"{service}.{request_type}" + (f" version {version}" if version is not None else "")
            raise Refused(f"no function {which} to {op}")
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
                state = self.store.get(service)
                if state is not None and key in state.keys:
                    state.keys = [k for k in state.keys if k != key]
                    self.store.put(state)
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

    # ----------------------------------------------------------------- push, verify, status
    def push(self, raw: Any, force: bool = False, source: str = "push") -> dict[str, Any]:
        """Applies a pushed (or pulled) service config; raises Refused naming every problem."""
        message = self.message(raw)
        state = self.store.get(message.service)
        if state is not None and state.config_version == message.config_version and not force:
            new_nodes = [n for n in message.nodes if n not in state.nodes]
            if not new_nodes:
                return {"status": "skipped", "reason": "version_matches"}
            message.nodes = state.nodes + new_nodes  # another node of the same version: serve from all
        return self.commit(message, self.check(message), force, source)

    def message(self, raw: Any) -> PushMessage:
        try:
            return msgspec.convert(raw, PushMessage)
        except msgspec.ValidationError as exc:
            raise Refused(f"push: {exc}") from None

    def check(self, message: PushMessage) -> list[FunConfig]:
        """The push's FunConfigs, checked (the trust boundary: every problem named, the
        modules a config names for the gateway to run, the bounds); nothing applied yet."""
        state = self.store.get(message.service)
        configs = self.keep_disabled(self._configs(message, state))
        old = state.keys if state is not None else []
        self._bounded(message.service, state is None, len(configs) - len(old))
        return configs

    def commit(self, message: PushMessage, configs: list[FunConfig], force: bool, source: str) -> dict[str, Any]:
        """Serves `configs` (checked by `check`) as `message`'s service."""
        state = self.store.get(message.service)
        old = state.keys if state is not None else []
        try:
            self.functions.replace(old, configs)
        except ValueError as exc:
            raise Refused(f"push of {message.service}: {exc}") from None
        keys = [(c.service, c.request_type, c.version) for c in configs]
        fresh = ServiceState(message.service, message.config_version, message.nodes, message.fun_configs, keys, source)
        if state is not None:
            fresh.pulled_at, fresh.pull_failures = state.pulled_at, state.pull_failures
        self.store.put(fresh)
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
            self._pull_from(fresh.nodes, first_delay=self.cluster.pull_interval_ms / 1000)
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
                held = self.functions.registry.item(message.service, str(ident[0]), ident[1])
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
            problems += [f"{label}: {p}" for p in self._not_allowed(cfg)]
            ident = (cfg.request_type, cfg.version)
            if ident in seen:
                which = f"version {cfg.version}" if cfg.version is not None else "unversioned"
                problems.append(f"{label}: duplicate function {cfg.request_type} ({which})")
            seen.add(ident)
            configs.append(cfg)
        if problems:
            raise Refused(f"push of {message.service} refused: " + "; ".join(problems))
        return configs

    def _bounded(self, service: str, new_service: bool, more_functions: int) -> None:
        """Refuses a push that would make the gateway hold more services or functions than
        `[cluster] max_services` / `max_functions`: what peers may push costs the gateway memory
        and work (a pull task per service, every function in each broadcast)."""
        services = len(self.store) + new_service
        functions = len(self.functions.registry) + more_functions
        c = self.cluster
        if (new_service and services > c.max_services) or (more_functions > 0 and functions > c.max_functions):
            raise Refused(too_many_pushed(service, services, functions, c.max_services, c.max_functions))

    def _not_allowed(self, cfg: FunConfig) -> list[str]:
        """What a pushed (or pulled) config names for the gateway itself to import and run that
        `[gateway] allowed_modules` does not cover. Checked before anything of the push is
        imported (binding imports), so a refused push runs nothing, not even a module's
        top-level code. The gateway's own config file is trusted and not checked."""
        return [
            module_not_allowed(field, module, self.allowed)
            for field, target in cfg.gateway_targets()
            if not module_allowed(module := target.partition(":")[0], self.allowed)
        ]

    def verify(self, service: str, config_version: str) -> dict[str, Any]:
        return self.store.verify(service, config_version)

    def status(self) -> dict[str, dict[str, Any]]:
        """Pushed-services status: per service its version, nodes, functions and pull record."""
        return self.store.status()

    # ----------------------------------------------------------------- pulls
    def _pull_from(self, nodes: list[str], first_delay: float) -> None:
        """Makes sure the source `nodes` has its one pull task. However many services name the
        same nodes (a peer may push many), they are pulled by one task, one round at a time."""
        source = tuple(nodes)
        task = self.pullers.get(source)
        if task is None or task.done():
            self.pullers[source] = asyncio.ensure_future(self._pull_loop(source, first_delay))

    def _services_of(self, source: Source) -> list[tuple[str, list[str]]]:
        """The services pulled from `source` now: configured ones, and pushed ones whose nodes it is."""
        out = [(service, nodes) for service, nodes in self.configured.items() if tuple(nodes) == source]
        for service in self.store.names():
            state = self.store.get(service)
            if service not in self.configured and state is not None and tuple(state.nodes) == source:
                out.append((service, state.nodes))
        return out

    async def _pull_loop(self, source: Source, delay: float) -> None:
        """Each round: one connection to the source (its first node that answers), over which
        every service of the source is pulled. A failed round backs off exponentially (up to
        PULL_BACKOFF_MAX_S). Ends when the source serves no service any more."""
        interval = self.cluster.pull_interval_ms / 1000
        failures = 0
        while True:
            await asyncio.sleep(delay)
            services = self._services_of(source)
            if not services:
                self.pullers.pop(source, None)
                return
            names = [service for service, _nodes in services]
            if self.shared is not None:  # one host pulls each service: the holder of its lease
                names = [name for name in names if await self.shared.may_pull(name)]
                if not names:
                    delay = interval
                    continue
            failed = not await self._round(source, names, failures + 1)
            failures = failures + 1 if failed else 0
            delay = min(interval * 2**failures, max(PULL_BACKOFF_MAX_S, interval))

    async def _round(self, source: Source, services: list[str], attempt: int) -> bool:
        """One pull of each of `services` from `source`; False when any of them failed (each
        failure recorded on its service)."""
        timeout = self.cluster.pull_timeout_ms / 1000
        peer: rpc.ClientPeer | None = None
        error: Exception = rpc.RpcError(rpc.LOST, f"no nodes to pull {', '.join(services)} from")
        for address in source:
            try:
                peer = await rpc.connect(address, self.secret, "genapi-puller", timeout)
                break
            except rpc.RpcError as exc:
                error = exc
        ok = True
        try:
            for service in services:
                try:
                    outcome = await self.pull(service, peer, error)
                    log.debug("config_pulled", service=service, outcome=outcome)
                except (rpc.RpcError, Refused) as exc:
                    ok = False
                    self._pull_failed(service, exc, attempt)
        finally:
            if peer is not None:
                peer.close()
        return ok

    def _pull_failed(self, service: str, exc: Exception, attempt: int) -> None:
        text = exc.text if isinstance(exc, rpc.RpcError) else str(exc)
        log.warning("config_pull_failed", service=service, failures=attempt, error=text)
        state = self.store.get(service)
        if state is not None:
            state.pull_failures += 1
            state.last_error = text
            self.store.put(state)

    async def pull(self, service: str, peer: rpc.ClientPeer | None, unreachable: Exception) -> str:
        """One pull of `service` over `peer` (a node of its source; None: none answered, and
        `unreachable` says why): asks the node's config version, and for the configs only when
        it differs from the one held. "unchanged", "accepted" or "skipped"."""
        started = time.perf_counter()
        telemetry.execute("genapi.config.pull.start", {"system_time": time.time_ns()}, {"service": service})
        count, version = 0, None
        try:
            if peer is None:
                raise unreachable
            outcome = await self._pull(service, peer)
            state = self.store.get(service)
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

    async def _pull(self, service: str, peer: rpc.ClientPeer) -> str:
        timeout = self.cluster.pull_timeout_ms / 1000
        version = await peer.request("$config_version", [], timeout)
        state = self.store.get(service)
        if state is not None and state.config_version == version:
            self._pulled(state)
            return "unchanged"
        message = await peer.request("$config", [], timeout)
        if not isinstance(message, dict) or message.get("service") != service:
            got = message.get("service") if isinstance(message, dict) else message
            raise Refused(f"node {peer.address} answered a config for {got!r}, not {service!r}")
        if self.shared is not None:  # stored in Redis (fenced by the version), then served here
            outcome = (await self.shared.push(message, False, "pull"))["status"]
        else:
            outcome = self.push(message, False, "pull")["status"]
            if outcome == "accepted" and self.on_change is not None:
                await self.on_change()
        state = self.store.get(service)
        assert state is not None  # just pushed, or held at its version
        self._pulled(state)
        return str(outcome)

    def _pulled(self, state: ServiceState) -> None:
        state.pulled_at = time.time()
        state.pull_failures = 0
        state.last_error = None
        self.store.put(state)


def module_allowed(module: str, allowed: tuple[str, ...]) -> bool:
    """`module` is one of the `allowed` prefixes or inside one (`"myapp"` covers `myapp.hooks`)."""
    return any(module == prefix or module.startswith(prefix + ".") for prefix in allowed)
