"""before_execute / after_execute hooks with their timeouts, as PhoenixGenApi runs them.

A before hook gets (request, fun_config, *extra) and returns `(request, fun_config)` to continue
with changes, `Reject(reason)` (or raises) to abort with `hook rejected: <reason>`, or anything
else to continue unchanged. An after hook gets (request, fun_config, response, *extra); its
return value is ignored and its failure never changes the response.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from genapi import log, telemetry
from genapi._core.handoff import ThreadPool
from genapi.errors import HookRejected, hook_timeout
from genapi.loader import Target
from genapi.structs import FunConfig, Request, Response


class Reject:
    """Returned by a before hook to abort the request with `hook rejected: <reason>`."""

    __slots__ = ("reason",)

    def __init__(self, reason: Any) -> None:
        self.reason = reason


async def _invoke(hook: Target, args: tuple, timeout_ms: int, pool: ThreadPool, kind: str) -> Any:
    """Runs the hook within its timeout, between its telemetry start and stop (or exception)."""
    timeout = timeout_ms / 1000
    prefix = f"genapi.hook.{kind}"
    meta = {"module": hook.target.partition(":")[0], "function": hook.target.partition(":")[2], "type": kind}
    telemetry.execute(f"{prefix}.start", {"system_time": time.time_ns()}, meta)
    started = time.perf_counter()
    try:
        if hook.is_async:
            out = await asyncio.wait_for(hook.fn(*args, *hook.extra), timeout)
        else:
            out = await asyncio.wait_for(pool.run(hook.fn, *args, *hook.extra), timeout)
    except Exception as exc:
        timed_out = isinstance(exc, TimeoutError)
        telemetry.execute(
            f"{prefix}.exception",
            {"duration_us": int((time.perf_counter() - started) * 1e6)},
            {
                **meta,
                "kind": "timeout" if timed_out else "error",
                "reason": hook_timeout(timeout_ms) if timed_out else f"{type(exc).__name__}: {exc}",
            },
        )
        raise
    telemetry.execute(f"{prefix}.stop", {"duration_us": int((time.perf_counter() - started) * 1e6)}, meta)
    return out


async def run_before(hook: Target, request: Request, config: FunConfig, pool: ThreadPool) -> tuple[Request, FunConfig]:
    try:
        out = await _invoke(hook, (request, config), config.hook_timeout, pool, "before")
    except TimeoutError:
        log.warning("hook_timeout", hook=hook.target, request_id=request.request_id)
        raise HookRejected(hook_timeout(config.hook_timeout)) from None
    except Exception as exc:
        log.warning(
            "hook_failed", hook=hook.target, request_id=request.request_id, error=f"{type(exc).__name__}: {exc}"
        )
        raise HookRejected(str(exc) or type(exc).__name__) from None
    if isinstance(out, Reject):
        raise HookRejected(str(out.reason))
    if isinstance(out, tuple) and len(out) == 2:
        if out[0] == "error":
            raise HookRejected(str(out[1]))
        if isinstance(out[0], Request) and isinstance(out[1], FunConfig):
            return out
    return request, config


async def run_after(
    hook: Target, request: Request, config: FunConfig, response: Response | None, pool: ThreadPool
) -> None:
    try:
        await _invoke(hook, (request, config, response), config.hook_timeout, pool, "after")
    except TimeoutError:
        log.warning("hook_timeout", hook=hook.target, request_id=request.request_id)
    except Exception as exc:
        log.warning(
            "hook_failed", hook=hook.target, request_id=request.request_id, error=f"{type(exc).__name__}: {exc}"
        )
