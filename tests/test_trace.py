"""W3C traceparent: from the connect params or the request, through the gateway, to the
function on the service node (real gateway and node processes)."""

from __future__ import annotations

import asyncio

import pytest

from genapi import trace
from genapi.client import Client
from support.gateway_proc import GatewayProcess
from support.node_proc import NodeProcess, wait_pushed

CONFIG = """
[auth]
require_verified_user_id = false
"""
TP_CONNECT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TP_REQUEST = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_valid() -> None:
    assert trace.valid(TP_CONNECT) == TP_CONNECT
    for bad in (
        None,
        42,
        "",
        TP_CONNECT.upper(),
        TP_CONNECT[:-1],
        "ff" + TP_CONNECT[2:],
        "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01",
    ):
        assert trace.valid(bad) is None, bad


@pytest.mark.parametrize("fn", ["trace_async", "trace_thread"])
def test_traceparent_reaches_the_node(fn: str) -> None:
    with GatewayProcess(CONFIG) as gw, NodeProcess([gw.control], name="t") as node:
        wait_pushed(gw.control, "inv", [node.address])

        async def main() -> None:
            plain = await Client.connect(gw.url)
            await plain.join("api:inv")
            assert (await plain.call("inv", fn)).result is None  # type: ignore[union-attr]
            # the request's own traceparent
            _reply, q = await plain.request("inv", fn, {}, traceparent=TP_REQUEST)
            resp = await asyncio.wait_for(q.get(), 5)
            assert resp.result == TP_REQUEST
            # an invalid one is ignored (W3C): no trace context
            _reply, q = await plain.request("inv", fn, {}, traceparent="not-a-trace")
            assert (await asyncio.wait_for(q.get(), 5)).result is None
            await plain.close()
            # the connection's, from the connect params; a request's own wins
            traced = await Client.connect(gw.url, params={"traceparent": TP_CONNECT})
            await traced.join("api:inv")
            assert (await traced.call("inv", fn)).result == TP_CONNECT  # type: ignore[union-attr]
            _reply, q = await traced.request("inv", fn, {}, traceparent=TP_REQUEST)
            assert (await asyncio.wait_for(q.get(), 5)).result == TP_REQUEST
            await traced.close()

        asyncio.run(main())
