"""Structured, quiet-by-default logging: one `event key=value ...` line per record."""
from __future__ import annotations

import logging
import sys
from typing import Any

_logger = logging.getLogger("genapi")


def setup(level: str = "warning") -> None:
    """Configures the genapi logger once per process (stderr, logfmt-style lines)."""
    if not _logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        _logger.addHandler(handler)
        _logger.propagate = False
    _logger.setLevel(level.upper())


def _fmt(event: str, fields: dict[str, Any]) -> str:
    parts = [event]
    for k, v in fields.items():
        s = str(v)
        if not s or any(c in s for c in ' "='):
            s = '"' + s.replace('"', '\\"') + '"'
        parts.append(f"{k}={s}")
    return " ".join(parts)


def enabled(level: str) -> bool:
    """Whether records at `level` are written (so costly fields are only built when they are)."""
    return _logger.isEnabledFor(getattr(logging, level.upper()))


def debug(event: str, **fields: Any) -> None:
    if _logger.isEnabledFor(logging.DEBUG):
        _logger.debug(_fmt(event, fields))


def info(event: str, **fields: Any) -> None:
    if _logger.isEnabledFor(logging.INFO):
        _logger.info(_fmt(event, fields))


def warning(event: str, **fields: Any) -> None:
    if _logger.isEnabledFor(logging.WARNING):
        _logger.warning(_fmt(event, fields))


def error(event: str, exc_info: bool = False, **fields: Any) -> None:
    _logger.error(_fmt(event, fields), exc_info=exc_info)
