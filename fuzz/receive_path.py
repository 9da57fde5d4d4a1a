"""Coverage-guided fuzz target for the receive path of the sans-I/O core.

The input is a small program for a misbehaving client. A server core first completes the HTTP/3
handshake in memory (the client's control and QPACK streams with its SETTINGS, then an extended
CONNECT for session 0 that the server accepts). Then the program's operations feed raw bytes on
the control stream, the CONNECT stream, new request / WebTransport streams, the QPACK encoder
stream, as datagrams, resets and STOP_SENDINGs, and move the clock. The QUIC layer is replaced by
:class:`MemoryEngine`, which hands the bytes to the core exactly as a QUIC engine would (in order
per stream, nothing after FIN or reset): QUIC packet parsing is aioquic's, the rest is ours.

What must hold for every input (anything else is a crash):

* nothing raises out of ``receive_datagram`` / ``handle_timer``;
* the connection is only ever closed with a known HTTP/3, QPACK or WebTransport code;
* the core's tables stay bounded (streams, early streams, buffers), and no stream of a closed
  session stays in the core.

Run it::

    python fuzz/receive_path.py -max_total_time=30      # atheris (libFuzzer flags)
    python fuzz/receive_path.py --fallback 10000        # plain random inputs, no atheris
"""

from __future__ import annotations

import importlib
import random
import sys
import time

from pywebtransport.protocol import WebTransportProtocol
from pywebtransport.protocol import events as ev
from pywebtransport.protocol.codec import encode_frame, encode_varint
from pywebtransport.protocol.headers import HeaderCodec
from pywebtransport.protocol.quic import (
    Address,
    EngineDatagram,
    EngineEvent,
    EngineStopSending,
    EngineStreamData,
    EngineStreamReset,
    EngineTerminated,
    PathStats,
)
from pywebtransport.protocol.session import SessionPhase
from pywebtransport.protocol.settings import LocalLimits, build_settings, encode_settings
from pywebtransport.protocol.wire import H3ErrorCode

PEER: Address = ("192.0.2.1", 50000)
MAX_EARLY = 8
MAX_HEADER = 4096
KNOWN_CODES = frozenset(int(code) for code in H3ErrorCode)
SESSION = 0  # the accepted session's ID (the client's first bidirectional stream)


class MemoryEngine:
    """A :class:`~pywebtransport.protocol.quic.QuicEngine` for a server, without packets."""

    is_client = False
    exact_send_buffered = True

    def __init__(self) -> None:
        self.pending: list[EngineEvent] = []
        self.closed_with: int | None = None
        self.sent: dict[int, int] = {}
        self.resets: dict[int, int] = {}
        self.stops: dict[int, int] = {}
        self.datagrams = 0
        self._next = {True: 3, False: 1}  # server-initiated uni / bidi stream IDs

    @property
    def is_closed(self) -> bool:
        return self.closed_with is not None

    def connect(self, addr: Address, now: float) -> None:
        raise AssertionError("a server does not connect")

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """The harness pushes engine events directly; packets carry nothing here."""

    def receive_datagrams(self, batch: list[tuple[bytes, Address]], now: float) -> None:
        """See :meth:`receive_datagram`."""

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return []

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        """No QUIC timers."""

    def pop_events(self) -> list[EngineEvent]:
        out, self.pending = self.pending, []
        return out

    def next_stream_id(self, unidirectional: bool) -> int:
        stream_id = self._next[unidirectional]
        self._next[unidirectional] += 4
        return stream_id

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> bool:
        self.sent[stream_id] = self.sent.get(stream_id, 0) + len(data)
        return stream_id not in self.resets

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        self.resets.setdefault(stream_id, error_code)

    def stop_stream(self, stream_id: int, error_code: int) -> None:
        self.stops.setdefault(stream_id, error_code)

    def send_datagram(self, data: bytes) -> None:
        self.datagrams += 1

    def send_ping(self) -> None:
        """Nothing to keep alive."""

    def trim_datagrams(self, limit: int) -> int:
        return 0

    def track_consumption(self, stream_id: int, consumed: int) -> None:
        """Receive credit is not modelled here."""

    def consume(self, stream_id: int, size: int) -> None:
        """Receive credit is not modelled here."""

    def untrack_consumption(self, stream_id: int) -> None:
        """Receive credit is not modelled here."""

    def max_datagram_payload(self) -> int:
        return 1200

    def max_udp_payload(self) -> int:
        return 1200

    def probing_path_mtu(self) -> bool:
        return False

    def send_buffered(self, stream_id: int) -> int:
        return 0

    def close(self, error_code: int, reason: str) -> None:
        if self.closed_with is None:
            self.closed_with = error_code
            self.pending.append(EngineTerminated(error_code, reason, False))

    def peer_certificate_der(self) -> bytes | None:
        return None

    def smoothed_rtt(self) -> float:
        return 0.01

    def path_stats(self) -> PathStats:
        return PathStats(smoothed_rtt=0.01)


class Harness:
    """A server core after the handshake, and the client-side stream bookkeeping."""

    def __init__(self) -> None:
        self.engine = MemoryEngine()
        self.core = WebTransportProtocol(
            self.engine,
            limits=LocalLimits(initial_max_data=8192, initial_max_streams_bidi=4),
            max_header_size=MAX_HEADER,
            max_early_streams=MAX_EARLY,
            early_timeout=1.0,
        )
        self.core.max_early_bytes = 2048
        self.now = 0.0
        self.ended: set[int] = set()  # client streams after FIN or reset
        self.next = {True: 14, False: 4}  # the next new client uni / bidi stream
        self.current = {True: -1, False: -1}
        self.events: list[ev.ProtocolEvent] = []
        codec = HeaderCodec()
        settings = encode_frame(0x04, encode_settings(build_settings(LocalLimits())))
        self.feed(EngineStreamData(2, encode_varint(0x00) + settings, False))
        self.feed(EngineStreamData(6, encode_varint(0x02) + codec.encoder_stream_data, False))
        self.feed(EngineStreamData(10, encode_varint(0x03), False))
        section = [
            (b":method", b"CONNECT"),
            (b":protocol", b"webtransport-h3"),
            (b":scheme", b"https"),
            (b":authority", b"localhost:4433"),
            (b":path", b"/fuzz"),
        ]
        self.feed(EngineStreamData(SESSION, encode_frame(0x01, codec.encode(0, section)), False))
        requested = [e for e in self.events if isinstance(e, ev.SessionRequested)]
        assert [e.session_id for e in requested] == [SESSION]
        self.core.accept_session(SESSION)

    def feed(self, event: EngineEvent) -> None:
        """Hand one QUIC event to the core through its public receive path."""
        if self.engine.is_closed:
            return
        stream_id = getattr(event, "stream_id", None)
        if isinstance(event, EngineStreamData | EngineStreamReset):
            if stream_id in self.ended:
                return  # QUIC delivers nothing after FIN or reset (aioquic enforces it)
            if isinstance(event, EngineStreamReset) or event.end_stream:
                self.ended.add(event.stream_id)
            if isinstance(event, EngineStreamData) and not event.data and not event.end_stream:
                return
        self.engine.pending.append(event)
        self.core.receive_datagram(b"", PEER, self.now)
        self.events = self.core.pop_events()

    def stream(self, unidirectional: bool, new: bool) -> int:
        if new or self.current[unidirectional] < 0:
            self.current[unidirectional] = self.next[unidirectional]
            self.next[unidirectional] += 4
        return self.current[unidirectional]

    def check(self) -> None:
        """The invariants every input must keep."""
        core = self.core
        code = self.engine.closed_with
        closed = self.engine.is_closed
        assert code is None or code in KNOWN_CODES, f"closed with unknown code 0x{code:x}"
        opened = (self.next[True] - 14) // 4 + (self.next[False] - 4) // 4
        local = self.engine._next
        opened += (local[True] - 3) // 4 + (local[False] - 1) // 4
        assert len(core._streams) <= opened + 3 + 1, "more streams than were ever opened"
        assert 0 <= core._early_count <= MAX_EARLY * (1 + len(core._sessions))
        assert len(core._unknown_early) <= MAX_EARLY
        assert core._early_count == sum(s.early_since is not None for s in core._streams.values())
        for stream_id, stream in core._streams.items():
            assert len(stream.buf) <= core.max_early_bytes + 256, f"stream {stream_id} buffer"
            if stream.reader is not None:
                assert len(stream.reader._buf) <= MAX_HEADER + 256, f"stream {stream_id} frame"
            session = stream.session
            if session is not None and stream.kind.value == "webtransport" and not closed:
                gone = session.phase is SessionPhase.CLOSED
                assert not gone, f"stream {stream_id} of a closed session"
                assert core._sessions.get(session.session_id) is session
        for session in core._sessions.values():
            assert session.phase is not SessionPhase.CLOSED or self.engine.is_closed
            datagrams = sum(isinstance(e, ev.DatagramReceived) for e in session.early)
            assert datagrams <= MAX_EARLY
            assert len(session.capsules._buf) <= 4 + 1024 + 16 + 256


def run(data: bytes) -> Harness:
    """Execute one fuzz input; returns the harness (for tests)."""
    h = Harness()
    pos = 0
    while pos + 2 <= len(data) and not h.engine.is_closed:
        op, size = data[pos], data[pos + 1]
        chunk = data[pos + 2 : pos + 2 + size]
        pos += 2 + size
        fin = bool(op & 0x10)
        kind = op & 0x0F
        if kind == 0:
            h.feed(EngineStreamData(2, chunk, fin))
        elif kind == 1:
            h.feed(EngineStreamData(SESSION, chunk, fin))
        elif kind in (2, 3):  # a request stream: new, or the current one
            h.feed(EngineStreamData(h.stream(False, kind == 2), chunk, fin))
        elif kind in (4, 5):  # a client uni stream: new, or the current one
            h.feed(EngineStreamData(h.stream(True, kind == 4), chunk, fin))
        elif kind == 6:  # a WebTransport bidi stream for a session named by the input
            target = (chunk[:1] or b"\0")[0] & 0x0C
            payload = encode_varint(0x41) + encode_varint(target) + chunk[1:]
            h.feed(EngineStreamData(h.stream(False, True), payload, fin))
        elif kind == 7:  # a WebTransport uni stream
            target = (chunk[:1] or b"\0")[0] & 0x0C
            payload = encode_varint(0x54) + encode_varint(target) + chunk[1:]
            h.feed(EngineStreamData(h.stream(True, True), payload, fin))
        elif kind == 8:
            h.feed(EngineDatagram(chunk))
        elif kind == 9:
            h.feed(EngineStreamReset(h.stream(op & 0x20 == 0, False), size * 7))
        elif kind == 10:
            h.feed(EngineStopSending(h.stream(op & 0x20 == 0, False), size * 7))
        elif kind == 11:
            h.feed(EngineStreamData(6, chunk, fin))
        elif kind == 12:
            h.now += size / 64
            h.core.handle_timer(h.now)
            h.core.pop_events()
        elif kind == 13:  # the application side acts between packets
            application_step(h, size)
        h.check()
    return h


def application_step(h: Harness, size: int) -> None:
    """What a server application may do meanwhile; only usage errors may come out."""
    core = h.core
    sessions = [sid for sid, s in core._sessions.items() if s.phase is not SessionPhase.CLOSED]
    try:
        if size % 4 == 0 and sessions:
            core.close_session(sessions[size % len(sessions)], code=size, reason="fuzz")
        elif size % 4 == 1 and sessions:
            core.create_stream(sessions[0], bidirectional=bool(size & 8))
        elif size % 4 == 2 and sessions:
            core.send_datagram(sessions[0], b"x" * size)
        elif size % 8 == 3 and core._streams:
            streams = sorted(core._streams)
            stream_id = streams[size % len(streams)]
            if size & 0x10:
                core.stream_released(stream_id)
            else:
                core.stream_consumed(stream_id, size * 13)
        else:
            pending = [sid for sid, s in core._sessions.items() if s.is_pending]
            if pending:
                core.accept_session(pending[0])
    except Exception as exc:
        from pywebtransport.protocol.errors import ProtocolUsageError

        assert isinstance(exc, ProtocolUsageError), repr(exc)
    core.pop_events()


def one_input(data: bytes) -> None:
    """The fuzz entry point: any exception or failed check is a finding."""
    run(data)


def random_inputs(count: int, seed: int = 0) -> list[bytes]:
    """Deterministic structured random inputs (the fallback and the CI smoke test use them)."""
    rng = random.Random(seed)
    out: list[bytes] = []
    for _ in range(count):
        program = bytearray()
        for _ in range(rng.randrange(1, 12)):
            size = rng.choice((0, 1, 2, 3, 5, 8, 16, 40, 100, 255))
            program.append(rng.randrange(256))
            program.append(size)
            program += rng.randbytes(size)
        out.append(bytes(program))
    return out


def main(argv: list[str]) -> int:
    if "--fallback" in argv:
        count = int(argv[argv.index("--fallback") + 1])
        start = time.monotonic()
        for data in random_inputs(count, seed=int(time.time())):
            one_input(data)
        elapsed = time.monotonic() - start
        sys.stdout.write(f"{count} inputs in {elapsed:.1f} s, no finding\n")
        return 0
    atheris = importlib.import_module("atheris")
    atheris.instrument_all()
    atheris.Setup(argv, one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
