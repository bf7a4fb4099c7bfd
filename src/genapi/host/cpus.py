"""How many CPUs this process may use (`--workers auto`): the CPUs of its affinity mask (taskset,
cpuset), capped by its cgroup's CPU quota (a container's `--cpus`), at least 1.

The quota is read from cgroup v2's `cpu.max` ("QUOTA PERIOD", or "max PERIOD" for none) or, on
a cgroup v1 hierarchy, `cpu.cfs_quota_us` / `cpu.cfs_period_us` (-1 for none), in the process's
own cgroup (named by /proc/self/cgroup) and each of its ancestors up to the mount: the smallest
quota wins, rounded up to whole CPUs. Every file is read with a bounded size, and one that is
missing or malformed is no limit, never an error."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

CGROUP_ROOT = "/sys/fs/cgroup"
PROC_SELF_CGROUP = "/proc/self/cgroup"
MAX_READ = 4096  # bytes read of any one cgroup file
MAX_DEPTH = 64  # ancestors looked at


class Cpus(NamedTuple):
    usable: int  # what `auto` means: at least 1
    source: str  # "affinity", "cgroup cpu.max", "cgroup v1 cfs quota" or "cpu_count"
    affinity: int  # the CPUs of the affinity mask (os.cpu_count() where there is none)
    quota: float | None  # the cgroup quota in CPUs (quota / period), None without one


def usable_cpus(cgroup_root: str = CGROUP_ROOT, proc_self_cgroup: str = PROC_SELF_CGROUP) -> Cpus:
    """The CPUs this process may use and where the number came from. `cgroup_root` is where the
    cgroup hierarchies are mounted and `proc_self_cgroup` the process's membership file (tests
    give both as files of a tmp dir)."""
    try:
        affinity, source = len(os.sched_getaffinity(0)), "affinity"
    except (AttributeError, OSError):  # no affinity masks on this platform
        affinity, source = os.cpu_count() or 1, "cpu_count"
    affinity = max(affinity, 1)
    quota, quota_source = cgroup_quota(cgroup_root, proc_self_cgroup)
    if quota is not None and math.ceil(quota) < affinity:
        return Cpus(max(math.ceil(quota), 1), quota_source, affinity, quota)
    return Cpus(affinity, source, affinity, quota)


def cgroup_quota(cgroup_root: str = CGROUP_ROOT, proc_self_cgroup: str = PROC_SELF_CGROUP) -> tuple[float | None, str]:
    """The smallest CPU quota (in CPUs) of the process's cgroup and its ancestors, and its
    source; (None, "") without one. cgroup v2 first, then v1's cpu controller."""
    membership = _read(proc_self_cgroup)
    if membership is None:
        return None, ""
    v2: str | None = None
    v1: list[tuple[str, str]] = []  # (controller list as mounted, path)
    for line in membership.splitlines():
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if not number.isdigit() or not path.startswith("/"):
            continue
        if number == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1.append((controllers, path))
    root = Path(cgroup_root)
    if v2 is not None:
        quota = _smallest(root, v2, _v2_quota)
        if quota is not None:
            return quota, "cgroup cpu.max"
    for controllers, path in v1:
        for mount in dict.fromkeys((controllers, "cpu", "cpu,cpuacct", "cpuacct,cpu")):
            if (root / mount).is_dir():
                quota = _smallest(root / mount, path, _v1_quota)
                if quota is not None:
                    return quota, "cgroup v1 cfs quota"
                break
    return None, ""


def _smallest(mount: Path, path: str, read_quota: Callable[[Path], float | None]) -> float | None:
    """The smallest quota of the cgroup at `path` under `mount` and of its ancestors up to the
    mount itself. A path that does not exist under the mount (a container that sees the host's
    path but mounts its own cgroup as the root) is skipped, its ancestors still looked at."""
    parts = [p for p in path.split("/") if p and p not in (".", "..")][:MAX_DEPTH]
    best: float | None = None
    for depth in range(len(parts), -1, -1):
        q = read_quota(mount.joinpath(*parts[:depth]))
        if q is not None and (best is None or q < best):
            best = q
    return best


def _v2_quota(directory: Path) -> float | None:
    """cgroup v2 `cpu.max`: "QUOTA PERIOD" in microseconds, or "max PERIOD" for no limit."""
    text = _read(str(directory / "cpu.max"))
    if text is None:
        return None
    fields = text.split()
    if len(fields) not in (1, 2) or fields[0] == "max":
        return None
    return _ratio(fields[0], fields[1] if len(fields) == 2 else "100000")


def _v1_quota(directory: Path) -> float | None:
    """cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`; a quota of -1 is no limit."""
    quota = _read(str(directory / "cpu.cfs_quota_us"))
    period = _read(str(directory / "cpu.cfs_period_us"))
    if quota is None or period is None:
        return None
    return _ratio(quota.strip(), period.strip())


def _ratio(quota: str, period: str) -> float | None:
    """quota / period in CPUs, for two positive integers; None for anything else."""
    if not (quota.isdigit() and period.isdigit()) or len(quota) > 19 or len(period) > 19:
        return None
    q, p = int(quota), int(period)
    if q <= 0 or p <= 0:
        return None
    return q / p


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read(MAX_READ)
    except OSError:
        return None
