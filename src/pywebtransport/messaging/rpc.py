"""JSON-RPC 2.0 over a channel, both ways (docs/messaging-protocol.md, section 4).

Theory of operation: one reader task per :class:`RpcPeer` receives every message of the channel.
Responses complete the future of the matching :meth:`RpcPeer.call`; requests start one task each,
up to ``max_concurrent_handlers`` (more are answered ``TOO_MANY_CALLS`` at once, so the reader
never stops and responses keep flowing even while every handler waits on a call of its own).
``rpc.cancel`` cancels the named request's task, which then sends nothing. A call that times out
or is cancelled sends ``rpc.cancel``. Outgoing calls wait for one of ``max_pending_calls`` slots.
Handler exceptions become error objects; nothing a peer sends ends the channel. Answers sent
from the reader (errors, batches) are bounded too: past ``_MAX_BACKLOG`` of them in flight the
reader waits, so a peer that sends calls but never reads the answers is held up by flow control.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import logging
import types
import typing
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypeVar, Union, get_args, get_origin, overload

from .errors import (
    ChannelClosed,
    DecodeError,
    MessagingError,
    RpcError,
    RpcErrorCode,
    RpcTimeoutError,
)

if TYPE_CHECKING:
    from types import TracebackType

    from .channel import Channel

__all__ = ["RpcMethods", "RpcPeer", "RpcStats"]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
Params = Sequence[Any] | Mapping[str, Any] | None

CANCEL = "rpc.cancel"
_RECENTLY_CANCELLED = 1024  # ids remembered to tell a late response from an unknown one
_MAX_BACKLOG = 1024  # replies and batches in flight; past it the reader waits for them
_NO_ID = object()  # marks a notification (an id may be null)
_CURRENT: ContextVar[RpcPeer | None] = ContextVar("pywebtransport_rpc_peer", default=None)


# --------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class _Method:
    name: str
    func: Callable[..., Any]
    signature: inspect.Signature
    hints: dict[str, Any]

    @functools.cached_property
    def _plain(self) -> tuple[tuple[str, ...], int, tuple[Any, ...]] | None:
        """(names, required count, expected types) when every parameter is a plain one.

        A plain parameter is positional-or-keyword and the ones with defaults come last; such a
        signature binds without :meth:`inspect.Signature.bind`, the common case made cheap.
        """
        params = list(self.signature.parameters.values())
        if any(p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params):
            return None
        required = sum(p.default is inspect.Parameter.empty for p in params)
        if any(p.default is inspect.Parameter.empty for p in params[required:]):
            return None
        names = tuple(p.name for p in params)
        return names, required, tuple(self.hints.get(name, Any) for name in names)

    def bind(self, params: Any) -> tuple[Sequence[Any], Mapping[str, Any]]:
        """Bind JSON-RPC params to the signature, checking the annotated types.

        Returns the positional and keyword arguments of the call.
        """
        plain = self._plain
        if plain is None:
            return self._bind_general(params)
        names, required, expected = plain
        if params is None:
            params = ()
        if isinstance(params, dict):
            unknown = params.keys() - set(names)
            if unknown:
                self._refuse(f"got an unexpected keyword argument {min(unknown)!r}")
            given = [name in params for name in names]
            values = [params.get(name) for name in names]
        else:
            if len(params) > len(names):
                self._refuse("too many positional arguments")
            given = [i < len(params) for i in range(len(names))]
            values = [*params, *(None,) * (len(names) - len(params))]
        for index, name in enumerate(names):
            if not given[index]:
                if index < required:
                    self._refuse(f"missing a required argument: {name!r}")
                continue
            self._check(name, values[index], expected[index])
        if isinstance(params, dict):
            return (), params
        return params, {}

    def _bind_general(self, params: Any) -> tuple[Sequence[Any], Mapping[str, Any]]:
        try:
            if params is None:
                bound = self.signature.bind()
            elif isinstance(params, list):
                bound = self.signature.bind(*params)
            else:
                bound = self.signature.bind(**params)
        except TypeError as exc:
            self._refuse(str(exc))
        for name, value in bound.arguments.items():
            kind = self.signature.parameters[name].kind
            if kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                continue
            self._check(name, value, self.hints.get(name, Any))
        return bound.args, bound.kwargs

    def _check(self, name: str, value: Any, expected: Any) -> None:
        if not _conforms(value, expected):
            self._refuse(f"{name} must be {_type_name(expected)}, got {type(value).__name__}")

    @staticmethod
    def _refuse(why: str) -> typing.NoReturn:
        raise RpcError(RpcErrorCode.INVALID_PARAMS, f"invalid params: {why}")


class RpcMethods:
    """A set of methods that one or many :class:`RpcPeer` objects expose.

    ``@methods.method`` registers a function under its own name, ``@methods.method(name="x")``
    under another. Parameters are bound from JSON-RPC ``params`` (an array by position, an
    object by name) and checked against the annotations (see docs/messaging.md).
    """

    def __init__(self) -> None:
        self._methods: dict[str, _Method] = {}

    @overload
    def method(self, func: F, /) -> F: ...

    @overload
    def method(self, func: None = None, /, *, name: str | None = None) -> Callable[[F], F]: ...

    def method(self, func: Callable[..., Any] | None = None, /, *, name: str | None = None) -> Any:
        """Decorator: expose ``func`` (sync or async) as a method."""

        def register(target: Callable[..., Any]) -> Callable[..., Any]:
            self.add(target, name=name)
            return target

        return register if func is None else register(func)

    def add(self, func: Callable[..., Any], *, name: str | None = None) -> None:
        """Expose ``func`` under ``name`` (default: its ``__name__``)."""
        method_name = name or func.__name__
        if method_name.startswith("rpc."):
            raise ValueError("method names starting with 'rpc.' are reserved")
        try:
            hints = typing.get_type_hints(func)
        except Exception:  # unresolvable annotations: no type checks
            hints = {}
        self._methods[method_name] = _Method(method_name, func, inspect.signature(func), hints)

    def get(self, name: str) -> _Method | None:
        """The method registered under ``name``."""
        return self._methods.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def names(self) -> list[str]:
        """The registered method names."""
        return sorted(self._methods)


def _conforms(value: Any, expected: Any) -> bool:
    """True when a decoded JSON/MessagePack value fits the annotation (JSON-shaped types)."""
    if expected is Any or expected is object:
        return True
    if expected is None or expected is type(None):
        return value is None
    if expected is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    origin = get_origin(expected)
    args = get_args(expected)
    if origin is Union or origin is types.UnionType:
        return any(_conforms(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if origin in (list, Sequence):
        return isinstance(value, list) and all(_conforms(v, args[0]) for v in value)
    if origin in (dict, Mapping):
        return isinstance(value, dict) and all(
            _conforms(k, args[0]) and _conforms(v, args[1]) for k, v in value.items()
        )
    if origin is tuple:
        if not isinstance(value, list | tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_conforms(v, args[0]) for v in value)
        return len(value) == len(args) and all(map(_conforms, value, args))
    if isinstance(expected, type):
        return isinstance(value, expected)
    return True  # a typing construct this checker does not know: not checked


def _type_name(expected: Any) -> str:
    return getattr(expected, "__name__", None) or str(expected).replace("typing.", "")


# --------------------------------------------------------------------------------- peer


@dataclass
class RpcStats:
    """Counters of one RPC peer."""

    calls_sent: int = 0
    notifications_sent: int = 0
    calls_received: int = 0
    notifications_received: int = 0
    errors_sent: int = 0
    rejected_busy: int = 0
    invalid_received: int = 0  # parse errors and invalid requests
    cancelled_by_peer: int = 0
    timeouts: int = 0
    unknown_responses: int = 0
    late_responses: int = 0  # for calls this side had given up (timeout, cancel)


class RpcPeer:
    """Both ends of JSON-RPC over one channel: expose methods, call the peer's.

    Args:
        channel: the channel (usually named ``rpc``) carrying the calls.
        methods: methods shared with other peers; :meth:`method` adds peer-local ones.
        max_pending_calls: calls of this side waiting for an answer, at most (more wait).
        max_concurrent_handlers: the peer's calls running here at once, at most (more are
            answered ``TOO_MANY_CALLS``).
        expose_errors: send the text of unexpected handler exceptions (default: only
            "Internal error"; the exception is logged here).

    Use as ``async with RpcPeer(channel) as peer:``; leaving the block closes the channel.
    """

    def __init__(
        self,
        channel: Channel,
        *,
        methods: RpcMethods | None = None,
        max_pending_calls: int = 64,
        max_concurrent_handlers: int = 64,
        expose_errors: bool = False,
    ) -> None:
        if max_pending_calls < 1 or max_concurrent_handlers < 1:
            raise ValueError("max_pending_calls and max_concurrent_handlers must be at least 1")
        self._channel = channel
        self._shared = methods
        self._own = RpcMethods()
        self._slots = asyncio.Semaphore(max_pending_calls)
        self._max_handlers = max_concurrent_handlers
        self._expose = expose_errors
        self._ids = itertools.count(1)
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._handlers: dict[Any, asyncio.Task[Any]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._room = asyncio.Event()  # set when _background drops below _MAX_BACKLOG
        self._cancelled_ids: OrderedDict[int, None] = OrderedDict()
        self._reader: asyncio.Task[None] | None = None
        self._closed_error: MessagingError | None = None
        self._stats = RpcStats()

    # ----------------------------------------------------------------------------- public

    @staticmethod
    def current() -> RpcPeer:
        """Inside a method: the peer whose call is being handled.

        Raises:
            LookupError: not called from inside a method.
        """
        peer = _CURRENT.get()
        if peer is None:
            raise LookupError("RpcPeer.current() is only available inside an RPC method")
        return peer

    @property
    def channel(self) -> Channel:
        """The channel carrying the calls."""
        return self._channel

    @property
    def session(self) -> Any:
        """The session of the channel."""
        return self._channel.session

    @property
    def stats(self) -> dict[str, int]:
        """Counters (see :class:`RpcStats`) plus calls in flight both ways."""
        out = asdict(self._stats)
        out["pending_calls"] = len(self._calls)
        out["running_handlers"] = len(self._handlers)
        return out

    def __repr__(self) -> str:
        return (
            f"<RpcPeer channel={self._channel.name!r} pending={len(self._calls)} "
            f"running={len(self._handlers)}>"
        )

    @overload
    def method(self, func: F, /) -> F: ...

    @overload
    def method(self, func: None = None, /, *, name: str | None = None) -> Callable[[F], F]: ...

    def method(self, func: Callable[..., Any] | None = None, /, *, name: str | None = None) -> Any:
        """Decorator: expose ``func`` on this peer only (see :meth:`RpcMethods.method`)."""
        if func is None:
            return self._own.method(name=name)
        return self._own.method(func)

    def start(self) -> None:
        """Start reading the channel (``async with`` does it)."""
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read_loop())

    async def call(
        self, method: str, params: Params = None, *, timeout: float | None = None
    ) -> Any:
        """Call the peer's ``method`` and return its result.

        Args:
            method: the method name.
            params: positional (a list or tuple) or named (a dict) parameters, or None.
            timeout: seconds to wait for the answer (and for a free slot); then the peer is
                told to cancel.

        Raises:
            RpcError: the peer answered with an error object.
            RpcTimeoutError: no answer within ``timeout``.
            ChannelClosed: the channel ended first.
        """
        request: dict[str, Any] = {"jsonrpc": "2.0", "id": 0, "method": method}
        if params is not None:
            request["params"] = _params(params)
        self.start()
        call_id = 0
        try:
            async with asyncio.timeout(timeout):
                async with self._slots:
                    self._check_open()
                    call_id = request["id"] = next(self._ids)
                    future = self._calls[call_id] = asyncio.get_running_loop().create_future()
                    try:
                        await self._channel.send(request)
                        self._stats.calls_sent += 1
                        return await future
                    finally:
                        del self._calls[call_id]
        except TimeoutError:
            self._stats.timeouts += 1
            self._cancel_remote(call_id)
            raise RpcTimeoutError(f"{method}: no answer within {timeout} s") from None
        except asyncio.CancelledError:
            self._cancel_remote(call_id)
            raise

    async def notify(self, method: str, params: Params = None) -> None:
        """Send a notification (no answer, no error reported back)."""
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = _params(params)
        self._check_open()
        await self._channel.send(message)
        self._stats.notifications_sent += 1

    async def wait_closed(self) -> None:
        """Wait until the channel has ended (the peer closed it, or the session ended)."""
        self.start()
        assert self._reader is not None
        await asyncio.shield(self._reader)

    async def close(self) -> None:
        """Stop: fail waiting calls, cancel running handlers, close the channel. Idempotent."""
        await self._channel.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        self._shutdown(ChannelClosed(f"rpc channel {self._channel.name!r} was closed"))
        tasks = list(self._handlers.values()) + list(self._background)
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> RpcPeer:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ----------------------------------------------------------------------------- reading

    def _check_open(self) -> None:
        if self._closed_error is not None:
            raise self._closed_error

    async def _read_loop(self) -> None:
        error: MessagingError = ChannelClosed(f"rpc channel {self._channel.name!r} ended")
        try:
            while True:
                while len(self._background) >= _MAX_BACKLOG:  # the peer does not read: wait
                    self._room.clear()
                    await self._room.wait()
                try:
                    message = await self._channel.receive()
                except DecodeError as exc:
                    self._stats.invalid_received += 1
                    self._reply_error(None, RpcErrorCode.PARSE_ERROR, f"Parse error: {exc}")
                    continue
                self._dispatch(message)
        except MessagingError as exc:
            error = exc if isinstance(exc, ChannelClosed) else ChannelClosed(str(exc))
        finally:
            self._shutdown(error)

    def _shutdown(self, error: MessagingError) -> None:
        if self._closed_error is None:
            self._closed_error = error
        for future in self._calls.values():
            if not future.done():
                future.set_exception(self._closed_error)
        for task in self._handlers.values():
            task.cancel()

    def _dispatch(self, message: Any) -> None:
        if isinstance(message, list):
            if not message:
                self._invalid(None, "empty batch")
            else:
                self._spawn(self._run_batch(message))
            return
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            self._invalid(_id_of(message), "not a JSON-RPC 2.0 object")
        elif "method" in message:
            self._start_request(message, reply=True)
        elif "result" in message or "error" in message:
            self._on_response(message)
        else:
            self._invalid(_id_of(message), "neither a request nor a response")

    def _invalid(self, call_id: Any, why: str, *, reply: bool = True) -> dict[str, Any] | None:
        self._stats.invalid_received += 1
        return self._refuse(call_id, RpcErrorCode.INVALID_REQUEST, f"Invalid Request: {why}", reply)

    def _refuse(self, call_id: Any, code: int, message: str, reply: bool) -> dict[str, Any] | None:
        """An error answer: sent now, or (not ``reply``) returned for a batch's array."""
        if not reply:
            return _error_response(call_id, code, message)
        self._reply_error(call_id, code, message)
        return None

    def _on_response(self, message: dict[str, Any]) -> None:
        call_id = message.get("id")
        future = self._calls.get(call_id) if type(call_id) is int else None
        if future is None or future.done():
            if call_id in self._cancelled_ids:
                self._stats.late_responses += 1
            else:
                self._stats.unknown_responses += 1
                logger.debug("rpc: response for unknown id %r discarded", call_id)
            return
        if "error" in message:
            future.set_exception(_error_from(message["error"]))
        else:
            future.set_result(message["result"])

    # ----------------------------------------------------------------------------- handling

    def _start_request(
        self, request: dict[str, Any], *, reply: bool
    ) -> asyncio.Task[dict[str, Any] | None] | dict[str, Any] | None:
        """Validate a request and start its task.

        With ``reply`` the task sends its response itself; otherwise the task's result is the
        response (None: none), for a batch to collect, and a request refused at once returns
        its error response instead of sending it.
        """
        method, params = request.get("method"), request.get("params")
        has_id = "id" in request
        call_id = request.get("id")
        if (
            not isinstance(method, str)
            or not isinstance(params, list | dict | None)
            or (has_id and not (call_id is None or type(call_id) in (int, str)))
        ):
            return self._invalid(_id_of(request), "bad method, params or id", reply=reply)
        if not has_id:
            self._stats.notifications_received += 1
            if method == CANCEL:
                self._on_cancel(params)
                return None
        else:
            self._stats.calls_received += 1
            if call_id in self._handlers:
                return self._invalid(call_id, "an id already in use", reply=reply)
        if len(self._handlers) >= self._max_handlers:
            self._stats.rejected_busy += 1  # a notification beyond the limit is dropped
            if not has_id:
                return None
            return self._refuse(
                call_id, RpcErrorCode.TOO_MANY_CALLS, "Too many calls in flight", reply
            )
        key: Any = call_id if has_id else object()
        task = asyncio.get_running_loop().create_task(
            self._run(method, params, call_id if has_id else _NO_ID, reply)
        )
        self._handlers[key] = task
        task.add_done_callback(lambda _: self._handlers.pop(key, None))
        return task

    async def _run(
        self, method: str, params: Any, call_id: Any, reply: bool
    ) -> dict[str, Any] | None:
        """Run one method; its response (None for a notification or a cancelled call)."""
        _CURRENT.set(self)
        try:
            result = await self._invoke(method, params)
        except asyncio.CancelledError:
            return None  # cancelled by the peer (or closing): no answer
        except RpcError as exc:
            response = _error_response(call_id, exc.code, exc.message, exc.data)
        except Exception as exc:
            logger.exception("rpc method %r raised", method)
            text = f"Internal error: {exc}" if self._expose else "Internal error"
            response = _error_response(call_id, RpcErrorCode.INTERNAL_ERROR, text)
        else:
            response = {"jsonrpc": "2.0", "id": call_id, "result": result}
        if call_id is _NO_ID:
            return None
        if reply:
            await self._send_response(response)
        return response

    async def _invoke(self, name: str, params: Any) -> Any:
        method = self._own.get(name) or (self._shared.get(name) if self._shared else None)
        if method is None:
            raise RpcError(RpcErrorCode.METHOD_NOT_FOUND, f"Method not found: {name}")
        args, kwargs = method.bind(params)
        result = method.func(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _run_batch(self, items: list[Any]) -> None:
        waiting: list[Awaitable[dict[str, Any] | None]] = []
        responses: list[dict[str, Any]] = []
        for item in items:
            if not isinstance(item, dict) or item.get("jsonrpc") != "2.0" or "method" not in item:
                self._stats.invalid_received += 1
                responses.append(
                    _error_response(_id_of(item), RpcErrorCode.INVALID_REQUEST, "Invalid Request")
                )
                continue
            started = self._start_request(item, reply=False)
            if isinstance(started, dict):
                responses.append(started)
            elif started is not None:
                waiting.append(started)
        for response in await asyncio.gather(*waiting, return_exceptions=True):
            if isinstance(response, dict):
                responses.append(response)
        if responses:
            await self._send_response(responses)

    async def _send_response(self, response: dict[str, Any] | list[dict[str, Any]]) -> None:
        if self._closed_error is not None:
            return
        try:
            await self._channel.send(response)
        except MessagingError as exc:
            if isinstance(exc, ChannelClosed):
                return
            logger.error("rpc: cannot send a response: %s", exc)
            call_id = response.get("id") if isinstance(response, dict) else None
            await self._send_response(
                _error_response(call_id, RpcErrorCode.INTERNAL_ERROR, "result not encodable")
            )
            return
        errors = [response] if isinstance(response, dict) else response
        self._stats.errors_sent += sum(1 for r in errors if "error" in r)

    def _reply_error(self, call_id: Any, code: int, message: str) -> None:
        """Answer with an error object from the reader (sent by a task: the reader never waits)."""
        self._spawn(self._send_response(_error_response(call_id, code, message)))

    def _on_cancel(self, params: Any) -> None:
        call_id = params.get("id") if isinstance(params, dict) else None
        task = self._handlers.get(call_id) if type(call_id) in (int, str) else None
        if task is not None:
            self._stats.cancelled_by_peer += 1
            task.cancel()

    def _cancel_remote(self, call_id: int) -> None:
        """Tell the peer we stopped waiting for ``call_id`` (in the background)."""
        if not call_id or self._closed_error is not None:
            return
        self._cancelled_ids[call_id] = None
        if len(self._cancelled_ids) > _RECENTLY_CANCELLED:
            self._cancelled_ids.popitem(last=False)
        message = {"jsonrpc": "2.0", "method": CANCEL, "params": {"id": call_id}}
        self._spawn(self._send_quietly(message))

    async def _send_quietly(self, message: dict[str, Any]) -> None:
        try:
            await self._channel.send(message)
        except MessagingError as exc:
            logger.debug("rpc: %s not sent: %s", message.get("method"), exc)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._spawned_done)

    def _spawned_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if len(self._background) < _MAX_BACKLOG:
            self._room.set()


def _params(params: Sequence[Any] | Mapping[str, Any]) -> list[Any] | dict[str, Any]:
    if isinstance(params, Mapping):
        return dict(params)
    if isinstance(params, list | tuple):
        return list(params)
    raise TypeError("params must be a list, a tuple or a dict")


def _id_of(message: Any) -> Any:
    call_id = message.get("id") if isinstance(message, dict) else None
    return call_id if type(call_id) in (int, str) else None


def _error_response(call_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": int(code), "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": call_id, "error": error}


def _error_from(error: Any) -> RpcError:
    if isinstance(error, dict) and type(error.get("code")) is int:
        return RpcError(error["code"], str(error.get("message", "")), error.get("data"))
    return RpcError(
        RpcErrorCode.INTERNAL_ERROR, f"malformed error object from the peer: {error!r}"[:200]
    )
