"""The seam between the WebTransport core and the QUIC engine.

Everything the core needs from QUIC goes through :class:`QuicEngine`, and its events are the
engine-neutral dataclasses below; nothing here imports an engine. Each engine lives in a module
of its own that holds every access to that engine's internals (``engine_aioquic.py``: aioquic's
``QuicConnection``; ``engine_qh3.py``: qh3's) and turns the engine-neutral
:class:`QuicSettings` into that engine's configuration (an :class:`EngineFactory`). The
server's packet helpers (routing by connection ID, stateless resets, Retry, version
negotiation) are in ``packets.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

Address = Any  # (host, port) or (host, port, flowinfo, scope_id)

STATELESS_RESET_CODE = -1
"""The ``error_code`` of :class:`EngineTerminated` when the peer sent a stateless reset."""

ENGINE_IDLE_REASON = "Idle timeout"
"""The reason aioquic and qh3 give (with code 1, INTERNAL_ERROR) when their idle timer ended a
connection."""


@dataclass(slots=True)
class EngineStreamData:
    stream_id: int
    data: bytes
    end_stream: bool


@dataclass(slots=True)
class EngineStreamReset:
    stream_id: int
    error_code: int


@dataclass(slots=True)
class EngineStopSending:
    stream_id: int
    error_code: int


@dataclass(slots=True)
class EngineDatagram:
    data: bytes


@dataclass(slots=True)
class EngineHandshakeCompleted:
    alpn_protocol: str | None


@dataclass(slots=True)
class EngineTerminated:
    error_code: int
    reason: str
    by_peer: bool


def engine_terminated(
    error_code: int, reason: str, *, closed_locally: bool, idle_timeout: float
) -> EngineTerminated:
    """What an engine adapter reports for its engine's end of the connection.

    ``closed_locally``: we asked for the close (else the peer ended it, or the engine's idle
    timer did, which is reported as :func:`no_packet_from_peer` of ``idle_timeout``).
    """
    if reason == ENGINE_IDLE_REASON and not closed_locally:
        return no_packet_from_peer(idle_timeout)
    return EngineTerminated(error_code, reason, not closed_locally)


def no_packet_from_peer(seconds: float) -> EngineTerminated:
    """The end of a connection that heard nothing from its peer for ``seconds``.

    The connection's liveness deadline and an engine's idle timer both end that way, so a
    session closes with the same code (0) and reason whichever of them fired first.
    """
    return EngineTerminated(0, f"no packet from the peer in {seconds:g} s", False)


@dataclass(slots=True)
class EngineConnectionIdIssued:
    connection_id: bytes


@dataclass(slots=True)
class EngineConnectionIdRetired:
    connection_id: bytes


EngineEvent = (
    EngineStreamData
    | EngineStreamReset
    | EngineStopSending
    | EngineDatagram
    | EngineHandshakeCompleted
    | EngineTerminated
    | EngineConnectionIdIssued
    | EngineConnectionIdRetired
)


@dataclass(frozen=True, slots=True, kw_only=True)
class PathStats:
    """What the engine knows of its connection's network path (:meth:`QuicEngine.path_stats`).

    Packets are UDP datagrams and bytes their payloads, counted by the engine as it sends and
    receives them (a datagram coalescing several QUIC packets, as in the handshake, counts
    once). A figure the engine cannot tell is None.

    Attributes:
        bytes_sent, packets_sent: UDP payload bytes and datagrams sent (retransmissions too).
        bytes_received, packets_received: UDP payload bytes and datagrams received.
        bytes_lost, packets_lost: bytes and packets loss recovery declared lost.
        smoothed_rtt, rtt_variation, min_rtt: RFC 9002 5.3, in seconds; None before the first
            RTT sample.
        congestion_window: the congestion controller's window, in bytes.
    """

    bytes_sent: int = 0
    packets_sent: int = 0
    bytes_received: int = 0
    packets_received: int = 0
    bytes_lost: int | None = None
    packets_lost: int | None = None
    smoothed_rtt: float | None = None
    rtt_variation: float | None = None
    min_rtt: float | None = None
    congestion_window: int | None = None


@dataclass(slots=True)
class Traffic:
    """UDP datagrams and payload bytes an engine sent and received (for :class:`PathStats`)."""

    packets_sent: int = 0
    bytes_sent: int = 0
    packets_received: int = 0
    bytes_received: int = 0

    def sent(self, out: list[tuple[bytes, Address]]) -> None:
        """Count the datagrams of one transmit round."""
        self.packets_sent += len(out)
        self.bytes_sent += sum(len(data) for data, _ in out)

    def received(self, data: bytes) -> None:
        """Count one received datagram."""
        self.packets_received += 1
        self.bytes_received += len(data)


@dataclass(frozen=True, slots=True, kw_only=True)
class QuicSettings:
    """One endpoint's QUIC configuration, the same for every engine.

    Attributes:
        is_client: which side this is.
        alpn_protocols: ALPN identifiers offered (client) or accepted (server).
        idle_timeout: seconds of silence after which the connection is declared lost.
        max_udp_payload: UDP payload size of the packets sent first (the path MTU search's base).
        max_path_udp_payload: the ceiling of path MTU discovery: packets grow up to this size
            as the path proves it carries them (at most ``max_udp_payload``: discovery off).
        max_datagram_frame_size: the largest DATAGRAM frame accepted from the peer.
        stream_receive_window: unread bytes one peer stream may hold (MAX_STREAM_DATA).
        connection_receive_window: unread bytes all streams may hold together (MAX_DATA).
        max_streams_bidi, max_streams_uni: streams of each kind the peer may have open (or
            unread) at once.
        server_name: client: the TLS server name (SNI and certificate check).
        verify_mode: client: an ``ssl.VerifyMode`` value (0: no certificate verification).
        ca_file: client: a PEM file of trusted CAs (None: the engine's default store).
        certfile, keyfile: the certificate chain and private key (PEM files).
        key_log: a file-like sink for TLS secrets (``SSLKEYLOGFILE``), or None.
        congestion_control: ``"reno"`` or ``"cubic"`` (an engine may support only one).
        qlog_dir: a directory for the engine's qlog files (one per connection), or None.
    """

    is_client: bool
    alpn_protocols: tuple[str, ...] = ("h3",)
    idle_timeout: float = 30.0
    max_udp_payload: int = 1200
    max_path_udp_payload: int = 1452
    max_datagram_frame_size: int = 65536
    stream_receive_window: int = 1024 * 1024
    connection_receive_window: int = 16 * 1024 * 1024
    max_streams_bidi: int = 128
    max_streams_uni: int = 128
    server_name: str | None = None
    verify_mode: int = 2  # ssl.CERT_REQUIRED
    ca_file: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    key_log: Any = None
    congestion_control: str = "reno"
    qlog_dir: str | None = None


class QuicEngine(Protocol):
    """What the WebTransport core needs from a QUIC implementation. All calls are sans-I/O.

    ``exact_send_buffered`` tells whether :meth:`send_buffered` is a stream's exact count of
    unacknowledged bytes (True) or only an upper bound (False).
    """

    is_client: bool
    exact_send_buffered: bool

    def connect(self, addr: Address, now: float) -> None: ...
    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None: ...
    def receive_datagrams(self, batch: list[tuple[bytes, Address]], now: float) -> None: ...
    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...
    def pop_events(self) -> list[EngineEvent]: ...
    def next_stream_id(self, unidirectional: bool) -> int: ...
    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> bool: ...
    def reset_stream(self, stream_id: int, error_code: int) -> None: ...
    def stop_stream(self, stream_id: int, error_code: int) -> None: ...
    def send_datagram(self, data: bytes) -> None: ...
    def send_ping(self) -> None: ...
    def track_consumption(self, stream_id: int, consumed: int) -> None: ...
    def consume(self, stream_id: int, size: int) -> None: ...
    def untrack_consumption(self, stream_id: int) -> None: ...
    def trim_datagrams(self, limit: int) -> int: ...
    def max_datagram_payload(self) -> int: ...
    def max_udp_payload(self) -> int: ...
    def probing_path_mtu(self) -> bool: ...
    def send_buffered(self, stream_id: int) -> int: ...
    def close(self, error_code: int, reason: str) -> None: ...
    def peer_certificate_der(self) -> bytes | None: ...
    def smoothed_rtt(self) -> float: ...
    def path_stats(self) -> PathStats: ...
    @property
    def is_closed(self) -> bool: ...


class RoutedEngine(QuicEngine, Protocol):
    """An engine as the endpoints build it: it also tells the connection ID it chose first."""

    @property
    def host_cid(self) -> bytes:
        """The connection ID this endpoint chose first (a server routes packets by it)."""
        ...


class EngineFactory(Protocol):
    """Builds the engines of one endpoint from its :class:`QuicSettings`.

    The engine's configuration (with the certificate and key, read once) is built when the
    factory is; each :meth:`create` is one connection.
    """

    settings: QuicSettings

    def create(
        self,
        *,
        original_destination_connection_id: bytes | None = None,
        retry_source_connection_id: bytes | None = None,
        stateless_reset_key: bytes | None = None,
    ) -> RoutedEngine:
        """An engine for one connection.

        Args:
            original_destination_connection_id: server: the client's first destination CID.
            retry_source_connection_id: server: the CID its Retry told the client to use.
            stateless_reset_key: server: the secret its stateless-reset tokens are derived from.
        """
        ...


EngineT = TypeVar("EngineT", bound=RoutedEngine)


class ConfiguredFactory(Generic[EngineT]):
    """An :class:`EngineFactory` that builds one engine configuration and hands it to each engine.

    Each engine module subclasses it with its configuration builder and engine class
    (``AioquicFactory``, ``Qh3Factory``); their engines take the same arguments.

    Args:
        settings: the endpoint's settings.
        configuration: the engine's configuration built from them (certificate and key read).
        engine: the engine class (or any callable with its arguments).
    """

    def __init__(
        self, settings: QuicSettings, configuration: Any, engine: Callable[..., EngineT]
    ) -> None:
        self.settings = settings
        self.configuration = configuration
        self._engine = engine

    def create(
        self,
        *,
        original_destination_connection_id: bytes | None = None,
        retry_source_connection_id: bytes | None = None,
        stateless_reset_key: bytes | None = None,
    ) -> EngineT:
        """An engine for one connection (see :meth:`EngineFactory.create`)."""
        return self._engine(
            self.configuration,
            original_destination_connection_id=original_destination_connection_id,
            retry_source_connection_id=retry_source_connection_id,
            max_streams_bidi=self.settings.max_streams_bidi,
            max_streams_uni=self.settings.max_streams_uni,
            max_path_udp_payload=self.settings.max_path_udp_payload,
            stateless_reset_key=stateless_reset_key,
        )


def file_stamp(path: str | None) -> tuple[int, int, int] | None:
    """Size, modification time and inode of ``path`` (None for None): a rewrite changes it.

    For caches of what engines read from certificate, key and CA files.

    Raises:
        OSError: ``path`` cannot be examined.
    """
    if path is None:
        return None
    status = os.stat(path)
    return (status.st_size, status.st_mtime_ns, status.st_ino)
