"""Receive-side backpressure: credit follows what the application reads, not what arrives."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib

import pytest

from pywebtransport import (
    ClientConfig,
    ServerApp,
    ServerConfig,
    WebTransportClient,
    WebTransportError,
    WebTransportReceiveStream,
    WebTransportSession,
    WebTransportStream,
)
from pywebtransport.protocol import AioquicEngine
from tests.certs import CertBundle
from tests.conftest import CREDIT_FOLLOWS_READING, SLOTS_FOLLOW_READING, T, serving

WINDOW = 1024 * 1024  # aioquic's default max_stream_data, which sets the receive window


@pytest.mark.aioquic_only(CREDIT_FOLLOWS_READING)
async def test_unread_stream_holds_at_most_one_window(cert: CertBundle) -> None:
    accepted: asyncio.Future[WebTransportStream] = asyncio.get_running_loop().create_future()
    release = asyncio.Event()
    digest: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    app = ServerApp(config=ServerConfig(certfile=str(cert.certfile), keyfile=str(cert.keyfile)))

    @app.route("/slow")
    async def slow(session: WebTransportSession) -> None:
        stream = await session.accept_bidirectional_stream()
        accepted.set_result(stream)
        await release.wait()  # the application does not read until the test says so
        digest.set_result(hashlib.sha256(await stream.read_all()).hexdigest())
        await session.wait_closed()

    payload = bytes(range(256)) * (8 * 1024 * 1024 // 256)
    config = ClientConfig(server_certificate_hashes=[cert.sha256])
    async with (
        serving(app) as server,
        asyncio.timeout(6 * T),
        WebTransportClient(config=config) as client,
    ):
        session = await client.connect(url=f"https://127.0.0.1:{server.local_address[1]}/slow")
        stream = await session.create_bidirectional_stream()
        writer = asyncio.create_task(stream.write_all(payload))
        server_stream = await accepted
        # The server grants no credit beyond one window while unread (the stall itself, with
        # time stepped by hand: tests/protocol/test_engine_aioquic.py).
        assert server_stream._buffered <= WINDOW
        release.set()
        await writer
        assert await digest == hashlib.sha256(payload).hexdigest()


@pytest.mark.aioquic_only(CREDIT_FOLLOWS_READING)
async def test_unread_streams_together_hold_at_most_the_connection_window(
    cert: CertBundle,
) -> None:
    """Many streams, none read: what the server buffers is bounded by the connection window."""
    stream_window, connection_window, count = 256 * 1024, 1024 * 1024, 8
    loop = asyncio.get_running_loop()
    sessions: asyncio.Future[WebTransportSession] = loop.create_future()
    release = asyncio.Event()
    digests: asyncio.Future[list[str]] = loop.create_future()
    config = ServerConfig(
        certfile=str(cert.certfile),
        keyfile=str(cert.keyfile),
        stream_receive_window=stream_window,
        connection_receive_window=connection_window,
    )
    app = ServerApp(config=config)

    @app.route("/many")
    async def many(session: WebTransportSession) -> None:
        sessions.set_result(session)
        await release.wait()
        streams = [await session.accept_unidirectional_stream() for _ in range(count)]
        # Read all at once: read one by one, the unread others could hold the whole
        # connection window while the one being read waits for credit (docs/streams.md).
        datas = await asyncio.gather(*(stream.read_all() for stream in streams))
        digests.set_result(sorted(hashlib.sha256(d).hexdigest() for d in datas))
        await session.wait_closed()

    payloads = [bytes([i]) * (512 * 1024) for i in range(count)]  # 4 MiB in all
    # A small send buffer: write_all() can only finish once the server acknowledged the bytes.
    client_config = ClientConfig(
        server_certificate_hashes=[cert.sha256], stream_buffer_size=64 * 1024
    )
    async with (
        serving(app) as server,
        asyncio.timeout(6 * T),
        WebTransportClient(config=client_config) as client,
    ):
        session = await client.connect(url=f"https://127.0.0.1:{server.local_address[1]}/many")
        writers = []
        for payload in payloads:
            stream = await session.create_unidirectional_stream()
            writers.append(asyncio.create_task(stream.write_all(payload)))
        server_session = await sessions
        engine = server_session._conn.protocol.engine
        assert isinstance(engine, AioquicEngine)
        # Every byte the client could send counts against MAX_DATA, read or not; that the
        # writers stall at the connection window is shown with time stepped by hand in
        # tests/protocol/test_engine_aioquic.py.
        assert engine._quic._local_max_data.used <= connection_window + 4096
        release.set()
        await asyncio.gather(*writers)
        expected = sorted(hashlib.sha256(p).hexdigest() for p in payloads)
        assert await digests == expected


@pytest.mark.aioquic_only(SLOTS_FOLLOW_READING)
async def test_a_stream_slot_comes_back_only_when_its_stream_is_read(cert: CertBundle) -> None:
    """max_incoming_streams: accepted but unread streams hold their slots; reading frees one."""
    limit = 4
    loop = asyncio.get_running_loop()
    accepted: list[WebTransportReceiveStream] = []
    got_limit = asyncio.Event()
    read_one = asyncio.Event()
    config = ServerConfig(
        certfile=str(cert.certfile), keyfile=str(cert.keyfile), max_incoming_streams=limit
    )
    app = ServerApp(config=config)
    extra: asyncio.Future[bytes] = loop.create_future()

    @app.route("/slots")
    async def slots(session: WebTransportSession) -> None:
        while len(accepted) < limit:
            accepted.append(await session.accept_unidirectional_stream())
        got_limit.set()
        # Nothing was read: the client's fifth stream cannot even be opened on the wire (shown
        # with time stepped by hand in tests/protocol/test_engine_aioquic.py); reading one
        # gives its slot back.
        await read_one.wait()
        assert await accepted[0].read_all() == b"stream 0"
        stream = await session.accept_unidirectional_stream(timeout=T)
        extra.set_result(await stream.read_all())
        await session.wait_closed()

    client_config = ClientConfig(server_certificate_hashes=[cert.sha256])
    async with (
        serving(app) as server,
        asyncio.timeout(4 * T),
        WebTransportClient(config=client_config) as client,
    ):
        session = await client.connect(url=f"https://127.0.0.1:{server.local_address[1]}/slots")
        for i in range(limit + 1):
            stream = await session.create_unidirectional_stream()
            await stream.write(f"stream {i}".encode(), end_stream=True)
        await got_limit.wait()
        assert not extra.done()
        read_one.set()
        assert await extra == f"stream {limit}".encode()


async def test_on_qh3_unread_bytes_beyond_the_window_close_the_connection(
    cert: CertBundle, quic_engine: str
) -> None:
    """qh3 cannot make the writer wait; its engine keeps the memory bound by closing."""
    if quic_engine != "qh3":
        pytest.skip("aioquic makes the writer wait instead (the tests above)")
    window = 1024 * 1024
    loop = asyncio.get_running_loop()
    closed: asyncio.Future[None] = loop.create_future()
    config = ServerConfig(
        certfile=str(cert.certfile),
        keyfile=str(cert.keyfile),
        stream_receive_window=256 * 1024,
        connection_receive_window=window,
    )
    app = ServerApp(config=config)

    @app.route("/never")
    async def never(session: WebTransportSession) -> None:
        await session.accept_bidirectional_stream()  # accepted, never read
        await session.wait_closed()
        closed.set_result(None)

    client_config = ClientConfig(server_certificate_hashes=[cert.sha256])
    async with (
        serving(app) as server,
        asyncio.timeout(4 * T),
        WebTransportClient(config=client_config) as client,
    ):
        session = await client.connect(url=f"https://127.0.0.1:{server.local_address[1]}/never")
        stream = await session.create_bidirectional_stream()
        # The writes go out until the server's engine closes; later ones fail or go nowhere.
        with contextlib.suppress(WebTransportError):
            await stream.write_all(b"w" * (4 * window))
        await session.wait_closed()
        await closed
        error = session._conn.close_error
        assert error is not None and "0x107" in str(error), error  # H3_EXCESSIVE_LOAD
