from collections.abc import Callable, Coroutine
from typing import Any

from genapi._core.callee import Callee
from genapi._core.connection import Connection
from genapi._core.limits import RequestLimiter
from genapi._core.reply import Reply
from genapi._core.validate import Limits, Validator
from genapi.engine.cluster_limits import Pending
from genapi.loader import Target
from genapi.request.registry import Registry
from genapi.structs import FunConfig, Request, Response

class Entry:
    config: FunConfig
    callee: Callee
    validator: Validator
    predefined: list[Any]
    request_info: bool
    before: Target | None
    after: Target | None
    permission: Target | None
    mode: Any
    retries: int
    response_type: str
    inline: bool
    plain_args: bool
    def __init__(self, config: FunConfig, callee: Callee, limits: Limits) -> None: ...
    def admit(self, request: Request, identity: Any, limiter: RequestLimiter | None) -> Response | Pending | None: ...
    def arguments(self, request: Request, stream: Any = None) -> list[Any]: ...

def log_denied(request: Request, mode: Any) -> None: ...
def permitted_by_mode(entry: Entry, request: Request) -> bool: ...

class Dispatcher:
    @property
    def limiter(self) -> RequestLimiter | None: ...
    def __init__(
        self,
        registry: Registry[Entry],
        settings: Any,
        general: Callable[[Reply, Request, Entry], Coroutine[Any, Any, None]],
        limiter: RequestLimiter | None = None,
    ) -> None: ...
    def handle(self, conn: Connection, join_ref: Any, ref: Any, topic: str, payload: Any, size: int) -> None: ...
    def start(self, reply: Reply, request: Request, entry: Entry) -> None: ...
    def admitted(
        self, reply: Reply, request: Request, entry: Entry, pending: Pending, corked: list[Connection] | None
    ) -> None: ...
