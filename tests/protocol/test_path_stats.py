"""The engines' path statistics (``QuicEngine.path_stats``) and acknowledged stream bytes.

Both engines count the UDP datagrams and bytes they send and receive themselves; these tests
watch every packet between two in-memory cores and compare.
"""

from __future__ import annotations

from pathlib import Path

from pywebtransport.protocol.quic import PathStats
from tests.protocol.pair import Pair


def watched_pair(tmp_path: Path) -> tuple[Pair, int, dict[str, list[int]]]:
    """A pair with a session open, its ID, and the sizes of the packets each side sends from
    now on."""
    pair = Pair(tmp_path)
    sid = pair.open_session()
    seen: dict[str, list[int]] = {"client": [], "server": []}

    def watch(side: str, data: bytes) -> bool:
        seen[side].append(len(data))
        return False

    pair.drop_if = watch
    return pair, sid, seen


def test_engines_count_every_packet_and_byte_both_ways(tmp_path: Path) -> None:
    pair, sid, seen = watched_pair(tmp_path)
    client_before = pair.client.path_stats()
    server_before = pair.server.path_stats()
    stream_id = pair.client.create_stream(sid, bidirectional=False)
    payload = b"p" * 60_000
    sent = 0
    while sent < len(payload):
        room = min(pair.client.send_capacity(stream_id), len(payload) - sent)
        if room:
            pair.client.send_stream_data(stream_id, payload[sent : sent + room])
            sent += room
        pair.roundtrip(limit=2000)
    client = pair.client.path_stats()
    server = pair.server.path_stats()
    assert client.packets_sent - client_before.packets_sent == len(seen["client"])
    assert client.bytes_sent - client_before.bytes_sent == sum(seen["client"])
    assert server.packets_received - server_before.packets_received == len(seen["client"])
    assert server.bytes_received - server_before.bytes_received == sum(seen["client"])
    assert server.packets_sent - server_before.packets_sent == len(seen["server"])
    assert client.bytes_received - client_before.bytes_received == sum(seen["server"])
    assert sum(seen["client"]) > len(payload)  # headers on top of the payload
    assert client.congestion_window is not None and client.congestion_window > 0
    assert client.packets_lost == 0
    if pair.engine_name == "aioquic":
        assert client.bytes_lost == 0
        assert client.rtt_variation is not None and client.min_rtt is not None
    else:  # qh3 exposes neither (docs/architecture.md, the QUIC engines)
        assert client.bytes_lost is None
        assert client.rtt_variation is None and client.min_rtt is None


def test_lost_packets_are_counted(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    sid = pair.open_session()
    stream_id = pair.client.create_stream(sid, bidirectional=False)
    pair.client.send_stream_data(stream_id, b"l" * 30_000)
    dropped = [0, 0]

    def lose_first_flight(side: str, data: bytes) -> bool:
        if side == "client" and dropped[0] < 3:
            dropped[0] += 1
            dropped[1] += len(data)
            return True
        return False

    pair.drop_if = lose_first_flight
    pair.roundtrip(limit=1000, horizon=5.0)
    stats = pair.client.path_stats()
    assert dropped[0] == 3
    assert stats.packets_lost is not None and stats.packets_lost >= 3
    if pair.engine_name == "aioquic":
        assert stats.bytes_lost is not None and stats.bytes_lost >= dropped[1]


def test_acknowledged_stream_bytes(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    sid = pair.open_session()
    stream_id = pair.client.create_stream(sid, bidirectional=True)
    pair.client.send_stream_data(stream_id, b"a" * 50_000)
    # Nothing has left yet: nothing of it can have been acknowledged.
    before = pair.client.send_acknowledged(stream_id, 50_000)
    pair.roundtrip()
    after = pair.client.send_acknowledged(stream_id, 50_000)
    if pair.engine_name == "aioquic":
        assert before == 0
        assert after == 50_000
    else:  # qh3 tells only an upper bound of the unacknowledged bytes
        assert before is None and after is None


def test_path_stats_before_the_first_rtt_sample(tmp_path: Path) -> None:
    pair = Pair(tmp_path)  # the client's Initial sent, nothing received
    stats = pair.client.path_stats()
    assert isinstance(stats, PathStats)
    assert stats.packets_sent >= 1 and stats.bytes_sent >= 1200
    assert stats.packets_received == stats.bytes_received == 0
    assert stats.smoothed_rtt is None and stats.min_rtt is None and stats.rtt_variation is None
