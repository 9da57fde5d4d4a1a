"""Fixtures of the pub/sub tests: a Redis server, and every backend under the same tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pywebtransport.pubsub import Backend, MemoryBackend, MemoryBroker
from tests.redis_server import RedisServer

BackendFactory = Callable[[], Backend]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh ``redis-server`` on a free loopback port, for this test only."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["memory", "redis"])
def backend_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendFactory]:
    """Makes backends that share one broker: in-process, or one real Redis server.

    Hubs built on backends from the same factory see each other's topics and presence, as
    workers and machines sharing one broker do.
    """
    if request.param == "memory":
        broker = MemoryBroker()
        yield lambda: MemoryBackend(broker)
        return
    from pywebtransport.pubsub.redis import RedisBackend

    server = RedisServer(tmp_path)
    server.start()
    try:
        yield lambda: RedisBackend(server.url)
    finally:
        server.stop()
