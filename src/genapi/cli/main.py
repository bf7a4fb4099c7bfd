"""The `genapi` command."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time

import msgspec

from genapi import __version__, log
from genapi.cli import admin
from genapi.config import (
    DISCOVERY_TARGET,
    ConfigError,
    LogLevel,
    Port,
    Positive,
    Settings,
    Workers,
    auth_problems,
    load,
)
from genapi.request.signatures import callable_problems
from genapi.schema import field_problem, literal_values, render
from genapi.structs import FunConfig, split_target


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="genapi", description="genapi: a dynamic API gateway over WebSockets (Phoenix Channels protocol)."
    )
    p.add_argument("--version", action="version", version=f"genapi {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    s = sub.add_parser(
        "serve",
        help="run the gateway",
        description="Run the gateway. Clients connect to ws://HOST:PORT/socket/websocket. Without "
        "--config it serves the embedded default: 127.0.0.1:4000 with the demo service.",
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
        help='worker processes sharing the port; "auto" = one per CPU (overrides [gateway] workers)',
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
    c = sub.add_parser(
        "check",
        help="validate a config file and exit",
        description="Load a config file, import every function, hook and callback it names, "
        "check that each can take the arguments its config passes, and report "
        "every problem at once (exit status 2). Prints the functions on success.",
    )
    c.add_argument("--config", metavar="FILE", help="TOML config file; default: the embedded demo config")
    t = sub.add_parser(
        "token",
        help="print a signed JWT for a user (for development and tests)",
        description="Print a JWT signed as the config's [auth] verifies it: with jwt_secret "
        "(HS256/384/512), or with jwt_public_key given the matching --private-key "
        "(RS256/384/512). Claims: sub, roles, device_id, iat, exp.",
    )
    t.add_argument("--sub", required=True, metavar="USER", help="the user id (the sub claim)")
    t.add_argument(
        "--role", action="append", default=[], metavar="ROLE", help="a role in the roles claim; repeat for several"
    )
    t.add_argument("--device", metavar="DEVICE", help="the device_id claim")
    t.add_argument(
        "--ttl",
        type=int,
        default=3600,
        metavar="SECONDS",
        help="seconds until the token expires (exp claim; default 3600)",
    )
    t.add_argument(
        "--config",
        metavar="FILE",
        help="TOML config file whose [auth] verifies the token; default: the embedded demo config",
    )
    t.add_argument(
        "--private-key", metavar="FILE", help="PEM private key matching [auth] jwt_public_key (RS* algorithms)"
    )
    svc = sub.add_parser(
        "service",
        help="run a service node (the genapi.service SDK)",
        description="Service nodes serve functions declared with genapi.service to gateways.",
    )
    svc_sub = svc.add_subparsers(dest="service_command", metavar="COMMAND", required=True)
    r = svc_sub.add_parser(
        "run",
        help="run a service node: listen for calls and push its configs to the gateways",
        description="Import MODULE:ATTR (a genapi.service.Service), listen for gateway calls on --listen, "
        "and push the service's function configs to each --gateway's control port (again "
        "whenever a gateway comes back). The cluster secret comes from GENAPI_CLUSTER_SECRET.",
    )
    r.add_argument("service", metavar="MODULE:ATTR", help="where the Service object is, e.g. inventory:svc")
    r.add_argument(
        "--listen",
        default="127.0.0.1:7001",
        metavar="HOST:PORT",
        help="address to listen on for gateway calls (default 127.0.0.1:7001; port 0 picks one)",
    )
    r.add_argument(
        "--gateway",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="a gateway's control port to push to; repeat for several (default 127.0.0.1:4001)",
    )
    r.add_argument(
        "--advertise",
        metavar="HOST:PORT",
        help="the address gateways call this node at (default: the listening address)",
    )
    r.add_argument("--force", action="store_true", help="push even when the gateway has this config_version")
    r.add_argument("--log-level", choices=literal_values(LogLevel), default="info", help="log verbosity (default info)")
    r.add_argument("--log-format", choices=["text", "json"], default="text")
    admin.add_parser(sub)
    rl = sub.add_parser(
        "ratelimit",
        help="rate limits of a running gateway: status, reset, change",
        description="Talks to a running gateway's control port (the cluster secret from "
        "GENAPI_CLUSTER_SECRET). Changes apply to every worker before the command returns.",
    )
    rl_sub = rl.add_subparsers(dest="rl_command", metavar="COMMAND", required=True)
    st = rl_sub.add_parser("status", help="a key value's use under each limit on that key (used, remaining, resets in)")
    st.add_argument("key", help="user_id, device_id, ip_address or an argument's name")
    st.add_argument("value", help="e.g. the user id")
    st.add_argument("--api", metavar="SERVICE.REQUEST_TYPE", help="that function's limits instead of the global ones")
    rs = rl_sub.add_parser("reset", help="forget a key value's use (every limit on that key)")
    rs.add_argument("key")
    rs.add_argument("value")
    cf = rl_sub.add_parser("config", help="print the rate-limit config, or replace it (--set FILE.json)")
    cf.add_argument("--set", metavar="FILE", help="a JSON file with the whole [rate_limiter] config to apply")
    ag = rl_sub.add_parser("add-global", help="add (or replace) a global limit on KEY")
    ag.add_argument("key")
    ag.add_argument("max_requests", type=int)
    ag.add_argument("window_ms", type=int)
    rg = rl_sub.add_parser("remove-global", help="remove the global limit on KEY")
    rg.add_argument("key")
    for cmd in (st, rs, cf, ag, rg):
        cmd.add_argument(
            "--control",
            default="127.0.0.1:4001",
            metavar="HOST:PORT",
            help="the gateway's control port (default 127.0.0.1:4001)",
        )
        cmd.add_argument("--json", action="store_true", help="print the answer as JSON")
    ap = sub.add_parser(
        "apis",
        help="the functions clients may call, with their arguments (JSON Schema)",
        description="What genapi.list_apis answers: from a running gateway's control port "
        "(--control, the cluster secret from GENAPI_CLUSTER_SECRET; the default) or "
        "from a config file (--config). Every enabled function unless --user/--role "
        "ask for what that caller may call.",
    )
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--control", metavar="HOST:PORT", help="the gateway's control port (default 127.0.0.1:4001)")
    where.add_argument("--config", metavar="FILE", help="a config file instead of a running gateway")
    ap.add_argument("--user", metavar="USER", help="list what this user may call")
    ap.add_argument(
        "--role", action="append", default=[], metavar="ROLE", help="a role of the caller; repeat for several"
    )
    ap.add_argument("--service", metavar="SERVICE", help="only this service's functions")
    ap.add_argument("--json", action="store_true", help="print the list as JSON")
    for cmd in (s, c, r):
        cmd.add_argument(
            "--app-dir",
            metavar="DIR",
            default=".",
            help="directory put first on the import path for the config's modules (default: the current directory)",
        )
    return p


def _settings(args: argparse.Namespace) -> Settings:
    """The config with the command line's overrides; every problem of the file in one
    ConfigError: its keys and values, and the callables of the functions that are valid."""
    try:
        settings = load(args.config)
    except ConfigError as exc:
        if exc.partial is None:
            raise
        auth = [] if any(p.startswith("[auth]") for p in exc.problems) else auth_problems(exc.partial.auth)
        raise ConfigError(exc.problems + auth + callable_problems(exc.partial, exc.numbers)) from None
    gw = settings.gateway
    changes = {}
    if getattr(args, "host", None):
        changes["host"] = args.host
    if getattr(args, "port", None) is not None:
        changes["port"] = args.port
    if getattr(args, "control_port", None) is not None:
        changes["control_port"] = args.control_port
    if getattr(args, "drain_timeout", None) is not None:
        changes["shutdown_grace_ms"] = int(args.drain_timeout * 1000)
    if getattr(args, "workers", None):
        changes["workers"] = int(args.workers) if args.workers.isdigit() else args.workers
    problems = [
        problem
        for key, typ in (("port", Port), ("control_port", Port), ("workers", Workers), ("shutdown_grace_ms", Positive))
        if key in changes and (problem := field_problem(f"--{key}", typ, changes[key]))
    ]
    if problems:  # the file's own rules, so the command line cannot set what the file may not
        raise ConfigError(problems)
    if getattr(args, "log_level", None):
        changes["log_level"] = args.log_level
    if getattr(args, "log_format", None):
        changes["log_format"] = args.log_format
    if changes:
        settings = msgspec.structs.replace(settings, gateway=msgspec.structs.replace(gw, **changes))
    problems = auth_problems(settings.auth) + callable_problems(settings)
    if problems:
        raise ConfigError(problems)
    return settings


def _check_functions(settings: Settings) -> None:
    """Imports and compiles every function now, so a bad config fails before listening."""
    from genapi.request.pipeline import Pipeline

    try:
        Pipeline(settings).pool.shutdown()
    except ValueError as exc:
        raise ConfigError(f"{settings.source}: {exc}") from None


def serve(settings: Settings) -> int:
    import uvloop

    from genapi.gateway.listener import listening_socket
    from genapi.gateway.worker import serve as serve_worker

    gw = settings.gateway
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the loop's handler logs it: never a crash
    log.setup(gw.log_level, gw.log_format)
    if settings.source == "<embedded default>" and gw.host not in ("127.0.0.1", "::1", "localhost"):
        log.warning(
            "demo_config_exposed",
            host=gw.host,
            note="the embedded demo's jwt_secret is public: anyone can sign tokens for it; "
            "serve your own --config beyond loopback",
        )
    _check_functions(settings)
    workers = (os.cpu_count() or 1) if gw.workers == "auto" else int(gw.workers)
    try:  # with workers, the master only holds the port: each worker listens on it itself
        sock = listening_socket(gw.host, gw.port, listen=workers == 1)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {gw.host}:{gw.port}: {exc.strerror}") from None
    port = sock.getsockname()[1]
    settings = msgspec.structs.replace(settings, gateway=msgspec.structs.replace(gw, port=port))
    banner = (
        f"genapi listening on ws://{gw.host}:{port}{gw.path.rstrip('/')}/websocket "
        f"(workers={workers}, pid={os.getpid()})"
    )
    control = _control_socket(settings)
    if workers == 1:
        uvloop.run(
            serve_worker(
                settings,
                sock,
                control=control,
                ready=lambda g: print(f"{banner} control on {g.control.address}", flush=True),
            )
        )
        return 0
    from genapi.host.master import Master

    return uvloop.run(Master(settings, workers, control, gw.shutdown_grace_ms / 1000, banner).run())


def _control_socket(settings: Settings) -> socket.socket:
    """The control port's socket, bound now so a busy port is refused before serving; loopback
    only without a cluster secret."""
    from genapi.nodes.rpc import listening_socket, loopback_only, secret_from

    gw = settings.gateway
    host = loopback_only(gw.control_host, secret_from(settings.cluster.secret), "control port")
    try:
        return listening_socket(host, gw.control_port)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on the control port {host}:{gw.control_port}: {exc.strerror} "
            "(set [gateway] control_port or --control-port; 0 picks a free port)"
        ) from None


def _builtin(cfg: FunConfig) -> bool:
    """genapi.list_apis, which [gateway] discovery adds: not one of the file's functions."""
    return split_target(cfg.mfa)[0] == DISCOVERY_TARGET


def _describe(cfg: FunConfig) -> str:
    """One loaded function as `genapi check` lists it: service.request_type version
    response_type mfa (arguments), e.g. `demo.echo 1.0.0 sync genapi.demo:echo (text: string,
    n: num = 1)`; `{...}` for arg_orders = "map" (one dict)."""
    target, predefined = split_target(cfg.mfa)
    mfa = f"{target} {render(predefined)}" if predefined else target
    return (
        f"{cfg.service}.{cfg.request_type} {cfg.version or '-'} {cfg.response_type} {mfa} "
        f"{_arguments(cfg)}{' (disabled)' if cfg.disabled else ''}"
    )


def _arguments(cfg: FunConfig) -> str:
    specs = cfg.arg_types or {}
    names = list(cfg.arg_orders) if isinstance(cfg.arg_orders, list) and cfg.arg_orders else list(specs)
    parts = []
    for name in names:
        spec = specs.get(name)
        if isinstance(spec, dict):
            text = f"{name}: {spec.get('type')}"
            if "default_value" in spec:
                text += f" = {render(spec['default_value'])}"
        else:
            text = f"{name}: {spec[0] if isinstance(spec, list) else spec}"
        parts.append(text)
    args = "{" + ", ".join(parts) + "}" if cfg.arg_orders == "map" else ", ".join(parts)
    if cfg.request_info:
        args = f"{args}, request_info" if args else "request_info"
    return f"({args})"


def token(args: argparse.Namespace) -> str:
    """A JWT the config's [auth] accepts for `args.sub`; ConfigError naming the key when the
    config cannot verify tokens or the key given does not fit."""
    import jwt

    settings = load(args.config)
    auth = settings.auth
    if args.ttl <= 0:
        raise ConfigError(f"--ttl: must be a positive number of seconds, got {args.ttl}")
    if not args.sub:
        raise ConfigError("--sub: must be a non-empty user id")
    now = int(time.time())
    claims: dict[str, object] = {"sub": args.sub, "iat": now, "exp": now + args.ttl}
    if args.role:
        claims["roles"] = list(args.role)
    if args.device:
        claims["device_id"] = args.device
    where = settings.source
    if auth.jwt_secret is not None:
        algorithm = auth.jwt_algorithm or "HS256"
        if not algorithm.startswith("HS"):
            raise ConfigError(f"{where}: [auth] jwt_algorithm {algorithm} needs jwt_public_key, not jwt_secret")
        if args.private_key:
            raise ConfigError(
                f"{where}: [auth] verifies {algorithm} tokens with jwt_secret; --private-key is "
                "for configs with jwt_public_key"
            )
        return jwt.encode(claims, auth.jwt_secret, algorithm=algorithm)
    if auth.jwt_public_key is not None:
        algorithm = auth.jwt_algorithm or "RS256"
        if not args.private_key:
            raise ConfigError(
                f"{where}: [auth] verifies {algorithm} tokens with jwt_public_key "
                f"{auth.jwt_public_key}; pass the matching private key: --private-key FILE"
            )
        try:
            with open(args.private_key, encoding="utf-8") as f:
                private = f.read()
            with open(auth.jwt_public_key, encoding="utf-8") as f:
                public = f.read()
        except OSError as exc:
            raise ConfigError(f"cannot read key file {exc.filename}: {exc.strerror}") from None
        try:
            encoded = jwt.encode(claims, private, algorithm=algorithm)
            jwt.decode(encoded, public, algorithms=[algorithm])
        except (ValueError, TypeError, jwt.InvalidTokenError) as exc:
            raise ConfigError(
                f"--private-key {args.private_key}: cannot sign {algorithm} tokens that "
                f"[auth] jwt_public_key {auth.jwt_public_key} verifies: {exc}"
            ) from None
        return encoded
    via = (
        f"tokens are checked by [auth] callback {auth.callback}, which genapi token cannot sign for"
        if auth.callback
        else "nothing verifies tokens"
    )
    raise ConfigError(
        f"{where}: [auth] sets no jwt_secret (HS256) or jwt_public_key (RS256): {via}; set "
        "[auth] jwt_secret to sign and verify tokens"
    )


def _report(exc: ConfigError, source: str) -> None:
    """One problem on one line; several under a line that counts them, so none is missed."""
    if len(exc.problems) == 1:
        print(f"genapi: error: {exc.problems[0]}", file=sys.stderr)
        return
    print(f"genapi: error: {source}: {len(exc.problems)} problems", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)


def _import_path(app_dir: str) -> None:
    """Puts `app_dir` first on the import path, as uvicorn's --app-dir does, so a `myapp.py` next
    to the config imports without PYTHONPATH. With the `genapi` script sys.path[0] is the
    script's own directory; with `python -m genapi` it is the current directory."""
    path = os.path.abspath(app_dir)
    if path in sys.path:
        sys.path.remove(path)
    sys.path.insert(0, path)


def _ratelimit(args: argparse.Namespace) -> int:
    """`genapi ratelimit ...` against a running gateway's control port; exit 2 when refused."""
    import asyncio
    import json

    from genapi.nodes import rpc

    cmd = args.rl_command
    if cmd == "status":
        service, _, request_type = (args.api or "").partition(".")
        target, params = "$rl_status", [args.key, args.value, service or None, request_type or None]
    elif cmd == "reset":
        target, params = "$rl_reset", [args.key, args.value]
    elif cmd == "config" and args.set:
        try:
            with open(args.set, encoding="utf-8") as f:
                target, params = "$rl_update", [json.load(f)]
        except (OSError, ValueError) as exc:
            print(f"genapi ratelimit config: cannot read {args.set}: {exc}", file=sys.stderr)
            return 2
    elif cmd == "config":
        target, params = "$rl_config", []
    elif cmd == "add-global":
        target, params = (
            "$rl_global_add",
            [{"key": args.key, "max_requests": args.max_requests, "window_ms": args.window_ms}],
        )
    else:
        target, params = "$rl_global_remove", [args.key]

    async def ask() -> object:
        peer = await rpc.connect(args.control, rpc.secret_from(None), "genapi-cli")
        try:
            return await peer.request(target, params, 10.0)
        finally:
            peer.close()

    try:
        answer = asyncio.run(ask())
    except rpc.RpcError as exc:
        print(f"genapi ratelimit {cmd}: {exc.text}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(answer))
    elif cmd == "status":
        for row in answer if isinstance(answer, list) else []:
            print(
                f"{row['key']}={row['value']}: {row['used']}/{row['max_requests']} used per {row['window_ms']} ms, "
                f"{row['remaining']} remaining, resets in {row['resets_in_ms']} ms"
            )
        if not answer:
            print(f"no limit on {args.key}" + (f" for {args.api}" if args.api else ""))
    else:
        print(json.dumps(answer, indent=2))
    return 0


def _apis(args: argparse.Namespace) -> int:
    """`genapi apis`: exit 2 when the gateway or the config cannot be read."""
    import asyncio
    import json

    from genapi._core.validate import Limits
    from genapi.nodes import rpc
    from genapi.request import discovery

    limits: Limits | None
    if args.config:
        try:
            settings = load(args.config)
        except ConfigError as exc:
            _report(exc, args.config)
            return 2
        gw = settings.gateway
        configs, limits = settings.functions, Limits(gw.string_max_bytes, gw.list_max_items, gw.map_max_items)
    else:
        control = args.control or "127.0.0.1:4001"
        try:
            configs, limits = asyncio.run(discovery.from_control(control))
        except (rpc.RpcError, OSError) as exc:
            print(f"genapi apis: {control}: {getattr(exc, 'text', None) or exc}", file=sys.stderr)
            return 2
        if limits is None:
            print(
                f"genapi apis: discovery is off on {control}: limits not set in a spec are shown as the "
                "defaults (3000 bytes, 1000 items)",
                file=sys.stderr,
            )
    caller = discovery.Caller(args.user, tuple(args.role)) if args.user or args.role else None
    listed = discovery.apis(configs, limits or Limits(), caller, args.service)
    if args.json:
        print(json.dumps(listed))
    else:
        for entry in listed:
            print(discovery.summary(entry))
    return 0


def _run_service(args: argparse.Namespace) -> int:
    """`genapi service run MODULE:ATTR`: exit status 2 when the Service cannot be loaded."""
    log.setup(args.log_level, args.log_format)
    try:
        if args.service.count(":") != 1:
            raise ValueError(f'service must be "module:attribute", got {args.service!r}')
        module, attr = args.service.split(":")
        import importlib

        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as exc:
        print(f"genapi service run: cannot load {args.service}: {exc}", file=sys.stderr)
        return 2
    from genapi.nodes.sdk import Service

    if not isinstance(obj, Service):
        print(
            f"genapi service run: {args.service} is a {type(obj).__name__}, not a genapi.service.Service",
            file=sys.stderr,
        )
        return 2
    try:
        obj.run(
            listen=args.listen, gateways=args.gateway or ["127.0.0.1:4001"], advertise=args.advertise, force=args.force
        )
    except OSError as exc:
        print(f"genapi service run: cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "app_dir", None) is not None:
        _import_path(args.app_dir)
    if args.command == "service":
        return _run_service(args)
    if args.command == "admin":
        return admin.run(args)
    if args.command == "ratelimit":
        return _ratelimit(args)
    if args.command == "apis":
        return _apis(args)
    if args.command == "token":
        try:
            print(token(args))
        except ConfigError as exc:
            _report(exc, args.config or "<embedded default>")
            return 2
        return 0
    try:
        settings = _settings(args)
        if args.command == "check":
            _check_functions(settings)
            own = [cfg for cfg in settings.functions if not _builtin(cfg)]
            for cfg in own:
                print(_describe(cfg))
            print(f"{settings.source}: ok, {len(own)} function(s)")
            return 0
        return serve(settings)
    except ConfigError as exc:
        _report(exc, getattr(args, "config", None) or "<embedded default>")
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
