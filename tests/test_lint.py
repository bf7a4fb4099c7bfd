"""The tree's lint gates, as configured in pyproject.toml: a finding fails the suite.

ruff (check, and `format --check`: the tree stays formatted), mypy over src/genapi, and
cython-lint over the compiled core's .pyx/.pxd.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "src" / "genapi" / "_core"


def _run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


def test_ruff_is_clean() -> None:
    proc = _run("ruff", "check", "src", "tests", "benchmarks")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format_is_clean() -> None:
    proc = _run("ruff", "format", "--check", "src", "tests", "benchmarks")
    assert proc.returncode == 0, "run `ruff format src tests benchmarks`:\n" + proc.stdout + proc.stderr


def test_mypy_is_clean() -> None:
    proc = _run("mypy")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cython_lint_is_clean() -> None:
    # cython-lint runs pycodestyle as a command: the one installed beside this interpreter.
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    proc = _run("cython_lint.cython_lint", str(CORE.relative_to(ROOT)), env=env)
    findings = [line for line in proc.stdout.splitlines() if line.strip()]
    assert not findings, "\n".join(findings) + "\n" + proc.stderr
    assert proc.returncode == 0, proc.stderr  # a failure to run is not a clean tree
