"""The local AWS endpoint: moto's server on a loopback port, with the project's moto patches.

`python -m deployer.sandbox.endpoint --host 127.0.0.1 --port 5055` runs it in the foreground;
`start()` runs it in the background and waits until it answers.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from deployer import process
from deployer.errors import DeployerError

# Dummy credentials: moto accepts any; real AWS rejects these, so they cannot leak anything.
SANDBOX_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "sandbox", "AWS_SECRET_ACCESS_KEY": "sandbox-secret"}


# A small, constant-size answer: liveness must not cost more as the cloud fills up. (The whole
# `/moto-api/data.json` is megabytes after one demo and took over a second to serve.)
LIVENESS_PATH = "/moto-api/config"
# How long a running endpoint may stay silent before `up` gives up on it (it is never replaced).
PATIENCE_SECONDS = 60.0


@dataclass(frozen=True)
class Endpoint:
    url: str
    pid: int
    log: Path
    ca_bundle: Path  # the endpoint's self-signed certificate: AWS_CA_BUNDLE for every client


def ensure_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost (made once, reused).

    The endpoint speaks TLS like AWS does, so a TLS-only bucket policy works as it does on AWS,
    and clients trust exactly this certificate through AWS_CA_BUNDLE."""
    cert, key = directory / "endpoint.crt", directory / "endpoint.key"
    if cert.is_file() and key.is_file():
        return cert, key
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "deployer sandbox endpoint")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(private.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert, key


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start(log: Path, *, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0) -> Endpoint:
    """Start the endpoint (https, its own session) in the background and wait until it answers."""
    if not host.startswith("127."):
        raise DeployerError(f"the sandbox endpoint binds only to loopback, not {host}")
    port = port or free_port(host)
    cert, key = ensure_certificate(log.parent / "tls")
    proc = process.start_background(
        [sys.executable, "-m", "deployer.sandbox.endpoint", "--host", host, "--port", str(port),
         "--cert", str(cert), "--key", str(key)],
        env={**os.environ, **SANDBOX_CREDENTIALS}, log_path=log,
    )
    url = f"https://{host}:{port}"
    if wait_until_up(url, cert, deadline=timeout, alive=lambda: proc.poll() is None):
        return Endpoint(url, proc.pid, log, cert)
    if proc.poll() is not None:
        raise DeployerError(f"the sandbox AWS endpoint exited at start; see {log}")
    proc.kill()
    raise DeployerError(f"the sandbox AWS endpoint did not answer on {url} in {timeout:.0f}s; see {log}")


def is_up(url: str, ca_bundle: Path, timeout: float = 2.0) -> bool:
    """One cheap request: does the endpoint answer as moto does?"""
    context = ssl.create_default_context(cafile=str(ca_bundle))
    try:
        with urllib.request.urlopen(f"{url}{LIVENESS_PATH}", timeout=timeout,
                                    context=context) as response:
            return response.status < 500
    except (urllib.error.URLError, OSError):
        return False


def wait_until_up(url: str, ca_bundle: Path, *, deadline: float,
                  alive: Callable[[], bool] = lambda: True) -> bool:
    """Ask again and again, within `deadline` seconds, while `alive()` holds: a busy machine
    answers late, and a late answer is still an answer."""
    end = time.monotonic() + deadline
    while alive():
        if is_up(url, ca_bundle, timeout=max(0.5, min(5.0, end - time.monotonic()))):
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.2)
    return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5055)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args(argv)
    from moto import server

    from deployer.sandbox import moto_patches

    moto_patches.apply()
    server.main(["--host", args.host, "--port", str(args.port), "--ssl",
                 "--ssl-cert", args.cert, "--ssl-key", args.key])


if __name__ == "__main__":
    main()


def write_profile(aws_dir: Path, profile: str, region: str, ca_bundle: Path) -> dict[str, str]:
    """Write a shared config and credentials file holding `profile` with the dummy credentials,
    and return the environment that selects them. SDKs refuse an AWS_PROFILE they cannot find,
    even when keys are in the environment, so the sandbox profile must exist on disk."""
    aws_dir.mkdir(parents=True, exist_ok=True)
    (aws_dir / "config").write_text(
        f"[profile {profile}]\nregion = {region}\n", encoding="utf-8")
    creds = aws_dir / "credentials"
    creds.write_text(
        f"[{profile}]\naws_access_key_id = {SANDBOX_CREDENTIALS['AWS_ACCESS_KEY_ID']}\n"
        f"aws_secret_access_key = {SANDBOX_CREDENTIALS['AWS_SECRET_ACCESS_KEY']}\n",
        encoding="utf-8")
    creds.chmod(0o600)
    return {
        "AWS_PROFILE": profile,
        "AWS_REGION": region,
        "AWS_CONFIG_FILE": str(aws_dir / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(creds),
        "AWS_CA_BUNDLE": str(ca_bundle),
        **SANDBOX_CREDENTIALS,
    }
