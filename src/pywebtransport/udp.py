"""A UDP endpoint that reads in batches.

asyncio's datagram transport hands over one datagram per event-loop iteration, so every packet
would be followed by its own transmit step (and its own ACK-only packet). This endpoint drains
the socket (up to ``batch`` datagrams) in one readiness callback and passes the whole batch on,
so the connection transmits once per batch. Sends go straight to the non-blocking socket; when
the kernel buffer is full they wait in a bounded queue flushed on writability (UDP may drop
beyond that, as the network would; QUIC's loss recovery resends).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

Batch = list[tuple[bytes, Any]]
_MAX_QUEUED = 1024
_SOCKET_BUFFER = 2 * 1024 * 1024


class UdpEndpoint:
    """One non-blocking UDP socket driven by the event loop's reader callback.

    Args:
        sock: a bound (and for clients, connected) non-blocking UDP socket.
        on_batch: receives every batch of ``(data, address)`` read in one callback.
        on_error: receives socket errors (for example ICMP port unreachable).
        batch: most datagrams read per callback.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        on_batch: Callable[[Batch], None],
        on_error: Callable[[OSError], None] | None = None,
        batch: int = 64,
    ) -> None:
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._on_batch = on_batch
        self._on_error = on_error
        self._batch = batch
        self._connected = False
        self._queue: deque[tuple[bytes, Any]] = deque()
        self._closed = False
        sock.setblocking(False)
        try:
            sock.getpeername()
            self._connected = True
        except OSError:
            pass
        self._loop.add_reader(sock.fileno(), self._read_ready)

    @property
    def local_address(self) -> tuple[Any, ...]:
        """The socket's bound address."""
        return tuple(self._sock.getsockname())

    @property
    def is_closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    def _read_ready(self) -> None:
        batch: Batch = []
        recvfrom = self._sock.recvfrom
        for _ in range(self._batch):
            try:
                data, addr = recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if self._on_error is not None:
                    self._on_error(exc)
                break
            batch.append((data, addr))
        if batch:
            self._on_batch(batch)

    def sendto(self, data: bytes, addr: Any) -> None:
        """Send one datagram (to ``addr``, ignored on a connected socket)."""
        if self._closed:
            return
        if self._queue:
            self._enqueue(data, addr)
            return
        try:
            if self._connected:
                self._sock.send(data)
            else:
                self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self._enqueue(data, addr)
            self._loop.add_writer(self._sock.fileno(), self._write_ready)
        except OSError as exc:
            if self._on_error is not None:
                self._on_error(exc)

    def _enqueue(self, data: bytes, addr: Any) -> None:
        if len(self._queue) < _MAX_QUEUED:
            self._queue.append((data, addr))

    def _write_ready(self) -> None:
        while self._queue:
            data, addr = self._queue[0]
            try:
                if self._connected:
                    self._sock.send(data)
                else:
                    self._sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.debug("UDP send failed: %s", exc)
            self._queue.popleft()
        self._loop.remove_writer(self._sock.fileno())

    def close(self) -> None:
        """Stop reading and close the socket. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._sock.fileno())
        if self._queue:
            self._loop.remove_writer(self._sock.fileno())
            self._queue.clear()
        self._sock.close()


def open_udp_socket(
    *,
    local: tuple[str, int] | None = None,
    remote: Any = None,
    family: int,
    reuse_port: bool = False,
) -> socket.socket:
    """A non-blocking UDP socket, bound to ``local`` and/or connected to ``remote``.

    With ``reuse_port`` the socket sets ``SO_REUSEPORT`` before binding, so several processes
    (of the same user) can bind the same address; the kernel then spreads incoming datagrams
    over them by a hash of the 4-tuple, which keeps each client address on one socket.
    """
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if reuse_port:
            if not hasattr(socket, "SO_REUSEPORT"):
                raise OSError("SO_REUSEPORT is not available on this platform")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            # Room for a burst of packets between two reads; the kernel caps it at rmem_max.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
        if family == socket.AF_INET6 and local is not None and local[0] in ("::", ""):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        if local is not None:
            sock.bind(local)
        if remote is not None:
            sock.connect(remote)
    except OSError:
        sock.close()
        raise
    return sock
