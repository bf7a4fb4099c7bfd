"""`genapi admin ...`: a running gateway's state and switches over its control port, what
PhoenixGenApi offers as IEx helpers (status, the registry, pushed services, nodes, rate limits).

Each command is one control request, authenticated with the cluster secret
(GENAPI_CLUSTER_SECRET), printed for a person or, with `--json`, as the answer itself. Changes
(disable, enable, delete) return once every worker serves them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from genapi.cli.check import describe
from genapi.cli.common import add_control
from genapi.host.control_client import ControlClient
from genapi.nodes import rpc
from genapi.structs import version_words


def add_parser(sub: Any) -> None:
    """Adds `admin` and its commands to the `genapi` command's subparsers."""
    ad = sub.add_parser(
        "admin",
        help="inspect and operate a running gateway over its control port",
        description="Talks to a running gateway's control port (the cluster secret from "
        "GENAPI_CLUSTER_SECRET): status of the gateway and its workers, the function "
        "registry (list, show, disable, enable, delete), pushed services, the node "
        "pool and breakers, rate limits. Changes apply to every worker before the "
        "command returns.",
    )
    ad_sub = ad.add_subparsers(dest="admin_command", metavar="COMMAND", required=True)
    st = ad_sub.add_parser(
        "status",
        help="the gateway (pid, version, uptime, config generation, functions, "
        "pushed services) and each worker (pid, alive, generation, restarts, "
        "connections)",
    )
    fn = ad_sub.add_parser("functions", help="the function registry: list (default), show, disable, enable, delete")
    fn_sub = fn.add_subparsers(dest="fn_command", metavar="COMMAND")
    fn_cmds = [fn, fn_sub.add_parser("list", help="every function, all versions")]
    for name, text in (
        ("show", "one function's whole config (every version, or --version)"),
        (
            "disable",
            "refuse calls to a function with the disabled error (every version, or "
            "--version); it stays disabled across re-pushes until enabled",
        ),
        ("enable", "serve a disabled function again"),
        ("delete", "remove a function from the registry (until its service pushes it again)"),
    ):
        cmd = fn_sub.add_parser(name, help=text)
        cmd.add_argument("function", metavar="SERVICE.REQUEST_TYPE")
        cmd.add_argument("--version", help="only this version (default: every version)")
        fn_cmds.append(cmd)
    pu = ad_sub.add_parser(
        "pushed", help="services pushed by (or pulled from) service nodes: version, nodes, functions, pull record"
    )
    ho = ad_sub.add_parser(
        "hosts",
        help='every gateway host sharing the configs ([engine] type = "redis"): alive, and the version it '
        "serves of each service, from Redis",
    )
    no = ad_sub.add_parser(
        "nodes",
        help="the service-node pool per node over the workers: breaker state, calls in flight, failures, connected",
    )
    rl = ad_sub.add_parser(
        "ratelimit",
        help="the same as `genapi ratelimit ...` (status, reset, config, add-global, remove-global)",
        add_help=False,
    )
    rl.add_argument("rest", nargs=argparse.REMAINDER, help="the `genapi ratelimit` command and its arguments")
    for cmd in (st, *fn_cmds, pu, ho, no):
        add_control(cmd)
    ad.set_defaults(run=run)


def request(control: str, ask: Callable[[ControlClient], Awaitable[Any]]) -> Any:
    """One control request (`ask` of a ControlClient), answered; rpc.RpcError when refused or
    unreachable (the command says so itself: the rpc layer's own warning about it is held back)."""

    async def asked() -> Any:
        async with ControlClient(control, name="genapi-admin") as client:
            return await ask(client)

    logger = logging.getLogger("genapi")
    level = logger.level
    logger.setLevel(max(logging.ERROR, level))
    try:
        return asyncio.run(asked())
    finally:
        logger.setLevel(level)


def run(args: argparse.Namespace) -> int:
    """`genapi admin ...`: exit status 2 when the gateway refuses or cannot be reached."""
    cmd = args.admin_command
    if cmd == "ratelimit":
        from genapi import cli

        return cli.main(["ratelimit", *args.rest])
    fn_cmd = getattr(args, "fn_command", None) or "list"
    hosts: Any = None
    label = f"genapi admin {cmd}" + (f" {fn_cmd}" if cmd == "functions" else "")
    try:
        if cmd == "status":
            answer = request(args.control, ControlClient.status)
        elif cmd == "pushed":
            answer = request(args.control, ControlClient.pushed)
            hosts = None if args.json else request(args.control, ControlClient.pushed_hosts)
        elif cmd == "hosts":
            answer = request(args.control, ControlClient.pushed_hosts)
        elif cmd == "nodes":
            answer = request(args.control, ControlClient.nodes)
        elif fn_cmd in ("list", "show"):
            answer = request(args.control, ControlClient.functions)
            if fn_cmd == "show":
                answer = _pick(answer, args.function, args.version)
                if not answer:
                    which = args.function + (f" version {args.version}" if args.version else "")
                    print(f"{label}: no function {which}", file=sys.stderr)
                    return 2
        else:
            service, request_type = _name(args.function)
            change = {
                "disable": ControlClient.fn_disable,
                "enable": ControlClient.fn_enable,
                "delete": ControlClient.fn_delete,
            }[fn_cmd]
            answer = request(args.control, lambda c: change(c, service, request_type, args.version))
    except ValueError as exc:
        print(f"{label}: {exc}", file=sys.stderr)
        return 2
    except rpc.RpcError as exc:
        print(f"{label}: {exc.text}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(answer))
        return 0
    if cmd == "status":
        print(render_status(answer))
    elif cmd == "pushed":
        print(render_pushed(answer) + ("\n\n" + render_hosts(hosts) if hosts is not None else ""))
    elif cmd == "hosts":
        print(render_hosts(answer))
    elif cmd == "nodes":
        print(render_nodes(answer))
    elif fn_cmd == "list":
        print(render_functions(answer))
    elif fn_cmd == "show":
        print("\n\n".join(render_config(c) for c in answer))
    else:
        print(render_change(answer))
    return 0


def _name(function: str) -> tuple[str, str]:
    service, dot, request_type = function.partition(".")
    if not dot or not service or not request_type:
        raise ValueError(f"function must be SERVICE.REQUEST_TYPE, got {function!r}")
    return service, request_type


def _pick(configs: list[dict[str, Any]], function: str, version: str | None) -> list[dict[str, Any]]:
    service, request_type = _name(function)
    return [
        c
        for c in configs
        if c.get("service") == service
        and c.get("request_type") == request_type
        and (version is None or c.get("version") == version)
    ]


def _yes(flag: Any) -> str:
    return "-" if flag is None else ("yes" if flag else "no")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def render_status(s: dict[str, Any]) -> str:
    head = (
        f"gateway pid {s['pid']}, genapi {s['version']}, up {_duration(s['uptime_s'])}, config generation "
        f"{s['generation']}, {_plural(s['functions'], 'function')}, {_plural(s['pushed'], 'pushed service')}, "
        f"{_plural(s['restarts'], 'worker restart')}"
    )
    rows = [
        [
            w.get("index"),
            w.get("pid"),
            _yes(w.get("alive")),
            _yes(w.get("ready")),
            w.get("generation"),
            w.get("restarts"),
            w.get("recent_crashes"),
            w.get("connections"),
            w.get("in_flight"),
        ]
        for w in s["workers"]
    ]
    engine = s.get("engine")
    if engine is not None:  # [engine] type = "redis"
        since = _duration(max(time.time() - engine["since"], 0))
        head += (
            f"\nengine redis {engine['url']} (prefix {engine['prefix']}, host id {engine['host_id']}): "
            + (f"reachable for {since}" if engine["reachable"] else f"UNREACHABLE for {since}: {engine['last_error']}")
            + f", {_plural(engine['outages'], 'outage')}"
        )
        cluster = [w["cluster_limits"] for w in s["workers"] if w.get("cluster_limits")]
        if cluster:
            head += (
                "\ncluster rate limits: "
                + ", ".join(
                    f"{sum(c[k] for c in cluster)} {label}"
                    for k, label in (
                        ("checks", "checked"),
                        ("refused", "refused"),
                        ("refused_locally", "refused without asking Redis"),
                        ("unavailable", "answered without Redis"),
                    )
                )
                + ("" if all(c["up"] for c in cluster) else " (a worker is answering without Redis now)")
            )
    return (
        head
        + "\n"
        + _table(
            ["worker", "pid", "alive", "ready", "generation", "restarts", "recent_crashes", "connections", "in_flight"],
            rows,
        )
    )


def render_functions(configs: list[dict[str, Any]]) -> str:
    from genapi.structs import FunConfig

    if not configs:
        return "no functions"
    lines = [describe(msgspec.convert(c, FunConfig)) for c in configs]
    return "\n".join(lines) + f"\n{_plural(len(configs), 'function')}"


def render_config(c: dict[str, Any]) -> str:
    title = f"{c['service']}.{c['request_type']} {version_words(c.get('version'))}"
    title += " (disabled)" if c.get("disabled") else ""
    width = max(len(k) for k in c)
    return title + "\n" + "\n".join(f"  {k.ljust(width)}  {json.dumps(v)}" for k, v in c.items())


def render_change(a: dict[str, Any]) -> str:
    versions = ", ".join(version_words(v) for v in a["versions"])
    text = f"{a['status']} {a['service']}.{a['request_type']} ({versions})"
    if "generation" in a:
        text += f": config generation {a['generation']}, served by {_plural(a['workers'], 'worker')}"
        if a.get("missing"):
            text += f"; not acknowledged by worker(s) {', '.join(map(str, a['missing']))}"
    return text


def render_pushed(services: dict[str, Any]) -> str:
    if not services:
        return "no pushed services"
    now = time.time()
    out = []
    for name, s in services.items():
        pulled = f"pulled {_duration(now - s['pulled_at'])} ago" if s.get("pulled_at") else "never pulled"
        line = (
            f"{name} {s['config_version']} ({s['source']}), nodes {', '.join(s['nodes']) or '-'}; "
            f"{_plural(len(s['functions']), 'function')}; updated {_duration(now - s['updated_at'])} ago, "
            f"{pulled}, {_plural(s['pull_failures'], 'pull failure')}"
        )
        if s.get("last_error"):
            line += f", last error: {s['last_error']}"
        out.append(line + "\n  " + ", ".join(s["functions"]))
    return "\n".join(out)


def render_hosts(view: dict[str, Any] | None) -> str:
    """Every host sharing the configs, and what each serves (`$pushed_hosts`)."""
    if view is None:
        return 'one host: configs are not shared ([engine] type = "memory")'
    services = view["services"]
    out = [f"hosts sharing configs (from Redis; this is {view['host_id']}):"]
    for h in view["hosts"]:
        state = "alive" if h["alive"] else f"not seen for {_duration(h['seen_s_ago'])}"
        serves = []
        for name in sorted(set(services) | set(h["serves"])):
            row = h["serves"].get(name)
            if row is None:
                serves.append(f"{name} -")
                continue
            text = f"{name} {row['version']}"
            if row.get("error"):
                text += f" (refused: {row['error']})"
            elif services.get(name, {}).get("stamp") not in (None, row["stamp"]):
                text += " (behind)"
            serves.append(text)
        out.append(f"  {h['host_id']} ({state}): {', '.join(serves) or 'nothing pushed'}")
    for name, s in services.items():
        out.append(
            f"  {name}: {s['version']} stored by {s['by']} ({s['source']}), pulled by {s['puller'] or 'no host now'}"
        )
    return "\n".join(out)


def render_nodes(nodes: list[dict[str, Any]]) -> str:
    if not nodes:
        return "no service nodes"
    rows = []
    for n in nodes:
        per = ", ".join(
            f"{w['index']}:{w['state']}{'' if w.get('connected') else ' (not connected)'}" for w in n.get("workers", [])
        )
        rows.append([n["address"], n["state"], n["in_flight"], n["failures"], _yes(n["connected"]), per])
    return _table(["node", "breaker", "in_flight", "failures", "connected", "per worker"], rows)


def _duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"
