"""The TOML config file → typed settings. A bad file is refused at start with a message that
names the table, the key and the problem."""
from __future__ import annotations

import os
import re
import tomllib
from importlib import resources
from typing import Any

import msgspec

from .structs import FunConfig


class ConfigError(ValueError):
    """A config file that cannot be served; the message says where and why."""


class GatewaySettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 4000
    workers: int | str = 1
    event: str = "phoenix_gen_api"
    topics: list[str] = msgspec.field(default_factory=lambda: ["*"])
    detail_error: bool = False
    path: str = "/socket"
    max_payload_bytes: int = 1_000_000
    idle_timeout_ms: int = 60_000
    max_in_flight: int = 100
    max_queued: int = 1000
    max_queued_bytes: int = 16_000_000
    max_channels: int = 100
    thread_pool_size: int = 32
    thread_queue_limit: int = 1000
    string_max_bytes: int = 3000
    list_max_items: int = 1000
    map_max_items: int = 1000
    log_level: str = "warning"


class AuthSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_algorithm: str | None = None
    callback: str | None = None
    require_verified_user_id: bool = True


class Settings(msgspec.Struct, kw_only=True):
    gateway: GatewaySettings = msgspec.field(default_factory=GatewaySettings)
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)
    functions: list[FunConfig] = []
    source: str = "<embedded default>"


_POSITIVE = ("max_payload_bytes", "idle_timeout_ms", "max_in_flight", "max_queued", "max_queued_bytes", "max_channels",
             "thread_pool_size", "thread_queue_limit", "string_max_bytes", "list_max_items",
             "map_max_items")


def _where(table: str, path: str) -> str:
    m = re.match(r"\$(?:\.(\w+))?", path)
    key = m.group(1) if m and m.group(1) else None
    rest = path[m.end():] if m else ""
    return f"{table} key {key}{rest}" if key else table


def _convert(table: str, data: Any, typ: type) -> Any:
    try:
        return msgspec.convert(data, typ)
    except msgspec.ValidationError as exc:
        text = str(exc)
        m = re.match(r"Object contains unknown field `([^`]*)`(?: - at `(.*)`)?$", text)
        if m:
            where = _where(table, m.group(2)) if m.group(2) else table
            sep = "." if " key " in where else " key "
            raise ConfigError(f"{where}{sep}{m.group(1)}: unknown key") from None
        m = re.match(r"Object missing required field `([^`]*)`(?: - at `(.*)`)?$", text)
        if m:
            where = _where(table, m.group(2)) if m.group(2) else table
            raise ConfigError(f"{where}: missing required key {m.group(1)}") from None
        m = re.match(r"(.*) - at `(.*)`$", text)
        if m:
            raise ConfigError(f"{_where(table, m.group(2))}: {m.group(1)}") from None
        raise ConfigError(f"{table}: {text}") from None


def parse(text: str, source: str = "<string>") -> Settings:
    """Parses and checks a whole config; raises ConfigError naming table, key and problem."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    unknown = sorted(set(doc) - {"gateway", "auth", "functions"})
    if unknown:
        raise ConfigError(f"{source}: unknown table(s) {', '.join(unknown)}; "
                          "expected [gateway], [auth] and [[functions]]")
    gw = _convert("[gateway]", doc.get("gateway", {}), GatewaySettings)
    if not 0 <= gw.port <= 65535:
        raise ConfigError(f"[gateway] key port: must be between 0 and 65535 (0 = any free port), got {gw.port}")
    for key in _POSITIVE:
        if getattr(gw, key) <= 0:
            raise ConfigError(f"[gateway] key {key}: must be positive, got {getattr(gw, key)}")
    if isinstance(gw.workers, str) and gw.workers != "auto":
        raise ConfigError(f'[gateway] key workers: must be a positive integer or "auto", got "{gw.workers}"')
    if isinstance(gw.workers, int) and gw.workers <= 0:
        raise ConfigError(f"[gateway] key workers: must be positive, got {gw.workers}")
    if not gw.event:
        raise ConfigError("[gateway] key event: must be a non-empty string")
    if not gw.path.startswith("/"):
        raise ConfigError(f'[gateway] key path: must start with "/", got "{gw.path}"')
    auth = _convert("[auth]", doc.get("auth", {}), AuthSettings)
    if auth.jwt_secret is not None and auth.jwt_public_key is not None:
        raise ConfigError("[auth]: set jwt_secret (HS256) or jwt_public_key (RS256), not both")
    if auth.jwt_public_key is not None and not os.path.isfile(auth.jwt_public_key):
        raise ConfigError(f"[auth] key jwt_public_key: no such file {auth.jwt_public_key}")
    if auth.jwt_algorithm is not None and auth.jwt_algorithm not in ("HS256", "HS384", "HS512",
                                                                       "RS256", "RS384", "RS512"):
        raise ConfigError(f"[auth] key jwt_algorithm: unsupported algorithm {auth.jwt_algorithm}")
    if auth.callback is not None and auth.callback.count(":") != 1:
        raise ConfigError(f'[auth] key callback: must be "module:function", got "{auth.callback}"')
    raw_functions = doc.get("functions", [])
    if not isinstance(raw_functions, list):
        raise ConfigError("functions: must be an array of tables ([[functions]])")
    functions = []
    seen: set[tuple[str, str, str | None]] = set()
    for i, raw in enumerate(raw_functions, 1):
        label = f"[[functions]] #{i}"
        if isinstance(raw, dict) and raw.get("service") and raw.get("request_type"):
            label += f" ({raw['service']}.{raw['request_type']})"
        cfg = _convert(label, raw, FunConfig)
        errs = cfg.errors()
        if errs:
            raise ConfigError(f"{label} key " + f"; {label} key ".join(errs))
        ident = (cfg.service, cfg.request_type, cfg.version)
        if ident in seen:
            raise ConfigError(f"{label}: duplicate function {cfg.service}.{cfg.request_type} "
                              f"version {cfg.version}")
        seen.add(ident)
        functions.append(cfg)
    return Settings(gateway=gw, auth=auth, functions=functions, source=source)


def load(path: str | None) -> Settings:
    """Reads the config file, or the embedded default (the demo service) when path is None."""
    if path is None:
        text = resources.files("genapi").joinpath("default.toml").read_text()
        return parse(text, "<embedded default>")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    return parse(text, path)
