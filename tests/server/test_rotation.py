"""Certificate rotation: ``WebTransportServer.reload_certificate`` and ``serve``'s automatic one,
and the check of a server's certificate and key pair."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import pytest

from pywebtransport import (
    ClientConfig,
    ServerApp,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)
from pywebtransport.exceptions import CertificateError, ServerError
from pywebtransport.server.certificate import CertificateBundle, generate_self_signed_certificate
from pywebtransport.server.echo import echo_handler
from tests.certs import CertBundle, make_key_file
from tests.conftest import T, url
from tests.test_cli import http_get, start_serve


def _pinned(digest: bytes) -> ClientConfig:
    return ClientConfig(server_certificate_hashes=[digest], connect_timeout=T)


def _write(bundle: CertificateBundle, directory: Path) -> tuple[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    certfile, keyfile = str(directory / "cert.pem"), str(directory / "key.pem")
    bundle.write(certfile=certfile, keyfile=keyfile)
    return certfile, keyfile


async def _echo(session: WebTransportSession, payload: bytes) -> bytes:
    async with asyncio.timeout(T):
        stream = await session.create_bidirectional_stream()
        await stream.write(payload, end_stream=True)
        return await stream.read_all()


async def _connect_and_echo(server_url: str, digest: bytes, payload: bytes) -> bytes:
    async with WebTransportClient(config=_pinned(digest)) as client:
        session = await client.connect(url=server_url)
        try:
            return await _echo(session, payload)
        finally:
            await session.close()


async def test_rotation_keeps_open_sessions_and_pins_the_new_hash(
    server: WebTransportServer, cert: CertBundle, tmp_path: Path
) -> None:
    async with WebTransportClient(config=_pinned(cert.sha256)) as client:
        old_session = await client.connect(url=url(server))
        assert await _echo(old_session, b"before") == b"before"

        new = generate_self_signed_certificate()
        certfile, keyfile = _write(new, tmp_path / "new")
        server.reload_certificate(certfile=certfile, keyfile=keyfile)
        assert server.config.certfile == certfile

        # The session opened with the old certificate keeps echoing, on new streams too.
        for index in range(3):
            payload = f"after-{index}".encode() * 100
            assert await _echo(old_session, payload) == payload
        # A new session works with the new hash pinned, and not with the old one.
        assert await _connect_and_echo(url(server), new.sha256, b"fresh") == b"fresh"
        with pytest.raises(CertificateError):
            await _connect_and_echo(url(server), cert.sha256, b"stale")
        assert await _echo(old_session, b"still") == b"still"
        await old_session.close()


async def test_reload_rejects_bad_files_and_keeps_the_old_certificate(
    server: WebTransportServer, cert: CertBundle, tmp_path: Path
) -> None:
    first = generate_self_signed_certificate()
    second = generate_self_signed_certificate()
    cert_a, key_a = _write(first, tmp_path / "a")
    _, key_b = _write(second, tmp_path / "b")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")

    with pytest.raises(ServerError, match="does not match"):
        server.reload_certificate(certfile=cert_a, keyfile=key_b)
    with pytest.raises(ServerError, match="cannot load certificate"):
        server.reload_certificate(certfile=str(garbage), keyfile=key_a)
    with pytest.raises(ServerError, match="cannot load certificate"):
        server.reload_certificate(certfile=str(tmp_path / "missing.pem"), keyfile=key_a)
    with pytest.raises(ServerError, match="are the certificate and key files swapped"):
        server.reload_certificate(certfile=key_a, keyfile=cert_a)

    assert server.config.certfile == str(cert.certfile)
    assert await _connect_and_echo(url(server), cert.sha256, b"old") == b"old"


def test_a_server_refuses_a_key_that_does_not_match_its_certificate(
    cert: CertBundle, tmp_path: Path, quic_engine: str
) -> None:
    other_key = make_key_file(tmp_path / "other-key.pem")
    config = ServerConfig(certfile=str(cert.certfile), keyfile=str(other_key))
    assert config.engine == quic_engine  # the same words on every engine
    with pytest.raises(ServerError) as info:
        WebTransportServer(config=config)
    assert str(info.value) == (
        f"cannot load certificate: the private key in {other_key} "
        f"does not match the certificate in {cert.certfile}"
    )


def test_a_server_says_when_certificate_and_key_are_swapped(
    cert: CertBundle, quic_engine: str
) -> None:
    config = ServerConfig(certfile=str(cert.keyfile), keyfile=str(cert.certfile))
    assert config.engine == quic_engine  # the same words on every engine
    with pytest.raises(ServerError) as info:
        WebTransportServer(config=config)
    assert str(info.value) == (
        f"cannot load certificate: {cert.keyfile} holds no PEM certificate "
        "(it holds a private key: are the certificate and key files swapped?)"
    )


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_serve_rotates_its_generated_certificate(tmp_path: Path, workers: str) -> None:
    # Rotation every 3 s instead of every 12 days (hidden option for tests).
    served = await start_serve(tmp_path, "--rotate-after", "3", "--workers", workers, timeout=6 * T)
    server_url = f"https://127.0.0.1:{served.udp_port}/echo"
    old_hash = bytes.fromhex(served.hash_hex)
    try:
        async with WebTransportClient(config=_pinned(old_hash)) as client:
            session = await client.connect(url=server_url)
            assert await _echo(session, b"before") == b"before"

            rotated = await served.line_starting("ROTATED ", timeout=6 * T)
            new_hex = rotated.split("hash=", 1)[1]
            assert new_hex != served.hash_hex and len(new_hex) == 64
            status, body = await http_get(served.http_port, "/config.json")
            assert status == 200 and f'"certificateHash": "{new_hex}"' in body.decode()

            assert await _echo(session, b"across") == b"across"
            new_hash = bytes.fromhex(new_hex)
            assert await _connect_and_echo(server_url, new_hash, b"new") == b"new"
            with pytest.raises(CertificateError):
                await _connect_and_echo(server_url, old_hash, b"old")
            assert await _echo(session, b"after") == b"after"
            await session.close()
    finally:
        if served.process.returncode is None:
            served.process.terminate()
            async with asyncio.timeout(T):
                await served.process.wait()


async def test_an_in_memory_certificate_serves_and_leaves_no_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    bundle = generate_self_signed_certificate()
    app = ServerApp(config=ServerConfig(certificate=bundle, port=0))
    app.route("/echo")(echo_handler)
    server = WebTransportServer(config=app.config, app=app)
    assert os.listdir(tmp_path) == []  # loaded, and the PEM files already removed
    await server.listen(host="127.0.0.1", port=0)
    try:
        async with WebTransportClient(config=_pinned(bundle.sha256)) as client:
            session = await client.connect(url(server))
            assert await _echo(session, b"memory") == b"memory"
    finally:
        async with asyncio.timeout(T):
            await server.close()
    assert os.listdir(tmp_path) == []
