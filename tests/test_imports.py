"""Every module of genapi imports on its own, first, in a fresh interpreter: an import cycle
hides while some other module happens to be imported before it (tests/test_pipe.py could not
be collected alone while host/link.py → engine/relay.py → relay/ → relay/seats.py → engine/relay.py
was one). One interpreter per module, eight at a time."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def modules() -> list[str]:
    names = []
    for path in sorted((SRC / "genapi").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_module_imports_alone() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}

    def alone(name: str) -> tuple[str, str] | None:
        proc = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, env=env)
        return None if proc.returncode == 0 else (name, proc.stderr.strip().splitlines()[-1])

    names = modules()
    assert len(names) > 50, names
    with ThreadPoolExecutor(8) as pool:
        failed = [f for f in pool.map(alone, names) if f is not None]
    assert not failed, failed
