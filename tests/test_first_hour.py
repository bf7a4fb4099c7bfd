"""The first hour with genapi, through real processes: defaults that work, errors that teach.
A busy port, a config that can never answer, tokens (made up, and from `genapi token`), origins,
SIGHUP, a module in the current directory, "did you mean", and the README's own examples."""

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
from picows import WSError

from genapi.client import Client
from support.configs import ANON, echo
from support.gateway_proc import BANNER, SUPPORT, GatewayProcess, free_port, wait_until
from support.rawclient import Raw, request

HERE = Path(__file__).resolve().parent
README = HERE.parent / "README.md"
GENAPI = str(Path(sys.executable).with_name("genapi"))
EV = "phoenix_gen_api"
ECHO = echo("s")


def genapi(*args, cwd=SUPPORT, env=None, timeout=30):  # cwd: the app dir, where testapi is
    return subprocess.run([GENAPI, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


async def echo_ok(url, service="demo", text="hi", **kw):
    c = await Client.connect(url, **kw)
    await c.join("api:x")
    resp = await c.call(service, "echo", {"text": text})
    await c.close()
    return resp.success and resp.result["text"] == text


# --------------------------------------------------------------------------- busy port


def test_second_gateway_on_a_busy_port_is_refused_and_the_first_keeps_serving(run):
    port = free_port()
    first = GatewayProcess(extra_args=["--port", str(port), "--workers", "2"])  # its workers share the port
    try:
        assert first.port == port
        second = genapi("serve", "--port", str(port))
        assert second.returncode == 2 and second.stdout == ""
        assert second.stderr == (
            f"genapi: error: cannot listen on 127.0.0.1:{port}: address already in use "
            f"(by another genapi, pid {first.pid}: stop it or choose another --port)\n"
        )
        # a different address on the same port is caught by the probe bind
        third = genapi("serve", "--port", str(port), "--host", "0.0.0.0")
        assert third.returncode == 2 and "address already in use (another process listens on it" in third.stderr

        async def go():
            for i in range(6):  # every connection reaches the first gateway's workers
                assert await echo_ok(first.url, text=str(i))

        run(go())
        assert first.alive()
    finally:
        assert first.stop() == 0


def test_a_gateway_on_a_port_0_gateway_port_is_refused(run):
    first = GatewayProcess()  # port 0: no lock file, the probe bind still sees it
    try:
        second = genapi("serve", "--port", str(first.port))
        assert second.returncode == 2
        assert f"cannot listen on 127.0.0.1:{first.port}: address already in use" in second.stderr
        assert run(echo_ok(first.url))
    finally:
        assert first.stop() == 0


# --------------------------------------------------------------------------- auth


def test_config_that_can_never_answer_is_refused_by_check_and_serve(tmp_path):
    path = tmp_path / "gw.toml"
    path.write_text(ECHO)
    expected = (
        "genapi: error: [auth]: require_verified_user_id = true (the default) but no jwt_secret, "
        'jwt_public_key or callback can verify a user, so every request would get "Authentication '
        'required"; set [auth] jwt_secret (HS256 tokens), jwt_public_key (RS256) or callback, or '
        "require_verified_user_id = false to serve anonymous clients\n"
    )
    for cmd in ("check", "serve"):
        proc = (
            genapi(cmd, "--config", str(path), "--port", "0") if cmd == "serve" else genapi(cmd, "--config", str(path))
        )
        assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", expected)
    # an explicit require_verified_user_id = true is refused alike; a way to verify is accepted
    path.write_text("[auth]\nrequire_verified_user_id = true\n" + ECHO)
    assert genapi("check", "--config", str(path)).stderr == expected
    for auth in (
        'jwt_secret = "k-0123456789abcdef0123456789abcdef"',
        'callback = "testapi:auth_callback"',
        "require_verified_user_id = false",
    ):
        path.write_text(f"[auth]\n{auth}\n" + ECHO)
        proc = genapi("check", "--config", str(path))
        assert proc.returncode == 0 and proc.stdout.endswith("ok, 1 function(s)\n"), proc.stderr
    # reported with the file's other problems, in one run
    path.write_text("[gateway]\nprot = 1\n" + ECHO)
    proc = genapi("check", "--config", str(path))
    assert proc.stderr.splitlines()[1:] == [
        "  [gateway] key prot: unknown key; did you mean port?",
        "  " + expected.removeprefix("genapi: error: ").rstrip("\n"),
    ]


def test_a_token_to_a_gateway_without_auth_is_refused_with_403_and_logged(run):
    with GatewayProcess(ANON + ECHO) as gw:

        async def go():
            with pytest.raises(WSError) as e:
                await Client.connect(gw.url, token="made-up")
            assert "403" in str(e.value)
            with pytest.raises(WSError) as e:
                await Client.connect(gw.url, auth_token="made-up")  # phoenix.js authToken
            assert "403" in str(e.value)
            assert await echo_ok(gw.url, service="s")  # no token: anonymous, as configured

        run(go())
        assert wait_until(
            lambda: (
                gw.read_stderr().count(
                    'connect_refused reason="a token was presented but [auth] sets no jwt_secret, jwt_public_key or '
                    'callback to verify it"'
                )
                == 2
            )
        )


def test_genapi_token_calls_whoami_and_admin_stats_on_the_demo(demo_gateway, run):
    admin = genapi("token", "--sub", "alice", "--role", "admin", "--device", "laptop")
    plain = genapi("token", "--sub", "bob", "--ttl", "60")
    assert admin.returncode == plain.returncode == 0 and admin.stderr == ""
    claims = jwt.decode(plain.stdout.strip(), options={"verify_signature": False})
    assert claims["sub"] == "bob" and claims["exp"] - claims["iat"] == 60 and "roles" not in claims

    async def go():
        c = await Client.connect(demo_gateway.url, token=admin.stdout.strip())
        await c.join("api:x")
        who = await c.call("demo", "whoami")
        assert who.success and who.result["user_id"] == "alice" and who.result["device_id"] == "laptop"
        assert (await c.call("demo", "admin_stats")).success
        await c.close()
        c = await Client.connect(demo_gateway.url, auth_token=plain.stdout.strip())
        await c.join("api:x")
        assert (await c.call("demo", "whoami")).result["user_id"] == "bob"
        assert (await c.call("demo", "admin_stats", raise_on_error=False)).error == "Permission denied"
        await c.close()
        anon = await Client.connect(demo_gateway.url)  # the demo still serves anonymous clients
        await anon.join("api:x")
        assert (await anon.call("demo", "echo", {"text": "hi"})).success
        assert (await anon.call("demo", "whoami", raise_on_error=False)).error == "Permission denied"
        await anon.close()

    run(go())


def test_genapi_token_names_what_the_config_lacks(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    path = tmp_path / "gw.toml"
    path.write_text(ANON + ECHO)
    proc = genapi("token", "--sub", "a", "--config", str(path))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        f"genapi: error: {path}: [auth] sets no jwt_secret (HS256) or jwt_public_key (RS256): "
        "nothing verifies tokens; set [auth] jwt_secret to sign and verify tokens\n"
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private, public = tmp_path / "private.pem", tmp_path / "public.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    path.write_text(f'[auth]\njwt_public_key = "{public}"\n' + ECHO)
    proc = genapi("token", "--sub", "a", "--config", str(path))
    assert proc.returncode == 2 and "pass the matching private key: --private-key FILE" in proc.stderr
    proc = genapi("token", "--sub", "carol", "--role", "ops", "--config", str(path), "--private-key", str(private))
    assert proc.returncode == 0, proc.stderr
    claims = jwt.decode(proc.stdout.strip(), public.read_text(), algorithms=["RS256"])
    assert claims["sub"] == "carol" and claims["roles"] == ["ops"]
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private.write_bytes(
        other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    proc = genapi("token", "--sub", "a", "--config", str(path), "--private-key", str(private))
    assert proc.returncode == 2 and f"[auth] jwt_public_key {public} verifies" in proc.stderr


# --------------------------------------------------------------------------- origins


def test_check_origin_list_refuses_with_403_and_accepts_listed_origins(run):
    cfg = '[gateway]\ncheck_origin = ["https://example.com", "//*.example.org", "http://localhost:3000"]\n'
    with GatewayProcess(cfg + ANON + ECHO) as gw:

        async def status(origin):
            try:
                c = await Raw.connect(gw.url, headers={"Origin": origin} if origin else None)
            except WSError as exc:
                return str(exc)
            await c.join("api:x")
            c.send(["1", "2", "api:x", EV, request("r1", service="s")])
            push, _reply = await c.recv_n(2)
            await c.close()
            return "ok" if push[4]["success"] else push[4]["error"]

        async def go():
            for origin in (
                "https://example.com",
                "https://api.example.org",
                "http://a.b.example.org:8080",
                "http://localhost:3000",
                None,
            ):
                assert await status(origin) == "ok", origin
            for origin in (
                "https://evil.com",
                "http://example.com",
                "https://example.com:8443",
                "https://example.org",
                "https://evilexample.org",
                "http://localhost:3001",
                "null",
            ):
                assert "403" in await status(origin), origin

        run(go())
        assert 'connect_refused reason="origin not allowed" origin=https://evil.com' in gw.read_stderr()


def test_check_origin_true_by_default_and_off_in_the_demo(demo_gateway, run):
    with GatewayProcess(ANON + ECHO) as gw:

        async def go():
            # the default: the Origin's host must be the host connected to
            c = await Raw.connect(gw.url, headers={"Origin": "http://127.0.0.1:3000"})
            await c.close()
            with pytest.raises(WSError) as e:
                await Raw.connect(gw.url, headers={"Origin": "https://evil.com"})
            assert "403" in str(e.value)
            # the loopback demo takes any origin
            c = await Raw.connect(demo_gateway.url, headers={"Origin": "https://evil.com"})
            assert (await c.join("api:x"))[4]["status"] == "ok"
            await c.close()

        run(go())


# --------------------------------------------------------------------------- SIGHUP


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sighup_reloads_and_the_gateway_keeps_serving(workers, run):
    """A closed terminal signals the whole group: SIGHUP to the master and its workers never
    ends the gateway; the master (or a lone worker) reloads the config file, once."""
    gw = GatewayProcess(extra_args=["--workers", workers])
    try:

        def children():
            return set(subprocess.run(["pgrep", "-P", str(gw.pid)], capture_output=True, text=True).stdout.split())

        if workers == "2":
            assert wait_until(lambda: len(children()) == 2)
        before = children()
        for pid in [gw.pid, *map(int, before)]:
            os.kill(pid, signal.SIGHUP)
        assert wait_until(lambda: "config_reloaded" in gw.read_stderr())
        assert gw.alive() and children() == before
        assert run(echo_ok(gw.url))
        assert gw.read_stderr().count("config_reloaded") == 1  # by the master (or the lone worker)
    finally:
        assert gw.stop() == 0


# --------------------------------------------------------------------------- import path


def test_module_in_the_current_directory_is_imported(tmp_path, run):
    (tmp_path / "myapp.py").write_text("async def hello(name):\n    return {'greeting': 'hello ' + name}\n")
    (tmp_path / "gw.toml").write_text(
        ANON + '[[functions]]\nservice = "myapp"\nrequest_type = "hello"\n'
        'mfa = "myapp:hello"\narg_types = { name = "string" }\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    check = genapi("check", "--config", "gw.toml", cwd=tmp_path, env=env)
    assert check.stdout == "myapp.hello - sync myapp:hello (name: string)\ngw.toml: ok, 1 function(s)\n"
    proc = subprocess.Popen(
        [GENAPI, "serve", "--config", "gw.toml", "--port", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        m = BANNER.search(proc.stdout.readline())  # type: ignore[union-attr]
        assert m, proc.stderr.read()  # type: ignore[union-attr]

        async def go():
            c = await Client.connect(f"ws://127.0.0.1:{m.group(2)}/socket")
            await c.join("api:x")
            assert (await c.call("myapp", "hello", {"name": "ada"})).result == {"greeting": "hello ada"}
            await c.close()

        run(go())
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(10) == 0
    # elsewhere, --app-dir points at it; without it the error lists where it looked
    other = tmp_path / "other"
    other.mkdir()
    assert genapi("check", "--config", "../gw.toml", "--app-dir", "..", cwd=other, env=env).returncode == 0
    proc = genapi("check", "--config", "../gw.toml", cwd=other, env=env)
    assert proc.returncode == 2 and f"No module named 'myapp' (searched {other}, " in proc.stderr


# --------------------------------------------------------------------------- did you mean


def test_misspelled_keys_get_a_guess(tmp_path):
    path = tmp_path / "gw.toml"
    path.write_text(
        '[gatway]\nport = 1\n[auth]\nrequire_verified_user_id = false\njwt_secert = "x"\n'
        '[[functions]]\nservice = "s"\nrequest_type = "r"\nmfa = "testapi:echo"\ntimout = 100\n'
        'arg_types = { text = { type = "strng", maxbytes = 3 } }\n'
    )
    proc = genapi("check", "--config", str(path))
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[1:] == [
        f"  {path}: unknown table gatway; did you mean [gateway]?",
        "  [auth] key jwt_secert: unknown key; did you mean jwt_secret?",
        "  [[functions]] #1 (s.r) key timout: unknown key; did you mean timeout?",
        # its arguments at once too, not only once the rest is fixed (issue 21 item 7)
        '  [[functions]] #1 (s.r) key arg_types: argument "text": unknown type "strng"; did you mean "string"?',
    ]
    path.write_text(
        ANON + '[[functions]]\nservice = "s"\nrequest_type = "r"\nmfa = "testapi:echo"\n'
        'arg_types = { text = { type = "string", maxbytes = 3 } }\n'
    )
    assert genapi("check", "--config", str(path)).stderr == (
        'genapi: error: [[functions]] #1 (s.r) key arg_types: argument "text": unknown option "maxbytes"; '
        'did you mean "max_bytes"?\n'
    )


# --------------------------------------------------------------------------- the README


def readme_blocks() -> list[tuple[str, str]]:
    """Every fenced block right after a `<!-- readme-test -->` line: (language, code)."""
    return re.findall(r"<!-- readme-test -->\n```(\w+)\n(.*?)```", README.read_text(), re.S)


def test_readme_examples_run(demo_gateway, tmp_path):
    """The README's marked examples, in order, in one shell against the demo gateway (its
    address for 127.0.0.1:4000): the Quick start, `genapi token`, whoami/admin_stats, the first
    own config. A `# ` line in a shell block is output the block must print."""
    blocks = readme_blocks()
    assert [lang for lang, _ in blocks] == ["python", "sh", "python", "sh"]
    script, expected = ["set -euo pipefail"], []
    for lang, code in blocks:
        code = code.replace("127.0.0.1:4000", f"127.0.0.1:{demo_gateway.port}")
        if lang == "sh":
            script.append(code)
            expected += [ln[2:] for ln in code.splitlines() if ln.startswith("# ")]
        else:
            script.append(f"python - <<'README_PY'\n{code}README_PY")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(
        ["bash", "-c", "\n".join(script)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout.splitlines()
    for line in expected:
        assert line in out
    assert "success=True" in proc.stdout  # the Quick start printed its responses
    assert any(ln.startswith("{'user_id': 'alice', 'device_id': 'laptop'") for ln in out), proc.stdout
    assert any(ln.startswith("{'notes': ") for ln in out), proc.stdout
