"""Telemetry handlers attached with `attach_category` and `attach_many` inside a test gateway
(tests/test_telemetry_api.py): attached when the gateway imports this module (a function of the
config names it), read back through `events()`, a gateway function; and the default logger, at
warning, writing to the gateway's stderr. Each record carries its
handler's config, which tells which attachment delivered it."""

import msgspec

from genapi import telemetry

SEEN: list[dict] = []

MANY = (
    "genapi.executor.request.exception",
    "genapi.worker_pool.circuit_breaker.open",
    "genapi.worker_pool.circuit_breaker.close",
)


def _record(event, measurements, metadata, config):
    SEEN.append(
        {
            "event": event,
            "handler": config,
            "measurements": dict(measurements),
            "metadata": {k: v for k, v in metadata.items() if isinstance(v, str | int | float | bool | None)},
        }
    )


telemetry.attach_category("api-config", "config", _record, "category")
telemetry.attach_many("api-many", MANY, _record, "many")
telemetry.attach_default_logger("warning")  # one line per event on the gateway's stderr


async def events(clear=False):
    out = list(SEEN)
    if clear:
        SEEN.clear()
    return out


async def attach(handler_id):
    """Attaches `handler_id` to request.exception (attach_many with one name)."""
    telemetry.attach_many(handler_id, ["genapi.executor.request.exception"], _record, handler_id)
    return True


async def detach(handler_id):
    return telemetry.detach(handler_id)


def before_unbindable(request, config):
    """A before hook that hands back a config naming a function nowhere: the pipeline cannot
    bind it, so the request crashes (genapi.executor.request.exception)."""
    return request, msgspec.structs.replace(config, mfa="telemetry_api_probe:no_such_function")
