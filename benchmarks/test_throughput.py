"""End-to-end throughput: the raw picows echo ceiling and the gateway's demo echo function.

Each test runs a closed-loop loadgen window (BENCH_ROUNDS of them, the best kept); the figure is
calls/s, kept in `benchmark.extra_info`; pytest-benchmark's timing stats are just the run's length.
"""
from __future__ import annotations

import pytest

from .conftest import ROUNDS, run_loadgen


REGISTER_ARGS = ('{"name":"Ada Lovelace","age":36,"active":true,'
                 '"id":"550e8400-e29b-41d4-a716-446655440000","tags":["math","engines","poetry"]}')


def _measure(benchmark, results, name, port, mode, pipeline, extra=None):
    out: dict = {}

    def run_once():
        r = run_loadgen(port, mode, pipeline=pipeline, extra=extra)  # fails the test on any error
        if r["calls_per_s"] > out.get("calls_per_s", -1):
            out.update(r)

    benchmark.pedantic(run_once, rounds=ROUNDS, iterations=1)
    for key in ("calls_per_s", "p50_us", "p99_us", "errors", "replies", "connections", "pipeline",
                "client_cpu_pct"):
        benchmark.extra_info[key] = out[key]
    results[name] = out
    assert out["errors"] == 0 and out["replies"] > 0


@pytest.mark.benchmark(group="throughput")
def test_raw_echo_p1(benchmark, echo_server, throughput_results):
    _measure(benchmark, throughput_results, "raw echo P=1", echo_server.port, "echo", 1)


@pytest.mark.benchmark(group="throughput")
def test_gateway_demo_echo_p1(benchmark, bench_gateway, throughput_results):
    _measure(benchmark, throughput_results, "gateway demo.echo P=1", bench_gateway.port, "phoenix", 1)


@pytest.mark.benchmark(group="throughput")
def test_gateway_demo_echo_p16(benchmark, bench_gateway, throughput_results):
    _measure(benchmark, throughput_results, "gateway demo.echo P=16", bench_gateway.port, "phoenix", 16)


@pytest.mark.benchmark(group="throughput")
def test_gateway_validated_5_args_p1(benchmark, bench_gateway, throughput_results):
    """demo.register: five arguments (string, num, boolean, uuid, list_string) validated per call."""
    _measure(benchmark, throughput_results, "gateway demo.register P=1", bench_gateway.port, "phoenix", 1,
             extra=["--request-type", "register", "--args", REGISTER_ARGS])
