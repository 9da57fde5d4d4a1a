"""Session state on its own: flow-control capsules and close capsules, without a connection."""

from __future__ import annotations

import pytest

from pywebtransport.protocol.codec import decode_varint, encode_varint
from pywebtransport.protocol.errors import ProtocolViolation, Scope
from pywebtransport.protocol.session import FlowControl, read_close_capsule
from pywebtransport.protocol.wire import CapsuleType, H3ErrorCode

LIMITS = {"data": 1000, "bidi": 4, "uni": 2}


def fc() -> FlowControl:
    return FlowControl(dict(LIMITS), dict(LIMITS))


def test_more_credit_from_the_peer_is_taken_and_reported() -> None:
    control = fc()
    assert control.on_capsule(CapsuleType.WT_MAX_DATA, encode_varint(5000))
    assert control.data_credit() == 5000
    assert control.on_capsule(CapsuleType.WT_MAX_STREAMS_UNI, encode_varint(9))
    assert control.stream_credit(False) == 9 and control.stream_credit(True) == 4
    assert not control.on_capsule(CapsuleType.WT_DATA_BLOCKED, encode_varint(1000))


@pytest.mark.parametrize(
    ("ctype", "value", "code"),
    [
        (CapsuleType.WT_MAX_DATA, encode_varint(999), H3ErrorCode.WT_FLOW_CONTROL_ERROR),
        (CapsuleType.WT_MAX_STREAMS_BIDI, encode_varint(3), H3ErrorCode.WT_FLOW_CONTROL_ERROR),
        (CapsuleType.WT_MAX_DATA, b"\x80", H3ErrorCode.H3_MESSAGE_ERROR),
        (CapsuleType.WT_MAX_DATA, encode_varint(5000) + b"x", H3ErrorCode.H3_MESSAGE_ERROR),
    ],
    ids=["data-decreased", "streams-decreased", "truncated", "trailing-byte"],
)
def test_a_bad_flow_capsule_is_a_session_error(ctype: int, value: bytes, code: int) -> None:
    with pytest.raises(ProtocolViolation) as info:
        fc().on_capsule(ctype, value)
    assert (info.value.code, info.value.scope) == (code, Scope.SESSION)


def test_a_blocked_capsule_goes_once_per_kind_until_that_credit_grows() -> None:
    control = fc()
    first = control.blocked(None)
    ctype, pos = decode_varint(first)
    _length, pos = decode_varint(first, pos)
    assert ctype == CapsuleType.WT_DATA_BLOCKED and decode_varint(first, pos)[0] == 1000
    assert control.blocked(None) == b""  # once until the data credit grows
    # Being short of data credit does not hide being short of streams, and the reverse.
    streams = control.blocked(True)
    assert decode_varint(streams)[0] == CapsuleType.WT_STREAMS_BLOCKED_BIDI
    assert control.blocked(True) == b""
    assert decode_varint(control.blocked(False))[0] == CapsuleType.WT_STREAMS_BLOCKED_UNI
    # New stream credit re-arms that kind only.
    control.on_capsule(CapsuleType.WT_MAX_STREAMS_BIDI, encode_varint(6))
    assert control.blocked(None) == b"" and control.blocked(False) == b""
    assert decode_varint(control.blocked(True))[0] == CapsuleType.WT_STREAMS_BLOCKED_BIDI
    control.on_capsule(CapsuleType.WT_MAX_DATA, encode_varint(2000))
    assert decode_varint(control.blocked(None))[0] == CapsuleType.WT_DATA_BLOCKED


def test_close_capsules_are_read_and_checked() -> None:
    assert read_close_capsule((7).to_bytes(4, "big") + "bye é".encode()) == (7, "bye é")
    for bad in (b"\x00\x00\x01", b"\x00" * 4 + b"r" * 1025):
        with pytest.raises(ProtocolViolation) as info:
            read_close_capsule(bad)
        assert info.value.code == H3ErrorCode.H3_MESSAGE_ERROR
