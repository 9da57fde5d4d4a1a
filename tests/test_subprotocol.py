"""Subprotocol negotiation between our client and our server (wt-available-protocols)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from pywebtransport import (
    ClientConfig,
    ServerApp,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)
from pywebtransport.exceptions import ConfigurationError
from tests.certs import CertBundle
from tests.conftest import T, url

Seen = dict[str, "asyncio.Future[str | None]"]


def make_app(app: ServerApp, seen: Seen) -> ServerApp:
    @app.route("/proto")
    async def proto(session: WebTransportSession) -> None:
        future = seen.setdefault("server", asyncio.get_running_loop().create_future())
        if not future.done():
            future.set_result(session.protocol)
        await session.wait_closed()

    return app


class ChoosingApp(ServerApp):
    """An app whose own hook decides (last offered wins, or refuses with None)."""

    def __init__(self, *, config: ServerConfig, pick: Callable[[list[str]], str | None]) -> None:
        super().__init__(config=config)
        self.offers: list[list[str]] = []
        self._pick = pick

    def select_protocol(self, offered: list[str]) -> str | None:
        self.offers.append(list(offered))
        return self._pick(offered)


async def start(app: ServerApp) -> WebTransportServer:
    server = WebTransportServer(config=app.config, app=app)
    await server.listen(host="127.0.0.1", port=0)
    return server


@pytest.fixture
async def seen() -> AsyncIterator[Seen]:
    yield {}


def server_config(cert: CertBundle, **kwargs: object) -> ServerConfig:
    return ServerConfig(certfile=str(cert.certfile), keyfile=str(cert.keyfile), **kwargs)  # type: ignore[arg-type]


async def negotiate(
    server: WebTransportServer,
    cert: CertBundle,
    seen: Seen,
    *,
    protocols: list[str],
    headers: dict[str, str] | None = None,
) -> tuple[str | None, str | None, dict[str, str]]:
    """Connect, return (client's protocol, server's protocol, response headers)."""
    seen["server"] = asyncio.get_running_loop().create_future()
    config = ClientConfig(
        server_certificate_hashes=[cert.sha256], connect_timeout=T, protocols=protocols
    )
    try:
        async with WebTransportClient(config=config) as client:
            session = await client.connect(url=url(server, "/proto"), headers=headers)
            async with session:
                on_server = await asyncio.wait_for(seen["server"], T)
                return session.protocol, on_server, session.headers
    finally:
        async with asyncio.timeout(T):
            await server.close()


async def test_server_preference_wins(cert: CertBundle, seen: Seen) -> None:
    app = make_app(ServerApp(config=server_config(cert, protocols=["json", "chat"])), seen)
    server = await start(app)
    client_side, server_side, headers = await negotiate(
        server, cert, seen, protocols=["chat", "json"]
    )
    assert client_side == server_side == "json"
    assert headers["wt-protocol"] == '"json"'


async def test_no_common_protocol_still_accepts(cert: CertBundle, seen: Seen) -> None:
    app = make_app(ServerApp(config=server_config(cert, protocols=["mqtt"])), seen)
    server = await start(app)
    client_side, server_side, headers = await negotiate(
        server, cert, seen, protocols=["chat", "json"]
    )
    assert client_side is None and server_side is None
    assert "wt-protocol" not in headers


async def test_nothing_offered(cert: CertBundle, seen: Seen) -> None:
    app = make_app(ServerApp(config=server_config(cert, protocols=["json"])), seen)
    server = await start(app)
    client_side, server_side, headers = await negotiate(server, cert, seen, protocols=[])
    assert client_side is None and server_side is None
    assert "wt-protocol" not in headers


async def test_app_hook_decides(cert: CertBundle, seen: Seen) -> None:
    app = ChoosingApp(config=server_config(cert, protocols=["chat"]), pick=lambda o: o[-1])
    server = await start(make_app(app, seen))
    client_side, server_side, _ = await negotiate(
        server, cert, seen, protocols=["chat", "json", "v2.bin"]
    )
    assert client_side == server_side == "v2.bin"
    assert app.offers == [["chat", "json", "v2.bin"]]


async def test_hook_choice_outside_the_offer_is_dropped(cert: CertBundle, seen: Seen) -> None:
    app = ChoosingApp(config=server_config(cert), pick=lambda _o: "not-offered")
    server = await start(make_app(app, seen))
    client_side, server_side, _ = await negotiate(server, cert, seen, protocols=["chat"])
    assert client_side is None and server_side is None


async def test_malformed_offer_counts_as_none(cert: CertBundle, seen: Seen) -> None:
    app = make_app(ServerApp(config=server_config(cert, protocols=["chat"])), seen)
    server = await start(app)
    # An explicit header replaces the config's: space-separated is not a structured List.
    client_side, server_side, _ = await negotiate(
        server, cert, seen, protocols=["chat"], headers={"wt-available-protocols": '"chat" "x"'}
    )
    assert client_side is None and server_side is None


async def test_bare_token_offer_is_understood(cert: CertBundle, seen: Seen) -> None:
    app = make_app(ServerApp(config=server_config(cert, protocols=["chat"])), seen)
    server = await start(app)
    client_side, server_side, _ = await negotiate(
        server, cert, seen, protocols=[], headers={"wt-available-protocols": "json, chat"}
    )
    assert client_side == server_side == "chat"


@pytest.mark.parametrize("bad", [["a b"], [""], ["chat", "chat"], ["caf\u00e9"], "chat"])
def test_protocols_are_validated(bad: object) -> None:
    with pytest.raises(ConfigurationError):
        ClientConfig(protocols=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        ServerConfig(protocols=bad)  # type: ignore[arg-type]


def test_protocols_round_trip_through_dict() -> None:
    config = ClientConfig(protocols=["chat", "json"])
    assert config.to_dict()["protocols"] == ["chat", "json"]
    assert ClientConfig.from_dict(config.to_dict()).protocols == ["chat", "json"]
    assert ServerConfig(protocols=["json"]).update(shutdown_grace=1.5).protocols == ["json"]
    with pytest.raises(ConfigurationError):
        ServerConfig(shutdown_grace=-1)
