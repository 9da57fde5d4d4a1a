"""Fixtures for the interoperability tests: a throw-away ECDSA certificate made at test time,
and the Python 3.12 virtualenv of the independent peers (``scripts/peers-venv.sh``)."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.certs import make_cert
from tests.interop.peer_process import STARTED, forget_started

ROOT = Path(__file__).resolve().parents[2]
#: Upper bound on making the peers' virtualenv (a no-op when it is ready).
PEERS_SETUP_TIMEOUT = 600.0


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
    bundle = make_cert(directory, names=("localhost", "127.0.0.1"), days=days)
    return CertificateFiles(str(bundle.certfile), str(bundle.keyfile), bundle.sha256)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CertificateFiles]:
    """Provide a fresh certificate in a module-scoped temporary directory."""
    yield make_certificate(tmp_path_factory.mktemp("interop-certs"))


class AccessRecords(logging.Handler):
    """Keeps the ``pywebtransport.access`` records of the test."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def access() -> Iterator[AccessRecords]:
    logger = logging.getLogger("pywebtransport.access")
    handler, level = AccessRecords(), logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture(scope="session")
def peers_python() -> str:
    """The Python 3.12 interpreter that has web-transport-quinn, aiopquic and pywebtransport 0.21.1.

    ``scripts/peers-venv.sh`` makes ``.venv/peers`` (the test command runs it first; here it is a
    quick no-op then). Without a Python 3.12 on the machine the test fails with the script's
    explanation: these peers are part of the suite, not optional.
    """
    script = ROOT / "scripts" / "peers-venv.sh"
    completed = subprocess.run(
        ["bash", str(script)],
        capture_output=True,
        text=True,
        timeout=PEERS_SETUP_TIMEOUT,
        check=False,
    )
    if completed.returncode != 0:
        pytest.fail(
            f"the interop peers' Python 3.12 virtualenv is not available:\n{completed.stderr}",
            pytrace=False,
        )
    return str(ROOT / ".venv" / "peers" / "bin" / "python")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    forget_started()  # before the test's fixtures start any peer


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test's report carries what each peer process it started printed."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed:
        for process in STARTED:
            returncode = process.process.returncode
            title = f"peer {process.name} (exit {returncode})"
            report.sections.append((title, process.output()))
