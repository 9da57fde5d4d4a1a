"""A tiny HTTP/1.1 server for the demo page and the browser tests.

Theory of operation: every TCP connection carries exactly one request. The request head is read
with one bounded ``readuntil`` (the stream reader's limit is the header budget), the body only when
its ``Content-Length`` fits the body budget, and every read runs under one per-request deadline.
The answer always carries ``Connection: close`` and the connection is closed after it, so there is
no keep-alive or pipelining state to get wrong.

GET routes serve fixed bytes or the bytes a callable produces at request time. POST routes expect a
JSON body and deliver the decoded value either to an async callback or to a bounded per-path queue
that ``next_post`` reads. Anything else gets a short plain-text error: 400, 404, 405, 408, 411, 413,
431, 501 or 503; a POST callback that raises gets 500.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

__all__ = ["GetBody", "PageServer", "PostCallback"]

logger = logging.getLogger(__name__)

GetBody = bytes | Callable[[], bytes | Awaitable[bytes]]
"""What a GET route serves: fixed bytes, or a sync or async callable producing them per request."""

PostCallback = Callable[[Any], Awaitable[None]]
"""An async callback receiving the decoded JSON body of a POST."""

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


class _HttpError(Exception):
    """A request that is answered with an error status instead of a route's answer."""

    def __init__(self, status: int, detail: str = "", *, allow: str | None = None) -> None:
        super().__init__(f"{status} {detail}")
        self.status = status
        self.detail = detail or _REASONS.get(status, "")
        self.allow = allow


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class _GetRoute:
    content_type: str
    body: GetBody


@dataclass(slots=True)
class _PostRoute:
    callback: PostCallback | None
    queue: asyncio.Queue[Any] | None


class PageServer:
    """Serve a few fixed pages over HTTP/1.1 and collect JSON posted back by them.

    Example:
        ```python
        pages = PageServer()
        pages.add_get("/", b"<html>...</html>")
        pages.add_post("/report")
        await pages.start()
        print(pages.url)
        report = await pages.next_post("/report", timeout=30)
        await pages.close()
        ```
    """

    def __init__(
        self,
        *,
        max_body_size: int = 1 << 20,
        max_header_size: int = 16 << 10,
        request_timeout: float = 10.0,
        post_queue_size: int = 1024,
    ) -> None:
        """Create a server that is not yet listening.

        Args:
            max_body_size: Largest accepted request body in bytes (larger gets 413).
            max_header_size: Largest accepted request head in bytes (larger gets 431).
            request_timeout: Deadline in seconds for reading one request and writing its answer.
            post_queue_size: Capacity of each POST queue read by ``next_post`` (full gets 503).
        """
        if max_body_size < 0 or max_header_size < 64 or request_timeout <= 0 or post_queue_size < 1:
            raise ValueError("invalid PageServer limits")
        self._max_body_size = max_body_size
        self._max_header_size = max_header_size
        self._request_timeout = request_timeout
        self._post_queue_size = post_queue_size
        self._gets: dict[str, _GetRoute] = {}
        self._posts: dict[str, _PostRoute] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._host = ""
        self._port = 0

    def __repr__(self) -> str:
        """Show the address and the number of open connections."""
        where = self.url if self._server is not None else "not listening"
        return f"<PageServer {where} connections={len(self._connections)}>"

    def add_get(
        self, path: str, body: GetBody, *, content_type: str = "text/html; charset=utf-8"
    ) -> None:
        """Serve ``body`` for GET (and HEAD) requests to ``path``.

        Args:
            path: Exact request path, starting with ``/`` (the query string is ignored).
            body: Fixed bytes, or a callable (sync or async) producing the bytes per request.
            content_type: The ``Content-Type`` of the answer.
        """
        self._gets[_check_path(path)] = _GetRoute(content_type=content_type, body=body)

    def add_post(self, path: str, callback: PostCallback | None = None) -> None:
        """Accept JSON POSTed to ``path``.

        Args:
            path: Exact request path, starting with ``/``.
            callback: Awaited with each decoded body; without one, bodies are queued for
                ``next_post``.
        """
        queue: asyncio.Queue[Any] | None = None
        if callback is None:
            queue = asyncio.Queue(maxsize=self._post_queue_size)
        self._posts[_check_path(path)] = _PostRoute(callback=callback, queue=queue)

    async def next_post(self, path: str, *, timeout: float) -> Any:
        """Return the next JSON value POSTed to ``path``.

        Args:
            path: A path registered with ``add_post`` without a callback.
            timeout: Seconds to wait at most.

        Returns:
            The decoded JSON body.

        Raises:
            KeyError: ``path`` is not a POST route.
            ValueError: ``path`` delivers to a callback, not to a queue.
            TimeoutError: Nothing was posted within ``timeout``.
        """
        queue = self._posts[path].queue
        if queue is None:
            raise ValueError(f"POST route {path!r} delivers to a callback")
        async with asyncio.timeout(timeout):
            return await queue.get()

    async def start(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        """Start listening on TCP ``host:port`` (port 0 picks a free port).

        Raises:
            RuntimeError: The server is already listening.
            OSError: The address cannot be bound.
        """
        if self._server is not None:
            raise RuntimeError("PageServer is already listening")
        self._server = await asyncio.start_server(
            self._on_connection, host=host, port=port, limit=self._max_header_size
        )
        sockname = self._server.sockets[0].getsockname()
        self._host, self._port = str(sockname[0]), int(sockname[1])
        logger.debug("page server listening on %s", self.url)

    @property
    def is_serving(self) -> bool:
        """Whether the server is listening."""
        return self._server is not None

    @property
    def host(self) -> str:
        """The bound host address ("" before ``start``)."""
        return self._host

    @property
    def port(self) -> int:
        """The bound TCP port (0 before ``start``)."""
        return self._port

    @property
    def url(self) -> str:
        """The base URL, ending with ``/``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}/"

    async def close(self) -> None:
        """Stop listening and end every open connection. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
        logger.debug("page server on port %d closed", self._port)

    async def __aenter__(self) -> Self:
        """Start on the loopback interface with a free port unless already listening."""
        if self._server is None:
            await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the server."""
        await self.close()

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._serve_one(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            logger.debug("page server: client went away")
        finally:
            self._connections.discard(task)
            writer.close()
            try:
                async with asyncio.timeout(self._request_timeout):
                    await writer.wait_closed()
            except (OSError, TimeoutError):
                pass

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head_only = False
        try:
            async with asyncio.timeout(self._request_timeout):
                request = await self._read_head(reader)
                if request is None:
                    return
                head_only = request.method == "HEAD"
                status, content_type, body = await self._dispatch(request, reader)
                response = _response(status, content_type, body, head_only=head_only)
        except _HttpError as error:
            logger.debug("page server answers %d: %s", error.status, error.detail)
            response = _error_response(error, head_only=head_only)
        except TimeoutError:
            response = _error_response(_HttpError(408), head_only=head_only)
        writer.write(response)
        async with asyncio.timeout(self._request_timeout):
            await writer.drain()

    async def _read_head(self, reader: asyncio.StreamReader) -> _Request | None:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError as error:
            raise _HttpError(431) from error
        except asyncio.IncompleteReadError as error:
            if error.partial.strip():
                raise _HttpError(400, "incomplete request head") from error
            return None  # the client connected and left without a request
        return _parse_head(raw)

    async def _dispatch(
        self, request: _Request, reader: asyncio.StreamReader
    ) -> tuple[int, str, bytes]:
        if "transfer-encoding" in request.headers:
            raise _HttpError(501, "transfer-encoding is not supported")
        get_route = self._gets.get(request.path)
        post_route = self._posts.get(request.path)
        if get_route is not None and request.method in ("GET", "HEAD"):
            return 200, get_route.content_type, await _produce(get_route.body)
        if post_route is not None and request.method == "POST":
            value = await self._read_json(request, reader)
            await self._deliver(request.path, post_route, value)
            return 200, "application/json", b'{"ok": true}'
        if get_route is None and post_route is None:
            raise _HttpError(404)
        allow = "GET, HEAD" if get_route is not None else "POST"
        if get_route is not None and post_route is not None:
            allow = "GET, HEAD, POST"
        raise _HttpError(405, allow=allow)

    async def _read_json(self, request: _Request, reader: asyncio.StreamReader) -> Any:
        length_text = request.headers.get("content-length")
        if length_text is None:
            raise _HttpError(411)
        if not length_text.isdigit() or not length_text.isascii():
            raise _HttpError(400, "bad content-length")
        length = int(length_text)
        if length > self._max_body_size:
            raise _HttpError(413, f"body over {self._max_body_size} bytes")
        body = await reader.readexactly(length)
        try:
            return json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as error:
            raise _HttpError(400, "body is not JSON") from error

    async def _deliver(self, path: str, route: _PostRoute, value: Any) -> None:
        if route.callback is not None:
            try:
                await route.callback(value)
            except Exception as error:
                logger.exception("POST callback for %s failed", path)
                raise _HttpError(500) from error
            return
        assert route.queue is not None
        try:
            route.queue.put_nowait(value)
        except asyncio.QueueFull as error:
            raise _HttpError(503, "queue full") from error


def _check_path(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError(f"route path must start with '/': {path!r}")
    return path


async def _produce(body: GetBody) -> bytes:
    if isinstance(body, bytes):
        return body
    produced = body()
    if inspect.isawaitable(produced):
        produced = await produced
    assert isinstance(produced, bytes)
    return produced


def _parse_head(raw: bytes) -> _Request:
    try:
        text = raw.decode("iso-8859-1")
    except UnicodeDecodeError as error:  # pragma: no cover - latin-1 decodes every byte
        raise _HttpError(400) from error
    lines = text[:-4].split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0].isalpha():
        raise _HttpError(400, "bad request line")
    method, target, _version = parts
    if not target.startswith("/"):
        raise _HttpError(400, "only origin-form targets are supported")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or line[0] in " \t":
            raise _HttpError(400, "bad header line")
        key, value = name.lower(), value.strip()
        previous = headers.get(key)
        if previous is None or previous == value:
            headers[key] = value
        elif key == "content-length":
            raise _HttpError(400, "conflicting content-length")
        else:
            headers[key] = f"{previous}, {value}"
    path = target.split("?", 1)[0].split("#", 1)[0]
    return _Request(method=method, path=path, headers=headers)


def _response(status: int, content_type: str, body: bytes, *, head_only: bool) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n"
    )
    return head.encode("latin-1") + b"\r\n" + (b"" if head_only else body)


def _error_response(error: _HttpError, *, head_only: bool) -> bytes:
    body = f"{error.status} {error.detail}\n".encode()
    response = _response(error.status, "text/plain; charset=utf-8", body, head_only=head_only)
    if error.allow is None:
        return response
    head, sep, rest = response.partition(b"\r\n\r\n")
    return head + f"\r\nAllow: {error.allow}".encode("latin-1") + sep + rest
