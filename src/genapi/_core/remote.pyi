from typing import Any

from genapi._core.callee import Callee
from genapi._core.rpc import ClientPeer, Sink
from genapi._core.select import NodeState, Selector
from genapi.structs import FunConfig

class NodeLink:
    address: str
    state: NodeState
    peer: ClientPeer | None
    nodes: Any
    def __init__(self, address: str, nodes: Any) -> None: ...
    def connected(self) -> ClientPeer | None: ...
    async def connect(self) -> ClientPeer: ...
    def close(self) -> None: ...

class Plan:
    attempt: int
    first: NodeLink | None

class RemoteCallee(Callee):
    nodes: Any
    target: str
    name: str
    selector: Selector
    same_node: bool
    def __init__(self, config: FunConfig, nodes: Any, detail_error: bool = False) -> None: ...
    def links(self) -> list[NodeLink]: ...

class RemoteCall(Sink):
    def cancel(self) -> None: ...
