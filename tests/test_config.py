"""The config file and the CLI: bad files are refused naming table, key and problem."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from genapi import __version__
from genapi.config import ConfigError, parse
from genapi.request.signatures import callable_problems
from support.configs import ANON  # a file check and serve accept needs a way to answer
from support.gateway_proc import SUPPORT

FN = """
[[functions]]
service = "s"
request_type = "r"
nodes = "local"
mfa = "testapi:nothing"
timeout = 1000
"""


def genapi(*args, timeout=30):
    return subprocess.run(
        [sys.executable, "-m", "genapi", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=SUPPORT,  # the app dir: configs name its modules (testapi:echo)
    )


def test_help_explains_every_option():
    out = genapi("--help").stdout
    assert "serve" in out and "check" in out
    out = genapi("serve", "--help").stdout
    for opt in ("--config", "--host", "--port", "--workers", "--log-level"):
        assert opt in out


def test_defaults_and_embedded_config():
    s = parse("")
    assert (s.gateway.host, s.gateway.port, s.gateway.event, s.gateway.workers) == (
        "127.0.0.1",
        4000,
        "phoenix_gen_api",
        1,
    )
    assert s.auth.require_verified_user_id is True
    from genapi.config import load

    demo = load(None)
    assert {f.request_type for f in demo.functions} >= {"echo", "slow_echo", "count", "note"}
    assert demo.auth.require_verified_user_id is False


@pytest.mark.parametrize(
    "text,needle",
    [
        ('[gateway]\nport = "x"', '[gateway] key port: must be between 0 and 65535 (0 = any free port), got "x"'),
        ("[gateway]\nbogus = 1", "[gateway] key bogus: unknown key"),
        ("[gateway]\nport = -1", "[gateway] key port: must be between 0 and 65535 (0 = any free port), got -1"),
        ("[gateway]\nmax_in_flight = 0", "[gateway] key max_in_flight: must be positive, got 0"),
        (
            "[gateway]\nmax_unsent_bytes = 1000",
            "[gateway] key max_unsent_bytes: must be at least 65536 (the socket's write buffer high-water mark), got 1000",
        ),
        ("[gateway]\ndrain_timeout_ms = 0", "[gateway] key drain_timeout_ms: must be positive, got 0"),
        ('[gateway]\nworkers = "many"', '[gateway] key workers: must be a positive integer or "auto"'),
        (
            '[auth]\njwt_algorithm = "none"',
            '[auth] key jwt_algorithm: must be one of HS256, HS384, HS512, RS256, RS384, RS512, got "none"',
        ),
        ('[auth]\njwt_secret = "a"\njwt_public_key = "/x"', "[auth]: set jwt_secret (HS256) or jwt_public_key"),
        ('[auth]\njwt_public_key = "/no/such.pem"', "[auth] key jwt_public_key: no such file /no/such.pem"),
        (
            "[extra]\na = 1",
            "unknown table extra; expected [gateway], [auth], [cluster], [rate_limiter], [relay], [engine], [[functions]] and [[services]]",
        ),
        ("[gatway]\nport = 1", "test.toml: unknown table gatway; did you mean [gateway]?"),
        ("port = 1", "test.toml: key port is outside any table; it belongs under [gateway]"),
        ("[gateway]\nprot = 1", "[gateway] key prot: unknown key; did you mean port?"),
        ('[auth]\njwt_secert = "k"', "[auth] key jwt_secert: unknown key; did you mean jwt_secret?"),
        (FN.replace("timeout", "timout"), "[[functions]] #1 (s.r) key timout: unknown key; did you mean timeout?"),
        ("this is = not toml [", "not valid TOML"),
        (
            FN.replace("timeout = 1000", "timeout = 50"),
            '[[functions]] #1 (s.r) key timeout: must be between 100 and 300000 ms or "infinity", got 50',
        ),
        (
            FN.replace("timeout = 1000", 'timeout = "forever"'),
            'key timeout: must be between 100 and 300000 ms or "infinity", got "forever"',
        ),
        (FN.replace('mfa = "testapi:nothing"', ""), "[[functions]] #1 (s.r): missing required key mfa"),
        (FN.replace('mfa = "testapi:nothing"', 'mfa = "noColon"'), 'key mfa: must be "module:function"'),
        (FN + 'response_type = "sometimes"', "key response_type: must be one of sync, async, stream, none"),
        (FN + 'check_permission = "admins"', "key check_permission: must be false"),
        (FN + "check_permission = { role = [] }", "key check_permission: must be false"),
        (FN + 'version = "0.0.0"', 'key version: "0.0.0" is reserved'),
        (
            FN + "retry = { sometimes = 2 }",
            "key retry: must be a non-negative number, {same_node = N} or {all_nodes = N}, got {sometimes = 2}",
        ),
        (FN + 'choose_node_mode = "fastest"', "key choose_node_mode: must be one of random, hash, round_robin"),
        (FN + "nodes2 = 1", "[[functions]] #1 (s.r) key nodes2: unknown key; did you mean nodes?"),
        (FN + "hook_timeout = 0", "key hook_timeout: must be a positive number of ms"),
        (FN + FN, "[[functions]] #2 (s.r): duplicate function s.r unversioned"),
    ],
)
def test_bad_config_is_refused_naming_table_and_key(text, needle):
    with pytest.raises(ConfigError) as e:
        parse(text, "test.toml")
    assert needle in str(e.value)


@pytest.mark.parametrize(
    "text,needle",
    [
        (FN.replace("testapi:nothing", "testapi:missing_fn"), 'has no function "missing_fn"'),
        (FN.replace("testapi:nothing", "no_such_module:f"), 'cannot import module "no_such_module"'),
        (FN + 'arg_types = { a = "strin" }', '(s.r) key arg_types: argument "a": unknown type "strin"'),
        (
            FN + 'arg_types = { a = "string", b = "num" }',
            '(s.r) key arg_orders: arg_orders is missing argument(s): ["a", "b"]',
        ),
        (
            FN.replace('nodes = "local"', 'nodes = ["n1@host"]'),
            "key nodes: node address 'n1@host': an Erlang node name (name@host) was given; genapi's service nodes are Python processes",
        ),
    ],
)
def test_serve_refuses_functions_it_cannot_bind(tmp_path, text, needle):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    for cmd in (["check", "--config", str(path)], ["serve", "--config", str(path), "--port", "0"]):
        proc = genapi(*cmd)
        assert proc.returncode == 2, proc.stderr
        assert needle in proc.stderr and proc.stderr.startswith("genapi: error:")


def test_check_ok_and_missing_file(tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text(ANON + FN)
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


def function(rt, mfa, extra=""):
    """One [[functions]] table of service "svc"."""
    return (
        f'[[functions]]\nservice = "svc"\nrequest_type = "{rt}"\nnodes = "local"\n'
        f"mfa = {mfa}\ntimeout = 1000\n{extra}\n"
    )


def refused(tmp_path, text):
    """check's stderr for a bad file, after making sure serve refuses it with the same text."""
    path = tmp_path / "bad.toml"
    path.write_text(text)
    check = genapi("check", "--config", str(path))
    serve = genapi("serve", "--config", str(path), "--port", "0")
    assert (check.returncode, serve.returncode) == (2, 2), (check.stderr, serve.stderr)
    assert serve.stderr == check.stderr and check.stdout == serve.stdout == ""
    assert check.stderr.startswith("genapi: error:") and "Traceback" not in check.stderr
    return check.stderr


def test_bad_log_level_is_refused_by_check_and_serve_alike(tmp_path):
    err = refused(tmp_path, '[gateway]\nlog_level = "verbose"\n' + ANON)
    assert err == 'genapi: error: [gateway] key log_level: must be one of debug, info, warning, error, got "verbose"\n'


def test_every_problem_of_a_file_is_reported_in_one_run(tmp_path):
    """Keys and values first, then the callables of the functions whose keys are right."""
    text = (
        '[gateway]\nlog_level = "verbose"\n[auth]\njwt_algorithm = "none"\n'
        + function("a", '"testapi:nothing"', "timeout2 = 5")
        + function("b", '"testapi:nothing"', "retry = -1")
        + function("b", '"testapi:nothing"')
        + function("c", '"testapi:echo"')
    )
    expected = [
        '[gateway] key log_level: must be one of debug, info, warning, error, got "verbose"',
        '[auth] key jwt_algorithm: must be one of HS256, HS384, HS512, RS256, RS384, RS512, got "none"',
        "[[functions]] #1 (svc.a) key timeout2: unknown key; did you mean timeout?",
        "[[functions]] #2 (svc.b) key retry: must be a non-negative number, {same_node = N} or {all_nodes = N}, got -1",
        "[[functions]] #3 (svc.b): duplicate function svc.b unversioned",
    ]
    with pytest.raises(ConfigError) as e:
        parse(text, "bad.toml")
    assert e.value.problems == expected and str(e.value) == "\n".join(expected)
    expected.append(
        "[[functions]] #4 (svc.c) key mfa: testapi:echo takes 1 to 2 positional arguments but the "
        "config passes 0 (no arg_types)"
    )
    err = refused(tmp_path, text)
    assert err.splitlines() == [f"genapi: error: {tmp_path / 'bad.toml'}: 6 problems"] + [f"  {p}" for p in expected]


def test_unknown_key_without_a_close_match_gets_no_guess():
    with pytest.raises(ConfigError) as e:
        parse(FN + "colour = 1")
    assert e.value.problems == ["[[functions]] #1 (s.r) key colour: unknown key"]


def test_nodes_and_timeout_have_defaults():
    cfg = parse('[[functions]]\nservice = "s"\nrequest_type = "r"\nmfa = "testapi:nothing"\n').functions[0]
    assert (cfg.nodes, cfg.timeout, cfg.timeout_ms()) == ("local", 5000, 5000)


def test_missing_required_keys_are_named_together():
    with pytest.raises(ConfigError) as e:
        parse('[[functions]]\nservice = "s"\n')
    assert e.value.problems == ["[[functions]] #1: missing required keys request_type, mfa"]


SIGNATURE_PROBLEMS = [
    (
        function(
            "few", '"testapi:echo"', 'arg_types = { a = "string", b = "num", c = "num" }\narg_orders = ["a", "b", "c"]'
        ),
        "[[functions]] #1 (svc.few) key mfa: testapi:echo takes 1 to 2 positional arguments but the config passes 3 "
        '(arg_orders ["a", "b", "c"])',
    ),
    (
        function("nopredef", '"testapi:predefined"', 'arg_types = { text = "string" }'),
        "[[functions]] #2 (svc.nopredef) key mfa: testapi:predefined takes 3 positional arguments but the config "
        'passes 1 (arg_types ["text"])',
    ),
    (
        function("info", '"testapi:plain_echo"', 'arg_types = { text = "string" }\nrequest_info = true'),
        "[[functions]] #3 (svc.info) key mfa: testapi:plain_echo takes 1 positional argument but the config passes 2 "
        '(arg_types ["text"], request_info (one dict))',
    ),
    (
        function("noargs", '"testapi:echo"'),
        "[[functions]] #4 (svc.noargs) key mfa: testapi:echo takes 1 to 2 positional arguments but the config passes 0 "
        "(no arg_types)",
    ),
    (
        function(
            "hooks",
            '"testapi:nothing"',
            'before_execute = "testapi:allow_if_magic"\n'
            'after_execute = "testapi:after_record"\npermission_callback = ["testapi:allow_async", ["x", "y"]]',
        ),
        "[[functions]] #5 (svc.hooks) key permission_callback: testapi:allow_async takes 2 positional arguments but "
        'the gateway passes 3 (request, extra args ["x", "y"])\n'
        "[[functions]] #5 (svc.hooks) key before_execute: testapi:allow_if_magic takes 1 positional argument but the "
        "gateway passes 2 (request, fun_config)\n"
        "[[functions]] #5 (svc.hooks) key after_execute: testapi:after_record takes 4 positional arguments but the "
        "gateway passes 3 (request, fun_config, response)",
    ),
    (
        function("kw", '"testapi:keyword_only"', 'arg_types = { a = "string" }'),
        "[[functions]] #6 (svc.kw) key mfa: testapi:keyword_only requires keyword-only argument(s) b; the gateway "
        "passes positional arguments only",
    ),
    (
        function("remote", '"testapi:nothing"').replace('nodes = "local"', 'nodes = "testapi:no_resolver"'),
        '[[functions]] #7 (svc.remote) key nodes: module "testapi" has no function "no_resolver" '
        '("testapi:no_resolver")',
    ),
    (
        function("gone", '"testapi:no_such_function"', "disabled = true"),
        '[[functions]] #8 (svc.gone) key mfa: module "testapi" has no function "no_such_function" '
        '("testapi:no_such_function")',
    ),
]


def test_functions_that_cannot_take_their_arguments_are_refused_all_at_once(tmp_path):
    text = "".join(t for t, _ in SIGNATURE_PROBLEMS)
    expected = "\n".join(p for _, p in SIGNATURE_PROBLEMS).splitlines()
    assert callable_problems(parse(text)) == expected
    err = refused(tmp_path, ANON + text)
    assert err.splitlines()[1:] == [f"  {p}" for p in expected]


def test_functions_that_fit_are_accepted_and_listed(tmp_path):
    text = (
        function(
            "predef",
            '["testapi:predefined", [1, 2]]',
            'arg_types = { text = "string" }',
        )
        + function("map", '"testapi:as_map"', 'arg_types = { a = "string", b = "num" }\narg_orders = "map"')
        + function(
            "info",
            '"testapi:info"',
            'arg_types = { a = "string" }\nrequest_info = true\nresponse_type = "stream"\nversion = "2.0.0"',
        )
        + function("push", '"testapi:push_style"', 'arg_types = { n = "num" }\nrequest_info = true')
        + function(
            "ordered", '"testapi:echo"', 'arg_types = { n = "num", text = "string" }\narg_orders = ["text", "n"]'
        )
        + function(
            "hooks",
            '"testapi:nothing"',
            'before_execute = ["testapi:before_extra", ["tag"]]\n'
            'after_execute = ["testapi:after_record", ["/dev/null"]]\n'
            'permission_callback = ["testapi:allow_async", ["x"]]',
        )
        + function("builtin", '"builtins:max"', 'arg_types = { a = "num", b = "num" }\narg_orders = ["a", "b"]')
        + function("off", '"testapi:echo"', "disabled = true")
        + '[auth]\ncallback = "testapi:auth_callback"\n'
    )
    assert callable_problems(parse(text)) == []
    path = tmp_path / "ok.toml"
    path.write_text(text)
    proc = genapi("check", "--config", str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "svc.predef - sync testapi:predefined [1, 2] (text: string)",
        "svc.map - sync testapi:as_map ({a: string, b: num})",
        "svc.info 2.0.0 stream testapi:info (a: string, request_info)",
        "svc.push - sync testapi:push_style (n: num, request_info)",
        "svc.ordered - sync testapi:echo (text: string, n: num)",
        "svc.hooks - sync testapi:nothing ()",
        "svc.builtin - sync builtins:max (a: num, b: num)",
        "svc.off - sync testapi:echo () (disabled)",
        f"{path}: ok, 8 function(s)",
    ]


def test_auth_callback_signature_is_checked():
    settings = parse('[auth]\ncallback = "testapi:allow_if_magic"\n')
    assert callable_problems(settings) == [
        "[auth] key callback: testapi:allow_if_magic takes 1 positional argument but the gateway passes 2 "
        "(params, headers)"
    ]


def test_import_problems_say_why(tmp_path):
    """The current directory is on the import path (as with uvicorn; --app-dir DIR changes it):
    a module next to the config imports with the `genapi` script and no PYTHONPATH. A module
    that is not found is named with every directory searched; a module that fails while
    importing is named with its exception."""
    (tmp_path / "myapi.py").write_text("def hello():\n    return 'hi'\n")
    (tmp_path / "broken.py").write_text("raise RuntimeError('no database')\n")
    (tmp_path / "gw.toml").write_text(ANON + function("hello", '"myapi:hello"') + function("broken", '"broken:f"'))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def check(*args):
        return subprocess.run(
            [str(Path(sys.executable).with_name("genapi")), "check", "--config", "gw.toml", *args],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
            env=env,
        )

    proc = check()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr == (
        'genapi: error: [[functions]] #2 (svc.broken) key mfa: importing "broken" raised RuntimeError: no database\n'
    )
    (tmp_path / "broken.py").write_text("def f():\n    pass\n")
    proc = check()
    assert proc.returncode == 0 and "ok, 2 function(s)" in proc.stdout, proc.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = check("--app-dir", str(elsewhere))
    first = proc.stderr.splitlines()[1]
    assert proc.returncode == 2 and first.startswith(
        '  [[functions]] #1 (svc.hello) key mfa: cannot import module "myapi" of "myapi:hello": No module named '
        f"'myapi' (searched {elsewhere}, "
    )
    assert first.endswith(
        "; myapi.py is in the current directory, which is not on the import path: "
        "pass --app-dir . (or the directory that holds it)"
    )
    (elsewhere / "myapi.py").write_text("def hello():\n    return 'there'\n")
    (elsewhere / "broken.py").write_text("def f():\n    pass\n")
    assert check("--app-dir", "elsewhere").returncode == 0


def test_version_is_the_package_version():
    from importlib.metadata import version

    proc = genapi("--version")
    assert proc.returncode == 0 and proc.stdout == f"genapi {__version__}\n"
    assert version("genapi-gateway") == __version__  # the distribution's name (pyproject)
