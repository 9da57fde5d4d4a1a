"""The public surface: the client API's names and signatures, and the package's __all__."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import pywebtransport
import pywebtransport.client as client_api

# name -> {member: (kind, [(parameter, kind)])}: the client API of docs/client.md
KW = inspect.Parameter.KEYWORD_ONLY
POS = inspect.Parameter.POSITIONAL_OR_KEYWORD

CONTRACT: dict[str, dict[str, list[tuple[str, Any]]]] = {
    "WebTransportClient": {
        "__init__": [("config", KW)],
        "create": [("url", KW), ("config", KW)],
        "connect": [("url", POS), ("timeout", KW), ("headers", KW)],
        "close": [],
        "set_default_headers": [("headers", KW)],
        "debug_state": [],
        "diagnose_issues": [],
    },
    "ClientPool": {
        "__init__": [("configs", KW)],
        "get_client": [],
        "connect_all": [("url", POS)],
        "close_all": [],
        "get_client_count": [],
    },
    "PooledClient": {
        "__init__": [("config", KW), ("pool_size", KW), ("cleanup_interval", KW)],
        "get_session": [("url", POS)],
        "return_session": [("session", KW)],
        "close": [],
    },
    "ReconnectingClient": {
        "__init__": [("url", KW), ("config", KW)],
        "create": [("url", KW), ("config", KW)],
        "get_session": [("wait_timeout", KW)],
        "close": [],
    },
    "WebTransportBrowser": {
        "__init__": [("config", KW)],
        "navigate": [("url", POS)],
        "back": [],
        "forward": [],
        "refresh": [],
        "get_history": [],
        "close": [],
    },
    "ClientMonitor": {
        "__init__": [("client", POS), ("monitoring_interval", KW)],
        "get_metrics_summary": [],
    },
}
PROPERTIES = {
    "WebTransportClient": ["config", "is_closed", "stats"],
    "ReconnectingClient": ["is_connected"],
    "WebTransportBrowser": ["current_session"],
    "ClientMonitor": ["is_monitoring"],
    "ClientStats": ["avg_connect_time", "success_rate"],
}
ASYNC = {
    ("WebTransportClient", "connect"),
    ("WebTransportClient", "close"),
    ("ClientPool", "get_client"),
    ("ClientPool", "connect_all"),
    ("ClientPool", "close_all"),
    ("PooledClient", "get_session"),
    ("PooledClient", "return_session"),
    ("PooledClient", "close"),
    ("ReconnectingClient", "get_session"),
    ("ReconnectingClient", "close"),
    ("WebTransportBrowser", "navigate"),
    ("WebTransportBrowser", "back"),
    ("WebTransportBrowser", "forward"),
    ("WebTransportBrowser", "refresh"),
    ("WebTransportBrowser", "get_history"),
    ("WebTransportBrowser", "close"),
}


def assert_only_optional_keyword_extras(extra: list[inspect.Parameter]) -> None:
    """Options beyond the contract are allowed only as keyword-only ones with defaults."""
    for p in extra:
        assert p.kind is KW and p.default is not inspect.Parameter.empty, p


def test_client_exports_exactly_the_contract_names() -> None:
    assert sorted(client_api.__all__) == sorted(
        [*CONTRACT, "ClientStats", "benchmark_client_performance", "test_client_connectivity"]
    )
    for name in client_api.__all__:
        assert getattr(client_api, name) is not None


@pytest.mark.parametrize(
    ("cls_name", "member"), [(c, m) for c, members in CONTRACT.items() for m in members]
)
def test_contract_signatures(cls_name: str, member: str) -> None:
    cls = getattr(client_api, cls_name)
    func = getattr(cls, member)
    params = [
        p for p in inspect.signature(func).parameters.values() if p.name not in ("self", "cls")
    ]
    expected = CONTRACT[cls_name][member]
    assert [(p.name, p.kind) for p in params[: len(expected)]] == expected
    assert_only_optional_keyword_extras(params[len(expected) :])
    if (cls_name, member) in ASYNC:
        assert inspect.iscoroutinefunction(func)


@pytest.mark.parametrize(
    ("cls_name", "prop"), [(c, p) for c, props in PROPERTIES.items() for p in props]
)
def test_contract_properties(cls_name: str, prop: str) -> None:
    assert isinstance(getattr(getattr(client_api, cls_name), prop), property)


def test_client_stats_fields_and_defaults() -> None:
    stats = client_api.ClientStats()
    assert stats.connections_attempted == stats.connections_successful == 0
    assert stats.connections_failed == 0 and stats.total_connect_time == 0.0
    assert stats.min_connect_time == float("inf") and stats.max_connect_time == 0.0
    assert stats.success_rate == 1.0 and stats.avg_connect_time == 0.0
    assert stats.created_at > 0


def test_utility_signatures() -> None:
    bench = list(inspect.signature(client_api.benchmark_client_performance).parameters.values())
    assert_only_optional_keyword_extras(bench[4:])
    assert [(p.name, p.kind, p.default) for p in bench[:4]] == [
        ("url", KW, inspect.Parameter.empty),
        ("config", KW, None),
        ("num_requests", KW, 100),
        ("concurrent_requests", KW, 10),
    ]
    conn = inspect.signature(client_api.test_client_connectivity).parameters
    assert [(p.name, p.kind, p.default) for p in conn.values()] == [
        ("url", KW, inspect.Parameter.empty),
        ("config", KW, None),
        ("timeout", KW, 10.0),
    ]


def test_package_all_is_importable_and_complete() -> None:
    for name in pywebtransport.__all__:
        assert hasattr(pywebtransport, name), name
    for name in (
        "WebTransportClient",
        "WebTransportServer",
        "ServerApp",
        "ClientConfig",
        "ServerConfig",
        "WebTransportSession",
        "WebTransportStream",
        "WebTransportSendStream",
        "WebTransportReceiveStream",
        "WebTransportDatagramTransport",
        "HandshakeError",
    ):
        assert name in pywebtransport.__all__
