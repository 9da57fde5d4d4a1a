"""ServerApp: middleware outcomes reach the client as real HTTP statuses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from pywebtransport import (
    ClientConfig,
    HandshakeError,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)
from tests.certs import CertBundle
from tests.conftest import T, build_app, url


@pytest.fixture
async def guarded(cert: CertBundle) -> AsyncIterator[WebTransportServer]:
    """The test app behind a middleware that decides by the request's ``x-answer`` header."""
    app = build_app(cert, session_accept_timeout=0.5)

    async def decide(session: WebTransportSession) -> int | None:
        answer = session.headers.get("x-answer", "")
        if answer == "raise":
            raise RuntimeError("middleware bug")
        if answer == "slow":
            await asyncio.sleep(5)  # stands for a middleware that hangs: bounded by the app
        return int(answer) if answer.isdigit() else None

    app.add_middleware(decide)
    server = WebTransportServer(config=app.config, app=app)
    await server.listen(host="127.0.0.1", port=0)
    yield server
    await server.close()


@pytest.mark.parametrize(
    ("answer", "status"), [("403", 403), ("429", 429), ("200", 500), ("raise", 500), ("slow", 503)]
)
async def test_middleware_outcomes_are_statuses(
    guarded: WebTransportServer, client_config: ClientConfig, answer: str, status: int
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        with pytest.raises(HandshakeError) as info:
            await client.connect(url=url(guarded), headers={"x-answer": answer})
        assert info.value.status == status


async def test_middleware_lets_through(
    guarded: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(guarded))
        stream = await session.create_bidirectional_stream()
        await stream.write_all(b"through")
        assert await stream.read_all() == b"through"


async def test_serve_refuses_a_misspelt_keyword_before_listening(cert: CertBundle) -> None:
    # Were the keyword ignored, serve() would listen on 127.0.0.1 with a free port and run on.
    app = build_app(cert, host="127.0.0.1", port=0)
    async with asyncio.timeout(T):
        with pytest.raises(TypeError, match="prot"):
            await app.serve(prot=1)  # type: ignore[call-arg]
    assert app.server is None
