"""The exception tree and every client-facing error text, each written once.

Texts follow PhoenixGenApi's wording (reference/behavior.md) so clients written for it keep
working; genapi's own additions say which field or limit failed.
"""
from __future__ import annotations

from typing import Any


class GenapiError(Exception):
    """Base of every error genapi raises on purpose."""


# --------------------------------------------------------------------------- config
class ConfigError(GenapiError, ValueError):
    """A config file that cannot be served. `problems` lists every problem found, each naming
    the table, the key and what is wrong; str(exc) is them one per line. From parse(), `partial`
    is what of the file was valid (its functions numbered by `numbers`, their place in the
    file), so the callables of the valid functions can be checked in the same run."""

    def __init__(self, problems: str | list[str], partial: Any = None,
                 numbers: list[int] | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.partial = partial
        self.numbers = numbers
        super().__init__("\n".join(self.problems))


# --------------------------------------------------------------------------- inbound
class FrameError(GenapiError, ValueError):
    """A frame that is not a Phoenix message. `ref`/`topic` are set when they could be read."""

    def __init__(self, message: str, ref: Any = None, topic: str | None = None, join_ref: Any = None) -> None:
        ValueError.__init__(self, message)
        self.ref = ref
        self.topic = topic
        self.join_ref = join_ref


class DecodeError(GenapiError, ValueError):
    """A request payload that is not a gateway request; the message is the client-facing text."""

    def __init__(self, message: str, request_id: str = "unknown") -> None:
        ValueError.__init__(self, message)
        self.request_id = request_id


class ArgumentError(GenapiError, ValueError):
    """A request's arguments are invalid; ``str(exc)`` is the client-facing detail."""


# --------------------------------------------------------------------------- calls
class CallError(GenapiError):
    """A call failed in a way the client is told about in `text` (with `can_retry`)."""

    can_retry = False

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class CallTimeout(CallError):
    """The callee did not answer within the function's timeout."""


class Unavailable(CallError):
    """No capacity right now (thread pool and its queue full, node down): worth retrying."""

    can_retry = True

    def __init__(self, text: str | None = None) -> None:
        super().__init__(text or SERVICE_UNAVAILABLE)


class HookRejected(GenapiError):
    """A before hook aborted the request."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------- texts
AUTH_REQUIRED = "Authentication required"
PERMISSION_DENIED = "Permission denied"
SERVICE_UNAVAILABLE = "Service temporarily unavailable"
INTERNAL = "Internal Server Error"
REQUEST_FAILED = "Request processing failed"
UNMATCHED_TOPIC = "unmatched topic"


def unsupported(request_type: str, version: str) -> str:
    return f"unsupported function: {request_type} version {version}"


def disabled(request_type: str, version: str) -> str:
    return f"disabled function: {request_type} version {version}"


def invalid_argument(exc: BaseException) -> str:
    return f"Invalid argument: {exc}"


def local_timeout(timeout_ms: int | None) -> str:
    return f"local execution timed out after {timeout_ms}ms"


def hook_rejected(reason: str) -> str:
    return f"hook rejected: {reason}"


def hook_timeout(timeout_ms: int) -> str:
    return f"hook timed out after {timeout_ms}ms"


def internal(exc: BaseException | None, detail: bool) -> str:
    """`Internal Server Error`, with the exception when the gateway shows details."""
    if detail and exc is not None:
        return f"{INTERNAL}: {type(exc).__name__}: {exc}"
    return INTERNAL


def not_serializable(exc: BaseException, detail: bool) -> str:
    return f"{INTERNAL}: result is not JSON-serializable: {exc}" if detail else INTERNAL


def queue_full(max_in_flight: int, max_queued: int) -> str:
    return (f"Too many requests on this connection: {max_in_flight} in flight and {max_queued} "
            "waiting (max_in_flight, max_queued)")


def unsupported_response_type(response_type: str) -> str:
    return f"unsupported response type: {response_type}"


def unsupported_event(event: str, request_event: str) -> str:
    return f'unsupported event "{event}"; requests use the event "{request_event}"'


# --------------------------------------------------------------------------- connect (HTTP)
def headers_too_large(limit: int) -> str:
    """The body of the 431 answering an upgrade request whose head is over picows' limit."""
    return f"request headers must be under {limit} bytes (a token that long cannot be sent)"


AT_CONNECTION_LIMIT = "server at its open-connection limit, retry later"
