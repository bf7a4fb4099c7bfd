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

from genapi.client import Client
from support.configs import t
from support.gateway_proc import GatewayProcess
from support.rawclient import Raw, request

EV = "phoenix_gen_api"
SECRET = "s3cret-for-tests-0123456789abcdef0123456789"

FUNCTIONS = (
    """
[[functions]]
service = "t"
request_type = "who"
nodes = "local"
mfa = "testapi:info"
request_info = true
timeout = 1000
"""
    + t("echo", "any", check_permission="any_authenticated")
    + t(
        "echo",
        "own",
        arg_types={"text": "string", "user_id": {"type": "string", "allow_nil": True}},
        arg_orders=["text", "user_id"],
        check_permission={"arg": "user_id"},
    )
    + t("echo", "admin", check_permission={"role": ["admin", "ops"]})
    + t("echo", "cb", permission_callback="testapi:allow_if_magic", check_permission={"role": ["nobody"]})
    + t("echo", "cb_async", permission_callback=["testapi:allow_async", ["open"]])
    + t("echo", "cb_raise", permission_callback="testapi:perm_raises")
    + t("echo", "public")
)


def token(sub="u1", key=SECRET, alg="HS256", **claims):
    """A signed token; `exp` one hour ahead unless given (exp=None leaves it out)."""
    claims.setdefault("exp", int(time.time()) + 3600)
    if claims["exp"] is None:
        del claims["exp"]
    return jwt.encode({"sub": sub, **claims}, key, algorithm=alg)


@pytest.fixture(scope="module")
def hs_gateway():
    g = GatewayProcess(f'[auth]\njwt_secret = "{SECRET}"\n' + FUNCTIONS)
    yield g
    assert g.stop() == 0


@pytest.fixture(scope="module")
def rsa_keys():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
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
        for kw in (
            {"token": token("alice", roles=["admin"], device_id="phone")},
            {"auth_token": token("alice", roles=["admin"], device_id="phone")},
        ):
            c = await Client.connect(hs_gateway.url, **kw)
            await c.join("api:x")
            r = await c.call("t", "who")
            assert r.result["info"] == {"request_id": r.request_id, "user_id": "alice", "device_id": "phone"}
            assert (await c.call("t", "admin", {"text": "x"})).success
            assert (await c.call("t", "any", {"text": "x"})).success
            await c.close()

    run(go())


def test_bad_tokens_refuse_the_connect(hs_gateway, run):
    for bad in (
        token(key="other-secret-0123456789abcdef0123456789"),
        token(exp=int(time.time()) - 10),
        "garbage",
        token(sub=""),
    ):
        assert "403" in run(refused(hs_gateway.url, token=bad))
    assert "403" in run(refused(hs_gateway.url, auth_token=token(key="nope-0123456789abcdef0123456789abcdef")))


def test_identity_overrides_payload_and_roles_come_from_identity(hs_gateway, run):
    async def go():
        c = await Raw.connect(hs_gateway.url, f"vsn=2.0.0&token={token('bob', roles=['user'])}")
        await c.join("api:x")
        c.send(
            [
                "1",
                "2",
                "api:x",
                EV,
                request("r1", "who", {}, service="t", user_id="mallory", user_roles=["admin"], device_id="d2"),
            ]
        )
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
        assert push[4] == {
            "kind": "error",
            "request_id": "r1",
            "result": None,
            "success": False,
            "error": "Authentication required",
            "async": False,
            "has_more": False,
            "can_retry": False,
        }
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
            assert (
                await anon.call("t", "public", {"text": "x"}, raise_on_error=False)
            ).error == "Authentication required"
            await anon.close()
            for bad in ("nope", "boom"):
                assert "403" in await refused(g.url, token=bad)

        run(go())
    finally:
        assert g.stop() == 0


def test_any_authenticated_when_not_required(run):
    g = GatewayProcess(
        '[auth]\nrequire_verified_user_id = false\njwt_secret = "k-0123456789abcdef0123456789abcdef"\n' + FUNCTIONS
    )
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


# --------------------------------------------------------------------------- hostile tokens
def raw_upgrade(port: int, target: str, extra: str = "") -> bytes:
    """Sends one upgrade request by hand and returns the whole answer (until the server closes)."""
    import base64
    import socket

    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(
            f"GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n".encode()
        )
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


def test_exp_is_required_and_time_claims_must_be_numbers(hs_gateway, run):
    async def go():
        assert "403" in await refused(hs_gateway.url, token=token("ann", exp=None))  # no exp
        assert "403" in await refused(hs_gateway.url, auth_token=token("ann", exp=None))
        assert "403" in await refused(hs_gateway.url, token=token("ann", exp="9999999999"))
        assert "403" in await refused(hs_gateway.url, token=token("ann", exp=True))
        assert "403" in await refused(hs_gateway.url, token=token("ann", nbf="0"))
        assert "403" in await refused(hs_gateway.url, token=token("ann", iat="0"))
        assert "403" in await refused(hs_gateway.url, token=token("ann", nbf=int(time.time()) + 600))
        c = await Client.connect(
            hs_gateway.url, token=token("ann", exp=time.time() + 60.5, nbf=0, iat=int(time.time()))
        )
        await c.close()

    run(go())
    log = hs_gateway.read_stderr()
    assert 'reason="token has no exp claim ([auth] require_exp = true)"' in log
    assert "reason=\"token claim exp must be a number (NumericDate), got '9999999999'\"" in log
    assert "reason=\"token claim nbf must be a number (NumericDate), got '0'\"" in log
    assert 'reason="token not valid yet (nbf)"' in log


def test_require_exp_false_accepts_tokens_without_exp(run):
    g = GatewayProcess(f'[auth]\njwt_secret = "{SECRET}"\nrequire_exp = false\n' + FUNCTIONS)
    try:

        async def go():
            c = await Client.connect(g.url, token=token("gus", exp=None))
            await c.join("api:x")
            assert (await c.call("t", "who")).result["info"]["user_id"] == "gus"
            await c.close()
            # still refused: an expired exp, and an exp that is not a number
            assert "403" in await refused(g.url, token=token("gus", exp=int(time.time()) - 5))
            assert "403" in await refused(g.url, token=token("gus", exp="9999999999"))

        run(go())
    finally:
        assert g.stop() == 0


def test_two_different_tokens_refuse_the_connect(hs_gateway, run):
    good = token("hal")

    async def go():
        # a bad ?token= is not ignored because the subprotocol token is good, nor the reverse
        assert "403" in await refused(hs_gateway.url, token="garbage", auth_token=good)
        assert "403" in await refused(hs_gateway.url, token=good, auth_token="garbage")
        assert "403" in await refused(hs_gateway.url, token=good, auth_token=token("mallory"))
        c = await Client.connect(hs_gateway.url, token=good, auth_token=good)  # the same one twice is fine
        await c.join("api:x")
        assert (await c.call("t", "who")).result["info"]["user_id"] == "hal"
        await c.close()

    run(go())
    assert 'reason="two different tokens: ?token= and the authToken subprotocol entry"' in hs_gateway.read_stderr()


def test_oversized_tokens_get_431(hs_gateway, run):
    huge = token("ivy", pad="x" * 100_000)
    path = "/socket/websocket?vsn=2.0.0&token="
    answer = raw_upgrade(hs_gateway.port, path + huge)
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert answer.endswith(b"request headers must be under 16384 bytes (a token that long cannot be sent)")
    b64 = __import__("base64").b64encode(huge.encode()).decode().rstrip("=")
    answer = raw_upgrade(
        hs_gateway.port,
        "/socket/websocket?vsn=2.0.0",
        f"Sec-WebSocket-Protocol: phoenix, base64url.bearer.phx.{b64}\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 431 ")
    # the same through a WebSocket client
    assert "431" in run(refused(hs_gateway.url, token=huge))
    # a head just under the limit is still served: an 8 KB token works
    big = token("ivy", pad="x" * 8000)

    async def go():
        c = await Client.connect(hs_gateway.url, token=big)
        await c.join("api:x")
        assert (await c.call("t", "who")).result["info"]["user_id"] == "ivy"
        await c.close()

    run(go())
    assert 'connect_refused reason="request headers too large" limit=16384' in hs_gateway.read_stderr()


@pytest.mark.parametrize(
    "auth, needle",
    [
        (
            'jwt_secret = "{secret}"\njwt_algorithm = "RS256"',
            '[auth] key jwt_algorithm: "RS256" needs jwt_public_key (a PEM file), but jwt_secret is set',
        ),
        (
            'jwt_public_key = "{pem}"\njwt_algorithm = "HS256"',
            '[auth] key jwt_algorithm: "HS256" needs jwt_secret (a shared secret), but jwt_public_key is set',
        ),
        ('jwt_algorithm = "HS512"', '[auth] key jwt_algorithm: "HS512" is set but there is no key'),
        (
            'jwt_secret = """{pem_text}"""',
            "[auth] key jwt_secret is not a key for HS256: The specified key is an asymmetric key",
        ),
        ('jwt_public_key = "{junk}"', "[auth] key jwt_public_key: {junk} is not a key for RS256"),
    ],
)
def test_check_refuses_an_algorithm_that_does_not_fit_the_key(rsa_keys, tmp_path, auth, needle):
    import subprocess
    import sys

    _key, pem = rsa_keys
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    fill = {"secret": SECRET, "pem": pem, "pem_text": open(pem).read(), "junk": str(junk)}
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[auth]\n" + auth.format(**fill) + "\n")
    for extra in (["check"], ["serve", "--port", "0"]):  # both refuse before anything listens
        out = subprocess.run(
            [sys.executable, "-m", "genapi", *extra, "--config", str(cfg)], capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 2, out
        assert needle.format(**fill) in out.stderr
