"""Per-session state inside the core, including session-level flow control.

Theory of operation. A session is born from an extended CONNECT: on the client it starts
CONNECTING and becomes OPEN on a 2xx response (REJECTED otherwise); on the server it starts
REQUESTED and becomes OPEN when the application accepts it (REJECTED when it refuses). Streams
and datagrams that arrive for a session that is not OPEN yet wait in ``early`` (bounded in
count, bytes and time; the bookkeeping is in stream_table.py and sessions.py): they are replayed
in order when the session opens, refused with WT_BUFFERED_STREAM_REJECTED when a bound is hit or
the session is refused, and with WT_SESSION_GONE when it closes first. Any state can go to
CLOSED; CLOSED is final. This module holds the state (:class:`SessionPhase`,
:class:`FlowControl`, :class:`SessionState`); what the core does with it is in sessions.py.

Flow control (drafts 13 to 16) counts payload bytes of all the session's streams and the number
of streams each side opened, against credit granted by SETTINGS and the WT_MAX_* capsules. It is
only in force when the dialect has it and the peer advertised credit (see settings.py).
"""

from __future__ import annotations

import logging
from enum import Enum

from .codec import NeedMoreData, decode_varint, encode_capsule, encode_varint
from .errors import ProtocolViolation, Scope
from .events import ProtocolEvent
from .tlv import TLVReader
from .wire import MAX_CLOSE_REASON, CapsuleType, Dialect, H3ErrorCode

logger = logging.getLogger(__name__)


class SessionPhase(Enum):
    """Lifecycle of a session inside the core."""

    CONNECTING = "connecting"
    REQUESTED = "requested"
    OPEN = "open"
    REJECTED = "rejected"
    CLOSED = "closed"


# (from, to) pairs a session may take; anything else is a bug in the core.
_TRANSITIONS = {
    (SessionPhase.CONNECTING, SessionPhase.OPEN),
    (SessionPhase.CONNECTING, SessionPhase.REJECTED),
    (SessionPhase.CONNECTING, SessionPhase.CLOSED),
    (SessionPhase.REQUESTED, SessionPhase.OPEN),
    (SessionPhase.REQUESTED, SessionPhase.REJECTED),
    (SessionPhase.REQUESTED, SessionPhase.CLOSED),
    (SessionPhase.OPEN, SessionPhase.CLOSED),
    (SessionPhase.REJECTED, SessionPhase.CLOSED),
}

#: The capsules of session flow control (drafts 13 to 16).
FLOW_CAPSULES = frozenset(
    {
        CapsuleType.WT_MAX_DATA,
        CapsuleType.WT_MAX_STREAMS_BIDI,
        CapsuleType.WT_MAX_STREAMS_UNI,
        CapsuleType.WT_DATA_BLOCKED,
        CapsuleType.WT_STREAMS_BLOCKED_BIDI,
        CapsuleType.WT_STREAMS_BLOCKED_UNI,
    }
)
_CAPSULES_READ_WHOLE = FLOW_CAPSULES | {CapsuleType.CLOSE_SESSION, CapsuleType.DRAIN_SESSION}


class FlowControl:
    """Session-level credit in both directions."""

    __slots__ = (
        "blocked_sent",
        "consumed",
        "local_max_data",
        "local_max_streams",
        "peer_closed",
        "peer_opened",
        "received",
        "remote_max_data",
        "remote_max_streams",
        "sent",
        "we_opened",
        "window",
        "window_streams",
    )

    def __init__(self, local: dict[str, int], remote: dict[str, int]) -> None:
        self.window = local["data"]
        self.window_streams = {True: local["bidi"], False: local["uni"]}
        self.local_max_data = local["data"]
        self.local_max_streams = {True: local["bidi"], False: local["uni"]}
        self.remote_max_data = remote["data"]
        self.remote_max_streams = {True: remote["bidi"], False: remote["uni"]}
        self.sent = 0
        self.received = 0
        self.consumed = 0  # of ``received``, what the application read (or discarded)
        self.we_opened = {True: 0, False: 0}
        self.peer_opened = {True: 0, False: 0}
        self.peer_closed = {True: 0, False: 0}  # peer streams done with on both sides
        # The kinds of credit a BLOCKED capsule was sent for since that credit last grew: None
        # for data, True / False for bidirectional / unidirectional streams.
        self.blocked_sent: set[bool | None] = set()

    def data_credit(self) -> int:
        """Bytes we may still send in this session."""
        return self.remote_max_data - self.sent

    def stream_credit(self, bidirectional: bool) -> int:
        """Streams of this kind we may still open."""
        return self.remote_max_streams[bidirectional] - self.we_opened[bidirectional]

    def data_update_due(self) -> bool:
        """True when a WT_MAX_DATA update is worth sending (see :func:`grant_due`)."""
        return grant_due(self.local_max_data, self.received, self.consumed + self.window)

    def updates(self) -> bytes:
        """Capsules that raise the peer's credit, if any is due (empty if none).

        Credit follows what the application is done with: data credit is ``consumed +
        window`` (unread bytes hold it back), stream credit is ``closed + window`` (a stream
        counts until both sides are finished and its data read).
        """
        out = b""
        if self.data_update_due():
            self.local_max_data = self.consumed + self.window
            out += encode_capsule(CapsuleType.WT_MAX_DATA, encode_varint(self.local_max_data))
        for bidi, ctype in (
            (True, CapsuleType.WT_MAX_STREAMS_BIDI),
            (False, CapsuleType.WT_MAX_STREAMS_UNI),
        ):
            target = self.peer_closed[bidi] + self.window_streams[bidi]
            if grant_due(self.local_max_streams[bidi], self.peer_opened[bidi], target):
                self.local_max_streams[bidi] = target
                out += encode_capsule(ctype, encode_varint(target))
        return out

    def on_capsule(self, ctype: int, value: bytes) -> bool:
        """Apply the peer's flow-control capsule. Returns True when our credit grew.

        Raises:
            ProtocolViolation: a malformed capsule (H3_MESSAGE_ERROR) or a limit that went
                down (WT_FLOW_CONTROL_ERROR), both of session scope.
        """
        try:
            number, end = decode_varint(value)
        except NeedMoreData:
            number, end = -1, 0
        if number < 0 or end != len(value):
            raise ProtocolViolation(
                H3ErrorCode.H3_MESSAGE_ERROR, "malformed flow-control capsule", scope=Scope.SESSION
            )
        if ctype == CapsuleType.WT_MAX_DATA:
            if number < self.remote_max_data:
                raise ProtocolViolation(
                    H3ErrorCode.WT_FLOW_CONTROL_ERROR, "WT_MAX_DATA decreased", scope=Scope.SESSION
                )
            self.remote_max_data = number
            self.blocked_sent.discard(None)
        elif ctype in (CapsuleType.WT_MAX_STREAMS_BIDI, CapsuleType.WT_MAX_STREAMS_UNI):
            bidi = ctype == CapsuleType.WT_MAX_STREAMS_BIDI
            if number < self.remote_max_streams[bidi]:
                raise ProtocolViolation(
                    H3ErrorCode.WT_FLOW_CONTROL_ERROR,
                    "WT_MAX_STREAMS decreased",
                    scope=Scope.SESSION,
                )
            self.remote_max_streams[bidi] = number
            self.blocked_sent.discard(bidi)
        else:  # the peer's BLOCKED capsules: our grants follow consumption, not requests
            return False
        return True

    def blocked(self, bidirectional: bool | None) -> bytes:
        """The BLOCKED capsule to send when we ran out of credit (empty: one was sent already
        for this kind of credit, which has not grown since).

        ``bidirectional``: None for data (WT_DATA_BLOCKED), else the kind of stream.
        """
        if bidirectional in self.blocked_sent:
            return b""
        self.blocked_sent.add(bidirectional)
        if bidirectional is None:
            return encode_capsule(CapsuleType.WT_DATA_BLOCKED, encode_varint(self.remote_max_data))
        ctype = (
            CapsuleType.WT_STREAMS_BLOCKED_BIDI
            if bidirectional
            else CapsuleType.WT_STREAMS_BLOCKED_UNI
        )
        return encode_capsule(ctype, encode_varint(self.remote_max_streams[bidirectional]))


def read_close_capsule(value: bytes) -> tuple[int, str]:
    """The code and reason of a CLOSE_SESSION capsule.

    Raises:
        ProtocolViolation: H3_MESSAGE_ERROR (session scope) when it is shorter than a code or
            its reason is over 1024 bytes (the draft's limit).
    """
    if not 4 <= len(value) <= 4 + MAX_CLOSE_REASON:
        raise ProtocolViolation(
            H3ErrorCode.H3_MESSAGE_ERROR, "malformed close capsule", scope=Scope.SESSION
        )
    return int.from_bytes(value[:4], "big"), value[4:].decode("utf-8", "replace")


def grant_due(granted: int, used: int, target: int) -> bool:
    """Whether raising credit from ``granted`` to ``target`` is worth an update now.

    The one rule for every credit this endpoint grants: session capsules here, and QUIC
    MAX_DATA / MAX_STREAMS in the engine (quic.py).

    Yes once the increment is at least what the peer still has (``granted - used``): updates
    are batched (about one per half window when the application keeps up), yet a peer that
    has run out always gets whatever can be given.
    """
    increment = target - granted
    return increment > 0 and increment >= granted - used


class SessionState:
    """Everything the core tracks for one WebTransport session."""

    __slots__ = (
        "capsules",
        "close_received",
        "close_sent",
        "datagram_prefix",
        "dialect",
        "early",
        "early_bytes",
        "early_streams",
        "fc",
        "phase",
        "session_id",
        "streams",
    )

    def __init__(self, session_id: int, dialect: Dialect, phase: SessionPhase) -> None:
        self.session_id = session_id
        self.datagram_prefix = encode_varint(session_id >> 2)  # RFC 9297: quarter stream ID
        self.dialect = dialect
        self.phase = phase
        self.streams: set[int] = set()
        self.early: list[ProtocolEvent] = []
        self.early_streams = 0
        self.early_bytes = 0
        self.fc: FlowControl | None = None
        self.close_sent = False
        self.close_received = False
        self.capsules = TLVReader(
            is_buffered=_CAPSULES_READ_WHOLE.__contains__,
            max_buffered=4 + 1024 + 16,
            too_large_code=H3ErrorCode.H3_MESSAGE_ERROR,  # a malformed capsule: a malformed message
            scope=Scope.SESSION,  # the session's message, not the whole connection
        )

    @property
    def is_open(self) -> bool:
        """True while the session carries streams and datagrams."""
        return self.phase is SessionPhase.OPEN

    @property
    def is_pending(self) -> bool:
        """True while the CONNECT is not answered yet."""
        return self.phase in (SessionPhase.CONNECTING, SessionPhase.REQUESTED)

    def set_phase(self, phase: SessionPhase) -> None:
        """The one place a session changes phase."""
        if phase is self.phase:
            return
        if (self.phase, phase) not in _TRANSITIONS:
            raise AssertionError(f"session {self.session_id}: {self.phase} -> {phase}")
        logger.debug("session %d: %s -> %s", self.session_id, self.phase.value, phase.value)
        self.phase = phase
