"""The aioquic engine: :class:`QuicEngine` on top of aioquic's ``QuicConnection``.

This module is the only one that touches aioquic's connection, including the private attributes
needed for real backpressure, receive credit that follows consumption, the datagram size limit,
connection-ID control, stateless-reset detection, path MTU discovery and statistics (RTT
estimates, congestion window, packets lost); each such access is
marked ``# aioquic internals`` and has a canary test (tests/protocol/test_engine_aioquic.py).

Path MTU discovery: aioquic has none (every packet is ``max_datagram_size`` bytes). The engine
runs the engine-neutral search of ``pmtu.py``: once the handshake is confirmed it builds probes
itself (a 1-RTT packet with PING and PADDING, of the probe's size, numbered and encrypted by
aioquic's own packet builder), registers them with aioquic's loss recovery as neither in flight
nor ack-eliciting, so that they stay out of congestion control and the PTO (RFC 9000 14.4), and
sets aioquic's packet size to each confirmed size. Loss of larger packets, seen through aioquic's
loss recovery, can make the size fall back to the base (black-hole detection).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from typing import Any

from aioquic import tls
from aioquic._buffer import Buffer  # aioquic.buffer re-exports it untyped
from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionAdapter, QuicConnectionState
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.logger import QuicFileLogger
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicFrameType,
    QuicPacketType,
    pull_quic_transport_parameters,
)
from aioquic.quic.packet_builder import QuicDeliveryState, QuicPacketBuilder

from .packets import stateless_reset_token
from .pmtu import PROBE_TIMEOUT_PTOS, PathMtuSearch
from .quic import (
    STATELESS_RESET_CODE,
    Address,
    ConfiguredFactory,
    EngineConnectionIdIssued,
    EngineConnectionIdRetired,
    EngineDatagram,
    EngineEvent,
    EngineHandshakeCompleted,
    EngineStopSending,
    EngineStreamData,
    EngineStreamReset,
    EngineTerminated,
    PathStats,
    QuicSettings,
    Traffic,
    engine_terminated,
)
from .session import grant_due

__all__ = ["AioquicEngine", "AioquicFactory", "aioquic_configuration"]

_SHORT_HEADER_OVERHEAD = 1 + 2 + 16  # first byte, 2-byte packet number, AEAD tag
_DATAGRAM_FRAME_OVERHEAD = 1 + 2  # frame type, length varint (payloads < 16384)
_MAX_STREAM_DATA_CAPACITY = 1 + 2 * 8  # frame type, stream ID, maximum
_CONNECTION_LIMIT_CAPACITY = 1 + 8  # frame type, maximum
#: Connection IDs each side keeps for the other (aioquic: 8). Two (RFC 9000's minimum) allow a
#: migration; each further one costs memory (and a route entry on a server) per connection.
_ACTIVE_CONNECTION_IDS = 2
#: What replaces a connection's key pairs for epochs it is done with (never set up; shared).
_SPENT_KEYS = CryptoPair()


#: Where aioquic's per-connection log lines go (each at DEBUG; see :class:`_EngineLog`).
engine_logger = logging.getLogger("pywebtransport.engine.aioquic")


class _EngineLog(QuicConnectionAdapter):
    """aioquic's per-connection log, moved from its ``quic`` logger to ours, at DEBUG.

    aioquic logs routine events at INFO (``Duplicate CRYPTO data received`` several times per
    Chromium handshake) and a peer's bad certificate as a WARNING ahead of the error this
    library reports; they are engine detail, shown when ``pywebtransport.engine`` logs DEBUG.
    """

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        super().log(logging.DEBUG, msg, *args, **kwargs)


def _route_log(quic: QuicConnection) -> None:
    """Give ``quic`` our :class:`_EngineLog` (aioquic builds its TLS context with it later)."""
    original = getattr(quic, "_logger", None)  # aioquic internals
    if isinstance(original, logging.LoggerAdapter):
        quic._logger = _EngineLog(engine_logger, dict(original.extra or {}))  # aioquic internals


class _CreditedConnection(QuicConnection):
    """aioquic's connection with receive credit tied to what the application consumed.

    aioquic raises credit as data arrives: it doubles a stream's MAX_STREAM_DATA and the
    connection's MAX_DATA whenever the peer has used half, whether or not anybody reads, and
    gives a stream slot back (MAX_STREAMS) as soon as a stream is finished on the wire. A reader
    that stalls would let the peer fill memory. Here, for the streams listed in ``credit``
    (WebTransport streams, whose bytes the application reads):

    - a stream's credit becomes ``consumed + window`` once less than half a window remains,
      so what sits unread on one stream is bounded by ``window``;
    - the connection's credit becomes ``used - held + connection_window``, where ``held`` is
      what tracked streams received (highest offset) and the application has not consumed:
      the unread total over all streams is bounded by ``connection_window``;
    - a peer's stream occupies a MAX_STREAMS slot until aioquic has finished it *and* the
      application released it, so at most ``max_streams`` of each kind are open or unread.

    Grants follow one rule: send an update once the increment it brings is at least what the
    peer still has, so updates are batched yet a peer is never left waiting for credit that
    could be given. Other streams (HTTP/3 control and request streams) keep aioquic's policy.
    """

    def __init__(
        self,
        *,
        window: int,
        max_streams_bidi: int,
        max_streams_uni: int,
        reset_key: bytes | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _route_log(self)
        self._local_active_connection_id_limit = _ACTIVE_CONNECTION_IDS  # aioquic internals
        self.reset_key = reset_key if not self._is_client else None  # aioquic internals
        self._derive_reset_tokens(self._host_cids)  # the first CID (aioquic marks it sent)
        self.window = window
        self.connection_window = self._local_max_data.value  # aioquic internals
        self.credit: dict[int, list[int]] = {}  # stream -> [consumed offset, highest offset]
        self.credit_dirty = False  # consumption moved since the connection credit was computed
        self.released = 0  # streams untracked so far (each may free a MAX_STREAMS slot)
        self._credit_used = -1  # connection bytes used when the credit was last computed
        self.max_streams = {False: max_streams_bidi, True: max_streams_uni}
        self._stream_limits = {
            False: self._local_max_streams_bidi,  # aioquic internals
            True: self._local_max_streams_uni,
        }
        for unidirectional, limit in self._stream_limits.items():
            limit.value = limit.sent = self.max_streams[unidirectional]
        self._stream_targets = dict(self.max_streams)  # the MAX_STREAMS values we decided
        self._slots_seen: dict[bool, tuple[int, int, int]] = {}  # inputs of the last count
        self.path_mtu: PathMtuSearch | None = None  # set by the engine when discovery is on

    def _replenish_connection_ids(self) -> None:  # aioquic internals: issues new CIDs
        limit = self._remote_active_connection_id_limit
        self._remote_active_connection_id_limit = min(limit, _ACTIVE_CONNECTION_IDS)
        try:
            super()._replenish_connection_ids()
        finally:
            self._remote_active_connection_id_limit = limit
        self._derive_reset_tokens([issued for issued in self._host_cids if not issued.was_sent])

    def _parse_transport_parameters(  # aioquic internals: reads the peer's parameters
        self, data: bytes, from_session_ticket: bool = False
    ) -> None:
        super()._parse_transport_parameters(data, from_session_ticket)
        if self.path_mtu is not None:
            # aioquic reads the peer's max_udp_payload_size but keeps it nowhere: the largest
            # UDP payload the peer accepts caps what path MTU discovery may try.
            parameters = pull_quic_transport_parameters(Buffer(data=data))
            self.path_mtu.limit(parameters.max_udp_payload_size)
        if not self._is_client and not from_session_ticket:
            # Streams opened before the ClientHello arrived (the HTTP/3 control and QPACK
            # streams) wait in aioquic until the handshake completes. Their limits are known
            # now, so they may go as 0.5-RTT data (RFC 9001 section 4.1.1): the client then
            # has our SETTINGS with the handshake and can send its request one round trip
            # sooner.
            self._unblock_streams(is_unidirectional=False)  # aioquic internals
            self._unblock_streams(is_unidirectional=True)

    def _derive_reset_tokens(self, issued: list[Any]) -> None:
        """Derive the tokens of new CIDs from the key, so a restarted server knows them too."""
        key = self.reset_key
        if key is not None:
            for cid in issued:
                cid.stateless_reset_token = stateless_reset_token(key, cid.cid)

    def highest_offset(self, stream_id: int, entry: list[int]) -> int:
        """The highest offset received on a tracked stream (remembered once aioquic drops it)."""
        stream = self._streams.get(stream_id)  # aioquic internals
        if stream is not None and stream.receiver.highest_offset > entry[1]:
            entry[1] = stream.receiver.highest_offset
        return entry[1]

    def _write_stream_limits(  # aioquic internals: the hook that writes MAX_STREAM_DATA
        self, builder: Any, space: Any, stream: Any
    ) -> None:
        entry = self.credit.get(stream.stream_id)
        if entry is None:
            super()._write_stream_limits(builder=builder, space=space, stream=stream)
            return
        window = self.window
        if (stream.max_stream_data_local - entry[0]) * 2 < window:
            stream.max_stream_data_local = entry[0] + window
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=_MAX_STREAM_DATA_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(stream.stream_id)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local

    def _write_connection_limits(  # aioquic internals: the hook that writes MAX_DATA/STREAMS
        self, builder: Any, space: Any
    ) -> None:
        limit = self._local_max_data
        if (limit.value - limit.used) * 2 <= self.connection_window and (
            self.credit_dirty or limit.used != self._credit_used
        ):
            self.credit_dirty = False
            self._credit_used = limit.used
            held = 0
            for stream_id, entry in self.credit.items():
                held += self.highest_offset(stream_id, entry) - entry[0]
            target = limit.used - held + self.connection_window
            if grant_due(limit.value, limit.used, target):
                limit.value = target
        self._send_limit(builder, limit)
        for unidirectional, limit in self._stream_limits.items():
            target = self._stream_targets[unidirectional]
            # aioquic adds one to ``value`` whenever it drops a finished peer stream, so a
            # value above our target means a stream was dropped; our count replaces it.
            seen = (limit.used, limit.value - target, self.released)
            if (target - limit.used) * 2 <= self.max_streams[
                unidirectional
            ] and self._slots_seen.get(unidirectional) != seen:
                self._slots_seen[unidirectional] = seen
                target = self._stream_slot_target(unidirectional, limit.used)
                self._stream_targets[unidirectional] = target
            limit.value = target
            self._send_limit(builder, limit)

    def _stream_slot_target(self, unidirectional: bool, used: int) -> int:
        """The MAX_STREAMS value that leaves ``max_streams`` slots beyond the occupied ones."""
        current = self._stream_targets[unidirectional]
        peer_bit = 1 if self._is_client else 0  # aioquic internals; the initiator bit
        kind = (2 if unidirectional else 0) | peer_bit
        occupied = {sid for sid in self._streams if sid & 3 == kind}  # aioquic internals
        occupied.update(sid for sid in self.credit if sid & 3 == kind)
        target = used - len(occupied) + self.max_streams[unidirectional]
        return target if grant_due(current, used, target) else current

    def _send_limit(self, builder: Any, limit: Any) -> None:
        if limit.value != limit.sent:
            buf = builder.start_frame(
                limit.frame_type,
                capacity=_CONNECTION_LIMIT_CAPACITY,
                handler=self._on_connection_limit_delivery,
                handler_args=(limit,),
            )
            buf.push_uint_var(limit.value)
            limit.sent = limit.value


class AioquicEngine:
    """:class:`QuicEngine` on top of aioquic's ``QuicConnection``.

    Args:
        configuration: aioquic's settings; ``max_stream_data`` is the receive window of one
            stream and ``max_data`` that of the whole connection.
        original_destination_connection_id: server: the client's first destination CID.
        retry_source_connection_id: server: the CID its Retry told the client to use.
        max_streams_bidi, max_streams_uni: streams of each kind the peer may have open (or
            unread) at once.
        stateless_reset_key: server: the secret its stateless-reset tokens are derived from
            (see :func:`stateless_reset_token`); None leaves aioquic's random tokens.
        max_path_udp_payload: the ceiling of path MTU discovery (None, or at most the
            configuration's ``max_datagram_size``: off).
    """

    def __init__(
        self,
        configuration: QuicConfiguration,
        *,
        original_destination_connection_id: bytes | None = None,
        retry_source_connection_id: bytes | None = None,
        max_streams_bidi: int = 128,
        max_streams_uni: int = 128,
        stateless_reset_key: bytes | None = None,
        max_path_udp_payload: int | None = None,
    ) -> None:
        self._quic = _CreditedConnection(
            window=configuration.max_stream_data,
            max_streams_bidi=max_streams_bidi,
            max_streams_uni=max_streams_uni,
            reset_key=stateless_reset_key,
            configuration=configuration,
            original_destination_connection_id=original_destination_connection_id,
            retry_source_connection_id=retry_source_connection_id,
        )
        self.is_client = configuration.is_client
        self._max_udp_payload = configuration.max_datagram_size
        self._closed_locally = False
        self._terminated = False
        self._qlog = configuration.quic_logger is not None
        self._extra: list[EngineEvent] = []
        self._ping_uid = 0
        self._reset_tokens: frozenset[bytes] = frozenset()
        self._reset_key: tuple[int, int] = (0, -1)
        self._payload_key: tuple[int, int | None, int] = (0, None, 0)
        self._payload_limit = 0
        self._trim_pending = False
        self._now = 0.0  # the time of the call being served (probe deliveries carry none)
        self._probe_number = -1  # packet number of the probe out (-1: none)
        self._path: Any = None  # the network path the path MTU was found on
        self._path_mtu: PathMtuSearch | None = None
        # What crossed the network path: UDP datagrams and their payload bytes, and what
        # aioquic's loss recovery declared lost (see path_stats).
        self._traffic = Traffic()
        self._lost = [0, 0]  # packets, bytes
        self._count_losses()
        if max_path_udp_payload is not None and max_path_udp_payload > self._max_udp_payload:
            self._path_mtu = PathMtuSearch(self._max_udp_payload, max_path_udp_payload)
            self._quic.path_mtu = self._path_mtu
            self._watch_losses()
        _share_frame_handlers(self._quic)

    exact_send_buffered = True  # send_buffered: aioquic's own unacknowledged range

    @property
    def host_cid(self) -> bytes:
        """The connection ID this endpoint chose first (servers route by it)."""
        return self._quic.host_cid

    @property
    def is_closed(self) -> bool:
        """True once the connection is terminated or closing."""
        return self._terminated or self._quic._state in (  # aioquic internals
            QuicConnectionState.CLOSING,
            QuicConnectionState.DRAINING,
            QuicConnectionState.TERMINATED,
        )

    def connect(self, addr: Address, now: float) -> None:
        """Start the client handshake towards ``addr``.

        When aioquic's ``connect()`` raises, or is interrupted (a KeyboardInterrupt from a
        signal handler), the engine terminates at once, locally, and the exception propagates.
        aioquic records the peer's network path before it builds its per-epoch state
        (``_cryptos``, ``_crypto_streams``, ``_spaces``, in ``_initialize``), and its
        ``datagrams_to_send()`` indexes that state by epoch: driving the half-built connection,
        as closing it does, raised KeyError (``Epoch.HANDSHAKE``). Nothing reached the peer
        yet (packets are only built by :meth:`datagrams_to_send`), so there is nobody to tell.
        """
        try:
            self._quic.connect(addr, now=now)
        except BaseException:  # re-raised: only the engine's own state is settled here
            self._end_locally(QuicErrorCode.INTERNAL_ERROR, "connect failed")
            raise

    def _end_locally(self, error_code: int, reason: str) -> None:
        """Terminate without involving aioquic; :meth:`get_timer` makes the event due now."""
        self._closed_locally = True
        self._terminated = True
        self._extra.append(EngineTerminated(error_code, reason, False))

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Feed one UDP payload to the engine."""
        if self._terminated:
            return
        if self._is_stateless_reset(data):
            self._terminated = True
            self._extra.append(EngineTerminated(STATELESS_RESET_CODE, "stateless reset", True))
            return
        self._now = now
        self._traffic.received(data)
        self._quic.receive_datagram(data, addr, now=now)

    def receive_datagrams(self, batch: list[tuple[bytes, Address]], now: float) -> None:
        """Feed several UDP payloads (one socket read batch) to the engine."""
        receive = self._quic.receive_datagram
        self._now = now
        for data, addr in batch:
            if self._terminated:
                return
            if self._is_stateless_reset(data):
                self._terminated = True
                self._extra.append(EngineTerminated(STATELESS_RESET_CODE, "stateless reset", True))
                return
            self._traffic.received(data)
            receive(data, addr, now=now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """UDP payloads to transmit now."""
        if self._terminated:
            return []
        out = self._datagrams_to_send(now)
        if out:
            self._traffic.sent(out)
        if self._qlog and self.is_closed:
            self._end_qlog()
        return out

    def _datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        if self._trim_pending:
            self._trim_handshake_buffers()
        path_mtu = self._path_mtu
        if path_mtu is None:
            return self._quic.datagrams_to_send(now=now)
        self._now = now
        self._follow_path()
        if self._max_udp_payload > path_mtu.base and self._validating_path():
            # aioquic pads a datagram with PATH_CHALLENGE or PATH_RESPONSE to its full packet
            # size; RFC 9000 8.2 asks for 1200 bytes, and a path being validated may carry no
            # more than that (a NAT rebinding, a migration): those go at the base size.
            quic = self._quic
            quic._max_datagram_size = path_mtu.base  # aioquic internals
            try:
                out = quic.datagrams_to_send(now=now)
            finally:
                quic._max_datagram_size = self._max_udp_payload
        else:
            out = self._quic.datagrams_to_send(now=now)
        self._probe_path(now, out)
        return out

    def _trim_handshake_buffers(self) -> None:
        """Free the Initial and Handshake crypto buffers and streams once both are discarded.

        aioquic keeps them (16 KiB buffers, two streams) for the connection's lifetime. Once
        both epochs are discarded (so the handshake is confirmed) no packet of theirs can be
        decrypted or sent any more, and aioquic 1.7 reaches them only through paths that
        check exactly that first (``_write_handshake``, ``_handshake_data_stranded``) or
        that iterate the buffers (``_push_crypto_data``); the TLS state machine writes to
        them only during the handshake.
        """
        quic = self._quic
        spaces = quic._spaces  # aioquic internals
        epochs = (tls.Epoch.INITIAL, tls.Epoch.HANDSHAKE)
        if all(epoch in spaces and spaces[epoch].discarded for epoch in epochs):
            buffers = quic._crypto_buffers  # aioquic internals
            streams = quic._crypto_streams  # aioquic internals
            for epoch in epochs:
                buffers.pop(epoch, None)
                streams.pop(epoch, None)
            # After the handshake a server receives no TLS message at all (QUIC has no
            # post-handshake authentication); a client may receive a session ticket, for which
            # 4 KiB keeps a wide margin.
            buffers[tls.Epoch.ONE_RTT] = Buffer(capacity=4096 if quic._is_client else 64)
            # The torn-down key pairs of those epochs (and of 0-RTT, and the Initial pairs
            # aioquic derived for every version it supports) each keep two contexts and four
            # logging callbacks: about 4 KiB per connection that nothing reads any more.
            cryptos = quic._cryptos  # aioquic internals
            for epoch in (*epochs, tls.Epoch.ZERO_RTT):
                if epoch in cryptos and _spent(cryptos[epoch]):
                    cryptos[epoch] = _SPENT_KEYS
            initial = quic._cryptos_initial  # aioquic internals
            for version, pair in initial.items():
                if _spent(pair):
                    initial[version] = _SPENT_KEYS
            self._trim_pending = False

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called."""
        if self._terminated:
            # A termination no received packet reported (see _end_locally) is due at once:
            # the owner collects engine events after handle_timer.
            return 0.0 if self._extra else None
        timer = self._quic.get_timer()
        if self._path_mtu is not None:
            deadline = self._path_mtu.deadline()
            if deadline is not None and (timer is None or deadline < timer):
                return deadline
        return timer

    def handle_timer(self, now: float) -> None:
        """Run the engine's timers (loss detection, idle timeout, path MTU probes, ...)."""
        if not self._terminated:
            self._now = now
            self._quic.handle_timer(now=now)
            if self._path_mtu is not None:
                self._path_mtu.on_timer(now)  # a probe out too long is lost

    def _end_qlog(self) -> None:
        """Write the connection's qlog trace now: a closing connection is dropped before
        aioquic would end the trace itself (after its draining period)."""
        quic = self._quic
        trace = quic._quic_logger  # aioquic internals
        logger = quic._configuration.quic_logger  # aioquic internals
        if trace is not None and logger is not None:
            quic._quic_logger = None  # aioquic internals
            logger.end_trace(trace)

    def pop_events(self) -> list[EngineEvent]:
        """Return the events produced since the last call, oldest first."""
        out: list[EngineEvent] = self._extra
        self._extra = []
        quic = self._quic
        while (event := quic.next_event()) is not None:
            converted = self._convert(event)
            if converted is not None:
                out.append(converted)
        if self._qlog and self.is_closed:
            self._end_qlog()
        return out

    def _convert(self, event: qe.QuicEvent) -> EngineEvent | None:
        if isinstance(event, qe.StreamDataReceived):
            quic = self._quic
            entry = quic.credit.get(event.stream_id)
            if entry is not None:  # remember how far it got: aioquic may drop it once finished
                quic.highest_offset(event.stream_id, entry)
                quic.credit_dirty = True
            return EngineStreamData(event.stream_id, event.data, event.end_stream)
        if isinstance(event, qe.DatagramFrameReceived):
            return EngineDatagram(event.data)
        if isinstance(event, qe.StreamReset):
            return EngineStreamReset(event.stream_id, event.error_code)
        if isinstance(event, qe.StopSendingReceived):
            return EngineStopSending(event.stream_id, event.error_code)
        if isinstance(event, qe.HandshakeCompleted):
            self._trim_pending = True
            return EngineHandshakeCompleted(event.alpn_protocol)
        if isinstance(event, qe.ConnectionTerminated):
            self._terminated = True
            return engine_terminated(
                event.error_code,
                event.reason_phrase,
                closed_locally=self._closed_locally,
                idle_timeout=self._quic._configuration.idle_timeout,  # engine internals
            )
        if isinstance(event, qe.ConnectionIdIssued):
            return EngineConnectionIdIssued(event.connection_id)
        if isinstance(event, qe.ConnectionIdRetired):
            return EngineConnectionIdRetired(event.connection_id)
        return None

    def next_stream_id(self, unidirectional: bool) -> int:
        """The ID the next locally opened stream of this kind gets."""
        return self._quic.get_next_available_stream_id(is_unidirectional=unidirectional)

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> bool:
        """Queue stream data. Returns False when the stream can no longer send."""
        try:
            self._quic.send_stream_data(stream_id, data, end_stream)
        except Exception:  # aioquic raises ValueError/AssertionError-like errors here
            return False
        return True

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        """Abruptly end our sending side (RESET_STREAM)."""
        with contextlib.suppress(Exception):  # the stream is already gone or cannot send
            self._quic.reset_stream(stream_id, error_code)

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        """Ask the peer to stop sending (STOP_SENDING)."""
        with contextlib.suppress(Exception):  # the stream is already gone or cannot receive
            self._quic.stop_stream(stream_id, error_code)

    def send_datagram(self, data: bytes) -> None:
        """Queue a DATAGRAM frame; the caller checked the size."""
        self._quic.send_datagram_frame(data)

    def trim_datagrams(self, limit: int) -> int:
        """Drop the oldest queued datagrams beyond ``limit``; returns how many were dropped."""
        pending = self._quic._datagrams_pending  # aioquic internals
        dropped = 0
        while len(pending) > limit:
            pending.popleft()
            dropped += 1
        return dropped

    def track_consumption(self, stream_id: int, consumed: int) -> None:
        """Tie ``stream_id``'s receive credit to consumption; ``consumed`` bytes are done.

        Until :meth:`untrack_consumption`, what it received beyond ``consumed`` counts against
        the connection's receive window and the stream holds one of the peer's stream slots.
        """
        quic = self._quic
        entry = [consumed, consumed]
        quic.highest_offset(stream_id, entry)
        quic.credit[stream_id] = entry
        quic.credit_dirty = True

    def consume(self, stream_id: int, size: int) -> None:
        """The application consumed ``size`` more bytes of ``stream_id``."""
        quic = self._quic
        entry = quic.credit.get(stream_id)
        if entry is not None:  # never beyond what arrived: credit must not run ahead of data
            entry[0] = min(entry[0] + size, quic.highest_offset(stream_id, entry))
            quic.credit_dirty = True

    def untrack_consumption(self, stream_id: int) -> None:
        """The application is done with ``stream_id``'s receive side (read, stopped, dropped).

        What it still held counts as consumed, and its stream slot is free once the stream
        is finished on the wire too.
        """
        quic = self._quic
        if quic.credit.pop(stream_id, None) is not None:
            quic.released += 1
            quic.credit_dirty = True

    def send_ping(self) -> None:
        """Queue a PING frame (keeps the connection and NAT bindings alive)."""
        self._ping_uid += 1
        self._quic.send_ping(self._ping_uid)

    def max_udp_payload(self) -> int:
        """UDP payload size of the packets sent now (raised by path MTU discovery)."""
        return self._max_udp_payload

    def probing_path_mtu(self) -> bool:
        """True while path MTU discovery runs: until the first search ends, and during later
        searches (one every ``RAISE_INTERVAL`` while below the ceiling)."""
        path_mtu = self._path_mtu
        if path_mtu is None or self.is_closed:
            return False
        return path_mtu.searching or not path_mtu.started

    def max_datagram_payload(self) -> int:
        """Largest DATAGRAM frame payload that fits in one packet to this peer (0: none)."""
        quic = self._quic
        peer_cid = quic._peer_cid  # aioquic internals
        remote = quic._remote_max_datagram_frame_size  # aioquic internals
        key = (id(peer_cid), remote, self._max_udp_payload)
        if key != self._payload_key:  # recomputed when the peer CID, limit or path MTU changes
            self._payload_key = key
            if not remote:
                self._payload_limit = 0
            else:
                by_packet = (
                    self._max_udp_payload
                    - _SHORT_HEADER_OVERHEAD
                    - len(peer_cid.cid)
                    - _DATAGRAM_FRAME_OVERHEAD
                )
                self._payload_limit = max(0, min(by_packet, remote - _DATAGRAM_FRAME_OVERHEAD))
        return self._payload_limit

    # ----------------------------------------------------------------------------- path MTU

    def _follow_path(self) -> None:
        """Start over from the base size when aioquic moved to another network path.

        Before aioquic builds packets for it: a path that carries less would otherwise lose them,
        among them the PATH_CHALLENGE that validates it (padded to the packet size).
        """
        paths = self._quic._network_paths  # aioquic internals
        path = paths[0] if paths else None
        if path is not self._path:
            if self._path is not None and path is not None:
                assert self._path_mtu is not None
                self._path_mtu.restart()
            self._path = path
        path_mtu = self._path_mtu
        assert path_mtu is not None
        if path_mtu.current != self._max_udp_payload:  # a new path, or the peer's limit
            self._set_packet_size(path_mtu.current)

    def _validating_path(self) -> bool:
        """True when aioquic has a PATH_CHALLENGE or PATH_RESPONSE to send on some path."""
        for path in self._quic._network_paths:  # aioquic internals
            if path.remote_challenges or not (path.is_validated or path.local_challenge_sent):
                return True
        return False

    def _probe_path(self, now: float, out: list[tuple[bytes, Address]]) -> None:
        """Send the path MTU probe that is due, if any, once the handshake is confirmed."""
        path_mtu = self._path_mtu
        assert path_mtu is not None
        quic = self._quic
        if not quic._handshake_confirmed:  # aioquic internals
            return
        path_mtu.start(now)
        size = path_mtu.probe_size(now)
        if size is None or quic._state is not QuicConnectionState.CONNECTED:  # aioquic internals
            return
        crypto = quic._cryptos.get(tls.Epoch.ONE_RTT)  # aioquic internals
        path = quic._network_paths[0]  # aioquic internals
        version = quic._version  # aioquic internals
        if crypto is None or not crypto.send.is_valid() or not path.is_validated or not version:
            return
        # One 1-RTT packet of exactly ``size`` bytes: PING (so the peer acknowledges it), then
        # PADDING frames up to the size, numbered in sequence with aioquic's own packets.
        builder = QuicPacketBuilder(
            host_cid=quic.host_cid,
            is_client=quic._is_client,  # aioquic internals
            max_datagram_size=size,
            packet_number=quic._packet_number,  # aioquic internals
            peer_cid=quic._peer_cid.cid,  # aioquic internals
            spin_bit=quic._spin_bit,  # aioquic internals
            version=version,
        )
        builder.start_packet(QuicPacketType.ONE_RTT, crypto)
        builder.start_frame(
            QuicFrameType.PING,
            handler=self._on_probe_delivery,
            handler_args=(size, builder.packet_number),
        )
        room = builder.remaining_buffer_space
        padding = builder.start_frame(QuicFrameType.PADDING, capacity=room)
        padding.push_bytes(bytes(room - 1))  # (start_frame wrote the first PADDING byte)
        datagrams, packets = builder.flush()
        (packet,) = packets
        quic._packet_number = builder.packet_number  # aioquic internals
        packet.sent_time = now
        # Neither in flight nor ack-eliciting for aioquic's loss recovery: the probe takes no
        # congestion window, its loss is no congestion event (RFC 9000 14.4), and it does not
        # arm the PTO; the engine's own timer (three PTOs) decides when it is lost.
        packet.in_flight = False
        packet.is_ack_eliciting = False
        loss = quic._loss  # aioquic internals
        loss.on_packet_sent(packet=packet, space=quic._spaces[tls.Epoch.ONE_RTT])
        path.bytes_sent += len(datagrams[0])
        self._probe_number = packet.packet_number
        path_mtu.on_probe_sent(size, now, PROBE_TIMEOUT_PTOS * loss.get_probe_timeout())
        out.append((datagrams[0], path.addr))

    def _on_probe_delivery(self, delivery: QuicDeliveryState, size: int, number: int) -> None:
        """aioquic's delivery handler of a probe's PING: acknowledged or declared lost.

        A probe the engine's timer gave up for lost stays in aioquic's records: acknowledged
        late, it still proves its size; declared lost later, it is not the probe out any more.
        """
        path_mtu = self._path_mtu
        assert path_mtu is not None
        if delivery == QuicDeliveryState.ACKED:
            path_mtu.on_packet_acked(size, number)
            if path_mtu.on_probe_acked(size, self._now):
                self._set_packet_size(path_mtu.current)
        elif number == self._probe_number:
            path_mtu.on_probe_lost(size, self._now)

    def _set_packet_size(self, size: int) -> None:
        """Make aioquic build its packets ``size`` bytes long (the confirmed path MTU).

        When the size shrinks, queued DATAGRAM frames that no longer fit in a packet are
        dropped, as the network would drop them: aioquic would otherwise keep the first of them
        at the head of its queue for good, and every datagram behind it.
        """
        shrinks = size < self._max_udp_payload
        self._max_udp_payload = size
        self._quic._max_datagram_size = size  # aioquic internals: the packet builder's size
        if shrinks:
            room = self.max_datagram_payload()
            pending = self._quic._datagrams_pending  # aioquic internals
            if any(len(data) > room for data in pending):
                kept = [data for data in pending if len(data) <= room]
                pending.clear()
                pending.extend(kept)

    def _watch_losses(self) -> None:
        """Show the path MTU search which packets aioquic's loss recovery declares lost or
        acknowledged (black-hole detection, RFC 8899 4.3).

        Two hooks, set on the connection's own recovery objects: the pass that declares packets
        lost (``_on_packets_lost``, also run when a PTO sends the oldest packet again), and the
        congestion controller's count of an acknowledged packet, called for every acknowledged
        packet in flight. Probes are not in flight: neither hook sees them (their delivery
        handler reports them).
        """
        path_mtu = self._path_mtu
        assert path_mtu is not None
        base = path_mtu.base
        loss = self._quic._loss  # aioquic internals
        declare_lost = loss._on_packets_lost  # aioquic internals
        congestion = loss._cc  # aioquic internals
        count_acked = congestion.on_packet_acked
        set_packet_size = self._set_packet_size

        def on_packets_lost(*, packets: Sequence[Any], now: float, **kwargs: Any) -> None:
            declare_lost(packets=packets, now=now, **kwargs)
            if path_mtu.current > base:
                lost = [(p.packet_number, p.sent_bytes) for p in packets if p.in_flight]
                if lost and path_mtu.on_packets_lost(lost, now):
                    set_packet_size(base)

        def on_packet_acked(*, packet: Any, now: float) -> None:
            count_acked(packet=packet, now=now)
            if packet.sent_bytes > base and packet.packet_number > path_mtu.largest_acked:
                path_mtu.on_packet_acked(packet.sent_bytes, packet.packet_number)

        loss._on_packets_lost = on_packets_lost  # type: ignore[method-assign, assignment]
        congestion.on_packet_acked = on_packet_acked  # type: ignore[method-assign]

    def send_buffered(self, stream_id: int) -> int:
        """Bytes written on ``stream_id`` that the peer has not acknowledged yet."""
        stream = self._quic._streams.get(stream_id)  # aioquic internals
        if stream is None:
            return 0
        sender = stream.sender
        return int(sender._buffer_stop - sender._buffer_start)  # aioquic internals

    def close(self, error_code: int, reason: str) -> None:
        """Close the connection with an application error code."""
        if self._closed_locally or self._terminated:
            return
        if not self._quic._spaces:  # aioquic internals: filled by _initialize
            # Not started (a client before connect(), a server before its first Initial):
            # nothing was sent, and aioquic cannot build a CONNECTION_CLOSE without the
            # per-epoch state and network path it creates on start (KeyError, IndexError).
            self._end_locally(error_code, reason)
            return
        self._closed_locally = True
        self._quic.close(error_code=error_code, reason_phrase=reason)

    def peer_certificate_der(self) -> bytes | None:
        """The DER certificate the peer presented, once the handshake got that far."""
        from cryptography.hazmat.primitives.serialization import Encoding

        cert = self._quic.tls._peer_certificate  # aioquic internals
        return None if cert is None else cert.public_bytes(Encoding.DER)

    def smoothed_rtt(self) -> float:
        """The current smoothed round-trip time estimate, in seconds."""
        return float(self._quic._loss._rtt_smoothed)  # aioquic internals

    def path_stats(self) -> PathStats:
        """Bytes and packets sent, received and lost, the RTT estimates and the congestion
        window (aioquic's loss recovery keeps the last two; the engine counts the rest)."""
        loss = self._quic._loss  # aioquic internals
        sampled = bool(loss._rtt_initialized)  # aioquic internals
        return PathStats(
            bytes_sent=self._traffic.bytes_sent,
            packets_sent=self._traffic.packets_sent,
            bytes_received=self._traffic.bytes_received,
            packets_received=self._traffic.packets_received,
            packets_lost=self._lost[0],
            bytes_lost=self._lost[1],
            smoothed_rtt=float(loss._rtt_smoothed) if sampled else None,  # aioquic internals
            rtt_variation=float(loss._rtt_variance) if sampled else None,  # aioquic internals
            min_rtt=float(loss._rtt_min) if sampled else None,  # aioquic internals
            congestion_window=int(loss._cc.congestion_window),  # aioquic internals
        )

    def _count_losses(self) -> None:
        """Count the packets (and their bytes) aioquic's loss recovery declares lost.

        A hook on the pass that declares them (``_on_packets_lost``, also run when a PTO sends
        the oldest packets again, which aioquic counts as lost); set before path MTU
        discovery's own hook, which wraps it.
        """
        loss = self._quic._loss  # aioquic internals
        declare_lost = loss._on_packets_lost  # aioquic internals
        lost = self._lost

        def on_packets_lost(*, packets: Sequence[Any], now: float, **kwargs: Any) -> None:
            declare_lost(packets=packets, now=now, **kwargs)
            lost[0] += len(packets)
            for packet in packets:
                lost[1] += packet.sent_bytes

        loss._on_packets_lost = on_packets_lost  # type: ignore[method-assign, assignment]

    def _is_stateless_reset(self, data: bytes) -> bool:
        """True when ``data`` ends with a stateless reset token the peer gave us."""
        if len(data) < 21 or data[0] & 0x80:
            return False
        quic = self._quic
        peer_cid = quic._peer_cid  # aioquic internals
        available = quic._peer_cid_available  # aioquic internals
        key = (id(peer_cid), len(available))
        if key != self._reset_key:  # the token set changes only with the peer's CIDs
            self._reset_key = key
            self._reset_tokens = frozenset(
                c.stateless_reset_token for c in (peer_cid, *available) if c.stateless_reset_token
            )
        return data[-16:] in self._reset_tokens


def _spent(pair: CryptoPair) -> bool:
    """True when neither direction of ``pair`` holds a key (never set up, or torn down)."""
    return not (pair.recv.is_valid() or pair.send.is_valid())


def aioquic_configuration(settings: QuicSettings) -> QuicConfiguration:
    """aioquic's ``QuicConfiguration`` for ``settings`` (reads the certificate and key files).

    Raises:
        OSError, ValueError: a certificate, key or CA file cannot be read or parsed.
    """
    qc = QuicConfiguration(
        is_client=settings.is_client,
        alpn_protocols=list(settings.alpn_protocols),
        idle_timeout=settings.idle_timeout,
        max_datagram_frame_size=settings.max_datagram_frame_size,
        max_datagram_size=settings.max_udp_payload,  # the base; the engine raises it
        server_name=settings.server_name,
        congestion_control_algorithm=settings.congestion_control,
    )
    qc.max_stream_data = settings.stream_receive_window
    qc.max_data = settings.connection_receive_window
    qc.secrets_log_file = settings.key_log
    if settings.qlog_dir is not None:
        os.makedirs(settings.qlog_dir, exist_ok=True)
        qc.quic_logger = QuicFileLogger(settings.qlog_dir)  # one .qlog per connection, at its end
    if settings.is_client:
        qc.verify_mode = settings.verify_mode
        if settings.ca_file:
            qc.load_verify_locations(cafile=settings.ca_file)
    if settings.certfile is not None:
        qc.load_cert_chain(settings.certfile, settings.keyfile)
    return qc


class AioquicFactory(ConfiguredFactory[AioquicEngine]):
    """:class:`EngineFactory` of :class:`AioquicEngine` (one configuration for all its engines)."""

    def __init__(self, settings: QuicSettings) -> None:
        super().__init__(settings, aioquic_configuration(settings), AioquicEngine)


#: One frame-handler table per connection class: frame type -> (function, epochs).
_FRAME_TABLES: dict[type, dict[int, tuple[Any, Any]]] = {}


class _SharedFrameHandlers:
    """aioquic's per-connection frame-handler table, replaced by a view of a shared one.

    aioquic builds a dict of ~30 (bound method, frozenset) pairs for every connection, about
    5 KiB that is the same for all of them. This view binds the method on lookup, which is the
    one thing aioquic does with the table (``handlers[frame_type]``, KeyError when unknown).
    """

    __slots__ = ("_conn", "_table")

    def __init__(self, conn: QuicConnection, table: dict[int, tuple[Any, Any]]) -> None:
        self._conn = conn
        self._table = table

    def __getitem__(self, frame_type: int) -> tuple[Any, Any]:
        function, epochs = self._table[frame_type]
        return function.__get__(self._conn), epochs


def _share_frame_handlers(quic: QuicConnection) -> None:
    """Swap the connection's frame-handler dict for a view of the table its class shares."""
    name = "_QuicConnection__frame_handlers"  # aioquic internals
    handlers = getattr(quic, name, None)
    if not isinstance(handlers, dict) or not all(
        getattr(handler, "__self__", None) is quic for handler, _ in handlers.values()
    ):
        return  # not the shape this was written for: keep aioquic's own table
    table = _FRAME_TABLES.get(type(quic))
    if table is None or table.keys() != handlers.keys():
        table = {ft: (handler.__func__, epochs) for ft, (handler, epochs) in handlers.items()}
        _FRAME_TABLES[type(quic)] = table
    setattr(quic, name, _SharedFrameHandlers(quic, table))
