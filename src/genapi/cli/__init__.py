"""The `genapi` command: a module per command group."""

from genapi.cli.main import main

__all__ = ["main"]
