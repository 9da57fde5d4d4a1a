"""The core's stream records: each side's state, changed only through checked steps."""

from __future__ import annotations

import pytest

from pywebtransport.protocol.stream_table import Kind, Receiving, Sending, Stream


def sides(stream: Stream) -> tuple[Receiving, Sending]:
    return stream.receiving, stream.sending


@pytest.mark.parametrize(
    ("unidirectional", "local", "receiving", "sending"),
    [
        (False, False, Receiving.OPEN, Sending.OPEN),  # a peer's bidirectional stream
        (False, True, Receiving.OPEN, Sending.OPEN),  # ours
        (True, False, Receiving.OPEN, Sending.NONE),  # a peer's unidirectional stream
        (True, True, Receiving.DONE, Sending.OPEN),  # ours: nothing ever arrives on it
    ],
)
def test_a_new_stream_starts_from_what_it_is(
    unidirectional: bool, local: bool, receiving: Receiving, sending: Sending
) -> None:
    stream = Stream(Kind.WEBTRANSPORT, unidirectional, local=local)
    assert (stream.receiving, stream.sending) == (receiving, sending)
    assert stream.session_id is None and not stream.request_seen


def test_the_receiving_side_ends_and_is_released_in_either_order() -> None:
    first = Stream(Kind.WEBTRANSPORT, False)
    first.end_receiving()
    assert sides(first)[0] is Receiving.ENDED and first.ended and not first.released
    first.release()
    assert sides(first)[0] is Receiving.DONE
    second = Stream(Kind.WEBTRANSPORT, False)
    second.release()
    assert sides(second)[0] is Receiving.RELEASED and second.released and not second.ended
    second.end_receiving()
    second.end_receiving()  # again: nothing changes
    assert sides(second)[0] is Receiving.DONE


def test_the_sending_side_ends_once_and_a_missing_one_stays_missing() -> None:
    ours = Stream(Kind.WEBTRANSPORT, False)
    assert sides(ours)[1] is Sending.OPEN
    ours.end_sending()
    assert sides(ours)[1] is Sending.DONE and ours.sending_done
    peers = Stream(Kind.WEBTRANSPORT, True)
    peers.end_sending()
    assert sides(peers)[1] is Sending.NONE and peers.sending_done


@pytest.mark.parametrize(
    ("start", "step"),
    [
        ({"receiving": Receiving.DONE}, {"receiving": Receiving.OPEN}),
        ({"receiving": Receiving.ENDED}, {"receiving": Receiving.RELEASED}),
        ({"sending": Sending.DONE}, {"sending": Sending.OPEN}),
        ({}, {"sending": Sending.NONE}),
    ],
)
def test_a_step_backwards_or_sideways_is_refused(
    start: dict[str, Receiving | Sending], step: dict[str, Receiving | Sending]
) -> None:
    stream = Stream(Kind.WEBTRANSPORT, False)
    stream.set_state(**start)  # type: ignore[arg-type]
    with pytest.raises(AssertionError):
        stream.set_state(**step)  # type: ignore[arg-type]
