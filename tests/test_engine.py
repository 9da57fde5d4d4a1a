"""Engine settings from a config, and the reuse of client engine factories."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pywebtransport import ClientConfig, ServerConfig
from pywebtransport._engine import ENGINES, cached_engine_factory, client_settings, server_settings
from tests.certs import make_cert


@pytest.mark.parametrize("engine", ENGINES)
def test_a_factory_is_reused_for_the_same_settings_and_files(tmp_path: Path, engine: str) -> None:
    bundle = make_cert(tmp_path)
    config = ClientConfig(ca_certs=str(bundle.certfile), engine=engine)
    first = cached_engine_factory(engine, client_settings(config, "localhost"))
    assert cached_engine_factory(engine, client_settings(config, "localhost")) is first
    other_host = cached_engine_factory(engine, client_settings(config, "127.0.0.1"))
    assert other_host is not first


@pytest.mark.parametrize("engine", ENGINES)
def test_a_rewritten_ca_file_is_read_again(tmp_path: Path, engine: str) -> None:
    bundle = make_cert(tmp_path)
    config = ClientConfig(ca_certs=str(bundle.certfile), engine=engine)
    first = cached_engine_factory(engine, client_settings(config, "localhost"))
    replacement = make_cert(tmp_path / "new")
    Path(bundle.certfile).write_bytes(Path(replacement.certfile).read_bytes())
    stamp = os.stat(bundle.certfile)
    os.utime(bundle.certfile, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000))
    assert cached_engine_factory(engine, client_settings(config, "localhost")) is not first


@pytest.mark.parametrize("engine", ENGINES)
def test_the_key_log_variable_is_read_per_connection(
    tmp_path: Path, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = ClientConfig(engine=engine)
    monkeypatch.delenv("SSLKEYLOGFILE", raising=False)
    plain = cached_engine_factory(engine, client_settings(config, "localhost"))
    monkeypatch.setenv("SSLKEYLOGFILE", str(tmp_path / "keys.log"))
    logging = cached_engine_factory(engine, client_settings(config, "localhost"))
    assert logging is not plain
    assert logging.settings.key_log is not None
    again = cached_engine_factory(engine, client_settings(config, "localhost"))
    assert again is logging


@pytest.mark.parametrize("engine", ENGINES)
def test_a_missing_ca_file_is_not_remembered(tmp_path: Path, engine: str) -> None:
    ca = tmp_path / "ca.pem"
    config = ClientConfig(ca_certs=str(ca), engine=engine)
    try:
        first = cached_engine_factory(engine, client_settings(config, "localhost"))
    except OSError:
        first = None  # an engine that reads the file at once raises as it would uncached
    ca.write_bytes(Path(make_cert(tmp_path / "ca").certfile).read_bytes())
    found = cached_engine_factory(engine, client_settings(config, "localhost"))
    assert found is not first
    assert cached_engine_factory(engine, client_settings(config, "localhost")) is found


def test_the_path_mtu_ceiling_reaches_the_engine_settings() -> None:
    assert client_settings(ClientConfig(), "localhost").max_path_udp_payload == 1452
    assert server_settings(ServerConfig(max_path_datagram_size=1500)).max_path_udp_payload == 1500
    # A ceiling at or below the first packet size turns discovery off: it is that size.
    off = client_settings(ClientConfig(max_datagram_size=1472), "localhost")
    assert (off.max_udp_payload, off.max_path_udp_payload) == (1472, 1472)
