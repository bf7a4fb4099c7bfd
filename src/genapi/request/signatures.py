"""Can every configured callable be called the way the gateway will call it?

`genapi check` and `genapi serve` (before it listens) import each function, hook and callback a
config names and bind the arguments the gateway will pass to its signature, so a function that
cannot take its configured arguments is refused at start, naming the function, rather than
failing every call with a TypeError. Every problem of the file is reported at once.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import os
import sys
from collections.abc import Sequence
from typing import Any

from genapi.config import Settings
from genapi.loader import load_callable
from genapi.schema import render
from genapi.structs import FunConfig, function_label, split_target

# What the gateway passes before a hook's extra args (hooks.py, permissions.py, auth.py).
_HOOK_ARGS = {
    "permission_callback": ["request"],
    "before_execute": ["request", "fun_config"],
    "after_execute": ["request", "fun_config", "response"],
}
_AUTH_CALLBACK_ARGS = ["params", "headers"]


def callable_problems(settings: Settings, numbers: Sequence[int] | None = None) -> list[str]:
    """Every import or signature problem of the config's callables, each naming the table, the
    key and what does not fit; empty when every callable can be called as configured.
    `numbers`: each function's place in the file, when settings holds only some of them."""
    from genapi._core.validate import Limits

    gw = settings.gateway
    limits = Limits(gw.string_max_bytes, gw.list_max_items, gw.map_max_items)
    problems: list[str] = []
    if settings.auth.callback:
        problems += _fits("[auth] key callback", settings.auth.callback, [(2, ", ".join(_AUTH_CALLBACK_ARGS))])
    for i, cfg in zip(numbers or itertools.count(1), settings.functions, strict=False):
        label = function_label(i, cfg)
        if cfg.nodes != "local":  # its mfa lives on the nodes; what runs here must import
            problems += _remote_problems(label, cfg, limits)
        else:
            problems += _function_problems(label, cfg, limits)
        for key, passed in _HOOK_ARGS.items():
            value = getattr(cfg, key)
            if value is not None:
                target, extra = split_target(value)
                parts = [(len(passed), ", ".join(passed))]
                if extra:
                    parts.append((len(extra), f"extra args {render(extra)}"))
                problems += _fits(f"{label} key {key}", target, None if cfg.disabled else parts)
    return problems


def _remote_problems(label: str, cfg: FunConfig, limits: Any) -> list[str]:
    """A function on service nodes: its arguments compile, and a node resolver or custom node
    selector (which run in the gateway) can be called."""
    problems = spec_problems(label, cfg, limits)
    if problems:
        return problems
    if isinstance(cfg.nodes, str):
        problems += _fits(f"{label} key nodes", cfg.nodes, [(0, "no arguments")])
    mode = cfg.choose_node_mode
    if isinstance(mode, str) and ":" in mode:
        problems += _fits(f"{label} key choose_node_mode", mode, [(2, "nodes, request")])
    return problems


def spec_problems(label: str, cfg: Any, limits: Any) -> list[str]:
    """The arguments' spec (cfg's arg_types, arg_orders, request_type) compiled as the gateway
    compiles it: every problem of it, one per argument (the compiler stops at the first, so each
    argument is compiled alone to find the rest), then arg_orders' own when every argument
    compiles."""
    from genapi._core.validate import Validator

    try:
        Validator(cfg.arg_types, cfg.arg_orders, cfg.request_type, limits)
    except ValueError as exc:
        first = str(exc)
    else:
        return []
    problems = []
    if isinstance(cfg.arg_types, dict):
        for name, spec in cfg.arg_types.items():
            try:
                Validator({name: spec}, None, cfg.request_type, limits)
            except ValueError as exc:
                problems.append(f"{label} key arg_types: {exc}")
    if problems:
        return problems
    key = "arg_orders" if first.startswith("arg_orders") else "arg_types"
    return [f"{label} key {key}: {first}"]


def _function_problems(label: str, cfg: FunConfig, limits: Any) -> list[str]:
    problems = spec_problems(label, cfg, limits)
    if problems:
        return problems
    target, predefined = split_target(cfg.mfa)
    if cfg.disabled:  # kept in the file but never called: it must import, its signature may lag
        return _fits(f"{label} key mfa", target, None)
    parts = []
    if predefined:
        parts.append((len(predefined), f"predefined args {render(predefined)}"))
    parts.append(declared_arguments(cfg))
    if cfg.request_info:
        parts.append((1, "request_info (one dict)"))
    return _fits(f"{label} key mfa", target, parts, "the config")


def declared_arguments(cfg: FunConfig) -> tuple[int, str]:
    """How many positional arguments a request's args become, and why, as the Validator
    (`_core/validate.pyx`) builds them: none without arg_types; one dict for
    `arg_orders = "map"`; the single declared argument when there is one and no arg_orders;
    otherwise one per name, in arg_orders' order."""
    names = list(cfg.arg_types or {})
    if not names:
        return 0, "no arg_types"
    if cfg.arg_orders == "map":
        return 1, 'arg_orders "map" (one dict)'
    if len(names) == 1 and not cfg.arg_orders:
        return 1, f"arg_types {render(names)}"
    return len(cfg.arg_orders), f"arg_orders {render(cfg.arg_orders)}"


def _fits(where: str, target: str, parts: list[tuple[int, str]] | None, who: str = "the gateway") -> list[str]:
    """[] when `target` imports and takes the positional arguments `parts` add up to (parts
    None: only imports)."""
    try:
        fn = load_callable(target)
    except ValueError as exc:
        return [f"{where}: {exc}{_path_hint(target)}"]
    except Exception as exc:  # the module itself failed while importing
        return [f'{where}: importing "{target.partition(":")[0]}" raised {type(exc).__name__}: {exc}']
    if parts is None or getattr(fn, "relay_op", None) is not None:  # relay ops take named args (relay.py)
        return []
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins and the like: nothing to check against
        return []
    n = sum(count for count, _ in parts)
    try:
        sig.bind(*range(n))
    except TypeError:
        pass
    else:
        return []
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    varargs = any(p.kind == p.VAR_POSITIONAL for p in params)
    if len(required) <= n and (varargs or n <= len(positional)):
        keyword_only = [p.name for p in params if p.kind == p.KEYWORD_ONLY and p.default is p.empty]
        return [
            f"{where}: {target} requires keyword-only argument(s) {', '.join(keyword_only)}; "
            "the gateway passes positional arguments only"
        ]
    if varargs:
        count = f"at least {len(required)}"
    elif len(required) == len(positional):
        count = str(len(positional))
    else:
        count = f"{len(required)} to {len(positional)}"
    passed = ", ".join(text for k, text in parts if k) or ", ".join(text for _, text in parts) or "nothing"
    return [
        f"{where}: {target} takes {count} positional argument{'' if count == '1' else 's'} "
        f"but {who} passes {n} ({passed})"
    ]


def _path_hint(target: str) -> str:
    """Points at the usual cause of a module that is not found although its file is right here:
    `--app-dir` put another directory on the import path."""
    top = target.partition(":")[0].split(".")[0]
    try:
        if importlib.util.find_spec(top) is not None:
            return ""
    except (ImportError, ValueError):
        return ""
    if not (os.path.isfile(f"{top}.py") or os.path.isfile(os.path.join(top, "__init__.py"))):
        return ""
    if os.getcwd() in [os.path.abspath(p or ".") for p in sys.path]:
        return ""
    return (
        f"; {top}{'.py' if os.path.isfile(f'{top}.py') else '/'} is in the current directory, "
        "which is not on the import path: pass --app-dir . (or the directory that holds it)"
    )
