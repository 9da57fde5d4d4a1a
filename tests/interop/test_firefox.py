"""Headless Firefox's JavaScript ``WebTransport`` against our server.

The same server, routes and page as the Chromium tests (test_chromium.py), run in a fresh headless
Firefox (``tests/interop/firefox.py``). Where Firefox behaves differently from Chromium the test
asserts what Firefox does, and docs/interop.md records it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from pywebtransport import ServerConfig, WebTransportServer
from pywebtransport.server.certificate import generate_self_signed_certificate
from tests.interop.conftest import AccessRecords
from tests.interop.firefox import Firefox
from tests.interop.test_chromium import (
    SCENARIO_TIMEOUT,
    UNI_SIZE,
    Probe,
    ServerUnderTest,
    build_app,
    pattern,
)
from tests.interop.test_chromium_origin import origin_checked
from tests.interop.test_chromium_protocols import negotiate
from tests.interop.test_chromium_restart import restarted_under_the_page

# No skip when Firefox is missing: the test command installs it (firefox-esr).
pytestmark = [pytest.mark.interop]


@pytest_asyncio.fixture
async def server(tmp_path: Path) -> AsyncIterator[ServerUnderTest]:
    bundle = generate_self_signed_certificate()
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    bundle.write(certfile=str(certfile), keyfile=str(keyfile))
    config = ServerConfig(certfile=str(certfile), keyfile=str(keyfile), host="127.0.0.1", port=0)
    probe = Probe()
    wt_server = WebTransportServer(config=config, app=build_app(config, probe))
    await wt_server.listen(host="127.0.0.1", port=0)
    port = wt_server.local_address[1]
    try:
        yield ServerUnderTest(
            f"https://127.0.0.1:{port}", bundle.sha256.hex(), probe, tmp_path, Firefox
        )
    finally:
        await wt_server.close()


async def test_client_bidi_streams_echo(server: ServerUnderTest) -> None:
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result = await server.run("bidi_echo", "/echo")
    assert result["streams"] == [
        {"size": 0, "echoed": 0, "same": True},
        {"size": 5, "echoed": 5, "same": True},
        {"size": 300000, "echoed": 300000, "same": True},
    ]


async def test_credit_updates_reach_firefox(server: ServerUnderTest) -> None:
    """8 MiB through one stream and 250 streams: Firefox follows our MAX_* updates."""
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result = await server.run("credit", "/echo", bulkSize=8 * 1024 * 1024, streams=250)
    assert result == {"bulk": 8 * 1024 * 1024, "same": True, "streams": 250}


async def test_server_opened_bidi_stream(server: ServerUnderTest) -> None:
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result = await server.run("server_bidi", "/server-bidi")
        reply = await server.probe.wait("server_bidi")
    assert result == {"received": "hello from server"}
    assert reply == b"page:hello from server"


async def test_unidirectional_both_ways(server: ServerUnderTest) -> None:
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result = await server.run("uni_both", "/uni", uniSize=UNI_SIZE)
        received = await server.probe.wait("uni")
    assert result == {"received": UNI_SIZE, "same": True}
    assert received == pattern(UNI_SIZE, 3)


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


async def test_page_closes_with_code_and_reason(server: ServerUnderTest) -> None:
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result = await server.run("close_from_page", "/hold")
        code, reason = await server.probe.wait("closed")
    assert (code, reason) == (1234, "page bye")
    assert result["error"] is None


async def test_server_closes_with_code_and_reason(server: ServerUnderTest) -> None:
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result = await server.run("close_from_server", "/close-me")
        request = await server.probe.wait("close_request")
    assert request == b"close please"
    assert result["error"] is None, result
    assert result["closed"] == {"closeCode": 4321, "reason": "server bye"}


async def test_page_resets_stream_with_code(server: ServerUnderTest) -> None:
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result = await server.run("reset_from_page", "/reset-probe")
        received, code = await server.probe.wait("reset")
    assert result == {"ack": "ok"}
    assert received == b"partial data"
    assert code == 7


async def test_page_cancel_sends_no_stop_sending(server: ServerUnderTest) -> None:
    """Firefox's ``readable.cancel(5)`` sends no STOP_SENDING: our writer learns of no code 5
    and only stops when the page closes the session, which first ends Firefox's open streams
    with an HTTP/3 code (not a WebTransport one: ``error_code`` is None)."""
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result = await server.run("cancel_then_close", "/stop-probe")
        code = await server.probe.wait("stop")
    assert result == {"firstByte": ord("x")}
    assert code is None


async def test_server_reset_reaches_firefox_without_its_code(server: ServerUnderTest) -> None:
    """A RESET_STREAM from us fails Firefox's reader with a TypeError and no streamErrorCode."""
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result = await server.run("reset_from_server", "/reset-me")
        assert await server.probe.wait("aborted") is True
    error = result["error"]
    assert error is not None, result
    assert (error["name"], error["message"]) == ("TypeError", "Error in input stream")
    assert error["streamErrorCode"] is None


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


async def test_firefox_session_ends_promptly_when_the_server_restarts(tmp_path: Path) -> None:
    """The restarted server's stateless reset ends Firefox's session at once too."""
    async with asyncio.timeout(SCENARIO_TIMEOUT * 2):
        result = await restarted_under_the_page(tmp_path, Firefox)
    assert result["settled"] != "open" and result["closedAfterMs"] < 3000, result


async def test_firefox_origin_allowed_and_rejected(tmp_path: Path, access: AccessRecords) -> None:
    """Firefox sends its page's origin too: ``origin_allowlist`` lets it in or answers 403."""
    await origin_checked(tmp_path, access, Firefox)


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
