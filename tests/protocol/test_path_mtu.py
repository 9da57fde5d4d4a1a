"""Path MTU discovery in memory, on both engines: packets grow to the ceiling after the
handshake, settle on what a narrower path carries, and (aioquic) fall back when the path
shrinks. Time only moves through the pair's own timers.

The engines differ where docs/architecture.md says: qh3 probes only as a client, tries 1280,
1350 and 1452 (one probe each), and never falls back.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from pywebtransport.protocol import events as ev
from pywebtransport.protocol.pmtu import BLACK_HOLE_RETRY, CANDIDATES, MAX_PROBES
from tests.conftest import NO_PATH_FALLBACK, current_engine
from tests.protocol.pair import Pair

BASE = 1200
CEILING = 1452
#: Bytes of a packet around a datagram's payload: short header (first byte, our 8-byte CID,
#: 2-byte packet number), AEAD tag, DATAGRAM frame type and length, quarter-stream-ID prefix.
OVERHEAD = 1 + 8 + 2 + 16 + 1 + 2 + 1


def probe_sizes() -> tuple[int, ...]:
    """The sizes the running engine's client probes (qh3 has its own list)."""
    return (1280, 1350, 1452) if current_engine() == "qh3" else CANDIDATES


def probes_as_server() -> bool:
    return current_engine() != "qh3"


def settle(pair: Pair) -> None:
    """Run the pair until every probe was answered or given up (timers within a second)."""
    pair.roundtrip(horizon=1.0)


def exchange_datagrams(pair: Pair, sid: int) -> None:
    """Each side sends a datagram of its largest size; the other receives it whole."""
    for side, core, other in (("client", pair.client, "server"), ("server", pair.server, "client")):
        size = core.max_datagram_size(sid)
        core.send_datagram(sid, side[0].encode() * size)
        pair.roundtrip()
        assert ev.DatagramReceived(sid, side[0].encode() * size) in pair.take(
            other, ev.DatagramReceived
        )


def test_packets_grow_to_the_ceiling_after_the_handshake(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    assert pair.client.engine.max_udp_payload() == BASE  # the handshake uses the base
    assert pair.client.engine.probing_path_mtu()
    sid = pair.open_session()
    settle(pair)
    assert not pair.client.engine.probing_path_mtu()
    assert not pair.server.engine.probing_path_mtu()
    assert pair.client.engine.max_udp_payload() == CEILING
    assert pair.client.max_datagram_size(sid) == CEILING - OVERHEAD
    server = CEILING if probes_as_server() else BASE
    assert pair.server.engine.max_udp_payload() == server
    assert pair.server.max_datagram_size(sid) == server - OVERHEAD
    exchange_datagrams(pair, sid)
    assert pair.largest_sent == {"client": CEILING, "server": server}
    assert not pair.dropped_sizes


def test_a_quiet_connection_completes_its_search(tmp_path: Path) -> None:
    """No session, nothing to send after the handshake: the probes go anyway (qh3 sends one
    only along with other packets; the engine gives it a PING to go with)."""
    pair = Pair(tmp_path)
    settle(pair)
    assert pair.client.engine.max_udp_payload() == CEILING
    assert not pair.client.engine.probing_path_mtu()
    assert pair.server.engine.max_udp_payload() == (CEILING if probes_as_server() else BASE)


def test_a_ceiling_at_the_base_turns_discovery_off(tmp_path: Path) -> None:
    pair = Pair(tmp_path, max_path_udp_payload=BASE)
    assert not pair.client.engine.probing_path_mtu()
    sid = pair.open_session()
    settle(pair)
    for core in (pair.client, pair.server):
        assert core.engine.max_udp_payload() == BASE
        assert core.max_datagram_size(sid) == BASE - OVERHEAD
    exchange_datagrams(pair, sid)
    assert pair.largest_sent == {"client": BASE, "server": BASE}  # no probe either


def test_a_lower_ceiling_is_probed_and_never_exceeded(tmp_path: Path) -> None:
    pair = Pair(tmp_path, max_path_udp_payload=1380)
    sid = pair.open_session()
    settle(pair)
    # aioquic tries the ceiling itself; qh3's next size (1452) is above it: it stops at 1350.
    expected = 1350 if current_engine() == "qh3" else 1380
    assert pair.client.engine.max_udp_payload() == expected
    exchange_datagrams(pair, sid)
    assert pair.largest_sent["client"] == expected


@pytest.mark.parametrize("path_mtu", [1250, 1300, 1380, 1451])
def test_a_narrower_path_settles_on_the_largest_size_it_carries(
    tmp_path: Path, path_mtu: int
) -> None:
    pair = Pair(tmp_path)
    pair.max_size = path_mtu  # packets above it are dropped, from the first one on
    sid = pair.open_session()
    settle(pair)
    fits = max([BASE, *(size for size in probe_sizes() if size <= path_mtu)])
    assert pair.client.engine.max_udp_payload() == fits
    if probes_as_server():
        assert pair.server.engine.max_udp_payload() == fits
    # Only probes were too long: the first size above the path, MAX_PROBES times by each side
    # that probes (qh3: once, by the client).
    failed = min(size for size in probe_sizes() if size > path_mtu)
    tries = 2 * MAX_PROBES if probes_as_server() else 1
    assert Counter(pair.dropped_sizes) == {failed: tries}
    exchange_datagrams(pair, sid)
    stream_id = pair.client.create_stream(sid, bidirectional=True)
    pair.client.send_stream_data(stream_id, b"s" * 100_000, end_stream=True)
    pair.roundtrip(limit=2000)
    got = b"".join(e.data for e in pair.take("server", ev.StreamData))  # type: ignore[attr-defined]
    assert got == b"s" * 100_000
    assert Counter(pair.dropped_sizes) == {failed: tries}  # no data packet was lost


def run_watching(pair: Pair, horizon: float, sizes: dict[str, set[int]]) -> None:
    """:meth:`Pair.roundtrip`, noting every packet size each side used on the way."""
    for _ in range(5000):
        moved = pair.transfer()
        sizes["client"].add(pair.client.engine.max_udp_payload())
        sizes["server"].add(pair.server.engine.max_udp_payload())
        if moved == 0 and not pair.step(horizon):
            return
    raise AssertionError("the cores never went quiet")


def test_random_losses_of_large_packets_are_no_black_hole(tmp_path: Path) -> None:
    """Large packets lost now and then, others of their size getting through: no fall back."""
    pair = Pair(tmp_path)
    sid = pair.open_session()
    settle(pair)
    count = 0

    def every_fifth_large(side: str, data: bytes) -> bool:
        nonlocal count
        if side != "client" or len(data) <= 1400:
            return False
        count += 1
        return count % 5 == 0

    pair.drop_if = every_fifth_large
    stream_id = pair.client.create_stream(sid, bidirectional=False)
    pair.client.send_stream_data(stream_id, b"r" * 300_000, end_stream=True)
    sizes: dict[str, set[int]] = {"client": set(), "server": set()}
    run_watching(pair, 5.0, sizes)
    got = b"".join(e.data for e in pair.take("server", ev.StreamData))  # type: ignore[attr-defined]
    assert got == b"r" * 300_000
    assert len(pair.dropped_sizes) >= 30  # many losses...
    assert sizes["client"] == {CEILING}  # ... and never a fall back


@pytest.mark.aioquic_only(NO_PATH_FALLBACK)
def test_a_path_that_shrinks_falls_back_to_the_base_and_data_still_flows(
    tmp_path: Path,
) -> None:
    pair = Pair(tmp_path)
    sid = pair.open_session()
    settle(pair)
    assert pair.client.engine.max_udp_payload() == CEILING
    pair.max_size = 1300  # a route change: the large packets vanish from now on
    streams = {}
    for side, core in (("client", pair.client), ("server", pair.server)):
        stream_id = core.create_stream(sid, bidirectional=False)
        core.send_stream_data(stream_id, side[0].encode() * 100_000, end_stream=True)
        streams[side] = stream_id
    sizes: dict[str, set[int]] = {"client": set(), "server": set()}
    run_watching(pair, 5.0, sizes)  # loss detection, PTOs: each side finds the black hole
    for side, other in (("client", "server"), ("server", "client")):
        assert BASE in sizes[side], side  # fell back to the base...
        got = b"".join(
            e.data  # type: ignore[attr-defined]
            for e in pair.take(other, ev.StreamData)
            if e.stream_id == streams[side]  # type: ignore[attr-defined]
        )
        assert got == side[0].encode() * 100_000  # ... and the data still arrived
    assert max(pair.dropped_sizes) == CEILING  # full-size packets were lost
    # Soon after, the path is searched again and settles on what it carries now.
    pair.now += BLACK_HOLE_RETRY
    settle(pair)
    assert pair.client.engine.max_udp_payload() == 1280
    assert pair.server.engine.max_udp_payload() == 1280
    exchange_datagrams(pair, sid)


def test_a_new_path_starts_again_from_the_base(tmp_path: Path) -> None:
    """A NAT rebinding moves the server to a path whose MTU is unknown (here: narrower)."""
    pair = Pair(tmp_path)
    sid = pair.open_session()
    settle(pair)
    assert pair.server.engine.max_udp_payload() == (CEILING if probes_as_server() else BASE)
    pair.client_addr = ("127.0.0.1", 50001)
    pair.max_size = 1300
    pair.client.send_ping()  # the client's first packet from its new address
    pair.roundtrip(horizon=1.0)
    stream_id = pair.server.create_stream(sid, bidirectional=False)
    pair.server.send_stream_data(stream_id, b"n" * 50_000, end_stream=True)
    pair.roundtrip(limit=2000, horizon=1.0)
    got = b"".join(e.data for e in pair.take("client", ev.StreamData))  # type: ignore[attr-defined]
    assert got == b"n" * 50_000
    if probes_as_server():  # found again on the new path; only probes were too long for it
        assert pair.server.engine.max_udp_payload() == 1280
        assert Counter(pair.dropped_sizes) == {1350: MAX_PROBES}
    else:
        assert not pair.dropped_sizes
