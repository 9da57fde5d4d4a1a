"""Prometheus exposition of the server's and the client's ``stats`` (optional extra ``metrics``).

:func:`register_server` and :func:`register_client` add a collector to a ``prometheus_client``
registry that reads the ``stats`` dict of the object it was given at every scrape. The objects are
taken duck-typed (anything with a ``stats`` mapping), so this module imports nothing else of the
package. ``prometheus_client`` is imported when a function is called; without it they raise an
:class:`ImportError` that says how to install it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector, CollectorRegistry

__all__ = ["CLIENT_COUNTERS", "SERVER_COUNTERS", "register_client", "register_server"]

#: The keys of ``WebTransportServer.stats`` that only grow (exposed as counters, ``..._total``);
#: every other numeric key (``connections_active``, ``sessions_active``) is a gauge.
SERVER_COUNTERS = frozenset(
    {
        "connections_accepted",
        "sessions_requested",
        "sessions_accepted",
        "sessions_rejected",
        "packets_dropped",
        "stateless_resets_sent",
        "retries_sent",
        "handshakes_timed_out",
    }
)
#: The keys of ``WebTransportClient.stats`` that only grow; the other numeric keys are gauges.
CLIENT_COUNTERS = frozenset(
    {
        "connections_attempted",
        "connections_successful",
        "connections_failed",
        "total_connect_time",
    }
)

_INSTALL_HINT = "pip install 'pywebtransport[metrics]'"


class _HasStats(Protocol):
    @property
    def stats(self) -> Mapping[str, Any]: ...


def register_server(server: _HasStats, registry: CollectorRegistry | None = None) -> Collector:
    """Expose ``server.stats`` as ``pywebtransport_server_<key>`` metrics.

    Args:
        server: a :class:`~pywebtransport.server.WebTransportServer` (anything with ``stats``).
        registry: where to register (default: ``prometheus_client.REGISTRY``).

    Returns:
        The collector, for ``registry.unregister(collector)``.

    Raises:
        ImportError: ``prometheus_client`` is not installed.
    """
    return _register(server, registry, prefix="pywebtransport_server", counters=SERVER_COUNTERS)


def register_client(client: _HasStats, registry: CollectorRegistry | None = None) -> Collector:
    """Expose the numeric values of ``client.stats`` as ``pywebtransport_client_<key>`` metrics.

    Args:
        client: a :class:`~pywebtransport.client.WebTransportClient` (anything with ``stats``).
        registry: where to register (default: ``prometheus_client.REGISTRY``).

    Returns:
        The collector, for ``registry.unregister(collector)``.

    Raises:
        ImportError: ``prometheus_client`` is not installed.
    """
    return _register(client, registry, prefix="pywebtransport_client", counters=CLIENT_COUNTERS)


def _register(
    source: _HasStats,
    registry: CollectorRegistry | None,
    *,
    prefix: str,
    counters: frozenset[str],
) -> Collector:
    try:
        import prometheus_client
        from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily
        from prometheus_client.registry import Collector
    except ImportError as error:
        raise ImportError(
            f"pywebtransport.metrics needs prometheus_client: {_INSTALL_HINT}"
        ) from error

    class StatsCollector(Collector):
        def collect(self) -> Iterator[Metric]:
            for key, value in source.stats.items():
                if isinstance(value, bool) or not isinstance(value, int | float):
                    continue  # None (no connect yet), and anything not a number
                name = f"{prefix}_{key}"
                help_text = f"{key} of the stats of {type(source).__name__}"
                family: Metric
                if key in counters:
                    family = CounterMetricFamily(name, help_text, value=value)
                else:
                    family = GaugeMetricFamily(name, help_text, value=value)
                yield family

    collector = StatsCollector()
    (prometheus_client.REGISTRY if registry is None else registry).register(collector)
    return collector
