"""`genapi serve`: run the gateway (one worker, or a master and its workers)."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from typing import Any

import msgspec

from genapi import log
from genapi.cli.common import add_app_dir, check_functions, report, settings_of
from genapi.config import ConfigError, LogLevel, Settings
from genapi.schema import literal_values


def add_parser(sub: Any) -> None:
    s = sub.add_parser(
        "serve",
        help="run the gateway",
        description="Run the gateway. Clients connect to ws://HOST:PORT/socket/websocket (wss:// with "
        "--ssl-certfile and --ssl-keyfile). Without --config it serves the embedded default: "
        "127.0.0.1:4000 with the demo service. GENAPI_* environment variables (GENAPI_PORT, "
        "GENAPI_JWT_SECRET, ...) override the file and the command line overrides both; the file's "
        "string values may name ${VAR}.",
    )
    s.add_argument(
        "--config",
        metavar="FILE",
        help="TOML config file ([gateway], [auth], [[functions]]); default: the embedded demo config",
    )
    s.add_argument("--host", help="address to listen on (overrides [gateway] host)")
    s.add_argument("--port", type=int, help="port to listen on; 0 picks a free port (overrides [gateway] port)")
    s.add_argument(
        "--control-port",
        type=int,
        metavar="PORT",
        help="the control port service nodes push configs to; 0 picks a free port "
        "(overrides [gateway] control_port, default 4001)",
    )
    s.add_argument(
        "--drain-timeout",
        type=float,
        metavar="SECONDS",
        help="on SIGTERM, how long in-flight calls may finish before clients are closed "
        "(overrides [gateway] shutdown_grace_ms; default 10)",
    )
    s.add_argument(
        "--workers",
        metavar="N|auto",
        help='worker processes sharing the port; "auto" = one per CPU this process may use: its affinity '
        "mask (taskset), capped by its cgroup CPU quota (overrides [gateway] workers)",
    )
    s.add_argument(
        "--reload",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="development: run the gateway in a child process and restart it when a *.py file under "
        "--app-dir or the config file changes (polled every 0.5 s); one worker, whatever --workers says",
    )
    s.add_argument(
        "--log-level",
        choices=literal_values(LogLevel),
        help="log verbosity (overrides [gateway] log_level; default warning)",
    )
    s.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="text: `time LEVEL event key=value ...` lines; json: one object per line "
        "(overrides [gateway] log_format; default text)",
    )
    s.add_argument(
        "--ssl-certfile",
        metavar="FILE",
        help="serve wss:// with this PEM certificate chain (with --ssl-keyfile; overrides [gateway] tls_certfile)",
    )
    s.add_argument(
        "--ssl-keyfile",
        metavar="FILE",
        help="the certificate's unencrypted PEM private key (with --ssl-certfile; overrides [gateway] tls_keyfile)",
    )
    add_app_dir(s)
    s.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """`genapi serve`: exit status 2 when the config or a port is refused."""
    if args.reload:  # the supervisor: it runs this command again, without --reload, as its child
        from genapi.cli.reload import supervise

        return supervise(args, sys.argv[1:])
    try:
        return serve(settings_of(args))
    except ConfigError as exc:
        report(exc, getattr(args, "config", None) or "<embedded default>")
        return 2
    except KeyboardInterrupt:
        return 0


def serve(settings: Settings) -> int:
    import uvloop

    from genapi.gateway.listener import listening_socket
    from genapi.gateway.worker import serve as serve_worker

    gw = settings.gateway
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the loop's handler logs it: never a crash
    log.setup(gw.log_level, gw.log_format)
    for key, origin in settings.origins.items():  # where each secret came from, never its value
        log.info("config_source", key=key, source=origin)
    demo_secret = settings.origins.get("[auth] jwt_secret", "").startswith("the embedded demo")
    if demo_secret and gw.host not in ("127.0.0.1", "::1", "localhost"):
        log.warning(
            "demo_config_exposed",
            host=gw.host,
            note="the embedded demo's jwt_secret is public: anyone can sign tokens for it; "
            "serve your own --config beyond loopback",
        )
    check_functions(settings)
    workers = auto_workers() if gw.workers == "auto" else int(gw.workers)
    try:  # with workers, the master only holds the port: each worker listens on it itself
        sock = listening_socket(gw.host, gw.port, listen=workers == 1)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {gw.host}:{gw.port}: {exc.strerror}") from None
    port = sock.getsockname()[1]
    settings = msgspec.structs.replace(settings, gateway=msgspec.structs.replace(gw, port=port))
    scheme = "wss" if gw.tls_certfile else "ws"
    banner = (
        f"genapi listening on {scheme}://{gw.host}:{port}{gw.path.rstrip('/')}/websocket "
        f"(workers={workers}, pid={os.getpid()})"
    )
    control = control_socket(settings)
    if workers == 1:
        bound = control.getsockname() if control is not None else None
        address = f"{bound[0]}:{bound[1]}" if bound is not None else ""
        uvloop.run(
            serve_worker(
                settings, sock, control=control, ready=lambda _g: print(f"{banner} control on {address}", flush=True)
            )
        )
        return 0
    from genapi.host.master import Master

    return uvloop.run(Master(settings, workers, control, gw.shutdown_grace_ms / 1000, banner).run())


def auto_workers() -> int:
    """`workers = "auto"`: the CPUs this process may use (`host/cpus.py`), logged with their source."""
    from genapi.host.cpus import usable_cpus

    cpus = usable_cpus()
    quota = "none" if cpus.quota is None else f"{cpus.quota:g}"
    log.info(
        "workers_auto",
        workers=cpus.usable,
        source=cpus.source,
        affinity=cpus.affinity,
        cgroup_quota=quota,
        host_cpus=os.cpu_count(),
    )
    return cpus.usable


def control_socket(settings: Settings) -> socket.socket:
    """The control port's socket, bound now so a busy port is refused before serving; loopback
    only without a cluster secret (`host/control_auth.py`)."""
    from genapi.host.control_auth import control_host
    from genapi.nodes.rpc import listening_socket

    gw = settings.gateway
    host = control_host(settings)
    try:
        return listening_socket(host, gw.control_port)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on the control port {host}:{gw.control_port}: {exc.strerror} "
            "(set [gateway] control_port or --control-port; 0 picks a free port)"
        ) from None
