"""The shared-memory rate-limit table (genapi._core.ratelimit): the reference's sliding log,
exact across processes, bounded, and usable after a holder of a shard lock is killed."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genapi._core.ratelimit import Table, key_hash, unlink

WINDOW = 1000


@pytest.fixture
def path() -> Iterator[str]:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix="genapi-rl-", dir=base) as d:
        yield os.path.join(d, "table")


@pytest.fixture
def table(path: str) -> Iterator[Table]:
    t = Table.create(path, slots=1024, ring=100, shards=8)
    yield t
    t.close()


def _child(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _together(children: list[subprocess.Popen[str]]) -> list[int]:
    """Lets children that printed "ready" go at the same moment; what each printed last."""
    for c in children:
        assert c.stdout is not None and c.stdout.readline() == "ready\n"
    for c in children:
        assert c.stdin is not None
        c.stdin.write("go\n")
        c.stdin.flush()
    return [int(c.communicate(timeout=60)[0]) for c in children]


def test_admits_exactly_max_then_refuses_with_retry_after(table: Table) -> None:
    results = [table.check(b"user_id:alice", 0, 5, WINDOW, now_ms=10_000 + i) for i in range(5)]
    assert results == [0] * 5
    # the 6th: refused until the first admission (10 000) leaves (10 000 - 1000, now]
    assert table.check(b"user_id:alice", 0, 5, WINDOW, now_ms=10_004) == -(10_000 + WINDOW - 10_004)
    assert table.check(b"user_id:alice", 0, 5, WINDOW, now_ms=10_999) == -1
    assert table.status(b"user_id:alice", 0, 5, WINDOW, now_ms=10_999)["used"] == 5  # refusals not counted


def test_window_slides_admissions_leave_one_by_one(table: Table) -> None:
    for t in (0, 100, 200):
        assert table.check("k", 0, 3, WINDOW, now_ms=t) == 0
    assert table.check("k", 0, 3, WINDOW, now_ms=999) == -1
    assert table.check("k", 0, 3, WINDOW, now_ms=1000) == 0  # 0 left the window: one fits
    assert table.check("k", 0, 3, WINDOW, now_ms=1000) == -100  # next out is 100, at 1100
    assert table.check("k", 0, 3, WINDOW, now_ms=1099) == -1
    assert table.check("k", 0, 3, WINDOW, now_ms=1100) == 0
    assert table.check("k", 0, 3, WINDOW, now_ms=1150) == -50
    # long after: the whole window is free again
    assert table.check("k", 0, 3, WINDOW, now_ms=5000) == 0
    assert table.status("k", 0, 3, WINDOW, now_ms=5000) == {"used": 1, "remaining": 2, "resets_in_ms": 1000}


def test_a_smaller_limit_on_the_same_ring_counts_only_the_last_max(table: Table) -> None:
    """The ring keeps the last `ring` admissions, so the limit can change between checks."""
    for t in range(10):
        assert table.check("k", 0, 20, WINDOW, now_ms=t) == 0
    assert table.check("k", 0, 5, WINDOW, now_ms=10) == -(5 + WINDOW - 10)  # 5th most recent: 5
    assert table.check("k", 0, 11, WINDOW, now_ms=10) == 0


def test_keys_and_limit_ids_count_separately(table: Table) -> None:
    assert table.check(b"user_id:a", 0, 1, WINDOW, now_ms=1) == 0
    assert table.check(b"user_id:a", 0, 1, WINDOW, now_ms=1) < 0
    assert table.check(b"user_id:b", 0, 1, WINDOW, now_ms=1) == 0
    assert table.check(b"user_id:a", 7, 1, WINDOW, now_ms=1) == 0  # another limit on the same key
    assert table.check("user_id:a", 0, 1, WINDOW, now_ms=1) < 0  # str and its utf-8 bytes: one key
    h = key_hash("user_id:a")
    assert table.check_hash(h, 0, 1, WINDOW, 1) < 0  # the hash counts the same slot
    assert table.check_hash(h, 9, 1, WINDOW, 1) == 0
    assert table.stats()["used_slots"] == 4


def test_bad_arguments_are_refused_naming_the_value(table: Table) -> None:
    with pytest.raises(ValueError, match=r"max_requests 101 exceeds the table's ring 100"):
        table.check("k", 0, 101, WINDOW)
    with pytest.raises(ValueError, match=r"max_requests must be >= 1, got 0"):
        table.check("k", 0, 0, WINDOW)
    with pytest.raises(ValueError, match=r"window_ms must be >= 1, got 0"):
        table.check_hash(1, 0, 1, 0)
    assert table.check("k", 0, 100, WINDOW, now_ms=1) == 0  # max == ring is fine
    table.close()
    with pytest.raises(ValueError, match="closed"):
        table.check("k", 0, 1, WINDOW)


def test_create_refuses_bad_geometry(path: str) -> None:
    with pytest.raises(ValueError, match=r"ring must be in 1\.\.\d+, got 0"):
        Table.create(path, ring=0)
    with pytest.raises(ValueError, match=r"slots must be >= shards \(64\), got 10"):
        Table.create(path, slots=10)
    free = os.statvfs(os.path.dirname(path)).f_bavail * os.statvfs(os.path.dirname(path)).f_frsize
    slots = free // 8000 + 64  # rings of 1000 u64: more than is free
    with pytest.raises(
        ValueError, match=rf"rate-limit table of \d+ bytes \(slots={slots}, ring=1000\) exceeds the \d+ bytes free"
    ):
        Table.create(path, slots=slots, ring=1000)
    assert not os.path.exists(path)


def test_status_reset_clear_stats(table: Table) -> None:
    assert table.status("k", 0, 3, WINDOW, now_ms=0) == {"used": 0, "remaining": 3, "resets_in_ms": 0}
    assert table.stats()["used_slots"] == 0  # status does not create a slot
    table.check("k", 0, 3, WINDOW, now_ms=100)
    table.check("k", 0, 3, WINDOW, now_ms=300)
    table.check("k", 1, 3, WINDOW, now_ms=300)
    table.check("other", 0, 3, WINDOW, now_ms=300)
    assert table.status("k", 0, 3, WINDOW, now_ms=400) == {"used": 2, "remaining": 1, "resets_in_ms": 700}
    assert table.status("k", 0, 3, WINDOW, now_ms=1200) == {"used": 1, "remaining": 2, "resets_in_ms": 100}
    assert table.stats() == {"slots": 1024, "used_slots": 3, "evictions": 0, "lock_steals": 0}
    assert table.reset("k", 1) == 1
    assert table.reset("k", 1) == 0
    assert table.status("k", 0, 3, WINDOW, now_ms=400)["used"] == 2
    table.check("k", 1, 3, WINDOW, now_ms=300)
    assert table.reset("k") == 2  # every limit of the key
    assert table.status("k", 0, 3, WINDOW, now_ms=400)["used"] == 0
    assert table.status("other", 0, 3, WINDOW, now_ms=400)["used"] == 1
    assert table.stats()["used_slots"] == 1
    table.clear()
    assert table.status("other", 0, 3, WINDOW, now_ms=400)["used"] == 0
    assert table.stats()["used_slots"] == 0
    assert table.check("other", 0, 3, WINDOW, now_ms=400) == 0


def test_full_table_evicts_the_idlest_key(path: str) -> None:
    table = Table.create(path, slots=4, ring=4, shards=1)  # one shard of 4: every key probes all
    for i, key in enumerate(["a", "b", "c", "d"]):
        table.check(key, 0, 1, WINDOW, now_ms=100 + i)
    table.check("a", 0, 2, WINDOW, now_ms=200)  # "a" is busy again: "b" is now the idlest
    assert table.stats() == {"slots": 4, "used_slots": 4, "evictions": 0, "lock_steals": 0}
    assert table.check("e", 0, 1, WINDOW, now_ms=300) == 0
    assert table.stats()["evictions"] == 1
    assert table.stats()["used_slots"] == 4
    assert table.status("b", 0, 1, WINDOW, now_ms=300)["used"] == 0  # forgotten
    for key in ("a", "c", "d", "e"):
        assert table.check(key, 0, 1, WINDOW, now_ms=300) < 0, key  # kept
    table.close()


def test_two_processes_on_one_key_admit_exactly_max(path: str) -> None:
    limit = 1_500_000
    table = Table.create(path, slots=1024, ring=limit, shards=4)
    code = """
        import sys
        from genapi._core.ratelimit import Table, key_hash
        t = Table.open(sys.argv[1])
        print("ready", flush=True)
        sys.stdin.readline()
        print(t._check_loop(key_hash("user_id:hot"), 3, int(sys.argv[2]), 3_600_000, 2_000_000), flush=True)
    """
    children = [_child(code, path, str(limit)) for _ in range(2)]
    admitted = _together(children)
    assert sum(admitted) == limit, admitted
    assert table.status("user_id:hot", 3, limit, 3_600_000)["used"] == limit
    assert table.check("user_id:hot", 3, limit, 3_600_000) < 0
    table.close()


def test_lock_of_a_killed_holder_is_stolen(table: Table, path: str) -> None:
    code = """
        import sys, time
        from genapi._core.ratelimit import Table
        t = Table.open(sys.argv[1])
        t._hold_lock(b"user_id:alice")
        print("held", flush=True)
        time.sleep(60)
    """
    child = _child(code, path)
    assert child.stdout is not None and child.stdout.readline() == "held\n"
    child.send_signal(signal.SIGKILL)
    child.wait()  # reaped: kill(pid, 0) now says ESRCH
    assert table.check(b"user_id:alice", 0, 2, WINDOW, now_ms=1) == 0
    assert table.stats()["lock_steals"] == 1
    assert table.check(b"user_id:alice", 0, 2, WINDOW, now_ms=1) == 0  # the lock was released after
    assert table.check(b"user_id:alice", 0, 2, WINDOW, now_ms=1) == -WINDOW
    assert table.stats()["lock_steals"] == 1


def test_forked_child_takes_locks_under_its_own_pid(path: str) -> None:
    """A child forked from a process that had the table open must not lock in its parent's
    name (the parent is alive: such a lock would never be stolen)."""
    code = """
        import os, sys
        from genapi._core.ratelimit import Table
        t = Table.create(sys.argv[1], slots=64, ring=4, shards=1)
        pid = os.fork()
        if pid == 0:
            t._hold_lock("k")
            os._exit(0)
        os.waitpid(pid, 0)
        print(t.check("k", 0, 1, 1000, now_ms=1), t.stats()["lock_steals"], flush=True)
    """
    out, err = _child(code, path).communicate(timeout=30)
    assert out.split() == ["0", "1"], err


def test_open_refuses_what_is_not_a_table(path: str) -> None:
    with open(path, "wb") as f:
        f.write(b"\x00" * 10)
    with pytest.raises(ValueError, match="not a rate-limit table"):
        Table.open(path)
    with open(path, "wb") as f:
        f.write(os.urandom(8192))
    with pytest.raises(ValueError, match="not a rate-limit table"):
        Table.open(path)
    Table.create(path, slots=64, ring=4, shards=4).close()
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) - 64)
    with pytest.raises(ValueError, match="inconsistent with its size"):
        Table.open(path)


def test_create_replaces_and_unlink_removes(path: str) -> None:
    first = Table.create(path, slots=64, ring=4, shards=4)
    first.check("k", 0, 1, WINDOW, now_ms=1)
    second = Table.create(path, slots=64, ring=4, shards=4)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert second.check("k", 0, 1, WINDOW, now_ms=1) == 0  # a fresh table
    assert Table.open(path).status("k", 0, 1, WINDOW, now_ms=1)["used"] == 1
    assert first.check("k", 0, 1, WINDOW, now_ms=1) < 0  # the old mapping is still its own
    unlink(path)
    assert not os.path.exists(path)
    unlink(path)  # already gone: fine
    first.close()
    second.close()


def test_check_many_counts_only_if_every_limit_admits(table: Table) -> None:
    user, api = (b"user_id:bob", 0, 3, WINDOW), (b"user_id:bob|svc.op", 1, 2, 500)
    assert table.check_many([user, api], now_ms=0) == (0, -1)
    assert table.check_many([user, api], now_ms=10) == (0, -1)
    # the per-API limit (2 per 500 ms) refuses: the global one is not counted either
    assert table.check_many([user, api], now_ms=20) == (-480, 1)
    assert table.status(b"user_id:bob", 0, 3, WINDOW, now_ms=20)["used"] == 2
    assert table.check_many([user], now_ms=30) == (0, -1)
    # both refuse: the one that frees last is named (global: 0 leaves at 1000)
    assert table.check_many([api, user], now_ms=40) == (-960, 1)
    assert table.check_many([user, api], now_ms=1000) == (0, -1)
    assert table.status(b"user_id:bob|svc.op", 1, 2, 500, now_ms=1000)["used"] == 1
    assert table.check_many([], now_ms=0) == (0, -1)
    with pytest.raises(ValueError, match="at most 16 limits, got 17"):
        table.check_many([user] * 17)
    with pytest.raises(ValueError, match="exceeds the table's ring 100"):
        table.check_many([user, (b"k", 0, 101, 1)])


def test_check_many_in_two_processes_neither_deadlocks_nor_overadmits(path: str) -> None:
    """Two processes, each with the same two limits listed in opposite orders: the shards are
    locked in one order by both, and each key admits exactly its max."""
    table = Table.create(path, slots=1024, ring=30_000, shards=64)
    code = """
        import sys
        from genapi._core.ratelimit import Table
        t = Table.open(sys.argv[1])
        limits = [(f"user_id:{i}", 0, 30_000, 3_600_000) for i in range(4)]
        if sys.argv[2] == "1":
            limits.reverse()
        print("ready", flush=True)
        sys.stdin.readline()
        print(sum(t.check_many(limits)[0] == 0 for _ in range(40_000)), flush=True)
    """
    children = [_child(code, path, str(i)) for i in range(2)]
    admitted = _together(children)
    assert sum(admitted) == 30_000, admitted
    for i in range(4):
        assert table.status(f"user_id:{i}", 0, 30_000, 3_600_000)["used"] == 30_000
    table.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 1), st.integers(1, 4), st.integers(1, 50), st.integers(0, 20)),
        max_size=200,
    )
)
def test_matches_the_reference_sliding_log(path: str, calls: list[tuple[int, int, int, int, int]]) -> None:
    """Any sequence of checks (keys, limit ids, and max/window that vary from call to call, the
    ring of 4 wrapping) decides and answers exactly as the reference's log of timestamps. (The
    table is created anew for each example: `path` only names the file.)"""
    table = Table.create(path, slots=64, ring=4, shards=2)
    log: dict[tuple[int, int], list[int]] = {}
    now = 0
    for key, limit_id, max_requests, window, step in calls:
        now += step
        admitted = log.setdefault((key, limit_id), [])
        inside = [t for t in admitted if now - window < t <= now]
        expected = 0 if len(inside) < max_requests else -(inside[-max_requests] + window - now)
        assert table.check(f"k{key}", limit_id, max_requests, window, now_ms=now) == expected
        if expected == 0:
            admitted.append(now)
    table.close()
