"""Fixtures for the interoperability tests: a throw-away ECDSA certificate made at test time."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class CertificateFiles:
    """A self-signed certificate written to disk.

    Attributes:
        certfile: PEM certificate path (also usable as a trust anchor).
        keyfile: PEM private key path.
        sha256: SHA-256 of the DER certificate (for ``server_certificate_hashes``).
    """

    certfile: str
    keyfile: str
    sha256: bytes


def make_certificate(directory: Path, *, days: int = 10) -> CertificateFiles:
    """Write an ECDSA P-256 certificate for ``localhost`` and ``127.0.0.1`` into ``directory``.

    Args:
        directory: Where to write ``cert.pem`` and ``key.pem``.
        days: Validity period (browsers accept hashes only for at most 14 days).

    Returns:
        The paths and the certificate's SHA-256 fingerprint.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now - datetime.timedelta(minutes=5) + datetime.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile = directory / "cert.pem"
    keyfile = directory / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
    return CertificateFiles(certfile=str(certfile), keyfile=str(keyfile), sha256=digest)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CertificateFiles]:
    """Provide a fresh certificate in a module-scoped temporary directory."""
    yield make_certificate(tmp_path_factory.mktemp("interop-certs"))
