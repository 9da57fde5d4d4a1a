"""ClientPool: round-robin hand-out, concurrent connect_all with failures, life cycle."""

from __future__ import annotations

import asyncio
import logging

import pytest

from pywebtransport import (
    ClientConfig,
    ClientError,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)
from pywebtransport.client.pool import ClientPool
from tests.certs import CertBundle
from tests.conftest import T, url


def good(cert: CertBundle) -> ClientConfig:
    """A config that pins the test certificate."""
    return ClientConfig(server_certificate_hashes=[cert.sha256], connect_timeout=T)


def index_of(client: WebTransportClient, configs: list[ClientConfig | None]) -> int:
    """Which config (by identity) the client was built from."""
    (index,) = [i for i, config in enumerate(configs) if config is client.config]
    return index


def test_empty_configs_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        ClientPool(configs=[])


async def test_use_outside_async_with_is_a_client_error(
    server: WebTransportServer, cert: CertBundle
) -> None:
    pool = ClientPool(configs=[good(cert)])
    with pytest.raises(ClientError):
        await pool.get_client()
    with pytest.raises(ClientError):
        await pool.connect_all(url=url(server))
    async with asyncio.timeout(T), pool:
        assert (await pool.get_client()).config is not None
    with pytest.raises(ClientError):
        await pool.get_client()
    with pytest.raises(ClientError):
        await pool.connect_all(url=url(server))
    with pytest.raises(ClientError):
        async with pool:
            pass
    await pool.close_all()  # idempotent


async def test_round_robin_from_the_first_client_wraps_around(cert: CertBundle) -> None:
    configs: list[ClientConfig | None] = [good(cert), good(cert), good(cert)]
    async with ClientPool(configs=configs) as pool:
        assert pool.get_client_count() == 3
        order = [index_of(await pool.get_client(), configs) for _ in range(7)]
    assert order == [0, 1, 2, 0, 1, 2, 0]


async def test_round_robin_under_concurrent_callers(cert: CertBundle) -> None:
    configs: list[ClientConfig | None] = [good(cert), good(cert), good(cert), good(cert)]
    async with asyncio.timeout(T), ClientPool(configs=configs) as pool:
        first = await pool.get_client()  # start off the first client
        clients = await asyncio.gather(*(pool.get_client() for _ in range(4 * 25 - 1)))
    order = [index_of(c, configs) for c in [first, *clients]]
    assert order == [i % 4 for i in range(100)]  # gather starts the callers in order


async def test_connect_all_returns_only_the_successes(
    server: WebTransportServer, cert: CertBundle
) -> None:
    configs: list[ClientConfig | None] = [
        good(cert),
        ClientConfig(server_certificate_hashes=[b"\x01" * 32], connect_timeout=T),  # wrong pin
        None,  # default config: verification on, the self-signed cert is refused
        good(cert).update(connect_timeout=1e-6),  # deadline passes at once
        good(cert),
    ]
    async with asyncio.timeout(T), ClientPool(configs=configs) as pool:
        clients = [await pool.get_client() for _ in configs]
        sessions = await pool.connect_all(url=url(server))
        assert len(sessions) == 2
        assert all(isinstance(s, WebTransportSession) and s.is_ready for s in sessions)
        # The failures did not cancel the good clients: both connected and count a success.
        assert [c.stats["connections_successful"] for c in clients] == [1, 0, 0, 0, 1]
        assert [c.stats["connections_failed"] for c in clients] == [0, 1, 1, 1, 0]
        for session in sessions:
            stream = await session.create_bidirectional_stream()
            await stream.write_all(b"pooled")
            assert await stream.read_all() == b"pooled"
        assert "active_sessions=2" in repr(pool)
    assert all(s.is_closed for s in sessions)  # leaving the block closed every client


async def test_connect_all_with_every_client_failing_returns_empty(
    server: WebTransportServer, cert: CertBundle
) -> None:
    configs: list[ClientConfig | None] = [None, good(cert).update(connect_timeout=1e-6)]
    async with asyncio.timeout(T), ClientPool(configs=configs) as pool:
        assert await pool.connect_all(url=url(server)) == []
        assert await pool.connect_all(url=url(server, "/missing")) == []


async def test_connect_all_failures_are_warnings_naming_url_and_error(
    server: WebTransportServer, cert: CertBundle, caplog: pytest.LogCaptureFixture
) -> None:
    target = url(server, "/missing")
    async with asyncio.timeout(T), ClientPool(configs=[good(cert)]) as pool:
        with caplog.at_level(logging.WARNING, logger="pywebtransport.client.pool"):
            assert await pool.connect_all(target) == []  # the URL by position
    (record,) = [r for r in caplog.records if r.name == "pywebtransport.client.pool"]
    assert record.levelno == logging.WARNING
    assert target in record.getMessage() and "HandshakeError" in record.getMessage()
    assert "404" in record.getMessage()


async def test_close_all_closes_every_client_and_session(
    server: WebTransportServer, cert: CertBundle
) -> None:
    configs: list[ClientConfig | None] = [good(cert), good(cert)]
    async with asyncio.timeout(T):
        pool = ClientPool(configs=configs)
        assert repr(pool).startswith("<ClientPool [new] clients=2")
        async with pool:
            clients = [await pool.get_client() for _ in configs]
            sessions = await pool.connect_all(url=url(server))
            assert len(sessions) == 2
            await pool.close_all()
            assert all(s.is_closed for s in sessions)
            assert all(c.is_closed for c in clients)
            assert pool.get_client_count() == 0
            assert repr(pool).startswith("<ClientPool [closed] clients=0")
            with pytest.raises(ClientError):
                await pool.get_client()
