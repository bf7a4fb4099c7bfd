"""`genapi check`: validate a config file and list its functions; how a function is described
in one line (also `genapi admin functions`)."""

from __future__ import annotations

import argparse
from typing import Any

from genapi.cli.common import add_app_dir, check_functions, report, settings_of
from genapi.config import DISCOVERY_TARGET, ConfigError, Settings
from genapi.environment import HMAC_MIN_BYTES
from genapi.schema import render
from genapi.structs import FunConfig, split_target


def add_parser(sub: Any) -> None:
    c = sub.add_parser(
        "check",
        help="validate a config file and exit",
        description="Load a config file, import every function, hook and callback it names, "
        "check that each can take the arguments its config passes, and report "
        "every problem at once (exit status 2). Prints the functions on success.",
    )
    c.add_argument("--config", metavar="FILE", help="TOML config file; default: the embedded demo config")
    add_app_dir(c)
    c.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """`genapi check`: exit status 2 with every problem of the config."""
    try:
        settings = settings_of(args)
        check_functions(settings)
        own = [cfg for cfg in settings.functions if not builtin(cfg)]
        for cfg in own:
            print(describe(cfg))
        for line in origin_lines(settings):
            print(line)
        print(f"{settings.source}: ok, {len(own)} function(s)")
        return 0
    except ConfigError as exc:
        report(exc, getattr(args, "config", None) or "<embedded default>")
        return 2
    except KeyboardInterrupt:
        return 0


def origin_lines(settings: Settings) -> list[str]:
    """Where each secret and each setting a GENAPI_* variable set came from, one line each
    (`[auth] jwt_secret from GENAPI_JWT_SECRET_FILE /run/secrets/jwt`), never a secret's value."""
    lines = []
    for key, origin in settings.origins.items():
        note = f" (excepted from the {HMAC_MIN_BYTES}-byte minimum)" if origin.startswith("the embedded demo") else ""
        lines.append(f"{key} from {origin}{note}")
    return lines


def builtin(cfg: FunConfig) -> bool:
    """genapi.list_apis, which [gateway] discovery adds: not one of the file's functions."""
    return split_target(cfg.mfa)[0] == DISCOVERY_TARGET


def describe(cfg: FunConfig) -> str:
    """One loaded function as `genapi check` lists it: service.request_type version
    response_type mfa (arguments), e.g. `demo.echo 1.0.0 sync genapi.demo:echo (text: string,
    n: num = 1)`; `{...}` for arg_orders = "map" (one dict)."""
    target, predefined = split_target(cfg.mfa)
    mfa = f"{target} {render(predefined)}" if predefined else target
    return (
        f"{cfg.service}.{cfg.request_type} {cfg.version or '-'} {cfg.response_type} {mfa} "
        f"{arguments(cfg)}{' (disabled)' if cfg.disabled else ''}"
    )


def arguments(cfg: FunConfig) -> str:
    specs = cfg.arg_types or {}
    names = list(cfg.arg_orders) if isinstance(cfg.arg_orders, list) and cfg.arg_orders else list(specs)
    parts = []
    for name in names:
        spec = specs.get(name)
        if isinstance(spec, dict):
            text = f"{name}: {spec.get('type')}"
            if "default_value" in spec:
                text += f" = {render(spec['default_value'])}"
        else:
            text = f"{name}: {spec[0] if isinstance(spec, list) else spec}"
        parts.append(text)
    args = "{" + ", ".join(parts) + "}" if cfg.arg_orders == "map" else ", ".join(parts)
    if cfg.request_info:
        args = f"{args}, request_info" if args else "request_info"
    return f"({args})"
