"""Prometheus metrics for the whole host: each worker's numbers (`snapshot`), summed over the
workers by whoever serves the scrape (`render`), in the Prometheus text format (0.0.4).

Requests are counted in the compiled core (`_core/stats.pyx`, one table row per function);
everything else is read at scrape time from what the worker already keeps (connections,
channels, slots, node breakers, relay seats), so a scrape costs the request path nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from genapi import log
from genapi._core.stats import error_counts, latency_buckets, request_metrics, unknown_row
from genapi.errors import ERROR_KINDS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def snapshot(gateway: Any) -> dict[str, Any]:
    """This worker's numbers, JSON-ready."""
    conns = list(gateway.connections)
    seats = gateway.seats
    cluster = gateway.limits.cluster if gateway.limits is not None else None
    extra = {"cluster_limits": cluster.stats()} if cluster is not None else {}
    return {
        **extra,
        "requests": [[svc, rt, *row.row()] for (svc, rt), row in _table().items()]
        + ([["_unknown", "_unknown", *unknown.row()]] if (unknown := unknown_row()).ok + unknown.error else []),
        "errors": error_counts(),
        "connections": len(conns),
        "channels": sum(len(c.channels) for c in conns),
        "in_flight": sum(c.in_flight for c in conns),
        "queued": sum(len(c.queue) for c in conns),
        "aborted": gateway.aborted,
        "protocol_errors": log.peer_protocol_errors(),
        "joins": gateway.joins,
        "accepted": gateway.accepted,
        "rate_limited": (gateway.limits.limiter.refused if gateway.limits is not None else 0)
        + (cluster.refused if cluster is not None else 0),
        "relay_delivered": seats.delivered,
        "relay_dropped": seats.dropped,
        "nodes": gateway.functions.nodes.status(),
    }


_live: dict[tuple[str, str], Any] | None = None


def _table() -> dict[tuple[str, str], Any]:
    return _live or {}


def start() -> None:
    """Counts requests in this process from now on (a worker with `[gateway] metrics = true`),
    for the functions bound from now on (call it before any function is bound)."""
    global _live
    _live = request_metrics(True)


def _esc(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: Any) -> str:
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items()) + "}" if labels else ""


class _Out:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, text: str) -> None:
        self.lines.append(f"# HELP {name} {text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: Any, **labels: Any) -> None:
        self.lines.append(f"{name}{_labels(**labels)} {value}")


def render(workers: Iterable[dict[str, Any]], host: dict[str, Any]) -> str:
    """The host's metrics: `workers` are the snapshots of the live workers (each with its
    `index`, `pid` and `generation`), `host` what the process serving the scrape knows (config
    generation, worker restarts, relay groups)."""
    snaps = list(workers)
    out = _Out()
    rows: dict[tuple[str, str], list[Any]] = {}
    for snap in snaps:
        for svc, rt, *row in snap["requests"]:
            have = rows.get((svc, rt))
            rows[(svc, rt)] = row if have is None else [a + b for a, b in zip(have, row, strict=True)]
    out.family("genapi_requests_total", "counter", "Requests answered, by function and outcome.")
    for (svc, rt), row in sorted(rows.items()):
        out.sample("genapi_requests_total", row[0], service=svc, request_type=rt, outcome="ok")
        out.sample("genapi_requests_total", row[1], service=svc, request_type=rt, outcome="error")
    out.family("genapi_request_duration_seconds", "histogram", "From decoding a request to its last answer.")
    bounds = latency_buckets()
    for (svc, rt), row in sorted(rows.items()):
        cumulative = 0
        for bound, n in zip(bounds, row[3 : 3 + len(bounds)], strict=True):
            cumulative += n
            out.sample("genapi_request_duration_seconds_bucket", cumulative, service=svc, request_type=rt, le=bound)
        out.sample("genapi_request_duration_seconds_bucket", row[0] + row[1], service=svc, request_type=rt, le="+Inf")
        out.sample("genapi_request_duration_seconds_sum", round(row[2], 6), service=svc, request_type=rt)
        out.sample("genapi_request_duration_seconds_count", row[0] + row[1], service=svc, request_type=rt)
    out.family("genapi_errors_total", "counter", "Requests answered with an error, by kind (the error text's start).")
    for kind in ERROR_KINDS:
        out.sample("genapi_errors_total", sum((s.get("errors") or {}).get(kind, 0) for s in snaps), kind=kind)
    for key, kind, text in (
        ("connections", "gauge", "Open client connections."),
        ("channels", "gauge", "Joined channels (topics) over all connections."),
        ("in_flight", "gauge", "Requests holding a slot (running or answering)."),
        ("queued", "gauge", "Requests waiting for a slot on their connection."),
        ("aborted", "counter", "Connections dropped for not reading their output."),
        (
            "protocol_errors",
            "counter",
            "WebSocket protocol errors of clients (oversize frame, bad opcode), logged at info.",
        ),
        ("accepted", "counter", "Client connections accepted (upgraded to WebSocket)."),
        ("joins", "counter", "Channel joins accepted."),
        ("rate_limited", "counter", "Requests refused by a rate limit."),
        ("relay_delivered", "counter", "Relayed messages written to members' connections."),
        ("relay_dropped", "counter", "Relayed messages dropped for members not reading."),
    ):
        name = f"genapi_{key}" + ("_total" if kind == "counter" else "")
        out.family(name, kind, text)
        out.sample(name, sum(s.get(key, 0) for s in snaps))
    out.family("genapi_worker_config_generation", "gauge", "The config generation each worker serves.")
    for s in snaps:
        out.sample("genapi_worker_config_generation", s.get("generation", 0), worker=s.get("index", 0))
    out.family("genapi_config_generation", "gauge", "The host's current config generation.")
    out.sample("genapi_config_generation", host.get("generation", 0))
    out.family("genapi_workers", "gauge", "Workers alive.")
    out.sample("genapi_workers", len(snaps))
    out.family("genapi_worker_restarts_total", "counter", "Workers restarted after dying.")
    out.sample("genapi_worker_restarts_total", host.get("restarts", 0))
    out.family("genapi_node_in_flight", "gauge", "Calls in flight to a service node (over the workers).")
    out.family("genapi_node_breaker_open", "gauge", "Workers whose breaker for the node is open or half-open.")
    nodes: dict[str, list[int]] = {}
    for s in snaps:
        for n in s.get("nodes", []):
            acc = nodes.setdefault(n["address"], [0, 0])
            acc[0] += n.get("in_flight", 0)
            acc[1] += n.get("state") != "closed"
    for address, (in_flight, open_) in sorted(nodes.items()):
        out.sample("genapi_node_in_flight", in_flight, node=address)
        out.sample("genapi_node_breaker_open", open_, node=address)
    engine = host.get("engine")
    if engine is not None:  # [engine] type = "redis"
        out.family("genapi_engine_reachable", "gauge", "1 while the host reaches its Redis engine (PING each second).")
        out.sample("genapi_engine_reachable", int(bool(engine.get("reachable"))))
        out.family("genapi_engine_outages_total", "counter", "Episodes of the host not reaching its Redis engine.")
        out.sample("genapi_engine_outages_total", engine.get("outages", 0))
    cluster = [s["cluster_limits"] for s in snaps if "cluster_limits" in s]
    if cluster:
        for key, text in (
            ("checks", "Requests checked against cluster-scope rate limits."),
            ("refused_locally", "Of those, refused without asking Redis (a refusal remembered until its retry-after)."),
            ("unavailable", "Of those, answered without Redis (unreachable), per [rate_limiter] fail_open."),
            ("calls", "Script calls to Redis carrying the checks (one per worker per loop iteration at most)."),
        ):
            name = f"genapi_rate_limit_cluster_{key}_total"
            out.family(name, "counter", text)
            out.sample(name, sum(c.get(key, 0) for c in cluster))
    relay = host.get("relay") or {}
    out.family("genapi_relay_groups", "gauge", "Relay groups on the host.")
    out.sample("genapi_relay_groups", relay.get("groups", 0))
    out.family("genapi_relay_members", "gauge", "Members of relay groups on the host.")
    out.sample("genapi_relay_members", relay.get("members", 0))
    out.family("genapi_relay_messages_total", "counter", "Messages relayed to groups.")
    out.sample("genapi_relay_messages_total", relay.get("relayed", 0))
    for key, text in (  # the redis engine's (relay groups across hosts)
        ("replayed", "Relay events this host replayed from a group's stream (a gap, a reconnect)."),
        ("resyncs", "Relay groups this host resynced (past the stream's retention, a new epoch, a group gone)."),
        ("reconnects", "Times this host's relay subscription was lost and made again."),
        ("reaped", "Memberships of dead hosts this host removed (their lease expired)."),
    ):
        if key in relay:
            name = f"genapi_relay_{key}_total"
            out.family(name, "counter", text)
            out.sample(name, relay[key])
    return "\n".join(out.lines) + "\n"
