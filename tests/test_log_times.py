"""Log times: `--log-format json` writes RFC 3339 in UTC with milliseconds
(`2026-12-07T21:30:05.123Z`) whatever the process's time zone; text lines keep the readable local
`2026-12-07 21:30:05,123`. A real gateway in a time zone 5 h 30 min from UTC."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime

from support.configs import PID_CONFIG
from support.gateway_proc import GatewayProcess

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TEXT_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d{3} INFO ")
ZONE = "IST-5:30"  # POSIX TZ: local time is UTC + 5:30


def lines_of(log_format: str) -> list[str]:
    gw = GatewayProcess(PID_CONFIG, extra_args=["--log-level", "info", "--log-format", log_format], env={"TZ": ZONE})
    assert gw.stop() == 0
    return [ln for ln in gw.read_stderr().splitlines() if ln.strip()]


def test_json_times_are_rfc3339_utc_with_milliseconds() -> None:
    started = time.time()
    records = [json.loads(ln) for ln in lines_of("json")]
    assert records  # the start and stop lines at info
    for r in records:
        assert RFC3339_UTC.match(r["time"]), r
        at = datetime.fromisoformat(r["time"].replace("Z", "+00:00")).timestamp()
        assert started - 60 < at < time.time() + 60, r  # UTC: local time would be 5.5 h off


def test_text_times_stay_local_and_readable() -> None:
    started = time.time()
    lines = lines_of("text")
    assert lines
    for ln in lines:
        m = TEXT_TIME.match(ln)
        assert m, ln
        at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
        offset = 5.5 * 3600  # the child's local time is UTC + 5:30
        assert started - 60 < at - offset < time.time() + 60, ln
