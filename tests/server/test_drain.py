"""Graceful shutdown: server.close(grace=...) drains sessions in flight, then closes the rest."""

from __future__ import annotations

import asyncio
import time

import pytest

from pywebtransport import (
    ClientConfig,
    ServerApp,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)
from pywebtransport.exceptions import WebTransportError
from pywebtransport.session import SessionState
from tests.certs import CertBundle
from tests.conftest import T, url

CHUNK = 16 * 1024
CHUNKS = 64  # 1 MiB per session


def payload(seed: int) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(CHUNK * CHUNKS))


class Observed:
    """What the server handlers saw, keyed by session path."""

    def __init__(self) -> None:
        self.states: dict[str, SessionState] = {}
        self.finished: dict[str, asyncio.Future[None]] = {}

    def future(self, key: str) -> asyncio.Future[None]:
        if key not in self.finished:
            self.finished[key] = asyncio.get_running_loop().create_future()
        return self.finished[key]


def make_app(cert: CertBundle, observed: Observed) -> ServerApp:
    app = ServerApp(
        config=ServerConfig(certfile=str(cert.certfile), keyfile=str(cert.keyfile), port=0)
    )

    @app.route("/transfer/{n}")
    async def transfer(session: WebTransportSession) -> None:
        # Echo one bidirectional stream chunk by chunk, then wait for the client to close.
        stream = await session.accept_bidirectional_stream(timeout=T)
        while True:
            data = await stream.read(CHUNK)
            if not data:
                break
            await stream.write(data)
        await stream.close()
        observed.states[session.path] = session.state
        observed.future(session.path).set_result(None)
        await session.wait_closed()

    @app.route("/idle")
    async def idle(session: WebTransportSession) -> None:
        await session.wait_closed()

    return app


async def start(app: ServerApp) -> WebTransportServer:
    server = WebTransportServer(config=app.config, app=app)
    await server.listen(host="127.0.0.1", port=0)
    return server


async def test_in_flight_transfers_finish_within_grace(cert: CertBundle) -> None:
    observed = Observed()
    server = await start(make_app(cert, observed))
    config = ClientConfig(server_certificate_hashes=[cert.sha256], connect_timeout=T)
    grace = 4 * T
    closing: asyncio.Task[None] | None = None
    try:
        async with WebTransportClient(config=config) as client:
            sessions = [await client.connect(url=url(server, f"/transfer/{n}")) for n in range(2)]
            streams = [await s.create_bidirectional_stream(timeout=T) for s in sessions]
            datas = [payload(n) for n in range(2)]
            # One chunk each way first: the transfers are in flight when the drain starts.
            for stream, data in zip(streams, datas, strict=True):
                await stream.write(data[:CHUNK])
            for stream, data in zip(streams, datas, strict=True):
                assert await asyncio.wait_for(stream.readexactly(CHUNK), T) == data[:CHUNK]

            started = time.monotonic()
            closing = asyncio.create_task(server.close(grace=grace))

            async def finish(n: int) -> bytes:
                await streams[n].write(datas[n][CHUNK:], end_stream=True)
                return await streams[n].read_all()

            # A new session is refused while the server drains.
            with pytest.raises(WebTransportError):
                await client.connect(url=url(server, "/transfer/9"), timeout=1.0)

            echoed = await asyncio.wait_for(asyncio.gather(finish(0), finish(1)), T)
            for n in range(2):
                assert echoed[n] == datas[n][CHUNK:], f"session {n} lost or changed data"
                await asyncio.wait_for(observed.future(f"/transfer/{n}"), T)
                assert observed.states[f"/transfer/{n}"] is SessionState.DRAINING
                assert sessions[n].state is SessionState.DRAINING
            assert not closing.done()  # still waiting for the sessions, within grace
            for session in sessions:
                await session.close()
            await asyncio.wait_for(closing, T)
            # The server finished as soon as the sessions did, well before the grace period.
            assert time.monotonic() - started < grace / 2
            assert server.stats["sessions_rejected"] == 0  # the late connect never got a CONNECT
    finally:
        if closing is None:
            closing = asyncio.create_task(server.close(grace=0))
        async with asyncio.timeout(grace + T):
            await closing


@pytest.mark.parametrize("grace", [0.0, 0.6])
async def test_session_that_does_not_finish_is_closed_after_grace(
    cert: CertBundle, grace: float
) -> None:
    observed = Observed()
    server = await start(make_app(cert, observed))
    config = ClientConfig(server_certificate_hashes=[cert.sha256], connect_timeout=T)
    async with WebTransportClient(config=config) as client:
        session = await client.connect(url=url(server, "/idle"))
        started = time.monotonic()
        closing = asyncio.create_task(server.close(grace=grace))
        await asyncio.wait_for(session.wait_closed(), grace + T)
        closed_after = time.monotonic() - started
        await asyncio.wait_for(closing, T)
    assert session.is_closed
    assert grace - 0.05 <= closed_after <= grace + 1.5, closed_after


async def test_no_argument_close_uses_config_grace(cert: CertBundle) -> None:
    app = ServerApp(
        config=ServerConfig(
            certfile=str(cert.certfile), keyfile=str(cert.keyfile), shutdown_grace=0.3
        )
    )

    @app.route("/idle")
    async def idle(session: WebTransportSession) -> None:
        await session.wait_closed()

    server = await start(app)
    config = ClientConfig(server_certificate_hashes=[cert.sha256], connect_timeout=T)
    async with WebTransportClient(config=config) as client:
        session = await client.connect(url=url(server, "/idle"))
        started = time.monotonic()
        await asyncio.wait_for(server.close(), T)
        elapsed = time.monotonic() - started
        await asyncio.wait_for(session.wait_closed(), T)
    assert 0.25 <= elapsed <= 0.3 + 1.5, elapsed
    await server.close()  # idempotent


async def test_no_connection_is_counted_once_close_returns(cert: CertBundle) -> None:
    observed = Observed()
    server = await start(make_app(cert, observed))
    config = ClientConfig(server_certificate_hashes=[cert.sha256], connect_timeout=T)
    async with WebTransportClient(config=config) as client:
        sessions = [await client.connect(url(server, "/idle")) for _ in range(2)]
        assert server.stats["connections_active"] == 2
        await asyncio.wait_for(server.close(), T)
        stats = server.stats
        assert stats["connections_active"] == 0 and stats["sessions_active"] == 0
        assert server.connections == [] and server.debug_state()["connections"] == []
        for session in sessions:
            await asyncio.wait_for(session.wait_closed(), T)
            assert session.close_code == 0  # the server's close reached the client
