"""A UDP endpoint that reads in batches and sends each transmit pass in as few calls as it can.

Theory of operation: asyncio's datagram transport hands over one datagram per event-loop
iteration, so every packet would be followed by its own transmit step (and its own ACK-only
packet). This endpoint drains the socket (up to ``batch`` datagrams) in one readiness callback
and passes the whole batch on, so the connection transmits once per batch. The connection then
hands over everything one transmit pass produced in one :meth:`UdpEndpoint.send` call.

Sends go straight to the non-blocking socket, without copying the packets. On Linux, runs of
packets to the same address go out as one ``sendmsg`` with a ``UDP_SEGMENT`` control message
(UDP GSO): the kernel cuts the buffers into datagrams of the segment size, so a burst of 20
full-size packets costs one system call instead of 20. A group holds at most
:data:`MAX_SEGMENTS` packets and :data:`MAX_GSO_BYTES` bytes, every packet but the last has
the first one's size and the last may be shorter (:func:`group_end`). A kernel or path that
refuses (``EINVAL``, ``EIO``: no checksum offload, ``ENOPROTOOPT``...) gets that group again
packet by packet, and GSO stays off for the rest of the endpoint's life.

When the kernel buffer is full (``EAGAIN``) the rest of the pass waits in a bounded queue
(:data:`MAX_QUEUED` packets) flushed on writability, in order, with the same grouping; beyond
that bound packets are dropped and counted (:attr:`UdpEndpoint.packets_dropped`), as are
packets the kernel drops with ``ENOBUFS``: UDP may drop, as the network would, and QUIC's loss
recovery resends.

On receive, where the kernel supports ``UDP_GRO``, the socket is read with ``recvmsg``: the
kernel may then hand over several datagrams of one sender coalesced into one buffer, with their
segment size in a control message, and :func:`split_coalesced` cuts it back into packets of the
same batch. On loopback that is what a GSO sender's packets arrive as (the kernel does not cut
them at all); from a network card, the card's driver and GRO decide.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
import sys
from collections.abc import Callable, Sequence
from typing import Any

logger = logging.getLogger(__name__)

Batch = list[tuple[bytes, Any]]

#: Most packets waiting for the socket to become writable; more are dropped.
MAX_QUEUED = 1024
_SOCKET_BUFFER = 2 * 1024 * 1024

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
#: Most segments in one GSO send (the kernel's limit for years; newer kernels accept more).
MAX_SEGMENTS = 64
#: Most bytes in one GSO send: the largest UDP payload of an IPv4 datagram, 65,535 minus the
#: IPv4 and UDP headers (the kernel answers EMSGSIZE above it; IPv6 would allow 65,527).
MAX_GSO_BYTES = 65_507
#: The errors with which a kernel or a path refuses GSO; GSO is switched off after one of them.
GSO_REFUSED = frozenset(
    {errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.EMSGSIZE}
)
_SEGMENT_SIZE = struct.Struct("=H")  # UDP_SEGMENT's value: a u16
_GRO_SIZE = struct.Struct("=i")  # UDP_GRO's control message: an int
_RECEIVE_SIZE = 65535
_LINUX = sys.platform.startswith("linux")
_GRO_CMSG_SPACE = socket.CMSG_SPACE(_GRO_SIZE.size) if hasattr(socket, "CMSG_SPACE") else 0


def group_end(
    packets: Sequence[tuple[bytes, Any]], start: int, *, any_address: bool = False
) -> int:
    """The end (exclusive) of the GSO group that starts at ``packets[start]``.

    The group takes the following packets while they go to the same address (any address with
    ``any_address``, for a connected socket), have the first packet's size (the one that is
    shorter ends the group), and the group stays within :data:`MAX_SEGMENTS` packets and
    :data:`MAX_GSO_BYTES` bytes. ``start + 1`` means a group of one.
    """
    data, addr = packets[start]
    size = len(data)
    total = size
    end = start + 1
    limit = min(len(packets), start + MAX_SEGMENTS)
    while end < limit:
        following, to = packets[end]
        length = len(following)
        if length > size or total + length > MAX_GSO_BYTES:
            break
        if not any_address and to is not addr and to != addr:
            break
        total += length
        end += 1
        if length < size:
            break
    return end


def split_coalesced(data: bytes, segment: int) -> list[bytes]:
    """Cut a GRO buffer into its datagrams: ``segment`` bytes each, the last may be shorter."""
    if segment <= 0 or len(data) <= segment:
        return [data]
    return [data[i : i + segment] for i in range(0, len(data), segment)]


def _gso_supported(sock: socket.socket) -> bool:
    if not _LINUX or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        sock.getsockopt(SOL_UDP, UDP_SEGMENT)
    except OSError:
        return False
    return True


def _enable_gro(sock: socket.socket) -> bool:
    if not _LINUX or not _GRO_CMSG_SPACE or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


class UdpEndpoint:
    """One non-blocking UDP socket driven by the event loop's reader callback.

    Args:
        sock: a bound (and for clients, connected) non-blocking UDP socket.
        on_batch: receives every batch of ``(data, address)`` read in one callback.
        on_error: receives socket errors (for example ICMP port unreachable).
        batch: datagrams read per callback before the batch is passed on (a coalesced GRO
            buffer read last may add up to :data:`MAX_SEGMENTS` - 1 more).
        gso: send groups of packets with UDP GSO where the kernel supports it.
        gro: receive coalesced datagrams with UDP GRO where the kernel supports it.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        on_batch: Callable[[Batch], None],
        on_error: Callable[[OSError], None] | None = None,
        batch: int = 64,
        gso: bool = True,
        gro: bool = True,
    ) -> None:
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._on_batch = on_batch
        self._on_error = on_error
        self._batch = batch
        self._connected = False
        self._queue: list[tuple[bytes, Any]] = []
        self._closed = False
        #: Packets not sent: the queue was full, or the kernel dropped them (ENOBUFS).
        self.packets_dropped = 0
        sock.setblocking(False)
        try:
            sock.getpeername()
            self._connected = True
        except OSError:
            pass
        self._gso = gso and _gso_supported(sock)
        self._gro = gro and _enable_gro(sock)
        reader = self._read_ready_gro if self._gro else self._read_ready
        self._loop.add_reader(sock.fileno(), reader)

    @property
    def local_address(self) -> tuple[Any, ...]:
        """The socket's bound address."""
        return tuple(self._sock.getsockname())

    @property
    def is_closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    @property
    def gso(self) -> bool:
        """True while sends use UDP GSO (off when unsupported or after a refusal)."""
        return self._gso

    @property
    def gro(self) -> bool:
        """True when the socket receives coalesced datagrams (UDP GRO)."""
        return self._gro

    # ----------------------------------------------------------------------------- receive

    def _read_ready(self) -> None:
        batch: Batch = []
        recvfrom = self._sock.recvfrom
        for _ in range(self._batch):
            try:
                data, addr = recvfrom(_RECEIVE_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if self._on_error is not None:
                    self._on_error(exc)
                break
            batch.append((data, addr))
        if batch:
            self._on_batch(batch)

    def _read_ready_gro(self) -> None:
        batch: Batch = []
        recvmsg = self._sock.recvmsg
        limit = self._batch
        while len(batch) < limit:
            try:
                data, ancdata, _flags, addr = recvmsg(_RECEIVE_SIZE, _GRO_CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if self._on_error is not None:
                    self._on_error(exc)
                break
            if ancdata:  # only UDP_GRO is enabled: its segment size
                _level, kind, value = ancdata[0]
                segment = _GRO_SIZE.unpack_from(value)[0] if kind == UDP_GRO else 0
                if 0 < segment < len(data):
                    batch.extend([(part, addr) for part in split_coalesced(data, segment)])
                    continue
            batch.append((data, addr))
        if batch:
            self._on_batch(batch)

    # ----------------------------------------------------------------------------- send

    def sendto(self, data: bytes, addr: Any) -> None:
        """Send one datagram (to ``addr``, ignored on a connected socket)."""
        self.send([(data, addr)])

    def send(self, packets: Sequence[tuple[bytes, Any]]) -> None:
        """Send datagrams in order: ``(data, address)``, the address ignored when connected.

        Meant to be called once per transmit pass with everything the pass produced, so that
        runs of packets to one address can go out in one GSO call.
        """
        if self._closed or not packets:
            return
        if self._queue:
            self._enqueue(packets, 0)
            return
        sent = self._send_from(packets, 0)
        if sent < len(packets) and not self._closed:
            self._enqueue(packets, sent)
            self._loop.add_writer(self._sock.fileno(), self._write_ready)

    def _send_from(self, packets: Sequence[tuple[bytes, Any]], start: int) -> int:
        """Send ``packets[start:]``; return where the socket buffer filled up (or the end)."""
        sock = self._sock
        connected = self._connected
        count = len(packets)
        i = start
        while i < count:
            end = i + 1
            if self._gso and count - i > 1:
                end = group_end(packets, i, any_address=connected)
            try:
                if end - i > 1:
                    cmsg = [(SOL_UDP, UDP_SEGMENT, _SEGMENT_SIZE.pack(len(packets[i][0])))]
                    buffers = [packets[k][0] for k in range(i, end)]
                    if connected:
                        sock.sendmsg(buffers, cmsg)
                    else:
                        sock.sendmsg(buffers, cmsg, 0, packets[i][1])
                elif connected:
                    sock.send(packets[i][0])
                else:
                    data, addr = packets[i]
                    sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return i
            except OSError as exc:
                if end - i > 1 and exc.errno in GSO_REFUSED:
                    logger.debug("UDP GSO refused (%s): sending packet by packet from now on", exc)
                    self._gso = False
                    continue  # the same group again, one packet at a time
                self._send_failed(exc, end - i)
                if self._closed:
                    return count
            i = end
        return count

    def _send_failed(self, exc: OSError, packets: int) -> None:
        if exc.errno == errno.ENOBUFS:  # dropped on the way out (qdisc, device queue)
            self.packets_dropped += packets
            logger.debug("UDP send dropped %d packet(s): %s", packets, exc)
        elif self._on_error is not None:
            self._on_error(exc)
        else:
            logger.debug("UDP send failed: %s", exc)

    def _enqueue(self, packets: Sequence[tuple[bytes, Any]], start: int) -> None:
        queue = self._queue
        room = MAX_QUEUED - len(queue)
        stop = min(len(packets), start + max(room, 0))
        queue.extend(packets[start:stop])
        self.packets_dropped += len(packets) - stop

    def _write_ready(self) -> None:
        queue = self._queue
        sent = self._send_from(queue, 0)
        if self._closed:
            return
        del queue[:sent]
        if not queue:
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
