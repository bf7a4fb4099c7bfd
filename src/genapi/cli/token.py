"""`genapi token`: a signed JWT for a user, as the config's [auth] verifies it (for development and tests)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from genapi.cli.common import report
from genapi.config import ConfigError, load


def add_parser(sub: Any) -> None:
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
    t.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """`genapi token`: prints the token; exit status 2 when the config cannot sign one."""
    try:
        print(token(args))
    except ConfigError as exc:
        report(exc, args.config or "<embedded default>")
        return 2
    return 0


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
