"""`genapi init` (issue 21 item 6): the starter config and module it writes pass `genapi check`
and serve as written (a real gateway, called with the Python client), and nothing existing is
overwritten without --force."""

from __future__ import annotations

import asyncio
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from genapi.client import Client
from support.gateway_proc import GatewayProcess

GENAPI = str(Path(sys.executable).with_name("genapi"))


def genapi(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENAPI_")}
    return subprocess.run([GENAPI, *args], capture_output=True, text=True, timeout=60, cwd=str(cwd), env=env)


def secret_of(config: Path) -> str:
    m = re.search(r'^jwt_secret = "([^"]+)"$', config.read_text(), re.M)
    assert m, config.read_text()
    return m.group(1)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("init")
    out = genapi("init", "proj", cwd=root)
    assert out.returncode == 0, out.stderr
    assert "next: cd proj && genapi check --config gateway.toml" in out.stdout
    return root / "proj"


def test_init_writes_a_config_and_a_module_that_check_accepts(project: Path) -> None:
    assert sorted(p.name for p in project.iterdir()) == ["gateway.toml", "myapp.py"]
    assert stat.S_IMODE((project / "gateway.toml").stat().st_mode) == 0o600  # it holds a secret
    assert len(secret_of(project / "gateway.toml")) >= 43  # 32 random bytes, url-safe base64
    out = genapi("check", "--config", "gateway.toml", cwd=project)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "myapp.hello - sync myapp:hello (name: string)",
        "myapp.whoami - sync myapp:whoami (request_info)",
        "[auth] jwt_secret from the file",
        "gateway.toml: ok, 2 function(s)",
    ]


def test_the_starter_serves_its_functions(project: Path) -> None:
    token = genapi("token", "--config", "gateway.toml", "--sub", "alice", cwd=project)
    assert token.returncode == 0, token.stderr
    config = (project / "gateway.toml").read_text()

    async def calls(url: str) -> tuple[object, object, object]:
        anon = await Client.connect(url)
        await anon.join("api:lobby")
        hello = (await anon.call("myapp", "hello", {"name": "ada"})).result
        refused = await anon.call("myapp", "whoami", raise_on_error=False)
        await anon.close()
        alice = await Client.connect(url, token=token.stdout.strip())
        await alice.join("api:lobby")
        who = (await alice.call("myapp", "whoami")).result
        await alice.close()
        return hello, refused.success, who

    with GatewayProcess(config, extra_args=["--app-dir", str(project)]) as gw:
        hello, refused, who = asyncio.run(calls(gw.url))
    assert hello == {"greeting": "hello ada"}
    assert refused is False
    assert who == {"user_id": "alice", "device_id": None}


def test_init_never_overwrites_without_force(tmp_path: Path) -> None:
    assert genapi("init", cwd=tmp_path).returncode == 0
    first = secret_of(tmp_path / "gateway.toml")
    (tmp_path / "myapp.py").write_text("# mine\n")
    again = genapi("init", cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr == (
        "genapi: error: ./gateway.toml, ./myapp.py already exist; nothing written (--force overwrites)\n"
    )
    assert secret_of(tmp_path / "gateway.toml") == first and (tmp_path / "myapp.py").read_text() == "# mine\n"
    assert genapi("init", "--force", cwd=tmp_path).returncode == 0
    assert secret_of(tmp_path / "gateway.toml") != first  # a new secret each time
    assert "async def hello" in (tmp_path / "myapp.py").read_text()


def test_init_with_another_name_and_a_refused_one(tmp_path: Path) -> None:
    assert genapi("init", "--name", "shop", cwd=tmp_path).returncode == 0
    out = genapi("check", "--config", "gateway.toml", cwd=tmp_path)
    assert out.returncode == 0 and "shop.hello - sync shop:hello (name: string)" in out.stdout, out.stderr
    bad = genapi("init", "--name", "my-app", "elsewhere", cwd=tmp_path)
    assert bad.returncode == 2 and "--name: must be a Python module name" in bad.stderr
    assert not (tmp_path / "elsewhere").exists()
