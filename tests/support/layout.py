"""Prints the package tree of src/genapi, one line per module: its docstring's first sentence.

The README's Layout section is this output, between `<!-- layout:start -->` and
`<!-- layout:end -->` (tests/test_layout.py checks it). After adding, moving or re-describing a
module, rewrite that section with

    python tests/support/layout.py --write

Deterministic: directories and modules sorted by name, the text taken from the sources only (a
`.pyx` is read, not imported, so no build is needed). A package's line is its `__init__.py`'s.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "genapi"
README = ROOT / "README.md"
START = "<!-- layout:start -->"
END = "<!-- layout:end -->"
MODULE_SUFFIXES = (".py", ".pyx")
INDENT = "  "
COLUMN = 24  # where the descriptions start (longer names push theirs right)

# A .pyx module's docstring: the first string literal after comments (`# cython: ...`) and blank lines.
_PYX_DOC = re.compile(r'\A(?:[ \t]*(?:#[^\n]*)?\n)*[ \t]*[rRuU]?("""|\'\'\')(.*?)\1', re.S)
# A sentence ends at a period, question or exclamation mark followed by a space or the end.
_SENTENCE_END = re.compile(r"(?<=[.!?])(?=\s|$)")


def docstring(path: Path) -> str | None:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".py":
        return ast.get_docstring(ast.parse(text, str(path)))
    m = _PYX_DOC.match(text)
    return m[2] if m else None


def first_sentence(doc: str | None) -> str:
    """The docstring's first paragraph, on one line, up to the end of its first sentence."""
    if not doc or not doc.strip():
        return "(no docstring)"
    paragraph = " ".join(doc.strip().split("\n\n", 1)[0].split())
    m = _SENTENCE_END.search(paragraph)
    return paragraph[: m.start()] if m else paragraph


def _line(depth: int, name: str, text: str) -> str:
    head = INDENT * depth + name
    return f"{head:<{COLUMN - 1}} {text}" if len(head) < COLUMN else f"{head} {text}"


def _tree(directory: Path, depth: int) -> list[str]:
    lines: list[str] = []
    modules = sorted(
        p for p in directory.iterdir() if p.is_file() and p.suffix in MODULE_SUFFIXES and p.name != "__init__.py"
    )
    packages = sorted(p for p in directory.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
    for module in modules:
        lines.append(_line(depth, module.name, first_sentence(docstring(module))))
    for package in packages:
        lines.append(_line(depth, package.name + "/", first_sentence(docstring(package / "__init__.py"))))
        lines += _tree(package, depth + 1)
    return lines


def layout() -> str:
    """The Layout section's generated text (a fenced block), ending in a newline."""
    head = _line(0, "src/genapi/", first_sentence(docstring(PACKAGE / "__init__.py")))
    return "```\n" + "\n".join([head, *_tree(PACKAGE, 1)]) + "\n```\n"


def readme_section(readme: str) -> str:
    """What README.md holds between the markers (each on a line of its own)."""
    start, end = readme.index(START + "\n") + len(START) + 1, readme.index(END)
    return readme[start:end]


def rewrite(readme: str) -> str:
    start, end = readme.index(START + "\n") + len(START) + 1, readme.index(END)
    return readme[:start] + layout() + readme[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite README.md's Layout section")
    args = parser.parse_args(argv)
    if not args.write:
        sys.stdout.write(layout())
        return 0
    text = README.read_text(encoding="utf-8")
    new = rewrite(text)
    if new != text:
        README.write_text(new, encoding="utf-8")
        print(f"{README.name}: Layout section rewritten")
    else:
        print(f"{README.name}: Layout section already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
