"""The one parser of a `host:port` address: each way one can be wrong gets its own words.

Every address a node or a `genapi` command takes (`--gateway`, `--listen`, `--advertise`,
`--control`) and every node address the gateway connects to is read here, and a bad one is refused
with the expected form, so a node started with a forgotten port fails at start instead of never
pushing.
"""

from __future__ import annotations

__all__ = ["CONTROL_PORT", "AddressError", "parse_address"]

CONTROL_PORT = 4001  # the gateway's default control port ([gateway] control_port)


class AddressError(ValueError):
    """An address that is not `host:port`; `str(exc)` names it, the problem and the expected form."""


def parse_address(
    value: str, what: str = "address", *, port: int = CONTROL_PORT, listen: bool = False
) -> tuple[str, int]:
    """`"host:port"` or `"[v6]:port"` → (host, port). `what` names the address in the error (a
    flag such as `--gateway`); `port` is the port examples use; `listen`: an address to bind,
    where port 0 (any free port) is allowed and a bare port is answered with both hosts it could
    mean (this machine only, every interface), since that choice decides who can connect."""
    if not isinstance(value, str):
        raise AddressError(f"{what}: must be a host:port string, got {type(value).__name__}")
    text = value.strip()
    example = f"127.0.0.1:{port}"

    def refuse(problem: str, hint: str = "") -> AddressError:
        return AddressError(f"{what} {value!r}: {problem}; expected host:port, e.g. {hint or example}")

    if not text:
        raise refuse("the address is empty")
    if "://" in text:
        scheme, _, rest = text.partition("://")
        host = rest.split("/", 1)[0].rpartition("@")[2]
        host = host.rpartition(":")[0] if host.count(":") == 1 else host
        where = f"{host or '127.0.0.1'}:{port}"
        if listen:
            raise refuse(f"a URL ({scheme}://) was given, not an address to listen on", where)
        raise refuse(
            f"a URL ({scheme}://) was given; give the host:port of the gateway's control port (it speaks "
            f"genapi RPC, default port {CONTROL_PORT}), not a WebSocket or HTTP URL",
            where,
        )
    if text.isdigit():
        if listen:
            raise refuse(
                "only a port was given; say which host to listen on",
                f"127.0.0.1:{text} (this machine only) or 0.0.0.0:{text} (every interface)",
            )
        raise refuse("only a port was given; the host is missing", f"127.0.0.1:{text}")
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise refuse("the IPv6 address's closing bracket is missing", f"[::1]:{port}")
        host, rest = text[1:close], text[close + 1 :]
        if not host:
            raise refuse("the host is missing", f"[::1]:{port}")
        if not rest:
            raise refuse("the port is missing", f"{text}:{port}")
        if not rest.startswith(":"):
            raise refuse(f"unexpected {rest!r} after the IPv6 address", f"[{host}]:{port}")
        number = rest[1:]
    else:
        if text.count(":") > 1:
            raise refuse("an IPv6 address needs brackets", f"[::1]:{port}")
        host, sep, number = text.rpartition(":")
        if not sep and "@" in text:  # PhoenixGenApi's nodes are Erlang nodes, named name@host
            raise refuse(
                "an Erlang node name (name@host) was given; genapi's service nodes are Python processes, "
                "each reached at the host:port it listens on",
                f"{text.rpartition('@')[2] or '127.0.0.1'}:{port}",
            )
        if not sep:
            raise refuse("the port is missing", f"{text}:{port}")
        if not host:
            raise refuse("the host is missing", f"127.0.0.1:{number or port}")
        if any(c.isspace() or c in "/@?#" for c in host):
            raise refuse(f"the host {host!r} is not a host name or IP address")
    if not number:
        raise refuse("the port is missing", f"{host if ':' not in host else f'[{host}]'}:{port}")
    if not number.isdigit() or not number.isascii():
        raise refuse(f"the port {number!r} is not a number")
    low = 0 if listen else 1
    n = int(number)
    if not low <= n <= 65535:
        allowed = "0-65535, 0 picks a free port" if listen else "1-65535"
        raise refuse(f"the port {n} is out of range ({allowed})")
    return host, n
