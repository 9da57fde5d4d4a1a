"""Path MTU discovery: how large the packets to one peer may be (RFC 9000 14.3, RFC 8899).

Every QUIC path carries 1200-byte UDP payloads, so a connection starts with packets of that size
(the *base*). Most paths carry more (1472 bytes on IPv4 over Ethernet, 1452 on IPv6), and a
DATAGRAM frame must fit in one packet, so the datagram payload limit of a session grows with the
packet size. :class:`PathMtuSearch` finds the size the path carries, as RFC 8899's
datagram-packetization-layer PMTUD does for QUIC:

- After the handshake it asks for *probes*: packets that elicit an acknowledgement (PING, padded to
  the probe size). An acknowledged probe *confirms* its size: the packets sent from then on use it.
- A probe not acknowledged within its timer (the engine gives it about three PTOs) is lost; the
  same size is tried ``max_probes`` times (RFC 8899 MAX_PROBES, 3), then the search ends at the
  last confirmed size, and starts again after ``raise_interval`` (PMTU_RAISE_TIMER, 600 s) in
  case the path grew.
- The sizes tried are a short ascending list (:data:`CANDIDATES`: 1280, 1350, 1400, 1452, and
  the ceiling itself), not a binary search. Each size that fails costs ``max_probes`` probe
  timers before the search moves on; a binary search meets several failing sizes on a narrow
  path where the list meets one, and on the common path (Ethernet, where every candidate fits)
  the list costs four probe round trips. The steps (50 to 80 bytes) between the base and the
  1452 bytes of IPv6 over 1500-byte Ethernet mean that a path whose MTU lies in between is used
  to within one step.
- The ceiling is the lowest of the configured one and the peer's ``max_udp_payload_size``
  transport parameter (:meth:`PathMtuSearch.limit`).
- A connection that moves to another network path (a migration, a NAT rebinding) starts again
  from the base (:meth:`PathMtuSearch.restart`).
- Black holes (RFC 8899 4.3): a path may start dropping large packets (a route change, a tunnel).
  The engine reports the packets each loss-detection pass declared lost
  (:meth:`PathMtuSearch.on_packets_lost`) and each packet larger than the base that was
  acknowledged (:meth:`PathMtuSearch.on_packet_acked`), with their packet numbers. A pass is
  suspicious when the packets it lost that were sent after the newest acknowledged large packet
  are all larger than the base (a loss older than that was overtaken by a large packet that got
  through, and a small packet lost too means loss, not size). ``black_hole_bursts`` (3) suspicious
  passes in a row, with no large packet sent after them acknowledged in between, make the packet
  size fall back to the base at once. As in RFC 8899 (its BASE state leads back to SEARCHING),
  the path is searched again soon after, here after ``black_hole_retry`` (1 s): a false alarm
  (heavy random loss on a stalled connection looks the same) then costs about a second of smaller
  packets, and a path that really shrank settles below its new limit (the size that fails is given
  up after ``max_probes`` probes, so the search does not flap).

Probes are not a congestion signal (RFC 9000 14.4): the engine keeps them out of its congestion
controller, and their loss never counts as a black hole. Nothing here does I/O or reads a clock:
every call that depends on time takes ``now``.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "BASE",
    "BLACK_HOLE_BURSTS",
    "BLACK_HOLE_RETRY",
    "CANDIDATES",
    "MAX_PROBES",
    "PROBE_TIMEOUT_PTOS",
    "RAISE_INTERVAL",
    "PathMtuSearch",
]

BASE = 1200
"""The UDP payload every QUIC path carries (RFC 9000 14): where every connection starts."""

CANDIDATES = (1280, 1350, 1400, 1452)
"""The probe sizes (UDP payloads) a search tries in order; the ceiling is tried last."""

MAX_PROBES = 3
"""Probes of one size that must be lost before the size is given up (RFC 8899 MAX_PROBES)."""

PROBE_TIMEOUT_PTOS = 3
"""An engine's probe timer, in probe timeouts (PTO) of the connection at the time it is sent."""

RAISE_INTERVAL = 600.0
"""Seconds after a search that ended below the ceiling before the next (PMTU_RAISE_TIMER)."""

BLACK_HOLE_RETRY = 1.0
"""Seconds after a fall back to the base before the path is searched again."""

BLACK_HOLE_BURSTS = 3
"""Suspicious loss-detection passes in a row (see :class:`PathMtuSearch`) that make a black
hole."""


class PathMtuSearch:
    """The path MTU of one connection: the confirmed packet size and the search for a larger one.

    Args:
        base: the packet size (UDP payload) the connection starts with; always carried.
        ceiling: the largest size ever used (the configured ceiling); at most ``base`` turns
            discovery off.
        candidates: the probe sizes tried, in ascending order (those above ``ceiling`` are not).
        max_probes: lost probes of one size that end a search.
        raise_interval: seconds from the end of a search below the ceiling to the next one.
        black_hole_retry: seconds from a fall back to the base to the next search.
        black_hole_bursts: suspicious loss-detection passes in a row (see
            :meth:`on_packets_lost`) that make the path a black hole for large packets.

    Attributes:
        current: the confirmed size: what the engine's packets use now.
        suspicious_bursts: suspicious passes so far in a row (0: no suspicion).
        largest_acked: the packet number of the newest acknowledged packet larger than the
            base (-1: none).
        probes_sent, probes_lost, black_holes: counts, for diagnostics and tests.
    """

    def __init__(
        self,
        base: int,
        ceiling: int,
        *,
        candidates: tuple[int, ...] = CANDIDATES,
        max_probes: int = MAX_PROBES,
        raise_interval: float = RAISE_INTERVAL,
        black_hole_retry: float = BLACK_HOLE_RETRY,
        black_hole_bursts: int = BLACK_HOLE_BURSTS,
    ) -> None:
        if base < BASE:
            raise ValueError(f"base must be at least {BASE}, got {base}")
        if max_probes < 1 or black_hole_bursts < 1:
            raise ValueError("max_probes and black_hole_bursts must be at least 1")
        self.base = base
        self.ceiling = max(base, ceiling)
        self.current = base
        self.candidates = tuple(sorted(candidates))
        self.max_probes = max_probes
        self.raise_interval = raise_interval
        self.black_hole_retry = black_hole_retry
        self.black_hole_bursts = black_hole_bursts
        self.probes_sent = 0
        self.probes_lost = 0
        self.black_holes = 0
        self.suspicious_bursts = 0
        self.largest_acked = -1
        self._suspected_from = -1  # the oldest packet lost in the suspicion's first pass
        self._started = False
        self._sizes: list[int] = []  # the sizes the running search has yet to confirm
        self._losses = 0  # probes of ``_sizes[0]`` lost so far
        self._in_flight: tuple[int, float] | None = None  # (size, deadline) of the probe out
        self._next_search: float | None = None

    @property
    def enabled(self) -> bool:
        """True when the ceiling leaves room above the base."""
        return self.ceiling > self.base

    @property
    def started(self) -> bool:
        """True once the first search started (the handshake was confirmed)."""
        return self._started

    @property
    def searching(self) -> bool:
        """True while a search runs (a probe is due or out)."""
        return bool(self._sizes)

    @property
    def next_search(self) -> float | None:
        """When the next search starts, once the current one is over (None: none planned)."""
        return None if self._sizes else self._next_search

    # ------------------------------------------------------------------------- the search

    def start(self, now: float) -> None:
        """The handshake is confirmed: the first search starts (once; later calls do nothing)."""
        if not self._started:
            self._started = True
            self._begin()

    def restart(self) -> None:
        """The connection moved to another network path, whose MTU is unknown.

        The confirmed size goes back to the base and, once the first search has started, a new
        search starts at once (RFC 9000 14.3: a new path's PMTU is unknown).
        """
        self.current = self.base
        self.suspicious_bursts = 0
        if self._started:
            self._begin()

    def limit(self, peer_max_udp_payload: int | None) -> None:
        """Lower the ceiling to the peer's ``max_udp_payload_size`` transport parameter.

        None (the parameter was absent: 65527) changes nothing. The confirmed size follows a
        ceiling below it, and sizes above it are no longer probed.
        """
        if peer_max_udp_payload is None or peer_max_udp_payload >= self.ceiling:
            return
        self.ceiling = max(self.base, peer_max_udp_payload)
        self.current = min(self.current, self.ceiling)
        if self._sizes:
            first = self._sizes[0]
            self._sizes = self._sizes_above(self.current)
            if not self._sizes or self._sizes[0] != first:
                self._losses = 0
                self._in_flight = None
        if not self._sizes and self.current >= self.ceiling:
            self._next_search = None

    def probe_size(self, now: float) -> int | None:
        """The size of the probe to send now, or None (none due, or one is out already).

        A search whose start time (:attr:`next_search`) has come starts here.
        """
        if not self._started:
            return None
        if not self._sizes:
            if self._next_search is None or now < self._next_search:
                return None
            self._begin()
            if not self._sizes:
                return None
        return None if self._in_flight is not None else self._sizes[0]

    def on_probe_sent(self, size: int, now: float, timeout: float) -> None:
        """A probe of ``size`` left at ``now``; lost unless acknowledged by ``now + timeout``."""
        self._in_flight = (size, now + timeout)
        self.probes_sent += 1

    def on_probe_acked(self, size: int, now: float) -> bool:
        """A probe of ``size`` was acknowledged. Returns True when :attr:`current` grew.

        Any probe of the size being searched counts, the latest or one already given up for
        lost: either way the path carried it. (Report it to :meth:`on_packet_acked` too.)
        """
        if not self._sizes or size != self._sizes[0]:
            return False  # a size confirmed already, or one no longer searched
        self.current = size
        self._sizes.pop(0)
        self._losses = 0
        self._in_flight = None
        if not self._sizes:
            self._finish(now)
        return True

    def on_probe_lost(self, size: int, now: float) -> None:
        """The probe of ``size`` that is out was lost (not acknowledged in time)."""
        if self._in_flight is None or self._in_flight[0] != size:
            return
        self._in_flight = None
        self.probes_lost += 1
        self._losses += 1
        if self._losses >= self.max_probes:
            self._finish(now)  # the path does not carry it: the confirmed size stays

    def deadline(self) -> float | None:
        """When :meth:`on_timer` must run next: the probe's timer, or the next search's start."""
        if self._in_flight is not None:
            return self._in_flight[1]
        return None if self._sizes or not self._started else self._next_search

    def on_timer(self, now: float) -> int | None:
        """Run the timer. Returns the size of a probe that has just been declared lost, if any.

        Its acknowledgement may still come: it counts then (see :meth:`on_probe_acked`).
        """
        if self._in_flight is not None and self._in_flight[1] <= now:
            size = self._in_flight[0]
            self.on_probe_lost(size, now)
            return size
        return None

    def _begin(self) -> None:
        self._sizes = self._sizes_above(self.current)
        self._losses = 0
        self._in_flight = None
        self._next_search = None

    def _sizes_above(self, current: int) -> list[int]:
        """The sizes a search from ``current`` tries: the candidates, then the ceiling."""
        ceiling = self.ceiling
        sizes = [size for size in self.candidates if current < size < ceiling]
        if ceiling > current:
            sizes.append(ceiling)
        return sizes

    def _finish(self, now: float) -> None:
        self._sizes = []
        self._in_flight = None
        self._next_search = now + self.raise_interval if self.current < self.ceiling else None

    # ------------------------------------------------------------------------- black holes

    def on_packet_acked(self, size: int, number: int) -> None:
        """A packet (or probe) of ``size`` bytes, numbered ``number``, was acknowledged.

        One larger than the base and sent after the first loss of a suspicion clears it: the
        path carried a large packet sent later. Engines need to report only packets larger
        than the base (probes included) that are newer than :attr:`largest_acked`.
        """
        if size > self.base:
            if number > self.largest_acked:
                self.largest_acked = number
            if number > self._suspected_from:
                self.suspicious_bursts = 0

    def on_packets_lost(self, lost: Iterable[tuple[int, int]], now: float) -> bool:
        """One loss-detection pass declared these ``(packet number, size)`` lost (probes aside).

        Only the packets sent after the newest large packet acknowledged (:attr:`largest_acked`)
        tell anything: an older one was overtaken by a large packet that got through. If they
        are all larger than the base the pass is suspicious; a small one among them shows that
        the losses are not about size, and clears the suspicion. Returns True when this makes a
        black hole: :attr:`current` is back at the base, any search is abandoned, and the next
        one is due in ``black_hole_retry`` seconds.
        """
        if self.current <= self.base:
            return False
        newer = [(number, size) for number, size in lost if number > self.largest_acked]
        if not newer:
            return False
        if min(size for _, size in newer) <= self.base:  # small ones are lost too: not size
            self.suspicious_bursts = 0
            return False
        if not self.suspicious_bursts:
            self._suspected_from = min(number for number, _ in newer)
        self.suspicious_bursts += 1
        if self.suspicious_bursts < self.black_hole_bursts:
            return False
        self.black_holes += 1
        self.suspicious_bursts = 0
        self.current = self.base
        self._sizes = []
        self._losses = 0
        self._in_flight = None
        self._started = True
        self._next_search = now + self.black_hole_retry
        return True
