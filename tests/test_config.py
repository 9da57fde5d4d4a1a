"""ClientConfig / ServerConfig: defaults, validation naming the field, and the helpers."""

from __future__ import annotations

import importlib.util
import ssl

import pytest

from pywebtransport import ClientConfig, ConfigurationError, ServerConfig


def test_defaults_are_safe() -> None:
    config = ClientConfig()
    assert config.verify_mode == ssl.CERT_REQUIRED
    assert config.connect_timeout > 0 and config.idle_timeout > 0
    assert config.keep_alive_interval == min(15.0, config.idle_timeout / 2)
    assert ClientConfig(keep_alive=False).keep_alive_interval is None
    server = ServerConfig()
    assert server.max_sessions_per_connection > 0 and server.max_connections > 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"idle_timeout": -1}, "idle_timeout"),
        ({"idle_timeout": float("inf")}, "idle_timeout"),
        ({"max_datagram_size": 100}, "max_datagram_size"),
        ({"max_path_datagram_size": 70000}, "max_path_datagram_size"),
        ({"max_path_datagram_size": 1400.0}, "max_path_datagram_size"),
        ({"retry_backoff": 0.5}, "retry_backoff"),
        ({"server_certificate_hashes": [b"short"]}, "server_certificate_hashes"),
        ({"certfile": "c.pem"}, "certfile"),
        ({"congestion_control": "bbr"}, "congestion_control"),
        ({"stream_buffer_size": 0}, "stream_buffer_size"),
        ({"stream_receive_window": 0}, "stream_receive_window"),
        ({"max_incoming_streams": 1.5}, "max_incoming_streams"),
        ({"max_early_streams": True}, "max_early_streams"),
        ({"engine": "quiche"}, "engine"),
        (
            {"stream_receive_window": 2 << 20, "connection_receive_window": 1 << 20},
            "connection_receive_window",
        ),
    ],
)
def test_client_validation_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        ClientConfig(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"port": 70000}, "port"),
        ({"max_path_datagram_size": 1199}, "max_path_datagram_size"),
        ({"max_connections": 0}, "max_connections"),
        ({"keyfile": "k.pem"}, "certfile"),
        ({"initial_max_data": 0}, "initial_max_data"),
        ({"connection_receive_window": -1}, "connection_receive_window"),
        ({"max_incoming_streams": 0}, "max_incoming_streams"),
        ({"stateless_reset_key": b"short"}, "stateless_reset_key"),
        ({"retry": "sometimes"}, "retry"),
        ({"handshake_timeout": 0}, "handshake_timeout"),
        ({"request_timeout": 0}, "request_timeout"),
        ({"no_session_timeout": -1}, "no_session_timeout"),
        ({"stateless_reset_key": "a string, not bytes"}, "stateless_reset_key"),
        ({"broker_url": "amqp://127.0.0.1"}, "broker_url"),
        ({"broker_url": 6379}, "broker_url"),
        ({"engine": None}, "engine"),
    ],
)
def test_server_validation_names_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        ServerConfig(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_the_engine_is_aioquic_unless_qh3_is_chosen() -> None:
    assert ClientConfig().engine == ServerConfig().engine == "aioquic"
    if importlib.util.find_spec("qh3") is not None:
        assert ClientConfig(engine="qh3").engine == ServerConfig(engine="qh3").engine == "qh3"


@pytest.mark.parametrize("config", [ClientConfig, ServerConfig])
def test_qh3_without_qh3_installed_says_what_to_install(
    config: type[ClientConfig | ServerConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "qh3" else real(name, *a)
    )
    with pytest.raises(ConfigurationError) as info:
        config(engine="qh3")
    assert info.value.field == "engine"
    assert "pip install pywebtransport[fast]" in str(info.value)


def test_create_from_dict_to_dict_update_copy() -> None:
    config = ClientConfig.create(connect_timeout=3.0, headers={"a": "1"})
    assert config.connect_timeout == 3.0
    data = config.to_dict()
    assert ClientConfig.from_dict(data) == config
    data["headers"]["a"] = "changed"  # to_dict copies containers
    assert config.headers == {"a": "1"}
    updated = config.update(idle_timeout=5.0)
    assert updated.idle_timeout == 5.0 and config.idle_timeout != 5.0
    copied = config.copy()
    assert copied == config and copied is not config and copied.headers is not config.headers
    with pytest.raises(ConfigurationError) as info:
        ClientConfig.from_dict({"no_such_setting": 1})
    assert info.value.field == "no_such_setting"
    with pytest.raises(ConfigurationError):
        config.update(connect_timeout=-1)
