"""The `genapi` command."""
from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time

import msgspec

from . import __version__, log
from .config import ConfigError, LogLevel, Port, Settings, Workers, load
from .schema import field_problem, literal_values, render
from .signatures import callable_problems
from .structs import FunConfig, split_target


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="genapi",
        description="genapi: a dynamic API gateway over WebSockets (Phoenix Channels protocol).")
    p.add_argument("--version", action="version", version=f"genapi {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    s = sub.add_parser(
        "serve", help="run the gateway",
        description="Run the gateway. Clients connect to ws://HOST:PORT/socket/websocket. Without "
                    "--config it serves the embedded default: 127.0.0.1:4000 with the demo service.")
    s.add_argument("--config", metavar="FILE",
                   help="TOML config file ([gateway], [auth], [[functions]]); default: the embedded demo config")
    s.add_argument("--host", help="address to listen on (overrides [gateway] host)")
    s.add_argument("--port", type=int, help="port to listen on; 0 picks a free port (overrides [gateway] port)")
    s.add_argument("--workers", metavar="N|auto",
                   help='worker processes sharing the port; "auto" = one per CPU (overrides [gateway] workers)')
    s.add_argument("--log-level", choices=literal_values(LogLevel),
                   help="log verbosity (overrides [gateway] log_level; default warning)")
    s.add_argument("--log-format", choices=["text", "json"],
                   help="text: `time LEVEL event key=value ...` lines; json: one object per line "
                        "(overrides [gateway] log_format; default text)")
    c = sub.add_parser("check", help="validate a config file and exit",
                       description="Load a config file, import every function, hook and callback it names, "
                                   "check that each can take the arguments its config passes, and report "
                                   "every problem at once (exit status 2). Prints the functions on success.")
    c.add_argument("--config", metavar="FILE", help="TOML config file; default: the embedded demo config")
    return p


def _settings(args: argparse.Namespace) -> Settings:
    """The config with the command line's overrides; every problem of the file in one
    ConfigError: its keys and values, and the callables of the functions that are valid."""
    try:
        settings = load(args.config)
    except ConfigError as exc:
        if exc.partial is None:
            raise
        raise ConfigError(exc.problems + callable_problems(exc.partial, exc.numbers)) from None
    gw = settings.gateway
    changes = {}
    if getattr(args, "host", None):
        changes["host"] = args.host
    if getattr(args, "port", None) is not None:
        changes["port"] = args.port
    if getattr(args, "workers", None):
        changes["workers"] = int(args.workers) if args.workers.isdigit() else args.workers
    problems = [problem for key, typ in (("port", Port), ("workers", Workers))
                if key in changes and (problem := field_problem(f"--{key}", typ, changes[key]))]
    if problems:  # the file's own rules, so the command line cannot set what the file may not
        raise ConfigError(problems)
    if getattr(args, "log_level", None):
        changes["log_level"] = args.log_level
    if getattr(args, "log_format", None):
        changes["log_format"] = args.log_format
    if changes:
        settings = msgspec.structs.replace(settings, gateway=msgspec.structs.replace(gw, **changes))
    problems = callable_problems(settings)
    if problems:
        raise ConfigError(problems)
    return settings


def _check_functions(settings: Settings) -> None:
    """Imports and compiles every function now, so a bad config fails before listening."""
    from .pipeline import Pipeline

    try:
        Pipeline(settings).pool.shutdown()
    except ValueError as exc:
        raise ConfigError(f"{settings.source}: {exc}") from None


def serve(settings: Settings) -> int:
    import uvloop

    from .worker import listening_socket
    from .worker import serve as serve_worker

    gw = settings.gateway
    log.setup(gw.log_level, gw.log_format)
    _check_functions(settings)
    workers = (os.cpu_count() or 1) if gw.workers == "auto" else int(gw.workers)
    try:
        sock = listening_socket(gw.host, gw.port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {gw.host}:{gw.port}: {exc.strerror}") from None
    port = sock.getsockname()[1]
    settings = msgspec.structs.replace(settings, gateway=msgspec.structs.replace(gw, port=port))
    banner = (f"genapi listening on ws://{gw.host}:{port}{gw.path.rstrip('/')}/websocket "
              f"(workers={workers}, pid={os.getpid()})")
    if workers == 1:
        uvloop.run(serve_worker(settings, sock, ready=lambda _g: print(banner, flush=True)))
        return 0
    return _supervise(settings, sock, workers, banner)


def _supervise(settings: Settings, sock: socket.socket, workers: int, banner: str) -> int:
    """Forks `workers` processes sharing the listening socket; restarts any that dies; on
    SIGINT/SIGTERM stops them all and exits 0."""
    import uvloop

    from .worker import serve as serve_worker

    def spawn() -> int:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            try:
                uvloop.run(serve_worker(settings, sock))
                code = 0
            except BaseException:
                log.error("worker_crashed", exc_info=True)
                code = 1
            os._exit(code)
        return pid

    stopping = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    children = {spawn() for _ in range(workers)}
    print(banner, flush=True)
    while not stopping:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid and pid in children:
            children.discard(pid)
            log.warning("worker_exited", pid=pid, status=status)
            children.add(spawn())
        time.sleep(0.1)
    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while children and time.monotonic() < deadline:
        for pid in list(children):
            if os.waitpid(pid, os.WNOHANG)[0]:
                children.discard(pid)
        time.sleep(0.05)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    return 0


def _describe(cfg: FunConfig) -> str:
    """One loaded function as `genapi check` lists it: service.request_type version type mfa."""
    target, predefined = split_target(cfg.mfa)
    mfa = f"{target} {render(predefined)}" if predefined else target
    return (f"{cfg.service}.{cfg.request_type} {cfg.version or '-'} {cfg.response_type} {mfa}"
            f"{' (disabled)' if cfg.disabled else ''}")


def _report(exc: ConfigError, source: str) -> None:
    """One problem on one line; several under a line that counts them, so none is missed."""
    if len(exc.problems) == 1:
        print(f"genapi: error: {exc.problems[0]}", file=sys.stderr)
        return
    print(f"genapi: error: {source}: {len(exc.problems)} problems", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        settings = _settings(args)
        if args.command == "check":
            _check_functions(settings)
            for cfg in settings.functions:
                print(_describe(cfg))
            print(f"{settings.source}: ok, {len(settings.functions)} function(s)")
            return 0
        return serve(settings)
    except ConfigError as exc:
        _report(exc, getattr(args, "config", None) or "<embedded default>")
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
