"""WebTransportBrowser: navigate, back, forward, refresh, and failures that change nothing."""

from __future__ import annotations

import asyncio

import pytest

from pywebtransport import (
    ClientConfig,
    ClientError,
    ConnectionError,
    HandshakeError,
    WebTransportServer,
)
from pywebtransport.client.browser import WebTransportBrowser
from tests.certs import CertBundle
from tests.conftest import T, build_app, echo_ok, url


async def snapshot(browser: WebTransportBrowser) -> tuple[list[str], str | None, object]:
    """What a failed move must leave untouched."""
    return await browser.get_history(), browser.current_url, browser.current_session


def attempts(browser: WebTransportBrowser) -> int:
    """Connects the browser has made."""
    count = browser.client.stats["connections_attempted"]
    assert isinstance(count, int)
    return count


async def test_use_outside_async_with_is_a_client_error(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    browser = WebTransportBrowser(config=client_config)
    with pytest.raises(ClientError):
        await browser.navigate(url=url(server))
    with pytest.raises(ClientError):
        await browser.back()
    async with asyncio.timeout(T), browser:
        session = await browser.navigate(url=url(server))
    assert session.is_closed and browser.current_session is None
    for move in (browser.back, browser.forward, browser.refresh):
        with pytest.raises(ClientError):
            await move()
    with pytest.raises(ClientError):
        await browser.navigate(url=url(server))
    await browser.close()  # idempotent


async def test_empty_history_moves_return_none(client_config: ClientConfig) -> None:
    async with asyncio.timeout(T), WebTransportBrowser(config=client_config) as browser:
        assert await browser.back() is None
        assert await browser.forward() is None
        assert await browser.refresh() is None
        assert await browser.get_history() == []
        assert browser.current_session is None and browser.current_url is None
        assert attempts(browser) == 0


async def test_navigate_connects_and_closes_the_previous_session(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    a, b = url(server, "/echo"), url(server, "/items/7")
    async with asyncio.timeout(T), WebTransportBrowser(config=client_config) as browser:
        first = await browser.navigate(url=a)
        assert browser.current_session is first and first.is_ready
        await echo_ok(first)
        second = await browser.navigate(url=b)
        assert browser.current_session is second and second.path == "/items/7"
        assert first.is_closed
        assert await second.datagrams.receive() == b"7"
        assert await browser.get_history() == [a, b]
        assert browser.current_url == b


async def test_navigating_to_the_current_url_keeps_the_session(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    a = url(server)
    async with asyncio.timeout(T), WebTransportBrowser(config=client_config) as browser:
        session = await browser.navigate(url=a)
        assert await browser.navigate(url=a) is session
        assert await browser.navigate(url=a + "#same-key") is session
        assert session.is_ready
        assert await browser.get_history() == [a]
        assert attempts(browser) == 1


async def test_navigating_to_the_current_url_after_its_session_died_reconnects(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    a = url(server)
    async with asyncio.timeout(T), WebTransportBrowser(config=client_config) as browser:
        session = await browser.navigate(url=a)
        await session.close()
        again = await browser.navigate(url=a)
        assert again is not session and again.is_ready
        assert browser.current_session is again
        assert await browser.get_history() == [a]


async def test_back_and_forward_move_through_history(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    a, b, c = url(server, "/echo"), url(server, "/items/2"), url(server, "/items/3")
    async with asyncio.timeout(T), WebTransportBrowser(config=client_config) as browser:
        for target in (a, b, c):
            await browser.navigate(url=target)
        at_c = browser.current_session
        assert at_c is not None
        at_b = await browser.back()
        assert at_b is not None and at_b.path == "/items/2" and browser.current_url == b
        assert at_c.is_closed
        at_a = await browser.back()
        assert at_a is not None and at_a.path == "/echo" and at_b.is_closed
        await echo_ok(at_a)
        count = attempts(browser)
        assert await browser.back() is None  # at the first entry: nothing changes
        assert browser.current_session is at_a and at_a.is_ready
        assert browser.current_url == a and attempts(browser) == count
        again_b = await browser.forward()
        assert again_b is not None and again_b.path == "/items/2" and at_a.is_closed
        again_c = await browser.forward()
        assert again_c is not None and again_c.path == "/items/3"
        assert await browser.forward() is None  # at the last entry: nothing changes
        assert browser.current_session is again_c and again_c.is_ready
        assert await browser.get_history() == [a, b, c]


async def test_navigate_after_back_drops_forward_history(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    a, b, c, d = (url(server, f"/items/{n}") for n in "abcd")
    async with asyncio.timeout(T), WebTransportBrowser(config=client_config) as browser:
        for target in (a, b, c):
            await browser.navigate(url=target)
        await browser.back()
        await browser.back()
        assert browser.current_url == a
        await browser.navigate(url=d)
        assert await browser.get_history() == [a, d]
        assert await browser.forward() is None
        at_a = await browser.back()
        assert at_a is not None and at_a.path == "/items/a"


async def test_refresh_reconnects_to_the_current_entry(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    a, b = url(server, "/echo"), url(server, "/items/9")
    async with asyncio.timeout(T), WebTransportBrowser(config=client_config) as browser:
        await browser.navigate(url=a)
        old = await browser.navigate(url=b)
        fresh = await browser.refresh()
        assert fresh is not None and fresh is not old
        assert fresh.path == "/items/9" and old.is_closed
        assert browser.current_session is fresh and browser.current_url == b
        assert await fresh.datagrams.receive() == b"9"
        assert await browser.get_history() == [a, b]


async def test_failed_navigation_changes_nothing(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    a, b = url(server, "/echo"), url(server, "/items/1")
    async with asyncio.timeout(T), WebTransportBrowser(config=client_config) as browser:
        await browser.navigate(url=a)
        session = await browser.navigate(url=b)
        await browser.back()
        before = await snapshot(browser)
        with pytest.raises(HandshakeError) as info:
            await browser.navigate(url=url(server, "/missing"))
        assert info.value.status == 404
        assert await snapshot(browser) == before  # history [a, b] kept, index still at a
        current = browser.current_session
        assert current is not None and current.is_ready
        await echo_ok(current)
        forward = await browser.forward()  # the forward entry survived the failed navigate
        assert forward is not None and forward.path == "/items/1"
        assert session.is_closed


async def test_failed_back_forward_and_refresh_change_nothing(
    server: WebTransportServer, cert: CertBundle, client_config: ClientConfig
) -> None:
    app = build_app(cert)
    other = WebTransportServer(config=app.config, app=app)
    await other.listen(host="127.0.0.1", port=0)
    gone, here = url(other, "/echo"), url(server, "/echo")
    async with asyncio.timeout(T), WebTransportBrowser(config=client_config) as browser:
        try:
            await browser.navigate(url=here)
            await browser.navigate(url=gone)
        finally:
            await other.close()  # nothing listens at `gone` any more
        before = await snapshot(browser)
        with pytest.raises(ConnectionError):
            await browser.refresh()
        assert await snapshot(browser) == before
        back = await browser.back()
        assert back is not None and browser.current_url == here
        before = await snapshot(browser)
        with pytest.raises(ConnectionError):
            await browser.forward()
        assert await snapshot(browser) == before and back.is_ready
        await browser.navigate(url=url(server, "/items/5"))  # drops the unreachable entry
        assert await browser.get_history() == [here, url(server, "/items/5")]


async def test_failed_back_keeps_the_current_session(
    server: WebTransportServer, cert: CertBundle, client_config: ClientConfig
) -> None:
    app = build_app(cert)
    other = WebTransportServer(config=app.config, app=app)
    await other.listen(host="127.0.0.1", port=0)
    gone, here = url(other, "/echo"), url(server, "/echo")
    async with asyncio.timeout(T), WebTransportBrowser(config=client_config) as browser:
        try:
            await browser.navigate(url=gone)
            current = await browser.navigate(url=here)
        finally:
            await other.close()
        before = await snapshot(browser)
        with pytest.raises(ConnectionError):
            await browser.back()
        assert await snapshot(browser) == before
        assert browser.current_session is current and current.is_ready
        await echo_ok(current)


async def test_get_history_returns_a_copy(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    a = url(server)
    async with asyncio.timeout(T), WebTransportBrowser(config=client_config) as browser:
        await browser.navigate(url=a)
        history = await browser.get_history()
        history.append("https://example.invalid/")
        history[0] = "changed"
        assert await browser.get_history() == [a]
        assert "history=1 index=0" in repr(browser)
