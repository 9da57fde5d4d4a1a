"""Headless Firefox's JavaScript ``WebTransport`` against our server.

The scenarios both browsers pass alike run in both from test_chromium.py (``BOTH_BROWSERS``).
Here: those where Firefox behaves differently from Chromium (the test asserts what Firefox does,
and docs/interop.md records it), and Firefox through a Retry, a server restart and Origin checks,
on the same server, routes and pages as the Chromium tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.interop.conftest import AccessRecords
from tests.interop.firefox import Firefox
from tests.interop.test_chromium import SCENARIO_TIMEOUT, ServerUnderTest, scenario_server
from tests.interop.test_chromium_origin import origin_checked
from tests.interop.test_chromium_protocols import negotiate
from tests.interop.test_chromium_restart import restarted_under_the_page

# No skip when Firefox is missing: the test command installs it (firefox-esr).
pytestmark = [pytest.mark.interop]

#: The largest datagram payload Firefox sends us (its 1252-byte packets, our 8-byte CIDs).
FIREFOX_LARGEST_DATAGRAM = 1224

#: Every test here serves through test_chromium's helpers: on both engines, like the rest.
QUIC_ENGINES = ("aioquic", "qh3")


@pytest_asyncio.fixture
async def server(tmp_path: Path) -> AsyncIterator[ServerUnderTest]:
    async with scenario_server(tmp_path, Firefox) as under_test:
        yield under_test


@pytest.mark.covers("datagrams", "firefox")
async def test_datagrams_both_ways(server: ServerUnderTest) -> None:
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result = await server.run("datagrams", "/datagrams")
        first = await server.probe.wait("first_small")
        big = await server.probe.wait("big")
    assert first.startswith(b"page:")
    assert result["echoes"] == ["page:0", "page:1", "page:2"]
    assert set(result["fromServer"]) <= {"server:0", "server:1", "server:2"}
    assert result["fromServer"]
    # Firefox reports 1024 as its datagram limit, whatever the path allows.
    assert big == result["maxDatagramSize"] == result["bigAck"] == 1024


@pytest.mark.covers("datagram-size", "firefox")
async def test_datagrams_beyond_the_reported_limit(server: ServerUnderTest) -> None:
    """Firefox sends datagrams larger than the 1024 bytes it reports, up to what its packets
    carry (1224 bytes with our 8-byte connection IDs); a larger one is dropped by Firefox
    without an error to the page. Firefox may also open a second QUIC connection that carries
    no session."""
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result = await server.run(
            "datagrams", "/datagrams", bigSize=FIREFOX_LARGEST_DATAGRAM, tooBigSize=1225
        )
        sizes = await server.probe.wait("big_sizes")
    assert result["maxDatagramSize"] == 1024
    assert result["bigAck"] == FIREFOX_LARGEST_DATAGRAM
    # Each round sends the too-big one first, on the same path: it never arrived.
    assert set(sizes) == {FIREFOX_LARGEST_DATAGRAM}, sizes
    stats = server.stats()
    assert stats["sessions_requested"] == 1 and stats["connections_accepted"] in (1, 2), stats


@pytest.mark.covers("stop-sending", "firefox")
async def test_page_cancel_sends_no_stop_sending(server: ServerUnderTest) -> None:
    """Firefox's ``readable.cancel(5)`` sends no STOP_SENDING: our writer learns of no code 5
    and only stops when the page closes the session, which first ends Firefox's open streams
    with an HTTP/3 code (not a WebTransport one: ``error_code`` is None)."""
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result = await server.run("cancel_then_close", "/stop-probe")
        code = await server.probe.wait("stop")
    assert result == {"firstByte": ord("x")}
    assert code is None


@pytest.mark.covers("reset", "firefox")
async def test_server_reset_reaches_firefox_without_its_code(server: ServerUnderTest) -> None:
    """A RESET_STREAM from us fails Firefox's reader with a TypeError and no streamErrorCode."""
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result = await server.run("reset_from_server", "/reset-me")
        assert await server.probe.wait("aborted") is True
    error = result["error"]
    assert error is not None, result
    assert (error["name"], error["message"]) == ("TypeError", "Error in input stream")
    assert error["streamErrorCode"] is None


@pytest.mark.covers("retry", "firefox")
@pytest.mark.covers("protocols", "firefox")
async def test_firefox_connects_through_a_retry(tmp_path: Path) -> None:
    """With ``retry="always"`` Firefox proves its address first; it offers no subprotocols."""
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result, seen, server = await negotiate(
            tmp_path, server_protocols=["chat"], offered=None, retry="always", browser=Firefox
        )
    assert result["echoed"] == "server:None"
    assert seen.done() and seen.result() is None
    stats = server.stats
    assert stats["retries_sent"] >= 1 and stats["connections_accepted"] >= 1, stats


@pytest.mark.covers("stateless-reset", "firefox")
async def test_firefox_session_ends_promptly_when_the_server_restarts(tmp_path: Path) -> None:
    """The restarted server's stateless reset ends Firefox's session at once too."""
    async with asyncio.timeout(SCENARIO_TIMEOUT * 2):
        result = await restarted_under_the_page(tmp_path, Firefox)
    assert result["settled"] != "open" and result["closedAfterMs"] < 3000, result


@pytest.mark.covers("origin", "firefox")
async def test_firefox_origin_allowed_and_rejected(tmp_path: Path, access: AccessRecords) -> None:
    """Firefox sends its page's origin too: ``origin_allowlist`` lets it in or answers 403."""
    await origin_checked(tmp_path, access, Firefox)


@pytest.mark.covers("stop-sending", "firefox")
async def test_server_stop_sending_fails_firefoxs_reading_side(server: ServerUnderTest) -> None:
    """Our STOP_SENDING (code 11) on a stream also fails the page's reader, before the server's
    reply arrives, with Firefox's TypeError and no code (Chromium reads the reply, then its
    writer fails with code 11)."""
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result = await server.run("stop_from_server", "/stop-me")
        assert await server.probe.wait("stopped") is True
    (attempt,) = result["attempts"]
    assert attempt["reply"] is None, result
    error = attempt["readError"]
    assert (error["name"], error["message"]) == ("TypeError", "Error in input stream")
    assert error["streamErrorCode"] is None
