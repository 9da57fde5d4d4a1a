"""What a hub needs from a broker, and the in-process broker.

Theory of operation: a :class:`~pywebtransport.pubsub.Hub` keeps its own members and topics and
asks its backend for three things only: carry a published envelope to every hub subscribed to
the topic (this one included), keep the presence entries of every hub, and say when the broker
goes away and comes back. Envelopes are opaque bytes to a backend. The in-process backend
delivers at once, inside :meth:`MemoryBackend.publish`; a networked one (Redis) delivers what
comes back from the broker, so every hub sees one order per publisher.
"""

from __future__ import annotations

from typing import Protocol

from ..exceptions import ConfigurationError

__all__ = ["Backend", "BackendListener", "MemoryBackend", "MemoryBroker", "backend_from_url"]


class BackendListener(Protocol):
    """What a backend reports to its hub."""

    def deliver(self, topic: str, envelope: bytes) -> None:
        """An envelope published on ``topic`` (by any hub) arrived."""

    def broker_lost(self, reason: str) -> None:
        """The broker went away; the backend is reconnecting. Called once per outage (calls that
        were pending may fail with ``BrokerUnavailable`` just before)."""

    def broker_restored(self) -> None:
        """The broker is back; subscriptions and presence entries were restored."""


class Backend(Protocol):
    """A broker behind a hub. Topics are strings; envelopes and presence info are bytes.

    ``subscribe``, ``unsubscribe``, ``set_presence`` and ``clear_presence`` record what this hub
    wants even while the broker is away, and apply it when it comes back; ``publish`` and
    ``presence`` raise :class:`~pywebtransport.pubsub.BrokerUnavailable` then.
    """

    @property
    def connected(self) -> bool:
        """True while the broker is reachable."""

    async def start(self, listener: BackendListener) -> None:
        """Connect; raises ``BrokerUnavailable`` when the broker cannot be reached at all."""

    async def close(self) -> None:
        """Disconnect and forget this hub's presence entries. Idempotent."""

    async def subscribe(self, topic: str) -> None:
        """Deliver ``topic``'s envelopes to this hub; returns once deliveries have started."""

    async def unsubscribe(self, topic: str) -> None:
        """Stop delivering ``topic``'s envelopes to this hub; none arrive after it returns."""

    async def publish(self, topic: str, envelope: bytes) -> None:
        """Send an envelope to every hub subscribed to ``topic``, in call order.

        Raises ``BrokerUnavailable`` when the broker is away; when the connection fails after
        the envelope was sent, it may or may not have been delivered.
        """

    async def set_presence(self, topic: str, member: str, info: bytes) -> None:
        """Record (or update) ``member`` as present in ``topic``."""

    async def clear_presence(self, topic: str, member: str) -> None:
        """Forget ``member``'s presence in ``topic``."""

    async def presence(self, topic: str) -> dict[str, bytes]:
        """Every member present in ``topic`` on every live hub, with its info."""


class MemoryBroker:
    """The state that in-process backends share: subscriptions and presence entries.

    Each :class:`MemoryBackend` made with the same broker reaches the others' hubs; by default
    every backend has a broker of its own.
    """

    def __init__(self) -> None:
        self.subscribers: dict[str, set[BackendListener]] = {}
        self.presence: dict[str, dict[str, bytes]] = {}

    def __repr__(self) -> str:
        return f"<MemoryBroker topics={len(self.subscribers)} presence={len(self.presence)}>"


class MemoryBackend:
    """The in-process backend: one process, no set-up, never away."""

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self._broker = broker or MemoryBroker()
        self._listener: BackendListener | None = None
        self._topics: set[str] = set()
        self._entries: set[tuple[str, str]] = set()

    def __repr__(self) -> str:
        return f"<MemoryBackend topics={len(self._topics)}>"

    @property
    def connected(self) -> bool:
        return True

    async def close(self) -> None:
        for topic in list(self._topics):
            await self.unsubscribe(topic)
        for topic, member in list(self._entries):
            await self.clear_presence(topic, member)
        self._listener = None

    async def start(self, listener: BackendListener) -> None:
        self._listener = listener
        for topic in self._topics:  # recorded before the start
            self._broker.subscribers.setdefault(topic, set()).add(listener)

    async def subscribe(self, topic: str) -> None:
        self._topics.add(topic)
        if self._listener is not None:
            self._broker.subscribers.setdefault(topic, set()).add(self._listener)

    async def unsubscribe(self, topic: str) -> None:
        self._topics.discard(topic)
        listeners = self._broker.subscribers.get(topic)
        if listeners is not None and self._listener is not None:
            listeners.discard(self._listener)
            if not listeners:
                del self._broker.subscribers[topic]

    async def publish(self, topic: str, envelope: bytes) -> None:
        for listener in list(self._broker.subscribers.get(topic, ())):
            listener.deliver(topic, envelope)

    async def set_presence(self, topic: str, member: str, info: bytes) -> None:
        self._broker.presence.setdefault(topic, {})[member] = info
        self._entries.add((topic, member))

    async def clear_presence(self, topic: str, member: str) -> None:
        self._entries.discard((topic, member))
        entries = self._broker.presence.get(topic)
        if entries is not None:
            entries.pop(member, None)
            if not entries:
                del self._broker.presence[topic]

    async def presence(self, topic: str) -> dict[str, bytes]:
        return dict(self._broker.presence.get(topic, {}))


def backend_from_url(url: str | None) -> Backend:
    """The backend a URL names: None or ``memory://`` (in-process), ``redis://`` / ``rediss://``
    / ``unix://`` (Redis, needs the ``redis`` extra)."""
    if url is None or url == "memory://":
        return MemoryBackend()
    scheme = url.partition("://")[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        from .redis import RedisBackend

        return RedisBackend(url)
    raise ConfigurationError(f"unknown broker URL scheme {scheme!r} in {url!r}", field="broker_url")
