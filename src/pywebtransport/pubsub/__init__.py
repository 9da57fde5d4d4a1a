"""Topics (rooms), broadcast and presence over the message layer, in one process or many.

A :class:`Hub` on the server side; :class:`TopicClient` on a Python client; the browser module
has ``Topics``. See docs/pubsub.md.
"""

from __future__ import annotations

from .backend import Backend, BackendListener, MemoryBackend, MemoryBroker, backend_from_url
from .client import TopicClient, TopicMessage
from .errors import BrokerUnavailable, Forbidden, PubSubError
from .hub import CHANNEL, SLOW_CONSUMER, Authorize, Hub, HubStats, MemberStats, Mode, Overflow

__all__ = [
    "CHANNEL",
    "SLOW_CONSUMER",
    "Authorize",
    "Backend",
    "BackendListener",
    "BrokerUnavailable",
    "Forbidden",
    "Hub",
    "HubStats",
    "MemberStats",
    "MemoryBackend",
    "MemoryBroker",
    "Mode",
    "Overflow",
    "PubSubError",
    "TopicClient",
    "TopicMessage",
    "backend_from_url",
]
