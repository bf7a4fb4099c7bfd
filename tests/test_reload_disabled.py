"""A function disabled by hand (`genapi admin functions disable`) stays disabled when SIGHUP
reloads the config file, with one worker (the lone worker reloads) and with two (the master
reloads and broadcasts), until it is enabled by hand."""

from __future__ import annotations

import os
import signal

import pytest

from support.gateway_proc import GatewayProcess, children, wait_until
from test_admin import CONFIG, admin, admin_json, every_worker

ADDED = '\n[[functions]]\nservice = "w"\nrequest_type = "added"\nmfa = "testapi:pid"\n'


@pytest.mark.parametrize("workers", [1, 2])
def test_disabled_by_hand_survives_a_sighup_reload(workers: int, capsys: pytest.CaptureFixture[str]) -> None:
    gw = GatewayProcess(CONFIG, extra_args=["--workers", str(workers)])
    try:
        before = every_worker(gw, "pid")
        assert all(got == [pid] * len(got) for pid, got in before.items())
        done = admin_json(capsys, gw.control, "functions", "disable", "w.pid")
        assert done["status"] == "disabled"
        off = every_worker(gw, "pid")
        assert {e for got in off.values() for e in got} == {"disabled function: pid version 0.0.0"}

        # the reload brings a new function (how the test sees the reload served) and w.pid as before
        assert gw.config_path is not None
        with open(gw.config_path, "a") as f:
            f.write(ADDED)
        os.kill(gw.pid, signal.SIGHUP)
        assert wait_until(lambda: "config_reloaded" in gw.read_stderr(), timeout=20)

        def added_everywhere() -> bool:
            got = every_worker(gw, "added")
            return all(isinstance(e, int) for es in got.values() for e in es)

        assert wait_until(added_everywhere, timeout=20, interval=0.2)
        still = every_worker(gw, "pid")
        workers_now = children(gw.pid) or {gw.pid}
        assert set(still) == workers_now
        assert {e for got in still.values() for e in got} == {"disabled function: pid version 0.0.0"}
        listed = admin_json(capsys, gw.control, "functions")
        assert [f["disabled"] for f in listed if f["request_type"] == "pid"] == [True]

        out = admin(capsys, gw.control, "functions", "enable", "w.pid")
        assert out.startswith("enabled w.pid")
        on = every_worker(gw, "pid")
        assert all(got == [pid] * len(got) for pid, got in on.items()), on
    finally:
        assert gw.stop() == 0
