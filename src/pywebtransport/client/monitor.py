"""ClientMonitor: periodic samples of a client's statistics, and alerts drawn from them.

Theory of operation: entering ``async with ClientMonitor(client)`` takes one sample at once and
starts a task that takes another every ``monitoring_interval`` seconds, on a fixed schedule
(``start + k * interval``) so that the samples do not drift. Time is read from the monitor's
clock (``time.monotonic`` unless another is given) and waited for with its sleep
(``asyncio.sleep``), so a test can step time by hand. Each sample is a copy of
``client.stats`` plus a timestamp, kept in a bounded history. The sample is checked against the
thresholds; a condition that holds raises an alert only when it did not hold at the previous
sample, so a persisting problem is reported once and again only after it cleared and came back.
Leaving the block cancels the task and waits for it.

The monitor is an :class:`~pywebtransport.events.EventEmitter`: it emits ``"client_metrics"``
(data: the sample) after every sample and ``"client_alert"`` (data: the alert) for every alert.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Self

from ..events import EventEmitter
from ..exceptions import ClientError

if TYPE_CHECKING:
    from types import TracebackType

    from .client import WebTransportClient

__all__ = ["ALERT_EVENT", "METRICS_EVENT", "ClientMonitor"]

logger = logging.getLogger(__name__)

#: The event emitted after every sample (data: the sample dict).
METRICS_EVENT = "client_metrics"
#: The event emitted for every new alert (data: the alert dict).
ALERT_EVENT = "client_alert"

LOW_SUCCESS_RATE = "low_success_rate"
SLOW_CONNECTS = "slow_connects"
CLIENT_CLOSED = "client_closed"


class ClientMonitor(EventEmitter):
    """Samples a client's ``stats`` periodically and raises alerts. Use inside ``async with``.

    Args:
        client: the client to watch.
        monitoring_interval: seconds between samples.
        history_size: samples kept (the oldest are dropped).
        max_alerts: alerts kept (the oldest are dropped).
        min_success_rate: a success rate below this raises ``low_success_rate``...
        min_attempts: ...once at least this many connections were attempted.
        slow_connect_threshold: an average connect time above this (seconds) raises
            ``slow_connects``.
        clock: a monotonic clock in seconds: the samples' timestamps and the schedule.
        sleep: waits the given seconds of ``clock`` between samples. A test passes a fake
            clock and a sleep that returns when the test steps that clock.

    Raises:
        ValueError: an interval, size or threshold is not positive.
    """

    def __init__(
        self,
        client: WebTransportClient,
        *,
        monitoring_interval: float = 30.0,
        history_size: int = 120,
        max_alerts: int = 50,
        min_success_rate: float = 0.9,
        min_attempts: int = 4,
        slow_connect_threshold: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        super().__init__()
        if monitoring_interval <= 0:
            raise ValueError(f"monitoring_interval must be positive, got {monitoring_interval}")
        if history_size < 1 or max_alerts < 1 or min_attempts < 1:
            raise ValueError("history_size, max_alerts and min_attempts must be at least 1")
        if slow_connect_threshold <= 0:
            raise ValueError("slow_connect_threshold must be positive")
        self._client = client
        self._interval = monitoring_interval
        self._min_success_rate = min_success_rate
        self._min_attempts = min_attempts
        self._slow_connect_threshold = slow_connect_threshold
        self._clock = clock
        self._sleep = sleep
        self._history: deque[dict[str, Any]] = deque(maxlen=history_size)
        self._alerts: deque[dict[str, Any]] = deque(maxlen=max_alerts)
        self._active: set[str] = set()
        self._samples = 0
        self._task: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------------------- properties

    @property
    def client(self) -> WebTransportClient:
        """The client being watched."""
        return self._client

    @property
    def monitoring_interval(self) -> float:
        """Seconds between samples."""
        return self._interval

    @property
    def is_monitoring(self) -> bool:
        """True while the sampling task runs."""
        return self._task is not None and not self._task.done()

    @property
    def history(self) -> list[dict[str, Any]]:
        """The kept samples, oldest first (a copy)."""
        return list(self._history)

    @property
    def alerts(self) -> list[dict[str, Any]]:
        """The kept alerts, oldest first (a copy)."""
        return list(self._alerts)

    def __repr__(self) -> str:
        return (
            f"<ClientMonitor monitoring={self.is_monitoring} samples={self._samples} "
            f"alerts={len(self._alerts)}>"
        )

    # ----------------------------------------------------------------------------- life cycle

    async def __aenter__(self) -> Self:
        if self._task is not None:
            raise ClientError("a ClientMonitor runs once")
        self._sample()
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        start = self._clock()
        ticks = 0
        while True:
            ticks += 1
            delay = start + ticks * self._interval - self._clock()
            if delay < 0:  # fell behind (a blocked loop): skip the missed ticks
                ticks += int(-delay // self._interval) + 1
                delay = start + ticks * self._interval - self._clock()
            await self._sleep(delay)
            try:
                self._sample()
            except Exception:
                logger.exception("sampling %r failed", self._client)

    # ----------------------------------------------------------------------------- sampling

    def _sample(self) -> None:
        metrics: dict[str, Any] = dict(self._client.stats)
        metrics["timestamp"] = self._clock()
        metrics["sample"] = self._samples
        metrics["is_closed"] = self._client.is_closed
        self._samples += 1
        self._history.append(metrics)
        self._check(metrics)
        self.emit(METRICS_EVENT, metrics)

    def _conditions(self, metrics: dict[str, Any]) -> dict[str, str]:
        """The alert conditions that hold for ``metrics``: kind -> message."""
        found: dict[str, str] = {}
        attempted = metrics["connections_attempted"]
        rate = metrics["success_rate"]
        if attempted >= self._min_attempts and rate < self._min_success_rate:
            found[LOW_SUCCESS_RATE] = (
                f"connection success rate {rate:.0%} of {attempted} attempts is below "
                f"{self._min_success_rate:.0%}"
            )
        average = metrics["avg_connect_time"]
        if metrics["connections_successful"] and average > self._slow_connect_threshold:
            found[SLOW_CONNECTS] = (
                f"average connect time {average * 1000:.0f} ms is above "
                f"{self._slow_connect_threshold * 1000:.0f} ms"
            )
        if metrics["is_closed"]:
            found[CLIENT_CLOSED] = "the client is closed"
        return found

    def _check(self, metrics: dict[str, Any]) -> None:
        found = self._conditions(metrics)
        for kind, message in found.items():
            if kind in self._active:
                continue  # still the same problem: reported when it began
            alert = {
                "type": kind,
                "message": message,
                "timestamp": metrics["timestamp"],
                "sample": metrics["sample"],
            }
            self._alerts.append(alert)
            logger.warning("client alert: %s", message)
            self.emit(ALERT_EVENT, alert)
        self._active = set(found)

    def get_metrics_summary(self) -> dict[str, Any]:
        """The latest sample, the recent alerts and whether the monitor runs.

        Returns:
            ``latest_metrics`` (None before the first sample), ``recent_alerts`` (up to the
            last 10), ``active_alerts`` (kinds whose condition held at the latest sample),
            ``samples_taken`` and ``is_monitoring``.
        """
        return {
            "latest_metrics": dict(self._history[-1]) if self._history else None,
            "recent_alerts": [dict(alert) for alert in list(self._alerts)[-10:]],
            "active_alerts": sorted(self._active),
            "samples_taken": self._samples,
            "is_monitoring": self.is_monitoring,
        }
