"""Micro-benchmarks of node selection: ns per `Selector.order()` call, per mode, over 4 nodes."""

from __future__ import annotations

import pytest

from genapi._core.select import NodeState, Selector
from genapi.structs import Request

NODES = [NodeState(f"10.0.0.{i}:7001") for i in range(1, 5)]
REQUEST = Request(
    request_id="7f1c2e9a-42", service="demo", request_type="get_item", args={"user_id": "user-12345", "item_id": "abc"}
)


def _custom(addresses: list[str], request: Request) -> str:
    return addresses[len(request.request_id) % len(addresses)]


@pytest.mark.benchmark(group="select")
@pytest.mark.parametrize(
    "mode",
    ["random", "hash", "round_robin", {"hash": "user_id"}, {"sticky": "user_id"}, "custom"],
    ids=["random", "hash", "round_robin", "hash_arg", "sticky", "custom"],
)
def test_selector_order(benchmark, mode):
    sel = Selector(mode, _custom if mode == "custom" else None)
    order = benchmark(sel.order, NODES, REQUEST)
    assert sorted(n.address for n in order) == sorted(n.address for n in NODES)


@pytest.mark.benchmark(group="select")
def test_node_admit_done(benchmark):
    """The per-call cost of the in-flight bound and the breaker: admit, then done."""
    node = NodeState("10.0.0.1:7001")

    def call():
        node.admit(1.0)
        node.done(False, 1.0)

    benchmark(call)
    assert (node.in_flight, node.state) == (0, "closed")
