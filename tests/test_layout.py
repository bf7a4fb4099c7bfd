"""The README's Layout section is the tree as it is: `tests/support/layout.py` prints it from the
modules' docstrings, and the README holds exactly that between its layout markers."""

from __future__ import annotations

from support import layout


def test_readme_layout_matches_the_tree() -> None:
    readme = layout.README.read_text(encoding="utf-8")
    assert readme.count(layout.START) == 1 and readme.count(layout.END) == 1, "README.md: one pair of layout markers"
    assert layout.readme_section(readme) == layout.layout(), (
        "README.md's Layout section is out of date: run `python tests/support/layout.py --write`"
    )


def test_every_module_is_listed() -> None:
    """No module is left out (say, in a directory without an `__init__.py`)."""
    lines = layout.layout().splitlines()[2:-1]  # past the fence and the package's own line
    listed = sum(1 for line in lines if not line.split()[0].endswith("/"))
    modules = [p for p in layout.PACKAGE.rglob("*") if p.suffix in layout.MODULE_SUFFIXES and p.name != "__init__.py"]
    assert listed == len(modules), sorted(str(p.relative_to(layout.PACKAGE)) for p in modules)
