"""The qh3 engine: its guarantees, its workarounds, and canaries for qh3's internals.

The engine reaches into qh3's ``QuicConnection`` (a Python facade over a Rust core) for a few
private names (each marked ``# qh3 internals`` in engine_qh3.py). A qh3 release that renames or
reshapes one fails here, by name, rather than deep inside a transfer.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("qh3")

from qh3 import tls as qh3_tls
from qh3._hazmat import QuicConnectionCore
from qh3.quic.connection import QuicConnection
from qh3.quic.tls_bridge import QuicTlsBridge

from pywebtransport._engine import engine_factory
from pywebtransport.protocol import events as ev
from pywebtransport.protocol.engine_qh3 import (
    _KEY_EXCHANGE_ATTRIBUTES,
    Qh3Engine,
    _remembering_loader,
    _with_stream_limits,
)
from pywebtransport.protocol.errors import DatagramTooLarge
from pywebtransport.protocol.packets import stateless_reset_token
from pywebtransport.protocol.quic import QuicSettings
from pywebtransport.protocol.settings import LocalLimits
from pywebtransport.protocol.wire import H3ErrorCode
from tests.certs import make_cert
from tests.protocol.pair import SETTINGS, Pair

QUIC_ENGINES = ("qh3",)  # qh3's engine and internals: the pairs here run on qh3


def engine(protocol: object) -> Qh3Engine:
    found = protocol.engine  # type: ignore[attr-defined]
    assert isinstance(found, Qh3Engine)
    return found


def terminations(pair: Pair, side: str) -> list[ev.ConnectionTerminated]:
    events = pair.client_events if side == "client" else pair.server_events
    return [e for e in events if isinstance(e, ev.ConnectionTerminated)]


def settle(pair: Pair) -> None:
    for _ in range(100):
        pair.transfer()
        if pair.client.terminated and pair.server.terminated:
            return
        if not pair.step(10.0):
            return


# ----------------------------------------------------------------------------- canaries

#: Every private attribute of qh3's QuicConnection engine_qh3.py reads or writes.
CONNECTION_INTERNALS = (
    "_is_client",
    "_core",
    "_configuration",
    "_version",
    "_retry_source_connection_id",
    "_applied_transport_parameters",
    "_pre_handshake_state_replayed",
    "_remote_max_datagram_frame_size",
)
#: The private methods it overrides, with the parameters it relies on.
CONNECTION_METHODS = {
    "_create_core": ["self", "remote_addr", "initial_dcid", "now"],
    "_create_tls": ["self", "remote_source_cid"],
    "_drain_tls": ["self"],
}
#: The keyword arguments it builds the Rust core with (the core's own names).
CORE_ARGUMENTS = (
    "is_client",
    "version",
    "local_addr",
    "remote_addr",
    "source_cid",
    "destination_cid",
    "peer_address_validated",
    "active_connection_id_limit",
    "max_datagram_size",
    "probe_datagram_size",
    "idle_timeout",
    "ack_delay_exponent",
    "max_datagram_frame_size",
    "peer_max_datagram_frame_size",
    "connection_receive_window",
    "connection_send_limit",
    "stream_receive_window",
    "stream_send_limit_bidi_local",
    "stream_send_limit_bidi_remote",
    "stream_send_limit_uni",
    "max_stream_reassembly",
    "local_max_streams_bidi",
    "local_max_streams_uni",
    "peer_max_streams_bidi",
    "peer_max_streams_uni",
    "initial_rtt",
    "max_ack_delay",
    "initial_time",
)
#: What it uses of the core and of qh3's TLS half.
CORE_MEMBERS = (
    "poll_transmit",
    "bytes_in_flight",
    "congestion_window",
    "smoothed_rtt",
    "active_path",
    "outstanding_application_packets",
    "loss_total",
    "state",
    "install_packet_key",
)
BRIDGE_MEMBERS = (
    "stateless_reset_token",
    "remote_initial_source_connection_id",
    "serialize_transport_parameters",
    "tls",
)


def test_canaries_for_every_qh3_internal_the_engine_touches(tmp_path: Path) -> None:
    for name, parameters in CONNECTION_METHODS.items():
        method = getattr(QuicConnection, name, None)
        assert callable(method), f"qh3's QuicConnection lost {name}()"
        assert list(inspect.signature(method).parameters) == parameters, name
    signature = QuicConnectionCore.__text_signature__ or ""
    names = [part.strip() for part in signature.strip("()").split(",")]
    assert names == list(CORE_ARGUMENTS), "qh3's QuicConnectionCore() changed its arguments"
    for name in CORE_MEMBERS:
        assert hasattr(QuicConnectionCore, name), f"qh3's QuicConnectionCore lost {name}"
    pair = Pair(tmp_path)
    pair.open_session()
    for protocol in (pair.client, pair.server):
        quic = engine(protocol)._quic
        for name in CONNECTION_INTERNALS:
            assert hasattr(quic, name), f"qh3's QuicConnection lost {name}"
        assert isinstance(quic._core, QuicConnectionCore)
        assert isinstance(quic._tls, QuicTlsBridge)
        for name in BRIDGE_MEMBERS:
            assert hasattr(quic._tls, name), f"qh3's QuicTlsBridge lost {name}"
        assert isinstance(quic._tls.tls.handshake_extensions, list)
        assert len(quic._core.active_path) == 6
        assert quic._core.state == "connected"
        assert isinstance(quic._core.loss_total, int)  # path_stats: packets lost
        assert isinstance(quic._core.congestion_window, int)
        assert quic._remote_max_datagram_frame_size == 65536
        # The peer's max_udp_payload_size as the core read it: lowered to our ceiling.
        peer = quic._tls.remote_transport_parameters
        assert peer is not None and peer.max_udp_payload_size == 1452
        assert quic._applied_transport_parameters is peer


def test_no_key_exchange_secret_outlives_the_handshake(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    pair.open_session()
    for protocol in (pair.client, pair.server):
        bridge = engine(protocol)._quic._tls
        assert bridge is not None
        for name in _KEY_EXCHANGE_ATTRIBUTES:
            assert hasattr(bridge.tls, name), f"qh3's TLS context lost {name}"
            assert getattr(bridge.tls, name) is None, name
    assert engine(pair.server)._quic._tls.tls.alpn_negotiated == "h3"  # type: ignore[union-attr]


def test_canary_qh3_verifies_certificates_with_the_store_loader_we_replace() -> None:
    assert "load_store_and_sort" in qh3_tls.verify_certificate.__code__.co_names
    parameters = list(inspect.signature(qh3_tls.load_store_and_sort).parameters)
    assert parameters == ["cadata", "cafile", "capath"]


def test_a_verifying_client_factory_installs_the_remembering_store_loader(tmp_path: Path) -> None:
    bundle = make_cert(tmp_path)
    settings = QuicSettings(is_client=True, ca_file=str(bundle.certfile))
    engine_factory("qh3", settings)
    installed = qh3_tls.load_store_and_sort
    assert getattr(installed, "remembers_stores", False)
    engine_factory("qh3", settings)
    assert qh3_tls.load_store_and_sort is installed  # once per process, not wrapped again


def test_a_ca_store_is_read_once_until_its_file_changes(tmp_path: Path) -> None:
    calls: list[str | None] = []

    def load(
        cadata: bytes | None = None, cafile: str | None = None, capath: str | None = None
    ) -> tuple[list[bytes], list[bytes], list[bytes]]:
        calls.append(cafile)
        assert cafile is not None
        return [Path(cafile).read_bytes()], [], []

    loader = _remembering_loader(load, lambda: (None, None))
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"first")
    first = loader(cafile=str(ca))
    first[0].append(b"changed by a caller")
    assert loader(cafile=str(ca)) == ([b"first"], [], [])  # a copy each time
    assert calls == [str(ca)]
    ca.write_bytes(b"second, longer")
    assert loader(cafile=str(ca)) == ([b"second, longer"], [], [])
    assert len(calls) == 2
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(FileNotFoundError):  # what qh3's own loader raises, uncached
        loader(cafile=missing)
    assert calls[-1] == missing


def test_the_core_is_built_with_our_stream_limits_and_reset_token(tmp_path: Path) -> None:
    key = b"q" * 32
    pair = Pair(tmp_path, reset_key=key)
    pair.open_session()
    server, client = engine(pair.server), engine(pair.client)
    # What the client learnt from the server's transport parameters (not qh3's 100 / 103).
    bridge = client._quic._tls
    assert bridge is not None
    parameters = bridge.remote_transport_parameters
    assert parameters is not None
    assert parameters.initial_max_streams_bidi == SETTINGS.max_streams_bidi
    assert parameters.initial_max_streams_uni == SETTINGS.max_streams_uni
    assert parameters.stateless_reset_token == stateless_reset_token(key, server.host_cid)
    # What the server's core enforces agrees with what it announced.
    assert client._quic.max_concurrent_bidi_streams == SETTINGS.max_streams_bidi
    assert client._quic.max_concurrent_uni_streams == SETTINGS.max_streams_uni


def test_rewriting_the_stream_limits_keeps_every_other_parameter() -> None:
    # id 0x04 (initial_max_data), 0x08, 0x09, then an unknown (grease) id 0x1b with 3 bytes.
    original = bytes.fromhex("04048010000008024064" + "09024067" + "1b03616263")
    rewritten = _with_stream_limits(original, 7, 300)
    assert rewritten == bytes.fromhex("04048010000008010" + "7" + "0902412c" + "1b03616263")


# ----------------------------------------------------------------------------- workarounds


def test_an_idle_connection_does_not_wake_up_for_nothing(tmp_path: Path) -> None:
    """qh3's pacer takes a packet's worth at every poll, sending or not, and arms a pacing
    timer when it runs short: polled again and again, an idle connection would wake up every
    few microseconds. The engine polls only when something happened since."""
    pair = Pair(tmp_path)
    pair.open_session()
    pair.roundtrip()
    for protocol in (pair.client, pair.server):
        before = protocol.get_timer()
        for _ in range(50):
            assert protocol.datagrams_to_send(pair.now) == []
        assert protocol.get_timer() == before
        core = engine(protocol)._quic._core
        assert core is not None
        timer = core.get_timer()
        assert timer is not None and timer[0] != "pacing"


def test_a_close_right_after_the_handshake_reaches_the_server(tmp_path: Path) -> None:
    """qh3 closes in the highest epoch only and drops the client's unsent Finished: the
    engine sends that flight first, so the server can read the CONNECTION_CLOSE."""
    pair = Pair(tmp_path)
    pair.transfer()  # the server's flight reaches the client; its Finished is not sent yet
    pair.client.close(code=H3ErrorCode.H3_SETTINGS_ERROR, reason="bad settings")
    settle(pair)
    assert [(e.error_code, e.by_peer) for e in terminations(pair, "server")] == [
        (H3ErrorCode.H3_SETTINGS_ERROR, True)
    ]


def _empty_source_cid(client: Any) -> None:
    """Make an aioquic client use an empty source connection ID, as Chromium's does."""
    quic = client._quic
    quic._configuration.connection_id_length = 0  # how it parses short headers sent to it
    quic._host_cids[0].cid = quic.host_cid = quic._local_initial_source_connection_id = b""
    assert len(quic._peer_cid.cid) == 8  # its first destination ID stays 8 bytes long
    quic._replenish_connection_ids = lambda: None  # no NEW_CONNECTION_ID with empty IDs


def test_a_client_with_an_empty_connection_id_is_served(tmp_path: Path) -> None:
    """qh3 2.1 fails such a client (Chromium's); the engine's workaround serves it."""
    pair = Pair(tmp_path, client_engine="aioquic", prepare_client=_empty_source_cid)
    sid = pair.open_session()
    server = engine(pair.server)
    assert server._quic.empty_peer_cid
    stream_id = pair.client.create_stream(sid, bidirectional=True)
    pair.client.send_stream_data(stream_id, b"hello", end_stream=True)
    pair.client.send_datagram(sid, b"datagram")
    pair.roundtrip()
    assert ev.StreamData(stream_id, b"hello", True) in pair.server_events
    assert ev.DatagramReceived(sid, b"datagram") in pair.server_events
    # A short-header packet to the server carries no connection ID but the server's own.
    assert server.max_datagram_payload() > 0


@pytest.mark.parametrize("client_engine", ["aioquic", "qh3"])
@pytest.mark.parametrize("server_engine", ["aioquic", "qh3"])
def test_every_pairing_of_engines_talks(
    tmp_path: Path, client_engine: str, server_engine: str
) -> None:
    pair = Pair(tmp_path, engine=server_engine, client_engine=client_engine)
    sid = pair.open_session()
    stream_id = pair.client.create_stream(sid, bidirectional=True)
    pair.client.send_stream_data(stream_id, b"x" * 100_000, end_stream=True)
    pair.roundtrip(limit=2000)  # qh3 paces its packets: one per time step here
    data = b"".join(e.data for e in pair.server_events if isinstance(e, ev.StreamData))
    assert data == b"x" * 100_000


# ----------------------------------------------------------------------------- guarantees


def test_unread_bytes_beyond_the_connection_window_close_the_connection(tmp_path: Path) -> None:
    """qh3 gives credit as data arrives; the engine keeps the memory bound by closing."""
    pair = Pair(tmp_path)
    sid = pair.open_session()
    stream_id = pair.client.create_stream(sid, bidirectional=True)
    window = SETTINGS.connection_receive_window
    for _ in range(window // 65536 + 2):
        if pair.client.engine.is_closed:
            break
        pair.client.send_stream_data(stream_id, b"u" * 65536)
        pair.roundtrip(limit=2000)
    settle(pair)
    assert [(e.error_code, e.by_peer) for e in terminations(pair, "client")] == [
        (H3ErrorCode.H3_EXCESSIVE_LOAD, True)
    ]


def test_read_bytes_do_not_count(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    sid = pair.open_session()
    stream_id = pair.client.create_stream(sid, bidirectional=True)
    window = SETTINGS.connection_receive_window
    for _ in range(2 * window // 65536):
        pair.client.send_stream_data(stream_id, b"r" * 65536)
        pair.roundtrip(limit=2000)
        for event in pair.take("server", ev.StreamData):
            assert isinstance(event, ev.StreamData)
            pair.server.stream_consumed(event.stream_id, len(event.data))
    assert not terminations(pair, "client") and not pair.server.engine.is_closed
    assert engine(pair.server)._unread == 0


def test_our_streams_beyond_the_peer_limit_wait_for_it(tmp_path: Path) -> None:
    """qh3 refuses a stream beyond the peer's MAX_STREAMS; the engine holds it until allowed."""
    pair = Pair(tmp_path, limits=LocalLimits(initial_max_streams_bidi=1000))
    sid = pair.open_session()
    limit = SETTINGS.max_streams_bidi
    opened = [pair.client.create_stream(sid, bidirectional=True) for _ in range(limit + 5)]
    for stream_id in opened:
        pair.client.send_stream_data(stream_id, b"s%d" % stream_id, end_stream=True)
    # (the stream's header, then its data, wait in the engine)
    assert engine(pair.client).send_buffered(opened[-1]) > len(b"s%d" % opened[-1])
    received: dict[int, bytes] = {}
    for _ in range(10):
        pair.roundtrip()
        for event in pair.take("server", ev.StreamData):
            assert isinstance(event, ev.StreamData)
            received[event.stream_id] = received.get(event.stream_id, b"") + event.data
            if event.end_stream:  # the server ends its side too, and lets the stream go
                pair.server.send_stream_data(event.stream_id, b"", end_stream=True)
                pair.server.stream_released(event.stream_id)
    assert received == {stream_id: b"s%d" % stream_id for stream_id in opened}
    assert not engine(pair.client)._blocked
    assert pair.client.engine.next_stream_id(False) == opened[-1] + 4


def test_datagrams_of_the_largest_size_go_through(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    sid = pair.open_session()
    largest = pair.client.max_datagram_size(sid)
    assert largest > 1000
    with pytest.raises(DatagramTooLarge):
        pair.client.send_datagram(sid, b"z" * (largest + 1))
    stream_id = pair.client.create_stream(sid, bidirectional=True)
    for i in range(20):  # interleaved with stream data: each must still fit in a packet
        pair.client.send_datagram(sid, bytes([i]) * largest)
        pair.client.send_stream_data(stream_id, b"y" * 3000)
    pair.roundtrip()
    got = [e.data for e in pair.server_events if isinstance(e, ev.DatagramReceived)]
    assert got == [bytes([i]) * largest for i in range(20)]


def test_the_datagram_queue_is_trimmed(tmp_path: Path) -> None:
    pair = Pair(tmp_path, max_pending_datagrams=16)
    sid = pair.open_session()
    dropped = sum(pair.client.send_datagram(sid, b"%d" % i) for i in range(100))
    assert dropped == 100 - 16
    assert len(engine(pair.client)._datagrams) == 16
    pair.roundtrip()
    got = [e.data for e in pair.server_events if isinstance(e, ev.DatagramReceived)]
    assert got == [b"%d" % i for i in range(84, 100)]


def test_send_buffered_is_zero_only_once_everything_is_acknowledged(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    sid = pair.open_session()
    stream_id = pair.client.create_stream(sid, bidirectional=True)
    pair.client.send_stream_data(stream_id, b"b" * 50_000)
    assert pair.client.engine.send_buffered(stream_id) >= 50_000
    pair.client.datagrams_to_send(pair.now)  # sent, not acknowledged
    assert pair.client.engine.send_buffered(stream_id) > 0
    pair.roundtrip()
    assert pair.client.engine.send_buffered(stream_id) == 0


def test_peer_certificate_and_rtt(tmp_path: Path) -> None:
    pair = Pair(tmp_path)
    pair.open_session()
    der = pair.client.engine.peer_certificate_der()
    assert der is not None and der[:1] == b"\x30"  # a DER SEQUENCE
    assert pair.server.engine.peer_certificate_der() is None  # no client certificate
    assert pair.client.engine.smoothed_rtt() >= 0.0


def test_qh3_probes_no_further_than_its_own_limit(tmp_path: Path) -> None:
    """qh3 stops at 1472 bytes on IPv4 (1452 on IPv6) whatever the ceiling, and as a client
    only (docs/architecture.md)."""
    pair = Pair(tmp_path, max_path_udp_payload=1500)
    pair.open_session()
    pair.roundtrip(horizon=1.0)
    assert pair.client.engine.max_udp_payload() == 1472
    assert pair.server.engine.max_udp_payload() == 1200
    assert pair.largest_sent == {"client": 1472, "server": 1200}


def test_canary_qh3_logs_on_its_quic_logger_from_its_own_files() -> None:
    import logging
    import os

    import qh3.quic.connection as qh3_connection

    from pywebtransport.protocol.engine_qh3 import _QH3_DIR, _EngineLogFilter

    assert qh3_connection.logger is logging.getLogger("quic")
    assert os.path.abspath(qh3_connection.__file__).startswith(_QH3_DIR)
    assert any(isinstance(f, _EngineLogFilter) for f in logging.getLogger("quic").filters)
