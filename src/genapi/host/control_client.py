"""The client of a gateway's control port: one method per control verb (`host/control.py`
serves them), for `genapi admin`, `genapi ratelimit`, `genapi apis`, `RelayClient` and a
service node's pushes.

    async with ControlClient("127.0.0.1:4001") as control:
        print(await control.status())

Authenticated as `host/control_auth.py` says (the cluster secret given, else
GENAPI_CLUSTER_SECRET). A refusal or a lost connection raises `rpc.RpcError` (its `code`:
`refused`, `unknown`, `auth`, `lost`, `timeout`; its `text` says why).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from genapi.host import control_auth
from genapi.nodes import rpc

TIMEOUT_S = 10.0  # per request
CONNECT_TIMEOUT_S = 5.0


class ControlClient:
    """One connection to a gateway's control port, opened by `async with` (or `connect()`)."""

    def __init__(
        self,
        address: str = "127.0.0.1:4001",
        secret: str | bytes | None = None,
        *,
        name: str = "genapi-control-client",
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self.address = address
        self.secret = control_auth.client_secret(secret)
        self.name = name
        self.timeout_s = timeout_s
        self._peer: rpc.ClientPeer | None = None

    async def connect(self) -> ControlClient:
        if self._peer is None:
            self._peer = await control_auth.connect(self.address, self.secret, self.name, CONNECT_TIMEOUT_S)
        return self

    async def __aenter__(self) -> ControlClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._peer is not None:
            self._peer.close()
            self._peer = None

    @property
    def gone(self) -> asyncio.Future[None]:
        """Done when the connection is lost (a node pushes again once its gateway is back)."""
        if self._peer is None:
            raise RuntimeError("ControlClient is not connected")
        return self._peer.gone

    async def request(self, verb: str, args: list[Any]) -> Any:
        """One control request by its wire name (e.g. "$status"); the verb methods below are this."""
        if self._peer is None:
            await self.connect()
        assert self._peer is not None
        return await self._peer.request(verb, args, self.timeout_s)

    # ----------------------------------------------------------------- config sync (service nodes)
    async def push(self, message: dict[str, Any], force: bool = False) -> dict[str, Any]:
        """`$push`: a service's configs (PushMessage's fields); {"status": "accepted" | "skipped", ...}."""
        return cast(dict[str, Any], await self.request("$push", [message, force]))

    async def verify(self, service: str, config_version: str) -> dict[str, Any]:
        """`$verify`: {"status": "matched" | "not_found"} or {"status": "mismatch", "version": ...}."""
        return cast(dict[str, Any], await self.request("$verify", [service, config_version]))

    async def pushed(self) -> dict[str, dict[str, Any]]:
        """`$pushed`: per pushed (or pulled) service its version, nodes, functions and pull record."""
        return cast(dict[str, dict[str, Any]], await self.request("$pushed", []))

    async def pushed_hosts(self) -> dict[str, Any] | None:
        """`$pushed_hosts`: every host sharing the configs (alive, what it serves) and each
        service's record in Redis; None when the gateway shares nothing ([engine] type = "memory")."""
        return cast(dict[str, Any] | None, await self.request("$pushed_hosts", []))

    # ----------------------------------------------------------------- the registry and the gateway
    async def functions(self) -> list[dict[str, Any]]:
        """`$functions`: every function's config (all versions) as the registry holds it."""
        return cast(list[dict[str, Any]], await self.request("$functions", []))

    async def status(self) -> dict[str, Any]:
        """`$status`: the gateway (pid, version, uptime, generation, ...) and each of its workers."""
        return cast(dict[str, Any], await self.request("$status", []))

    async def nodes(self) -> list[dict[str, Any]]:
        """`$nodes`: the node pool per node over the workers (breaker, in flight, failures, connected)."""
        return cast(list[dict[str, Any]], await self.request("$nodes", []))

    async def fn_disable(self, service: str, request_type: str, version: str | None = None) -> dict[str, Any]:
        """`$fn_disable`: one version, or every version when None; held across re-pushes."""
        return cast(dict[str, Any], await self.request("$fn_disable", [service, request_type, version]))

    async def fn_enable(self, service: str, request_type: str, version: str | None = None) -> dict[str, Any]:
        return cast(dict[str, Any], await self.request("$fn_enable", [service, request_type, version]))

    async def fn_delete(self, service: str, request_type: str, version: str | None = None) -> dict[str, Any]:
        return cast(dict[str, Any], await self.request("$fn_delete", [service, request_type, version]))

    async def ping(self) -> str:
        """`$ping`: "pong"."""
        return cast(str, await self.request("$ping", []))

    # ----------------------------------------------------------------- relay groups
    async def relay(self, op: str, args: dict[str, Any]) -> Any:
        """`$relay`: one relay-group operation; a refusal by the group rules is an answer,
        {"error": code, "text": ...} (`RelayClient` raises it as RelayError)."""
        return await self.request("$relay", [op, args])

    # ----------------------------------------------------------------- rate limits
    async def rl_status(
        self, key: str, value: str, service: str | None = None, request_type: str | None = None
    ) -> list[dict[str, Any]]:
        """`$rl_status`: a key value's use under each limit on that key (a function's limits when named)."""
        return cast(list[dict[str, Any]], await self.request("$rl_status", [key, value, service, request_type]))

    async def rl_reset(self, key: str, value: str) -> dict[str, Any]:
        """`$rl_reset`: forgets a key value's use; {"freed": n}."""
        return cast(dict[str, Any], await self.request("$rl_reset", [key, value]))

    async def rl_config(self) -> dict[str, Any]:
        """`$rl_config`: the [rate_limiter] config in force."""
        return cast(dict[str, Any], await self.request("$rl_config", []))

    async def rl_update(self, config: Any) -> dict[str, Any]:
        """`$rl_update`: replaces the whole config; answered once every worker has it."""
        return cast(dict[str, Any], await self.request("$rl_update", [config]))

    async def rl_global_add(self, limit: dict[str, Any]) -> dict[str, Any]:
        """`$rl_global_add`: adds (or replaces) a global limit {"key", "max_requests", "window_ms"}."""
        return cast(dict[str, Any], await self.request("$rl_global_add", [limit]))

    async def rl_global_remove(self, key: str) -> dict[str, Any]:
        """`$rl_global_remove`: removes the global limit on `key`."""
        return cast(dict[str, Any], await self.request("$rl_global_remove", [key]))
