"""`[gateway] metrics_token`: GET /metrics and /ready answer 401 unless the request carries
`Authorization: Bearer <token>`; /health (liveness) stays open. Real HTTP requests to a real
gateway with two workers (each worker answers on the shared port)."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import pytest

from support.configs import PID_CONFIG
from support.gateway_proc import SUPPORT, TESTS, GatewayProcess

TOKEN = "s3cret-metrics-token-0123456789"
CONFIG = f'[gateway]\nmetrics_token = "{TOKEN}"\n' + PID_CONFIG


@pytest.fixture(scope="module")
def gw() -> Any:
    gw = GatewayProcess(CONFIG, extra_args=["--workers", "2"])
    yield gw
    assert gw.stop() == 0


def get(gw: GatewayProcess, path: str, authorization: str | None = None) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(f"http://{gw.host}:{gw.port}{path}")
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def test_health_stays_open(gw: GatewayProcess) -> None:
    assert get(gw, "/health")[0::2] == (200, "ok\n")


@pytest.mark.parametrize("path", ["/metrics", "/ready"])
def test_refused_without_the_token(gw: GatewayProcess, path: str) -> None:
    wrong = TOKEN[:-1] + ("x" if TOKEN[-1] != "x" else "y")  # same length, one character off
    for authorization in (None, f"Bearer {wrong}", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, "Bearer", ""):
        for _ in range(4):  # the kernel spreads the requests over both workers
            status, headers, body = get(gw, path, authorization)
            assert status == 401, (authorization, status, body)
            assert headers["WWW-Authenticate"] == 'Bearer realm="genapi"'
            assert "metrics_token" in body and TOKEN not in body
    assert "http_unauthorized" in gw.read_stderr()


def test_served_with_the_token(gw: GatewayProcess) -> None:
    for _ in range(4):
        status, _headers, body = get(gw, "/metrics", f"Bearer {TOKEN}")
        assert status == 200 and "genapi_workers 2" in body, (status, body[:300])
        status, _headers, body = get(gw, "/ready", f"bearer {TOKEN}")  # the scheme in any case
        assert status == 200 and '"ready": true' in body, body


def test_a_weak_token_is_refused_by_check(tmp_path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text('[gateway]\nmetrics_token = "short"\n' + PID_CONFIG)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SUPPORT), *sys.path])}
    proc = subprocess.run(
        [sys.executable, "-m", "genapi", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(TESTS),
        timeout=60,
    )
    assert proc.returncode == 2
    assert "[gateway] key metrics_token: must be 16 to 256 printable ASCII characters" in proc.stderr, proc.stderr


def test_the_token_from_the_environment() -> None:
    """GENAPI_METRICS_TOKEN sets the token over the file (one worker, a config without one)."""
    gw = GatewayProcess(PID_CONFIG, env={"GENAPI_METRICS_TOKEN": TOKEN})
    try:
        assert get(gw, "/metrics")[0] == 401
        assert get(gw, "/metrics", f"Bearer {TOKEN}")[0] == 200
        assert get(gw, "/health")[0] == 200
    finally:
        assert gw.stop() == 0
