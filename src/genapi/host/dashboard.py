"""What GET /dashboard/state shows and what the dashboard's actions do, answered where the
control plane lives (the master, or a lone worker): the page's HTTP side (`gateway/dashboard.py`)
asks the host through its view (`host/view.py`), and everything here goes through the control
port's own verbs (`host/control.py`), so the dashboard sees and does exactly what
`genapi admin` / `genapi ratelimit` would.

    state                                  status, nodes, functions, rate limits, relay, metrics
    disable / enable [svc, rt, version]    $fn_disable / $fn_enable
    reset [key, value]                     $rl_reset
    limit_status [key, value]              $rl_status

A refusal (a feature that is off, an unknown function) is an answer: {"error": "refused", "text": ...}.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, cast

from genapi._core.stats import latency_buckets
from genapi.config import ConfigError
from genapi.errors import ERROR_KINDS
from genapi.host.configsync import Refused

if TYPE_CHECKING:
    from genapi.host.control import ControlPlane
    from genapi.nodes import rpc

ACTIONS = {
    "disable": "$fn_disable",
    "enable": "$fn_enable",
    "reset": "$rl_reset",
    "limit_status": "$rl_status",
}
# the worker counters shown as totals (summed over the live workers' metrics snapshots)
TOTALS = (
    "connections",
    "channels",
    "in_flight",
    "queued",
    "aborted",
    "protocol_errors",
    "accepted",
    "joins",
    "rate_limited",
    "relay_delivered",
    "relay_dropped",
)


class _Operator:
    """The peer a verb sees when the dashboard asks (its handlers name the peer in their logs)."""

    peername = "dashboard"


async def verb(plane: ControlPlane, name: str, args: list[Any]) -> Any:
    """Control verb `name` answered as the control port would answer it, or raises Refused."""
    try:
        out = plane.verbs[name](cast("rpc.ServerPeer", _Operator()), args)
        if asyncio.iscoroutine(out):
            out = await out
    except ConfigError as exc:
        raise Refused(str(exc)) from None
    except (TypeError, ValueError, IndexError, KeyError, AttributeError) as exc:
        raise Refused(f"bad arguments for {name}: {type(exc).__name__}: {exc}") from None
    return out


async def answer(plane: ControlPlane, snapshots: list[dict[str, Any]], relay: dict[str, Any], ask: list[Any]) -> Any:
    """The answer to `ask` ([op, *args]); `snapshots` the live workers' metrics snapshots,
    `relay` the host's relay stats (both read only for "state")."""
    op, args = (str(ask[0]), list(ask[1:])) if ask else ("state", [])
    try:
        if op == "state":
            return await state(plane, snapshots, relay)
        if op not in ACTIONS:
            raise Refused(f"no dashboard action {op!r}")
        return {"ok": True, "result": await verb(plane, ACTIONS[op], args)}
    except Refused as exc:
        return {"error": "refused", "text": str(exc)}


async def state(plane: ControlPlane, snapshots: list[dict[str, Any]], relay: dict[str, Any]) -> dict[str, Any]:
    status = await verb(plane, "$status", [])
    nodes = await verb(plane, "$nodes", [])
    functions = [
        {
            "service": f["service"],
            "request_type": f["request_type"],
            "version": f.get("version"),
            "response_type": f.get("response_type"),
            "disabled": bool(f.get("disabled")),
        }
        for f in await verb(plane, "$functions", [])
    ]
    try:
        limits: dict[str, Any] = {"config": await verb(plane, "$rl_config", [])}
    except Refused as exc:
        limits = {"off": str(exc)}
    return {
        "time_ms": int(time.time() * 1000),
        "status": status,
        "nodes": nodes,
        "functions": functions,
        "rate_limits": limits,
        "relay": relay,
        "totals": {key: sum(s.get(key) or 0 for s in snapshots) for key in TOTALS},
        "errors": {kind: sum((s.get("errors") or {}).get(kind, 0) for s in snapshots) for kind in ERROR_KINDS},
        "requests": requests(snapshots),
        "latency_buckets": list(latency_buckets()),
    }


def requests(snapshots: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per function over the workers, counted since start: ok, error, seconds summed and the
    latency histogram (per bucket of `latency_buckets`, not cumulative). The page turns two
    polls into calls/s and percentiles."""
    rows: dict[tuple[str, str], list[Any]] = {}
    for snap in snapshots:
        for svc, rt, *row in snap.get("requests", []):
            have = rows.get((svc, rt))
            rows[(svc, rt)] = list(row) if have is None else [a + b for a, b in zip(have, row, strict=True)]
    return [
        {
            "service": svc,
            "request_type": rt,
            "ok": row[0],
            "error": row[1],
            "sum_s": round(row[2], 6),
            "buckets": row[3:],
        }
        for (svc, rt), row in sorted(rows.items())
    ]
