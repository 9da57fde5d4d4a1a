"""The aioquic engine: what an idle connection keeps (canaries for aioquic's internals)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aioquic import tls

from pywebtransport.protocol.quic import _SharedFrameHandlers, check_retry_token, retry_token
from tests.protocol.pair import Pair


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


def test_retry_tokens_prove_the_address_and_expire() -> None:
    key, address, odcid = b"k" * 32, b"127.0.0.1|5000", b"\x01" * 8
    token = retry_token(key, address, odcid, now=1000.0)
    assert check_retry_token(key, token, address, now=1001.0) == odcid
    assert check_retry_token(key, token, b"127.0.0.2|5000", now=1001.0) is None  # elsewhere
    assert check_retry_token(b"x" * 32, token, address, now=1001.0) is None  # another key
    assert check_retry_token(key, token, address, now=1000.0 + 11) is None  # expired
    forged = token[:-1] + bytes([token[-1] ^ 1])
    assert check_retry_token(key, forged, address, now=1001.0) is None
    assert check_retry_token(key, b"short", address, now=1001.0) is None
