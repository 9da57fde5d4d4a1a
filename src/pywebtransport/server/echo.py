"""An echo handler for the demo server, the tests and the benchmarks.

Theory of operation: one task accepts the peer's streams from ``session.incoming_streams()`` and
starts one task per stream; another task echoes datagrams. A bidirectional stream is echoed chunk by
chunk on itself, and its FIN is mirrored once the read side reaches the end. A unidirectional
stream is read to its FIN, then its bytes go back on a new server-opened unidirectional stream. When
the peer resets or stops a bidirectional stream, the handler ends both of its directions (a reset
and a STOP_SENDING) with the peer's code. The iterator ends when the session closes; then every
task still running is cancelled and awaited, so nothing outlives the handler. The streams of a
closed session are left alone: the protocol has ended them already.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, Any

from pywebtransport.exceptions import DatagramError, StreamError, WebTransportError
from pywebtransport.stream import WebTransportReceiveStream, WebTransportStream

if TYPE_CHECKING:
    from pywebtransport.session import WebTransportSession

__all__ = ["MAX_UNI_ECHO_SIZE", "echo_handler"]

logger = logging.getLogger(__name__)

MAX_UNI_ECHO_SIZE = 16 << 20
"""Largest unidirectional stream the handler buffers before answering (bytes)."""

_TOO_LARGE_CODE = 1
"""Application code used to stop a unidirectional stream that exceeds ``MAX_UNI_ECHO_SIZE``."""


async def echo_handler(session: WebTransportSession) -> None:
    """Echo every stream and datagram of ``session`` until the session closes.

    Args:
        session: The accepted session (a ``ServerApp`` route handler argument).
    """
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    spawn(_echo_datagrams(session))
    try:
        async for stream in session.incoming_streams():
            if isinstance(stream, WebTransportStream):
                spawn(_echo_bidirectional(stream))
            elif isinstance(stream, WebTransportReceiveStream):
                spawn(_echo_unidirectional(session, stream))
    finally:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _echo_bidirectional(stream: WebTransportStream) -> None:
    try:
        while chunk := await stream.read(65536):
            await stream.write(chunk)
        await stream.close()
    except StreamError as error:
        logger.debug("echo: stream %d ended by an error: %s", stream.stream_id, error)
        if stream.session.is_closed:
            # The session (or its connection) ended, and with it every stream of the session:
            # the protocol has reset and stopped them already (with WT_SESSION_GONE, as the
            # WebTransport draft asks). The error carries the session's close code, which is
            # the application's word about the session, not about this stream: nothing to do.
            return
        # The peer reset its side or stopped ours. Either way there is nothing more to echo,
        # so both directions end; otherwise the peer would wait for good, for an echo that
        # never comes or for credit to write what is never read. A WebTransport code is
        # mirrored; a plain HTTP/3 code (no WebTransport code) is answered with 0.
        code = error.error_code or 0
        await _quietly(stream.abort(code=code))
        await _quietly(stream.stop(code=code))
    except WebTransportError as error:
        logger.debug("echo: stream %d ended: %s", stream.stream_id, error)


async def _echo_unidirectional(
    session: WebTransportSession, stream: WebTransportReceiveStream
) -> None:
    try:
        data = await stream.read_all(max_size=MAX_UNI_ECHO_SIZE)
    except StreamError as error:
        if error.h3_error_code is None:  # too large, not a reset by the peer
            await _quietly(stream.stop(code=_TOO_LARGE_CODE))
        logger.debug("echo: uni stream %d not echoed: %s", stream.stream_id, error)
        return
    except WebTransportError as error:
        logger.debug("echo: uni stream %d not echoed: %s", stream.stream_id, error)
        return
    try:
        answer = await session.create_unidirectional_stream()
        await answer.write_all(data)
    except WebTransportError as error:
        logger.debug("echo: answer to uni stream %d failed: %s", stream.stream_id, error)


async def _echo_datagrams(session: WebTransportSession) -> None:
    datagrams = session.datagrams
    while True:
        try:
            data = await datagrams.receive()
        except WebTransportError as error:
            logger.debug("echo: datagrams ended: %s", error)
            return
        try:
            await datagrams.send(data)
        except DatagramError as error:
            logger.debug("echo: datagram of %d bytes not echoed: %s", len(data), error)
        except WebTransportError as error:
            logger.debug("echo: datagrams ended: %s", error)
            return


async def _quietly(action: Awaitable[None]) -> None:
    try:
        await action
    except WebTransportError as error:
        logger.debug("echo: ignoring %s", error)
