"""A hostile peer against a Messenger, on a real loopback session.

The hostile side writes raw bytes on plain bidirectional streams (or raw datagrams, or hand-made
JSON-RPC objects); the Messenger's side must react on that channel or call only, with the code
of docs/messaging-protocol.md, count it, keep its memory bounded, and keep the session and its
other channels working: every test ends with an echo on a channel opened before the bad input.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from pywebtransport import (
    ClientConfig,
    ServerApp,
    ServerConfig,
    WebTransportClient,
    WebTransportSession,
)
from pywebtransport.exceptions import StreamError
from pywebtransport.messaging import (
    Channel,
    ChannelClosed,
    ChannelProtocolError,
    ChannelRefused,
    DecodeError,
    ErrorCode,
    Messenger,
    RpcMethods,
    RpcPeer,
)
from pywebtransport.messaging.framing import MAX_HELLO_SIZE, PREAMBLE, encode_frame
from pywebtransport.session import IncomingStream
from pywebtransport.stream import WebTransportStream
from tests.certs import CertBundle
from tests.conftest import CREDIT_FOLLOWS_READING, T, serving, url

MB = 1 << 20


@dataclass
class Peers:
    """Both ends of one loopback session."""

    client: WebTransportSession  # the hostile side
    server: WebTransportSession  # the side under test


@asynccontextmanager
async def connect(
    cert: CertBundle, client_config: ClientConfig, **server_options: Any
) -> AsyncIterator[Peers]:
    accepted: asyncio.Future[WebTransportSession] = asyncio.get_running_loop().create_future()

    async def handler(session: WebTransportSession) -> None:
        accepted.set_result(session)
        await session.wait_closed()

    config = ServerConfig(certfile=str(cert.certfile), keyfile=str(cert.keyfile), **server_options)
    app = ServerApp(config=config)
    app.route("/m")(handler)
    async with serving(app) as server, WebTransportClient(config=client_config) as client:
        async with asyncio.timeout(2 * T):
            session = await client.connect(url=url(server, "/m"))
            server_session = await accepted
        yield Peers(session, server_session)


@pytest.fixture
async def peers(cert: CertBundle, client_config: ClientConfig) -> AsyncIterator[Peers]:
    async with connect(cert, client_config) as both:
        yield both


@asynccontextmanager
async def victim(session: WebTransportSession, **options: Any) -> AsyncIterator[Messenger]:
    """The Messenger under test: an ``echo`` route, and ``raw`` channels queued for the test."""
    messenger = Messenger(session, channels=["raw"], **options)

    @messenger.route("echo")
    async def echo(channel: Channel) -> None:
        async for message in channel:
            await channel.send(message)

    async with messenger:
        yield messenger


async def open_echo(session: WebTransportSession) -> Channel:
    """A well-behaved channel, opened before the bad input."""
    channel = await Messenger(session).open_channel("echo", timeout=T)
    await channel.send({"before": True})
    assert await channel.receive(timeout=T) == {"before": True}
    return channel


async def still_working(peers: Peers, echo: Channel, *, codec: str = "msgpack") -> None:
    """The channel opened before still echoes, a new one opens, both sessions are up."""
    await echo.send(["after", 1])
    assert await echo.receive(timeout=T) == ["after", 1]
    fresh = await Messenger(peers.client).open_channel("echo", codec=codec, timeout=T)
    await fresh.send({"fresh": [0]})
    assert await fresh.receive(timeout=T) == {"fresh": [0]}
    await fresh.close()
    assert not peers.client.is_closed and not peers.server.is_closed


class Raw:
    """A channel spoken by hand: raw bytes on a plain bidirectional stream."""

    def __init__(self, stream: WebTransportStream) -> None:
        self.stream = stream

    @classmethod
    async def open(cls, session: WebTransportSession, hello: dict[str, Any] | bytes) -> Raw:
        """Open a stream and write the preamble and a hello frame (or ``hello`` raw after it)."""
        stream = await session.create_bidirectional_stream(timeout=T)
        body = hello if isinstance(hello, bytes) else encode_frame(json.dumps(hello).encode())
        await stream.write(PREAMBLE + body)
        return cls(stream)

    async def frame(self) -> bytes:
        (length,) = struct.unpack(">I", await self.stream.readexactly(4))
        return await self.stream.readexactly(length)

    async def accepted(self) -> dict[str, Any]:
        value = json.loads(await self.frame())
        assert isinstance(value, dict)
        return value

    async def send(self, payload: bytes, *, end: bool = False) -> None:
        await self.stream.write(encode_frame(payload), end_stream=end)


async def plain_streams(messenger: Messenger, count: int) -> list[IncomingStream]:
    """The next ``count`` plain streams the messenger hands over."""
    streams: list[IncomingStream] = []
    async for stream in messenger.incoming_streams():
        streams.append(stream)
        if len(streams) == count:
            break
    return streams


async def reset_code(stream: WebTransportStream) -> int | None:
    """Read until the peer's reset; its code (whatever was written before is skipped)."""
    with pytest.raises(StreamError) as caught:
        while await stream.read(65536):
            pass
    return caught.value.error_code


async def stop_code(stream: WebTransportStream) -> int | None:
    """The code of the peer's STOP_SENDING, as the next write sees it."""
    await stream.wait_closed()  # our sending side ends when the stop arrives
    with pytest.raises(StreamError) as caught:
        await stream.write(b"more")
    return caught.value.error_code


async def refusal(stream: WebTransportStream) -> tuple[int | None, int | None]:
    return await reset_code(stream), await stop_code(stream)


# ------------------------------------------------------------------------------ framing


async def test_frame_over_the_limit_is_refused_before_its_payload(peers: Peers) -> None:
    """A 100 MB frame announced to a 1 KiB receiver: it fails at once and stops the writer."""
    async with asyncio.timeout(4 * T), victim(peers.server, max_message_size=1024) as messenger:
        echo = await open_echo(peers.client)
        raw = await Raw.open(peers.client, {"channel": "raw", "codec": "bytes"})
        channel = await messenger.accept_channel("raw", timeout=T)
        assert await raw.accepted() == {"codec": "bytes", "max_message_size": 1024}
        await raw.send(b"L" * 1024)  # exactly at the limit
        assert await channel.receive(timeout=T) == b"L" * 1024

        received_before = peers.server.stats["bytes_received"]
        planned = 8 * MB

        async def flood() -> None:
            await raw.stream.write(struct.pack(">I", 100_000_000))
            chunk = bytes(64 * 1024)
            for _ in range(planned // len(chunk)):
                await raw.stream.write(chunk)

        writer = asyncio.create_task(flood())
        with pytest.raises(ChannelProtocolError) as caught:
            await channel.receive(timeout=T)
        assert caught.value.error_code == ErrorCode.MESSAGE_TOO_LARGE
        with pytest.raises(StreamError) as stopped:
            await writer
        assert stopped.value.error_code == ErrorCode.MESSAGE_TOO_LARGE
        assert await reset_code(raw.stream) == ErrorCode.MESSAGE_TOO_LARGE
        # Bounded: the writer was stopped long before its 8 MB, and the receiver never held more
        # than the flow-control window (1 MiB by default) of the payload.
        assert raw.stream.bytes_written < 3 * MB
        assert peers.server.stats["bytes_received"] - received_before < 3 * MB

        assert channel.is_closed
        assert channel.stats["messages_received"] == 1
        assert channel.stats["bytes_received"] == 1024
        assert channel.stats["protocol_errors"] == 1
        with pytest.raises(ChannelProtocolError):
            await channel.receive(timeout=T)
        with pytest.raises(ChannelClosed):
            await channel.send(b"x")
        await still_working(peers, echo)


@pytest.mark.parametrize("length", [1025, 0xFFFFFFFF])
async def test_the_length_alone_is_enough_to_refuse(peers: Peers, length: int) -> None:
    async with asyncio.timeout(4 * T), victim(peers.server, max_message_size=1024) as messenger:
        echo = await open_echo(peers.client)
        raw = await Raw.open(peers.client, {"channel": "raw", "codec": "bytes"})
        channel = await messenger.accept_channel("raw", timeout=T)
        await raw.accepted()
        await raw.stream.write(struct.pack(">I", length))  # no payload byte follows
        with pytest.raises(ChannelProtocolError) as caught:
            await channel.receive(timeout=T)
        assert caught.value.error_code == ErrorCode.MESSAGE_TOO_LARGE
        assert await refusal(raw.stream) == (ErrorCode.MESSAGE_TOO_LARGE,) * 2
        await still_working(peers, echo)


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(b"\x00\x00", id="in-the-length"),
        pytest.param(struct.pack(">I", 10) + b"abc", id="in-the-payload"),
    ],
)
async def test_truncated_frame_at_fin(peers: Peers, tail: bytes) -> None:
    async with asyncio.timeout(4 * T), victim(peers.server) as messenger:
        echo = await open_echo(peers.client)
        raw = await Raw.open(peers.client, {"channel": "raw", "codec": "json"})
        channel = await messenger.accept_channel("raw", timeout=T)
        await raw.accepted()
        await raw.stream.write(encode_frame(b'"whole"') + tail, end_stream=True)
        assert await channel.receive(timeout=T) == "whole"
        with pytest.raises(ChannelProtocolError) as caught:
            await channel.receive(timeout=T)
        assert caught.value.error_code == ErrorCode.TRUNCATED
        assert await reset_code(raw.stream) == ErrorCode.TRUNCATED
        assert channel.is_closed
        assert channel.stats["messages_received"] == 1
        assert channel.stats["decode_errors"] == 0
        assert channel.stats["protocol_errors"] == 1
        await still_working(peers, echo)


@pytest.mark.parametrize(
    ("codec", "bad"),
    [
        pytest.param("json", b'{"unterminated": ', id="json-syntax"),
        pytest.param("json", b"\xff\xfe", id="json-not-utf8"),
        pytest.param("json", b"NaN", id="json-nan"),
        pytest.param("json", b"[" * 100_000, id="json-deeply-nested"),
        pytest.param("msgpack", b"\xc1", id="msgpack-bad-byte"),
        pytest.param("msgpack", b"\x92\x01", id="msgpack-truncated"),
        pytest.param("msgpack", b"\x91" * 100_000, id="msgpack-deeply-nested"),
    ],
)
async def test_undecodable_payload_fails_that_message_only(
    peers: Peers, codec: str, bad: bytes
) -> None:
    async with asyncio.timeout(4 * T), victim(peers.server) as messenger:
        echo = await open_echo(peers.client)
        raw = await Raw.open(peers.client, {"channel": "raw", "codec": codec})
        channel = await messenger.accept_channel("raw", timeout=T)
        assert channel.codec == codec
        await raw.accepted()
        encode = json.dumps if codec == "json" else None
        first, second = (b'"first"', b'{"n":2}') if encode else (b"\xa5first", b"\x81\xa1n\x02")
        await raw.stream.write(encode_frame(first) + encode_frame(bad) + encode_frame(second))
        assert await channel.receive(timeout=T) == "first"
        with pytest.raises(DecodeError):
            await channel.receive(timeout=T)
        assert await channel.receive(timeout=T) == {"n": 2}
        assert channel.stats["decode_errors"] == 1
        assert channel.stats["messages_received"] == 3
        assert not channel.is_closed
        await channel.send("still open")  # and both ways
        reply = await raw.frame()
        assert reply == (b'"still open"' if encode else b"\xaastill open")
        await still_working(peers, echo)


# ------------------------------------------------------------------------------ opening


async def test_unknown_codec_is_refused(peers: Peers) -> None:
    async with asyncio.timeout(4 * T), victim(peers.server, codecs=["json"]) as messenger:
        echo = await open_echo(peers.client)
        raw = await Raw.open(peers.client, {"channel": "raw", "codec": "yaml"})
        assert await refusal(raw.stream) == (ErrorCode.CODEC_UNSUPPORTED,) * 2
        # A codec known to both sides but not accepted here is refused the same way.
        with pytest.raises(ChannelRefused) as caught:
            await Messenger(peers.client).open_channel("raw", codec="msgpack", timeout=T)
        assert caught.value.error_code == ErrorCode.CODEC_UNSUPPORTED
        stats = messenger.stats
        assert (stats["refused_codec"], stats["channels_refused"]) == (2, 2)
        assert stats["bad_hellos"] == 0
        await still_working(peers, echo, codec="json")


async def test_unknown_channel_is_refused_when_routes_are_registered(peers: Peers) -> None:
    async with asyncio.timeout(4 * T), victim(peers.server) as messenger:
        echo = await open_echo(peers.client)
        raw = await Raw.open(peers.client, {"channel": "nobody", "codec": "json"})
        await raw.send(b'"sent before the answer"')
        assert await refusal(raw.stream) == (ErrorCode.CHANNEL_UNKNOWN,) * 2
        with pytest.raises(ChannelRefused) as caught:
            await Messenger(peers.client).open_channel("Echo", timeout=T)  # names are exact
        assert caught.value.error_code == ErrorCode.CHANNEL_UNKNOWN
        stats = messenger.stats
        assert (stats["refused_unknown"], stats["channels_refused"]) == (2, 2)
        await still_working(peers, echo)


def hello(value: Any) -> bytes:
    return encode_frame(json.dumps(value).encode())


@pytest.mark.parametrize(
    "after_preamble",
    [
        pytest.param(encode_frame(b"not json"), id="not-json"),
        pytest.param(encode_frame(b"\xff{}"), id="not-utf8"),
        pytest.param(hello(["raw", "json"]), id="not-an-object"),
        pytest.param(hello({"codec": "json"}), id="channel-missing"),
        pytest.param(hello({"channel": "", "codec": "json"}), id="channel-empty"),
        pytest.param(hello({"channel": "r" * 257, "codec": "json"}), id="channel-too-long"),
        pytest.param(hello({"channel": "raw"}), id="codec-missing"),
        pytest.param(
            hello({"channel": "raw", "codec": "json", "max_message_size": True}), id="size-bool"
        ),
        pytest.param(
            hello({"channel": "raw", "codec": "json", "max_message_size": -1}), id="size-negative"
        ),
        pytest.param(struct.pack(">I", MAX_HELLO_SIZE + 1), id="too-long-announced"),
    ],
)
async def test_malformed_hello_is_refused(peers: Peers, after_preamble: bytes) -> None:
    async with asyncio.timeout(4 * T), victim(peers.server) as messenger:
        echo = await open_echo(peers.client)
        raw = await Raw.open(peers.client, after_preamble)
        assert await refusal(raw.stream) == (ErrorCode.BAD_HELLO,) * 2
        stats = messenger.stats
        assert (stats["bad_hellos"], stats["channels_refused"]) == (1, 1)
        assert stats["channels_accepted"] == 1  # the echo channel only
        await still_working(peers, echo)


async def test_hello_cut_short_by_fin_is_refused(peers: Peers) -> None:
    async with asyncio.timeout(4 * T), victim(peers.server) as messenger:
        echo = await open_echo(peers.client)
        raw = await Raw.open(peers.client, struct.pack(">I", 40) + b'{"channel":')
        await raw.stream.write(b"", end_stream=True)
        assert await reset_code(raw.stream) == ErrorCode.BAD_HELLO
        assert messenger.stats["bad_hellos"] == 1
        await still_working(peers, echo)


async def test_silent_streams_after_the_hello_timeout(peers: Peers) -> None:
    """A preamble without its hello is refused; a stream that stalls before 4 bytes is plain."""
    async with asyncio.timeout(4 * T), victim(peers.server, hello_timeout=0.3) as messenger:
        echo = await open_echo(peers.client)
        raw = await Raw.open(peers.client, struct.pack(">I", 40))  # the hello never comes
        quiet = await peers.client.create_bidirectional_stream(timeout=T)
        await quiet.write(b"PW")  # then waits for the other side to speak first
        assert await refusal(raw.stream) == (ErrorCode.BAD_HELLO,) * 2
        (plain,) = await plain_streams(messenger, 1)
        assert isinstance(plain, WebTransportStream)
        assert plain.stream_id == quiet.stream_id
        assert await plain.readexactly(2) == b"PW"  # bytes intact after the peek
        await plain.write(b"you first", end_stream=True)
        assert await quiet.read_all() == b"you first"
        stats = messenger.stats
        assert (stats["bad_hellos"], stats["plain_streams"], stats["channels_refused"]) == (1, 1, 1)
        await still_working(peers, echo)


async def test_more_pending_channels_than_max_pending_are_refused(peers: Peers) -> None:
    async with asyncio.timeout(4 * T), victim(peers.server, max_pending=1) as messenger:
        echo = await open_echo(peers.client)
        raws = [await Raw.open(peers.client, {"channel": "raw", "codec": "json"}) for _ in range(3)]

        async def answer(raw: Raw) -> tuple[str, Any]:
            try:
                return "accepted", await raw.accepted()
            except StreamError as exc:
                return "refused", (exc.error_code, await stop_code(raw.stream))

        outcomes = [asyncio.create_task(answer(raw)) for raw in raws]
        done: set[asyncio.Task[tuple[str, Any]]] = set()
        while len(done) < 2:  # two refusals; the third waits in the queue
            finished, _ = await asyncio.wait(
                set(outcomes) - done, return_when=asyncio.FIRST_COMPLETED
            )
            done |= finished
        assert [task.result() for task in done] == [
            ("refused", (ErrorCode.CHANNEL_REFUSED, ErrorCode.CHANNEL_REFUSED))
        ] * 2
        stats = messenger.stats
        assert (stats["refused_busy"], stats["channels_refused"]) == (2, 2)

        channel = await messenger.accept_channel("raw", timeout=T)
        (waiting,) = set(outcomes) - done
        assert await waiting == ("accepted", {"codec": "json", "max_message_size": MB})
        (queued,) = [raw for raw, task in zip(raws, outcomes, strict=True) if task is waiting]
        assert channel.stream_id == queued.stream.stream_id
        await queued.send(b'"queued"')
        assert await channel.receive(timeout=T) == "queued"
        await still_working(peers, echo)


async def test_plain_streams_are_handed_over_intact(peers: Peers) -> None:
    async with asyncio.timeout(4 * T), victim(peers.server) as messenger:
        echo = await open_echo(peers.client)
        sent = {
            "text": b"GET / HTTP/1.1\r\n\r\n",
            "preamble-prefix": b"PW",
            "other-version": b"PWM\x02" + encode_frame(b'{"channel":"raw","codec":"json"}'),
            "binary": bytes(range(256)) * 40,
        }
        streams: dict[int, str] = {}
        for name, data in sent.items():
            stream = await peers.client.create_bidirectional_stream(timeout=T)
            await stream.write(data, end_stream=True)
            streams[stream.stream_id] = name
        uni = await peers.client.create_unidirectional_stream(timeout=T)
        await uni.write(b"one way", end_stream=True)
        streams[uni.stream_id] = "uni"
        sent["uni"] = b"one way"
        # A real channel between the plain streams is still a channel.
        raw = await Raw.open(peers.client, {"channel": "raw", "codec": "json"})
        talker = await peers.client.create_bidirectional_stream(timeout=T)
        await talker.write(b"hi there")  # no FIN: answered on the same stream
        streams[talker.stream_id] = "talker"

        received: dict[str, bytes] = {}
        for plain in await plain_streams(messenger, len(streams)):
            name = streams[plain.stream_id]
            if name == "talker":
                assert isinstance(plain, WebTransportStream)
                received[name] = await plain.readexactly(8)
                await plain.write(b"hello back", end_stream=True)
            else:
                received[name] = await plain.read_all()
        assert received == {**sent, "talker": b"hi there"}
        assert await talker.read_all() == b"hello back"

        channel = await messenger.accept_channel("raw", timeout=T)
        assert channel.stream_id == raw.stream.stream_id
        stats = messenger.stats
        assert stats["plain_streams"] == 6
        assert (stats["bad_hellos"], stats["channels_refused"]) == (0, 0)
        await still_working(peers, echo)


# ------------------------------------------------------------------------------ RPC


@dataclass
class RpcVictim:
    messenger: Messenger
    peer: RpcPeer


@asynccontextmanager
async def rpc_victim(
    session: WebTransportSession, methods: RpcMethods, **options: Any
) -> AsyncIterator[Callable[[], asyncio.Future[RpcPeer]]]:
    """A Messenger with an ``echo`` route and an ``rpc`` route serving ``methods``."""
    peer_ready: asyncio.Future[RpcPeer] = asyncio.get_running_loop().create_future()
    async with victim(session) as messenger:

        @messenger.route("rpc")
        async def rpc(channel: Channel) -> None:
            async with RpcPeer(channel, methods=methods, **options) as peer:
                peer_ready.set_result(peer)
                await peer.wait_closed()

        yield lambda: peer_ready


def basic_methods() -> RpcMethods:
    methods = RpcMethods()

    @methods.method
    async def add(a: int, b: int) -> int:
        return a + b

    @methods.method
    def fail() -> None:
        raise ValueError("secret detail")

    return methods


async def ask(channel: Channel, message: Any) -> Any:
    await channel.send(message)
    return await channel.receive(timeout=T)


def error_of(response: Any) -> tuple[Any, int]:
    """The id and the error code of an error response."""
    assert isinstance(response, dict)
    assert response["jsonrpc"] == "2.0"
    assert set(response) == {"jsonrpc", "id", "error"}
    assert isinstance(response["error"]["message"], str)
    return response["id"], response["error"]["code"]


@asynccontextmanager
async def rpc_session(
    peers: Peers, methods: RpcMethods, **options: Any
) -> AsyncIterator[tuple[Channel, RpcPeer, Channel]]:
    """The hostile side's hand-driven rpc channel, the victim's RpcPeer, an echo channel."""
    async with rpc_victim(peers.server, methods, **options) as peer_ready:
        echo = await open_echo(peers.client)
        rpc = await Messenger(peers.client).open_channel("rpc", timeout=T)
        peer = await peer_ready()
        yield rpc, peer, echo


async def test_rpc_parse_error(peers: Peers) -> None:
    async with asyncio.timeout(4 * T), rpc_session(peers, basic_methods()) as (rpc, peer, echo):
        for bad in (b'{"jsonrpc": "2.0", "id": 1, "method"', b"\xff", b"[" * 100_000):
            await rpc.send_encoded(bad)
            response = await rpc.receive(timeout=T)
            assert error_of(response) == (None, -32700)
            assert response["error"]["message"].startswith("Parse error")
        assert peer.stats["invalid_received"] == 3
        assert peer.channel.stats["decode_errors"] == 3
        assert await ask(rpc, {"jsonrpc": "2.0", "id": 1, "method": "add", "params": [1, 2]}) == {
            "jsonrpc": "2.0",
            "id": 1,
            "result": 3,
        }
        await still_working(peers, echo)


INVALID_REQUESTS = [
    (42, None),
    ("a string", None),
    (None, None),
    ({"id": 1, "method": "add", "params": [1, 2]}, 1),  # no "jsonrpc"
    ({"jsonrpc": "1.0", "id": 2, "method": "add", "params": [1, 2]}, 2),
    ({"jsonrpc": 2.0, "id": 3, "method": "add", "params": [1, 2]}, 3),
    ({"jsonrpc": "2.0", "id": 4, "method": 5}, 4),
    ({"jsonrpc": "2.0", "id": 5, "method": None}, 5),
    ({"jsonrpc": "2.0", "id": 6, "method": "add", "params": "1, 2"}, 6),
    ({"jsonrpc": "2.0", "id": 7, "method": "add", "params": 12}, 7),
    ({"jsonrpc": "2.0", "id": [8], "method": "add", "params": [1, 2]}, None),
    ({"jsonrpc": "2.0", "id": 9.5, "method": "add", "params": [1, 2]}, None),
    ({"jsonrpc": "2.0", "id": True, "method": "add", "params": [1, 2]}, None),
    ({"jsonrpc": "2.0", "id": 10}, 10),  # neither a request nor a response
    ({}, None),
]


async def test_rpc_invalid_requests(peers: Peers) -> None:
    async with asyncio.timeout(4 * T), rpc_session(peers, basic_methods()) as (rpc, peer, echo):
        answers = [error_of(await ask(rpc, message)) for message, _ in INVALID_REQUESTS]
        assert answers == [(call_id, -32600) for _, call_id in INVALID_REQUESTS]
        assert peer.stats["invalid_received"] == len(INVALID_REQUESTS)
        assert peer.stats["running_handlers"] == 0
        await still_working(peers, echo)


async def test_rpc_errors_per_call(peers: Peers) -> None:
    cases: list[tuple[dict[str, Any], int]] = [
        ({"method": "nope", "params": [1]}, -32601),
        ({"method": "rpc.other"}, -32601),
        ({"method": "add", "params": [1]}, -32602),
        ({"method": "add", "params": [1, 2, 3]}, -32602),
        ({"method": "add", "params": ["1", 2]}, -32602),
        ({"method": "add", "params": {"a": 1, "c": 2}}, -32602),
        ({"method": "add"}, -32602),
        ({"method": "fail"}, -32603),
    ]
    async with asyncio.timeout(4 * T), rpc_session(peers, basic_methods()) as (rpc, peer, echo):
        for n, (request, code) in enumerate(cases, start=100):
            response = await ask(rpc, {"jsonrpc": "2.0", "id": f"s{n}", **request})
            assert error_of(response) == (f"s{n}", code), request
            if code == -32603:
                assert response["error"] == {"code": -32603, "message": "Internal error"}
        assert peer.stats["errors_sent"] == len(cases)
        assert peer.stats["calls_received"] == len(cases)
        assert peer.stats["invalid_received"] == 0
        # Nothing above ended the channel or the session.
        assert await ask(rpc, {"jsonrpc": "2.0", "id": 0, "method": "add", "params": [2, 2]}) == {
            "jsonrpc": "2.0",
            "id": 0,
            "result": 4,
        }
        await still_working(peers, echo)


async def test_rpc_responses_to_unknown_ids_are_discarded(peers: Peers) -> None:
    strays = [
        {"jsonrpc": "2.0", "id": 999, "result": "nobody asked"},
        {"jsonrpc": "2.0", "id": "x", "error": {"code": 1, "message": "nobody asked"}},
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}},
        {"jsonrpc": "2.0", "id": 1, "result": None},  # the peer has made no call 1 yet
    ]
    async with asyncio.timeout(4 * T), rpc_session(peers, basic_methods()) as (rpc, peer, echo):
        for stray in strays:
            await rpc.send(stray)
        # No answer to any of them: the first message back answers this call.
        assert await ask(rpc, {"jsonrpc": "2.0", "id": 7, "method": "add", "params": [3, 4]}) == {
            "jsonrpc": "2.0",
            "id": 7,
            "result": 7,
        }
        assert peer.stats["unknown_responses"] == len(strays)
        assert peer.stats["invalid_received"] == 0
        assert peer.stats["errors_sent"] == 0
        await still_working(peers, echo)


async def test_rpc_flood_beyond_the_handler_limit(peers: Peers) -> None:
    limit, flood = 4, 40
    release = asyncio.Event()
    methods = basic_methods()

    @methods.method
    async def slow(n: int) -> int:
        await release.wait()
        return n

    async with (
        asyncio.timeout(4 * T),
        rpc_session(peers, methods, max_concurrent_handlers=limit) as (rpc, peer, echo),
    ):
        for n in range(flood):
            await rpc.send({"jsonrpc": "2.0", "id": n, "method": "slow", "params": [n]})
        # While the victim's handlers are all busy, its own call to us must still complete.
        call = asyncio.create_task(peer.call("ping", [41], timeout=T))
        busy: list[Any] = []
        request: Any = None
        while len(busy) < flood - limit or request is None:
            message = await rpc.receive(timeout=T)
            if "method" in message:
                request = message
            else:
                busy.append(error_of(message))
        assert request == {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [41]}
        await rpc.send({"jsonrpc": "2.0", "id": request["id"], "result": 42})
        assert await call == 42
        assert sorted(busy) == [(n, -32000) for n in range(limit, flood)]
        stats = peer.stats
        assert stats["rejected_busy"] == flood - limit
        assert stats["running_handlers"] == limit  # never more
        assert stats["calls_received"] == flood
        release.set()
        results = [await rpc.receive(timeout=T) for _ in range(limit)]
        assert sorted(r["result"] for r in results) == list(range(limit))
        assert all(r["id"] == r["result"] for r in results)
        assert peer.stats["running_handlers"] == 0
        assert peer.stats["pending_calls"] == 0
        await still_working(peers, echo)


@pytest.mark.aioquic_only(CREDIT_FOLLOWS_READING)
async def test_rpc_flood_from_a_peer_that_does_not_read(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    """Calls rejected as busy while their answers cannot go out: the reader must wait.

    Otherwise each rejected call leaves an answer waiting in memory, without bound.
    """
    window = 64 * 1024
    total, limit = 8000, 4  # about 5500 fit in the buffers and windows
    release = asyncio.Event()
    methods = basic_methods()

    @methods.method
    async def slow(n: int) -> int:
        await release.wait()
        return n

    async with (
        asyncio.timeout(6 * T),
        connect(
            cert,
            dataclasses.replace(
                client_config, stream_receive_window=window, stream_buffer_size=window
            ),
            stream_receive_window=window,
            stream_buffer_size=window,
        ) as peers,
        rpc_session(peers, methods, max_concurrent_handlers=limit) as (rpc, peer, echo),
    ):
        tasks_before = len(asyncio.all_tasks())
        sent = 0

        async def flood() -> None:
            nonlocal sent
            for n in range(total):
                await rpc.send({"jsonrpc": "2.0", "id": n, "method": "slow", "params": [n]})
                sent += 1

        sender = asyncio.create_task(flood())
        done, _ = await asyncio.wait({sender}, timeout=0.5)
        assert not done, "the flooder was never slowed down"
        assert sent < total
        assert len(asyncio.all_tasks()) < tasks_before + 1100  # the answers waiting are bounded
        assert peer.stats["running_handlers"] == limit
        await still_working(peers, echo)  # the stalled rpc channel holds up nothing else

        busy = 0
        while busy < total - limit:  # reading again lets every answer through, once
            assert error_of(await rpc.receive(timeout=T))[1] == -32000
            busy += 1
        await sender
        assert peer.stats["rejected_busy"] == total - limit
        release.set()
        results = sorted([(await rpc.receive(timeout=T))["result"] for _ in range(limit)])
        assert results == list(range(limit))
        assert peer.stats["running_handlers"] == 0


async def test_rpc_batches(peers: Peers) -> None:
    async with asyncio.timeout(4 * T), rpc_session(peers, basic_methods()) as (rpc, peer, echo):
        assert error_of(await ask(rpc, [])) == (None, -32600)

        batch = [
            {"jsonrpc": "2.0", "id": 1, "method": "add", "params": [1, 2]},
            {"jsonrpc": "2.0", "method": "add", "params": [5, 5]},  # notification: no answer
            {"jsonrpc": "2.0", "id": "three", "method": "nope"},
            42,
            {"jsonrpc": "2.0", "id": 5, "method": "add", "params": ["x", 1]},
            {"jsonrpc": "2.0", "id": 6, "method": "fail"},
        ]
        responses = await ask(rpc, batch)
        assert isinstance(responses, list)
        by_id = {r["id"]: r for r in responses}
        assert len(responses) == len(by_id) == 5
        assert by_id[1] == {"jsonrpc": "2.0", "id": 1, "result": 3}
        assert error_of(by_id["three"]) == ("three", -32601)
        assert error_of(by_id[None]) == (None, -32600)
        assert error_of(by_id[5]) == (5, -32602)
        assert error_of(by_id[6]) == (6, -32603)

        # A batch of notifications only is not answered at all.
        await rpc.send([{"jsonrpc": "2.0", "method": "add", "params": [1, 1]}] * 3)
        assert await ask(rpc, {"jsonrpc": "2.0", "id": 9, "method": "add", "params": [4, 5]}) == {
            "jsonrpc": "2.0",
            "id": 9,
            "result": 9,
        }
        assert peer.stats["notifications_received"] == 4
        await still_working(peers, echo)


async def test_rpc_batch_with_a_malformed_request_answers_in_the_array(peers: Peers) -> None:
    async with asyncio.timeout(4 * T), rpc_session(peers, basic_methods()) as (rpc, peer, echo):
        batch = [
            {"jsonrpc": "2.0", "id": 1, "method": 5},
            {"jsonrpc": "2.0", "id": 2, "method": "add", "params": "bad"},
            {"jsonrpc": "2.0", "id": 3, "method": "add", "params": [1, 2]},
        ]
        responses = await ask(rpc, batch)
        assert isinstance(responses, list)
        assert sorted(error_of(r) for r in responses if "error" in r) == [(1, -32600), (2, -32600)]
        assert [r for r in responses if "result" in r] == [{"jsonrpc": "2.0", "id": 3, "result": 3}]
        # Nothing else was sent for that batch: the next message answers the next call.
        assert await ask(rpc, {"jsonrpc": "2.0", "id": 4, "method": "add", "params": [2, 2]}) == {
            "jsonrpc": "2.0",
            "id": 4,
            "result": 4,
        }
        assert peer.stats["invalid_received"] == 2
        await still_working(peers, echo)


# ------------------------------------------------------------------------------ datagrams


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x03{}", id="reserved-codec-id"),
        pytest.param(b"\xff", id="unknown-codec-id-alone"),
        pytest.param(b"\x01{bad", id="json-syntax"),
        pytest.param(b"\x01\xff", id="json-not-utf8"),
        pytest.param(b"\x01Infinity", id="json-infinity"),
        pytest.param(b"\x01" + b"[" * 1100, id="json-deeply-nested"),
        pytest.param(b"\x02\xc1", id="msgpack-bad-byte"),
        pytest.param(b"\x02", id="msgpack-empty"),
        pytest.param(b"\x02" + b"\x91" * 1100, id="msgpack-deeply-nested"),
    ],
)
async def test_invalid_datagram_messages_are_dropped(peers: Peers, bad: bytes) -> None:
    async with asyncio.timeout(4 * T), victim(peers.server) as messenger:
        echo = await open_echo(peers.client)
        datagrams = messenger.datagrams
        await peers.client.datagrams.send(bad)
        await peers.client.datagrams.send(b'\x01{"valid":1}')
        assert await datagrams.receive(timeout=T) == {"valid": 1}
        await peers.client.datagrams.send(b"\x00")  # the bytes codec: an empty message is valid
        assert await datagrams.receive(timeout=T) == b""
        assert datagrams.stats == {"sent": 0, "received": 2, "dropped_invalid": 1}
        await datagrams.send("answer")  # the victim's own datagrams still go out
        assert await peers.client.datagrams.receive(timeout=T) == b'\x01"answer"'
        await still_working(peers, echo)
