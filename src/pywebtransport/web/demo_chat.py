"""The chat and RPC demo behind ``pywebtransport serve`` (route ``/chat``).

Theory of operation: every session on the route joins one :class:`ChatRoom` (one per
application, so one per worker process). Each session gets a
:class:`~pywebtransport.messaging.Messenger` with two routes. A ``chat`` channel carries the
member's messages, ``{"text": ...}``; each is stamped with the member's name and the time and sent
to every member's ``chat`` channel, the sender's included. An ``rpc`` channel carries JSON-RPC
both ways: the member may call ``add``, ``echo``, ``time`` and ``members``, and the server calls the
member's ``whoami`` once the channel is open, to learn the name it shows. Joining and leaving
are announced in the room. A member whose channel does not take a message within
:data:`SEND_TIMEOUT` seconds loses that channel (it is aborted); the others are not held up.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import logging
from dataclasses import dataclass
from typing import Any

from ..exceptions import WebTransportError
from ..messaging import Channel, MessagingError, Messenger, RpcMethods, RpcPeer
from ..session import WebTransportSession

__all__ = ["MAX_TEXT", "SEND_TIMEOUT", "ChatRoom", "chat_methods"]

logger = logging.getLogger(__name__)

MAX_TEXT = 500
"""Longest chat message text, in characters (longer ones are cut)."""

MAX_NAME = 40
"""Longest member name, in characters."""

SEND_TIMEOUT = 2.0
"""Seconds one member's channel may take to accept a message before it is dropped."""

WHOAMI_TIMEOUT = 10.0
"""Seconds the member has to answer ``whoami``."""

_MAX_MESSAGE_SIZE = 64 * 1024


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def chat_methods(room: ChatRoom) -> RpcMethods:
    """The methods a member may call: ``add``, ``echo``, ``time`` and ``members``."""
    methods = RpcMethods()

    @methods.method
    def add(a: float, b: float) -> float:
        """The sum of two numbers."""
        return a + b

    @methods.method
    def echo(value: Any) -> Any:
        """The value, back."""
        return value

    @methods.method
    def time() -> str:
        """The server's time (UTC, ISO 8601)."""
        return _now()

    @methods.method
    def members() -> list[str]:
        """The names of the members in the room."""
        return room.names()

    return methods


@dataclass(eq=False)
class _Member:
    name: str
    chat: Channel | None = None


class ChatRoom:
    """The members of the chat demo; :meth:`handle` is the route handler of one session.

    Example:
        ```python
        app.route("/chat")(ChatRoom().handle)
        ```
    """

    def __init__(self) -> None:
        self._members: dict[WebTransportSession, _Member] = {}
        self._numbers = itertools.count(1)
        self._methods = chat_methods(self)

    def names(self) -> list[str]:
        """The names of the members, in joining order."""
        return [member.name for member in self._members.values()]

    async def handle(self, session: WebTransportSession) -> None:
        """Keep ``session`` in the room until it ends."""
        member = _Member(name=f"guest-{next(self._numbers)}")
        self._members[session] = member
        messenger = Messenger(session, max_message_size=_MAX_MESSAGE_SIZE)
        messenger.route("chat")(lambda channel: self._chat(member, channel))
        messenger.route("rpc")(lambda channel: self._rpc(member, channel))
        try:
            async with messenger:
                await messenger.serve()
        finally:
            del self._members[session]
            await self.broadcast({"kind": "system", "text": f"{member.name} left", "at": _now()})

    async def broadcast(self, message: dict[str, Any]) -> None:
        """Send ``message`` to every member's chat channel at once."""
        targets = [m for m in self._members.values() if m.chat is not None]
        await asyncio.gather(*(self._deliver(member, message) for member in targets))

    async def _deliver(self, member: _Member, message: dict[str, Any]) -> None:
        channel = member.chat
        if channel is None:
            return
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                await channel.send(message)
        except (TimeoutError, MessagingError, WebTransportError) as exc:
            logger.info("chat: dropping the channel of %s: %r", member.name, exc)
            if member.chat is channel:
                member.chat = None
            await channel.abort(code=0)

    async def _chat(self, member: _Member, channel: Channel) -> None:
        """One member's chat channel: every message goes to the whole room."""
        member.chat = channel
        try:
            async for message in channel:
                text = message.get("text") if isinstance(message, dict) else None
                if not isinstance(text, str) or not text.strip():
                    continue
                stamped = {"kind": "message", "from": member.name, "text": text[:MAX_TEXT]}
                await self.broadcast({**stamped, "at": _now()})
        finally:
            if member.chat is channel:
                member.chat = None

    async def _rpc(self, member: _Member, channel: Channel) -> None:
        """One member's RPC channel: the room's methods, and a ``whoami`` call to the member."""
        async with RpcPeer(channel, methods=self._methods, max_concurrent_handlers=8) as peer:
            try:
                who = await peer.call("whoami", timeout=WHOAMI_TIMEOUT)
            except MessagingError as exc:
                logger.info("chat: whoami failed for %s: %s", member.name, exc)
            else:
                name = who.get("name") if isinstance(who, dict) else who
                if isinstance(name, str) and name.strip():
                    member.name = name.strip()[:MAX_NAME]
            await self.broadcast({"kind": "system", "text": f"{member.name} joined", "at": _now()})
            await peer.wait_closed()
