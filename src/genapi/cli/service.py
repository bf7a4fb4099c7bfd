"""`genapi service run`: run a service node (the genapi.service SDK)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from genapi import log
from genapi.cli.common import add_app_dir
from genapi.config import LogLevel
from genapi.schema import literal_values


def add_parser(sub: Any) -> None:
    svc = sub.add_parser(
        "service",
        help="run a service node (the genapi.service SDK)",
        description="Service nodes serve functions declared with genapi.service to gateways.",
    )
    svc_sub = svc.add_subparsers(dest="service_command", metavar="COMMAND", required=True)
    r = svc_sub.add_parser(
        "run",
        help="run a service node: listen for calls and push its configs to the gateways",
        description="Import MODULE:ATTR (a genapi.service.Service), listen for gateway calls on --listen, "
        "and push the service's function configs to each --gateway's control port (again "
        "whenever a gateway comes back). The cluster secret comes from GENAPI_CLUSTER_SECRET.",
    )
    r.add_argument("service", metavar="MODULE:ATTR", help="where the Service object is, e.g. inventory:svc")
    r.add_argument(
        "--listen",
        default="127.0.0.1:7001",
        metavar="HOST:PORT",
        help="address to listen on for gateway calls (default 127.0.0.1:7001; port 0 picks one)",
    )
    r.add_argument(
        "--gateway",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a gateway's control port to push to; repeat for several (default 127.0.0.1:4001)",
    )
    r.add_argument(
        "--advertise",
        metavar="HOST:PORT",
        help="the address gateways call this node at (default: the listening address)",
    )
    r.add_argument("--force", action="store_true", help="push even when the gateway has this config_version")
    r.add_argument("--log-level", choices=literal_values(LogLevel), default="info", help="log verbosity (default info)")
    r.add_argument("--log-format", choices=["text", "json"], default="text")
    add_app_dir(r)
    svc.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """`genapi service run MODULE:ATTR`: exit status 2 when the Service cannot be loaded."""
    log.setup(args.log_level, args.log_format)
    try:
        if args.service.count(":") != 1:
            raise ValueError(f'service must be "module:attribute", got {args.service!r}')
        module, attr = args.service.split(":")
        import importlib

        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as exc:
        print(f"genapi service run: cannot load {args.service}: {exc}", file=sys.stderr)
        return 2
    from genapi.nodes.sdk import Service

    if not isinstance(obj, Service):
        print(
            f"genapi service run: {args.service} is a {type(obj).__name__}, not a genapi.service.Service",
            file=sys.stderr,
        )
        return 2
    try:
        obj.run(
            listen=args.listen, gateways=args.gateway or ["127.0.0.1:4001"], advertise=args.advertise, force=args.force
        )
    except OSError as exc:
        print(f"genapi service run: cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0
