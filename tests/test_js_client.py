"""Runs the phoenix.js client tests (tests/js, `node --test`) against a real `genapi serve`.

Needs Node 20+ and `npm ci --prefix tests/js` (CI installs it; the test fails, not skips, without it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.gateway_proc import GatewayProcess

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
JS_DIR = TESTS / "js"


def _absolute_pythonpath() -> str:
    """GatewayProcess runs the server with cwd=tests/, so a relative PYTHONPATH (the documented
    `PYTHONPATH=src pytest ...`) would no longer find the package: make every entry absolute."""
    entries = [str(TESTS / "support")]
    entries += [str(Path(e).resolve()) for e in os.environ.get("PYTHONPATH", "").split(os.pathsep) if e]
    return os.pathsep.join(dict.fromkeys(entries))


def test_phoenix_js_client_against_demo_gateway() -> None:
    if not (JS_DIR / "node_modules" / "phoenix").is_dir() or not (JS_DIR / "node_modules" / "ws").is_dir():
        pytest.fail("tests/js/node_modules is missing (phoenix, ws): run `npm ci --prefix tests/js`", pytrace=False)
    node = shutil.which("node")
    if node is None:
        pytest.fail("`node` (Node.js 20+) is not on PATH; it is needed for tests/js", pytrace=False)

    gw = GatewayProcess(env={"PYTHONPATH": _absolute_pythonpath()})
    try:
        token = subprocess.run(
            [sys.executable, "-m", "genapi", "token", "--sub", "js-user"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
        env = {**os.environ, "GENAPI_URL": gw.url, "GENAPI_TOKEN": token}
        try:
            proc = subprocess.run(
                [node, "--test", "--test-reporter=spec", "tests/js/"],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=90,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(
                f"node --test timed out after 90 s\n--- stdout ---\n{exc.stdout}\n"
                f"--- stderr ---\n{exc.stderr}\n--- gateway stderr ---\n{gw.read_stderr()}",
                pytrace=False,
            )
        alive = gw.alive()
    finally:
        code = gw.stop()

    output = f"--- node stdout ---\n{proc.stdout}\n--- node stderr ---\n{proc.stderr}"
    assert proc.returncode == 0, (
        f"node --test tests/js/ exited with {proc.returncode}\n{output}\n--- gateway stderr ---\n{gw.read_stderr()}"
    )
    assert alive, f"the gateway died during the JS run\n{gw.read_stderr()}"
    assert code == 0, f"gateway exit code {code}\n{gw.read_stderr()}"
