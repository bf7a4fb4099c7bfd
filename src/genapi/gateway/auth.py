"""Connect authentication: a JWT (HS256 secret or RS256 public key), a user callback, or
anonymous. The result is the connection's Identity, the only source of user_id and roles.

A JWT must carry `exp` (unless `[auth] require_exp = false`); `exp`, `nbf` and `iat` must be
numbers (RFC 7519 NumericDate: a string such as "9999999999" is refused). A token in `?token=`
and a different one in the authToken subprotocol refuse the connect."""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from typing import Any

import msgspec

from genapi import log
from genapi.config import AuthSettings
from genapi.loader import load_callable

BEARER_PREFIX = "base64url.bearer.phx."


class Identity(msgspec.Struct, frozen=True):
    """Who is on a connection. `user_id` None means anonymous."""

    user_id: str | None = None
    roles: list[str] | None = None
    device_id: str | None = None
    ip: str | None = None  # the client's address (behind a trusted proxy: the forwarded one)
    traceparent: str | None = None  # W3C trace context from the connect params (trace.py)


ANONYMOUS = Identity()


class Refused(Exception):
    """The connect is refused (HTTP 403); the message is logged, never sent."""


def token_from_subprotocols(header: str | None) -> tuple[str | None, bool]:
    """Reads `Sec-WebSocket-Protocol: phoenix, base64url.bearer.phx.<b64>`.

    Returns (token or None, whether "phoenix" was offered). The token is standard base64 with the
    padding stripped (phoenix.js `btoa`); url-safe base64 is accepted too.
    """
    if not header:
        return None, False
    token = None
    offered = False
    for item in header.split(","):
        item = item.strip()
        if item == "phoenix":
            offered = True
        elif item.startswith(BEARER_PREFIX):
            b64 = item[len(BEARER_PREFIX) :]
            b64 += "=" * (-len(b64) % 4)
            try:
                token = base64.b64decode(b64.replace("-", "+").replace("_", "/"), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise Refused("authToken subprotocol entry is not valid base64") from None
    return token, offered


def choose_token(subprotocol: str | None, query: str | None) -> str | None:
    """The connect's token: from the authToken subprotocol or `?token=`; both present and
    different refuses the connect (neither may be silently ignored)."""
    if subprotocol and query and subprotocol != query:
        raise Refused("two different tokens: ?token= and the authToken subprotocol entry")
    return subprotocol or query


NUMERIC_DATES = ("exp", "nbf", "iat")
_DECODE_OPTIONS: Any = {"verify_aud": False, "verify_exp": False, "verify_nbf": False, "verify_iat": False}


class Authenticator:
    """Turns connect params, headers and token into an Identity, or raises Refused."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self._callback: Callable[..., Any] | None = load_callable(settings.callback) if settings.callback else None
        self._key: Any = None
        self._algorithms: list[str] = []
        if settings.jwt_secret is not None:
            self._key = settings.jwt_secret
            self._algorithms = [settings.jwt_algorithm or "HS256"]
        elif settings.jwt_public_key is not None:
            with open(settings.jwt_public_key, encoding="utf-8") as f:
                self._key = f.read()
            self._algorithms = [settings.jwt_algorithm or "RS256"]

    def authenticate(self, params: dict[str, str], headers: dict[str, str], token: str | None) -> Identity:
        if self._callback is not None:
            return self._from_callback(params, headers, token)
        if self._key is not None and token:
            return self._from_jwt(token)
        if token and self._key is None:
            raise Refused(
                "a token was presented but [auth] sets no jwt_secret, jwt_public_key or callback to verify it"
            )
        return ANONYMOUS

    def _from_jwt(self, token: str) -> Identity:
        import jwt

        try:  # the time claims are checked below, after their types
            claims = jwt.decode(token, self._key, algorithms=self._algorithms, options=_DECODE_OPTIONS)
        except jwt.PyJWTError as exc:  # every token problem (and key problem) refuses; none crashes
            raise Refused(f"invalid token: {type(exc).__name__}: {exc}") from None
        for claim in NUMERIC_DATES:
            value = claims.get(claim)
            if claim in claims and (isinstance(value, bool) or not isinstance(value, (int, float)) or value != value):
                raise Refused(f"token claim {claim} must be a number (NumericDate), got {value!r:.40}")
        exp = claims.get("exp")
        now = time.time()
        if exp is None:
            if self.settings.require_exp:
                raise Refused("token has no exp claim ([auth] require_exp = true)")
        elif exp <= now:
            raise Refused("token expired")
        nbf = claims.get("nbf")
        if nbf is not None and nbf > now:
            raise Refused("token not valid yet (nbf)")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise Refused("token has no sub claim (the user id)")
        roles = claims.get("roles")
        if roles is not None and not (isinstance(roles, list) and all(isinstance(r, str) for r in roles)):
            raise Refused("token claim roles must be a list of strings")
        device = claims.get("device_id")
        return Identity(sub, roles, device if isinstance(device, str) else None)

    def _from_callback(self, params: dict[str, str], headers: dict[str, str], token: str | None) -> Identity:
        if token is not None and "auth_token" not in params:
            params = {**params, "auth_token": token}
        try:
            out = self._callback(params, headers)  # type: ignore[misc]
        except Exception as exc:
            raise Refused(f"auth callback raised {type(exc).__name__}: {exc}") from None
        if out is None or out is False:
            raise Refused("auth callback refused the connect")
        if out is True:
            return ANONYMOUS
        if isinstance(out, Identity):
            return out
        if isinstance(out, str):
            return Identity(out or None)
        if isinstance(out, dict):
            uid = out.get("user_id")
            roles = out.get("roles")
            dev = out.get("device_id")
            return Identity(
                uid if isinstance(uid, str) and uid else None,
                list(roles) if isinstance(roles, (list, tuple)) else None,
                dev if isinstance(dev, str) else None,
            )
        log.error("auth_callback_bad_return", type=type(out).__name__)
        raise Refused("auth callback returned an unsupported value")


def client_ip(peer: str | None, forwarded: str | None, trusted: frozenset[str]) -> str | None:
    """The client's address: the peer's, unless the peer is a trusted proxy; then the rightmost
    X-Forwarded-For entry that is not a trusted proxy itself (the left ones are the client's
    word, and a client can write anything there)."""
    if peer is None or peer not in trusted or not forwarded:
        return peer
    for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
        if hop not in trusted:
            return hop
    return peer
