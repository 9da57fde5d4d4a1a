"""The examples with a browser page, run as subprocesses and opened in headless Chromium.

Each server example serves its own page; the test opens it with ``?test=1``, which makes the
page run a short scenario and POST what it shows to the server's ``/report`` route, which the
server prints as a ``REPORT {json}`` line. The page is the real example page, the browser's own
WebTransport stack is the peer, and the test reads the lines the programs print.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.examples import test_examples
from tests.examples.test_examples import Program
from tests.interop.chromium import Chromium

# No skip when Chromium is missing: the harness fails with a clear message instead.
pytestmark = [pytest.mark.interop]

programs = test_examples.programs  # the fixture that kills the started programs at the end

PAGE = re.compile(r"^PAGE (http://127\.0\.0\.1:\d+/)$")
STEP_TIMEOUT = 20.0


async def expect(program: Program, pattern: str, browser: Chromium) -> re.Match[str]:
    """The next line of ``program`` matching ``pattern``; on failure, show the browser's log."""
    try:
        return await asyncio.to_thread(program.expect, pattern, STEP_TIMEOUT)
    except AssertionError as error:
        raise AssertionError(f"{error}\n--- chromium output ---\n{browser.log_tail()}") from None


async def report(server: Program, browser: Chromium) -> dict[str, Any]:
    line = await expect(server, r"^REPORT (\{.*\})$", browser)
    value = json.loads(line.group(1))
    assert isinstance(value, dict)
    return value


def start_server(script: str) -> tuple[Program, str, str, str]:
    """Start ``script`` on a free port: the program, its WebTransport URL, hash and page URL."""
    server = Program(script, "--host", "127.0.0.1", "--port", "0")
    url, _, cert_hash = server.ready()
    page = server.expect(PAGE.pattern).group(1)
    return server, url, cert_hash, page


async def test_chat_room_page_and_python_client(programs: list[Program], tmp_path: Path) -> None:
    server, url, cert_hash, page = start_server("chat_room/chat_server.py")
    programs.append(server)
    log = tmp_path / "chromium-chat.log"
    async with Chromium(f"{page}?name=alice&test=1&say=hello+bob", log_path=log) as browser:
        await expect(server, r"^JOIN alice$", browser)
        client = Program(
            "chat_room/chat_client.py",
            *("--url", url, "--cert-hash", cert_hash, "--name", "bob"),
            *("--wait-for", "hello bob", "--timeout", str(STEP_TIMEOUT), "hi from bob"),
        )
        programs.append(client)
        assert await asyncio.to_thread(client.finish, STEP_TIMEOUT + 5) == 0, client.lines
        await expect(server, r"^LEAVE bob$", browser)
        shown = await report(server, browser)
        await expect(server, r"^LEAVE alice$", browser)  # the page left after its report

    # The Python member saw the page in the room, its own message and the page's answer.
    assert client.lines == [
        "WELCOME bob members=alice,bob",
        "JOINED bob",
        "MESSAGE bob: hi from bob",
        "MESSAGE alice: hello bob",
        "DONE sent=1 received=1",
    ]
    # The page showed the whole conversation, joins and the leave included.
    assert shown["ok"] is True, shown
    assert shown["me"] == "alice" and shown["partner"] == "bob"
    assert shown["lines"] == [
        "alice joined",
        "bob joined",
        "bob: hi from bob",
        "alice: hello bob",
        "bob left",
    ], shown
    assert shown["members"] == ["alice"]
    assert server.stop() == 0
    assert server.lines[-1] == "STOPPED"
    assert "MESSAGE bob: hi from bob" in server.lines
    assert "MESSAGE alice: hello bob" in server.lines


async def test_live_dashboard_page_draws_samples(programs: list[Program], tmp_path: Path) -> None:
    wanted = 6
    server, _, _, page = start_server("live_dashboard/dashboard_server.py")
    programs.append(server)
    log = tmp_path / "chromium-dashboard.log"
    async with Chromium(f"{page}?test=1&samples={wanted}", log_path=log) as browser:
        joined = await expect(server, r"^JOIN session=(\d+)$", browser)
        shown = await report(server, browser)
        left = await expect(server, r"^LEAVE session=(\d+) samples=(\d+)$", browser)

    assert shown["ok"] is True and shown["error"] is None, shown
    samples = shown["samples"]
    assert len(samples) >= wanted
    assert left.group(1) == joined.group(1)
    assert int(left.group(2)) >= len(samples)  # the server sent at least what the page drew
    # One sample per interval, in order, with sane values for a server on loopback.
    for earlier, later in itertools.pairwise(samples):
        assert later["seq"] > earlier["seq"]
        assert later["uptime_s"] > earlier["uptime_s"]
        assert later["bytes_sent"] > earlier["bytes_sent"]
    spacing = (samples[-1]["uptime_s"] - samples[0]["uptime_s"]) / (len(samples) - 1)
    assert 0.1 <= spacing <= 1.0, samples  # 0.2 s apart, give or take a slow machine
    for sample in samples:
        assert sample["rtt_ms"] is not None and 0 < sample["rtt_ms"] < 1000, sample
        assert sample["sessions"] == 1
        assert sample["cpu_percent"] >= 0
        assert sample["max_rss_bytes"] > 1 << 20
        assert sample["rss_bytes"] is None or sample["rss_bytes"] > 1 << 20
    # Every chart plotted the samples, and its line is on the canvas (blue, not white or grey).
    charts = {chart["title"]: chart for chart in shown["charts"]}
    assert len(charts) == 5
    for title, chart in charts.items():
        least = len(samples) - 1 if title.startswith("Sent to you") else len(samples)
        assert chart["points"] >= least, chart
        assert chart["colored"] > 100, chart
    assert server.stop() == 0
    assert server.lines[-1] == "STOPPED"
