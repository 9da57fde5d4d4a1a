"""Ready-made middleware and the access log, seen from a real client over loopback."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pytest

from pywebtransport import (
    ClientConfig,
    HandshakeError,
    ServerApp,
    WebTransportClient,
    WebTransportSession,
)
from pywebtransport.exceptions import ConfigurationError
from pywebtransport.server import header_auth, max_sessions, origin_allowlist, rate_limit
from pywebtransport.server.app import Middleware
from pywebtransport.server.middleware import RateLimiter
from tests.certs import CertBundle
from tests.conftest import T, build_app, serving, url
from tests.server.conftest import AccessRecords


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def app_with(cert: CertBundle, *middleware: Middleware) -> ServerApp:
    app = build_app(cert)
    for item in middleware:
        app.add_middleware(item)
    return app


async def echo_once(session: WebTransportSession, payload: bytes) -> bytes:
    stream = await session.create_bidirectional_stream()
    await stream.write_all(payload)
    return await stream.read_all()


async def rejected(client: WebTransportClient, target: str, **headers: str) -> int | None:
    with pytest.raises(HandshakeError) as info:
        await client.connect(url=target, headers=headers)
    return info.value.status


# ------------------------------------------------------------------------------------- origin


async def test_origin_allowlist_accepts_listed_origin(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    app = app_with(cert, origin_allowlist(["https://good.example", "http://127.0.0.1:8000/"]))
    async with (
        asyncio.timeout(T),
        serving(app) as server,
        WebTransportClient(config=client_config) as client,
    ):
        for origin in ("https://good.example", "HTTP://127.0.0.1:8000"):
            session = await client.connect(url=url(server), headers={"origin": origin})
            assert await echo_once(session, b"hi") == b"hi"
            await session.close()


async def test_origin_allowlist_rejects_other_origin_with_403(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    app = app_with(cert, origin_allowlist(["https://good.example"]))
    async with (
        asyncio.timeout(T),
        serving(app) as server,
        WebTransportClient(config=client_config) as client,
    ):
        assert await rejected(client, url(server), origin="https://evil.example") == 403
        assert await rejected(client, url(server), origin="https://good.example:444") == 403


@pytest.mark.parametrize(("require", "status"), [(True, 403), (False, None)])
async def test_origin_allowlist_missing_origin(
    cert: CertBundle, client_config: ClientConfig, require: bool, status: int | None
) -> None:
    app = app_with(cert, origin_allowlist(["https://good.example"], require=require))
    async with (
        asyncio.timeout(T),
        serving(app) as server,
        WebTransportClient(config=client_config) as client,
    ):
        if status is None:
            session = await client.connect(url=url(server))
            assert await echo_once(session, b"no origin") == b"no origin"
        else:
            assert await rejected(client, url(server)) == status


# ------------------------------------------------------------------------------------- header auth


def good_token(headers: dict[str, str]) -> bool:
    return headers.get("authorization") == "Bearer good"


async def good_token_async(headers: dict[str, str]) -> bool:
    await asyncio.sleep(0)  # stands for a lookup elsewhere
    return headers.get("authorization") == "Bearer good"


@pytest.mark.parametrize("check", [good_token, good_token_async])
async def test_header_auth(
    cert: CertBundle, client_config: ClientConfig, check: Callable[..., object]
) -> None:
    app = app_with(cert, header_auth(check))  # type: ignore[arg-type]
    async with (
        asyncio.timeout(T),
        serving(app) as server,
        WebTransportClient(config=client_config) as client,
    ):
        assert await rejected(client, url(server)) == 401
        assert await rejected(client, url(server), authorization="Bearer bad") == 401
        session = await client.connect(url=url(server), headers={"authorization": "Bearer good"})
        assert await echo_once(session, b"authorised") == b"authorised"


# ------------------------------------------------------------------------------------- rate limit


def test_token_bucket_refills_at_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.take("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.retry_after("a") == pytest.approx(0.5)
    clock.now += 0.49
    assert not limiter.take("a")  # a failed attempt costs nothing ...
    clock.now += 0.02
    assert limiter.take("a")  # ... and the token arrives 0.5 s after the bucket ran dry
    assert not limiter.take("a")
    assert limiter.take("b")  # addresses have their own buckets
    clock.now += 10
    assert [limiter.take("a") for _ in range(4)] == [True, True, True, False]  # capped at burst


def test_token_bucket_memory_is_bounded() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=1.0, burst=2, max_clients=50, clock=clock)
    for index in range(1000):
        assert limiter.take(f"10.0.{index // 256}.{index % 256}")
    assert len(limiter) == 50  # the cap holds with every bucket still in debt
    clock.now += 2.0  # every bucket is full again: they carry no information any more
    assert limiter.take("192.0.2.1")
    assert len(limiter) == 1
    assert "RateLimiter" in repr(limiter) and "clients=1" in repr(limiter)


async def test_rate_limit_rejects_with_429_and_refills(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    clock = FakeClock()
    app = app_with(cert, rate_limit(rate=1.0, burst=2, clock=clock))
    async with (
        asyncio.timeout(T),
        serving(app) as server,
        WebTransportClient(config=client_config) as client,
    ):
        for _ in range(2):
            await (await client.connect(url=url(server))).close()
        assert await rejected(client, url(server)) == 429
        clock.now += 0.9
        assert await rejected(client, url(server)) == 429
        clock.now += 0.1
        session = await client.connect(url=url(server))
        assert await echo_once(session, b"again") == b"again"


async def test_rate_limit_refill_timing_on_the_real_clock(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    rate = 5.0  # one token per 200 ms
    limiter = rate_limit(rate=rate, burst=1)
    app = app_with(cert, limiter)
    async with (
        asyncio.timeout(T),
        serving(app) as server,
        WebTransportClient(config=client_config) as client,
    ):
        await (await client.connect(url=url(server))).close()
        spent_at = time.monotonic()
        assert await rejected(client, url(server)) == 429
        for _ in range(5):  # waits come from the bucket's own clock, never guessed
            await asyncio.sleep(limiter.retry_after("127.0.0.1"))
            try:
                session = await client.connect(url=url(server))
            except HandshakeError as error:
                assert error.status == 429
                continue
            break
        else:
            pytest.fail("no token after 5 waits for one")
        elapsed = time.monotonic() - spent_at
        await session.close()
    assert 1 / rate * 0.9 <= elapsed <= 1 / rate + 1.0, elapsed


# ------------------------------------------------------------------------------------- max sessions


async def test_max_sessions_rejects_when_full_and_frees_on_close(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    limiter = max_sessions(2)
    app = app_with(cert, limiter)
    opened: asyncio.Queue[WebTransportSession] = asyncio.Queue()

    @app.route("/hold")
    async def hold(session: WebTransportSession) -> None:
        opened.put_nowait(session)
        await session.wait_closed()

    async with (
        asyncio.timeout(T),
        serving(app) as server,
        WebTransportClient(config=client_config) as client,
    ):
        first = await client.connect(url=url(server, "/hold"))
        second = await client.connect(url=url(server, "/hold"))
        server_first = await opened.get()
        await opened.get()
        assert limiter.active == 2
        assert await rejected(client, url(server, "/hold")) == 429
        assert limiter.active == 2  # a rejection holds no slot
        await first.close()
        await server_first.wait_closed()
        assert limiter.active == 1
        third = await client.connect(url=url(server, "/hold"))
        await opened.get()
        assert limiter.active == 2
        assert await rejected(client, url(server, "/hold")) == 429
        await second.close()
        await third.close()


async def test_max_sessions_slot_freed_when_later_middleware_rejects(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    limiter = max_sessions(1)
    app = app_with(cert, limiter, origin_allowlist(["https://good.example"]))
    async with (
        asyncio.timeout(T),
        serving(app) as server,
        WebTransportClient(config=client_config) as client,
    ):
        for _ in range(3):
            assert await rejected(client, url(server), origin="https://evil.example") == 403
        assert limiter.active == 0
        session = await client.connect(url=url(server), headers={"origin": "https://good.example"})
        assert await echo_once(session, b"slot") == b"slot"


# ------------------------------------------------------------------------------------- access log


async def test_access_log_for_accepted_session(
    cert: CertBundle,
    client_config: ClientConfig,
    access: AccessRecords,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pywebtransport.access")
    payload = b"x" * 3000
    async with (
        asyncio.timeout(T),
        serving(build_app(cert)) as server,
        WebTransportClient(config=client_config) as client,
    ):
        session = await client.connect(url=url(server, "/echo?room=1"))
        assert await echo_once(session, payload) == payload
        await session.close()
        record = await access.next()
    assert record in caplog.records
    assert record.levelno == logging.INFO
    assert record.path == "/echo?room=1"  # type: ignore[attr-defined]
    assert record.status == 200  # type: ignore[attr-defined]
    assert record.bytes_sent == len(payload)  # type: ignore[attr-defined]
    assert record.bytes_received == len(payload)  # type: ignore[attr-defined]
    assert 0 <= record.duration < T  # type: ignore[attr-defined]
    assert record.client_address.startswith("127.0.0.1:")  # type: ignore[attr-defined]
    message = record.getMessage()
    assert '"/echo?room=1" 200 ' in message
    assert f"sent={len(payload)} received={len(payload)}" in message


@pytest.mark.parametrize(("path", "status"), [("/nowhere", 404), ("/echo", 403)])
async def test_access_log_for_rejected_session(
    cert: CertBundle,
    client_config: ClientConfig,
    access: AccessRecords,
    caplog: pytest.LogCaptureFixture,
    path: str,
    status: int,
) -> None:
    caplog.set_level(logging.INFO, logger="pywebtransport.access")
    app = app_with(cert, origin_allowlist(["https://good.example"], require=True))
    async with (
        asyncio.timeout(T),
        serving(app) as server,
        WebTransportClient(config=client_config) as client,
    ):
        assert await rejected(client, url(server, path)) == status
        record = await access.next()
    assert record in caplog.records
    assert (record.path, record.status) == (path, status)  # type: ignore[attr-defined]
    assert (record.bytes_sent, record.bytes_received) == (0, 0)  # type: ignore[attr-defined]
    assert f'"{path}" {status} ' in record.getMessage()


# ------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: origin_allowlist([]), "origins"),
        (lambda: rate_limit(rate=0, burst=1), "rate"),
        (lambda: rate_limit(rate=1, burst=0), "burst"),
        (lambda: rate_limit(rate=1, burst=1, max_clients=0), "max_clients"),
        (lambda: max_sessions(0), "limit"),
    ],
)
def test_invalid_settings_raise(build: Callable[[], object], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        build()
    assert info.value.field == field


def test_the_security_guide_states_the_statuses_the_limits_answer() -> None:
    from pathlib import Path

    guide = Path(__file__).resolve().parents[2] / "docs" / "security.md"
    rows = {
        "`max_sessions(...)` middleware": 429,  # SessionLimiter.__call__
        "`max_sessions_per_connection` (server)": 429,
    }
    lines = guide.read_text().splitlines()
    for marker, status in rows.items():
        (row,) = [line for line in lines if line.startswith("|") and marker in line]
        assert f"status `{status}`" in row, row
