"""Building the QUIC engine from a client or server configuration (one place for both)."""

from __future__ import annotations

from aioquic.quic.configuration import QuicConfiguration

from .config import ClientConfig, ServerConfig
from .protocol.engine_aioquic import AioquicEngine

#: Unidirectional streams every HTTP/3 peer opens for itself: control, QPACK encoder, decoder.
_H3_UNI_STREAMS = 3


def apply_receive_windows(qc: QuicConfiguration, cfg: ClientConfig | ServerConfig) -> None:
    """Set the stream and connection receive windows (MAX_STREAM_DATA, MAX_DATA)."""
    qc.max_stream_data = cfg.stream_receive_window
    qc.max_data = cfg.connection_receive_window


def make_engine(
    qc: QuicConfiguration,
    cfg: ClientConfig | ServerConfig,
    *,
    request_streams: int = 0,
    original_destination_connection_id: bytes | None = None,
    retry_source_connection_id: bytes | None = None,
    stateless_reset_key: bytes | None = None,
) -> AioquicEngine:
    """An engine whose stream limits leave ``max_incoming_streams`` for WebTransport.

    Args:
        qc: the QUIC configuration (receive windows already applied).
        cfg: the endpoint's configuration.
        request_streams: bidirectional streams the peer needs besides WebTransport streams
            (a server: one CONNECT stream per session).
        original_destination_connection_id: server: the client's first destination CID.
        retry_source_connection_id: server: the CID its Retry told the client to use.
        stateless_reset_key: server: the secret its stateless-reset tokens are derived from.
    """
    return AioquicEngine(
        qc,
        original_destination_connection_id=original_destination_connection_id,
        retry_source_connection_id=retry_source_connection_id,
        max_streams_bidi=cfg.max_incoming_streams + request_streams,
        max_streams_uni=cfg.max_incoming_streams + _H3_UNI_STREAMS,
        stateless_reset_key=stateless_reset_key,
    )
