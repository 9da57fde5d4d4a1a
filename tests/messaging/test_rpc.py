"""JSON-RPC over a channel on a real loopback session, calls in both directions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from pywebtransport import ClientConfig, WebTransportSession
from pywebtransport import exceptions as errors
from pywebtransport.messaging import (
    Channel,
    ChannelClosed,
    Messenger,
    RpcError,
    RpcErrorCode,
    RpcMethods,
    RpcPeer,
    RpcTimeoutError,
)
from tests.certs import CertBundle
from tests.conftest import T
from tests.messaging.test_channel import pair

methods = RpcMethods()
started: dict[str, asyncio.Event] = {}
cancelled: dict[str, asyncio.Event] = {}


@methods.method
async def add(a: int, b: int) -> int:
    return a + b


@methods.method(name="math.scale")
def scale(values: list[float], factor: float = 2.0) -> list[float]:
    return [v * factor for v in values]


@methods.method
async def greet(name: str, punctuation: str | None = None) -> str:
    return f"hello {name}{punctuation or ''}"


@methods.method
async def fail(kind: str) -> None:
    if kind == "rpc":
        raise RpcError(4000, "custom failure", {"why": "asked"})
    raise ValueError("secret detail")


@methods.method
async def slow(tag: str) -> str:
    started[tag].set()
    try:
        await asyncio.sleep(3600)  # until cancelled
    except asyncio.CancelledError:
        cancelled[tag].set()
        raise
    return "never"


@methods.method
async def call_back(x: int) -> int:
    """Calls the client's ``double`` while handling the client's call."""
    peer = RpcPeer.current()
    doubled: int = await peer.call("double", [x], timeout=T)
    return doubled + 1


async def rpc_server(session: WebTransportSession) -> None:
    messenger = Messenger(session)

    @messenger.route("rpc")
    async def rpc(channel: Channel) -> None:
        async with RpcPeer(channel, methods=methods, max_concurrent_handlers=8) as peer:
            await peer.wait_closed()

    await messenger.serve()


@asynccontextmanager
async def client_peer(
    cert: CertBundle, client_config: ClientConfig, **options: Any
) -> AsyncIterator[RpcPeer]:
    async with pair(cert, client_config, rpc_server) as session:
        channel = await Messenger(session).open_channel("rpc", timeout=T)
        async with RpcPeer(channel, **options) as peer:
            yield peer


def track(tag: str) -> None:
    started[tag], cancelled[tag] = asyncio.Event(), asyncio.Event()


async def test_calls_by_position_and_by_name(cert: CertBundle, client_config: ClientConfig) -> None:
    async with asyncio.timeout(4 * T), client_peer(cert, client_config) as peer:
        assert await peer.call("add", [2, 3], timeout=T) == 5
        assert await peer.call("add", {"b": 10, "a": 1}, timeout=T) == 11
        assert await peer.call("math.scale", [[1, 2.5]], timeout=T) == [2, 5.0]
        assert await peer.call("greet", {"name": "ada", "punctuation": "!"}) == "hello ada!"
        assert await peer.call("greet", ["bob"]) == "hello bob"
        assert peer.stats["calls_sent"] == 5 and peer.stats["pending_calls"] == 0


@pytest.mark.parametrize(
    ("method", "params", "code"),
    [
        ("nope", None, RpcErrorCode.METHOD_NOT_FOUND),
        ("add", [1], RpcErrorCode.INVALID_PARAMS),
        ("add", [1, 2, 3], RpcErrorCode.INVALID_PARAMS),
        ("add", ["1", 2], RpcErrorCode.INVALID_PARAMS),
        ("add", [True, 2], RpcErrorCode.INVALID_PARAMS),
        ("add", {"a": 1, "c": 2}, RpcErrorCode.INVALID_PARAMS),
        ("math.scale", [[1, "x"]], RpcErrorCode.INVALID_PARAMS),
        ("greet", [5], RpcErrorCode.INVALID_PARAMS),
        ("fail", ["other"], RpcErrorCode.INTERNAL_ERROR),
    ],
)
async def test_errors_come_back_as_error_objects(
    cert: CertBundle, client_config: ClientConfig, method: str, params: Any, code: int
) -> None:
    async with asyncio.timeout(4 * T), client_peer(cert, client_config) as peer:
        with pytest.raises(RpcError) as caught:
            await peer.call(method, params, timeout=T)
        assert caught.value.code == code
        assert "secret" not in caught.value.message  # details stay on the server
        assert await peer.call("add", [1, 1], timeout=T) == 2  # the channel goes on


async def test_application_error_keeps_code_and_data(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(4 * T), client_peer(cert, client_config) as peer:
        with pytest.raises(RpcError) as caught:
            await peer.call("fail", ["rpc"], timeout=T)
        assert (caught.value.code, caught.value.message, caught.value.data) == (
            4000,
            "custom failure",
            {"why": "asked"},
        )


async def test_server_calls_the_client_during_a_call(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    async with asyncio.timeout(4 * T), client_peer(cert, client_config) as peer:

        @peer.method
        async def double(x: int) -> int:
            return 2 * x

        assert await peer.call("call_back", [20], timeout=T) == 41
        assert peer.stats["calls_received"] == 1


async def test_concurrent_calls(cert: CertBundle, client_config: ClientConfig) -> None:
    """300 calls at once; the client's bound (8) matches what the server runs at once (8)."""
    async with (
        asyncio.timeout(4 * T),
        client_peer(cert, client_config, max_pending_calls=8) as peer,
    ):
        results = await asyncio.gather(*(peer.call("add", [i, i]) for i in range(300)))
        assert results == [2 * i for i in range(300)]


async def test_timeout_cancels_the_remote_handler(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    track("t")
    async with asyncio.timeout(4 * T), client_peer(cert, client_config) as peer:
        with pytest.raises(RpcTimeoutError) as caught:
            await peer.call("slow", ["t"], timeout=0.3)
        assert isinstance(caught.value, errors.TimeoutError)
        assert started["t"].is_set()
        await cancelled["t"].wait()  # rpc.cancel reached the server's handler
        assert peer.stats["timeouts"] == 1
        assert await peer.call("add", [1, 2], timeout=T) == 3


async def test_cancelling_the_caller_cancels_the_remote_handler(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    track("c")
    async with asyncio.timeout(4 * T), client_peer(cert, client_config) as peer:
        call = asyncio.create_task(peer.call("slow", ["c"]))
        await started["c"].wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await cancelled["c"].wait()


async def test_bound_on_calls_in_flight(cert: CertBundle, client_config: ClientConfig) -> None:
    """max_pending_calls: the third call waits for a slot; the peer never sees three at once."""
    track("a")
    track("b")
    async with (
        asyncio.timeout(4 * T),
        client_peer(cert, client_config, max_pending_calls=2) as peer,
    ):
        first = asyncio.create_task(peer.call("slow", ["a"]))
        second = asyncio.create_task(peer.call("slow", ["b"]))
        await started["a"].wait()
        await started["b"].wait()
        third = asyncio.create_task(peer.call("add", [1, 2]))
        with pytest.raises(RpcTimeoutError):
            await peer.call("add", [0, 0], timeout=0.3)  # waits for a slot, times out
        assert not third.done() and peer.stats["pending_calls"] == 2
        first.cancel()
        assert await third == 3
        second.cancel()
        await asyncio.gather(first, second, return_exceptions=True)


async def test_notifications_are_never_answered(
    cert: CertBundle, client_config: ClientConfig
) -> None:
    got: asyncio.Queue[Any] = asyncio.Queue()

    async def handler(session: WebTransportSession) -> None:
        async with Messenger(session) as messenger:
            channel = await messenger.accept_channel("rpc", timeout=T)
            async with RpcPeer(channel) as peer:

                @peer.method
                async def log(line: str) -> str:
                    await got.put(line)
                    return "ignored"

                await peer.wait_closed()

    async with asyncio.timeout(4 * T), pair(cert, client_config, handler) as session:
        channel = await Messenger(session).open_channel("rpc", timeout=T)
        peer = RpcPeer(channel)  # not started: this test reads the channel itself
        await peer.notify("log", ["one"])
        await peer.notify("missing-method")  # no error comes back for a notification
        await peer.notify("log", {"line": "two"})
        assert [await got.get(), await got.get()] == ["one", "two"]
        with pytest.raises(TimeoutError):
            await channel.receive(timeout=0.2)  # nothing was answered (or sent) to us
        assert peer.stats["notifications_sent"] == 3
        await peer.close()


async def test_closing_fails_pending_calls(cert: CertBundle, client_config: ClientConfig) -> None:
    track("z")
    async with asyncio.timeout(4 * T), pair(cert, client_config, rpc_server) as session:
        channel = await Messenger(session).open_channel("rpc", timeout=T)
        peer = RpcPeer(channel)
        call = asyncio.create_task(peer.call("slow", ["z"]))
        await started["z"].wait()
        await session.close()
        with pytest.raises(ChannelClosed):
            await call
        await cancelled["z"].wait()  # the server's handler was cancelled as the session ended
        with pytest.raises(ChannelClosed):
            await peer.call("add", [1, 2])


# ------------------------------------------------------------------- binding without a network


def plain(a: int, b: str = "x", c: float | None = None) -> None: ...


def general(a: int, *rest: int, key: str = "k", **extra: Any) -> None: ...


def keyword_only(a: int, *, b: int) -> None: ...


BIND_CASES: list[Any] = [
    None,
    [],
    [1],
    [1, "y"],
    [1, "y", 2.5],
    [1, "y", None],
    [1, "y", 2.5, 4],
    ["1"],
    [True],
    [1, 2],
    [1, "y", "z"],
    {},
    {"a": 1},
    {"a": 1, "c": 3},
    {"b": "y"},
    {"a": 1, "d": 4},
    {"a": "1"},
    {"a": 1, "b": None},
    {"a": 1, "key": "z", "other": [1]},
    {"a": 1, "b": 2},
]


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# What each parameter accepts by its annotation; *rest and **extra are not checked.
FITS: dict[Any, dict[str, Callable[[Any], bool]]] = {
    plain: {
        "a": is_int,
        "b": lambda v: isinstance(v, str),
        "c": lambda v: v is None or is_int(v) or isinstance(v, float),
    },
    general: {"a": is_int, "rest": lambda v: True, "key": lambda v: isinstance(v, str)},
    keyword_only: {"a": is_int, "b": is_int},
}
FITS[general]["extra"] = lambda v: True


@pytest.mark.parametrize("func", [plain, general, keyword_only])
@pytest.mark.parametrize("params", BIND_CASES)
def test_binding_agrees_with_python_call_rules(func: Any, params: Any) -> None:
    """Params bind exactly when Python's own binding accepts them and the types fit."""
    registry = RpcMethods()
    registry.add(func)
    method = registry.get(func.__name__)
    assert method is not None
    args = params if isinstance(params, list) else []
    kwargs = params if isinstance(params, dict) else {}
    try:
        expected = method.signature.bind(*args, **kwargs).arguments
    except TypeError:
        accepts = False
    else:
        accepts = all(FITS[func][name](value) for name, value in expected.items())
    if accepts:
        call_args, call_kwargs = method.bind(params)
        assert method.signature.bind(*call_args, **call_kwargs).arguments == expected
    else:
        with pytest.raises(RpcError) as caught:
            method.bind(params)
        assert caught.value.code == RpcErrorCode.INVALID_PARAMS
