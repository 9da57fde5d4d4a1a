"""What the server tests share: the access log, record by record."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from tests.conftest import T


class AccessRecords(logging.Handler):
    """Collects ``pywebtransport.access`` records and lets a test await the next one."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.queue: asyncio.Queue[logging.LogRecord] = asyncio.Queue()

    def emit(self, record: logging.LogRecord) -> None:
        self.queue.put_nowait(record)

    async def next(self) -> logging.LogRecord:
        async with asyncio.timeout(T):
            return await self.queue.get()


@pytest.fixture
def access() -> Iterator[AccessRecords]:
    """The access log's records during the test (the logger at INFO meanwhile)."""
    logger = logging.getLogger("pywebtransport.access")
    handler, old_level = AccessRecords(), logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)
