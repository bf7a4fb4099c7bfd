"""`genapi init [DIR]`: a commented starter config (gateway.toml) and the module of functions it
serves (myapp.py), which `genapi check` accepts as written.

The starter's jwt_secret is a random secret generated for this project (43 characters from 32
random bytes), not `${JWT_SECRET}`: the file then works at once (`check`, `serve`, `genapi token`)
with nothing to set first, and it is nobody else's secret (unlike the embedded demo's). A
deployment replaces it without editing the file: GENAPI_JWT_SECRET or GENAPI_JWT_SECRET_FILE
override it, and the comment above it shows `${JWT_SECRET}` and `jwt_secret_file`. Because the
file holds a secret it is written readable by its owner only (0600)."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from typing import Any

NAME_MAX = 64  # --name: a Python module name, bounded

CONFIG = """\
# genapi gateway config, written by `genapi init`. Check it with
#   genapi check --config gateway.toml
# and serve it with
#   genapi serve --config gateway.toml
# Every key and its default: README "Config file reference". A string value may name the
# environment: "${{VAR}}" or "${{VAR:-default}}" ("$$" for a literal "$"); GENAPI_* variables
# (GENAPI_PORT, GENAPI_JWT_SECRET, ...) override this file, and the command line overrides both.

[gateway]
host = "127.0.0.1"      # listen address ("0.0.0.0": every interface; put TLS or a proxy in front)
port = 4000             # clients connect to ws://host:4000/socket/websocket
# workers = "auto"      # worker processes sharing the port
log_level = "info"      # debug | info | warning | error; info logs each connect and call
# check_origin = ["https://example.com"]   # browsers: which web pages may connect

[auth]
# Verifies the HS256 tokens that identify users (`genapi token --config gateway.toml --sub alice`
# prints one). Generated for this project by `genapi init`: keep it out of version control, or
# take it from the environment or a file instead:
#   jwt_secret = "${{JWT_SECRET}}"
#   jwt_secret_file = "/run/secrets/jwt_secret"    # a Docker or Kubernetes secret
# (GENAPI_JWT_SECRET or GENAPI_JWT_SECRET_FILE override this line without editing it.)
jwt_secret = "{secret}"
# Anonymous clients may call the functions that do not ask for a user (check_permission).
# true: every request needs a valid token.
require_verified_user_id = false

# One [[functions]] table per function: clients call service.request_type with args.
[[functions]]
service = "{name}"
request_type = "hello"
mfa = "{name}:hello"                # module:function, imported from this directory
arg_types = {{ name = "string" }}    # string | num | boolean | uuid | datetime | map | list | any ...
# timeout = 5000                    # ms
# response_type = "sync"            # sync | async | stream | none

[[functions]]
service = "{name}"
request_type = "whoami"
mfa = "{name}:whoami"
check_permission = "any_authenticated"   # needs a token: connect with ?token=...
request_info = true                      # the function gets the request's info as its last argument
"""

MODULE = '''\
"""The functions gateway.toml serves (written by `genapi init`). A function is async (runs on
the gateway's loop) or a plain def (runs in the thread pool); its arguments come in arg_orders'
order, each checked against arg_types before it is called; what it returns is the result."""

from typing import Any


async def hello(name: str) -> dict[str, Any]:
    """{name}.hello {{"name": "ada"}} -> {{"greeting": "hello ada"}}"""
    return {{"greeting": f"hello {{name}}"}}


async def whoami(info: dict[str, Any]) -> dict[str, Any]:
    """{name}.whoami: the token's user (request_info = true passes the request's info)."""
    return {{"user_id": info["user_id"], "device_id": info["device_id"]}}
'''


def add_parser(sub: Any) -> None:
    c = sub.add_parser(
        "init",
        help="write a starter config and module",
        description="Write a commented starter config (gateway.toml) and the Python module of "
        "functions it serves (NAME.py, default myapp.py) into DIR; `genapi check` accepts them "
        "as written. Existing files are never overwritten without --force.",
    )
    c.add_argument("dir", nargs="?", default=".", metavar="DIR", help="where to write them (default: .)")
    c.add_argument(
        "--name",
        default="myapp",
        help="the module and service name (a Python identifier; default myapp)",
    )
    c.add_argument("--force", action="store_true", help="overwrite gateway.toml and NAME.py if they exist")
    c.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """`genapi init`: exit status 2 when a file exists (without --force) or cannot be written."""
    name = args.name
    if not (name.isidentifier() and name.isascii() and len(name) <= NAME_MAX) or name == "genapi":
        print(
            f"genapi: error: --name: must be a Python module name (letters, digits and _, at most "
            f"{NAME_MAX}, not genapi), got {name!r}",
            file=sys.stderr,
        )
        return 2
    files = {
        "gateway.toml": CONFIG.format(secret=secrets.token_urlsafe(32), name=name),
        f"{name}.py": MODULE.format(name=name),
    }
    paths = {fname: os.path.join(args.dir, fname) for fname in files}
    existing = [path for path in paths.values() if os.path.lexists(path)]
    if existing and not args.force:
        print(
            f"genapi: error: {', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
            "nothing written (--force overwrites)",
            file=sys.stderr,
        )
        return 2
    try:
        os.makedirs(args.dir, exist_ok=True)
        for fname, text in files.items():
            mode = 0o600 if fname == "gateway.toml" else 0o644  # the config holds a secret
            if os.path.lexists(paths[fname]):
                os.unlink(paths[fname])  # --force: a new file, so the mode is ours
            fd = os.open(paths[fname], os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
    except OSError as exc:
        print(f"genapi: error: cannot write into {args.dir}: {exc.strerror} ({exc.filename})", file=sys.stderr)
        return 2
    cd = "" if os.path.abspath(args.dir) == os.getcwd() else f"cd {args.dir} && "
    print(f"wrote {paths['gateway.toml']} (with a generated jwt_secret, mode 0600) and {paths[name + '.py']}")
    print(f"next: {cd}genapi check --config gateway.toml")
    print(f"      {cd}genapi serve --config gateway.toml")
    return 0
