"""The qh3 engine: :class:`QuicEngine` on top of qh3's ``QuicConnection`` (a Rust QUIC core).

qh3 (``pip install pywebtransport[fast]``) keeps aioquic's Python API over a packet core written
in Rust: the same events, the same sans-I/O calls, several times the throughput. This module is
the only one that touches it; the private names it needs are marked ``# qh3 internals`` and have
canary tests (tests/protocol/test_engine_qh3.py). qh3's internals differ from aioquic's entirely
(the connection is a facade over the Rust ``QuicConnectionCore``), so the guarantees
:class:`~pywebtransport.protocol.engine_aioquic.AioquicEngine` gives are rebuilt here from what
qh3 exposes or, where qh3 cannot give them, replaced by the closest safe behaviour.

Receive credit that follows consumption: **not given by qh3**. Its core counts stream data as
consumed when the Python facade takes the event out of the core, which it does for every packet
it receives, and raises MAX_STREAM_DATA / MAX_DATA to ``consumed + window`` once half a window
is used; nothing can hold credit back until the application has read. qh3's windows
(``stream_receive_window``, ``connection_receive_window``, set from our config) therefore bound
only the bytes in flight towards this endpoint, not what it holds unread. In their place the
engine keeps the memory bound and enforces it by closing instead of by flow control: it counts
the bytes delivered on tracked streams (:meth:`Qh3Engine.track_consumption`: the WebTransport
streams) that the application has not consumed, and closes the connection with
H3_EXCESSIVE_LOAD when they exceed ``connection_receive_window``, the most aioquic's credit ever
lets a peer make us hold. There is no separate per-stream bound: one stream may hold the whole
connection window. A peer that sends faster than the application reads is disconnected where
the aioquic engine would make it wait.

Stream slots (MAX_STREAMS): **partly given**. qh3 fixes its peer's limits at 100 bidirectional
and 103 unidirectional streams whatever is configured; the engine builds the core with
``max_streams_bidi`` / ``max_streams_uni`` and rewrites the two transport parameters to match
(:class:`_Qh3Connection`). But qh3 gives a slot back as soon as a stream is finished on the wire,
read or not: the engine closes the connection with H3_EXCESSIVE_LOAD when the peer's tracked
streams that the application has not released exceed those limits.

Backpressure (:meth:`Qh3Engine.send_buffered`): given, as an upper bound. qh3 reports a stream's
bytes not yet sent (``get_send_buffer_size``) and the connection's bytes in flight, not a
stream's unacknowledged bytes; the engine returns the first plus the second, so a writer waits
at least as long as with aioquic, and "everything acknowledged" (0) is never reported early.

Datagram queue (:meth:`Qh3Engine.trim_datagrams`): given. qh3 queues DATAGRAM frames without a
bound while congestion control holds them, and cannot drop them; the engine keeps them in a
queue of its own (which ``trim_datagrams`` trims) and hands qh3 only what the congestion window
allows.

Datagram size (:meth:`Qh3Engine.max_datagram_payload`): given. Computed from the UDP payload
size the core uses (its path MTU: ours, lowered to the peer's ``max_udp_payload_size``, raised by
its probing), the peer's connection ID length (read from its long-header packets; qh3 does not
expose it) and the peer's ``max_datagram_frame_size``.

Path MTU discovery: **partly given**, by qh3's own probing, which the engine turns on when the
ceiling (``max_path_udp_payload``) is above the base. qh3 probes as a client only, right after
the handshake, with the sizes 1280, 1350, 1452 and 1472 (IPv4; 1452 is its limit on IPv6), one
probe per size (lost after three PTOs, then the search ends), and never falls back once a size is
confirmed. The engine caps it at the ceiling by lowering the peer's ``max_udp_payload_size`` as
qh3's core reads it (:class:`_Qh3Connection`), and, since qh3 sends a probe only along with other
packets, gives it a PING to go with when a probe is due on a quiet connection
(:meth:`Qh3Engine._nudge_probe`). A qh3 server's packets stay at the base size, and a
path that shrinks under a qh3 client after its search is a black hole for the client's larger
packets.

Stateless resets: detection given by qh3 (its core matches the tokens of the transport
parameters and of NEW_CONNECTION_ID frames); a termination in the middle of receiving a packet
can only be a reset, and is reported as ``EngineTerminated(STATELESS_RESET_CODE)``. Tokens
derived from a key: given for the connection ID the server chose first (the one a client uses
unless it migrates), whose token travels in the transport parameters; **not given** for further
connection IDs, whose tokens qh3's core draws at random, so a restarted server cannot reset a
client that moved to one of them (the client then waits for its idle timeout).

Connection-ID control: the engine announces every ID qh3 issues or retires
(``EngineConnectionIdIssued/Retired``) so a server routes them, and accepts at most 2 from the
peer (``active_connection_id_limit``); how many qh3 issues itself follows the peer's limit (up to
8), which nothing public caps.

Certificate verification: given by qh3, which reads and sorts the trusted CA certificates again
for every certificate it checks (about 100 ms per connection with the system store). The
engine remembers the stores it read (:func:`remember_trust_stores`), keyed by the files'
size, modification time and inode, so a connection costs what the check itself costs.

Also given: certificate pinning (:meth:`Qh3Engine.peer_certificate_der`, from qh3's public
``get_peercert``) and :meth:`Qh3Engine.smoothed_rtt` (the core's estimate). Statistics
(:meth:`Qh3Engine.path_stats`): partly given; the engine counts bytes and packets, and the core
tells packets lost, the smoothed RTT and the congestion window, but not the RTT variation, the
minimum RTT or the bytes lost. Handshake-buffer
trimming has nothing to do: qh3's core discards the Initial and Handshake state itself.
Congestion control is always CUBIC (qh3 has no choice; ``congestion_control`` is ignored).

Workarounds for qh3 2.1, each explained where it is done: clients whose source connection ID is
empty (Chromium's), which qh3 cannot serve (:class:`_Qh3Connection`); a client's close right
after its handshake, which qh3 would send where the server cannot read it yet
(:meth:`Qh3Engine.close`); polling that drains qh3's pacer and keeps an idle connection waking
up (:meth:`Qh3Engine.datagrams_to_send`); packets lost when qh3 fails to build one
(:meth:`Qh3Engine._poll`); our streams beyond the peer's MAX_STREAMS, which qh3 refuses instead
of queueing (:meth:`Qh3Engine.send_stream_data`); and qh3's warning for every close a peer sends
(:class:`_EngineLogFilter`, which moves all of qh3's log lines to our logger at DEBUG).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import qh3
from qh3 import tls as qh3_tls
from qh3._hazmat import QuicConnectionCore
from qh3.quic import events as qe
from qh3.quic.configuration import QuicConfiguration
from qh3.quic.connection import QuicConnection
from qh3.quic.crypto import CIPHER_SUITES, derive_key_iv_hp
from qh3.quic.logger import QuicFileLogger
from qh3.quic.tls_bridge import QuicTlsBridge
from qh3.tls import (
    CipherSuite,
    ExtensionType,
    cipher_suite_hash,
    hkdf_expand_label,
    hkdf_extract,
)

from .codec import decode_varint, encode_varint
from .packets import stateless_reset_token
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
    file_stamp,
)
from .wire import H3ErrorCode

__all__ = ["Qh3Engine", "Qh3Factory", "qh3_configuration", "remember_trust_stores"]

logger = logging.getLogger(__name__)


#: Where qh3's log lines go (each at DEBUG; see :class:`_EngineLogFilter`).
engine_logger = logging.getLogger("pywebtransport.engine.qh3")
_QH3_DIR = os.path.dirname(qh3.__file__) + os.sep


class _EngineLogFilter(logging.Filter):
    """Moves qh3's records from its ``quic`` logger to ours, at DEBUG.

    qh3 warns "Native peer close" for every CONNECTION_CLOSE received: a peer closing its
    connection is how connections end, and the termination reaches the application as an
    event (code and reason) anyway. Its lines are engine detail, shown when
    ``pywebtransport.engine`` logs DEBUG. Records of other code on ``quic`` (aioquic's) pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.pathname.startswith(_QH3_DIR):
            return True
        if engine_logger.isEnabledFor(logging.DEBUG):
            engine_logger.debug("%s", record.getMessage())
        return False


logging.getLogger("quic").addFilter(_EngineLogFilter())  # qh3's connection logger

_SHORT_HEADER_OVERHEAD = 1 + 2 + 16  # first byte, 2-byte packet number (qh3's), AEAD tag
_MAX_CID_LENGTH = 20  # RFC 9000 17.2: assumed until the peer's is known
#: Connection IDs this endpoint accepts from the peer (RFC 9000's minimum, as the aioquic engine).
_ACTIVE_CONNECTION_IDS = 2
_INTERNAL_ERROR = 0x1  # QUIC INTERNAL_ERROR
_DATA, _RESET, _STOP = 0, 1, 2  # what a stream waiting for MAX_STREAMS has queued
_INITIAL_MAX_STREAMS_BIDI, _INITIAL_MAX_STREAMS_UNI = 0x08, 0x09  # transport parameter IDs
_ACK_DELAY_EXPONENT = 3  # qh3's (it advertises 3)
_MAX_ACK_DELAY = 0.025  # qh3's (it advertises 25 ms)
#: RFC 9001 5.2: the salt of QUIC version 1's Initial secrets.
_INITIAL_SALT_V1 = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")
#: qh3's path MTU probe sizes, and its own limits on IPv4 and IPv6 (qh3 internals: its Rust core).
_QH3_PROBE_SIZES = (1280, 1350, 1452, 1472)
_QH3_PROBE_LIMIT_IPV4, _QH3_PROBE_LIMIT_IPV6 = 1472, 1452


class _Qh3Connection(QuicConnection):
    """qh3's connection with our stream limits, derived reset tokens, empty client CIDs, and a
    ceiling for its path MTU probing.

    - Stream limits: qh3 builds its core, and writes its transport parameters, with 100
      bidirectional and 103 unidirectional peer streams whatever is configured; the core is
      built here with ``max_streams_bidi`` / ``max_streams_uni`` and the two parameters are
      rewritten to match.
    - Stateless reset: qh3 draws the server's first token at random; it is derived from the
      key here (:func:`stateless_reset_token`), so a restarted server can reset the client.
    - A client whose source connection ID is empty (Chromium's): qh3 2.1 cannot serve it. Its
      facade learns the client's source ID only when it is not empty, so it later compares the
      client's ``initial_source_connection_id`` (empty) with None and fails the handshake
      (TRANSPORT_PARAMETER_ERROR); and its core only switches its destination ID to the
      client's source ID when that is not empty, so it keeps sending to the client's original
      destination ID, which the client drops. Here, when the first Initial has an empty source
      ID, the core is built with an empty destination ID and with the client's chosen
      destination ID as the server's own connection ID (a server may pick any), the Initial
      keys (which qh3 derives from the destination ID it was given) are installed as derived
      from the client's destination ID (RFC 9001 5.2), and the TLS half records the client's
      empty source ID.
    - Path MTU probing (a client's): qh3 probes up to 1472 bytes on IPv4 whatever is
      configured, and only the peer's ``max_udp_payload_size`` caps it; that parameter is
      lowered to ``path_ceiling`` as the core reads it.
    """

    def __init__(
        self,
        *,
        max_streams_bidi: int,
        max_streams_uni: int,
        path_ceiling: int,
        reset_key: bytes | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.max_streams_bidi = max_streams_bidi
        self.max_streams_uni = max_streams_uni
        self.path_ceiling = path_ceiling
        self.reset_key = reset_key if not self._is_client else None  # qh3 internals
        self.empty_peer_cid = False  # server: the client's source connection ID is empty

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        if self._core is None and not self._is_client:  # qh3 internals: not started yet
            source_cid = _long_header_source_cid(data)
            destination_cid = _long_header_destination_cid(data)
            if source_cid == b"" and destination_cid:
                self.empty_peer_cid = True
                self.host_cid = destination_cid
        super().receive_datagram(data, addr, now)

    def _create_core(  # qh3 internals: builds the Rust core
        self, remote_addr: Any, initial_dcid: bytes, now: float
    ) -> None:
        configuration = self._configuration  # qh3 internals
        is_client = self._is_client
        version = self._version  # qh3 internals: set before the core is built
        assert version is not None
        client_dcid = initial_dcid
        if self.empty_peer_cid:
            initial_dcid = b""  # the client is addressed with its (empty) source ID
        self._core = QuicConnectionCore(  # qh3 internals
            is_client=is_client,
            version=version,
            local_addr=("0.0.0.0", 0),
            remote_addr=remote_addr,
            source_cid=self.host_cid,
            destination_cid=initial_dcid,
            peer_address_validated=is_client or self._retry_source_connection_id is not None,
            active_connection_id_limit=_ACTIVE_CONNECTION_IDS,
            max_datagram_size=configuration.max_datagram_size,
            probe_datagram_size=configuration.probe_datagram_size,
            idle_timeout=configuration.idle_timeout,
            ack_delay_exponent=_ACK_DELAY_EXPONENT,
            max_datagram_frame_size=configuration.max_datagram_frame_size,
            peer_max_datagram_frame_size=None,
            connection_receive_window=configuration.max_data,
            connection_send_limit=0,
            stream_receive_window=configuration.max_stream_data,
            stream_send_limit_bidi_local=0,
            stream_send_limit_bidi_remote=0,
            stream_send_limit_uni=0,
            max_stream_reassembly=configuration.max_stream_data,
            local_max_streams_bidi=self.max_streams_bidi,
            local_max_streams_uni=self.max_streams_uni,
            peer_max_streams_bidi=0,
            peer_max_streams_uni=0,
            initial_rtt=configuration.initial_rtt,
            max_ack_delay=_MAX_ACK_DELAY,
            initial_time=now,
        )
        # What qh3's own _create_core resets along with a new core.
        self._applied_transport_parameters = None  # qh3 internals
        self._pre_handshake_state_replayed = False  # qh3 internals
        if self.empty_peer_cid:
            _install_initial_keys(self._core, client_dcid, version)

    def _drain_tls(self) -> None:  # qh3 internals: hands the peer's parameters to the core
        bridge = self._tls  # qh3 internals
        parameters = None if bridge is None else bridge.remote_transport_parameters
        if parameters is not None and parameters is not self._applied_transport_parameters:
            peer_limit = parameters.max_udp_payload_size
            if peer_limit is None or peer_limit > self.path_ceiling:
                parameters.max_udp_payload_size = self.path_ceiling
        super()._drain_tls()

    def _create_tls(self, remote_source_cid: bytes | None) -> QuicTlsBridge:  # qh3 internals
        bridge = super()._create_tls(remote_source_cid)
        if self.empty_peer_cid:
            bridge.remote_initial_source_connection_id = b""
        key = self.reset_key
        if key is not None:
            bridge.stateless_reset_token = stateless_reset_token(key, self.host_cid)
        extensions = bridge.tls.handshake_extensions
        for index, (kind, _) in enumerate(extensions):
            if kind == ExtensionType.QUIC_TRANSPORT_PARAMETERS:
                parameters = _with_stream_limits(
                    bridge.serialize_transport_parameters(),
                    self.max_streams_bidi,
                    self.max_streams_uni,
                )
                extensions[index] = (kind, parameters)
        return bridge


def _long_header_destination_cid(data: bytes) -> bytes | None:
    """The destination connection ID of a long-header packet (None: not one)."""
    if len(data) < 6 or not data[0] & 0x80 or len(data) < 6 + data[5]:
        return None
    return data[6 : 6 + data[5]]


def _long_header_source_cid(data: bytes) -> bytes | None:
    """The source connection ID of a long-header packet (None: not one)."""
    dcid = _long_header_destination_cid(data)
    if dcid is None or len(data) <= 6 + len(dcid):
        return None
    at = 6 + len(dcid)
    size = data[at]
    return data[at + 1 : at + 1 + size] if len(data) >= at + 1 + size else None


def _with_stream_limits(parameters: bytes, bidi: int, uni: int) -> bytes:
    """Transport parameters with initial_max_streams_bidi/uni set (RFC 9000 18: id, length,
    value; 0x08 and 0x09 hold a varint)."""
    out = bytearray()
    pos = 0
    while pos < len(parameters):
        start = pos
        kind, pos = decode_varint(parameters, pos)
        length, pos = decode_varint(parameters, pos)
        end = pos + length
        if kind in (_INITIAL_MAX_STREAMS_BIDI, _INITIAL_MAX_STREAMS_UNI):
            value = encode_varint(bidi if kind == _INITIAL_MAX_STREAMS_BIDI else uni)
            out += encode_varint(kind) + encode_varint(len(value)) + value
        else:
            out += parameters[start:end]
        pos = end
    return bytes(out)


def _install_initial_keys(core: QuicConnectionCore, client_dcid: bytes, version: int) -> None:
    """Install a server's Initial keys, derived from the client's destination ID (RFC 9001 5.2).

    Only QUIC version 1 (the only one the server accepts).
    """
    suite = CipherSuite.AES_128_GCM_SHA256  # RFC 9001 5.2: the Initial packets' AEAD
    algorithm = cipher_suite_hash(suite)
    initial_secret = hkdf_extract(algorithm, _INITIAL_SALT_V1, client_dcid)
    for direction, label in (("receive", b"client in"), ("send", b"server in")):
        secret = hkdf_expand_label(algorithm, initial_secret, label, b"", 32)
        key, iv, hp = derive_key_iv_hp(cipher_suite=suite, secret=secret, version=version)
        hp_name, aead_name = CIPHER_SUITES[suite]
        core.install_packet_key(  # qh3 internals: the call its TLS bridge makes
            direction, 0, (aead_name.decode(), hp_name.decode()), key, iv, hp, 0
        )


#: The private keys qh3's TLS context keeps after the key exchange (qh3 internals).
_KEY_EXCHANGE_ATTRIBUTES = (
    "_x25519_private_key",
    "_x25519_kyber_768_private_key",
    "_ec_p256_private_key",
    "_ec_p384_private_key",
    "_ec_p521_private_key",
)


class Qh3Engine:
    """:class:`QuicEngine` on top of qh3's ``QuicConnection`` (see the module docstring).

    Args:
        configuration: qh3's settings; ``max_stream_data`` is qh3's stream window and
            ``max_data`` its connection window, which also bounds the unread bytes of
            WebTransport streams.
        original_destination_connection_id: server: the client's first destination CID.
        retry_source_connection_id: server: the CID its Retry told the client to use.
        max_streams_bidi, max_streams_uni: the peer's WebTransport streams of each kind the
            application may hold unreleased before the connection is closed.
        stateless_reset_key: server: the secret its first stateless-reset token is derived
            from (see :func:`stateless_reset_token`); None leaves qh3's random token.
        max_path_udp_payload: the ceiling of path MTU discovery (qh3's probing is on when the
            configuration says so: see :func:`qh3_configuration`).
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
        base = configuration.max_datagram_size
        ceiling = base if max_path_udp_payload is None else max(base, max_path_udp_payload)
        self._quic = _Qh3Connection(
            max_streams_bidi=max_streams_bidi,
            max_streams_uni=max_streams_uni,
            path_ceiling=ceiling,
            reset_key=stateless_reset_key,
            configuration=configuration,
            original_destination_connection_id=original_destination_connection_id,
            retry_source_connection_id=retry_source_connection_id,
        )
        self.is_client = configuration.is_client
        self._max_udp_payload = base
        self._path_ceiling = ceiling
        self._probes = configuration.is_client and configuration.probe_datagram_size
        self._probe_top = 0  # the size qh3's probing ends at when no probe is lost (0: unknown)
        self._last_probe = 0  # the size of the last probe qh3 sent (0: none yet)
        self._nudged = 0  # the path MTU at which a PING last gave qh3 a packet to probe with
        self._unread_limit = configuration.max_data
        self._max_streams = {False: max_streams_bidi, True: max_streams_uni}
        self._peer_bit = 1 if self.is_client else 0  # the initiator bit of the peer's streams
        self._closed_locally = False
        self._terminated = False
        self._qlog = configuration.quic_logger is not None
        self._events: list[EngineEvent] = []
        self._ping_uid = 0
        self._peer_cid_length: int | None = None
        self._datagrams: deque[bytes] = deque()
        self._datagrams_handed = 0  # bytes of datagrams given to qh3 that may not have left
        self._credit: dict[int, list[int]] = {}  # tracked stream -> [consumed, received]
        self._unread = 0  # received - consumed over tracked streams
        self._peer_streams = {False: 0, True: 0}  # tracked peer streams, by unidirectional
        self._handshake_unsent = False  # client: handshake done, its last flight not sent yet
        self._handshake_done = False
        self._dirty = True  # something happened since qh3 last had nothing to send
        # Our streams beyond the peer's MAX_STREAMS: what was asked of each, in order.
        self._blocked: dict[int, list[tuple[int, Any, bool]]] = {}
        self._last_blocked = {False: -1, True: -1}  # the highest blocked stream ID, by kind
        self._deferred_close: tuple[int, str] | None = None
        # What crossed the network path: UDP datagrams and their payload bytes (path_stats).
        self._traffic = Traffic()

    exact_send_buffered = False  # send_buffered: an upper bound (see the module docstring)

    @property
    def host_cid(self) -> bytes:
        """The connection ID this endpoint chose first (servers route by it)."""
        return self._quic.host_cid

    @property
    def is_closed(self) -> bool:
        """True once the connection is terminated or closing."""
        if self._terminated or self._closed_locally:
            return True
        core = self._quic._core  # qh3 internals
        return core is not None and core.state in ("closing", "draining", "terminated")

    # ----------------------------------------------------------------------------- packets

    def connect(self, addr: Address, now: float) -> None:
        """Start the client handshake towards ``addr``.

        When qh3's ``connect()`` raises, or is interrupted, the engine terminates at once,
        locally, and the exception propagates: nothing reached the peer yet.
        """
        try:
            self._quic.connect(addr, now=now)
        except BaseException:  # re-raised: only the engine's own state is settled here
            self._end_locally(_INTERNAL_ERROR, "connect failed")
            raise

    def _end_locally(self, error_code: int, reason: str) -> None:
        """Terminate without involving qh3; :meth:`get_timer` makes the event due now."""
        self._closed_locally = True
        self._terminated = True
        self._events.append(EngineTerminated(error_code, reason, False))

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Feed one UDP payload to the engine."""
        if self._terminated:
            return
        if self._peer_cid_length is None:
            self._learn_peer_cid_length(data)
        self._traffic.received(data)
        self._dirty = True
        self._quic.receive_datagram(data, addr, now=now)
        self._drain(receiving=True)

    def receive_datagrams(self, batch: list[tuple[bytes, Address]], now: float) -> None:
        """Feed several UDP payloads (one socket read batch) to the engine."""
        if len(batch) == 1 or self._peer_cid_length is None:
            for data, addr in batch:
                self.receive_datagram(data, addr, now)
            return
        quic = self._quic
        start = 0
        while start < len(batch) and not self._terminated:
            addr = batch[start][1]
            end = start + 1
            while end < len(batch) and batch[end][1] == addr:
                end += 1
            self._dirty = True
            datagrams = [data for data, _ in batch[start:end]]
            for data in datagrams:
                self._traffic.received(data)
            quic.receive_many_datagrams(datagrams, addr, now=now)
            self._drain(receiving=True)
            start = end

    def _learn_peer_cid_length(self, data: bytes) -> None:
        """Read the peer's connection-ID length from the source CID of a long-header packet."""
        if len(data) < 7 or not data[0] & 0x80:
            return
        dcid_length = data[5]
        if 6 + dcid_length < len(data):
            self._peer_cid_length = data[6 + dcid_length]

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """UDP payloads to transmit now."""
        if self._terminated:
            return []
        if self._blocked:
            self._open_unblocked_streams()
        if self._datagrams:
            self._feed_datagrams()
        self._enforce_limits()
        if not self._dirty:
            # Nothing happened since qh3 last had nothing to send. Polling it again would
            # not be free: each poll takes a packet's worth from its pacer whether a packet
            # leaves or not, and arms a pacing timer when that runs short, so an idle
            # connection polled often would wake up every few microseconds for nothing.
            return []
        out = self._poll(now)
        if self._probes and self._handshake_done:
            self._nudge_probe(now, out)
        self._dirty = bool(out)
        if self._datagrams_handed:  # (whatever left counts as the datagrams first)
            self._datagrams_handed = max(0, self._datagrams_handed - sum(len(d) for d, _ in out))
        if self._handshake_unsent:
            self._handshake_unsent = False
            if self._deferred_close is not None:
                # The client's last handshake flight is in ``out``: the CONNECTION_CLOSE that
                # follows it (1-RTT) can now be read by the server.
                error_code, reason = self._deferred_close
                self._deferred_close = None
                self._closed_locally = False
                self.close(error_code, reason)
                out += self._poll(now)
                self._dirty = True
        self._drain(receiving=False)
        if out:
            self._traffic.sent(out)
        return out

    def _poll(self, now: float) -> list[tuple[bytes, Address]]:
        """What qh3's core has to send; the packets built before a failure are kept.

        qh3 2.1 sometimes fails to build a packet when little room is left (its anti-
        amplification allowance: "packet builder capacity exhausted"). Its
        ``datagrams_to_send()`` then raises and loses the packets it had already taken from
        the core; polling the core here keeps them, and the failure only ends this round
        (the builder is transactional: nothing queued is lost).
        """
        core = self._quic._core  # qh3 internals
        if core is None:
            return []
        out: list[tuple[bytes, Address]] = []
        poll = core.poll_transmit  # qh3 internals
        while True:
            try:
                transmit = poll(now)
            except RuntimeError as exc:
                logger.debug("qh3 could not build a packet: %s", exc)
                break
            if transmit is None:
                break
            out.append((transmit[0], transmit[1]))
        if self._probes and out:
            self._note_probes(core, out)
        return out

    def _nudge_probe(self, now: float, out: list[tuple[bytes, Address]]) -> None:
        """Give qh3 a packet to send its next path MTU probe with, when it has none.

        qh3 sends a probe only along with other packets, so on a connection with nothing to say
        its search would wait for the next keep-alive. When a probe is due (the last one was
        confirmed) and none left, a PING is queued and qh3 polled again: once per confirmed size.
        """
        core = self._quic._core  # qh3 internals
        if core is None or not self._probe_top:
            return
        mtu = core.active_path[5]  # qh3 internals: the path MTU
        if mtu >= self._probe_top or self._last_probe > mtu or self._nudged >= mtu:
            return  # over, a probe out (or lost: over), or nudged at this size already
        if any(len(data) > mtu for data, _ in out):
            return
        self._nudged = mtu
        self._ping_uid += 1
        with contextlib.suppress(Exception):  # closing
            self._quic.send_ping(self._ping_uid)
        out += self._poll(now)

    def _note_probes(self, core: QuicConnectionCore, out: list[tuple[bytes, Address]]) -> None:
        """Remember the last path MTU probe qh3 sent: the only packets above its path MTU."""
        mtu = core.active_path[5]  # qh3 internals: the path MTU
        if not self._probe_top:
            host = core.active_path[2][0]  # qh3 internals: the peer's address
            limit = _QH3_PROBE_LIMIT_IPV6 if ":" in host else _QH3_PROBE_LIMIT_IPV4
            limit = min(limit, self._path_ceiling)
            self._probe_top = max(
                [self._max_udp_payload, *(s for s in _QH3_PROBE_SIZES if s <= limit)]
            )
        if mtu >= self._probe_top:
            self._probes = False  # the search is over: nothing more to watch
            return
        for data, _ in out:
            if len(data) > mtu:
                self._last_probe = len(data)

    def _feed_datagrams(self) -> None:
        """Hand qh3 the queued datagrams its congestion window lets it send now.

        What was handed over before and may not have left yet (pacing) counts against the
        window, so qh3's own queue of datagrams stays within about one congestion window.
        """
        core = self._quic._core  # qh3 internals
        if core is None:
            return
        window = core.congestion_window - core.bytes_in_flight  # qh3 internals
        allowance = max(window - self._datagrams_handed, self._max_udp_payload)
        pending = self._datagrams
        send = self._quic.send_datagram_frame
        self._dirty = True
        while pending and allowance > 0:
            data = pending.popleft()
            size = len(data) + _SHORT_HEADER_OVERHEAD
            allowance -= size
            self._datagrams_handed += size
            with contextlib.suppress(Exception):  # too large, or no longer possible: dropped
                send(data)

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called."""
        if self._terminated:
            return 0.0 if self._events else None
        return self._quic.get_timer()

    def handle_timer(self, now: float) -> None:
        """Run the engine's timers (loss detection, idle timeout, ...)."""
        if not self._terminated:
            self._dirty = True
            self._quic.handle_timer(now=now)
            self._drain(receiving=False)

    def _end_qlog(self) -> None:
        """Write the connection's qlog trace now: a closing connection is dropped before
        qh3 would end the trace itself (after its draining period)."""
        quic = self._quic
        trace = quic._quic_logger  # qh3 internals
        logger = quic._configuration.quic_logger  # qh3 internals
        if trace is not None and logger is not None:
            quic._quic_logger = None  # qh3 internals
            logger.end_trace(trace)

    def pop_events(self) -> list[EngineEvent]:
        """Return the events produced since the last call, oldest first."""
        self._drain(receiving=False)
        self._enforce_limits()
        if self._qlog and self.is_closed:
            self._end_qlog()
        out = self._events
        self._events = []
        return out

    def _drain(self, *, receiving: bool) -> None:
        """Convert qh3's pending events (at once: a stateless reset is known by its timing)."""
        quic = self._quic
        events = self._events
        while (event := quic.next_event()) is not None:
            converted = self._convert(event, receiving)
            if converted is not None:
                events.append(converted)

    def _forget_key_exchange(self) -> None:
        """Drop the TLS key-exchange private keys once the handshake is done.

        qh3 keeps them for the connection's life: nothing reads them again, they are secrets
        that should not outlive their use, and the post-quantum one (X25519MLKEM768) holds
        about 4.5 KiB of native memory per connection.
        """
        bridge = self._quic._tls  # qh3 internals
        context = bridge.tls if bridge is not None else None
        for name in _KEY_EXCHANGE_ATTRIBUTES:
            if getattr(context, name, None) is not None:
                setattr(context, name, None)

    def _convert(self, event: qe.QuicEvent, receiving: bool) -> EngineEvent | None:
        if isinstance(event, qe.StreamDataReceived):
            entry = self._credit.get(event.stream_id)
            if entry is not None:
                entry[1] += len(event.data)
                self._unread += len(event.data)
            return EngineStreamData(event.stream_id, event.data, event.end_stream)
        if isinstance(event, qe.DatagramFrameReceived):
            return EngineDatagram(event.data)
        if isinstance(event, qe.StreamReset):
            return EngineStreamReset(event.stream_id, event.error_code)
        if isinstance(event, qe.StopSendingReceived):
            return EngineStopSending(event.stream_id, event.error_code)
        if isinstance(event, qe.HandshakeCompleted):
            self._handshake_done = True
            self._handshake_unsent = self.is_client
            self._forget_key_exchange()
            return EngineHandshakeCompleted(event.alpn_protocol)
        if isinstance(event, qe.ConnectionTerminated):
            self._terminated = True
            # qh3 terminates a connection in the middle of receiving a packet only when that
            # packet is a stateless reset, and reports it as code 0, no frame, no reason.
            if (
                receiving
                and not self._closed_locally
                and event.error_code == 0
                and event.frame_type is None
                and not event.reason_phrase
            ):
                return EngineTerminated(STATELESS_RESET_CODE, "stateless reset", True)
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

    def _enforce_limits(self) -> None:
        """Close the connection when the peer made us hold more than the windows allow."""
        if self._closed_locally or self._terminated:
            return
        if self._unread > self._unread_limit:
            reason = "the peer sent more than the receive window while nothing was read"
        elif any(self._peer_streams[kind] > self._max_streams[kind] for kind in (False, True)):
            reason = "the peer opened more streams than allowed while none was released"
        else:
            return
        self.close(H3ErrorCode.H3_EXCESSIVE_LOAD, reason)

    # ----------------------------------------------------------------------------- streams

    def next_stream_id(self, unidirectional: bool) -> int:
        """The ID the next locally opened stream of this kind gets."""
        following = self._quic.get_next_available_stream_id(is_unidirectional=unidirectional)
        last_blocked = self._last_blocked[unidirectional]
        return following if last_blocked < 0 else max(following, last_blocked + 4)

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> bool:
        """Queue stream data. Returns False when the stream can no longer send.

        A stream of ours beyond the peer's MAX_STREAMS waits in the engine until the peer
        allows it (qh3 refuses it: "stream limit exceeded").
        """
        if self.is_closed:
            # As aioquic's: the data goes nowhere, and the termination event says why (qh3
            # would raise, which the core reports as a stream that can no longer send).
            return True
        self._dirty = True
        blocked = self._blocked.get(stream_id)
        if blocked is None and self._beyond_stream_limit(stream_id):
            blocked = self._blocked[stream_id] = []
            self._last_blocked[bool(stream_id & 2)] = stream_id
        if blocked is not None:
            blocked.append((_DATA, data, end_stream))
            return True
        try:
            self._quic.send_stream_data(stream_id, data, end_stream)
        except Exception:  # qh3 raises QuicConnectionError (or AssertionError before start)
            return False
        return True

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        """Abruptly end our sending side (RESET_STREAM)."""
        self._end_direction(stream_id, _RESET, error_code, self._quic.reset_stream)

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        """Ask the peer to stop sending (STOP_SENDING)."""
        self._end_direction(stream_id, _STOP, error_code, self._quic.stop_stream)

    def _end_direction(
        self, stream_id: int, op: int, error_code: int, apply: Callable[[int, int], Any]
    ) -> None:
        """Apply a reset or stop now, or queue it behind a stream the peer does not allow yet."""
        self._dirty = True
        blocked = self._blocked.get(stream_id)
        if blocked is not None:
            blocked.append((op, error_code, False))
            return
        with contextlib.suppress(Exception):  # the stream is already gone or cannot do it
            apply(stream_id, error_code)

    def _beyond_stream_limit(self, stream_id: int) -> bool:
        """True for a stream of ours the peer's MAX_STREAMS does not allow yet.

        Before the handshake qh3 stages what is written and checks the limits itself.
        """
        if stream_id & 1 == self._peer_bit or not self._handshake_done:
            return False
        quic = self._quic
        if stream_id & 2:
            return stream_id >> 2 >= quic.max_concurrent_uni_streams
        return stream_id >> 2 >= quic.max_concurrent_bidi_streams

    def _open_unblocked_streams(self) -> None:
        """Hand qh3 the waiting streams the peer's MAX_STREAMS allows now (in ID order)."""
        quic = self._quic
        for stream_id in list(self._blocked):
            if self._beyond_stream_limit(stream_id):
                continue  # (a stream of the other kind may be allowed)
            actions = self._blocked.pop(stream_id)
            self._dirty = True
            for action, value, end_stream in actions:
                # (the first action is always data: the stream's header, which opens it)
                with contextlib.suppress(Exception):  # as for the calls made directly
                    if action == _DATA:
                        quic.send_stream_data(stream_id, value, end_stream)
                    elif action == _RESET:
                        quic.reset_stream(stream_id, value)
                    else:
                        quic.stop_stream(stream_id, value)
        for unidirectional in (False, True):
            if not any(bool(sid & 2) == unidirectional for sid in self._blocked):
                self._last_blocked[unidirectional] = -1

    def send_buffered(self, stream_id: int) -> int:
        """Bytes written on ``stream_id`` that may not be acknowledged yet (an upper bound).

        The stream's unsent bytes plus the connection's bytes in flight: qh3 does not tell
        which stream the bytes in flight belong to.
        """
        quic = self._quic
        blocked = self._blocked.get(stream_id)
        if blocked is not None:
            return sum(len(value) for action, value, _ in blocked if action == _DATA)
        try:
            unsent = quic.get_send_buffer_size(stream_id)
        except Exception:  # not a valid stream ID
            return 0
        core = quic._core  # qh3 internals
        return unsent + (core.bytes_in_flight if core is not None else 0)  # qh3 internals

    def track_consumption(self, stream_id: int, consumed: int) -> None:
        """Count ``stream_id``'s unread bytes against the limits; ``consumed`` bytes are done.

        Bytes that arrived before this call (the stream's header, at most one packet) are not
        counted: qh3 reports them before the stream is known to be a WebTransport stream.
        """
        if stream_id in self._credit:
            return
        self._credit[stream_id] = [consumed, consumed]
        if stream_id & 1 == self._peer_bit:
            self._peer_streams[bool(stream_id & 2)] += 1

    def consume(self, stream_id: int, size: int) -> None:
        """The application consumed ``size`` more bytes of ``stream_id``."""
        entry = self._credit.get(stream_id)
        if entry is not None:
            done = min(size, entry[1] - entry[0])
            if done > 0:
                entry[0] += done
                self._unread -= done

    def untrack_consumption(self, stream_id: int) -> None:
        """The application is done with ``stream_id``'s receive side (read, stopped, dropped)."""
        entry = self._credit.pop(stream_id, None)
        if entry is not None:
            self._unread -= entry[1] - entry[0]
            if stream_id & 1 == self._peer_bit:
                self._peer_streams[bool(stream_id & 2)] -= 1

    # ----------------------------------------------------------------------------- datagrams

    def send_datagram(self, data: bytes) -> None:
        """Queue a DATAGRAM frame; the caller checked the size."""
        self._datagrams.append(data)

    def trim_datagrams(self, limit: int) -> int:
        """Drop the oldest queued datagrams beyond ``limit``; returns how many were dropped."""
        pending = self._datagrams
        dropped = 0
        while len(pending) > limit:
            pending.popleft()
            dropped += 1
        return dropped

    def max_datagram_payload(self) -> int:
        """Largest DATAGRAM frame payload that fits in one packet to this peer (0: none)."""
        quic = self._quic
        remote = quic._remote_max_datagram_frame_size  # qh3 internals
        core = quic._core  # qh3 internals
        if not remote or core is None:
            return 0
        udp = min(self._path_ceiling, core.active_path[5])  # qh3 internals: the path MTU
        cid = _MAX_CID_LENGTH if self._peer_cid_length is None else self._peer_cid_length
        room = udp - _SHORT_HEADER_OVERHEAD - cid - 1  # the DATAGRAM frame type
        by_packet = room - 2 if room - 2 < 16384 else room - 4  # minus the length varint
        by_frame = remote - 1 - (2 if remote - 3 < 16384 else 4)
        return max(0, min(by_packet, by_frame))

    def max_udp_payload(self) -> int:
        """UDP payload size of the packets sent now (raised by qh3's path MTU probing)."""
        core = self._quic._core  # qh3 internals
        if core is None:
            return self._max_udp_payload
        return min(self._path_ceiling, core.active_path[5])  # qh3 internals: the path MTU

    def probing_path_mtu(self) -> bool:
        """True while qh3's path MTU probing runs: until its last size is confirmed or a probe
        is lost (qh3 then ends the search: its sizes leave nothing in between)."""
        if not self._probes or self.is_closed:
            return False
        core = self._quic._core  # qh3 internals
        if core is None or not self._handshake_done or not self._probe_top:
            return True
        mtu = core.active_path[5]  # qh3 internals: the path MTU
        last = self._last_probe
        if mtu >= self._probe_top:
            return False
        if last <= mtu:
            return True  # none sent yet, or the last one confirmed: the next one is due
        # The last probe is still out, or it was lost. qh3 internals: (packet number, size,
        # ack-eliciting) of the packets not acknowledged yet.
        return any(size == last for _, size, _ in core.outstanding_application_packets)

    # ----------------------------------------------------------------------------- connection

    def send_ping(self) -> None:
        """Queue a PING frame (keeps the connection and NAT bindings alive)."""
        self._ping_uid += 1
        self._dirty = True
        with contextlib.suppress(Exception):  # not started, or closing
            self._quic.send_ping(self._ping_uid)

    def close(self, error_code: int, reason: str) -> None:
        """Close the connection with an application error code."""
        if self._closed_locally or self._terminated:
            return
        if self._quic._core is None:  # qh3 internals: created on start
            # Not started (a client before connect(), a server before its first Initial):
            # nothing was sent, and qh3 has nothing to close.
            self._end_locally(error_code, reason)
            return
        self._closed_locally = True
        self._dirty = True
        if self._handshake_unsent:
            # qh3 2.1 closes at once in the highest epoch only (1-RTT) and drops the client's
            # unsent Finished: the server could never read the close. Send that flight first.
            self._deferred_close = (error_code, reason)
            return
        self._quic.close(error_code=error_code, reason_phrase=reason)

    def peer_certificate_der(self) -> bytes | None:
        """The DER certificate the peer presented, once the handshake got that far."""
        cert = self._quic.get_peercert()
        return None if cert is None else bytes(cert.public_bytes())

    def smoothed_rtt(self) -> float:
        """The current smoothed round-trip time estimate, in seconds (0 before a sample)."""
        core = self._quic._core  # qh3 internals
        rtt = None if core is None else core.smoothed_rtt
        return 0.0 if rtt is None else float(rtt)

    def path_stats(self) -> PathStats:
        """Bytes and packets sent and received (counted by the engine), and what qh3's core
        tells: packets lost, the smoothed RTT and the congestion window. qh3 exposes neither
        the RTT variation, nor the minimum RTT, nor the bytes lost: those are None."""
        core = self._quic._core  # qh3 internals
        rtt = None if core is None else core.smoothed_rtt  # qh3 internals
        return PathStats(
            bytes_sent=self._traffic.bytes_sent,
            packets_sent=self._traffic.packets_sent,
            bytes_received=self._traffic.bytes_received,
            packets_received=self._traffic.packets_received,
            packets_lost=0 if core is None else int(core.loss_total),  # qh3 internals
            smoothed_rtt=None if rtt is None else float(rtt),
            congestion_window=None if core is None else int(core.congestion_window),
        )


def qh3_configuration(settings: QuicSettings) -> QuicConfiguration:
    """qh3's ``QuicConfiguration`` for ``settings`` (reads the certificate and key files).

    Raises:
        OSError, ValueError: a certificate, key or CA file cannot be read or parsed.
    """
    qc = QuicConfiguration(
        is_client=settings.is_client,
        alpn_protocols=list(settings.alpn_protocols),
        idle_timeout=settings.idle_timeout,
        max_datagram_frame_size=settings.max_datagram_frame_size,
        max_datagram_size=settings.max_udp_payload,  # the base
        # qh3's path MTU probing (a client's only), capped by _Qh3Connection at the ceiling.
        probe_datagram_size=settings.max_path_udp_payload > settings.max_udp_payload,
        server_name=settings.server_name,
        max_stream_data=settings.stream_receive_window,
        max_data=settings.connection_receive_window,
        active_connection_id_limit=_ACTIVE_CONNECTION_IDS,
    )
    qc.secrets_log_file = settings.key_log
    if settings.qlog_dir is not None:
        os.makedirs(settings.qlog_dir, exist_ok=True)
        qc.quic_logger = QuicFileLogger(settings.qlog_dir)  # one .qlog per connection, at its end
    if settings.is_client:
        qc.verify_mode = settings.verify_mode
        if settings.ca_file:
            qc.load_verify_locations(cafile=settings.ca_file)
    if settings.certfile is not None:
        try:
            qc.load_cert_chain(settings.certfile, settings.keyfile)
        except OSError:
            raise
        except Exception as exc:  # qh3 raises IndexError for a file without a certificate
            raise ValueError(f"{settings.certfile}: {exc or type(exc).__name__}") from exc
        if qc.certificate is None or qc.private_key is None:
            raise ValueError(f"{settings.certfile}: no certificate and private key")
    return qc


class Qh3Factory(ConfiguredFactory[Qh3Engine]):
    """:class:`EngineFactory` of :class:`Qh3Engine` (one configuration for all its engines)."""

    def __init__(self, settings: QuicSettings) -> None:
        super().__init__(settings, qh3_configuration(settings), Qh3Engine)


_Store = tuple[list[bytes], list[bytes], list[bytes]]
_TRUST_STORES = 8
"""CA stores remembered (least recently used dropped); one per CA file a process trusts."""


def remember_trust_stores(default_files: Callable[[], tuple[str | None, str | None]]) -> None:
    """Make qh3 read each CA store once instead of for every certificate it verifies.

    qh3's certificate check (``qh3.tls.verify_certificate``) calls the module's
    ``load_store_and_sort`` each time, which parses every PEM certificate of the store and
    sorts them (about 100 ms for the system store of 144 certificates). The function is
    replaced, once per process, by :func:`_remembering_loader` around it. ``default_files``
    names the system store's file and directory (``ssl.get_default_verify_paths()``).
    """
    current = qh3_tls.load_store_and_sort  # qh3 internals: verify_certificate's store loader
    if not getattr(current, "remembers_stores", False):
        qh3_tls.load_store_and_sort = _remembering_loader(current, default_files)


def _remembering_loader(
    load: Callable[..., _Store], default_files: Callable[[], tuple[str | None, str | None]]
) -> Callable[..., _Store]:
    """``load`` (qh3's ``load_store_and_sort``) with its results remembered.

    The key is (cadata, cafile, capath) and the size, modification time and inode of the files
    read (``default_files()`` when none is named), so a rewritten file is read again; callers
    get copies. Anything that cannot be examined is loaded as before, uncached.
    """
    stores: OrderedDict[tuple[object, ...], _Store] = OrderedDict()

    def load_store_and_sort(
        cadata: bytes | None = None, cafile: str | None = None, capath: str | None = None
    ) -> _Store:
        files: tuple[str | None, str | None]
        if cadata is None and cafile is None and capath is None:
            files = default_files()
        else:
            files = (cafile or None, capath or None)
        try:
            key = (cadata, cafile, capath, *(file_stamp(path) for path in files))
        except OSError:
            return load(cadata=cadata, cafile=cafile, capath=capath)
        store = stores.get(key)
        if store is None:
            store = stores[key] = load(cadata=cadata, cafile=cafile, capath=capath)
            if len(stores) > _TRUST_STORES:
                stores.popitem(last=False)
        else:
            stores.move_to_end(key)
        anchors, intermediates, others = store
        return list(anchors), list(intermediates), list(others)

    load_store_and_sort.remembers_stores = True  # type: ignore[attr-defined]
    return load_store_and_sort
