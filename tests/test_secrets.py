"""Configuration from the environment (issue 21 item 1): `${VAR}` in the file, `*_file`
secrets, GENAPI_* variables over the file, where each secret came from, and the 32-byte floor of
an HMAC secret, through real `genapi serve` and `genapi check` processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from picows import WSError

from genapi.client import Client
from genapi.config import parse
from genapi.environment import VALUE_MAX_BYTES
from genapi.errors import ConfigError
from genapi.host.control_client import ControlClient
from genapi.nodes import rpc
from support.configs import t
from support.gateway_proc import SUPPORT, GatewayProcess, wait_until

GENAPI = str(Path(sys.executable).with_name("genapi"))
# a secret TOML could not hold unescaped: a `#` and quotes, which ${VAR} never puts through TOML
ENV_JWT = "p#ss\"w0rd'-from-the-environment-0123456789"
FILE_JWT = "the-file-jwt-secret-0123456789abcdef0123"
ENV_CLUSTER = "the-env-cluster-secret-0123456789abcdef"
FILE_CLUSTER = "the-file-cluster-secret-0123456789abcdef"
SECRET_FILE_TEXT = "the-cluster-secret-in-a-file-0123456789ab"
FUNCTIONS = t("echo", "any", check_permission="any_authenticated")


def token(key: str) -> str:
    return jwt.encode({"sub": "alice", "exp": int(time.time()) + 3600}, key, algorithm="HS256")


def user_call(url: str, key: str) -> str | None:
    """Connects with a token signed by `key` and calls a function that needs a user: the
    user_id the call saw, or None when the connect was refused."""

    async def go() -> str | None:
        try:
            client = await Client.connect(url, token=token(key))
        except WSError:
            return None
        try:
            await client.join("api:x")
            resp = await client.call("t", "any", {"text": "hi"})
            assert resp.success, resp
            return "alice"
        finally:
            await client.close()

    return asyncio.run(go())


def ping(address: str, secret: str) -> bool:
    async def go() -> bool:
        try:
            async with ControlClient(address, secret, name="test") as client:
                return await client.ping() == "pong"
        except rpc.RpcError as exc:
            assert exc.code == rpc.AUTH_FAILED, exc
            return False

    return asyncio.run(go())


def write(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


def check(config: str | None, tmp: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`genapi check` in a child process (its environment: ours, without GENAPI_*, plus `env`)."""
    args = [GENAPI, "check"]
    if config is not None:
        args += ["--config", write(tmp, "gateway.toml", config)]
    base = {k: v for k, v in os.environ.items() if not k.startswith("GENAPI_")}
    pp = os.pathsep.join(
        [str(SUPPORT), *[os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    )
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(SUPPORT),
        env={**base, "PYTHONPATH": pp, **(env or {})},
    )


# --------------------------------------------------------------------------- ${VAR} and *_file


@pytest.fixture(scope="module")
def from_file_refs(tmp_path_factory: pytest.TempPathFactory):
    """A gateway whose jwt_secret is `${JWT_SECRET}` and whose cluster secret is a file (with
    the trailing newline a Docker or Kubernetes secret often has)."""
    tmp = tmp_path_factory.mktemp("refs")
    secret_file = write(tmp, "cluster_secret", SECRET_FILE_TEXT + "\n")
    config = f'[auth]\njwt_secret = "${{JWT_SECRET}}"\n[cluster]\nsecret_file = "{secret_file}"\n' + FUNCTIONS
    g = GatewayProcess(config, env={"JWT_SECRET": ENV_JWT}, extra_args=["--log-level", "info"])
    g.secret_file = secret_file  # type: ignore[attr-defined]
    yield g
    assert g.stop() == 0


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # signing with the 13-byte literal
def test_a_jwt_secret_named_by_a_variable_is_the_variables_value(from_file_refs: GatewayProcess) -> None:
    assert user_call(from_file_refs.url, ENV_JWT) == "alice"
    # the hole: the literal text "${JWT_SECRET}" was the key
    assert user_call(from_file_refs.url, "${JWT_SECRET}") is None


def test_a_cluster_secret_file_is_read_without_its_trailing_newline(from_file_refs: GatewayProcess) -> None:
    assert from_file_refs.control is not None
    assert ping(from_file_refs.control, SECRET_FILE_TEXT)
    assert not ping(from_file_refs.control, SECRET_FILE_TEXT + "\n")


def test_where_each_secret_came_from_is_logged_never_its_value(from_file_refs: GatewayProcess) -> None:
    assert wait_until(lambda: "config_source" in from_file_refs.read_stderr(), timeout=30)
    err = from_file_refs.read_stderr()
    assert 'config_source key="[auth] jwt_secret" source="the file, ${JWT_SECRET}"' in err
    assert f'config_source key="[cluster] secret" source="[cluster] secret_file {from_file_refs.secret_file}"' in err  # type: ignore[attr-defined]
    assert ENV_JWT[:12] not in err and SECRET_FILE_TEXT not in err


# --------------------------------------------------------------------------- GENAPI_* over the file


@pytest.fixture(scope="module")
def env_over_file(tmp_path_factory: pytest.TempPathFactory):
    """Secrets in the file, and GENAPI_* variables naming others: the environment's win. Its
    GENAPI_PORT is one the command line (--port 0 from GatewayProcess) overrides in turn."""
    tmp = tmp_path_factory.mktemp("env")
    cluster_file = write(tmp, "cluster", ENV_CLUSTER + "\r\n")
    config = f'[auth]\njwt_secret = "{FILE_JWT}"\n[cluster]\nsecret = "{FILE_CLUSTER}"\n' + FUNCTIONS
    env = {"GENAPI_JWT_SECRET": ENV_JWT, "GENAPI_CLUSTER_SECRET_FILE": cluster_file, "GENAPI_PORT": "1"}
    g = GatewayProcess(config, env=env, extra_args=["--log-level", "info"])
    g.cluster_file = cluster_file  # type: ignore[attr-defined]
    yield g
    assert g.stop() == 0


def test_genapi_variables_win_over_the_files_secrets(env_over_file: GatewayProcess) -> None:
    assert user_call(env_over_file.url, ENV_JWT) == "alice"
    assert user_call(env_over_file.url, FILE_JWT) is None
    assert env_over_file.control is not None
    assert ping(env_over_file.control, ENV_CLUSTER)
    assert not ping(env_over_file.control, FILE_CLUSTER)
    err = env_over_file.read_stderr()
    assert 'config_source key="[auth] jwt_secret" source=GENAPI_JWT_SECRET' in err
    assert (
        f'config_source key="[cluster] secret" source="GENAPI_CLUSTER_SECRET_FILE {env_over_file.cluster_file}"' in err
    )  # type: ignore[attr-defined]


def test_the_command_line_wins_over_genapi_variables(env_over_file: GatewayProcess) -> None:
    assert env_over_file.port not in (0, 1)  # GENAPI_PORT=1, but --port 0 picked a free port
    assert 'config_source key="[gateway] port" source="the command line (--port)"' in env_over_file.read_stderr()


def test_a_control_client_takes_the_cluster_secret_from_a_file(env_over_file: GatewayProcess, tmp_path: Path) -> None:
    secret_file = write(tmp_path, "s", ENV_CLUSTER + "\n")
    base = {k: v for k, v in os.environ.items() if not k.startswith("GENAPI_")}
    args = [GENAPI, "admin", "status", "--control", str(env_over_file.control), "--json"]
    ok = subprocess.run(
        args, capture_output=True, text=True, timeout=60, env={**base, "GENAPI_CLUSTER_SECRET_FILE": secret_file}
    )
    assert ok.returncode == 0, ok.stderr
    missing = {**base, "GENAPI_CLUSTER_SECRET_FILE": str(tmp_path / "nope")}
    bad = subprocess.run(args, capture_output=True, text=True, timeout=60, env=missing)
    assert bad.returncode == 2
    assert f"GENAPI_CLUSTER_SECRET_FILE: cannot read {tmp_path / 'nope'}: No such file or directory" in bad.stderr


# --------------------------------------------------------------------------- genapi check


def test_every_environment_problem_is_reported_at_once_with_the_others(tmp_path: Path) -> None:
    empty = write(tmp_path, "empty", "\n")
    config = (
        "[gateway]\nprot = 4000\n"  # an ordinary problem, reported beside the others
        f'[auth]\njwt_secret = "${{UNSET_JWT_SECRET_FOR_TESTS}}"\n'
        f'[cluster]\nsecret_file = "{empty}"\n'
        '[relay]\nservice = "${UNCLOSED"\n' + FUNCTIONS
    )
    out = check(config, tmp_path, {"GENAPI_WORKERS": "0", "GENAPI_LOG_LEVEL": "loud"})
    assert out.returncode == 2
    lines = out.stderr.splitlines()
    assert lines[0].endswith("6 problems"), out.stderr
    assert sorted(line.strip() for line in lines[1:]) == sorted(
        [
            "[gateway] key prot: unknown key; did you mean port?",
            "[auth] key jwt_secret: environment variable UNSET_JWT_SECRET_FOR_TESTS is not set "
            "(write ${UNSET_JWT_SECRET_FOR_TESTS:-default} to give a default)",
            f"[cluster] key secret_file: {empty} is empty; expected the secret (one line)",
            '[relay] key service: has "${" without a closing "}": write ${NAME}, ${NAME:-default}, or $$ for a "$"',
            'GENAPI_WORKERS (sets [gateway] workers): must be a positive integer or "auto", got 0',
            'GENAPI_LOG_LEVEL (sets [gateway] log_level): must be one of debug, info, warning, error, got "loud"',
        ]
    )


def test_a_short_hmac_secret_is_refused_naming_key_length_and_floor(tmp_path: Path) -> None:
    out = check('[auth]\njwt_secret = "short"\n' + FUNCTIONS, tmp_path, {"GENAPI_CLUSTER_SECRET": "s3cret"})
    assert out.returncode == 2
    assert "[auth] key jwt_secret: 5 bytes; the HMAC key of HS256 tokens must be at least 32 bytes" in out.stderr
    assert (
        "[cluster] key secret (from GENAPI_CLUSTER_SECRET): 6 bytes; the HMAC key of the control port and node "
        "RPC must be at least 32 bytes" in out.stderr
    )
    assert check(f'[auth]\njwt_secret = "{"k" * 32}"\n' + FUNCTIONS, tmp_path).returncode == 0
    # an RS256 key is no HMAC secret: no floor
    assert "HMAC" not in check('[auth]\njwt_secret = "short"\njwt_algorithm = "RS256"\n', tmp_path).stderr


def test_the_demos_secret_is_excepted_and_labelled(tmp_path: Path) -> None:
    out = check(None, tmp_path)
    assert out.returncode == 0, out.stderr
    assert (
        "[auth] jwt_secret from the embedded demo config: public, for local use only "
        "(excepted from the 32-byte minimum)" in out.stdout
    )
    # the demo's secret replaced from the environment is an ordinary secret again
    out = check(None, tmp_path, {"GENAPI_JWT_SECRET": "tiny"})
    assert out.returncode == 2 and "[auth] key jwt_secret (from GENAPI_JWT_SECRET): 4 bytes" in out.stderr


def test_a_secret_and_its_file_together_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "s", "x" * 40)
    out = check(f'[auth]\njwt_secret = "{"k" * 40}"\njwt_secret_file = "{path}"\n' + FUNCTIONS, tmp_path)
    assert out.returncode == 2 and "[auth]: set jwt_secret or jwt_secret_file, not both" in out.stderr
    both = {"GENAPI_JWT_SECRET": "k" * 40, "GENAPI_JWT_SECRET_FILE": path}
    out = check(f'[auth]\njwt_secret = "{"k" * 40}"\n' + FUNCTIONS, tmp_path, both)
    assert out.returncode == 2 and "GENAPI_JWT_SECRET and GENAPI_JWT_SECRET_FILE are both set; set one" in out.stderr
    out = check(f'[auth]\njwt_secret_file = "{tmp_path}"\n' + FUNCTIONS, tmp_path)
    assert out.returncode == 2 and f"[auth] key jwt_secret_file: cannot read {tmp_path}: Is a directory" in out.stderr


# --------------------------------------------------------------------------- the expansion's rules


def test_expansion_defaults_escapes_and_no_recursion() -> None:
    env = {"A": "${B}", "B": "bee", "EMPTY": ""}
    text = '[gateway]\nhost = "${NOPE:-127.0.0.1}"\npath = "/${A}/$${B}/${EMPTY:-e}/${EMPTY}/$x"\n' + FUNCTIONS
    gw = parse(text, "t.toml", env).gateway
    assert gw.host == "127.0.0.1"
    assert gw.path == "/${B}/${B}/e//$x"  # A's value is not expanded again; $$ is one "$"


def test_an_expansion_is_bounded() -> None:
    env = {"BIG": "x" * (VALUE_MAX_BYTES // 2 + 1)}
    with pytest.raises(ConfigError) as exc:
        parse('[gateway]\nevent = "${BIG}${BIG}"\n' + FUNCTIONS, "t.toml", env)
    assert exc.value.problems == [f"[gateway] key event: expands to more than {VALUE_MAX_BYTES} characters (${{BIG}})"]
    with pytest.raises(ConfigError) as exc:
        parse('[gateway]\nevent = "${1X}"\n' + FUNCTIONS, "t.toml", {})
    assert exc.value.problems[0].startswith('[gateway] key event: "${1X}" is not a variable')


def test_the_demo_exposed_warning_follows_where_the_secret_came_from() -> None:
    """The embedded demo served beyond loopback warns that its secret is public, unless the
    secret came from the environment instead."""
    # the warning is written before the banner GatewayProcess waits for
    with GatewayProcess(extra_args=["--host", "0.0.0.0"]) as demo:
        assert "demo_config_exposed" in demo.read_stderr()
    with GatewayProcess(extra_args=["--host", "0.0.0.0"], env={"GENAPI_JWT_SECRET": ENV_JWT}) as own:
        assert "demo_config_exposed" not in own.read_stderr()
