"""The long fuzz run: a million hostile inputs (or more) against a real gateway, many connections
at once, checking the invariants of tests/test_fuzz.py all the way. Not part of any pytest run.

    python benchmarks/fuzz_run.py --inputs 1000000 --seed 1

Starts `genapi serve` (the demo functions with tight limits: tests/support/fuzzgen.py's gateway_config),
runs tests/support/fuzzgen.py's campaign in `--procs` client processes (each its own seed stream and
`--connections` connections), then sweeps every connection-ending protocol violation, and
finally checks that a well-formed echo call still succeeds. Prints progress every few seconds
(inputs/s, replies, the gateway's RSS) and a JSON summary at the end: inputs, wall time,
inputs/s, replies, pushes, RSS at start and end, every invariant's expected and answered counts,
violations per category (with examples).

Exit status: 0 when no invariant was violated, 1 when one was (the worker died or changed pid,
a request or heartbeat went unanswered or was answered twice, a traceback in the gateway's log,
a protocol violation that did not end the connection as RFC 6455 says, ...). `--known` names
categories of known gateway bugs that are reported but do not fail the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
if str(TESTS) not in sys.path:  # a script, not a pytest run: tests/support (fuzzgen, the process helpers) by hand
    sys.path.insert(0, str(TESTS))

from support import fuzzgen  # noqa: E402
from support.gateway_proc import GatewayProcess  # noqa: E402

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S")
LIMITS = dict(max_payload_bytes=16384, max_channels=20, max_in_flight=8, max_queued=64)


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _client(url: str, seed: int, inputs: int, connections: int, out: Any, progress: Any) -> None:
    """One client process: a campaign, with its Stats sent back as a summary dict."""
    stats = fuzzgen.Stats()

    async def run() -> None:
        async def report() -> None:
            while True:
                await asyncio.sleep(1.0)
                progress.put((seed, stats.inputs, stats.replies, sum(stats.violation_counts.values())))

        task = asyncio.create_task(report())
        try:
            await fuzzgen.campaign(
                url,
                seed=seed,
                inputs=inputs,
                connections=connections,
                max_channels=LIMITS["max_channels"],
                max_payload=LIMITS["max_payload_bytes"],
                per_connection=(200, 3000),
                stats=stats,
                grace=float(os.environ.get("GENAPI_FUZZ_GRACE", "3")),
            )
        finally:
            task.cancel()

    try:
        import uvloop

        uvloop.run(run())
    except ImportError:
        asyncio.run(run())
    d = stats.summary()
    d["kinds"] = dict(stats.kinds)
    d["examples"] = stats.violations
    out.put(d)


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {}
    for p in parts:
        for k, v in p.items():
            if isinstance(v, dict):
                acc = total.setdefault(k, {})
                for kk, vv in v.items():
                    acc[kk] = acc.get(kk, 0) + vv
            elif isinstance(v, list):
                total.setdefault(k, []).extend(v)
            elif k == "heartbeat_max_s":
                total[k] = max(total.get(k, 0.0), v)
            else:
                total[k] = total.get(k, 0) + v
    return total


async def _final(url: str, seed: int) -> tuple[dict[str, Any], Any]:
    """The terminal sweep and a well-formed echo call at the end."""
    from support.rawclient import Raw, request

    stats = fuzzgen.Stats()
    gen = fuzzgen.FuzzGen(seed, max_channels=LIMITS["max_channels"], max_payload=LIMITS["max_payload_bytes"])
    await fuzzgen.terminal_sweep(url, gen, stats)
    c = await Raw.connect(url)
    try:
        await c.join("api:after-fuzz")
        c.send(["1", "2", "api:after-fuzz", "phoenix_gen_api", request("final", "echo", {"text": "still here"})])
        echo = await c.recv_n(2, timeout=10)
    except Exception as exc:
        echo = repr(exc)
    finally:
        await c.close()
    d = stats.summary()
    d["examples"] = stats.violations
    return d, echo


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=1_000_000, help="fuzz inputs in all (default 1000000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--connections", type=int, default=16, help="parallel connections per client process")
    ap.add_argument("--procs", type=int, default=1, help="client processes (each seeded seed*1000+i)")
    ap.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    ap.add_argument(
        "--known",
        default="",
        help="comma-separated violation categories reported but not failing the run "
        "(e.g. fragmented,orphan_continuation,interrupted_fragments,rsv,"
        "close_invalid,log_line)",
    )
    ap.add_argument("--cpu", type=int, default=None, help="pin the gateway to this CPU (taskset)")
    args = ap.parse_args(argv)
    known = {c for c in args.known.split(",") if c}

    gw = GatewayProcess(fuzzgen.gateway_config(**LIMITS, log_level=args.log_level), cpu=args.cpu)
    pid = gw.pid
    time.sleep(0.3)
    rss_start = rss_kb(pid)
    print(
        f"gateway pid {pid} at {gw.url}, RSS {rss_start} kB; {args.inputs:,} inputs, "
        f"{args.procs} x {args.connections} connections, seed {args.seed}",
        flush=True,
    )
    ctx = mp.get_context("spawn")
    out: Any = ctx.Queue()
    progress: Any = ctx.Queue()
    share = [args.inputs // args.procs + (1 if i < args.inputs % args.procs else 0) for i in range(args.procs)]
    seeds = [args.seed if args.procs == 1 else args.seed * 1000 + i for i in range(args.procs)]
    t0 = time.monotonic()
    procs = [
        ctx.Process(target=_client, args=(gw.url, seeds[i], share[i], args.connections, out, progress))
        for i in range(args.procs)
    ]
    for p in procs:
        p.start()
    parts: list[dict[str, Any]] = []
    seen: dict[int, tuple[int, int, int]] = {}
    rss_max = rss_start or 0
    last = t0
    died = False
    while len(parts) < len(procs):
        try:
            parts.append(out.get(timeout=0.5))
        except Exception:
            pass
        while not progress.empty():
            s, n, r, v = progress.get()
            seen[s] = (n, r, v)
        if not gw.alive():
            died = True
        if time.monotonic() - last >= 5:
            last = time.monotonic()
            n = sum(x[0] for x in seen.values())
            rss = rss_kb(pid) or 0
            rss_max = max(rss_max, rss)
            print(
                f"  {last - t0:7.1f} s  {n:>10,} inputs  {n / (last - t0):8,.0f}/s  "
                f"{sum(x[1] for x in seen.values()):>10,} replies  RSS {rss:,} kB  "
                f"violations {sum(x[2] for x in seen.values())}",
                flush=True,
            )
        if died or (all(not p.is_alive() for p in procs) and out.empty() and len(parts) < len(procs)):
            break
    for p in procs:
        p.join(5)
    wall = time.monotonic() - t0
    rss_after_fuzz = rss_kb(pid)
    final, echo = asyncio.run(_final(gw.url, args.seed + 7)) if gw.alive() else ({}, "gateway dead")
    alive = gw.alive()
    rss_end = rss_kb(pid)
    gw.stop()
    stderr = gw.read_stderr()
    if os.environ.get("GENAPI_FUZZ_KEEP_LOG"):  # the gateway's whole log, to look into a violation
        with open(os.environ["GENAPI_FUZZ_KEEP_LOG"], "w") as f:
            f.write(stderr)

    total = _merge(parts + ([final] if final else []))
    violations: dict[str, int] = dict(total.get("violations", {}))
    if died or not alive:
        violations["worker_died"] = 1
    if len(parts) < len(procs):
        violations["client_crashed"] = len(procs) - len(parts)
    ok_echo = (
        isinstance(echo, list)
        and len(echo) == 2
        and echo[0][4].get("success") is True
        and echo[1][4] == {"status": "ok", "response": "echo"}
    )
    if not ok_echo:
        violations["final_echo"] = 1
    tracebacks = stderr.count("Traceback (most recent call last)")
    if tracebacks:
        violations["traceback"] = tracebacks
    bad_lines = [ln for ln in stderr.splitlines() if not LOG_LINE.match(ln)]
    if bad_lines:
        violations["log_line"] = len(bad_lines)
    failing = {k: v for k, v in violations.items() if k not in known}

    summary = {
        "inputs": total.get("inputs", 0),
        "wall_s": round(wall, 1),
        "inputs_per_s": round(total.get("inputs", 0) / wall) if wall else None,
        "bytes_sent": total.get("bytes_sent"),
        "replies": total.get("replies"),
        "pushes": total.get("pushes"),
        "connections": total.get("connections"),
        "rss_kb": {"start": rss_start, "max_during": rss_max, "after_fuzz": rss_after_fuzz, "end": rss_end},
        "gateway_pid_same_and_alive": alive and not died,
        "final_echo_ok": ok_echo,
        "expected": total.get("expected"),
        "answered": total.get("answered"),
        "endings": total.get("endings"),
        "kinds": total.get("kinds"),
        "heartbeats": total.get("heartbeats"),
        "heartbeat_max_s": total.get("heartbeat_max_s"),
        "stderr_lines": len(stderr.splitlines()),
        "violations": violations,
        "known": sorted(known),
        "failing": failing,
    }
    print(json.dumps(summary, indent=1))
    examples = total.get("examples", [])
    shown: dict[str, int] = {}
    for cat, text in examples:
        shown[cat] = shown.get(cat, 0) + 1
        if shown[cat] <= 3:
            print(f"violation [{cat}] {text[:400]}")
    if tracebacks:
        i = stderr.find("Traceback (most recent call last)")
        print("gateway traceback:\n" + stderr[max(0, i - 500) : i + 3000])
    for ln in bad_lines[:3]:
        print(f"violation [log_line] {ln[:200]!r}")
    print(
        f"{'FAIL' if failing else 'OK'}: {summary['inputs']:,} inputs in {wall:.1f} s "
        f"({summary['inputs_per_s']:,}/s), RSS {rss_start} -> {rss_end} kB, "
        f"violations {sum(violations.values())} ({sum(failing.values())} failing)"
    )
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
