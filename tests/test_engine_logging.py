"""The QUIC engines' own log lines: under ``pywebtransport.engine.*`` at DEBUG, never INFO."""

from __future__ import annotations

import asyncio
import logging

import pytest

from pywebtransport import CertificateError, ClientConfig, WebTransportClient
from tests.certs import CertBundle
from tests.conftest import T, build_app, echo_ok, serving, url

_ENGINE_LOGGERS = ("quic", "http3")


async def test_engine_lines_stay_out_of_info(
    cert: CertBundle,
    client_config: ClientConfig,
    caplog: pytest.LogCaptureFixture,
    quic_engine: str,
) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="pywebtransport.engine")
    async with asyncio.timeout(4 * T), serving(build_app(cert)) as srv:
        async with WebTransportClient(config=client_config) as client:
            session = await client.connect(url(srv))
            await echo_ok(session)
            await session.close()
        # A client that does not trust the self-signed certificate: the engine complains.
        async with WebTransportClient(config=ClientConfig(connect_timeout=T)) as client:
            with pytest.raises(CertificateError):
                await client.connect(url(srv))
    leaked = [
        f"{r.name} {r.levelname} {r.getMessage()}"
        for r in caplog.records
        if r.name.split(".")[0] in _ENGINE_LOGGERS and r.levelno >= logging.INFO
    ]
    assert leaked == []
    routed = [r for r in caplog.records if r.name == f"pywebtransport.engine.{quic_engine}"]
    assert all(r.levelno == logging.DEBUG for r in routed)
    if quic_engine == "aioquic":  # (qh3 logs little about connections that go well)
        assert routed, "aioquic's lines should be on pywebtransport.engine.aioquic"
