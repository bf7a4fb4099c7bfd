"""Runs the phoenix.js client tests (tests/js, `node --test`) against a real `genapi serve`.

Needs Node 20+ and `npm ci --prefix tests/js` (CI installs it; the test fails, not skips, without it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support.gateway_proc import GatewayProcess

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
JS_DIR = TESTS / "js"


# a top-level test in a JS test file: `test(`, `it(`, also `test.skip(`/`.todo(`/`.only(` (counted, so
# a skipped one shows as a test that did not pass); not `t.test(` subtests (none today)
JS_TEST_CALL = re.compile(r"^\s*(?:test|it)(?:\.(?:skip|todo|only))?\s*\(", re.M)
TAP_SUMMARY = re.compile(r"^# (tests|suites|pass|fail|cancelled|skipped|todo) (\d+)$", re.M)


def _js_tests_in_source() -> dict[str, int]:
    """The JS test files (every .js/.cjs/.mjs under tests/js that uses node:test, whatever its name,
    so a file renamed out of `node --test`'s patterns is still expected) and their test calls."""
    found = {}
    for path in sorted(JS_DIR.rglob("*.*js")):
        if "node_modules" in path.parts or path.suffix not in (".js", ".cjs", ".mjs"):
            continue
        text = path.read_text()
        if "node:test" in text:
            found[path.name] = len(JS_TEST_CALL.findall(text))
    return found


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
                [
                    node,
                    "--test",
                    "--test-reporter=tap",
                    "--test-reporter-destination=stdout",
                    "--test-reporter=spec",
                    "--test-reporter-destination=stderr",
                    "tests/js/",
                ],
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
    # node exits 0 with no tests at all, or with skipped/todo ones: count what ran and passed
    in_source = _js_tests_in_source()
    expected = sum(in_source.values())
    assert expected > 0, f"no node:test tests found under {JS_DIR}: {in_source}"
    summary = {k: int(v) for k, v in TAP_SUMMARY.findall(proc.stdout) if k != "suites"}
    assert summary == {
        "tests": expected,
        "pass": expected,
        "fail": 0,
        "cancelled": 0,
        "skipped": 0,
        "todo": 0,
    }, f"node's TAP summary {summary}, expected every one of the {expected} tests in {in_source} to pass\n{output}"
    assert alive, f"the gateway died during the JS run\n{gw.read_stderr()}"
    assert code == 0, f"gateway exit code {code}\n{gw.read_stderr()}"
