"""The config file and the CLI: bad files are refused naming table, key and problem."""
import subprocess
import sys

import pytest

from genapi.config import ConfigError, parse

FN = """
[[functions]]
service = "s"
request_type = "r"
nodes = "local"
mfa = "testapi:echo"
timeout = 1000
"""


def genapi(*args, timeout=30):
    return subprocess.run([sys.executable, "-m", "genapi", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=__file__.rsplit("/", 1)[0])


def test_help_explains_every_option():
    out = genapi("--help").stdout
    assert "serve" in out and "check" in out
    out = genapi("serve", "--help").stdout
    for opt in ("--config", "--host", "--port", "--workers", "--log-level"):
        assert opt in out


def test_defaults_and_embedded_config():
    s = parse("")
    assert (s.gateway.host, s.gateway.port, s.gateway.event, s.gateway.workers) == ("127.0.0.1", 4000, "phoenix_gen_api", 1)
    assert s.auth.require_verified_user_id is True
    from genapi.config import load
    demo = load(None)
    assert {f.request_type for f in demo.functions} >= {"echo", "slow_echo", "count", "note"}
    assert demo.auth.require_verified_user_id is False


@pytest.mark.parametrize("text,needle", [
    ("[gateway]\nport = \"x\"", "[gateway] key port: Expected `int`, got `str`"),
    ("[gateway]\nbogus = 1", "[gateway] key bogus: unknown key"),
    ("[gateway]\nport = -1", "[gateway] key port: must be between 0 and 65535 (0 = any free port), got -1"),
    ("[gateway]\nmax_in_flight = 0", "[gateway] key max_in_flight: must be positive, got 0"),
    ("[gateway]\nworkers = \"many\"", '[gateway] key workers: must be a positive integer or "auto"'),
    ("[auth]\njwt_algorithm = \"none\"", "[auth] key jwt_algorithm: unsupported algorithm none"),
    ("[auth]\njwt_secret = \"a\"\njwt_public_key = \"/x\"", "[auth]: set jwt_secret (HS256) or jwt_public_key"),
    ("[auth]\njwt_public_key = \"/no/such.pem\"", "[auth] key jwt_public_key: no such file /no/such.pem"),
    ("[extra]\na = 1", "unknown table(s) extra"),
    ("this is = not toml [", "not valid TOML"),
    (FN.replace("timeout = 1000", "timeout = 50"),
     "[[functions]] #1 (s.r) key timeout: must be between 100 and 300000 ms or \"infinity\", got 50"),
    (FN.replace("timeout = 1000", "timeout = \"forever\""), "key timeout: must be an integer in ms or \"infinity\""),
    (FN.replace("timeout = 1000", ""), "[[functions]] #1 (s.r): missing required key timeout"),
    (FN.replace('mfa = "testapi:echo"', 'mfa = "noColon"'), "key mfa: must be \"module:function\""),
    (FN + 'response_type = "sometimes"', 'key response_type: must be one of sync, async, stream, none'),
    (FN + 'check_permission = "admins"', "key check_permission: must be false"),
    (FN + 'check_permission = { role = [] }', "key check_permission: must be false"),
    (FN + 'version = "0.0.0"', 'key version: "0.0.0" is reserved'),
    (FN + 'retry = { sometimes = 2 }', "key retry: a table must be {same_node = N} or {all_nodes = N}"),
    (FN + 'choose_node_mode = "fastest"', "key choose_node_mode: must be one of random, hash, round_robin"),
    (FN + 'nodes2 = 1', "[[functions]] #1 (s.r) key nodes2: unknown key"),
    (FN + 'hook_timeout = 0', "key hook_timeout: must be a positive number of ms"),
    (FN + FN, "[[functions]] #2 (s.r): duplicate function s.r version None"),
])
def test_bad_config_is_refused_naming_table_and_key(text, needle):
    with pytest.raises(ConfigError) as e:
        parse(text, "test.toml")
    assert needle in str(e.value)


@pytest.mark.parametrize("text,needle", [
    (FN.replace("testapi:echo", "testapi:missing_fn"), 'has no function "missing_fn"'),
    (FN.replace("testapi:echo", "no_such_module:f"), 'cannot import module "no_such_module"'),
    (FN + 'arg_types = { a = "strin" }', "s.r: arg_types:"),
    (FN + 'arg_types = { a = "string", b = "num" }', "s.r: arg_types:"),
    (FN.replace('nodes = "local"', 'nodes = ["n1@host"]'), 'only "local" functions'),
])
def test_serve_refuses_functions_it_cannot_bind(tmp_path, text, needle):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    for cmd in (["check", "--config", str(path)], ["serve", "--config", str(path), "--port", "0"]):
        proc = genapi(*cmd)
        assert proc.returncode == 2, proc.stderr
        assert needle in proc.stderr and proc.stderr.startswith("genapi: error:")


def test_check_ok_and_missing_file(tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text(FN)
    proc = genapi("check", "--config", str(path))
    assert proc.returncode == 0 and "ok, 1 function(s)" in proc.stdout
    proc = genapi("check", "--config", str(tmp_path / "none.toml"))
    assert proc.returncode == 2 and "cannot read config file" in proc.stderr


def test_cli_overrides_and_bad_port():
    proc = genapi("serve", "--port", "70000")
    assert proc.returncode == 2 and "--port: must be between 0 and 65535" in proc.stderr
    proc = genapi("serve", "--workers", "zero")
    assert proc.returncode == 2 and "--workers" in proc.stderr


def test_port_taken_by_another_program_is_a_clear_error():
    import socket
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen()
    try:
        proc = genapi("serve", "--port", str(other.getsockname()[1]))
        assert proc.returncode == 2 and "cannot listen on 127.0.0.1:" in proc.stderr
    finally:
        other.close()
