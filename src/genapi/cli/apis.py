"""`genapi apis`: the functions clients may call, with their arguments (what genapi.list_apis
answers), from a running gateway's control port or a config file."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from genapi.cli.common import DEFAULT_CONTROL, report
from genapi.config import ConfigError, load


def add_parser(sub: Any) -> None:
    ap = sub.add_parser(
        "apis",
        help="the functions clients may call, with their arguments (JSON Schema)",
        description="What genapi.list_apis answers: from a running gateway's control port "
        "(--control, the cluster secret from GENAPI_CLUSTER_SECRET; the default) or "
        "from a config file (--config). Every enabled function unless --user/--role "
        "ask for what that caller may call.",
    )
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--control", metavar="HOST:PORT", help="the gateway's control port (default 127.0.0.1:4001)")
    where.add_argument("--config", metavar="FILE", help="a config file instead of a running gateway")
    ap.add_argument("--user", metavar="USER", help="list what this user may call")
    ap.add_argument(
        "--role", action="append", default=[], metavar="ROLE", help="a role of the caller; repeat for several"
    )
    ap.add_argument("--service", metavar="SERVICE", help="only this service's functions")
    ap.add_argument("--json", action="store_true", help="print the list as JSON")
    ap.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """`genapi apis`: exit 2 when the gateway or the config cannot be read."""
    from genapi._core.validate import Limits
    from genapi.nodes import rpc
    from genapi.request import discovery

    limits: Limits | None
    if args.config:
        try:
            settings = load(args.config)
        except ConfigError as exc:
            report(exc, args.config)
            return 2
        gw = settings.gateway
        configs, limits = settings.functions, Limits(gw.string_max_bytes, gw.list_max_items, gw.map_max_items)
    else:
        control = args.control or DEFAULT_CONTROL
        try:
            configs, limits = asyncio.run(discovery.from_control(control))
        except (rpc.RpcError, OSError) as exc:
            print(f"genapi apis: {control}: {getattr(exc, 'text', None) or exc}", file=sys.stderr)
            return 2
        if limits is None:
            print(
                f"genapi apis: discovery is off on {control}: limits not set in a spec are shown as the "
                "defaults (3000 bytes, 1000 items)",
                file=sys.stderr,
            )
    caller = discovery.Caller(args.user, tuple(args.role)) if args.user or args.role else None
    listed = discovery.apis(configs, limits or Limits(), caller, args.service)
    if args.json:
        print(json.dumps(listed))
    else:
        for entry in listed:
            print(discovery.summary(entry))
    return 0
