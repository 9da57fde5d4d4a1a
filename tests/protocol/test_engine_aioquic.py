"""The aioquic engine: what an idle connection keeps, and canaries for aioquic's internals.

The engine reaches into aioquic's ``QuicConnection`` for a few private names (each marked
``# aioquic internals`` in engine_aioquic.py). An aioquic release that renames or reshapes one
fails here, by name, rather than deep inside a transfer.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
from aioquic import tls
from aioquic._buffer import Buffer
from aioquic.quic.packet import pull_quic_transport_parameters, push_quic_transport_parameters
from aioquic.quic.packet_builder import QuicPacketBuilder, QuicSentPacket

from pywebtransport.protocol import events as ev
from pywebtransport.protocol.engine_aioquic import _SPENT_KEYS, _SharedFrameHandlers
from tests.protocol.pair import Pair

QUIC_ENGINES = ("aioquic",)  # aioquic's internals: the pairs here run on aioquic only


def test_an_idle_connection_keeps_no_handshake_state(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    pair.open_session()
    pair.roundtrip()
    for core, one_rtt_buffer in ((pair.server, 64), (pair.client, 4096)):
        quic = core.engine._quic  # type: ignore[attr-defined]
        # The Initial and Handshake crypto streams and buffers are gone once both epochs are.
        assert set(quic._crypto_streams) == {tls.Epoch.ONE_RTT}
        assert set(quic._crypto_buffers) == {tls.Epoch.ONE_RTT}
        assert quic._crypto_buffers[tls.Epoch.ONE_RTT].capacity == one_rtt_buffer
        # Two connection IDs each way, not aioquic's eight.
        assert len(quic._host_cids) <= 2 and len(quic._peer_cid_available) <= 1
        # QPACK: no decoder is held while nothing arrives on the peer's encoder stream.
        assert core._codec._stream_decoder is None
        # The key pairs of every epoch but 1-RTT are one shared empty pair.
        for epoch in (tls.Epoch.INITIAL, tls.Epoch.ZERO_RTT, tls.Epoch.HANDSHAKE):
            assert quic._cryptos[epoch] is _SPENT_KEYS
        assert all(pair is _SPENT_KEYS for pair in quic._cryptos_initial.values())
        assert quic._cryptos[tls.Epoch.ONE_RTT].send.is_valid()
        assert not (_SPENT_KEYS.send.is_valid() or _SPENT_KEYS.recv.is_valid())


def test_frame_handlers_are_shared_between_connections(tmp_path: Path) -> None:
    first, second = Pair(tmp_path / "a"), Pair(tmp_path / "b")
    views = [
        pair.server.engine._quic._QuicConnection__frame_handlers  # type: ignore[attr-defined]
        for pair in (first, second)
    ]
    assert all(isinstance(view, _SharedFrameHandlers) for view in views)
    assert views[0]._table is views[1]._table
    # Lookups bind to their own connection, and unknown frame types are still a KeyError.
    handler, _ = views[0][0x01]  # PING
    assert handler.__self__ is first.server.engine._quic  # type: ignore[attr-defined]
    with pytest.raises(KeyError):
        views[0][0x7F]
    first.open_session()
    second.open_session()  # both connections still handle every frame they get


# Every private name engine_aioquic.py reads, writes or overrides, with the attributes it uses.
CONNECTION_INTERNALS = {
    "_local_active_connection_id_limit": (),
    "_remote_active_connection_id_limit": (),
    "_host_cids": (),
    "_local_max_data": ("value", "used", "sent", "frame_type"),
    "_local_max_streams_bidi": ("value", "used", "sent", "frame_type"),
    "_local_max_streams_uni": ("value", "used", "sent", "frame_type"),
    "_streams": (),
    "_is_client": (),
    "_state": (),
    "_spaces": (),
    "_crypto_buffers": (),
    "_crypto_streams": (),
    "_cryptos": (),
    "_cryptos_initial": (),
    "_datagrams_pending": (),
    "_peer_cid": ("cid", "stateless_reset_token"),
    "_peer_cid_available": (),
    "_remote_max_datagram_frame_size": (),
    "_loss": (
        "_rtt_smoothed",
        "_cc",
        "_on_packets_lost",
        "on_packet_sent",
        "get_probe_timeout",
        # path_stats: the RTT estimates
        "_rtt_variance",
        "_rtt_min",
        "_rtt_initialized",
    ),
    "_QuicConnection__frame_handlers": (),
    # path MTU discovery: the probe's packet and the packet size
    "_max_datagram_size": (),
    "_handshake_confirmed": (),
    "_packet_number": (),
    "_spin_bit": (),
    "_version": (),
    "_network_paths": (),
}
CONNECTION_METHODS = (
    "_replenish_connection_ids",
    "_write_stream_limits",
    "_write_connection_limits",
    "_on_max_stream_data_delivery",
    "_on_connection_limit_delivery",
    "_parse_transport_parameters",
    "_unblock_streams",
)


def test_canaries_for_every_aioquic_internal_the_engine_touches(tmp_path: Path) -> None:
    from aioquic.quic.connection import QuicConnection

    pair = Pair(tmp_path)
    pair.open_session()
    stream_id = pair.client.engine.next_stream_id(False)
    pair.client.engine.send_stream_data(stream_id, b"canary")
    pair.roundtrip()
    for core in (pair.client, pair.server):
        quic = core.engine._quic  # type: ignore[attr-defined]
        for name, fields in CONNECTION_INTERNALS.items():
            assert hasattr(quic, name), f"aioquic's QuicConnection lost {name}"
            value = getattr(quic, name)
            for field in fields:
                assert hasattr(value, field), f"aioquic's {name} lost .{field}"
        for name in CONNECTION_METHODS:
            assert callable(getattr(QuicConnection, name, None)), f"aioquic lost {name}()"
        for cid in quic._host_cids:
            assert {"cid", "was_sent", "stateless_reset_token"} <= set(dir(cid))
        for space in quic._spaces.values():
            assert hasattr(space, "discarded")
            assert isinstance(space.sent_packets, dict)
        assert hasattr(quic.tls, "_peer_certificate")
        assert callable(quic._loss._cc.on_packet_acked)
        assert isinstance(quic._loss._cc.congestion_window, int)
        assert quic._loss._rtt_initialized is True  # a sample was taken (path_stats)
        assert 0 < quic._loss._rtt_min < float("inf")
        assert {"packets", "now"} <= set(
            inspect.signature(type(quic._loss)._on_packets_lost).parameters
        )
        path = set(dir(quic._network_paths[0]))
        assert {"addr", "bytes_sent", "is_validated", "remote_challenges"} <= path
        assert "local_challenge_sent" in path
        assert "on_packets_lost" in quic._loss._on_packets_lost.__qualname__  # our hook
    # The probe is built with aioquic's packet builder and registered as a sent packet.
    parameters = inspect.signature(QuicPacketBuilder).parameters
    assert {"host_cid", "peer_cid", "version", "is_client", "max_datagram_size"} <= set(parameters)
    assert {"packet_number", "spin_bit"} <= set(parameters)
    for name in ("remaining_buffer_space", "packet_number", "start_packet", "start_frame", "flush"):
        assert hasattr(QuicPacketBuilder, name), f"aioquic's QuicPacketBuilder lost {name}"
    sent = {field.name for field in dataclasses.fields(QuicSentPacket)}
    assert {"in_flight", "is_ack_eliciting", "sent_bytes", "sent_time", "packet_number"} <= sent
    stream = pair.client.engine._quic._streams[stream_id]  # type: ignore[attr-defined]
    assert {"_buffer_start", "_buffer_stop"} <= set(dir(stream.sender))
    assert {"max_stream_data_local", "max_stream_data_local_sent", "receiver"} <= set(dir(stream))
    assert hasattr(stream.receiver, "highest_offset")


# ----------------------------------------------------------------------------- receive credit


def pump(pair: Pair, stream_ids: list[int], budget: int) -> int:
    """Write on ``stream_ids`` whatever the client's core accepts, until nothing moves.

    Stops when the cores are quiet and no stream has send capacity left (the writer would
    wait), or when ``budget`` bytes were written. Returns the bytes written. Time only moves
    through the pair's own timers (pacing, ACK delay): a stall is the cores' state, not a wait.
    """
    written = 0
    while written < budget:
        wrote = 0
        for stream_id in stream_ids:
            room = min(pair.client.send_capacity(stream_id), 65536, budget - written - wrote)
            if room > 0:
                pair.client.send_stream_data(stream_id, b"x" * room)
                wrote += room
        written += wrote
        moved = pair.transfer()
        if not wrote and not moved and not pair.step(0.05):
            break
    return written


def received(pair: Pair, stream_ids: list[int]) -> dict[int, int]:
    got = dict.fromkeys(stream_ids, 0)
    for event in pair.take("server", ev.StreamData):
        assert isinstance(event, ev.StreamData)
        if event.stream_id in got:
            got[event.stream_id] += len(event.data)
    return got


def test_an_unread_stream_holds_at_most_one_window(tmp_path: Path) -> None:
    """A server that reads nothing stops the writer after one receive window (1 MiB)."""
    pair = Pair(tmp_path)
    sid = pair.open_session()
    stream_id = pair.client.create_stream(sid, bidirectional=True)
    written = pump(pair, [stream_id], 8 * 1024 * 1024)
    window = pair.server.engine._quic._configuration.max_stream_data  # type: ignore[attr-defined]
    held = received(pair, [stream_id])[stream_id]
    assert 0 < held <= window
    assert written <= window + pair.client.stream_send_buffer
    pair.server.stream_consumed(stream_id, held)  # the application reads: credit follows
    more = pump(pair, [stream_id], 8 * 1024 * 1024 - written)
    assert more > 0


def test_unread_streams_together_hold_at_most_the_connection_window(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    sid = pair.open_session()
    streams = [pair.client.create_stream(sid, bidirectional=True) for _ in range(8)]
    pump(pair, streams, 32 * 1024 * 1024)
    held = received(pair, streams)
    connection_window = pair.server.engine._quic.connection_window  # type: ignore[attr-defined]
    assert 0 < sum(held.values()) <= connection_window


def test_a_stream_slot_comes_back_only_when_its_stream_is_read(tmp_path: Path) -> None:
    limit = 4
    pair = Pair(tmp_path, server_max_streams_uni=limit + 3)  # + HTTP/3's control and QPACK
    sid = pair.open_session()
    streams = [pair.client.create_stream(sid, bidirectional=False) for _ in range(limit + 1)]
    for i, stream_id in enumerate(streams):
        pair.client.send_stream_data(stream_id, f"stream {i}".encode(), end_stream=True)
    pair.roundtrip()
    opened = [e.stream_id for e in pair.take("server", ev.StreamOpened)]  # type: ignore[attr-defined]
    assert opened == streams[:limit]  # finished on the wire, but unread: no slot for the fifth
    pair.server.stream_consumed(streams[0], len(b"stream 0"))
    pair.server.stream_released(streams[0])  # the application read one
    pair.roundtrip()
    later = [e.stream_id for e in pair.take("server", ev.StreamOpened)]  # type: ignore[attr-defined]
    assert later == [streams[limit]]


# ----------------------------------------------------------------------------- path MTU


def test_lost_probes_are_not_a_congestion_signal(tmp_path: Path) -> None:
    """RFC 9000 14.4: probes stay out of congestion control, lost or not."""
    pair = Pair(tmp_path)
    pair.max_size = 1300  # every probe of 1350 bytes is lost
    pair.open_session()
    pair.roundtrip(horizon=1.0)
    assert pair.dropped_sizes == [1350] * 6  # three by each side
    for core in (pair.client, pair.server):
        quic = core.engine._quic  # type: ignore[attr-defined]
        assert core.engine.max_udp_payload() == 1280
        assert quic._loss._cc.ssthresh is None  # Reno: no congestion event happened
        assert quic._loss.bytes_in_flight == 0
        assert quic._loss._pto_count == 0  # nor did a probe arm the PTO
        space = quic._spaces[tls.Epoch.ONE_RTT]
        assert space.ack_eliciting_in_flight == 0


def test_the_peers_max_udp_payload_size_caps_the_search(tmp_path: Path) -> None:
    """aioquic does not keep the parameter; the engine reads it for the search."""

    def advertise_1300(engine: object) -> None:
        quic = engine._quic  # type: ignore[attr-defined]
        serialize = quic._serialize_transport_parameters

        def with_limit() -> bytes:
            parameters = pull_quic_transport_parameters(Buffer(data=serialize()))
            parameters.max_udp_payload_size = 1300
            buf = Buffer(capacity=4096)
            push_quic_transport_parameters(buf, parameters)
            return bytes(buf.data)

        quic._serialize_transport_parameters = with_limit

    pair = Pair(tmp_path, prepare_client=advertise_1300)
    pair.open_session()
    pair.roundtrip(horizon=1.0)
    assert pair.server.engine.max_udp_payload() == 1300  # the client's limit, tried last
    assert pair.client.engine.max_udp_payload() == 1452
    assert pair.largest_sent == {"client": 1452, "server": 1300}
    assert not pair.dropped_sizes


def test_canary_aioquic_logs_through_a_per_connection_adapter(tmp_path: Path) -> None:
    import logging

    from aioquic.quic.connection import QuicConnectionAdapter

    from pywebtransport.protocol.engine_aioquic import _EngineLog

    pair = Pair(tmp_path)
    pair.open_session()
    for core in (pair.client, pair.server):
        quic = core.engine._quic  # type: ignore[attr-defined]
        # aioquic's own adapter (on its "quic" logger) was there to be replaced by ours.
        assert isinstance(quic._logger, _EngineLog)
        assert isinstance(quic._logger, QuicConnectionAdapter)
        assert quic._logger.logger is logging.getLogger("pywebtransport.engine.aioquic")
        assert quic._logger.extra and "id" in quic._logger.extra
        assert quic.tls._Context__logger is quic._logger  # the TLS context logs through it
