"""Resolves `"module:function"` strings from configs into callables."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

from genapi._core.vocab import ASYNC, ASYNCGEN, GEN, SYNC  # how a callable runs: the compiled core's `Kind`
from genapi.structs import split_target

__all__ = ["ASYNC", "ASYNCGEN", "GEN", "SYNC", "Target", "kind_of", "load_callable", "searched"]


def load_callable(target: str) -> Callable[..., Any]:
    """Imports `module:function` (the function part may be dotted, e.g. `mod:Class.method`)."""
    module_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ValueError(f'cannot import module "{module_name}" of "{target}": {exc} (searched {searched()})') from None
    except ImportError as exc:
        raise ValueError(f'cannot import module "{module_name}" of "{target}": {exc}') from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f'module "{module_name}" has no function "{attr}" ("{target}")') from None
    if not callable(obj):
        raise ValueError(f'"{target}" is not callable')
    return obj


def searched() -> str:
    """The import path as a person reads it: every sys.path entry, made absolute."""
    return ", ".join(os.path.abspath(p or ".") for p in sys.path) or "nothing: sys.path is empty"


def kind_of(fn: Callable[..., Any]) -> int:
    """SYNC (plain, may block), ASYNC (coroutine function), GEN or ASYNCGEN (generators)."""
    target = inspect.unwrap(fn)
    if inspect.isasyncgenfunction(target):
        return ASYNCGEN
    if inspect.isgeneratorfunction(target):
        return GEN
    if inspect.iscoroutinefunction(target):
        return ASYNC
    if not inspect.isroutine(target) and inspect.iscoroutinefunction(type(target).__call__):
        return ASYNC  # an instance whose __call__ is async def
    return SYNC


class Target:
    """A loaded `"module:function"` or `["module:function", [extra args]]` (hooks, callbacks)."""

    __slots__ = ("extra", "fn", "is_async", "target")

    def __init__(self, value: str | list[Any]) -> None:
        self.target, self.extra = split_target(value)
        self.fn = load_callable(self.target)
        self.is_async = kind_of(self.fn) == ASYNC
