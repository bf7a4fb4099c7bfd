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

    def __init__(self, problems: str | list[str], partial: Any = None, numbers: list[int] | None = None) -> None:
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


class RelayError(CallError):
    """A relay-group operation refused by its rules. `code` is PhoenixGenApi's reason
    (`not_found`, `not_admin`, ...), `text` what the client reads."""

    def __init__(self, code: str, text: str, can_retry: bool = False) -> None:
        super().__init__(text)
        self.code = code
        self.can_retry = can_retry


class RemoteFailure(GenapiError):
    """A service node could not answer (connection lost, no such function there) or its function
    raised; `text` is what happened, shown to the client only with detail_error."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class RpcError(GenapiError):
    """A genapi RPC call or control request that failed: `code` (one of the ERROR frame codes in
    rpc.py: raised, unknown, timeout, lost, refused, auth, protocol) and `text`."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text


class NotFound(LookupError):
    """The registry has no such function (or version): `request.registry.Registry.lookup`."""


class Disabled(LookupError):
    """The function (or version) is configured but disabled."""


class HookRejected(GenapiError):
    """A before hook aborted the request."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------- client
# What genapi.client raises. Each carries what a caller needs to decide (the Response, the
# request id, whether a retry is worth it) besides a message that names the call.
class ClientError(GenapiError):
    """Base of every error genapi.client raises on purpose."""


class PhoenixError(ClientError):
    """An error phx_reply: a join refused, a push on a topic not joined ("unmatched topic"), a
    request payload the gateway could not decode. `response` is the reply's response."""

    def __init__(self, response: Any) -> None:
        super().__init__(response)
        self.response = response


class CallFailed(ClientError):
    """The function answered with a failed Response (success false). `response` is that Response;
    `error` its error text, `can_retry` whether the gateway says a retry may succeed."""

    def __init__(self, name: str, response: Any) -> None:
        self.response = response
        self.request_id: str = response.request_id
        self.error: str | None = response.error
        self.can_retry: bool = response.can_retry
        retry = " (can_retry)" if response.can_retry else ""
        super().__init__(f"{name} (request {response.request_id}) failed: {response.error}{retry}")


class StreamRequired(ClientError, TypeError):
    """call() reached a stream function (its first push was kind "start"): streams are
    read with stream(). The stream the gateway started is left to run; its pushes are dropped."""

    def __init__(self, service: str, request_type: str, request_id: str) -> None:
        self.request_id = request_id
        super().__init__(
            f"{service}.{request_type} is a stream function (request {request_id} started "
            f'a stream): read it with client.stream("{service}", '
            f'"{request_type}", ...) instead of call()'
        )


class ReplyTimeout(ClientError, TimeoutError):
    """No (final) answer within the caller's timeout. `request_id` is None for joins, leaves
    and heartbeats."""

    def __init__(self, what: str, timeout: float, request_id: str | None = None, detail: str = "") -> None:
        self.request_id = request_id
        self.timeout = timeout
        req = f" (request {request_id})" if request_id is not None else ""
        super().__init__(f"no reply to {what}{req} within {float(timeout)} s{detail}")


class ConnectionLost(ClientError, ConnectionError):
    """The connection is gone (closed by either side, or the server stopped answering
    heartbeats). Raised to every call waiting on it; whether the server ran a pending call is
    unknown."""


def connection_closed(url: str, code: Any) -> str:
    shown = getattr(code, "value", code)
    how = f"closed by the server with code {shown}" if code is not None else "lost"
    return f"connection to {url} {how}"


def heartbeat_timeout(url: str, interval: float) -> str:
    return (
        f"connection to {url} closed: no heartbeat reply within {float(interval)} s "
        "(heartbeat_interval); the server is unreachable or stopped"
    )


CLIENT_CLOSED = "the client was closed"


# --------------------------------------------------------------------------- texts
AUTH_REQUIRED = "Authentication required"
PERMISSION_DENIED = "Permission denied"
SERVICE_UNAVAILABLE = "Service temporarily unavailable"
INTERNAL = "Internal Server Error"
REQUEST_FAILED = "Request processing failed"
UNMATCHED_TOPIC = "unmatched topic"
TOO_MANY_CHANNELS = "too many channels joined"
JOIN_REF_MAX_CHARS = 64


def topic_too_long(max_topic_bytes: int) -> str:
    return f"topic is longer than {max_topic_bytes} bytes (max_topic_bytes)"


def join_ref_invalid() -> str:
    return f"join_ref must be null, a number or a string of at most {JOIN_REF_MAX_CHARS} characters"


def unencodable_answer(fields: list[str], exc: BaseException) -> str:
    """The reason sent when an answer could not be encoded (a client's ref nested too deeply)."""
    return (
        f"the answer's {', '.join(fields)} could not be encoded as JSON ({type(exc).__name__}: {exc}) "
        "and was sent as null"
    )


# WebSocket close reasons (RFC 6455; at most 123 bytes each)
WS_RSV_BITS = "RSV bits set without a negotiated extension"
WS_STRAY_CONTINUATION = "continuation frame without a fragmented message to continue"
WS_INTERLEAVED = "new data frame before the fragmented message finished"


def ws_invalid_close_code(code: int) -> str:
    return f"invalid close code {code}"


def ws_message_too_big(max_bytes: int) -> str:
    return f"message exceeds {max_bytes} bytes (2 * max_payload_bytes + 65536)"


UNSUPPORTED = "unsupported function"


def unsupported(request_type: str, version: str) -> str:
    return f"{UNSUPPORTED}: {request_type} version {version}"


DISABLED = "disabled function"


def disabled(request_type: str, version: str) -> str:
    return f"{DISABLED}: {request_type} version {version}"


INVALID_ARGUMENT = "Invalid argument"


def invalid_argument(exc: BaseException) -> str:
    return f"{INVALID_ARGUMENT}: {exc}"


LOCAL_TIMEOUT = "local execution timed out"
REMOTE_TIMEOUT = "remote execution timed out"


def local_timeout(timeout_ms: int | None) -> str:
    return f"{LOCAL_TIMEOUT} after {timeout_ms}ms"


def remote_timeout(timeout_ms: int | None) -> str:
    return f"{REMOTE_TIMEOUT} after {timeout_ms}ms"


NO_TARGET_NODES = "no target nodes available"


def remote_failed(text: str, detail: bool) -> str:
    """A node's failure (or its function's exception) as the client sees it."""
    return f"{INTERNAL}: {text}" if detail else INTERNAL


RATE_LIMITED = "Rate limit exceeded."


def rate_limited(retry_after_s: int) -> str:
    return f"{RATE_LIMITED} Please retry after {max(retry_after_s, 1)} seconds."


RATE_LIMIT_UNAVAILABLE = "Rate limit service unavailable"


HOOK_REJECTED = "hook rejected"
HOOK_TIMEOUT = "hook timed out"


def hook_rejected(reason: str) -> str:
    return f"{HOOK_REJECTED}: {reason}"


def hook_timeout(timeout_ms: int) -> str:
    return f"{HOOK_TIMEOUT} after {timeout_ms}ms"


def internal(exc: BaseException | None, detail: bool) -> str:
    """`Internal Server Error`, with the exception when the gateway shows details."""
    if detail and exc is not None:
        return f"{INTERNAL}: {type(exc).__name__}: {exc}"
    return INTERNAL


def not_serializable(exc: BaseException, detail: bool) -> str:
    return f"{INTERNAL}: result is not JSON-serializable: {exc}" if detail else INTERNAL


QUEUE_FULL = "Too many requests on this connection"


def queue_full(max_in_flight: int, max_queued: int) -> str:
    return f"{QUEUE_FULL}: {max_in_flight} in flight and {max_queued} waiting (max_in_flight, max_queued)"


def unsupported_response_type(response_type: str) -> str:
    return f"unsupported response type: {response_type}"


def unsupported_event(event: str, request_event: str) -> str:
    return f'unsupported event "{event}"; requests use the event "{request_event}"'


# --------------------------------------------------------------------------- connect (HTTP)
def headers_too_large(limit: int) -> str:
    """The body of the 431 answering an upgrade request whose head is over picows' limit."""
    return f"request headers must be under {limit} bytes (a token that long cannot be sent)"


AT_CONNECTION_LIMIT = "server at its open-connection limit, retry later"


def too_many_pushed(service: str, services: int, functions: int, max_services: int, max_functions: int) -> str:
    """A push past the gateway's bounds on what peers may make it hold."""
    return (
        f"push of {service} refused: the gateway would hold {services} services and {functions} functions; "
        f"[cluster] max_services = {max_services}, max_functions = {max_functions}"
    )


def push_rate_exceeded(peer: str, limit: int) -> str:
    """A peer pushing faster than the gateway lets one address push."""
    return f"push from {peer} refused: over [cluster] max_pushes_per_minute = {limit} in the last 60 s; retry later"


def module_not_allowed(field: str, module: str, allowed: tuple[str, ...]) -> str:
    """A pushed or pulled config names code for the gateway to run outside `[gateway] allowed_modules`."""
    under = ", ".join(allowed) if allowed else "empty: a pushed config may name no code for the gateway to run"
    return f"{field}: module {module!r} is not under [gateway] allowed_modules ({under})"


# --------------------------------------------------------------------------- relay groups
# PhoenixGenApi's reasons, each with the text a client reads; handle_relay's four are the
# original's own texts.
RELAY_TEXTS = {
    "not_found": "Group not found",
    "not_member": "Not a member of this group",
    "pending": "Pending membership: wait for acceptance",
    "muted": "You are muted and cannot send messages",
    "already_exists": "Group already exists",
    "already_member": "Already a member of this group",
    "user_not_in_group": "User is not a member of this group",
    "not_admin": "Only an admin of this group may do this",
    "not_active": "Only an active member of this group may do this",
    "user_not_pending": "User is not pending: only a pending member can be accepted",
    "not_strict_private": "Only strict_private groups have mute and unmute",
    "cannot_mute": "Only an active member can be muted",
    "not_muted": "User is not muted",
    "no_user": "Relay groups need an authenticated user (the connection has no user_id)",
    "unavailable": "Relay groups are unavailable (the gateway's master is gone)",
}


def relay_error(code: str) -> RelayError:
    return RelayError(code, RELAY_TEXTS[code])


RELAY_UNREACHABLE = "Relay groups are unavailable: the engine (Redis) cannot be reached; retry later"


def relay_unreachable() -> RelayError:
    """Redis (`[engine] type = "redis"`) could not be reached: nothing was ordered, worth retrying."""
    return RelayError("engine_unavailable", RELAY_UNREACHABLE, can_retry=True)


def relay_group_type(value: object) -> RelayError:
    return RelayError("invalid_group_type", f"group_type must be one of public, private, strict_private, got {value!r}")


def relay_too_many_groups(limit: int) -> RelayError:
    return RelayError("too_many_groups", f"Too many relay groups on this gateway ([relay] max_groups = {limit})")


def relay_group_id_too_long(limit: int) -> RelayError:
    return RelayError("invalid_argument", f"group_id must be at most {limit} bytes")


def relay_group_full(limit: int) -> RelayError:
    return RelayError("group_full", f"Group is full ([relay] max_members = {limit})")


def relay_argument(op: str, name: str) -> RelayError:
    return RelayError("invalid_argument", f"{op}: {name} must be a non-empty string")


# --------------------------------------------------------------------------- kinds
# An error Response's kind, told by the text's start (each text above is written once): what
# /metrics (genapi_errors_total) and /dashboard count errors by. The set is closed: memory bounded.
_KINDS: tuple[tuple[str, str], ...] = (
    (INVALID_ARGUMENT, "invalid_argument"),
    (UNSUPPORTED, "unsupported"),
    (DISABLED, "disabled"),
    (PERMISSION_DENIED, "permission_denied"),
    (AUTH_REQUIRED, "authentication_required"),
    (RATE_LIMITED, "rate_limited"),
    (RATE_LIMIT_UNAVAILABLE, "rate_limit_unavailable"),
    (QUEUE_FULL, "queue_full"),
    (LOCAL_TIMEOUT, "timeout"),
    (REMOTE_TIMEOUT, "timeout"),
    (HOOK_TIMEOUT, "timeout"),
    (HOOK_REJECTED, "hook_rejected"),
    (SERVICE_UNAVAILABLE, "unavailable"),
    (NO_TARGET_NODES, "unavailable"),
    (INTERNAL, "internal"),
    (REQUEST_FAILED, "internal"),
)
ERROR_KINDS: tuple[str, ...] = (*dict.fromkeys(kind for _, kind in _KINDS), "cancelled", "other")


def error_kind(text: object) -> str:
    """The kind of an error Response's text: "cancelled" for a call that ended unanswered (its
    client left or its topic closed), "other" for a function's own error."""
    if text is None:
        return "cancelled"
    if isinstance(text, str):
        for prefix, kind in _KINDS:
            if text.startswith(prefix):
                return kind
    return "other"
