"""Server limits: sessions per QUIC connection and QUIC connections per server."""

from __future__ import annotations

import asyncio

import pytest

from pywebtransport import ClientConfig, WebTransportClient
from pywebtransport.client._url import parse_url
from pywebtransport.exceptions import HandshakeError, TimeoutError
from pywebtransport.protocol.wire import SettingId
from tests.certs import CertBundle
from tests.conftest import T, build_app, echo_ok, serving, url


async def test_sessions_per_connection_limit(cert: CertBundle, client_config: ClientConfig) -> None:
    """With a limit of 2, a third session on the same connection is answered 429.

    ``WebTransportClient.connect`` opens one connection per session, so the test drives the
    client's own building blocks: ``_open`` makes the connection and its first session,
    ``_request`` opens further sessions on that connection.
    """
    async with (
        asyncio.timeout(4 * T),
        serving(build_app(cert, max_sessions_per_connection=2)) as server,
        WebTransportClient(config=client_config) as client,
    ):
        target = parse_url(url(server))
        headers = client._merged_headers(None)
        first = await client._open(target, headers, [])
        conn = first._conn
        assert conn.protocol.peer_settings is not None
        assert conn.protocol.peer_settings[SettingId.WT_MAX_SESSIONS_DRAFT13] == 2
        assert conn.protocol.peer_settings[SettingId.WT_MAX_SESSIONS_DRAFT07] == 2
        second = await client._request(conn, target, headers)
        await echo_ok(first, b"one")
        await echo_ok(second, b"two")

        with pytest.raises(HandshakeError) as rejected:
            await client._request(conn, target, headers)
        assert rejected.value.status == 429
        assert len(server.connections) == 1
        assert server.stats["sessions_rejected"] == 1
        await echo_ok(first, b"still one")  # the rejection left the open sessions alone

        # Close one session and wait until the server has ended its side of it.
        (server_conn,) = server.connections
        (server_first,) = [s for s in server_conn.sessions if s.session_id == first.session_id]
        await first.close()
        await server_first.wait_closed()

        third = await client._request(conn, target, headers)
        assert third._conn is conn
        await echo_ok(third, b"three")
        await echo_ok(second, b"two again")
        assert len(server.connections) == 1
        assert server.stats["sessions_rejected"] == 1


async def test_max_connections_limit(cert: CertBundle, client_config: ClientConfig) -> None:
    """With a limit of 2, a third connection's Initial packets are dropped until one closes."""
    async with (
        asyncio.timeout(6 * T),
        serving(build_app(cert, max_connections=2)) as server,
        WebTransportClient(config=client_config) as client,
    ):
        first = await client.connect(url=url(server))
        second = await client.connect(url=url(server))
        assert len(server.connections) == 2
        dropped = server.stats["packets_dropped"]

        short = ClientConfig(server_certificate_hashes=[cert.sha256], connect_timeout=1.0)
        async with WebTransportClient(config=short) as refused:
            with pytest.raises(TimeoutError):
                await refused.connect(url=url(server))
        assert server.stats["packets_dropped"] > dropped
        assert len(server.connections) == 2
        assert server.stats["connections_accepted"] == 2
        await echo_ok(first, b"one")
        await echo_ok(second, b"two")

        # Close one session; its client connection then closes, and the server forgets the
        # connection once it has terminated (the close callback runs before `closed` is awaited).
        server_conns = server.connections
        await first.close()
        await asyncio.wait([c.closed for c in server_conns], return_when=asyncio.FIRST_COMPLETED)
        assert len(server.connections) == 1

        third = await client.connect(url=url(server))
        await echo_ok(third, b"three")
        await echo_ok(second, b"two again")
        assert len(server.connections) == 2
        assert server.stats["connections_accepted"] == 3


async def test_request_and_no_session_timeouts_reach_every_connection(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    async with (
        asyncio.timeout(2 * T),
        serving(build_app(cert, request_timeout=7.0, no_session_timeout=8.0)) as server,
        WebTransportClient(config=client_config) as client,
    ):
        session = await client.connect(url=url(server))
        (conn,) = server.connections
        assert (conn.protocol.request_timeout, conn.protocol.no_session_timeout) == (7.0, 8.0)
        await echo_ok(session)
