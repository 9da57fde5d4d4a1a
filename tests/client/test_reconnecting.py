"""ReconnectingClient: one session kept alive across losses, with paced reconnects."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pywebtransport import (
    ClientConfig,
    ClientError,
    ConnectionError,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)
from pywebtransport.client.reconnecting import ReconnectingClient, backoff_delay
from pywebtransport.events import Event, EventEmitter, EventType
from tests.conftest import T, url

ROOT = Path(__file__).resolve().parents[2]
#: How late an asyncio timer may fire on a loaded machine (seconds).
LATE = 0.06
#: How early: timers never fire early, but clocks are compared across calls.
EARLY = 0.005


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that nothing listens on (so the kernel refuses datagrams)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def next_event(emitter: EventEmitter, event_type: EventType) -> asyncio.Future[Event]:
    """A future resolved by the next ``event_type`` event (registered before it can happen)."""
    future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()

    def handler(event: Event) -> None:
        if not future.done():
            future.set_result(event)

    emitter.once(event_type, handler)
    return future


def recorder(emitter: EventEmitter, event_type: EventType) -> list[Event]:
    """Every ``event_type`` event the emitter emits from now on."""
    events: list[Event] = []
    emitter.on(event_type, events.append)
    return events


class Attempts:
    """(start, end) monotonic times of a client's connect attempts, and a way to await them."""

    def __init__(self) -> None:
        self.times: list[tuple[float, float]] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def __len__(self) -> int:
        return len(self.times)

    def add(self, begin: float, end: float) -> None:
        self.times.append((begin, end))
        for count, future in self._waiters:
            if count <= len(self.times) and not future.done():
                future.set_result(None)

    async def wait(self, count: int) -> None:
        """Return once ``count`` attempts have finished."""
        if len(self.times) >= count:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((count, future))
        await future


def record_attempts(client: ReconnectingClient, monkeypatch: pytest.MonkeyPatch) -> Attempts:
    """Record every connect attempt the client makes."""
    attempts = Attempts()
    original = client.client.connect

    async def connect(**kwargs: Any) -> WebTransportSession:
        begin = time.monotonic()
        try:
            return await original(**kwargs)
        finally:
            attempts.add(begin, time.monotonic())

    monkeypatch.setattr(client.client, "connect", connect)
    return attempts


def connected(client: ReconnectingClient) -> bool:
    """``is_connected`` read through a call (mypy would narrow the property across awaits)."""
    return client.is_connected


async def echo_once(session: WebTransportSession, payload: bytes) -> bytes:
    stream = await session.create_bidirectional_stream()
    await stream.write(payload, end_stream=True)
    return await stream.read_all()


def reconnecting_config(**changes: Any) -> ClientConfig:
    """Small intervals for tests; the server process makes a new certificate at each start."""
    base: dict[str, Any] = {
        "auto_reconnect": True,
        "verify_mode": ssl.CERT_NONE,
        "connect_timeout": 2.0,
        "idle_timeout": 1.0,
        "retry_delay": 0.05,
        "retry_backoff": 2.0,
        "max_retry_delay": 0.2,
        "max_retries": -1,
    }
    base.update(changes)
    return ClientConfig(**base)


class ServerProcess:
    """The test application in a child process on a fixed port: killable and restartable."""

    def __init__(self, certdir: Path, port: int) -> None:
        self.certdir = certdir
        self.port = port
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/echo"

    async def start(self) -> None:
        """Start the server and wait until it prints READY on our port."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.server_process",
            str(self.certdir),
            str(self.port),
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"},
        )
        self.proc = proc
        assert proc.stdout is not None
        async with asyncio.timeout(3 * T):
            line = await proc.stdout.readline()
        assert line.split() == [b"READY", str(self.port).encode()], line

    def kill(self) -> None:
        """SIGKILL: the server vanishes without closing anything."""
        assert self.proc is not None and self.proc.returncode is None
        self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


@pytest.fixture
async def killable_server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    """The test application in a child process on a free fixed port, already listening."""
    server = ServerProcess(tmp_path, free_udp_port())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


# --------------------------------------------------------------------------- normal path


async def test_create_returns_reconnecting_client_only_with_auto_reconnect(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    plain = WebTransportClient.create(url=url(server), config=client_config)
    assert type(plain) is WebTransportClient
    reconnecting = WebTransportClient.create(
        url=url(server), config=client_config.update(auto_reconnect=True)
    )
    assert isinstance(reconnecting, ReconnectingClient)
    assert reconnecting.url == url(server)


async def test_get_session_returns_ready_session(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    rc = WebTransportClient.create(
        url=url(server), config=client_config.update(auto_reconnect=True)
    )
    assert isinstance(rc, ReconnectingClient)
    established = recorder(rc, EventType.CONNECTION_ESTABLISHED)
    async with asyncio.timeout(T), rc:
        session = await rc.get_session(wait_timeout=T)
        assert session is not None and session.is_ready and rc.is_connected
        assert [e.data["session"] for e in established] == [session]
        assert await echo_once(session, b"hello") == b"hello"
        assert await rc.get_session(wait_timeout=T) is session  # the same one while it lives
        with pytest.raises(ClientError):
            await rc.__aenter__()  # one background task per client
    assert session.is_closed and not connected(rc)
    assert await rc.get_session(wait_timeout=T) is None  # closed: at once, no waiting


async def test_get_session_outside_async_with_is_a_client_error(
    client_config: ClientConfig,
) -> None:
    rc = ReconnectingClient(url="https://127.0.0.1:9/echo", config=client_config)
    with pytest.raises(ClientError):
        await rc.get_session(wait_timeout=0.1)


# --------------------------------------------------------------------------- loss and return


async def test_killed_server_is_noticed_within_the_idle_timeout(
    killable_server: ServerProcess,
) -> None:
    rc = ReconnectingClient(url=killable_server.url, config=reconnecting_config(idle_timeout=1.0))
    async with asyncio.timeout(3 * T), rc:
        session = await rc.get_session(wait_timeout=T)
        assert session is not None  # quiet from here: the last packet came with the 200
        lost = next_event(rc, EventType.CONNECTION_LOST)
        killable_server.kill()
        killed_at = time.monotonic()
        detected = (await lost).timestamp - killed_at
    assert detected <= 1.0 + 0.2, f"loss noticed {detected:.3f} s after the kill"


async def test_killed_server_is_lost_then_reconnected_on_return(
    killable_server: ServerProcess,
) -> None:
    idle_timeout = 1.0
    rc = ReconnectingClient(
        url=killable_server.url, config=reconnecting_config(idle_timeout=idle_timeout)
    )
    established = recorder(rc, EventType.CONNECTION_ESTABLISHED)
    async with asyncio.timeout(6 * T), rc:
        first = await rc.get_session(wait_timeout=T)
        assert first is not None and await echo_once(first, b"one") == b"one"
        lost = next_event(rc, EventType.CONNECTION_LOST)
        killable_server.kill()
        killed_at = time.monotonic()
        lost_event = await lost
        # client-behaviour.md: the loss is known within one idle timeout.
        assert lost_event.timestamp - killed_at <= idle_timeout + 0.2
        assert first.is_closed and not rc.is_connected
        assert len(established) == 1

        await killable_server.start()  # the same port
        second = await rc.get_session(wait_timeout=T)
        assert second is not None and second is not first and connected(rc)
        assert [e.data["session"] for e in established] == [first, second]
        assert await echo_once(second, b"two") == b"two"
        stats = rc.client.stats
        assert stats["connections_successful"] == 2
        assert stats["connections_failed"] >= 1  # it tried while the server was away


async def test_consecutive_failures_follow_the_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    config = reconnecting_config(retry_delay=0.1, retry_backoff=2.0, max_retry_delay=0.4)
    config = config.update(max_retries=6)
    rc = ReconnectingClient(url=f"https://127.0.0.1:{free_udp_port()}/echo", config=config)
    attempts = record_attempts(rc, monkeypatch)
    failed = next_event(rc, EventType.CONNECTION_FAILED)
    async with asyncio.timeout(3 * T), rc:
        await failed
    assert len(attempts) == 6
    expected = [backoff_delay(config, n) for n in range(1, 6)]
    assert expected == pytest.approx([0.1, 0.2, 0.4, 0.4, 0.4])
    times = attempts.times
    gaps = [times[n][0] - times[n - 1][1] for n in range(1, 6)]
    for gap, delay in zip(gaps, expected, strict=True):
        assert delay * 0.9 - EARLY <= gap <= delay * 1.1 + LATE, (gaps, expected)


async def test_max_retries_then_connection_failed_and_no_session() -> None:
    config = reconnecting_config(max_retries=3, retry_delay=0.05)
    rc = ReconnectingClient(url=f"https://127.0.0.1:{free_udp_port()}/echo", config=config)
    failed = next_event(rc, EventType.CONNECTION_FAILED)
    established = recorder(rc, EventType.CONNECTION_ESTABLISHED)
    async with asyncio.timeout(3 * T), rc:
        event = await failed
        assert event.data["attempts"] == 3
        assert isinstance(event.data["error"], ConnectionError)
        start = time.monotonic()
        assert await rc.get_session(wait_timeout=T) is None
        assert time.monotonic() - start < 0.5  # gave up: no waiting for the timeout
        assert not rc.is_connected and not established
        stats = rc.client.stats
        assert stats["connections_attempted"] == stats["connections_failed"] == 3


async def test_accept_then_close_does_not_hot_loop(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    retry_delay = 0.1
    config = client_config.update(auto_reconnect=True, retry_delay=retry_delay, max_retries=-1)
    rc = ReconnectingClient(url=url(server, "/close"), config=config)
    established = recorder(rc, EventType.CONNECTION_ESTABLISHED)
    lost = recorder(rc, EventType.CONNECTION_LOST)
    enough = 8
    reached: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def count(_: Event) -> None:
        if len(established) >= enough and not reached.done():
            reached.set_result(None)

    rc.on(EventType.CONNECTION_ESTABLISHED, count)
    async with asyncio.timeout(2 * T), rc:
        await reached
    times = [e.timestamp for e in established[:enough]]
    window = times[-1] - times[0]
    # n reconnects in a window need at least (n - 1) pauses of retry_delay (minus jitter).
    assert enough <= window / (retry_delay * 0.9) + 1 + 0.01, times
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(retry_delay * 0.9 - EARLY <= gap <= retry_delay * 1.1 + 2 * LATE for gap in gaps)
    assert len(lost) >= enough - 1
    assert lost[0].data["code"] == 4321 and lost[0].data["reason"] == "server bye"


async def test_get_session_times_out_with_none() -> None:
    rc = ReconnectingClient(
        url=f"https://127.0.0.1:{free_udp_port()}/echo", config=reconnecting_config()
    )
    async with asyncio.timeout(T), rc:
        start = time.monotonic()
        assert await rc.get_session(wait_timeout=0.2) is None
        elapsed = time.monotonic() - start
        assert 0.2 - EARLY <= elapsed <= 0.2 + LATE
        assert rc.client.stats["connections_failed"] >= 2  # still retrying (max_retries < 0)


async def test_close_wakes_a_waiting_get_session(monkeypatch: pytest.MonkeyPatch) -> None:
    rc = ReconnectingClient(
        url=f"https://127.0.0.1:{free_udp_port()}/echo", config=reconnecting_config()
    )
    attempts = record_attempts(rc, monkeypatch)
    async with asyncio.timeout(T):
        async with rc:
            waiter = asyncio.create_task(rc.get_session(wait_timeout=T))
            # The first attempt has gone through the network, so the waiter is blocked by now.
            await attempts.wait(1)
            assert not waiter.done()
            start = time.monotonic()
        assert await waiter is None
        assert time.monotonic() - start < 0.5
