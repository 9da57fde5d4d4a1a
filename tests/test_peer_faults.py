"""Peer faults: the server killed, the client killed, the network black-holed mid-transfer.

In each case every blocked read and write on the surviving side ends within the idle timeout
with a clear exception, and afterwards nothing leaks: no connection, session, stream or task is
left, and the session and stream objects are freed (weak references, after ``gc.collect()``).
"""

from __future__ import annotations

import asyncio
import gc
import signal
import ssl
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pywebtransport import (
    ClientConfig,
    WebTransportClient,
    WebTransportError,
    WebTransportServer,
    WebTransportSession,
    WebTransportStream,
)
from tests.certs import CertBundle
from tests.conftest import T, build_app
from tests.faults import LossyRelay, report, start_child, stop_child

#: The idle timeout of the surviving side (seconds); detection must happen within it + slack.
IDLE = 1.0
SLACK = T / 2
SMALL_BUFFER = 64 * 1024
CHUNK = 16 * 1024


@dataclass
class Outcome:
    """How a blocked call ended: the exception's type and text, and when (loop time)."""

    kind: type[BaseException] | None = None
    text: str = ""
    at: float = 0.0


@dataclass
class Transfer:
    """A read loop and a write loop on one stream, each ending with an :class:`Outcome`."""

    reader: Outcome = field(default_factory=Outcome)
    writer: Outcome = field(default_factory=Outcome)
    received: int = 0
    flowing: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, stream: WebTransportStream) -> None:
        await asyncio.gather(self._read(stream), self._write(stream))

    async def _read(self, stream: WebTransportStream) -> None:
        try:
            while chunk := await stream.read(65536):
                self.received += len(chunk)
                if self.received >= 4 * CHUNK:
                    self.flowing.set()
        except WebTransportError as exc:
            self.reader = _outcome(exc)
        else:
            self.reader = Outcome(None, "end of stream", _now())

    async def _write(self, stream: WebTransportStream) -> None:
        chunk = b"w" * CHUNK
        try:
            while True:
                await stream.write(chunk)
        except WebTransportError as exc:
            self.writer = _outcome(exc)

    def ended_within(self, start: float, limit: float) -> list[float]:
        took = [self.reader.at - start, self.writer.at - start]
        for outcome in (self.reader, self.writer):
            assert outcome.kind is not None and issubclass(outcome.kind, WebTransportError), outcome
        assert all(0 < t < limit for t in took), took
        return took


def _now() -> float:
    return asyncio.get_running_loop().time()


def _outcome(exc: BaseException) -> Outcome:
    # Only the type and the text are kept: the exception's traceback would keep frames (and
    # with them the stream and session) alive and defeat the leak check.
    return Outcome(type(exc), str(exc), _now())


class Held:
    """The server side of ``/hold``: the session and stream (weakly) and the transfer."""

    def __init__(self) -> None:
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transfer = Transfer()
        self.refs: list[weakref.ref[object]] = []


@pytest.fixture
async def hold_server(cert: CertBundle) -> AsyncIterator[tuple[WebTransportServer, Held]]:
    """A server with ``idle_timeout=IDLE`` whose ``/hold`` route reads and writes forever."""
    app = build_app(cert, idle_timeout=IDLE, stream_buffer_size=SMALL_BUFFER)
    held = Held()

    @app.route("/hold")
    async def hold(session: WebTransportSession) -> None:
        stream = await session.accept_bidirectional_stream()
        held.refs += [weakref.ref(session), weakref.ref(stream), weakref.ref(session._conn)]
        held.started.set_result(None)
        try:
            await held.transfer.run(stream)
        finally:
            held.done.set_result(None)

    srv = WebTransportServer(config=app.config, app=app)
    await srv.listen(host="127.0.0.1", port=0)
    try:
        yield srv, held
    finally:
        async with asyncio.timeout(T):
            await srv.close(grace=0)


async def _no_tasks_left() -> None:
    """Every task but the test's own ends (bounded), and none is still pending."""
    me = asyncio.current_task()
    others = [t for t in asyncio.all_tasks() if t is not me]
    if others:
        await asyncio.wait(others, timeout=T)
    pending = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    assert not pending, [t.get_coro() for t in pending]


def _all_freed(refs: list[weakref.ref[object]]) -> None:
    gc.collect()
    alive = [r() for r in refs if r() is not None]
    assert not alive, alive


def _client_config(**overrides: object) -> ClientConfig:
    base: dict[str, object] = {
        "verify_mode": ssl.CERT_NONE,
        "idle_timeout": IDLE,
        "connect_timeout": T,
        "stream_buffer_size": SMALL_BUFFER,
    }
    base.update(overrides)
    return ClientConfig(**base)  # type: ignore[arg-type]


async def _start_transfer(
    client: WebTransportClient, url: str
) -> tuple[Transfer, asyncio.Task[None], list[weakref.ref[object]]]:
    session = await client.connect(url=url)
    stream = await session.create_bidirectional_stream()
    transfer = Transfer()
    task = asyncio.create_task(transfer.run(stream), name="pwt-test-transfer")
    refs: list[weakref.ref[object]] = [
        weakref.ref(session),
        weakref.ref(stream),
        weakref.ref(session._conn),
    ]
    async with asyncio.timeout(T):
        await transfer.flowing.wait()
    return transfer, task, refs


async def test_server_killed_mid_transfer(tmp_path: Path) -> None:
    proc, line = await start_child("tests.server_process", str(tmp_path), "0", timeout=3 * T)
    try:
        port = int(line.split()[1])
        async with WebTransportClient(config=_client_config()) as client:
            transfer, task, refs = await _start_transfer(client, f"https://127.0.0.1:{port}/echo")
            proc.send_signal(signal.SIGKILL)
            killed = _now()
            async with asyncio.timeout(IDLE + SLACK):
                await task
            took = transfer.ended_within(killed, IDLE + SLACK)
            report(f"server killed: client read/write ended after {took[0]:.2f}/{took[1]:.2f} s")
            assert "no packet from the peer" in transfer.reader.text
            assert "no packet from the peer" in transfer.writer.text
            assert min(took) > IDLE / 2  # it was the idle deadline, nothing sooner
            del task
            await _no_tasks_left()
            assert client.stats["active_sessions"] == 0
            _all_freed(refs)
    finally:
        await stop_child(proc, T)


async def test_client_killed_mid_transfer(
    hold_server: tuple[WebTransportServer, Held],
) -> None:
    srv, held = hold_server
    host, port = srv.local_address[:2]
    proc, _ = await start_child(
        "tests.client_process", f"https://{host}:{port}/hold", timeout=3 * T
    )
    try:
        async with asyncio.timeout(T):
            await held.started
            await held.transfer.flowing.wait()
        proc.send_signal(signal.SIGKILL)
        killed = _now()
        async with asyncio.timeout(IDLE + SLACK):
            await held.done
        took = held.transfer.ended_within(killed, IDLE + SLACK)
        report(f"client killed: server read/write ended after {took[0]:.2f}/{took[1]:.2f} s")
        assert min(took) > IDLE / 2
        await _no_tasks_left()
        assert srv.connections == []
        assert srv.stats["connections_active"] == 0
        _all_freed(held.refs)
    finally:
        await stop_child(proc, T)


async def test_black_hole_ends_both_sides(
    hold_server: tuple[WebTransportServer, Held],
) -> None:
    srv, held = hold_server
    host, port = srv.local_address[:2]
    async with (
        LossyRelay((host, port)) as relay,
        WebTransportClient(config=_client_config()) as client,
    ):
        rhost, rport = relay.address
        transfer, task, refs = await _start_transfer(client, f"https://{rhost}:{rport}/hold")
        async with asyncio.timeout(T):
            await held.transfer.flowing.wait()
        relay.black_hole = True
        cut = _now()
        async with asyncio.timeout(IDLE + SLACK):
            await asyncio.gather(task, held.done)
        client_took = transfer.ended_within(cut, IDLE + SLACK)
        server_took = held.transfer.ended_within(cut, IDLE + SLACK)
        report(
            f"black hole: client read/write ended after {client_took[0]:.2f}/"
            f"{client_took[1]:.2f} s, server after {server_took[0]:.2f}/{server_took[1]:.2f} s"
        )
        assert "no packet from the peer" in transfer.reader.text
        assert min(client_took + server_took) > IDLE / 2
        assert relay.up.counters.dropped > 0  # the client kept trying (keep-alive, data)
        del task
        await _no_tasks_left()
        assert client.stats["active_sessions"] == 0
        assert srv.connections == []
        _all_freed(refs + held.refs)


@pytest.mark.parametrize("keep_alive", [True, False], ids=["keep-alive", "no-keep-alive"])
async def test_a_silent_peer_ends_the_session_alike_with_or_without_keep_alive(
    hold_server: tuple[WebTransportServer, Held], keep_alive: bool
) -> None:
    # With keep-alive the connection's liveness deadline notices the silence; without it, the
    # QUIC engine's idle timer does. The session ends with the same code and reason either way.
    srv, _ = hold_server
    host, port = srv.local_address[:2]
    async with (
        LossyRelay((host, port)) as relay,
        WebTransportClient(config=_client_config(keep_alive=keep_alive)) as client,
    ):
        rhost, rport = relay.address
        session = await client.connect(url=f"https://{rhost}:{rport}/hold")
        relay.black_hole = True
        async with asyncio.timeout(IDLE + SLACK):
            await session.wait_closed()
    assert (session.close_code, session.close_reason) == (
        0,
        f"connection closed: no packet from the peer in {IDLE:g} s",
    )
