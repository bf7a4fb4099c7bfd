"""Built-in TLS (`[gateway] tls_certfile` / `tls_keyfile`, `genapi serve --ssl-certfile/--ssl-keyfile`):
the server's SSL context, and the problems of a certificate and key pair, each naming its file,
found at start before the port is served."""

from __future__ import annotations

import ssl

HANDSHAKE_TIMEOUT_S = 10.0  # a client that has not finished the TLS handshake by then is dropped
MAX_PEM_BYTES = 1_000_000  # a certificate chain or key file larger than this is refused


class _Encrypted(Exception):
    """The key file asked for a password (genapi reads unencrypted keys only: never a prompt)."""


def _no_password() -> bytes:
    raise _Encrypted


def server_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """The TLS server context for a PEM certificate chain and its private key (TLS 1.2 or later,
    the standard library's server defaults). Raises ValueError naming the file at fault."""
    _read_pem(certfile, "CERTIFICATE", "certificate")
    _read_pem(keyfile, "PRIVATE KEY", "private key")
    try:  # the certificate alone first, so a broken one is named as such
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=certfile)
    except ssl.SSLError as exc:
        raise ValueError(f"{certfile}: not a valid PEM certificate: {exc.reason or exc}") from None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        ctx.load_cert_chain(certfile, keyfile, password=_no_password)
    except _Encrypted:
        raise ValueError(
            f"{keyfile}: the private key is encrypted; genapi reads an unencrypted key (write one with "
            f"`openssl pkey -in {keyfile} -out key.pem` and make it readable by the gateway's user only)"
        ) from None
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise ValueError(f"{keyfile}: the private key does not belong to the certificate in {certfile}") from None
        raise ValueError(f"{keyfile}: not a valid PEM private key (for {certfile}): {reason}") from None
    return ctx


def _read_pem(path: str, label: str, what: str) -> None:
    """The file is readable, bounded and holds a PEM block of `label` (else ValueError naming it)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the {what}: {exc.strerror}") from None
    if len(data) > MAX_PEM_BYTES:
        raise ValueError(f"{path}: larger than {MAX_PEM_BYTES} bytes; expected a PEM {what}")
    if f"{label}-----".encode() not in data or b"-----BEGIN " not in data:
        raise ValueError(f'{path}: not a PEM {what} (expected a "-----BEGIN ...{label}-----" block)')
