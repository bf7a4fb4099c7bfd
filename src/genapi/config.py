"""The TOML config file → typed settings. The rules are in the settings' types (schema.py words
them); a bad file is refused with every problem at once, each naming the table, the key and the
problem. `genapi check` and `genapi serve` both go through parse(), so they refuse alike."""

from __future__ import annotations

import importlib.util
import os
import tomllib
from collections.abc import Mapping
from importlib import resources
from typing import Annotated, Any, Literal

import msgspec

from genapi.environment import (
    EMBEDDED,
    apply_env,
    expand_doc,
    hmac_problems,
    resolve_secrets,
)
from genapi.errors import ConfigError
from genapi.schema import did_you_mean, render, table_problems
from genapi.structs import FUN_CONFIG_RULES, FunConfig, NonEmpty, address_problem, function_label, version_words

# The rules of [gateway] and [auth], in their types (see schema.py for how they are worded).
LogLevel = Literal["debug", "info", "warning", "error"]
JwtAlgorithm = Literal["HS256", "HS384", "HS512", "RS256", "RS384", "RS512"]
Positive = Annotated[int, msgspec.Meta(gt=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535, description="must be between 0 and 65535 (0 = any free port)")]
TopicBytes = Annotated[int, msgspec.Meta(ge=1, le=65536, description="must be between 1 and 65536 (bytes)")]
UnsentBytes = Annotated[
    int, msgspec.Meta(ge=65536, description=("must be at least 65536 (the socket's write buffer high-water mark)"))
]
MetricsToken = Annotated[
    Annotated[str, msgspec.Meta(min_length=16, max_length=256, pattern=r"^[!-~]+$")] | None,
    msgspec.Meta(
        description="must be 16 to 256 printable ASCII characters without spaces (clients send it as "
        "`Authorization: Bearer <token>`)"
    ),
]
Workers = Annotated[Positive | Literal["auto"], msgspec.Meta(description='must be a positive integer or "auto"')]


CheckOrigin = Annotated[
    bool | list[str],
    msgspec.Meta(
        description='must be true, false or a list of origins such as ["https://example.com", "//example.com", '
        '"https://*.example.com"]'
    ),
]


class GatewaySettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Port = 4000
    workers: Workers = 1
    event: NonEmpty = "phoenix_gen_api"
    metrics: bool = True  # count requests for GET /metrics (host-wide, Prometheus text)
    topics: list[str] = msgspec.field(default_factory=lambda: ["*"])
    detail_error: bool = False
    path: str = "/socket"
    max_payload_bytes: Positive = 1_000_000
    idle_timeout_ms: Positive = 60_000
    max_in_flight: Positive = 100
    max_queued: Positive = 1000
    max_queued_bytes: Positive = 16_000_000
    max_channels: Positive = 100
    max_topic_bytes: TopicBytes = 256
    max_unsent_bytes: UnsentBytes = 16_000_000
    drain_timeout_ms: Positive = 30_000
    shutdown_grace_ms: Positive = 10_000
    thread_pool_size: Positive = 32
    thread_queue_limit: Positive = 1000
    string_max_bytes: Positive = 3000
    list_max_items: Positive = 1000
    map_max_items: Positive = 1000
    log_level: LogLevel = "warning"
    log_format: Literal["text", "json"] = "text"
    check_origin: CheckOrigin = True
    trusted_proxies: list[str] = []
    control_host: str = "127.0.0.1"
    control_port: Port = 4001
    discovery: bool = True  # serve genapi.list_apis (discovery_function)
    # GET /explorer: the API explorer page (it shows no more than discovery does to the caller)
    explorer: bool = True
    # module prefixes a pushed or pulled config may name for code the gateway itself runs (hooks,
    # permission callback, a custom node mode or node resolver); empty: none at all
    allowed_modules: list[NonEmpty] = []
    # built-in TLS (wss://): a PEM certificate chain and its unencrypted private key, both or neither
    tls_certfile: NonEmpty | None = None
    tls_keyfile: NonEmpty | None = None
    # when set, GET /metrics and /ready need `Authorization: Bearer <metrics_token>` (/health stays open)
    metrics_token: MetricsToken = None
    # GET /dashboard: the operators' live page (gateway/dashboard.py), behind admin authentication
    # (a token carrying `dashboard_role`, or the cluster secret as a bearer credential)
    dashboard: bool = False
    dashboard_role: NonEmpty = "admin"

    @property
    def max_message_bytes(self) -> int:
        """The largest WebSocket frame or reassembled message read (1009 beyond it): room for a
        max_payload_bytes payload written with escapes, so its size is measured, not guessed."""
        return 2 * self.max_payload_bytes + 65536


class AuthSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    jwt_secret: str | None = None
    jwt_secret_file: str | None = None  # a file holding jwt_secret (Docker/Kubernetes secrets)
    jwt_public_key: str | None = None
    jwt_algorithm: JwtAlgorithm | None = None
    callback: str | None = None
    require_verified_user_id: bool = True
    require_exp: bool = True


class ClusterSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Service nodes: the shared secret, pulls, and what protects each node."""

    secret: str | None = None
    secret_file: str | None = None  # a file holding the secret (Docker/Kubernetes secrets)
    pull_interval_ms: Positive = 30_000
    pull_timeout_ms: Positive = 5_000
    connect_timeout_ms: Positive = 5_000
    node_max_in_flight: Positive = 1000
    breaker_threshold: Positive = 10
    breaker_cooldown_ms: Positive = 60_000
    max_services: Positive = 256  # services pushed or pulled, held at once
    max_functions: Positive = 50_000  # functions in the gateway's registry, its own file's included
    max_pushes_per_minute: Positive = 120  # from one peer address


NodeList = Annotated[list[NonEmpty], msgspec.Meta(min_length=1, description='must be a non-empty list of "host:port"')]


class ServiceSource(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A service whose configs the gateway pulls from its nodes (`[[services]]`)."""

    service: NonEmpty
    nodes: NodeList


LimitScope = Annotated[Literal["host", "cluster"], msgspec.Meta(description='must be "host" or "cluster"')]


class GlobalLimit(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """A limit on every request: at most `max_requests` per `window_ms` per value of `key`
    (user_id, device_id, ip_address, or an argument's name). `scope`: counted on this host
    (its shared table) or across every host of the `[engine]` (a sliding log in Redis)."""

    key: NonEmpty
    max_requests: Positive
    window_ms: Positive
    scope: LimitScope = "host"


class ApiLimit(GlobalLimit, kw_only=True, forbid_unknown_fields=True):
    """A limit on one function (service, request_type)."""

    service: NonEmpty
    request_type: NonEmpty


class RateLimiterSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """PhoenixGenApi's rate limiter: sliding windows, exact across the host's workers (one
    shared table of `table_slots` keys, each remembering up to the largest max_requests)."""

    enabled: bool = True
    fail_open: bool = True
    global_limits: list[GlobalLimit] = []
    api_limits: list[ApiLimit] = []
    table_slots: Positive = 16384
    max_requests_cap: Positive = 100  # the largest max_requests a limit added at runtime may have


class RelaySettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Relay groups (`genapi.relay`): bounds, so clients creating groups cannot grow the
    gateway's memory without limit."""

    service: NonEmpty | None = None  # serve the nine operations as <service>.<op> (relay_functions)
    max_groups: Positive = 100_000  # groups on the host; a create beyond it is refused
    max_members: Positive = 10_000  # members of one group; a join beyond it is refused


EngineType = Literal["memory", "redis"]
ENGINE_URL_FORMS = '"redis://host:port[/db]", "rediss://host:port[/db]" (TLS) or "unix:///path/to/redis.sock"'


class EngineSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What several gateway hosts share (`engine/`): `memory` (the default: this host alone) or
    `redis` (a Redis or Valkey server every host names by `url`; each key under `prefix`)."""

    type: EngineType = "memory"
    url: NonEmpty | None = None
    prefix: NonEmpty = "genapi"
    connect_timeout_ms: Positive = 1_000
    command_timeout_ms: Positive = 1_000
    host_id: NonEmpty | None = None  # this host among the others (default: hostname:port)

    def host_name(self, port: int) -> str:
        """The host id: the configured one, else this machine's hostname and the listening port."""
        import socket

        return self.host_id or f"{socket.gethostname()}:{port}"


def _engine_url_rule(url: str | None) -> str | None:
    scheme, sep, rest = (url or "").partition("://")
    if url is None or (sep and rest and scheme in ("redis", "rediss", "unix")):
        return None
    return f"must be {ENGINE_URL_FORMS}, got {render(url)}"


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _engine_problems(engine: EngineSettings | None, limiter: RateLimiterSettings | None) -> list[str]:
    """type = "redis" needs a url; a cluster-scope limit needs the redis engine."""
    problems = []
    if engine is not None and engine.type == "redis" and engine.url is None:
        problems.append(f'[engine] key url: type = "redis" needs the server\'s url, {ENGINE_URL_FORMS}')
    if engine is not None and engine.type == "redis" and not _importable("redis"):
        problems.append('[engine] key type: "redis" needs redis-py: pip install "genapi-gateway[redis]"')
    if limiter is not None and (engine is None or engine.type != "redis"):
        for lim in [*limiter.global_limits, *limiter.api_limits]:
            if lim.scope == "cluster":
                where = f" of {lim.service}.{lim.request_type}" if isinstance(lim, ApiLimit) else ""
                problems.append(
                    f'[rate_limiter] limit on {lim.key}{where}: scope = "cluster" counts across hosts in Redis; '
                    'set [engine] type = "redis" and url, or scope = "host"'
                )
    return problems


class Settings(msgspec.Struct, kw_only=True):
    gateway: GatewaySettings = msgspec.field(default_factory=GatewaySettings)
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)
    cluster: ClusterSettings = msgspec.field(default_factory=ClusterSettings)
    rate_limiter: RateLimiterSettings = msgspec.field(default_factory=RateLimiterSettings)
    relay: RelaySettings = msgspec.field(default_factory=RelaySettings)
    engine: EngineSettings = msgspec.field(default_factory=EngineSettings)
    functions: list[FunConfig] = []
    services: list[ServiceSource] = []
    source: str = "<embedded default>"
    # where each secret (and each setting a GENAPI_* variable set) came from, never the value:
    # {"[auth] jwt_secret": "GENAPI_JWT_SECRET_FILE /run/secrets/jwt", ...}
    origins: dict[str, str] = {}


_TABLES = {
    "gateway": "[gateway]",
    "auth": "[auth]",
    "cluster": "[cluster]",
    "rate_limiter": "[rate_limiter]",
    "relay": "[relay]",
    "engine": "[engine]",
    "functions": "[[functions]]",
    "services": "[[services]]",
}


def _unknown_top_level(name: str) -> str:
    """Words a top-level name that is none of the three tables: a misspelled table, or a key
    written above its table's header."""
    for table, struct in (
        ("gateway", GatewaySettings),
        ("auth", AuthSettings),
        ("cluster", ClusterSettings),
        ("rate_limiter", RateLimiterSettings),
        ("relay", RelaySettings),
        ("engine", EngineSettings),
        ("functions", FunConfig),
        ("services", ServiceSource),
    ):
        if name in struct.__struct_fields__:
            return f"key {name} is outside any table; it belongs under {_TABLES[table]}"
    hint = (
        did_you_mean(name, _TABLES, "[{}]")
        .replace("[functions]", "[[functions]]")
        .replace("[services]", "[[services]]")
    )
    expected = (
        "; expected [gateway], [auth], [cluster], [rate_limiter], [relay], [engine], [[functions]] and [[services]]"
    )
    return f"unknown table {name}{hint or expected}"


def _path_rule(path: str) -> str | None:
    return None if path.startswith("/") else f'must start with "/", got {render(path)}'


def _check_origin_rule(value: bool | list[str]) -> str | None:
    """Every listed origin names a host (Phoenix refuses one it cannot parse a host from)."""
    from genapi.gateway.phoenix import parse_origin

    for entry in value if isinstance(value, list) else []:
        if parse_origin(entry)[1] is None:
            return (
                f'origin {render(entry)} has no host: write "https://{entry}" (that scheme only) or '
                f'"//{entry}" (any scheme)'
            )
    return None


def _addresses_rule(nodes: list[str]) -> str | None:
    return next(filter(None, map(address_problem, nodes)), None)


def _callback_rule(callback: str | None) -> str | None:
    if callback is None or (callback.count(":") == 1 and all(callback.split(":"))):
        return None
    return f'must be "module:function", got {render(callback)}'


def _key_problems(auth: AuthSettings) -> list[str]:
    """jwt_algorithm must fit the key, and the key must be one: HS* signs with jwt_secret,
    RS* verifies with the PEM public key in jwt_public_key (else every connect is refused)."""
    alg = auth.jwt_algorithm
    secret, public = auth.jwt_secret, auth.jwt_public_key
    if secret is not None and public is not None:
        return []  # reported: not both
    if alg is None:
        if secret is None and public is None:
            return []
        alg = "HS256" if secret is not None else "RS256"
    elif secret is None and public is None:
        return [
            f"[auth] key jwt_algorithm: {render(alg)} is set but there is no key; set jwt_secret "
            "(for HS256/HS384/HS512) or jwt_public_key (for RS256/RS384/RS512)"
        ]
    if alg.startswith("HS") and secret is None:
        return [
            f"[auth] key jwt_algorithm: {render(alg)} needs jwt_secret (a shared secret), but "
            "jwt_public_key is set; use RS256/RS384/RS512 with a public key"
        ]
    if alg.startswith("RS") and public is None:
        return [
            f"[auth] key jwt_algorithm: {render(alg)} needs jwt_public_key (a PEM file), but "
            "jwt_secret is set; use HS256/HS384/HS512 with a secret"
        ]
    if public is not None and not os.path.isfile(public):
        return []  # reported: no such file
    import jwt

    try:
        if secret is not None:
            key: str = secret
        else:
            with open(public, encoding="utf-8") as f:  # type: ignore[arg-type]
                key = f.read()
        jwt.get_algorithm_by_name(alg).prepare_key(key)
    except (OSError, UnicodeDecodeError, ValueError, jwt.PyJWTError) as exc:
        which = "jwt_secret" if secret is not None else f"jwt_public_key: {public}"
        return [f"[auth] key {which} is not a key for {alg}: {exc}"]
    return []


def _table(label: str, struct: type, data: Any, rules: tuple = ()) -> tuple[Any, list[str]]:
    """One table → (the struct or None, its problems, each naming label and key)."""
    if not isinstance(data, dict):
        return None, [f"{label}: must be a table, got {render(data)}"]
    keyed, missing = table_problems(struct, data, rules)
    problems = [f"{label} key {text}" for _key, text in keyed]
    if missing:
        problems.append(f"{label}: missing required key{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    if problems:
        return None, problems
    return msgspec.convert(data, struct), []


def _raw_spec_problems(label: str, raw: Any, found: list[str], gw: GatewaySettings | None) -> list[str]:
    """The argument problems of a function whose table has other problems (`genapi check`
    reports the valid functions' own later, with their callables), unless its arg_types or
    arg_orders key is among those problems already."""
    if not isinstance(raw, dict) or not isinstance(raw.get("arg_types"), dict):
        return []
    if any(p.startswith((f"{label} key arg_types", f"{label} key arg_orders")) for p in found):
        return []
    from types import SimpleNamespace

    from genapi._core.validate import Limits
    from genapi.request.signatures import spec_problems

    gw = gw or GatewaySettings()
    limits = Limits(gw.string_max_bytes, gw.list_max_items, gw.map_max_items)
    spec = SimpleNamespace(
        arg_types=raw["arg_types"],
        arg_orders=raw.get("arg_orders"),
        request_type=raw.get("request_type") if isinstance(raw.get("request_type"), str) else "",
    )
    return spec_problems(label, spec, limits)


def parse(text: str, source: str = "<string>", env: Mapping[str, str] | None = None) -> Settings:
    """Parses and checks a whole config. Raises one ConfigError listing every problem of the
    file (each naming table, key and problem), so one run shows all there is to fix. `env`
    (default os.environ) fills ${VAR} in string values and its GENAPI_* variables override the
    file; each *_file secret is read."""
    env = os.environ if env is None else env
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    doc, expanded, unexpanded, failed = expand_doc(doc, env)
    origins, problems = apply_env(doc, env)
    problems += resolve_secrets(doc, origins, expanded, source)
    for name in sorted(set(doc) - set(_TABLES)):
        problems.append(f"{source}: {_unknown_top_level(name)}")
    gw, found = _table(
        "[gateway]",
        GatewaySettings,
        doc.get("gateway", {}),
        (("path", _path_rule), ("check_origin", _check_origin_rule)),
    )
    problems += found
    auth, found = _table("[auth]", AuthSettings, doc.get("auth", {}), (("callback", _callback_rule),))
    problems += found
    if auth is not None:
        if auth.jwt_secret is not None and auth.jwt_public_key is not None:
            problems.append("[auth]: set jwt_secret (HS256) or jwt_public_key (RS256), not both")
        if auth.jwt_public_key is not None and not os.path.isfile(auth.jwt_public_key):
            problems.append(f"[auth] key jwt_public_key: no such file {auth.jwt_public_key}")
        problems += _key_problems(auth)
    cluster, found = _table("[cluster]", ClusterSettings, doc.get("cluster", {}))
    problems += found
    limiter, found = _table("[rate_limiter]", RateLimiterSettings, doc.get("rate_limiter", {}))
    problems += found
    relay, found = _table("[relay]", RelaySettings, doc.get("relay", {}))
    problems += found
    problems += hmac_problems(auth, cluster, origins)
    engine, found = _table("[engine]", EngineSettings, doc.get("engine", {}), (("url", _engine_url_rule),))
    problems += found
    if not found:
        problems += _engine_problems(engine, limiter)
    services = []
    raw_services = doc.get("services", [])
    if not isinstance(raw_services, list):
        problems.append("services: must be an array of tables ([[services]])")
        raw_services = []
    for i, raw in enumerate(raw_services, 1):
        src, found = _table(f"[[services]] #{i}", ServiceSource, raw, (("nodes", _addresses_rule),))
        problems += found
        if src is not None:
            services.append(src)
    raw_functions = doc.get("functions", [])
    if not isinstance(raw_functions, list):
        problems.append("functions: must be an array of tables ([[functions]])")
        raw_functions = []
    functions = []
    numbers = []
    seen: set[tuple[Any, ...]] = set()
    for i, raw in enumerate(raw_functions, 1):
        label = function_label(i, raw)
        cfg, found = _table(label, FunConfig, raw, FUN_CONFIG_RULES)
        problems += found
        if cfg is None and found:  # its arguments now too, not once its other keys are right
            problems += _raw_spec_problems(label, raw, found, gw)
        if cfg is not None and not any(f.startswith(f"{label} key ") for f in failed):
            functions.append(cfg)
            numbers.append(i)
        if isinstance(raw, dict):  # a duplicate is one even when either entry has other problems
            ident = tuple(str(raw.get(key)) for key in ("service", "request_type", "version"))
            version = None if raw.get("version") is None else str(raw["version"])
            if ident in seen:
                problems.append(f"{label}: duplicate function {ident[0]}.{ident[1]} {version_words(version)}")
            seen.add(ident)
    if relay is not None and relay.service is not None:  # the file's own entries of the same name win
        functions += [
            cfg for cfg in relay_functions(relay.service) if (cfg.service, cfg.request_type, "None") not in seen
        ]
    if gw is not None and gw.discovery and (DISCOVERY_SERVICE, DISCOVERY_REQUEST_TYPE, "None") not in seen:
        functions.append(discovery_function(gw))
    problems = unexpanded + [p for p in problems if not p.startswith(tuple(failed))]
    if problems:
        partial = Settings(
            gateway=gw or GatewaySettings(),
            auth=auth or AuthSettings(),
            cluster=cluster or ClusterSettings(),
            rate_limiter=limiter or RateLimiterSettings(),
            relay=relay or RelaySettings(),
            engine=engine or EngineSettings(),
            functions=functions,
            services=services,
            source=source,
            origins=origins,
        )
        raise ConfigError(problems, partial, numbers)
    return Settings(
        gateway=gw,
        auth=auth,
        cluster=cluster,
        rate_limiter=limiter,
        relay=relay,
        engine=engine,
        functions=functions,
        services=services,
        source=source,
        origins=origins,
    )


RELAY_ARGS: dict[str, dict[str, Any]] = {  # each relay operation's client arguments (genapi.relay)
    "create_group": {"group_id": "string", "group_type": "string"},
    "join_group": {"group_id": "string"},
    "leave_group": {"group_id": "string"},
    "accept_member": {"group_id": "string", "user_id": "string"},
    "mute_member": {"group_id": "string", "user_id": "string"},
    "unmute_member": {"group_id": "string", "user_id": "string"},
    "get_group_info": {"group_id": "string"},
    "delete_group": {"group_id": "string"},
    "handle_relay": {"group_id": "string", "message": "any"},
}


def relay_functions(service: str) -> list[FunConfig]:
    """`[relay] service`: the nine relay operations as functions `<service>.<op>`, for any
    authenticated user (the operations themselves check who may do what in a group)."""
    return [
        FunConfig(
            service=service,
            request_type=op,
            mfa=f"genapi.relay:{op}",
            arg_types=args,
            arg_orders=list(args),
            check_permission="any_authenticated",
        )
        for op, args in RELAY_ARGS.items()
    ]


DISCOVERY_SERVICE, DISCOVERY_REQUEST_TYPE = "genapi", "list_apis"
DISCOVERY_TARGET = "genapi.request.discovery:list_apis"


def discovery_function(gw: GatewaySettings) -> FunConfig:
    """`[gateway] discovery` (on by default): `genapi.list_apis`, the functions the caller may
    call (discovery.py). The gateway's argument limits ride along as its predefined argument, so
    whoever reads the registry (`genapi apis` over the control port) builds the same schemas."""
    limits = {
        "string_max_bytes": gw.string_max_bytes,
        "list_max_items": gw.list_max_items,
        "map_max_items": gw.map_max_items,
    }
    return FunConfig(
        service=DISCOVERY_SERVICE,
        request_type=DISCOVERY_REQUEST_TYPE,
        mfa=[DISCOVERY_TARGET, [limits]],
        arg_types={"service": {"type": "string", "allow_nil": True}},
    )


def auth_problems(auth: AuthSettings) -> list[str]:
    """A config that can never answer a request: every request needs a verified user and nothing
    can verify one (no jwt_secret, jwt_public_key or callback)."""
    if not auth.require_verified_user_id or auth.jwt_secret or auth.jwt_public_key or auth.callback:
        return []
    return [
        "[auth]: require_verified_user_id = true (the default) but no jwt_secret, jwt_public_key or "
        'callback can verify a user, so every request would get "Authentication required"; set '
        "[auth] jwt_secret (HS256 tokens), jwt_public_key (RS256) or callback, or "
        "require_verified_user_id = false to serve anonymous clients"
    ]


def tls_problems(gw: GatewaySettings, names: dict[str, str] | None = None) -> list[str]:
    """Built-in TLS: tls_certfile and tls_keyfile both or neither, each readable and valid (the
    pair loaded as the gateway will), so a bad file is refused before the port is served.
    `names`: how a key is called where it came from (a command-line flag)."""
    names = names or {}
    cert_name = names.get("tls_certfile", "[gateway] key tls_certfile")
    key_name = names.get("tls_keyfile", "[gateway] key tls_keyfile")
    cert, key = gw.tls_certfile, gw.tls_keyfile
    if cert is None and key is None:
        return []
    if cert is None or key is None:
        given, missing = (cert_name, key_name) if cert is not None else (key_name, cert_name)
        return [
            f"{given} is set but {missing} is not: built-in TLS needs both, the certificate chain and "
            "its private key (PEM files), or neither to serve plain ws://"
        ]
    from genapi.gateway.tls import server_context

    try:
        server_context(cert, key)
    except ValueError as exc:
        which = key_name if str(exc).startswith(f"{key}:") and key != cert else cert_name
        return [f"{which}: {exc}"]
    return []


def load(path: str | None) -> Settings:
    """Reads the config file, or the embedded default (the demo service) when path is None."""
    if path is None:
        text = resources.files("genapi").joinpath("default.toml").read_text()
        return parse(text, EMBEDDED)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    return parse(text, path)
