"""Built-in TLS: `genapi serve --ssl-certfile/--ssl-keyfile` and `[gateway] tls_certfile/tls_keyfile`
serve wss:// (one worker, and every worker of a master); a plain ws:// connect to that port gets no
upgrade; a missing half, an unreadable file, a broken certificate, an encrypted key or a key of
another certificate is a config problem naming the flag or key and the file, before listening."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from genapi.client import Client, ConnectionLost
from support.configs import ANON, PID
from support.gateway_proc import SUPPORT, TESTS, GatewayProcess


def self_signed(folder: Path, name: str = "") -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its unencrypted key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = folder / f"cert{name}.pem", folder / f"key{name}.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    keyfile.chmod(0o600)
    return certfile, keyfile


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


def trusting(certfile: Path) -> ssl.SSLContext:
    """A client context that trusts only this certificate (hostname checked: 127.0.0.1 is in it)."""
    return ssl.create_default_context(cafile=str(certfile))


async def call_pid(url: str, certfile: Path) -> int:
    c = await Client.connect(url, ssl_context=trusting(certfile), heartbeat_interval=None)
    try:
        await c.join("api:tls")
        resp = await c.call("w", "pid", {})
        assert resp.success, resp
        return resp.result
    finally:
        await c.close()


def test_wss_call_with_the_flags_and_plain_ws_refused(run, pair) -> None:
    certfile, keyfile = pair
    with GatewayProcess(
        "\n" + ANON + PID, extra_args=["--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile)]
    ) as gw:
        assert gw.url.startswith("wss://127.0.0.1:"), gw.url  # the banner says wss://

        async def go() -> None:
            assert await call_pid(gw.url, certfile) == gw.pid
            with pytest.raises(ConnectionLost, match="closed before the WebSocket upgrade"):
                await Client.connect(gw.url.replace("wss://", "ws://", 1), timeout=10)
            # a client that does not trust the certificate is refused by its own check
            with pytest.raises(ssl.SSLCertVerificationError):
                await Client.connect(gw.url, timeout=10)
            # /health is served over TLS too
            reader, writer = await asyncio.open_connection(gw.host, gw.port, ssl=trusting(certfile))
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = await reader.read()
            writer.close()
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nok\n"), answer

        run(go())


def test_wss_on_every_worker_from_the_config(run, pair) -> None:
    certfile, keyfile = pair
    config = f"[gateway]\ntls_certfile = {str(certfile)!r}\ntls_keyfile = {str(keyfile)!r}\n" + ANON + PID
    with GatewayProcess(config, extra_args=["--workers", "2"]) as gw:
        assert gw.url.startswith("wss://"), gw.url

        async def go() -> set[int]:
            seen: set[int] = set()
            for _ in range(200):  # the kernel spreads connections over both workers' sockets
                seen.add(await call_pid(gw.url, certfile))
                if len(seen) == 2:
                    break
            return seen

        seen = run(go(), timeout=120)
        assert len(seen) == 2 and gw.pid not in seen, seen  # both workers answered over TLS


def genapi(*args: str) -> subprocess.CompletedProcess[str]:
    """A `genapi` command that is expected to refuse at start (its exit status and output)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SUPPORT), *sys.path])}
    cmd = [sys.executable, "-m", "genapi", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(TESTS), timeout=60)


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    return genapi("serve", "--port", "0", "--control-port", "0", *args)


def test_bad_certificate_or_key_refused_at_start(tmp_path: Path, pair) -> None:
    certfile, keyfile = pair
    _other_cert, other_key = self_signed(tmp_path, "-other")
    broken = tmp_path / "broken.pem"
    lines = certfile.read_text().splitlines()
    broken.write_text("\n".join([lines[0], "A" * 64, *lines[2:]]) + "\n")
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        serialization.load_pem_private_key(keyfile.read_bytes(), None).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    cases = [
        (["--ssl-certfile", str(certfile)], "--ssl-certfile is set but [gateway] key tls_keyfile is not"),
        (["--ssl-keyfile", str(keyfile)], "--ssl-keyfile is set but [gateway] key tls_certfile is not"),
        (
            ["--ssl-certfile", str(certfile), "--ssl-keyfile", str(tmp_path / "nope.pem")],
            f"--ssl-keyfile: {tmp_path / 'nope.pem'}: cannot read the private key: No such file or directory",
        ),
        (
            ["--ssl-certfile", str(broken), "--ssl-keyfile", str(keyfile)],
            f"--ssl-certfile: {broken}: not a valid PEM certificate",
        ),
        (
            ["--ssl-certfile", str(keyfile), "--ssl-keyfile", str(keyfile)],
            f"--ssl-certfile: {keyfile}: not a PEM certificate",
        ),
        (
            ["--ssl-certfile", str(certfile), "--ssl-keyfile", str(other_key)],
            f"--ssl-keyfile: {other_key}: the private key does not belong to the certificate in {certfile}",
        ),
        (
            ["--ssl-certfile", str(certfile), "--ssl-keyfile", str(encrypted)],
            f"--ssl-keyfile: {encrypted}: the private key is encrypted",
        ),
    ]
    for args, message in cases:
        proc = serve(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stdout == "", proc.stdout  # never listening
        assert message in proc.stderr, (message, proc.stderr)
    config = tmp_path / "gw.toml"
    config.write_text(f"[gateway]\ntls_certfile = {str(broken)!r}\n")  # the config's own keys, named as such
    proc = serve("--config", str(config))
    assert proc.returncode == 2 and proc.stdout == ""
    assert "[gateway] key tls_certfile is set but [gateway] key tls_keyfile is not" in proc.stderr, proc.stderr
    config.write_text(f"[gateway]\ntls_certfile = {str(broken)!r}\ntls_keyfile = {str(keyfile)!r}\n" + ANON)
    for proc in (serve("--config", str(config)), genapi("check", "--config", str(config))):  # check refuses alike
        assert proc.returncode == 2, proc.stderr
        assert f"[gateway] key tls_certfile: {broken}: not a valid PEM certificate" in proc.stderr, proc.stderr
