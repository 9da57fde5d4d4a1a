"""Topics (rooms) that sessions join, and the fan-out of what is published to them.

Theory of operation: a :class:`Hub` lives in one process and knows that process's members (one
per session whose :class:`~pywebtransport.messaging.Messenger` was attached) and the topics they
joined. Everything published, here or on another hub, travels through the backend as an
envelope, ``{"o": origin hub, "s": sequence, "d": data}`` in JSON, and comes back through
:meth:`Hub.deliver`; a dispatcher task takes envelopes in arrival order and fans each one out:
into the bounded queue of every member that joined the topic in reliable mode (a writer task per
member drains it into the member's ``pubsub`` channel), and straight into the datagrams of those
that joined in datagram mode. A publisher therefore never waits for a subscriber: a queue that
is full applies the hub's overflow policy, and every drop is counted and announced to the member
(``pubsub.dropped``). Sequence numbers run per origin hub and topic, so a hub that sees one
skipped knows how many messages the broker lost (``pubsub.missed``, stats, an event). A
notification is encoded once per codec, whatever the number of members.

The member's side speaks JSON-RPC on its ``pubsub`` channel (docs/messaging-protocol.md,
section 5): it calls ``pubsub.join``/``leave``/``publish``/``presence``, each checked by the
hub's ``authorize`` hook, and receives ``pubsub.message`` notifications.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
import secrets
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..events import EventEmitter
from ..exceptions import ConfigurationError, WebTransportError
from ..messaging import Channel, MessagingError, Messenger, RpcError, RpcMethods, RpcPeer
from ..messaging.codecs import Codec, get_codec
from .backend import Backend, MemoryBackend, backend_from_url
from .errors import BrokerUnavailable, PubSubError

if TYPE_CHECKING:
    from ..session import WebTransportSession

__all__ = [
    "CHANNEL",
    "SLOW_CONSUMER",
    "Authorize",
    "Hub",
    "HubStats",
    "MemberStats",
    "Mode",
    "Overflow",
]

logger = logging.getLogger(__name__)

CHANNEL = "pubsub"
"""The channel name members open to reach the hub."""

SLOW_CONSUMER = 0xF7
"""Session close code of a member disconnected by the ``disconnect`` overflow policy."""

FORBIDDEN = -32010
"""JSON-RPC error code of an operation the ``authorize`` hook refused."""

UNAVAILABLE = -32011
"""JSON-RPC error code of an operation that needs the broker while it is away."""

Mode = Literal["reliable", "datagram"]
Overflow = Literal["drop_oldest", "drop_newest", "disconnect"]
Action = Literal["join", "publish", "presence"]
Authorize = Callable[["WebTransportSession", Action, str], bool | Awaitable[bool]]

_JSON = get_codec("json")
_MODES = ("reliable", "datagram")
_OVERFLOWS = ("drop_oldest", "drop_newest", "disconnect")
_MAX_TOPIC = 256  # characters in a topic name
_MAX_ORIGINS = 1024  # publishers remembered per topic for gap detection
_MAX_TOPIC_COUNTERS = 1024  # topics named in the per-topic failure counters
_MAX_INBOX = 65536  # envelopes waiting for the dispatcher; past it the oldest is dropped


@dataclass
class HubStats:
    """Counters of one hub (this process)."""

    published: int = 0  # publish() calls the broker accepted
    publish_failed: int = 0  # publish() calls refused because the broker was away
    received: int = 0  # envelopes the backend delivered to this hub
    deliveries: int = 0  # messages handed to members (queued, or sent as a datagram)
    dropped: int = 0  # messages a member lost: queue overflow, datagram too large or failed
    disconnected: int = 0  # members disconnected by the "disconnect" policy
    missed: int = 0  # messages this hub never received (sequence gaps: the broker lost them)
    broker_outages: int = 0
    overloaded: int = 0  # envelopes dropped because the dispatcher could not keep up at all
    denied: int = 0  # member operations the authorize hook refused
    members: int = 0  # members now
    topics: int = 0  # topics with a member here now


@dataclass
class MemberStats:
    """Counters of one member (session)."""

    queued: int = 0  # messages waiting in its queue now
    delivered: int = 0  # messages written to its channel or sent as datagrams
    dropped: int = 0  # messages it lost (overflow, datagram failures)
    missed: int = 0  # missed-message notices that concerned it (sum of counts)


class _Outgoing:
    """One published message on its way to members; encoded at most once per codec."""

    __slots__ = ("as_datagram", "data", "encoded", "topic")

    def __init__(self, topic: str, data: Any) -> None:
        self.topic = topic
        self.data = data
        self.encoded: dict[str, bytes] = {}
        self.as_datagram: bytes | None = None

    def datagram(self) -> bytes:
        """The JSON payload of its datagram message, ``{"topic", "data"}``."""
        if self.as_datagram is None:
            self.as_datagram = _JSON.encode({"topic": self.topic, "data": self.data})
        return self.as_datagram

    def notification(self, codec: Codec) -> bytes:
        payload = self.encoded.get(codec.name)
        if payload is None:
            payload = codec.encode(_notification("pubsub.message", [self.topic, self.data]))
            self.encoded[codec.name] = payload
        return payload


def _notification(method: str, params: list[Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params}


class _Member:
    """One session's place in the hub: its topics, its queue and its writer."""

    def __init__(self, hub: Hub, member_id: str, messenger: Messenger) -> None:
        self.hub = hub
        self.id = member_id
        self.messenger = messenger
        self.session = messenger.session
        self.topics: dict[str, Mode] = {}
        self.queue: deque[_Outgoing | dict[str, Any]] = deque()
        self.channel: Channel | None = None
        self.codec: Codec | None = None
        self.peer: RpcPeer | None = None
        self.stats = MemberStats()
        self.dropped_unannounced = 0
        self.wakeup = asyncio.Event()
        self.writer: asyncio.Task[None] | None = None
        self.gone = False

    def push(self, item: _Outgoing | dict[str, Any]) -> bool:
        """Queue one item; False when the member must be disconnected."""
        if len(self.queue) >= self.hub.queue_size:
            if self.hub.overflow == "disconnect":
                return False
            self.stats.dropped += 1
            self.hub._stats.dropped += 1
            self.dropped_unannounced += 1
            if self.hub.overflow == "drop_newest":
                return True
            self.queue.popleft()
        self.queue.append(item)
        self.hub._stats.deliveries += 1
        self.wakeup.set()
        return True

    def connect(self, channel: Channel, peer: RpcPeer) -> None:
        self.channel, self.peer = channel, peer
        self.codec = get_codec(channel.codec)
        if self.writer is None:
            self.writer = asyncio.get_running_loop().create_task(self._write())
        self.wakeup.set()

    async def _write(self) -> None:
        """Drain the queue into the channel, announcing drops before the next message."""
        try:
            while not self.gone:
                if not self.queue or self.channel is None:
                    self.wakeup.clear()
                    await self.wakeup.wait()
                    continue
                channel, codec = self.channel, self.codec
                assert codec is not None
                if self.dropped_unannounced:
                    count, self.dropped_unannounced = self.dropped_unannounced, 0
                    await channel.send(_notification("pubsub.dropped", [count]))
                    continue
                item = self.queue.popleft()
                if isinstance(item, _Outgoing):
                    await channel.send_encoded(item.notification(codec))
                else:
                    await channel.send(item)
                self.stats.delivered += 1
        except MessagingError as exc:  # the channel ended: the member's side went away
            logger.debug("pubsub member %s: channel ended: %s", self.id, exc)
        except WebTransportError as exc:
            logger.debug("pubsub member %s: session ended: %s", self.id, exc)


class Hub(EventEmitter):
    """Topics that sessions join, with presence, over an in-process or networked backend.

    Args:
        backend: where envelopes and presence go (default: a :class:`MemoryBackend` of its own;
            a :class:`~pywebtransport.pubsub.redis.RedisBackend` spans processes and machines).
        queue_size: messages one member may have waiting; past it ``overflow`` applies.
        overflow: ``"drop_oldest"`` (the default: the newest state wins), ``"drop_newest"``, or
            ``"disconnect"`` (the session is closed with :data:`SLOW_CONSUMER`).
        authorize: called as ``authorize(session, action, topic)`` (``action`` is ``"join"``,
            ``"publish"`` or ``"presence"``) for what members ask over their channel; returns
            (or resolves to) whether it is allowed. Without it members may join and ask for
            presence but not publish. Server code calling the hub is never checked.

    Events: ``broker_lost`` (``{"reason"}``), ``broker_restored`` (``{"publish_failed",
    "topics"}``: what could not be published during the outage), ``messages_missed``
    (``{"topic", "count"}``), ``member_left`` (``{"id"}``: a session left every topic).
    """

    def __init__(
        self,
        backend: Backend | None = None,
        *,
        queue_size: int = 1024,
        overflow: Overflow = "drop_oldest",
        authorize: Authorize | None = None,
    ) -> None:
        super().__init__()
        if queue_size < 1:
            raise ConfigurationError("queue_size must be at least 1", field="queue_size")
        if overflow not in _OVERFLOWS:
            raise ConfigurationError(
                f"overflow must be one of {', '.join(_OVERFLOWS)}", field="overflow"
            )
        self.backend: Backend = backend if backend is not None else MemoryBackend()
        self.queue_size = queue_size
        self.overflow: Overflow = overflow
        self.node_id = secrets.token_hex(6)
        self._authorize = authorize
        self._codec = get_codec("json")
        self._attached: dict[WebTransportSession, Messenger] = {}
        self._members: dict[WebTransportSession, _Member] = {}
        self._subscribing: dict[str, asyncio.Future[None]] = {}
        self._peers: dict[RpcPeer, _Member] = {}
        self._topics: dict[str, dict[_Member, None]] = {}
        self._ids = itertools.count(1)
        self._sequence: dict[str, int] = {}
        self._seen: dict[str, OrderedDict[str, int]] = {}
        self._inbox: deque[tuple[str, bytes]] = deque()
        self._inbox_ready = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stats = HubStats()
        self._failed_topics: dict[str, int] = {}
        self._missed_topics: dict[str, int] = {}
        self._outage: dict[str, int] = {}
        self._started = False
        self._closed = False
        self._methods = self._member_methods()

    @classmethod
    def from_url(cls, broker_url: str | None, **options: Any) -> Hub:
        """A hub on the backend ``broker_url`` names (see :func:`backend_from_url`); the
        ``options`` are the constructor's."""
        return cls(backend_from_url(broker_url), **options)

    def __repr__(self) -> str:
        return (
            f"<Hub node={self.node_id} members={len(self._members)} "
            f"topics={len(self._topics)} backend={self.backend!r}>"
        )

    # ------------------------------------------------------------------------------- life

    async def start(self) -> None:
        """Connect the backend and start delivering. Idempotent."""
        if self._started:
            return
        if self._closed:
            raise PubSubError("the hub is closed")
        await self.backend.start(self)
        self._started = True
        self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())

    async def close(self) -> None:
        """Remove every member (their channels are closed), then close the backend."""
        if self._closed:
            return
        self._closed = True
        for member in list(self._members.values()):
            await self._remove(member, close_channel=True)
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._started:
            await self.backend.close()

    async def __aenter__(self) -> Hub:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ---------------------------------------------------------------------------- members

    def attach(self, messenger: Messenger) -> None:
        """Make the messenger's session a member: it may open the ``pubsub`` channel, and
        server code may :meth:`join` it to topics. It leaves every topic when the session ends
        or its channel closes; a new channel makes it a member again (with a new id).
        """
        self._require_started()
        session = messenger.session
        if session in self._attached:
            return
        self._attached[session] = messenger
        messenger.route(CHANNEL)(lambda channel: self._serve_member(session, channel))
        self._spawn(self._watch(session))

    def member_id(self, session: WebTransportSession) -> str:
        """The id under which ``session`` appears in presence lists."""
        return self._member(session).id

    def member_stats(self, session: WebTransportSession) -> dict[str, int]:
        """The counters of ``session``'s membership."""
        member = self._member(session, create=False)
        member.stats.queued = len(member.queue)
        return asdict(member.stats)

    def topics_of(self, session: WebTransportSession) -> dict[str, Mode]:
        """The topics ``session`` joined, with their modes."""
        member = self._members.get(session)
        return {} if member is None else dict(member.topics)

    async def join(
        self,
        session: WebTransportSession,
        topic: str,
        *,
        mode: Mode = "reliable",
        info: Any = None,
    ) -> None:
        """Join ``session`` to ``topic`` (server side, not checked by ``authorize``).

        Joining again changes the mode and the presence info. Messages published from now on
        reach the session, queued until its ``pubsub`` channel is open.
        """
        await self._join(self._member(session), topic, mode, info)

    async def leave(self, session: WebTransportSession, topic: str) -> None:
        """Take ``session`` out of ``topic`` (nothing happens when it is not in it)."""
        await self._leave(self._member(session), topic)

    async def publish(self, topic: str, message: Any) -> None:
        """Send ``message`` (a JSON value) to every member of ``topic`` on every hub.

        Returns once the broker accepted it; never waits for subscribers. Messages published
        from one task arrive in publication order everywhere.

        Raises:
            BrokerUnavailable: the broker is away (nothing was sent; counted in
                ``publish_failed``); with the in-process backend it never is.
            EncodeError: ``message`` is not a JSON value.
        """
        self._require_started()
        _check_topic(topic)
        if not self.backend.connected:
            self._publish_failed(topic)
            raise BrokerUnavailable(f"cannot publish on {topic!r}: the broker is away")
        sequence = self._sequence.get(topic, 0) + 1
        envelope = self._codec.encode({"o": self.node_id, "s": sequence, "d": message})
        self._sequence[topic] = sequence
        try:
            await self.backend.publish(topic, envelope)
        except BrokerUnavailable:
            self._publish_failed(topic)
            raise
        self._stats.published += 1

    async def presence(self, topic: str) -> list[dict[str, Any]]:
        """Who is in ``topic`` on every hub: ``[{"id": member id, "info": info}, ...]``.

        Raises:
            BrokerUnavailable: the broker is away.
        """
        self._require_started()
        _check_topic(topic)
        entries = await self.backend.presence(topic)
        return [
            {"id": member_id, "info": json.loads(info)}
            for member_id, info in sorted(entries.items())
        ]

    def local_members(self, topic: str) -> list[WebTransportSession]:
        """The sessions of this process in ``topic``."""
        return [member.session for member in self._topics.get(topic, ())]

    @property
    def stats(self) -> dict[str, Any]:
        """The hub's counters, and the topics of failed publishes and missed messages."""
        counters: dict[str, Any] = asdict(self._stats)
        counters["publish_failed_topics"] = dict(self._failed_topics)
        counters["missed_topics"] = dict(self._missed_topics)
        return counters

    # ------------------------------------------------------------------ backend listener

    def deliver(self, topic: str, envelope: bytes) -> None:
        """Called by the backend for each envelope published on a topic joined here."""
        if len(self._inbox) >= _MAX_INBOX:
            self._inbox.popleft()
            self._stats.overloaded += 1
        self._inbox.append((topic, envelope))
        self._inbox_ready.set()

    def broker_lost(self, reason: str) -> None:
        """Called by the backend when the broker went away."""
        self._stats.broker_outages += 1
        self._outage = {}
        logger.warning("pubsub: the broker went away (%s); reconnecting", reason)
        self.emit("broker_lost", {"reason": reason})

    def broker_restored(self) -> None:
        """Called by the backend when the broker is back and subscriptions are restored."""
        failed, self._outage = self._outage, {}
        logger.warning(
            "pubsub: the broker is back; %d publish(es) failed meanwhile", sum(failed.values())
        )
        self.emit(
            "broker_restored", {"publish_failed": sum(failed.values()), "topics": sorted(failed)}
        )

    # ---------------------------------------------------------------------------- inside

    def _require_started(self) -> None:
        if not self._started or self._closed:
            raise PubSubError(
                "the hub is not running (use `async with hub` or `await hub.start()`)"
            )

    def _member(self, session: WebTransportSession, *, create: bool = True) -> _Member:
        """The session's member; a new one for an attached session that has none (``create``)."""
        member = self._members.get(session)
        if member is not None:
            return member
        messenger = self._attached.get(session)
        if messenger is None:
            raise PubSubError("the session is not attached to this hub (hub.attach(messenger))")
        if not create or self._closed:
            raise PubSubError("the session is not a member now")
        member = _Member(self, f"{self.node_id}/{next(self._ids)}", messenger)
        self._members[session] = member
        self._stats.members = len(self._members)
        return member

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _publish_failed(self, topic: str) -> None:
        self._stats.publish_failed += 1
        _count(self._failed_topics, topic, 1)
        _count(self._outage, topic, 1)

    async def _join(self, member: _Member, topic: str, mode: Mode, info: Any) -> None:
        _check_topic(topic)
        if mode not in _MODES:
            raise PubSubError(f"mode must be 'reliable' or 'datagram', not {mode!r}")
        if member.gone:
            raise PubSubError("the session has left the hub")
        info_bytes = self._codec.encode(info)
        member.topics[topic] = mode
        members = self._topics.get(topic)
        if members is None:
            members = self._topics[topic] = {}
            self._stats.topics = len(self._topics)
            # Every joiner waits for the one subscription, even if its starter is cancelled.
            pending = asyncio.ensure_future(self.backend.subscribe(topic))
            self._subscribing[topic] = pending
            pending.add_done_callback(lambda _: self._subscribed(topic, pending))
        members[member] = None
        waiting = self._subscribing.get(topic)
        if waiting is not None:
            await asyncio.shield(waiting)
        await self.backend.set_presence(topic, member.id, info_bytes)

    def _subscribed(self, topic: str, pending: asyncio.Future[None]) -> None:
        if self._subscribing.get(topic) is pending:
            del self._subscribing[topic]
        if not pending.cancelled() and pending.exception() is not None:
            logger.error("pubsub: cannot subscribe to %r: %s", topic, pending.exception())

    async def _leave(self, member: _Member, topic: str) -> None:
        if member.topics.pop(topic, None) is None:
            return
        members = self._topics.get(topic)
        if members is not None:
            members.pop(member, None)
            if not members:
                del self._topics[topic]
                self._seen.pop(topic, None)
                self._stats.topics = len(self._topics)
                await self.backend.unsubscribe(topic)
        await self.backend.clear_presence(topic, member.id)

    async def _remove(self, member: _Member, *, close_channel: bool = False) -> None:
        if member.gone:
            return
        member.gone = True
        member.wakeup.set()
        self._members.pop(member.session, None)
        self._stats.members = len(self._members)
        if member.writer is not None:
            member.writer.cancel()
        for topic in list(member.topics):
            try:
                await self._leave(member, topic)
            except PubSubError as exc:
                logger.debug("pubsub: leaving %r: %s", topic, exc)
        self.emit("member_left", {"id": member.id})
        if close_channel and member.peer is not None:
            await member.peer.close()

    async def _watch(self, session: WebTransportSession) -> None:
        await session.wait_closed()
        self._attached.pop(session, None)
        member = self._members.get(session)
        if member is not None:
            await self._remove(member)

    async def _serve_member(self, session: WebTransportSession, channel: Channel) -> None:
        """The member's ``pubsub`` channel: its calls, then its leaving when it closes."""
        try:
            member = self._member(session)
        except PubSubError:
            member = None
        if member is None or member.peer is not None or session.is_closed:
            await channel.abort()  # one pubsub channel at a time per session
            return
        async with RpcPeer(channel, methods=self._methods, max_concurrent_handlers=16) as peer:
            member.connect(channel, peer)
            self._peers[peer] = member
            try:
                await peer.wait_closed()
            finally:
                self._peers.pop(peer, None)
        await self._remove(member)

    def _disconnect(self, member: _Member) -> None:
        self._stats.disconnected += 1
        logger.warning("pubsub: member %s is too slow; disconnecting it", member.id)
        self._spawn(self._remove(member))
        self._spawn(member.session.close(code=SLOW_CONSUMER, reason="pubsub queue overflow"))

    async def _dispatch(self) -> None:
        while True:
            if not self._inbox:
                self._inbox_ready.clear()
                await self._inbox_ready.wait()
                continue
            topic, envelope = self._inbox.popleft()
            try:
                await self._fan_out(topic, envelope)
            except Exception:  # one bad envelope must not stop delivery
                logger.exception("pubsub: cannot deliver an envelope on %r", topic)

    async def _fan_out(self, topic: str, envelope: bytes) -> None:
        self._stats.received += 1
        members = self._topics.get(topic)
        if not members:
            return
        decoded = self._codec.decode(envelope)
        origin, sequence = decoded["o"], decoded["s"]
        gap = self._track(topic, origin, sequence)
        if gap:
            self._announce_missed(topic, gap, members)
        outgoing = _Outgoing(topic, decoded["d"])
        order = list(members)
        turn = self._stats.received % len(order)  # no member is always served last
        for member in order[turn:] + order[:turn]:
            if member.topics.get(topic) == "datagram":
                await self._send_datagram(member, outgoing)
            elif not member.push(outgoing):
                self._disconnect(member)

    def _track(self, topic: str, origin: str, sequence: int) -> int:
        """Remember the origin's sequence on ``topic``; the number of messages skipped."""
        seen = self._seen.setdefault(topic, OrderedDict())
        last = seen.pop(origin, None)
        seen[origin] = sequence if last is None else max(last, sequence)
        if len(seen) > _MAX_ORIGINS:
            seen.popitem(last=False)
        if last is None or sequence <= last + 1:
            return 0
        return sequence - last - 1

    def _announce_missed(self, topic: str, count: int, members: dict[_Member, None]) -> None:
        self._stats.missed += count
        _count(self._missed_topics, topic, count)
        logger.warning("pubsub: %d message(s) on %r never arrived", count, topic)
        self.emit("messages_missed", {"topic": topic, "count": count})
        notice = _notification("pubsub.missed", [topic, count])
        for member in list(members):
            member.stats.missed += count
            if member.topics.get(topic) == "reliable" and not member.push(notice):
                self._disconnect(member)

    async def _send_datagram(self, member: _Member, outgoing: _Outgoing) -> None:
        try:
            await member.messenger.datagrams.send_encoded(outgoing.datagram(), codec="json")
        except (MessagingError, WebTransportError) as exc:
            member.stats.dropped += 1
            self._stats.dropped += 1
            logger.debug("pubsub: datagram to %s dropped: %s", member.id, exc)
        else:
            member.stats.delivered += 1
            self._stats.deliveries += 1

    # ------------------------------------------------------------------- member methods

    def _member_methods(self) -> RpcMethods:
        """What a member may call on its channel."""
        methods = RpcMethods()
        hub = self

        async def calling(action: Action | None, topic: str) -> _Member:
            member = hub._by_peer(RpcPeer.current())
            try:
                _check_topic(topic)
            except PubSubError as exc:
                raise RpcError(-32602, f"invalid params: {exc}") from None
            if action is not None and not await hub._allowed(member.session, action, topic):
                hub._stats.denied += 1
                raise RpcError(FORBIDDEN, f"{action} on {topic!r} is not allowed")
            return member

        @methods.method(name="pubsub.join")
        async def join(topic: str, mode: str = "reliable", info: Any = None) -> None:
            member = await calling("join", topic)
            if mode not in _MODES:
                raise RpcError(-32602, "invalid params: mode must be 'reliable' or 'datagram'")
            await hub._join(member, topic, mode, info)  # type: ignore[arg-type]

        @methods.method(name="pubsub.leave")
        async def leave(topic: str) -> None:
            await hub._leave(await calling(None, topic), topic)

        @methods.method(name="pubsub.publish")
        async def publish(topic: str, data: Any) -> None:
            await calling("publish", topic)
            try:
                await hub.publish(topic, data)
            except BrokerUnavailable as exc:
                raise RpcError(UNAVAILABLE, str(exc)) from None

        @methods.method(name="pubsub.presence")
        async def presence(topic: str) -> list[dict[str, Any]]:
            await calling("presence", topic)
            try:
                return await hub.presence(topic)
            except BrokerUnavailable as exc:
                raise RpcError(UNAVAILABLE, str(exc)) from None

        return methods

    def _by_peer(self, peer: RpcPeer) -> _Member:
        member = self._peers.get(peer)
        if member is None or member.gone:
            raise RpcError(-32603, "Internal error: the caller is not a member")
        return member

    async def _allowed(self, session: WebTransportSession, action: Action, topic: str) -> bool:
        if self._authorize is None:
            return action != "publish"
        verdict = self._authorize(session, action, topic)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        return bool(verdict)


def _check_topic(topic: Any) -> None:
    if not isinstance(topic, str) or not 0 < len(topic) <= _MAX_TOPIC:
        raise PubSubError(f"a topic is a string of 1 to {_MAX_TOPIC} characters, not {topic!r}")


def _count(counters: dict[str, int], topic: str, count: int) -> None:
    if topic in counters or len(counters) < _MAX_TOPIC_COUNTERS:
        counters[topic] = counters.get(topic, 0) + count
