"""Receive-side backpressure: credit follows what the application reads, not what arrives."""

from __future__ import annotations

import asyncio
import hashlib

from pywebtransport import (
    ClientConfig,
    ServerApp,
    ServerConfig,
    WebTransportClient,
    WebTransportServer,
    WebTransportSession,
    WebTransportStream,
)
from tests.certs import CertBundle
from tests.conftest import T

WINDOW = 1024 * 1024  # aioquic's default max_stream_data, which sets the receive window


async def test_unread_stream_holds_at_most_one_window(cert: CertBundle) -> None:
    accepted: asyncio.Future[WebTransportStream] = asyncio.get_running_loop().create_future()
    release = asyncio.Event()
    digest: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    app = ServerApp(config=ServerConfig(certfile=str(cert.certfile), keyfile=str(cert.keyfile)))

    @app.route("/slow")
    async def slow(session: WebTransportSession) -> None:
        stream = await session.accept_bidirectional_stream()
        accepted.set_result(stream)
        await release.wait()  # the application does not read until the test says so
        digest.set_result(hashlib.sha256(await stream.read_all()).hexdigest())
        await session.wait_closed()

    server = WebTransportServer(config=app.config, app=app)
    await server.listen(host="127.0.0.1", port=0)
    payload = bytes(range(256)) * (8 * 1024 * 1024 // 256)
    config = ClientConfig(server_certificate_hashes=[cert.sha256])
    try:
        async with asyncio.timeout(6 * T), WebTransportClient(config=config) as client:
            session = await client.connect(url=f"https://127.0.0.1:{server.local_address[1]}/slow")
            stream = await session.create_bidirectional_stream()
            writer = asyncio.create_task(stream.write_all(payload))
            server_stream = await accepted
            # The writer stalls: the server grants no credit beyond one window while unread.
            done, _ = await asyncio.wait({writer}, timeout=1.0)
            assert not done, "8 MiB went out although the server read nothing"
            assert 0 < server_stream._buffered <= WINDOW
            release.set()
            await writer
            assert await digest == hashlib.sha256(payload).hexdigest()
    finally:
        await server.close()
