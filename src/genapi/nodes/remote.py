"""Remote functions: each worker's links to its service nodes (`Nodes`), and the callee of a
function served by them (`RemoteCallee`, compiled with its calls in `_core/remote.pyx`)."""

from __future__ import annotations

from typing import Any

from genapi._core.remote import NodeLink, RemoteCallee
from genapi.config import ClusterSettings
from genapi.nodes import rpc

__all__ = ["NodeLink", "Nodes", "RemoteCallee"]


class Nodes:
    """The links of one worker, one per node address, shared by every function on that node."""

    def __init__(self, cluster: ClusterSettings, secret: bytes | None, name: str) -> None:
        self.cluster = cluster
        self.secret = secret
        self.name = name
        self.links: dict[str, NodeLink] = {}

    def link(self, address: str) -> NodeLink:
        link = self.links.get(address)
        if link is None:
            rpc.split_address(address)  # ValueError naming the address
            link = self.links[address] = NodeLink(address, self)
        return link

    def status(self) -> list[dict[str, Any]]:
        """Each node's breaker, calls in flight and whether this worker is connected to it."""
        return [dict(link.state.snapshot(), connected=link.connected() is not None) for link in self.links.values()]

    def close(self) -> None:
        for link in self.links.values():
            link.close()
