"""Builds the Cython hot path in src/genapi/_core; everything else is in pyproject.toml.

The modules are translated to C (cythonize's `nthreads`) and compiled (build_ext's `parallel`) on
every CPU this process may use (its affinity mask, not the host's count), and each one is announced
on stderr as it finishes, `genapi: [3/16] genapi._core.wire compiled in 21 s`. pip shows a build's
output only with `-v` (`pip install -v .`); without it pip prints its own `Building wheel ...` line.
An extension whose output is newer than its sources is not compiled again (an editable install or
`build_ext --inplace` rerun only compiles what changed): it is announced as `up to date`.
"""

import os
import sys
import threading
import time

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

MODULES = ["vocab", "stats", "decode", "validate", "wire", "connection", "reply", "handoff", "select", "callee", "rpc", "remote", "host", "ratelimit", "limits", "dispatch"]


def usable_cpus() -> int:
    """The CPUs this process may run on (a container's or `taskset`'s), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


JOBS = usable_cpus()


def say(text: str) -> None:
    print(f"genapi: {text}", file=sys.stderr, flush=True)


class BuildExt(build_ext):
    """build_ext that announces each module as it finishes (compiled, or up to date)."""

    def build_extensions(self) -> None:
        self._done = 0
        self._lock = threading.Lock()
        say(f"compiling {len(self.extensions)} extension modules, {self.parallel or 1} at a time")
        started = time.monotonic()
        super().build_extensions()
        say(f"extension modules done in {time.monotonic() - started:.0f} s")

    def build_extension(self, ext: Extension) -> None:
        target = self.get_ext_fullpath(ext.name)
        before = os.stat(target).st_mtime_ns if os.path.exists(target) else None
        started = time.monotonic()
        super().build_extension(ext)
        after = os.stat(target).st_mtime_ns if os.path.exists(target) else None
        what = "up to date" if before is not None and before == after else f"compiled in {time.monotonic() - started:.0f} s"
        with self._lock:
            self._done += 1
            say(f"[{self._done}/{len(self.extensions)}] {ext.name} {what}")


extensions = [
    Extension(f"genapi._core.{name}", [f"src/genapi/_core/{name}.pyx"], extra_compile_args=["-O2"])
    for name in MODULES
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        include_path=["src"],
        nthreads=JOBS,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    ),
    cmdclass={"build_ext": BuildExt},
    options={"build_ext": {"parallel": JOBS}},
)
