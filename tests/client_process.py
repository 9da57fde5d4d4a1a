"""A client in a separate process (for tests that kill the client mid-transfer).

Usage: ``python -m tests.client_process URL``. Opens a session and a bidirectional stream, then
writes and reads on it without end; prints ``READY`` once the server's first bytes arrived.
"""

from __future__ import annotations

import asyncio
import ssl
import sys

from pywebtransport import ClientConfig, WebTransportClient


async def _main(url: str) -> None:
    config = ClientConfig(verify_mode=ssl.CERT_NONE, idle_timeout=30.0, connect_timeout=10.0)
    async with WebTransportClient(config=config) as client:
        session = await client.connect(url=url)
        stream = await session.create_bidirectional_stream()

        async def write_forever() -> None:
            chunk = b"c" * 16384
            while True:
                await stream.write(chunk)

        writer = asyncio.create_task(write_forever())
        await stream.read(1)
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        while await stream.read(65536):
            pass
        await writer


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1]))
