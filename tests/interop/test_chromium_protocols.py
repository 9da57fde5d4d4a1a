"""Subprotocol negotiation with headless Chromium's ``new WebTransport(url, {protocols})``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from pywebtransport import ServerApp, ServerConfig, WebTransportServer, WebTransportSession
from pywebtransport.server.certificate import generate_self_signed_certificate
from tests.interop.chromium import Chromium, load_page, run_page

pytestmark = [pytest.mark.interop]

PAGE_TIMEOUT = 25.0
SCENARIO_TIMEOUT = 30.0


async def negotiate(
    tmp_path: Path,
    *,
    server_protocols: list[str],
    offered: list[str] | None,
    retry: str = "auto",
    browser: type[Chromium] = Chromium,
) -> tuple[dict[str, Any], asyncio.Future[str | None], WebTransportServer]:
    """Serve, let the browser connect offering ``offered``; return its report and the server's
    view."""
    bundle = generate_self_signed_certificate()
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    bundle.write(certfile=str(certfile), keyfile=str(keyfile))
    config = ServerConfig(
        certfile=str(certfile),
        keyfile=str(keyfile),
        port=0,
        protocols=server_protocols,
        retry=retry,
    )
    app = ServerApp(config=config)
    seen: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    @app.route("/proto")
    async def proto(session: WebTransportSession) -> None:
        if not seen.done():
            seen.set_result(session.protocol)
        stream = await session.create_bidirectional_stream()
        await stream.write(f"server:{session.protocol}".encode(), end_stream=True)
        await session.wait_closed()

    server = WebTransportServer(config=config, app=app)
    await server.listen(host="127.0.0.1", port=0)
    port = server.local_address[1]
    try:
        page_config: dict[str, Any] = {
            "url": f"https://127.0.0.1:{port}/proto",
            "hash": bundle.sha256.hex(),
            "protocols": offered,
        }
        report = await run_page(
            load_page("protocols.html"),
            page_config,
            timeout=PAGE_TIMEOUT,
            log_path=tmp_path / f"{browser.name}-protocols.log",
            browser=browser,
        )
    finally:
        await server.close(grace=0)
    assert report["ok"], json.dumps(report, indent=1)
    return report["result"], seen, server


@pytest.mark.covers("protocols", "chromium")
async def test_chromium_gets_the_servers_preferred_protocol(tmp_path: Path) -> None:
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result, seen, _ = await negotiate(
            tmp_path, server_protocols=["json", "chat"], offered=["chat", "json"]
        )
    assert result == {"protocol": "json", "echoed": "server:json"}
    assert seen.done() and seen.result() == "json"


@pytest.mark.covers("protocols", "chromium")
async def test_chromium_without_common_protocol(tmp_path: Path) -> None:
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result, seen, _ = await negotiate(tmp_path, server_protocols=["mqtt"], offered=["chat"])
    # No wt-protocol header: Chromium's wt.protocol is the empty string.
    assert result == {"protocol": "", "echoed": "server:None"}
    assert seen.done() and seen.result() is None


@pytest.mark.covers("retry", "chromium")
async def test_chromium_connects_through_a_retry(tmp_path: Path) -> None:
    """With ``retry="always"`` Chromium proves its address first, then everything works."""
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result, _, server = await negotiate(
            tmp_path, server_protocols=["chat"], offered=["chat"], retry="always"
        )
    assert result == {"protocol": "chat", "echoed": "server:chat"}
    stats = server.stats
    # Chromium's ClientHello fills two Initial packets: each gets a Retry, and Chromium uses the
    # first. Only the proven Initial created a connection.
    assert 1 <= stats["retries_sent"] <= 2 and stats["connections_accepted"] == 1, stats
