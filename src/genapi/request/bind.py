"""Binding a config to a callable entry, and the bound registry: one step shared by the worker,
the master and `genapi check`.

`Binder.bind(config)` is the one place a FunConfig becomes an `Entry` (its callee, validator,
hooks); it raises ValueError naming the function and what is wrong, so binding is also how a
config is validated. `Functions` is the registry of bound entries a process serves, with the
one-step swaps a push (`replace`) and a config snapshot (`load`) make.

A Binder is given only what it binds with: a worker's has the thread pool its plain functions
run on and the seats its relay operations act through; the master's and `check`'s have neither
(`Binder.checking`), since they bind to validate and publish, and never call.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from genapi import log, relay
from genapi._core.callee import Callee, LocalCallee
from genapi._core.dispatch import Entry
from genapi._core.handoff import ThreadPool
from genapi._core.validate import Limits
from genapi.config import Settings
from genapi.loader import load_callable
from genapi.nodes import rpc
from genapi.nodes.remote import Nodes, RemoteCallee
from genapi.relay.seats import Seats
from genapi.request import discovery
from genapi.request.registry import NotFound, Registry
from genapi.structs import FunConfig, split_target

Key = tuple[str, str, str | None]


def _key(cfg: FunConfig) -> Key:
    return (cfg.service, cfg.request_type, cfg.version)


REBUILD_OVER = 64  # more changes than this in one step: the registry is rebuilt (one batch_add)


def value_limits(settings: Settings) -> Limits:
    """The `[gateway]` bounds every argument value is validated against."""
    gw = settings.gateway
    return Limits(gw.string_max_bytes, gw.list_max_items, gw.map_max_items)


def node_links(settings: Settings) -> Nodes:
    """This process's links to the service nodes (opened on first call)."""
    return Nodes(settings.cluster, rpc.secret_from(settings.cluster.secret), f"gateway@{os.getpid()}")


class Binder:
    """Binds a FunConfig to its Entry. `registry`: what `genapi.list_apis` answers from; `pool`:
    where plain `def` functions run (None where entries are only checked, never called);
    `seats`: this worker's relay-group members (None outside a worker)."""

    def __init__(
        self,
        registry: Registry[Entry],
        limits: Limits,
        nodes: Nodes,
        detail_error: bool,
        pool: ThreadPool | None = None,
        seats: Seats | None = None,
    ) -> None:
        self.registry = registry
        self.limits = limits
        self.nodes = nodes
        self.detail_error = detail_error
        self.pool = pool
        self.seats = seats

    @classmethod
    def checking(cls, settings: Settings, registry: Registry[Entry]) -> Binder:
        """A Binder for processes that validate and publish configs but never call them (the
        master, `genapi check`): no thread pool, no seats."""
        return cls(registry, value_limits(settings), node_links(settings), settings.gateway.detail_error)

    def callee(self, config: FunConfig) -> Callee:
        """The callee that runs `config`'s function (raises ValueError naming what is wrong)."""
        if config.nodes != "local":
            try:
                return RemoteCallee(config, self.nodes, self.detail_error)
            except ValueError as exc:
                raise ValueError(f"{config.service}.{config.request_type}: {exc}") from None
        fn = load_callable(split_target(config.mfa)[0])
        if fn is discovery.list_apis:  # answers from this process's registry
            return discovery.ListApisCallee(config, self.registry, self.limits)
        op = relay.op_of(fn)
        if op is not None:  # genapi.relay's operations act on the caller's connection
            try:
                return relay.RelayCallee(op, config, self.seats)
            except ValueError as exc:
                raise ValueError(f"{config.service}.{config.request_type}: {exc}") from None
        # without a pool (master, check) the callee is bound to be checked, never started
        return LocalCallee(fn, config.timeout_ms(), self.pool, self.detail_error)

    def bind(self, config: FunConfig) -> Entry:
        """`config` compiled for calling (raises ValueError naming the function and field)."""
        return Entry(config, self.callee(config), self.limits)


class Functions:
    """The bound registry one process serves: every config bound by `binder` (a ValueError
    naming the function refuses the lot), swapped in one step by a push or a snapshot."""

    def __init__(self, registry: Registry[Entry], binder: Binder, configs: list[FunConfig]) -> None:
        self.registry = registry
        self.binder = binder
        for cfg in configs:
            self.add(cfg)

    @classmethod
    def checked(cls, settings: Settings) -> Functions:
        """`settings`' functions bound with nothing to run them (raises ValueError naming the
        first that cannot be bound): the master's registry, and what `genapi check` validates."""
        registry: Registry[Entry] = Registry()
        return cls(registry, Binder.checking(settings, registry), settings.functions)

    @property
    def nodes(self) -> Nodes:
        """The node links the remote entries are bound to."""
        return self.binder.nodes

    def add(self, config: FunConfig) -> None:
        """Binds and registers one config (raises ValueError naming the function and field)."""
        self.registry.add(config, self.binder.bind(config))

    def replace(self, old: list[Key], configs: list[FunConfig]) -> None:
        """Swaps a service's functions in one step: every new or changed config is bound first
        (a ValueError naming the function leaves the registry as it was), then the old keys
        that went go and the changed ones come, with no await between, so no request sees half
        of it. A config equal to the one it replaces is not touched: the registry keeps the old
        object and its Entry (nothing to rebind, and a snapshot publishes only what changed)."""
        registry = self.registry
        wanted = set(old)
        kept: set[Key] = set()
        bound = []
        for cfg in configs:
            key = _key(cfg)
            same = registry.item(*key) if key in wanted else None
            if same is not None and (same[0] is cfg or same[0] == cfg):
                kept.add(key)
                continue
            bound.append((cfg, self.binder.bind(cfg)))
        self._discard(key for key in old if key not in kept)
        for cfg, entry in bound:
            registry.add(cfg, entry)

    def load(self, configs: list[FunConfig]) -> int:
        """Serves exactly `configs` from now on (a config snapshot), in one step (no await). A
        config that is the one already served (the snapshot reader hands unchanged configs back
        as the same objects), or equal to it, keeps its compiled Entry; one that cannot be bound
        here is logged and left out. A few changes among many are applied one by one, else the
        registry is rebuilt. Returns how many were bound anew."""
        items = self.registry.items()
        by_id = {id(item[0]): item for item in items}
        kept: set[int] = set()
        changed = []
        for cfg in configs:
            if id(cfg) in by_id:
                kept.add(id(cfg))
            else:
                changed.append(cfg)
        if not changed and len(kept) == len(items):
            return 0  # the same registry
        bound, fresh = self._bind_changed(changed)
        removed = [item[0] for item in items if id(item[0]) not in kept]
        if len(bound) + len(removed) > REBUILD_OVER:
            self.registry.replace_all([by_id[i] for i in kept] + bound)
            return fresh
        self._discard(_key(cfg) for cfg in removed)  # gone, or replaced by a changed one
        for cfg, entry in bound:
            self.registry.add(cfg, entry)
        return fresh

    def apply(self, put: list[FunConfig], drop: list[Key]) -> int:
        """Applies what changed since the generation served (a config snapshot's delta), in one
        step (no await): the keys in `drop` go, each config in `put` replaces the one of its
        key. One equal to the config it replaces keeps its compiled Entry; one that cannot be
        bound here is logged and left out (its key gone, as `load` leaves it). Over
        REBUILD_OVER changes the registry is rebuilt, as `load` does. Returns how many were
        bound anew."""
        registry = self.registry
        bound, fresh = self._bind_changed(put)
        if len(bound) + len(drop) > REBUILD_OVER:
            replaced = set(drop) | {_key(c) for c in put}
            kept = [i for i in registry.items() if _key(i[0]) not in replaced]
            registry.replace_all(kept + bound)
            return fresh
        self._discard(_key(cfg) for cfg in put)  # the ones not bound go too
        self._discard(drop)
        for cfg, entry in bound:
            registry.add(cfg, entry)
        return fresh

    def _discard(self, keys: Iterable[Key]) -> None:
        """Deletes each of `keys` the registry holds (one it does not hold is already gone)."""
        for key in keys:
            try:
                self.registry.delete(*key)
            except NotFound:
                pass

    def _bind_changed(self, changed: list[FunConfig]) -> tuple[list[tuple[FunConfig, Entry]], int]:
        """`changed` bound, each with the Entry of the config it replaces when equal to it;
        one that cannot be bound is logged and left out. With how many were bound anew."""
        fresh = 0
        bound = []
        for cfg in changed:
            old = self.registry.item(cfg.service, cfg.request_type, cfg.version)
            if old is not None and old[0] == cfg:
                bound.append((cfg, old[1]))
                continue
            try:
                bound.append((cfg, self.binder.bind(cfg)))
                fresh += 1
            except ValueError as exc:
                log.error(
                    "config_not_bound",
                    service=cfg.service,
                    request_type=cfg.request_type,
                    version=cfg.version,
                    error=str(exc),
                )
        return bound, fresh
