"""Telemetry events (PhoenixGenApi's `Telemetry`): what the gateway does, as named events with
measurements and metadata, for handlers a user attaches.

An event is a dotted name, e.g. `genapi.executor.request.stop`; a handler is
`handler(event, measurements, metadata, config)`. Handlers run inline, in the worker that
emits, so they must be quick: one that raises, or takes over 50 ms, is detached and
reported (`telemetry_handler_detached`), so it can never break or hold up requests again.
With no handler attached an event costs a dict lookup; the per-request events (request
start/stop, the rate-limit check) cost one pointer test in the compiled path: their hooks live
in `_core/stats.pyx`, switched on only while a handler listens.

Every worker emits its own events: attach handlers where they run (e.g. a module imported by
the config, at import time), or use the host-wide metrics at `/metrics`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from genapi import log
from genapi._core import stats

Handler = Callable[[str, dict[str, Any], dict[str, Any], Any], Any]

CATEGORIES: dict[str, tuple[str, ...]] = {
    "executor": (
        "genapi.executor.request.start",
        "genapi.executor.request.stop",
        "genapi.executor.request.exception",
        "genapi.executor.retry",
        "genapi.executor.retry.exhausted",
    ),
    "rate_limiter": ("genapi.rate_limiter.check", "genapi.rate_limiter.exceeded", "genapi.rate_limiter.reset"),
    "hooks": (
        "genapi.hook.before.start",
        "genapi.hook.before.stop",
        "genapi.hook.before.exception",
        "genapi.hook.after.start",
        "genapi.hook.after.stop",
        "genapi.hook.after.exception",
    ),
    "worker_pool": (
        "genapi.worker_pool.task.start",
        "genapi.worker_pool.task.stop",
        "genapi.worker_pool.task.exception",
        "genapi.worker_pool.task.rejected",
        "genapi.worker_pool.circuit_breaker.open",
        "genapi.worker_pool.circuit_breaker.close",
    ),
    "config": (
        "genapi.config.pull.start",
        "genapi.config.pull.stop",
        "genapi.config.push",
        "genapi.config.add",
        "genapi.config.batch_add",
        "genapi.config.delete",
        "genapi.config.disable",
        "genapi.config.enable",
    ),
}
EVENTS: tuple[str, ...] = tuple(e for events in CATEGORIES.values() for e in events)

_handlers: dict[str, list[tuple[str, Handler, Any]]] = {}
DEFAULT_LOGGER = "genapi-default-logger"
SLOW_HANDLER_S = 0.05  # a handler runs inline in the worker: one slower than this is detached


def list_events() -> list[str]:
    return list(EVENTS)


def attach(handler_id: str, events: str | Iterable[str], handler: Handler, config: Any = None) -> None:
    """Calls `handler` for each of `events` (one name or several); raises ValueError for an
    unknown event name or a handler_id already attached (as :telemetry does)."""
    names = [events] if isinstance(events, str) else list(events)
    unknown = [e for e in names if e not in EVENTS]
    if unknown:
        raise ValueError(f"unknown telemetry event(s) {', '.join(unknown)}; list_events() names them all")
    if any(hid == handler_id for hs in _handlers.values() for hid, _, _ in hs):
        raise ValueError(f"a telemetry handler {handler_id!r} is already attached; detach it first")
    for name in names:
        _handlers.setdefault(name, []).append((handler_id, handler, config))
    _changed()


attach_many = attach


def attach_all(handler_id: str, handler: Handler, config: Any = None) -> None:
    attach(handler_id, EVENTS, handler, config)


def attach_category(handler_id: str, category: str, handler: Handler, config: Any = None) -> None:
    """One category's events: executor, rate_limiter, hooks, worker_pool, config."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown telemetry category {category!r}; one of {', '.join(CATEGORIES)}")
    attach(handler_id, CATEGORIES[category], handler, config)


def detach(handler_id: str) -> bool:
    """Detaches every event of `handler_id`; False when it was not attached."""
    found = False
    for name in list(_handlers):
        kept = [h for h in _handlers[name] if h[0] != handler_id]
        found = found or len(kept) != len(_handlers[name])
        if kept:
            _handlers[name] = kept
        else:
            del _handlers[name]
    _changed()
    return found


def attach_default_logger(level: str = "debug") -> None:
    """Logs every event at `level` (structured: the event, its measurements and metadata)."""
    write = getattr(log, level)

    def logger(event: str, measurements: dict[str, Any], metadata: dict[str, Any], _config: Any) -> None:
        fields = {**measurements, **{k: v for k, v in metadata.items() if k not in measurements}}
        write("telemetry", telemetry_event=event, **fields)  # `event=` would collide with log's own argument

    attach_all(DEFAULT_LOGGER, logger)


def detach_default_logger() -> bool:
    return detach(DEFAULT_LOGGER)


def listening(event: str) -> bool:
    return event in _handlers


def execute(event: str, measurements: dict[str, Any], metadata: dict[str, Any]) -> None:
    """Emits `event` to its handlers. A handler that raises, or that takes longer than
    SLOW_HANDLER_S, is detached and reported: it cannot break or hold up requests again."""
    handlers = _handlers.get(event)
    if not handlers:
        return
    for handler_id, handler, config in list(handlers):
        started = time.perf_counter()
        try:
            handler(event, measurements, metadata, config)
        except Exception as exc:
            detach(handler_id)
            log.error(
                "telemetry_handler_detached",
                handler_id=handler_id,
                telemetry_event=event,
                error=f"{type(exc).__name__}: {exc}",
            )
            continue
        took = time.perf_counter() - started
        if took > SLOW_HANDLER_S:
            detach(handler_id)
            log.error(
                "telemetry_handler_detached",
                handler_id=handler_id,
                telemetry_event=event,
                error=f"took {took * 1000:.0f} ms, over the {SLOW_HANDLER_S * 1000:.0f} ms a handler may take",
            )


def span(prefix: str, metadata: dict[str, Any], fn: Callable[[], Any]) -> Any:
    """Runs `fn` between `<prefix>.start` and `<prefix>.stop` (or `.exception`, re-raising)."""
    execute(f"{prefix}.start", {"system_time": time.time_ns()}, metadata)
    started = time.perf_counter()
    try:
        out = fn()
    except Exception as exc:
        execute(
            f"{prefix}.exception",
            {"duration_us": _us(started)},
            {**metadata, "kind": "error", "reason": f"{type(exc).__name__}: {exc}"},
        )
        raise
    execute(f"{prefix}.stop", {"duration_us": _us(started)}, metadata)
    return out


def _changed() -> None:
    """Switches the compiled paths' events on while a handler listens, off after (the hooks
    live in `_core/stats.pyx`; the core never imports this module)."""
    stats.telemetry_events(execute if _handlers else None)
    stats.task_events(any(e in _handlers for e in CATEGORIES["worker_pool"][:3]))
    stats.request_events(
        _request_start if REQUEST_START in _handlers else None, _request_stop if REQUEST_STOP in _handlers else None
    )
    stats.limit_events(
        _limit_check if LIMIT_CHECK in _handlers else None, _limit_exceeded if LIMIT_EXCEEDED in _handlers else None
    )


REQUEST_START = "genapi.executor.request.start"
REQUEST_STOP = "genapi.executor.request.stop"
LIMIT_CHECK = "genapi.rate_limiter.check"
LIMIT_EXCEEDED = "genapi.rate_limiter.exceeded"


def _who(request: Any) -> dict[str, Any]:
    return {
        "request_id": request.request_id,
        "request_type": request.request_type,
        "service": request.service,
        "user_id": request.user_id,
    }


def _request_start(request: Any) -> None:
    execute(REQUEST_START, {"system_time": time.time_ns()}, _who(request))


def _request_stop(request: Any, response: Any, seconds: float) -> None:
    execute(
        REQUEST_STOP,
        {"duration_us": int(seconds * 1_000_000)},
        {
            **_who(request),
            "success": bool(response is not None and response.success),
            "async": bool(response is not None and response.async_),
            "error": None if response is None else response.error,
        },
    )


def _limit_check(request: Any, refusal: Any, seconds: float) -> None:
    execute(
        LIMIT_CHECK,
        {"duration_us": int(seconds * 1_000_000)},
        {**_who(request), "result": "ok" if refusal is None else "rate_limited"},
    )


def _limit_exceeded(request: Any, rule: Any, value: str, retry_after_ms: int, scope: Any) -> None:
    execute(
        LIMIT_EXCEEDED,
        {"retry_after_ms": retry_after_ms},
        {
            "key": rule.key,
            "value": value,
            "scope": scope,
            "max_requests": rule.max_requests,
            "window_ms": rule.window_ms,
            "request_id": request.request_id,
            "user_id": request.user_id,
        },
    )


def _us(started: float) -> int:
    return int((time.perf_counter() - started) * 1_000_000)
