"""WebTransportServer.sessions and ServerApp.sessions(route): the sessions open right now."""

from __future__ import annotations

import asyncio

from pywebtransport import ClientConfig, WebTransportClient, WebTransportSession
from tests.certs import CertBundle
from tests.conftest import T, build_app, serving, url


async def test_server_and_route_session_lists(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    app = build_app(cert)
    entered: asyncio.Queue[WebTransportSession] = asyncio.Queue()

    @app.route("/rooms/{room}")
    async def room(session: WebTransportSession) -> None:
        await entered.put(session)
        await session.wait_closed()

    async with asyncio.timeout(4 * T), serving(app) as server:
        assert server.sessions == [] and app.sessions() == []
        async with WebTransportClient(config=client_config) as client:
            a = await client.connect(url=url(server, "/rooms/a"))
            b = await client.connect(url=url(server, "/rooms/b?x=1"))
            sink = await client.connect(url=url(server, "/sink"))
            server_side = {s.path: s for s in (await entered.get(), await entered.get())}
            assert set(server_side) == {"/rooms/a", "/rooms/b?x=1"}
            assert sorted(s.path for s in app.sessions("/rooms/{room}")) == [
                "/rooms/a",
                "/rooms/b?x=1",
            ]
            assert [s.path for s in app.sessions("/sink")] == ["/sink"]
            assert app.sessions("/nowhere") == []
            assert len(server.sessions) == len(app.sessions()) == 3
            await a.close()
            await sink.close()
            await server_side["/rooms/a"].wait_closed()  # closed sessions leave the lists
            assert [s.path for s in app.sessions("/rooms/{room}")] == ["/rooms/b?x=1"]
            await b.close()
