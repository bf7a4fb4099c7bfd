"""`--workers auto`: the CPUs the process may use (its affinity mask, capped by its cgroup CPU
quota), not the host's. The quota files are real files in a tmp dir laid out as /sys/fs/cgroup
and /proc/self/cgroup are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from genapi.host.cpus import cgroup_quota, usable_cpus
from support.configs import PID_CONFIG
from support.gateway_proc import GatewayProcess, children

AFFINITY = len(os.sched_getaffinity(0))


def layout(tmp_path: Path, membership: str, files: dict[str, str]) -> tuple[str, str]:
    """A cgroup mount at tmp_path/cgroup with `files` (path under it → text), and a membership
    file as /proc/self/cgroup: (cgroup root, membership file)."""
    root = tmp_path / "cgroup"
    root.mkdir(parents=True)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    proc = tmp_path / "self-cgroup"
    proc.write_text(membership)
    return str(root), str(proc)


V2 = "0::/system.slice/app.service\n"


@pytest.mark.parametrize(
    ("cpu_max", "quota"),
    [
        ("150000 100000\n", 1.5),
        ("100000 100000\n", 1.0),
        ("50000 100000\n", 0.5),
        ("400000 100000\n", 4.0),
        ("max 100000\n", None),
        ("garbage\n", None),
        ("-1 100000\n", None),
        ("0 100000\n", None),
        ("100000 0\n", None),
        ("", None),
    ],
)
def test_cgroup_v2_cpu_max_is_parsed(tmp_path: Path, cpu_max: str, quota: float | None) -> None:
    root, proc = layout(tmp_path, V2, {"system.slice/app.service/cpu.max": cpu_max})
    assert cgroup_quota(root, proc) == (quota, "cgroup cpu.max" if quota is not None else "")


def test_the_quota_caps_the_affinity_rounded_up_and_at_least_one(tmp_path: Path) -> None:
    root, proc = layout(tmp_path, V2, {"system.slice/app.service/cpu.max": "50000 100000\n"})
    cpus = usable_cpus(root, proc)
    assert (cpus.usable, cpus.source, cpus.quota) == (1, "cgroup cpu.max", 0.5)


def test_a_quota_above_the_affinity_leaves_the_affinity(tmp_path: Path) -> None:
    root, proc = layout(tmp_path, V2, {"system.slice/app.service/cpu.max": f"{(AFFINITY + 3) * 100000} 100000\n"})
    cpus = usable_cpus(root, proc)
    assert (cpus.usable, cpus.source, cpus.quota) == (AFFINITY, "affinity", AFFINITY + 3)


def test_no_cgroup_files_is_the_affinity(tmp_path: Path) -> None:
    root, proc = layout(tmp_path, V2, {})
    assert usable_cpus(root, proc) == (AFFINITY, "affinity", AFFINITY, None)
    assert usable_cpus(root, str(tmp_path / "missing")) == (AFFINITY, "affinity", AFFINITY, None)


def test_an_ancestors_smaller_quota_wins_and_a_missing_own_dir_falls_back_to_the_mount(tmp_path: Path) -> None:
    root, proc = layout(
        tmp_path,
        V2,
        {
            "cpu.max": "max 100000\n",
            "system.slice/cpu.max": "120000 100000\n",
            "system.slice/app.service/cpu.max": "300000 100000\n",
        },
    )
    assert cgroup_quota(root, proc) == (1.2, "cgroup cpu.max")
    # a container that sees the host's path, with its own cgroup mounted as the root
    root, proc = layout(tmp_path / "c", "0::/docker/abc123\n", {"cpu.max": "200000 100000\n"})
    assert cgroup_quota(root, proc) == (2.0, "cgroup cpu.max")


def test_cgroup_v1_cfs_quota(tmp_path: Path) -> None:
    membership = "12:memory:/x\n4:cpu,cpuacct:/docker/abc\n0::/\n"  # a hybrid host: v2 has no cpu.max
    files = {
        "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000\n",
        "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
    }
    root, proc = layout(tmp_path, membership, files)
    assert cgroup_quota(root, proc) == (0.5, "cgroup v1 cfs quota")
    assert usable_cpus(root, proc)[:2] == (1, "cgroup v1 cfs quota")
    files["cpu,cpuacct/docker/abc/cpu.cfs_quota_us"] = "-1\n"  # no limit
    root, proc = layout(tmp_path / "unlimited", membership, files)
    assert cgroup_quota(root, proc) == (None, "")


def test_workers_auto_under_taskset_starts_one_worker() -> None:
    """A real gateway pinned to CPU 0 on a host with more: `auto` serves with one worker (no
    master and worker processes) and logs where the number came from."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs a host with 2 CPUs or more to tell the affinity from the host's count")
    gw = GatewayProcess(PID_CONFIG, extra_args=["--workers", "auto", "--log-level", "info"], cpu=0)
    try:
        assert children(gw.pid) == set()  # one process serving: a master would have its workers
        line = next(ln for ln in gw.read_stderr().splitlines() if "workers_auto" in ln)
        assert "workers=1 source=affinity affinity=1" in line and f"host_cpus={os.cpu_count()}" in line
    finally:
        assert gw.stop() == 0
