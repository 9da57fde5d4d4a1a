"""Shared fixtures: a test certificate and a running server with test routes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from pywebtransport import (
    ClientConfig,
    ServerApp,
    ServerConfig,
    WebTransportServer,
    WebTransportSession,
)
from pywebtransport.server.echo import echo_handler
from tests.certs import CertBundle, make_cert

#: Every wait in the asyncio tests is bounded by a multiple of this (seconds).
T = 5.0


@pytest.fixture(scope="session")
def cert(tmp_path_factory: pytest.TempPathFactory) -> CertBundle:
    """A self-signed ECDSA certificate for localhost, 127.0.0.1 and ::1."""
    return make_cert(tmp_path_factory.mktemp("cert"))


def build_app(cert: CertBundle, **config: object) -> ServerApp:
    """The test application: /echo plus routes that exercise server-side behaviour."""
    app = ServerApp(
        config=ServerConfig(certfile=str(cert.certfile), keyfile=str(cert.keyfile), **config)  # type: ignore[arg-type]
    )
    app.route("/echo")(echo_handler)

    @app.route("/push")
    async def push(session: WebTransportSession) -> None:
        bidi = await session.create_bidirectional_stream()
        await bidi.write(b"server-bidi", end_stream=True)
        uni = await session.create_unidirectional_stream()
        await uni.write_all(b"server-uni")
        reply = await bidi.read_all()
        await session.datagrams.send(b"got:" + reply)
        await session.wait_closed()

    @app.route("/close")
    async def close(session: WebTransportSession) -> None:
        await session.close(code=4321, reason="server bye")

    @app.route("/sink")
    async def sink(session: WebTransportSession) -> None:
        await session.accept_bidirectional_stream()  # accepted, never read
        await session.wait_closed()

    @app.route("/stop")
    async def stop(session: WebTransportSession) -> None:
        stream = await session.accept_bidirectional_stream()
        await stream.stop(code=9)
        await session.wait_closed()

    @app.route("/items/{item_id}")
    async def item(session: WebTransportSession) -> None:
        await session.datagrams.send(session.path_params["item_id"].encode())
        await session.wait_closed()

    return app


@asynccontextmanager
async def serving(app: ServerApp) -> AsyncIterator[WebTransportServer]:
    """``app`` served on 127.0.0.1 with an ephemeral port; closed (bounded) at the end."""
    srv = WebTransportServer(config=app.config, app=app)
    await srv.listen(host="127.0.0.1", port=0)
    try:
        yield srv
    finally:
        async with asyncio.timeout(T):
            await srv.close()


@pytest.fixture
async def server(cert: CertBundle) -> AsyncIterator[WebTransportServer]:
    """Our server on 127.0.0.1 with an ephemeral port."""
    async with serving(build_app(cert)) as srv:
        yield srv


@pytest.fixture
def client_config(cert: CertBundle) -> ClientConfig:
    """A client config that pins the test certificate by hash."""
    return ClientConfig(server_certificate_hashes=[cert.sha256], connect_timeout=T)


def url(server: WebTransportServer, path: str = "/echo") -> str:
    """The https URL of ``path`` on ``server``."""
    host, port = server.local_address[:2]
    host = f"[{host}]" if ":" in host else host
    return f"https://{host}:{port}{path}"


async def echo_ok(session: WebTransportSession, payload: bytes = b"ping") -> None:
    """One bidirectional round trip on ``session``."""
    stream = await session.create_bidirectional_stream()
    await stream.write_all(payload)
    assert await stream.read_all() == payload
