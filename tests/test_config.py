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


def _pem_pair() -> tuple[bytes, bytes]:
    from pywebtransport.server.certificate import generate_self_signed_certificate

    bundle = generate_self_signed_certificate()
    return bundle.cert_pem, bundle.key_pem


@pytest.mark.parametrize("as_text", [True, False])
def test_pem_content_given_as_a_path_is_refused_with_a_hint(as_text: bool) -> None:
    cert_pem, key_pem = _pem_pair()
    certfile: object = cert_pem.decode() if as_text else cert_pem
    keyfile: object = key_pem.decode() if as_text else key_pem
    with pytest.raises(ConfigurationError) as raised:
        ServerConfig(certfile=certfile, keyfile=keyfile)  # type: ignore[arg-type]
    assert raised.value.field == "certfile"
    message = str(raised.value)
    assert "not PEM content" in message and "certificate=" in message
    with pytest.raises(ConfigurationError, match="not PEM content"):
        ClientConfig(certfile="cert.pem", keyfile=key_pem.decode())


def test_an_in_memory_certificate_is_accepted_instead_of_files() -> None:
    from pywebtransport.server.certificate import CertificateBundle

    cert_pem, key_pem = _pem_pair()
    bundle = CertificateBundle.from_pem(cert_pem.decode(), key_pem)
    config = ServerConfig(certificate=bundle)
    assert config.certificate is bundle and config.certfile is None
    assert config.copy().certificate == bundle
    with pytest.raises(ConfigurationError, match="not both") as raised:
        ServerConfig(certificate=bundle, certfile="c.pem", keyfile="k.pem")
    assert raised.value.field == "certificate"
    with pytest.raises(ConfigurationError, match="CertificateBundle"):
        ServerConfig(certificate=cert_pem)  # type: ignore[arg-type]
    other_cert, _ = _pem_pair()
    with pytest.raises(ValueError, match="does not match"):
        CertificateBundle.from_pem(other_cert, key_pem)


def test_certificate_hashes_accept_hex_text() -> None:
    digest = bytes(range(32))
    config = ClientConfig(
        server_certificate_hashes=[digest.hex(), ":".join(f"{b:02X}" for b in digest), digest]
    )
    assert config.server_certificate_hashes == [digest, digest, digest]
    assert ClientConfig(server_certificate_hashes=[digest.hex()]).to_dict()[
        "server_certificate_hashes"
    ] == [digest]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (["abc"], "64 hex digits"),
        (["zz" * 32], "64 hex digits"),
        (["0:" * 31 + "0"], "64 hex digits"),
        ([b"short"], "32 bytes, or 64 hex digits"),
        ([42], "32 bytes, or 64 hex digits"),
        ("00" * 32, "a list of SHA-256 digests"),
    ],
)
def test_bad_certificate_hashes_say_what_is_expected(value: object, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem) as raised:
        ClientConfig(server_certificate_hashes=value)  # type: ignore[arg-type]
    assert raised.value.field == "server_certificate_hashes"
