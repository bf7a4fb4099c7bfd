"""What several `genapi` commands share: the config with the command line's overrides, the
import path, the control port's flags, and how a problem is reported."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import msgspec

from genapi.address import AddressError, parse_address
from genapi.config import ConfigError, Port, Positive, Settings, Workers, auth_problems, load, tls_problems
from genapi.request.signatures import callable_problems
from genapi.schema import field_problem

DEFAULT_CONTROL = "127.0.0.1:4001"

# Every host:port flag a command takes, and how its examples read: (example port, an address to bind).
ADDRESS_FLAGS = {"control": (4001, False), "gateway": (4001, False), "listen": (7001, True), "advertise": (7001, False)}


def add_app_dir(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--app-dir",
        metavar="DIR",
        default=".",
        help="directory put first on the import path for the config's modules (default: the current directory)",
    )


def add_control(cmd: argparse.ArgumentParser) -> None:
    """--control (a running gateway's control port) and --json, for a command that asks one."""
    cmd.add_argument(
        "--control",
        default=DEFAULT_CONTROL,
        metavar="HOST:PORT",
        help=f"the gateway's control port (default {DEFAULT_CONTROL})",
    )
    cmd.add_argument("--json", action="store_true", help="print the answer as JSON")


def address_problem(args: argparse.Namespace) -> str | None:
    """The first host:port flag of the command line that is not one (every command checks its
    flags this way before it starts), with the problem and the expected form; None when all are."""
    for flag, (port, listen) in ADDRESS_FLAGS.items():
        given = getattr(args, flag, None)
        for value in [given] if isinstance(given, str) else given or []:
            try:
                parse_address(value, f"--{flag}", port=port, listen=listen)
            except AddressError as exc:
                return str(exc)
    return None


def settings_of(args: argparse.Namespace) -> Settings:
    """The config with the command line's overrides; every problem of the file in one
    ConfigError: its keys and values, and the callables of the functions that are valid."""
    try:
        settings = load(args.config)
    except ConfigError as exc:
        if exc.partial is None:
            raise
        auth = [] if any(p.startswith("[auth]") for p in exc.problems) else auth_problems(exc.partial.auth)
        tls = tls_problems(exc.partial.gateway, _tls_flags(args))
        raise ConfigError(exc.problems + auth + tls + callable_problems(exc.partial, exc.numbers)) from None
    gw = settings.gateway
    changes: dict[str, Any] = {}
    if getattr(args, "host", None):
        changes["host"] = args.host
    if getattr(args, "port", None) is not None:
        changes["port"] = args.port
    if getattr(args, "control_port", None) is not None:
        changes["control_port"] = args.control_port
    if getattr(args, "drain_timeout", None) is not None:
        changes["shutdown_grace_ms"] = int(args.drain_timeout * 1000)
    if getattr(args, "workers", None):
        changes["workers"] = int(args.workers) if args.workers.isdigit() else args.workers
    problems = [
        problem
        for key, typ in (("port", Port), ("control_port", Port), ("workers", Workers), ("shutdown_grace_ms", Positive))
        if key in changes and (problem := field_problem(f"--{key}", typ, changes[key]))
    ]
    if problems:  # the file's own rules, so the command line cannot set what the file may not
        raise ConfigError(problems)
    for flag, key in _TLS_FLAGS.items():
        if getattr(args, flag, None):
            changes[key] = getattr(args, flag)
    if getattr(args, "log_level", None):
        changes["log_level"] = args.log_level
    if getattr(args, "log_format", None):
        changes["log_format"] = args.log_format
    if changes:  # the command line wins over a GENAPI_* variable too: say so where it came from
        origins = {
            key: f"the command line (--{key[len('[gateway] ') :].replace('_', '-')})"
            if key.startswith("[gateway] ") and key[len("[gateway] ") :] in changes
            else origin
            for key, origin in settings.origins.items()
        }
        settings = msgspec.structs.replace(settings, gateway=msgspec.structs.replace(gw, **changes), origins=origins)
    problems = (
        auth_problems(settings.auth) + tls_problems(settings.gateway, _tls_flags(args)) + callable_problems(settings)
    )
    if problems:
        raise ConfigError(problems)
    return settings


_TLS_FLAGS = {"ssl_certfile": "tls_certfile", "ssl_keyfile": "tls_keyfile"}  # serve's flag -> [gateway] key


def _tls_flags(args: argparse.Namespace) -> dict[str, str]:
    """The TLS keys given on the command line, by the flag's name (for their problems)."""
    return {key: "--" + flag.replace("_", "-") for flag, key in _TLS_FLAGS.items() if getattr(args, flag, None)}


def check_functions(settings: Settings) -> None:
    """Imports and compiles every function now, so a bad config fails before listening."""
    from genapi.request.bind import Functions

    try:
        Functions.checked(settings)
    except ValueError as exc:
        raise ConfigError(f"{settings.source}: {exc}") from None


def report(exc: ConfigError, source: str) -> None:
    """One problem on one line; several under a line that counts them, so none is missed."""
    if len(exc.problems) == 1:
        print(f"genapi: error: {exc.problems[0]}", file=sys.stderr)
        return
    print(f"genapi: error: {source}: {len(exc.problems)} problems", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)


def import_path(app_dir: str) -> None:
    """Puts `app_dir` first on the import path, as uvicorn's --app-dir does, so a `myapp.py` next
    to the config imports without PYTHONPATH. With the `genapi` script sys.path[0] is the
    script's own directory; with `python -m genapi` it is the current directory."""
    path = os.path.abspath(app_dir)
    if path in sys.path:
        sys.path.remove(path)
    sys.path.insert(0, path)
