"""Hostile and broken clients, seeded: a real gateway (the demo functions, tight limits, info
logs) takes a few thousand fuzz inputs over several connections at once (tests/support/fuzzgen.py: bad
JSON and UTF-8, wrong shapes and types, odd refs, deep nesting, control characters in every
string, edge numbers, unknown events, joins and leaves, heartbeats, binary frames, pings,
fragmented messages, odd handshakes), then every kind of connection-ending protocol violation.
One campaign runs per module; each test checks one invariant of it.

The longer run (a million inputs and more) is benchmarks/fuzz_run.py.
"""

from __future__ import annotations

import asyncio
import os
import re

import pytest

from support.fuzzgen import VALID_CLOSE_CODES, FuzzGen, Stats, campaign, gateway_config, terminal_sweep
from support.gateway_proc import GatewayProcess
from support.rawclient import Raw, request

SEED = int(os.environ.get("GENAPI_FUZZ_SEED", "20240601"))
INPUTS = int(os.environ.get("GENAPI_FUZZ_INPUTS", "6000"))
CONNECTIONS = 6
LIMITS = dict(max_payload_bytes=16384, max_channels=20, max_in_flight=8, max_queued=64, log_level="info")

# invariants checked by test_requests_answered_exactly_once
ANSWERED = [
    "request",
    "odd_ref",
    "control",
    "unmatched_topic",
    "binary",
    "heartbeat",
    "ping",
    "extra_reply",
    "server_frame",
    "connection",
    "handshake",
]
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S")


class Outcome:
    def __init__(
        self, stats: Stats, pid_before: int, pid_after: int, alive: bool, echo: tuple[object, object], stderr: str
    ) -> None:
        self.stats = stats
        self.pid_before = pid_before
        self.pid_after = pid_after
        self.alive = alive
        self.echo = echo
        self.stderr = stderr

    def violations(self, *categories: str) -> list[tuple[str, str]]:
        return [v for v in self.stats.violations if v[0] in categories]

    def counts(self, *categories: str) -> dict[str, int]:
        return {c: self.stats.violation_counts[c] for c in categories if self.stats.violation_counts[c]}


async def _echo(url: str) -> tuple[object, object]:
    c = await Raw.connect(url)
    try:
        await c.join("api:after-fuzz")
        c.send(["1", "2", "api:after-fuzz", "phoenix_gen_api", request("final", "echo", {"text": "still here"})])
        push, reply = await c.recv_n(2, timeout=10)
        return push, reply
    finally:
        await c.close()


@pytest.fixture(scope="module")
def outcome() -> Outcome:
    gw = GatewayProcess(gateway_config(**LIMITS))
    try:
        pid = gw.pid
        stats = Stats()

        async def run() -> tuple[object, object]:
            await campaign(
                gw.url,
                seed=SEED,
                inputs=INPUTS,
                connections=CONNECTIONS,
                max_channels=20,
                max_payload=16384,
                per_connection=(300, 1500),
                stats=stats,
                grace=2.0,
            )
            await terminal_sweep(gw.url, FuzzGen(SEED + 1, max_channels=20, max_payload=16384), stats)
            return await _echo(gw.url)

        echo = asyncio.run(run())
        alive = gw.alive()
        return Outcome(stats, pid, gw.pid, alive, echo, gw.read_stderr())
    finally:
        gw.stop()


def test_fuzz_campaign_ran(outcome: Outcome) -> None:
    s = outcome.stats
    assert s.inputs >= INPUTS
    assert s.expected["request"] > INPUTS // 5 and s.replies > INPUTS // 2
    for kind in ("malformed", "corrupt", "odd_ref", "deep", "binary", "fragmented", "join", "leave", "ping"):
        assert s.kinds[kind] > 0, kind


def test_worker_survives_and_still_answers(outcome: Outcome) -> None:
    assert outcome.alive and outcome.pid_after == outcome.pid_before
    push, reply = outcome.echo
    assert push == [
        "1",
        None,
        "api:after-fuzz",
        "phoenix_gen_api",
        {
            "kind": "answer",
            "request_id": "final",
            "result": {"text": "still here", "n": 1},
            "success": True,
            "error": None,
            "async": False,
            "has_more": False,
            "can_retry": False,
        },
    ]
    assert reply == ["1", "2", "api:after-fuzz", "phx_reply", {"status": "ok", "response": "echo"}]


def test_requests_answered_exactly_once(outcome: Outcome) -> None:
    """Every frame that decodes to a request on a joined topic (and every heartbeat, join, leave,
    unknown event, push on an unjoined topic, binary push, ping) gets exactly one answer with
    its ref; no ref gets more answers than frames sent with it."""
    s = outcome.stats
    assert outcome.violations(*ANSWERED) == []
    for cat in ("request", "odd_ref", "control", "heartbeat", "ping"):
        assert s.answered[cat] == s.expected[cat] > 0, cat


def test_queued_requests_with_deeply_nested_refs_are_answered() -> None:
    """Refs nested 960-998 levels deep on requests that wait in the connection's queue (every slot
    held first): each is answered exactly once (push with its request_id, then a phx_reply), the
    requests after them too, and no traceback is logged (the fuzzer found these went unanswered
    and leaked their slots)."""
    import re

    from picows import WSListener, WSMsgType, ws_connect

    gw = GatewayProcess(gateway_config(**LIMITS))
    frames: list[bytes] = []

    class Listener(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport, frame) -> None:  # type: ignore[no-untyped-def]
            if frame.msg_type == WSMsgType.TEXT:
                frames.append(frame.get_payload_as_bytes())

    def req(ref: str, rid: str, rt: str, args: str) -> bytes:
        return (
            f'["1",{ref},"api:deep","phoenix_gen_api",{{"request_id":"{rid}","service":"demo",'
            f'"request_type":"{rt}","args":{args}}}]'
        ).encode()

    depths = list(range(960, 999, 2))

    async def go() -> None:
        t, _ = await ws_connect(Listener, gw.url + "/websocket?vsn=2.0.0", max_frame_size=2**24)
        t.send(WSMsgType.TEXT, b'["1","1","api:deep","phx_join",{}]')
        for i in range(8):
            t.send(WSMsgType.TEXT, req(f'"s{i}"', f"s{i}", "slow_echo", '{"text":"x","delay_ms":100}'))
        for d in depths:
            t.send(WSMsgType.TEXT, req("[" * d + "]" * d, f"d{d}", "echo", '{"text":"x"}'))
        for i in range(8):
            t.send(WSMsgType.TEXT, req(f'"a{i}"', f"a{i}", "echo", '{"text":"x"}'))
        for _ in range(100):
            await asyncio.sleep(0.05)
            if sum(b'"phx_reply"' in f or b"nested too deeply" in f for f in frames) >= 1 + 8 + len(depths) + 8:
                break
        t.disconnect()

    try:
        asyncio.run(go())
        assert gw.alive()
    finally:
        gw.stop()
    pushes = [m.group(1).decode() for f in frames if (m := re.search(rb'"request_id":"([a-z0-9]+)","result"', f))]
    # deeper than the frame decoder goes, the frame itself is refused ("nested too deeply")
    refused = sum(b"nested too deeply" in f for f in frames)
    answered = [d for d in depths if pushes.count(f"d{d}") == 1]
    assert len(answered) + refused == len(depths) and len(answered) >= len(depths) // 2
    assert answered == depths[: len(answered)]  # refused ones are only the deepest
    assert sorted(p for p in pushes if p[0] == "a") == [f"a{i}" for i in range(8)]
    assert sum(b'"phx_reply"' in f for f in frames) == 1 + 8 + len(answered) + 8
    assert "Traceback" not in gw.read_stderr()


def test_heartbeats_answered_while_fuzzing(outcome: Outcome) -> None:
    s = outcome.stats
    assert s.heartbeats > 0 and s.answered["watch_heartbeat"] == s.expected["watch_heartbeat"]
    assert outcome.violations("watch_heartbeat", "heartbeat") == []


def test_no_traceback_in_the_log(outcome: Outcome) -> None:
    assert "Traceback" not in outcome.stderr, outcome.stderr[outcome.stderr.find("Traceback") - 2000 :][:6000]


def test_no_error_line_in_the_log(outcome: Outcome) -> None:
    """A client cannot put an ERROR line in the operator's log, whatever it sends: its protocol
    errors are INFO (picows reports them at ERROR; log.py demotes them), the gateway's own
    failures stay ERROR."""
    errors = [ln for ln in outcome.stderr.splitlines() if (m := LOG_LINE.match(ln)) and m[1] in ("ERROR", "CRITICAL")]
    assert errors == [], errors[:5]


def test_every_log_line_is_one_record(outcome: Outcome) -> None:
    bad = [ln for ln in outcome.stderr.splitlines() if not LOG_LINE.match(ln)]
    assert bad == [], bad[:10]


def test_fragmented_requests_answered(outcome: Outcome) -> None:
    s = outcome.stats
    assert s.expected["fragmented"] > 0
    assert outcome.violations("fragmented") == [] and s.answered["fragmented"] == s.expected["fragmented"]


def test_fragmentation_errors_close_the_connection(outcome: Outcome) -> None:
    assert outcome.counts("orphan_continuation", "interrupted_fragments") == {}, outcome.violations(
        "orphan_continuation", "interrupted_fragments"
    )


def test_rsv_bits_close_the_connection(outcome: Outcome) -> None:
    assert outcome.counts("rsv") == {}, outcome.violations("rsv")


def test_bad_frames_close_the_connection(outcome: Outcome) -> None:
    """Reserved opcodes, unmasked frames, oversized or fragmented control frames, bad lengths,
    frames over the size limit: 1002 (1009 for the size)."""
    assert outcome.counts("bad_frame", "oversize") == {}, outcome.violations("bad_frame", "oversize")
    assert outcome.stats.endings["bad_frame -> 1002"] > 0 and outcome.stats.endings["oversize -> 1009"] > 0


def test_client_close_frames_answered(outcome: Outcome) -> None:
    """A close with a valid code (every one on fuzzgen.VALID_CLOSE_CODES) is answered with that
    code or 1000; an empty close with 1000; a 1-byte close payload with 1002, a reason that is
    not UTF-8 with 1007 or 1002."""
    cats = ("close_valid", "close_empty", "close_malformed")
    assert outcome.counts(*cats) == {}, outcome.violations(*cats)
    assert sum(n for e, n in outcome.stats.endings.items() if e.startswith("close_valid")) >= len(VALID_CLOSE_CODES)


def test_client_close_with_invalid_code_is_a_protocol_error(outcome: Outcome) -> None:
    """RFC 6455 §7.4: codes below 1000, 1004-1006, 1015, 1016-2999 and from 5000 are invalid."""
    assert outcome.counts("close_invalid") == {}, outcome.violations("close_invalid")


def test_no_violations_of_any_kind(outcome: Outcome) -> None:
    """Every category the campaign records (the ones the tests above name, and deep_ref,
    handshake, connection, server_frame and any added later): none is violated once. Refs nested
    960-998 levels deep are each answered, or refused as nested too deeply."""
    s = outcome.stats
    assert {c: n for c, n in s.violation_counts.items() if n} == {}, s.violations
    assert s.violations == []
    assert s.expected["deep_ref"] > 0 and s.answered["deep_ref"] == s.expected["deep_ref"], (
        s.expected["deep_ref"],
        s.answered["deep_ref"],
    )
