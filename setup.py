"""Builds the Cython hot path in src/genapi/_core; everything else is in pyproject.toml."""
from Cython.Build import cythonize
from setuptools import Extension, setup

MODULES = ["vocab", "stats", "decode", "validate", "wire", "connection", "reply", "handoff", "select", "callee", "rpc", "remote", "host", "ratelimit", "limits", "dispatch"]

extensions = [
    Extension(f"genapi._core.{name}", [f"src/genapi/_core/{name}.pyx"], extra_compile_args=["-O2"])
    for name in MODULES
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        include_path=["src"],
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
