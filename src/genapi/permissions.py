"""check_permission modes and the permission callback, in PhoenixGenApi's order: the callback
when set, else the mode. Every denial is logged."""
from __future__ import annotations

import asyncio
from typing import Any

from . import log
from .calls import Hook
from .structs import Request


def check_mode(mode: Any, request: Request) -> bool:
    """false = public; any_authenticated; {arg = NAME}; {role = [..]}. Anything else denies."""
    if mode is False:
        return True
    uid = request.user_id
    if mode == "any_authenticated":
        return isinstance(uid, str) and uid != ""
    if isinstance(mode, dict):
        if "arg" in mode:
            name = mode["arg"]
            return isinstance(uid, str) and uid != "" and name in request.args and request.args[name] == uid
        if "role" in mode:
            roles = request.user_roles or ()
            return any(r in roles for r in mode["role"])
    log.error("permission_mode_invalid", mode=mode, request_type=request.request_type)
    return False


async def check_callback(hook: Hook, request: Request, timeout: float) -> bool:
    """Truthy return = allow; an exception or a timeout denies (and is logged)."""
    try:
        out = hook.fn(request, *hook.extra)
        if asyncio.iscoroutine(out):
            out = await asyncio.wait_for(out, timeout)
        return bool(out)
    except Exception as exc:  # a broken callback must deny, never crash the worker
        log.error("permission_callback_failed", callback=hook.target, request_id=request.request_id,
                  error=f"{type(exc).__name__}: {exc}")
        return False


def log_denied(request: Request, mode: Any) -> None:
    log.warning("permission_denied", user_id=request.user_id, request_id=request.request_id,
                request_type=request.request_type, mode=mode)
