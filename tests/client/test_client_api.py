"""WebTransportClient beyond connect's outcomes: headers, factory, stats, diagnostics."""

from __future__ import annotations

import asyncio
import json

import pytest

from pywebtransport import (
    ClientConfig,
    HandshakeError,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)
from pywebtransport.client import ReconnectingClient
from tests.conftest import T, url


def server_session(server: WebTransportServer) -> WebTransportSession:
    (session,) = [s for conn in server.connections for s in conn.sessions]
    return session


async def test_header_precedence_and_user_agent(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    config = client_config.update(headers={"X-A": "config", "x-b": "config"})
    async with asyncio.timeout(T), WebTransportClient(config=config) as client:
        client.set_default_headers(headers={"x-b": "default", "x-c": "default"})
        await client.connect(url=url(server, "/echo#fragment"), headers={"X-C": "call"})
        seen = server_session(server)
        assert seen.path == "/echo"  # the fragment is never sent
        assert seen.headers["x-a"] == "config"
        assert seen.headers["x-b"] == "default"
        assert seen.headers["x-c"] == "call"
        assert seen.headers["user-agent"] == "pywebtransport"


async def test_user_agent_can_be_overridden(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        await client.connect(url=url(server), headers={"user-agent": "mine/1.0"})
        assert server_session(server).headers["user-agent"] == "mine/1.0"


def test_create_picks_the_class_from_the_config(client_config: ClientConfig) -> None:
    plain = WebTransportClient.create(url="https://127.0.0.1:1/x", config=client_config)
    assert type(plain) is WebTransportClient
    again = WebTransportClient.create(url="https://127.0.0.1:1/x")
    assert type(again) is WebTransportClient
    reconnecting = WebTransportClient.create(
        url="https://127.0.0.1:1/x", config=client_config.update(auto_reconnect=True)
    )
    assert isinstance(reconnecting, ReconnectingClient)


async def test_stats_invariants_and_diagnostics(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        stats = client.stats
        assert stats["success_rate"] == 1.0 and stats["connections_attempted"] == 0
        assert client.diagnose_issues() == []
        outcomes = []
        for path in ("/echo", "/missing", "/echo", "/missing", "/missing", "/missing"):
            try:
                await client.connect(url=url(server, path))
                outcomes.append(True)
            except HandshakeError:
                outcomes.append(False)
            stats = client.stats
            assert stats["connections_attempted"] == (
                stats["connections_successful"] + stats["connections_failed"]
            )
        assert stats["connections_successful"] == 2 and stats["connections_failed"] == 4
        assert stats["success_rate"] == pytest.approx(2 / 6)
        # avg over successes only, and min <= avg <= max
        assert 0 < stats["min_connect_time"] <= stats["avg_connect_time"]
        assert stats["avg_connect_time"] <= stats["max_connect_time"]
        issues = client.diagnose_issues()
        assert any("success rate" in issue for issue in issues)
        state = client.debug_state()
        assert json.loads(json.dumps(state))["stats"]["connections_failed"] == 4
    assert "client is closed" in client.diagnose_issues()


async def test_connect_takes_the_url_by_position_or_keyword(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        by_position = await client.connect(url(server), timeout=T)
        by_keyword = await client.connect(url=url(server))
        assert by_position.is_ready and by_keyword.is_ready
        with pytest.raises(TypeError):
            await client.connect(url(server), T)  # type: ignore[call-arg]
