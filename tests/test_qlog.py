"""qlog: one trace file per QUIC connection, written by the engine when the connection ends."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from pywebtransport import ClientConfig, ConfigurationError, WebTransportClient
from tests.certs import CertBundle
from tests.conftest import T, build_app, echo_ok, serving, url


def _traces(directory: Path) -> list[dict[str, object]]:
    traces: list[dict[str, object]] = []
    for path in sorted(directory.glob("*.qlog")):
        document = json.loads(path.read_text())
        assert isinstance(document, dict)
        assert len(document["traces"]) == 1
        traces.extend(document["traces"])
    return traces


async def test_a_loopback_session_leaves_one_qlog_file_per_side(
    cert: CertBundle, tmp_path: Path
) -> None:
    server_dir, client_dir = tmp_path / "server", tmp_path / "client" / "nested"
    config = ClientConfig(
        server_certificate_hashes=[cert.sha256], connect_timeout=T, qlog_dir=str(client_dir)
    )
    async with (
        asyncio.timeout(4 * T),
        serving(build_app(cert, qlog_dir=str(server_dir))) as srv,
        WebTransportClient(config=config) as client,
    ):
        session = await client.connect(url=url(srv))
        await echo_ok(session)
        await session.close()
    for directory, side in ((server_dir, "server"), (client_dir, "client")):
        traces = _traces(directory)
        assert len(traces) == 1, side
        trace = traces[0]
        assert isinstance(trace, dict)
        assert trace["vantage_point"]["type"] == side  # type: ignore[index]
        events = trace["events"]
        assert isinstance(events, list) and events
        assert any(event["name"] == "transport:packet_received" for event in events)


@pytest.mark.parametrize("value", ["", 3])
def test_qlog_dir_is_a_path_or_none(value: object) -> None:
    with pytest.raises(ConfigurationError) as info:
        ClientConfig(qlog_dir=value)  # type: ignore[arg-type]
    assert info.value.field == "qlog_dir"
