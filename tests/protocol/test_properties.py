"""Hypothesis over the receive path and the session/stream state machine, two real cores.

Properties:

* random bytes on any kind of peer stream, or as datagrams, never raise out of the core; the
  only outcomes are a clean protocol error on the wire (a known code) or nothing at all, and
  the core's tables stay bounded; when the connection survives, a second session still works;
* random sequences of application calls on both sides (open, accept, reject, close,
  create_stream, send, reset, stop) raise nothing but ProtocolUsageError and never leave a
  stream of a closed session in either core.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pywebtransport.protocol import ProtocolUsageError, WebTransportProtocol
from pywebtransport.protocol import events as ev
from pywebtransport.protocol.codec import encode_varint
from pywebtransport.protocol.session import SessionPhase
from pywebtransport.protocol.wire import H3ErrorCode
from tests.protocol.pair import Pair
from tests.protocol.test_bad_input import footprint
from tests.protocol.test_core import (
    AUTHORITY,
    events,
    exchange_on_new_stream,
    second_session,
    settle,
)

KNOWN_CODES = frozenset(int(code) for code in H3ErrorCode) | {0x06}  # + QUIC FINAL_SIZE_ERROR
FAST = settings(
    max_examples=150,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def certdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("props")


def credit_is_consistent(protocol: WebTransportProtocol) -> None:
    """Early-stream counts match the streams marked early; session credit never shrinks."""
    early = sum(s.early_since is not None for s in protocol._streams.values())
    assert protocol._early_count == early
    for session in protocol._sessions.values():
        fc = session.fc
        if fc is not None:
            assert fc.local_max_data >= fc.window and fc.consumed <= fc.received
            for bidi in (True, False):
                assert fc.peer_closed[bidi] <= fc.peer_opened[bidi]


def no_stream_of_a_closed_session(protocol: WebTransportProtocol) -> None:
    for stream_id, stream in protocol._streams.items():
        if stream.kind.value != "webtransport":
            continue
        session = stream.session
        if session is not None:
            assert session.phase is not SessionPhase.CLOSED, f"stream {stream_id}"
            assert protocol._sessions.get(session.session_id) is session
        assert stream.session_id not in protocol._gone, f"stream {stream_id} of a gone session"


TARGETS = ["control", "request", "wt-bidi", "wt-uni", "connect", "uni", "datagram"]


@FAST
@given(
    target=st.sampled_from(TARGETS),
    data=st.binary(max_size=300),
    cuts=st.lists(st.integers(0, 300), max_size=4),
    fin=st.booleans(),
)
def test_random_bytes_from_a_peer_end_cleanly(
    certdir: Path, target: str, data: bytes, cuts: list[int], fin: bool
) -> None:
    pair = Pair(certdir, max_early_streams=4)
    sid = pair.open_session()
    healthy = second_session(pair)
    events(pair, "client")
    events(pair, "server")
    before = footprint(pair.server)
    engine = pair.client.engine
    if target == "datagram":
        for start, end in zip([0, *sorted(cuts)], [*sorted(cuts), len(data)], strict=True):
            if start < end:
                engine.send_datagram(data[start:end])
    else:
        stream_id = {
            "control": 2,
            "connect": sid,
            "request": None,
            "wt-bidi": None,
            "wt-uni": None,
            "uni": None,
        }[target]
        prefix = b""
        if stream_id is None:
            stream_id = engine.next_stream_id(target in ("wt-uni", "uni"))
            if target == "wt-bidi":
                prefix = encode_varint(0x41) + encode_varint(sid)
            elif target == "wt-uni":
                prefix = encode_varint(0x54) + encode_varint(sid)
        payload = prefix + data
        points = sorted({min(c, len(payload)) for c in cuts} | {0, len(payload)})
        for start, end in itertools.pairwise(points):
            engine.send_stream_data(stream_id, payload[start:end])
            pair.transfer()
        if fin:
            engine.send_stream_data(stream_id, b"", True)
    pair.roundtrip(limit=500)
    event(f"{target}: {'connection closed' if pair.server.engine.is_closed else 'survived'}")
    if pair.server.engine.is_closed:
        settle(pair)
        got = [e for e in pair.client_events if isinstance(e, ev.ConnectionTerminated)]
        got += [e for e in pair.server_events if isinstance(e, ev.ConnectionTerminated)]
        assert got and all(e.error_code in KNOWN_CODES for e in got)
        return
    after = footprint(pair.server)
    assert after["streams"] <= before["streams"] + 1
    assert after["early"] <= 4 and after["unknown_early"] <= 1
    assert after["sessions"] <= before["sessions"]
    no_stream_of_a_closed_session(pair.server)
    events(pair, "client")
    events(pair, "server")
    exchange_on_new_stream(pair, "client", healthy, b"healthy")


ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "open",
                "accept",
                "reject",
                "close",
                "stream",
                "send",
                "fin",
                "reset",
                "stop",
                "consume",
                "release",
                "pump",
            ]
        ),
        st.sampled_from(["client", "server"]),
        st.integers(0, 7),
    ),
    max_size=25,
)


@FAST
@given(actions=ACTIONS)
def test_random_application_calls_keep_the_state_machines_sound(
    certdir: Path, actions: list[tuple[str, str, int]]
) -> None:
    pair = Pair(certdir)
    sessions: list[int] = [pair.open_session()]  # one open session to start from
    streams: list[int] = []
    for action, side, n in actions:
        protocol = pair.client if side == "client" else pair.server
        session = sessions[n % len(sessions)] if sessions else 0
        stream = streams[n % len(streams)] if streams else 0
        try:
            if action == "open":
                sessions.append(pair.client.open_session(authority=AUTHORITY, path=f"/{n}"))
            elif action == "accept":
                pair.server.accept_session(session)
            elif action == "reject":
                pair.server.reject_session(session, status=400 + n)
            elif action == "close":
                protocol.close_session(session, code=n, reason="x" * n)
            elif action == "stream":
                streams.append(protocol.create_stream(session, bidirectional=n % 2 == 0))
            elif action in ("send", "fin"):
                protocol.send_stream_data(stream, b"d" * n, end_stream=action == "fin")
            elif action == "reset":
                protocol.reset_stream(stream, code=n)
            elif action == "stop":
                protocol.stop_stream(stream, code=n)
            elif action == "consume":
                protocol.stream_consumed(stream, n * 100)
            elif action == "release":
                protocol.stream_released(stream)
            else:
                pair.roundtrip()
        except ProtocolUsageError:
            pass
        pair.roundtrip()
        for core in (pair.client, pair.server):
            no_stream_of_a_closed_session(core)
            credit_is_consistent(core)
    event(f"streams opened: {min(len(streams), 3)}+, sessions: {min(len(sessions), 3)}+")
    assert not pair.client.engine.is_closed and not pair.server.engine.is_closed
