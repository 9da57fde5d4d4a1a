"""PooledClient: reuse per URL key, the pool_size bound and its waiters, dead sessions, close."""

from __future__ import annotations

import asyncio
import time

import pytest

from pywebtransport import (
    ClientConfig,
    ClientError,
    HandshakeError,
    TimeoutError,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
)
from pywebtransport.client.pooled import PooledClient
from tests.conftest import T, echo_ok, url


async def close_on_server(server: WebTransportServer) -> None:
    """Close every session the server holds, from the server's side."""
    for conn in server.connections:
        for session in conn.sessions:
            await session.close(code=7, reason="server-side close")


async def still_blocked(task: asyncio.Task[WebTransportSession]) -> bool:
    """True when ``task`` is still waiting after a while (it is meant to be blocked)."""
    done, _ = await asyncio.wait({task}, timeout=0.3)
    return not done


def attempts(pooled: PooledClient) -> int:
    """Connects the pooled client has made."""
    count = pooled.client.stats["connections_attempted"]
    assert isinstance(count, int)
    return count


@pytest.mark.parametrize("kwargs", [{"pool_size": 0}, {"pool_size": -1}, {"cleanup_interval": 0}])
def test_invalid_arguments_are_value_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        PooledClient(**kwargs)  # type: ignore[arg-type]


async def test_use_outside_async_with_is_a_client_error(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    pooled = PooledClient(config=client_config)
    with pytest.raises(ClientError):
        await pooled.get_session(url=url(server))
    async with asyncio.timeout(T), pooled:
        session = await pooled.get_session(url=url(server))
    assert session.is_closed
    with pytest.raises(ClientError):
        await pooled.get_session(url=url(server))
    with pytest.raises(ClientError):
        async with pooled:
            pass
    await pooled.close()  # idempotent


async def test_returned_session_is_reused(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    u = url(server)
    async with asyncio.timeout(T), PooledClient(config=client_config) as pooled:
        first = await pooled.get_session(url=u)
        await echo_ok(first, b"one")
        assert pooled.pool_stats() == {u: {"idle": 0, "in_use": 1, "connecting": 0, "waiting": 0}}
        await pooled.return_session(session=first)
        assert pooled.pool_stats() == {u: {"idle": 1, "in_use": 0, "connecting": 0, "waiting": 0}}
        assert f"{u}: 1 idle, 0 in use" in repr(pooled)
        again = await pooled.get_session(url=u + "#fragment-is-not-part-of-the-key")
        assert again is first
        await echo_ok(again, b"two")
        assert attempts(pooled) == 1


async def test_sessions_are_pooled_per_key(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    echo_url, push_url = url(server, "/echo"), url(server, "/push")
    async with asyncio.timeout(T), PooledClient(config=client_config) as pooled:
        echo = await pooled.get_session(url=echo_url)
        push = await pooled.get_session(url=push_url)
        assert echo is not push
        await pooled.return_session(session=push)
        await pooled.return_session(session=echo)
        assert set(pooled.pool_stats()) == {echo_url, push_url}
        assert await pooled.get_session(url=push_url) is push
        assert await pooled.get_session(url=echo_url) is echo
        assert (push.path, echo.path) == ("/push", "/echo")
        other = await pooled.get_session(url=url(server, "/echo?v=2"))  # query: another key
        assert other not in (echo, push)
        assert attempts(pooled) == 3


async def test_session_returns_to_the_key_it_was_taken_under(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    port = server.local_address[1]
    by_name, by_ip = f"https://localhost:{port}/echo", f"https://127.0.0.1:{port}/echo"
    async with asyncio.timeout(T), PooledClient(config=client_config) as pooled:
        named = await pooled.get_session(url=by_name)
        assert named.remote_address[0] == "127.0.0.1"  # the same peer as by_ip
        await pooled.return_session(session=named)
        assert pooled.pool_stats()[by_name]["idle"] == 1
        assert by_ip not in pooled.pool_stats()
        by_address = await pooled.get_session(url=by_ip)
        assert by_address is not named
        assert await pooled.get_session(url=by_name) is named


async def test_pool_size_bounds_sessions_and_a_return_releases_a_waiter(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    u = url(server)
    async with asyncio.timeout(T), PooledClient(config=client_config, pool_size=2) as pooled:
        first = await pooled.get_session(url=u)
        second = await pooled.get_session(url=u)
        assert first is not second
        waiter = asyncio.create_task(pooled.get_session(url=u))
        assert await still_blocked(waiter)
        assert pooled.pool_stats()[u] == {"idle": 0, "in_use": 2, "connecting": 0, "waiting": 1}
        await pooled.return_session(session=first)
        assert await waiter is first
        assert attempts(pooled) == 2
        assert pooled.pool_stats()[u] == {"idle": 0, "in_use": 2, "connecting": 0, "waiting": 0}


async def test_concurrent_callers_open_at_most_pool_size_sessions(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    u = url(server)
    async with asyncio.timeout(T), PooledClient(config=client_config, pool_size=3) as pooled:
        tasks = [asyncio.create_task(pooled.get_session(url=u)) for _ in range(5)]
        arrivals = asyncio.as_completed(tasks)
        first_three = [await next(arrivals) for _ in range(3)]
        assert len(set(first_three)) == 3
        assert await still_blocked(tasks[3]) and not tasks[4].done()
        assert pooled.pool_stats()[u] == {"idle": 0, "in_use": 3, "connecting": 0, "waiting": 2}
        for session in first_three:
            await pooled.return_session(session=session)
        last_two = [await next(arrivals) for _ in range(2)]
        assert set(last_two) <= set(first_three)
        assert attempts(pooled) == 3


async def test_waiter_times_out_when_nobody_returns(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    u = url(server)
    config = client_config.update(connect_timeout=0.5)
    async with asyncio.timeout(T), PooledClient(config=config, pool_size=1) as pooled:
        held = await pooled.get_session(url=u)
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            await pooled.get_session(url=u)
        assert 0.45 <= time.monotonic() - start < 0.5 + T / 5
        assert pooled.pool_stats()[u] == {"idle": 0, "in_use": 1, "connecting": 0, "waiting": 0}
        await pooled.return_session(session=held)
        assert await pooled.get_session(url=u) is held


async def test_a_cancelled_waiter_passes_its_wake_up_on(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    u = url(server)
    config = client_config.update(connect_timeout=3 * T)  # a lost wake-up would hit asyncio.timeout
    async with asyncio.timeout(T), PooledClient(config=config, pool_size=1) as pooled:
        held = await pooled.get_session(url=u)
        first = asyncio.create_task(pooled.get_session(url=u))
        assert await still_blocked(first)
        second = asyncio.create_task(pooled.get_session(url=u))
        assert await still_blocked(second)
        await pooled.return_session(session=held)  # notifies `first` ...
        first.cancel()  # ... which is cancelled before it could take the session
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await second is held


async def test_a_failed_connect_frees_its_slot(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    u = url(server, "/missing")
    async with asyncio.timeout(T), PooledClient(config=client_config, pool_size=1) as pooled:
        for _ in range(2):  # a leaked slot would make the second call wait, then time out
            with pytest.raises(HandshakeError) as info:
                await pooled.get_session(url=u)
            assert info.value.status == 404
        assert pooled.pool_stats() == {}


async def test_closed_session_is_dropped_on_return_and_frees_a_waiter(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    u = url(server)
    async with asyncio.timeout(T), PooledClient(config=client_config, pool_size=1) as pooled:
        held = await pooled.get_session(url=u)
        waiter = asyncio.create_task(pooled.get_session(url=u))
        assert await still_blocked(waiter)
        await held.close()
        await pooled.return_session(session=held)
        fresh = await waiter
        assert fresh is not held and fresh.is_ready
        await echo_ok(fresh)
        assert pooled.pool_stats()[u] == {"idle": 0, "in_use": 1, "connecting": 0, "waiting": 0}


async def test_session_closed_by_the_server_is_not_kept(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    u = url(server, "/close")  # the server closes each session at once (code 4321)
    async with asyncio.timeout(T), PooledClient(config=client_config) as pooled:
        session = await pooled.get_session(url=u)
        await session.wait_closed()
        assert session.close_code == 4321
        await pooled.return_session(session=session)
        assert pooled.pool_stats() == {}
        again = await pooled.get_session(url=u)
        assert again is not session


async def test_idle_session_that_died_is_never_handed_out(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    u = url(server)
    async with asyncio.timeout(T), PooledClient(config=client_config) as pooled:
        idle = await pooled.get_session(url=u)
        await pooled.return_session(session=idle)
        await close_on_server(server)
        await idle.wait_closed()
        assert pooled.pool_stats()[u]["idle"] == 1  # not swept yet (cleanup_interval 60 s)
        fresh = await pooled.get_session(url=u)
        assert fresh is not idle and fresh.is_ready
        await echo_ok(fresh)
        assert pooled.pool_stats()[u] == {"idle": 0, "in_use": 1, "connecting": 0, "waiting": 0}


async def test_cleanup_drops_dead_idle_sessions_and_keeps_live_ones(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    u, interval = url(server), 0.2
    async with (
        asyncio.timeout(T),
        PooledClient(config=client_config, cleanup_interval=interval) as pooled,
    ):
        session = await pooled.get_session(url=u)
        await pooled.return_session(session=session)
        swept = pooled._swept
        async with swept:
            await swept.wait_for(lambda: pooled._sweeps >= 2)
        assert pooled.pool_stats()[u]["idle"] == 1  # a healthy idle session survives sweeps
        await close_on_server(server)
        await session.wait_closed()
        died_at = time.monotonic()
        async with swept:
            await swept.wait_for(lambda: u not in pooled.pool_stats())
        assert time.monotonic() - died_at <= interval + T / 10


async def test_close_closes_idle_and_handed_out_sessions_and_wakes_waiters(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    u = url(server)
    async with asyncio.timeout(T):
        pooled = PooledClient(config=client_config, pool_size=2)
        async with pooled:
            held = await pooled.get_session(url=u)
            other_key = await pooled.get_session(url=url(server, "/echo?other"))
            idle = await pooled.get_session(url=u)
            await pooled.return_session(session=idle)
            assert pooled.pool_stats()[u] == {
                "idle": 1,
                "in_use": 1,
                "connecting": 0,
                "waiting": 0,
            }
            full = PooledClient(config=client_config, pool_size=1)
            async with full:
                taken = await full.get_session(url=u)
                waiter = asyncio.create_task(full.get_session(url=u))
                assert await still_blocked(waiter)
                await full.close()
                with pytest.raises(ClientError):
                    await waiter  # woken by close, not left to time out
                assert taken.is_closed
            await pooled.close()
            assert held.is_closed and idle.is_closed and other_key.is_closed
            assert pooled.client.is_closed
            assert pooled.pool_stats() == {}
            await pooled.return_session(session=held)  # after close: no error, stays closed
            assert "[closed]" in repr(pooled)


async def test_returning_a_foreign_or_returned_session_is_a_client_error(
    server: WebTransportServer, client_config: ClientConfig
) -> None:
    u = url(server)
    async with (
        asyncio.timeout(T),
        PooledClient(config=client_config) as pooled,
        WebTransportClient(config=client_config) as client,
    ):
        foreign = await client.connect(url=u)
        with pytest.raises(ClientError):
            await pooled.return_session(session=foreign)
        assert foreign.is_ready  # not ours: left alone
        session = await pooled.get_session(url=u)
        await pooled.return_session(session=session)
        with pytest.raises(ClientError):
            await pooled.return_session(session=session)
        assert pooled.pool_stats()[u]["idle"] == 1  # not duplicated
