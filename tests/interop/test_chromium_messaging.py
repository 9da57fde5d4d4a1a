"""The message protocol between headless Chromium (``messaging.js``) and the Python package.

The page (``pages/messaging.html``) runs every step against one session of the server below and
reports what it saw; the server records what it saw, and both are asserted here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from pywebtransport import (
    ClientConfig,
    ServerApp,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)
from pywebtransport.cli import echo_app
from pywebtransport.messaging import (
    Channel,
    ChannelClosed,
    ErrorCode,
    Messenger,
    RpcError,
    RpcErrorCode,
    RpcMethods,
    RpcPeer,
)
from pywebtransport.server.certificate import generate_self_signed_certificate
from pywebtransport.web import demo_page, messaging_module
from tests.interop.chromium import load_page, run_page

pytestmark = [pytest.mark.interop]

PAGE_TIMEOUT = 60.0
SCENARIO_TIMEOUT = 90.0
WAIT = 10.0
SERVER_LIMIT = 64 * 1024
"""The server's max_message_size: the page's 100 KB message must fail on the page."""


@dataclass
class ServerView:
    """What the server side saw during the page's session."""

    loop: asyncio.AbstractEventLoop
    started: dict[str, asyncio.Event] = field(default_factory=dict)
    cancelled: dict[str, asyncio.Future[bool]] = field(default_factory=dict)
    page_add: asyncio.Future[Any] | None = None
    echo_received: list[Any] = field(default_factory=list)
    news_reply: asyncio.Future[Any] | None = None
    news_end: asyncio.Future[int | None] | None = None
    secret_refusal: asyncio.Future[tuple[str, int | None]] | None = None
    datagrams: list[Any] = field(default_factory=list)
    refused_unknown: int = 0
    rpc_stats: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.page_add = self.loop.create_future()
        self.news_reply = self.loop.create_future()
        self.news_end = self.loop.create_future()
        self.secret_refusal = self.loop.create_future()
        for tag in ("timeout", "abort"):
            self.started[tag] = asyncio.Event()
            self.cancelled[tag] = self.loop.create_future()


def build_methods(view: ServerView) -> RpcMethods:
    methods = RpcMethods()

    @methods.method
    def add(a: int, b: int) -> int:
        return a + b

    @methods.method
    def echo(value: Any) -> Any:
        return value

    @methods.method
    def fail() -> None:
        raise RpcError(4001, "custom failure", {"hint": "data"})

    @methods.method
    def crash() -> None:
        raise ValueError("a secret detail")

    @methods.method
    async def sleep(seconds: float, tag: str) -> str:
        view.started[tag].set()
        await RpcPeer.current().notify("page.started", {"tag": tag})
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            if not view.cancelled[tag].done():
                view.cancelled[tag].set_result(True)
            raise
        return "slept"

    @methods.method
    async def was_cancelled(tag: str) -> bool:
        try:
            async with asyncio.timeout(WAIT):
                return await asyncio.shield(view.cancelled[tag])
        except TimeoutError:
            return False

    @methods.method
    async def page_add_result() -> Any:
        assert view.page_add is not None
        async with asyncio.timeout(WAIT):
            return await asyncio.shield(view.page_add)

    return methods


async def echo_route(view: ServerView, channel: Channel) -> None:
    async for message in channel:
        view.echo_received.append(message)
        await channel.send(message)


async def rpc_route(view: ServerView, methods: RpcMethods, channel: Channel) -> None:
    assert view.page_add is not None
    async with RpcPeer(channel, methods=methods) as peer:
        try:
            result = await peer.call("page.add", [20, 22], timeout=WAIT)
        except Exception as exc:
            view.page_add.set_result({"error": repr(exc)})
        else:
            view.page_add.set_result(result)
        try:
            await peer.wait_closed()
        finally:
            view.rpc_stats = dict(peer.stats)


async def open_news(view: ServerView, messenger: Messenger) -> None:
    assert view.news_reply is not None and view.news_end is not None
    channel = await messenger.open_channel("news", timeout=PAGE_TIMEOUT)
    for index in range(3):
        await channel.send({"headline": index, "text": f"story {index}"})
    view.news_reply.set_result(await channel.receive(timeout=PAGE_TIMEOUT))
    try:
        await channel.receive(timeout=WAIT)
    except ChannelClosed as exc:
        view.news_end.set_result(exc.error_code)
    await channel.close()


async def open_secret(view: ServerView, messenger: Messenger) -> None:
    """A channel the page does not accept (its Messenger lists only "news")."""
    assert view.secret_refusal is not None
    try:
        channel = await messenger.open_channel("secret", timeout=PAGE_TIMEOUT)
    except ChannelClosed as exc:
        view.secret_refusal.set_result((type(exc).__name__, exc.error_code))
    else:
        view.secret_refusal.set_result(("accepted", None))
        await channel.close()


async def open_plain_streams(session: WebTransportSession) -> None:
    bidi = await session.create_bidirectional_stream()
    await bidi.write(b"plain bidirectional", end_stream=True)
    uni = await session.create_unidirectional_stream()
    await uni.write(b"plain unidirectional", end_stream=True)


async def echo_datagrams(view: ServerView, messenger: Messenger) -> None:
    async for message in messenger.datagrams:
        view.datagrams.append(message)
        if isinstance(message, bytes):
            await messenger.datagrams.send(b"echo:" + message, codec="bytes")
        else:
            await messenger.datagrams.send({"echo": message})


def make_app(config: ServerConfig, view: ServerView) -> ServerApp:
    app = ServerApp(config=config)
    methods = build_methods(view)

    @app.route("/messaging")
    async def handler(session: WebTransportSession) -> None:
        messenger = Messenger(session, max_message_size=SERVER_LIMIT)
        messenger.route("echo")(lambda channel: echo_route(view, channel))
        messenger.route("rpc")(lambda channel: rpc_route(view, methods, channel))
        async with messenger:
            tasks = [
                asyncio.create_task(open_news(view, messenger)),
                asyncio.create_task(open_secret(view, messenger)),
                asyncio.create_task(open_plain_streams(session)),
                asyncio.create_task(echo_datagrams(view, messenger)),
            ]
            try:
                await messenger.serve()
            finally:
                view.refused_unknown = messenger.stats["refused_unknown"]
                for task in tasks:
                    task.cancel()
                for outcome in await asyncio.gather(*tasks, return_exceptions=True):
                    if isinstance(outcome, Exception):
                        view.errors.append(repr(outcome))
                view.finished.set()

    return app


@pytest_asyncio.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[WebTransportServer, ServerView, str]]:
    bundle = generate_self_signed_certificate()
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    bundle.write(certfile=str(certfile), keyfile=str(keyfile))
    config = ServerConfig(certfile=str(certfile), keyfile=str(keyfile), port=0)
    view = ServerView(loop=asyncio.get_running_loop())
    server = WebTransportServer(config=config, app=make_app(config, view))
    await server.listen(host="127.0.0.1", port=0)
    try:
        yield server, view, bundle.sha256.hex()
    finally:
        with contextlib.suppress(Exception):
            await server.close(grace=0)


async def test_chromium_speaks_the_message_protocol(
    served: tuple[WebTransportServer, ServerView, str], tmp_path: Path
) -> None:
    server, view, cert_hash = served
    port = server.local_address[1]
    config = {
        "url": f"https://127.0.0.1:{port}/messaging",
        "hash": cert_hash,
        "largeSize": 100_000,
    }
    async with asyncio.timeout(SCENARIO_TIMEOUT):
        report = await run_page(
            load_page("messaging.html"),
            config,
            timeout=PAGE_TIMEOUT,
            log_path=tmp_path / "chromium-messaging.log",
            gets={"/pywebtransport/messaging.js": (messaging_module(), "text/javascript")},
        )
    assert report["ok"], json.dumps(report, indent=1)
    result = report["result"]

    # Channel echo: every JSON value came back equal; the server's limit was announced and a
    # larger message failed on the page without ending the channel.
    echo = result["echo"]
    assert echo["received"] == echo["sent"]
    assert echo["peerMaxMessageSize"] == SERVER_LIMIT
    assert echo["tooLarge"]["isTooLarge"]
    assert echo["tooLarge"]["code"] == ErrorCode.MESSAGE_TOO_LARGE
    assert echo["after"] == {"after": "too large"}
    assert echo["stats"]["messagesSent"] == 6 and echo["stats"]["messagesReceived"] == 6
    assert view.echo_received == [*echo["sent"], {"after": "too large"}]

    # The page's calls to Python methods.
    calls = result["calls"]
    assert calls["add"] == 3 and calls["addNamed"] == 42
    assert calls["echo"] == {"deep": [1, {"two": 2}]}
    assert calls["notFound"]["code"] == RpcErrorCode.METHOD_NOT_FOUND
    assert calls["custom"] == {
        "name": "RpcError",
        "message": "custom failure",
        "code": 4001,
        "data": {"hint": "data"},
        "isRpcError": True,
    }
    assert calls["internal"]["code"] == RpcErrorCode.INTERNAL_ERROR
    assert calls["internal"]["message"] == "Internal error"  # the detail stays on the server
    assert calls["invalidParams"]["code"] == RpcErrorCode.INVALID_PARAMS

    # A call that timed out and one aborted by the page: rpc.cancel cancelled the handlers.
    assert result["timeout"]["isTimeout"] and result["timeout"]["name"] == "RpcTimeoutError"
    assert result["timeout"]["serverSawCancel"] is True
    assert result["abort"]["message"] == "the page gave up"
    assert result["abort"]["serverSawCancel"] is True
    for tag in ("timeout", "abort"):
        assert view.started[tag].is_set()
        assert view.cancelled[tag].done() and view.cancelled[tag].result() is True

    # The server's call to the page's method.
    assert view.page_add is not None and view.page_add.result() == 42
    assert result["pageAdd"]["seenByServer"] == 42
    assert result["pageAdd"]["seenByPage"] == [{"params": [20, 22], "idType": "number"}]

    # A channel the server opened, accepted by the page, closed by the page after its answer.
    assert result["news"] == {
        "name": "news",
        "codec": "json",
        "messages": [{"headline": i, "text": f"story {i}"} for i in range(3)],
    }
    assert view.news_reply is not None and view.news_reply.result() == {"got": 3}
    assert view.news_end is not None and view.news_end.result() in (None, ErrorCode.CLOSED)

    # The page refused the server's "secret" channel with CHANNEL_UNKNOWN (a code a page can send).
    assert view.secret_refusal is not None and view.secret_refusal.done()
    assert view.secret_refusal.result() == ("ChannelRefused", ErrorCode.CHANNEL_UNKNOWN)

    # Plain streams next to the channels, bytes intact.
    assert result["plain"] == [
        {"bidirectional": True, "text": "plain bidirectional"},
        {"bidirectional": False, "text": "plain unidirectional"},
    ]

    # Datagram messages both ways, in both codecs; a too large one failed on the page.
    datagrams = result["datagrams"]
    assert datagrams["json"] == {"echo": {"seq": 7, "text": "dgram"}}
    assert datagrams["bytes"] == "echo:raw bytes"
    assert datagrams["tooLarge"]["isTooLarge"]
    assert {"seq": 7, "text": "dgram"} in view.datagrams and b"raw bytes" in view.datagrams
    assert datagrams["stats"]["received"] >= 2 and datagrams["stats"]["droppedInvalid"] == 0

    # An unknown channel name was refused with CHANNEL_UNKNOWN, and the page saw that code.
    refused = result["refused"]
    assert refused["isRefusal"] and refused["code"] == ErrorCode.CHANNEL_UNKNOWN, refused
    assert refused["name"] == "ChannelRefusedError"

    # Counters on both sides.
    page_stats = result["rpcStats"]
    assert page_stats["callsReceived"] == 3  # page.add and two page.started notifications
    assert page_stats["unknownResponses"] == 0
    assert result["closedAfterClose"]["name"] == "ChannelClosedError"

    async with asyncio.timeout(WAIT):
        await view.finished.wait()  # the session's handler finishes after the page closed
    assert view.refused_unknown == 1
    assert view.rpc_stats["cancelled_by_peer"] == 2
    assert view.rpc_stats["calls_sent"] == 1 and view.rpc_stats["unknown_responses"] == 0
    assert view.errors == []


# ----------------------------------------------------------------------------- the demo's chat


async def test_demo_page_joins_the_chat_room(tmp_path: Path) -> None:
    """The ``serve`` application's chat room with the demo page and a Python member in it."""
    bundle = generate_self_signed_certificate()
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    bundle.write(certfile=str(certfile), keyfile=str(keyfile))
    config = ServerConfig(certfile=str(certfile), keyfile=str(keyfile), port=0)
    server = WebTransportServer(config=config, app=echo_app(config))
    await server.listen(host="127.0.0.1", port=0)
    base = f"https://127.0.0.1:{server.local_address[1]}"
    client_config = ClientConfig(server_certificate_hashes=[bundle.sha256])
    asked: list[str] = []
    methods = RpcMethods()

    @methods.method
    def whoami() -> dict[str, str]:
        asked.append("whoami")
        return {"name": "python-member"}

    try:
        async with (
            asyncio.timeout(SCENARIO_TIMEOUT),
            WebTransportClient(config=client_config) as client,
        ):
            session = await client.connect(url=base + "/chat")
            async with Messenger(session) as messenger:
                chat = await messenger.open_channel("chat", timeout=WAIT)
                rpc = await messenger.open_channel("rpc", timeout=WAIT)
                async with RpcPeer(rpc, methods=methods) as peer:
                    joined = await chat.receive(timeout=WAIT)
                    page_config = {"url": base + "/echo", "certificateHash": bundle.sha256.hex()}
                    report = await run_page(
                        demo_page(),
                        {**page_config, "chatPath": "/chat", "count": 2, "size": 500},
                        timeout=PAGE_TIMEOUT,
                        log_path=tmp_path / "chromium-demo-chat.log",
                        gets={
                            "/pywebtransport/messaging.js": (messaging_module(), "text/javascript")
                        },
                    )
                    seen = [await chat.receive(timeout=WAIT) for _ in range(2)]
                    members = await peer.call("members", timeout=WAIT)
                    assert await peer.call("add", [0.5, 2], timeout=WAIT) == 2.5
    finally:
        await server.close(grace=0)

    # The echo checks are unchanged; the chat check is reported beside them.
    assert report["ok"] and report["errors"] == [], json.dumps(report, indent=1)
    assert report["chat"]["ok"], json.dumps(report["chat"], indent=1)
    name = report["chat"]["name"]
    assert name.startswith("page-")
    assert report["chat"]["serverTime"].endswith("+00:00")

    # The server asked each member who it is, and every member saw the page join and talk.
    assert asked == ["whoami"]
    assert joined["kind"] == "system" and joined["text"] == "python-member joined"
    assert [message["kind"] for message in seen] == ["system", "message"]
    assert seen[0]["text"] == f"{name} joined"
    assert seen[1]["from"] == name and seen[1]["text"] == f"hello from {name}"
    assert members[0] == "python-member"
