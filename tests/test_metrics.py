"""Prometheus exposition of the server's and the client's stats (``pywebtransport.metrics``)."""

from __future__ import annotations

import asyncio
import builtins
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from pywebtransport import ClientConfig, WebTransportClient, WebTransportServer
from pywebtransport.metrics import SERVER_COUNTERS, register_client, register_server
from tests.conftest import T, echo_ok, url


def exposition(registry: CollectorRegistry) -> list[str]:
    return generate_latest(registry).decode().splitlines()


async def test_server_and_client_stats_are_scraped_live(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    server_registry, client_registry = CollectorRegistry(), CollectorRegistry()
    collector = register_server(server, server_registry)
    assert "pywebtransport_server_connections_accepted_total 0.0" in exposition(server_registry)
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        register_client(client, client_registry)
        session = await client.connect(url=url(server))
        await echo_ok(session)
        lines = exposition(server_registry)
        stats = server.stats
        assert stats["connections_accepted"] == 1 and stats["sessions_requested"] == 1
        # The session counts as accepted while its handler still runs.
        assert (stats["sessions_accepted"], stats["sessions_rejected"]) == (1, 0)
        for key in SERVER_COUNTERS:
            assert f"pywebtransport_server_{key}_total {float(stats[key])}" in lines
        assert "pywebtransport_server_sessions_accepted_total 1.0" in lines
        assert "pywebtransport_server_connections_accepted_total 1.0" in lines
        assert "pywebtransport_server_sessions_requested_total 1.0" in lines
        assert any(
            line.startswith("# TYPE pywebtransport_server_connections_accepted")
            and line.endswith(" counter")
            for line in lines
        )
        assert "# TYPE pywebtransport_server_connections_active gauge" in lines
        assert "pywebtransport_server_connections_active 1.0" in lines
        assert "pywebtransport_server_sessions_active 1.0" in lines
        client_lines = exposition(client_registry)
        assert "pywebtransport_client_connections_attempted_total 1.0" in client_lines
        assert "pywebtransport_client_connections_successful_total 1.0" in client_lines
        assert "pywebtransport_client_active_sessions 1.0" in client_lines
        assert "pywebtransport_client_success_rate 1.0" in client_lines
        await session.close()
    server_registry.unregister(collector)
    assert not any(line.startswith("pywebtransport_") for line in exposition(server_registry))


def test_without_prometheus_client_the_error_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_import = builtins.__import__

    def no_prometheus(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("prometheus_client"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_prometheus)

    class Stats:
        def __init__(self) -> None:
            self.stats: dict[str, int] = {}

    with pytest.raises(ImportError, match=r"pip install 'pywebtransport\[metrics\]'"):
        register_server(Stats())
