"""The versioned FunConfig store: add, get, get_latest, disable, enable, delete, list.

Several versions of one (service, request_type) live side by side; a lookup without a version
(or with the reserved "0.0.0") resolves to the highest enabled version.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from genapi import telemetry
from genapi.errors import Disabled, NotFound
from genapi.structs import RESERVED_VERSION, FunConfig

__all__ = ["Disabled", "NotFound", "Registry", "version_key"]

T = TypeVar("T")


def version_key(version: str | None) -> tuple:
    """Orders versions numerically where they are numbers ("10.0.0" > "9.1.0"), else as text."""
    if version is None:
        return ((-1, ""),)
    return tuple((int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.\-+]", version))


class Registry(Generic[T]):
    """Maps (service, request_type, version) to a FunConfig and what was compiled from it.

    `T` is whatever the owner attaches to each config (the pipeline attaches its bound callable).
    """

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], dict[str | None, tuple[FunConfig, T]]] = {}
        self._latest: dict[tuple[str, str], tuple[FunConfig, T] | None] = {}
        self.generation = object()  # replaced on every change, so lookup caches know to drop
        # the (service, request_type, version) keys changed since `changes()` last answered, once
        # `record()` was called (the master, to publish only what changed); None: all of them
        self._changed: set[tuple[str, str, str | None]] | None = set()
        self._recording = False

    def record(self) -> None:
        """From now on, remember which keys change (`changes`)."""
        self._recording = True
        self._changed = None  # what came before is unknown to the caller: everything

    def changes(self) -> set[tuple[str, str, str | None]] | None:
        """The keys added, replaced, disabled, enabled or deleted since the last call (each may
        hold the config it held then again: compare to tell); None when the whole content was
        swapped (or on the first call). Starts afresh."""
        changed, self._changed = self._changed, set()
        return changed

    def _touched(self, service: str, request_type: str, version: str | None) -> None:
        if self._recording and self._changed is not None:
            self._changed.add((service, request_type, version))

    def add(self, config: FunConfig, attached: T = None) -> None:  # type: ignore[assignment]
        """Adds or replaces one version."""
        self._by_key.setdefault(config.key, {})[config.version] = (config, attached)
        self._refresh(config.key)
        self._touched(config.service, config.request_type, config.version)
        if telemetry.listening("genapi.config.add"):
            telemetry.execute("genapi.config.add", {}, _names(config.service, config.request_type, config.version))

    def _refresh(self, key: tuple[str, str]) -> None:
        self.generation = object()
        versions = self._by_key.get(key)
        if not versions:
            self._by_key.pop(key, None)
            self._latest.pop(key, None)
            return
        enabled = [v for v in versions.values() if not v[0].disabled]
        self._latest[key] = max(enabled, key=lambda e: version_key(e[0].version)) if enabled else None

    def replace_all(self, items: builtins.list[tuple[FunConfig, T]]) -> None:
        """Swaps the whole content in one step (a worker loading a config snapshot)."""
        by_key: dict[tuple[str, str], dict[str | None, tuple[FunConfig, T]]] = {}
        for cfg, attached in items:
            by_key.setdefault(cfg.key, {})[cfg.version] = (cfg, attached)
        latest: dict[tuple[str, str], tuple[FunConfig, T] | None] = {}
        for key, versions in by_key.items():
            if len(versions) == 1:  # most functions have one version: no ordering to do
                (only,) = versions.values()
                latest[key] = None if only[0].disabled else only
                continue
            enabled = [v for v in versions.values() if not v[0].disabled]
            latest[key] = max(enabled, key=lambda e: version_key(e[0].version)) if enabled else None
        self._by_key, self._latest = by_key, latest
        self.generation = object()
        self._changed = None
        if telemetry.listening("genapi.config.batch_add"):
            telemetry.execute("genapi.config.batch_add", {"count": len(items)}, {})

    def lookup(self, service: str, request_type: str, version: str | None) -> tuple[FunConfig, T]:
        """The hot-path lookup. Raises NotFound or Disabled."""
        key = (service, request_type)
        if version is None or version == RESERVED_VERSION:
            entry = self._latest.get(key, False)
            if entry is False:
                raise NotFound(key)
            if entry is None:
                raise Disabled(key)
            return entry  # type: ignore[return-value]
        versions = self._by_key.get(key)
        entry = versions.get(version) if versions else None
        if entry is None:
            raise NotFound(key)
        if entry[0].disabled:
            raise Disabled(key)
        return entry

    def get(self, service: str, request_type: str, version: str | None = None) -> FunConfig:
        return self.lookup(service, request_type, version)[0]

    def get_latest(self, service: str, request_type: str) -> FunConfig:
        return self.lookup(service, request_type, None)[0]

    def _set_disabled(self, service: str, request_type: str, version: str | None, flag: bool) -> None:
        import msgspec

        versions = self._by_key.get((service, request_type))
        if not versions or version not in versions:
            raise NotFound((service, request_type, version))
        cfg, attached = versions[version]
        versions[version] = (msgspec.structs.replace(cfg, disabled=flag), attached)
        self._refresh((service, request_type))
        self._touched(service, request_type, version)

    def disable(self, service: str, request_type: str, version: str | None) -> None:
        self._set_disabled(service, request_type, version, True)
        telemetry.execute("genapi.config.disable", {}, _names(service, request_type, version))

    def enable(self, service: str, request_type: str, version: str | None) -> None:
        self._set_disabled(service, request_type, version, False)
        telemetry.execute("genapi.config.enable", {}, _names(service, request_type, version))

    def delete(self, service: str, request_type: str, version: str | None) -> None:
        versions = self._by_key.get((service, request_type))
        if not versions or version not in versions:
            raise NotFound((service, request_type, version))
        del versions[version]
        self._refresh((service, request_type))
        self._touched(service, request_type, version)
        telemetry.execute("genapi.config.delete", {}, _names(service, request_type, version))

    def item(self, service: str, request_type: str, version: str | None) -> tuple[FunConfig, T] | None:
        """The (config, attached) of exactly this version, disabled or not; None when absent."""
        versions = self._by_key.get((service, request_type))
        return versions.get(version) if versions else None

    def configs(self) -> builtins.list[FunConfig]:
        """Every config, all versions, in no particular order (fast: a snapshot to publish)."""
        return [cfg for versions in self._by_key.values() for cfg, _ in versions.values()]

    def items(self) -> builtins.list[tuple[FunConfig, T]]:
        """Every (config, attached) pair, in no particular order."""
        return [item for versions in self._by_key.values() for item in versions.values()]

    def list(self) -> builtins.list[FunConfig]:
        """Every config, all versions, ordered by service, request_type, version."""
        return [cfg for cfg, _ in self]

    def functions(self) -> dict[str, dict[str, builtins.list[str | None]]]:
        """{service: {request_type: [versions]}}, like ConfigDb.get_all_functions."""
        out: dict[str, dict[str, builtins.list[Any]]] = {}
        for cfg in self.list():
            out.setdefault(cfg.service, {}).setdefault(cfg.request_type, []).append(cfg.version)
        return out

    def __iter__(self) -> Iterator[tuple[FunConfig, T]]:
        for key in sorted(self._by_key):
            versions = self._by_key[key]
            for v in sorted(versions, key=version_key):
                yield versions[v]

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_key.values())


def _names(service: str, request_type: str, version: str | None) -> dict[str, Any]:
    return {"service": service, "request_type": request_type, "version": version}
