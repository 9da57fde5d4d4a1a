"""The path MTU search (protocol/pmtu.py) on its own: probes, timers and black holes, with the
clock passed by hand."""

from __future__ import annotations

import pytest

from pywebtransport.protocol.pmtu import (
    BASE,
    BLACK_HOLE_RETRY,
    CANDIDATES,
    MAX_PROBES,
    RAISE_INTERVAL,
    PathMtuSearch,
)

TIMEOUT = 0.1  # the probe timer an engine would give (three PTOs)


def started(ceiling: int = 1452, now: float = 0.0, **kwargs: object) -> PathMtuSearch:
    search = PathMtuSearch(BASE, ceiling, **kwargs)  # type: ignore[arg-type]
    search.start(now)
    return search


def run(search: PathMtuSearch, path_mtu: int, now: float = 0.0) -> tuple[list[int], float]:
    """Answer every probe as a path carrying ``path_mtu`` would: acknowledged at once, or lost
    when its timer runs out. Returns the probe sizes sent, in order, and the time reached."""
    sent: list[int] = []
    while (size := search.probe_size(now)) is not None:
        search.on_probe_sent(size, now, TIMEOUT)
        sent.append(size)
        if size <= path_mtu:
            now += 0.01
            search.on_probe_acked(size, now)
        else:
            deadline = search.deadline()
            assert deadline is not None and deadline == pytest.approx(now + TIMEOUT)
            now = deadline
            assert search.on_timer(now) == size
        assert len(sent) < 50, "the search never ends"
    return sent, now


def test_nothing_is_probed_before_the_handshake() -> None:
    search = PathMtuSearch(BASE, 1452)
    assert search.probe_size(100.0) is None and search.deadline() is None
    assert search.current == BASE


def test_the_search_climbs_the_candidates_to_the_ceiling() -> None:
    search = started()
    sent, _ = run(search, path_mtu=9000)
    assert sent == [1280, 1350, 1400, 1452]
    assert search.current == 1452
    assert not search.searching
    assert search.next_search is None  # at the ceiling: nothing more to find
    assert search.deadline() is None and search.probe_size(1e9) is None


def test_one_probe_at_a_time() -> None:
    search = started()
    assert search.probe_size(0.0) == 1280
    search.on_probe_sent(1280, 0.0, TIMEOUT)
    assert search.probe_size(0.0) is None  # out already
    assert search.deadline() == TIMEOUT


def test_an_acknowledged_probe_raises_the_confirmed_size_at_once() -> None:
    search = started()
    search.on_probe_sent(1280, 0.0, TIMEOUT)
    assert search.current == BASE
    assert search.on_probe_acked(1280, 0.01)
    assert search.current == 1280
    assert search.probe_size(0.01) == 1350  # the next probe is due at once


def test_a_size_is_given_up_after_max_probes_losses() -> None:
    search = started()
    sent, now = run(search, path_mtu=1350)
    assert sent == [1280, 1350] + [1400] * MAX_PROBES
    assert search.current == 1350
    assert search.probes_lost == MAX_PROBES
    assert not search.searching
    assert search.next_search == pytest.approx(now + RAISE_INTERVAL)


def test_a_single_loss_is_retried_at_the_same_size() -> None:
    search = started()
    search.on_probe_sent(1280, 0.0, TIMEOUT)
    search.on_probe_lost(1280, 0.05)  # the engine's loss detection, before the timer
    assert search.probe_size(0.05) == 1280
    search.on_probe_sent(1280, 0.05, TIMEOUT)
    assert search.on_probe_acked(1280, 0.06)
    assert search.probe_size(0.06) == 1350


def test_a_late_acknowledgement_of_a_given_up_probe_still_counts() -> None:
    search = started()
    search.on_probe_sent(1280, 0.0, TIMEOUT)
    assert search.on_timer(TIMEOUT) == 1280  # given up for lost, retried
    search.on_probe_sent(1280, TIMEOUT, TIMEOUT)
    assert search.on_probe_acked(1280, 0.15)  # the first one's acknowledgement
    assert search.current == 1280
    search.on_probe_lost(1280, 0.2)  # the retry's loss, reported late, changes nothing
    assert search.current == 1280 and search.probe_size(0.2) == 1350


def test_stale_reports_are_ignored() -> None:
    search = started()
    assert not search.on_probe_acked(1400, 0.0)  # not the size being searched
    search.on_probe_lost(1280, 0.0)  # none out
    assert search.probes_lost == 0 and search.current == BASE
    assert search.on_timer(10.0) is None


@pytest.mark.parametrize(
    ("path_mtu", "settles"),
    [(1199, BASE), (1279, BASE), (1300, 1280), (1399, 1350), (1451, 1400), (1500, 1452)],
)
def test_the_search_settles_on_the_largest_size_the_path_carries(
    path_mtu: int, settles: int
) -> None:
    search = started()
    sent, _ = run(search, path_mtu)
    assert search.current == settles
    failed = [size for size in sent if size > path_mtu]
    if settles < 1452:  # one size fails, MAX_PROBES times, and ends the search
        assert failed == [failed[0]] * MAX_PROBES
    else:
        assert not failed


def test_the_ceiling_is_tried_and_never_exceeded() -> None:
    search = started(ceiling=1380)
    sent, _ = run(search, path_mtu=9000)
    assert sent == [1280, 1350, 1380]
    assert search.current == 1380
    search = started(ceiling=1600)
    sent, _ = run(search, path_mtu=9000)
    assert sent == [*CANDIDATES, 1600]


def test_a_ceiling_at_the_base_turns_discovery_off() -> None:
    search = started(ceiling=BASE)
    assert not search.enabled
    assert search.probe_size(0.0) is None and search.deadline() is None
    assert search.current == BASE


def test_the_peers_limit_lowers_the_ceiling() -> None:
    search = PathMtuSearch(BASE, 1452)
    search.limit(None)  # absent: 65527
    search.limit(9000)
    assert search.ceiling == 1452
    search.limit(1370)
    search.start(0.0)
    sent, _ = run(search, path_mtu=9000)
    assert sent == [1280, 1350, 1370]
    assert search.current == 1370
    search.limit(1000)  # below the base: the base stays (every QUIC peer accepts it)
    assert search.ceiling == BASE and search.current == BASE


def test_the_peers_limit_during_a_search() -> None:
    search = started()
    search.on_probe_sent(1280, 0.0, TIMEOUT)
    search.on_probe_acked(1280, 0.01)
    search.on_probe_sent(1350, 0.01, TIMEOUT)
    search.limit(1300)
    assert search.probe_size(0.02) == 1300  # the probe out was above it: no longer counted
    assert not search.on_probe_acked(1350, 0.02)
    assert search.current == 1280


def test_a_search_below_the_ceiling_starts_again_after_the_raise_timer() -> None:
    search = started()
    _, now = run(search, path_mtu=1300)
    assert search.current == 1280
    again = search.next_search
    assert again is not None and again == pytest.approx(now + RAISE_INTERVAL)
    assert search.deadline() == again  # the engine's timer wakes it up
    assert search.probe_size(again - 1.0) is None
    sent, _ = run(search, path_mtu=9000, now=again)  # the path grew meanwhile
    assert sent == [1350, 1400, 1452]
    assert search.current == 1452 and search.next_search is None


def lose_large(
    search: PathMtuSearch, now: float, times: int, size: int = 1452, first: int = 100
) -> bool:
    """``times`` loss-detection passes, each losing one packet of ``size`` bytes (numbered
    ``first``, ``first + 1``, ...). Returns whether the last one made a black hole."""
    fell = False
    for i in range(times):
        fell = search.on_packets_lost([(first + i, size)], now + i * 0.01)
    return fell


def test_black_hole_falls_back_to_the_base_and_searches_again_soon() -> None:
    search = started()
    run(search, path_mtu=9000)
    search.on_packet_acked(1452, 99)
    assert not lose_large(search, 10.0, 2)
    assert search.current == 1452 and search.suspicious_bursts == 2
    assert search.on_packets_lost([(102, 1452), (103, 1400)], 10.5)  # the third pass in a row
    assert search.current == BASE
    assert search.black_holes == 1 and search.suspicious_bursts == 0
    assert search.next_search == pytest.approx(10.5 + BLACK_HOLE_RETRY)
    assert search.probe_size(10.6) is None
    # The search again finds what the path carries now.
    sent, _ = run(search, path_mtu=1360, now=10.5 + BLACK_HOLE_RETRY)
    assert sent == [1280, 1350] + [1400] * MAX_PROBES
    assert search.current == 1350


def test_a_newer_large_packet_acknowledged_clears_the_suspicion() -> None:
    search = started()
    run(search, path_mtu=9000)
    assert not lose_large(search, 10.0, 2, first=100)
    search.on_packet_acked(BASE, 150)  # a small packet got through: proves nothing about size
    search.on_packet_acked(1452, 99)  # a large one sent before the losses: nothing either
    assert search.suspicious_bursts == 2
    search.on_packet_acked(1300, 101)  # a large one sent after the first loss did
    assert search.suspicious_bursts == 0 and search.largest_acked == 101
    assert not lose_large(search, 11.0, 2, first=102)
    assert search.current == 1452


def test_losses_older_than_a_large_packet_that_got_through_are_not_suspicious() -> None:
    search = started()
    run(search, path_mtu=9000)
    search.on_packet_acked(1452, 200)
    for number in (190, 195, 199, 150):  # overtaken: the path carried packet 200
        assert not search.on_packets_lost([(number, 1452)], 10.0)
    assert search.suspicious_bursts == 0 and search.current == 1452


def test_a_lost_small_packet_clears_the_suspicion() -> None:
    search = started()
    run(search, path_mtu=9000)
    assert not lose_large(search, 10.0, 2)
    # Small ones are lost too: loss, not size.
    assert not search.on_packets_lost([(110, 1452), (111, BASE)], 10.5)
    assert search.suspicious_bursts == 0
    assert not lose_large(search, 11.0, 2, first=112)
    assert search.current == 1452


def test_no_black_hole_before_anything_was_confirmed() -> None:
    search = started()
    assert not lose_large(search, 0.0, 10)
    assert search.suspicious_bursts == 0 and search.black_holes == 0


def test_black_hole_during_a_search_abandons_it() -> None:
    search = started()
    search.on_probe_sent(1280, 0.0, TIMEOUT)
    search.on_probe_acked(1280, 0.01)
    search.on_probe_sent(1350, 0.01, TIMEOUT)
    assert lose_large(search, 0.02, 3, size=1280)
    assert search.current == BASE and not search.searching
    assert search.deadline() == pytest.approx(0.04 + BLACK_HOLE_RETRY)
    assert not search.on_probe_acked(1350, 0.05)  # the abandoned probe proves nothing now
    assert search.current == BASE


def test_the_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        PathMtuSearch(1000, 1452)
    with pytest.raises(ValueError):
        PathMtuSearch(BASE, 1452, max_probes=0)
    search = PathMtuSearch(BASE, 1452, candidates=(1452, 1300), max_probes=1)
    search.start(0.0)
    sent, _ = run(search, path_mtu=1400)
    assert sent == [1300, 1452]  # sorted; one loss is enough
    assert search.current == 1300


def test_a_new_path_starts_again_from_the_base() -> None:
    search = started()
    run(search, path_mtu=9000)
    search.on_packets_lost([(100, 1452)], 1.0)
    search.restart()
    assert search.current == BASE and search.suspicious_bursts == 0
    sent, _ = run(search, path_mtu=1300, now=2.0)  # at once, not after the raise timer
    assert sent == [1280] + [1350] * MAX_PROBES
    assert search.current == 1280
    before = PathMtuSearch(BASE, 1452)
    before.restart()  # before the handshake: nothing to search yet
    assert before.probe_size(0.0) is None and before.current == BASE
