"""A node resolver and a custom node selector for the remote tests (they run in the gateway)."""

from __future__ import annotations

import os
from typing import Any


def nodes() -> list[str]:
    """The nodes named in NODEPICK_NODES (comma-separated host:port)."""
    return [n for n in os.environ.get("NODEPICK_NODES", "").split(",") if n]


def last(addresses: list[str], request: Any) -> str:
    """Always the last node."""
    return addresses[-1]
