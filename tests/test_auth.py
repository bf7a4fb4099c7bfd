"""Connect authentication (JWT HS256/RS256, callback, anonymous) and identity rules, through
real gateway processes."""
import os
import tempfile
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from picows import WSError

from gateway_proc import GatewayProcess
from genapi.client import Client
from rawclient import Raw, request

EV = "phoenix_gen_api"
SECRET = "s3cret-for-tests-0123456789abcdef0123456789"

FUNCTIONS = """
[[functions]]
service = "t"
request_type = "who"
nodes = "local"
mfa = "testapi:info"
request_info = true
timeout = 1000

[[functions]]
service = "t"
request_type = "any"
nodes = "local"
mfa = "testapi:echo"
arg_types = { text = "string" }
check_permission = "any_authenticated"
timeout = 1000

[[functions]]
service = "t"
request_type = "own"
nodes = "local"
mfa = "testapi:echo"
arg_types = { text = "string", user_id = { type = "string", allow_nil = true } }
arg_orders = ["text", "user_id"]
check_permission = { arg = "user_id" }
timeout = 1000

[[functions]]
service = "t"
request_type = "admin"
nodes = "local"
mfa = "testapi:echo"
arg_types = { text = "string" }
check_permission = { role = ["admin", "ops"] }
timeout = 1000

[[functions]]
service = "t"
request_type = "cb"
nodes = "local"
mfa = "testapi:echo"
arg_types = { text = "string" }
permission_callback = "testapi:allow_if_magic"
check_permission = { role = ["nobody"] }
timeout = 1000

[[functions]]
service = "t"
request_type = "cb_async"
nodes = "local"
mfa = "testapi:echo"
arg_types = { text = "string" }
permission_callback = ["testapi:allow_async", ["open"]]
timeout = 1000

[[functions]]
service = "t"
request_type = "cb_raise"
nodes = "local"
mfa = "testapi:echo"
arg_types = { text = "string" }
permission_callback = "testapi:perm_raises"
timeout = 1000

[[functions]]
service = "t"
request_type = "public"
nodes = "local"
mfa = "testapi:echo"
arg_types = { text = "string" }
timeout = 1000
"""


def token(sub="u1", key=SECRET, alg="HS256", **claims):
    return jwt.encode({"sub": sub, **claims}, key, algorithm=alg)


@pytest.fixture(scope="module")
def hs_gateway():
    g = GatewayProcess(f'[auth]\njwt_secret = "{SECRET}"\n' + FUNCTIONS)
    yield g
    assert g.stop() == 0


@pytest.fixture(scope="module")
def rsa_keys():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    fd, path = tempfile.mkstemp(suffix=".pem")
    os.write(fd, pem)
    os.close(fd)
    yield key, path
    os.unlink(path)


def refused(url, **kw):
    async def go():
        with pytest.raises(WSError) as e:
            await Client.connect(url, **kw)
        return str(e.value)
    return go()


def test_hs256_token_in_params_and_subprotocol(hs_gateway, run):
    async def go():
        for kw in ({"token": token("alice", roles=["admin"], device_id="phone")},
                   {"auth_token": token("alice", roles=["admin"], device_id="phone")}):
            c = await Client.connect(hs_gateway.url, **kw)
            await c.join("api:x")
            r = await c.call("t", "who")
            assert r.result["info"] == {"request_id": r.request_id, "user_id": "alice", "device_id": "phone"}
            assert (await c.call("t", "admin", {"text": "x"})).success
            assert (await c.call("t", "any", {"text": "x"})).success
            await c.close()
    run(go())


def test_bad_tokens_refuse_the_connect(hs_gateway, run):
    for bad in (token(key="other-secret-0123456789abcdef0123456789"), token(exp=int(time.time()) - 10),
                "garbage", token(sub="")):
        assert "403" in run(refused(hs_gateway.url, token=bad))
    assert "403" in run(refused(hs_gateway.url, auth_token=token(key="nope-0123456789abcdef0123456789abcdef")))


def test_identity_overrides_payload_and_roles_come_from_identity(hs_gateway, run):
    async def go():
        c = await Raw.connect(hs_gateway.url, f"vsn=2.0.0&token={token('bob', roles=['user'])}")
        await c.join("api:x")
        c.send(["1", "2", "api:x", EV, request("r1", "who", {}, service="t", user_id="mallory",
                                             user_roles=["admin"], device_id="d2")])
        push = (await c.recv_n(2))[0]
        assert push[4]["result"]["info"] == {"request_id": "r1", "user_id": "bob", "device_id": "d2"}
        c.send(["1", "3", "api:x", EV, request("r2", "admin", {"text": "x"}, service="t", user_roles=["admin"])])
        assert (await c.recv_n(2))[0][4]["error"] == "Permission denied"
        # arg mode: args[user_id] must equal the identity's user_id
        c.send(["1", "4", "api:x", EV, request("r3", "own", {"text": "x", "user_id": "bob"}, service="t")])
        assert (await c.recv_n(2))[0][4]["success"] is True
        c.send(["1", "5", "api:x", EV, request("r4", "own", {"text": "x", "user_id": "alice"}, service="t")])
        assert (await c.recv_n(2))[0][4]["error"] == "Permission denied"
        c.send(["1", "6", "api:x", EV, request("r5", "own", {"text": "x"}, service="t")])
        assert (await c.recv_n(2))[0][4]["error"] == "Permission denied"
        await c.close()
    run(go())
    # every denial is logged with who, which request and the mode
    log = hs_gateway.read_stderr()
    assert "permission_denied user_id=bob request_id=r2 request_type=admin" in log
    assert "permission_denied user_id=bob request_id=r4 request_type=own mode=\"{'arg': 'user_id'}\"" in log


def test_require_verified_user_id(hs_gateway, run):
    async def go():
        c = await Raw.connect(hs_gateway.url)  # no token: anonymous
        await c.join("api:x")
        c.send(["1", "2", "api:x", EV, request("r1", "public", {"text": "x"}, service="t", user_id="claimed")])
        push, reply = await c.recv_n(2)
        assert push[4] == {"request_id": "r1", "result": None, "success": False, "error": "Authentication required",
                           "async": False, "has_more": False, "can_retry": False}
        assert reply == ["1", "2", "api:x", "phx_reply", {"status": "error", "response": "Authentication required"}]
        await c.close()
    run(go())


def test_permission_callbacks(hs_gateway, run):
    async def go():
        c = await Client.connect(hs_gateway.url, token=token("carol"))
        await c.join("api:x")
        # the callback overrides the mode (role nobody)
        assert (await c.call("t", "cb", {"text": "magic"})).success
        assert (await c.call("t", "cb", {"text": "plain"}, raise_on_error=False)).error == "Permission denied"
        assert (await c.call("t", "cb_async", {"text": "open"})).success
        assert (await c.call("t", "cb_async", {"text": "shut"}, raise_on_error=False)).error == "Permission denied"
        assert (await c.call("t", "cb_raise", {"text": "x"}, raise_on_error=False)).error == "Permission denied"
        assert (await c.call("t", "admin", {"text": "x"}, raise_on_error=False)).error == "Permission denied"
        await c.close()
    run(go())


def test_rs256(rsa_keys, run):
    key, path = rsa_keys
    g = GatewayProcess(f'[auth]\njwt_public_key = "{path}"\n' + FUNCTIONS)
    try:
        async def go():
            c = await Client.connect(g.url, token=token("dave", key=key, alg="RS256", roles=["ops"]))
            await c.join("api:x")
            assert (await c.call("t", "admin", {"text": "x"})).success
            await c.close()
            other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            assert "403" in await refused(g.url, token=token("dave", key=other, alg="RS256"))
            assert "403" in await refused(g.url, token=token("dave"))  # HS256 not accepted
        run(go())
    finally:
        assert g.stop() == 0


def test_auth_callback(run):
    g = GatewayProcess('[auth]\ncallback = "testapi:auth_callback"\n' + FUNCTIONS)
    try:
        async def go():
            c = await Client.connect(g.url, token="let-me-in", params={"user": "erin"})
            await c.join("api:x")
            r = await c.call("t", "who")
            assert r.result["info"]["user_id"] == "erin" and r.result["info"]["device_id"] == "dev-1"
            assert (await c.call("t", "admin", {"text": "x"}, raise_on_error=False)).error == "Permission denied"
            await c.close()
            c = await Client.connect(g.url, auth_token="let-me-in")
            await c.join("api:x")
            assert (await c.call("t", "who")).result["info"]["user_id"] == "cb-user"
            await c.close()
            anon = await Client.connect(g.url, token="anon")
            await anon.join("api:x")
            assert (await anon.call("t", "public", {"text": "x"}, raise_on_error=False)).error == "Authentication required"
            await anon.close()
            for bad in ("nope", "boom"):
                assert "403" in await refused(g.url, token=bad)
        run(go())
    finally:
        assert g.stop() == 0


def test_any_authenticated_when_not_required(run):
    g = GatewayProcess('[auth]\nrequire_verified_user_id = false\n'
                       'jwt_secret = "k-0123456789abcdef0123456789abcdef"\n' + FUNCTIONS)
    try:
        async def go():
            anon = await Client.connect(g.url)
            await anon.join("api:x")
            assert (await anon.call("t", "public", {"text": "x"})).success
            assert (await anon.call("t", "any", {"text": "x"}, raise_on_error=False)).error == "Permission denied"
            await anon.close()
            c = await Client.connect(g.url, token=token("frank", key="k-0123456789abcdef0123456789abcdef"))
            await c.join("api:x")
            assert (await c.call("t", "any", {"text": "x"})).success
            await c.close()
        run(go())
    finally:
        assert g.stop() == 0
