"""The exceptions of :mod:`pywebtransport.pubsub`."""

from __future__ import annotations

from ..messaging.errors import MessagingError

__all__ = ["BrokerUnavailable", "Forbidden", "PubSubError"]


class PubSubError(MessagingError):
    """A topic operation failed."""


class BrokerUnavailable(PubSubError):
    """The broker cannot be reached now (the hub is reconnecting).

    A publish refused before it was sent was not published; one whose connection failed while
    waiting for the broker's answer may have been delivered to some hubs.
    """


class Forbidden(PubSubError):
    """The hub's authorisation hook refused the operation."""
