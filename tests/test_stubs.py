"""Every `.pyi` of the compiled core says what its built module holds, no more and no less.

mypy reads the stubs, never the `.pyx`: a name missing from a stub is an error at its Python
callers, a stub name the module lacks is an AttributeError mypy cannot see. So, per module:

* every public name the stub declares exists in the module (and, for a class, every public
  method and attribute it declares exists on the class);
* every public name the module defines is declared in the stub. Public: not starting with `_`.
  Defined there: a class or function whose `__module__` is the module, or any other value (a
  constant) that the `.pyx` does not import from elsewhere. Modules and imported names are not
  the module's own.

Typing-only stub names (a `Protocol`, a `TypeAlias`) have no runtime object and are not looked for.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import types
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "src" / "genapi" / "_core"
STUBS = sorted(CORE.glob("*.pyi"))

# `from x import a, b as c` (parenthesised over lines, or one line with `\` continuations) and `import x as y`.
_FROM_IMPORT = re.compile(r"^from\s+[\w.]+\s+import\s+(\([^)]*\)|(?:[^\n]*\\\n)*[^\n]*)", re.M)
_IMPORT = re.compile(r"^import\s+([^\n]*)", re.M)


def _imported_names(source: str) -> set[str]:
    """The names a .pyx binds by Python-level import (cimports bind no runtime names of the module)."""
    names: set[str] = set()
    clauses = [m[1] for m in _FROM_IMPORT.finditer(source)] + [m[1] for m in _IMPORT.finditer(source)]
    for clause in clauses:
        clause = re.sub(r"#[^\n]*", "", clause).replace("\\\n", " ").strip("() \n")
        for part in clause.split(","):
            words = part.split()
            if words:
                names.add(words[-1].split(".")[0])  # `a as b` -> b; `import a.b` -> a
    return names


def _is_typing_only(node: ast.stmt) -> bool:
    if isinstance(node, ast.ClassDef):
        return any(ast.unparse(b) in ("Protocol", "typing.Protocol") for b in node.bases)
    return isinstance(node, ast.AnnAssign) and ast.unparse(node.annotation) in ("TypeAlias", "typing.TypeAlias")


def _stub_names(tree: ast.Module) -> dict[str, ast.stmt]:
    """Public top-level names a stub declares (explicit re-exports `import a as a` included)."""
    out: dict[str, ast.stmt] = {}
    for node in tree.body:
        if _is_typing_only(node):
            continue
        names: list[str] = []
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names = [node.name]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names = [node.target.id]
        elif isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names = [a.asname for a in node.names if a.asname is not None and a.asname == a.name]
        out.update((n, node) for n in names if not n.startswith("_"))
    return out


def _class_members(node: ast.ClassDef) -> set[str]:
    members: set[str] = set()
    for item in node.body:
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
            members.add(item.name)
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            members.add(item.target.id)
        elif isinstance(item, ast.Assign):
            members.update(t.id for t in item.targets if isinstance(t, ast.Name))
    return {m for m in members if not m.startswith("_")}


def _module_names(module: types.ModuleType, source: str) -> set[str]:
    """Public names `module` defines itself (see the module docstring)."""
    imported = _imported_names(source)
    own: set[str] = set()
    for name, value in vars(module).items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        if inspect.isclass(value) or inspect.isroutine(value):
            if getattr(value, "__module__", None) == module.__name__:
                own.add(name)
        elif name not in imported:
            own.add(name)
    return own


def test_every_compiled_module_has_a_stub() -> None:
    missing = sorted(p.name for p in CORE.glob("*.pyx") if not p.with_suffix(".pyi").exists())
    assert not missing, f"no .pyi beside {missing}"


@pytest.mark.parametrize("stub", STUBS, ids=[p.stem for p in STUBS])
def test_stub_matches_its_module(stub: Path) -> None:
    module = importlib.import_module(f"genapi._core.{stub.stem}")
    declared = _stub_names(ast.parse(stub.read_text(), str(stub)))
    defined = _module_names(module, stub.with_suffix(".pyx").read_text())

    problems = [f"{name}: in {stub.name}, not in the module" for name in sorted(set(declared) - set(vars(module)))]
    problems += [
        f"{name}: defined by the module, not declared in {stub.name}" for name in sorted(defined - set(declared))
    ]
    for name, node in sorted(declared.items()):
        cls = getattr(module, name, None)
        if isinstance(node, ast.ClassDef) and inspect.isclass(cls):
            problems += [
                f"{name}.{member}: in {stub.name}, not on the class"
                for member in sorted(_class_members(node))
                if not hasattr(cls, member)
            ]
    assert not problems, f"genapi._core.{stub.stem}:\n" + "\n".join(problems)
