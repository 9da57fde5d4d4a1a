"""Client utilities: a request benchmark and a connectivity check.

Neither raises for network problems: a failed request or connect is counted and described in the
returned dict, so the functions can be pointed at any URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..config import ClientConfig
from ..exceptions import ConfigurationError, WebTransportError
from .client import WebTransportClient

__all__ = ["benchmark_client_performance", "latency_summary", "test_client_connectivity"]

#: What one benchmark request sends on its bidirectional stream (then FIN).
PAYLOAD = b"ping"


def _percentile(ordered: Sequence[float], percent: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty sequence."""
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(latencies: Sequence[float]) -> dict[str, float | None]:
    """Min, max, mean and the nearest-rank p50/p95/p99 of ``latencies`` (None when empty).

    Args:
        latencies: durations in seconds, in any order.

    Returns:
        A dict with the keys ``min``, ``max``, ``mean``, ``p50``, ``p95`` and ``p99``.
    """
    keys = ("min", "max", "mean", "p50", "p95", "p99")
    if not latencies:
        return dict.fromkeys(keys)
    ordered = sorted(latencies)
    return {
        "min": ordered[0],
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
        "p50": _percentile(ordered, 50),
        "p95": _percentile(ordered, 95),
        "p99": _percentile(ordered, 99),
    }


async def _one_request(client: WebTransportClient, url: str, timeout: float) -> float:
    """Connect, echo one stream round trip, close; return the elapsed seconds."""
    start = time.perf_counter()
    async with asyncio.timeout(timeout):
        session = await client.connect(url=url, timeout=timeout)
        try:
            stream = await session.create_bidirectional_stream()
            await stream.write(PAYLOAD, end_stream=True)
            await stream.read_all()
        finally:
            await session.close()
    return time.perf_counter() - start


async def benchmark_client_performance(
    *,
    url: str,
    config: ClientConfig | None = None,
    num_requests: int = 100,
    concurrent_requests: int = 10,
    request_timeout: float | None = None,
) -> dict[str, Any]:
    """Run ``num_requests`` requests against ``url``, at most ``concurrent_requests`` at once.

    A request connects (a new session and QUIC connection of one shared client), writes
    ``b"ping"`` and FIN on a bidirectional stream, reads the reply to its end and closes the
    session. A request that fails or takes longer than ``request_timeout`` is counted as a
    failure (its exception type tallied in ``errors``), never raised.

    Args:
        url: the https URL of an endpoint that answers a stream (an echo route).
        config: the client configuration (default: ``ClientConfig()``).
        num_requests: requests to run.
        concurrent_requests: requests in flight at most.
        request_timeout: seconds one request may take (default: ``config.connect_timeout``).

    Returns:
        ``num_requests``, ``concurrent_requests``, ``successful_requests``,
        ``failed_requests``, ``errors`` (exception type name -> count), ``latencies`` (seconds,
        successful requests, in completion order), ``latency`` (see :func:`latency_summary`),
        ``total_duration`` (seconds), ``requests_per_second`` (finished requests, successful or
        not, per second) and ``client_stats``.

    Raises:
        ConfigurationError: ``num_requests`` is negative or ``concurrent_requests`` below 1.
    """
    if num_requests < 0:
        raise ConfigurationError("num_requests must not be negative", field="num_requests")
    if concurrent_requests < 1:
        raise ConfigurationError(
            "concurrent_requests must be at least 1", field="concurrent_requests"
        )
    config = config or ClientConfig()
    timeout = config.connect_timeout if request_timeout is None else request_timeout
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    remaining = iter(range(num_requests))

    async def worker(client: WebTransportClient) -> None:
        for _ in remaining:  # shared iterator: each index is taken by one worker
            try:
                latencies.append(await _one_request(client, url, timeout))
            except Exception as exc:  # counted, never raised
                errors[type(exc).__name__] += 1

    start = time.perf_counter()
    async with WebTransportClient(config=config) as client:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(concurrent_requests, num_requests)):
                group.create_task(worker(client))
        duration = time.perf_counter() - start
        stats = client.stats
    return {
        "num_requests": num_requests,
        "concurrent_requests": concurrent_requests,
        "successful_requests": len(latencies),
        "failed_requests": sum(errors.values()),
        "errors": dict(errors),
        "latencies": latencies,
        "latency": latency_summary(latencies),
        "total_duration": duration,
        "requests_per_second": num_requests / duration if duration > 0 else 0.0,
        "client_stats": stats,
    }


async def test_client_connectivity(
    *, url: str, config: ClientConfig | None = None, timeout: float = 10.0
) -> dict[str, Any]:
    """Try to open one session to ``url`` and report how it went. Never raises for failures.

    Args:
        url: the https URL to connect to.
        config: the client configuration (default: ``ClientConfig()``).
        timeout: seconds the connect may take.

    Returns:
        ``url``, ``success``, ``connect_time`` (seconds; None on failure), ``stats`` (the
        client's stats) and ``error``: None on success, else a dict with ``type`` (the exception
        class name), ``message`` and, for a refused session, ``status``.
    """
    error: dict[str, Any] | None = None
    connect_time: float | None = None
    async with WebTransportClient(config=config) as client:
        start = time.perf_counter()
        try:
            session = await client.connect(url=url, timeout=timeout)
        except (WebTransportError, OSError, TimeoutError) as exc:
            error = {"type": type(exc).__name__, "message": str(exc)}
            status = getattr(exc, "status", None)
            if status is not None:
                error["status"] = status
        else:
            connect_time = time.perf_counter() - start
            with contextlib.suppress(WebTransportError):
                await session.close()
        stats = client.stats
    return {
        "url": url,
        "success": error is None,
        "connect_time": connect_time,
        "stats": stats,
        "error": error,
    }


test_client_connectivity.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
