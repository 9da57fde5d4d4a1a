"""Tests for the HTTP/1.1 page server, over real TCP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from pywebtransport.web import PageServer, demo_page

TIMEOUT = 5.0


@pytest_asyncio.fixture
async def server() -> AsyncIterator[PageServer]:
    pages = PageServer()
    pages.add_get("/", b"<html>hello</html>")
    pages.add_get("/data.json", b'{"a": 1}', content_type="application/json")
    pages.add_post("/report")
    await pages.start()
    try:
        yield pages
    finally:
        await pages.close()


async def exchange(port: int, *chunks: bytes, eof: bool = True) -> bytes:
    """Send ``chunks`` one write at a time, then read the whole answer until the server closes."""
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for chunk in chunks:
                writer.write(chunk)
                await writer.drain()
            if eof:
                writer.write_eof()
            return await reader.read()
        finally:
            writer.close()
            await writer.wait_closed()


def parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, raw
    lines = head.decode("latin-1").split("\r\n")
    version, status, _reason = lines[0].split(" ", 2)
    assert version == "HTTP/1.1"
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status), headers, body


def post(path: str, body: bytes, *, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


async def test_get_serves_bytes_and_closes(server: PageServer) -> None:
    raw = await exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = parse(raw)
    assert status == 200
    assert body == b"<html>hello</html>"
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["content-length"] == str(len(body))
    assert headers["connection"] == "close"
    assert headers["cache-control"] == "no-store"


async def test_get_ignores_query_and_uses_content_type(server: PageServer) -> None:
    status, headers, body = parse(
        await exchange(server.port, b"GET /data.json?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    )
    assert (status, headers["content-type"], body) == (200, "application/json", b'{"a": 1}')


async def test_request_head_split_in_single_bytes(server: PageServer) -> None:
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    status, _, body = parse(await exchange(server.port, *(bytes([b]) for b in request)))
    assert (status, body) == (200, b"<html>hello</html>")


async def test_callable_routes_are_produced_per_request() -> None:
    counter = {"sync": 0, "async": 0}

    def sync_body() -> bytes:
        counter["sync"] += 1
        return f"sync {counter['sync']}".encode()

    async def async_body() -> bytes:
        counter["async"] += 1
        return f"async {counter['async']}".encode()

    async with PageServer() as pages:
        pages.add_get("/s", sync_body, content_type="text/plain")
        pages.add_get("/a", async_body, content_type="text/plain")
        for expected in (b"sync 1", b"sync 2"):
            _, _, body = parse(await exchange(pages.port, b"GET /s HTTP/1.1\r\n\r\n"))
            assert body == expected
        _, _, body = parse(await exchange(pages.port, b"GET /a HTTP/1.1\r\n\r\n"))
        assert body == b"async 1"


async def test_head_has_length_but_no_body(server: PageServer) -> None:
    status, headers, body = parse(await exchange(server.port, b"HEAD / HTTP/1.1\r\n\r\n"))
    assert (status, headers["content-length"], body) == (200, "18", b"")


async def test_unknown_path_is_404(server: PageServer) -> None:
    status, headers, body = parse(await exchange(server.port, b"GET /nope HTTP/1.1\r\n\r\n"))
    assert status == 404
    assert headers["content-type"].startswith("text/plain")
    assert body.startswith(b"404")


async def test_wrong_method_is_405_with_allow(server: PageServer) -> None:
    status, headers, _ = parse(await exchange(server.port, post("/", b"{}")))
    assert (status, headers["allow"]) == (405, "GET, HEAD")
    status, headers, _ = parse(await exchange(server.port, b"GET /report HTTP/1.1\r\n\r\n"))
    assert (status, headers["allow"]) == (405, "POST")
    status, _, _ = parse(await exchange(server.port, b"DELETE / HTTP/1.1\r\n\r\n"))
    assert status == 405


async def test_post_json_is_queued_in_order(server: PageServer) -> None:
    for i in range(3):
        status, headers, body = parse(
            await exchange(server.port, post("/report", json.dumps({"n": i}).encode()))
        )
        assert (status, headers["content-type"], json.loads(body)) == (
            200,
            "application/json",
            {"ok": True},
        )
    for i in range(3):
        assert await server.next_post("/report", timeout=TIMEOUT) == {"n": i}


async def test_post_body_split_from_head(server: PageServer) -> None:
    body = json.dumps({"text": "é" * 1000}).encode()
    head = post("/report", body)[: -len(body)]
    status, _, _ = parse(await exchange(server.port, head, body[:10], body[10:]))
    assert status == 200
    assert await server.next_post("/report", timeout=TIMEOUT) == {"text": "é" * 1000}


async def test_post_callback_receives_value() -> None:
    received: list[Any] = []

    async def callback(value: Any) -> None:
        received.append(value)

    async with PageServer() as pages:
        pages.add_post("/cb", callback)
        status, _, _ = parse(await exchange(pages.port, post("/cb", b'[1, "two", null]')))
        assert status == 200
        assert received == [[1, "two", None]]
        with pytest.raises(ValueError):
            await pages.next_post("/cb", timeout=0.1)


async def test_failing_callback_is_500() -> None:
    async def callback(value: Any) -> None:
        raise RuntimeError("boom")

    async with PageServer() as pages:
        pages.add_post("/cb", callback)
        status, _, _ = parse(await exchange(pages.port, post("/cb", b"{}")))
        assert status == 500


async def test_invalid_json_is_400(server: PageServer) -> None:
    for body in (b"{not json", b"\xff\xfe"):
        status, _, _ = parse(await exchange(server.port, post("/report", body)))
        assert status == 400
    with pytest.raises(TimeoutError):
        await server.next_post("/report", timeout=0.05)


async def test_post_without_length_is_411(server: PageServer) -> None:
    status, _, _ = parse(await exchange(server.port, b"POST /report HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert status == 411


@pytest.mark.parametrize("length", ["abc", "-1", "1, 2", "\u0661"])
async def test_bad_content_length_is_400(server: PageServer, length: str) -> None:
    request = f"POST /report HTTP/1.1\r\nContent-Length: {length}\r\n\r\n{{}}".encode()
    status, _, _ = parse(await exchange(server.port, request))
    assert status == 400


async def test_conflicting_content_lengths_are_400(server: PageServer) -> None:
    request = b"POST /report HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
    status, _, _ = parse(await exchange(server.port, request))
    assert status == 400


async def test_chunked_is_501(server: PageServer) -> None:
    request = b"POST /report HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    status, _, _ = parse(await exchange(server.port, request))
    assert status == 501


async def test_body_over_limit_is_413_without_reading_it() -> None:
    async with PageServer(max_body_size=100) as pages:
        pages.add_post("/report")
        ok = post("/report", b'"' + b"x" * 98 + b'"')
        assert parse(await exchange(pages.port, ok))[0] == 200
        # Announce a body one byte too large and never send it: the answer must not wait for it.
        head = b"POST /report HTTP/1.1\r\nContent-Length: 101\r\n\r\n"
        assert parse(await exchange(pages.port, head, eof=False))[0] == 413


async def test_header_over_limit_is_431() -> None:
    async with PageServer(max_header_size=1024) as pages:
        pages.add_get("/", b"ok")
        small = b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 900 + b"\r\n\r\n"
        assert parse(await exchange(pages.port, small))[0] == 200
        big = b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 2000 + b"\r\n\r\n"
        assert parse(await exchange(pages.port, big))[0] == 431


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /\r\n\r\n",
        b"GET / HTTP/2\r\n\r\n",
        b"GET http://x/ HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-A: 1\r\n folded\r\n\r\n",
        b"G=T / HTTP/1.1\r\n\r\n",
    ],
)
async def test_malformed_requests_are_400(server: PageServer, request_bytes: bytes) -> None:
    assert parse(await exchange(server.port, request_bytes))[0] == 400


async def test_full_queue_is_503() -> None:
    async with PageServer(post_queue_size=1) as pages:
        pages.add_post("/report")
        assert parse(await exchange(pages.port, post("/report", b"1")))[0] == 200
        assert parse(await exchange(pages.port, post("/report", b"2")))[0] == 503
        assert await pages.next_post("/report", timeout=TIMEOUT) == 1


async def test_slow_request_gets_408() -> None:
    async with PageServer(request_timeout=0.2) as pages:
        pages.add_get("/", b"ok")
        # The head never completes; the server must answer and close on its own deadline.
        status, _, _ = parse(await exchange(pages.port, b"GET / HTTP/1.1\r\n", eof=False))
        assert status == 408


async def test_client_leaving_without_request_is_harmless(server: PageServer) -> None:
    assert await exchange(server.port) == b""
    assert parse(await exchange(server.port, b"GET / HTTP/1.1\r\n"))[0] == 400
    assert parse(await exchange(server.port, b"GET / HTTP/1.1\r\n\r\n"))[0] == 200


async def test_close_ends_open_connections_and_is_idempotent() -> None:
    entered = asyncio.Event()

    async def never_ready() -> bytes:
        entered.set()
        await asyncio.Future()  # blocks until close() cancels the connection
        raise AssertionError("unreachable")

    pages = PageServer(request_timeout=60)
    pages.add_get("/stuck", never_ready)
    await pages.start()
    port = pages.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /stuck HTTP/1.1\r\n\r\n")
    await writer.drain()
    async with asyncio.timeout(TIMEOUT):
        await entered.wait()
        assert "connections=1" in repr(pages)
        await pages.close()
        assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()
    assert not pages.is_serving
    assert "not listening" in repr(pages)
    await pages.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_start_twice_and_addresses() -> None:
    pages = PageServer()
    assert pages.port == 0
    await pages.start(host="127.0.0.1", port=0)
    try:
        assert pages.host == "127.0.0.1"
        assert pages.port > 0
        assert pages.url == f"http://127.0.0.1:{pages.port}/"
        with pytest.raises(RuntimeError):
            await pages.start()
    finally:
        await pages.close()


def test_route_paths_are_checked() -> None:
    pages = PageServer()
    with pytest.raises(ValueError):
        pages.add_get("index.html", b"")
    with pytest.raises(ValueError):
        pages.add_post("report")
    with pytest.raises(ValueError):
        PageServer(max_body_size=-1)


async def test_next_post_unknown_path_is_key_error(server: PageServer) -> None:
    with pytest.raises(KeyError):
        await server.next_post("/nope", timeout=0.1)


def test_demo_page_is_packaged() -> None:
    page = demo_page()
    assert page.startswith(b"<!DOCTYPE html>")
    assert b"serverCertificateHashes" in page
    assert b"/report" in page
