"""Tests of the event system: registration, dispatch, coroutine handlers and waiting."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from pywebtransport import exceptions
from pywebtransport.events import Event, EventEmitter, EventType

#: Bound for every wait in this module (seconds).
T = 5.0


class Recorder:
    """A plain handler that records the events it receives."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)


# ---------------------------------------------------------------------------------- event types


def test_event_type_values_are_the_wire_names() -> None:
    expected = {
        "CONNECTION_ESTABLISHED": "connection_established",
        "CONNECTION_LOST": "connection_lost",
        "CONNECTION_FAILED": "connection_failed",
        "CONNECTION_CLOSED": "connection_closed",
        "SESSION_READY": "session_ready",
        "SESSION_CLOSED": "session_closed",
        "SESSION_DRAINING": "session_draining",
        "STREAM_OPENED": "stream_opened",
        "STREAM_CLOSED": "stream_closed",
        "DATAGRAM_RECEIVED": "datagram_received",
    }
    for name, value in expected.items():
        member = EventType[name]
        assert member.value == value
        assert member == value
        assert str(member) == value
        assert isinstance(member, str)


def test_event_records_type_data_source_and_monotonic_time() -> None:
    before = time.monotonic()
    event = Event(type=EventType.SESSION_READY, data={"id": 4}, source="me")
    assert event.type is EventType.SESSION_READY
    assert event.data == {"id": 4}
    assert event.source == "me"
    assert before <= event.timestamp <= time.monotonic()


# --------------------------------------------------------------------------- sync dispatch


def test_emit_calls_handlers_in_order_with_the_event() -> None:
    emitter = EventEmitter()
    calls: list[tuple[str, Event]] = []
    emitter.on(EventType.STREAM_OPENED, lambda event: calls.append(("first", event)))
    emitter.on(EventType.STREAM_OPENED, lambda event: calls.append(("second", event)))

    emitted = emitter.emit(EventType.STREAM_OPENED, data=7)

    assert [name for name, _ in calls] == ["first", "second"]
    assert all(event is emitted for _, event in calls)
    assert emitted.type is EventType.STREAM_OPENED
    assert emitted.data == 7
    assert emitted.source is emitter


def test_enum_member_and_string_name_the_same_event() -> None:
    emitter = EventEmitter()
    recorder = Recorder()
    emitter.on("session_ready", recorder)
    emitter.emit(EventType.SESSION_READY, data=1)
    emitter.emit("session_ready", data=2)
    assert [event.data for event in recorder.events] == [1, 2]
    assert all(event.type is EventType.SESSION_READY for event in recorder.events)


def test_custom_event_names_are_allowed_and_kept_as_strings() -> None:
    emitter = EventEmitter()
    recorder = Recorder()
    emitter.on("my_event", recorder)
    emitter.emit("my_event", data="x")
    emitter.emit("other_event")
    assert [(event.type, event.data) for event in recorder.events] == [("my_event", "x")]
    assert type(recorder.events[0].type) is str


def test_handlers_only_hear_their_own_type() -> None:
    emitter = EventEmitter()
    recorder = Recorder()
    emitter.on(EventType.STREAM_CLOSED, recorder)
    emitter.emit(EventType.STREAM_OPENED)
    assert recorder.events == []


def test_registering_the_same_handler_twice_calls_it_once() -> None:
    emitter = EventEmitter()
    recorder = Recorder()
    emitter.on(EventType.STREAM_OPENED, recorder)
    emitter.on(EventType.STREAM_OPENED, recorder)
    emitter.emit(EventType.STREAM_OPENED)
    assert len(recorder.events) == 1
    assert emitter.listener_count(EventType.STREAM_OPENED) == 1


def test_once_handler_runs_for_the_next_event_only() -> None:
    emitter = EventEmitter()
    once, always = Recorder(), Recorder()
    emitter.once(EventType.DATAGRAM_RECEIVED, once)
    emitter.on(EventType.DATAGRAM_RECEIVED, always)

    emitter.emit(EventType.DATAGRAM_RECEIVED, data=1)
    emitter.emit(EventType.DATAGRAM_RECEIVED, data=2)

    assert [event.data for event in once.events] == [1]
    assert [event.data for event in always.events] == [1, 2]
    assert emitter.listener_count(EventType.DATAGRAM_RECEIVED) == 1


def test_once_handler_that_emits_again_is_not_reentered() -> None:
    emitter = EventEmitter()
    seen: list[int] = []

    def handler(event: Event) -> None:
        seen.append(event.data)
        if event.data == 1:
            emitter.emit(EventType.SESSION_CLOSED, data=2)

    emitter.once(EventType.SESSION_CLOSED, handler)
    emitter.emit(EventType.SESSION_CLOSED, data=1)
    assert seen == [1]


def test_off_removes_one_handler() -> None:
    emitter = EventEmitter()
    removed, kept = Recorder(), Recorder()
    emitter.on(EventType.STREAM_OPENED, removed)
    emitter.on(EventType.STREAM_OPENED, kept)
    emitter.off("stream_opened", removed)
    emitter.emit(EventType.STREAM_OPENED)
    assert removed.events == []
    assert len(kept.events) == 1


def test_off_removes_a_once_handler_before_it_runs() -> None:
    emitter = EventEmitter()
    recorder = Recorder()
    emitter.once(EventType.STREAM_OPENED, recorder)
    emitter.off(EventType.STREAM_OPENED, recorder)
    emitter.emit(EventType.STREAM_OPENED)
    assert recorder.events == []


def test_off_without_handler_removes_all_of_that_type() -> None:
    emitter = EventEmitter()
    first, second, other = Recorder(), Recorder(), Recorder()
    emitter.on(EventType.STREAM_OPENED, first)
    emitter.once(EventType.STREAM_OPENED, second)
    emitter.on(EventType.STREAM_CLOSED, other)
    emitter.off(EventType.STREAM_OPENED)
    emitter.emit(EventType.STREAM_OPENED)
    emitter.emit(EventType.STREAM_CLOSED)
    assert first.events == second.events == []
    assert len(other.events) == 1
    assert emitter.listener_count(EventType.STREAM_OPENED) == 0


def test_off_of_an_unknown_handler_is_harmless() -> None:
    emitter = EventEmitter()
    recorder = Recorder()
    emitter.on(EventType.STREAM_OPENED, recorder)
    emitter.off(EventType.STREAM_OPENED, Recorder())
    emitter.off(EventType.STREAM_CLOSED, recorder)
    emitter.emit(EventType.STREAM_OPENED)
    assert len(recorder.events) == 1


def test_remove_all_listeners() -> None:
    emitter = EventEmitter()
    recorder = Recorder()
    emitter.on(EventType.STREAM_OPENED, recorder)
    emitter.on(EventType.STREAM_CLOSED, recorder)
    emitter.remove_all_listeners()
    emitter.emit(EventType.STREAM_OPENED)
    emitter.emit(EventType.STREAM_CLOSED)
    assert recorder.events == []


def test_handler_registered_during_emit_waits_for_the_next_event() -> None:
    emitter = EventEmitter()
    late = Recorder()

    def register(event: Event) -> None:
        emitter.on(EventType.STREAM_OPENED, late)

    emitter.on(EventType.STREAM_OPENED, register)
    emitter.emit(EventType.STREAM_OPENED, data=1)
    emitter.emit(EventType.STREAM_OPENED, data=2)
    assert [event.data for event in late.events] == [2]


def test_raising_handler_is_logged_and_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    emitter = EventEmitter()
    recorder = Recorder()

    def broken(event: Event) -> None:
        raise RuntimeError("handler bug")

    emitter.on(EventType.SESSION_CLOSED, broken)
    emitter.on(EventType.SESSION_CLOSED, recorder)
    with caplog.at_level(logging.ERROR, logger="pywebtransport.events"):
        emitter.emit(EventType.SESSION_CLOSED)

    assert len(recorder.events) == 1
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], RuntimeError)


def test_coroutine_handler_without_a_loop_is_closed_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    emitter = EventEmitter()
    ran: list[Event] = []

    async def handler(event: Event) -> None:
        ran.append(event)

    emitter.on(EventType.SESSION_READY, handler)
    with caplog.at_level(logging.ERROR, logger="pywebtransport.events"):
        emitter.emit(EventType.SESSION_READY)
    assert ran == []
    assert any("running loop" in record.getMessage() for record in caplog.records)


# ---------------------------------------------------------------------- coroutine handlers


async def test_coroutine_handler_runs_as_a_task() -> None:
    emitter = EventEmitter()
    received: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
    release = asyncio.Event()

    async def handler(event: Event) -> None:
        await release.wait()
        received.set_result(event)

    emitter.on(EventType.DATAGRAM_RECEIVED, handler)
    emitted = emitter.emit(EventType.DATAGRAM_RECEIVED, data=b"x")
    assert not received.done()  # emit did not wait for the coroutine
    release.set()
    async with asyncio.timeout(T):
        assert await received is emitted


async def test_wait_handlers_waits_for_running_coroutine_handlers() -> None:
    emitter = EventEmitter()
    finished: list[int] = []
    gate = asyncio.Event()

    async def handler(event: Event) -> None:
        await gate.wait()
        finished.append(event.data)

    emitter.on(EventType.STREAM_OPENED, handler)
    emitter.emit(EventType.STREAM_OPENED, data=1)
    emitter.emit(EventType.STREAM_OPENED, data=2)
    asyncio.get_running_loop().call_soon(gate.set)
    async with asyncio.timeout(T):
        await emitter.wait_handlers()
    assert finished == [1, 2]


async def test_wait_handlers_from_a_handler_does_not_wait_for_itself() -> None:
    emitter = EventEmitter()
    order: list[str] = []
    gate = asyncio.Event()

    async def slow(event: Event) -> None:
        await gate.wait()
        order.append("slow")

    async def joiner(event: Event) -> None:
        gate.set()
        await emitter.wait_handlers()
        order.append("joiner")

    emitter.on(EventType.STREAM_OPENED, slow)
    emitter.on(EventType.STREAM_OPENED, joiner)
    emitter.emit(EventType.STREAM_OPENED)
    async with asyncio.timeout(T):
        await emitter.wait_handlers()
    assert order == ["slow", "joiner"]


async def test_coroutine_handler_error_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    emitter = EventEmitter()

    async def broken(event: Event) -> None:
        raise ValueError("async handler bug")

    emitter.on(EventType.SESSION_CLOSED, broken)
    with caplog.at_level(logging.ERROR, logger="pywebtransport.events"):
        emitter.emit(EventType.SESSION_CLOSED)
        async with asyncio.timeout(T):
            await emitter.wait_handlers()
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], ValueError)


async def test_cancel_handlers_cancels_running_coroutine_handlers() -> None:
    emitter = EventEmitter()
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def handler(event: Event) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    emitter.on(EventType.STREAM_OPENED, handler)
    emitter.emit(EventType.STREAM_OPENED)
    async with asyncio.timeout(T):
        await started.wait()
        emitter.cancel_handlers()
        await emitter.wait_handlers()
    assert cancelled.is_set()


# --------------------------------------------------------------------------------- wait_for
#
# ``loop.call_soon(emit)`` before ``await wait_for(...)`` emits once the waiter is registered:
# wait_for registers before it first suspends, and callbacks run in the order they were queued.


async def test_wait_for_returns_the_next_event() -> None:
    emitter = EventEmitter()
    emitted: list[Event] = []
    asyncio.get_running_loop().call_soon(
        lambda: emitted.append(emitter.emit("session_ready", data="ok"))
    )
    event = await emitter.wait_for(EventType.SESSION_READY, timeout=T)
    assert emitted == [event]
    assert event.data == "ok"


async def test_wait_for_ignores_earlier_and_other_events() -> None:
    emitter = EventEmitter()
    emitter.emit(EventType.SESSION_READY, data="before")

    def fire() -> None:
        emitter.emit(EventType.SESSION_CLOSED, data="other")
        emitter.emit(EventType.SESSION_READY, data="after")

    asyncio.get_running_loop().call_soon(fire)
    event = await emitter.wait_for(EventType.SESSION_READY, timeout=T)
    assert (event.type, event.data) == (EventType.SESSION_READY, "after")


async def test_wait_for_applies_the_condition() -> None:
    emitter = EventEmitter()

    def fire() -> None:
        for value in range(5):
            emitter.emit(EventType.DATAGRAM_RECEIVED, data=value)

    asyncio.get_running_loop().call_soon(fire)
    event = await emitter.wait_for(
        EventType.DATAGRAM_RECEIVED, timeout=T, condition=lambda event: event.data == 3
    )
    assert event.data == 3


async def test_several_waiters_all_receive_the_event() -> None:
    emitter = EventEmitter()
    waiters = [
        asyncio.ensure_future(emitter.wait_for(EventType.SESSION_CLOSED, timeout=T))
        for _ in range(3)
    ]
    emitted: list[Event] = []
    # Queued after the waiters' first steps, so it runs once all three are registered.
    asyncio.get_running_loop().call_soon(
        lambda: emitted.append(emitter.emit(EventType.SESSION_CLOSED))
    )
    async with asyncio.timeout(T):
        results = await asyncio.gather(*waiters)
    assert len(emitted) == 1
    assert all(result is emitted[0] for result in results)
    assert emitter._event_waiters == {}


async def test_wait_for_times_out_with_the_library_timeout_error() -> None:
    emitter = EventEmitter()
    with pytest.raises(exceptions.TimeoutError, match="session_ready") as caught:
        await emitter.wait_for(EventType.SESSION_READY, timeout=0.01)
    assert isinstance(caught.value, TimeoutError)
    assert isinstance(caught.value, exceptions.WebTransportError)
    assert emitter._event_waiters == {}  # the timed-out waiter is gone


async def test_condition_error_is_raised_to_the_waiter() -> None:
    emitter = EventEmitter()

    def condition(event: Event) -> bool:
        raise KeyError("bad predicate")

    emitted: list[Event] = []  # emit itself must not raise
    asyncio.get_running_loop().call_soon(
        lambda: emitted.append(emitter.emit(EventType.SESSION_READY))
    )
    with pytest.raises(KeyError, match="bad predicate"):
        await emitter.wait_for(EventType.SESSION_READY, timeout=T, condition=condition)
    assert len(emitted) == 1
    assert emitter._event_waiters == {}


async def test_condition_raising_timeout_error_is_not_taken_for_the_deadline() -> None:
    emitter = EventEmitter()

    def condition(event: Event) -> bool:
        raise TimeoutError("from the predicate")

    asyncio.get_running_loop().call_soon(emitter.emit, EventType.SESSION_READY)
    with pytest.raises(TimeoutError, match="from the predicate") as caught:
        await emitter.wait_for(EventType.SESSION_READY, timeout=T, condition=condition)
    assert not isinstance(caught.value, exceptions.WebTransportError)


async def test_cancelled_wait_for_unregisters_its_waiter() -> None:
    emitter = EventEmitter()
    waiter = asyncio.ensure_future(emitter.wait_for(EventType.SESSION_READY))
    registered: list[int] = []

    def cancel() -> None:  # runs after the waiter's first step
        registered.append(len(emitter._event_waiters.get("session_ready", [])))
        waiter.cancel()

    asyncio.get_running_loop().call_soon(cancel)
    async with asyncio.timeout(T):
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert registered == [1]
    assert emitter._event_waiters == {}
    emitter.emit(EventType.SESSION_READY)  # nothing left to wake, nothing raises


async def test_subclass_emits_with_itself_as_source() -> None:
    class Session(EventEmitter):
        def __init__(self) -> None:
            super().__init__()
            self._handlers = "the subclass's own attribute"

        def become_ready(self) -> None:
            self.emit(EventType.SESSION_READY, data=self._handlers)

    session = Session()
    asyncio.get_running_loop().call_soon(session.become_ready)
    event = await session.wait_for(EventType.SESSION_READY, timeout=T)
    assert event.source is session
    assert event.data == "the subclass's own attribute"


async def test_has_listeners_sees_handlers_and_waiters_under_either_name() -> None:
    emitter = EventEmitter()
    assert not emitter.has_listeners(EventType.DATAGRAM_RECEIVED)
    emitter.on("datagram_received", lambda event: None)
    assert emitter.has_listeners(EventType.DATAGRAM_RECEIVED)
    assert emitter.has_listeners("datagram_received")
    emitter.off("datagram_received")
    assert not emitter.has_listeners("datagram_received")
    seen_while_waiting: list[bool] = []

    def condition(event: Event) -> bool:  # runs at emit time, while the waiter is registered
        seen_while_waiting.append(emitter.has_listeners("session_ready"))
        return True

    waiting = asyncio.ensure_future(emitter.wait_for(EventType.SESSION_READY, condition=condition))
    # Callbacks run in order: the task's first step (it registers the waiter), then the emit.
    asyncio.get_running_loop().call_soon(emitter.emit, "session_ready")
    await waiting
    assert seen_while_waiting == [True]
    assert not emitter.has_listeners(EventType.SESSION_READY)
