"""Fault injection for the asyncio tests: a lossy UDP relay, and child processes to kill.

Theory of operation: :class:`LossyRelay` listens on 127.0.0.1 and stands between a client and
a server. Each client address gets its own upstream socket towards the server, so the server
sees one peer per client. Every datagram, in either direction, goes through
:meth:`Direction.process`: with the direction's seeded RNG it is dropped (``loss``), held back
by ``reorder_delay`` so that later datagrams overtake it (``reorder``), delayed by ``delay``,
and sent twice (``duplicate``). The RNG is seeded per direction, so a run is reproducible up to
the event loop's timing. A datagram longer than ``max_size`` is dropped, as a link with a smaller
MTU would drop it (path MTU discovery's probes find that size; :meth:`Direction.set_max_size`
changes it mid-run, as a route change would). ``black_hole = True`` drops everything both ways
(counted as drops).
Counters are exact: every datagram received by the relay is either dropped or forwarded (and
perhaps duplicated); the sizes of dropped datagrams are kept so a test can tell which kind of
packet was lost (QUIC packets carrying one large DATAGRAM frame are recognisable by size).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import current_engine

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
#: The environment variable that tells a child server which QUIC engine to use.
CHILD_ENGINE_VARIABLE = "PYWEBTRANSPORT_TEST_ENGINE"

Addr = tuple[str, int]


@dataclass(frozen=True)
class Faults:
    """The faults applied to one direction (rates are probabilities in [0, 1], times seconds)."""

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.002
    delay: float = 0.0
    max_size: int | None = None  # longer datagrams are dropped (None: no limit)

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if self.delay < 0 or self.reorder_delay < 0:
            raise ValueError("delays must be >= 0")
        if self.max_size is not None and self.max_size < 1:
            raise ValueError("max_size must be positive")


@dataclass
class Counters:
    """What one direction of the relay did with the datagrams it received."""

    received: int = 0
    forwarded: int = 0  # datagrams handed to the socket, duplicates included
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    bytes_received: int = 0
    dropped_sizes: list[int] = field(default_factory=list)
    sizes_seen: list[int] = field(default_factory=list)
    too_large: int = 0  # of ``dropped``: longer than ``max_size``

    def mark(self) -> tuple[int, int]:
        """A position to count from (see :meth:`dropped_at_least`, :meth:`seen_at_least`)."""
        return len(self.sizes_seen), len(self.dropped_sizes)

    def dropped_at_least(
        self, size: int, since: tuple[int, int] = (0, 0), below: int | None = None
    ) -> int:
        """How many datagrams of ``size`` bytes or longer (shorter than ``below``, when given)
        were dropped since ``since``."""
        top = below if below is not None else 1 << 16
        return sum(1 for n in self.dropped_sizes[since[1] :] if size <= n < top)

    def seen_at_least(
        self, size: int, since: tuple[int, int] = (0, 0), below: int | None = None
    ) -> int:
        """How many datagrams of ``size`` bytes or longer (shorter than ``below``, when given)
        arrived since ``since``."""
        top = below if below is not None else 1 << 16
        return sum(1 for n in self.sizes_seen[since[0] :] if size <= n < top)


class Direction:
    """One direction of the relay: its faults, its RNG and its counters."""

    def __init__(self, name: str, faults: Faults, seed: int, relay: LossyRelay) -> None:
        self.name = name
        self.faults = faults
        self.counters = Counters()
        self._rng = random.Random(f"{seed}:{name}")
        self._relay = relay

    def set_max_size(self, max_size: int | None) -> None:
        """Drop datagrams longer than ``max_size`` from now on (None: no limit)."""
        self.faults = dataclasses.replace(self.faults, max_size=max_size)

    def process(self, data: bytes, send: Callable[[bytes], None]) -> None:
        """Apply the faults to one datagram; ``send`` (counting) gets each surviving copy."""
        c = self.counters
        c.received += 1
        c.bytes_received += len(data)
        c.sizes_seen.append(len(data))
        f = self.faults
        rng = self._rng
        too_large = f.max_size is not None and len(data) > f.max_size
        if too_large or self._relay.black_hole or rng.random() < f.loss:
            c.dropped += 1
            c.too_large += too_large
            c.dropped_sizes.append(len(data))
            return
        copies = 2 if rng.random() < f.duplicate else 1
        c.duplicated += copies - 1
        delay = f.delay
        if rng.random() < f.reorder:
            c.reordered += 1
            delay += f.reorder_delay
        for _ in range(copies):
            if delay > 0:
                self._relay._later(delay, send, data)
            else:
                send(data)


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, relay: LossyRelay) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.relay._from_client(data, addr)


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, relay: LossyRelay, client: Addr) -> None:
        self.relay = relay
        self.client = client

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.relay._from_server(data, self.client)


class LossyRelay:
    """A UDP relay on 127.0.0.1 that injects faults, per direction, from a seeded RNG.

    Use ``async with LossyRelay(server_addr, up=Faults(...), down=Faults(...)) as relay:`` and
    point the client at ``relay.address``. ``up`` is client -> server, ``down`` the reverse.
    """

    def __init__(
        self, server: Addr, *, up: Faults = Faults(), down: Faults = Faults(), seed: int = 1
    ) -> None:
        self.server = server
        self.up = Direction("up", up, seed, self)
        self.down = Direction("down", down, seed, self)
        self.black_hole = False
        self._listener: asyncio.DatagramTransport | None = None
        self._upstreams: dict[Addr, asyncio.DatagramTransport] = {}
        self._pending: set[asyncio.TimerHandle] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    @property
    def address(self) -> Addr:
        """Where clients should send."""
        assert self._listener is not None
        host, port = self._listener.get_extra_info("sockname")[:2]
        return host, port

    async def start(self) -> LossyRelay:
        """Bind the listening socket."""
        loop = asyncio.get_running_loop()
        self._listener, _ = await loop.create_datagram_endpoint(
            lambda: _Listener(self), local_addr=("127.0.0.1", 0)
        )
        return self

    def close(self) -> None:
        """Close every socket and forget datagrams still held back."""
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
        self._idle.set()
        for transport in self._upstreams.values():
            transport.close()
        self._upstreams.clear()
        if self._listener is not None:
            self._listener.close()
        for _, fut in self._waiters:
            if not fut.done():
                fut.cancel()
        self._waiters.clear()

    async def __aenter__(self) -> LossyRelay:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def summary(self) -> str:
        """One line per direction, for test output."""
        lines = []
        for d in (self.up, self.down):
            c = d.counters
            lines.append(
                f"{d.name:>4}: received={c.received} forwarded={c.forwarded} "
                f"dropped={c.dropped} duplicated={c.duplicated} reordered={c.reordered} "
                f"bytes={c.bytes_received}"
            )
        return "\n".join(lines)

    # ------------------------------------------------------------------ waiting (no polling)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until ``predicate()`` is true; it is re-checked after every datagram."""
        if predicate():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (predicate, fut)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                await fut
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    async def drained(self, timeout: float) -> None:
        """Wait until no held-back (delayed or reordered) datagram is left in the relay."""
        async with asyncio.timeout(timeout):
            await self._idle.wait()

    def _check_waiters(self) -> None:
        for predicate, fut in list(self._waiters):
            if not fut.done() and predicate():
                fut.set_result(None)

    # ------------------------------------------------------------------ datagram path

    def _later(self, delay: float, send: Callable[[bytes], None], data: bytes) -> None:
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._pending.discard(handle)
            send(data)
            if not self._pending:
                self._idle.set()
            self._check_waiters()

        handle = loop.call_later(delay, fire)
        self._pending.add(handle)
        self._idle.clear()

    def _from_client(self, data: bytes, addr: Addr) -> None:
        upstream = self._upstreams.get(addr)
        if upstream is None:
            asyncio.get_running_loop().create_task(self._open_upstream(data, addr))
            return
        self.up.process(data, self._counted(self.up, upstream.sendto))
        self._check_waiters()

    async def _open_upstream(self, data: bytes, addr: Addr) -> None:
        if addr in self._upstreams:  # opened meanwhile by an earlier datagram
            self._from_client(data, addr)
            return
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Upstream(self, addr), remote_addr=self.server
        )
        if addr in self._upstreams:
            transport.close()
        else:
            self._upstreams[addr] = transport
        self._from_client(data, addr)

    def _from_server(self, data: bytes, client: Addr) -> None:
        listener = self._listener
        if listener is None or listener.is_closing():
            return
        self.down.process(data, self._counted(self.down, lambda d: listener.sendto(d, client)))
        self._check_waiters()

    @staticmethod
    def _counted(direction: Direction, send: Callable[[bytes], None]) -> Callable[[bytes], None]:
        def sender(data: bytes) -> None:
            direction.counters.forwarded += 1
            send(data)

        return sender


# ---------------------------------------------------------------------- reporting


def report(text: str) -> None:
    """Show figures in the test output: logged, and on stdout (visible with ``-s``)."""
    logger.info("%s", text)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------- child processes


async def start_child(
    module: str, *args: str, ready: bytes = b"READY", timeout: float
) -> tuple[asyncio.subprocess.Process, bytes]:
    """Run ``python -m module args`` from the repository root; return it and its READY line.

    The child learns the running test's QUIC engine from ``$PYWEBTRANSPORT_TEST_ENGINE``.
    """
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}",
            CHILD_ENGINE_VARIABLE: current_engine(),
        },
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(timeout):
            line = await proc.stdout.readline()
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    if not line.startswith(ready):
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{module} did not start: {line!r}")
    return proc, line


async def stop_child(proc: asyncio.subprocess.Process, timeout: float) -> None:
    """Kill ``proc`` if it still runs and reap it."""
    if proc.returncode is None:
        proc.kill()
    async with asyncio.timeout(timeout):
        await proc.wait()
