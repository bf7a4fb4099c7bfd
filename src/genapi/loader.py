"""Resolves `"module:function"` strings from configs into callables."""
from __future__ import annotations

import importlib
from typing import Any, Callable


def load_callable(target: str) -> Callable[..., Any]:
    """Imports `module:function` (the function part may be dotted, e.g. `mod:Class.method`)."""
    module_name, _, attr = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
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
