"""Loopback tests of sessions, streams and datagrams between our client and our server."""

from __future__ import annotations

import asyncio

import pytest

from pywebtransport import (
    ClientConfig,
    DatagramError,
    SessionError,
    StreamError,
    WebTransportClient,
    WebTransportServer,
)
from pywebtransport.events import Event, EventType
from tests.certs import CertBundle
from tests.conftest import CREDIT_FOLLOWS_READING, T, build_app, serving, url


async def test_bidirectional_echo_with_fin(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server))
        assert session.is_ready and session.path == "/echo"
        stream = await session.create_bidirectional_stream()
        await stream.write(b"hello ")
        await stream.write(b"world", end_stream=True)
        assert await stream.read_all() == b"hello world"
        assert await stream.read(10) == b""


async def test_unidirectional_echo_comes_back_on_server_stream(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server))
        out = await session.create_unidirectional_stream()
        await out.write_all(b"one way")
        back = await session.accept_unidirectional_stream()
        assert back.stream_id % 4 == 3  # server-initiated unidirectional
        assert await back.read_all() == b"one way"


async def test_server_opened_streams_reach_the_client(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server, "/push"))
        bidi = await session.accept_bidirectional_stream()
        assert bidi.stream_id % 4 == 1  # server-initiated bidirectional
        assert await bidi.read_all() == b"server-bidi"
        await bidi.write_all(b"answer")
        uni = await session.accept_unidirectional_stream()
        assert await uni.read_all() == b"server-uni"
        assert await session.datagrams.receive() == b"got:answer"


async def test_datagrams_both_ways_and_size_limit(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    # Path MTU discovery off: the limit stays where it is read (tests/test_path_mtu.py has it on).
    config = client_config.update(max_path_datagram_size=client_config.max_datagram_size)
    async with asyncio.timeout(T), WebTransportClient(config=config) as client:
        session = await client.connect(url=url(server))
        limit = session.datagrams.max_datagram_size
        assert 1100 <= limit < 1200
        await session.datagrams.send(b"x" * limit)
        assert await session.datagrams.receive() == b"x" * limit
        with pytest.raises(DatagramError):
            await session.datagrams.send(b"y" * (limit + 1))
        assert session.datagrams.stats["rejected_outgoing"] == 1
        # The refused datagram blocks nothing: the next one goes through.
        await session.datagrams.send_json({"n": 1})
        assert await session.datagrams.receive_json() == {"n": 1}


async def test_path_parameters(server: WebTransportServer, client_config: ClientConfig) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server, "/items/42?x=1"))
        assert session.path == "/items/42?x=1"
        assert await session.datagrams.receive() == b"42"


async def test_server_close_reaches_client_with_code_and_reason(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server, "/close"))
        await session.wait_closed()
        assert session.is_closed and not session.is_ready
        assert (session.close_code, session.close_reason) == (4321, "server bye")
        with pytest.raises(SessionError):
            await session.create_bidirectional_stream()


async def test_a_closed_session_error_reads_as_a_sentence(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url(server, "/close"))
        await session.wait_closed()
        with pytest.raises(SessionError) as raised:
            await session.create_bidirectional_stream()
        sid = session.session_id
        expected = f"session {sid} was closed by the peer with code 4321: server bye"
        assert str(raised.value) == expected
        assert raised.value.error_code == 4321
        assert raised.value.message == str(raised.value)
        mine = await client.connect(url(server))
        await mine.close()
        with pytest.raises(SessionError) as raised:
            await mine.datagrams.send(b"late")
        assert str(raised.value) == f"session {mine.session_id} was closed locally with code 0"
        assert raised.value.error_code == 0


async def test_client_close_reaches_server_handler(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server))
        stream = await session.create_bidirectional_stream()
        await stream.write(b"ping")
        assert await stream.read(4) == b"ping"
        (conn,) = server.connections
        (server_session,) = conn.sessions
        await session.close(code=77, reason="client bye")
        await server_session.wait_closed()
        assert (server_session.close_code, server_session.close_reason) == (77, "client bye")
        await session.close()  # idempotent


async def test_reset_codes_both_ways(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server))
        stream = await session.create_bidirectional_stream()
        await stream.write(b"partial")
        assert await stream.read(7) == b"partial"
        await stream.abort(code=7)
        # The echo handler mirrors the peer's reset code back as its own reset.
        with pytest.raises(StreamError) as info:
            await stream.read_all()
        assert info.value.error_code == 7


async def test_stop_sending_reaches_writer(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server, "/stop"))
        stream = await session.create_bidirectional_stream()
        with pytest.raises(StreamError) as info:
            while True:  # ends when the server's STOP_SENDING arrives (bounded by the timeout)
                await stream.write(b"data" * 1000)
                await asyncio.sleep(0)
        assert info.value.error_code == 9


@pytest.mark.aioquic_only(CREDIT_FOLLOWS_READING)
async def test_writer_memory_is_bounded_when_peer_does_not_read(
    server: WebTransportServer, cert: object
) -> None:
    limit = 256 * 1024
    config = ClientConfig(
        server_certificate_hashes=[cert.sha256],  # type: ignore[attr-defined]
        stream_buffer_size=limit,
    )
    async with asyncio.timeout(4 * T), WebTransportClient(config=config) as client:
        session = await client.connect(url=url(server, "/sink"))
        stream = await session.create_bidirectional_stream()
        engine = session._conn.protocol.engine
        progress = {"written": 0, "peak": 0}
        chunk = b"z" * 65536

        window_written = asyncio.Event()

        async def write_8_mib() -> None:
            for _ in range(128):
                await stream.write(chunk)
                progress["written"] += len(chunk)
                buffered = engine.send_buffered(stream.stream_id)
                progress["peak"] = max(progress["peak"], buffered)
                if progress["written"] >= 1024 * 1024:
                    window_written.set()

        writer = asyncio.create_task(write_8_mib())
        # The peer reads nothing and grants one receive window (1 MiB): while the writer gets
        # that far, never more than the local buffer is unacknowledged in QUIC. That it then
        # stalls (at most window + local buffer written) is shown with time stepped by hand in
        # tests/protocol/test_engine_aioquic.py.
        await window_written.wait()
        assert 0 < progress["peak"] <= limit
        writer.cancel()


async def test_two_sessions_in_parallel(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        first, second = await asyncio.gather(
            client.connect(url=url(server)), client.connect(url=url(server))
        )
        s1 = await first.create_bidirectional_stream()
        s2 = await second.create_bidirectional_stream()
        await s1.write_all(b"one")
        await s2.write_all(b"two")
        assert (await s1.read_all(), await s2.read_all()) == (b"one", b"two")
        await first.close()
        s3 = await second.create_bidirectional_stream()
        await s3.write_all(b"still")
        assert await s3.read_all() == b"still"


async def test_every_creator_waiting_for_stream_credit_gets_a_stream(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    # The server grants 2 bidirectional streams at a time, 10 coroutines open one each at
    # once: 8 wait for session credit together, and every update has to wake all of them
    # (each retries; those still without credit wait again), not only the last to wait.
    async with (
        serving(build_app(cert, initial_max_streams_bidi=2)) as server,
        asyncio.timeout(2 * T),
        WebTransportClient(config=client_config) as client,
    ):
        session = await client.connect(url=url(server))

        async def echo(n: int) -> bytes:
            stream = await session.create_bidirectional_stream()
            await stream.write_all(b"%d" % n)
            return await stream.read_all()

        answers = await asyncio.gather(*(echo(n) for n in range(10)))
    assert answers == [b"%d" % n for n in range(10)]


async def test_remote_address_is_the_clients_real_address(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server))
        (conn,) = server.connections
        (server_session,) = conn.sessions
        host, port = server_session.remote_address[:2]
        assert host == "127.0.0.1"
        assert port != server.local_address[1]
        await session.close()


async def test_finished_streams_are_forgotten(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server))
        for n in range(20):
            stream = await session.create_bidirectional_stream()
            await stream.write_all(b"%d" % n)
            assert await stream.read_all() == b"%d" % n
        out = await session.create_unidirectional_stream()
        await out.write_all(b"uni")
        back = await session.accept_unidirectional_stream()
        assert await back.read_all() == b"uni"
        # Every stream ended both ways: neither the session nor the connection keeps them.
        assert session.stats["active_streams"] == 0
        assert not session._conn._streams
        assert session.stats["streams_opened"] == 21


async def test_outgoing_datagram_queue_is_bounded_and_counted(
    server: WebTransportServer, cert: object
) -> None:
    config = ClientConfig(
        server_certificate_hashes=[cert.sha256],  # type: ignore[attr-defined]
        datagram_queue_size=8,
    )
    async with asyncio.timeout(T), WebTransportClient(config=config) as client:
        session = await client.connect(url=url(server))
        for n in range(100):  # send() does not yield: nothing leaves before the loop ends
            await session.datagrams.send(b"%03d" % n)
        stats = session.datagrams.stats
        assert (stats["sent"], stats["dropped_outgoing"]) == (100, 92)
        # The newest eight survive and are echoed.
        assert await session.datagrams.receive() == b"092"


async def test_incoming_datagram_queue_is_bounded_and_counted(
    server: WebTransportServer, cert: object
) -> None:
    config = ClientConfig(
        server_certificate_hashes=[cert.sha256],  # type: ignore[attr-defined]
        datagram_queue_size=8,
    )
    async with asyncio.timeout(T), WebTransportClient(config=config) as client:
        session = await client.connect(url=url(server))
        # Reading would empty the queue: watch arrivals instead, to know when all 20 are in.
        all_in = asyncio.get_running_loop().create_future()
        feed = session.datagrams._feed

        def counting_feed(data: bytes) -> None:
            feed(data)
            if session.datagrams.stats["received"] == 20:
                all_in.set_result(None)

        session.datagrams._feed = counting_feed  # type: ignore[method-assign]
        for n in range(20):
            await session.datagrams.send(b"%03d" % n)
            await asyncio.sleep(0)  # let each one go out on its own before the next
        await all_in
        assert session.datagrams.stats["dropped_incoming"] == 12
        # The newest eight were kept, oldest first.
        assert [await session.datagrams.receive() for _ in range(8)] == [
            b"%03d" % n for n in range(12, 20)
        ]


async def test_read_after_local_stop_raises(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server, "/sink"))
        stream = await session.create_bidirectional_stream()
        await stream.write(b"x")
        await stream.stop(code=3)
        with pytest.raises(StreamError):
            await stream.readexactly(4)
        with pytest.raises(StreamError):
            await stream.readline()


async def test_failed_connects_leave_no_connection_behind(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    from pywebtransport import HandshakeError

    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        for _ in range(3):
            with pytest.raises(HandshakeError):
                await client.connect(url=url(server, "/missing"))
        closing = [c.wait_closed() for c in client._connections]
        await asyncio.gather(*closing)
        assert client.stats["active_connections"] == 0


async def test_session_and_streams_are_event_emitters(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    """Stream, datagram and close events come from the session; a stream says when it closed."""
    seen: list[Event] = []
    loop = asyncio.get_running_loop()
    datagram: asyncio.Future[Event] = loop.create_future()
    closed: asyncio.Future[Event] = loop.create_future()
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server))  # the echo route
        session.on(EventType.STREAM_OPENED, seen.append)
        session.on("stream_closed", seen.append)
        session.once(EventType.DATAGRAM_RECEIVED, datagram.set_result)
        session.once(EventType.SESSION_CLOSED, closed.set_result)
        bidi = await session.create_bidirectional_stream()
        bidi_closed: list[Event] = []
        bidi.on(EventType.STREAM_CLOSED, bidi_closed.append)
        await bidi.write_all(b"ping")
        assert await bidi.read_all() == b"ping"
        assert [(e.source, e.data) for e in bidi_closed] == [(bidi, {"stream_id": bidi.stream_id})]
        # A uni stream comes back on a stream the server opens.
        uni = await session.create_unidirectional_stream()
        await uni.write_all(b"uni")
        back = await session.accept_unidirectional_stream()
        assert await back.read_all() == b"uni"
        await session.datagrams.send(b"dgram")
        assert (await datagram).data == {"data": b"dgram"}
        await session.close(code=7, reason="done")
        event = await closed
        assert event.data == {"session_id": session.session_id, "code": 7, "reason": "done"}
    assert all(e.source is session for e in seen)
    opened = [(e.data["stream"], e.data["local"]) for e in seen if e.type == "stream_opened"]
    ended = [(e.data["stream"], e.data["local"]) for e in seen if e.type == "stream_closed"]
    assert opened == [(bidi, True), (uni, True), (back, False)]
    by_id = lambda item: item[0].stream_id  # noqa: E731
    assert sorted(ended, key=by_id) == sorted(opened, key=by_id)  # each end is told once


async def test_draining_is_an_event(cert: CertBundle, client_config: ClientConfig) -> None:
    async with (
        serving(build_app(cert)) as srv,
        asyncio.timeout(T),
        WebTransportClient(config=client_config) as client,
    ):
        session = await client.connect(url=url(srv))
        draining: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        session.once("session_draining", draining.set_result)
        closing = asyncio.ensure_future(srv.close(grace=T))
        event = await draining
        assert event.type is EventType.SESSION_DRAINING and event.source is session
        await session.close()
        await closing


async def test_an_out_of_range_close_code_is_refused_and_the_session_stays(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(T), WebTransportClient(config=client_config) as client:
        session = await client.connect(url=url(server))
        for code in (-1, 1 << 32):
            with pytest.raises(ValueError):
                await session.close(code=code)
        assert session.is_ready
        stream = await session.create_bidirectional_stream()
        await stream.write(b"still here", end_stream=True)
        assert await stream.read_all() == b"still here"
        await session.close(code=0xFFFFFFFF)
        assert session.close_code == 0xFFFFFFFF
