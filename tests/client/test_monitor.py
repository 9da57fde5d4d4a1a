"""ClientMonitor: immediate and periodic samples, bounded history, alerts without repeats.

The monitors run on a fake clock that the tests step by hand: a sample is due when the clock
reaches its time, and nothing waits for real time to pass.
"""

from __future__ import annotations

import asyncio
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

#: Seconds between samples (a binary fraction: sums of it are exact).
INTERVAL = 0.25


class FakeClock:
    """A monotonic clock the test steps by hand, and a sleep that waits on it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self._sleeping = asyncio.Event()

    def __call__(self) -> float:
        return self.now

    @property
    def sleepers(self) -> int:
        """How many sleeps wait for the clock to move."""
        return len(self._sleepers)

    async def sleep(self, delay: float) -> None:
        """Return once the clock has moved ``delay`` seconds on (at once if not positive)."""
        if delay <= 0:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + delay, future))
        self._sleeping.set()
        try:
            await future
        finally:
            self._forget(future)

    def advance(self, seconds: float) -> None:
        """Move the clock on by ``seconds`` and wake the sleeps whose time has come."""
        self.now += seconds
        for deadline, future in list(self._sleepers):
            if deadline <= self.now:
                if not future.done():
                    future.set_result(None)
                self._forget(future)

    async def step(self, seconds: float) -> None:
        """Wait until something sleeps on the clock, then move the clock on by ``seconds``."""
        await self._sleeping.wait()
        self.advance(seconds)

    def _forget(self, future: asyncio.Future[None]) -> None:
        self._sleepers = [(d, f) for d, f in self._sleepers if f is not future]
        if not self._sleepers:
            self._sleeping.clear()


def monitor_on(clock: FakeClock, client: WebTransportClient, **options: Any) -> ClientMonitor:
    """A monitor of ``client`` that samples every ``INTERVAL`` seconds of ``clock``."""
    options.setdefault("monitoring_interval", INTERVAL)
    return ClientMonitor(client, clock=clock, sleep=clock.sleep, **options)


async def next_sample(monitor: ClientMonitor) -> dict[str, Any]:
    event = await monitor.wait_for(METRICS_EVENT, timeout=T)
    data: dict[str, Any] = event.data
    return data


async def tick(clock: FakeClock, monitor: ClientMonitor, intervals: float = 1.0) -> dict[str, Any]:
    """Step ``clock`` by ``intervals`` sampling intervals and return the sample that follows."""
    await clock.step(intervals * monitor.monitoring_interval)
    return await next_sample(monitor)


def running(monitor: ClientMonitor) -> bool:
    """``is_monitoring`` read through a call (mypy would narrow the property across awaits)."""
    return monitor.is_monitoring


def alert_types(monitor: ClientMonitor) -> list[str]:
    return [alert["type"] for alert in monitor.alerts]


async def test_samples_at_once_then_every_interval(client_config: ClientConfig) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        clock = FakeClock()
        monitor = monitor_on(clock, client)
        samples: list[dict[str, Any]] = []
        monitor.on(METRICS_EVENT, lambda event: samples.append(event.data))
        assert not running(monitor)
        entered = clock.now
        async with monitor:
            assert len(samples) == 1  # taken on entry, before any interval passed
            assert samples[0]["timestamp"] == entered
            assert running(monitor) and monitor.get_metrics_summary()["is_monitoring"]
            for _ in range(6):
                await tick(clock, monitor)
            assert running(monitor)
        assert not running(monitor)
        assert monitor.get_metrics_summary()["is_monitoring"] is False
    first = samples[0]["timestamp"]
    assert [s["sample"] for s in samples] == list(range(7))
    for k, sample in enumerate(samples):
        assert sample["timestamp"] - first == k * INTERVAL, (k, sample["timestamp"] - first)
    assert samples[0]["connections_attempted"] == 0 and samples[0]["is_closed"] is False


async def test_missed_ticks_are_skipped(client_config: ClientConfig) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        clock = FakeClock()
        start = clock.now
        async with monitor_on(clock, client) as monitor:
            late = await tick(clock, monitor, 2.5)  # the loop was blocked over two sample times
            assert late["sample"] == 1 and late["timestamp"] - start == 2.5 * INTERVAL
            on_time = await tick(clock, monitor, 0.5)  # back on the schedule: no catching up
            assert on_time["sample"] == 2 and on_time["timestamp"] - start == 3 * INTERVAL


async def test_leaving_the_block_stops_sampling(client_config: ClientConfig) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        clock = FakeClock()
        monitor = monitor_on(clock, client)
        async with monitor:
            await tick(clock, monitor)
            assert clock.sleepers == 1  # waiting for the next sample time
        taken = monitor.get_metrics_summary()["samples_taken"]
        assert clock.sleepers == 0  # nothing waits for a next sample time any more
        clock.advance(3 * INTERVAL)  # three intervals after the exit: no sample
        assert monitor.get_metrics_summary()["samples_taken"] == taken
        with pytest.raises(ClientError):  # a monitor runs once
            await monitor.__aenter__()


async def test_history_is_bounded(client_config: ClientConfig) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        clock = FakeClock()
        async with monitor_on(clock, client, history_size=3) as monitor:
            for _ in range(5):
                await tick(clock, monitor)
            summary = monitor.get_metrics_summary()
            taken = summary["samples_taken"]
            assert taken == 6
            assert [m["sample"] for m in monitor.history] == [taken - 3, taken - 2, taken - 1]
            assert summary["latest_metrics"] == monitor.history[-1]


async def test_low_success_rate_alert_from_real_failures(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        clock = FakeClock()
        async with monitor_on(clock, client) as monitor:
            assert monitor.alerts == []  # healthy: nothing attempted yet
            await client.connect(url=url(server))
            for _ in range(3):
                with pytest.raises(HandshakeError):
                    await client.connect(url=url(server, "/missing"))
            sample = await tick(clock, monitor)
            assert sample["connections_attempted"] == 4
            assert sample["success_rate"] == pytest.approx(0.25)
        assert alert_types(monitor) == ["low_success_rate"]
        alert = monitor.alerts[0]
        assert alert["sample"] == sample["sample"] and "25%" in alert["message"]
        summary = monitor.get_metrics_summary()
        assert summary["recent_alerts"] == [alert]
        assert summary["active_alerts"] == ["low_success_rate"]


async def test_too_few_attempts_raise_no_alert(client_config: ClientConfig) -> None:
    clock = FakeClock()
    async with (
        asyncio.timeout(T),
        WebTransportClient(config=client_config) as client,
        monitor_on(clock, client, min_attempts=4) as monitor,
    ):
        for _ in range(3):
            client.client_stats.record(ok=False, elapsed=0.0)
        await tick(clock, monitor)
        assert monitor.alerts == []
        client.client_stats.record(ok=False, elapsed=0.0)
        await tick(clock, monitor)
        assert alert_types(monitor) == ["low_success_rate"]


async def test_alert_is_not_repeated_until_it_clears(client_config: ClientConfig) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        stats = client.client_stats
        clock = FakeClock()
        monitor = monitor_on(clock, client)
        alerts: list[Event] = []
        monitor.on(ALERT_EVENT, alerts.append)
        async with monitor:
            for _ in range(4):
                stats.record(ok=False, elapsed=0.0)
            first = await tick(clock, monitor)
            for _ in range(3):  # the condition persists
                await tick(clock, monitor)
            assert alert_types(monitor) == ["low_success_rate"]
            for _ in range(36):  # 36 of 40: 90 %, no longer below the threshold
                stats.record(ok=True, elapsed=0.001)
            cleared = await tick(clock, monitor)
            assert cleared["success_rate"] == pytest.approx(0.9)
            assert monitor.get_metrics_summary()["active_alerts"] == []
            for _ in range(10):
                stats.record(ok=False, elapsed=0.0)
            again = await tick(clock, monitor)
        assert alert_types(monitor) == ["low_success_rate", "low_success_rate"]
        assert [a["sample"] for a in monitor.alerts] == [first["sample"], again["sample"]]
        assert [e.data for e in alerts] == monitor.alerts


async def test_slow_connects_alert(client_config: ClientConfig) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        clock = FakeClock()
        async with monitor_on(clock, client, slow_connect_threshold=0.5) as monitor:
            client.client_stats.record(ok=True, elapsed=0.4)
            await tick(clock, monitor)
            assert monitor.alerts == []  # 400 ms is under the threshold
            client.client_stats.record(ok=True, elapsed=0.8)  # average 600 ms
            await tick(clock, monitor)
            await tick(clock, monitor)
        assert alert_types(monitor) == ["slow_connects"]
        assert "600 ms" in monitor.alerts[0]["message"]


async def test_closed_client_alert_once(client_config: ClientConfig) -> None:
    async with asyncio.timeout(T):
        clock = FakeClock()
        client = WebTransportClient(config=client_config)
        async with client, monitor_on(clock, client) as monitor:
            await client.close()
            closed = await tick(clock, monitor)
            await tick(clock, monitor)
        assert closed["is_closed"] is True
        assert alert_types(monitor) == ["client_closed"]


@pytest.mark.parametrize(
    "options",
    [{"monitoring_interval": 0.0}, {"history_size": 0}, {"slow_connect_threshold": -1.0}],
)
def test_invalid_options_are_rejected(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ClientMonitor(WebTransportClient(), **options)
