"""The 32-bit WebTransport application error code mapping into the HTTP/3 error space."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pywebtransport.protocol.wire import (
    APP_ERROR_FIRST,
    APP_ERROR_LAST,
    app_code_to_h3,
    h3_to_app_code,
)

FIRST = 0x52E4A40FA8DB


def test_range_constants() -> None:
    assert APP_ERROR_FIRST == FIRST
    assert app_code_to_h3(0) == FIRST
    assert app_code_to_h3(0xFFFFFFFF) == APP_ERROR_LAST == 0x52E5AC983162


def test_code_7_matches_chrome() -> None:
    # The draft's mapping: writer.abort with code 7 arrives as RESET_STREAM 0x52e4a40fa8e2.
    assert app_code_to_h3(7) == 0x52E4A40FA8E2
    assert h3_to_app_code(0x52E4A40FA8E2) == 7


@pytest.mark.parametrize(
    ("code", "h3"),
    [
        (0, FIRST),
        (1, FIRST + 1),
        (0x1D, FIRST + 0x1D),
        (0x1E, FIRST + 0x1F),  # FIRST + 0x1e is reserved and skipped
        (0x1F, FIRST + 0x20),
        (1000, FIRST + 1000 + 1000 // 0x1E),
        (0xFFFFFFFF, 0x52E5AC983162),
    ],
)
def test_known_values_round_trip(code: int, h3: int) -> None:
    assert app_code_to_h3(code) == h3
    assert h3_to_app_code(h3) == code


@given(st.integers(min_value=0, max_value=0xFFFFFFFF))
def test_round_trip_any_32_bit_code(code: int) -> None:
    h3 = app_code_to_h3(code)
    assert APP_ERROR_FIRST <= h3 <= APP_ERROR_LAST
    assert (h3 - 0x21) % 0x1F != 0, "a code must never land on a reserved codepoint"
    assert h3_to_app_code(h3) == code


@given(st.integers(min_value=0, max_value=0xFFFFFFFE))
def test_mapping_is_strictly_increasing(code: int) -> None:
    assert app_code_to_h3(code) < app_code_to_h3(code + 1)


def reserved_in_range() -> list[int]:
    """The first and last few ``0x1f * N + 0x21`` codepoints inside the range."""
    n_first = -(-(APP_ERROR_FIRST - 0x21) // 0x1F)
    n_last = (APP_ERROR_LAST - 0x21) // 0x1F
    ns = [*range(n_first, n_first + 5), *range(n_last - 4, n_last + 1)]
    return [0x1F * n + 0x21 for n in ns]


@pytest.mark.parametrize("h3", reserved_in_range())
def test_reserved_codepoints_map_to_none(h3: int) -> None:
    assert APP_ERROR_FIRST <= h3 <= APP_ERROR_LAST
    assert h3_to_app_code(h3) is None


def test_first_reserved_codepoint_is_the_skipped_one() -> None:
    # 0x1d and 0x1e are neighbours as codes but not as HTTP/3 codes: the gap is reserved.
    gap = app_code_to_h3(0x1D) + 1
    assert gap == app_code_to_h3(0x1E) - 1
    assert h3_to_app_code(gap) is None


@given(st.integers(min_value=0, max_value=(APP_ERROR_LAST - APP_ERROR_FIRST - 0x1E) // 0x1F))
def test_every_reserved_codepoint_in_range_maps_to_none(n: int) -> None:
    h3 = APP_ERROR_FIRST + 0x1E + 0x1F * n
    assert h3 <= APP_ERROR_LAST
    assert (h3 - 0x21) % 0x1F == 0
    assert h3_to_app_code(h3) is None


@pytest.mark.parametrize(
    "h3",
    [0, 0x100, 0x10F, 0x170D7B68, 0x3994BD84, APP_ERROR_FIRST - 1, APP_ERROR_LAST + 1, 2**62 - 1],
)
def test_out_of_range_maps_to_none(h3: int) -> None:
    assert h3_to_app_code(h3) is None


@pytest.mark.parametrize("code", [-1, 2**32, 2**62])
def test_more_than_32_bits_raises(code: int) -> None:
    with pytest.raises(ValueError):
        app_code_to_h3(code)
