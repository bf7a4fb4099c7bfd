"""Micro-benchmarks of the config snapshot (genapi.host.snapshot): the master's publish and a
worker's read of a whole registry of 10, 1 000 and 10 000 FunConfigs (goal: 10 000 published
and read back in well under 20 ms). The snapshot lives where `genapi serve` puts it, in
/dev/shm (tmpfs) when there is one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

from genapi.host.snapshot import SnapshotReader, SnapshotWriter
from genapi.structs import FunConfig

SIZES = [10, 1000, 10_000]


def registry(n: int) -> list[FunConfig]:
    """Realistic configs: remote nodes, a node mode, 2-3 typed arguments, versions, permissions."""
    out = []
    for i in range(n):
        arg_types: dict[str, object] = {"user_id": "string", "amount": "num"}
        if i % 2:
            arg_types["tags"] = {"type": "list_string", "max_items": 10}
        out.append(
            FunConfig(
                service=f"svc{i % 50}",
                request_type=f"op_{i}",
                mfa=f"app.handlers:op_{i}",
                nodes=[f"10.0.{i % 7}.{j}:4100" for j in range(1, 4)],
                choose_node_mode={"hash": "user_id"} if i % 3 else "round_robin",
                timeout=3000,
                arg_types=arg_types,
                arg_orders=list(arg_types),
                version=f"1.{i % 5}.0",
                retry={"all_nodes": 2},
                check_permission={"arg": "user_id"},
            )
        )
    return out


@pytest.fixture
def snapshot_path() -> Iterator[str]:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="genapi-bench-", dir=base) as d:
        yield os.path.join(d, "bench.snapshot")


@pytest.mark.benchmark(group="snapshot publish")
@pytest.mark.parametrize("n", SIZES)
def test_publish(benchmark, snapshot_path: str, n: int) -> None:
    configs = registry(n)
    writer = SnapshotWriter(snapshot_path)
    gen = benchmark(writer.publish, configs)
    assert gen == writer.generation > 0
    assert SnapshotReader(snapshot_path).read(gen).configs == configs
    writer.close()


@pytest.mark.benchmark(group="snapshot read")
@pytest.mark.parametrize("n", SIZES)
def test_read(benchmark, snapshot_path: str, n: int) -> None:
    """A fresh reader each round: a worker reads a generation it has not seen (a repeated
    read of an unchanged file is served from the reader's last Snapshot and costs nothing)."""
    configs = registry(n)
    writer = SnapshotWriter(snapshot_path)
    gen = writer.publish(configs)
    snap = benchmark(lambda: SnapshotReader(snapshot_path).read(gen))
    assert snap.generation == gen
    assert snap.configs == configs
    writer.close()
