"""Compiled (Cython) parts of genapi that run for every message."""
