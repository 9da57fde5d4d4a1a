"""Tests of the browser-compatible certificate tooling."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from aioquic.quic.configuration import QuicConfiguration
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pywebtransport.server.certificate import (
    MAX_VALIDITY_DAYS,
    CertificateBundle,
    certificate_sha256,
    check_certificate_pair,
    format_hash,
    generate_self_signed_certificate,
    parse_hash,
)
from tests.certs import make_key_file

CHROMIUM_MAX_VALIDITY = datetime.timedelta(days=14)


@pytest.fixture(scope="module")
def bundle() -> CertificateBundle:
    """One certificate with the default host names and validity."""
    return generate_self_signed_certificate()


def load(bundle: CertificateBundle) -> x509.Certificate:
    return x509.load_pem_x509_certificate(bundle.cert_pem)


def alt_names(certificate: x509.Certificate) -> x509.SubjectAlternativeName:
    return certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


# ------------------------------------------------------------------------------- key and signature


def test_key_is_ecdsa_p256_and_matches_certificate(bundle: CertificateBundle) -> None:
    key = serialization.load_pem_private_key(bundle.key_pem, password=None)
    certificate = load(bundle)
    public = certificate.public_key()
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert key.curve.name == "secp256r1"
    assert public.curve.name == "secp256r1"
    assert key.public_key().public_numbers() == public.public_numbers()


def test_signature_is_ecdsa_sha256_and_self_signed(bundle: CertificateBundle) -> None:
    certificate = load(bundle)
    assert certificate.version is x509.Version.v3
    assert isinstance(certificate.signature_hash_algorithm, hashes.SHA256)
    assert certificate.issuer == certificate.subject
    certificate.verify_directly_issued_by(certificate)  # raises if the signature is wrong


def test_key_pem_is_unencrypted_pkcs8(bundle: CertificateBundle) -> None:
    assert bundle.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")


# ------------------------------------------------------------------------------------- validity


def test_default_validity_is_13_days_starting_just_before_now(bundle: CertificateBundle) -> None:
    certificate = load(bundle)
    now = datetime.datetime.now(datetime.UTC)
    assert certificate.not_valid_before_utc == bundle.not_before
    assert certificate.not_valid_after_utc == bundle.not_after
    assert bundle.not_after - bundle.not_before == datetime.timedelta(days=13)
    assert now - datetime.timedelta(minutes=5) < bundle.not_before < now
    assert bundle.not_before.tzinfo is not None


@pytest.mark.parametrize("days", [MAX_VALIDITY_DAYS, 13.9, 1.0, 0.5])
def test_whole_validity_stays_under_chromium_limit(days: float) -> None:
    made = generate_self_signed_certificate(validity_days=days)
    certificate = load(made)
    validity = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert validity < CHROMIUM_MAX_VALIDITY
    assert validity <= CHROMIUM_MAX_VALIDITY - datetime.timedelta(hours=1)
    # Only sub-second truncation separates the asked and the written validity.
    assert abs(validity - datetime.timedelta(days=days)) < datetime.timedelta(seconds=1)


@pytest.mark.parametrize("days", [14.0, 13.99, MAX_VALIDITY_DAYS + 1e-6, 30.0, 0.0, -1.0])
def test_out_of_range_validity_is_refused(days: float) -> None:
    with pytest.raises(ValueError, match="validity_days"):
        generate_self_signed_certificate(validity_days=days)


@pytest.mark.parametrize("days", [float("nan"), float("inf")])
def test_non_finite_validity_is_refused(days: float) -> None:
    with pytest.raises(ValueError, match="validity_days"):
        generate_self_signed_certificate(validity_days=days)


# ------------------------------------------------------------------------------ names and usage


def test_default_subject_alt_names(bundle: CertificateBundle) -> None:
    san = alt_names(load(bundle))
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]


def test_custom_hostnames_split_into_dns_and_ip_entries() -> None:
    made = generate_self_signed_certificate(
        hostnames=["example.test", "10.1.2.3", "[fe80::1]", "*.example.test", "example.test"]
    )
    san = alt_names(load(made))
    assert san.get_values_for_type(x509.DNSName) == ["example.test", "*.example.test"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.1.2.3"),
        ipaddress.ip_address("fe80::1"),
    ]
    common_names = load(made).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [attribute.value for attribute in common_names] == ["example.test"]


def test_non_ascii_hostname_is_encoded_as_a_label() -> None:
    made = generate_self_signed_certificate(hostnames=["bücher.test"])
    assert alt_names(load(made)).get_values_for_type(x509.DNSName) == ["xn--bcher-kva.test"]


@pytest.mark.parametrize("hostnames", [(), [""], ["localhost", "  "], "localhost"])
def test_bad_hostnames_are_refused(hostnames: Sequence[str]) -> None:
    with pytest.raises(ValueError, match="hostnames"):
        generate_self_signed_certificate(hostnames=hostnames)


def test_is_an_end_entity_server_certificate(bundle: CertificateBundle) -> None:
    extensions = load(bundle).extensions
    constraints = extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca is False
    usage = extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert not usage.key_cert_sign
    extended = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(extended) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_each_certificate_has_its_own_key_and_serial() -> None:
    first = generate_self_signed_certificate()
    second = generate_self_signed_certificate()
    assert first.key_pem != second.key_pem
    assert load(first).serial_number != load(second).serial_number
    assert first.sha256 != second.sha256


# ------------------------------------------------------------------------------------- hashes


def test_hash_is_sha256_of_der(bundle: CertificateBundle) -> None:
    certificate = load(bundle)
    der = certificate.public_bytes(serialization.Encoding.DER)
    assert bundle.sha256 == certificate.fingerprint(hashes.SHA256())
    assert bundle.sha256 == hashlib.sha256(der).digest()
    assert certificate_sha256(bundle.cert_pem) == bundle.sha256
    assert certificate_sha256(der) == bundle.sha256


def test_hash_of_pem_chain_is_the_first_certificate(bundle: CertificateBundle) -> None:
    other = generate_self_signed_certificate()
    assert certificate_sha256(bundle.cert_pem + other.cert_pem) == bundle.sha256


@pytest.mark.parametrize(
    "data",
    [b"", b"not a certificate", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"],
)
def test_hash_of_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        certificate_sha256(data)


def test_format_hash_is_lowercase_hex(bundle: CertificateBundle) -> None:
    text = format_hash(bundle.sha256)
    assert len(text) == 64
    assert text == text.lower()
    assert text == bundle.sha256.hex()
    assert format_hash(bytes(range(32))) == "".join(f"{i:02x}" for i in range(32))


def test_format_hash_refuses_wrong_length() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        format_hash(b"\x00" * 31)


def test_parse_format_round_trip(bundle: CertificateBundle) -> None:
    assert parse_hash(format_hash(bundle.sha256)) == bundle.sha256


@pytest.mark.parametrize(
    "transform",
    [
        str.upper,
        lambda text: ":".join(text[i : i + 2] for i in range(0, 64, 2)),
        lambda text: ":".join(text[i : i + 2] for i in range(0, 64, 2)).upper(),
        lambda text: f"  {text}\n",
    ],
)
def test_parse_accepts_common_spellings(
    bundle: CertificateBundle, transform: Callable[[str], str]
) -> None:
    assert parse_hash(transform(format_hash(bundle.sha256))) == bundle.sha256


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("ab" * 31, "32 bytes"),
        ("ab" * 33, "32 bytes"),
        ("a" * 63, "32 bytes"),
        ("g" + "a" * 63, "non-hex character 'g' at 0"),
        ("ab" * 31 + "a-", "non-hex character '-' at 63"),
        (":".join(["ab"] * 31), "32 bytes"),
        (":".join(["ab"] * 31 + ["abc"]), "group 32"),
        ("ab::" + ":".join(["ab"] * 31), "group 2"),
        (":".join(["ab"] * 32) + ":", "group 33"),
        (":".join(["zz"] * 32), "non-hex character 'z'"),
    ],
)
def test_parse_errors_name_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_hash(text)


# -------------------------------------------------------------------------------------- files


def test_write_creates_key_file_readable_by_owner_only(
    bundle: CertificateBundle, tmp_path: Path
) -> None:
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    previous_umask = os.umask(0)  # the key file's mode must not depend on the umask
    try:
        bundle.write(certfile=certfile, keyfile=str(keyfile))
    finally:
        os.umask(previous_umask)
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    assert certfile.read_bytes() == bundle.cert_pem
    assert keyfile.read_bytes() == bundle.key_pem


def test_write_tightens_an_existing_key_file(bundle: CertificateBundle, tmp_path: Path) -> None:
    keyfile = tmp_path / "key.pem"
    keyfile.write_bytes(b"old contents that are longer than nothing" * 100)
    keyfile.chmod(0o644)
    bundle.write(certfile=tmp_path / "cert.pem", keyfile=keyfile)
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    assert keyfile.read_bytes() == bundle.key_pem


def test_written_files_load_into_aioquic(bundle: CertificateBundle, tmp_path: Path) -> None:
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    bundle.write(certfile=certfile, keyfile=keyfile)
    configuration = QuicConfiguration(is_client=False)
    configuration.load_cert_chain(certfile, keyfile)
    assert configuration.certificate is not None
    assert configuration.certificate.fingerprint(hashes.SHA256()) == bundle.sha256


# -------------------------------------------------------------------------------------- pairs


@pytest.fixture
def pair_files(bundle: CertificateBundle, tmp_path: Path) -> tuple[Path, Path]:
    """The certificate and key of ``bundle`` written to PEM files."""
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    bundle.write(certfile=certfile, keyfile=keyfile)
    return certfile, keyfile


def test_a_matching_pair_passes_the_check(pair_files: tuple[Path, Path], tmp_path: Path) -> None:
    certfile, keyfile = pair_files
    check_certificate_pair(certfile, keyfile)
    check_certificate_pair(str(certfile), str(keyfile))
    # A chain counts by its first certificate; a file may hold the key and the chain together.
    chain = tmp_path / "chain.pem"
    chain.write_bytes(certfile.read_bytes() + generate_self_signed_certificate().cert_pem)
    check_certificate_pair(chain, keyfile)
    combined = tmp_path / "combined.pem"
    combined.write_bytes(keyfile.read_bytes() + certfile.read_bytes())
    check_certificate_pair(combined, combined)


def test_a_key_of_another_certificate_is_refused(
    pair_files: tuple[Path, Path], tmp_path: Path
) -> None:
    certfile, _ = pair_files
    other_key = make_key_file(tmp_path / "other-key.pem")
    with pytest.raises(ValueError) as info:
        check_certificate_pair(certfile, other_key)
    assert str(info.value) == (
        f"the private key in {other_key} does not match the certificate in {certfile}"
    )


def test_swapped_files_are_named_as_such(pair_files: tuple[Path, Path]) -> None:
    certfile, keyfile = pair_files
    with pytest.raises(ValueError) as info:
        check_certificate_pair(keyfile, certfile)
    assert str(info.value) == (
        f"{keyfile} holds no PEM certificate "
        "(it holds a private key: are the certificate and key files swapped?)"
    )


def test_a_certificate_given_as_the_key_is_refused(pair_files: tuple[Path, Path]) -> None:
    certfile, _ = pair_files
    with pytest.raises(ValueError) as info:
        check_certificate_pair(certfile, certfile)
    assert str(info.value) == f"{certfile} holds no PEM private key (it holds a certificate)"


def test_files_without_pem_are_refused(pair_files: tuple[Path, Path], tmp_path: Path) -> None:
    certfile, keyfile = pair_files
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a certificate")
    with pytest.raises(ValueError) as info:
        check_certificate_pair(garbage, keyfile)
    assert str(info.value) == f"{garbage} holds no PEM certificate"
    with pytest.raises(ValueError) as info:
        check_certificate_pair(certfile, garbage)
    assert str(info.value) == f"{garbage} holds no PEM private key"


def test_an_encrypted_key_is_refused(
    bundle: CertificateBundle, pair_files: tuple[Path, Path], tmp_path: Path
) -> None:
    certfile, _ = pair_files
    key = serialization.load_pem_private_key(bundle.key_pem, password=None)
    encrypted = tmp_path / "encrypted-key.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ValueError) as info:
        check_certificate_pair(certfile, encrypted)
    assert str(info.value) == (
        f"the private key in {encrypted} is encrypted: the server needs an unencrypted key"
    )


def test_a_missing_file_is_an_os_error(pair_files: tuple[Path, Path], tmp_path: Path) -> None:
    certfile, keyfile = pair_files
    with pytest.raises(FileNotFoundError):
        check_certificate_pair(tmp_path / "missing.pem", keyfile)
    with pytest.raises(FileNotFoundError):
        check_certificate_pair(certfile, tmp_path / "missing.pem")
