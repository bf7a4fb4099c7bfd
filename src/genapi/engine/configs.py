"""The config store: what holds each pushed (or pulled) service's configs under its
`config_version`, for the control plane (`host/configsync.py`) to push into, verify against and
report.

`ConfigStore` is the interface; `HostConfigs` is today's single-host store, a dict in the
process that holds the control port (the master, or a lone worker). A store shared by several
hosts (e.g. Redis) is an addition beside it: `get` answers a copy, a change is `put` back.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

FunctionKey = tuple[str, str, str | None]  # (service, request_type, version)


class ServiceState:
    """One pushed or pulled service as the gateway holds it."""

    def __init__(
        self,
        service: str,
        config_version: str,
        nodes: list[str],
        fun_configs: list[dict[str, Any]],
        keys: list[FunctionKey],
        source: str,
    ) -> None:
        self.service = service
        self.config_version = config_version
        self.nodes = list(nodes)
        self.fun_configs = fun_configs
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


class ConfigStore(Protocol):
    """Each service's configs under its config_version."""

    def get(self, service: str) -> ServiceState | None:
        """The service as held, or None; change it by `put`ting it back."""
        ...

    def put(self, state: ServiceState) -> None:
        """Holds `state` as its service's (replacing the one held)."""
        ...

    def verify(self, service: str, config_version: str) -> dict[str, Any]:
        """PhoenixGenApi's verify: {"status": "matched" | "not_found"} or
        {"status": "mismatch", "version": the held one}."""
        ...

    def status(self) -> dict[str, dict[str, Any]]:
        """Per service (sorted by name): its version, nodes, functions and pull record."""
        ...

    def names(self) -> list[str]:
        """The services held."""
        ...

    def __len__(self) -> int: ...


class HostConfigs:
    """The single-host config store: the services in this process's memory."""

    def __init__(self) -> None:
        self.services: dict[str, ServiceState] = {}

    def get(self, service: str) -> ServiceState | None:
        return self.services.get(service)

    def put(self, state: ServiceState) -> None:
        self.services[state.service] = state

    def verify(self, service: str, config_version: str) -> dict[str, Any]:
        state = self.services.get(service)
        if state is None:
            return {"status": "not_found"}
        if state.config_version == config_version:
            return {"status": "matched"}
        return {"status": "mismatch", "version": state.config_version}

    def status(self) -> dict[str, dict[str, Any]]:
        return {name: state.status() for name, state in sorted(self.services.items())}

    def names(self) -> list[str]:
        return list(self.services)

    def __len__(self) -> int:
        return len(self.services)
