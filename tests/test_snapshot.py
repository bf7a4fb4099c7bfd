"""The registry snapshot in shared memory (genapi.host.snapshot): round trips, torn and corrupt files,
segments left by a crashed master or owned by a live one, cleanup, and that a reader never sees
a half-written generation."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import msgspec
import pytest

from genapi.errors import GenapiError
from genapi.host.snapshot import (
    FORMAT_VERSION,
    HEADER,
    MAGIC,
    Delta,
    SnapshotError,
    SnapshotReader,
    SnapshotWriter,
    default_path,
)
from genapi.structs import FunConfig


def configs(n: int, tag: str = "") -> list[FunConfig]:
    """Configs using most fields: remote nodes, versions, typed arguments, permissions, retry."""
    return [
        FunConfig(
            service=f"svc{i % 7}",
            request_type=f"op{i}{tag}",
            mfa=f"app.handlers:op{i}",
            nodes=[f"10.0.0.{i % 5 + 1}:4100", f"10.0.1.{i % 3 + 1}:4100"],
            choose_node_mode={"hash": "user_id"} if i % 2 else "round_robin",
            timeout=3000 if i % 3 else "infinity",
            version=f"1.{i % 4}.0",
            arg_types={"user_id": "string", "amount": "num", "tags": {"type": "list_string", "max_items": 10}},
            arg_orders=["user_id", "amount", "tags"],
            check_permission={"arg": "user_id"},
            retry={"all_nodes": 2},
            response_type="async" if i % 4 == 0 else "sync",
        )
        for i in range(n)
    ]


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """`code` in a child process importing the installed genapi, as the test process does."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)


# ---- round trip


def test_round_trip_over_several_generations(tmp_path: Path) -> None:
    path = str(tmp_path / "gw.snapshot")
    writer = SnapshotWriter(path)
    reader = SnapshotReader(path)
    assert writer.generation == 0 and reader.generation == 0
    for expected_gen, registry in enumerate([configs(3), configs(50, "b"), [], configs(1, "c")], start=1):
        gen = writer.publish(registry)
        assert gen == expected_gen == writer.generation
        snap = reader.read(gen)
        assert snap.generation == gen == reader.generation
        assert snap.configs == registry
        assert all(type(c) is FunConfig for c in snap.configs)
    writer.close()


def test_a_second_reader_and_a_repeated_read_see_the_same_generation(tmp_path: Path) -> None:
    path = str(tmp_path / "gw.snapshot")
    writer = SnapshotWriter(path)
    gen = writer.publish(configs(10))
    reader = SnapshotReader(path)
    first = reader.read(gen)
    assert reader.read(gen) is first  # unchanged file: not decoded again
    assert SnapshotReader(path).read(gen) == first
    writer.close()


def test_a_reader_told_an_older_generation_gets_the_newer_one(tmp_path: Path) -> None:
    path = str(tmp_path / "gw.snapshot")
    writer = SnapshotWriter(path)
    old = writer.publish(configs(2))
    newest = configs(4, "new")
    writer.publish(configs(3))
    gen = writer.publish(newest)
    snap = SnapshotReader(path).read(old)
    assert (snap.generation, snap.configs) == (gen, newest)
    writer.close()


def test_a_generation_not_yet_published_is_an_error(tmp_path: Path) -> None:
    path = str(tmp_path / "gw.snapshot")
    writer = SnapshotWriter(path)
    writer.publish(configs(2))
    with pytest.raises(SnapshotError, match=r"holds generation 1, older than generation 2 asked for"):
        SnapshotReader(path).read(2)
    writer.close()


# ---- missing, torn and corrupt files


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "none.snapshot"
    with pytest.raises(SnapshotError, match=r"none\.snapshot does not exist \(generation 1 asked for\)") as info:
        SnapshotReader(str(path)).read(1)
    assert isinstance(info.value, GenapiError)


@pytest.mark.parametrize("cut", [0, 10, HEADER.size, HEADER.size + 1, -1])
def test_a_truncated_file_is_torn(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "gw.snapshot"
    writer = SnapshotWriter(str(path))
    writer.publish(configs(5))
    data = path.read_bytes()
    kept = len(data[:cut])
    path.write_bytes(data[:cut])
    body = len(data) - HEADER.size
    expected = (
        rf"is torn: {kept} bytes, shorter than the {HEADER.size}-byte header"
        if kept < HEADER.size
        else rf"is torn: header says {body} body bytes, file holds {kept - HEADER.size}"
    )
    with pytest.raises(SnapshotError, match=expected):
        SnapshotReader(str(path)).read(1)


def test_trailing_bytes_are_torn(tmp_path: Path) -> None:
    path = tmp_path / "gw.snapshot"
    SnapshotWriter(str(path)).publish(configs(2))
    with path.open("ab") as f:
        f.write(b"xx")
    with pytest.raises(SnapshotError, match=r"file holds \d+"):
        SnapshotReader(str(path)).read(1)


def test_bad_magic_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "gw.snapshot"
    SnapshotWriter(str(path)).publish(configs(2))
    data = bytearray(path.read_bytes())
    data[:8] = b"NOTASNAP"
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match=r"is corrupt: magic b'NOTASNAP', expected b'GNAPISNP'"):
        SnapshotReader(str(path)).read(1)


def test_another_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gw.snapshot"
    SnapshotWriter(str(path)).publish(configs(2))
    data = bytearray(path.read_bytes())
    data[8:12] = (99).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match=r"has format version 99; this genapi reads version 2"):
        SnapshotReader(str(path)).read(1)


def test_a_body_that_is_not_configs_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "gw.snapshot"
    SnapshotWriter(str(path)).publish(configs(2))
    data = bytearray(path.read_bytes())
    data[HEADER.size] = 0xC1  # never used in msgpack
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match=r"generation 1 is corrupt: "):
        SnapshotReader(str(path)).read(1)
    # a well-formed body of the wrong shape: a config with an unknown field
    blob = b"\x84\xa7service\xa1s\xacrequest_type\xa1r\xa3mfa\xa3m:f\xa5bogus\x01"
    body = msgspec.msgpack.encode([blob])
    path.write_bytes(HEADER.pack(MAGIC, FORMAT_VERSION, 1, os.getpid(), len(body)) + body)
    with pytest.raises(SnapshotError, match=r"is corrupt: Object contains unknown field `bogus`"):
        SnapshotReader(str(path)).read(1)


# ---- stale and owned segments


def test_a_segment_left_by_a_dead_master_is_replaced(tmp_path: Path, warnings: list[str]) -> None:
    path = tmp_path / "gw.snapshot"
    proc = run_python(f"""
        import os
        from genapi.host.snapshot import SnapshotWriter
        from genapi.structs import FunConfig
        w = SnapshotWriter({str(path)!r})
        w.publish([FunConfig(service="old", request_type="r", mfa="m:f")] * 3)
        open({str(path)!r} + ".%d.tmp" % os.getpid(), "wb").write(b"half")  # a crash mid-publish
        print(os.getpid())
        os._exit(0)  # no close(): as a crash leaves it
        """)
    assert proc.returncode == 0, proc.stderr
    dead = int(proc.stdout)
    assert path.exists() and Path(f"{path}.{dead}.tmp").exists()

    writer = SnapshotWriter(str(path))
    assert warnings == [f"snapshot_stale_replaced path={path} pid={dead}"]
    assert not path.exists(), "the stale registry must not be readable before the first publish"
    assert not Path(f"{path}.{dead}.tmp").exists()
    gen = writer.publish(configs(2))
    assert gen == 1
    assert SnapshotReader(str(path)).read(1).configs == configs(2)
    writer.close()


def test_an_unreadable_stale_file_is_replaced(tmp_path: Path, warnings: list[str]) -> None:
    path = tmp_path / "gw.snapshot"
    path.write_bytes(b"garbage")
    writer = SnapshotWriter(str(path))
    assert warnings == [f"snapshot_stale_replaced path={path} pid=unreadable"]
    assert not path.exists()
    writer.close()


def test_a_segment_owned_by_a_live_master_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gw.snapshot"
    writer = SnapshotWriter(str(path))
    writer.publish(configs(3))
    proc = run_python(f"""
        from genapi.host.snapshot import SnapshotWriter
        try:
            SnapshotWriter({str(path)!r})
        except RuntimeError as exc:
            print(exc)
            raise SystemExit(3)
        """)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert proc.stdout.strip() == (
        f"snapshot {path} belongs to the running process {os.getpid()} (another master serves this address)"
    )
    assert SnapshotReader(str(path)).read(1).configs == configs(3)  # untouched
    writer.close()


def test_the_same_process_may_reopen_its_own_segment(tmp_path: Path, warnings: list[str]) -> None:
    path = tmp_path / "gw.snapshot"
    SnapshotWriter(str(path)).publish(configs(1))
    again = SnapshotWriter(str(path))
    assert warnings == []
    assert again.publish(configs(2)) == 1
    again.close()


# ---- cleanup


def test_close_unlinks_and_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "gw.snapshot"
    writer = SnapshotWriter(str(path))
    writer.close()  # before any publish: nothing to remove
    writer = SnapshotWriter(str(path))
    writer.publish(configs(2))
    assert path.exists()
    writer.close()
    assert not path.exists()
    writer.close()
    assert list(tmp_path.iterdir()) == []


def test_a_forked_child_exiting_leaves_the_masters_segment(tmp_path: Path) -> None:
    path = tmp_path / "gw.snapshot"
    writer = SnapshotWriter(str(path))
    writer.publish(configs(2))
    pid = os.fork()
    if pid == 0:  # a worker forked from the master closes what it inherited
        writer.close()
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert SnapshotReader(str(path)).read(1).configs == configs(2)
    writer.close()
    assert not path.exists()


def test_the_directory_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "gw.snapshot"
    writer = SnapshotWriter(str(path))
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    writer.publish([])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    writer.close()


def test_default_path() -> None:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    assert default_path("127.0.0.1", 4000) == f"{base}/genapi-{os.getuid()}/127.0.0.1-4000.snapshot"
    assert default_path("::1", 80) == f"{base}/genapi-{os.getuid()}/__1-80.snapshot"


# ---- atomicity


def test_a_reader_never_sees_a_half_written_generation(tmp_path: Path) -> None:
    """One thread publishes 200 generations of different sizes; another reads each announced
    generation as fast as it can. Every read decodes whole, with the configs of its generation."""
    path = str(tmp_path / "gw.snapshot")
    writer = SnapshotWriter(path)
    registries = [configs(1 + (g * 37) % 120, f"g{g}") for g in range(201)]
    announced = [writer.publish(registries[0])]
    done = threading.Event()
    errors: list[BaseException] = []
    reads: list[int] = []

    def publish() -> None:
        try:
            for g in range(1, 201):
                announced.append(writer.publish(registries[g]))
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def read() -> None:
        reader = SnapshotReader(path)
        try:
            while not done.is_set() or reads[-1:] != [announced[-1]]:
                snap = reader.read(announced[-1])
                assert snap.configs == registries[snap.generation - 1]
                reads.append(snap.generation)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=publish), threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert reads == sorted(reads) and reads[-1] == 201
    assert len(set(reads)) > 1
    writer.close()


def test_an_unchanged_config_comes_back_as_the_same_object(tmp_path: Path) -> None:
    """What lets a worker skip what did not change: the reader maps each config's bytes back to
    the FunConfig it decoded from them before; a changed config is a new object."""
    path = tmp_path / "gw.snapshot"
    writer, reader = SnapshotWriter(str(path)), SnapshotReader(str(path))
    first = configs(3)
    one = reader.read(writer.publish(first)).configs
    changed = [*first[:2], msgspec.structs.replace(first[2], timeout=1234)]
    two = reader.read(writer.publish(changed)).configs
    assert two[0] is one[0] and two[1] is one[1]
    assert two[2] is not one[2] and two[2].timeout == 1234


# ---- deltas


def test_a_few_changes_go_as_a_delta_and_the_file_is_written_only_when_flushed(tmp_path: Path) -> None:
    path = tmp_path / "gw.snapshot"
    writer, reader = SnapshotWriter(str(path)), SnapshotReader(str(path))
    first = configs(20)
    assert writer.advance(first) is None  # the first generation: whole
    assert reader.read(1).configs == first
    changed = msgspec.structs.replace(first[3], timeout=1234)
    added = configs(1, "new")[0]
    second = [*first[:3], changed, *first[4:10], *first[11:], added]  # #3 changed, #10 gone, one added
    delta = writer.advance(second)
    assert delta == Delta(1, [changed, added], [(first[10].service, first[10].request_type, first[10].version)])
    assert delta is not None and delta.put[0] is changed  # the configs themselves, not copies
    assert writer.generation == 2 and writer.written == 1
    assert reader.read(1).generation == 1  # the file still holds generation 1, whole
    assert writer.advance(list(second)) == Delta(2, [], [])  # nothing changed: an empty delta
    assert writer.flush() == 3 == writer.written
    snap = reader.read(3)
    assert (snap.generation, snap.configs) == (3, second)
    assert writer.flush() == 3  # already written: not again
    assert writer.publish(list(second)) == 4 == writer.written  # publish writes, even when nothing changed
    assert reader.read(4).configs == second
    writer.close()


def test_a_large_change_is_written_whole(tmp_path: Path) -> None:
    path = tmp_path / "gw.snapshot"
    writer = SnapshotWriter(str(path))
    writer.advance(configs(10))
    gone = [(c.service, c.request_type, c.version) for c in configs(10)]
    assert writer.advance(configs(10, "b"), max_delta=20) == Delta(1, configs(10, "b"), gone)  # 20 changes
    assert writer.written == 1
    assert writer.advance(configs(10, "c"), max_delta=19) is None  # 20 changes: over the bound
    assert writer.written == 3
    assert SnapshotReader(str(path)).read(3).configs == configs(10, "c")
    writer.close()


def test_advance_keys_looks_only_at_the_keys_given(tmp_path: Path) -> None:
    path = tmp_path / "gw.snapshot"
    writer = SnapshotWriter(str(path))
    held = {(c.service, c.request_type, c.version): c for c in configs(6)}
    writer.advance(list(held.values()))
    keys = list(held)
    changed = msgspec.structs.replace(held[keys[1]], timeout=700)
    held[keys[1]] = changed
    del held[keys[2]]
    # keys[0] named but the same object: not a change; keys[5] changed but not named: not seen
    held[keys[5]] = msgspec.structs.replace(held[keys[5]], timeout=900)
    assert writer.advance_keys([keys[0], keys[1], keys[2], ("svc", "none", None)], held.get) == Delta(
        1, [changed], [keys[2]]
    )
    assert writer.flush() == 2
    on_file = SnapshotReader(str(path)).read(2).configs
    assert sorted(on_file, key=repr) == sorted(
        [held[k] for k in keys if k not in (keys[2], keys[5])] + [configs(6)[5]], key=repr
    )
    writer.close()
