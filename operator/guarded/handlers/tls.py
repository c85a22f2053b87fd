"""The admission webhook's serving certificate.

The API server calls the webhook over HTTPS and verifies it against the caBundle in the webhook
configuration. In a cluster, mount a Secret with tls.crt, tls.key and ca.crt (cert-manager, or
`python -m guarded.handlers.tls --out DIR --host NAME` once) into every replica, so that all of them
serve the same certificate. Run locally without one, the operator makes a private CA and a
certificate for its listen address, valid for a year, and keeps them in a temporary directory.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class ServingCert:
    certfile: Path
    keyfile: Path
    ca: bytes


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def generate(directory: Path, hosts: list[str], days: int = 365) -> ServingCert:
    """A CA and a serving certificate for `hosts` (IP addresses or DNS names), written as PEM files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder().subject_name(_name("guarded-rollouts-webhook-ca"))
        .issuer_name(_name("guarded-rollouts-webhook-ca")).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(_name(hosts[0])).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    (directory / "ca.crt").write_bytes(ca_pem)
    (directory / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile = directory / "tls.key"
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    keyfile.chmod(0o600)
    return ServingCert(certfile=directory / "tls.crt", keyfile=keyfile, ca=ca_pem)


def load_or_generate(directory: str | None, hosts: list[str]) -> ServingCert:
    if directory and (Path(directory) / "tls.crt").exists():
        d = Path(directory)
        return ServingCert(certfile=d / "tls.crt", keyfile=d / "tls.key", ca=(d / "ca.crt").read_bytes())
    return generate(Path(directory or tempfile.mkdtemp(prefix="guarded-webhook-")), hosts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a CA and a serving certificate for the webhook.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--host", action="append", required=True, help="DNS name or IP (repeatable)")
    parser.add_argument("--days", type=int, default=365)
    args = parser.parse_args(argv)
    generate(args.out, args.host, args.days)
    print(f"wrote {args.out}/ca.crt, tls.crt, tls.key")
    return 0


if __name__ == "__main__":
    sys.exit(main())
