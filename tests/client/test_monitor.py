"""ClientMonitor: immediate and periodic samples, bounded history, alerts without repeats."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from pywebtransport import (
    ClientConfig,
    ClientError,
    HandshakeError,
    WebTransportClient,
    WebTransportServer,
)
from pywebtransport.client.monitor import ALERT_EVENT, METRICS_EVENT, ClientMonitor
from pywebtransport.events import Event
from tests.conftest import T, url

INTERVAL = 0.1
#: How late an asyncio timer may fire on a loaded machine (seconds).
LATE = 0.05
EARLY = 0.005


async def sample_number(monitor: ClientMonitor, number: int) -> dict[str, Any]:
    """Wait for the sample with index ``number`` (0 is the immediate one)."""
    event = await monitor.wait_for(
        METRICS_EVENT, timeout=T, condition=lambda e: e.data["sample"] >= number
    )
    data: dict[str, Any] = event.data
    return data


async def next_sample(monitor: ClientMonitor) -> dict[str, Any]:
    event = await monitor.wait_for(METRICS_EVENT, timeout=T)
    data: dict[str, Any] = event.data
    return data


def running(monitor: ClientMonitor) -> bool:
    """``is_monitoring`` read through a call (mypy would narrow the property across awaits)."""
    return monitor.is_monitoring


def alert_types(monitor: ClientMonitor) -> list[str]:
    return [alert["type"] for alert in monitor.alerts]


async def test_samples_at_once_then_every_interval(client_config: ClientConfig) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        monitor = ClientMonitor(client, monitoring_interval=INTERVAL)
        samples: list[dict[str, Any]] = []
        monitor.on(METRICS_EVENT, lambda event: samples.append(event.data))
        assert not running(monitor)
        entered = time.monotonic()
        async with monitor:
            assert len(samples) == 1  # taken on entry, before any interval passed
            assert samples[0]["timestamp"] - entered < EARLY
            assert running(monitor) and monitor.get_metrics_summary()["is_monitoring"]
            await sample_number(monitor, 6)
            assert running(monitor)
        assert not running(monitor)
        assert monitor.get_metrics_summary()["is_monitoring"] is False
    first = samples[0]["timestamp"]
    assert [s["sample"] for s in samples[:7]] == list(range(7))
    for k, sample in enumerate(samples[:7]):
        offset = sample["timestamp"] - first
        assert k * INTERVAL - EARLY <= offset <= k * INTERVAL + LATE, (k, offset)
    assert samples[0]["connections_attempted"] == 0 and samples[0]["is_closed"] is False


async def test_leaving_the_block_stops_sampling(client_config: ClientConfig) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        monitor = ClientMonitor(client, monitoring_interval=INTERVAL)
        async with monitor:
            await sample_number(monitor, 1)
        taken = monitor.get_metrics_summary()["samples_taken"]
        with pytest.raises(TimeoutError):  # no sample within three intervals after the exit
            await monitor.wait_for(METRICS_EVENT, timeout=3 * INTERVAL)
        assert monitor.get_metrics_summary()["samples_taken"] == taken
        with pytest.raises(ClientError):  # a monitor runs once
            await monitor.__aenter__()


async def test_history_is_bounded(client_config: ClientConfig) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        monitor = ClientMonitor(client, monitoring_interval=0.02, history_size=3)
        async with monitor:
            await sample_number(monitor, 5)
            summary = monitor.get_metrics_summary()
            taken = summary["samples_taken"]
            assert taken >= 6
            assert [m["sample"] for m in monitor.history] == [taken - 3, taken - 2, taken - 1]
            assert summary["latest_metrics"] == monitor.history[-1]


async def test_low_success_rate_alert_from_real_failures(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        async with ClientMonitor(client, monitoring_interval=INTERVAL) as monitor:
            assert monitor.alerts == []  # healthy: nothing attempted yet
            await client.connect(url=url(server))
            for _ in range(3):
                with pytest.raises(HandshakeError):
                    await client.connect(url=url(server, "/missing"))
            sample = await next_sample(monitor)
            assert sample["connections_attempted"] == 4
            assert sample["success_rate"] == pytest.approx(0.25)
        assert alert_types(monitor) == ["low_success_rate"]
        alert = monitor.alerts[0]
        assert alert["sample"] == sample["sample"] and "25%" in alert["message"]
        summary = monitor.get_metrics_summary()
        assert summary["recent_alerts"] == [alert]
        assert summary["active_alerts"] == ["low_success_rate"]


async def test_too_few_attempts_raise_no_alert(client_config: ClientConfig) -> None:
    async with (
        asyncio.timeout(T),
        WebTransportClient(config=client_config) as client,
        ClientMonitor(client, monitoring_interval=INTERVAL, min_attempts=4) as monitor,
    ):
        for _ in range(3):
            client.client_stats.record(ok=False, elapsed=0.0)
        await next_sample(monitor)
        assert monitor.alerts == []
        client.client_stats.record(ok=False, elapsed=0.0)
        await next_sample(monitor)
        assert alert_types(monitor) == ["low_success_rate"]


async def test_alert_is_not_repeated_until_it_clears(client_config: ClientConfig) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        stats = client.client_stats
        monitor = ClientMonitor(client, monitoring_interval=0.03)
        alerts: list[Event] = []
        monitor.on(ALERT_EVENT, alerts.append)
        async with monitor:
            for _ in range(4):
                stats.record(ok=False, elapsed=0.0)
            first = await next_sample(monitor)
            await sample_number(monitor, first["sample"] + 3)  # the condition persists
            assert alert_types(monitor) == ["low_success_rate"]
            for _ in range(36):  # 36 of 40: 90 %, no longer below the threshold
                stats.record(ok=True, elapsed=0.001)
            cleared = await next_sample(monitor)
            assert cleared["success_rate"] == pytest.approx(0.9)
            assert monitor.get_metrics_summary()["active_alerts"] == []
            for _ in range(10):
                stats.record(ok=False, elapsed=0.0)
            again = await next_sample(monitor)
        assert alert_types(monitor) == ["low_success_rate", "low_success_rate"]
        assert [a["sample"] for a in monitor.alerts] == [first["sample"], again["sample"]]
        assert [e.data for e in alerts] == monitor.alerts


async def test_slow_connects_alert(client_config: ClientConfig) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        monitor = ClientMonitor(client, monitoring_interval=INTERVAL, slow_connect_threshold=0.5)
        async with monitor:
            client.client_stats.record(ok=True, elapsed=0.4)
            await next_sample(monitor)
            assert monitor.alerts == []  # 400 ms is under the threshold
            client.client_stats.record(ok=True, elapsed=0.8)  # average 600 ms
            await next_sample(monitor)
            await next_sample(monitor)
        assert alert_types(monitor) == ["slow_connects"]
        assert "600 ms" in monitor.alerts[0]["message"]


async def test_closed_client_alert_once(client_config: ClientConfig) -> None:
    async with asyncio.timeout(T):
        client = WebTransportClient(config=client_config)
        async with client, ClientMonitor(client, monitoring_interval=INTERVAL) as monitor:
            await client.close()
            closed = await next_sample(monitor)
            await next_sample(monitor)
        assert closed["is_closed"] is True
        assert alert_types(monitor) == ["client_closed"]


@pytest.mark.parametrize(
    "options",
    [{"monitoring_interval": 0.0}, {"history_size": 0}, {"slow_connect_threshold": -1.0}],
)
def test_invalid_options_are_rejected(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ClientMonitor(WebTransportClient(), **options)
