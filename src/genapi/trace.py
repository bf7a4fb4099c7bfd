"""W3C trace context (`traceparent`): a client's trace id passes through the gateway to the
service node that runs the call, so one call can be followed across both.

A client gives it in the connect params (`?traceparent=...`, for every call of the connection)
or in a request beside `service` (for that call). An invalid value is ignored, as the W3C
recommendation says (the call simply has no trace context). On a service node the running
function reads it with `genapi.trace.current()`.
"""

from __future__ import annotations

import contextvars
import re

_FORMAT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
CURRENT: contextvars.ContextVar[str | None] = contextvars.ContextVar("genapi_traceparent", default=None)


def valid(value: object) -> str | None:
    """`value` when it is a well-formed traceparent (version ff and all-zero ids are not), else None."""
    if type(value) is not str or len(value) != 55 or not _FORMAT.fullmatch(value):
        return None
    if value.startswith("ff") or value[3:35] == "0" * 32 or value[36:52] == "0" * 16:
        return None
    return value


def current() -> str | None:
    """The traceparent of the call this code runs for (on a service node), or None."""
    return CURRENT.get()
