"""The seam between the WebTransport core and the QUIC engine.

Everything the core needs from QUIC goes through :class:`QuicEngine`, and its events are the
engine-neutral dataclasses below; nothing here imports an engine. Each engine lives in a module
of its own that holds every access to that engine's internals (``engine_aioquic.py``: aioquic's
``QuicConnection``). The server's packet helpers (routing by connection ID, stateless resets,
Retry, version negotiation) are in ``packets.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

Address = Any  # (host, port) or (host, port, flowinfo, scope_id)

STATELESS_RESET_CODE = -1
"""The ``error_code`` of :class:`EngineTerminated` when the peer sent a stateless reset."""


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


class QuicEngine(Protocol):
    """What the WebTransport core needs from a QUIC implementation. All calls are sans-I/O."""

    is_client: bool

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
    def send_buffered(self, stream_id: int) -> int: ...
    def close(self, error_code: int, reason: str) -> None: ...
    def peer_certificate_der(self) -> bytes | None: ...
    def smoothed_rtt(self) -> float: ...
    @property
    def is_closed(self) -> bool: ...
