"""Headless Chromium learns at once that a restarted server lost its session (stateless reset)."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.certs import load_cert
from tests.faults import report as report_line
from tests.faults import start_child, stop_child
from tests.interop.chromium import Chromium, load_page, run_page

pytestmark = [pytest.mark.interop]

CHILD_TIMEOUT = 15.0
SCENARIO_TIMEOUT = 60.0


@pytest.mark.covers("stateless-reset", "chromium")
async def test_chromium_session_ends_promptly_when_the_server_restarts(tmp_path: Path) -> None:
    result = await restarted_under_the_page(tmp_path, Chromium)
    # A stateless reset ends the session in one round trip (measured: 1 to 6 ms).
    report_line(f"chromium: {result}")
    assert result["settled"] != "open" and result["closedAfterMs"] < 3000, result


async def restarted_under_the_page(tmp_path: Path, browser: type[Chromium]) -> dict[str, Any]:
    """The page's session on a server that is replaced by a new one on the same port; returns
    what the page saw (how the session settled, and how long after the restart)."""
    proc, line = await start_child(
        "tests.server_process", str(tmp_path), "0", timeout=CHILD_TIMEOUT
    )
    port = line.split()[1].decode()
    cert = load_cert(tmp_path)
    children = [proc]

    async def restart(_: Any) -> None:
        """The page is connected: start a new server on the port, then kill the old one.

        The port never lacks a listener (SO_REUSEPORT), so no ICMP error can end the session:
        only the new server's stateless reset can end it at once. (Without it, Chromium gave up
        6.4 s later, when its retransmissions of the write timed out.)
        """
        new, _ = await start_child(
            "tests.server_process", str(tmp_path), port, timeout=CHILD_TIMEOUT
        )
        children.append(new)
        children[0].send_signal(signal.SIGKILL)
        await children[0].wait()

    try:
        async with asyncio.timeout(SCENARIO_TIMEOUT):
            report = await run_page(
                load_page("restart.html"),
                {"url": f"https://127.0.0.1:{port}/echo", "hash": cert.sha256.hex()},
                timeout=SCENARIO_TIMEOUT - 10,
                log_path=tmp_path / f"{browser.name}-restart.log",
                posts={"/connected": restart},
                browser=browser,
            )
    finally:
        for child in children:
            await stop_child(child, CHILD_TIMEOUT)
    assert report["ok"], json.dumps(report, indent=1)
    assert len(children) == 2, "the page never reported that it was connected"
    result: dict[str, Any] = report["result"]
    return result
