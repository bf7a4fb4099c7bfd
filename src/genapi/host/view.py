"""The host's view from a worker (GET /ready, /metrics, `genapi admin status`): the worker alone
is the whole host (LoneHost), or the master, asked over the pipe, knows every worker (MasterHost)."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from genapi.engine.redis import EngineProbe
from genapi.engine.relay import RelayAuthority
from genapi.host import dashboard, metrics, pipe

if TYPE_CHECKING:
    from genapi.gateway.worker import Gateway
    from genapi.host.control import ControlPlane


class LoneHost:
    """The host's view when this worker is the whole gateway (`--workers 1`)."""

    def __init__(self, gateway: Gateway, relay: RelayAuthority | None, probe: EngineProbe | None = None) -> None:
        self.gateway = gateway
        self.relay = relay
        self.probe = probe  # the redis engine's, when [engine] type = "redis"
        self.plane: ControlPlane | None = None  # this worker's control plane, once made (the dashboard's verbs)

    def _up(self) -> bool:
        return self.gateway.server is not None and self.gateway.server.serving

    async def ready(self) -> dict[str, Any]:
        up = self._up()
        out: dict[str, Any] = {
            "ready": up,
            "workers": 1,
            "live": 1 if up else 0,
            "generation": self.gateway.generation,
            "behind": [],
        }
        return {**out, **engine_view(self.probe)}

    async def inspect(self) -> dict[str, Any]:
        """The host for `genapi admin status|nodes`: this one worker."""
        snap = self.gateway.metrics_snapshot()
        worker = {
            "index": 0,
            "pid": os.getpid(),
            "alive": True,
            "ready": self._up(),
            "generation": self.gateway.generation,
            "restarts": 0,
            "recent_crashes": 0,
            "connections": snap["connections"],
            "in_flight": snap["in_flight"],
            "nodes": snap["nodes"],
        }
        if "cluster_limits" in snap:
            worker["cluster_limits"] = snap["cluster_limits"]
        return {"generation": self.gateway.generation, "restarts": 0, "workers": [worker], **engine_view(self.probe)}

    async def metrics(self) -> str:
        relay = self.relay.stats() if self.relay is not None else {}
        return metrics.render(
            [self.gateway.metrics_snapshot()],
            {"generation": self.gateway.generation, "restarts": 0, "relay": relay, **engine_view(self.probe)},
        )

    async def dashboard(self, ask: list[Any]) -> Any:
        """GET /dashboard/state and the dashboard's actions (`host/dashboard.py`)."""
        if self.plane is None:
            return {"error": "refused", "text": "this worker holds no control plane"}
        relay = self.relay.stats() if self.relay is not None else {}
        return await dashboard.answer(self.plane, [self.gateway.metrics_snapshot()], relay, ask)


def engine_view(probe: EngineProbe | None) -> dict[str, Any]:
    """`{"engine": ...}`: the redis engine as the host sees it (nothing with the memory engine)."""
    return {} if probe is None else {"engine": probe.state()}


class MasterHost:
    """The host's view under a master: asked over the pipe (the master knows every worker)."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self.write = write
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)

    async def _ask(self, what: Literal["ready", "metrics", "dashboard"], args: list[Any] | None = None) -> Any:
        n = next(self._ids)
        fut = self.pending[n] = asyncio.get_running_loop().create_future()
        self.write(pipe.encode(pipe.HostAsk(n, what, args or [])))
        try:  # a dashboard action waits for every worker to serve the change
            return await asyncio.wait_for(fut, 5.0 if what != "dashboard" else 30.0)
        finally:
            self.pending.pop(n, None)

    async def ready(self) -> dict[str, Any]:
        return dict(await self._ask("ready"))

    async def metrics(self) -> str:
        return str(await self._ask("metrics"))

    async def dashboard(self, ask: list[Any]) -> Any:
        return await self._ask("dashboard", ask)

    def answered(self, message: pipe.HostAnswer) -> None:
        fut = self.pending.get(message.id)
        if fut is not None and not fut.done():
            fut.set_result(message.out)
