"""`genapi serve --reload`, for development: a supervisor runs the gateway as a child process
(`genapi serve` with the same arguments and one worker) and restarts it when a watched file
changes, so edited function modules are imported afresh (as uvicorn's reloader does).

Watched: every `*.py` under the app directory (`--app-dir`, default the current directory; hidden
files and directories, `__pycache__`, `venv`, `.venv`, `node_modules` and `site-packages`
skipped, symlinked directories not followed; at most MAX_FILES files and MAX_ENTRIES directory
entries a scan), and the config file. Their modification times are polled every POLL seconds.
On a change the child is stopped (SIGTERM, as `serve` drains; SIGKILL past the drain time) and
started again; a child that exits by itself (a syntax error in the edited module, a refused
config) is reported and the supervisor waits for the next change. SIGINT/SIGTERM stop the child
and the supervisor (exit 0); SIGHUP is passed on to the child. A port of 0 is picked once and kept
across restarts. The child runs with `python -B`, so no stale bytecode of an edited module is
ever written or reused."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from genapi import log
from genapi.config import ConfigError, Settings, load

POLL = 0.5  # seconds between scans
MAX_FILES = 10_000  # *.py files watched
MAX_ENTRIES = 100_000  # directory entries looked at per scan
SKIP_DIRS = frozenset({"__pycache__", "venv", "node_modules", "site-packages"})  # and every hidden one
KILL_AFTER = 10.0  # seconds past the drain time before a child that does not stop is killed


def scan(app_dir: str, config: str | None) -> tuple[dict[str, int], bool]:
    """The watched files and their modification times (ns); True when a bound cut the scan."""
    files: dict[str, int] = {}
    entries = 0
    stack = [app_dir]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as it:
                listing = sorted(it, key=lambda e: e.name)
        except OSError:  # gone or unreadable: nothing to watch there
            continue
        subdirs = []
        for entry in listing:
            entries += 1
            if entries > MAX_ENTRIES:
                return _with_config(files, config), True
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name not in SKIP_DIRS:
                        subdirs.append(entry.path)
                elif entry.name.endswith(".py") and entry.is_file():
                    if len(files) >= MAX_FILES:
                        return _with_config(files, config), True
                    files[entry.path] = entry.stat().st_mtime_ns
            except OSError:  # removed meanwhile
                continue
        stack.extend(reversed(subdirs))
    return _with_config(files, config), False


def _with_config(files: dict[str, int], config: str | None) -> dict[str, int]:
    if config is not None:
        try:
            files[config] = os.stat(config).st_mtime_ns
        except OSError:  # missing (being saved): a change when it comes back
            files[config] = -1
    return files


def changed(old: dict[str, int], new: dict[str, int]) -> list[str]:
    """The files added, removed or modified between two scans, sorted."""
    return sorted({p for p in old.keys() | new.keys() if old.get(p) != new.get(p)})


def _free_port(host: str) -> int:
    """A port free on every address of `host`'s family (the wildcard's), for the child to bind."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
        port: int = s.getsockname()[1]
        return port


def child_command(args: argparse.Namespace, argv: list[str], settings: Settings | None) -> list[str]:
    """`genapi serve` as it was called, without --reload, with one worker and a port of 0 (flag
    or file) replaced by a free port picked now, so restarts keep it."""
    cmd = [sys.executable, "-B", "-m", "genapi", *argv, "--no-reload", "--workers", "1"]
    gw = settings.gateway if settings is not None else None  # None: a file the child will refuse
    port = args.port if args.port is not None or gw is None else gw.port
    control = args.control_port if args.control_port is not None or gw is None else gw.control_port
    if port == 0:
        cmd += ["--port", str(_free_port(args.host or (gw.host if gw is not None else "127.0.0.1")))]
    if control == 0:
        cmd += ["--control-port", str(_free_port(gw.control_host if gw is not None else "127.0.0.1"))]
    return cmd


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the supervisor dies, even by SIGKILL (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the child outlives a killed supervisor
        pass


class Supervisor:
    def __init__(self, cmd: list[str], app_dir: str, config: str | None, drain: float) -> None:
        self.cmd = cmd
        self.app_dir = app_dir
        self.config = config
        self.drain = drain
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping: list[int] = []

    def start(self) -> None:
        self.child = subprocess.Popen(self.cmd, preexec_fn=_die_with_parent)
        log.info("reload_child_started", pid=self.child.pid)

    def stop_child(self) -> None:
        child, self.child = self.child, None
        if child is None or child.poll() is not None:
            return
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(self.drain + KILL_AFTER)
        except subprocess.TimeoutExpired:
            log.warning("reload_child_killed", pid=child.pid, waited_s=self.drain + KILL_AFTER)
            child.kill()
            child.wait()

    def pass_hangup(self, _signum: int, _frame: Any) -> None:
        """SIGHUP: the child re-reads the config's function list, as `serve` does."""
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGHUP)

    def shown(self, path: str) -> str:
        return path if path == self.config else os.path.relpath(path, self.app_dir)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda signum, _f: self.stopping.append(signum))
        signal.signal(signal.SIGINT, lambda signum, _f: self.stopping.append(signum))
        signal.signal(signal.SIGHUP, self.pass_hangup)
        files, cut = scan(self.app_dir, self.config)
        log.warning("reload_watching", app_dir=self.app_dir, files=len(files), config=self.config or "-", poll_s=POLL)
        if cut:
            log.warning("reload_watch_cut", files=len(files), max_files=MAX_FILES, max_entries=MAX_ENTRIES)
        self.start()
        while not self.stopping:
            time.sleep(POLL)
            if self.stopping:
                break
            if self.child is not None and self.child.poll() is not None:
                log.error(
                    "reload_child_exited",
                    pid=self.child.pid,
                    code=self.child.returncode,
                    note="waiting for a change to start it again",
                )
                self.child = None
            new, _ = scan(self.app_dir, self.config)
            diff = changed(files, new)
            files = new
            if diff:
                log.warning("reload_change", file=self.shown(diff[0]), changed=len(diff))
                self.stop_child()
                self.start()
        self.stop_child()
        return 0


def supervise(args: argparse.Namespace, argv: list[str]) -> int:
    """`genapi serve --reload`: runs and restarts the child until SIGINT/SIGTERM. The config is
    read here only for its ports and logging, never its modules: a broken file is the child's
    to report, and the supervisor waits for it to be fixed."""
    try:
        settings: Settings | None = load(args.config)
    except ConfigError:
        settings = None
    gw = settings.gateway if settings is not None else None
    log.setup(
        args.log_level or (gw.log_level if gw is not None else "warning"),
        args.log_format or (gw.log_format if gw is not None else "text"),
    )
    workers: Any = args.workers or (gw.workers if gw is not None else 1)
    if str(workers) != "1":
        log.warning("reload_one_worker", workers=workers, note="--reload runs one worker")
    drain = args.drain_timeout if args.drain_timeout is not None else (gw.shutdown_grace_ms / 1000 if gw else 10.0)
    app_dir = os.path.abspath(args.app_dir)
    return Supervisor(child_command(args, argv, settings), app_dir, args.config, drain).run()
