"""The Redis backend: hubs in many processes and machines that share one Redis server.

Theory of operation: a :class:`RedisBackend` holds a pair of connections to the server. The
command connection carries everything that has a reply (PUBLISH, the presence hashes, the node
keys): one writer task drains a queue of ``(command, future)``, writes whatever is queued in one
go, then reads the replies in order and resolves each command's future with its reply; so the
publishes of one backend reach the server, and every subscriber, in call order. The subscriber
connection is a redis-py ``PubSub`` read by one task, which hands each message to the hub in
arrival order and matches the server's (un)subscribe confirmations, so :meth:`subscribe`
returns once the server delivers the topic here. Presence is a hash per topic
(``{prefix}:p:{topic}``, member id -> info) plus, per node (the part of a member id before the
first ``/``), a liveness key ``{prefix}:n:{node}`` that the backend keeps alive with a TTL;
:meth:`~RedisBackend.presence` drops the entries of nodes whose key has expired, so a crashed
hub's members vanish within ``node_ttl``. Refreshing the keys doubles as a heartbeat of the
command connection.

The backend records what its hub wants (topics, presence entries) and replays it on every new
pair of connections. Any failure of either connection (end of stream, reset, a reply that does
not come within ``connect_timeout``) ends the pair at once: pending commands fail with
:class:`~pywebtransport.pubsub.BrokerUnavailable`, the hub hears ``broker_lost`` once, and the
backend reconnects with exponential backoff; when the topics and presence entries are back it
says ``broker_restored``. redis-py's own retries, reconnections and health checks are switched
off, so that no outage goes unreported.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from ..exceptions import ConfigurationError
from .backend import BackendListener
from .errors import BrokerUnavailable

__all__ = ["RedisBackend"]

logger = logging.getLogger(__name__)

#: Commands written to the server in one go, at most.
_MAX_BATCH = 1024
#: Channels named in one SUBSCRIBE or UNSUBSCRIBE, at most.
_MAX_CHANNELS = 1000
#: How long :meth:`RedisBackend.close` waits for the server to forget this backend (seconds).
_CLOSE_TIMEOUT = 1.0

#: Deletes presence entries whose node key is (still) missing, atomically, so that an entry a
#: node puts back after its key expired is not deleted on the strength of an older look.
#: KEYS[1] is the presence hash; ARGV is member, node key, member, node key, ...
_REAP_SCRIPT = """
local deleted = 0
for i = 1, #ARGV, 2 do
  if redis.call('EXISTS', ARGV[i + 1]) == 0 then
    deleted = deleted + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return deleted
"""

_MISSING_REDIS = "the Redis backend needs the redis package: pip install pywebtransport[redis]"

Command = tuple[Any, ...]


def _node_of(member: str) -> str:
    return member.partition("/")[0]


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _as_pairs(reply: Any) -> dict[bytes, bytes]:
    """An HGETALL reply: a map (RESP3) or a flat list of fields and values (RESP2)."""
    if isinstance(reply, dict):
        return dict(reply)
    return dict(zip(reply[::2], reply[1::2], strict=True))


def _positive(field: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{field} must be a number, not {value!r}", field=field)
    if not (math.isfinite(value) and value > 0):
        raise ConfigurationError(f"{field} must be positive and finite, not {value!r}", field=field)
    return float(value)


class _Link:
    """One pair of connections to the server, their tasks and what waits on their replies."""

    def __init__(self, command: Any, pubsub: Any) -> None:
        self.command = command
        self.pubsub = pubsub
        #: False from the first failure (or close) on; nothing is sent on the pair then.
        self.up = True
        self.queue: deque[tuple[Command, asyncio.Future[Any]]] = deque()
        self.sent: list[tuple[Command, asyncio.Future[Any]]] = []
        self.wakeup = asyncio.Event()
        #: Keeps (un)subscribe requests and their expected confirmations in the same order.
        self.subscribe_lock = asyncio.Lock()
        self.confirmations: deque[tuple[str, bytes, asyncio.Future[None] | None]] = deque()
        #: Resolved with the reason at the first failure.
        self.failed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.tasks: list[asyncio.Task[None]] = []

    def submit(self, *command: Any) -> asyncio.Future[Any]:
        """Queue ``command`` for the writer; the future gets its reply."""
        if not self.up:
            raise BrokerUnavailable("the Redis broker is unavailable (reconnecting)")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.queue.append((command, future))
        self.wakeup.set()
        return future

    def fail(self, reason: str) -> None:
        """Mark the pair dead and fail everything that waits on it (once)."""
        if not self.up:
            return
        self.up = False
        pending, self.sent, self.queue = [*self.sent, *self.queue], [], deque()
        for _command, future in pending:
            if not future.done():
                future.set_exception(
                    BrokerUnavailable(
                        f"the Redis broker went away before the reply ({reason}); "
                        "the command may or may not have been carried out"
                    )
                )
        confirmations, self.confirmations = self.confirmations, deque()
        for _kind, _channel, waiter in confirmations:
            if waiter is not None and not waiter.done():
                waiter.set_exception(BrokerUnavailable(f"the Redis broker went away ({reason})"))
        if not self.failed.done():
            self.failed.set_result(reason)
        self.wakeup.set()


class RedisBackend:
    """A :class:`~pywebtransport.pubsub.Backend` on a Redis server (``redis`` extra).

    Every hub whose backend names the same server (and ``prefix``) shares topics and presence
    with the others. ``url`` is a redis-py URL (``redis://``, ``rediss://``, ``unix://``); its
    retry and timeout options are overridden. After a lost connection the backend retries after
    ``reconnect_initial`` seconds, doubling up to ``reconnect_max``. A node's presence entries
    outlive its last refresh by at most ``node_ttl`` seconds. ``connect_timeout`` bounds a
    connection attempt and the wait for any reply; a server slower than that counts as lost.

    :meth:`publish` and :meth:`presence` raise :class:`~pywebtransport.pubsub.BrokerUnavailable`
    while the broker is away; :meth:`subscribe`, :meth:`unsubscribe`, :meth:`set_presence` and
    :meth:`clear_presence` then record the change, which is applied when it comes back.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "pwt",
        reconnect_initial: float = 0.1,
        reconnect_max: float = 5.0,
        node_ttl: float = 15.0,
        connect_timeout: float = 5.0,
    ) -> None:
        if not isinstance(url, str) or not url:
            raise ConfigurationError(f"url must be a Redis URL, not {url!r}", field="url")
        if not isinstance(prefix, str) or not prefix:
            raise ConfigurationError(
                f"prefix must be a non-empty string, not {prefix!r}", field="prefix"
            )
        self._reconnect_initial = _positive("reconnect_initial", reconnect_initial)
        self._reconnect_max = _positive("reconnect_max", reconnect_max)
        if self._reconnect_max < self._reconnect_initial:
            raise ConfigurationError(
                f"reconnect_max ({reconnect_max}) is below reconnect_initial ({reconnect_initial})",
                field="reconnect_max",
            )
        self._node_ttl = _positive("node_ttl", node_ttl)
        self._node_ttl_ms = max(1, round(self._node_ttl * 1000))
        self._connect_timeout = _positive("connect_timeout", connect_timeout)
        try:
            from redis.asyncio.client import PubSub
            from redis.asyncio.connection import ConnectionPool
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError as exc:
            raise ConfigurationError(_MISSING_REDIS) from exc
        try:
            pool = ConnectionPool.from_url(url)
        except ValueError as exc:
            raise ConfigurationError(f"invalid Redis URL: {exc}", field="url") from exc
        # No retries (an empty tuple of retried errors: not even the one disconnect-and-retry),
        # no health checks, bytes in and out. Blocking reads of the subscriber never time out;
        # the backend bounds every wait that should end itself.
        pool.connection_kwargs.update(
            retry=Retry(NoBackoff(), 0, supported_errors=()),
            retry_on_timeout=False,
            retry_on_error=[],
            health_check_interval=0,
            socket_timeout=None,
            socket_connect_timeout=self._connect_timeout,
            decode_responses=False,
        )
        self._pool: Any = pool
        self._pubsub_class: Any = PubSub
        kwargs = pool.connection_kwargs
        self._where = str(kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}")
        self._prefix = prefix
        self._channel_prefix = f"{prefix}:t:".encode()
        self._listener: BackendListener | None = None
        self._closed = False
        #: True once a pair of connections has everything restored, until it fails.
        self._ready = False
        self._link: _Link | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._topics: set[str] = set()
        self._entries: dict[str, dict[str, bytes]] = {}
        self._nodes: dict[str, int] = {}

    def __repr__(self) -> str:
        state = "closed" if self._closed else "connected" if self.connected else "disconnected"
        return f"<RedisBackend {self._where} {state} topics={len(self._topics)}>"

    @property
    def connected(self) -> bool:
        return self._ready and self._link is not None and self._link.up

    # -------------------------------------------------------------------- life cycle

    async def start(self, listener: BackendListener) -> None:
        """Connect within ``connect_timeout``; raises ``BrokerUnavailable`` when that fails."""
        if self._closed:
            raise RuntimeError("the backend is closed")
        if self._listener is not None:
            raise RuntimeError("the backend is already started")
        from redis.exceptions import RedisError

        self._listener = listener
        try:
            link = await self._open()
        except (OSError, TimeoutError, RedisError, BrokerUnavailable) as exc:
            self._listener = None
            raise BrokerUnavailable(
                f"cannot reach the Redis broker at {self._where}: {_describe(exc)}"
            ) from exc
        except BaseException:
            self._listener = None
            raise
        self._ready = True
        self._supervisor = asyncio.create_task(self._supervise(link), name="pwt-redis-supervisor")
        logger.debug("connected to the Redis broker at %s", self._where)

    async def close(self) -> None:
        """Forget this backend's presence entries (best effort, bounded), then disconnect.

        Idempotent; nothing is delivered to the hub afterwards.
        """
        if self._closed:
            return
        self._closed = True
        self._ready = False
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
        link, self._link = self._link, None
        if link is not None:
            if link.up:
                await self._forget(link)
            link.fail("the backend is closed")
            await self._discard(link)
        try:
            await self._pool.disconnect()
        except Exception:  # best effort: the sockets are closed already
            logger.debug("closing the Redis connection pool failed", exc_info=True)
        self._listener = None
        self._topics.clear()
        self._entries.clear()
        self._nodes.clear()

    # -------------------------------------------------------------------- topics

    async def subscribe(self, topic: str) -> None:
        """Deliver ``topic`` here from now on: returns once the server confirmed (or, while the
        broker is away, at once; the subscription is made when it comes back)."""
        self._topics.add(topic)
        link = self._usable_link()
        if link is not None:
            try:
                await self._change_subscriptions(link, "subscribe", [topic])
            except BrokerUnavailable:
                logger.debug("subscribing to %r waits for the broker", topic)

    async def unsubscribe(self, topic: str) -> None:
        """Stop delivering ``topic`` here (at once; the server is told too)."""
        self._topics.discard(topic)
        link = self._usable_link()
        if link is not None:
            try:
                await self._change_subscriptions(link, "unsubscribe", [topic])
            except BrokerUnavailable:
                logger.debug("unsubscribing from %r: the broker is away", topic)

    async def publish(self, topic: str, envelope: bytes) -> None:
        """Send ``envelope`` to every hub subscribed to ``topic``; returns when the server took it.

        The publishes of one backend reach every subscriber in call order. Raises
        ``BrokerUnavailable`` at once while the broker is away, and when the connection fails
        before the server's reply: the envelope may or may not have been delivered then.
        """
        await self._call("PUBLISH", self._channel(topic), envelope)

    # -------------------------------------------------------------------- presence

    async def set_presence(self, topic: str, member: str, info: bytes) -> None:
        entries = self._entries.setdefault(topic, {})
        if member not in entries:
            node = _node_of(member)
            self._nodes[node] = self._nodes.get(node, 0) + 1
        entries[member] = info
        link = self._usable_link()
        if link is not None:
            # The node key first: whoever sees the entry finds its node alive.
            await self._apply(
                link,
                [
                    ("SET", self._node_key(_node_of(member)), b"1", "PX", self._node_ttl_ms),
                    ("HSET", self._presence_key(topic), member, info),
                ],
            )

    async def clear_presence(self, topic: str, member: str) -> None:
        entries = self._entries.get(topic)
        if entries is not None and member in entries:
            del entries[member]
            if not entries:
                del self._entries[topic]
            node = _node_of(member)
            self._nodes[node] -= 1
            if not self._nodes[node]:
                del self._nodes[node]  # its key expires by itself
        link = self._usable_link()
        if link is not None:
            await self._apply(link, [("HDEL", self._presence_key(topic), member)])

    async def presence(self, topic: str) -> dict[str, bytes]:
        """The entries of live nodes; those of nodes whose liveness key expired are deleted."""
        key = self._presence_key(topic)
        entries = {
            field.decode(): info
            for field, info in _as_pairs(await self._call("HGETALL", key)).items()
        }
        if not entries:
            return {}
        nodes = sorted({_node_of(member) for member in entries})
        link = self._connected_link()
        alive = await asyncio.gather(*(link.submit("EXISTS", self._node_key(n)) for n in nodes))
        dead = {node for node, exists in zip(nodes, alive, strict=True) if not exists}
        if dead:
            doomed = [member for member in entries if _node_of(member) in dead]
            arguments = [a for m in doomed for a in (m, self._node_key(_node_of(m)))]
            deleted = await self._call("EVAL", _REAP_SCRIPT, 1, key, *arguments)
            logger.debug("dropped %s presence entries of dead nodes in %r", deleted, topic)
        return {m: info for m, info in entries.items() if _node_of(m) not in dead}

    # -------------------------------------------------------------------- internals

    def _channel(self, topic: str) -> bytes:
        return self._channel_prefix + topic.encode()

    def _presence_key(self, topic: str) -> str:
        return f"{self._prefix}:p:{topic}"

    def _node_key(self, node: str) -> str:
        return f"{self._prefix}:n:{node}"

    def _usable_link(self) -> _Link | None:
        """The pair to send changes on: up, though maybe still restoring."""
        link = self._link
        return link if link is not None and link.up and not self._closed else None

    def _connected_link(self) -> _Link:
        link = self._link
        if not self._ready or link is None or not link.up:
            raise BrokerUnavailable("the Redis broker is unavailable (reconnecting)")
        return link

    async def _call(self, *command: Any) -> Any:
        return await self._connected_link().submit(*command)

    async def _apply(self, link: _Link, commands: list[Command]) -> None:
        """Send state changes; a lost broker is not an error (they are replayed later)."""
        try:
            await asyncio.gather(*(link.submit(*command) for command in commands))
        except BrokerUnavailable:
            logger.debug("the broker went away; presence changes wait for it")

    async def _change_subscriptions(
        self, link: _Link, kind: str, topics: Sequence[str] | None
    ) -> None:
        """(Un)subscribe on ``link``'s subscriber and wait for the server's confirmations.

        ``topics`` None: subscribe to every wanted topic, as wanted when it is this call's turn
        to send (calls send in call order).
        """
        from redis.exceptions import RedisError

        loop = asyncio.get_running_loop()
        waiters: list[asyncio.Future[None]] = []
        try:
            async with link.subscribe_lock:
                if topics is None:
                    topics = sorted(self._topics)
                for chunk in _chunks(topics, _MAX_CHANNELS):
                    if not link.up:
                        raise BrokerUnavailable("the Redis broker is unavailable (reconnecting)")
                    channels = [self._channel(topic) for topic in chunk]
                    waiter: asyncio.Future[None] = loop.create_future()
                    waiters.append(waiter)
                    for channel in channels[:-1]:
                        link.confirmations.append((kind, channel, None))
                    link.confirmations.append((kind, channels[-1], waiter))
                    try:
                        if kind == "subscribe":
                            await link.pubsub.subscribe(*channels)
                        else:
                            await link.pubsub.unsubscribe(*channels)
                    except (OSError, RedisError) as exc:
                        link.fail(f"subscriber connection: {_describe(exc)}")
                        raise BrokerUnavailable(f"the Redis broker went away ({exc})") from exc
            try:
                async with asyncio.timeout(self._connect_timeout):
                    await asyncio.gather(*waiters)
            except TimeoutError:
                link.fail(f"no {kind} confirmation within {self._connect_timeout} s")
                raise BrokerUnavailable("the Redis broker does not answer") from None
        finally:
            for waiter in waiters:  # failed or abandoned: their errors are reported above
                if waiter.done() and not waiter.cancelled():
                    waiter.exception()

    async def _open(self) -> _Link:
        """Connect a new pair and replay the topics and presence entries on it."""
        command = self._pool.make_connection()
        pubsub = self._pubsub_class(self._pool, ignore_subscribe_messages=False)
        link: _Link | None = None
        try:
            async with asyncio.timeout(self._connect_timeout):
                await command.connect()
                await pubsub.connect()
                link = _Link(command, pubsub)
                link.tasks.append(asyncio.create_task(self._read(link), name="pwt-redis-reader"))
                link.tasks.append(asyncio.create_task(self._write(link), name="pwt-redis-writer"))
                self._link = link
                # Queued at once, in one go: changes made later queue up behind them.
                replay = [link.submit(*c) for c in self._replay_commands()]
                await asyncio.gather(self._change_subscriptions(link, "subscribe", None), *replay)
            link.tasks.append(asyncio.create_task(self._keep_alive(link), name="pwt-redis-alive"))
            return link
        except BaseException:
            if link is None:
                link = _Link(command, pubsub)
            link.fail("connecting failed")
            if self._link is link:
                self._link = None
            await self._discard(link)
            raise

    def _replay_commands(self, node: str | None = None) -> list[Command]:
        """What puts this backend's presence (of ``node``, or of every node) on the server."""
        nodes = [node] if node is not None else list(self._nodes)
        commands: list[Command] = [
            ("SET", self._node_key(n), b"1", "PX", self._node_ttl_ms) for n in nodes
        ]
        for topic, entries in self._entries.items():
            pairs = [
                a for m, info in entries.items() if node is None or _node_of(m) == node
                for a in (m, info)
            ]  # fmt: skip
            if pairs:
                commands.append(("HSET", self._presence_key(topic), *pairs))
        return commands

    async def _discard(self, link: _Link) -> None:
        """Stop ``link``'s tasks and close its connections (does not wait for the server)."""
        for task in link.tasks:
            task.cancel()
        await asyncio.gather(*link.tasks, return_exceptions=True)
        for closing in (link.command.disconnect(nowait=True), link.pubsub.aclose()):
            try:
                await closing
            except Exception:  # the connection is being thrown away
                logger.debug("closing a Redis connection failed", exc_info=True)

    async def _forget(self, link: _Link) -> None:
        """Delete this backend's presence entries and node keys, waiting a little at most."""
        commands: list[Command] = [
            ("HDEL", self._presence_key(topic), *entries)
            for topic, entries in self._entries.items()
        ]
        if self._nodes:
            commands.append(("DEL", *(self._node_key(node) for node in self._nodes)))
        if not commands:
            return
        from redis.exceptions import RedisError

        try:
            async with asyncio.timeout(min(_CLOSE_TIMEOUT, self._connect_timeout)):
                await asyncio.gather(*(link.submit(*command) for command in commands))
        except (BrokerUnavailable, TimeoutError, RedisError) as exc:
            logger.debug("could not remove the presence entries on close: %s", _describe(exc))

    async def _supervise(self, link: _Link) -> None:
        """Wait for the pair to fail; report it, reconnect, replay, report the recovery."""
        while True:
            reason = await link.failed
            self._ready = False
            logger.warning("lost the Redis broker at %s (%s); reconnecting", self._where, reason)
            self._notify_lost(reason)
            await self._discard(link)
            # Only now: close() discards the pair itself if it cancels this task in between.
            if self._link is link:
                self._link = None
            link = await self._reconnect()
            self._ready = True
            logger.info("the Redis broker at %s is back", self._where)
            self._notify_restored()

    async def _reconnect(self) -> _Link:
        delay = self._reconnect_initial
        while True:
            await asyncio.sleep(delay)
            try:
                return await self._open()
            except Exception as exc:  # any failure: try again later
                delay = min(delay * 2, self._reconnect_max)
                logger.info(
                    "the Redis broker at %s is still unreachable (%s); next attempt in %.2f s",
                    self._where,
                    _describe(exc),
                    delay,
                )

    def _notify_lost(self, reason: str) -> None:
        if self._listener is not None:
            try:
                self._listener.broker_lost(reason)
            except Exception:
                logger.exception("the hub's broker_lost handler failed")

    def _notify_restored(self) -> None:
        if self._listener is not None:
            try:
                self._listener.broker_restored()
            except Exception:
                logger.exception("the hub's broker_restored handler failed")

    async def _read(self, link: _Link) -> None:
        """The subscriber: messages to the hub in arrival order, confirmations to waiters."""
        try:
            while True:
                # Blocks until a message, or raises ConnectionError when the stream ends
                message = await link.pubsub.get_message(timeout=None)
                if message is not None:
                    self._on_message(link, message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # whatever ends the stream ends the pair
            link.fail(f"subscriber connection: {_describe(exc)}")

    def _on_message(self, link: _Link, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "message":
            channel: bytes = message["channel"]
            if not channel.startswith(self._channel_prefix):
                return
            topic = channel[len(self._channel_prefix) :].decode()
            listener = self._listener
            if listener is None or self._closed or topic not in self._topics:
                return
            try:
                listener.deliver(topic, message["data"])
            except Exception:
                logger.exception("the hub failed to take an envelope of %r", topic)
        elif kind in ("subscribe", "unsubscribe"):
            if not link.confirmations:
                raise RuntimeError(f"unexpected {kind} confirmation for {message['channel']!r}")
            expected, channel, waiter = link.confirmations.popleft()
            if (expected, channel) != (kind, message["channel"]):
                raise RuntimeError(f"{kind} {message['channel']!r} confirmed, not {channel!r}")
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    async def _write(self, link: _Link) -> None:
        """The writer: whatever is queued goes out in one write; replies come back in order."""
        from redis.exceptions import ResponseError

        connection = link.command
        try:
            while True:
                if not link.queue:
                    link.wakeup.clear()
                    await link.wakeup.wait()
                    continue
                batch = [link.queue.popleft() for _ in range(min(len(link.queue), _MAX_BATCH))]
                link.sent = batch
                async with asyncio.timeout(self._connect_timeout):
                    await connection.send_packed_command(
                        connection.pack_commands([command for command, _ in batch]),
                        check_health=False,
                    )
                    for _command, future in batch:
                        try:
                            reply = await connection.read_response()
                        except ResponseError as exc:  # an error reply: the connection is fine
                            if not future.done():
                                future.set_exception(exc)
                        else:
                            if not future.done():
                                future.set_result(reply)
                link.sent = []
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            link.fail(f"command connection: no reply within {self._connect_timeout} s")
        except Exception as exc:  # whatever breaks the stream ends the pair
            link.fail(f"command connection: {_describe(exc)}")

    async def _keep_alive(self, link: _Link) -> None:
        """Refresh the node keys every ``node_ttl / 3`` (a PING when there are none).

        A key found gone (the process stalled, the server was flushed) is set again, with every
        entry of its node: another hub may have dropped them as dead meanwhile.
        """
        try:
            while True:
                await asyncio.sleep(self._node_ttl / 3)
                nodes = list(self._nodes)
                if not nodes:
                    await link.submit("PING")
                    continue
                replies = await asyncio.gather(
                    *(link.submit("PEXPIRE", self._node_key(n), self._node_ttl_ms) for n in nodes)
                )
                for node, refreshed in zip(nodes, replies, strict=True):
                    if not refreshed and node in self._nodes:
                        logger.warning("the liveness key of node %s had expired; set again", node)
                        await asyncio.gather(
                            *(link.submit(*c) for c in self._replay_commands(node))
                        )
        except asyncio.CancelledError:
            raise
        except BrokerUnavailable:
            return  # the supervisor takes over
        except Exception as exc:  # an unexpected reply: start afresh
            link.fail(f"refreshing the node keys: {_describe(exc)}")
