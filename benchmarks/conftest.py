"""Benchmark fixtures: servers pinned to CPU 0, the load generator pinned to CPU 1.

Run: `PYTHONPATH=src:tests pytest benchmarks --benchmark-only -q`

The throughput tests record calls/s in `benchmark.extra_info`; the session ends with a summary
comparing the gateway with the raw picows echo server measured in the same run.
Environment knobs: BENCH_WINDOW (measured seconds, default 3), BENCH_WARMUP (default 1),
BENCH_CONNECTIONS (default 50), BENCH_ROUNDS (loadgen runs per test, the best is kept; default 1).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
if str(TESTS) not in sys.path:  # gateway_proc; genapi itself is the installed package
    sys.path.insert(0, str(TESTS))

SERVER_CPU = 0
CLIENT_CPU = 1
WINDOW_S = float(os.environ.get("BENCH_WINDOW", "3"))
WARMUP_S = float(os.environ.get("BENCH_WARMUP", "1"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "50"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1"))

# name -> loadgen result; filled by the throughput tests, printed at the end of the session
RESULTS: dict[str, dict] = {}


def _can_pin() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pinned(cpu: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *argv] if _can_pin() else argv


class EchoServer:
    """benchmarks/echo_server.py in its own process, stopped by its pid."""

    def __init__(self, cpu: int | None = SERVER_CPU) -> None:
        argv = [sys.executable, str(HERE / "echo_server.py"), "--port", "0"]
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(pinned(cpu, argv) if cpu is not None else argv,
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("echo listening on "):
            self.stop()
            self.stderr.seek(0)
            raise RuntimeError(f"echo server did not start: {line!r} {self.stderr.read()!r}")
        self.port = int(line.rsplit(":", 1)[1])
        self.pid = self.proc.pid

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


def run_loadgen(port: int, mode: str, *, connections: int = CONNECTIONS, pipeline: int = 1,
                warmup: float = WARMUP_S, window: float = WINDOW_S, extra: list[str] | None = None) -> dict:
    """One loadgen run pinned to CLIENT_CPU; fails the test on errors or when nothing completed."""
    argv = [sys.executable, str(HERE / "loadgen.py"), "--port", str(port), "--mode", mode,
            "-c", str(connections), "-p", str(pipeline), "-w", str(warmup), "-d", str(window),
            *(extra or [])]
    proc = subprocess.run(pinned(CLIENT_CPU, argv), capture_output=True, text=True,
                          timeout=warmup + window + 30)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        pytest.fail(f"loadgen printed no result (exit {proc.returncode}): {proc.stderr[-2000:]}")
    result = json.loads(lines[-1])
    if proc.returncode != 0 or result["errors"] or not result["replies"]:
        pytest.fail(f"loadgen failed (exit {proc.returncode}): {lines[-1]} {proc.stderr[-2000:]}")
    return result


@pytest.fixture
def echo_server():
    """Only alive for its own test, so CPU 0 is the gateway's alone afterwards."""
    srv = EchoServer()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def bench_gateway():
    """`genapi serve` with the embedded default config (demo service), pinned to SERVER_CPU."""
    from gateway_proc import GatewayProcess

    gw = GatewayProcess(cpu=SERVER_CPU if _can_pin() else None)
    yield gw
    code = gw.stop()
    assert code == 0, f"gateway exited with {code}: {gw.read_stderr()[-2000:]}"


@pytest.fixture(scope="session")
def throughput_results() -> dict[str, dict]:
    return RESULTS


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's tables
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("throughput (server on CPU 0, loadgen on CPU 1)")
    for name, r in RESULTS.items():
        tr.write_line(f"{name:<28} {r['calls_per_s']:>10,.0f} calls/s   p50 {r['p50_us']:>8.1f} us"
                      f"   p99 {r['p99_us']:>8.1f} us   ({r['connections']} conns, P={r['pipeline']})")
    echo = RESULTS.get("raw echo P=1")
    if echo and echo["calls_per_s"]:
        for name, r in RESULTS.items():
            if name.startswith("gateway"):
                tr.write_line(f"ratio {name} / raw echo P=1: {r['calls_per_s'] / echo['calls_per_s']:.2f}")
