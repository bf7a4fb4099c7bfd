"""Argument types (issue 21 item 7): a Python or JSON name of a type gets the genapi type to
write, and every argument problem of a file is reported at once with the file's other problems,
by a real `genapi check`; a service node's pushed config is refused in the same words."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genapi.host.control_client import ControlClient
from genapi.nodes import rpc
from support.configs import PID_CONFIG
from support.gateway_proc import SUPPORT, GatewayProcess

GENAPI = str(Path(sys.executable).with_name("genapi"))
NUM = "any JSON number, 2.5 too: there is no integer-only type"

CONFIG = """
[gateway]
prot = 4000

[auth]
require_verified_user_id = false

[[functions]]
service = "shop"
request_type = "add"
mfa = "testapi:echo"
arg_types = { text = "str", n = "int" }
arg_orders = ["text", "n"]

[[functions]]
service = "shop"
request_type = "tag"
mfa = "testapi:echo"
arg_types = { text = { type = "dict" }, n = ["integer", 10] }
arg_orders = ["text", "n"]

[[functions]]
service = "shop"
request_type = "rest"
mfa = "testapi:info"
arg_types = { text = "String", n = "float", flag = "bool", items = "array", when = "nmu" }
arg_orders = ["text", "n", "flag", "items", "when"]
timeout = 5
"""


def check(config: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    path = tmp / "gateway.toml"
    path.write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENAPI_")}
    pp = [str(SUPPORT), *[os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env["PYTHONPATH"] = os.pathsep.join(pp)
    return subprocess.run(
        [GENAPI, "check", "--config", str(path)], capture_output=True, text=True, timeout=60, cwd=str(SUPPORT), env=env
    )


def test_every_argument_problem_is_reported_at_once_with_a_suggestion(tmp_path: Path) -> None:
    out = check(CONFIG, tmp_path)
    assert out.returncode == 2
    lines = [line.strip() for line in out.stderr.splitlines()]
    add, tag, rest = "[[functions]] #1 (shop.add)", "[[functions]] #2 (shop.tag)", "[[functions]] #3 (shop.rest)"
    assert sorted(lines[1:]) == sorted(
        [
            "[gateway] key prot: unknown key; did you mean port?",
            f'{add} key arg_types: argument "text": unknown type "str"; did you mean "string"?',
            f'{add} key arg_types: argument "n": unknown type "int"; did you mean "num"? ({NUM})',
            f'{tag} key arg_types: argument "text": unknown type "dict"; did you mean "map"? (a JSON object)',
            f'{tag} key arg_types: argument "n": unknown type "integer"; did you mean "num"? ({NUM})',
            # a function with another problem: its arguments' are reported beside it, not after
            f'{rest} key timeout: must be between 100 and 300000 ms or "infinity", got 5',
            f'{rest} key arg_types: argument "text": unknown type "String"; did you mean "string"?',
            f'{rest} key arg_types: argument "n": unknown type "float"; did you mean "num"? (any JSON number)',
            f'{rest} key arg_types: argument "flag": unknown type "bool"; did you mean "boolean"?',
            f'{rest} key arg_types: argument "items": unknown type "array"; did you mean "list"? (or list_string, '
            "list_num, list_uuid, list_map for items of one type)",
            f'{rest} key arg_types: argument "when": unknown type "nmu"; did you mean "num"?',
        ]
    ), out.stderr
    assert lines[0].endswith("11 problems")


def test_the_genapi_names_pass(tmp_path: Path) -> None:
    fixed = (
        CONFIG.replace("prot", "port")
        .replace('"str"', '"string"')
        .replace('"int"', '"num"')
        .replace('"dict"', '"map"')
        .replace('["integer", 10]', '"num"')
        .replace('"String"', '"string"')
        .replace('"float"', '"num"')
        .replace('"bool"', '"boolean"')
        .replace('"array"', '"list"')
        .replace('"nmu"', '"num"')
        .replace("timeout = 5\n", "timeout = 500\n")
    )
    out = check(fixed, tmp_path)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("spec", ["int", "dict"])
def test_a_pushed_config_is_refused_in_the_same_words(spec: str) -> None:
    """A service node's push compiles its arguments in the gateway: the suggestion reaches it."""
    push = {
        "service": "pushed",
        "config_version": "1",
        "nodes": ["127.0.0.1:9"],
        "fun_configs": [{"request_type": "f", "mfa": "m:f", "arg_types": {"x": spec}}],
    }

    async def go(address: str) -> str:
        async with ControlClient(address, None, name="test") as client:
            with pytest.raises(rpc.RpcError) as exc:
                await client.push(push)
        return exc.value.text

    with GatewayProcess(PID_CONFIG) as gw:
        assert gw.control is not None
        text = asyncio.run(go(gw.control))
    want = {
        "int": f'unknown type "int"; did you mean "num"? ({NUM})',
        "dict": 'unknown type "dict"; did you mean "map"?',
    }
    assert want[spec] in text, text
