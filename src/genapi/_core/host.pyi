from collections.abc import Callable
from typing import Any

from genapi._core.handoff import ThreadPool
from genapi._core.rpc import ServerPeer

class FunctionHost:
    service: Any
    advertised: list[str]
    running: dict[tuple[int, Any], Any]
    calls: int
    def __init__(
        self,
        service: Any,
        advertised: list[str],
        pool: ThreadPool,
        converters: Callable[[Callable[..., Any]], list[tuple[int, type, Callable[[Any], Any], str]]],
    ) -> None: ...
    @property
    def functions(self) -> dict[str, Callable[..., Any]]: ...
    def call(
        self, peer: ServerPeer, cid: Any, target: Any, args: Any, timeout_ms: Any, stream: Any, trace: Any = None
    ) -> None: ...
    def cancel(self, peer: ServerPeer, cid: Any) -> None: ...
    def credit(self, peer: ServerPeer, cid: Any, n: Any) -> None: ...
    def lost(self, peer: ServerPeer) -> None: ...

class Declared:
    fn: Callable[..., Any]
    kind: int
    convert: list[tuple[int, type, Callable[[Any], Any], str]]
    def __init__(self, fn: Callable[..., Any], convert: list[tuple[int, type, Callable[[Any], Any], str]]) -> None: ...

class Running:
    task: Any
    future: Any
    credit: int
    granted: Any
    deadline: float
    peer: Any
    cid: Any
    timeout_ms: Any
    def cancel(self) -> None: ...
