"""The echo handler: how it ends a stream the peer resets or stops, or whose session closes."""

from __future__ import annotations

import asyncio

import pytest

from pywebtransport import (
    ClientConfig,
    StreamError,
    WebTransportClient,
    WebTransportSendStream,
    WebTransportServer,
    WebTransportSession,
)
from pywebtransport.server.echo import echo_handler
from tests.certs import CertBundle
from tests.conftest import T, build_app, serving, url


async def test_a_stopped_echo_stops_the_peer_writes_too(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server))
        stream = await session.create_bidirectional_stream()
        await stream.write(b"ping")
        assert await stream.readexactly(4) == b"ping"
        await stream.stop(code=7)  # the client wants no more echo
        # The server cannot echo what it reads, so it stops reading as well, with the same code:
        # the client's writes fail instead of waiting for credit that never comes.
        with pytest.raises(StreamError) as info:
            while True:  # ends when the server's STOP_SENDING arrives (bounded by the timeout)
                await stream.write(b"data" * 1000)
                await asyncio.sleep(0)  # lets the connection take in what arrived
        assert info.value.error_code == 7
        await session.close()


async def test_a_closing_session_does_not_reset_echo_streams_with_its_code(
    cert: CertBundle, client_config: ClientConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    aborts: list[int] = []
    abort = WebTransportSendStream.abort

    async def recording_abort(self: WebTransportSendStream, *, code: int = 0) -> None:
        aborts.append(code)
        await abort(self, code=code)

    monkeypatch.setattr(WebTransportSendStream, "abort", recording_abort)
    handler_done = asyncio.Event()
    app = build_app(cert)

    @app.route("/watched-echo")
    async def watched_echo(session: WebTransportSession) -> None:
        try:
            await echo_handler(session)
        finally:
            handler_done.set()

    async with (
        asyncio.timeout(T),
        serving(app) as server,
        WebTransportClient(config=client_config) as client,
    ):
        session = await client.connect(url=url(server, "/watched-echo"))
        stream = await session.create_bidirectional_stream()
        await stream.write(b"ping")
        assert await stream.readexactly(4) == b"ping"  # the echo task now waits for more
        await session.close(code=4321, reason="bye")
        await handler_done.wait()
    # The close code is about the session: the protocol has ended its streams already.
    assert aborts == []
