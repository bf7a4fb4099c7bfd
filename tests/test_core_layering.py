"""The compiled core is the ground floor: no module in `genapi/_core` imports anything of
genapi's above it, only the leaf kernel modules (which in turn import nothing above `_core`).
Read from the sources (.pyx, .pxd, .py), imports inside functions included."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "genapi"
CORE = SRC / "_core"

# What `_core` may import from outside itself: modules that import nothing of genapi above `_core`.
KERNEL = {
    "genapi.address",
    "genapi.errors",
    "genapi.structs",
    "genapi.schema",
    "genapi.log",
    "genapi.trace",
    "genapi.loader",
}

_FROM = re.compile(r"^\s*from\s+(genapi(?:\.\w+)*)\s+c?import\s+(\([^)]*\)|[\w ,]+)", re.M)
_IMPORT = re.compile(r"^\s*c?import\s+(genapi(?:\.\w+)*)", re.M)


def _imports(path: Path) -> set[str]:
    """Every genapi module `path` imports or cimports (`from genapi import log` names genapi.log)."""
    text = path.read_text()
    found = set(_IMPORT.findall(text))
    for module, names in _FROM.findall(text):
        if module == "genapi":
            words = (n.split()[0] for n in names.strip("()").split(",") if n.strip())
            found.update(f"genapi.{w}" for w in words)
        else:
            found.add(module)
    return found


def _outside(path: Path, allowed: set[str]) -> list[str]:
    return sorted(m for m in _imports(path) if not m.startswith("genapi._core") and m not in allowed)


def test_core_imports_only_the_kernel() -> None:
    sources = [p for ext in ("pyx", "pxd", "py") for p in CORE.glob(f"*.{ext}")]
    assert sources
    upward = {p.name: bad for p in sources if (bad := _outside(p, KERNEL))}
    assert upward == {}, f"_core imports from above itself: {upward}"


def test_kernel_leaves_import_nothing_above_core() -> None:
    """The kernel modules `_core` leans on import only each other and `_core`."""
    for name in sorted(KERNEL):
        path = SRC / (name.split(".", 1)[1] + ".py")
        assert _outside(path, KERNEL) == [], f"{name} imports from above _core"


def test_the_telemetry_circle_is_gone() -> None:
    """telemetry.py sets the core's hooks (`_core/stats.pyx`); the core never imports telemetry."""
    assert all("genapi.telemetry" not in _imports(p) for p in CORE.iterdir() if p.suffix in (".pyx", ".pxd", ".py"))
