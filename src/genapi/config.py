"""The TOML config file → typed settings. The rules are in the settings' types (schema.py words
them); a bad file is refused with every problem at once, each naming the table, the key and the
problem. `genapi check` and `genapi serve` both go through parse(), so they refuse alike."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from importlib import resources
from typing import Annotated, Any, Literal, get_type_hints

import msgspec

from genapi.errors import ConfigError
from genapi.schema import did_you_mean, field_problem, render, table_problems
from genapi.structs import FUN_CONFIG_RULES, FunConfig, NonEmpty, address_problem, version_words

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
    # module prefixes a pushed or pulled config may name for code the gateway itself runs (hooks,
    # permission callback, a custom node mode or node resolver); empty: none at all
    allowed_modules: list[NonEmpty] = []
    # built-in TLS (wss://): a PEM certificate chain and its unencrypted private key, both or neither
    tls_certfile: NonEmpty | None = None
    tls_keyfile: NonEmpty | None = None
    # when set, GET /metrics and /ready need `Authorization: Bearer <metrics_token>` (/health stays open)
    metrics_token: MetricsToken = None

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


class GlobalLimit(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A limit on every request: at most `max_requests` per `window_ms` per value of `key`
    (user_id, device_id, ip_address, or an argument's name)."""

    key: NonEmpty
    max_requests: Positive
    window_ms: Positive


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


class Settings(msgspec.Struct, kw_only=True):
    gateway: GatewaySettings = msgspec.field(default_factory=GatewaySettings)
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)
    cluster: ClusterSettings = msgspec.field(default_factory=ClusterSettings)
    rate_limiter: RateLimiterSettings = msgspec.field(default_factory=RateLimiterSettings)
    relay: RelaySettings = msgspec.field(default_factory=RelaySettings)
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
    "functions": "[[functions]]",
    "services": "[[services]]",
}


# --------------------------------------------------------------------------- the environment
# Precedence, highest first: the command line > GENAPI_* variables > the file (its ${VAR}
# expanded) > the defaults. Every value from the environment is checked by the file's own rules.
EMBEDDED = "<embedded default>"
VALUE_MAX_BYTES = 65536  # an expanded string, a GENAPI_* variable, a *_file secret: at most this
HMAC_MIN_BYTES = 32  # an HMAC key (HS* jwt_secret, the cluster secret): at least this
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INTEGER = re.compile(r"-?[0-9]+")

# GENAPI_* variable -> (table, key) it overrides (README: "Config file reference").
ENV_SETTINGS: dict[str, tuple[str, str]] = {
    "GENAPI_HOST": ("gateway", "host"),
    "GENAPI_PORT": ("gateway", "port"),
    "GENAPI_WORKERS": ("gateway", "workers"),
    "GENAPI_CONTROL_HOST": ("gateway", "control_host"),
    "GENAPI_CONTROL_PORT": ("gateway", "control_port"),
    "GENAPI_LOG_LEVEL": ("gateway", "log_level"),
    "GENAPI_LOG_FORMAT": ("gateway", "log_format"),
    "GENAPI_TLS_CERTFILE": ("gateway", "tls_certfile"),
    "GENAPI_TLS_KEYFILE": ("gateway", "tls_keyfile"),
    "GENAPI_METRICS_TOKEN": ("gateway", "metrics_token"),
    "GENAPI_JWT_SECRET": ("auth", "jwt_secret"),
    "GENAPI_JWT_SECRET_FILE": ("auth", "jwt_secret_file"),
    "GENAPI_CLUSTER_SECRET": ("cluster", "secret"),
    "GENAPI_CLUSTER_SECRET_FILE": ("cluster", "secret_file"),
}
# each secret and the key naming a file that holds it (a pair: one or the other, not both)
SECRETS: tuple[tuple[str, str, str], ...] = (
    ("auth", "jwt_secret", "jwt_secret_file"),
    ("cluster", "secret", "secret_file"),
)
_INTEGER_KEYS = frozenset(("port", "control_port", "workers"))


def expand(value: str, env: Mapping[str, str]) -> tuple[str, list[str], str | None]:
    """`${NAME}`, `${NAME:-default}` (unset or empty: the default) and `$$` (a literal `$`) in
    one string → (the expanded string, the variables it named, a problem or None). A `$`
    before anything else stays as it is. Never recursive: what a variable holds is not expanded
    again; the result is bounded by VALUE_MAX_BYTES."""
    out: list[str] = []
    names: list[str] = []
    i = 0
    size = 0
    while True:
        j = value.find("$", i)
        if j < 0:
            out.append(value[i:])
            break
        out.append(value[i:j])
        following = value[j + 1 : j + 2]
        if following == "$":
            out.append("$")
            i = j + 2
            continue
        if following != "{":
            out.append("$")
            i = j + 1
            continue
        end = value.find("}", j + 2)
        if end < 0:
            return value, names, 'has "${" without a closing "}": write ${NAME}, ${NAME:-default}, or $$ for a "$"'
        body = value[j + 2 : end]
        name, sep, default = body.partition(":-")
        if not _NAME.fullmatch(name):
            return (
                value,
                names,
                (
                    f"{render('${' + body + '}')} is not a variable: write ${{NAME}} or ${{NAME:-default}} "
                    '(NAME: letters, digits and _), or $$ for a "$"'
                ),
            )
        names.append(name)
        got = env.get(name)
        if got is None or (sep and got == ""):
            if not sep:
                return (
                    value,
                    names,
                    (f"environment variable {name} is not set (write ${{{name}:-default}} to give a default)"),
                )
            got = default
        out.append(got)
        size += len(got)
        if size > VALUE_MAX_BYTES:
            return value, names, f"expands to more than {VALUE_MAX_BYTES} characters (${{{name}}})"
        i = end + 1
    return "".join(out), names, None


def _expand_tree(
    node: Any,
    label: str,
    path: str,
    env: Mapping[str, str],
    found: dict[str, list[str]],
    problems: list[str],
    failed: set[str],
) -> Any:
    if isinstance(node, str):
        if "$" not in node:
            return node
        text, names, problem = expand(node, env)
        if problem is not None:
            problems.append(f"{label} key {path}: {problem}")
            failed.add(f"{label} key {re.split(r'[.[]', path)[0]}")
        if names:
            found[f"{label} {path}"] = names
        return text
    if isinstance(node, dict):
        return {
            k: _expand_tree(v, label, f"{path}.{k}" if path else k, env, found, problems, failed)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_expand_tree(v, label, f"{path}[{n}]", env, found, problems, failed) for n, v in enumerate(node)]
    return node


def expand_doc(
    doc: dict[str, Any], env: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, list[str]], list[str], set[str]]:
    """Every string value of a parsed TOML document expanded (keys are not): (the document,
    {"[table] key": variables named}, problems naming table, key and variable, the
    "[table] key k" prefixes of the keys that failed, whose other problems would only echo it)."""
    found: dict[str, list[str]] = {}
    problems: list[str] = []
    failed: set[str] = set()
    out: dict[str, Any] = {}
    for name, value in doc.items():
        if isinstance(value, list) and all(isinstance(v, dict) for v in value):
            out[name] = [
                _expand_tree(
                    v,
                    function_label(n, v) if name == "functions" else f"[[{name}]] #{n}",
                    "",
                    env,
                    found,
                    problems,
                    failed,
                )
                for n, v in enumerate(value, 1)
            ]
        elif isinstance(value, dict):
            out[name] = _expand_tree(value, f"[{name}]", "", env, found, problems, failed)
        else:
            out[name] = _expand_tree(value, "(top level)", name, env, found, problems, failed)
    return out, found, problems, failed


def _field_types(table: str) -> dict[str, Any]:
    struct = {"gateway": GatewaySettings, "auth": AuthSettings, "cluster": ClusterSettings}[table]
    return get_type_hints(struct, include_extras=True)


def apply_env(doc: dict[str, Any], env: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The GENAPI_* variables set (non-empty) written over the document's keys, each checked by
    the rules of the key it sets: ({"[table] key": variable}, problems naming the variable). A
    secret from the environment replaces the file's value and its *_file alike."""
    origins: dict[str, str] = {}
    problems: list[str] = []
    for var, (table, key) in ENV_SETTINGS.items():
        raw = env.get(var)
        if not raw:
            continue
        where = f"{var} (sets [{table}] {key})"
        if len(raw) > VALUE_MAX_BYTES:
            problems.append(f"{where}: longer than {VALUE_MAX_BYTES} characters")
            continue
        value: Any = int(raw) if key in _INTEGER_KEYS and _INTEGER.fullmatch(raw) else raw
        problem = field_problem(where, _field_types(table)[key], value)
        if problem is not None:
            problems.append(problem)
            continue
        section = doc.setdefault(table, {})
        if not isinstance(section, dict):
            continue  # reported with the table
        for _t, secret, file_key in SECRETS:
            if _t == table and key in (secret, file_key):
                section.pop(secret, None)
                section.pop(file_key, None)
        section[key] = value
        origins[f"[{table}] {key}"] = var
    for table, secret, file_key in SECRETS:
        pair = [v for v, (t, k) in ENV_SETTINGS.items() if t == table and k in (secret, file_key)]
        if all(env.get(v) for v in pair):
            problems.append(f"{pair[0]} and {pair[1]} are both set; set one ([{table}] {secret} or {file_key})")
    return origins, problems


def read_secret(path: str, where: str) -> tuple[str | None, str | None]:
    """A secret held in a file (a Docker or Kubernetes secret): its text without the trailing
    newline → (the secret, None), or (None, a problem naming `where` and the path)."""
    try:
        with open(path, "rb") as f:
            data = f.read(VALUE_MAX_BYTES + 1)
    except OSError as exc:
        return None, f"{where}: cannot read {path}: {exc.strerror}"
    if len(data) > VALUE_MAX_BYTES:
        return None, f"{where}: {path} is larger than {VALUE_MAX_BYTES} bytes; expected one secret"
    try:
        text = data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        return None, f"{where}: {path} is not UTF-8 text"
    if not text:
        return None, f"{where}: {path} is empty; expected the secret (one line)"
    return text, None


def _resolve_secrets(
    doc: dict[str, Any], origins: dict[str, str], expanded: dict[str, list[str]], source: str
) -> list[str]:
    """Each secret's *_file read into the secret's key (in place), and where each secret came
    from written into `origins`, never its value."""
    problems: list[str] = []
    for table, secret, file_key in SECRETS:
        section = doc.get(table)
        if not isinstance(section, dict):
            continue
        value, path = section.get(secret), section.get(file_key)
        if value is not None and path is not None:
            problems.append(f"[{table}]: set {secret} or {file_key}, not both")
            continue
        key = f"[{table}] {secret}"
        var = origins.get(key) or origins.get(f"[{table}] {file_key}")
        if isinstance(path, str):
            where = f"{var} (sets [{table}] {file_key})" if var else f"[{table}] key {file_key}"
            text, problem = read_secret(path, where)
            if problem is not None:
                problems.append(problem)
                continue
            section[secret] = text
            origins[key] = f"{var} {path}" if var else f"[{table}] {file_key} {path}"
        elif value is not None and not var:
            names = expanded.get(f"[{table}] {secret}")
            if names:
                origins[key] = "the file, " + ", ".join(f"${{{n}}}" for n in names)
            elif source == EMBEDDED:
                origins[key] = "the embedded demo config: public, for local use only"
            else:
                origins[key] = "the file"
        origins.pop(f"[{table}] {file_key}", None)
    return problems


def _hmac_problems(auth: AuthSettings | None, cluster: ClusterSettings | None, origins: dict[str, str]) -> list[str]:
    """An HMAC key shorter than HMAC_MIN_BYTES is guessable offline from one signed token or
    one handshake: refused, naming the key, where it came from, its length and the bound. The
    embedded demo's secret is excepted (it is public anyway: loopback only, labelled so)."""
    keyed = []
    if auth is not None and auth.jwt_secret is not None and auth.jwt_public_key is None:
        if (auth.jwt_algorithm or "HS256").startswith("HS"):
            keyed.append(
                ("[auth] key jwt_secret", auth.jwt_secret, f"HMAC key of {auth.jwt_algorithm or 'HS256'} tokens")
            )
    if cluster is not None and cluster.secret is not None:
        keyed.append(("[cluster] key secret", cluster.secret, "HMAC key of the control port and node RPC"))
    problems = []
    for key, secret, what in keyed:
        origin = origins.get(key.replace(" key ", " "), "")
        if origin.startswith("the embedded demo"):
            continue
        size = len(secret.encode())
        if size < HMAC_MIN_BYTES:
            via = f" (from {origin})" if origin and origin != "the file" else ""
            problems.append(
                f"{key}{via}: {size} bytes; the {what} must be at least {HMAC_MIN_BYTES} bytes "
                '(make one: python -c "import secrets; print(secrets.token_urlsafe(32))")'
            )
    return problems


def cluster_secret_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """The cluster secret a client of the control port or a service node proves when none is
    given: GENAPI_CLUSTER_SECRET, else the contents of GENAPI_CLUSTER_SECRET_FILE, else None.
    Raises ConfigError naming the variable when the file cannot be read or both are set."""
    env = os.environ if env is None else env
    value, path = env.get("GENAPI_CLUSTER_SECRET"), env.get("GENAPI_CLUSTER_SECRET_FILE")
    if value and path:
        raise ConfigError("GENAPI_CLUSTER_SECRET and GENAPI_CLUSTER_SECRET_FILE are both set; set one")
    if value:
        if len(value) > VALUE_MAX_BYTES:
            raise ConfigError(f"GENAPI_CLUSTER_SECRET: longer than {VALUE_MAX_BYTES} characters")
        return value
    if not path:
        return None
    text, problem = read_secret(path, "GENAPI_CLUSTER_SECRET_FILE")
    if problem is not None:
        raise ConfigError(problem)
    return text


def _unknown_top_level(name: str) -> str:
    """Words a top-level name that is none of the three tables: a misspelled table, or a key
    written above its table's header."""
    for table, struct in (
        ("gateway", GatewaySettings),
        ("auth", AuthSettings),
        ("cluster", ClusterSettings),
        ("rate_limiter", RateLimiterSettings),
        ("relay", RelaySettings),
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
    expected = "; expected [gateway], [auth], [cluster], [rate_limiter], [relay], [[functions]] and [[services]]"
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
    problems += _resolve_secrets(doc, origins, expanded, source)
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
    problems += _hmac_problems(auth, cluster, origins)
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


def function_label(i: int, raw: Any) -> str:
    """`[[functions]] #i (service.request_type)`: how every problem of one entry is named."""
    if isinstance(raw, FunConfig):
        raw = {"service": raw.service, "request_type": raw.request_type}
    label = f"[[functions]] #{i}"
    if isinstance(raw, dict) and raw.get("service") and raw.get("request_type"):
        label += f" ({raw['service']}.{raw['request_type']})"
    return label


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
