"""benchmark_client_performance and test_client_connectivity against our server."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest

from pywebtransport import (
    ClientConfig,
    ConfigurationError,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)
from pywebtransport.client.utils import (
    benchmark_client_performance,
    latency_summary,
    test_client_connectivity,
)
from tests.conftest import T, url


def closed_udp_port() -> int:
    """A UDP port nothing listens on: the kernel refuses datagrams sent there."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class InFlight:
    """Counts requests between WebTransportClient.connect and the session's close."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.current = 0
        self.peak = 0
        self._open: set[WebTransportSession] = set()
        connect = WebTransportClient.connect
        close = WebTransportSession.close

        async def counting_connect(client: WebTransportClient, **kwargs: Any) -> Any:
            self.current += 1
            self.peak = max(self.peak, self.current)
            try:
                session = await connect(client, **kwargs)
            except BaseException:
                self.current -= 1
                raise
            self._open.add(session)
            return session

        async def counting_close(session: WebTransportSession, **kwargs: Any) -> None:
            if session in self._open:
                self._open.discard(session)
                self.current -= 1
            await close(session, **kwargs)

        monkeypatch.setattr(WebTransportClient, "connect", counting_connect)
        monkeypatch.setattr(WebTransportSession, "close", counting_close)


def test_connectivity_check_is_not_collected_as_a_test() -> None:
    assert test_client_connectivity.__test__ is False  # type: ignore[attr-defined]


def test_latency_summary() -> None:
    summary = latency_summary([float(n) for n in range(100, 0, -1)])
    assert summary == {
        "min": 1.0,
        "max": 100.0,
        "mean": 50.5,
        "p50": 50.0,
        "p95": 95.0,
        "p99": 99.0,
    }
    assert latency_summary([]) == dict.fromkeys(("min", "max", "mean", "p50", "p95", "p99"))


# --------------------------------------------------------------------------- benchmark


async def test_benchmark_against_echo_counts_successes(
    server: WebTransportServer, client_config: ClientConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_flight = InFlight(monkeypatch)
    async with asyncio.timeout(4 * T):
        result = await benchmark_client_performance(
            url=url(server), config=client_config, num_requests=30, concurrent_requests=5
        )
    assert result["successful_requests"] == 30 and result["failed_requests"] == 0
    assert result["errors"] == {}
    assert 2 <= in_flight.peak <= 5 and in_flight.current == 0
    latencies = result["latencies"]
    assert len(latencies) == 30 and all(0 < t < T for t in latencies)
    summary = result["latency"]
    assert summary["min"] == min(latencies) and summary["max"] == max(latencies)
    assert summary["min"] <= summary["p50"] <= summary["p95"] <= summary["p99"] <= summary["max"]
    assert summary["mean"] == pytest.approx(sum(latencies) / 30)
    assert result["total_duration"] >= max(latencies)
    assert result["requests_per_second"] == pytest.approx(30 / result["total_duration"])
    assert result["client_stats"]["connections_successful"] == 30
    assert result["client_stats"]["active_sessions"] == 0


async def test_benchmark_counts_rejections_without_raising(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(2 * T):
        result = await benchmark_client_performance(
            url=url(server, "/missing"), config=client_config, num_requests=6, concurrent_requests=3
        )
    assert result["successful_requests"] == 0 and result["failed_requests"] == 6
    assert result["errors"] == {"HandshakeError": 6}
    assert result["latencies"] == [] and result["latency"]["p50"] is None
    assert result["client_stats"]["connections_failed"] == 6


async def test_benchmark_counts_unreachable_and_slow_requests(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(2 * T):
        unreachable = await benchmark_client_performance(
            url=f"https://127.0.0.1:{closed_udp_port()}/echo",
            config=client_config,
            num_requests=4,
            concurrent_requests=2,
        )
        assert unreachable["errors"] == {"ConnectionError": 4}
        start = time.monotonic()
        stuck = await benchmark_client_performance(  # /sink never answers the stream
            url=url(server, "/sink"),
            config=client_config,
            num_requests=4,
            concurrent_requests=4,
            request_timeout=0.3,
        )
        elapsed = time.monotonic() - start
    assert stuck["errors"] == {"TimeoutError": 4} and stuck["successful_requests"] == 0
    assert 0.3 <= elapsed < 0.3 + T / 5  # four in parallel: one timeout, not four in a row


@pytest.mark.parametrize(("num_requests", "concurrent_requests"), [(-1, 1), (1, 0)])
async def test_benchmark_rejects_bad_counts(num_requests: int, concurrent_requests: int) -> None:
    with pytest.raises(ConfigurationError):
        await benchmark_client_performance(
            url="https://127.0.0.1:9/echo",
            num_requests=num_requests,
            concurrent_requests=concurrent_requests,
        )


# --------------------------------------------------------------------------- connectivity


async def test_connectivity_success(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T):
        result = await test_client_connectivity(url=url(server), config=client_config)
    assert result["success"] is True and result["error"] is None
    assert 0 < result["connect_time"] < T
    assert result["url"] == url(server)
    stats = result["stats"]
    assert stats["connections_attempted"] == stats["connections_successful"] == 1
    assert stats["avg_connect_time"] <= result["connect_time"]


async def test_connectivity_rejected_path(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T):
        result = await test_client_connectivity(url=url(server, "/missing"), config=client_config)
    assert result["success"] is False and result["connect_time"] is None
    assert result["error"]["type"] == "HandshakeError" and result["error"]["status"] == 404
    assert result["stats"]["connections_failed"] == 1


async def test_connectivity_failures_never_raise(client_config: ClientConfig) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))  # bound and never answering: a timeout
    try:
        async with asyncio.timeout(T):
            start = time.monotonic()
            timed_out = await test_client_connectivity(
                url=f"https://127.0.0.1:{silent.getsockname()[1]}/echo",
                config=client_config,
                timeout=0.3,
            )
            assert 0.3 <= time.monotonic() - start < 0.3 + T / 5
            refused = await test_client_connectivity(
                url=f"https://127.0.0.1:{closed_udp_port()}/echo", config=client_config
            )
            malformed = await test_client_connectivity(url="http://nope", config=client_config)
    finally:
        silent.close()
    assert timed_out["success"] is False and timed_out["error"]["type"] == "TimeoutError"
    assert refused["success"] is False and refused["error"]["type"] == "ConnectionError"
    assert malformed["success"] is False and malformed["error"]["type"] == "ConfigurationError"
    for result in (timed_out, refused, malformed):
        assert result["error"]["message"]
        assert result["connect_time"] is None
