"""SETTINGS: encoding, RFC 9114 section 7.2.4 checks, and dialect selection."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pywebtransport.protocol.codec import encode_varint
from pywebtransport.protocol.errors import ProtocolViolation, Scope
from pywebtransport.protocol.settings import (
    LocalLimits,
    build_settings,
    client_dialect,
    decode_settings,
    encode_settings,
    flow_control_enabled,
    peer_supports_datagrams,
    server_dialect,
)
from pywebtransport.protocol.wire import (
    HTTP2_ONLY_SETTINGS,
    MAX_VARINT,
    Dialect,
    H3ErrorCode,
    SettingId,
)

WT_ENABLED = 0x2C7CF000
WT_MAX_SESSIONS_13 = 0x14E9CD29
WT_MAX_SESSIONS_07 = 0xC671706A
ENABLE_WT_02 = 0x2B603742
FLOW_IDS = (0x2B61, 0x2B64, 0x2B65)


def pair(key: int, value: int) -> bytes:
    return encode_varint(key) + encode_varint(value)


def violation(payload: bytes) -> ProtocolViolation:
    with pytest.raises(ProtocolViolation) as info:
        decode_settings(payload)
    return info.value


def test_round_trip() -> None:
    settings = {0x01: 0, 0x06: 16384, 0x07: 0, 0x08: 1, 0x33: 1, 0x1F * 7 + 0x21: 12345}
    assert decode_settings(encode_settings(settings)) == settings


def test_round_trip_of_what_we_send() -> None:
    settings = build_settings(LocalLimits())
    assert decode_settings(encode_settings(settings)) == settings


def test_empty_payload() -> None:
    assert decode_settings(b"") == {}


settings_strategy = st.dictionaries(
    st.integers(min_value=0, max_value=MAX_VARINT).filter(
        lambda k: k not in HTTP2_ONLY_SETTINGS and k not in (0x08, 0x33, WT_ENABLED)
    ),
    st.integers(min_value=0, max_value=MAX_VARINT),
    max_size=20,
)


@given(settings_strategy)
def test_round_trip_any(settings: dict[int, int]) -> None:
    assert decode_settings(encode_settings(settings)) == settings


def test_duplicate_identifier() -> None:
    exc = violation(pair(0x33, 1) + pair(0x06, 100) + pair(0x33, 1))
    assert exc.code == H3ErrorCode.H3_SETTINGS_ERROR
    assert exc.scope is Scope.CONNECTION


@pytest.mark.parametrize("key", [0x02, 0x03, 0x04, 0x05])
def test_http2_identifiers(key: int) -> None:
    exc = violation(pair(0x08, 1) + pair(key, 0))
    assert exc.code == H3ErrorCode.H3_SETTINGS_ERROR
    assert exc.scope is Scope.CONNECTION


@pytest.mark.parametrize(
    "payload",
    [
        encode_varint(0x33),  # identifier without value
        pair(0x08, 1) + encode_varint(0x33),
        pair(0x08, 1) + encode_varint(0x33) + b"\x40",  # value varint cut short
        b"\x80\x00",  # identifier varint cut short
        encode_varint(WT_ENABLED)[:3],
    ],
)
def test_truncated_payload(payload: bytes) -> None:
    exc = violation(payload)
    assert exc.code == H3ErrorCode.H3_FRAME_ERROR
    assert exc.scope is Scope.CONNECTION


@pytest.mark.parametrize("key", [WT_ENABLED, 0x08, 0x33])
@pytest.mark.parametrize("value", [2, 1000])
def test_boolean_settings_above_one(key: int, value: int) -> None:
    # draft-16: WT_ENABLED other than 1 is H3_SETTINGS_ERROR; RFC 9220 / RFC 9297 likewise
    # for ENABLE_CONNECT_PROTOCOL and H3_DATAGRAM values other than 0 and 1.
    exc = violation(pair(key, value))
    assert exc.code == H3ErrorCode.H3_SETTINGS_ERROR


@pytest.mark.parametrize("key", [WT_ENABLED, 0x08, 0x33])
@pytest.mark.parametrize("value", [0, 1])
def test_boolean_settings_zero_or_one(key: int, value: int) -> None:
    assert decode_settings(pair(key, value)) == {key: value}


def test_grease_identifiers_are_kept() -> None:
    grease = {0x1F * n + 0x21: n for n in (0, 1, 1000)}
    assert decode_settings(encode_settings(grease)) == grease


# -------------------------------------------------------------------- dialect selection


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, None),
        ({0x08: 1, 0x33: 1}, None),
        ({ENABLE_WT_02: 0}, None),
        ({ENABLE_WT_02: 1}, Dialect.DRAFT02),
        ({ENABLE_WT_02: 1, 0x2B603743: 4}, Dialect.DRAFT02),  # draft-03 max sessions
        ({WT_MAX_SESSIONS_07: 1}, Dialect.DRAFT07),
        ({ENABLE_WT_02: 1, WT_MAX_SESSIONS_07: 16}, Dialect.DRAFT07),  # Chrome-like server
        ({WT_MAX_SESSIONS_13: 1}, Dialect.DRAFT13),
        ({WT_MAX_SESSIONS_07: 8, WT_MAX_SESSIONS_13: 8}, Dialect.DRAFT13),
        ({WT_ENABLED: 1}, Dialect.DRAFT15),
        ({WT_ENABLED: 0, WT_MAX_SESSIONS_07: 4}, Dialect.DRAFT07),
        (
            {
                ENABLE_WT_02: 1,
                WT_MAX_SESSIONS_07: 16,
                WT_MAX_SESSIONS_13: 16,
                WT_ENABLED: 1,
            },
            Dialect.DRAFT15,
        ),
        (build_settings(LocalLimits()), Dialect.DRAFT15),
    ],
)
def test_server_dialect(settings: dict[int, int], expected: Dialect | None) -> None:
    """A client picks the newest dialect the server's SETTINGS show."""
    assert server_dialect(settings) is expected


CHROME = {0x08: 1, 0x33: 1, 0xFFD277: 1, ENABLE_WT_02: 1, WT_MAX_SESSIONS_07: 100}


@pytest.mark.parametrize(
    ("settings", "protocol", "draft02_header", "expected"),
    [
        # draft-15/16: the :protocol token decides.
        ({WT_ENABLED: 1}, "webtransport-h3", False, Dialect.DRAFT15),
        ({}, "webtransport-h3", False, Dialect.DRAFT15),
        (build_settings(LocalLimits()), "webtransport-h3", False, Dialect.DRAFT15),
        # draft-02: the client's header.
        (CHROME, "webtransport", True, Dialect.DRAFT02),
        ({ENABLE_WT_02: 1}, "webtransport", True, Dialect.DRAFT02),
        ({ENABLE_WT_02: 1}, "webtransport", False, Dialect.DRAFT02),
        # draft-07..12 and 13/14: the client's max-sessions setting.
        (CHROME, "webtransport", False, Dialect.DRAFT07),
        ({WT_MAX_SESSIONS_07: 1}, "webtransport", False, Dialect.DRAFT07),
        ({WT_MAX_SESSIONS_13: 1}, "webtransport", False, Dialect.DRAFT13),
        ({WT_MAX_SESSIONS_07: 1, WT_MAX_SESSIONS_13: 1}, "webtransport", False, Dialect.DRAFT13),
        ({}, "webtransport", False, Dialect.DRAFT02),
    ],
)
def test_client_dialect(
    settings: dict[int, int], protocol: str, draft02_header: bool, expected: Dialect
) -> None:
    """The server learns a session's dialect from the client's SETTINGS and request."""
    assert client_dialect(settings, protocol, draft02_header) is expected


@pytest.mark.parametrize("dialect", [Dialect.DRAFT02, Dialect.DRAFT07])
@pytest.mark.parametrize("peer", [{}, dict.fromkeys(FLOW_IDS, 100)])
def test_flow_control_never_before_draft13(dialect: Dialect, peer: dict[int, int]) -> None:
    assert not flow_control_enabled(dialect, peer)


@pytest.mark.parametrize("dialect", [Dialect.DRAFT13, Dialect.DRAFT15])
def test_flow_control_from_draft13_when_peer_sent_credit(dialect: Dialect) -> None:
    assert not flow_control_enabled(dialect, {})
    assert not flow_control_enabled(dialect, {WT_ENABLED: 1, 0x08: 1, 0x33: 1})
    for key in FLOW_IDS:
        assert flow_control_enabled(dialect, {key: 1})
    assert flow_control_enabled(dialect, dict.fromkeys(FLOW_IDS, 100))
    assert flow_control_enabled(dialect, build_settings(LocalLimits()))


def test_peer_supports_datagrams() -> None:
    assert peer_supports_datagrams({0x33: 1})
    assert peer_supports_datagrams({0xFFD277: 1})
    assert not peer_supports_datagrams({0x33: 0})
    assert not peer_supports_datagrams({})


# -------------------------------------------------------------------- what we advertise


@pytest.mark.parametrize(
    "limits", [LocalLimits(), LocalLimits(max_sessions=3, initial_max_data=1000)]
)
def test_build_settings_serves_every_dialect(limits: LocalLimits) -> None:
    """What a server serving Chrome, Firefox, Safari and draft-15/16 peers sends."""
    settings = build_settings(limits)
    assert settings[0x08] == 1
    assert settings[0x33] == 1
    assert settings[0xFFD277] == 1
    assert settings[ENABLE_WT_02] == 1
    assert settings[WT_MAX_SESSIONS_07] == limits.max_sessions > 0
    assert settings[WT_ENABLED] == 1
    assert settings[0x2B61] == limits.initial_max_data > 0
    assert settings[0x2B64] == limits.initial_max_streams_uni > 0
    assert settings[0x2B65] == limits.initial_max_streams_bidi > 0
    # The only other entry is the draft-13/14 max sessions (Safari accepts it because the
    # flow-control settings come with it); nothing HTTP/2-only, no QPACK dynamic table.
    extra = set(settings) - {0x08, 0x33, 0xFFD277, ENABLE_WT_02, WT_MAX_SESSIONS_07, WT_ENABLED}
    assert extra - set(FLOW_IDS) == {SettingId.WT_MAX_SESSIONS_DRAFT13}
    assert settings[WT_MAX_SESSIONS_13] == limits.max_sessions
    assert not set(settings) & HTTP2_ONLY_SETTINGS
