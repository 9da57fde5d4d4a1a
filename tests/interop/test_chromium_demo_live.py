"""The demo page's live panel in headless Chromium, against the application ``serve`` runs.

The page is served with settings that ask for a timed run of the live panel: it opens a session
to ``/live``, keeps the echo busy, reads the server's statistics lines and draws both charts,
then stops and reports what it received and drew. A session the server closes while the panel
runs ends the run early, and the panel says so.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from pywebtransport import ServerConfig, WebTransportServer, WebTransportSession
from pywebtransport.cli import ECHO_PATH, LIVE_PATH, echo_app
from pywebtransport.events import Event, EventType
from pywebtransport.web import demo_page, messaging_module
from pywebtransport.web.demo_live import live_handler
from tests.interop.chromium import run_page
from tests.interop.conftest import CertificateFiles

pytestmark = [pytest.mark.interop]

LIVE_SECONDS = 4
PAGE_TIMEOUT = 25.0
SCENARIO_TIMEOUT = 30.0


CLOSING_PATH = "/live-closing"
CLOSE_AFTER_STREAMS = 20


def live_tasks() -> list[asyncio.Task[Any]]:
    return [task for task in asyncio.all_tasks() if task.get_name().startswith("live-stats-")]


async def closing_live(session: WebTransportSession) -> None:
    """The live handler, but the server closes the session once the page's load is under way."""
    busy = asyncio.Event()
    opened = 0

    def on_opened(event: Event) -> None:
        nonlocal opened
        if not event.data["local"]:
            opened += 1
            if opened >= CLOSE_AFTER_STREAMS:
                busy.set()

    session.on(EventType.STREAM_OPENED, on_opened)
    handler = asyncio.create_task(live_handler(session))
    waits = {asyncio.ensure_future(session.wait_closed()), asyncio.ensure_future(busy.wait())}
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        await session.close(code=42, reason="server says bye")
        await handler
    finally:
        for task in (handler, *waits):
            task.cancel()
        await asyncio.gather(handler, *waits, return_exceptions=True)


async def run_live_page(
    certificate: CertificateFiles, tmp_path: Path, live_path: str, seconds: float
) -> Any:
    """Serve ``serve``'s application (plus :data:`CLOSING_PATH`) and run the page's live panel."""
    config = ServerConfig(certfile=certificate.certfile, keyfile=certificate.keyfile)
    app = echo_app(config)
    app.route(CLOSING_PATH)(closing_live)
    server = WebTransportServer(config=config, app=app)
    await server.listen(host="127.0.0.1", port=0)
    try:
        async with asyncio.timeout(SCENARIO_TIMEOUT):
            port = server.local_address[1]
            page_config = {
                "url": f"https://127.0.0.1:{port}{ECHO_PATH}",
                "certificateHash": certificate.sha256.hex(),
                "livePath": live_path,
                "liveSeconds": seconds,
                "count": 1,
                "size": 100,
            }
            report = await run_page(
                demo_page(),
                page_config,
                timeout=PAGE_TIMEOUT,
                log_path=tmp_path / "chromium-live.log",
                gets={"/pywebtransport/messaging.js": (messaging_module(), "text/javascript")},
            )
            # The session ended before the page reported: the push ends with it.
            await asyncio.gather(*live_tasks())
            assert live_tasks() == []
            return report
    finally:
        async with asyncio.timeout(SCENARIO_TIMEOUT):
            await server.close()


async def test_live_panel_charts_rtt_and_throughput(
    certificate: CertificateFiles, tmp_path: Path
) -> None:
    report = await run_live_page(certificate, tmp_path, LIVE_PATH, LIVE_SECONDS)
    assert report["ok"], json.dumps(report, indent=1)  # the echo checks still pass
    live = report["live"]
    shown = json.dumps(live, indent=1)
    assert live["ok"], shown
    assert live["errors"] == [], shown
    assert live["samples"] >= 5, shown
    assert len(live["rttMs"]) >= 5, shown
    assert all(0 < rtt < 1000 for rtt in live["rttMs"]), shown
    assert all(0 < rtt < 1000 for rtt in live["pageRttMs"]), shown
    assert live["echoes"] >= 1 and live["echoedBytes"] >= 64 * 1024, shown
    assert max(live["throughputMbps"]) > 0, shown
    assert max(live["serverMbps"]) > 0, shown
    # Every sample became a point of the RTT chart; the throughput chart has points too.
    assert live["points"]["rtt"]["serverRtt"] == len(live["rttMs"]), shown
    assert live["points"]["rate"]["pageRate"] >= 3, shown
    assert live["points"]["rate"]["serverRate"] >= 3, shown
    # The canvases hold the lines in their series' colours.
    assert live["pixels"]["rtt"]["series"]["serverRtt"] > 0, shown
    assert live["pixels"]["rate"]["series"]["pageRate"] > 0, shown
    assert live["pixels"]["rate"]["series"]["serverRate"] > 0, shown
    assert live["closed"] == {"closeCode": 0, "reason": "stopped"}, shown
    assert live["status"].startswith("stopped"), shown


async def test_live_panel_shows_a_session_the_server_closed(
    certificate: CertificateFiles, tmp_path: Path
) -> None:
    # The run would last 20 s; the server's close ends it as soon as the load is under way.
    report = await run_live_page(certificate, tmp_path, CLOSING_PATH, 20)
    live = report["live"]
    shown = json.dumps(live, indent=1)
    assert not live["ok"], shown
    assert live["closed"] == {"closeCode": 42, "reason": "server says bye"}, shown
    assert live["status"] == "the session ended: closed with code 42 (server says bye)", shown
    assert live["echoes"] >= CLOSE_AFTER_STREAMS - 1, shown
