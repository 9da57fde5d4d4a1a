"""The live statistics demo behind ``pywebtransport serve`` (route ``/live``).

Theory of operation: :func:`live_handler` echoes the session's streams and datagrams exactly as
:func:`~pywebtransport.server.echo.echo_handler` does (it runs it), and next to the echo opens
one unidirectional stream of its own on which it writes, every :data:`STATS_INTERVAL` seconds,
the session's statistics as one line of JSON (see :func:`stats_line`). The browser keeps a load
running on the echo and draws the round-trip time and the throughput from those lines.

The push is bounded: one line is written at a time (a slow reader holds the loop back through
flow control; nothing queues up), and the loop ends when the session ends. The handler returns
once the echo has ended (the session closed) and the push task is cancelled and awaited, so
nothing outlives it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import asdict
from typing import Any

from ..exceptions import WebTransportError
from ..server.echo import echo_handler
from ..session import SessionStats, WebTransportSession

__all__ = ["STATS_INTERVAL", "live_handler", "stats_line"]

logger = logging.getLogger(__name__)

STATS_INTERVAL = 0.25
"""Seconds between two statistics lines."""


def stats_line(stats: SessionStats, *, seq: int, elapsed: float) -> bytes:
    """One statistics line: the fields of ``stats`` plus ``seq`` and ``elapsed``, as JSON.

    Field names are those of :class:`~pywebtransport.session.SessionStats` (``timestamp`` is the
    server's ``time.time()``, RTTs are in seconds, ``estimated_send_rate`` in bits per second);
    ``seq`` counts the lines from 0 and ``elapsed`` is the server's monotonic clock in seconds
    since the first line. The line ends with ``\\n``.
    """
    record: dict[str, Any] = asdict(stats)
    record["seq"] = seq
    record["elapsed"] = round(elapsed, 6)
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


async def live_handler(session: WebTransportSession, *, interval: float = STATS_INTERVAL) -> None:
    """Echo ``session`` and push its statistics every ``interval`` seconds until it ends.

    Args:
        session: The accepted session (a ``ServerApp`` route handler argument).
        interval: Seconds between two statistics lines.
    """
    pusher = asyncio.create_task(
        _push_stats(session, interval), name=f"live-stats-{session.session_id}"
    )
    try:
        await echo_handler(session)
    finally:
        pusher.cancel()
        await asyncio.gather(pusher, return_exceptions=True)


async def _push_stats(session: WebTransportSession, interval: float) -> None:
    try:
        stream = await session.create_unidirectional_stream()
    except WebTransportError as error:
        logger.debug("live: no statistics stream for session %d: %s", session.session_id, error)
        return
    started = time.monotonic()
    seq = 0
    try:
        while not session.is_closed:
            line = stats_line(session.get_stats(), seq=seq, elapsed=time.monotonic() - started)
            await stream.write(line)
            seq += 1
            try:
                # The session's end cuts the pause short; otherwise this is the tick.
                await asyncio.wait_for(session.wait_closed(), timeout=interval)
            except TimeoutError:
                continue
    except WebTransportError as error:
        logger.debug("live: statistics of session %d ended: %s", session.session_id, error)
