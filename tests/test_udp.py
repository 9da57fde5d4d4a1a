"""Tests of the UDP endpoint: batched reads, GSO segment groups and their fallback, GRO."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from pywebtransport import udp
from pywebtransport.udp import (
    MAX_GSO_BYTES,
    MAX_QUEUED,
    MAX_SEGMENTS,
    UdpEndpoint,
    group_end,
    split_coalesced,
)

#: Bound for every wait in this module (seconds).
T = 5.0

A = ("127.0.0.1", 1000)
B = ("127.0.0.1", 2000)


def _kernel_has(probe: Callable[[socket.socket], bool]) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        return probe(sock)


HAS_GSO = _kernel_has(udp._gso_supported)
HAS_GRO = _kernel_has(udp._enable_gro)
needs_gso = pytest.mark.skipif(not HAS_GSO, reason="the kernel has no UDP_SEGMENT (Linux 4.18+)")


class PatchableSocket(socket.socket):
    """A socket whose methods a test may replace on the instance (``socket.socket`` has slots)."""


def packets_of(sizes: list[int], addr: Any = A) -> list[tuple[bytes, Any]]:
    """Distinct payloads of the given sizes (each starts with its index), all to ``addr``."""
    out = []
    for index, size in enumerate(sizes):
        head = index.to_bytes(4, "big")
        out.append(((head + bytes([index % 251]) * size)[:size], addr))
    return out


# ---------------------------------------------------------------------------------- grouping


def ends(packets: list[tuple[bytes, Any]], *, any_address: bool = False) -> list[int]:
    """Where each GSO group ends when ``packets`` are sent in order."""
    out, start = [], 0
    while start < len(packets):
        start = group_end(packets, start, any_address=any_address)
        out.append(start)
    return out


def test_equal_sizes_form_one_group() -> None:
    assert ends(packets_of([1200] * 10)) == [10]


def test_a_shorter_packet_ends_the_group() -> None:
    assert ends(packets_of([1200, 1200, 500, 1200, 1200])) == [3, 5]


def test_a_larger_packet_starts_a_new_group() -> None:
    assert ends(packets_of([500, 500, 1200, 1200])) == [2, 4]


def test_a_single_packet_is_a_group_of_one() -> None:
    assert ends(packets_of([1200])) == [1]
    assert ends(packets_of([100, 1200, 100])) == [1, 3]


def test_at_most_max_segments_per_group() -> None:
    assert ends(packets_of([100] * (2 * MAX_SEGMENTS + 5))) == [
        MAX_SEGMENTS,
        2 * MAX_SEGMENTS,
        2 * MAX_SEGMENTS + 5,
    ]


def test_at_most_max_gso_bytes_per_group() -> None:
    per_group = MAX_GSO_BYTES // 1200  # 54
    assert ends(packets_of([1200] * 60)) == [per_group, 60]
    size = MAX_GSO_BYTES // 40  # 40 of them and a short last one fill the cap exactly
    rest = MAX_GSO_BYTES - 40 * size
    assert ends(packets_of([size] * 40 + [rest])) == [41]
    assert ends(packets_of([size] * 40 + [rest + 1])) == [40, 41]


def test_different_addresses_are_never_grouped() -> None:
    packets = packets_of([1200] * 2, A) + packets_of([1200] * 2, B) + packets_of([1200], A)
    assert ends(packets) == [2, 4, 5]


def test_equal_address_tuples_group_and_a_connected_socket_ignores_addresses() -> None:
    packets = [(b"x" * 100, ("127.0.0.1", 1000)), (b"y" * 100, ("127.0.0.1", 1000))]
    assert ends(packets) == [2]
    mixed = packets_of([100] * 2, A) + packets_of([100] * 2, B)
    assert ends(mixed, any_address=True) == [4]


def groups_of(sizes: list[int]) -> list[list[int]]:
    """The sizes of ``sizes`` split into the GSO groups they are sent in."""
    out, start = [], 0
    for end in ends(packets_of(sizes)):
        out.append(sizes[start:end])
        start = end
    return out


def test_groups_of_a_transmit_pass() -> None:
    assert groups_of([1200, 900, 900, 1200, 1200, 40]) == [[1200, 900], [900], [1200, 1200, 40]]


# ---------------------------------------------------------------------------------- GRO splitting


def test_split_coalesced_equal_segments() -> None:
    data = b"a" * 4 + b"b" * 4 + b"c" * 4
    assert split_coalesced(data, 4) == [b"aaaa", b"bbbb", b"cccc"]


def test_split_coalesced_short_last_segment() -> None:
    assert split_coalesced(b"aaaabbbbcc", 4) == [b"aaaa", b"bbbb", b"cc"]


def test_split_coalesced_one_datagram() -> None:
    assert split_coalesced(b"aaaa", 4) == [b"aaaa"]
    assert split_coalesced(b"aa", 4) == [b"aa"]
    assert split_coalesced(b"aaaa", 0) == [b"aaaa"]


def test_split_coalesced_round_trips_groups() -> None:
    packets = packets_of([1200] * 7 + [333])
    data = b"".join(p for p, _ in packets)
    assert split_coalesced(data, 1200) == [p for p, _ in packets]


# ---------------------------------------------------------------------------------- loopback


class Receiver:
    """A receiving endpoint that records every datagram and the batches they came in."""

    def __init__(self, family: int, host: str, *, gro: bool) -> None:
        sock = udp.open_udp_socket(local=(host, 0), family=family)
        self.received: list[bytes] = []
        self.batches = 0
        self._want = 0
        self._enough = asyncio.Event()
        self.endpoint = UdpEndpoint(sock, on_batch=self._on_batch, gro=gro)

    @property
    def address(self) -> Any:
        return self.endpoint.local_address

    def _on_batch(self, batch: udp.Batch) -> None:
        self.batches += 1
        self.received.extend(data for data, _ in batch)
        if len(self.received) >= self._want:
            self._enough.set()

    async def wait_for(self, count: int) -> list[bytes]:
        """Wait (bounded) until ``count`` datagrams arrived in total; return them all."""
        self._want = count
        if len(self.received) < count:
            self._enough.clear()
            async with asyncio.timeout(T):
                await self._enough.wait()
        return self.received


def make_sender(
    family: int, host: str, remote: Any, *, connected: bool, gso: bool
) -> tuple[UdpEndpoint, PatchableSocket]:
    sock = PatchableSocket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    if connected:
        sock.connect(remote[:2])
    errors: list[OSError] = []
    endpoint = UdpEndpoint(sock, on_batch=lambda batch: None, on_error=errors.append, gso=gso)
    return endpoint, sock


FAMILIES = [(socket.AF_INET, "127.0.0.1")]
if socket.has_ipv6:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
        FAMILIES.append((socket.AF_INET6, "::1"))
    except OSError:
        pass

#: Sizes as one transmit pass produces them: full packets, a short one, different sizes.
PASSES = [
    [1200] * 20 + [700],
    [1200] * 3,
    [1] * 5,
    [1500] * 50,  # more bytes than one group may carry
    [100] * (MAX_SEGMENTS + 10),  # more segments than one group may carry
    [1200, 900, 900, 1200, 1200, 40],
    [1200],
]


@pytest.fixture
async def cleanup() -> AsyncIterator[list[UdpEndpoint]]:
    endpoints: list[UdpEndpoint] = []
    yield endpoints
    for endpoint in endpoints:
        endpoint.close()


@pytest.mark.parametrize(("family", "host"), FAMILIES, ids=lambda v: str(v))
@pytest.mark.parametrize("connected", [False, True], ids=["unconnected", "connected"])
@pytest.mark.parametrize("gso", [True, False], ids=["gso", "no-gso"])
@pytest.mark.parametrize("gro", [True, False], ids=["gro", "no-gro"])
async def test_every_packet_arrives_intact_and_in_order(
    cleanup: list[UdpEndpoint], family: int, host: str, connected: bool, gso: bool, gro: bool
) -> None:
    receiver = Receiver(family, host, gro=gro)
    sender, sock = make_sender(family, host, receiver.address, connected=connected, gso=gso)
    cleanup += [receiver.endpoint, sender]
    assert sender.gso == (gso and HAS_GSO)
    assert receiver.endpoint.gro == (gro and HAS_GRO)
    calls = {"sendmsg": 0}
    real_sendmsg = sock.sendmsg

    def counting_sendmsg(*args: Any) -> int:
        calls["sendmsg"] += 1
        return real_sendmsg(*args)

    sock.sendmsg = counting_sendmsg  # type: ignore[method-assign]
    expected: list[bytes] = []
    for sizes in PASSES:
        packets = packets_of(sizes, receiver.address)
        sender.send(packets)
        expected += [data for data, _ in packets]
        assert await receiver.wait_for(len(expected)) == expected
    assert sender.packets_dropped == 0
    groups = sum(len(group) > 1 for sizes in PASSES for group in groups_of(sizes))
    assert groups > len(PASSES)
    assert calls["sendmsg"] == (groups if sender.gso else 0)


@needs_gso
@pytest.mark.skipif(not HAS_GRO, reason="the kernel has no UDP_GRO (Linux 5.0+)")
async def test_gro_receives_a_gso_group_in_one_read(cleanup: list[UdpEndpoint]) -> None:
    receiver = Receiver(socket.AF_INET, "127.0.0.1", gro=True)
    sender, _ = make_sender(socket.AF_INET, "127.0.0.1", receiver.address, connected=True, gso=True)
    cleanup += [receiver.endpoint, sender]
    packets = packets_of([1200] * 30 + [10], receiver.address)
    sender.send(packets)
    assert await receiver.wait_for(len(packets)) == [data for data, _ in packets]
    assert receiver.batches == 1


@needs_gso
@pytest.mark.parametrize("code", [errno.EINVAL, errno.EIO, errno.ENOPROTOOPT])
async def test_a_refused_gso_send_falls_back_for_good(
    cleanup: list[UdpEndpoint], code: int
) -> None:
    receiver = Receiver(socket.AF_INET, "127.0.0.1", gro=False)
    sender, sock = make_sender(
        socket.AF_INET, "127.0.0.1", receiver.address, connected=False, gso=True
    )
    cleanup += [receiver.endpoint, sender]
    refused: list[int] = []

    def refusing_sendmsg(*args: Any) -> int:
        refused.append(len(args[0]))
        raise OSError(code, "refused")

    sock.sendmsg = refusing_sendmsg  # type: ignore[method-assign]
    first = packets_of([1200] * 10 + [300], receiver.address)
    sender.send(first)
    assert refused == [11]
    assert not sender.gso
    second = packets_of([1200] * 10, receiver.address)
    sender.send(second)
    assert refused == [11]  # never tried again
    expected = [data for data, _ in first + second]
    assert await receiver.wait_for(len(expected)) == expected
    assert sender.packets_dropped == 0


@needs_gso
async def test_enobufs_drops_the_group_and_keeps_gso(cleanup: list[UdpEndpoint]) -> None:
    receiver = Receiver(socket.AF_INET, "127.0.0.1", gro=False)
    sender, sock = make_sender(
        socket.AF_INET, "127.0.0.1", receiver.address, connected=False, gso=True
    )
    cleanup += [receiver.endpoint, sender]
    real_sendmsg = sock.sendmsg
    failures = [OSError(errno.ENOBUFS, "No buffer space available")]

    def flaky_sendmsg(*args: Any) -> int:
        if failures:
            raise failures.pop()
        return real_sendmsg(*args)

    sock.sendmsg = flaky_sendmsg  # type: ignore[method-assign]
    sender.send(packets_of([1200] * 5, receiver.address))
    assert sender.packets_dropped == 5
    assert sender.gso
    kept = packets_of([1200] * 5, receiver.address)
    sender.send(kept)
    assert await receiver.wait_for(5) == [data for data, _ in kept]


@pytest.mark.parametrize("gso", [True, False], ids=["gso", "no-gso"])
async def test_a_full_socket_buffer_queues_in_order(cleanup: list[UdpEndpoint], gso: bool) -> None:
    receiver = Receiver(socket.AF_INET, "127.0.0.1", gro=False)
    sender, sock = make_sender(
        socket.AF_INET, "127.0.0.1", receiver.address, connected=False, gso=gso
    )
    cleanup += [receiver.endpoint, sender]
    full = {"left": 2}
    real_sendmsg, real_sendto = sock.sendmsg, sock.sendto

    def busy(real: Callable[..., int]) -> Callable[..., int]:
        def call(*args: Any) -> int:
            if full["left"] > 0:
                full["left"] -= 1
                raise BlockingIOError(errno.EAGAIN, "full")
            return real(*args)

        return call

    sock.sendmsg = busy(real_sendmsg)  # type: ignore[method-assign]
    sock.sendto = busy(real_sendto)  # type: ignore[method-assign]
    first = packets_of([1200] * 8 + [100], receiver.address)
    second = packets_of([1200] * 4, receiver.address)
    sender.send(first)  # refused at once: everything waits for writability
    sender.send(second)  # behind the queue, in order
    expected = [data for data, _ in first + second]
    assert await receiver.wait_for(len(expected)) == expected
    assert sender.packets_dropped == 0
    assert sender.gso == (gso and HAS_GSO)


async def test_the_queue_is_bounded_and_drops_are_counted(cleanup: list[UdpEndpoint]) -> None:
    receiver = Receiver(socket.AF_INET, "127.0.0.1", gro=False)
    sender, sock = make_sender(
        socket.AF_INET, "127.0.0.1", receiver.address, connected=False, gso=True
    )
    cleanup += [receiver.endpoint, sender]

    def full(*args: Any) -> int:
        raise BlockingIOError(errno.EAGAIN, "full")

    sock.sendmsg = full  # type: ignore[method-assign]
    sock.sendto = full  # type: ignore[method-assign]
    sender.send(packets_of([100] * (MAX_QUEUED - 10), receiver.address))
    sender.send(packets_of([100] * 30, receiver.address))
    assert sender.packets_dropped == 20
    sender.close()
    sender.send(packets_of([100], receiver.address))  # closed: ignored
    assert sender.packets_dropped == 20


async def test_a_send_error_is_reported_and_the_rest_is_sent(cleanup: list[UdpEndpoint]) -> None:
    receiver = Receiver(socket.AF_INET, "127.0.0.1", gro=False)
    sock = PatchableSocket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    errors: list[OSError] = []
    sender = UdpEndpoint(sock, on_batch=lambda batch: None, on_error=errors.append, gso=False)
    cleanup += [receiver.endpoint, sender]
    real_sendto = sock.sendto
    failures = [OSError(errno.EPERM, "Operation not permitted")]

    def sendto(*args: Any) -> int:
        if failures:
            raise failures.pop()
        return real_sendto(*args)

    sock.sendto = sendto  # type: ignore[method-assign]
    packets = packets_of([50] * 3, receiver.address)
    sender.send(packets)
    assert [e.errno for e in errors] == [errno.EPERM]
    assert await receiver.wait_for(2) == [data for data, _ in packets[1:]]


@needs_gso
async def test_a_dual_stack_socket_groups_to_ipv4_mapped_addresses(
    cleanup: list[UdpEndpoint],
) -> None:
    receiver = Receiver(socket.AF_INET, "127.0.0.1", gro=False)
    try:
        sock = udp.open_udp_socket(local=("::", 0), family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6")
    sender = UdpEndpoint(sock, on_batch=lambda batch: None)
    cleanup += [receiver.endpoint, sender]
    mapped = ("::ffff:127.0.0.1", receiver.address[1], 0, 0)
    # one group of exactly the 65,507 bytes an IPv4 datagram can carry, then another
    packets = packets_of([1200] * 54 + [MAX_GSO_BYTES - 54 * 1200] + [1200] * 3, mapped)
    assert ends(packets) == [55, 58]
    sender.send(packets)
    assert await receiver.wait_for(len(packets)) == [data for data, _ in packets]
    assert sender.gso
