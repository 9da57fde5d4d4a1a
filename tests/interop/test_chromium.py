"""Headless Chromium's JavaScript ``WebTransport`` against our server.

Every test starts our ``WebTransportServer`` on 127.0.0.1 (ephemeral UDP port) with a certificate
from ``generate_self_signed_certificate`` pinned by hash in the page, launches a fresh headless
Chromium on ``pages/scenarios.html`` with one scenario selected, and checks both what the page
reports and what the server-side handler observed. Nothing here is simulated: the peer is the
browser's own HTTP/3 and WebTransport stack.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from pywebtransport import ServerApp, ServerConfig, WebTransportServer, WebTransportSession
from pywebtransport.exceptions import StreamError, WebTransportError
from pywebtransport.server.certificate import generate_self_signed_certificate
from pywebtransport.server.echo import echo_handler
from pywebtransport.web import demo_page
from tests.interop.chromium import Chromium, load_page, run_page
from tests.interop.firefox import Firefox

# No skip when Chromium is missing: the test command installs it, and a browser test that
# quietly skips would stand in for a missing feature. The harness fails with a clear message.
pytestmark = [pytest.mark.interop]

SCENARIO_TIMEOUT = 30.0
PAGE_TIMEOUT = 25.0
UNI_SIZE = 100_000

Handler = Callable[[WebTransportSession], Awaitable[None]]


def pattern(size: int, seed: int) -> bytes:
    """The byte pattern the page's ``pattern(size, seed)`` produces."""
    return bytes((i * 13 + seed) & 0xFF for i in range(size))


class Probe:
    """What the server-side handlers observed, for the test to await by key."""

    _FAILED = "handler failed"

    def __init__(self) -> None:
        self._values: dict[str, asyncio.Future[Any]] = {}

    def _future(self, key: str) -> asyncio.Future[Any]:
        if key not in self._values:
            self._values[key] = asyncio.get_running_loop().create_future()
        return self._values[key]

    def set(self, key: str, value: Any) -> None:
        future = self._future(key)
        if not future.done():
            future.set_result(value)

    def fail(self, error: BaseException) -> None:
        self.set(self._FAILED, f"{type(error).__name__}: {error}")

    async def wait(self, key: str, *, timeout: float = SCENARIO_TIMEOUT) -> Any:
        wanted, failed = self._future(key), self._future(self._FAILED)
        done, _ = await asyncio.wait(
            {wanted, failed}, timeout=timeout, return_when="FIRST_COMPLETED"
        )
        if wanted in done:
            return wanted.result()
        if failed in done:
            raise AssertionError(f"server handler failed: {failed.result()}")
        raise AssertionError(f"the server handler never recorded {key!r} within {timeout} s")


def guarded(probe: Probe, handler: Handler) -> Handler:
    """Record a handler's exception in ``probe`` so the test fails with it instead of timing out."""

    async def run(session: WebTransportSession) -> None:
        try:
            await handler(session)
        except Exception as error:
            probe.fail(error)
            raise

    return run


def build_app(config: ServerConfig, probe: Probe) -> ServerApp:
    """The routes the scenarios talk to; each records what it saw in ``probe``."""
    app = ServerApp(config=config)
    app.route("/echo")(echo_handler)

    async def server_bidi(session: WebTransportSession) -> None:
        stream = await session.create_bidirectional_stream()
        await stream.write(b"hello from server", end_stream=True)
        probe.set("server_bidi", await stream.read_all(max_size=1024))
        await session.wait_closed()

    async def uni(session: WebTransportSession) -> None:
        async def send() -> None:
            stream = await session.create_unidirectional_stream()
            await stream.write_all(pattern(UNI_SIZE, 4))

        async def receive() -> None:
            stream = await session.accept_unidirectional_stream(timeout=PAGE_TIMEOUT)
            probe.set("uni", await stream.read_all(max_size=2 * UNI_SIZE))

        await asyncio.gather(send(), receive())
        await session.wait_closed()

    async def datagrams(session: WebTransportSession) -> None:
        sent_own = False
        big_sizes: list[int] = []  # every big datagram that arrived, in order
        while True:
            try:
                data = await session.datagrams.receive()
            except WebTransportError:
                return  # the session ended
            if len(data) > 100:
                big_sizes.append(len(data))
                probe.set("big_sizes", big_sizes)
                probe.set("big", len(data))
                await session.datagrams.send(b"big:%d" % len(data))
            else:
                probe.set("first_small", data)
                await session.datagrams.send(b"echo:" + data)
            if not sent_own:
                sent_own = True
                for index in range(3):
                    await session.datagrams.send(b"server:%d" % index)

    async def hold(session: WebTransportSession) -> None:
        await session.wait_closed()
        probe.set("closed", (session.close_code, session.close_reason))

    async def close_me(session: WebTransportSession) -> None:
        stream = await session.accept_bidirectional_stream(timeout=PAGE_TIMEOUT)
        probe.set("close_request", await stream.read_all(max_size=100))
        await session.close(code=4321, reason="server bye")

    async def reset_probe(session: WebTransportSession) -> None:
        stream = await session.accept_bidirectional_stream(timeout=PAGE_TIMEOUT)
        received = await stream.readexactly(12)
        await stream.write(b"ok")
        try:
            rest = await stream.read_all()
        except StreamError as error:
            probe.set("reset", (received, error.error_code))
        else:
            probe.set("reset", (received + rest, "no StreamError"))
        await session.wait_closed()

    async def stop_probe(session: WebTransportSession) -> None:
        stream = await session.accept_bidirectional_stream(timeout=PAGE_TIMEOUT)
        assert await stream.readexactly(2) == b"go"
        await stream.write(b"x")
        chunk = b"y" * 1024
        try:
            for _ in range(64 * 1024):  # far more than any window: the stop must end this
                await stream.write(chunk)
        except StreamError as error:
            probe.set("stop", error.error_code)
        else:
            probe.set("stop", "no StreamError after 64 MiB")
        await session.wait_closed()

    async def reset_me(session: WebTransportSession) -> None:
        stream = await session.accept_bidirectional_stream(timeout=PAGE_TIMEOUT)
        assert await stream.readexactly(8) == b"reset me"
        await stream.write(b"some")
        await stream.abort(code=9)
        probe.set("aborted", True)
        await session.wait_closed()

    async def stop_me(session: WebTransportSession) -> None:
        while not session.is_closed:  # one stream per page attempt
            try:
                stream = await session.accept_bidirectional_stream(timeout=PAGE_TIMEOUT)
            except WebTransportError:
                return  # the session ended
            assert await stream.readexactly(7) == b"stop me"
            await stream.stop(code=11)
            await stream.write(b"stopped")
            probe.set("stopped", True)

    routes: dict[str, Handler] = {
        "/server-bidi": server_bidi,
        "/uni": uni,
        "/datagrams": datagrams,
        "/hold": hold,
        "/close-me": close_me,
        "/reset-probe": reset_probe,
        "/stop-probe": stop_probe,
        "/reset-me": reset_me,
        "/stop-me": stop_me,
    }
    for path, handler in routes.items():
        app.route(path)(guarded(probe, handler))
    return app


@dataclass
class ServerUnderTest:
    base_url: str
    hash_hex: str
    probe: Probe
    log_dir: Path
    browser: type[Chromium] = Chromium
    stats: Callable[[], dict[str, Any]] = dict

    async def run(self, scenario: str, route: str, **extra: Any) -> Any:
        """Run one page scenario against ``route`` and return its result (asserting it passed)."""
        config = {
            "url": self.base_url + route,
            "hash": self.hash_hex,
            "scenario": scenario,
            **extra,
        }
        report = await run_page(
            load_page("scenarios.html"),
            config,
            timeout=PAGE_TIMEOUT,
            log_path=self.log_dir / f"{self.browser.name}-{scenario}.log",
            browser=self.browser,
        )
        assert report["ok"], json.dumps(report, indent=1)
        return report["result"]


@asynccontextmanager
async def scenario_server(
    tmp_path: Path, browser: type[Chromium]
) -> AsyncIterator[ServerUnderTest]:
    """Our server with the scenario routes, for pages run in ``browser``."""
    bundle = generate_self_signed_certificate()
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    bundle.write(certfile=str(certfile), keyfile=str(keyfile))
    config = ServerConfig(certfile=str(certfile), keyfile=str(keyfile), host="127.0.0.1", port=0)
    probe = Probe()
    wt_server = WebTransportServer(config=config, app=build_app(config, probe))
    await wt_server.listen(host="127.0.0.1", port=0)
    port = wt_server.local_address[1]
    try:
        url = f"https://127.0.0.1:{port}"
        yield ServerUnderTest(
            url, bundle.sha256.hex(), probe, tmp_path, browser, lambda: wt_server.stats
        )
    finally:
        await wt_server.close()


@pytest_asyncio.fixture
async def server(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[ServerUnderTest]:
    """The scenario server for Chromium, or for the browser a test names (``BOTH_BROWSERS``)."""
    async with scenario_server(tmp_path, getattr(request, "param", Chromium)) as under_test:
        yield under_test


#: For the scenarios both browsers pass alike: the test runs once per browser.
BOTH_BROWSERS = pytest.mark.parametrize(
    "server", [Chromium, Firefox], indirect=True, ids=["chromium", "firefox"]
)


@pytest.mark.covers("bidi", "chromium", "firefox")
@BOTH_BROWSERS
async def test_client_bidi_streams_echo(server: ServerUnderTest) -> None:
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result = await server.run("bidi_echo", "/echo")
    assert result["streams"] == [
        {"size": 0, "echoed": 0, "same": True},
        {"size": 5, "echoed": 5, "same": True},
        {"size": 300000, "echoed": 300000, "same": True},
    ]


@pytest.mark.covers("many-streams", "chromium", "firefox")
@BOTH_BROWSERS
async def test_credit_updates_reach_the_browser(server: ServerUnderTest) -> None:
    """8 MiB through one stream and 250 streams: the browser follows our MAX_* updates."""
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result = await server.run("credit", "/echo", bulkSize=8 * 1024 * 1024, streams=250)
    assert result == {"bulk": 8 * 1024 * 1024, "same": True, "streams": 250}


@pytest.mark.covers("bidi-server", "chromium", "firefox")
@BOTH_BROWSERS
async def test_server_opened_bidi_stream(server: ServerUnderTest) -> None:
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result = await server.run("server_bidi", "/server-bidi")
        reply = await server.probe.wait("server_bidi")
    assert result == {"received": "hello from server"}
    assert reply == b"page:hello from server"


@pytest.mark.covers("uni", "chromium", "firefox")
@BOTH_BROWSERS
async def test_unidirectional_both_ways(server: ServerUnderTest) -> None:
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result = await server.run("uni_both", "/uni", uniSize=UNI_SIZE)
        received = await server.probe.wait("uni")
    assert result == {"received": UNI_SIZE, "same": True}
    assert received == pattern(UNI_SIZE, 3)


@pytest.mark.covers("datagrams", "chromium")
@pytest.mark.covers("datagram-size", "chromium")
async def test_datagrams_both_ways(server: ServerUnderTest) -> None:
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result = await server.run("datagrams", "/datagrams")
        first = await server.probe.wait("first_small")
        big = await server.probe.wait("big")
    assert first.startswith(b"page:")
    assert len(result["echoes"]) >= 3
    assert all(echo.startswith("page:") for echo in result["echoes"])
    assert result["fromServer"], result
    assert set(result["fromServer"]) <= {"server:0", "server:1", "server:2"}
    # The largest datagram the browser believes it may send reaches the server intact.
    assert result["maxDatagramSize"] > 1000
    assert big == result["maxDatagramSize"] == result["bigAck"]


@pytest.mark.covers("close", "chromium", "firefox")
@BOTH_BROWSERS
async def test_page_closes_with_code_and_reason(server: ServerUnderTest) -> None:
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result = await server.run("close_from_page", "/hold")
        code, reason = await server.probe.wait("closed")
    assert (code, reason) == (1234, "page bye")
    assert result["error"] is None


@pytest.mark.covers("close", "chromium", "firefox")
@BOTH_BROWSERS
async def test_server_closes_with_code_and_reason(server: ServerUnderTest) -> None:
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result = await server.run("close_from_server", "/close-me")
        request = await server.probe.wait("close_request")
    assert request == b"close please"
    assert result["error"] is None, result
    assert result["closed"] == {"closeCode": 4321, "reason": "server bye"}


@pytest.mark.covers("reset", "chromium", "firefox")
@BOTH_BROWSERS
async def test_page_resets_stream_with_code(server: ServerUnderTest) -> None:
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result = await server.run("reset_from_page", "/reset-probe")
        received, code = await server.probe.wait("reset")
    assert result == {"ack": "ok"}
    assert received == b"partial data"
    assert code == 7


@pytest.mark.covers("stop-sending", "chromium")
async def test_page_stops_sending_with_code(server: ServerUnderTest) -> None:
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result = await server.run("stop_from_page", "/stop-probe")
        code = await server.probe.wait("stop")
    assert result == {"firstByte": ord("x")}
    assert code == 5


@pytest.mark.covers("reset", "chromium")
async def test_server_resets_stream_with_code(server: ServerUnderTest) -> None:
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result = await server.run("reset_from_server", "/reset-me")
        assert await server.probe.wait("aborted") is True
    error = result["error"]
    assert error is not None, result
    assert error["name"] == "WebTransportError"
    assert error["source"] == "stream"
    assert error["streamErrorCode"] == 9


@pytest.mark.covers("stop-sending", "chromium")
async def test_server_stops_sending_with_code(server: ServerUnderTest) -> None:
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result = await server.run("stop_from_server", "/stop-me")
        assert await server.probe.wait("stopped") is True
    *retried, last = result["attempts"]
    for attempt in retried:  # Chromium's internal race, see the page; never the last attempt
        assert attempt["error"]["name"] == "NetworkError", result
    assert last["reply"] == "stopped"
    assert last["error"] is not None, result
    assert last["error"]["name"] == "WebTransportError", result
    assert last["error"]["source"] == "stream"
    assert last["error"]["streamErrorCode"] == 11


async def test_demo_page_against_echo_handler(server: ServerUnderTest, tmp_path: Path) -> None:
    config = {
        "url": server.base_url + "/echo",
        "certificateHash": server.hash_hex,
        "count": 3,
        "size": 2000,
    }
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        report = await run_page(
            demo_page(), config, timeout=PAGE_TIMEOUT, log_path=tmp_path / "chromium-demo.log"
        )
    assert report["ok"], json.dumps(report, indent=1)
    assert report["errors"] == []
    assert report["bidi"]["count"] == 3
    assert report["uni"]["count"] == 3
    assert report["datagrams"]["count"] >= 1
    assert report["datagrams"]["details"].startswith("1024 bytes"), report["datagrams"]
    assert report["closed"] == {"closeCode": 0, "reason": "demo done"}


async def test_page_cancel_then_close_stops_with_the_cancel_code(server: ServerUnderTest) -> None:
    """Chromium's ``readable.cancel(5)`` sends STOP_SENDING 5 before the page's close (77)."""
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        result = await server.run("cancel_then_close", "/stop-probe")
        code = await server.probe.wait("stop")
    assert result == {"firstByte": ord("x")}
    assert code == 5
