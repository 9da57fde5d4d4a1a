"""ClientConfig.reuse_connections: several sessions on one QUIC connection."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from pywebtransport import (
    ClientConfig,
    HandshakeError,
    TimeoutError,
    WebTransportClient,
    WebTransportSession,
)
from tests.certs import CertBundle
from tests.conftest import T, build_app, echo_ok, serving, url


async def test_sessions_share_a_connection_when_asked(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    config = replace(client_config, reuse_connections=True)
    async with (
        serving(build_app(cert)) as server,
        asyncio.timeout(2 * T),
        WebTransportClient(config=config) as client,
    ):
        sessions = [await client.connect(url=url(server)) for _ in range(3)]
        assert len(client._connections) == 1
        assert server.stats["connections_accepted"] == 1
        assert server.stats["sessions_active"] == 3
        for session in sessions:
            await echo_ok(session)
        # A rejected request on the shared connection leaves the others alone.
        with pytest.raises(HandshakeError) as rejected:
            await client.connect(url=url(server, "/nowhere"))
        assert rejected.value.status == 404
        await sessions[0].close()
        await echo_ok(sessions[1])
        (conn,) = client._connections
        for session in sessions[1:]:
            await session.close()
        await conn.wait_closed()  # the last session gone, the connection closes
        assert not client._by_target


async def test_reuse_respects_the_servers_session_limit(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    config = replace(client_config, reuse_connections=True)
    async with (
        serving(build_app(cert, max_sessions_per_connection=2)) as server,
        asyncio.timeout(2 * T),
        WebTransportClient(config=config) as client,
    ):
        sessions = [await client.connect(url=url(server)) for _ in range(5)]
        # 2 + 2 + 1: a new connection whenever the server's SETTINGS allow no more.
        assert len(client._connections) == 3
        assert server.stats["connections_accepted"] == 3
        assert server.stats["sessions_rejected"] == 0
        for session in sessions:
            await echo_ok(session)


async def test_without_reuse_every_session_has_its_connection(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    async with (
        serving(build_app(cert)) as server,
        asyncio.timeout(2 * T),
        WebTransportClient(config=client_config) as client,
    ):
        for _ in range(2):
            await echo_ok(await client.connect(url=url(server)))
        assert len(client._connections) == 2
        assert server.stats["connections_accepted"] == 2


async def test_a_request_that_times_out_is_withdrawn_from_the_shared_connection(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    app = build_app(cert)
    held = asyncio.Event()

    async def hold_slow_requests(session: WebTransportSession) -> int | None:
        if session.path.endswith("?slow"):
            held.set()
            await asyncio.Event().wait()  # never decides (the server's close cancels it)
        return None

    app.add_middleware(hold_slow_requests)
    config = replace(client_config, reuse_connections=True)
    async with (
        serving(app) as server,
        asyncio.timeout(2 * T),
        WebTransportClient(config=config) as client,
    ):
        first = await client.connect(url=url(server))
        with pytest.raises(TimeoutError):
            await client.connect(url=url(server, "/echo?slow"), timeout=0.5)
        assert held.is_set()
        (conn,) = client._connections
        assert conn.protocol.open_session_count() == 1  # only the first session is left
        await echo_ok(first)
        await echo_ok(await client.connect(url=url(server)))  # the connection is still shared
        assert server.stats["connections_accepted"] == 1
