"""`genapi serve --reload`: a real supervisor and its gateway child, a function module in a tmp
app directory edited while it serves, answers read with the Python client."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

from genapi.cli.reload import MAX_FILES, changed, scan
from genapi.client import Client
from support.gateway_proc import GatewayProcess, children, pid_alive, wait_until

CONFIG = """
[auth]
require_verified_user_id = false

[[functions]]
service = "myapp"
request_type = "hello"
mfa = "myapp:hello"
"""
TIMEOUT = 60  # a restart on a loaded 2-core machine: the child imports genapi again


def module(text: str) -> str:
    return f"def hello():\n    return {text!r}\n"


def answer(url: str, request_type: str = "hello") -> Any:
    """What myapp.<request_type> answers now, or the error's type when nothing serves it."""

    async def go() -> Any:
        c = await Client.connect(url, timeout=5)
        try:
            await c.join("api:dev")
            r = await c.call("myapp", request_type, raise_on_error=False, timeout=5)
            assert r is not None
            return r.result if r.success else r.error
        finally:
            await c.close()

    try:
        return asyncio.run(go())
    except Exception as exc:  # not listening, or closed meanwhile
        return type(exc).__name__


def test_an_edited_module_is_served_a_syntax_error_waits_and_the_config_is_watched(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "myapp.py").write_text(module("one"))
    gw = GatewayProcess(CONFIG, extra_args=["--reload", "--app-dir", str(app), "--workers", "2"])
    try:
        assert answer(gw.url) == "one"
        err = gw.read_stderr()
        assert "reload_watching" in err and "reload_one_worker workers=2" in err
        (child,) = children(gw.pid)  # one child serving, no master with workers
        assert children(child) == set()

        (app / "myapp.py").write_text(module("two, edited"))
        assert wait_until(lambda: answer(gw.url) == "two, edited", timeout=TIMEOUT)
        assert "reload_change file=myapp.py changed=1" in gw.read_stderr()

        (app / "myapp.py").write_text("def hello(:\n")
        assert wait_until(lambda: "reload_child_exited" in gw.read_stderr(), timeout=TIMEOUT)
        err = gw.read_stderr()
        assert "SyntaxError" in err and "myapp.py" in err  # the child's own report
        assert gw.alive() and children(gw.pid) == set()  # the supervisor waits for a change
        assert answer(gw.url) != "two, edited"

        (app / "myapp.py").write_text(module("three, fixed"))
        assert wait_until(lambda: answer(gw.url) == "three, fixed", timeout=TIMEOUT)

        assert gw.config_path is not None  # the config file is watched too
        with open(gw.config_path, "a") as f:
            f.write('\n[[functions]]\nservice = "myapp"\nrequest_type = "hello2"\nmfa = "myapp:hello"\n')
        assert wait_until(lambda: answer(gw.url, "hello2") == "three, fixed", timeout=TIMEOUT)
        (child,) = children(gw.pid)
    finally:
        assert gw.stop() == 0  # SIGTERM to the supervisor: exit 0 ...
    assert wait_until(lambda: not pid_alive(child), timeout=10)  # ... and the child stopped with it


def test_an_edit_in_the_same_second_and_of_the_same_size_and_sigint(tmp_path: Path) -> None:
    """Python's bytecode cache tells a source by its size and whole-second mtime: an edit that
    keeps both (two saves within a second) is still served, not the cached old code. SIGINT
    (Ctrl-C) stops the supervisor and its child."""
    source = tmp_path / "myapp.py"
    source.write_text(module("one"))
    second = 1_700_000_000 * 10**9
    os.utime(source, ns=(second, second))
    # bytecode written as it would be outside this test run (empty: unset, for Python)
    gw = GatewayProcess(
        CONFIG, extra_args=["--reload", "--app-dir", str(tmp_path)], env={"PYTHONDONTWRITEBYTECODE": ""}
    )
    try:
        assert answer(gw.url) == "one"
        source.write_text(module("two"))
        os.utime(source, ns=(second + 500_000_000, second + 500_000_000))
        assert wait_until(lambda: answer(gw.url) == "two", timeout=TIMEOUT)
        (child,) = children(gw.pid)
    finally:
        assert gw.stop(signal.SIGINT) == 0
    assert wait_until(lambda: not pid_alive(child), timeout=10)


def test_the_scan_watches_python_files_and_the_config_within_its_bounds(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "b.py").write_text("")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / ".#a.py").write_text("")  # an editor's lock file
    for skipped in (".git", ".venv", "venv", "__pycache__", "node_modules"):
        (tmp_path / skipped).mkdir()
        (tmp_path / skipped / "c.py").write_text("")
    config = tmp_path / "gateway.toml"
    config.write_text("")
    files, cut = scan(str(tmp_path), str(config))
    assert sorted(files) == sorted(str(p) for p in (tmp_path / "a.py", tmp_path / "pkg" / "b.py", config))
    assert not cut
    os.utime(tmp_path / "pkg" / "b.py", ns=(1, 1))
    config.unlink()
    again, _ = scan(str(tmp_path), str(config))
    assert changed(files, again) == sorted([str(tmp_path / "pkg" / "b.py"), str(config)])

    many = tmp_path / "many"
    many.mkdir()
    for i in range(MAX_FILES + 5):
        (many / f"m{i}.py").write_text("")
    files, cut = scan(str(many), None)
    assert cut and len(files) == MAX_FILES
