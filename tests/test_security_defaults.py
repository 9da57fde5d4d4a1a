"""Security defaults: SSLKEYLOGFILE only when set, and no secrets in the logs.

TLS verification on by default, the hostname check and the rejection of a mismatching
``server_certificate_hashes`` pin are covered in ``tests/client/test_client.py``
(``test_verification_is_on_by_default``, ``test_ca_file_and_hostname_check``,
``test_hostname_mismatch_is_rejected``, ``test_wrong_pinned_hash_is_a_certificate_error``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from pywebtransport import ClientConfig, WebTransportClient, WebTransportServer
from tests.certs import CertBundle
from tests.conftest import T, build_app, serving, url

LABELS = (
    "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
    "SERVER_HANDSHAKE_TRAFFIC_SECRET",
    "CLIENT_TRAFFIC_SECRET_0",
    "SERVER_TRAFFIC_SECRET_0",
)


async def one_session(srv: WebTransportServer, config: ClientConfig) -> None:
    """Open a session, echo a stream and a datagram, close it."""
    async with asyncio.timeout(T), WebTransportClient(config=config) as client:
        session = await client.connect(url=url(srv))
        stream = await session.create_bidirectional_stream()
        await stream.write(b"ping", end_stream=True)
        assert await stream.read_all() == b"ping"
        await session.datagrams.send(b"dgram")
        assert await session.datagrams.receive(timeout=T) == b"dgram"
        await session.close()


def secrets(path: Path) -> list[str]:
    """The hex secrets of a key-log file (third field of each NSS key-log line)."""
    return [line.split()[2] for line in path.read_text().splitlines() if line.strip()]


async def test_sslkeylogfile_is_written_by_client_and_server_when_set(
    cert: CertBundle, client_config: ClientConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server_log, client_log = tmp_path / "server.keys", tmp_path / "client.keys"
    monkeypatch.setenv("SSLKEYLOGFILE", str(server_log))
    async with serving(build_app(cert)) as srv:  # the server reads the variable when it is built
        monkeypatch.setenv("SSLKEYLOGFILE", str(client_log))  # the client, per connection
        await one_session(srv, client_config)
        await one_session(srv, client_config)  # appended, not truncated
    for path in (server_log, client_log):
        lines = path.read_text().splitlines()
        for label in LABELS:
            assert sum(line.startswith(label + " ") for line in lines) == 2, (path, label)
        assert all(len(line.split()) == 3 for line in lines)


async def test_no_key_log_without_sslkeylogfile(
    cert: CertBundle, client_config: ClientConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSLKEYLOGFILE", raising=False)
    monkeypatch.chdir(tmp_path)
    async with serving(build_app(cert)) as srv:
        assert srv._engines.settings.key_log is None
        client = WebTransportClient(config=client_config)
        assert client._quic_settings("localhost").key_log is None
        await client.close()
        await one_session(srv, client_config)
    assert not os.listdir(tmp_path)


async def test_empty_sslkeylogfile_means_off(
    cert: CertBundle, client_config: ClientConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSLKEYLOGFILE", "")
    async with serving(build_app(cert)) as srv:
        assert srv._engines.settings.key_log is None
        client = WebTransportClient(config=client_config)
        assert client._quic_settings("localhost").key_log is None
        await client.close()


async def test_no_secrets_in_debug_logs(
    cert: CertBundle,
    client_config: ClientConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    quic_engine: str,
) -> None:
    keys = tmp_path / "keys"
    monkeypatch.setenv("SSLKEYLOGFILE", str(keys))  # to learn this session's traffic secrets
    caplog.set_level(logging.DEBUG, logger="pywebtransport")
    caplog.set_level(logging.DEBUG, logger="quic")
    async with serving(build_app(cert)) as srv:
        await one_session(srv, client_config)
    assert caplog.records, "no log records captured: the check would prove nothing"
    formatter = logging.Formatter("%(name)s %(message)s")
    text = "\n".join(formatter.format(record) for record in caplog.records)
    if quic_engine == "aioquic":  # (qh3 logs nothing about a session that goes well)
        assert any(r.name.startswith("pywebtransport.engine") for r in caplog.records)

    forbidden: dict[str, str] = {}
    for i, secret in enumerate(secrets(keys)):
        forbidden[f"traffic secret {i}"] = secret
    assert len(forbidden) >= 2 * len(LABELS)
    pin = cert.sha256
    forbidden["pinned hash (hex)"] = pin.hex()
    forbidden["pinned hash (HEX)"] = pin.hex().upper()
    forbidden["pinned hash (repr)"] = repr(pin)
    pem = cert.keyfile.read_text()
    forbidden["private key PEM"] = pem
    for n, line in enumerate(pem.splitlines()):
        if not line.startswith("-----") and len(line) >= 16:  # too short would match by chance
            forbidden[f"private key PEM line {n}"] = line
    for what, value in forbidden.items():
        assert value.lower() not in text.lower(), f"{what} appears in the logs"
