"""The Python client (genapi.client) against real gateways."""
import asyncio

import pytest

from gateway_proc import GatewayProcess
from genapi.client import Client, PhoenixError

RESTRICTED = """
[gateway]
topics = ["api:*"]

[auth]
require_verified_user_id = false

[[functions]]
service = "demo"
request_type = "echo"
nodes = "local"
mfa = "genapi.demo:echo"
arg_types = { text = "string" }
timeout = 1000
"""


def test_client_join_errors_pushes_and_v1(run):
    with GatewayProcess(RESTRICTED) as gw:
        async def go():
            c = await Client.connect(gw.url)
            with pytest.raises(PhoenixError) as e:
                await c.join("room:1")
            assert e.value.response == {"reason": "unmatched topic"}
            with pytest.raises(RuntimeError):
                await c.call("demo", "echo", {"text": "x"})  # nothing joined yet
            await c.join("api:a")
            assert await c.heartbeat() == {"status": "ok", "response": {}}
            # a topic that is not joined: the reply is an error, there is no push
            with pytest.raises(PhoenixError) as e:
                await c.call("demo", "echo", {"text": "x"}, topic="api:other")
            assert e.value.response == {"reason": "unmatched topic"}
            # a server push that answers no call lands in `pushes`: phx_close after a leave
            await c.leave("api:a")
            push = await asyncio.wait_for(c.pushes.get(), 5)
            assert (push.topic, push.event) == ("api:a", "phx_close")
            await c.close()
            await asyncio.wait_for(c.closed, 5)  # the disconnect is seen, not left hanging

            v1 = await Client.connect(gw.url, vsn=None)  # no vsn: V1 objects
            await v1.join("api:v1")
            r = await v1.call("demo", "echo", {"text": "v1"})
            assert r.result == {"text": "v1", "n": 1}
            await v1.close()
        run(go())


def test_client_sees_server_shutdown(run):
    gw = GatewayProcess(RESTRICTED)

    async def go():
        c = await Client.connect(gw.url)
        await c.join("api:x")
        gw.proc.terminate()
        await asyncio.wait_for(c.closed, 5)
        assert c.close_code.value == 1001
        with pytest.raises(ConnectionError):
            c.push("api:x", "phoenix_gen_api", {})
    run(go())
    assert gw.stop() == 0
