"""A small event system: event types, the event record and an emitter to subclass.

Clients, sessions and streams are :class:`EventEmitter` s. Handlers are registered per event
type with :meth:`EventEmitter.on` / :meth:`EventEmitter.once`; :meth:`EventEmitter.emit` calls
plain functions at once, in registration order, and runs coroutine functions as tasks that the
emitter keeps alive until they finish. A handler that raises is logged; the emitter and the
other handlers carry on. :meth:`EventEmitter.wait_for` awaits the next matching event on a
future, without polling.

Event types are strings: an :class:`EventType` member and its value name the same event, so
``emitter.on("session_ready", ...)`` hears ``emitter.emit(EventType.SESSION_READY)``. Names that
are not members are allowed too, for events of the application's own.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from . import exceptions as errors

__all__ = ["Event", "EventEmitter", "EventHandler", "EventType"]

logger = logging.getLogger(__name__)


class EventType(StrEnum):
    """The events the library emits."""

    CONNECTION_ESTABLISHED = "connection_established"
    CONNECTION_LOST = "connection_lost"
    CONNECTION_FAILED = "connection_failed"
    CONNECTION_CLOSED = "connection_closed"
    SESSION_REQUEST = "session_request"
    SESSION_READY = "session_ready"
    SESSION_DRAINING = "session_draining"
    SESSION_CLOSED = "session_closed"
    STREAM_OPENED = "stream_opened"
    STREAM_CLOSED = "stream_closed"
    DATAGRAM_RECEIVED = "datagram_received"


@dataclass(frozen=True)
class Event:
    """One emitted event.

    Attributes:
        type: what happened; an :class:`EventType` when the name is one of its values.
        data: the payload the emitter attached, if any.
        source: the object that emitted the event.
        timestamp: :func:`time.monotonic` at creation.
    """

    type: EventType | str
    data: Any = None
    source: Any = None
    timestamp: float = field(default_factory=time.monotonic)


#: A handler takes the event; a coroutine function's coroutine is run as a task.
EventHandler = Callable[[Event], Awaitable[None] | None]
Condition = Callable[[Event], bool]


@dataclass(eq=False)
class _Registration:
    handler: EventHandler
    once: bool


@dataclass(eq=False)
class _Waiter:
    future: asyncio.Future[Event]
    condition: Condition | None


def _key(event_type: EventType | str) -> str:
    """The dictionary key of an event type (the plain string value)."""
    return event_type.value if isinstance(event_type, EventType) else str(event_type)


def _normalize(event_type: EventType | str) -> EventType | str:
    """Return the :class:`EventType` member named by ``event_type``, else the string itself."""
    try:
        return EventType(event_type)
    except ValueError:
        return event_type


class EventEmitter:
    """Registers handlers per event type and dispatches emitted events to them.

    Subclasses must call ``super().__init__()``. The attribute names are prefixed with
    ``_event`` so that they do not collide with a subclass's own.
    """

    def __init__(self) -> None:
        """Create an emitter with no handlers."""
        self._event_handlers: dict[str, list[_Registration]] = {}
        self._event_waiters: dict[str, list[_Waiter]] = {}
        self._event_tasks: set[asyncio.Task[None]] = set()

    def on(self, event_type: EventType | str, handler: EventHandler) -> None:
        """Call ``handler`` on every event of ``event_type``.

        Registering a handler that is already registered for this type changes nothing.

        Args:
            event_type: the event to handle.
            handler: a function or coroutine function taking the :class:`Event`.
        """
        self._register(event_type, handler, once=False)

    def once(self, event_type: EventType | str, handler: EventHandler) -> None:
        """Call ``handler`` on the next event of ``event_type`` only.

        Args:
            event_type: the event to handle.
            handler: a function or coroutine function taking the :class:`Event`.
        """
        self._register(event_type, handler, once=True)

    def off(self, event_type: EventType | str, handler: EventHandler | None = None) -> None:
        """Remove ``handler`` for ``event_type``, or every handler of that type when ``None``.

        Removing a handler that is not registered does nothing.

        Args:
            event_type: the event type.
            handler: the handler given to :meth:`on` or :meth:`once`.
        """
        key = _key(event_type)
        if handler is None:
            self._event_handlers.pop(key, None)
            return
        registrations = self._event_handlers.get(key, [])
        remaining = [r for r in registrations if r.handler != handler]
        if remaining:
            self._event_handlers[key] = remaining
        else:
            self._event_handlers.pop(key, None)

    def remove_all_listeners(self) -> None:
        """Remove every handler of every event type (pending :meth:`wait_for` calls stay)."""
        self._event_handlers.clear()

    def has_listeners(self, event_type: EventType | str) -> bool:
        """True when a handler or a :meth:`wait_for` call waits for ``event_type``.

        Emitters check it before building the data of frequent events (datagrams), so an
        event nobody listens to costs nothing.
        """
        # An EventType member hashes and compares as its string value: no conversion needed.
        return event_type in self._event_handlers or event_type in self._event_waiters

    def listener_count(self, event_type: EventType | str) -> int:
        """Return how many handlers are registered for ``event_type``."""
        return len(self._event_handlers.get(_key(event_type), []))

    def emit(self, event_type: EventType | str, data: Any = None) -> Event:
        """Dispatch an event to the handlers and waiters of its type.

        Plain handlers run now, in registration order; coroutine handlers are started as tasks.
        An exception from a handler is logged and never reaches the caller.

        Args:
            event_type: the event type.
            data: the payload.

        Returns:
            The :class:`Event` that was dispatched.
        """
        event = Event(type=_normalize(event_type), data=data, source=self)
        key = _key(event_type)
        registrations = tuple(self._event_handlers.get(key, ()))
        if any(r.once for r in registrations):
            kept = [r for r in registrations if not r.once]
            if kept:
                self._event_handlers[key] = kept
            else:
                del self._event_handlers[key]
        for registration in registrations:
            self._call(registration.handler, event)
        self._wake_waiters(key, event)
        return event

    async def wait_for(
        self,
        event_type: EventType | str,
        *,
        timeout: float | None = None,
        condition: Condition | None = None,
    ) -> Event:
        """Wait for the next event of ``event_type`` for which ``condition`` holds.

        Args:
            event_type: the event to wait for.
            timeout: seconds to wait at most; ``None`` waits for ever.
            condition: a predicate the event must satisfy; an exception it raises is raised here.

        Returns:
            The matching event.

        Raises:
            pywebtransport.TimeoutError: ``timeout`` passed first.
        """
        key = _key(event_type)
        waiter = _Waiter(asyncio.get_running_loop().create_future(), condition)
        self._event_waiters.setdefault(key, []).append(waiter)
        try:
            async with asyncio.timeout(timeout) as deadline:
                return await waiter.future
        except TimeoutError as error:
            if not deadline.expired():
                raise  # raised by the condition, not by the deadline
            raise errors.TimeoutError(f"no {key!r} event within {timeout} seconds") from error
        finally:
            self._remove_waiter(key, waiter)

    async def wait_handlers(self) -> None:
        """Wait until every coroutine handler has finished, those they start included.

        Called from a handler, it does not wait for that handler itself.
        """
        while pending := self._event_tasks - {asyncio.current_task()}:
            await asyncio.gather(*pending, return_exceptions=True)

    def cancel_handlers(self) -> None:
        """Cancel every coroutine handler that is still running."""
        for task in self._event_tasks:
            task.cancel()

    # ------------------------------------------------------------------------- internals

    def _register(self, event_type: EventType | str, handler: EventHandler, *, once: bool) -> None:
        registrations = self._event_handlers.setdefault(_key(event_type), [])
        if all(r.handler != handler for r in registrations):
            registrations.append(_Registration(handler, once))

    def _call(self, handler: EventHandler, event: Event) -> None:
        """Run one handler; log what it raises; start a task for what it returns to await."""
        try:
            result: object = handler(event)
        except Exception:
            logger.exception("handler %r for event %r raised", handler, event.type)
            return
        if result is None:
            return
        if not inspect.isawaitable(result):
            logger.warning("handler %r for event %r returned %r", handler, event.type, result)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            if inspect.iscoroutine(result):
                result.close()
            logger.error(
                "coroutine handler %r for event %r needs a running loop", handler, event.type
            )
            return
        task = loop.create_task(_run_handler(result))
        self._event_tasks.add(task)
        task.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        self._event_tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            logger.error("coroutine event handler raised", exc_info=error)

    def _wake_waiters(self, key: str, event: Event) -> None:
        for waiter in list(self._event_waiters.get(key, [])):
            if waiter.future.done():
                continue
            try:
                matched = waiter.condition is None or waiter.condition(event)
            except Exception as error:
                waiter.future.set_exception(error)
                continue
            if matched:
                waiter.future.set_result(event)

    def _remove_waiter(self, key: str, waiter: _Waiter) -> None:
        waiters = self._event_waiters.get(key, [])
        if waiter in waiters:
            waiters.remove(waiter)
        if not waiters:
            self._event_waiters.pop(key, None)


async def _run_handler(awaitable: Awaitable[None]) -> None:
    await awaitable
