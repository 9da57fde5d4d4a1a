"""The server's packet helpers: Retry tokens (routing, resets and Retry packets are exercised
by the pair and server tests)."""

from __future__ import annotations

from pywebtransport.protocol.packets import check_retry_token, retry_token


def test_retry_tokens_prove_the_address_and_expire() -> None:
    key, address, odcid = b"k" * 32, b"127.0.0.1|5000", b"\x01" * 8
    token = retry_token(key, address, odcid, now=1000.0)
    assert check_retry_token(key, token, address, now=1001.0) == odcid
    assert check_retry_token(key, token, b"127.0.0.2|5000", now=1001.0) is None  # elsewhere
    assert check_retry_token(b"x" * 32, token, address, now=1001.0) is None  # another key
    assert check_retry_token(key, token, address, now=1000.0 + 11) is None  # expired
    forged = token[:-1] + bytes([token[-1] ^ 1])
    assert check_retry_token(key, forged, address, now=1001.0) is None
    assert check_retry_token(key, b"short", address, now=1001.0) is None
