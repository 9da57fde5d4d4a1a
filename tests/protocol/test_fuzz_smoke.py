"""The atheris target of fuzz/receive_path.py, run on fixed random inputs (no atheris needed).

CI exercises the target and its invariants for a bounded time; the coverage-guided run is by
hand (see docs/security.md).
"""

from __future__ import annotations

import pytest
from fuzz.receive_path import Harness, one_input, random_inputs, run

from pywebtransport.protocol.codec import encode_frame, encode_varint
from pywebtransport.protocol.session import SessionPhase
from pywebtransport.protocol.wire import H3ErrorCode


def test_the_target_survives_fixed_random_inputs() -> None:
    closed = 0
    for data in random_inputs(400, seed=20261125):
        one_input(data)
    for data in random_inputs(100, seed=7):
        closed += run(data).engine.is_closed
    assert 0 < closed < 100  # the inputs reach both outcomes: errors and survival


def test_the_harness_completes_the_handshake() -> None:
    h = Harness()
    assert h.core._sessions[0].phase is SessionPhase.OPEN
    assert not h.engine.is_closed
    h.check()


@pytest.mark.parametrize(
    ("program", "code"),
    [
        (bytes([0x00, 2]) + encode_frame(0x00, b""), H3ErrorCode.H3_FRAME_UNEXPECTED),
        (bytes([0x10, 0]), H3ErrorCode.H3_CLOSED_CRITICAL_STREAM),
        (bytes([0x08, 0]), H3ErrorCode.H3_DATAGRAM_ERROR),
    ],
    ids=["data-on-control", "control-fin", "empty-datagram"],
)
def test_the_harness_reports_connection_errors(program: bytes, code: int) -> None:
    assert run(program).engine.closed_with == code


def test_the_checks_can_fail() -> None:
    """A core that kept a stream of a closed session would be caught."""
    h = run(bytes([0x06, 3, 0x00]) + b"hi")  # a WebTransport stream in session 0
    stream = next(s for s in h.core._streams.values() if s.kind.value == "webtransport")
    assert stream.session is not None
    stream.session.phase = SessionPhase.CLOSED
    with pytest.raises(AssertionError, match="closed session"):
        h.check()


def test_a_close_capsule_through_the_harness_closes_the_session() -> None:
    capsule = encode_varint(0x2843) + encode_varint(4) + b"\0\0\0\1"
    frame = encode_frame(0x00, capsule)
    h = run(bytes([0x01, len(frame)]) + frame)
    assert 0 not in h.core._sessions
    assert not h.engine.is_closed
