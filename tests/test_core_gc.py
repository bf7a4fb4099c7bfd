"""The compiled classes the core keeps out of the garbage collector (`@cython.no_gc`: one per
request or call, forming no cycle that outlives it) are built that way.

Cython honours the decorator only where the class is defined (the .pyx): written in the .pxd
alone it is silently ignored, and every in-flight request or remote call is then tracked and
traversed by each collection (a few percent of a busy worker). Read from the sources, checked on
the built modules."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "src" / "genapi" / "_core"
HAVE_GC = 1 << 14  # Py_TPFLAGS_HAVE_GC
_NO_GC = re.compile(r"^@cython\.no_gc\b[^\n]*\n(?:@[^\n]*\n)*cdef class (\w+)", re.M)


def _declared() -> list[tuple[str, str]]:
    """(module, class) of every class a .pxd or .pyx of the core declares no_gc."""
    found = set()
    for path in sorted(CORE.glob("*.pxd")) + sorted(CORE.glob("*.pyx")):
        found.update((path.stem, name) for name in _NO_GC.findall(path.read_text()))
    return sorted(found)


def test_the_no_gc_classes_are_built_without_gc_support() -> None:
    declared = _declared()
    assert {("reply", "Reply"), ("remote", "RemoteCall"), ("handoff", "Job")} <= set(declared), declared
    tracked = [
        f"{module}.{name}"
        for module, name in declared
        if getattr(importlib.import_module(f"genapi._core.{module}"), name).__flags__ & HAVE_GC
    ]
    assert not tracked, f"declared @cython.no_gc but built with GC support (decorate the .pyx class): {tracked}"
