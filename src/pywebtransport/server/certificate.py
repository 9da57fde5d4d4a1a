"""Browser-compatible self-signed certificates and certificate hashes.

A browser connects to a server with a self-signed certificate when the page passes the
certificate's SHA-256 in ``serverCertificateHashes``. Chromium accepts such a certificate only
if it is an X.509v3 certificate with an ECDSA P-256 key whose *whole* validity period
(``notAfter - notBefore``) is at most 14 days. :func:`generate_self_signed_certificate` makes
exactly that, with a margin, and :func:`format_hash` / :func:`parse_hash` move the digest
between bytes and the text a user pastes into a page or a command line.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "MAX_VALIDITY_DAYS",
    "CertificateBundle",
    "certificate_sha256",
    "check_certificate_pair",
    "format_hash",
    "generate_self_signed_certificate",
    "parse_hash",
]

#: Longest validity accepted: Chromium's 14-day limit for ``serverCertificateHashes`` less one
#: hour, so that rounding and clock skew can never push a certificate over it.
MAX_VALIDITY_DAYS = 14.0 - 1.0 / 24.0

#: How far ``notBefore`` lies in the past, so that a peer whose clock is slightly behind
#: accepts the certificate at once.
_CLOCK_SKEW_MARGIN = datetime.timedelta(minutes=1)

_SHA256_SIZE = 32
_PEM_CERTIFICATE_MARKER = b"-----BEGIN CERTIFICATE-----"
_PEM_PRIVATE_KEY_MARKER = b"PRIVATE KEY-----"  # PKCS#8, encrypted PKCS#8, EC, RSA, ...
_COMMON_NAME_MAX = 64  # upper bound of X.520 CommonName

#: A TLS server key signs the handshake and does nothing else.
_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


@dataclass(frozen=True)
class CertificateBundle:
    """A certificate, its private key and the certificate's SHA-256.

    Attributes:
        cert_pem: the certificate, PEM encoded.
        key_pem: the unencrypted PKCS#8 private key, PEM encoded.
        sha256: SHA-256 of the DER certificate (the value for ``serverCertificateHashes``).
        not_before: start of validity (UTC, timezone-aware), as written in the certificate.
        not_after: end of validity (UTC, timezone-aware), as written in the certificate.
    """

    cert_pem: bytes
    key_pem: bytes
    sha256: bytes
    not_before: datetime.datetime
    not_after: datetime.datetime

    @classmethod
    def from_pem(cls, cert_pem: bytes | str, key_pem: bytes | str) -> CertificateBundle:
        """A bundle of a PEM certificate (chain) and its PEM private key held in memory.

        Args:
            cert_pem: the certificate, first in the chain, PEM encoded.
            key_pem: its unencrypted private key, PEM encoded.

        Raises:
            ValueError: either cannot be parsed, or the key does not match the certificate.
        """
        cert_bytes = cert_pem.encode() if isinstance(cert_pem, str) else bytes(cert_pem)
        key_bytes = key_pem.encode() if isinstance(key_pem, str) else bytes(key_pem)
        certificate = _load_certificate("cert_pem", cert_bytes)
        key = _load_private_key("key_pem", key_bytes)
        if _public_der(key.public_key()) != _public_der(certificate.public_key()):
            raise ValueError("the private key in key_pem does not match the certificate")
        return cls(
            cert_pem=cert_bytes,
            key_pem=key_bytes,
            sha256=certificate.fingerprint(hashes.SHA256()),
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
        )

    def write(self, *, certfile: str | Path, keyfile: str | Path) -> None:
        """Write the certificate and the key to PEM files.

        The key file is created with mode ``0o600`` (and brought to that mode if it existed),
        before any key material is written to it.

        Args:
            certfile: path of the certificate file.
            keyfile: path of the private key file.
        """
        Path(certfile).write_bytes(self.cert_pem)
        fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as key_file:
            os.fchmod(key_file.fileno(), 0o600)
            key_file.write(self.key_pem)


def generate_self_signed_certificate(
    *,
    hostnames: Sequence[str] = ("localhost", "127.0.0.1", "::1"),
    validity_days: float = 13.0,
) -> CertificateBundle:
    """Create a self-signed certificate that Chromium accepts through its hash.

    The key is ECDSA P-256, the signature ECDSA with SHA-256. Each host name becomes a
    subjectAltName entry: an IP address entry when it parses as one (``[::1]`` brackets are
    allowed), a DNS name entry otherwise.

    Args:
        hostnames: the names and addresses the certificate is for; at least one.
        validity_days: length of the validity period, in days; more than 0 and at most
            :data:`MAX_VALIDITY_DAYS`.

    Returns:
        The certificate, its key and its SHA-256.

    Raises:
        ValueError: ``validity_days`` is out of range, ``hostnames`` is empty or holds an
            empty name.
    """
    if not 0.0 < validity_days <= MAX_VALIDITY_DAYS:
        raise ValueError(
            f"validity_days must be more than 0 and at most {MAX_VALIDITY_DAYS:.4f} "
            f"(browsers refuse hashed certificates valid for 14 days or more), "
            f"got {validity_days!r}"
        )
    alt_names = _subject_alt_names(hostnames)
    key = ec.generate_private_key(ec.SECP256R1())
    # Whole seconds: X.509 times carry no fraction, so what is signed is what is reported.
    not_before = (datetime.datetime.now(datetime.UTC) - _CLOCK_SKEW_MARGIN).replace(microsecond=0)
    not_after = (not_before + datetime.timedelta(days=validity_days)).replace(microsecond=0)
    name = _subject_name(hostnames[0])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_KEY_USAGE, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateBundle(
        cert_pem=certificate.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        sha256=certificate.fingerprint(hashes.SHA256()),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
    )


def certificate_sha256(cert_pem_or_der: bytes) -> bytes:
    """Return the SHA-256 of a certificate's DER encoding.

    Args:
        cert_pem_or_der: a certificate, PEM (the first certificate of a chain counts) or DER.

    Returns:
        The 32-byte digest, as pinned by ``serverCertificateHashes``.

    Raises:
        ValueError: the input is not a certificate.
    """
    if _PEM_CERTIFICATE_MARKER in cert_pem_or_der:
        certificate = x509.load_pem_x509_certificate(cert_pem_or_der)
    else:
        certificate = x509.load_der_x509_certificate(cert_pem_or_der)
    return certificate.fingerprint(hashes.SHA256())


def check_certificate_pair(
    certfile: str | os.PathLike[str], keyfile: str | os.PathLike[str]
) -> None:
    """Check that ``certfile`` holds a PEM certificate and ``keyfile`` its private key.

    A chain counts by its first certificate (the server's own). One file may hold both the key
    and the chain, and be given as both arguments. Both QUIC engines load the files the same
    way; this check runs first so that a wrong pair is reported in plain words instead of a
    parser's message, or, for a key of another certificate, instead of every handshake failing.

    Args:
        certfile: the PEM certificate (chain) file.
        keyfile: the PEM private key file (unencrypted).

    Raises:
        OSError: a file cannot be read.
        ValueError: a file holds no PEM certificate or private key, the key is encrypted or
            of a type that cannot be loaded, or it does not belong to the certificate; the
            message names the file and says which.
    """
    cert_pem = Path(certfile).read_bytes()
    key_pem = Path(keyfile).read_bytes()
    certificate = _load_certificate(os.fspath(certfile), cert_pem)
    key = _load_private_key(os.fspath(keyfile), key_pem)
    if _public_der(key.public_key()) != _public_der(certificate.public_key()):
        raise ValueError(
            f"the private key in {os.fspath(keyfile)} does not match the certificate in "
            f"{os.fspath(certfile)}"
        )


def _public_der(public_key: Any) -> bytes:
    """A public key as DER SubjectPublicKeyInfo (to compare a key with a certificate's)."""
    der: bytes = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def _load_certificate(name: str, data: bytes) -> x509.Certificate:
    """The first PEM certificate in ``data`` (read from the file ``name``)."""
    if _PEM_CERTIFICATE_MARKER not in data:
        if _PEM_PRIVATE_KEY_MARKER in data:
            raise ValueError(
                f"{name} holds no PEM certificate "
                "(it holds a private key: are the certificate and key files swapped?)"
            )
        raise ValueError(f"{name} holds no PEM certificate")
    try:
        return x509.load_pem_x509_certificates(data)[0]
    except ValueError as error:
        raise ValueError(f"cannot parse the certificate in {name}: {error}") from None


def _load_private_key(name: str, data: bytes) -> PrivateKeyTypes:
    """The first PEM private key in ``data`` (read from the file ``name``)."""
    if _PEM_PRIVATE_KEY_MARKER not in data:
        if _PEM_CERTIFICATE_MARKER in data:
            raise ValueError(f"{name} holds no PEM private key (it holds a certificate)")
        raise ValueError(f"{name} holds no PEM private key")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:  # the key needs a password
        raise ValueError(
            f"the private key in {name} is encrypted: the server needs an unencrypted key"
        ) from None
    except UnsupportedAlgorithm as error:
        raise ValueError(f"the private key in {name} is of an unsupported type: {error}") from None
    except ValueError as error:
        raise ValueError(f"cannot parse the private key in {name}: {error}") from None


def format_hash(digest: bytes) -> str:
    """Format a SHA-256 digest as lowercase hex without separators.

    Args:
        digest: a 32-byte SHA-256 digest.

    Returns:
        64 lowercase hex digits.

    Raises:
        ValueError: ``digest`` is not 32 bytes long.
    """
    if len(digest) != _SHA256_SIZE:
        raise ValueError(f"a SHA-256 digest is {_SHA256_SIZE} bytes, got {len(digest)}")
    return digest.hex()


def parse_hash(text: str) -> bytes:
    """Parse a SHA-256 digest written in hex.

    Accepts 64 hex digits in either case, or 32 two-digit groups separated by ``:`` (as
    ``openssl x509 -fingerprint`` prints them). Surrounding whitespace is ignored.

    Args:
        text: the hex text.

    Returns:
        The 32-byte digest.

    Raises:
        ValueError: the text is empty, holds a character that is not a hex digit, has
            malformed ``:`` groups or does not describe exactly 32 bytes; the message says which.
    """
    stripped = text.strip()
    if not stripped:
        raise ValueError("certificate hash is empty")
    if ":" in stripped:
        groups = stripped.split(":")
        for index, group in enumerate(groups):
            if len(group) != 2:
                raise ValueError(
                    f"certificate hash group {index + 1} is {group!r}: "
                    "':'-separated groups must be exactly two hex digits"
                )
        digits = "".join(groups)
    else:
        digits = stripped
    for position, char in enumerate(digits):
        if char not in string.hexdigits:
            raise ValueError(f"certificate hash has a non-hex character {char!r} at {position}")
    if len(digits) != 2 * _SHA256_SIZE:
        raise ValueError(
            f"certificate hash must be {_SHA256_SIZE} bytes ({2 * _SHA256_SIZE} hex digits), "
            f"got {len(digits)} hex digits"
        )
    return bytes.fromhex(digits)


def _subject_name(hostname: str) -> x509.Name:
    """Build the subject (and issuer) name: the first host name as CN when it fits."""
    common_name = hostname if len(hostname) <= _COMMON_NAME_MAX else "pywebtransport"
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pywebtransport"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _subject_alt_names(hostnames: Sequence[str]) -> list[x509.GeneralName]:
    """Map host names to subjectAltName entries, dropping duplicates, keeping order."""
    if isinstance(hostnames, str):
        raise ValueError("hostnames must be a sequence of names, not a single string")
    if not hostnames:
        raise ValueError("hostnames must name at least one host")
    entries: list[x509.GeneralName] = []
    for hostname in hostnames:
        entry = _alt_name(hostname)
        if entry not in entries:
            entries.append(entry)
    return entries


def _alt_name(hostname: str) -> x509.GeneralName:
    """Return the subjectAltName entry for one host name or IP address."""
    name = hostname.strip()
    if not name:
        raise ValueError("hostnames must not hold an empty name")
    address = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    try:
        return x509.IPAddress(ipaddress.ip_address(address))
    except ValueError:
        pass
    if not name.isascii():
        name = name.encode("idna").decode("ascii")
    return x509.DNSName(name)
