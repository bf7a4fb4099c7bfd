"""The tree's lint gates, as configured in pyproject.toml: a finding fails the suite.

ruff (check, and `format --check`: the tree stays formatted), mypy over src/genapi, and
cython-lint over the compiled core's .pyx/.pxd.
"""

from __future__ import annotations

import os
import re
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


# Findings in today's _core that cython-lint's config cannot switch off one by one (its own checks
# have no codes; pycodestyle's codes would switch off for every file): (file, message pattern).
# Each is worth fixing in the code, after which its line here can go; a listed finding that no
# longer occurs does not fail.
CYTHON_LINT_KNOWN = [
    ("connection.pyx", r"'event' defined but unused"),  # the decoded event is unpacked, then re-read
    ("dispatch.pyx", r"'RequestLimiter' imported but unused"),  # cimported by dispatch.pxd already
    ("dispatch.pyx", r"'MetricRow' imported but unused"),  # the same
    ("ratelimit.pyx", r"Loop control variable 'n' not used"),  # a cdef counter of the probe run
    ("decode.pyx", r"E501 line too long"),  # one error message of 122 characters
    ("limits.pyx", r"E305 expected 2 blank lines"),
    ("validate.pyx", r"E305 expected 2 blank lines"),
    ("validate.pyx", r"E303 too many blank lines"),
]
_FINDING = re.compile(r"^(?P<path>.+?):(?P<line>\d+):(?P<col>\d+): (?P<message>.*)$")


def test_cython_lint_is_clean() -> None:
    # cython-lint runs pycodestyle as a command: the one installed beside this interpreter.
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    proc = _run("cython_lint.cython_lint", str(CORE.relative_to(ROOT)), env=env)
    findings = [line for line in proc.stdout.splitlines() if line.strip()]
    unknown = []
    for line in findings:
        m = _FINDING.match(line)
        if m is None or not any(
            Path(m["path"]).name == name and re.search(pattern, m["message"]) for name, pattern in CYTHON_LINT_KNOWN
        ):
            unknown.append(line)
    assert not unknown, "\n".join(unknown) + "\n" + proc.stderr
    assert proc.returncode == 0 or findings, proc.stderr  # a failure to run is not a clean tree
