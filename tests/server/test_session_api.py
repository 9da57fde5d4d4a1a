"""What a server application can do with a session beyond streams and datagrams: choose the
success response (status and headers), read the request's authority, drain one session and close
the QUIC connection under it. Real client and server on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest

from pywebtransport import (
    ClientConfig,
    SessionError,
    SessionState,
    WebTransportClient,
    WebTransportSession,
)
from pywebtransport.constants import H3ErrorCode
from tests.certs import CertBundle
from tests.conftest import T, build_app, echo_ok, serving, url
from tests.server.conftest import AccessRecords


async def test_middleware_chooses_the_success_status_and_headers(
    cert: CertBundle, client_config: ClientConfig, access: AccessRecords
) -> None:
    app = build_app(cert, protocols=["chat.v1"])
    seen: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    async def respond(session: WebTransportSession) -> int | None:
        # The application's own choice of subprotocol replaces select_protocol's.
        session.set_response(status=203, headers={"set-cookie": "id=1", "wt-protocol": '"chat.v2"'})
        return None

    @app.route("/chosen")
    async def chosen(session: WebTransportSession) -> None:
        seen.set_result(session.protocol)
        await session.wait_closed()

    app.add_middleware(respond)
    config = dataclasses.replace(client_config, protocols=["chat.v1", "chat.v2"])
    async with (
        asyncio.timeout(T),
        serving(app) as srv,
        WebTransportClient(config=config) as client,
    ):
        session = await client.connect(url=url(srv, "/chosen"))
        assert session.headers["set-cookie"] == "id=1"
        assert session.protocol == "chat.v2"
        assert await seen == "chat.v2"
        await session.close()
        record = await access.next()
    assert record.status == 203  # type: ignore[attr-defined]
    assert '"/chosen" 203 ' in record.getMessage()


async def test_set_response_refuses_what_cannot_be_sent(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    app = build_app(cert)
    refusals: list[str] = []

    async def bad_values(session: WebTransportSession) -> int | None:
        for status, headers in [
            (200 - 1, {}),
            (301, {}),
            (200, {"X-Upper": "1"}),
            (200, {":status": "204"}),
            (200, {"": "empty"}),
        ]:
            with pytest.raises(ValueError):
                session.set_response(status=status, headers=headers)
            refusals.append(f"{status} {list(headers)}")
        return None

    late: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    @app.route("/late")
    async def too_late(session: WebTransportSession) -> None:
        try:
            session.set_response(status=204)  # the session is already accepted
        except SessionError as error:
            late.set_result(error)
        else:
            late.set_result(None)
        await session.wait_closed()

    app.add_middleware(bad_values)
    async with (
        asyncio.timeout(T),
        serving(app) as srv,
        WebTransportClient(config=client_config) as client,
    ):
        session = await client.connect(url=url(srv, "/late"))
        assert isinstance(await late, SessionError)
        assert len(refusals) == 5
        assert "x-upper" not in session.headers  # the refused values were not kept
        with pytest.raises(SessionError):
            session.set_response(status=200)  # a client session has no response to give
        await session.close()


async def test_the_request_authority_is_an_attribute(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    app = build_app(cert)

    @app.route("/whoami")
    async def whoami(session: WebTransportSession) -> None:
        report = {"authority": session.authority, "headers": sorted(session.headers)}
        await session.datagrams.send(json.dumps(report).encode())
        await session.wait_closed()

    async with (
        asyncio.timeout(T),
        serving(app) as srv,
        WebTransportClient(config=client_config) as client,
    ):
        session = await client.connect(url=url(srv, "/whoami"), headers={"x-extra": "1"})
        report = json.loads(await session.datagrams.receive())
        port = srv.local_address[1]
        assert report["authority"] == f"127.0.0.1:{port}" == session.authority
        assert "x-extra" in report["headers"]
        assert not any(name.startswith(":") for name in report["headers"])
        await session.close()


async def test_a_handler_drains_its_session_and_it_keeps_working(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    app = build_app(cert)
    states: asyncio.Queue[SessionState] = asyncio.Queue()

    @app.route("/drained")
    async def drained(session: WebTransportSession) -> None:
        session.drain()
        await states.put(session.state)
        stream = await session.accept_bidirectional_stream()
        await stream.write_all(await stream.read_all())
        await session.wait_closed()

    async with (
        asyncio.timeout(T),
        serving(app) as srv,
        WebTransportClient(config=client_config) as client,
    ):
        session = await client.connect(url=url(srv, "/drained"))
        if session.state is not SessionState.DRAINING:
            draining: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            session.once("session_draining", draining.set_result)
            await draining
        assert await states.get() is SessionState.DRAINING
        assert session.is_ready
        await echo_ok(session, b"still here")
        await session.close()


async def test_a_handler_closes_the_connection_of_its_session(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    app = build_app(cert)
    ended: asyncio.Future[tuple[int | None, str | None]] = (
        asyncio.get_running_loop().create_future()
    )

    @app.route("/hangup")
    async def hangup(session: WebTransportSession) -> None:
        with pytest.raises(ValueError):
            session.close_connection(code=-1)
        assert session.is_ready  # a refused code changes nothing
        await session.accept_bidirectional_stream()
        session.close_connection(code=H3ErrorCode.H3_EXCESSIVE_LOAD, reason="too busy")
        await session.wait_closed()
        ended.set_result((session.close_code, session.close_reason))

    async with (
        asyncio.timeout(T),
        serving(app) as srv,
        WebTransportClient(config=client_config) as client,
    ):
        session = await client.connect(url=url(srv, "/hangup"))
        stream = await session.create_bidirectional_stream()
        await stream.write(b"x")
        await session.wait_closed()
        assert session.close_code == H3ErrorCode.H3_EXCESSIVE_LOAD
        code, reason = await ended
        assert code == H3ErrorCode.H3_EXCESSIVE_LOAD
        assert reason is not None and "too busy" in reason
        assert srv.sessions == []
