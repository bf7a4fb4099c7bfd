"""`genapi ratelimit ...`: the rate limits of a running gateway over its control port (status,
reset, config, add-global, remove-global; also `genapi admin ratelimit ...`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from genapi.cli.common import add_control
from genapi.host.control_client import ControlClient
from genapi.nodes import rpc


def add_parser(sub: Any) -> None:
    rl = sub.add_parser(
        "ratelimit",
        help="rate limits of a running gateway: status, reset, change",
        description="Talks to a running gateway's control port (the cluster secret from "
        "GENAPI_CLUSTER_SECRET). Changes apply to every worker before the command returns.",
    )
    rl_sub = rl.add_subparsers(dest="rl_command", metavar="COMMAND", required=True)
    st = rl_sub.add_parser("status", help="a key value's use under each limit on that key (used, remaining, resets in)")
    st.add_argument("key", help="user_id, device_id, ip_address or an argument's name")
    st.add_argument("value", help="e.g. the user id")
    st.add_argument("--api", metavar="SERVICE.REQUEST_TYPE", help="that function's limits instead of the global ones")
    rs = rl_sub.add_parser(
        "reset", help="forget a key value's use (every limit on that key; cluster limits on every host)"
    )
    rs.add_argument("key")
    rs.add_argument("value")
    cf = rl_sub.add_parser("config", help="print the rate-limit config, or replace it (--set FILE.json)")
    cf.add_argument("--set", metavar="FILE", help="a JSON file with the whole [rate_limiter] config to apply")
    ag = rl_sub.add_parser("add-global", help="add (or replace) a global limit on KEY")
    ag.add_argument("key")
    ag.add_argument("max_requests", type=int)
    ag.add_argument("window_ms", type=int)
    ag.add_argument(
        "--scope",
        choices=["host", "cluster"],
        default="host",
        help='counted on each host (default) or across every host of the [engine] (type = "redis")',
    )
    rg = rl_sub.add_parser("remove-global", help="remove the global limit on KEY")
    rg.add_argument("key")
    for cmd in (st, rs, cf, ag, rg):
        add_control(cmd)
    rl.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """`genapi ratelimit ...` against a running gateway's control port; exit 2 when refused."""
    cmd = args.rl_command
    config: Any = None  # --set FILE's, read before asking
    if cmd == "config" and args.set:
        try:
            with open(args.set, encoding="utf-8") as f:
                config = json.load(f)
        except (OSError, ValueError) as exc:
            print(f"genapi ratelimit config: cannot read {args.set}: {exc}", file=sys.stderr)
            return 2

    async def asked() -> Any:
        async with ControlClient(args.control, name="genapi-cli") as control:
            if cmd == "status":
                service, _, request_type = (args.api or "").partition(".")
                return await control.rl_status(args.key, args.value, service or None, request_type or None)
            if cmd == "reset":
                return await control.rl_reset(args.key, args.value)
            if cmd == "config":
                return await (control.rl_update(config) if args.set else control.rl_config())
            if cmd == "add-global":
                limit = {"key": args.key, "max_requests": args.max_requests, "window_ms": args.window_ms}
                if args.scope != "host":
                    limit["scope"] = args.scope
                return await control.rl_global_add(limit)
            return await control.rl_global_remove(args.key)

    try:
        answer = asyncio.run(asked())
    except rpc.RpcError as exc:
        print(f"genapi ratelimit {cmd}: {exc.text}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(answer))
    elif cmd == "status":
        for row in answer if isinstance(answer, list) else []:
            print(
                f"{row['key']}={row['value']}: {row['used']}/{row['max_requests']} used per {row['window_ms']} ms, "
                f"{row['remaining']} remaining, resets in {row['resets_in_ms']} ms"
                + (" (cluster: every host)" if row.get("scope") == "cluster" else "")
            )
        if not answer:
            print(f"no limit on {args.key}" + (f" for {args.api}" if args.api else ""))
    else:
        print(json.dumps(answer, indent=2))
    return 0
