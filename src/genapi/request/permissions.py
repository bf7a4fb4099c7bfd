"""The permission callback and the denial log, in PhoenixGenApi's order: the callback when set,
else the check_permission mode (compiled with the other request steps: `_core/dispatch.pyx`)."""

from __future__ import annotations

import asyncio

from genapi import log
from genapi._core.dispatch import log_denied
from genapi.loader import Target
from genapi.structs import Request

__all__ = ["check_callback", "log_denied"]


async def check_callback(hook: Target, request: Request, timeout: float) -> bool:
    """Truthy return = allow; an exception or a timeout denies (and is logged)."""
    try:
        out = hook.fn(request, *hook.extra)
        if asyncio.iscoroutine(out):
            out = await asyncio.wait_for(out, timeout)
        return bool(out)
    except Exception as exc:  # a broken callback must deny, never crash the worker
        log.error(
            "permission_callback_failed",
            callback=hook.target,
            request_id=request.request_id,
            error=f"{type(exc).__name__}: {exc}",
        )
        return False
