"""A pushed service is refreshed by pulls from its nodes; a failed pull is recorded in the
pushed-services status (pull_failures, last_error) and retried with exponential backoff: the
interval between failed attempts doubles from `[cluster] pull_interval_ms`. When the node comes
back a pull succeeds and the record is reset."""

from __future__ import annotations

import time
from typing import Any

from support.gateway_proc import GatewayProcess, free_port
from support.node_proc import NodeProcess, control, wait_pushed

INTERVAL_S = 0.2
CONFIG = f"""
[auth]
require_verified_user_id = false

[cluster]
pull_interval_ms = {int(INTERVAL_S * 1000)}
pull_timeout_ms = 2000
"""
FAILURES = 5  # failed pulls watched: four intervals, 0.4 + 0.8 + 1.6 + 3.2 s with backoff


def status(gw: GatewayProcess) -> dict[str, Any]:
    return control(gw.control, "$pushed")["inv"]


def test_failed_pulls_back_off_and_reset_when_the_node_is_back() -> None:
    address = f"127.0.0.1:{free_port()}"
    nowhere = f"127.0.0.1:{free_port()}"
    with GatewayProcess(CONFIG) as gw:
        with NodeProcess([gw.control], name="first", listen=address) as node:
            wait_pushed(gw.control, "inv", [address], timeout=30)
            deadline = time.monotonic() + 30
            while (status(gw)["pulled_at"] or 0) == 0:  # refreshed by pulls from its node
                assert time.monotonic() < deadline, f"no pull from the pushed node: {status(gw)}"
                time.sleep(0.05)
            assert status(gw)["pull_failures"] == 0
            assert node.stop() == 0
        stopped = time.time()

        seen: dict[int, float] = {}  # failure count -> when the test first saw it
        last: dict[str, Any] = {}
        deadline = time.monotonic() + 60
        while len(seen) < FAILURES:
            assert time.monotonic() < deadline, f"failures seen {seen}: {last}"
            last = status(gw)
            n = last["pull_failures"]
            if 0 < n <= FAILURES and n not in seen:
                seen[n] = time.monotonic()
            time.sleep(0.02)
        assert sorted(seen) == list(range(1, FAILURES + 1))  # one more per attempt, none skipped
        assert last["last_error"], last
        gaps = [seen[n + 1] - seen[n] for n in range(1, FAILURES)]
        # after n failures the next attempt waits INTERVAL_S * 2**n (0.4, 0.8, 1.6, 3.2 s; without
        # backoff each would be 0.2 s). A loaded machine only makes a gap longer; a slow status
        # request can make one look shorter, by at most what the margin allows
        for n, gap in enumerate(gaps, 1):
            assert gap >= INTERVAL_S * 2**n * 0.75 - 0.25, (n, gaps)
        assert seen[FAILURES] - seen[1] >= sum(INTERVAL_S * 2**n for n in range(1, FAILURES)) * 0.75, gaps

        # back on the same address (its pushes go nowhere: only a pull can reset the record)
        with NodeProcess([nowhere], name="second", listen=address):
            deadline = time.monotonic() + 60
            while True:
                now = status(gw)
                if now["pull_failures"] == 0:
                    break
                assert time.monotonic() < deadline, f"failures not reset: {now}"
                time.sleep(0.05)
            assert now["last_error"] is None
            assert now["pulled_at"] > stopped
            assert now["nodes"] == [address]
        assert gw.stop() == 0
