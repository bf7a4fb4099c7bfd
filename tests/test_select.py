"""Node selection (`Selector.order`) and per-node protection (`NodeState`) in genapi._core.select."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from typing import Any

import pytest

from genapi._core.select import ADMITTED, FULL, OPEN, NodeState, Selector
from genapi.structs import Request

ADDRS = ["10.0.0.1:7001", "10.0.0.2:7001", "10.0.0.3:7001", "10.0.0.4:7001"]


def nodes(addrs: list[str] = ADDRS) -> list[NodeState]:
    return [NodeState(a) for a in addrs]


def req(request_id: str = "r1", **args: Any) -> Request:
    return Request(request_id=request_id, service="s", request_type="t", args=args)


def addrs(order: list[Any]) -> list[str]:
    return [n.address for n in order]


def assert_ring(order: list[Any], pool: list[Any]) -> None:
    """Every node exactly once, the first one chosen, the rest following it in ring order."""
    assert len(order) == len(pool)
    first = pool.index(order[0])
    assert order == pool[first:] + pool[:first]


# ---- Selector: the order of each mode


@pytest.mark.parametrize("mode", ["random", "hash", "round_robin", {"hash": "user"}, {"sticky": "user"}])
def test_order_is_a_new_ring_of_every_node(mode: Any) -> None:
    pool = nodes()
    before = list(pool)
    sel = Selector(mode)
    for i in range(50):
        order = sel.order(pool, req(f"r{i}", user=f"u{i % 7}"))
        assert order is not pool
        assert_ring(order, pool)
    assert pool == before


def test_order_takes_any_object_with_an_address() -> None:
    class Node:
        def __init__(self, address: str) -> None:
            self.address = address

    pool = [Node(a) for a in ADDRS]
    for mode in ("random", "hash", "round_robin", {"sticky": "user"}):
        assert_ring(Selector(mode).order(pool, req(user="u")), pool)


def test_single_node() -> None:
    pool = nodes(ADDRS[:1])
    for mode in ("random", "hash", "round_robin", {"hash": "user"}, {"sticky": "user"}):
        assert Selector(mode).order(pool, req(user="u")) == pool


def test_hash_is_stable_per_request_id_and_spreads_evenly() -> None:
    pool = nodes()
    sel = Selector("hash")
    firsts = {f"req-{i}": sel.order(pool, req(f"req-{i}"))[0].address for i in range(4000)}
    again = Selector("hash")
    assert all(again.order(pool, req(rid))[0].address == a for rid, a in firsts.items())
    counts = collections.Counter(firsts.values())
    assert set(counts) == set(ADDRS)
    assert all(800 < c < 1200 for c in counts.values()), counts  # 1000 each if even


def test_hash_arg_follows_the_argument_not_the_request_id() -> None:
    pool = nodes()
    sel = Selector({"hash": "user"})
    for u in range(200):
        picks = {sel.order(pool, req(f"r{u}-{i}", user=f"user-{u}"))[0].address for i in range(5)}
        assert len(picks) == 1
    spread = collections.Counter(sel.order(pool, req("same", user=f"user-{u}"))[0].address for u in range(4000))
    assert all(800 < c < 1200 for c in spread.values()), spread


def test_hash_arg_value_forms() -> None:
    """A str hashes as its UTF-8; any other value as its compact JSON with sorted keys."""
    pool = nodes([f"10.0.{i // 250}.{i % 250}:7001" for i in range(1000)])  # a chance match is unlikely
    sel = Selector({"hash": "k"})

    def first(value: Any) -> str:
        return sel.order(pool, req("rid", k=value))[0].address

    assert first(12345) == first("12345")
    assert first(True) == first("true")
    assert first(1.5) == first("1.5")
    assert first([1, "a"]) == first('[1,"a"]')
    assert first({"b": 1, "a": 2}) == first({"a": 2, "b": 1}) == first('{"a":2,"b":1}')
    assert len({first(v) for v in ("a", "b", "c", "d", 1, 2, 3)}) > 4


def test_hash_arg_missing_or_null_hashes_the_request_id() -> None:
    pool = nodes()
    by_arg = Selector({"hash": "user"})
    by_id = Selector("hash")
    for i in range(100):
        expected = by_id.order(pool, req(f"r{i}"))
        assert by_arg.order(pool, req(f"r{i}")) == expected
        assert by_arg.order(pool, req(f"r{i}", user=None)) == expected
        assert by_arg.order(pool, req(f"r{i}", other="x")) == expected


def test_hash_is_stable_across_processes() -> None:
    keys = [f"key-{i}" for i in range(50)]
    pool = nodes()
    here = {
        "id": [addrs(Selector("hash").order(pool, req(k)))[0] for k in keys],
        "arg": [addrs(Selector({"hash": "u"}).order(pool, req("x", u=k)))[0] for k in keys],
    }
    code = f"""
import json
from genapi._core.select import NodeState, Selector
from genapi.structs import Request
pool = [NodeState(a) for a in {ADDRS!r}]
keys = {keys!r}
def req(rid, **args):
    return Request(request_id=rid, service="s", request_type="t", args=args)
print(json.dumps({{
    "id": [Selector("hash").order(pool, req(k))[0].address for k in keys],
    "arg": [Selector({{"hash": "u"}}).order(pool, req("x", u=k))[0].address for k in keys],
}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout) == here
    assert len(set(here["id"])) > 1  # not trivially stable


def test_round_robin_cycles_evenly() -> None:
    pool = nodes(ADDRS[:3])
    sel = Selector("round_robin")
    firsts = [sel.order(pool, req(f"r{i}"))[0].address for i in range(300)]
    assert collections.Counter(firsts) == {a: 100 for a in ADDRS[:3]}
    assert firsts[:6] == ADDRS[:3] * 2


def test_random_is_roughly_even() -> None:
    pool = nodes(ADDRS[:3])
    sel = Selector("random")
    counts = collections.Counter(sel.order(pool, req("same"))[0].address for _ in range(3000))
    assert set(counts) == set(ADDRS[:3])
    assert all(c > 600 for c in counts.values()), counts


def test_sticky_keeps_a_key_on_its_node_while_it_stays() -> None:
    pool = nodes()
    sel = Selector({"sticky": "user"})
    first = {u: sel.order(pool, req(f"a{u}", user=f"user-{u}"))[0].address for u in range(40)}
    assert sel.sticky_size == 40
    # the node list changes order and grows: the remembered address still wins
    grown = nodes([*reversed(ADDRS), "10.0.0.5:7001"])
    for u in range(40):
        order = sel.order(grown, req(f"b{u}", user=f"user-{u}"))
        assert order[0].address == first[u]
        assert_ring(order, grown)


def test_sticky_repicks_when_the_node_leaves() -> None:
    sel = Selector({"sticky": "user"})
    pool = nodes()
    gone = sel.order(pool, req("r1", user="alice"))[0].address
    remaining = [n for n in pool if n.address != gone]
    new = sel.order(remaining, req("r2", user="alice"))[0].address
    assert new != gone
    # remembered: the new node stays even when the old one comes back
    for i in range(10):
        assert sel.order(pool, req(f"r{i + 3}", user="alice"))[0].address == new
    assert sel.sticky_size == 1


def test_sticky_missing_key_hashes_the_request_id_and_remembers_nothing() -> None:
    pool = nodes()
    sel = Selector({"sticky": "user"})
    by_id = Selector("hash")
    for i in range(50):
        assert sel.order(pool, req(f"r{i}")) == by_id.order(pool, req(f"r{i}"))
    assert sel.sticky_size == 0


def test_sticky_table_is_bounded() -> None:
    pool = nodes()
    sel = Selector({"sticky": "user"}, sticky_max=10)
    for u in range(1000):
        sel.order(pool, req(f"r{u}", user=f"user-{u}"))
        assert sel.sticky_size <= 10
    # the newest key is still remembered: it survives its node leaving and coming back
    newest = sel.order(pool, req("x", user="user-999"))[0].address
    moved = sel.order([n for n in pool if n.address != newest], req("y", user="user-999"))[0].address
    assert sel.order(pool, req("z", user="user-999"))[0].address == moved


# ---- Selector: custom


def test_custom_returning_an_address() -> None:
    pool = nodes()
    seen: list[tuple[list[str], str]] = []

    def pick(addresses: list[str], request: Request) -> str:
        seen.append((addresses, request.request_id))
        return addresses[2]

    order = Selector("custom", pick).order(pool, req("r9"))
    assert order == pool[2:] + pool[:2]
    assert seen == [(ADDRS, "r9")]


def test_custom_returning_a_list() -> None:
    pool = nodes()

    def pick(addresses: list[str], request: Request) -> list[str]:
        return ["nowhere:1", ADDRS[2], ADDRS[0], ADDRS[2]]  # unknown and repeated ones dropped

    order = Selector("custom", pick).order(pool, req())
    # the listed ones in its order, then those it left out, in ring order after its first
    assert addrs(order) == [ADDRS[2], ADDRS[0], ADDRS[3], ADDRS[1]]


@pytest.mark.parametrize("result", [None, 42, "nowhere:1", ["nowhere:1", 7], [], {"a": 1}])
def test_custom_returning_garbage_falls_back_to_random_and_warns_once(result: Any, warnings: list[str]) -> None:
    pool = nodes()
    sel = Selector("custom", lambda addresses, request: result)
    firsts = collections.Counter(sel.order(pool, req())[0].address for _ in range(400))
    assert set(firsts) == set(ADDRS)  # random, not stuck on one node
    failed = [w for w in warnings if w.startswith("node_selector_failed")]
    assert len(failed) == 1
    assert "fallback=random" in failed[0]


def test_custom_raising_falls_back_to_random_and_warns_once(warnings: list[str]) -> None:
    pool = nodes()

    def pick(addresses: list[str], request: Request) -> str:
        raise RuntimeError("resolver down")

    sel = Selector("custom", pick)
    for _ in range(20):
        assert_ring(sel.order(pool, req()), pool)
    failed = [w for w in warnings if w.startswith("node_selector_failed")]
    assert len(failed) == 1
    assert "resolver down" in failed[0] and "RuntimeError" in failed[0]
    # another Selector warns on its own
    Selector("custom", pick).order(pool, req())
    assert len([w for w in warnings if w.startswith("node_selector_failed")]) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("sometimes",), "choose_node_mode: must be one of"),
        (({"hash": ""},), "choose_node_mode: must be one of"),
        (({"hash": "a", "sticky": "b"},), "choose_node_mode: must be one of"),
        (({"shard": "a"},), "choose_node_mode: must be one of"),
        (("custom",), "custom: choose_node_mode custom needs the selector function"),
        (("custom", "not callable"), "custom: choose_node_mode custom needs the selector function"),
        (("hash", len), "custom: a selector function is only used with choose_node_mode custom"),
    ],
)
def test_selector_refuses_bad_settings(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Selector(*args)
    with pytest.raises(ValueError, match="sticky_max: must be at least 1, not 0"):
        Selector({"sticky": "u"}, sticky_max=0)


def test_order_refuses_no_nodes() -> None:
    with pytest.raises(ValueError, match="nodes: must be a non-empty list"):
        Selector("random").order([], req())


def test_selector_mode_round_trips() -> None:
    for mode in ("random", "hash", "round_robin", {"hash": "u"}, {"sticky": "u"}):
        assert Selector(mode).mode == mode
    assert Selector("custom", len).mode == "custom"


# ---- NodeState


def test_admit_bounds_calls_in_flight() -> None:
    node = NodeState("h:1", max_in_flight=3)
    assert [node.admit(0.0) for _ in range(4)] == [ADMITTED, ADMITTED, ADMITTED, FULL]
    assert node.in_flight == 3
    node.done(False, 1.0)
    assert node.in_flight == 2
    assert node.admit(1.0) == ADMITTED
    assert node.admit(1.0) == FULL
    assert (ADMITTED, FULL, OPEN) == (0, 1, 2)


def test_breaker_opens_after_threshold_node_failures() -> None:
    node = NodeState("h:1", threshold=3, cooldown_ms=10_000)
    for i in range(2):
        assert node.admit(float(i)) == ADMITTED
        node.done(True, float(i))
    assert (node.state, node.failures) == ("closed", 2)
    assert node.admit(2.0) == ADMITTED
    node.done(True, 2.0)
    assert (node.state, node.failures, node.in_flight) == ("open", 3, 0)
    assert node.admit(2.5) == OPEN
    assert node.admit(11.999) == OPEN  # still within the 10 s cooldown
    assert node.in_flight == 0


def test_failures_are_consecutive() -> None:
    node = NodeState("h:1", threshold=3)
    for outcome in [True, True, False, True, True, False, True, True]:
        node.admit(0.0)
        node.done(outcome, 0.0)
    assert (node.state, node.failures) == ("closed", 2)


def test_function_errors_never_open_the_breaker() -> None:
    node = NodeState("h:1", threshold=2)
    for i in range(100):
        assert node.admit(float(i)) == ADMITTED
        node.done(False, float(i))  # the node answered (a result or the function's own error)
    assert (node.state, node.failures) == ("closed", 0)


def _opened(threshold: int = 2, cooldown_ms: float = 5000, at: float = 100.0) -> NodeState:
    node = NodeState("h:1", threshold=threshold, cooldown_ms=cooldown_ms)
    for _ in range(threshold):
        node.admit(at)
        node.done(True, at)
    assert node.state == "open"
    return node


def test_half_open_admits_one_probe() -> None:
    node = _opened(cooldown_ms=5000, at=100.0)
    assert node.admit(104.9) == OPEN
    assert node.admit(105.0) == ADMITTED  # cooldown over: the probe
    assert node.state == "half_open"
    assert [node.admit(105.0 + i) for i in range(5)] == [OPEN] * 5  # until the probe is done
    assert node.in_flight == 1


def test_probe_success_closes_the_breaker() -> None:
    node = _opened()
    assert node.admit(200.0) == ADMITTED
    node.done(False, 200.1)
    assert (node.state, node.failures, node.in_flight) == ("closed", 0, 0)
    assert [node.admit(200.2) for _ in range(3)] == [ADMITTED] * 3


def test_probe_failure_reopens_for_a_new_cooldown() -> None:
    node = _opened(cooldown_ms=5000, at=100.0)
    assert node.admit(200.0) == ADMITTED
    node.done(True, 201.0)
    assert node.state == "open"
    assert node.admit(205.9) == OPEN  # the new cooldown counts from the probe's failure
    assert node.admit(206.0) == ADMITTED
    assert node.state == "half_open"


def test_forget_releases_the_slot_and_leaves_the_breaker() -> None:
    node = NodeState("h:1", max_in_flight=1, threshold=1)
    assert node.admit(0.0) == ADMITTED
    assert node.admit(0.0) == FULL
    node.forget()
    assert (node.in_flight, node.state, node.failures) == (0, "closed", 0)
    assert node.admit(0.0) == ADMITTED
    # a forgotten probe lets another call probe
    node.done(True, 1.0)
    assert node.state == "open"
    assert node.admit(100.0) == ADMITTED
    assert node.admit(100.0) == OPEN
    node.forget()
    assert node.state == "half_open"
    assert node.admit(100.0) == ADMITTED


def test_calls_ending_while_open_leave_the_breaker_open() -> None:
    node = NodeState("h:1", threshold=2, cooldown_ms=5000)
    for _ in range(3):
        node.admit(0.0)
    node.done(True, 0.0)
    node.done(True, 0.0)
    assert node.state == "open"
    node.done(False, 1.0)  # admitted before the breaker opened
    assert (node.state, node.in_flight) == ("open", 0)
    assert node.admit(1.0) == OPEN


def test_snapshot() -> None:
    node = NodeState("10.0.0.1:7001", threshold=1)
    node.admit(0.0)
    assert node.snapshot() == {
        "address": "10.0.0.1:7001",
        "state": "closed",
        "in_flight": 1,
        "failures": 0,
        "opened_ms_ago": None,
    }
    node.done(True, 50.0)
    assert node.snapshot(now=50.25) == {
        "address": "10.0.0.1:7001",
        "state": "open",
        "in_flight": 0,
        "failures": 1,
        "opened_ms_ago": 250,
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"address": ""}, "address: must be a non-empty host:port"),
        ({"max_in_flight": 0}, "max_in_flight: must be at least 1, not 0"),
        ({"threshold": 0}, "threshold: must be at least 1, not 0"),
        ({"cooldown_ms": -1}, "cooldown_ms: must be a non-negative number of ms, not -1"),
    ],
)
def test_node_state_refuses_bad_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NodeState(**{"address": "h:1", **kwargs})
