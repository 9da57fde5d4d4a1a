"""ServerApp routing, hooks and handler life cycle; CA-issued certificates; debug_state."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pywebtransport import (
    CertificateError,
    ClientConfig,
    ServerApp,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)
from tests.certs import CertBundle, make_ca_signed
from tests.conftest import T, url


@pytest.fixture
async def routed(cert: CertBundle) -> AsyncIterator[tuple[WebTransportServer, list[str]]]:
    """An app with a regex route, a default handler, hooks and a handler that raises."""
    events: list[str] = []
    app = ServerApp(config=ServerConfig(certfile=str(cert.certfile), keyfile=str(cert.keyfile)))

    @app.pattern_route(r"/rooms/(?P<room>[a-z]+)/(?P<n>\d+)")
    async def room(session: WebTransportSession) -> None:
        params = session.path_params
        await session.datagrams.send(f"{params['room']}:{params['n']}".encode())
        await session.wait_closed()

    @app.route("/boom")
    async def boom(session: WebTransportSession) -> None:
        raise RuntimeError("handler bug")

    @app.route("/done")
    async def done(session: WebTransportSession) -> None:
        return  # returning closes the session

    @app.route("/forever")
    async def forever(session: WebTransportSession) -> None:
        try:
            await asyncio.Event().wait()  # runs until the server cancels it
        finally:
            events.append("forever cancelled")

    @app.default
    async def fallback(session: WebTransportSession) -> None:
        await session.datagrams.send(b"default:" + session.path.encode())
        await session.wait_closed()

    @app.on_startup
    async def started() -> None:
        events.append("startup")

    @app.on_shutdown
    async def stopped() -> None:
        events.append("shutdown")

    server = WebTransportServer(config=app.config, app=app)
    await server.listen(host="127.0.0.1", port=0)
    try:
        yield server, events
    finally:
        await server.close()


async def test_regex_route_and_default_handler(
    routed: tuple[WebTransportServer, list[str]], client_config: ClientConfig
) -> None:
    server, events = routed
    assert events == ["startup"]
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server, "/rooms/blue/7"))
        assert await session.datagrams.receive() == b"blue:7"
        other = await client.connect(url=url(server, "/rooms/BLUE/7"))  # no full match
        assert await other.datagrams.receive() == b"default:/rooms/BLUE/7"


async def test_handler_return_and_raise_close_the_session(
    routed: tuple[WebTransportServer, list[str]],
    client_config: ClientConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, _ = routed
    caplog.set_level(logging.ERROR, logger="pywebtransport.server.app")
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        done = await client.connect(url=url(server, "/done"))
        await done.wait_closed()
        assert done.close_code == 0
        boom = await client.connect(url=url(server, "/boom"))
        await boom.wait_closed()
        assert boom.close_code == 1
        assert any("handler bug" in (r.exc_text or "") for r in caplog.records)
        # The server keeps serving after a handler raised.
        again = await client.connect(url=url(server, "/rooms/red/1"))
        assert await again.datagrams.receive() == b"red:1"


async def test_shutdown_cancels_handlers_and_runs_hooks(
    routed: tuple[WebTransportServer, list[str]], client_config: ClientConfig
) -> None:
    server, events = routed
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server, "/forever"))
        state = server.debug_state()
        assert json.loads(json.dumps(state))["connections"][0]["sessions"][0]["path"] == "/forever"
        await server.close()
        await session.wait_closed()
    assert events == ["startup", "forever cancelled", "shutdown"]


async def test_ca_issued_certificate(tmp_path: Path) -> None:
    ca_file, leaf = make_ca_signed(tmp_path)
    app = ServerApp(config=ServerConfig(certfile=str(leaf.certfile), keyfile=str(leaf.keyfile)))

    @app.route("/ok")
    async def ok(session: WebTransportSession) -> None:
        await session.datagrams.send(b"verified")
        await session.wait_closed()

    server = WebTransportServer(config=app.config, app=app)
    await server.listen(host="127.0.0.1", port=0)
    port = server.local_address[1]
    try:
        async with asyncio.timeout(T):
            async with WebTransportClient(config=ClientConfig(ca_certs=str(ca_file))) as client:
                session = await client.connect(url=f"https://localhost:{port}/ok")
                assert await session.datagrams.receive() == b"verified"
            # Without the CA the same certificate is refused.
            async with WebTransportClient() as client:
                with pytest.raises(CertificateError):
                    await client.connect(url=f"https://localhost:{port}/ok")
    finally:
        await server.close()


async def test_close_validates_grace_and_state_after_close(cert: CertBundle) -> None:
    from pywebtransport import ServerError

    app = ServerApp(config=ServerConfig(certfile=str(cert.certfile), keyfile=str(cert.keyfile)))
    server = WebTransportServer(config=app.config, app=app)
    await server.listen(host="127.0.0.1", port=0)
    with pytest.raises(ServerError):
        await server.close(grace=-1)
    assert server.debug_state()["listening"]  # the bad call changed nothing
    await server.close()
    state = server.debug_state()
    assert not state["listening"] and state["local_address"] is None
    with pytest.raises(ServerError):
        _ = server.local_address
