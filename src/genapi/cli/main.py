"""The `genapi` command: the parser, assembled from each command group's own subparser, and
the dispatch to the command's module (`serve`, `check`, `init`, `token`, `service`, `admin`,
`ratelimit`, `apis`)."""

from __future__ import annotations

import argparse
import sys

from genapi import __version__
from genapi.cli import admin, apis, check, init, ratelimit, serve, service, token
from genapi.cli.common import address_problem, import_path

COMMANDS = (serve, check, init, token, service, admin, ratelimit, apis)  # in the order `genapi --help` lists them


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="genapi", description="genapi: a dynamic API gateway over WebSockets (Phoenix Channels protocol)."
    )
    p.add_argument("--version", action="version", version=f"genapi {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.command is None:
        p.print_help()
        return 2
    problem = address_problem(args)
    if problem is not None:  # one line, before anything starts: a node with a bad address never runs
        print(f"genapi: error: {problem}", file=sys.stderr)
        return 2
    if getattr(args, "app_dir", None) is not None:
        import_path(args.app_dir)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
