"""The config's environment: `${VAR}` in the file's strings, the `GENAPI_*` variables that
override its common settings, and secrets read from `*_file`s. Every value that comes from the
environment is checked by the file's own rules, and where each secret came from is recorded
(never its value) so `serve` can log it and `check` print it.

Precedence, highest first: the command line > GENAPI_* variables > the file (its ${VAR}
expanded) > the defaults.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, get_type_hints

from genapi.errors import ConfigError
from genapi.schema import field_problem, render
from genapi.structs import function_label

if TYPE_CHECKING:
    from genapi.config import AuthSettings, ClusterSettings

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
    from genapi.config import AuthSettings, ClusterSettings, GatewaySettings  # config imports this module

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


def resolve_secrets(
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


def hmac_problems(auth: AuthSettings | None, cluster: ClusterSettings | None, origins: dict[str, str]) -> list[str]:
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
