"""WebTransportClient.connect against our server: outcomes, errors and connection loss."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pywebtransport import (
    CertificateError,
    ClientConfig,
    ClientError,
    ConfigurationError,
    HandshakeError,
    SessionError,
    StreamError,
    WebTransportClient,
    WebTransportServer,
)
from pywebtransport import exceptions as errors
from pywebtransport.events import Event, EventType
from tests.certs import CertBundle, make_cert
from tests.conftest import T, url

ROOT = Path(__file__).resolve().parents[2]


async def test_rejected_route_reaches_client_as_status(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        with pytest.raises(HandshakeError) as info:
            await client.connect(url=url(server, "/missing"))
        assert info.value.status == 404
        assert client.stats["connections_failed"] == 1
        assert client.stats["connections_attempted"] == 1


async def test_timeout_when_nobody_answers(client_config: ClientConfig) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))  # bound, so no ICMP refusal; never answers
    try:
        port = silent.getsockname()[1]
        async with WebTransportClient(config=client_config) as client:
            start = time.monotonic()
            with pytest.raises(errors.TimeoutError):
                await client.connect(url=f"https://127.0.0.1:{port}/echo", timeout=0.5)
            assert 0.45 <= time.monotonic() - start < 0.5 + T / 5
    finally:
        silent.close()


async def test_unreachable_port_is_a_connection_error(client_config: ClientConfig) -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now: the kernel answers ICMP port unreachable
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        with pytest.raises(errors.ConnectionError) as info:
            await client.connect(url=f"https://127.0.0.1:{port}/echo", timeout=3)
        assert not isinstance(info.value, CertificateError)


async def test_wrong_pinned_hash_is_a_certificate_error(server: WebTransportServer) -> None:
    config = ClientConfig(server_certificate_hashes=[b"\x00" * 32])
    async with asyncio.timeout(T), WebTransportClient(config=config) as client:
        with pytest.raises(CertificateError):
            await client.connect(url=url(server))


async def test_verification_is_on_by_default(server: WebTransportServer) -> None:
    async with asyncio.timeout(T), WebTransportClient() as client:
        with pytest.raises(CertificateError):
            await client.connect(url=url(server))


async def test_ca_file_and_hostname_check(server: WebTransportServer, cert: CertBundle) -> None:
    config = ClientConfig(ca_certs=str(cert.certfile))
    async with asyncio.timeout(T), WebTransportClient(config=config) as client:
        session = await client.connect(url=url(server))
        assert session.is_ready


async def test_hostname_mismatch_is_rejected(tmp_path: Path) -> None:
    from tests.conftest import build_app

    only_ip = make_cert(tmp_path / "ip", names=("127.0.0.1",))
    app = build_app(only_ip)
    srv = WebTransportServer(config=app.config, app=app)
    await srv.listen(host="127.0.0.1", port=0)
    try:
        config = ClientConfig(ca_certs=str(only_ip.certfile))
        async with asyncio.timeout(T), WebTransportClient(config=config) as client:
            port = srv.local_address[1]
            with pytest.raises(CertificateError):
                await client.connect(url=f"https://localhost:{port}/echo")
            ok = await client.connect(url=f"https://127.0.0.1:{port}/echo")
            assert ok.is_ready
    finally:
        await srv.close()


@pytest.mark.parametrize(
    "bad", ["http://127.0.0.1:4433/", "ftp://x/", "https:///nohost", "https://h:99999/", "nope"]
)
async def test_malformed_url_is_a_configuration_error(
    bad: str, client_config: ClientConfig
) -> None:
    async with WebTransportClient(config=client_config) as client:
        with pytest.raises(ConfigurationError):
            await client.connect(url=bad)


async def test_client_must_be_entered_and_not_closed(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    client = WebTransportClient(config=client_config)
    with pytest.raises(ClientError):
        await client.connect(url=url(server))
    async with client:
        session = await client.connect(url=url(server))
    assert client.is_closed and session.is_closed
    with pytest.raises(ClientError):
        await client.connect(url=url(server))
    await client.close()  # idempotent


async def test_ipv6_loopback(cert: CertBundle, client_config: ClientConfig) -> None:
    from tests.conftest import build_app

    app = build_app(cert)
    srv = WebTransportServer(config=app.config, app=app)
    await srv.listen(host="::1", port=0)
    try:
        async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
            session = await client.connect(url=url(srv))
            stream = await session.create_bidirectional_stream()
            await stream.write_all(b"v6")
            assert await stream.read_all() == b"v6"
            (conn,) = srv.connections
            assert conn.sessions[0].remote_address[0] == "::1"
    finally:
        await srv.close()


@pytest.fixture
async def server_process(tmp_path: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """The test application in a child process, so a test can kill it."""
    root = ROOT
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.server_process",
        str(tmp_path),
        "0",
        stdout=asyncio.subprocess.PIPE,
        cwd=root,
        env={**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{root / 'src'}"},
    )
    assert proc.stdout is not None
    async with asyncio.timeout(3 * T):
        line = await proc.stdout.readline()
    assert line.startswith(b"READY"), line
    try:
        yield proc, int(line.split()[1])
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_killed_server_is_detected_within_idle_timeout(
    server_process: tuple[asyncio.subprocess.Process, int], tmp_path: Path
) -> None:
    proc, port = server_process
    config = ClientConfig(verify_mode=ssl.CERT_NONE, idle_timeout=1.0)
    async with asyncio.timeout(3 * T), WebTransportClient(config=config) as client:
        session = await client.connect(url=f"https://127.0.0.1:{port}/echo")
        stream = await session.create_bidirectional_stream()
        await stream.write(b"before")
        assert await stream.read(6) == b"before"
        reader = asyncio.create_task(stream.read(10))
        proc.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        await session.wait_closed()
        detected = time.monotonic() - killed_at
        assert detected < 1.0 + T / 2
        assert not session.is_ready
        with pytest.raises(StreamError):
            await reader
        with pytest.raises((StreamError, SessionError)):
            await stream.write(b"after")


async def test_idle_session_outlives_idle_timeout_with_keep_alive(
    server: WebTransportServer, cert: CertBundle
) -> None:
    config = ClientConfig(
        server_certificate_hashes=[cert.sha256], idle_timeout=0.6, keep_alive=True
    )
    async with asyncio.timeout(T), WebTransportClient(config=config) as client:
        session = await client.connect(url=url(server))
        # Wait three idle timeouts' worth on the session itself: it must not close.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.8):
                await session.wait_closed()
        assert session.is_ready
        stream = await session.create_bidirectional_stream()
        await stream.write_all(b"alive")
        assert await stream.read_all() == b"alive"


async def test_idle_session_without_keep_alive_is_reaped(
    server: WebTransportServer, cert: CertBundle
) -> None:
    config = ClientConfig(
        server_certificate_hashes=[cert.sha256], idle_timeout=0.6, keep_alive=False
    )
    async with asyncio.timeout(T), WebTransportClient(config=config) as client:
        session = await client.connect(url=url(server))
        start = time.monotonic()
        await session.wait_closed()
        assert time.monotonic() - start < 0.6 + T / 5
        assert not session.is_ready


async def test_client_is_an_event_emitter(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    seen: list[Event] = []
    async with asyncio.timeout(T):
        client = WebTransportClient(config=client_config)
        for kind in ("connection_established", "connection_failed", "connection_closed"):
            client.on(kind, seen.append)
        async with client:
            session = await client.connect(url=url(server))
            with pytest.raises(HandshakeError) as failure:
                await client.connect(url=url(server, "/nowhere"))
        assert [e.type for e in seen] == [
            EventType.CONNECTION_ESTABLISHED,
            EventType.CONNECTION_FAILED,
            EventType.CONNECTION_CLOSED,
        ]
        assert seen[0].data == {"url": url(server), "session": session}
        assert seen[1].data == {"url": url(server, "/nowhere"), "error": failure.value}
        assert all(e.source is client for e in seen)


async def test_ip_literals_need_no_lookup_and_names_are_resolved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pywebtransport.client.client import _resolve

    loop = asyncio.get_running_loop()
    looked_up: list[str] = []
    real = loop.getaddrinfo

    async def getaddrinfo(host: str, *args: object, **kwargs: object) -> object:
        looked_up.append(host)
        return await real(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    assert await _resolve(loop, "127.0.0.1", 4433) == (socket.AF_INET, ("127.0.0.1", 4433))
    assert await _resolve(loop, "::1", 4433) == (socket.AF_INET6, ("::1", 4433, 0, 0))
    assert looked_up == []
    family, addr = await _resolve(loop, "localhost", 4433)
    assert looked_up == ["localhost"]
    assert family in (socket.AF_INET, socket.AF_INET6) and addr[1] == 4433

    async def no_answer(host: str, *args: object, **kwargs: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(loop, "getaddrinfo", no_answer)  # no query leaves the machine
    with pytest.raises(errors.ConnectionError, match=r"cannot resolve unknown\.test"):
        await _resolve(loop, "unknown.test", 4433)
