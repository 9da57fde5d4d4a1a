"""A client connect() interrupted during the QUIC handshake ends cleanly.

Interruptions: the awaiting task is cancelled (after N event-loop iterations, or after the k-th
handshake datagram from the server), the connect deadline expires while the server's packets
are still in flight, or an exception is raised synchronously inside the QUIC engine's own
connect step (as a KeyboardInterrupt from a signal handler would be). After each, nothing may
reach asyncio's exception handler (no "Exception in callback", no "Task exception was never
retrieved"), the interruption must surface unchanged from ``connect()``, every half-built
connection must terminate and close its UDP socket, and a later connect to the same server must
work.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import pytest
from aioquic import tls
from aioquic.quic.connection import QuicConnection

import pywebtransport.client.client as client_module
from pywebtransport import (
    ClientConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
    exceptions,
)
from pywebtransport._engine import engine_factory
from pywebtransport.connection import WebTransportConnection
from pywebtransport.protocol.quic import EngineTerminated, QuicSettings
from pywebtransport.udp import UdpEndpoint
from tests.certs import CertBundle
from tests.conftest import T, echo_ok, url
from tests.faults import Faults, LossyRelay

#: Upper bound on the loop iterations a loopback connect takes (it needs about 25).
MAX_ITERATIONS = 80


class Interrupt(BaseException):
    """Stands for KeyboardInterrupt/SystemExit raised by a signal handler mid-call.

    A real KeyboardInterrupt would escape the event loop (asyncio re-raises it from the task
    step), so the test uses a BaseException of its own that takes the same ``connect()`` path.
    """


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Everything that reaches the running loop's exception handler during the test."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        yield errors
    finally:
        loop.set_exception_handler(previous)


class Opened:
    """Every UDP endpoint and connection the client opens (to check that none is left)."""

    def __init__(self) -> None:
        self.endpoints: list[UdpEndpoint] = []
        self.connections: list[WebTransportConnection] = []

    async def all_closed(self) -> None:
        """Wait until every connection terminated (closing lasts a few PTOs), then check."""
        async with asyncio.timeout(2 * T):
            for conn in self.connections:
                await conn.wait_closed()
        assert all(ep.is_closed for ep in self.endpoints), "a UDP socket is left open"


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Opened:
    """Records what the client opens."""
    record = Opened()

    class RecordingEndpoint(UdpEndpoint):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            record.endpoints.append(self)

    class RecordingConnection(WebTransportConnection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            record.connections.append(self)

    monkeypatch.setattr(client_module, "UdpEndpoint", RecordingEndpoint)
    monkeypatch.setattr(client_module, "WebTransportConnection", RecordingConnection)
    return record


def relay_url(relay: LossyRelay, path: str = "/echo") -> str:
    """The https URL of ``path`` through ``relay``."""
    host, port = relay.address
    return f"https://{host}:{port}{path}"


def after_iterations(n: int) -> Awaitable[None]:
    """A future that completes after ``n`` further event-loop iterations (no timers)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def hop(left: int) -> None:
        if left <= 0:
            if not done.done():
                done.set_result(None)
        else:
            loop.call_soon(hop, left - 1)

    hop(n)
    return done


async def interrupted(
    client: WebTransportClient, target: str, trigger: Callable[[], Awaitable[None]]
) -> WebTransportSession | None:
    """Run ``client.connect(target)`` and cancel it once ``trigger()`` completes.

    Returns the session when the connect finished first (the interruption came too late).
    """
    task = asyncio.create_task(client.connect(url=target))
    fired = asyncio.ensure_future(trigger())
    try:
        async with asyncio.timeout(T):
            await asyncio.wait([task, fired], return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        fired.cancel()
        await asyncio.gather(fired, return_exceptions=True)
    return None


async def assert_clean(
    client: WebTransportClient,
    interrupted_endpoints: list[UdpEndpoint],
    loop_errors: list[dict[str, Any]],
) -> None:
    """Every interrupted connection terminated, closed its socket and logged nothing."""

    def half_built() -> list[WebTransportConnection]:
        """Connections carrying no session that connect() handed out."""
        return [c for c in client._connections if not set(c.sessions) & client._sessions]

    async with asyncio.timeout(2 * T):
        for conn in half_built():
            await conn.wait_closed()
    assert not half_built(), "a half-built connection is left"
    assert all(ep.is_closed for ep in interrupted_endpoints), "a UDP socket is left open"
    gc.collect()  # "Task exception was never retrieved" is reported when a task is collected
    assert loop_errors == [], loop_errors


async def assert_later_connect_works(client: WebTransportClient, target: str) -> None:
    """A fresh connect to the same server succeeds and carries data."""
    async with asyncio.timeout(T):
        session = await client.connect(url=target)
        await echo_ok(session)
        await session.close()


async def test_cancel_after_each_loop_iteration(
    server: WebTransportServer,
    client_config: ClientConfig,
    opened: Opened,
    loop_errors: list[dict[str, Any]],
) -> None:
    """Cancel connect() after 0, 1, 2, ... loop iterations, until it completes first."""
    async with WebTransportClient(config=client_config) as client:
        completed_at = None
        for n in range(MAX_ITERATIONS):
            before = len(opened.endpoints)
            session = await interrupted(client, url(server), partial(after_iterations, n))
            if session is not None:
                completed_at = n
                await session.close()
                break
        assert completed_at is not None and completed_at > 1, "the handshake was never reached"
        await assert_clean(client, opened.endpoints[:before], loop_errors)
        await assert_later_connect_works(client, url(server))
    await opened.all_closed()
    assert loop_errors == [], loop_errors


async def test_cancel_after_each_server_datagram(
    server: WebTransportServer,
    client_config: ClientConfig,
    opened: Opened,
    loop_errors: list[dict[str, Any]],
) -> None:
    """Cancel connect() right after the relay forwarded the k-th datagram from the server.

    That walks the handshake packet by packet: the server's Initial and Handshake with its
    SETTINGS (0.5-RTT), then HANDSHAKE_DONE, the CONNECT response (with aioquic, the first
    three share one datagram).
    """
    async with (
        LossyRelay(server.local_address[:2]) as relay,
        WebTransportClient(config=client_config) as client,
    ):
        target = relay_url(relay)
        interrupted_count = 0
        for k in range(1, 40):
            before = len(opened.endpoints)
            base = relay.down.counters.forwarded

            async def kth_datagram(k: int = k, base: int = base) -> None:
                await relay.wait_for(lambda: relay.down.counters.forwarded >= base + k, T)

            session = await interrupted(client, target, kth_datagram)
            if session is not None:
                await session.close()
                break
            interrupted_count += 1
        assert interrupted_count >= 2, "too few handshake datagrams to interrupt at"
        await assert_clean(client, opened.endpoints[:before], loop_errors)
        await assert_later_connect_works(client, target)
    await opened.all_closed()
    assert loop_errors == [], loop_errors


async def test_deadline_expires_while_handshake_packets_are_in_flight(
    server: WebTransportServer,
    cert: CertBundle,
    opened: Opened,
    loop_errors: list[dict[str, Any]],
) -> None:
    """connect_timeout expiring at points spread over a slow handshake: TimeoutError, cleanly."""
    slow = Faults(delay=0.02)  # every server datagram is held back 20 ms
    timed_out = 0
    async with LossyRelay(server.local_address[:2], down=slow) as relay:
        target = relay_url(relay)
        for deadline in (0.001, 0.005, 0.01, 0.02, 0.025, 0.03, 0.04, 0.05, 0.06, 0.08):
            config = ClientConfig(server_certificate_hashes=[cert.sha256], connect_timeout=deadline)
            async with WebTransportClient(config=config) as client:
                before = len(opened.endpoints)
                try:
                    async with asyncio.timeout(T):
                        session = await client.connect(url=target)
                except exceptions.TimeoutError:
                    timed_out += 1
                    await assert_clean(client, opened.endpoints[before:], loop_errors)
                else:
                    await session.close()
        assert timed_out >= 3, "the deadline never expired mid-handshake"
        async with WebTransportClient(
            config=ClientConfig(server_certificate_hashes=[cert.sha256], connect_timeout=T)
        ) as client:
            await assert_later_connect_works(client, target)
    await opened.all_closed()
    gc.collect()
    assert loop_errors == [], loop_errors


def _raise_once_in_client(
    monkeypatch: pytest.MonkeyPatch,
    owner: type,
    name: str,
    is_client: Callable[[Any], bool],
    exc: BaseException,
) -> None:
    """Make ``owner.name`` raise ``exc`` on its first call made for a client."""
    original = getattr(owner, name)
    fired = False

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal fired
        if not fired and is_client(self):
            fired = True
            raise exc
        return original(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)


#: Synchronous steps of aioquic's client connect(): building the transport parameters happens
#: before the per-epoch state (keys, packet spaces) exists, the ClientHello after it.
_STEPS = {
    "before-epoch-state": (
        QuicConnection,
        "_serialize_transport_parameters",
        lambda quic: quic._is_client,
    ),
    "after-epoch-state": (tls.Context, "handle_message", lambda ctx: ctx._is_client),
}


def _qh3_steps() -> dict[str, tuple[type, str, Callable[[Any], bool]]]:
    """The same steps of qh3's connect(): before its Rust core is built, and the ClientHello."""
    from qh3 import tls as qh3_tls

    from pywebtransport.protocol.engine_qh3 import _Qh3Connection

    return {
        "before-epoch-state": (_Qh3Connection, "_create_core", lambda quic: quic._is_client),
        "after-epoch-state": (
            qh3_tls.Context,
            "handle_message",
            lambda ctx: ctx.client_random is not None,
        ),
    }


@pytest.mark.parametrize("step", sorted(_STEPS))
@pytest.mark.parametrize("kind", ["interrupt", "error"])
async def test_interrupted_inside_the_engine_connect(
    server: WebTransportServer,
    client_config: ClientConfig,
    opened: Opened,
    loop_errors: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    step: str,
    kind: str,
    quic_engine: str,
) -> None:
    """An exception raised inside the engine's connect() surfaces as is; the connection ends.

    Regression: aioquic records the peer's path before it builds its per-epoch state, so the
    connection closed by the failed connect() raised KeyError (Epoch.HANDSHAKE) from inside
    ``QuicConnection.datagrams_to_send``, masking the interruption and leaking the socket.
    """
    exc: BaseException = Interrupt("interrupted") if kind == "interrupt" else OverflowError("x")
    owner, name, is_client = (_STEPS if quic_engine == "aioquic" else _qh3_steps())[step]
    _raise_once_in_client(monkeypatch, owner, name, is_client, exc)
    async with WebTransportClient(config=client_config) as client:
        with pytest.raises(type(exc)) as caught:
            async with asyncio.timeout(T):
                await client.connect(url=url(server))
        assert caught.value is exc
        assert caught.value.__context__ is None, "another error was raised while handling it"
        assert len(opened.endpoints) == 1
        async with asyncio.timeout(T):
            for conn in list(client._connections):
                await conn.wait_closed()
        assert not client._connections
        assert opened.endpoints[0].is_closed
        assert client.stats["connections_failed"] == 1
        await assert_later_connect_works(client, url(server))
    await opened.all_closed()
    gc.collect()
    assert loop_errors == [], loop_errors


@pytest.mark.parametrize("is_client", [True, False])
def test_engine_closed_before_it_started_ends_locally(
    cert: CertBundle, is_client: bool, quic_engine: str
) -> None:
    """close() before the engine started (client: no connect(), server: no Initial yet).

    aioquic has no network path and no per-epoch state then, so it cannot build a
    CONNECTION_CLOSE (IndexError/KeyError in datagrams_to_send), and qh3 has no core to close;
    nothing was sent either, so the engine terminates locally and reports it at once.
    """
    settings = QuicSettings(
        is_client=is_client,
        certfile=None if is_client else str(cert.certfile),
        keyfile=None if is_client else str(cert.keyfile),
    )
    original_dcid = None if is_client else b"\x01" * 8
    engine = engine_factory(quic_engine, settings).create(
        original_destination_connection_id=original_dcid
    )
    engine.close(0x10C, "connect failed")
    assert engine.datagrams_to_send(1.0) == []
    assert engine.get_timer() == 0.0  # the termination is due now
    engine.handle_timer(1.0)
    assert engine.pop_events() == [EngineTerminated(0x10C, "connect failed", False)]
    assert engine.get_timer() is None
    assert engine.is_closed
