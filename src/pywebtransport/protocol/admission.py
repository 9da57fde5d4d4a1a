"""What a server does with a datagram that belongs to no connection it knows, without I/O.

:class:`PacketAdmission` decides, for a UDP payload whose destination connection ID matches no
connection: answer it (version negotiation, a Retry, a stateless reset), drop it, or accept it
as the first packet of a new connection. The caller passes the clock (``now`` for rate limits,
``wall`` for Retry tokens, which must survive a restart), the client address as bytes, the
counts the decision depends on, and a source of unpredictable bytes; the answer says what to
send or what to create.

- A long header of a version we do not speak gets a version negotiation packet.
- A short header (its connection is gone: a restarted or migrated-away server) gets a stateless
  reset (RFC 9000 10.3), one byte shorter than it and at most 43 bytes, at most
  ``resets_per_second`` per second (a token bucket that refills with time).
- An Initial shorter than 1,200 bytes, or any other long header, is dropped; so is every new
  connection while the server closes or holds ``max_connections``.
- An Initial with a valid Retry token is accepted with the original destination ID it carries.
  Without one it gets a Retry when ``retry`` is ``"always"``, or ``"auto"`` and
  ``retry_when_handshaking`` handshakes are in progress (a flood of spoofed Initials), and is
  accepted otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .packets import (
    MIN_STATELESS_RESET,
    PacketRoute,
    check_retry_token,
    retry_packet,
    retry_token,
    stateless_reset,
    stateless_reset_token,
    version_negotiation,
)

#: RFC 9000 14.1: clients pad the datagrams carrying Initial packets to 1,200 bytes.
MIN_INITIAL_SIZE = 1200
#: The longest stateless reset sent (RFC 9000 10.3 suggests making it look like a packet).
_MAX_RESET = 43


@dataclass(frozen=True, slots=True)
class Reply:
    """Send ``data`` back to the datagram's sender; ``kind`` is what it is."""

    data: bytes
    kind: str  # "version_negotiation", "retry" or "stateless_reset"


@dataclass(frozen=True, slots=True)
class Accept:
    """Create a connection for this Initial (``original_dcid``: it came back after a Retry)."""

    original_dcid: bytes | None


@dataclass(frozen=True, slots=True)
class Drop:
    """Nothing to do; ``reason`` says why (for counters and logs)."""

    reason: str


Decision = Reply | Accept | Drop


class PacketAdmission:
    """A server's decisions about datagrams for unknown connections (see the module docstring).

    Args:
        cid_length: the length of the connection IDs the server chooses.
        retry: ``"auto"``, ``"always"`` or ``"never"``.
        retry_key: the key Retry tokens are signed with.
        reset_key: the key stateless-reset tokens are derived from.
        max_connections: connections the server holds at most.
        random_bytes: unpredictable bytes (``os.urandom``): new connection IDs, reset padding.
        resets_per_second: stateless resets sent per second at most.
        retry_when_handshaking: with ``retry="auto"``, the handshakes in progress from which
            new clients must prove their address.
        now: the clock's reading at creation (the reset bucket starts full).
    """

    def __init__(
        self,
        *,
        cid_length: int,
        retry: str,
        retry_key: bytes,
        reset_key: bytes,
        max_connections: int,
        random_bytes: Callable[[int], bytes],
        resets_per_second: int = 100,
        retry_when_handshaking: int = 64,
        now: float = 0.0,
    ) -> None:
        self.cid_length = cid_length
        self.retry = retry
        self.retry_key = retry_key
        self.reset_key = reset_key
        self.max_connections = max_connections
        self.random_bytes = random_bytes
        self.resets_per_second = resets_per_second
        self.retry_when_handshaking = retry_when_handshaking
        self._reset_budget = float(resets_per_second)
        self._reset_at = now

    def decide(
        self,
        data: bytes,
        route: PacketRoute | None,
        address: bytes,
        *,
        now: float,
        wall: float,
        handshaking: int,
        connections: int,
        closing: bool,
    ) -> Decision:
        """What to do with ``data`` (parsed as ``route``) from ``address``.

        ``handshaking`` and ``connections`` are the server's handshakes in progress and
        connections held; ``closing`` is True once it stopped accepting.
        """
        if route is None:
            return Drop("unparsable")
        if route.version is None:  # a short header for a connection we do not know
            return self._stateless_reset(data, route.destination_cid, now)
        if not route.version_supported:
            return Reply(version_negotiation(route), "version_negotiation")
        if not route.is_initial or len(data) < MIN_INITIAL_SIZE:
            return Drop("not an Initial that may open a connection")
        if closing or connections >= self.max_connections:
            return Drop("not accepting connections")
        original = None
        if route.token:  # back after our Retry (a token we cannot check is no proof)
            original = check_retry_token(self.retry_key, route.token, address, wall)
        if original is None and self._retry_required(handshaking):
            token = retry_token(self.retry_key, address, route.destination_cid, wall)
            packet = retry_packet(route, self.random_bytes(self.cid_length), token)
            return Reply(packet, "retry")
        return Accept(original)

    def _retry_required(self, handshaking: int) -> bool:
        return self.retry == "always" or (
            self.retry == "auto" and handshaking >= self.retry_when_handshaking
        )

    def _stateless_reset(self, data: bytes, cid: bytes, now: float) -> Decision:
        """A reset one byte shorter than its trigger, at a bounded rate (RFC 9000 10.3)."""
        size = min(len(data) - 1, _MAX_RESET)
        if size < MIN_STATELESS_RESET or len(cid) != self.cid_length:
            return Drop("too short to answer with a reset")
        rate = self.resets_per_second
        budget = self._reset_budget + (now - self._reset_at) * rate
        self._reset_at = now
        if budget < 1:
            self._reset_budget = budget
            return Drop("stateless reset rate")
        self._reset_budget = min(budget, rate) - 1
        token = stateless_reset_token(self.reset_key, cid)
        return Reply(stateless_reset(token, self.random_bytes(size - 16)), "stateless_reset")
